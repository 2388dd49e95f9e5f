//! Flink `TIMESTAMP(3)` values: zone-less text read as UTC, held as epoch milliseconds.

const MS_PER_DAY: i64 = 86_400_000;

/// Parses `YYYY-MM-DD HH:MM:SS[.fraction]`, also with `T` for the space and an optional trailing `Z`.
/// The fraction (1 to 9 digits) is truncated to milliseconds, as `TIMESTAMP(3)` stores it.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text).as_bytes();
    if text.len() < 19 || !matches!(text[10], b' ' | b'T') {
        return None;
    }
    let punctuation_ok = text[4] == b'-' && text[7] == b'-' && text[13] == b':' && text[16] == b':';
    let year = digits(&text[0..4])?;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    let hour = digits(&text[11..13])?;
    let minute = digits(&text[14..16])?;
    let second = digits(&text[17..19])?;
    let millis = match &text[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)?;
            let kept = &fraction[..fraction.len().min(3)];
            digits(kept)? * 10_i64.pow(3 - kept.len() as u32)
        }
        _ => return None,
    };
    let valid = punctuation_ok
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    valid.then(|| {
        days_from_civil(year, month, day) * MS_PER_DAY + (hour * 3_600 + minute * 60 + second) * 1_000 + millis
    })
}

/// Formats as `YYYY-MM-DD HH:MM:SS`, with `.fff` only when the milliseconds are not zero.
pub fn format_timestamp_ms(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (in_day / 1_000, in_day % 1_000);
    let _ = write!(out, "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3_600, secs / 60 % 60, secs % 60);
    if millis != 0 {
        let _ = write!(out, ".{millis:03}");
    }
}

/// The earliest and latest instants the text form can express (years 0000 to 9999).
pub const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |acc, b| acc * 10 + i64::from(b - b'0')))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(ms: i64) -> String {
        let mut out = String::new();
        format_timestamp_ms(ms, &mut out);
        out
    }

    #[test]
    fn parses_the_flink_form() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp_ms("2020-11-16 22:59:59"), Some(1_605_567_599_000));
        assert_eq!(parse_timestamp_ms("2020-11-16 22:59:59.5"), Some(1_605_567_599_500));
        assert_eq!(parse_timestamp_ms("2020-11-16 22:59:59.123456789"), Some(1_605_567_599_123));
    }

    #[test]
    fn parses_the_iso_form() {
        assert_eq!(parse_timestamp_ms("2020-11-16T22:59:59Z"), Some(1_605_567_599_000));
        assert_eq!(parse_timestamp_ms("2020-11-16T22:59:59.250Z"), Some(1_605_567_599_250));
        assert_eq!(parse_timestamp_ms("2020-11-16T22:59:59"), Some(1_605_567_599_000));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2020-11-16",
            "2020-11-16 22:59",
            "2020/11/16 22:59:59",
            "2020-13-01 00:00:00",
            "2021-02-29 00:00:00",
            "2020-11-31 00:00:00",
            "2020-11-16 24:00:00",
            "2020-11-16 22:60:00",
            "2020-11-16 22:59:60",
            "2020-11-16 22:59:59.",
            "2020-11-16 22:59:59.1234567890",
            "2020-11-16 22:59:59+01:00",
            "2020-11-16 22:59:59ZZ",
            "+020-11-16 22:59:59",
            "2020-11-16 22:59:5x",
            "2020-11-16x22:59:59",
            "2020-11-16 22:59:59.-1",
            "１２３４-11-16 22:59:59",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn accepts_leap_days() {
        assert!(parse_timestamp_ms("2024-02-29 00:00:00").is_some());
        assert!(parse_timestamp_ms("2000-02-29 00:00:00").is_some());
        assert!(parse_timestamp_ms("1900-02-29 00:00:00").is_none());
    }

    #[test]
    fn formats_with_a_fraction_only_when_non_zero() {
        assert_eq!(format(1_605_567_599_000), "2020-11-16 22:59:59");
        assert_eq!(format(1_605_567_599_007), "2020-11-16 22:59:59.007");
        assert_eq!(format(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn the_extremes_round_trip() {
        assert_eq!(parse_timestamp_ms("0000-01-01 00:00:00"), Some(MIN_TIMESTAMP_MS));
        assert_eq!(parse_timestamp_ms("9999-12-31 23:59:59.999"), Some(MAX_TIMESTAMP_MS));
        assert_eq!(format(MIN_TIMESTAMP_MS), "0000-01-01 00:00:00");
        assert_eq!(format(MAX_TIMESTAMP_MS), "9999-12-31 23:59:59.999");
    }

    #[test]
    fn every_day_over_centuries_round_trips() {
        let mut text = String::new();
        for day in (-719_528..2_932_897).step_by(997) {
            let ms = day * MS_PER_DAY + 45_296_789;
            text.clear();
            format_timestamp_ms(ms, &mut text);
            assert_eq!(parse_timestamp_ms(&text), Some(ms), "{text}");
        }
    }
}
