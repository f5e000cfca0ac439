//! Sizes and durations as operators write them in config files.
//!
//! Sizes take IEC units only (`KiB`, `MiB`, `GiB`, `TiB`) or a plain number of bytes: "1GB" is
//! refused rather than silently read as 10^9 or 2^30, a common source of wrong caps.

use std::time::Duration;

/// Parses a byte size such as `"1GiB"`, `"512 MiB"` or `"4096"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid size \"{text}\" (use a number of bytes or KiB, MiB, GiB, TiB)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(invalid()),
    };
    number.checked_mul(factor).ok_or_else(invalid)
}

/// Parses a duration such as `"500ms"`, `"30s"` or `"7d"` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("invalid duration \"{text}\" (e.g. \"500ms\", \"30s\", \"7d\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_iec_units_and_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 3KiB "), Ok(3072));
    }

    #[test]
    fn ambiguous_or_bad_sizes_are_refused() {
        for bad in ["1GB", "1gb", "", "MiB", "-1", "1.5GiB", "99999999999999TiB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
    }
}
