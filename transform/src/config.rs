//! Configuration from environment variables (`transform.yaml` `env:` or `rpk transform deploy --var`).

use std::fmt;

use crate::aggregate::{Function, Quantile};
use crate::duration::{format_duration_ms, parse_duration_ms, parse_size_bytes};
use crate::engine::{Engine, WindowKind, WindowSpec};
use crate::event::MAX_FIELD_BYTES;
use crate::time::TimestampFormat;
use crate::top_n::TopNSpec;

/// At most this many group-by fields.
pub const MAX_GROUP_FIELDS: usize = 8;
/// At most this many aggregates.
pub const MAX_AGGREGATES: usize = 16;
/// Names the output row uses itself, so no group-by field or aggregate may take them.
pub const RESERVED_NAMES: [&str; 3] = ["window_start", "window_end", "incomplete"];
/// `TIMESTAMP_FIELD` naming the record's own Kafka timestamp instead of a field.
pub const RECORD_TIMESTAMP: &str = "@record";
/// The largest state budget: the module's 32-bit address space less its code, stack and buffers.
pub const MAX_STATE_BUDGET_BYTES: u64 = 4095 << 20;

/// Refuse windows that split into more panes than this (a day by the minute): each event is counted in
/// that many windows.
pub const MAX_PANES_PER_WINDOW: u64 = 1_440;
/// Refuse windows, delays and tolerances longer than this.
pub const MAX_DURATION_MS: u64 = 7 * 86_400_000;

/// The default of the variable `name`, `None` for one whose default is derived or that is no variable.
pub fn default_of(name: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|(variable, _)| *variable == name).and_then(|(_, default)| *default)
}

/// Every variable the module reads, with its default (`None`: derived, see [`Config::from_env`]).
pub const VARIABLES: [(&str, Option<&str>); 23] = [
    ("WINDOW", Some("hop")),
    ("WINDOW_SIZE", Some("5m")),
    ("WINDOW_SLIDE", None),
    ("WINDOW_STEP", None),
    ("SESSION_GAP", None),
    ("EMIT_EARLY", None),
    ("WATERMARK_DELAY", Some("1ms")),
    ("GROUP_BY", Some("user_id,event,url")),
    ("AGGREGATES", Some("event_count=count")),
    ("TIMESTAMP_FIELD", Some("timestamp")),
    ("TIMESTAMP_FORMAT", Some("auto")),
    ("RESTART_MARGIN", Some("10s")),
    ("STATE_BUDGET", Some("768KiB")),
    ("MAX_EVENT_AHEAD", Some("1h")),
    ("INCOMPLETE_WINDOWS", Some("mark")),
    ("DEAD_LETTER_TOPIC", None),
    ("DEAD_LETTER_MAX_BYTES", Some("64KiB")),
    ("ROW_BYTES_PER_RECORD", Some("512KiB")),
    ("TOP_N", None),
    ("TOP_N_BY", None),
    ("TOP_N_ORDER", None),
    ("TOP_N_PARTITION_BY", None),
    ("TOP_N_RANK_FIELD", None),
];

/// The largest `TOP_N`.
pub const MAX_TOP_N: usize = 10_000;

/// The range of `ROW_BYTES_PER_RECORD`: at least the largest row (eight group fields of 1 KiB, escaped),
/// at most what a record writes in well under its CPU limit.
pub const ROW_BYTES_PER_RECORD_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(64 << 20);

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

/// One output aggregate: `NAME=FUNCTION` or `NAME=FUNCTION(FIELD)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub name: String,
    pub function: Function,
    /// The field read, for every function but `count`.
    pub field: Option<String>,
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.field, self.function) {
            (Some(field), Function::Percentile(q)) => write!(f, "{}=percentile({field}, {q})", self.name),
            (Some(field), _) => write!(f, "{}={}({field})", self.name, self.function.name()),
            (None, _) => write!(f, "{}={}", self.name, self.function.name()),
        }
    }
}

/// Window Top-N: which rows of each window are written, and where their rank goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopN {
    pub spec: TopNSpec,
    /// The output field holding each row's rank, if any.
    pub rank_field: Option<String>,
}

/// Where an event's time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    Field {
        name: String,
        format: TimestampFormat,
    },
    /// The record's Kafka timestamp (`TIMESTAMP_FIELD=@record`).
    RecordTimestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub window: WindowSpec,
    pub group_by: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub event_time: EventTime,
    /// Windows beginning up to this long after a (re)start's first event plus the watermark delay are
    /// marked incomplete too: events of other partitions sharing the VM may be lost that far ahead.
    pub restart_margin_ms: i64,
    /// `EMIT_EARLY`: write open windows' changed rows again this often (watermark time).
    pub early_every_ms: Option<i64>,
    pub state_budget_bytes: usize,
    /// Events more than this ahead of their record's timestamp are dead-lettered (`future`).
    pub max_event_ahead_ms: i64,
    pub incomplete: IncompletePolicy,
    /// The output topic for dead letters; `None` means count and skip them.
    pub dead_letter_topic: Option<String>,
    /// Dead letters with a larger value are written without it (the SDK would need two more copies).
    pub dead_letter_max_bytes: usize,
    /// Row bytes one record may write, as the output topic stores them; the rest waits for the next records.
    pub row_bytes_per_record: usize,
    /// `None`: every group's row of every window.
    pub top_n: Option<TopN>,
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
    /// The aggregate functions, in output order.
    pub fn functions(&self) -> Vec<Function> {
        self.aggregates.iter().map(|aggregate| aggregate.function).collect()
    }

    /// `WINDOW` and its sizes. A hop's slide defaults to 10 s; a tumble's is its size (set, it must equal
    /// it); a cumulation grows by `WINDOW_STEP`. Each setting that the kind does not read must be unset.
    fn window(
        lookup: &impl Fn(&str) -> Option<String>,
        duration: impl Fn((String, &'static str), u64) -> Result<u64, ConfigError>,
        delay: u64,
    ) -> Result<WindowSpec, ConfigError> {
        let set = |variable: &'static str| lookup(variable).map(|value| (value, variable));
        let error =
            |(value, variable): (String, &'static str), allowed: String| ConfigError { variable, value, allowed };
        let or_default =
            |variable| set(variable).unwrap_or_else(|| (default_of(variable).unwrap_or_default().into(), variable));
        let kind = or_default("WINDOW");
        let size_setting = or_default("WINDOW_SIZE");
        let size = duration(size_setting.clone(), 1)?;
        // A setting the kind does not read must be unset.
        let refuse = |variable: &'static str, why: &str| match set(variable) {
            Some(setting) => Err(error(setting, format!("WINDOW={} {why}; leave {variable} unset", kind.0.trim()))),
            None => Ok(()),
        };
        if kind.0.trim() != "session" {
            refuse("SESSION_GAP", "has no sessions")?;
        }
        let (pane_setting, pane, cumulate) = match kind.0.trim() {
            "session" => {
                refuse("WINDOW_SLIDE", "ends a session after SESSION_GAP")?;
                refuse("WINDOW_STEP", "ends a session after SESSION_GAP")?;
                let gap = set("SESSION_GAP").ok_or_else(|| {
                    error((String::new(), "SESSION_GAP"), "WINDOW=session needs a gap: a duration".into())
                })?;
                let gap = duration(gap, 1)?;
                return Ok(WindowSpec::session(gap as i64, delay as i64).expect("validated above"));
            }
            "hop" => {
                refuse("WINDOW_STEP", "slides by WINDOW_SLIDE")?;
                let slide = set("WINDOW_SLIDE").unwrap_or_else(|| ("10s".to_string(), "WINDOW_SLIDE"));
                (slide.1, duration(slide, 1)?, false)
            }
            "tumble" => {
                refuse("WINDOW_STEP", "takes WINDOW_SIZE only")?;
                if let Some(slide) = set("WINDOW_SLIDE") {
                    if duration(slide.clone(), 1)? != size {
                        return Err(error(
                            slide,
                            "WINDOW=tumble takes WINDOW_SIZE only: leave WINDOW_SLIDE unset or equal to it".into(),
                        ));
                    }
                }
                ("WINDOW_SIZE", size, false)
            }
            "cumulate" => {
                refuse("WINDOW_SLIDE", "grows by WINDOW_STEP")?;
                let step = set("WINDOW_STEP").ok_or_else(|| {
                    error(
                        (String::new(), "WINDOW_STEP"),
                        "WINDOW=cumulate needs a step: a duration that divides WINDOW_SIZE".into(),
                    )
                })?;
                (step.1, duration(step, 1)?, true)
            }
            _ => return Err(error(kind, "expected hop, tumble, cumulate or session".into())),
        };
        if size % pane != 0 || size / pane > MAX_PANES_PER_WINDOW {
            return Err(error(
                size_setting,
                format!(
                    "the window size must be a whole multiple of {pane_setting} ({}), at most {MAX_PANES_PER_WINDOW} times it",
                    format_duration_ms(pane)
                ),
            ));
        }
        let spec = if cumulate { WindowSpec::cumulate } else { WindowSpec::new };
        Ok(spec(size as i64, pane as i64, delay as i64).expect("validated above"))
    }

    /// Reads the configuration through `lookup` (the process environment in the module).
    /// The dead-letter topic defaults to the second output topic, `REDPANDA_OUTPUT_TOPIC_1`, if there is one;
    /// `none` turns dead-lettering off; any other value must name one of the output topics.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let read = |variable: &'static str| -> (String, &'static str) {
            (lookup(variable).unwrap_or_else(|| default_of(variable).unwrap_or_default().to_string()), variable)
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
        let delay = duration(read("WATERMARK_DELAY"), 0)?;
        let window = Self::window(&lookup, duration, delay)?;

        let timestamp_setting = read("TIMESTAMP_FIELD");
        let timestamp_field = timestamp_setting.0.trim().to_string();
        if timestamp_field.is_empty() || timestamp_field.contains(',') {
            return Err(error(
                timestamp_setting,
                format!("expected the name of the event's timestamp field, or {RECORD_TIMESTAMP} for the record's own timestamp"),
            ));
        }
        let format_setting = read("TIMESTAMP_FORMAT");
        let Some(format) = TimestampFormat::ALL.into_iter().find(|format| format.name() == format_setting.0.trim())
        else {
            let names: Vec<&str> = TimestampFormat::ALL.iter().map(|format| format.name()).collect();
            return Err(error(format_setting, format!("expected one of: {}", names.join(", "))));
        };
        let event_time = if timestamp_field == RECORD_TIMESTAMP {
            EventTime::RecordTimestamp
        } else {
            EventTime::Field { name: timestamp_field, format }
        };

        let group_setting = read("GROUP_BY");
        let group_by: Vec<String> = group_setting.0.split(',').map(|name| name.trim().to_string()).collect();
        let problem = if group_by.len() > MAX_GROUP_FIELDS {
            Some(format!("{} fields", group_by.len()))
        } else if group_by.iter().any(String::is_empty) {
            Some("an empty field name".to_string())
        } else if let Some(name) = group_by.iter().find(|name| RESERVED_NAMES.contains(&name.as_str())) {
            Some(format!("{name:?} is a name the output row uses itself"))
        } else {
            group_by
                .iter()
                .enumerate()
                .find(|(i, name)| group_by[..*i].contains(name))
                .map(|(_, name)| format!("{name:?} is repeated"))
        };
        if let Some(problem) = problem {
            return Err(error(
                group_setting,
                format!(
                    "{problem}; expected 1 to {MAX_GROUP_FIELDS} distinct top-level field names, comma-separated, other than {}",
                    RESERVED_NAMES.join(", ")
                ),
            ));
        }

        let aggregates_setting = read("AGGREGATES");
        let aggregates =
            parse_aggregates(&aggregates_setting.0, &group_by).map_err(|problem| error(aggregates_setting, problem))?;

        let restart_margin_ms = duration(read("RESTART_MARGIN"), 0)? as i64;

        let top_n = parse_top_n(&lookup, &group_by, &aggregates)?;
        if let (Some(_), WindowKind::Session) = (&top_n, window.kind()) {
            return Err(ConfigError {
                variable: "TOP_N",
                value: lookup("TOP_N").unwrap_or_default(),
                allowed: "Window Top-N ranks the rows of one window, and each session is a window of one group: leave TOP_N unset with WINDOW=session".into(),
            });
        }
        let early_every_ms = match lookup("EMIT_EARLY") {
            None => None,
            Some(_) if window.kind() == WindowKind::Session => {
                return Err(ConfigError {
                    variable: "EMIT_EARLY",
                    value: lookup("EMIT_EARLY").unwrap_or_default(),
                    allowed: "a session's end moves until it closes, so it has no early rows: leave EMIT_EARLY unset with WINDOW=session".into(),
                });
            }
            Some(_) if top_n.is_some() => {
                return Err(ConfigError {
                    variable: "EMIT_EARLY",
                    value: lookup("EMIT_EARLY").unwrap_or_default(),
                    allowed: "early rows of a ranking would need taking rows back: leave EMIT_EARLY unset with TOP_N"
                        .into(),
                });
            }
            Some(value) => match duration((value.clone(), "EMIT_EARLY"), 1)? as i64 {
                // Longer, notes of groups whose windows all closed would wait for a pass that writes nothing.
                every if every >= window.size_ms() => {
                    return Err(ConfigError {
                        variable: "EMIT_EARLY",
                        value,
                        allowed: format!(
                            "early rows come while windows are open: a duration shorter than WINDOW_SIZE ({})",
                            format_duration_ms(window.size_ms() as u64)
                        ),
                    });
                }
                every => Some(every),
            },
        };

        let budget_setting = read("STATE_BUDGET");
        // Checked against the module's 32-bit address space, so a native build refuses the same values.
        let state_budget_bytes = match parse_size_bytes(&budget_setting.0) {
            Some(bytes) if (16 << 10..=MAX_STATE_BUDGET_BYTES).contains(&bytes) => bytes as usize,
            _ => {
                return Err(error(
                    budget_setting.clone(),
                    "expected a size from 16KiB to 4095MiB (what a 32-bit module can address), like 768KiB or 1MiB (B, KiB or MiB)".into(),
                ))
            }
        };

        let functions: Vec<Function> = aggregates.iter().map(|aggregate| aggregate.function).collect();
        let candidate =
            top_n.as_ref().map_or(0, |top_n| Engine::candidate_bytes(top_n.spec.partition_by.len(), &functions));
        let minimum = Engine::state_for_first_event(group_by.len(), &functions, MAX_FIELD_BYTES) + candidate;
        if state_budget_bytes < minimum {
            return Err(error(
                budget_setting,
                format!(
                    "one group of {} GROUP_BY fields with these AGGREGATES{} can need {minimum} bytes ({} bytes of cells allocated with the first event, the group and its values at {MAX_FIELD_BYTES} bytes each{}); expected at least {}KiB",
                    group_by.len(),
                    if top_n.is_some() { " and TOP_N" } else { "" },
                    Engine::fixed_state_bytes(&functions),
                    if top_n.is_some() { format!(", {candidate} bytes for its Top-N candidate") } else { String::new() },
                    minimum.div_ceil(1024)
                ),
            ));
        }

        let max_event_ahead_ms = duration(read("MAX_EVENT_AHEAD"), 0)? as i64;

        let copy_setting = read("DEAD_LETTER_MAX_BYTES");
        let dead_letter_max_bytes = match parse_size_bytes(&copy_setting.0) {
            Some(bytes) if bytes <= 128 << 20 => bytes as usize,
            _ => {
                return Err(error(copy_setting, "expected a size from 0 to 128MiB, like 64KiB (B, KiB or MiB)".into()))
            }
        };

        let share_setting = read("ROW_BYTES_PER_RECORD");
        let row_bytes_per_record = match parse_size_bytes(&share_setting.0) {
            Some(bytes) if ROW_BYTES_PER_RECORD_RANGE.contains(&(bytes as usize)) => bytes as usize,
            _ => {
                return Err(error(
                    share_setting,
                    "expected a size from 64KiB to 64MiB, at most half the output topic's max.message.bytes (B, KiB or MiB)"
                        .into(),
                ))
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
            aggregates,
            event_time,
            restart_margin_ms,
            early_every_ms,
            state_budget_bytes,
            max_event_ahead_ms,
            incomplete,
            dead_letter_topic,
            dead_letter_max_bytes,
            row_bytes_per_record,
            top_n,
        })
    }
}

/// Reads `TOP_N` and its companions; `None` when `TOP_N` is unset (the companions then must be too).
fn parse_top_n(
    lookup: &impl Fn(&str) -> Option<String>,
    group_by: &[String],
    aggregates: &[Aggregate],
) -> Result<Option<TopN>, ConfigError> {
    let error = |variable: &'static str, value: &str, allowed: String| ConfigError {
        variable,
        value: value.to_string(),
        allowed,
    };
    let Some(n_text) = lookup("TOP_N") else {
        for variable in ["TOP_N_BY", "TOP_N_ORDER", "TOP_N_PARTITION_BY", "TOP_N_RANK_FIELD"] {
            if let Some(value) = lookup(variable) {
                return Err(error(
                    variable,
                    &value,
                    "it applies to Window Top-N only: set TOP_N=N too, or remove it".into(),
                ));
            }
        }
        return Ok(None);
    };
    let n = match n_text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_TOP_N).contains(&n) => n,
        _ => return Err(error("TOP_N", &n_text, format!("expected a whole number of rows from 1 to {MAX_TOP_N}"))),
    };
    let names: Vec<&str> = aggregates.iter().map(|aggregate| aggregate.name.as_str()).collect();
    let by = match lookup("TOP_N_BY") {
        None => 0,
        Some(name) => names.iter().position(|known| *known == name.trim()).ok_or_else(|| {
            error("TOP_N_BY", &name, format!("expected the name of one of the AGGREGATES: {}", names.join(", ")))
        })?,
    };
    let order = lookup("TOP_N_ORDER").unwrap_or_else(|| "desc".to_string());
    let descending = match order.trim() {
        "desc" => true,
        "asc" => false,
        _ => return Err(error("TOP_N_ORDER", &order, "expected desc (largest first) or asc".into())),
    };
    let mut partition_by = Vec::new();
    if let Some(fields) = lookup("TOP_N_PARTITION_BY") {
        for name in fields.split(',').map(str::trim) {
            let field = group_by.iter().position(|known| known == name);
            match field {
                Some(field) if !partition_by.contains(&field) => partition_by.push(field),
                _ => {
                    return Err(error(
                        "TOP_N_PARTITION_BY",
                        &fields,
                        format!(
                            "expected distinct GROUP_BY fields ({}), comma-separated; {name:?} is {}",
                            group_by.join(", "),
                            if field.is_some() { "repeated" } else { "not one" }
                        ),
                    ))
                }
            }
        }
    }
    let rank_field = match lookup("TOP_N_RANK_FIELD") {
        None => None,
        Some(name) => {
            let trimmed = name.trim();
            let taken = RESERVED_NAMES.contains(&trimmed)
                || group_by.iter().any(|field| field == trimmed)
                || names.contains(&trimmed);
            if trimmed.is_empty() || taken {
                return Err(error(
                    "TOP_N_RANK_FIELD",
                    &name,
                    "expected a field name no GROUP_BY field, aggregate or window bound uses".into(),
                ));
            }
            Some(trimmed.to_string())
        }
    };
    Ok(Some(TopN { spec: TopNSpec { n, by, descending, partition_by }, rank_field }))
}

/// Parses `AGGREGATES`: `NAME=FUNCTION` or `NAME=FUNCTION(FIELD)`, comma-separated, in output order.
/// Function names are case-insensitive; names and fields are taken exactly (trimmed).
pub fn parse_aggregates(text: &str, group_by: &[String]) -> Result<Vec<Aggregate>, String> {
    const EXPECTED: &str = "expected NAME=FUNCTION, comma-separated, with FUNCTION one of count (or count(1), count(*)), count(FIELD), count_distinct(FIELD), approx_count_distinct(FIELD), sum(FIELD), min(FIELD), max(FIELD), avg(FIELD), percentile(FIELD, Q), median(FIELD)";
    // Commas inside parentheses (`percentile(f, 0.95)`) do not separate aggregates.
    let mut items: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    if items.len() > MAX_AGGREGATES {
        return Err(format!("{} aggregates, at most {MAX_AGGREGATES} are allowed", items.len()));
    }
    let mut aggregates: Vec<Aggregate> = Vec::with_capacity(items.len());
    for item in items {
        let Some((name, function)) = item.split_once('=') else {
            return Err(format!("{:?} has no '='; {EXPECTED}", item.trim()));
        };
        let (name, function) = (name.trim(), function.trim());
        if name.is_empty() {
            return Err(format!("{:?} has an empty name; {EXPECTED}", item.trim()));
        }
        if RESERVED_NAMES.contains(&name) || group_by.iter().any(|field| field == name) {
            return Err(format!(
                "the name {name:?} collides with {} in the output row; choose another",
                if group_by.iter().any(|field| field == name) { "a GROUP_BY field" } else { "a field" }
            ));
        }
        if aggregates.iter().any(|aggregate| aggregate.name == name) {
            return Err(format!("the name {name:?} is used twice"));
        }
        let function_name_only =
            function.split_once('(').map_or(function, |(name, _)| name).trim().to_ascii_lowercase();
        // percentile(FIELD, Q): the quantile, then the field as for the others.
        let (function, quantile) = match (function_name_only.as_str(), function.rsplit_once(',')) {
            ("percentile", Some((head, q))) => {
                let Some(q) = q.trim().strip_suffix(')').map(str::trim) else {
                    return Err(format!("{function:?} has unbalanced or extra parentheses; {EXPECTED}"));
                };
                match Quantile::parse(q) {
                    Some(quantile) => (format!("{head})"), Some(quantile)),
                    None => {
                        return Err(format!(
                            "{function:?}: the quantile {q:?} is not a number from 0 to 1 with at most six decimals"
                        ))
                    }
                }
            }
            ("percentile", None) => {
                return Err(format!("{function:?} needs a field and a quantile: percentile(FIELD, Q)"))
            }
            _ => (function.to_string(), None),
        };
        let function = function.as_str();
        if function.contains(',') {
            return Err(format!("{function:?} names more than one field; {EXPECTED}"));
        }
        let (function_name, field) = match function.split_once('(') {
            None => (function, None),
            Some((function_name, rest)) => match rest.strip_suffix(')') {
                Some(field) if !field.contains(['(', ')']) => (function_name.trim(), Some(field.trim())),
                _ => return Err(format!("{function:?} has unbalanced or extra parentheses; {EXPECTED}")),
            },
        };
        if function.contains(')') && field.is_none() {
            return Err(format!("{function:?} has unbalanced or extra parentheses; {EXPECTED}"));
        }
        let function_name = function_name.to_ascii_lowercase();
        // SQL's COUNT(1) and COUNT(*) count rows, as plain `count` does.
        let field = match field {
            Some("1" | "*") if function_name == "count" => None,
            field => field,
        };
        if let Some(problem) = field.and_then(not_a_field_name) {
            return Err(format!(
                "{function:?}: {problem}; FIELD is a top-level field's name as written in the JSON, and count(1) or count(*) counts every event"
            ));
        }
        let function = match field {
            None if function_name == "count" => Function::Count,
            None => match Function::OF_A_FIELD.iter().find(|(known, _)| *known == function_name) {
                Some(_) => return Err(format!("{function:?} needs a field: {function_name}(FIELD)")),
                None => return Err(format!("unknown function {function:?}; {EXPECTED}")),
            },
            Some("") => return Err(format!("{function:?} names no field; {EXPECTED}")),
            Some(_) if function_name == "median" => Function::Percentile(Quantile::MEDIAN),
            Some(_) if function_name == "percentile" => Function::Percentile(quantile.expect("read above")),
            Some(_) => match Function::OF_A_FIELD.iter().find(|(known, _)| *known == function_name) {
                Some((_, function)) => *function,
                None => return Err(format!("unknown function {function:?}; {EXPECTED}")),
            },
        };
        aggregates.push(Aggregate { name: name.to_string(), function, field: field.map(str::to_string) });
    }
    Ok(aggregates)
}

/// Why `field` cannot be the JSON member name a user meant: SQL spellings of things that are not a
/// field. A literal counts or sums no field, and quotes would become part of the name.
fn not_a_field_name(field: &str) -> Option<&'static str> {
    let unsigned = field.strip_prefix(['-', '+']).unwrap_or(field);
    if field == "*" {
        Some("* is not a field")
    } else if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') && field.parse::<f64>().is_ok() {
        Some("a number is a literal, not a field")
    } else if field.starts_with(['\'', '"', '`']) || field.ends_with(['\'', '"', '`']) {
        Some("write the field's name without quotes")
    } else if ["null", "true", "false"].contains(&field.to_ascii_lowercase().as_str()) {
        Some("a SQL literal, not a field")
    } else {
        None
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
        assert_eq!(config.event_time, EventTime::Field { name: "timestamp".into(), format: TimestampFormat::Auto });
        assert_eq!(
            config.aggregates,
            [Aggregate { name: "event_count".into(), function: Function::Count, field: None }]
        );
        assert_eq!(config.restart_margin_ms, 10_000);
        assert_eq!(config.state_budget_bytes, 768 * 1024);
        assert_eq!(config.max_event_ahead_ms, 3_600_000);
        assert_eq!(config.incomplete, IncompletePolicy::Mark);
        assert_eq!(config.dead_letter_topic.as_deref(), Some("clickstream_dlq"));
        assert_eq!(config.dead_letter_max_bytes, 64 * 1024);
        assert_eq!(config.row_bytes_per_record, 512 * 1024);
    }

    #[test]
    fn accepts_each_window_kind_and_custom_groups() {
        let custom =
            config(&[("WINDOW_SIZE", "1m"), ("WINDOW_SLIDE", "60s"), ("GROUP_BY", " site_id , event ")]).unwrap();
        assert_eq!(custom.window, WindowSpec::new(60_000, 60_000, 1).unwrap());
        assert_eq!(custom.group_by, ["site_id", "event"]);
        assert_eq!(custom.dead_letter_topic, None);
        let tumble = config(&[("WINDOW", "tumble"), ("WINDOW_SIZE", "1m")]).unwrap();
        assert_eq!(tumble.window, WindowSpec::new(60_000, 60_000, 1).unwrap());
        let tumble = config(&[("WINDOW", "tumble"), ("WINDOW_SIZE", "1m"), ("WINDOW_SLIDE", "60s")]).unwrap();
        assert_eq!(tumble.window, WindowSpec::new(60_000, 60_000, 1).unwrap());
        let cumulate = config(&[("WINDOW", " cumulate "), ("WINDOW_SIZE", "1d"), ("WINDOW_STEP", "1h")]).unwrap();
        assert_eq!(cumulate.window, WindowSpec::cumulate(86_400_000, 3_600_000, 1).unwrap());
        assert_eq!(config(&[]).unwrap().window, WindowSpec::new(300_000, 10_000, 1).unwrap());
        let session = config(&[("WINDOW", "session"), ("SESSION_GAP", "30m")]).unwrap();
        assert_eq!(session.window, WindowSpec::session(1_800_000, 1).unwrap());
    }

    fn message(vars: &[(&str, &str)]) -> String {
        with_outputs(vars).unwrap_err().to_string()
    }

    #[test]
    fn percentiles_read_their_quantile_and_commas_inside_parentheses_do_not_split() {
        let aggregates = parse_aggregates("p95=percentile(on_site_seconds, 0.95), mid=MEDIAN(x),n=count", &[]).unwrap();
        let functions: Vec<Function> = aggregates.iter().map(|aggregate| aggregate.function).collect();
        assert_eq!(
            functions,
            [Function::Percentile(Quantile(950_000)), Function::Percentile(Quantile::MEDIAN), Function::Count]
        );
        assert_eq!(aggregates[0].field.as_deref(), Some("on_site_seconds"));
        assert_eq!(aggregates[0].to_string(), "p95=percentile(on_site_seconds, 0.95)");
        for (text, problem) in [
            ("p=percentile(x)", "needs a field and a quantile"),
            ("p=percentile(x, 1.5)", "not a number from 0 to 1"),
            ("p=percentile(x, 0.1234567)", "at most six decimals"),
            ("p=percentile(, 0.5)", "names no field"),
            ("p=percentile(x, 0.5", "unbalanced or extra parentheses"),
            ("p=percentile(x, y, 0.5)", "names more than one field"),
            ("n=count_distinct(a, b)", "names more than one field"),
            ("m=median(x, 0.9)", "names more than one field"),
        ] {
            let error = parse_aggregates(text, &[]).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn top_n_reads_its_settings_and_refuses_bad_ones_naming_them() {
        assert_eq!(config(&[]).unwrap().top_n, None);
        let top_n = config(&[
            ("AGGREGATES", "n=count,secs=sum(on_site_seconds)"),
            ("TOP_N", "5"),
            ("TOP_N_BY", "secs"),
            ("TOP_N_ORDER", "asc"),
            ("TOP_N_PARTITION_BY", "url, event"),
            ("TOP_N_RANK_FIELD", "rank"),
        ])
        .unwrap()
        .top_n
        .unwrap();
        assert_eq!(top_n.spec, TopNSpec { n: 5, by: 1, descending: false, partition_by: vec![2, 1] });
        assert_eq!(top_n.rank_field.as_deref(), Some("rank"));
        let defaults = config(&[("TOP_N", "1")]).unwrap().top_n.unwrap();
        assert_eq!((defaults.spec.by, defaults.spec.descending, defaults.rank_field), (0, true, None));
        let cases: [(&[(&str, &str)], &str); 9] = [
            (&[("TOP_N", "0")], "TOP_N=\"0\": expected a whole number of rows from 1 to 10000"),
            (&[("TOP_N", "10001")], "TOP_N=\"10001\": expected a whole number"),
            (&[("TOP_N", "3"), ("TOP_N_BY", "secs")], "TOP_N_BY=\"secs\": expected the name of one of the AGGREGATES: event_count"),
            (&[("TOP_N", "3"), ("TOP_N_ORDER", "up")], "TOP_N_ORDER=\"up\": expected desc (largest first) or asc"),
            (&[("TOP_N", "3"), ("TOP_N_PARTITION_BY", "site_id")], "TOP_N_PARTITION_BY=\"site_id\": expected distinct GROUP_BY fields (user_id, event, url), comma-separated; \"site_id\" is not one"),
            (&[("TOP_N", "3"), ("TOP_N_PARTITION_BY", "url,url")], "\"url\" is repeated"),
            (&[("TOP_N", "3"), ("TOP_N_RANK_FIELD", "event_count")], "TOP_N_RANK_FIELD=\"event_count\": expected a field name no GROUP_BY field"),
            (&[("TOP_N_BY", "event_count")], "TOP_N_BY=\"event_count\": it applies to Window Top-N only: set TOP_N=N too"),
            (&[("TOP_N_RANK_FIELD", "rank")], "TOP_N_RANK_FIELD=\"rank\": it applies to Window Top-N only"),
        ];
        for (vars, expected) in cases {
            let message = message(vars);
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
        // The smallest budget grows by a candidate's room (three aggregates: 384 bytes), and says so.
        let budget = |vars: &[(&str, &str)]| {
            let fits = |bytes: usize| config(&[vars, &[("STATE_BUDGET", &format!("{bytes}B"))]].concat()).is_ok();
            (16 << 10..64 << 10).find(|&bytes| fits(bytes)).unwrap()
        };
        let wide = [("GROUP_BY", "a,b,c,d,e,f,g,h"), ("AGGREGATES", "x=sum(x),y=sum(y),z=sum(z)")];
        let plain = budget(&wide);
        assert_eq!(budget(&[&wide[..], &[("TOP_N", "1")]].concat()), plain + 384);
        let at_plain = format!("{plain}B");
        let refused = config(&[&wide[..], &[("TOP_N", "1"), ("STATE_BUDGET", &at_plain)]].concat()).unwrap_err();
        assert!(
            refused.allowed.contains("and TOP_N") && refused.allowed.contains("384 bytes for its Top-N candidate"),
            "{refused}"
        );
    }

    #[test]
    fn each_bad_setting_names_the_variable_its_value_and_what_is_allowed() {
        let cases: [(&[(&str, &str)], &str); 31] = [
            (&[("EMIT_EARLY", "5m")], "EMIT_EARLY=\"5m\": early rows come while windows are open: a duration shorter than WINDOW_SIZE (5m)"),
            (&[("EMIT_EARLY", "0s")], "EMIT_EARLY=\"0s\": expected a duration from 1ms to 7d"),
            (&[("EMIT_EARLY", "1m"), ("WINDOW", "session"), ("SESSION_GAP", "1m")], "EMIT_EARLY=\"1m\": a session's end moves until it closes"),
            (&[("EMIT_EARLY", "1m"), ("TOP_N", "3")], "EMIT_EARLY=\"1m\": early rows of a ranking would need taking rows back"),
            (&[("WINDOW", "sessions")], "WINDOW=\"sessions\": expected hop, tumble, cumulate or session"),
            (&[("WINDOW", "session")], "SESSION_GAP=\"\": WINDOW=session needs a gap: a duration"),
            (&[("WINDOW", "session"), ("SESSION_GAP", "1m"), ("WINDOW_SLIDE", "1m")], "WINDOW_SLIDE=\"1m\": WINDOW=session ends a session after SESSION_GAP; leave WINDOW_SLIDE unset"),
            (&[("SESSION_GAP", "1m")], "SESSION_GAP=\"1m\": WINDOW=hop has no sessions; leave SESSION_GAP unset"),
            (&[("WINDOW", "session"), ("SESSION_GAP", "1m"), ("TOP_N", "3")], "TOP_N=\"3\": Window Top-N ranks the rows of one window"),
            (&[("WINDOW", "tumble"), ("WINDOW_SLIDE", "10s")], "WINDOW_SLIDE=\"10s\": WINDOW=tumble takes WINDOW_SIZE only: leave WINDOW_SLIDE unset or equal to it"),
            (&[("WINDOW", "tumble"), ("WINDOW_STEP", "10s")], "WINDOW_STEP=\"10s\": WINDOW=tumble takes WINDOW_SIZE only; leave WINDOW_STEP unset"),
            (&[("WINDOW", "cumulate")], "WINDOW_STEP=\"\": WINDOW=cumulate needs a step: a duration that divides WINDOW_SIZE"),
            (&[("WINDOW", "cumulate"), ("WINDOW_STEP", "1m"), ("WINDOW_SLIDE", "1m")], "WINDOW_SLIDE=\"1m\": WINDOW=cumulate grows by WINDOW_STEP; leave WINDOW_SLIDE unset"),
            (&[("WINDOW", "cumulate"), ("WINDOW_STEP", "7s")], "WINDOW_SIZE=\"5m\": the window size must be a whole multiple of WINDOW_STEP (7s)"),
            (&[("WINDOW_SIZE", "5x")], "WINDOW_SIZE=\"5x\": expected a duration from 1ms to 7d"),
            (&[("WINDOW_SIZE", "0s")], "WINDOW_SIZE=\"0s\": expected a duration"),
            (&[("WINDOW_SIZE", "8d")], "WINDOW_SIZE=\"8d\": expected a duration"),
            (&[("WINDOW_SLIDE", "10")], "WINDOW_SLIDE=\"10\": expected a duration"),
            (&[("WINDOW_SLIDE", "7s")], "WINDOW_SIZE=\"5m\": the window size must be a whole multiple of WINDOW_SLIDE (7s)"),
            (&[("WINDOW_SLIDE", "10ms")], "at most 1440 times it"),
            (&[("WATERMARK_DELAY", "-1ms")], "WATERMARK_DELAY=\"-1ms\": expected a duration from 0ms"),
            (&[("WATERMARK_DELAY", "99999999999999999999h")], "WATERMARK_DELAY="),
            (&[("GROUP_BY", "user_id,window_end")], "GROUP_BY=\"user_id,window_end\": \"window_end\" is a name the output row uses itself; expected 1 to 8 distinct top-level field names"),
            (&[("GROUP_BY", "user_id,,url")], "an empty field name"),
            (&[("GROUP_BY", "url,url")], "\"url\" is repeated"),
            (&[("GROUP_BY", "a,b,c,d,e,f,g,h,i")], "9 fields"),
            (&[("STATE_BUDGET", "2MB")], "STATE_BUDGET=\"2MB\": expected a size"),
            (&[("ROW_BYTES_PER_RECORD", "1KiB")], "ROW_BYTES_PER_RECORD=\"1KiB\": expected a size from 64KiB to 64MiB, at most half the output topic's max.message.bytes"),
            (&[("ROW_BYTES_PER_RECORD", "65MiB")], "ROW_BYTES_PER_RECORD=\"65MiB\": expected a size from 64KiB"),
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
        assert!(message(&[("TIMESTAMP_FORMAT", "unix")])
            .contains("TIMESTAMP_FORMAT=\"unix\": expected one of: auto, sql, iso, epoch_ms, epoch_s"));
        assert!(message(&[("RESTART_MARGIN", "-1s")]).contains("RESTART_MARGIN=\"-1s\": expected a duration"));
    }

    #[test]
    fn any_fields_can_be_grouped_by_and_aggregated() {
        let config = with_outputs(&[
            ("GROUP_BY", "store_id, region "),
            (
                "AGGREGATES",
                "orders=count, revenue = SUM(amount), top=max(amount),avg_items=avg(items),with_coupon=count(coupon),firsts=sum(1st_visit)",
            ),
            ("TIMESTAMP_FIELD", "created_at"),
            ("TIMESTAMP_FORMAT", "epoch_ms"),
        ])
        .unwrap();
        assert_eq!(config.group_by, ["store_id", "region"]);
        let aggregates: Vec<String> = config.aggregates.iter().map(ToString::to_string).collect();
        assert_eq!(
            aggregates,
            [
                "orders=count",
                "revenue=sum(amount)",
                "top=max(amount)",
                "avg_items=avg(items)",
                "with_coupon=count(coupon)",
                "firsts=sum(1st_visit)"
            ]
        );
        assert_eq!(config.event_time, EventTime::Field { name: "created_at".into(), format: TimestampFormat::EpochMs });
        assert_eq!(with_outputs(&[("TIMESTAMP_FIELD", "@record")]).unwrap().event_time, EventTime::RecordTimestamp);
    }

    #[test]
    fn each_bad_aggregate_list_says_what_is_wrong() {
        let seventeen: Vec<String> = (0..17).map(|i| format!("c{i}=count")).collect();
        let seventeen = seventeen.join(",");
        let cases = [
            ("n=mode(x)", "unknown function \"mode(x)\"; expected NAME=FUNCTION"),
            ("n=counts", "unknown function \"counts\""),
            ("n=sum", "\"sum\" needs a field: sum(FIELD)"),
            ("n=sum(x", "\"sum(x\" has unbalanced or extra parentheses"),
            ("n=sum(x))", "unbalanced or extra parentheses"),
            ("n=sum((x))", "unbalanced or extra parentheses"),
            ("n=count)", "unbalanced or extra parentheses"),
            ("n=count()", "\"count()\" names no field"),
            ("n=sum(1)", "\"sum(1)\": a number is a literal, not a field"),
            ("n=count(2)", "a number is a literal"),
            ("n=avg(-1.5e3)", "a number is a literal"),
            ("n=sum(*)", "\"sum(*)\": * is not a field"),
            ("n=count('ref')", "write the field's name without quotes"),
            ("n=count(`ref`)", "without quotes"),
            ("n=max(\"x\")", "without quotes"),
            ("n=count(NULL)", "a SQL literal, not a field"),
            ("=count", "\"=count\" has an empty name"),
            ("count", "\"count\" has no '='"),
            ("n=count,n=sum(x)", "the name \"n\" is used twice"),
            ("user_id=count", "the name \"user_id\" collides with a GROUP_BY field"),
            ("window_start=count", "the name \"window_start\" collides with a field in the output row"),
            ("n=count,", "\"\" has no '='"),
            (seventeen.as_str(), "17 aggregates, at most 16 are allowed"),
        ];
        for (value, expected) in cases {
            let message = message(&[("AGGREGATES", value)]);
            assert!(message.starts_with(&format!("invalid configuration: AGGREGATES={value:?}: ")), "{message}");
            assert!(message.contains(expected), "{value}: {message}");
        }
    }

    /// Regression (count_1_gave_zero_in_every_row): `count(1)`, as the README's SQL writes it, was read as a
    /// count of a field named "1", so every row said 0.
    #[test]
    fn count_1_and_count_star_count_every_event() {
        let config = with_outputs(&[("AGGREGATES", "a=count(1),b=COUNT(*),c= count ( 1 ) ,d=count(ref)")]).unwrap();
        let functions: Vec<(Function, Option<&str>)> =
            config.aggregates.iter().map(|aggregate| (aggregate.function, aggregate.field.as_deref())).collect();
        assert_eq!(
            functions,
            [
                (Function::Count, None),
                (Function::Count, None),
                (Function::Count, None),
                (Function::CountField, Some("ref"))
            ]
        );
    }

    /// Regression (state_budget_4096mib_became_zero): inside the wasm32 module 4096 MiB wrapped to 0
    /// and every event was dead-lettered as over_capacity.
    #[test]
    fn a_state_budget_the_module_cannot_address_is_refused() {
        assert!(message(&[("STATE_BUDGET", "4096MiB")]).contains("from 16KiB to 4095MiB"));
        assert!(message(&[("STATE_BUDGET", "17179869184")]).contains("STATE_BUDGET"));
        let largest = with_outputs(&[("STATE_BUDGET", "4095MiB")]).unwrap();
        assert_eq!(largest.state_budget_bytes as u64, MAX_STATE_BUDGET_BYTES);
        assert!(u32::try_from(largest.state_budget_bytes).is_ok(), "fits the module's usize");
    }

    /// Regression (state_budget_below_one_group_was_accepted): STATE_BUDGET=16KiB with three aggregates that
    /// read a field started, then dead-lettered every event as over_capacity ("state is at 0 of 16384").
    #[test]
    fn a_state_budget_that_cannot_hold_one_group_is_refused_naming_the_minimum() {
        let three = "n=count,s=sum(on_site_seconds),lo=min(on_site_seconds),hi=max(on_site_seconds)";
        let refused = message(&[("STATE_BUDGET", "16KiB"), ("AGGREGATES", three)]);
        let functions = [Function::Count, Function::Sum, Function::Min, Function::Max];
        let minimum = Engine::state_for_first_event(3, &functions, MAX_FIELD_BYTES);
        assert!(refused.starts_with("invalid configuration: STATE_BUDGET=\"16KiB\": one group of 3 GROUP_BY fields with these AGGREGATES can need"), "{refused}");
        assert!(refused.contains(&format!("{minimum} bytes")), "{refused}");
        assert!(refused.ends_with(&format!("expected at least {}KiB", minimum.div_ceil(1024))), "{refused}");
        let at_minimum = format!("{}KiB", minimum.div_ceil(1024));
        assert!(with_outputs(&[("STATE_BUDGET", &at_minimum), ("AGGREGATES", three)]).is_ok());
        assert_eq!(minimum.div_ceil(1024), 24, "the README's figure");
        // The README: the first block of cells is 3 KiB, plus 5 KiB for each aggregate that reads a field,
        // and 2.1 KiB of room in the last chunk of other state.
        assert_eq!(Engine::fixed_state_bytes(&[Function::Count]), 3_072 + 2_176);
        assert_eq!(
            Engine::fixed_state_bytes(&[Function::Count, Function::Sum, Function::CountField]),
            3_072 + 2 * 5_120 + 2_176
        );
        let eight_fields = ("GROUP_BY", "a,b,c,d,e,f,g,h");
        assert!(with_outputs(&[("STATE_BUDGET", "16KiB"), eight_fields]).is_ok(), "the README: 16 KiB holds the count");
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
