//! Durations and byte sizes as written in the configuration: `300ms`, `10s`, `5m`, `1h`, `512KiB`.

/// Milliseconds in each accepted duration unit, longest suffix first so `ms` wins over `s`.
const DURATION_UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Bytes in each accepted size unit; a bare number is bytes.
const SIZE_UNITS: [(&str, u64); 4] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("B", 1), ("", 1)];

/// Parses `<whole number><unit>` with a unit of `ms`, `s`, `m`, `h` or `d` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    parse_with_units(text, &DURATION_UNITS)
}

/// Parses `<whole number>[B|KiB|MiB]` into bytes.
pub fn parse_size_bytes(text: &str) -> Option<u64> {
    parse_with_units(text, &SIZE_UNITS)
}

fn parse_with_units(text: &str, units: &[(&str, u64)]) -> Option<u64> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() || number.len() > 18 {
        return None;
    }
    let scale = units.iter().find(|(name, _)| *name == unit)?.1;
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Renders milliseconds in the largest unit that divides them exactly (`300000` → `5m`).
pub fn format_duration_ms(ms: u64) -> String {
    let (name, scale) = DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, scale)| ms != 0 && ms.is_multiple_of(*scale))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{}", ms / scale, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration_ms("300ms"), Some(300));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        assert_eq!(parse_duration_ms(" 0s "), Some(0));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "5M", "1e3ms", "99999999999999999999ms"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_overflowing_durations() {
        assert_eq!(parse_duration_ms("999999999999999999d"), None);
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size_bytes("1024"), Some(1024));
        assert_eq!(parse_size_bytes("1024B"), Some(1024));
        assert_eq!(parse_size_bytes("640KiB"), Some(640 * 1024));
        assert_eq!(parse_size_bytes("1MiB"), Some(1 << 20));
        assert_eq!(parse_size_bytes("1MB"), None);
        assert_eq!(parse_size_bytes("KiB"), None);
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration_ms(300_000), "5m");
        assert_eq!(format_duration_ms(10_000), "10s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_duration_ms(0), "0ms");
    }
}
