//! Event times: Flink `TIMESTAMP(3)` text read as UTC, ISO 8601 with an offset, or epoch numbers, all held
//! as epoch milliseconds within years 0000 to 9999, the range the output's text form can print.

const MS_PER_DAY: i64 = 86_400_000;

/// How event times are written, as `TIMESTAMP_FORMAT` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// A date-time string in either text form, or a JSON integer of epoch milliseconds.
    Auto,
    /// `YYYY-MM-DD HH:MM:SS[.fraction]`, zone-less UTC (Flink's SQL form).
    Sql,
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]` with an optional `Z` or `±HH:MM` offset (zone-less is UTC).
    Iso,
    /// A JSON integer of milliseconds since 1970-01-01 UTC.
    EpochMs,
    /// A JSON number of seconds since 1970-01-01 UTC; a decimal fraction is kept to the millisecond.
    EpochS,
}

impl TimestampFormat {
    pub const ALL: [TimestampFormat; 5] = [
        TimestampFormat::Auto,
        TimestampFormat::Sql,
        TimestampFormat::Iso,
        TimestampFormat::EpochMs,
        TimestampFormat::EpochS,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TimestampFormat::Auto => "auto",
            TimestampFormat::Sql => "sql",
            TimestampFormat::Iso => "iso",
            TimestampFormat::EpochMs => "epoch_ms",
            TimestampFormat::EpochS => "epoch_s",
        }
    }

    /// Whether event times in this format are JSON strings (else numbers; `Auto` takes both).
    pub fn takes_text(self) -> bool {
        matches!(self, TimestampFormat::Auto | TimestampFormat::Sql | TimestampFormat::Iso)
    }

    pub fn takes_number(self) -> bool {
        matches!(self, TimestampFormat::Auto | TimestampFormat::EpochMs | TimestampFormat::EpochS)
    }

    /// Reads a JSON string's text as an event time in this format.
    pub fn parse_text(self, text: &str) -> Option<i64> {
        let (sql, iso) = match self {
            TimestampFormat::Auto => (true, true),
            TimestampFormat::Sql => (true, false),
            TimestampFormat::Iso => (false, true),
            TimestampFormat::EpochMs | TimestampFormat::EpochS => return None,
        };
        parse_date_time(text, sql, iso)
    }

    /// Reads a JSON number token (already checked to be valid JSON) as an event time in this format (one
    /// that [takes numbers](Self::takes_number)).
    pub fn parse_number(self, token: &str) -> Result<i64, BadEpoch> {
        let ms = match self {
            TimestampFormat::Auto | TimestampFormat::EpochMs => {
                if !is_integer_token(token) {
                    return Err(BadEpoch::NotWholeMilliseconds);
                }
                token.parse::<i64>().map_err(|_| BadEpoch::OutsideYears)?
            }
            TimestampFormat::EpochS => epoch_seconds_to_ms(token).ok_or(BadEpoch::OutsideYears)?,
            TimestampFormat::Sql | TimestampFormat::Iso => return Err(BadEpoch::NotWholeMilliseconds),
        };
        if (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
            Ok(ms)
        } else {
            Err(BadEpoch::OutsideYears)
        }
    }
}

/// Why a JSON number is not an event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEpoch {
    /// Epoch milliseconds must be a JSON integer: a fraction or exponent has no exact millisecond.
    NotWholeMilliseconds,
    OutsideYears,
}

impl BadEpoch {
    /// What was wrong, for a dead letter's detail.
    pub fn explain(self) -> &'static str {
        match self {
            BadEpoch::NotWholeMilliseconds => "has a fraction or an exponent; epoch milliseconds are a JSON integer",
            BadEpoch::OutsideYears => "is outside years 0000 to 9999",
        }
    }
}

/// Epoch seconds written as any JSON number (`-1.5`, `1e9`, `1.6054848035e9`) to milliseconds, floored.
/// Exact decimal arithmetic on the digits, so every spelling of one instant reads the same and a negative
/// fraction rounds down like a positive one. `None` when the instant is far outside the years the text
/// form holds.
fn epoch_seconds_to_ms(token: &str) -> Option<i64> {
    let (negative, unsigned) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, parse_exponent(exponent)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).skip_while(|&digit| digit == b'0').collect();
    if digits.is_empty() {
        return Some(0);
    }
    // The value is `digits` × 10^scale milliseconds.
    let scale = exponent - fraction.len() as i64 + 3;
    let whole_digits = digits.len() as i64 + scale;
    if whole_digits > 17 {
        return None;
    }
    let kept = whole_digits.clamp(0, digits.len() as i64) as usize;
    let padding = (scale.max(0)) as u32;
    let magnitude =
        digits[..kept].iter().fold(0_i64, |acc, digit| acc * 10 + i64::from(digit - b'0')) * 10_i64.pow(padding);
    let remainder = digits[kept..].iter().any(|&digit| digit != b'0');
    Some(if negative { -magnitude - i64::from(remainder) } else { magnitude })
}

/// A JSON exponent (`+9`, `-3`, `12`), clamped far beyond any exponent a time in range can have.
fn parse_exponent(text: &str) -> i64 {
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    sign * digits.bytes().fold(0_i64, |acc, digit| (acc * 10 + i64::from(digit - b'0')).min(1_000_000))
}

/// A JSON number written as a whole number: no fraction, no exponent.
pub fn is_integer_token(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses the date-time text forms (see [`TimestampFormat::Auto`]); the default for configuration and tools.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    parse_date_time(text, true, true)
}

/// `YYYY-MM-DD?HH:MM:SS[.fraction][zone]`: `sql` allows a space and no zone; `iso` allows `T` and a zone
/// (`Z`, `+HH:MM` or `-HH:MM`). The fraction (1 to 9 digits) is truncated to milliseconds, as `TIMESTAMP(3)`
/// stores it. The instant must lie in years 0000 to 9999 UTC.
fn parse_date_time(text: &str, sql: bool, iso: bool) -> Option<i64> {
    let text = text.as_bytes();
    if text.len() < 19 {
        return None;
    }
    let with_t = match text[10] {
        b' ' if sql => false,
        b'T' if iso => true,
        _ => return None,
    };
    let punctuation_ok = text[4] == b'-' && text[7] == b'-' && text[13] == b':' && text[16] == b':';
    let year = digits(&text[0..4])?;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    let hour = digits(&text[11..13])?;
    let minute = digits(&text[14..16])?;
    let second = digits(&text[17..19])?;
    let rest = &text[19..];
    let fraction_len = match rest {
        [b'.', after @ ..] => after.iter().take_while(|b| b.is_ascii_digit()).count(),
        _ => 0,
    };
    let millis = match rest.first() {
        Some(b'.') => fraction_ms(&rest[1..1 + fraction_len])?,
        _ => 0,
    };
    let zone = &rest[if fraction_len > 0 { 1 + fraction_len } else { 0 }..];
    let offset_minutes = match zone {
        [] => 0,
        // Today's inputs include the space form with a `Z`; `auto` keeps accepting it.
        [b'Z'] if with_t || iso => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if with_t => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (hours * 60 + minutes) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    let valid = punctuation_ok
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let local = days_from_civil(year, month, day) * MS_PER_DAY + (hour * 3_600 + minute * 60 + second) * 1_000 + millis;
    let utc = local - offset_minutes * 60_000;
    (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&utc).then_some(utc)
}

/// Formats as `YYYY-MM-DD HH:MM:SS`, with `.fff` only when the milliseconds are not zero. Output times are
/// kept within [`MIN_TIMESTAMP_MS`]..=[`MAX_TIMESTAMP_MS`] by the aggregator; for times that may lie
/// outside (a watermark in a log line) use [`format_log_time`].
pub fn format_timestamp_ms(ms: i64, out: &mut String) {
    debug_assert!((MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms), "{ms} is outside years 0000 to 9999");
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

/// A time for a log line: its text form when it has one, else the epoch milliseconds.
pub fn format_log_time(ms: i64) -> String {
    let mut text = String::new();
    if (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
        format_timestamp_ms(ms, &mut text);
    } else {
        text = format!("{ms}ms since 1970 (outside years 0000 to 9999)");
    }
    text
}

/// The earliest and latest instants the text form can express (years 0000 to 9999).
pub const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// The milliseconds of a decimal fraction of a second (the digits after the point, 1 to 9 of them), truncated.
fn fraction_ms(fraction: &[u8]) -> Option<i64> {
    if !(1..=9).contains(&fraction.len()) || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let kept = &fraction[..fraction.len().min(3)];
    Some(digits(kept)? * 10_i64.pow(3 - kept.len() as u32))
}

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
            "2020-11-16T22:59:59+1:00",
            "2020-11-16T22:59:59+24:00",
            "2020-11-16T22:59:59+01:60",
            "2020-11-16T22:59:59+0100",
            "2020-11-16T22:59:59.5x",
            "0000-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
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
    fn parses_iso_offsets_to_utc() {
        assert_eq!(parse_timestamp_ms("2022-10-30T21:40:00+02:00"), parse_timestamp_ms("2022-10-30 19:40:00"));
        assert_eq!(parse_timestamp_ms("2022-10-30T17:10:00.5-02:30"), parse_timestamp_ms("2022-10-30 19:40:00.5"));
        assert_eq!(parse_timestamp_ms("0000-01-01T01:00:00+01:00"), Some(MIN_TIMESTAMP_MS));
    }

    #[test]
    fn each_format_reads_only_its_own_forms() {
        use TimestampFormat::*;
        let sql = "2022-10-30 19:40:00";
        let iso = "2022-10-30T21:40:00+02:00";
        let expected = parse_timestamp_ms(sql);
        assert_eq!((Sql.parse_text(sql), Sql.parse_text(iso)), (expected, None));
        assert_eq!((Iso.parse_text(sql), Iso.parse_text(iso)), (None, expected));
        assert_eq!(Sql.parse_text("2022-10-30 19:40:00Z"), None);
        assert_eq!(Auto.parse_text("2022-10-30 19:40:00Z"), expected);
        assert_eq!(EpochMs.parse_text(sql), None);
        let expected = expected.unwrap();
        assert_eq!(Auto.parse_number("1667158800000"), Ok(expected));
        assert_eq!(EpochMs.parse_number("1667158800000"), Ok(expected));
        assert_eq!(Auto.parse_number("1667158800000.0"), Err(BadEpoch::NotWholeMilliseconds));
        assert_eq!(EpochMs.parse_number("1.6e12"), Err(BadEpoch::NotWholeMilliseconds));
        assert_eq!(EpochS.parse_number("1667158800"), Ok(expected));
        assert_eq!(EpochS.parse_number("1667158800.2509"), Ok(expected + 250));
        assert_eq!(Sql.parse_number("1667158800000"), Err(BadEpoch::NotWholeMilliseconds));
        assert_eq!(EpochMs.parse_number("-62167219200001"), Err(BadEpoch::OutsideYears), "before year 0000");
        assert_eq!(EpochMs.parse_number("253402300800000"), Err(BadEpoch::OutsideYears), "after year 9999");
        assert_eq!(EpochMs.parse_number("99999999999999999999"), Err(BadEpoch::OutsideYears));
        assert_eq!(EpochS.parse_number("9999999999999999"), Err(BadEpoch::OutsideYears));
    }

    /// Regression (epoch_s_refused_exponents_and_rounded_negatives_up): `1e9` was refused as "not a
    /// timestamp in years 0000 to 9999", more than 9 fractional digits were refused, and `-1.0005` read
    /// as -1000 ms while `1.0005` read as 1000 ms.
    #[test]
    fn epoch_seconds_in_any_json_number_form_floor_to_the_millisecond() {
        use TimestampFormat::EpochS;
        for (token, ms) in [
            ("1e9", 1_000_000_000_000),
            ("1E9", 1_000_000_000_000),
            ("1e+9", 1_000_000_000_000),
            ("1.6054848035e9", 1_605_484_803_500),
            ("16054848035e-1", 1_605_484_803_500),
            ("1605484803.5", 1_605_484_803_500),
            ("1605484803.123456789012", 1_605_484_803_123),
            ("1.0005", 1_000),
            ("-1.0005", -1_001),
            ("-1.5", -1_500),
            ("-0.0001", -1),
            ("-0", 0),
            ("0.0e999999999999", 0),
            ("1e-999999999999", 0),
            ("-1e-999999999999", -1),
            ("0.001", 1),
            ("0.0009999", 0),
            ("253402300799.999", MAX_TIMESTAMP_MS),
            ("-62167219200", MIN_TIMESTAMP_MS),
        ] {
            assert_eq!(EpochS.parse_number(token), Ok(ms), "{token}");
        }
        for token in ["253402300800", "-62167219200.0001", "1e12", "1e999999999999", "-1e300"] {
            assert_eq!(EpochS.parse_number(token), Err(BadEpoch::OutsideYears), "{token}");
        }
    }

    #[test]
    fn log_times_outside_the_text_range_print_as_numbers() {
        assert_eq!(format_log_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_log_time(MIN_TIMESTAMP_MS - 1), "-62167219200001ms since 1970 (outside years 0000 to 9999)");
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
