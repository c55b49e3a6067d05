//! The doors are locked: every gRPC method and HTTP route against every kind of
//! caller (none, each role, a node's secret, revoked, expired, garbage), jobs that
//! only their owner (or an admin) changes, and tokens that end open streams when
//! revoked. What agents may do is in `agent_security.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_tests::grpc::keep_alive;
use corral_tests::{bin, wait_until, Cluster};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

const MINUTE: Duration = Duration::from_secs(60);

/// Who a method admits, as the issue defines the roles (written out here, apart
/// from the coordinator's own table, so the two check each other).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Public,
    Read,
    Submit,
    Admin,
    JoinPool,
    Node,
    ReadObjects,
    WriteObjects,
}

const METHODS: &[(&str, Need)] = &[
    ("/corral.v1.Corral/CreatePool", Need::Admin),
    ("/corral.v1.Corral/ListPools", Need::Read),
    ("/corral.v1.Corral/GetPool", Need::Read),
    ("/corral.v1.Corral/ResizePool", Need::Admin),
    ("/corral.v1.Corral/SetAutoscale", Need::Admin),
    ("/corral.v1.Corral/DeletePool", Need::Admin),
    ("/corral.v1.Corral/ListNodes", Need::Read),
    ("/corral.v1.Corral/GetNode", Need::Read),
    ("/corral.v1.Corral/DrainNode", Need::Admin),
    ("/corral.v1.Corral/RemoveNode", Need::Admin),
    ("/corral.v1.Corral/SubmitJob", Need::Submit),
    ("/corral.v1.Corral/ListJobs", Need::Read),
    ("/corral.v1.Corral/GetJob", Need::Read),
    ("/corral.v1.Corral/CancelJob", Need::Submit),
    ("/corral.v1.Corral/CancelTask", Need::Submit),
    ("/corral.v1.Corral/RetryJob", Need::Submit),
    ("/corral.v1.Corral/DeleteJob", Need::Submit),
    ("/corral.v1.Corral/AddTasks", Need::Submit),
    ("/corral.v1.Corral/CloseJob", Need::Submit),
    ("/corral.v1.Corral/UpdateJob", Need::Submit),
    ("/corral.v1.Corral/WatchJob", Need::Read),
    ("/corral.v1.Corral/ListTasks", Need::Read),
    ("/corral.v1.Corral/GetTask", Need::Read),
    ("/corral.v1.Corral/ExplainTask", Need::Read),
    ("/corral.v1.Corral/ReadLog", Need::Read),
    ("/corral.v1.Corral/WatchEvents", Need::Read),
    ("/corral.v1.Corral/CreateToken", Need::Admin),
    ("/corral.v1.Corral/ListTokens", Need::Admin),
    ("/corral.v1.Corral/RevokeToken", Need::Admin),
    ("/corral.v1.Corral/WhoAmI", Need::Read),
    ("/corral.v1.Corral/GetNotifySecret", Need::Admin),
    ("/corral.v1.Corral/CreateSchedule", Need::Submit),
    ("/corral.v1.Corral/ListSchedules", Need::Read),
    ("/corral.v1.Corral/GetSchedule", Need::Read),
    ("/corral.v1.Corral/PauseSchedule", Need::Submit),
    ("/corral.v1.Corral/UpdateSchedule", Need::Submit),
    ("/corral.v1.Corral/TriggerSchedule", Need::Submit),
    ("/corral.v1.Corral/BackfillSchedule", Need::Submit),
    ("/corral.v1.Corral/DeleteSchedule", Need::Submit),
    ("/corral.v1.Corral/CreateTemplate", Need::Submit),
    ("/corral.v1.Corral/ListTemplates", Need::Read),
    ("/corral.v1.Corral/GetTemplate", Need::Read),
    ("/corral.v1.Corral/DeleteTemplate", Need::Submit),
    ("/corral.v1.Corral/UpdateTemplate", Need::Submit),
    ("/corral.v1.Corral/Dispatch", Need::Submit),
    ("/corral.v1.Corral/CreateTrigger", Need::Submit),
    ("/corral.v1.Corral/ListTriggers", Need::Read),
    ("/corral.v1.Corral/GetTrigger", Need::Read),
    ("/corral.v1.Corral/PauseTrigger", Need::Submit),
    ("/corral.v1.Corral/DeleteTrigger", Need::Submit),
    ("/corral.v1.Agent/Register", Need::JoinPool),
    ("/corral.v1.Agent/Session", Need::Node),
    ("/corral.v1.Objects/Put", Need::WriteObjects),
    ("/corral.v1.Objects/Get", Need::ReadObjects),
    ("/corral.v1.Objects/List", Need::Read),
    ("/corral.v1.Objects/Delete", Need::Admin),
    ("/grpc.health.v1.Health/Check", Need::Public),
    ("/grpc.health.v1.Health/Watch", Need::Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Need::Read),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Nobody,
    Garbage,
    Read,
    Submit,
    Admin,
    Agent,
    Node,
    Revoked,
    Expired,
}

fn admits(need: Need, caller: Caller) -> bool {
    use Caller as C;
    match need {
        Need::Public => true,
        Need::Read => matches!(caller, C::Read | C::Submit | C::Admin),
        Need::Submit => matches!(caller, C::Submit | C::Admin),
        Need::Admin => caller == C::Admin,
        Need::JoinPool => matches!(caller, C::Agent | C::Admin),
        Need::Node => caller == C::Node,
        Need::ReadObjects => matches!(caller, C::Read | C::Submit | C::Admin | C::Node),
        Need::WriteObjects => matches!(caller, C::Submit | C::Admin | C::Node),
    }
}

/// One credential of every kind: none, garbage, each role, revoked, expired, and a
/// live node's secret (kept alive by heartbeats on the returned runtime, which must
/// outlive its use).
fn callers(c: &Cluster) -> (tokio::runtime::Runtime, Vec<(Caller, Option<String>)>) {
    let mut callers = vec![
        (Caller::Nobody, None),
        (Caller::Garbage, Some("0123456789abcdef.not-the-secret".to_string())),
        (Caller::Read, Some(c.token("reader", "read", &[]))),
        (Caller::Submit, Some(c.token("submitter", "submit", &[]))),
        (Caller::Admin, Some(c.admin_token())),
        (Caller::Agent, Some(c.token("joiner", "agent", &[]))),
        (Caller::Revoked, Some(c.token("gone", "admin", &[]))),
        (Caller::Expired, Some(c.token("brief", "admin", &["--ttl", "1s"]))),
    ];
    c.json(&["token", "revoke", "gone"]);
    // Let the short token expire.
    std::thread::sleep(Duration::from_millis(1100));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let node_secret = rt.block_on(async {
        let channel = c.channel().await;
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut agent = pb::agent_client::AgentClient::with_interceptor(channel.clone(), admin);
        let reg = pb::RegisterRequest { pool: "cpu".into(), slots: 1, hostname: "m".into(), ..Default::default() };
        let reg = agent.register(reg).await.unwrap().into_inner();
        keep_alive(channel, &reg).await;
        reg.node_secret
    });
    callers.push((Caller::Node, Some(node_secret)));
    (rt, callers)
}

/// Calls `path` with one empty message (a valid encoding of every request type)
/// and returns the status code it ends with (`Ok` if it answered).
async fn call(channel: Channel, bearer: Bearer, path: &'static str) -> Status {
    let mut grpc = tonic::client::Grpc::new(InterceptedService::new(channel, bearer));
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let method = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let request = tonic::Request::new(tokio_stream::once(()));
    match tokio::time::timeout(Duration::from_secs(10), grpc.streaming(request, method, codec)).await {
        Ok(Ok(_)) => Status { code: Code::Ok, message: String::new() },
        Ok(Err(status)) => Status { code: status.code(), message: status.message().to_string() },
        Err(_) => panic!("{path:?} did not answer within 10s"),
    }
}

struct Status {
    code: Code,
    message: String,
}

#[test]
fn every_grpc_method_admits_exactly_the_roles_it_should() {
    let declared = corral_proto::methods::all();
    for method in &declared {
        assert!(METHODS.iter().any(|(m, _)| m == method), "{method} is missing from this test's table");
    }
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let (rt, tokens) = callers(&c);
    rt.block_on(async {
        let channel = c.channel().await;
        for (caller, token) in &tokens {
            let bearer = Bearer::new(token.as_deref()).unwrap();
            for (path, need) in METHODS {
                let got = call(channel.clone(), bearer.clone(), path).await;
                let refused = matches!(got.code, Code::Unauthenticated | Code::PermissionDenied);
                assert_eq!(
                    !refused,
                    admits(*need, *caller),
                    "{caller:?} calling {path}: {:?} {}",
                    got.code,
                    got.message
                );
                if refused {
                    let expected = match caller {
                        Caller::Nobody => (Code::Unauthenticated, "no token: pass --token-file or set CORRAL_TOKEN"),
                        Caller::Garbage | Caller::Revoked | Caller::Expired => {
                            (Code::Unauthenticated, "token refused: it is unknown, revoked or expired")
                        }
                        _ => (Code::PermissionDenied, " needs "),
                    };
                    assert_eq!(got.code, expected.0, "{caller:?} {path}: {}", got.message);
                    assert!(got.message.contains(expected.1), "{caller:?} {path}: {}", got.message);
                }
            }
        }
    });
    // Nothing the matrix sent changed anything: still one pool, no job.
    assert_eq!(c.json(&["pool", "list"]).as_array().unwrap().len(), 1);
    assert!(c.json(&["job", "list"]).as_array().unwrap().is_empty());
    // No secret reached the coordinator's log.
    let log = c.coordinator_log();
    for (_, token) in &tokens {
        if let Some((_, secret)) = token.as_deref().and_then(|t| t.split_once('.')) {
            assert!(!log.contains(secret), "a secret is in the coordinator's log");
        }
    }
}

#[test]
fn the_cli_says_what_to_do_without_a_token_or_with_the_wrong_role() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let out = c.corral_as(None, &["job", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "no token: pass --token-file or set CORRAL_TOKEN (the first admin token is in DATA_DIR/admin.token)"
        ),
        "{err}"
    );

    let reader = c.token("reader", "read", &[]);
    let out = c.corral_as(Some(&reader), &["job", "submit", "--pool", "cpu", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job submit needs a submit or admin token; token 'reader' has role read"), "{err}");
    let out = c.corral_as(Some(&reader), &["pool", "delete", "cpu", "--force"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool delete needs an admin token"));
    assert_eq!(c.json(&["pool", "list"]).as_array().unwrap().len(), 1, "the pool is still there");

    // `token list` never shows a secret; a token file that is empty is an error.
    let listed = c.corral(&["-o", "json", "token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("\"reader\"") && !listed.contains(reader.split_once('.').unwrap().1), "{listed}");
    let empty = c.dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let out = c.corral_as(None, &["--token-file", empty.to_str().unwrap(), "job", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
}

#[test]
fn a_submit_token_changes_only_its_own_jobs() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let alice = c.token("alice", "submit", &[]);
    let bob = c.token("bob", "submit", &[]);
    let out = c.corral_as(Some(&alice), &["-o", "json", "job", "submit", "--pool", "cpu", "--", "sleep", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["job_id"].as_u64().unwrap().to_string();
    let shown = c.job(id.parse().unwrap());
    assert_eq!(shown["owner"], "alice", "{shown}");
    assert_eq!(c.json(&["job", "list"])[0]["owner"], "alice");

    let out = c.corral_as(Some(&bob), &["job", "cancel", &id]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("job {id} belongs to token 'alice'")), "{err}");
    assert_eq!(c.job(id.parse().unwrap())["state"], "active", "bob changed nothing");
    let out = c.corral_as(Some(&alice), &["job", "cancel", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.job(id.parse().unwrap())["state"], "cancelled");
    let first = id.clone();

    // An admin may change anyone's job.
    let out = c.corral_as(Some(&bob), &["-o", "json", "job", "submit", "--pool", "cpu", "--", "sleep", "30"]);
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["job_id"].as_u64().unwrap().to_string();
    c.json(&["job", "cancel", &id]);
    assert_eq!(c.job(id.parse().unwrap())["state"], "cancelled");

    // The feed says who made tokens.
    let out = c.corral(&["-o", "json", "events"]);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Each change a client made names its token; what the coordinator did by itself
    // (running the task) names none.
    let of_job = |id: &str, state: &str| {
        events
            .iter()
            .find(|e| e["job"].as_u64() == id.parse().ok() && e["kind"] == "job" && e["state"] == state)
            .cloned()
    };
    assert_eq!(of_job(&first, "active").unwrap()["actor"], "alice");
    assert_eq!(of_job(&first, "cancelled").unwrap()["actor"], "alice");
    assert_eq!(of_job(&id, "cancelled").unwrap()["actor"], "admin");
    let started = events.iter().find(|e| e["kind"] == "task" && e["state"] == "running").unwrap();
    assert!(started["actor"].is_null(), "{started}");
    let tokens: Vec<_> = events.iter().filter(|e| e["kind"] == "token").collect();
    assert!(
        tokens.iter().any(|e| e["detail"].as_str().unwrap_or("").contains("token 'alice', role submit, by 'admin'")),
        "{tokens:?}"
    );

    // Deleting is a change too: only the owner (or an admin) deletes a job.
    let out = c.corral_as(Some(&bob), &["job", "delete", &first]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to token 'alice'"));
    let out = c.corral_as(Some(&alice), &["job", "delete", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn revoking_a_token_ends_the_streams_that_use_it() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let watcher = c.token("watcher", "read", &[]);
    let mut follower = Command::new(bin("corral"))
        .env_remove("CORRAL_TOKEN_FILE")
        .env("CORRAL_TOKEN", &watcher)
        .args(["--coordinator", &c.url, "-o", "json", "events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for it to be streaming: it prints the events so far.
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    assert!(lines.next().is_some(), "the follower printed nothing");
    let job = c.submit(&["--pool", "cpu"], &["sleep", "60"]);
    let mut watch = Command::new(bin("corral"))
        .env_remove("CORRAL_TOKEN_FILE")
        .env("CORRAL_TOKEN", &watcher)
        .args(["--coordinator", &c.url, "job", "watch", &job.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(watch.try_wait().unwrap().is_none(), "job watch is following");

    // An agent whose token is revoked loses its session and cannot register again.
    let agent_token = c.token("worker", "agent", &["--pool", "cpu"]);
    let agent = c.agent_with_env("cpu", 1, &[("CORRAL_TOKEN", &agent_token), ("CORRAL_TOKEN_FILE", "")]);
    wait_until(MINUTE, "the second agent", || {
        c.nodes_in("cpu", "idle").len() + c.nodes_in("cpu", "running").len() == 2
    });

    c.json(&["token", "revoke", "watcher"]);
    c.json(&["token", "revoke", "worker"]);
    for (what, child) in [("events --follow", &mut follower), ("job watch", &mut watch)] {
        wait_until(Duration::from_secs(10), &format!("{what} to end"), || child.try_wait().unwrap().is_some());
        let status = child.wait().unwrap();
        assert!(!status.success(), "{what} should fail");
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(err.contains("token refused"), "{what}: {err}");
    }
    wait_until(Duration::from_secs(20), "the revoked agent to exit", || !corral_tests::alive(agent));
    // The first agent (admin token) still runs the job.
    assert_eq!(c.job(job)["counts"]["running"], 1);
}

#[test]
fn the_first_admin_token_is_private_and_a_reset_revokes_it() {
    let mut c = Cluster::start(&[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.admin_token_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(c.coordinator_log().contains("admin.token"), "the log names the file");
    let old = c.admin_token();
    // It survives a restart...
    c.restart_coordinator();
    assert_eq!(c.admin_token(), old);
    assert!(c.corral(&["pool", "list"]).status.success());
    // ...and a reset replaces it: the old one is refused from then on, and so is
    // every admin token and every token an admin made (a leaked admin token may
    // have made them); others stay.
    let second_admin = c.token("ops", "admin", &[]);
    let made_by_admin = c.token("ci", "submit", &[]);
    c.restart_with(&["--reset-admin-token"]);
    let new = c.admin_token();
    assert_ne!(new, old);
    for gone in [&old, &second_admin, &made_by_admin] {
        let out = c.corral_as(Some(gone), &["pool", "list"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("token refused"));
    }
    assert!(c.corral_as(Some(&new), &["pool", "list"]).status.success());
    let names: Vec<String> = c
        .json(&["token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin"], "{names:?}");
}

/// The HTTP side: the dashboard, its API and `/metrics`.
#[path = "security/http.rs"]
mod http;
