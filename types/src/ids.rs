//! Ids: jobs, tasks, attempts, nodes and pools.

use std::fmt;

use crate::Invalid;

/// A job's id: a number counted up from 1, unique for the life of a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A task is named by its job and its index in the job (the array index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub job: JobId,
    pub index: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.index)
    }
}

/// One run of a task: the attempt number fences reports from earlier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptRef {
    pub task: TaskKey,
    pub attempt: u32,
}

/// A node's id, `n-<sequence>`: never reused, so a node that comes back after being
/// declared lost is a different node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn from_seq(seq: u64) -> Self {
        NodeId(format!("n-{seq}"))
    }

    /// The sequence number inside the id, if it has the coordinator's shape.
    pub fn seq(&self) -> Option<u64> {
        self.0.strip_prefix("n-")?.parse().ok()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pool's name: 1 to 63 characters of `a-z 0-9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub fn parse(field: &'static str, name: &str) -> Result<Self, Invalid> {
        check_name(field, "pool", name).map(PoolName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name with the same rule as a pool's ([`check_name`]), for a kind of thing.
macro_rules! plain_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(field: &'static str, name: &str) -> Result<Self, Invalid> {
                check_name(field, $what, name).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

plain_name!(
    /// A schedule's name.
    ScheduleName,
    "schedule"
);
plain_name!(
    /// A job template's name.
    TemplateName,
    "template"
);
plain_name!(
    /// An object trigger's name.
    TriggerName,
    "trigger"
);

/// 1 to 63 characters of `a-z 0-9 - _`, starting with a letter or digit.
fn check_name(field: &'static str, what: &str, name: &str) -> Result<String, Invalid> {
    if name.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if name.len() > 63 {
        return Err(Invalid::new(field, "must be at most 63 characters"));
    }
    let valid = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid || !starts_well {
        return Err(Invalid::new(
            field,
            format!(
                "'{name}' is not a valid {what} name: use lower-case letters, digits, '-' and '_', starting with a letter or digit"
            ),
        ));
    }
    Ok(name.to_string())
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_checked() {
        assert!(PoolName::parse("pool", "cpu-1").is_ok());
        for bad in ["", "-x", "Upper", "a b", &"x".repeat(64)] {
            let err = PoolName::parse("pool", bad).unwrap_err();
            assert_eq!(err.field, "pool");
        }
    }
}
