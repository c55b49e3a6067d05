//! Printing results: aligned tables for people, JSON for programs.

use std::time::Duration;

use clap::ValueEnum;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document on stdout: a documented, stable interface.
    Json,
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{:<w$}  {v}", format!("{k}:"), w = w + 1);
    }
}

/// Prints one JSON document, each time field with its RFC 3339 twin ([`with_times`]).
pub fn json(value: &serde_json::Value) {
    let mut value = value.clone();
    with_times(&mut value);
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string()));
}

/// Prints one JSON object on one line (a stream of them), with its RFC 3339 times.
pub fn json_line(value: &serde_json::Value) {
    let mut value = value.clone();
    with_times(&mut value);
    println!("{value}");
}

/// Words joined as a shell would need them typed: arguments with spaces or quotes
/// are single-quoted, so `sh -c 'echo hi'` reads back as it was given.
pub fn shell_words(argv: &[String]) -> String {
    let quote = |arg: &String| {
        let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}$".contains(c));
        if plain {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', "'\\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// `340ms`, `1.2s`, `3m04s`, from milliseconds.
pub fn duration_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if d < Duration::from_secs(1) {
        format!("{ms}ms")
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d < Duration::from_secs(3600) {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

/// A time for people, the same in every command: UTC to the second, with `Z`
/// (`2026-12-07 16:33:44Z`); `-` for none (0).
pub fn timestamp(ms: u64) -> String {
    match instant(ms) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => "-".into(),
    }
}

/// A time in JSON: RFC 3339 in UTC, to the millisecond (`2026-12-07T16:33:44.120Z`).
pub fn rfc3339(ms: u64) -> Option<String> {
    instant(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

fn instant(ms: u64) -> Option<jiff::Timestamp> {
    i64::try_from(ms).ok().filter(|&ms| ms > 0).and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
}

/// Whether a JSON field holds a point in time as ms since the Unix epoch (and not
/// a duration such as `timeout_ms`).
fn is_time(key: &str) -> bool {
    key.ends_with("_at_ms") || matches!(key, "at_ms" | "slot_ms" | "scheduled_for_ms" | "last_poll_ms" | "cursor_ms")
}

/// Beside every time field (`submitted_at_ms`), the same time in RFC 3339
/// (`submitted_at`), in every object of `value`, nested ones included.
pub fn with_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let times: Vec<(String, String)> = map
                .iter()
                .filter(|(k, _)| is_time(k))
                .filter_map(|(k, v)| Some((k.strip_suffix("_ms")?.to_string(), rfc3339(v.as_u64()?)?)))
                .collect();
            for v in map.values_mut() {
                with_times(v);
            }
            for (k, t) in times {
                map.entry(k).or_insert(serde_json::Value::String(t));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(with_times),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_z_for_people_and_rfc3339_in_json() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_795_478_400_000), "2026-11-24 00:00:00Z");
        assert_eq!(timestamp(951_782_400_000 + 3_723_456), "2000-02-29 01:02:03Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_723_456).as_deref(), Some("2000-02-29T01:02:03.456Z"));
        let mut v = serde_json::json!({
            "submitted_at_ms": 1_795_478_400_000u64, "finished_at_ms": null, "timeout_ms": 5000,
            "attempts": [{"started_at_ms": 1_795_478_400_001u64}], "at_ms": 0,
        });
        with_times(&mut v);
        assert_eq!(v["submitted_at"], "2026-11-24T00:00:00.000Z");
        assert_eq!(v["attempts"][0]["started_at"], "2026-11-24T00:00:00.001Z");
        assert!(v.get("finished_at").is_none() && v.get("timeout").is_none() && v.get("at").is_none(), "{v}");
    }

    #[test]
    fn commands_read_back_as_typed() {
        let argv: Vec<String> = ["sh", "-c", "echo 'hi' $X", "{index}"].iter().map(|s| s.to_string()).collect();
        assert_eq!(shell_words(&argv), r#"sh -c 'echo '\''hi'\'' $X' {index}"#);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_ms(32), "32ms");
        assert_eq!(duration_ms(1_234), "1.2s");
        assert_eq!(duration_ms(184_000), "3m04s");
    }
}
