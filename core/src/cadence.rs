//! When a schedule fires: its cadence (a cron expression in an IANA time zone, or a
//! fixed interval), the slot after a given time, and the jitter of each slot.
//!
//! Pure functions of their arguments: no clock is read here. Cron expressions are
//! parsed and evaluated by `croner` on `jiff`'s zoned times, which handle daylight
//! saving as Vixie cron does: a wall-clock time that a clock change skips fires once,
//! right after the change; a fixed time (`30 1 * * *`) that a clock change repeats
//! fires once, the first time; an interval (`*/15 * * * *`) fires on both passes,
//! as real time goes on.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::error::Invalid;

/// The shortest interval of an `--every` schedule.
pub const MIN_EVERY_MS: u64 = 1000;

/// The five fields a cron nickname stands for.
fn nickname(expr: &str) -> Option<&'static str> {
    Some(match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Each field's numbers against its range, so that an error names the field
/// (`minute field: 61 is out of range 0-59`); names (`MON`, `JAN`), `?`, `L` and `W`
/// are left to the parser.
fn check_ranges(fields: &[&str]) -> Result<(), String> {
    const FIVE: [(&str, u32, u32); 5] =
        [("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7)];
    let seconds = fields.len() == 6;
    let named = std::iter::once(("second", 0, 59)).filter(|_| seconds).chain(FIVE);
    for ((name, low, high), field) in named.zip(fields) {
        for part in field.split(',') {
            let (range, step) = part.split_once('/').map_or((part, None), |(r, s)| (r, Some(s)));
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(0) => return Err(format!("{name} field: a step of 0 never advances")),
                    Ok(_) => {}
                    Err(_) => {
                        return Err(format!("{name} field: step '{}' is not a number", crate::error::shown(step)))
                    }
                }
            }
            for value in range.split('-').filter(|v| v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty()) {
                let n: u64 = value.parse().unwrap_or(u64::MAX);
                if n < u64::from(low) || n > u64::from(high) {
                    return Err(format!("{name} field: {value} is out of range {low}-{high}"));
                }
            }
        }
    }
    Ok(())
}

/// How a schedule's slots are spaced.
#[derive(Clone)]
pub enum Cadence {
    /// A cron expression (five fields, or six with a leading seconds field) in a zone.
    Cron { expr: String, zone: String, cron: Box<croner::Cron>, tz: TimeZone },
    /// Every `period_ms`, counted from `anchor_ms`.
    Every { period_ms: u64, anchor_ms: u64 },
}

impl fmt::Debug for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cadence::Cron { expr, zone, .. } => write!(f, "Cron({expr:?} in {zone})"),
            Cadence::Every { period_ms, anchor_ms } => write!(f, "Every({period_ms} ms from {anchor_ms})"),
        }
    }
}

impl PartialEq for Cadence {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cadence::Cron { expr: a, zone: za, .. }, Cadence::Cron { expr: b, zone: zb, .. }) => a == b && za == zb,
            (Cadence::Every { period_ms: a, anchor_ms: x }, Cadence::Every { period_ms: b, anchor_ms: y }) => {
                a == b && x == y
            }
            _ => false,
        }
    }
}

impl Cadence {
    /// A cron cadence; `zone` is an IANA name (`UTC`, `Europe/Berlin`). Besides five
    /// or six fields, the nicknames `@yearly` (`@annually`), `@monthly`, `@weekly`,
    /// `@daily` (`@midnight`) and `@hourly`, as Nomad and Kubernetes take them.
    pub fn cron(expr: &str, zone: &str) -> Result<Cadence, Invalid> {
        let expanded = nickname(expr.trim()).unwrap_or(expr);
        if expanded.trim_start().starts_with('@') {
            let why = format!(
                "'{}' is not a nickname cron knows (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
                crate::error::shown(expr)
            );
            return Err(Invalid::new("cron", why));
        }
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) {
            let why = format!(
                "'{}' has {} fields; a cron expression has five (minute hour day-of-month month day-of-week), or six with a leading seconds field",
                crate::error::shown(expr),
                fields.len()
            );
            return Err(Invalid::new("cron", why));
        }
        check_ranges(&fields).map_err(|why| Invalid::new("cron", why))?;
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expanded).map_err(|e| {
            Invalid::new("cron", format!("'{}' is not a valid cron expression: {e}", crate::error::shown(expr)))
        })?;
        let tz = TimeZone::get(zone).map_err(|_| {
            Invalid::new(
                "tz",
                format!("'{}' is not a known IANA time zone (such as UTC or Europe/Berlin)", crate::error::shown(zone)),
            )
        })?;
        let cadence = Cadence::Cron { expr: expr.trim().to_string(), zone: zone.to_string(), cron: Box::new(cron), tz };
        // An expression that can never match (`0 0 31 2 *`) would make a schedule that
        // never fires; say so now.
        if cadence.next_after(0).is_none() {
            let why = format!("'{}' matches no time at all", crate::error::shown(expr));
            return Err(Invalid::new("cron", why));
        }
        Ok(cadence)
    }

    /// Every `period_ms`, from `anchor_ms` on.
    pub fn every(period_ms: u64, anchor_ms: u64) -> Result<Cadence, Invalid> {
        if period_ms < MIN_EVERY_MS {
            return Err(Invalid::new("every", "must be at least 1s"));
        }
        Ok(Cadence::Every { period_ms, anchor_ms })
    }

    /// The first slot strictly after `after_ms`; `None` if there is none.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Cadence::Every { period_ms, anchor_ms } => {
                if after_ms < *anchor_ms {
                    return Some(*anchor_ms);
                }
                let k = (after_ms - anchor_ms) / period_ms + 1;
                k.checked_mul(*period_ms)?.checked_add(*anchor_ms)
            }
            Cadence::Cron { cron, tz, .. } => {
                let start = Timestamp::from_millisecond(i64::try_from(after_ms - after_ms % 1000).ok()?).ok()?;
                let next = cron.find_next_occurrence(&start.to_zoned(tz.clone()), false).ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok().filter(|&t| t > after_ms)
            }
        }
    }

    /// Up to `n` slots after `after_ms`, first to last.
    pub fn upcoming(&self, after_ms: u64, n: usize) -> Vec<u64> {
        let mut slots = Vec::with_capacity(n);
        let mut at = after_ms;
        while slots.len() < n {
            let Some(next) = self.next_after(at) else { break };
            slots.push(next);
            at = next;
        }
        slots
    }

    /// A slot as the schedule's zone shows it (RFC 3339 with the offset, and the zone).
    pub fn show(&self, slot_ms: u64) -> String {
        let tz = match self {
            Cadence::Cron { tz, .. } => tz.clone(),
            Cadence::Every { .. } => TimeZone::UTC,
        };
        match Timestamp::from_millisecond(slot_ms as i64) {
            Ok(t) => t.to_zoned(tz).strftime("%Y-%m-%dT%H:%M:%S%:z[%Q]").to_string(),
            Err(_) => slot_ms.to_string(),
        }
    }
}

/// A time (ms since the Unix epoch) in RFC 3339, UTC, to the second.
pub fn utc(ms: u64) -> String {
    match Timestamp::from_millisecond(ms as i64) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// How long after its slot a slot fires: spread over `[0, jitter_ms)` by a hash of
/// the schedule's name and the slot, so that many schedules with one cadence do not
/// all start at once, and a restart does not move a slot.
pub fn jitter_ms(name: &str, slot_ms: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes().iter().chain(&slot_ms.to_le_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % jitter_ms
}

/// What a slot that is due does, by the overlap policy, given whether a run of the
/// schedule is active and how many slots wait in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Start a job for it.
    Start,
    /// Cancel the active runs, then start a job for it.
    CancelThenStart,
    /// Keep it until the active run ends.
    Buffer,
    /// Start nothing; count it as skipped.
    Skip,
}

/// The most slots a `buffer-all` schedule keeps waiting; beyond it slots are skipped.
pub const MAX_BUFFERED: usize = 1000;

pub fn on_due(overlap: corral_types::Overlap, active: bool, buffered: usize) -> Due {
    use corral_types::Overlap::*;
    if !active {
        // Buffered slots go first: a new slot queues behind them.
        return match (overlap, buffered) {
            (BufferOne | BufferAll, n) if n > 0 => on_due(overlap, true, n),
            _ => Due::Start,
        };
    }
    match overlap {
        Allow => Due::Start,
        Skip => Due::Skip,
        CancelOther => Due::CancelThenStart,
        BufferOne if buffered == 0 => Due::Buffer,
        BufferOne => Due::Skip,
        BufferAll if buffered < MAX_BUFFERED => Due::Buffer,
        BufferAll => Due::Skip,
    }
}

#[cfg(test)]
mod tests;
