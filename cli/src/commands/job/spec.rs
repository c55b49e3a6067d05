//! How each task runs, shared by `job submit` and `job add-tasks`, and the parsers
//! of their flag values.

use std::time::Duration;

use corral_proto::v1 as pb;

/// How each task runs, shared by `submit` and `add-tasks`.
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Retries after a task fails or times out (node loss does not count).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, help_heading = "Retries and policy")]
    pub max_retries: u32,
    /// Kill a task that runs longer than this (e.g. 30s, 5m).
    #[arg(long, value_parser = corral_types::duration::parse, help_heading = "Task")]
    pub timeout: Option<Duration>,
    /// Slots each task needs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Task")]
    pub slots: u32,
    /// Whole nodes each task takes at once, all or none (a multi-node task, for
    /// MPI): rank 0 runs the command with $CORRAL_HOSTFILE, $CORRAL_HOSTS,
    /// $CORRAL_NODE_RANK and $CORRAL_NUM_NODES; the other nodes are held for it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Task")]
    pub nodes: u32,
    /// With --nodes: a shell command run on every node of the task, through the
    /// agents, before rank 0's command starts (Azure's coordination command: set
    /// up each node, start a daemon); if it fails anywhere the attempt fails.
    #[arg(long, value_name = "CMD", help_heading = "Task")]
    pub coordination: Option<String>,
    /// Environment for each task, K=V (repeatable).
    #[arg(long = "env", value_parser = parse_env, help_heading = "Task")]
    pub env: Vec<(String, String)>,
    /// An object fetched into each task's directory first: OBJECT, or OBJECT=PATH to
    /// name it there (repeatable; `{index}` allowed).
    #[arg(long = "input", value_parser = parse_input, help_heading = "Data")]
    pub inputs: Vec<(String, String)>,
    /// A glob pattern (relative to the task's directory) of files to upload when the
    /// task ends, to jobs/JOB/TASK/ in the store (repeatable).
    #[arg(long = "outputs", value_name = "PATTERN", help_heading = "Data")]
    pub outputs: Vec<String>,
    /// When outputs are uploaded.
    #[arg(long, default_value = "success", value_parser = ["success", "failure", "always"], help_heading = "Data")]
    pub outputs_when: String,
    /// What each task needs beyond slots, NAME=VALUE (repeatable): `gpus=1` (its own
    /// devices, in $CORRAL_GPUS and $CUDA_VISIBLE_DEVICES), `mem=4GiB`, or a counter
    /// the agents declare (`licenses=1`). A task goes only where all of it is free.
    #[arg(long = "resource", value_name = "NAME=VALUE", value_parser = parse_resource, help_heading = "Task")]
    pub resources: Vec<(String, u64)>,
    /// A file or directory in the task's directory kept across attempts: stored
    /// when an attempt ends (exit, timeout, cancel) and every --checkpoint-interval,
    /// put back in place before the next attempt starts, on any node, with
    /// $CORRAL_CHECKPOINT_RESTORED=1. Write it atomically (a new file renamed over).
    #[arg(long, value_name = "PATH", help_heading = "Data")]
    pub checkpoint: Option<String>,
    /// Also store the checkpoint this often while the task runs (e.g. 5m; at least
    /// 1s), so a node that dies loses at most that much.
    #[arg(long, value_name = "DUR", requires = "checkpoint", value_parser = corral_types::duration::parse, help_heading = "Data")]
    pub checkpoint_interval: Option<Duration>,
}

/// A task's `NAME=VALUE` request: `mem` in a size (`4GiB`), anything else a count.
pub fn parse_resource(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=VALUE (e.g. gpus=1, mem=4GiB)"))?;
    let name = name.trim();
    corral_types::resources::check_name(name)?;
    Ok((name.to_string(), resource_amount(name, value.trim())?))
}

/// How much of resource `name` a value says.
pub fn resource_amount(name: &str, value: &str) -> Result<u64, String> {
    if name == corral_types::resources::MEM {
        return corral_types::size::parse(value);
    }
    value.parse().map_err(|_| format!("'{value}' for {name} is not a whole number"))
}

/// `OBJECT` or `OBJECT=PATH`.
pub fn parse_input(s: &str) -> Result<(String, String), String> {
    let (object, path) = s.split_once('=').unwrap_or((s, ""));
    if object.is_empty() {
        return Err(format!("'{s}' names no object"));
    }
    Ok((object.to_string(), path.to_string()))
}

impl SpecArgs {
    pub fn to_pb(&self, argv: Vec<String>) -> pb::TaskSpec {
        pb::TaskSpec {
            argv,
            env: self.env.iter().cloned().collect(),
            slots: self.slots,
            nodes: self.nodes,
            coordination: self.coordination.clone().unwrap_or_default(),
            max_retries: self.max_retries,
            timeout_ms: self.timeout.map_or(0, corral_types::duration::ms),
            inputs: self
                .inputs
                .iter()
                .map(|(object, path)| pb::TaskInput { object: object.clone(), path: path.clone() })
                .collect(),
            outputs: self.outputs.clone(),
            outputs_when: self.outputs_when.clone(),
            resources: self.resources.iter().cloned().collect(),
            checkpoint: self.checkpoint.clone().unwrap_or_default(),
            checkpoint_interval_ms: self.checkpoint_interval.map_or(0, corral_types::duration::ms),
        }
    }
}

/// An RFC 3339 time with an offset as ms since the Unix epoch; `None` if `s` is not one.
pub fn parse_rfc3339(s: &str) -> Option<Result<u64, String>> {
    let t = s.parse::<jiff::Timestamp>().ok()?;
    Some(u64::try_from(t.as_millisecond()).map_err(|_| format!("'{s}' is before 1970")))
}

/// A time as ms since the Unix epoch: RFC 3339 with an offset
/// (`2026-12-24T18:00:00+01:00`, `...Z`), or a duration from now (`10m`, `1h30m`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Some(at) = parse_rfc3339(s) {
        return at;
    }
    if humantime::parse_duration(s.trim()).is_err() {
        return Err(format!(
            "'{}' is neither an RFC 3339 time with an offset (2026-12-24T18:00:00+01:00) nor a duration from now (10m)",
            corral_types::shown(s)
        ));
    }
    let d = corral_types::duration::parse(s)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Ok(corral_types::duration::ms(now + d))
}

/// `A-B` with A <= B.
pub fn parse_array(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("'{s}' is not a range: expected A-B, e.g. 1-100"))?;
    let a: u32 = a.trim().parse().map_err(|_| format!("'{a}' in '{s}' is not a whole number ≥ 0"))?;
    let b: u32 = b.trim().parse().map_err(|_| format!("'{b}' in '{s}' is not a whole number ≥ 0"))?;
    if a > b {
        return Err(format!("'{s}' is reversed: the start must not be after the end"));
    }
    Ok((a, b))
}

/// `K=V` with a non-empty K.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not K=V")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_checked() {
        assert_eq!(parse_array("1-100"), Ok((1, 100)));
        assert_eq!(parse_array("5-5"), Ok((5, 5)));
        assert!(parse_array("10-1").unwrap_err().contains("reversed"));
        assert!(parse_array("1..10").unwrap_err().contains("expected A-B"));
        assert!(parse_array("a-3").unwrap_err().contains("'a'"));
        assert!(parse_array("-3-4").is_err());
    }

    #[test]
    fn env_needs_a_name() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
