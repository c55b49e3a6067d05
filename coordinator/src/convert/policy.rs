//! A job's policy (exit rules, retry delays, throttles) in and out of protobuf.

use std::time::Duration;

use corral_proto::v1 as pb;
use corral_types::policy::{ExitRule, MAX_EXIT_RULES, MAX_KEY, MAX_REPLICAS, MAX_RETRY_DELAY, MAX_RUNNING};

use super::text;
use crate::error::Invalid;
use crate::model::{JobPolicy, JobSpec};

/// A submission's policy, each field checked; unset is the default policy.
pub fn job_policy(p: Option<pb::JobPolicy>) -> Result<JobPolicy, Invalid> {
    let Some(p) = p else { return Ok(JobPolicy::default()) };
    if p.exit_policy.len() > MAX_EXIT_RULES {
        return Err(Invalid::new(
            "exit_policy",
            format!("has {} rules; the limit is {MAX_EXIT_RULES}", p.exit_policy.len()),
        ));
    }
    let mut exit_rules = Vec::with_capacity(p.exit_policy.len());
    for rule in &p.exit_policy {
        text("exit_policy", rule, 1024)?;
        exit_rules.push(rule.parse::<ExitRule>().map_err(|e| Invalid::new("exit_policy", e))?);
    }
    let delay = |field: &'static str, ms: u64| -> Result<Option<Duration>, Invalid> {
        let d = corral_types::duration::from_ms(field, ms)?;
        if d > MAX_RETRY_DELAY {
            return Err(Invalid::new(field, "may be at most 24h"));
        }
        Ok((ms > 0).then_some(d))
    };
    let retry_delay = delay("retry_delay", p.retry_delay_ms)?;
    let retry_delay_max = delay("retry_delay_max", p.retry_delay_max_ms)?;
    if let (Some(first), Some(max)) = (retry_delay, retry_delay_max) {
        if max < first {
            return Err(Invalid::new("retry_delay_max", "is shorter than retry_delay"));
        }
    }
    if p.max_running > MAX_RUNNING {
        return Err(Invalid::new("max_running", format!("is {}; the limit is {MAX_RUNNING}", p.max_running)));
    }
    let concurrency_key = match p.concurrency_key.as_str() {
        "" => None,
        key => {
            if key.len() > MAX_KEY || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(Invalid::new(
                    "concurrency_key",
                    format!("must be at most {MAX_KEY} bytes, without spaces or control characters"),
                ));
            }
            Some(key.to_string())
        }
    };
    if p.replicas > MAX_REPLICAS {
        return Err(Invalid::new("replicas", format!("is {}; the limit is {MAX_REPLICAS}", p.replicas)));
    }
    Ok(JobPolicy {
        exit_rules,
        retry_delay,
        retry_delay_max,
        max_running: (p.max_running > 0).then_some(p.max_running),
        concurrency_key,
        replicas: (p.replicas > 0).then_some(p.replicas),
    })
}

/// A continuous job is one command run as `replicas` tasks, numbered from 0;
/// other jobs pass unchanged.
pub fn continuous(spec: JobSpec) -> Result<JobSpec, Invalid> {
    let Some(replicas) = spec.policy.replicas else { return Ok(spec) };
    if spec.graph.is_some() || spec.open {
        let why =
            "a continuous job runs one command as its replicas: it cannot be a graph, an open or a map/reduce job";
        return Err(Invalid::new("continuous", why));
    }
    if spec.array.is_some() || spec.first_index != 0 || spec.last_index != 0 || !spec.task.entries.is_empty() {
        let why = "a continuous job's tasks are its replicas (--replicas N): leave --array and entries unset";
        return Err(Invalid::new("continuous", why));
    }
    Ok(spec.with_range(0, replicas - 1))
}

/// A job's policy as clients see it; `None` for the default.
pub fn policy_to_pb(p: &JobPolicy) -> Option<pb::JobPolicy> {
    if p.is_default() {
        return None;
    }
    Some(pb::JobPolicy {
        exit_policy: p.exit_rules.iter().map(|r| r.to_string()).collect(),
        retry_delay_ms: p.retry_delay.map_or(0, corral_types::duration::ms),
        retry_delay_max_ms: p.retry_delay_max.map_or(0, corral_types::duration::ms),
        max_running: p.max_running.unwrap_or(0),
        concurrency_key: p.concurrency_key.clone().unwrap_or_default(),
        replicas: p.replicas.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_policies_name_the_field() {
        let bad = |p: pb::JobPolicy| job_policy(Some(p)).unwrap_err().to_string();
        assert!(bad(pb::JobPolicy { exit_policy: vec!["3=boom".into()], ..Default::default() })
            .starts_with("invalid exit_policy:"));
        assert!(bad(pb::JobPolicy { retry_delay_ms: 10_000, retry_delay_max_ms: 1_000, ..Default::default() })
            .contains("retry_delay_max"));
        assert!(bad(pb::JobPolicy { concurrency_key: "a b".into(), ..Default::default() })
            .starts_with("invalid concurrency_key"));
        assert!(bad(pb::JobPolicy { max_running: MAX_RUNNING + 1, ..Default::default() }).contains("max_running"));
        assert!(bad(pb::JobPolicy { exit_policy: vec!["3=fail".into(); 65], ..Default::default() }).contains("limit"));
        assert!(bad(pb::JobPolicy { replicas: MAX_REPLICAS + 1, ..Default::default() }).starts_with("invalid replicas"));
    }

    #[test]
    fn a_continuous_job_is_its_replicas_of_one_command() {
        let task = corral_types::TaskSpec::command(vec!["true".into()]);
        let policy = JobPolicy { replicas: Some(3), ..Default::default() };
        let plain = JobSpec {
            policy: policy.clone(),
            ..JobSpec::new(crate::model::PoolName::parse("pool", "p").unwrap(), task.clone())
        };
        let spec = continuous(plain.clone()).unwrap();
        assert_eq!((spec.first_index, spec.last_index), (0, 2));
        let array = JobSpec {
            policy,
            ..JobSpec::new(crate::model::PoolName::parse("pool", "p").unwrap(), task).with_range(1, 10)
        };
        assert!(continuous(array).unwrap_err().to_string().starts_with("invalid continuous: "));
        let open = JobSpec { open: true, ..plain };
        assert!(continuous(open).unwrap_err().to_string().contains("graph"));
    }

    #[test]
    fn a_policy_comes_back_as_it_went_in() {
        let p = pb::JobPolicy {
            exit_policy: vec!["3=fail".into(), "signal:KILL=fail-job".into()],
            retry_delay_ms: 1000,
            retry_delay_max_ms: 8000,
            max_running: 2,
            concurrency_key: "db".into(),
            replicas: 3,
        };
        assert_eq!(policy_to_pb(&job_policy(Some(p.clone())).unwrap()), Some(p));
        assert_eq!(policy_to_pb(&job_policy(None).unwrap()), None);
    }
}
