//! Durations as users write them (`90s`, `1h30m`, `7days`), and the one bound every
//! duration and every time a request names is held to. Without it a duration too
//! long for a `u64` of milliseconds wraps when cast: `--timeout 18446744073709553s`
//! would end a task after 1.4 s.

use std::time::Duration;

use crate::Invalid;

/// The longest duration Corral takes anywhere: 100 years (of 365.25 days, as
/// `humantime` counts them, so `100y` is exactly the limit).
pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

/// [`MAX`] in milliseconds, as durations travel on the wire.
pub const MAX_MS: u64 = MAX.as_secs() * 1000;

/// How [`MAX`] is said in errors.
pub const MAX_SHOWN: &str = "100 years";

/// A duration as written on a command line or in a job file, at most [`MAX`]:
/// `90s`, `1h30m`, `7days`, or Slurm's clock forms `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM` and `D-HH:MM:SS`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = match clock(s.trim()) {
        Some(d) => d.map_err(|why| format!("'{}' is not a duration: {why}", crate::shown(s)))?,
        None => humantime::parse_duration(s.trim())
            .map_err(|e| format!("'{}' is not a duration (30s, 5m, 1h30m, or HH:MM:SS): {e}", crate::shown(s)))?,
    };
    if d > MAX {
        return Err(format!("'{}' is longer than {MAX_SHOWN}, the longest duration Corral takes", crate::shown(s)));
    }
    Ok(d)
}

/// Slurm's forms (`--time`): `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`;
/// `None` for anything else (left to `humantime`).
fn clock(s: &str) -> Option<Result<Duration, String>> {
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => (Some(d), rest),
        _ if s.contains(':') => (None, s),
        _ => return None,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Some(Err("each part of D-HH:MM:SS is a number".into()));
    }
    let number = |p: &str| p.parse::<u64>().map_err(|_| format!("{p} is too large"));
    let secs = (|| {
        // Which units the parts are: with days, hours first; without, a pair is
        // minutes and seconds (as Slurm reads it), a triple hours to seconds.
        let units: &[(u64, &str, u64)] = match (days.is_some(), parts.len()) {
            (true, 1) => &[(3600, "hours", 24)],
            (true, 2) => &[(3600, "hours", 24), (60, "minutes", 60)],
            (true, 3) | (false, 3) => &[(3600, "hours", 24), (60, "minutes", 60), (1, "seconds", 60)],
            (false, 2) => &[(60, "minutes", u64::MAX), (1, "seconds", 60)],
            _ => return Err("use MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS".to_string()),
        };
        let mut total = match days {
            Some(d) => number(d)?.checked_mul(86_400).ok_or("too many days")?,
            None => 0,
        };
        for (i, (part, (unit, name, below))) in parts.iter().zip(units).enumerate() {
            let n = number(part)?;
            // The first part may run over (`36:00:00`), unless days carry the rest.
            if n >= *below && (i > 0 || days.is_some()) {
                return Err(format!("{n} {name} is out of range (below {below})"));
            }
            total = n.checked_mul(*unit).and_then(|v| total.checked_add(v)).ok_or("too long")?;
        }
        Ok(total)
    })();
    Some(secs.map(Duration::from_secs))
}

/// A duration in milliseconds for the wire; durations past [`MAX`] (which
/// [`parse`] refuses) stay at `u64::MAX` instead of wrapping round.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration a request carries in milliseconds, refused past [`MAX`] with the
/// field named.
pub fn from_ms(field: &'static str, ms: u64) -> Result<Duration, Invalid> {
    if ms > MAX_MS {
        return Err(Invalid::new(
            field,
            format!("{ms} ms is longer than {MAX_SHOWN}, the longest duration Corral takes"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// A time a request carries (ms since the Unix epoch), refused when it is more than
/// [`MAX`] after `now_ms`: a job that begins in 10,000 years is a mistake, and a
/// value past `i64::MAX` cannot be stored.
pub fn time_ms(field: &'static str, at_ms: u64, now_ms: u64) -> Result<u64, Invalid> {
    if at_ms > now_ms.saturating_add(MAX_MS) {
        return Err(Invalid::new(
            field,
            format!("{at_ms} is more than {MAX_SHOWN} from now; give a time (ms since 1970) before that"),
        ));
    }
    Ok(at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_clock_forms_are_durations() {
        for (written, secs) in [
            ("05:30", 330),
            ("1:00:00", 3600),
            ("36:00:00", 129_600),
            ("2-00", 172_800),
            ("1-12", 129_600),
            ("1-02:30", 95_400),
            ("1-02:03:04", 93_784),
            ("0:00:01", 1),
        ] {
            assert_eq!(parse(written), Ok(Duration::from_secs(secs)), "{written}");
        }
        for (bad, says) in [
            ("1:60:00", "60 minutes is out of range"),
            ("1-24:00", "24 hours is out of range"),
            ("10:61", "61 seconds is out of range"),
            ("1:2:3:4", "use MM:SS"),
            ("1-", "each part"),
            ("a:b", "each part"),
            ("36500000-00", "longer than 100 years"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)), "humantime's forms still work");
    }

    #[test]
    fn durations_past_the_limit_are_refused_not_wrapped() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("100y"), Ok(MAX));
        for long in ["18446744073709553s", "101y", "100y 1s"] {
            let err = parse(long).unwrap_err();
            assert!(err.contains("longer than 100 years"), "{long}: {err}");
        }
        assert!(parse("soon").unwrap_err().contains("not a duration"));
        assert_eq!(ms(Duration::from_secs(u64::MAX)), u64::MAX);
        assert_eq!(ms(MAX), MAX_MS);
        assert_eq!(from_ms("timeout", MAX_MS), Ok(MAX));
        assert_eq!(from_ms("timeout", MAX_MS + 1).unwrap_err().field, "timeout");
        assert_eq!(from_ms("timeout", u64::MAX).unwrap_err().field, "timeout");
        assert_eq!(time_ms("begin_at_ms", 5, 1), Ok(5));
        assert!(time_ms("begin_at_ms", u64::MAX, 1).unwrap_err().reason.contains("100 years from now"));
        assert!(MAX_MS < i64::MAX as u64);
    }
}
