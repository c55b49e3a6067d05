//! The words of Corral: every state, outcome, reason and policy as an enum, each
//! spelled in one place (the same word on the wire, in the store and in the CLI).

use std::fmt;
use std::str::FromStr;

/// Declares a string-named enum: the one place its words are spelled.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word used on the wire, in the store and in the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "'{s}' is not one of: {}",
                        [$($word),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// As its word, in JSON too.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// What an event of the feed is about.
    EventKind {
        Pool = "pool",
        Node = "node",
        Job = "job",
        Task = "task",
        Attempt = "attempt",
        Token = "token",
        Object = "object",
        Schedule = "schedule",
        Template = "template",
        Trigger = "trigger",
    }
);

named_enum!(
    /// What a token may do. `read` < `submit` < `admin`; `agent` stands apart: it may
    /// only register nodes (an `admin` token may too).
    Role {
        Read = "read",
        Submit = "submit",
        Admin = "admin",
        Agent = "agent",
    }
);

named_enum!(
    /// Where a task is in its life. `waiting` is for dependencies (none yet in v1 jobs).
    TaskState {
        Waiting = "waiting",
        Ready = "ready",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }

    /// Every allowed transition, in one place: the core moves a task only along
    /// these (a restore from the store is the one other way in).
    /// - waiting -> ready (its upstream succeeded), cancelled (it failed, or the job
    ///   was cancelled);
    /// - ready -> running (assigned), cancelled, waiting (a retried graph task whose
    ///   upstream is not done);
    /// - running -> ready (requeued or retrying), succeeded, failed, cancelled;
    /// - succeeded, failed, cancelled -> ready or waiting: `job retry` reopens it.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Waiting, Ready | Cancelled)
                | (Ready, Running | Cancelled | Waiting)
                | (Running, Ready | Succeeded | Failed | Cancelled)
                | (Succeeded | Failed | Cancelled, Ready | Waiting)
        )
    }
}

named_enum!(
    /// A node as users see it. `idle` and `running` are one stored state (`up`), told
    /// apart by whether the node has tasks.
    NodeState {
        Starting = "starting",
        Idle = "idle",
        Running = "running",
        Draining = "draining",
        Lost = "lost",
        Removed = "removed",
    }
);

named_enum!(
    /// Why a node stopped being usable.
    NodeReason {
        /// No message within the heartbeat timeout (a dead or hung host).
        HeartbeatTimeout = "heartbeat_timeout",
        /// The agent process the local provider started has exited.
        ProcessExited = "process_exited",
        /// The local provider could not start the agent.
        LaunchFailed = "launch_failed",
        /// The agent did not register within the start timeout.
        StartTimeout = "start_timeout",
        /// The pool shrank and this node was chosen to go.
        ScaledDown = "scaled_down",
        /// Its pool was deleted.
        PoolDeleted = "pool_deleted",
        /// The coordinator stopped the nodes it had started when it shut down.
        CoordinatorShutdown = "coordinator_shutdown",
        /// A user removed it (`corral node remove`).
        Removed = "removed",
        /// Its pool's start task failed on it: it takes no work.
        StartTaskFailed = "start_task_failed",
    }
);

named_enum!(
    /// What happens to the tasks of a busy node that is removed (Azure Batch's
    /// `nodeDeallocationOption`).
    RemovalPolicy {
        /// It takes no new task and goes when its tasks have ended.
        TaskCompletion = "task-completion",
        /// It goes now; its tasks go back to the queue, not counted against retries.
        Requeue = "requeue",
        /// It goes now; its tasks are killed and fail.
        Terminate = "terminate",
    }
);

named_enum!(
    /// A node as the coordinator keeps it. Users see [`NodeState`], which splits `up`
    /// into `idle` and `running`.
    NodeStatus {
        /// Started by a provider, not yet registered.
        Starting = "starting",
        /// Registered and taking work.
        Up = "up",
        /// Takes no new work; finishes what it runs.
        Draining = "draining",
        /// Declared lost; its work went back to the queue.
        Lost = "lost",
        /// Gone on purpose.
        Removed = "removed",
    }
);

impl NodeStatus {
    /// Starting, up or draining: it counts toward its pool's size.
    pub fn is_live(self) -> bool {
        matches!(self, NodeStatus::Starting | NodeStatus::Up | NodeStatus::Draining)
    }
}

named_enum!(
    JobState {
        Active = "active",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

named_enum!(
    /// How a pool gets its nodes.
    Provider {
        /// Agents join by themselves.
        Static = "static",
        /// The coordinator starts `corral-agent` processes on its own host.
        Local = "local",
        /// The coordinator runs the pool's shell commands to add and remove nodes.
        Command = "command",
        /// The coordinator starts each node as a container through the Docker Engine API.
        Docker = "docker",
    }
);

impl Provider {
    /// Whether the coordinator starts this pool's nodes (and so can size it).
    pub fn starts_nodes(self) -> bool {
        self != Provider::Static
    }
}

named_enum!(
    /// Which node a task goes to.
    Fill {
        /// The node with the most free slots: work spreads evenly.
        Spread = "spread",
        /// The busiest node that still fits: idle nodes stay idle.
        Pack = "pack",
    }
);

named_enum!(
    /// What a schedule does with a slot that comes while its last run is still
    /// active (Temporal's overlap policies).
    Overlap {
        /// Start nothing for that slot (counted as skipped).
        Skip = "skip",
        /// Keep the one latest such slot, and run it when the active run ends.
        BufferOne = "buffer-one",
        /// Keep every such slot (up to a bound), and run them one after another.
        BufferAll = "buffer-all",
        /// Cancel the active run and start the new one.
        CancelOther = "cancel-other",
        /// Run them side by side.
        Allow = "allow",
    }
);

named_enum!(
    /// Whether a template's dispatches carry a payload.
    PayloadRule {
        /// Every dispatch must carry one.
        Required = "required",
        /// A dispatch may carry one.
        Optional = "optional",
        /// No dispatch may carry one.
        Forbidden = "forbidden",
    }
);

named_enum!(
    /// How an attempt ended.
    Outcome {
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        NodeLost = "node_lost",
        SpawnFailed = "spawn_failed",
    }
);

impl Outcome {
    /// Whether this outcome uses up one of the task's retries.
    pub fn counts_against_retries(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut | Outcome::SpawnFailed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_task_transitions_are_exactly_these() {
        use TaskState::*;
        let all = [Waiting, Ready, Running, Succeeded, Failed, Cancelled];
        let allowed: Vec<(TaskState, TaskState)> =
            all.iter().flat_map(|&a| all.iter().map(move |&b| (a, b))).filter(|&(a, b)| a.can_become(b)).collect();
        let expected = vec![
            (Waiting, Ready),
            (Waiting, Cancelled),
            (Ready, Waiting),
            (Ready, Running),
            (Ready, Cancelled),
            (Running, Ready),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Succeeded, Waiting),
            (Succeeded, Ready),
            (Failed, Waiting),
            (Failed, Ready),
            (Cancelled, Waiting),
            (Cancelled, Ready),
        ];
        assert_eq!(allowed, expected);
        // Nothing moves to where it is, and a final state is left only to be retried.
        assert!(all.iter().all(|&s| !s.can_become(s)));
    }

    use super::*;

    #[test]
    fn words_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        let err = "runing".parse::<TaskState>().unwrap_err();
        assert!(err.contains("running"), "{err}");
    }
}
