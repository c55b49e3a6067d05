//! What a task runs: its command, environment, limits, inputs and outputs.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// What each task of a job runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub slots: u32,
    /// How many whole nodes it takes at once: 1 for a task on one node; more for
    /// a multi-node (MPI) task, whose rank 0 runs the command.
    #[serde(default = "one_node", skip_serializing_if = "is_one_node")]
    pub nodes: u32,
    /// A multi-node task's coordination command (Azure's name): run by `sh -c` on
    /// every node, through the agents, before rank 0's command starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<String>,
    pub max_retries: u32,
    #[serde(with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// Objects fetched into the task's directory before it starts.
    #[serde(default)]
    pub inputs: Vec<TaskInput>,
    /// Glob patterns of files uploaded from its directory when it ends.
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub outputs_when: OutputsWhen,
    /// A plain command, or one side of a map/reduce shuffle around it.
    #[serde(default)]
    pub kind: TaskKind,
    /// A file or directory in the task's directory kept across attempts
    /// (`--checkpoint`): stored when an attempt ends and every `checkpoint_interval`,
    /// put back before the next attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub checkpoint_interval: Option<Duration>,
    /// What each task needs beyond slots (`gpus`, `mem` in bytes, named counters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, u64>,
    /// One entry per array index from 0 (`job submit --each-line FILE`): task `i`
    /// gets `entries[i]` in `CORRAL_ENTRY`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
}

/// What the agent does around a task's command.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    /// Run it.
    #[default]
    Command,
    /// Feed it split `array index` of the input; partition, sort and store its output.
    Map { splits: Vec<Vec<Segment>>, reduce_tasks: u32, combiner: Option<String> },
    /// Feed it partition `array index`, merged from every map task's output.
    Reduce { map_tasks: u32 },
}

/// A byte range of an input object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub object: String,
    pub offset: u64,
    pub length: u64,
}

/// An object a task needs, and where it goes in the task's directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskInput {
    pub object: String,
    pub path: String,
}

/// When a task's outputs are uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputsWhen {
    #[default]
    Success,
    Failure,
    Always,
}

impl OutputsWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputsWhen::Success => "success",
            OutputsWhen::Failure => "failure",
            OutputsWhen::Always => "always",
        }
    }
}

impl FromStr for OutputsWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "success" => Ok(OutputsWhen::Success),
            "failure" => Ok(OutputsWhen::Failure),
            "always" => Ok(OutputsWhen::Always),
            _ => Err(format!("'{}' is not one of: success, failure, always", crate::shown(s))),
        }
    }
}

fn one_node() -> u32 {
    1
}

fn is_one_node(nodes: &u32) -> bool {
    *nodes == 1
}

impl TaskSpec {
    /// Whether it spans several nodes (a gang).
    pub fn is_multi_node(&self) -> bool {
        self.nodes > 1
    }

    /// A spec that runs `argv` with one slot and nothing else set.
    pub fn command(argv: Vec<String>) -> Self {
        TaskSpec {
            argv,
            env: BTreeMap::new(),
            slots: 1,
            nodes: 1,
            coordination: None,
            max_retries: 0,
            timeout: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            outputs_when: OutputsWhen::Success,
            kind: TaskKind::Command,
            checkpoint: None,
            checkpoint_interval: None,
            resources: BTreeMap::new(),
            entries: Vec::new(),
        }
    }

    /// The environment for one array index: the job's, and `CORRAL_ENTRY` when the
    /// job was made from the lines of a file.
    pub fn env_for(&self, index: u32) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        if let Some(entry) = self.entries.get(index as usize) {
            env.insert("CORRAL_ENTRY".into(), entry.clone());
        }
        env
    }

    /// The inputs for one array index: `{index}` replaced.
    pub fn inputs_for(&self, index: u32) -> Vec<TaskInput> {
        let index = index.to_string();
        self.inputs
            .iter()
            .map(|i| TaskInput { object: i.object.replace("{index}", &index), path: i.path.replace("{index}", &index) })
            .collect()
    }

    /// The argv for one array index: `{index}` replaced in every argument.
    pub fn argv_for(&self, index: u32) -> Vec<String> {
        let index = index.to_string();
        self.argv
            .iter()
            .map(|arg| if arg.contains("{index}") { arg.replace("{index}", &index) } else { arg.clone() })
            .collect()
    }
}

/// Serde for a `Duration` as whole milliseconds.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Serde for an optional `Duration` as whole milliseconds.
pub mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_substituted() {
        let spec = TaskSpec::command(vec!["echo".into(), "in-{index}.txt".into(), "{index}{index}".into()]);
        assert_eq!(spec.argv_for(7), vec!["echo", "in-7.txt", "77"]);
    }
}
