//! How the harness runs the clickstream transform: its event-time rules, its producer (keyed by
//! `user_id`) and its dead-letter tally. The generic host knows none of this.

use std::sync::Arc;

use clickstream_aggregation::aggregator::REASON_HEADER;
use clickstream_aggregation::time::{format_timestamp_ms, TimestampFormat, MAX_TIMESTAMP_MS};
use transform_host::pipeline::PipelineConfig;
use transform_host::producer::EventTime;

/// Event time as the transform reads it under its `TIMESTAMP_FORMAT`.
#[derive(Debug, Clone, Copy)]
pub struct TransformTime(pub TimestampFormat);

impl EventTime for TransformTime {
    /// A date-time string, or an epoch number (seconds with `epoch_s`, else milliseconds).
    fn read(&self, time: &serde_json::Value) -> Option<i64> {
        match time {
            serde_json::Value::String(text) => TimestampFormat::Auto.parse_text(text),
            serde_json::Value::Number(number) => {
                let format = match self.0 {
                    TimestampFormat::EpochS => TimestampFormat::EpochS,
                    _ => TimestampFormat::EpochMs,
                };
                format.parse_number(&number.to_string())
            }
            _ => None,
        }
    }

    /// In the form the events used (to the second for epoch seconds), so a transform pinned to one form
    /// reads it.
    fn write(&self, at_ms: i64, as_number: bool) -> serde_json::Value {
        match (as_number, self.0) {
            (true, TimestampFormat::EpochS) => serde_json::json!(at_ms.div_euclid(1_000)),
            (true, _) => serde_json::json!(at_ms),
            (false, format) => {
                let mut text = String::new();
                format_timestamp_ms(at_ms, &mut text);
                if format == TimestampFormat::Iso {
                    text = format!("{}Z", text.replacen(' ', "T", 1));
                }
                serde_json::json!(text)
            }
        }
    }

    fn max_ms(&self) -> i64 {
        MAX_TIMESTAMP_MS
    }
}

/// The seed's producer in front of the clickstream transform: keyed by `user_id`, event times read the
/// way the transform's `TIMESTAMP_FORMAT` reads them, dead letters tallied by reason.
pub fn pipeline_config(time_format: TimestampFormat) -> PipelineConfig {
    PipelineConfig {
        key_field: Some("user_id".into()),
        event_time: Arc::new(TransformTime(time_format)),
        tally_header: Some(REASON_HEADER.into()),
        ..PipelineConfig::default()
    }
}
