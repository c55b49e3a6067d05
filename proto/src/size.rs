//! Byte sizes as people write them: `10MiB`, `1GiB`, `500KB`, `4096`.

use bytesize::ByteSize;

/// Reads a size; the error says what was wrong, for a message naming the field.
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let shown: String = text.chars().take(40).collect();
    text.parse::<ByteSize>()
        .map(|s| s.as_u64())
        .map_err(|_| format!("'{shown}' is not a size (write e.g. 10MiB, 1GiB or a number of bytes)"))
}

/// A size for people: `10.0 MiB`.
pub fn show(bytes: u64) -> String {
    ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written() {
        assert_eq!(parse("10MiB"), Ok(10 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("1KB"), Ok(1000));
        assert!(parse("lots").unwrap_err().contains("'lots' is not a size"));
        assert_eq!(show(10 << 20), "10.0 MiB");
    }
}
