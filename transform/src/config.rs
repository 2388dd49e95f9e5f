//! Configuration from environment variables (`transform.yaml` `env:` or `rpk transform deploy --var`).

use std::fmt;

use crate::duration::{format_duration_ms, parse_duration_ms, parse_size_bytes};
use crate::engine::WindowSpec;

/// The string fields of a clickstream event, which are the ones that can be grouped by.
pub const GROUPABLE_FIELDS: [&str; 4] = ["user_id", "event", "site_id", "url"];

/// Refuse windows that split into more panes than this: each event is counted in that many windows.
pub const MAX_PANES_PER_WINDOW: u64 = 1_000;
/// Refuse windows, delays and tolerances longer than this.
pub const MAX_DURATION_MS: u64 = 7 * 86_400_000;

/// Every variable the module reads, with its default (`None`: derived, see [`Config::from_env`]).
pub const VARIABLES: [(&str, Option<&str>); 10] = [
    ("WINDOW_SIZE", Some("5m")),
    ("WINDOW_SLIDE", Some("10s")),
    ("WATERMARK_DELAY", Some("1ms")),
    ("GROUP_BY", Some("user_id,event,url")),
    ("TIMESTAMP_FIELD", Some("timestamp")),
    ("STATE_BUDGET", Some("768KiB")),
    ("MAX_EVENT_AHEAD", Some("1h")),
    ("INCOMPLETE_WINDOWS", Some("mark")),
    ("DEAD_LETTER_TOPIC", None),
    ("DEAD_LETTER_MAX_BYTES", Some("64KiB")),
];

/// What to do with the rows of a window that began before this VM's first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncompletePolicy {
    /// Emit with the header `window-incomplete: true`.
    Mark,
    /// Emit with the header, and `"incomplete":true` in the value.
    MarkValue,
    /// Do not emit (counted in the summary).
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub window: WindowSpec,
    pub group_by: Vec<String>,
    pub timestamp_field: String,
    pub state_budget_bytes: usize,
    /// Events more than this ahead of their record's timestamp are dead-lettered (`future`).
    pub max_event_ahead_ms: i64,
    pub incomplete: IncompletePolicy,
    /// The output topic for dead letters; `None` means count and skip them.
    pub dead_letter_topic: Option<String>,
    /// Dead letters with a larger value are written without it (the SDK would need two more copies).
    pub dead_letter_max_bytes: usize,
}

/// A configuration error: which variable, its value, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}={:?}: {}", self.variable, self.value, self.allowed)
    }
}

impl std::error::Error for ConfigError {}

impl IncompletePolicy {
    pub const ALL: [IncompletePolicy; 3] =
        [IncompletePolicy::Mark, IncompletePolicy::MarkValue, IncompletePolicy::Drop];

    /// The setting's value for this policy.
    pub fn name(self) -> &'static str {
        match self {
            IncompletePolicy::Mark => "mark",
            IncompletePolicy::MarkValue => "mark-value",
            IncompletePolicy::Drop => "drop",
        }
    }
}

impl Config {
    /// Reads the configuration through `lookup` (the process environment in the module).
    /// The dead-letter topic defaults to the second output topic, `REDPANDA_OUTPUT_TOPIC_1`, if there is one;
    /// `none` turns dead-lettering off; any other value must name one of the output topics.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let read = |variable: &'static str| -> (String, &'static str) {
            let default = VARIABLES.iter().find(|(name, _)| *name == variable).and_then(|(_, default)| *default);
            (lookup(variable).unwrap_or_else(|| default.unwrap_or_default().to_string()), variable)
        };
        let error =
            |(value, variable): (String, &'static str), allowed: String| ConfigError { variable, value, allowed };

        let duration = |setting: (String, &'static str), minimum: u64| -> Result<u64, ConfigError> {
            match parse_duration_ms(&setting.0) {
                Some(ms) if (minimum..=MAX_DURATION_MS).contains(&ms) => Ok(ms),
                _ => Err(error(
                    setting,
                    format!(
                        "expected a duration from {} to {} written as a whole number and a unit (ms, s, m, h, d), like 300ms, 10s, 5m or 1h",
                        format_duration_ms(minimum),
                        format_duration_ms(MAX_DURATION_MS)
                    ),
                )),
            }
        };
        let size_setting = read("WINDOW_SIZE");
        let size = duration(size_setting.clone(), 1)?;
        let slide = duration(read("WINDOW_SLIDE"), 1)?;
        let delay = duration(read("WATERMARK_DELAY"), 0)?;
        if size % slide != 0 || size / slide > MAX_PANES_PER_WINDOW {
            return Err(error(
                size_setting,
                format!(
                    "the window size must be a whole multiple of WINDOW_SLIDE ({}), at most {MAX_PANES_PER_WINDOW} times it; equal makes tumbling windows",
                    format_duration_ms(slide)
                ),
            ));
        }
        let window = WindowSpec::new(size as i64, slide as i64, delay as i64).expect("validated above");

        let timestamp_setting = read("TIMESTAMP_FIELD");
        let timestamp_field = timestamp_setting.0.trim().to_string();
        if timestamp_field.is_empty() || timestamp_field.contains(',') {
            return Err(error(timestamp_setting, "expected the name of the event's timestamp field".into()));
        }

        let group_setting = read("GROUP_BY");
        let group_by: Vec<String> = group_setting.0.split(',').map(|name| name.trim().to_string()).collect();
        let unknown = group_by.iter().find(|name| !GROUPABLE_FIELDS.contains(&name.as_str()));
        let repeated = group_by.iter().enumerate().any(|(i, name)| group_by[..i].contains(name));
        if unknown.is_some() || repeated {
            let problem = match unknown {
                Some(name) if name.is_empty() => "an empty field name".to_string(),
                Some(name) => format!("unknown field {name:?}"),
                None => "a repeated field".to_string(),
            };
            return Err(error(
                group_setting,
                format!(
                    "{problem}; expected a comma-separated list of distinct fields from: {}",
                    GROUPABLE_FIELDS.join(", ")
                ),
            ));
        }

        let budget_setting = read("STATE_BUDGET");
        let state_budget_bytes = match parse_size_bytes(&budget_setting.0) {
            Some(bytes) if (16 << 10..=1 << 32).contains(&bytes) => bytes as usize,
            _ => {
                return Err(error(
                    budget_setting,
                    "expected a size from 16KiB to 4096MiB, like 768KiB or 1MiB (B, KiB or MiB)".into(),
                ))
            }
        };

        let max_event_ahead_ms = duration(read("MAX_EVENT_AHEAD"), 0)? as i64;

        let copy_setting = read("DEAD_LETTER_MAX_BYTES");
        let dead_letter_max_bytes = match parse_size_bytes(&copy_setting.0) {
            Some(bytes) if bytes <= 128 << 20 => bytes as usize,
            _ => {
                return Err(error(copy_setting, "expected a size from 0 to 128MiB, like 64KiB (B, KiB or MiB)".into()))
            }
        };

        let incomplete_setting = read("INCOMPLETE_WINDOWS");
        let incomplete = match IncompletePolicy::ALL.iter().find(|policy| policy.name() == incomplete_setting.0.trim())
        {
            Some(policy) => *policy,
            None => return Err(error(incomplete_setting, "expected one of: mark, mark-value, drop".into())),
        };

        let outputs: Vec<String> = (0..8).map_while(|i| lookup(&format!("REDPANDA_OUTPUT_TOPIC_{i}"))).collect();
        let dead_letter_topic = match lookup("DEAD_LETTER_TOPIC") {
            None => outputs.get(1).cloned(),
            Some(value) if value.trim() == "none" => None,
            Some(value) if outputs.iter().skip(1).any(|topic| *topic == value.trim()) => Some(value.trim().to_string()),
            Some(value) => {
                return Err(error(
                    (value, "DEAD_LETTER_TOPIC"),
                    format!(
                        "expected \"none\" or one of the transform's output topics other than the first ({})",
                        if outputs.len() > 1 { outputs[1..].join(", ") } else { "there are none".to_string() }
                    ),
                ))
            }
        };

        Ok(Config {
            window,
            group_by,
            timestamp_field,
            state_budget_bytes,
            max_event_ahead_ms,
            incomplete,
            dead_letter_topic,
            dead_letter_max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn with_outputs(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars =
            vec![("REDPANDA_OUTPUT_TOPIC_0", "clickstream_aggregated"), ("REDPANDA_OUTPUT_TOPIC_1", "clickstream_dlq")];
        vars.extend_from_slice(extra);
        config(&vars)
    }

    #[test]
    fn defaults_match_the_flink_job() {
        let config = with_outputs(&[]).unwrap();
        assert_eq!(config.window, WindowSpec::new(300_000, 10_000, 1).unwrap());
        assert_eq!(config.group_by, ["user_id", "event", "url"]);
        assert_eq!(config.timestamp_field, "timestamp");
        assert_eq!(config.state_budget_bytes, 768 * 1024);
        assert_eq!(config.max_event_ahead_ms, 3_600_000);
        assert_eq!(config.incomplete, IncompletePolicy::Mark);
        assert_eq!(config.dead_letter_topic.as_deref(), Some("clickstream_dlq"));
        assert_eq!(config.dead_letter_max_bytes, 64 * 1024);
    }

    #[test]
    fn accepts_tumbling_windows_and_custom_groups() {
        let config =
            config(&[("WINDOW_SIZE", "1m"), ("WINDOW_SLIDE", "60s"), ("GROUP_BY", " site_id , event ")]).unwrap();
        assert_eq!(config.window, WindowSpec::new(60_000, 60_000, 1).unwrap());
        assert_eq!(config.group_by, ["site_id", "event"]);
        assert_eq!(config.dead_letter_topic, None);
    }

    fn message(vars: &[(&str, &str)]) -> String {
        with_outputs(vars).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_setting_names_the_variable_its_value_and_what_is_allowed() {
        let cases: [(&[(&str, &str)], &str); 14] = [
            (&[("WINDOW_SIZE", "5x")], "WINDOW_SIZE=\"5x\": expected a duration from 1ms to 7d"),
            (&[("WINDOW_SIZE", "0s")], "WINDOW_SIZE=\"0s\": expected a duration"),
            (&[("WINDOW_SIZE", "8d")], "WINDOW_SIZE=\"8d\": expected a duration"),
            (&[("WINDOW_SLIDE", "10")], "WINDOW_SLIDE=\"10\": expected a duration"),
            (&[("WINDOW_SLIDE", "7s")], "WINDOW_SIZE=\"5m\": the window size must be a whole multiple of WINDOW_SLIDE (7s)"),
            (&[("WINDOW_SLIDE", "10ms")], "at most 1000 times it"),
            (&[("WATERMARK_DELAY", "-1ms")], "WATERMARK_DELAY=\"-1ms\": expected a duration from 0ms"),
            (&[("WATERMARK_DELAY", "99999999999999999999h")], "WATERMARK_DELAY="),
            (&[("GROUP_BY", "user_id,price")], "GROUP_BY=\"user_id,price\": unknown field \"price\"; expected a comma-separated list of distinct fields from: user_id, event, site_id, url"),
            (&[("GROUP_BY", "user_id,,url")], "an empty field name"),
            (&[("GROUP_BY", "url,url")], "a repeated field"),
            (&[("STATE_BUDGET", "2MB")], "STATE_BUDGET=\"2MB\": expected a size"),
            (&[("INCOMPLETE_WINDOWS", "keep")], "INCOMPLETE_WINDOWS=\"keep\": expected one of: mark, mark-value, drop"),
            (&[("DEAD_LETTER_TOPIC", "errors")], "DEAD_LETTER_TOPIC=\"errors\": expected \"none\" or one of the transform's output topics other than the first (clickstream_dlq)"),
        ];
        for (vars, expected) in cases {
            let message = message(vars);
            assert!(message.starts_with("invalid configuration: "), "{message}");
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
        assert!(message(&[("TIMESTAMP_FIELD", " ")]).contains("TIMESTAMP_FIELD"));
        assert!(message(&[("MAX_EVENT_AHEAD", "soon")]).contains("MAX_EVENT_AHEAD"));
        assert!(message(&[("STATE_BUDGET", "1KiB")]).contains("from 16KiB"));
        assert!(
            message(&[("DEAD_LETTER_MAX_BYTES", "1GiB")]).contains("DEAD_LETTER_MAX_BYTES=\"1GiB\": expected a size")
        );
        assert!(message(&[("DEAD_LETTER_TOPIC", "clickstream_aggregated")]).contains("other than the first"));
    }

    #[test]
    fn the_dead_letter_topic_can_be_chosen_or_turned_off() {
        assert_eq!(with_outputs(&[("DEAD_LETTER_TOPIC", "none")]).unwrap().dead_letter_topic, None);
        assert_eq!(
            with_outputs(&[("DEAD_LETTER_TOPIC", "clickstream_dlq")]).unwrap().dead_letter_topic.as_deref(),
            Some("clickstream_dlq")
        );
    }

    /// Regression: naming a dead-letter topic when there were no output topics indexed past the end.
    #[test]
    fn a_dead_letter_topic_without_output_topics_is_an_error_not_a_panic() {
        let no_outputs = config(&[("DEAD_LETTER_TOPIC", "x")]).unwrap_err();
        assert!(no_outputs.to_string().contains("there are none"), "{no_outputs}");
    }
}
