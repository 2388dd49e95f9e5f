//! The record handler: one input record in, rows and dead letters out, never a panic.

use crate::config::{Config, IncompletePolicy};
use crate::engine::{Admission, Engine, Row, RowSink};
use crate::json::{JsonError, Member, MemberReader};
use crate::time::{format_timestamp_ms, parse_timestamp_ms};

/// Group-by values longer than this are refused: they would bloat state and output keys.
pub const MAX_FIELD_BYTES: usize = 1_024;
/// At most this many warning lines per minute of record time; the rest are counted in the summary.
pub const WARNINGS_PER_MINUTE: u32 = 5;
/// Record time between two summary lines.
pub const SUMMARY_INTERVAL_MS: i64 = 60_000;

/// Header on rows of windows that may be missing events (see [`Row::complete`]).
pub const INCOMPLETE_HEADER: &str = "window-incomplete";
/// Headers added to a dead-lettered record.
pub const REASON_HEADER: &str = "dead-letter-reason";
pub const DETAIL_HEADER: &str = "dead-letter-detail";
/// On a dead letter written without its value: the value's size in bytes.
pub const OMITTED_VALUE_HEADER: &str = "dead-letter-omitted-value-bytes";

macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Why a record went to the dead-letter topic; `name()` is the value of the reason header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason { $($variant,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

        }
    };
}

reasons! {
    NoValue => "no_value",
    InvalidUtf8 => "invalid_utf8",
    NotJson => "not_json",
    NotObject => "not_object",
    TooDeep => "too_deep",
    MissingField => "missing_field",
    WrongType => "wrong_type",
    FieldTooLong => "field_too_long",
    BadTimestamp => "bad_timestamp",
    Future => "future",
    Late => "late",
    OverCapacity => "over_capacity",
}

/// Where the handler's results go. The module implements it with the SDK's writer; tests collect.
pub trait Output {
    /// One aggregate row for the first output topic.
    fn row(&mut self, key: &[u8], value: &[u8], incomplete: bool);
    /// The record being handled goes, unchanged but for the reason headers, to `topic`; without its
    /// value when `keep_value` is false (a value over DEAD_LETTER_MAX_BYTES).
    fn dead_letter(&mut self, topic: &str, reason: Reason, detail: &str, keep_value: bool);
    /// One log line, without a newline.
    fn log(&mut self, line: &str);
}

/// What became of one record. Every record gets exactly one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    Heartbeat,
    /// Written to the dead-letter topic, or counted and skipped when there is none.
    DeadLetter(Reason),
}

/// Running totals since this instance started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub counted: u64,
    pub heartbeats: u64,
    pub rows: u64,
    pub incomplete_rows: u64,
    pub dropped_incomplete_rows: u64,
    /// Dead letters by reason, indexed by `reason as usize` ([`Reason::ALL`] order).
    pub dead_letters: Vec<u64>,
    /// Dead letters that were only counted because no dead-letter topic is configured.
    pub dead_letters_skipped: u64,
    pub suppressed_warnings: u64,
}

pub struct Aggregator {
    config: Config,
    engine: Engine,
    reader: MemberReader,
    rows: RowFormatter,
    totals: Totals,
    log: LogLimiter,
}

impl Aggregator {
    pub fn new(config: Config) -> Aggregator {
        let names = std::iter::once(config.timestamp_field.clone()).chain(config.group_by.iter().cloned()).collect();
        Aggregator {
            engine: Engine::new(config.window, config.state_budget_bytes),
            reader: MemberReader::new(names, MAX_FIELD_BYTES),
            rows: RowFormatter::default(),
            totals: Totals { dead_letters: vec![0; Reason::ALL.len()], ..Totals::default() },
            log: LogLimiter::default(),
            config,
        }
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// One line describing the configuration, for the log at start-up.
    pub fn describe(&self) -> String {
        let window = self.config.window;
        format!(
            "clickstream-aggregation started: window={}ms slide={}ms watermark_delay={}ms group_by={} timestamp_field={} state_budget={}B max_event_ahead={}ms incomplete_windows={} dead_letter_topic={} dead_letter_max_bytes={}",
            window.size_ms(),
            window.slide_ms(),
            window.delay_ms(),
            self.config.group_by.join(","),
            self.config.timestamp_field,
            self.config.state_budget_bytes,
            self.config.max_event_ahead_ms,
            self.config.incomplete.name(),
            self.config.dead_letter_topic.as_deref().unwrap_or("none (dead letters are counted and skipped)"),
            self.config.dead_letter_max_bytes,
        )
    }

    /// Handles one record: its value and its Kafka timestamp (ms).
    pub fn on_record(&mut self, value: Option<&[u8]>, record_ms: i64, out: &mut impl Output) -> Outcome {
        self.totals.records += 1;
        let outcome = match self.read_and_count(value, record_ms, out) {
            Ok(outcome) => outcome,
            Err((reason, detail)) => {
                let keep_value = value.map_or(0, <[u8]>::len) <= self.config.dead_letter_max_bytes;
                self.dead_letter(reason, &detail, keep_value, record_ms, out);
                Outcome::DeadLetter(reason)
            }
        };
        match outcome {
            Outcome::Counted => self.totals.counted += 1,
            Outcome::Heartbeat => self.totals.heartbeats += 1,
            Outcome::DeadLetter(_) => {}
        }
        if self.log.summary_due(record_ms) {
            let line = self.summary();
            out.log(&line);
        }
        outcome
    }

    /// The one-line health summary written to the log every minute of record time.
    pub fn summary(&self) -> String {
        let totals = &self.totals;
        let stats = self.engine.stats();
        let dead_letters: u64 = totals.dead_letters.iter().sum();
        let by_reason: Vec<String> = Reason::ALL
            .iter()
            .zip(&totals.dead_letters)
            .filter(|(_, &count)| count > 0)
            .map(|(reason, count)| format!("{}={count}", reason.name()))
            .collect();
        let mut watermark = String::new();
        match stats.watermark_ms {
            Some(ms) => format_timestamp_ms(ms, &mut watermark),
            None => watermark.push_str("none"),
        }
        format!(
            "summary: records={} counted={} heartbeats={} rows={} incomplete_rows={} dropped_incomplete_rows={} dead_letters={} [{}] dead_letters_skipped={} open_panes={} open_groups={} state_bytes={}/{} watermark={:?} suppressed_warnings={}",
            totals.records,
            totals.counted,
            totals.heartbeats,
            totals.rows,
            totals.incomplete_rows,
            totals.dropped_incomplete_rows,
            dead_letters,
            by_reason.join(" "),
            totals.dead_letters_skipped,
            stats.open_panes,
            stats.open_groups,
            stats.state_bytes,
            self.config.state_budget_bytes,
            watermark,
            totals.suppressed_warnings,
        )
    }

    fn read_and_count(
        &mut self,
        value: Option<&[u8]>,
        record_ms: i64,
        out: &mut impl Output,
    ) -> Result<Outcome, (Reason, String)> {
        let value = value.ok_or((Reason::NoValue, "the record value is null".to_string()))?;
        let text = std::str::from_utf8(value)
            .map_err(|e| (Reason::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        self.reader.read(text).map_err(|error| match error {
            JsonError::Syntax(at) => (Reason::NotJson, format!("invalid JSON at byte {at}")),
            JsonError::NotObject => (Reason::NotObject, "the value is not a JSON object".to_string()),
            JsonError::TooDeep => (Reason::TooDeep, "the value nests deeper than 64 levels".to_string()),
        })?;

        let field = &self.config.timestamp_field;
        let timestamp = text_member(self.reader.member(0), field, Reason::BadTimestamp)?;
        let event_ms = parse_timestamp_ms(timestamp).ok_or_else(|| {
            (Reason::BadTimestamp, format!("field {field:?} is not a timestamp: {:?}", clip(timestamp)))
        })?;
        if event_ms > record_ms.saturating_add(self.config.max_event_ahead_ms) {
            return Err((
                Reason::Future,
                format!(
                    "event time {timestamp:?} is more than {}ms after the record timestamp {record_ms}",
                    self.config.max_event_ahead_ms
                ),
            ));
        }
        let mut sink = RowSinkFor { rows: &mut self.rows, totals: &mut self.totals, config: &self.config, out };
        // An object holding the timestamp alone is a heartbeat: it moves the watermark and counts nowhere.
        if self.reader.member_count() == 1 {
            self.engine.advance(event_ms, &mut sink);
            return Ok(Outcome::Heartbeat);
        }

        let mut group = [""; crate::config::GROUPABLE_FIELDS.len()];
        for (index, name) in self.config.group_by.iter().enumerate() {
            group[index] = text_member(self.reader.member(index + 1), name, Reason::FieldTooLong)?;
        }
        match self.engine.observe(event_ms, &group[..self.config.group_by.len()], &mut sink) {
            Admission::Counted => Ok(Outcome::Counted),
            Admission::Late => {
                let mut watermark = String::new();
                format_timestamp_ms(self.engine.watermark_ms().unwrap_or(i64::MIN), &mut watermark);
                Err((Reason::Late, format!("event time {timestamp:?} is behind the watermark {watermark:?}")))
            }
            Admission::OverCapacity => Err((
                Reason::OverCapacity,
                format!(
                    "state is at {} of STATE_BUDGET {} bytes",
                    self.engine.stats().state_bytes,
                    self.config.state_budget_bytes
                ),
            )),
        }
    }

    fn dead_letter(&mut self, reason: Reason, detail: &str, keep_value: bool, record_ms: i64, out: &mut impl Output) {
        self.totals.dead_letters[reason as usize] += 1; // ALL lists the reasons in declaration order
        match &self.config.dead_letter_topic {
            Some(topic) => out.dead_letter(topic, reason, detail, keep_value),
            None => self.totals.dead_letters_skipped += 1,
        }
        if self.log.warning_allowed(record_ms) {
            out.log(&format!("dead letter: {}: {detail}", reason.name()));
        } else {
            self.totals.suppressed_warnings += 1;
        }
    }
}

/// The text of a required string member; `too_long` is the reason given when it is over the limit.
fn text_member<'a>(member: Member<'a>, name: &str, too_long: Reason) -> Result<&'a str, (Reason, String)> {
    match member {
        Member::Text(text) => Ok(text),
        Member::TooLong => Err((too_long, format!("field {name:?} is over {MAX_FIELD_BYTES} bytes long"))),
        Member::Missing => Err((Reason::MissingField, format!("field {name:?} is missing"))),
        Member::Other(kind) => {
            Err((Reason::WrongType, format!("field {name:?} is {}, expected a string", kind.name())))
        }
    }
}

/// The first characters of a value, for log lines and headers.
fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(64).map_or(text.len(), |(at, _)| at);
    &text[..end]
}

/// Formats rows as JSON into reused buffers.
#[derive(Default)]
struct RowFormatter {
    key: String,
    value: String,
}

struct RowSinkFor<'a, O: Output> {
    rows: &'a mut RowFormatter,
    totals: &'a mut Totals,
    config: &'a Config,
    out: &'a mut O,
}

impl<O: Output> RowSink for RowSinkFor<'_, O> {
    fn row(&mut self, row: &Row<'_>) {
        if !row.complete {
            if self.config.incomplete == IncompletePolicy::Drop {
                self.totals.dropped_incomplete_rows += 1;
                return;
            }
            self.totals.incomplete_rows += 1;
        }
        self.totals.rows += 1;
        let RowFormatter { key, value } = &mut *self.rows;
        format_row(row, &self.config.group_by, self.config.incomplete == IncompletePolicy::MarkValue, key, value);
        self.out.row(key.as_bytes(), value.as_bytes(), !row.complete);
    }
}

/// The row's value, `{"window_start":…,"window_end":…,<group fields>,"event_count":N}`, and its key,
/// `[window_start, <group values>]`: a unique name for (window, group) so duplicates can be compacted away.
pub fn format_row(row: &Row<'_>, group_by: &[String], incomplete_in_value: bool, key: &mut String, value: &mut String) {
    use std::fmt::Write;
    key.clear();
    value.clear();
    key.push_str("[\"");
    format_timestamp_ms(row.window_start_ms, key);
    key.push('"');
    value.push_str("{\"window_start\":\"");
    format_timestamp_ms(row.window_start_ms, value);
    value.push_str("\",\"window_end\":\"");
    format_timestamp_ms(row.window_end_ms, value);
    value.push('"');
    for (name, field) in group_by.iter().zip(row.group) {
        key.push(',');
        write_json_string(key, field);
        value.push(',');
        write_json_string(value, name);
        value.push(':');
        write_json_string(value, field);
    }
    key.push(']');
    let _ = write!(value, ",\"event_count\":{}", row.count);
    if incomplete_in_value && !row.complete {
        value.push_str(",\"incomplete\":true");
    }
    value.push('}');
}

fn write_json_string(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Rate limits on record time, so a flood of bad input cannot flood the broker's log.
#[derive(Default)]
struct LogLimiter {
    last_summary_ms: Option<i64>,
    minute_start_ms: i64,
    warnings_this_minute: u32,
}

impl LogLimiter {
    fn summary_due(&mut self, record_ms: i64) -> bool {
        let due = self.last_summary_ms.is_none_or(|last| record_ms >= last.saturating_add(SUMMARY_INTERVAL_MS));
        if due {
            self.last_summary_ms = Some(record_ms);
        }
        due
    }

    fn warning_allowed(&mut self, record_ms: i64) -> bool {
        if record_ms >= self.minute_start_ms.saturating_add(60_000) || record_ms < self.minute_start_ms {
            self.minute_start_ms = record_ms;
            self.warnings_this_minute = 0;
        }
        self.warnings_this_minute += 1;
        self.warnings_this_minute <= WARNINGS_PER_MINUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected {
        rows: Vec<(String, String, bool)>,
        dead_letters: Vec<(String, Reason, String, bool)>,
        logs: Vec<String>,
    }

    impl Output for Collected {
        fn row(&mut self, key: &[u8], value: &[u8], incomplete: bool) {
            let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
            self.rows.push((text(key), text(value), incomplete));
        }
        fn dead_letter(&mut self, topic: &str, reason: Reason, detail: &str, keep_value: bool) {
            self.dead_letters.push((topic.to_string(), reason, detail.to_string(), keep_value));
        }
        fn log(&mut self, line: &str) {
            self.logs.push(line.to_string());
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    fn aggregator(vars: &[(&str, &str)]) -> Aggregator {
        let mut all = vec![("REDPANDA_OUTPUT_TOPIC_0", "out"), ("REDPANDA_OUTPUT_TOPIC_1", "dlq")];
        all.extend_from_slice(vars);
        let config = Config::from_env(|name| all.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
        Aggregator::new(config)
    }

    fn event(time: &str, user: &str) -> String {
        format!(
            r#"{{"timestamp":"{time}","event":"view_item","user_id":"{user}","site_id":"s","url":"/item/1","on_site_seconds":5,"viewed_percent":30}}"#
        )
    }

    #[test]
    fn writes_rows_in_the_flink_format_with_an_identity_key() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        assert_eq!(
            agg.on_record(Some(event("2022-10-30 19:40:01", "user_3").as_bytes()), NOW, &mut out),
            Outcome::Counted
        );
        agg.on_record(Some(event("2022-10-30 19:50:00", "user_4").as_bytes()), NOW, &mut out);
        let (key, value, incomplete) = &out.rows[0];
        assert_eq!(key, r#"["2022-10-30 19:35:10","user_3","view_item","/item/1"]"#);
        assert_eq!(
            value,
            r#"{"window_start":"2022-10-30 19:35:10","window_end":"2022-10-30 19:40:10","user_id":"user_3","event":"view_item","url":"/item/1","event_count":1}"#
        );
        assert!(incomplete);
        assert_eq!(out.rows.len(), 30);
    }

    #[test]
    fn marks_incomplete_rows_in_the_value_or_drops_them_when_configured() {
        let mut agg = aggregator(&[("INCOMPLETE_WINDOWS", "mark-value")]);
        let mut out = Collected::default();
        agg.on_record(Some(event("2022-10-30 19:40:01", "u").as_bytes()), NOW, &mut out);
        agg.on_record(Some(event("2022-10-30 19:40:02", "u").as_bytes()), NOW, &mut out);
        agg.on_record(Some(event("2022-10-30 19:50:00", "u").as_bytes()), NOW, &mut out);
        assert!(out
            .rows
            .iter()
            .take(30)
            .all(|(_, value, marked)| *marked && value.ends_with(",\"event_count\":2,\"incomplete\":true}")));
        assert!(
            out.rows[30..].iter().all(|(_, value, marked)| !*marked && !value.contains("incomplete")),
            "{:?}",
            &out.rows[30..]
        );

        let mut agg = aggregator(&[("INCOMPLETE_WINDOWS", "drop")]);
        let mut out = Collected::default();
        agg.on_record(Some(event("2022-10-30 19:40:01", "u").as_bytes()), NOW, &mut out);
        agg.on_record(Some(event("2022-10-30 19:50:00", "u").as_bytes()), NOW, &mut out);
        assert!(out.rows.is_empty());
        assert_eq!(agg.totals().dropped_incomplete_rows, 30);
    }

    #[test]
    fn each_kind_of_bad_record_is_dead_lettered_with_its_reason() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let cases: Vec<(Option<Vec<u8>>, Reason, &str)> = vec![
            (None, Reason::NoValue, "null"),
            (Some(b"\xff{}".to_vec()), Reason::InvalidUtf8, "byte 0"),
            (Some(b"{\"timestamp\":".to_vec()), Reason::NotJson, "invalid JSON at byte 13"),
            (Some(b"[1,2]".to_vec()), Reason::NotObject, "not a JSON object"),
            (Some(format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100)).into_bytes()), Reason::TooDeep, "64"),
            (
                Some(br#"{"event":"e","user_id":"u","url":"/"}"#.to_vec()),
                Reason::MissingField,
                "\"timestamp\" is missing",
            ),
            (
                Some(br#"{"timestamp":"2022-10-30 19:40:01","event":"e","url":"/"}"#.to_vec()),
                Reason::MissingField,
                "\"user_id\" is missing",
            ),
            (
                Some(br#"{"timestamp":1667158801000,"event":"e","user_id":"u","url":"/"}"#.to_vec()),
                Reason::WrongType,
                "is a number",
            ),
            (
                Some(br#"{"timestamp":"2022-10-30 19:40:01","event":"e","user_id":null,"url":"/"}"#.to_vec()),
                Reason::WrongType,
                "\"user_id\" is null",
            ),
            (Some(event("2022-10-30 19:40:01", &long).into_bytes()), Reason::FieldTooLong, "over 1024 bytes"),
            (Some(event("2022-10-30 25:40:01", "u").into_bytes()), Reason::BadTimestamp, "2022-10-30 25:40:01"),
            (Some(event("9999-12-31 23:59:59", "u").into_bytes()), Reason::Future, "more than 3600000ms after"),
        ];
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        for (value, reason, detail) in &cases {
            assert_eq!(agg.on_record(value.as_deref(), NOW, &mut out), Outcome::DeadLetter(*reason));
            let (topic, written_reason, written_detail, keep_value) = out.dead_letters.last().unwrap();
            assert_eq!((topic.as_str(), written_reason, keep_value), ("dlq", reason, &true));
            assert!(written_detail.contains(detail), "{reason:?}: {written_detail}");
        }
        assert_eq!(agg.totals().dead_letters.iter().sum::<u64>(), cases.len() as u64);
        assert!(out.rows.is_empty());
        // Warnings are rate-limited per minute of record time.
        let warnings = out.logs.iter().filter(|line| line.starts_with("dead letter:")).count();
        assert_eq!(warnings, WARNINGS_PER_MINUTE as usize);
        assert_eq!(agg.totals().suppressed_warnings, cases.len() as u64 - u64::from(WARNINGS_PER_MINUTE));
    }

    #[test]
    fn dead_letters_over_the_size_limit_are_written_without_their_value() {
        let mut agg = aggregator(&[("DEAD_LETTER_MAX_BYTES", "10")]);
        let mut out = Collected::default();
        agg.on_record(Some(b"0123456789"), NOW, &mut out);
        agg.on_record(Some(b"0123456789A"), NOW, &mut out);
        let kept: Vec<bool> = out.dead_letters.iter().map(|letter| letter.3).collect();
        assert_eq!(kept, [true, false]);
    }

    #[test]
    fn late_and_over_capacity_events_are_dead_lettered() {
        let mut agg = aggregator(&[("STATE_BUDGET", "16KiB")]);
        let mut out = Collected::default();
        agg.on_record(Some(event("2022-10-30 19:40:00", "u").as_bytes()), NOW, &mut out);
        agg.on_record(Some(event("2022-10-30 19:50:00", "u").as_bytes()), NOW, &mut out);
        let late = agg.on_record(Some(event("2022-10-30 19:40:00", "u").as_bytes()), NOW, &mut out);
        assert_eq!(late, Outcome::DeadLetter(Reason::Late));
        assert!(
            out.dead_letters[0].2.contains("behind the watermark \"2022-10-30 19:49:59.999\""),
            "{}",
            out.dead_letters[0].2
        );
        let over = (0..1_000)
            .map(|i| agg.on_record(Some(event("2022-10-30 19:50:01", &format!("user{i}")).as_bytes()), NOW, &mut out))
            .filter(|outcome| *outcome == Outcome::DeadLetter(Reason::OverCapacity))
            .count();
        assert!(over > 800, "{over}");
        assert!(agg.engine().stats().state_bytes <= 16 * 1024);
    }

    #[test]
    fn a_timestamp_alone_is_a_heartbeat_that_closes_windows() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        agg.on_record(Some(event("2022-10-30 19:40:00", "u").as_bytes()), NOW, &mut out);
        let beat = agg.on_record(Some(br#"{"timestamp":"2022-10-30 19:50:00"}"#), NOW, &mut out);
        assert_eq!(beat, Outcome::Heartbeat);
        assert_eq!(out.rows.len(), 30);
        assert_eq!(agg.totals().heartbeats, 1);
        assert_eq!(agg.engine().stats().open_groups, 0);
    }

    #[test]
    fn without_a_dead_letter_topic_bad_records_are_counted_and_skipped() {
        let config = Config::from_env(|_| None).unwrap();
        let mut agg = Aggregator::new(config);
        let mut out = Collected::default();
        assert_eq!(agg.on_record(Some(b"nope"), NOW, &mut out), Outcome::DeadLetter(Reason::NotJson));
        assert!(out.dead_letters.is_empty());
        assert_eq!(agg.totals().dead_letters_skipped, 1);
        assert!(agg.summary().contains("dead_letters=1 [not_json=1] dead_letters_skipped=1"), "{}", agg.summary());
    }

    #[test]
    fn a_summary_is_logged_once_per_minute_of_record_time() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        for second in 0..180 {
            agg.on_record(Some(event("2022-10-30 19:40:00", "u").as_bytes()), NOW + second * 1_000, &mut out);
        }
        let summaries: Vec<&String> = out.logs.iter().filter(|line| line.starts_with("summary:")).collect();
        assert_eq!(summaries.len(), 3);
        assert!(summaries[2].starts_with("summary: records=121 counted=121 heartbeats=0 rows=0"), "{}", summaries[2]);
        assert!(summaries[2].contains("open_panes=1 open_groups=1"), "{}", summaries[2]);
        assert!(summaries[2].contains("watermark=\"2022-10-30 19:39:59.999\""), "{}", summaries[2]);
    }

    #[test]
    fn escapes_control_characters_and_quotes_in_output() {
        let mut out = String::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
