//! A brute-force model of the Flink job, written from the semantics note and sharing no code with the
//! transform: serde_json reads events, chrono reads and prints times, and every window is its own map,
//! updated event by event. Slow and obviously right is the point.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// The settings the model needs, in milliseconds.
#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    pub size_ms: i64,
    pub slide_ms: i64,
    pub delay_ms: i64,
    pub group_by: Vec<String>,
    pub timestamp_field: String,
    pub max_event_ahead_ms: i64,
}

/// One output row as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefRow {
    pub window_start: String,
    pub window_end: String,
    pub group: Vec<String>,
    pub count: u64,
    pub complete: bool,
}

impl ReferenceConfig {
    /// The settings from the transform's environment variables, with the module's documented defaults.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> ReferenceConfig {
        let text = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_string());
        let ms = |name: &str, default: &str| {
            clickstream_aggregation::duration::parse_duration_ms(&text(name, default)).expect("a valid duration") as i64
        };
        ReferenceConfig {
            size_ms: ms("WINDOW_SIZE", "5m"),
            slide_ms: ms("WINDOW_SLIDE", "10s"),
            delay_ms: ms("WATERMARK_DELAY", "1ms"),
            group_by: text("GROUP_BY", "user_id,event,url").split(',').map(String::from).collect(),
            timestamp_field: text("TIMESTAMP_FIELD", "timestamp"),
            max_event_ahead_ms: ms("MAX_EVENT_AHEAD", "1h"),
        }
    }
}

pub struct Reference {
    config: ReferenceConfig,
    /// Window start → group → count, for windows that hold events and have not fired.
    windows: BTreeMap<i64, BTreeMap<Vec<String>, u64>>,
    max_event_ms: Option<i64>,
    first_event_ms: Option<i64>,
    pub rows: Vec<RefRow>,
}

impl Reference {
    pub fn new(config: ReferenceConfig) -> Reference {
        Reference { config, windows: BTreeMap::new(), max_event_ms: None, first_event_ms: None, rows: Vec::new() }
    }

    /// Handles one record value; returns "counted", "heartbeat" or the dead-letter reason.
    pub fn on_record(&mut self, value: Option<&[u8]>, record_ms: i64) -> String {
        match self.classify(value, record_ms) {
            Ok((event_ms, None)) => {
                self.advance(event_ms);
                "heartbeat".into()
            }
            Ok((event_ms, Some(group))) => {
                if self.first_event_ms.is_none() {
                    self.first_event_ms = Some(event_ms);
                }
                let watermark = self.watermark();
                let open: Vec<i64> = self
                    .window_starts_of(event_ms)
                    .into_iter()
                    .filter(|&start| watermark.is_none_or(|wm| wm < start + self.config.size_ms - 1))
                    .collect();
                if open.is_empty() {
                    return "late".into();
                }
                for start in open {
                    *self.windows.entry(start).or_default().entry(group.clone()).or_default() += 1;
                }
                self.advance(event_ms);
                "counted".into()
            }
            Err(reason) => reason.into(),
        }
    }

    fn classify(&self, value: Option<&[u8]>, record_ms: i64) -> Result<(i64, Option<Vec<String>>), &'static str> {
        let bytes = value.ok_or("no_value")?;
        let text = std::str::from_utf8(bytes).map_err(|_| "invalid_utf8")?;
        let parsed: Value = match serde_json::from_str(text) {
            Ok(parsed) => parsed,
            Err(error) if error.to_string().contains("recursion limit") => return Err("too_deep"),
            Err(_) => return Err("not_json"),
        };
        if depth(&parsed) > 64 {
            return Err("too_deep");
        }
        let object = parsed.as_object().ok_or("not_object")?;
        let string_field = |name: &str| match object.get(name) {
            None => Err("missing_field"),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err("wrong_type"),
        };
        let timestamp = string_field(&self.config.timestamp_field)?;
        let event_ms = parse_time(&timestamp).ok_or("bad_timestamp")?;
        if event_ms > record_ms + self.config.max_event_ahead_ms {
            return Err("future");
        }
        if object.len() == 1 {
            return Ok((event_ms, None));
        }
        let mut group = Vec::new();
        for name in &self.config.group_by {
            let value = string_field(name)?;
            if value.len() > 1024 {
                return Err("field_too_long");
            }
            group.push(value);
        }
        Ok((event_ms, Some(group)))
    }

    /// Advances the watermark and fires, in start order, every window it has passed.
    fn advance(&mut self, event_ms: i64) {
        if self.first_event_ms.is_none() {
            self.first_event_ms = Some(event_ms);
        }
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |max| max.max(event_ms)));
        let watermark = self.watermark().expect("just set");
        let due: Vec<i64> =
            self.windows.keys().copied().filter(|start| watermark >= start + self.config.size_ms - 1).collect();
        for start in due {
            let groups = self.windows.remove(&start).expect("listed");
            let complete = start > self.first_event_ms.expect("set") + self.config.delay_ms;
            for (group, count) in groups {
                self.rows.push(RefRow {
                    window_start: format_time(start),
                    window_end: format_time(start + self.config.size_ms),
                    group,
                    count,
                    complete,
                });
            }
        }
    }

    fn watermark(&self) -> Option<i64> {
        self.max_event_ms.map(|max| max - self.config.delay_ms)
    }

    fn window_starts_of(&self, event_ms: i64) -> Vec<i64> {
        let slide = self.config.slide_ms;
        let last_start = event_ms - event_ms.rem_euclid(slide);
        (0..self.config.size_ms / slide).map(|i| last_start - i * slide).collect()
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Flink's zone-less TIMESTAMP(3) text, read with chrono.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let digits_after_dot = text.split_once('.').map(|(_, fraction)| fraction.len());
    if text.len() < 19
        || digits_after_dot.is_some_and(|n| !(1..=9).contains(&n))
        || !text[..4].bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|time| time.and_utc().timestamp_millis())
}

/// `YYYY-MM-DD HH:MM:SS`, with `.fff` only when the milliseconds are not zero.
pub fn format_time(ms: i64) -> String {
    let time = DateTime::from_timestamp_millis(ms).expect("in range").naive_utc();
    if ms.rem_euclid(1000) == 0 {
        time.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        time.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

/// Reads a row the transform wrote back into the model's terms.
pub fn row_from_json(value: &[u8], group_by: &[String], incomplete: bool) -> RefRow {
    let parsed: Value = serde_json::from_slice(value).expect("rows are JSON");
    let text = |name: &str| parsed[name].as_str().unwrap_or_else(|| panic!("row lacks {name}: {parsed}")).to_string();
    RefRow {
        window_start: text("window_start"),
        window_end: text("window_end"),
        group: group_by.iter().map(|name| text(name)).collect(),
        count: parsed["event_count"].as_u64().expect("event_count is an integer"),
        complete: !incomplete,
    }
}
