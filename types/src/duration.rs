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

/// A duration as written on a command line or in a job file, at most [`MAX`].
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{}' is not a duration (30s, 5m, 1h30m): {e}", crate::shown(s)))?;
    if d > MAX {
        return Err(format!("'{}' is longer than {MAX_SHOWN}, the longest duration Corral takes", crate::shown(s)));
    }
    Ok(d)
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
