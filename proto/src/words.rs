//! The vocabulary's enums (`corral-types`) on the wire: each protobuf enum converts
//! to and from its domain twin, variant by variant. The zero value (`UNSPECIFIED`)
//! has no twin: it means "unset", so converting it back gives `None`.

use corral_types as types;

use crate::v1 as pb;

macro_rules! wire {
    ($($name:ident { $($variant:ident),+ $(,)? })+) => {$(
        impl From<types::$name> for pb::$name {
            fn from(value: types::$name) -> Self {
                match value { $(types::$name::$variant => pb::$name::$variant),+ }
            }
        }

        impl pb::$name {
            /// Its domain twin; `None` for `UNSPECIFIED`.
            pub fn word(self) -> Option<types::$name> {
                match self {
                    pb::$name::Unspecified => None,
                    $(pb::$name::$variant => Some(types::$name::$variant)),+
                }
            }

            /// The word users read (`""` for `UNSPECIFIED`).
            pub fn as_word(self) -> &'static str {
                self.word().map_or("", |w| w.as_str())
            }

            /// The wire value of a domain word, for a message's `i32` field.
            pub fn of(value: types::$name) -> i32 {
                pb::$name::from(value) as i32
            }
        }
    )+};
}

wire! {
    JobState { Active, Completed, Failed, Cancelled }
    TaskState { Waiting, Ready, Running, Succeeded, Failed, Cancelled }
    Outcome { Succeeded, Failed, TimedOut, Cancelled, NodeLost, SpawnFailed }
    NodeState { Starting, Idle, Running, Draining, Lost, Removed }
}

/// An array's indices on the wire: its runs.
pub fn array_runs(indices: &types::array::Indices) -> Vec<pb::ArrayRun> {
    indices.runs().iter().map(|r| pb::ArrayRun { first: r.first, last: r.last, step: r.step }).collect()
}

/// The indices that runs from the wire list, checked (in increasing order, none
/// overlapping, each step at least 1).
pub fn array_indices(runs: &[pb::ArrayRun]) -> Result<types::array::Indices, String> {
    types::array::Indices::new(
        runs.iter().map(|r| types::array::Run { first: r.first, last: r.last, step: r.step }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_has_a_wire_twin_and_back() {
        for &s in types::TaskState::ALL {
            assert_eq!(pb::TaskState::from(s).word(), Some(s));
        }
        for &s in types::JobState::ALL {
            assert_eq!(pb::JobState::from(s).word(), Some(s));
        }
        for &s in types::Outcome::ALL {
            assert_eq!(pb::Outcome::from(s).word(), Some(s));
        }
        for &s in types::NodeState::ALL {
            assert_eq!(pb::NodeState::from(s).word(), Some(s));
        }
        assert_eq!(pb::Outcome::Unspecified.as_word(), "");
    }
}
