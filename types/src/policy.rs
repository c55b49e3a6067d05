//! What a job does when a task fails, and how many of its tasks run at once.
//!
//! An exit rule is written `CODES=ACTION`: `3`, `10-20`, `1,2,7-9`, `signal:KILL`,
//! `signal:9` or `timeout`, then `retry`, `fail`, `fail-job` or `succeed`. The CLI,
//! job files, the wire and the store all carry that text; it is parsed here, once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

named_enum!(
    /// What a failed attempt whose exit matches a rule does.
    ExitAction {
        /// Retried, counting against `max_retries` (as an unmatched failure).
        Retry = "retry",
        /// The task fails now, whatever retries it has left.
        Fail = "fail",
        /// The task fails, and so does its job: its other tasks are cancelled.
        FailJob = "fail-job",
        /// The task succeeded after all.
        Succeed = "succeed",
    }
);

/// One thing an exit rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMatch {
    /// An exit code in this inclusive range.
    Codes(i32, i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed for running past its timeout.
    Timeout,
}

/// How an attempt ended, as far as exit rules look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    Timeout,
}

/// `CODES=ACTION`: the first rule of a job that matches a failed attempt decides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExitRule {
    pub matches: Vec<ExitMatch>,
    pub action: ExitAction,
}

impl ExitRule {
    pub fn matches(&self, exit: Exit) -> bool {
        self.matches.iter().any(|m| match (m, exit) {
            (ExitMatch::Codes(a, b), Exit::Code(c)) => (*a..=*b).contains(&c),
            (ExitMatch::Signal(s), Exit::Signal(t)) => *s == t,
            (ExitMatch::Timeout, Exit::Timeout) => true,
            _ => false,
        })
    }
}

/// Signal names a rule may use (Linux numbering), without the `SIG` prefix.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("XCPU", 24),
    ("XFSZ", 25),
];

fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
}

fn parse_code(text: &str, rule: &str) -> Result<i32, String> {
    let code: i32 =
        text.trim().parse().map_err(|_| format!("'{text}' in '{rule}' is not an exit code (a whole number 1-255)"))?;
    if !(1..=255).contains(&code) {
        return Err(format!("exit code {code} in '{rule}' is outside 1-255 (0 is success, which no rule changes)"));
    }
    Ok(code)
}

fn parse_match(item: &str, rule: &str) -> Result<ExitMatch, String> {
    let item = item.trim();
    if item == "timeout" {
        return Ok(ExitMatch::Timeout);
    }
    if let Some(name) = item.strip_prefix("signal:") {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Ok(n) = bare.parse::<i32>() {
            if (1..=64).contains(&n) {
                return Ok(ExitMatch::Signal(n));
            }
        }
        return SIGNALS.iter().find(|(s, _)| *s == bare).map(|(_, n)| ExitMatch::Signal(*n)).ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(s, _)| *s).collect();
            format!("'{name}' in '{rule}' is not a signal: use a number 1-64 or one of {}", names.join(", "))
        });
    }
    match item.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_code(a, rule)?, parse_code(b, rule)?);
            if a > b {
                return Err(format!("'{item}' in '{rule}' is reversed: the start must not be after the end"));
            }
            Ok(ExitMatch::Codes(a, b))
        }
        None => parse_code(item, rule).map(|c| ExitMatch::Codes(c, c)),
    }
}

impl FromStr for ExitRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rule = crate::shown(s);
        let (codes, action) = s.rsplit_once('=').ok_or_else(|| {
            format!("'{rule}' is not CODES=ACTION (e.g. 3=fail, 10-20=retry, signal:KILL=fail-job, timeout=fail)")
        })?;
        let action: ExitAction = action.trim().parse().map_err(|e| format!("the action of '{rule}': {e}"))?;
        if codes.trim().is_empty() {
            return Err(format!("'{rule}' names no exit codes before '='"));
        }
        let matches = codes.split(',').map(|item| parse_match(item, &rule)).collect::<Result<Vec<_>, _>>()?;
        Ok(ExitRule { matches, action })
    }
}

impl TryFrom<String> for ExitRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ExitRule> for String {
    fn from(rule: ExitRule) -> String {
        rule.to_string()
    }
}

impl fmt::Display for ExitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .matches
            .iter()
            .map(|m| match m {
                ExitMatch::Codes(a, b) if a == b => a.to_string(),
                ExitMatch::Codes(a, b) => format!("{a}-{b}"),
                ExitMatch::Signal(n) => match signal_name(*n) {
                    Some(name) => format!("signal:{name}"),
                    None => format!("signal:{n}"),
                },
                ExitMatch::Timeout => "timeout".to_string(),
            })
            .collect();
        write!(f, "{}={}", items.join(","), self.action)
    }
}

/// The longest a retry delay may be (first or cap).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The most tasks a throttle may allow at once (`--max-running`).
pub const MAX_RUNNING: u32 = 1_000_000;

/// The longest concurrency key.
pub const MAX_KEY: usize = 128;

/// The most exit rules a job may have.
pub const MAX_EXIT_RULES: usize = 64;

/// The most replicas a continuous job may have (`--replicas`).
pub const MAX_REPLICAS: u32 = 1_000;

/// A continuous replica's restart delay doubles up to this (Kubernetes' and
/// WebJobs' five minutes) unless the job's `--retry-delay` cap says otherwise.
pub const REPLICA_DELAY_MAX: Duration = Duration::from_secs(5 * 60);

/// A replica that ran this long before it ended starts again after the first
/// delay: its backoff is reset (Kubernetes resets after ten minutes too).
pub const REPLICA_RESET_AFTER: Duration = Duration::from_secs(10 * 60);

/// A job's failure and throttle settings; the default is none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobPolicy {
    /// First match wins; a failure no rule matches is retried up to `max_retries`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_rules: Vec<ExitRule>,
    /// The first retry's delay, doubled per failure up to `retry_delay_max`
    /// (none: the coordinator's `--retry-backoff`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::spec::opt_millis")]
    pub retry_delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::spec::opt_millis")]
    pub retry_delay_max: Option<Duration>,
    /// At most this many of the job's tasks run at once; with a concurrency key,
    /// of all tasks of every job with that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// A continuous job (`--continuous --replicas N`): its N tasks are always
    /// running, each started again (after a backoff) whenever it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// Which limit holds a job's tasks back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle<'a> {
    None,
    /// At most N of this job's tasks at once.
    Job(u32),
    /// At most N tasks at once of all jobs with this key.
    Key(&'a str, u32),
}

impl JobPolicy {
    /// What the first matching rule says about a failed attempt; `None` if no rule
    /// matches (the task is retried while it has retries).
    pub fn action_for(&self, exit: Exit) -> Option<ExitAction> {
        self.exit_rules.iter().find(|r| r.matches(exit)).map(|r| r.action)
    }

    /// The limit on how many of the job's tasks run at once. A key without
    /// `max_running` is a singleton: one task at a time across its jobs.
    pub fn throttle(&self) -> Throttle<'_> {
        match (&self.concurrency_key, self.max_running) {
            (Some(key), n) => Throttle::Key(key, n.unwrap_or(1)),
            (None, Some(n)) => Throttle::Job(n),
            (None, None) => Throttle::None,
        }
    }

    pub fn is_default(&self) -> bool {
        *self == JobPolicy::default()
    }
}

/// `DUR` or `DUR..MAX` (`5s`, `5s..10m`): a job's first retry delay and its cap.
pub fn parse_retry_delay(s: &str) -> Result<(Duration, Option<Duration>), String> {
    let parse = |t: &str| {
        humantime::parse_duration(t.trim())
            .map_err(|e| format!("'{}' is not a duration (e.g. 5s, 2m): {e}", crate::shown(t)))
    };
    let (first, max) = match s.split_once("..") {
        Some((a, b)) => (parse(a)?, Some(parse(b)?)),
        None => (parse(s)?, None),
    };
    if first > MAX_RETRY_DELAY || max.is_some_and(|m| m > MAX_RETRY_DELAY) {
        return Err(format!("'{}': a retry delay may be at most 24h", crate::shown(s)));
    }
    if max.is_some_and(|m| m < first) {
        return Err(format!("'{}': the cap is shorter than the first delay", crate::shown(s)));
    }
    Ok((first, max))
}

/// `A-B`, a list `1,3,5-9:2`, and either with `%N` (Slurm's throttled array): the
/// indices and, with `%N`, how many of its tasks may run at once.
pub fn parse_array(s: &str) -> Result<(crate::array::Indices, Option<u32>), String> {
    let (range, limit) = match s.split_once('%') {
        Some((range, n)) => {
            let n: u32 = n.trim().parse().map_err(|_| format!("'%{n}' in '{s}' is not a whole number ≥ 1"))?;
            if n == 0 || n > MAX_RUNNING {
                return Err(format!("'%{n}' in '{s}' must be 1-{MAX_RUNNING}"));
            }
            (range, Some(n))
        }
        None => (s, None),
    };
    Ok((range.parse()?, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> ExitRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_read_and_print_the_same() {
        for text in
            ["3=fail", "10-20=retry", "1,2,7-9=succeed", "signal:KILL=fail-job", "timeout=fail", "signal:40=retry"]
        {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("signal:sigterm=fail").to_string(), "signal:TERM=fail");
        assert_eq!(rule("signal:9=fail").to_string(), "signal:KILL=fail");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |s: &str| s.parse::<ExitRule>().unwrap_err();
        assert!(err("3").contains("CODES=ACTION"), "{}", err("3"));
        assert!(err("3=explode").contains("retry, fail, fail-job, succeed"), "{}", err("3=explode"));
        assert!(err("0=fail").contains("0 is success"));
        assert!(err("300=fail").contains("outside 1-255"));
        assert!(err("20-10=fail").contains("reversed"));
        assert!(err("signal:BOOM=fail").contains("not a signal"));
        assert!(err("=fail").contains("no exit codes"));
        assert!(err("x=fail").contains("not an exit code"));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = JobPolicy {
            exit_rules: vec![rule("3=fail"), rule("1-10=succeed"), rule("signal:KILL,timeout=fail-job")],
            ..Default::default()
        };
        assert_eq!(policy.action_for(Exit::Code(3)), Some(ExitAction::Fail));
        assert_eq!(policy.action_for(Exit::Code(4)), Some(ExitAction::Succeed));
        assert_eq!(policy.action_for(Exit::Code(11)), None);
        assert_eq!(policy.action_for(Exit::Signal(9)), Some(ExitAction::FailJob));
        assert_eq!(policy.action_for(Exit::Signal(15)), None);
        assert_eq!(policy.action_for(Exit::Timeout), Some(ExitAction::FailJob));
    }

    #[test]
    fn a_key_without_a_limit_is_a_singleton() {
        let keyed = JobPolicy { concurrency_key: Some("db".into()), ..Default::default() };
        assert_eq!(keyed.throttle(), Throttle::Key("db", 1));
        let both = JobPolicy { concurrency_key: Some("db".into()), max_running: Some(3), ..Default::default() };
        assert_eq!(both.throttle(), Throttle::Key("db", 3));
        assert_eq!(JobPolicy { max_running: Some(2), ..Default::default() }.throttle(), Throttle::Job(2));
        assert_eq!(JobPolicy::default().throttle(), Throttle::None);
    }

    #[test]
    fn policies_round_trip_through_json() {
        let policy = JobPolicy {
            exit_rules: vec![rule("3,5-6=fail"), rule("signal:SEGV=retry")],
            retry_delay: Some(Duration::from_secs(5)),
            retry_delay_max: Some(Duration::from_secs(60)),
            max_running: Some(4),
            concurrency_key: Some("nightly".into()),
            replicas: Some(3),
        };
        let text = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<JobPolicy>(&text).unwrap(), policy);
        assert_eq!(serde_json::to_string(&JobPolicy::default()).unwrap(), "{}");
    }

    #[test]
    fn retry_delays_and_arrays() {
        assert_eq!(parse_retry_delay("5s"), Ok((Duration::from_secs(5), None)));
        assert_eq!(parse_retry_delay("1s..1m"), Ok((Duration::from_secs(1), Some(Duration::from_secs(60)))));
        assert!(parse_retry_delay("1m..1s").unwrap_err().contains("shorter"));
        assert!(parse_retry_delay("2d").unwrap_err().contains("24h"));
        let array = |s: &str| parse_array(s).map(|(indices, limit)| (indices.to_string(), limit));
        assert_eq!(array("1-1000%10"), Ok(("1-1000".into(), Some(10))));
        assert_eq!(array("0-9"), Ok(("0-9".into(), None)));
        assert_eq!(array("1,3,5-9:2%2"), Ok(("1,3,5-9:2".into(), Some(2))));
        assert!(parse_array("1-10%0").is_err());
        assert!(parse_array("10-1%2").unwrap_err().contains("reversed"));
    }
}
