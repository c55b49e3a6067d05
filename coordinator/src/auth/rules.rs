//! Which caller each gRPC method admits: one table, checked by the [`super::layer`]
//! before any handler runs. A method missing from the table is refused to everyone,
//! so a new endpoint is closed until it is written here (and in the role tests).

use super::Principal;
use crate::model::Role;

/// What a method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, without a token (the health service only).
    Public,
    /// A token of this role or a higher one (`read` < `submit` < `admin`).
    AtLeast(Role),
    /// An `agent` token (or an `admin` one): joining a pool.
    JoinPool,
    /// A node's own secret, issued when it registered.
    Node,
    /// Reading objects: a `read` token, or a node (for the objects its tasks read,
    /// which the objects service checks).
    ReadObjects,
    /// Writing objects: a `submit` token, or a node (for its tasks' outputs).
    WriteObjects,
}

use Need::*;
use Role::*;

/// Every method the coordinator serves, and what it needs.
pub const METHODS: &[(&str, Need)] = &[
    ("/corral.v1.Corral/CreatePool", AtLeast(Admin)),
    ("/corral.v1.Corral/ListPools", AtLeast(Read)),
    ("/corral.v1.Corral/GetPool", AtLeast(Read)),
    ("/corral.v1.Corral/ResizePool", AtLeast(Admin)),
    ("/corral.v1.Corral/SetAutoscale", AtLeast(Admin)),
    ("/corral.v1.Corral/DeletePool", AtLeast(Admin)),
    ("/corral.v1.Corral/ListNodes", AtLeast(Read)),
    ("/corral.v1.Corral/GetNode", AtLeast(Read)),
    ("/corral.v1.Corral/DrainNode", AtLeast(Admin)),
    ("/corral.v1.Corral/RemoveNode", AtLeast(Admin)),
    ("/corral.v1.Corral/SubmitJob", AtLeast(Submit)),
    ("/corral.v1.Corral/ListJobs", AtLeast(Read)),
    ("/corral.v1.Corral/GetJob", AtLeast(Read)),
    ("/corral.v1.Corral/CancelJob", AtLeast(Submit)),
    ("/corral.v1.Corral/CancelTask", AtLeast(Submit)),
    ("/corral.v1.Corral/RetryJob", AtLeast(Submit)),
    ("/corral.v1.Corral/DeleteJob", AtLeast(Submit)),
    ("/corral.v1.Corral/AddTasks", AtLeast(Submit)),
    ("/corral.v1.Corral/CloseJob", AtLeast(Submit)),
    ("/corral.v1.Corral/UpdateJob", AtLeast(Submit)),
    ("/corral.v1.Corral/WatchJob", AtLeast(Read)),
    ("/corral.v1.Corral/ListTasks", AtLeast(Read)),
    ("/corral.v1.Corral/GetTask", AtLeast(Read)),
    ("/corral.v1.Corral/ExplainTask", AtLeast(Read)),
    ("/corral.v1.Corral/ReadLog", AtLeast(Read)),
    ("/corral.v1.Corral/WatchEvents", AtLeast(Read)),
    ("/corral.v1.Corral/CreateToken", AtLeast(Admin)),
    ("/corral.v1.Corral/ListTokens", AtLeast(Admin)),
    ("/corral.v1.Corral/RevokeToken", AtLeast(Admin)),
    ("/corral.v1.Corral/WhoAmI", AtLeast(Read)),
    ("/corral.v1.Corral/GetNotifySecret", AtLeast(Admin)),
    ("/corral.v1.Corral/CreateSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/ListSchedules", AtLeast(Read)),
    ("/corral.v1.Corral/GetSchedule", AtLeast(Read)),
    ("/corral.v1.Corral/PauseSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/UpdateSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/TriggerSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/BackfillSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/DeleteSchedule", AtLeast(Submit)),
    ("/corral.v1.Corral/CreateTemplate", AtLeast(Submit)),
    ("/corral.v1.Corral/ListTemplates", AtLeast(Read)),
    ("/corral.v1.Corral/GetTemplate", AtLeast(Read)),
    ("/corral.v1.Corral/DeleteTemplate", AtLeast(Submit)),
    ("/corral.v1.Corral/UpdateTemplate", AtLeast(Submit)),
    ("/corral.v1.Corral/Dispatch", AtLeast(Submit)),
    ("/corral.v1.Corral/CreateTrigger", AtLeast(Submit)),
    ("/corral.v1.Corral/ListTriggers", AtLeast(Read)),
    ("/corral.v1.Corral/GetTrigger", AtLeast(Read)),
    ("/corral.v1.Corral/PauseTrigger", AtLeast(Submit)),
    ("/corral.v1.Corral/DeleteTrigger", AtLeast(Submit)),
    ("/corral.v1.Agent/Register", JoinPool),
    ("/corral.v1.Agent/Session", Node),
    ("/corral.v1.Objects/Put", WriteObjects),
    ("/corral.v1.Objects/Get", ReadObjects),
    ("/corral.v1.Objects/List", AtLeast(Read)),
    ("/corral.v1.Objects/Delete", AtLeast(Admin)),
    ("/grpc.health.v1.Health/Check", Public),
    ("/grpc.health.v1.Health/Watch", Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", AtLeast(Read)),
];

/// What the method at `path` needs; `None` for a method nobody may call.
pub fn need(path: &str) -> Option<Need> {
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, n)| *n)
}

/// The rank of a user role; `agent` has none.
fn rank(role: Role) -> Option<u8> {
    match role {
        Read => Some(1),
        Submit => Some(2),
        Admin => Some(3),
        Agent => None,
    }
}

/// Whether `who` may call a method that needs `need`; the refusal names what is
/// needed.
pub fn allow(who: &Principal, need: Need, method: &str) -> Result<(), super::Denied> {
    let method = method.rsplit('/').next().unwrap_or(method);
    let ok = match (need, who) {
        (Public, _) => true,
        (AtLeast(min), Principal::Token { role, .. }) => rank(*role) >= rank(min) && rank(*role).is_some(),
        (JoinPool, Principal::Token { role, .. }) => matches!(role, Agent | Admin),
        (Node, Principal::Node { .. }) => true,
        (ReadObjects, Principal::Node { .. }) | (WriteObjects, Principal::Node { .. }) => true,
        (ReadObjects, Principal::Token { role, .. }) => rank(*role) >= rank(Read) && rank(*role).is_some(),
        (WriteObjects, Principal::Token { role, .. }) => rank(*role) >= rank(Submit) && rank(*role).is_some(),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let needed = match need {
        Public => return Ok(()),
        AtLeast(Read) => "a read, submit or admin token".to_string(),
        AtLeast(Submit) => "a submit or admin token".to_string(),
        AtLeast(role) => format!("an {role} token"),
        JoinPool => "an agent or admin token".to_string(),
        Node => "the node's own secret (agents get it when they register)".to_string(),
        ReadObjects => "a read, submit or admin token, or a node's secret".to_string(),
        WriteObjects => "a submit or admin token, or a node's secret".to_string(),
    };
    let have = match who {
        Principal::Token { name, role, .. } => format!("token '{name}' has role {role}"),
        Principal::Node { node, .. } => format!("the caller is node {node}"),
    };
    Err(super::Denied::Forbidden(format!("{method} needs {needed}; {have}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PoolName;

    fn token(role: Role) -> Principal {
        Principal::Token { id: "i".into(), name: role.to_string(), role, pool: None, expires_at_ms: None }
    }

    fn node() -> Principal {
        Principal::Node {
            node: crate::model::NodeId("n-1".into()),
            pool: PoolName::parse("p", "p").unwrap(),
            token_id: "i".into(),
        }
    }

    #[test]
    fn roles_nest_and_agents_stand_apart() {
        let admits = |need: Need, who: &Principal| allow(who, need, "/x/M").is_ok();
        assert!(admits(AtLeast(Read), &token(Admin)));
        assert!(admits(AtLeast(Submit), &token(Submit)));
        assert!(!admits(AtLeast(Submit), &token(Read)));
        assert!(!admits(AtLeast(Read), &token(Agent)), "an agent token reads nothing");
        assert!(!admits(AtLeast(Read), &node()), "a node reads no jobs");
        assert!(
            admits(JoinPool, &token(Admin)) && admits(JoinPool, &token(Agent)) && !admits(JoinPool, &token(Submit))
        );
        assert!(admits(Node, &node()) && !admits(Node, &token(Admin)), "only the node's secret opens its stream");
        assert!(admits(WriteObjects, &node()) && !admits(WriteObjects, &token(Read)));
        assert!(!admits(ReadObjects, &token(Agent)));
    }

    #[test]
    fn refusals_name_the_role_needed() {
        let e = allow(&token(Submit), AtLeast(Admin), "/corral.v1.Corral/CreatePool").unwrap_err();
        assert!(matches!(e, super::super::Denied::Forbidden(_)), "{e}");
        assert_eq!(e.to_string(), "CreatePool needs an admin token; token 'submit' has role submit");
    }

    #[test]
    fn every_method_of_every_service_is_in_the_table() {
        let declared = corral_proto::methods::all();
        assert!(declared.len() > 20, "{declared:?}");
        for path in declared {
            assert!(need(&path).is_some(), "{path} is not in auth::rules::METHODS");
        }
    }
}
