//! Corral's shared vocabulary: the words the coordinator, the agent and the CLI all
//! speak, each defined once. It depends on nothing of Corral's, and everything else
//! depends on it.
//!
//! Read the modules in this order:
//! - [`ids`]: jobs, tasks, attempts, nodes and pools;
//! - [`words`]: every state, outcome, reason and policy, as an enum spelled in one place;
//! - [`spec`]: what a task runs ([`spec::TaskSpec`]);
//! - [`resources`]: what nodes have and tasks ask for beyond slots (GPUs, memory,
//!   named counters);
//! - [`policy`]: what a job does with failures (exit rules, retry delays) and how
//!   many of its tasks run at once (throttles, concurrency keys);
//! - [`array`]: an array job's indices (`1-100`, `1,3,5-9:2`);
//! - [`graph`]: graph jobs (named tasks with dependencies) checked and numbered;
//! - [`paths`]: where everything lives in the object store;
//! - [`duration`]: durations as users write them, and the one bound on them;
//! - [`size`]: byte sizes as users write them (`10MiB`);
//! - [`order`]: the order a task wrote its stdout and stderr in;
//! - and, here, [`Invalid`]: a refused request field, with [`shown`] and [`bounded`]
//!   keeping what a client sent short when it is said back.
//!
//! The protobuf (`corral-proto`) carries the enums of [`words`] as protobuf enums;
//! the conversion between the two is in the coordinator's and the agent's edge code.

use std::fmt;

#[macro_use]
pub mod words;
pub mod array;
pub mod duration;
pub mod graph;
pub mod ids;
pub mod order;
pub mod paths;
pub mod policy;
pub mod resources;
pub mod size;
pub mod spec;

pub use ids::{AttemptRef, JobId, NodeId, PoolName, TaskKey};
pub use spec::{OutputsWhen, Segment, TaskInput, TaskKind, TaskSpec};
pub use words::{
    Fill, JobState, NodeReason, NodeState, NodeStatus, Outcome, Overlap, Provider, RemovalPolicy, Role, TaskState,
};

/// A request field that was refused, and why. The message names both, so a user can
/// fix the request without reading the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Invalid { field, reason: reason.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// A refused field reaches a gRPC client as INVALID_ARGUMENT (feature `tonic`, for
/// the crates that serve gRPC; the vocabulary itself needs no network code).
#[cfg(feature = "tonic")]
impl From<Invalid> for tonic::Status {
    fn from(err: Invalid) -> Self {
        tonic::Status::invalid_argument(bounded(err.to_string()))
    }
}

/// How much of a value a client sent is said back in an error.
pub const SHOWN: usize = 100;

/// A client's value for an error message: at most [`SHOWN`] characters, with an
/// ellipsis and the full length when cut. An error that echoed a megabyte back
/// would not even fit in a gRPC status.
pub fn shown(value: impl fmt::Display) -> String {
    let value = value.to_string();
    match value.char_indices().nth(SHOWN) {
        None => value,
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// The longest message an error carries; anything longer is cut, whatever made it.
pub const MAX_MESSAGE: usize = 1024;

/// A message cut to [`MAX_MESSAGE`] bytes (on a character boundary).
pub fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_bad_value_is_said_back_in_short() {
        let huge = "x".repeat(1 << 20);
        let said = shown(&huge);
        assert!(said.len() < 150 && said.ends_with("… (1048576 bytes)"), "{said}");
        assert_eq!(shown("short"), "short");
        let message = bounded(Invalid::new("name", format!("'{huge}' is bad")).to_string());
        assert!(message.len() <= MAX_MESSAGE + 3);
    }
}

/// Whether `s` can stand for a host in a list other machines read (a multi-node
/// task's `CORRAL_HOSTS`): letters, digits and `.-:_[]`, 1 to 255 bytes.
pub fn is_host_address(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-:_[]".contains(c))
}

#[cfg(test)]
mod host_address_tests {
    #[test]
    fn a_host_is_a_name_or_an_address_and_nothing_a_shell_or_a_list_would_split() {
        for ok in ["10.0.0.4", "node-b.example", "fd00::2", "[fd00::2]", "n_1"] {
            assert!(super::is_host_address(ok), "{ok}");
        }
        for bad in ["", "a b", "a,b", "a;b", "$(x)", &"a".repeat(256)] {
            assert!(!super::is_host_address(bad), "{bad}");
        }
    }
}
