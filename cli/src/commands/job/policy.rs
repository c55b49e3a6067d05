//! A job's failure and throttle flags (`--exit-policy`, `--retry-delay`,
//! `--max-running`, `--concurrency-key`), shared by `job submit`, `schedule create`
//! and `template create`, merged with the same fields of a job file.

use std::time::Duration;

use corral_proto::v1 as pb;
use corral_types::policy::{parse_retry_delay, ExitRule, MAX_REPLICAS, MAX_RUNNING};

#[derive(clap::Args, Debug, Default)]
pub struct PolicyArgs {
    /// What a failed task does, by how it ended: CODES=ACTION, first match wins
    /// (repeatable). CODES: `3`, `10-20`, `1,2,7`, `signal:KILL`, `timeout`. ACTION:
    /// `retry` (while --max-retries allows), `fail` (no more retries), `fail-job`
    /// (the job fails, its other tasks are cancelled), `succeed`. A failure no rule
    /// matches is retried while --max-retries allows.
    #[arg(long = "exit-policy", value_name = "CODES=ACTION", value_parser = parse_rule, help_heading = "Retries and policy")]
    pub exit_policy: Vec<String>,
    /// The first retry's delay, doubled after each failure up to MAX (e.g. `5s`,
    /// `5s..10m`) [default: the coordinator's --retry-backoff, 500ms..30s].
    #[arg(long, value_name = "DUR[..MAX]", value_parser = parse_retry_delay, help_heading = "Retries and policy")]
    pub retry_delay: Option<(Duration, Option<Duration>)>,
    /// At most N of the job's tasks run at once (also `--array 1-1000%N`); with
    /// --concurrency-key, at most N tasks of all jobs with that key.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUNNING)), help_heading = "Retries and policy")]
    pub max_running: Option<u32>,
    /// Share a limit with every job of this key, across pools: at most
    /// --max-running of their tasks run at once (default 1: a singleton).
    #[arg(long, value_name = "KEY", help_heading = "Retries and policy")]
    pub concurrency_key: Option<String>,
    /// Always running: the job's --replicas tasks are each started again whenever
    /// they end (any exit), after a delay that doubles from --retry-delay up to 5m
    /// and resets after 10m of running. It never completes: `job cancel` stops it,
    /// `job scale` changes the replicas. With --replicas 1 and --concurrency-key, a
    /// singleton across the cluster.
    #[arg(long, help_heading = "Retries and policy")]
    pub continuous: bool,
    /// How many copies of a --continuous job run [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPLICAS)), help_heading = "Retries and policy")]
    pub replicas: Option<u32>,
}

fn parse_rule(s: &str) -> Result<String, String> {
    s.parse::<ExitRule>().map(|r| r.to_string())
}

/// The same fields in a job file.
#[derive(Debug, Default)]
pub struct FilePolicy {
    pub exit_policy: Vec<String>,
    pub retry_delay: Option<String>,
    pub max_running: Option<u32>,
    pub concurrency_key: Option<String>,
    pub continuous: bool,
    pub replicas: Option<u32>,
}

impl PolicyArgs {
    /// The policy to send: the flags, over the job file's fields, with the `%N` of
    /// `--array`. Errors name the flag or field.
    pub fn to_pb(&self, file: Option<&FilePolicy>, array_limit: Option<u32>) -> anyhow::Result<Option<pb::JobPolicy>> {
        let empty = FilePolicy::default();
        let file = file.unwrap_or(&empty);
        let mut exit_policy = self.exit_policy.clone();
        if exit_policy.is_empty() {
            for rule in &file.exit_policy {
                let rule = rule.parse::<ExitRule>().map_err(|e| anyhow::anyhow!("invalid exit_policy: {e}"))?;
                exit_policy.push(rule.to_string());
            }
        }
        let (retry_delay, retry_delay_max) = match (self.retry_delay, &file.retry_delay) {
            (Some(d), _) => d,
            (None, Some(text)) => parse_retry_delay(text).map_err(|e| anyhow::anyhow!("invalid retry_delay: {e}"))?,
            (None, None) => (Duration::ZERO, None),
        };
        if array_limit.is_some() && self.max_running.is_some() && array_limit != self.max_running {
            anyhow::bail!(
                "invalid --max-running: --array already says %{}; give the limit once",
                array_limit.unwrap_or(0)
            );
        }
        let max_running = self.max_running.or(array_limit).or(file.max_running).unwrap_or(0);
        let concurrency_key = self.concurrency_key.clone().or_else(|| file.concurrency_key.clone()).unwrap_or_default();
        if self.replicas.is_some() && !self.continuous && !file.continuous {
            anyhow::bail!("invalid --replicas: only a continuous job has replicas (add --continuous)");
        }
        if file.replicas.is_some() && !file.continuous && !self.continuous {
            anyhow::bail!("invalid replicas: only a continuous job has replicas (add `continuous: true`)");
        }
        if file.replicas.is_some_and(|n| n == 0 || n > MAX_REPLICAS) {
            anyhow::bail!("invalid replicas: must be 1 to {MAX_REPLICAS}");
        }
        let replicas = match self.continuous || file.continuous {
            true => self.replicas.or(file.replicas).unwrap_or(1),
            false => 0,
        };
        let policy = pb::JobPolicy {
            exit_policy,
            retry_delay_ms: corral_types::duration::ms(retry_delay),
            retry_delay_max_ms: retry_delay_max.map_or(0, corral_types::duration::ms),
            max_running,
            concurrency_key,
            replicas,
        };
        Ok((policy != pb::JobPolicy::default()).then_some(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let file = FilePolicy {
            exit_policy: vec!["3=fail".into()],
            retry_delay: Some("1s..1m".into()),
            max_running: Some(5),
            concurrency_key: Some("k".into()),
            ..Default::default()
        };
        let flags = PolicyArgs { max_running: Some(2), exit_policy: vec!["4=succeed".into()], ..Default::default() };
        let p = flags.to_pb(Some(&file), None).unwrap().unwrap();
        assert_eq!(p.exit_policy, vec!["4=succeed"]);
        assert_eq!((p.retry_delay_ms, p.retry_delay_max_ms, p.max_running), (1000, 60_000, 2));
        assert_eq!(p.concurrency_key, "k");
        assert_eq!(PolicyArgs::default().to_pb(None, None).unwrap(), None);
        assert_eq!(PolicyArgs::default().to_pb(None, Some(10)).unwrap().unwrap().max_running, 10);
        let bad = FilePolicy { exit_policy: vec!["3=later".into()], ..Default::default() };
        let err = PolicyArgs::default().to_pb(Some(&bad), None).unwrap_err().to_string();
        assert!(err.starts_with("invalid exit_policy:"), "{err}");
        let continuous = PolicyArgs { continuous: true, ..Default::default() };
        assert_eq!(continuous.to_pb(None, None).unwrap().unwrap().replicas, 1);
        let file = FilePolicy { continuous: true, replicas: Some(3), ..Default::default() };
        assert_eq!(PolicyArgs::default().to_pb(Some(&file), None).unwrap().unwrap().replicas, 3);
        let stray = FilePolicy { replicas: Some(3), ..Default::default() };
        assert!(PolicyArgs::default().to_pb(Some(&stray), None).unwrap_err().to_string().contains("continuous: true"));
        let twice = PolicyArgs { max_running: Some(3), ..Default::default() };
        assert!(twice.to_pb(None, Some(10)).unwrap_err().to_string().contains("give the limit once"));
    }
}
