//! The record handler: one input record in, rows and dead letters out, never a panic.

use crate::config::{Config, EventTime, IncompletePolicy};
use crate::dead_letter::Reason;
use crate::engine::{Admission, Engine, Row, RowSink, WindowKind};
use crate::event::{Event, EventReader};
use crate::log_limiter::LogLimiter;
use crate::row_format::{RowFormatter, EARLY_HEADER, INCOMPLETE_HEADER};
use crate::time::format_log_time;

/// The most a record's framing in a batch can take beyond its key and value: its length, attributes,
/// timestamp and offset deltas, key and value lengths (varints) and header count.
const RECORD_FRAMING_BYTES: usize = 15;

/// Where the handler's results go. The module implements it with the SDK's writer; tests collect.
pub trait Output {
    /// One aggregate row for the first output topic: of a window that may miss events (`incomplete`), or an
    /// early row of a window still open (`early`, under `EMIT_EARLY`).
    fn row(&mut self, key: &[u8], value: &[u8], incomplete: bool, early: bool);
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
    /// Counted events that came too late for some of their windows (already fired), and how many
    /// window rows they are missing from.
    pub partly_late: u64,
    pub missed_windows: u64,
    pub heartbeats: u64,
    pub rows: u64,
    pub incomplete_rows: u64,
    pub dropped_incomplete_rows: u64,
    /// Rows written early (`EMIT_EARLY`), among `rows`.
    pub early_rows: u64,
    /// Dead letters by reason, indexed by `reason as usize` ([`Reason::ALL`] order).
    pub dead_letters: Vec<u64>,
    /// Dead letters that were only counted because no dead-letter topic is configured.
    pub dead_letters_skipped: u64,
    pub suppressed_warnings: u64,
}

pub struct Aggregator {
    config: Config,
    engine: Engine,
    events: EventReader,
    rows: RowFormatter,
    row_bytes_per_record: usize,
    totals: Totals,
    log: LogLimiter,
}

impl Aggregator {
    pub fn new(config: Config) -> Aggregator {
        let functions = config.functions();
        let mut engine = Engine::new(config.window, config.state_budget_bytes)
            .with_aggregates(&functions)
            .with_restart_margin(config.restart_margin_ms);
        if let Some(top_n) = &config.top_n {
            engine = engine.with_top_n(top_n.spec.clone());
        }
        if let Some(every_ms) = config.early_every_ms {
            engine = engine.with_early_rows(every_ms);
        }
        Aggregator {
            engine,
            events: EventReader::new(&config),
            rows: RowFormatter::new(&config),
            row_bytes_per_record: config.row_bytes_per_record,
            totals: Totals { dead_letters: vec![0; Reason::ALL.len()], ..Totals::default() },
            log: LogLimiter::default(),
            config,
        }
    }

    /// Smaller shares of work and row bytes per record than allowed ([`crate::engine::WORK_PER_EMIT`],
    /// `ROW_BYTES_PER_RECORD`); tests use tiny ones so that rows wait for later records.
    pub fn with_share_per_record(mut self, work: usize, row_bytes: usize) -> Aggregator {
        self.engine = self.engine.with_work_per_emit(work);
        self.row_bytes_per_record = row_bytes;
        self
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
        let size = window.size_ms();
        let event_time = match &self.config.event_time {
            EventTime::Field { name, format } => format!("timestamp_field={name} timestamp_format={}", format.name()),
            EventTime::RecordTimestamp => "timestamp_field=@record".to_string(),
        };
        let aggregates: Vec<String> = self.config.aggregates.iter().map(ToString::to_string).collect();
        format!(
            "clickstream-aggregation started: window={} watermark_delay={}ms group_by={} aggregates={} {event_time} restart_margin={}ms state_budget={}B (fixed {}B) max_event_ahead={}ms incomplete_windows={} dead_letter_topic={} dead_letter_max_bytes={} row_bytes_per_record={}{}",
            match window.kind() {
                WindowKind::Hop if window.slide_ms() == window.size_ms() => format!("tumble size={size}ms"),
                WindowKind::Hop => format!("hop size={size}ms slide={}ms", window.slide_ms()),
                WindowKind::Cumulate => format!("cumulate size={size}ms step={}ms", window.slide_ms()),
                WindowKind::Session => format!("session gap={size}ms"),
            },
            window.delay_ms(),
            self.config.group_by.join(","),
            aggregates.join(","),
            self.config.restart_margin_ms,
            self.config.state_budget_bytes,
            Engine::fixed_state_bytes(&self.config.functions()),
            self.config.max_event_ahead_ms,
            self.config.incomplete.name(),
            self.config.dead_letter_topic.as_deref().unwrap_or("none (dead letters are counted and skipped)"),
            self.config.dead_letter_max_bytes,
            self.config.row_bytes_per_record,
            self.describe_top_n(),
        )
    }

    fn describe_top_n(&self) -> String {
        let Some(top_n) = &self.config.top_n else { return String::new() };
        let spec = &top_n.spec;
        let partition: Vec<&str> =
            spec.partition_by.iter().map(|&field| self.config.group_by[field].as_str()).collect();
        format!(
            " top_n={} top_n_by={} top_n_order={} top_n_partition_by={} top_n_rank_field={}",
            spec.n,
            self.config.aggregates[spec.by].name,
            if spec.descending { "desc" } else { "asc" },
            if partition.is_empty() { "(the window)".to_string() } else { partition.join(",") },
            top_n.rank_field.as_deref().unwrap_or("(none)"),
        )
    }

    /// Handles one record: its value and its Kafka timestamp (ms).
    pub fn on_record(&mut self, value: Option<&[u8]>, record_ms: i64, out: &mut impl Output) -> Outcome {
        self.totals.records += 1;
        let outcome = match self.read_and_count(value, record_ms) {
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
        // Every record, whatever became of it, writes its share of the rows that have fired.
        let mut sink = RowSinkFor {
            rows: &mut self.rows,
            totals: &mut self.totals,
            config: &self.config,
            out,
            bytes_left: self.row_bytes_per_record,
        };
        self.engine.emit(&mut sink);
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
        let watermark = stats.watermark_ms.map_or_else(|| "none".to_string(), format_log_time);
        format!(
            "summary: records={} counted={} partly_late={} missed_windows={} heartbeats={} rows={} early_rows={} incomplete_rows={} dropped_incomplete_rows={} dead_letters={} [{}] dead_letters_skipped={} open_panes={} open_groups={} state_bytes={}/{} watermark={:?} backlog_windows={} suppressed_warnings={}",
            totals.records,
            totals.counted,
            totals.partly_late,
            totals.missed_windows,
            totals.heartbeats,
            totals.rows,
            totals.early_rows,
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
            stats.backlog_windows,
            totals.suppressed_warnings,
        )
    }

    fn read_and_count(&mut self, value: Option<&[u8]>, record_ms: i64) -> Result<Outcome, (Reason, String)> {
        let (event_ms, group, inputs) = match self.events.read(value, record_ms)? {
            Event::Heartbeat { time_ms } => {
                self.engine.advance(time_ms);
                return Ok(Outcome::Heartbeat);
            }
            Event::Count { time_ms, group, inputs } => (time_ms, group, inputs),
        };
        match self.engine.observe(event_ms, group.values(), inputs.values()) {
            Admission::Counted { missed_windows } => {
                if missed_windows > 0 {
                    self.totals.partly_late += 1;
                    self.totals.missed_windows += u64::from(missed_windows);
                }
                Ok(Outcome::Counted)
            }
            Admission::Late => Err((
                Reason::Late,
                format!(
                    "event time {:?} is behind the watermark {:?}",
                    format_log_time(event_ms),
                    self.engine.watermark_ms().map_or_else(|| "none".to_string(), format_log_time)
                ),
            )),
            Admission::OverCapacity { needed_bytes } => Err((
                Reason::OverCapacity,
                format!(
                    "counting it needs {needed_bytes} bytes of new state; state is at {} of STATE_BUDGET {} bytes",
                    self.engine.stats().state_bytes,
                    self.config.state_budget_bytes
                ),
            )),
            Admission::OutOfRange => Err((
                Reason::OutOfRange,
                format!("event time {:?} has windows reaching outside years 0000 to 9999", format_log_time(event_ms)),
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

/// Formats and writes rows until this record's share of row bytes (`ROW_BYTES_PER_RECORD`) is spent. With
/// the engine's own limit ([`crate::engine::WORK_PER_EMIT`]) this bounds one record's work. The default is
/// half the broker's default batch limit (1 MiB), because the broker joins what a record writes with what
/// the records around it write into one batch while its previous write is in flight (see the README's
/// "Output batches").
struct RowSinkFor<'a, O: Output> {
    rows: &'a mut RowFormatter,
    totals: &'a mut Totals,
    config: &'a Config,
    out: &'a mut O,
    bytes_left: usize,
}

impl<O: Output> RowSink for RowSinkFor<'_, O> {
    fn row(&mut self, row: &Row<'_>) -> bool {
        if !row.complete {
            if self.config.incomplete == IncompletePolicy::Drop {
                self.totals.dropped_incomplete_rows += 1;
                return true;
            }
            self.totals.incomplete_rows += 1;
        }
        self.totals.rows += 1;
        self.totals.early_rows += u64::from(row.early);
        let (key, value) = self.rows.format(row);
        self.out.row(key.as_bytes(), value.as_bytes(), !row.complete, row.early);
        let header = |name: &str, on: bool| if on { 2 + name.len() + "true".len() } else { 0 };
        let header = header(INCOMPLETE_HEADER, !row.complete) + header(EARLY_HEADER, row.early);
        let stored = RECORD_FRAMING_BYTES + key.len() + value.len() + header;
        self.bytes_left = self.bytes_left.saturating_sub(stored);
        self.bytes_left > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MAX_FIELD_BYTES;
    use crate::log_limiter::WARNINGS_PER_MINUTE;
    use crate::time::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

    #[derive(Default)]
    struct Collected {
        rows: Vec<(String, String, bool)>,
        dead_letters: Vec<(String, Reason, String, bool)>,
        logs: Vec<String>,
    }

    impl Output for Collected {
        fn row(&mut self, key: &[u8], value: &[u8], incomplete: bool, _early: bool) {
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

    /// The README: the start-up line shows the budget and the fixed state in it.
    #[test]
    fn the_start_up_line_shows_the_fixed_state() {
        let agg = aggregator(&[("AGGREGATES", "n=count,s=sum(x)")]);
        assert!(agg.describe().contains(" state_budget=786432B (fixed 10368B) "), "{}", agg.describe());
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
                Some(br#"{"timestamp":true,"event":"e","user_id":"u","url":"/"}"#.to_vec()),
                Reason::WrongType,
                "is a boolean",
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
        assert!(
            summaries[2]
                .starts_with("summary: records=121 counted=121 partly_late=0 missed_windows=0 heartbeats=0 rows=0"),
            "{}",
            summaries[2]
        );
        assert!(summaries[2].contains("open_panes=1 open_groups=1"), "{}", summaries[2]);
        assert!(summaries[2].contains("watermark=\"2022-10-30 19:39:59.999\""), "{}", summaries[2]);
    }

    fn values(out: &Collected) -> Vec<&str> {
        out.rows.iter().map(|(_, value, _)| value.as_str()).collect()
    }

    fn keys(out: &Collected) -> Vec<&str> {
        out.rows.iter().map(|(key, _, _)| key.as_str()).collect()
    }

    #[test]
    fn writes_every_aggregate_in_order_with_sql_null_rules() {
        let aggregates = "n=count,secs=sum(on_site_seconds),low=min(viewed_percent),high=max(viewed_percent),avg=avg(viewed_percent),seen=count(viewed_percent)";
        let mut agg = aggregator(&[("AGGREGATES", aggregates), ("WINDOW_SLIDE", "5m"), ("GROUP_BY", "user_id")]);
        let mut out = Collected::default();
        for value in [
            r#"{"timestamp":"2022-10-30 19:40:01","user_id":"a","on_site_seconds":5,"viewed_percent":30}"#,
            r#"{"timestamp":"2022-10-30 19:40:02","user_id":"a","on_site_seconds":-2,"viewed_percent":null}"#,
            r#"{"timestamp":"2022-10-30 19:40:03","user_id":"a","viewed_percent":72.5}"#,
            r#"{"timestamp":"2022-10-30 19:40:04","user_id":"b"}"#,
            r#"{"timestamp":"2022-10-30 19:50:00","user_id":"c"}"#,
        ] {
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted, "{value}");
        }
        assert_eq!(
            values(&out),
            [
                r#"{"window_start":"2022-10-30 19:40:00","window_end":"2022-10-30 19:45:00","user_id":"a","n":3,"secs":3,"low":30,"high":72.5,"avg":51.25,"seen":2}"#,
                r#"{"window_start":"2022-10-30 19:40:00","window_end":"2022-10-30 19:45:00","user_id":"b","n":1,"secs":null,"low":null,"high":null,"avg":null,"seen":0}"#,
            ]
        );
    }

    #[test]
    fn a_value_that_is_not_a_number_dead_letters_the_whole_record() {
        let mut agg = aggregator(&[("AGGREGATES", "n=count,secs=sum(on_site_seconds)")]);
        let mut out = Collected::default();
        for (field, reason, detail) in [
            (r#""55""#, Reason::WrongType, "field \"on_site_seconds\" is a string, expected a number or null"),
            ("true", Reason::WrongType, "is a boolean"),
            ("[1]", Reason::WrongType, "is an array"),
            ("1e400", Reason::OutOfRange, "beyond the range of a 64-bit float"),
            (&format!("\"{}\"", "9".repeat(2_000)), Reason::WrongType, "is a string"),
            (&"9".repeat(2_000), Reason::FieldTooLong, "over 1024 bytes"),
        ] {
            let value = format!(
                r#"{{"timestamp":"2022-10-30 19:40:01","event":"e","user_id":"u","url":"/","on_site_seconds":{field}}}"#
            );
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::DeadLetter(reason), "{field}");
            assert!(out.dead_letters.last().unwrap().2.contains(detail), "{}", out.dead_letters.last().unwrap().2);
        }
    }

    /// Regression (count_field_dead_lettered_text_values): `count(ref)` sent events whose `ref` was a string
    /// to the dead letters as wrong_type, so `count` lost them too. SQL's COUNT(f) counts any non-null value.
    #[test]
    fn count_of_a_field_counts_present_values_of_any_type() {
        let mut agg = aggregator(&[("AGGREGATES", "n=count,refs=count(ref),total=count(1)"), ("GROUP_BY", "user_id")]);
        let mut out = Collected::default();
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        for field in [r#""google""#, "7", "true", "{\"a\":1}", "[]", "\"\"", &format!("\"{long}\""), "null"] {
            let value = format!(r#"{{"timestamp":"2022-10-30 19:40:01","user_id":"u","ref":{field}}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted, "{field}");
        }
        agg.on_record(Some(br#"{"timestamp":"2022-10-30 19:40:02","user_id":"u"}"#), NOW, &mut out);
        agg.on_record(Some(br#"{"timestamp":"2022-10-30 19:50:00"}"#), NOW, &mut out);
        assert_eq!(out.rows.len(), 30);
        assert!(values(&out).iter().all(|value| value.ends_with(r#""user_id":"u","n":9,"refs":7,"total":9}"#)));
        assert!(out.dead_letters.is_empty());
    }

    /// A field both counted and summed must still be a number: the record is dead-lettered whole, so the
    /// aggregates of one window never disagree.
    #[test]
    fn a_field_that_is_summed_too_must_be_a_number() {
        let mut agg = aggregator(&[("AGGREGATES", "refs=count(ref),total=sum(ref)")]);
        let mut out = Collected::default();
        let value = r#"{"timestamp":"2022-10-30 19:40:01","event":"e","user_id":"u","url":"/","ref":"google"}"#;
        assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::DeadLetter(Reason::WrongType));
    }

    /// Regression (epoch_s_detail_blamed_the_years): `1e9` seconds was refused with "not a timestamp in years
    /// 0000 to 9999"; it is 2001. Numbers that are refused now say what was wrong.
    #[test]
    fn epoch_numbers_in_exponent_form_are_read_and_refusals_say_why() {
        let mut agg = aggregator(&[("TIMESTAMP_FORMAT", "epoch_s")]);
        let mut out = Collected::default();
        for time in ["1.6672788e9", "1667278800", "16672788000e-1"] {
            let value = format!(r#"{{"timestamp":{time},"event":"e","user_id":"u","url":"/"}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted, "{time}");
        }
        agg.on_record(Some(br#"{"timestamp":1e10}"#), 1e13 as i64, &mut out);
        assert!(values(&out).iter().all(|value| value.contains(r#""event_count":3"#)), "{:?}", values(&out));
        let value = br#"{"timestamp":1e12,"event":"e","user_id":"u","url":"/"}"#;
        assert_eq!(agg.on_record(Some(value), i64::MAX, &mut out), Outcome::DeadLetter(Reason::BadTimestamp));
        assert_eq!(
            out.dead_letters.last().unwrap().2,
            r#"field "timestamp" is outside years 0000 to 9999 (TIMESTAMP_FORMAT=epoch_s): 1e12"#
        );
        let mut agg = aggregator(&[("TIMESTAMP_FORMAT", "epoch_ms")]);
        let value = br#"{"timestamp":1.6e12,"event":"e","user_id":"u","url":"/"}"#;
        assert_eq!(agg.on_record(Some(value), NOW, &mut out), Outcome::DeadLetter(Reason::BadTimestamp));
        assert!(out.dead_letters.last().unwrap().2.contains("has a fraction or an exponent"));
    }

    /// The README's "Exactness of floats": floats are added pane by pane, then the panes in time order, as
    /// Flink 2.3 adds its slices: 1e16, then 1.0 in the next pane, then -1e16 back in the first pane sum to
    /// (1e16 + -1e16) + 1.0 = 1.0, where adding in arrival order would give 0.0.
    #[test]
    fn floats_are_summed_per_pane_then_across_panes() {
        let mut agg = aggregator(&[("AGGREGATES", "s=sum(x)"), ("GROUP_BY", "user_id"), ("WINDOW_SIZE", "20s")]);
        let mut out = Collected::default();
        for (time, x) in [("19:40:01", "1e16"), ("19:40:11", "1.0"), ("19:40:02", "-1e16")] {
            let value = format!(r#"{{"timestamp":"2022-10-30 {time}","user_id":"u","x":{x}}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted);
        }
        agg.on_record(Some(br#"{"timestamp":"2022-10-30 19:41:00"}"#), NOW, &mut out);
        assert_eq!(
            values(&out)[1],
            r#"{"window_start":"2022-10-30 19:40:00","window_end":"2022-10-30 19:40:20","user_id":"u","s":1.0}"#
        );
        assert_eq!((1e16_f64 + 1.0) + -1e16, 0.0, "arrival order would give 0.0");
    }

    /// Early rows go through the same completeness rule as final rows: under INCOMPLETE_WINDOWS=drop, the
    /// first window's early rows are dropped with it; later windows' come, then their final rows.
    #[test]
    fn early_rows_of_incomplete_windows_are_dropped_with_them() {
        let env = [("GROUP_BY", "store_id"), ("WINDOW", "tumble"), ("WINDOW_SIZE", "1m")];
        let mut agg = aggregator(&[env[0], env[1], env[2], ("EMIT_EARLY", "20s"), ("INCOMPLETE_WINDOWS", "drop")]);
        let mut out = Collected::default();
        for time in ["19:40:05", "19:40:30", "19:41:15", "19:41:45", "19:42:01"] {
            let value = format!(r#"{{"timestamp":"2022-10-30 {time}","store_id":7}}"#);
            agg.on_record(Some(value.as_bytes()), NOW, &mut out);
        }
        let rows = keys(&out);
        // 19:41:15 and 19:41:45 each pass a multiple of 20 s: an early row each, then the final row when
        // 19:42:01 fires the window, and that event's early row in the next one.
        assert_eq!(
            rows,
            [
                r#"["2022-10-30 19:41:00",7]"#,
                r#"["2022-10-30 19:41:00",7]"#,
                r#"["2022-10-30 19:41:00",7]"#,
                r#"["2022-10-30 19:42:00",7]"#
            ]
        );
        assert_eq!((agg.totals().early_rows, agg.totals().rows), (3, 4));
        assert_eq!(agg.totals().dropped_incomplete_rows, 2, "the first window's early and final rows");
    }

    /// Cumulating windows of one period share their start, so their keys name the end as well.
    #[test]
    fn cumulating_windows_are_keyed_by_start_and_end() {
        let mut agg = aggregator(&[
            ("GROUP_BY", "store_id"),
            ("WINDOW", "cumulate"),
            ("WINDOW_SIZE", "4m"),
            ("WINDOW_STEP", "2m"),
        ]);
        let mut out = Collected::default();
        for time in ["19:40:01", "19:43:00", "19:50:00"] {
            let value = format!(r#"{{"timestamp":"2022-10-30 {time}","store_id":7}}"#);
            agg.on_record(Some(value.as_bytes()), NOW, &mut out);
        }
        let keys = keys(&out);
        assert_eq!(
            keys,
            [
                r#"["2022-10-30 19:40:00","2022-10-30 19:42:00",7]"#,
                r#"["2022-10-30 19:40:00","2022-10-30 19:44:00",7]"#
            ]
        );
        assert!(values(&out)[1].starts_with(
            r#"{"window_start":"2022-10-30 19:40:00","window_end":"2022-10-30 19:44:00","store_id":7,"event_count":2}"#
        ));
    }

    #[test]
    fn integer_group_values_stay_integers_in_the_row_and_the_key() {
        let mut agg = aggregator(&[("GROUP_BY", "store_id"), ("WINDOW_SLIDE", "5m")]);
        let mut out = Collected::default();
        for store in ["42", r#""42""#, "-0", "7"] {
            let value = format!(r#"{{"timestamp":"2022-10-30 19:40:01","store_id":{store}}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted);
        }
        for (store, reason) in [
            ("4.5", Reason::WrongType),
            ("1e2", Reason::WrongType),
            ("null", Reason::WrongType),
            ("false", Reason::WrongType),
            ("{}", Reason::WrongType),
            ("99999999999999999999", Reason::OutOfRange),
        ] {
            let value = format!(r#"{{"timestamp":"2022-10-30 19:40:01","store_id":{store}}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::DeadLetter(reason), "{store}");
            assert!(out.dead_letters.last().unwrap().2.contains("field \"store_id\""));
        }
        agg.on_record(Some(br#"{"timestamp":"2022-10-30 19:50:00"}"#), NOW, &mut out);
        let keys = keys(&out);
        assert_eq!(
            keys,
            [
                r#"["2022-10-30 19:40:00",0]"#,
                r#"["2022-10-30 19:40:00",7]"#,
                r#"["2022-10-30 19:40:00",42]"#,
                r#"["2022-10-30 19:40:00","42"]"#
            ]
        );
        assert!(values(&out)[2].contains(r#""store_id":42,"event_count":1"#), "{}", values(&out)[2]);
        assert!(values(&out)[3].contains(r#""store_id":"42","event_count":1"#));
    }

    #[test]
    fn event_time_in_each_accepted_form() {
        let sql_beat = r#"{"timestamp":"2022-10-30 19:50:00"}"#;
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, i64, &'a str);
        let cases: [Case; 6] = [
            (&[], r#""2022-10-30T21:40:01+02:00""#, NOW, sql_beat),
            (&[], "1667158801000", NOW, r#"{"timestamp":1667159400000}"#),
            (&[("TIMESTAMP_FORMAT", "epoch_s")], "1667158801.999", NOW, r#"{"timestamp":1667159400}"#),
            (&[("TIMESTAMP_FORMAT", "sql")], r#""2022-10-30 19:40:01""#, NOW, sql_beat),
            (
                &[("TIMESTAMP_FORMAT", "iso")],
                r#""2022-10-30T19:40:01Z""#,
                NOW,
                r#"{"timestamp":"2022-10-30T19:50:00Z"}"#,
            ),
            (&[("TIMESTAMP_FIELD", "@record")], r#""not read""#, 1_667_158_801_000, "{}"),
        ];
        for (vars, timestamp, record_ms, heartbeat) in cases {
            let mut agg = aggregator(vars);
            let mut out = Collected::default();
            let value = format!(r#"{{"timestamp":{timestamp},"event":"e","user_id":"u","url":"/"}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), record_ms, &mut out), Outcome::Counted, "{vars:?}");
            assert_eq!(agg.on_record(Some(heartbeat.as_bytes()), 1_667_159_400_000, &mut out), Outcome::Heartbeat);
            assert_eq!(out.rows.first().map(|row| &row.0[..22]), Some(r#"["2022-10-30 19:35:10""#), "{vars:?}");
        }
        let mut agg = aggregator(&[("TIMESTAMP_FORMAT", "sql")]);
        let mut out = Collected::default();
        for (timestamp, reason) in
            [(r#""2022-10-30T19:40:01""#, Reason::BadTimestamp), ("1667158801000", Reason::WrongType)]
        {
            let value = format!(r#"{{"timestamp":{timestamp},"event":"e","user_id":"u","url":"/"}}"#);
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::DeadLetter(reason));
        }
        assert!(out.dead_letters[1].2.contains("is a number, expected a date-time string (TIMESTAMP_FORMAT=sql)"));
        let mut agg = aggregator(&[("TIMESTAMP_FIELD", "@record")]);
        assert_eq!(
            agg.on_record(Some(br#"{"event":"e","user_id":"u","url":"/"}"#), MIN_TIMESTAMP_MS - 1, &mut out),
            Outcome::DeadLetter(Reason::BadTimestamp)
        );
    }

    /// Regression (repeated_timestamp_heartbeat): a heartbeat whose timestamp key repeated was
    /// dead-lettered as missing_field.
    #[test]
    fn a_heartbeat_with_a_repeated_timestamp_is_a_heartbeat() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        let beat = br#"{"timestamp":"2022-10-30 19:00:00","timestamp":"2022-10-30 19:00:00"}"#;
        assert_eq!(agg.on_record(Some(beat), NOW, &mut out), Outcome::Heartbeat);
        let mut agg = aggregator(&[("TIMESTAMP_FIELD", "@record")]);
        assert_eq!(agg.on_record(Some(b"{}"), NOW, &mut out), Outcome::Heartbeat);
    }

    /// Regression (warning_limit_restarted_when_record_time_went_back): partitions a minute apart on one
    /// VM restarted the limiter's minute on every switch, so the limit was no limit.
    #[test]
    fn the_warning_limit_holds_when_partitions_interleave_record_times() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        for i in 0..100 {
            let record_ms = if i % 2 == 0 { NOW } else { NOW - 90_000 };
            agg.on_record(Some(b"not json"), record_ms, &mut out);
        }
        let warnings = out.logs.iter().filter(|line| line.starts_with("dead letter:")).count();
        assert_eq!(warnings, WARNINGS_PER_MINUTE as usize);
        assert_eq!(agg.totals().suppressed_warnings, 100 - u64::from(WARNINGS_PER_MINUTE));
    }

    /// Regression (windows_before_year_0000): an event at 0000-01-01 00:00:05 produced rows starting
    /// at "-001-12-31 23:55:10".
    #[test]
    fn events_whose_windows_reach_outside_the_printable_years_are_dead_lettered() {
        let mut agg = aggregator(&[("TIMESTAMP_FIELD", "@record")]);
        let mut out = Collected::default();
        let early = MIN_TIMESTAMP_MS + 5_000;
        let outcome = agg.on_record(Some(br#"{"event":"e","user_id":"u","url":"/"}"#), early, &mut out);
        assert_eq!(outcome, Outcome::DeadLetter(Reason::OutOfRange));
        assert!(out.dead_letters[0]
            .2
            .contains("\"0000-01-01 00:00:05\" has windows reaching outside years 0000 to 9999"));
        agg.on_record(Some(br#"{"event":"e","user_id":"u","url":"/"}"#), MIN_TIMESTAMP_MS + 290_000, &mut out);
        agg.on_record(Some(b"{}"), MAX_TIMESTAMP_MS, &mut out);
        assert_eq!(out.rows.len(), 30);
        assert!(out.rows.iter().all(|(key, value, _)| !key.contains("\"-") && !value.contains("\"-")));
        assert!(agg.summary().contains("watermark=\"9999-12-31 23:59:59.998\""), "{}", agg.summary());
    }

    /// Regression (partly_late_events_were_invisible): events too late for some of their windows were
    /// counted in the rest and missing from the fired ones, with no trace.
    #[test]
    fn partly_late_events_and_their_missed_windows_are_counted_in_the_summary() {
        let mut agg = aggregator(&[]);
        let mut out = Collected::default();
        agg.on_record(Some(event("2022-10-30 19:40:00", "u").as_bytes()), NOW, &mut out);
        agg.on_record(Some(event("2022-10-30 19:40:30", "u").as_bytes()), NOW, &mut out);
        // The window [19:35:10, 19:40:10) and the two after it have fired: three rows missed.
        assert_eq!(agg.on_record(Some(event("2022-10-30 19:40:05", "v").as_bytes()), NOW, &mut out), Outcome::Counted);
        assert_eq!((agg.totals().partly_late, agg.totals().missed_windows), (1, 3));
        assert!(agg.summary().contains("partly_late=1 missed_windows=3"));
    }

    /// A record that fires more rows than its share writes at most ROW_BYTES_PER_RECORD of them as stored,
    /// framing and headers counted (plus the row that crossed it); the following records of any kind write
    /// the rest, and the summary line shows the windows still being written.
    #[test]
    fn a_record_writes_its_share_of_fired_rows_and_the_next_records_the_rest() {
        const SHARE: usize = 384 << 10;
        let mut agg = aggregator(&[("STATE_BUDGET", "16MiB"), ("ROW_BYTES_PER_RECORD", "384KiB")]);
        let mut out = Collected::default();
        for user in 0..5_000 {
            agg.on_record(Some(event("2022-10-30 19:40:00", &format!("user{user:05}")).as_bytes()), NOW, &mut out);
        }
        agg.on_record(Some(event("2022-10-30 19:50:00", "jump").as_bytes()), NOW, &mut out);
        let stored = |(key, value, incomplete): &(String, String, bool)| {
            let header = if *incomplete { 2 + INCOMPLETE_HEADER.len() + 4 } else { 0 };
            RECORD_FRAMING_BYTES + key.len() + value.len() + header
        };
        let bytes = |rows: &[(String, String, bool)]| rows.iter().map(stored).sum();
        let first: usize = bytes(&out.rows);
        let largest = out.rows.iter().map(stored).max().unwrap();
        assert!(first < SHARE + largest, "the jump wrote {first} bytes of rows");
        assert!(first + largest >= SHARE, "and used its share: {first} bytes");
        // The share ends inside the first window (5,000 rows of over 200 bytes): from it to the last fired
        // one, 30 windows with events and 30 empty ones.
        assert!(out.rows.len() < 5_000);
        assert!(agg.summary().contains("backlog_windows=60"), "{}", agg.summary());
        let mut records = 0;
        while agg.engine().has_backlog() {
            agg.on_record(None, NOW, &mut out); // a dead letter writes its share too
            records += 1;
        }
        assert_eq!(out.rows.len(), 5_000 * 30, "every fired row, once");
        let total: usize = bytes(&out.rows);
        let shares = total / SHARE; // the jump's own share, then one a record
        assert!((shares - 1..=shares).contains(&records), "{records} records wrote the rest of {total} bytes");
        assert!(agg.summary().contains("backlog_windows=0"), "{}", agg.summary());
        let mut keys = keys(&out);
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "in window order, then group order");
        keys.dedup();
        assert_eq!(keys.len(), 5_000 * 30);
    }

    /// The README's memory figures: bytes per open group, and how many fit in the default budget and in the
    /// largest the sizing rule allows in a 2 MiB VM, with 10-character user ids and three group-by fields,
    /// with the count and with five aggregates.
    #[test]
    fn the_readme_memory_figures_hold() {
        let five =
            "n=count,s=sum(on_site_seconds),lo=min(on_site_seconds),hi=max(on_site_seconds),a=avg(viewed_percent)";
        for (aggregates, budget, bytes_per_group, groups) in [
            ("event_count=count", "768KiB", 134, 5_847),
            (five, "768KiB", 297, 2_644),
            ("event_count=count", "1536KiB", 137, 11_392),
            // Unique users: each group's one user is its own group value, stored once.
            ("event_count=count,users=count_distinct(user_id)", "768KiB", 208, 3_770),
            ("event_count=count,top=10", "768KiB", 456, 1_723),
            ("event_count=count,p95=percentile(on_site_seconds, 0.95)", "768KiB", 234, 3_328),
            ("event_count=count,users=approx_count_distinct(user_id)", "768KiB", 218, 3_595),
        ] {
            let (aggregates, top_n) = aggregates.split_once(",top=").unwrap_or((aggregates, ""));
            let mut settings = vec![("AGGREGATES", aggregates), ("STATE_BUDGET", budget)];
            if !top_n.is_empty() {
                settings.push(("TOP_N", top_n));
            }
            let mut agg = aggregator(&settings);
            let mut out = Collected::default();
            for i in 0.. {
                let value = format!(
                    r#"{{"timestamp":"2020-11-16 19:00:01","event":"view_item","user_id":"user{i:06}","url":"/item/1","on_site_seconds":5,"viewed_percent":30}}"#
                );
                if agg.on_record(Some(value.as_bytes()), NOW, &mut out) != Outcome::Counted {
                    break;
                }
            }
            let stats = agg.engine().stats();
            assert_eq!(
                (stats.open_groups, stats.state_bytes / stats.open_groups),
                (groups, bytes_per_group),
                "{aggregates} in {budget}"
            );
        }
        assert_eq!(std::mem::size_of::<crate::aggregate::Accumulator>(), 40, "the README's 40 bytes per aggregate");
    }

    /// The README's cost of each distinct value in one window: its entry in the set, its text, its slot and
    /// its share of the index, measured over 9,000 new values in one group.
    #[test]
    fn a_distinct_value_costs_the_readme_figure() {
        let mut agg = aggregator(&[("AGGREGATES", "users=count_distinct(user_id)"), ("GROUP_BY", "event")]);
        let mut out = Collected::default();
        let mut state_after = Vec::new();
        for i in 0..=10_000 {
            let value = format!(
                r#"{{"timestamp":"2020-11-16 19:00:01","event":"view_item","user_id":"user{i:06}","url":"/item/1","on_site_seconds":5,"viewed_percent":30}}"#
            );
            assert_eq!(agg.on_record(Some(value.as_bytes()), NOW, &mut out), Outcome::Counted);
            if i % 1_000 == 0 {
                state_after.push(agg.engine().stats().state_bytes);
            }
        }
        let per_value = (state_after[10] - state_after[1]) as f64 / 9_000.0;
        assert_eq!(per_value.round(), 48.0, "{per_value} bytes a distinct value");
    }
}
