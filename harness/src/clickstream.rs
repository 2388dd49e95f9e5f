//! How the harness runs the clickstream transform: its event-time rules, its producer (keyed by
//! `user_id`) and its dead-letter tally. The generic host knows none of this.

use std::sync::Arc;

use clickstream_aggregation::config::{default_of, RECORD_TIMESTAMP};
use clickstream_aggregation::dead_letter::REASON_HEADER;
use clickstream_aggregation::duration::parse_duration_ms;
use clickstream_aggregation::time::{format_timestamp_ms, TimestampFormat, MAX_TIMESTAMP_MS};
use transform_host::pipeline::{BrokerConfig, PipelineConfig, ProducerConfig, WindowReport, WindowState};
use transform_host::producer::{EventTime, Scalar, TimeField};

/// Event time as the transform reads it under its `TIMESTAMP_FORMAT`.
#[derive(Debug, Clone, Copy)]
pub struct TransformTime(pub TimestampFormat);

impl EventTime for TransformTime {
    /// A date-time string, or an epoch number (seconds with `epoch_s`, else milliseconds).
    fn read(&self, time: &Scalar<'_>) -> Option<i64> {
        match time {
            Scalar::Text(text) => TimestampFormat::Auto.parse_text(text),
            Scalar::Number(number) => {
                let format = match self.0 {
                    TimestampFormat::EpochS => TimestampFormat::EpochS,
                    _ => TimestampFormat::EpochMs,
                };
                format.parse_number(&number.to_string()).ok()
            }
            _ => None,
        }
    }

    /// In the form TIMESTAMP_FORMAT pins (seconds for `epoch_s`), and under `auto` in the form of the last
    /// time read (epoch milliseconds or `sql` text), so the transform reads it as a time.
    fn write(&self, at_ms: i64, as_number: bool) -> serde_json::Value {
        let text = || {
            let mut text = String::new();
            format_timestamp_ms(at_ms, &mut text);
            text
        };
        match self.0 {
            TimestampFormat::EpochS => serde_json::json!(at_ms.div_euclid(1_000)),
            TimestampFormat::EpochMs => serde_json::json!(at_ms),
            TimestampFormat::Auto if as_number => serde_json::json!(at_ms),
            TimestampFormat::Iso => serde_json::json!(format!("{}Z", text().replacen(' ', "T", 1))),
            TimestampFormat::Sql | TimestampFormat::Auto => serde_json::json!(text()),
        }
    }

    fn max_ms(&self) -> i64 {
        MAX_TIMESTAMP_MS
    }
}

/// Where a `TIMESTAMP_FIELD` setting puts event time.
pub fn time_field(setting: &str) -> TimeField {
    match setting.trim() {
        RECORD_TIMESTAMP => TimeField::RecordTimestamp,
        name => name.into(),
    }
}

/// The transform's summary line (`summary: ... open_panes=N ... backlog_windows=N ...`), logged every
/// minute of record time.
#[derive(Debug, Clone, Copy)]
pub struct SummaryLine;

impl WindowReport for SummaryLine {
    fn read(&self, line: &str) -> Option<WindowState> {
        let fields = line.strip_prefix("summary: ")?;
        let number = |name: &str| {
            fields.split_whitespace().find_map(|field| field.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        Some(WindowState { backlog: number("backlog_windows")?, open: number("open_panes")? })
    }
}

/// The seed's producer in front of the clickstream transform: keyed by `user_id`, event times read the
/// way the transform's `TIMESTAMP_FORMAT` reads them, windows read from its summary line, dead letters
/// tallied by reason.
pub fn pipeline_config(time_format: TimestampFormat) -> PipelineConfig {
    PipelineConfig {
        producer: ProducerConfig {
            key_field: Some("user_id".into()),
            event_time: Arc::new(TransformTime(time_format)),
            plausible_ahead_ms: default_max_event_ahead_ms(),
            ..ProducerConfig::default()
        },
        broker: BrokerConfig { tally_header: Some(REASON_HEADER.into()), ..BrokerConfig::default() },
        window_report: Some(Arc::new(SummaryLine)),
        ..PipelineConfig::default()
    }
}

/// The transform's default MAX_EVENT_AHEAD: event times further ahead of the producer's clock are refused
/// by it, so the producer does not believe them either.
fn default_max_event_ahead_ms() -> i64 {
    default_of("MAX_EVENT_AHEAD").and_then(parse_duration_ms).expect("a duration") as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickstream_aggregation::aggregator::{Aggregator, Output};
    use clickstream_aggregation::config::Config;
    use clickstream_aggregation::dead_letter::Reason;
    use transform_host::producer::{Producer, ProducerConfig, ProducerRecord, RecordTime};

    const AT_MS: i64 = 1_606_780_803_000; // 2020-12-01 00:00:03

    /// How the transform reads a heartbeat's time under `format`, as its JSON reader hands it over.
    fn read_back(format: TimestampFormat, time: &serde_json::Value) -> Option<i64> {
        match time {
            serde_json::Value::String(text) => format.parse_text(text),
            serde_json::Value::Number(number) if format.takes_number() => format.parse_number(&number.to_string()).ok(),
            _ => None,
        }
    }

    /// Regression (closing_heartbeat_in_the_events_form): under TIMESTAMP_FORMAT=epoch_ms, events whose
    /// last time was text got a text heartbeat, which the transform dead-letters as `wrong_type`.
    #[test]
    fn heartbeats_take_the_pinned_form_or_under_auto_the_last_one_read() {
        for format in TimestampFormat::ALL {
            for as_number in [false, true] {
                let time = TransformTime(format).write(AT_MS, as_number);
                assert_eq!(read_back(format, &time), Some(AT_MS), "{} {as_number}: {time}", format.name());
                let number = (format == TimestampFormat::Auto && as_number) || !format.takes_text();
                assert_eq!(time.is_number(), number, "{} {as_number}: {time}", format.name());
            }
        }
        assert_eq!(TransformTime(TimestampFormat::EpochS).write(AT_MS, false), serde_json::json!(1_606_780_803));
        assert_eq!(TransformTime(TimestampFormat::Iso).write(AT_MS, true), serde_json::json!("2020-12-01T00:00:03Z"));

        // Under auto, times the transform cannot read (text that is no time, null, none) leave the form alone.
        let config = ProducerConfig {
            key_field: None,
            time_field: "t".into(),
            record_time: RecordTime::Event,
            ..pipeline_config(TimestampFormat::Auto).producer
        };
        let mut producer = Producer::new(config, 1);
        for value in [r#"{"t":1606780800000}"#, r#"{"t":"soon"}"#, r#"{"t":null}"#, r#"{"x":1}"#] {
            let record = ProducerRecord { value: Some(value.into()), ..Default::default() };
            producer.send(record, &mut Vec::new());
        }
        assert_eq!(producer.heartbeat(AT_MS), format!(r#"{{"t":{AT_MS}}}"#).into_bytes());
    }

    struct Ignored;

    impl Output for Ignored {
        fn row(&mut self, _key: &[u8], _value: &[u8], _incomplete: bool, _early: bool) {}
        fn dead_letter(&mut self, _topic: &str, _reason: Reason, _detail: &str, _keep_value: bool) {}
        fn log(&mut self, _line: &str) {}
    }

    #[test]
    fn the_summary_line_reports_open_panes_and_the_backlog() {
        let env = [("REDPANDA_OUTPUT_TOPIC_0", "out")];
        let config = Config::from_env(|name| env.iter().find(|(key, _)| *key == name).map(|(_, v)| v.to_string()));
        let mut aggregator = Aggregator::new(config.unwrap());
        let event = r#"{"timestamp":"2020-12-01 00:00:03","user_id":"u","event":"e","url":"/"}"#;
        aggregator.on_record(Some(event.as_bytes()), AT_MS, &mut Ignored);
        let summary = aggregator.summary();
        assert_eq!(SummaryLine.read(&summary), Some(WindowState { backlog: 0, open: 1 }), "{summary}");
        assert_eq!(SummaryLine.read("clickstream-aggregation started: window=hop size=300000ms"), None);
    }

    #[test]
    fn timestamp_field_at_record_is_the_record_timestamp() {
        assert_eq!(time_field(" @record "), TimeField::RecordTimestamp);
        assert_eq!(time_field("created_at"), TimeField::Member("created_at".into()));
    }
}
