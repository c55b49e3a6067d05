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

pub fn json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
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

/// Seconds since the Unix epoch as local-agnostic UTC `YYYY-MM-DD HH:MM:SS`.
pub fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_795_478_400_000), "2026-11-24 00:00:00");
        assert_eq!(timestamp(951_782_400_000 + 3_723_000), "2000-02-29 01:02:03");
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
