//! Byte sizes as people write them, in powers of 1024 as Docker reads them:
//! `4096`, `512k`, `512m`, `10MiB`, `2g`, `1.5GiB` (`b` and `ib` after the unit are
//! allowed, any case).

use bytesize::ByteSize;

/// Reads a size of at least one byte; the error says what was wrong, for a
/// message naming the field.
pub fn parse(s: &str) -> Result<u64, String> {
    let shown: String = s.trim().chars().take(40).collect();
    let lower = s.trim().to_ascii_lowercase();
    let unit_at = lower.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_at);
    if number.is_empty() {
        return Err(format!("'{shown}' is not a size; write e.g. 512m, 10MiB or 2g"));
    }
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("'{shown}' has an unknown unit; write e.g. 512m, 10MiB or 2g")),
    };
    let number: f64 = number.parse().map_err(|_| format!("'{shown}' is not a size; write e.g. 512m, 10MiB or 2g"))?;
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{shown}' is not a size: give at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// A size for people: `10.0 MiB`.
pub fn show(bytes: u64) -> String {
    ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_writes_them() {
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("2G"), Ok(2 << 30));
        assert_eq!(parse("10MiB"), Ok(10 << 20));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("64kb"), Ok(64 << 10));
        assert!(parse("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("m").unwrap_err().contains("not a size"));
        assert!(parse("lots").unwrap_err().contains("'lots' is not a size"));
        assert!(parse("0").is_err());
        assert_eq!(show(10 << 20), "10.0 MiB");
    }
}
