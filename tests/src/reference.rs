//! A brute-force model of the Flink job, written from the semantics note and sharing no code with the
//! transform: serde_json reads events, chrono reads and prints times, every window is its own map
//! updated event by event, and each window keeps every value it was given until it fires. Slow and
//! obviously right is the point.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// The settings the model needs, in milliseconds.
#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    /// `EMIT_EARLY`: the period of early rows.
    pub early_every_ms: Option<i64>,
    /// `SESSION` windows with this gap, partitioned by the group; `None` for the other kinds.
    pub session_gap_ms: Option<i64>,
    /// `CUMULATE` windows, growing by `slide_ms` up to `size_ms`; otherwise `HOP` (`TUMBLE`: slide = size).
    pub cumulate: bool,
    pub size_ms: i64,
    pub slide_ms: i64,
    pub delay_ms: i64,
    pub restart_margin_ms: i64,
    pub group_by: Vec<String>,
    /// (output name, function, field) in output order.
    pub aggregates: Vec<(String, String, Option<String>)>,
    /// `None`: the record timestamp (`@record`).
    pub timestamp_field: Option<String>,
    pub timestamp_format: String,
    pub max_event_ahead_ms: i64,
    pub top_n: Option<RefTopN>,
}

/// Window Top-N as Flink's `ROW_NUMBER() OVER (PARTITION BY window, partition_by ORDER BY by) <= n`.
#[derive(Debug, Clone)]
pub struct RefTopN {
    pub n: usize,
    /// The aggregate's output name.
    pub by: String,
    pub descending: bool,
    pub partition_by: Vec<String>,
    pub rank_field: Option<String>,
}

/// A group-by value; integers order before strings, as the transform documents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefGroup {
    Int(i64),
    Text(String),
}

/// An aggregate's result: JSON null, an integer, or a float; or, for a percentile, the exact value, which a
/// float within the sketch's relative accuracy equals.
#[derive(Debug, Clone, Copy)]
pub enum RefValue {
    Null,
    Int(i64),
    Float(f64),
    Approx(f64),
    /// An `approx_count_distinct` beyond the sets it counts exactly: the exact count, which an integer within
    /// six standard errors equals (deterministic hashing: a failure is an error, not bad luck).
    Estimate(i64),
}

/// `approx_count_distinct` counts exactly up to this many distinct values in a window, and its standard error
/// beyond is 1.04 / √2048.
const EXACT_UP_TO: usize = 256;
const STANDARD_ERROR: f64 = 0.022_98;

/// The percentile sketch's promise: within 1 % of the exact value (and a tiny margin for rounding).
const RELATIVE_ACCURACY: f64 = 0.01 * (1.0 + 1e-9);

impl PartialEq for RefValue {
    fn eq(&self, other: &RefValue) -> bool {
        match (*self, *other) {
            (RefValue::Null, RefValue::Null) => true,
            (RefValue::Int(a), RefValue::Int(b)) => a == b,
            (RefValue::Float(a), RefValue::Float(b)) | (RefValue::Approx(a), RefValue::Approx(b)) => a == b,
            (RefValue::Approx(exact), RefValue::Float(estimate))
            | (RefValue::Float(estimate), RefValue::Approx(exact)) => {
                (estimate - exact).abs() <= RELATIVE_ACCURACY * exact.abs()
            }
            (RefValue::Estimate(exact), RefValue::Int(estimate))
            | (RefValue::Int(estimate), RefValue::Estimate(exact)) => {
                (estimate - exact).abs() as f64 <= 6.0 * STANDARD_ERROR * exact as f64
            }
            (RefValue::Estimate(a), RefValue::Estimate(b)) => a == b,
            _ => false,
        }
    }
}

/// One output row as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefRow {
    pub window_start: String,
    pub window_end: String,
    pub group: Vec<RefGroup>,
    pub values: Vec<RefValue>,
    pub complete: bool,
    /// Under Top-N with a rank field: the row's rank in its partition.
    pub rank: Option<u64>,
    /// An early row (`EMIT_EARLY`) of a window still open.
    pub early: bool,
}

impl ReferenceConfig {
    /// The settings from the transform's environment variables, with the module's documented defaults.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> ReferenceConfig {
        let text = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_string());
        let ms = |name: &str, default: &str| {
            clickstream_aggregation::duration::parse_duration_ms(&text(name, default)).expect("a valid duration") as i64
        };
        // A comma inside parentheses (`percentile(f, 0.95)`) belongs to the item before it.
        let mut items: Vec<String> = Vec::new();
        for piece in text("AGGREGATES", "event_count=count").split(',') {
            match items.last_mut() {
                Some(last) if last.matches('(').count() > last.matches(')').count() => *last += &format!(",{piece}"),
                _ => items.push(piece.to_string()),
            }
        }
        let aggregates = items
            .iter()
            .map(|item| {
                let (name, function) = item.split_once('=').expect("NAME=FUNCTION");
                let function = function.trim().to_lowercase();
                match function.split_once('(') {
                    // COUNT(1) and COUNT(*) count rows.
                    Some((count, "1)" | "*)")) if count.trim() == "count" => {
                        (name.trim().to_string(), "count".into(), None)
                    }
                    // The quantile goes with the function's name: `percentile:0.95`.
                    Some((percentile, rest)) if percentile.trim() == "percentile" => {
                        let (field, q) = rest.trim_end_matches(')').split_once(',').expect("percentile(FIELD, Q)");
                        (name.trim().to_string(), format!("percentile:{}", q.trim()), Some(field.trim().to_string()))
                    }
                    Some((median, field)) if median.trim() == "median" => (
                        name.trim().to_string(),
                        "percentile:0.5".into(),
                        Some(field.trim_end_matches(')').trim().to_string()),
                    ),
                    Some((function, field)) => (
                        name.trim().to_string(),
                        function.trim().to_string(),
                        Some(field.trim_end_matches(')').trim().to_string()),
                    ),
                    None => (name.trim().to_string(), function, None),
                }
            })
            .collect();
        let field = text("TIMESTAMP_FIELD", "timestamp").trim().to_string();
        ReferenceConfig {
            cumulate: text("WINDOW", "hop").trim() == "cumulate",
            session_gap_ms: (text("WINDOW", "hop").trim() == "session").then(|| ms("SESSION_GAP", "")),
            early_every_ms: lookup("EMIT_EARLY").map(|_| ms("EMIT_EARLY", "")),
            size_ms: ms("WINDOW_SIZE", "5m"),
            slide_ms: match text("WINDOW", "hop").trim() {
                "tumble" => ms("WINDOW_SIZE", "5m"),
                "cumulate" => ms("WINDOW_STEP", ""),
                _ => ms("WINDOW_SLIDE", "10s"),
            },
            delay_ms: ms("WATERMARK_DELAY", "1ms"),
            restart_margin_ms: ms("RESTART_MARGIN", "10s"),
            group_by: text("GROUP_BY", "user_id,event,url").split(',').map(|name| name.trim().to_string()).collect(),
            aggregates,
            timestamp_field: (field != "@record").then_some(field),
            timestamp_format: text("TIMESTAMP_FORMAT", "auto"),
            max_event_ahead_ms: ms("MAX_EVENT_AHEAD", "1h"),
            top_n: lookup("TOP_N").map(|n| RefTopN {
                n: n.trim().parse().expect("a valid TOP_N"),
                by: lookup("TOP_N_BY").map_or_else(|| aggregates_first_name(&lookup), |by| by.trim().to_string()),
                descending: lookup("TOP_N_ORDER").is_none_or(|order| order.trim() == "desc"),
                partition_by: lookup("TOP_N_PARTITION_BY")
                    .map(|fields| fields.split(',').map(|field| field.trim().to_string()).collect())
                    .unwrap_or_default(),
                rank_field: lookup("TOP_N_RANK_FIELD").map(|field| field.trim().to_string()),
            }),
        }
    }
}

fn aggregates_first_name(lookup: &impl Fn(&str) -> Option<String>) -> String {
    let aggregates = lookup("AGGREGATES").unwrap_or_else(|| "event_count=count".to_string());
    aggregates.split('=').next().expect("NAME=FUNCTION").trim().to_string()
}

/// A number as the model reads it from serde_json.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

/// One aggregate's input from one event: a number, or for `count_distinct` a string too.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Num(Num),
    Text(String),
}

/// What one event brings to a window: its group's count and each aggregate's input.
type Inputs = Vec<Option<Input>>;

/// The events one group gave one window: their count and every aggregate input, in arrival order.
#[derive(Debug, Default)]
struct Seen {
    count: u64,
    inputs: Vec<Inputs>,
    /// An event came since the group's last early row of the window.
    changed: bool,
}

/// Running totals the transform also keeps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefTotals {
    pub partly_late: u64,
    pub missed_windows: u64,
}

pub struct Reference {
    config: ReferenceConfig,
    /// Window (start, end) → group → what was seen, for windows that hold events and have not fired (under
    /// `SESSION`, each group's open sessions).
    windows: BTreeMap<(i64, i64), BTreeMap<Vec<RefGroup>, Seen>>,
    max_event_ms: Option<i64>,
    first_event_ms: Option<i64>,
    /// Under `EMIT_EARLY`: the last multiple of its period the watermark passed.
    early_tick: Option<i64>,
    pub rows: Vec<RefRow>,
    pub totals: RefTotals,
}

const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01 00:00:00
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31 23:59:59.999

impl Reference {
    pub fn new(config: ReferenceConfig) -> Reference {
        Reference {
            config,
            windows: BTreeMap::new(),
            max_event_ms: None,
            first_event_ms: None,
            early_tick: None,
            rows: Vec::new(),
            totals: RefTotals::default(),
        }
    }

    /// Handles one record value; returns "counted", "heartbeat" or the dead-letter reason.
    pub fn on_record(&mut self, value: Option<&[u8]>, record_ms: i64) -> String {
        match self.classify(value, record_ms) {
            Ok((event_ms, None)) => {
                self.advance(event_ms);
                "heartbeat".into()
            }
            Ok((event_ms, Some((group, inputs)))) if self.config.session_gap_ms.is_some() => {
                self.add_to_session(event_ms, group, inputs)
            }
            Ok((event_ms, Some((group, inputs)))) => {
                let windows = self.windows_of(event_ms);
                if windows.iter().any(|&(start, end)| start < MIN_MS || end > MAX_MS) {
                    return "out_of_range".into();
                }
                if self.first_event_ms.is_none() {
                    self.first_event_ms = Some(event_ms);
                }
                let watermark = self.watermark();
                let open: Vec<(i64, i64)> =
                    windows.iter().copied().filter(|&(_, end)| watermark.is_none_or(|wm| wm < end - 1)).collect();
                if open.is_empty() {
                    return "late".into();
                }
                if open.len() < windows.len() {
                    self.totals.partly_late += 1;
                    self.totals.missed_windows += (windows.len() - open.len()) as u64;
                }
                for window in open {
                    let seen = self.windows.entry(window).or_default().entry(group.clone()).or_default();
                    seen.count += 1;
                    seen.inputs.push(inputs.clone());
                    seen.changed = true;
                }
                self.advance(event_ms);
                "counted".into()
            }
            Err(reason) => reason.into(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        value: Option<&[u8]>,
        record_ms: i64,
    ) -> Result<(i64, Option<(Vec<RefGroup>, Inputs)>), &'static str> {
        let bytes = value.ok_or("no_value")?;
        let text = std::str::from_utf8(bytes).map_err(|_| "invalid_utf8")?;
        let parsed: Value = match serde_json::from_str(text) {
            Ok(parsed) => parsed,
            Err(error) if error.to_string().contains("recursion limit") => return Err("too_deep"),
            // serde_json refuses numbers beyond a float; the streams put those in aggregated fields only.
            Err(error) if error.to_string().contains("number out of range") => return Err("out_of_range"),
            Err(_) => return Err("not_json"),
        };
        if depth(&parsed) > 64 {
            return Err("too_deep");
        }
        let object = parsed.as_object().ok_or("not_object")?;
        let event_ms = match &self.config.timestamp_field {
            None if (MIN_MS..=MAX_MS).contains(&record_ms) => record_ms,
            None => return Err("bad_timestamp"),
            Some(field) => {
                let format = self.config.timestamp_format.as_str();
                let event_ms = match object.get(field) {
                    None => return Err("missing_field"),
                    Some(Value::String(text)) if ["auto", "sql", "iso"].contains(&format) => {
                        if text.len() > 1024 {
                            return Err("bad_timestamp");
                        }
                        parse_time(text, format).ok_or("bad_timestamp")?
                    }
                    Some(Value::Number(number)) if ["auto", "epoch_ms", "epoch_s"].contains(&format) => {
                        epoch_time(number, format).ok_or("bad_timestamp")?
                    }
                    Some(_) => return Err("wrong_type"),
                };
                if event_ms > record_ms + self.config.max_event_ahead_ms {
                    return Err("future");
                }
                event_ms
            }
        };
        let heartbeat = match &self.config.timestamp_field {
            Some(field) => object.len() == 1 && object.contains_key(field),
            None => object.is_empty(),
        };
        if heartbeat {
            return Ok((event_ms, None));
        }
        let mut group = Vec::new();
        for name in &self.config.group_by {
            group.push(match object.get(name) {
                None => return Err("missing_field"),
                Some(Value::String(text)) if text.len() > 1024 => return Err("field_too_long"),
                Some(Value::String(text)) => RefGroup::Text(text.clone()),
                Some(Value::Number(number)) if number.is_i64() => RefGroup::Int(number.as_i64().unwrap()),
                Some(Value::Number(number)) if number.is_u64() => return Err("out_of_range"),
                Some(_) => return Err("wrong_type"),
            });
        }
        let mut inputs = Vec::new();
        for (_, function, field) in &self.config.aggregates {
            inputs.push(match field.as_ref().map(|field| object.get(field)) {
                None | Some(None) | Some(Some(Value::Null)) => None,
                // COUNT(f) counts a value of any type.
                Some(Some(_)) if function == "count" => Some(Input::Num(Num::Int(1))),
                Some(Some(Value::Number(number))) => Some(Input::Num(match number.as_i64() {
                    Some(int) => Num::Int(int),
                    None => Num::Float(number.as_f64().expect("serde_json numbers are finite")),
                })),
                // COUNT(DISTINCT f) counts strings too, by their text.
                Some(Some(Value::String(text)))
                    if function == "count_distinct" || function == "approx_count_distinct" =>
                {
                    if text.len() > 1024 {
                        return Err("field_too_long");
                    }
                    Some(Input::Text(text.clone()))
                }
                Some(Some(_)) => return Err("wrong_type"),
            });
        }
        Ok((event_ms, Some((group, inputs))))
    }

    /// Flink's session rule, literally: the event's window `[t, t + gap)` merges with every open session of
    /// its group that it intersects (`a.start <= b.end && a.end >= b.start`); on its own and already passed by
    /// the watermark, it is late.
    fn add_to_session(&mut self, event_ms: i64, group: Vec<RefGroup>, inputs: Inputs) -> String {
        let gap = self.config.session_gap_ms.expect("sessions");
        let (mut start, mut end) = (event_ms, event_ms + gap);
        if end > MAX_MS {
            return "out_of_range".into();
        }
        let touched: Vec<(i64, i64)> = self
            .windows
            .iter()
            .filter(|(&(s, e), groups)| groups.contains_key(&group) && start <= e && end >= s)
            .map(|(&window, _)| window)
            .collect();
        if touched.is_empty() && self.watermark().is_some_and(|wm| wm >= end - 1) {
            return "late".into();
        }
        let mut merged = Seen::default();
        for window in touched {
            let groups = self.windows.get_mut(&window).expect("listed");
            let seen = groups.remove(&group).expect("listed");
            if groups.is_empty() {
                self.windows.remove(&window);
            }
            (start, end) = (start.min(window.0), end.max(window.1));
            merged.count += seen.count;
            merged.inputs.extend(seen.inputs);
        }
        merged.count += 1;
        merged.inputs.push(inputs);
        self.windows.entry((start, end)).or_default().insert(group, merged);
        self.advance(event_ms);
        "counted".into()
    }

    /// Advances the watermark and fires, in start order, every window it has passed (sessions: in order of
    /// their end, then group order).
    fn advance(&mut self, event_ms: i64) {
        if self.first_event_ms.is_none() {
            self.first_event_ms = Some(event_ms);
        }
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |max| max.max(event_ms)));
        let watermark = self.watermark().expect("just set");
        // In (start, end) order, which is end order: windows of one period end before the next period's.
        let due: Vec<(i64, i64)> = self.windows.keys().copied().filter(|&(_, end)| watermark >= end - 1).collect();
        let fired_from = self.rows.len();
        for (start, end) in due {
            let groups = self.windows.remove(&(start, end)).expect("listed");
            let rows: Vec<RefRow> =
                groups.into_iter().map(|(group, seen)| self.row_of((start, end), group, &seen, false)).collect();
            match &self.config.top_n {
                Some(top_n) => self.rows.extend(top_n_rows(rows, top_n, &self.config)),
                None => self.rows.extend(rows),
            }
        }
        if self.config.session_gap_ms.is_some() {
            let end_ms = |row: &RefRow| parse_time(&row.window_end, "sql").expect("written by format_time");
            self.rows[fired_from..].sort_by(|a, b| end_ms(a).cmp(&end_ms(b)).then_with(|| a.group.cmp(&b.group)));
        }
        self.write_early_rows(watermark);
    }

    /// `EMIT_EARLY`: each time the watermark passes a multiple of the period, every open window (in order)
    /// writes the current row of each group (in group order) that had an event in it since its last early
    /// row.
    fn write_early_rows(&mut self, watermark: i64) {
        let Some(every) = self.config.early_every_ms else { return };
        let tick = watermark.div_euclid(every);
        let passed = self.early_tick.is_some_and(|last| tick > last);
        self.early_tick = Some(tick);
        if !passed {
            return;
        }
        let mut rows = Vec::new();
        for (&window, groups) in &self.windows {
            for (group, seen) in groups.iter().filter(|(_, seen)| seen.changed) {
                rows.push(self.row_of(window, group.clone(), seen, true));
            }
        }
        self.rows.extend(rows);
        for seen in self.windows.values_mut().flat_map(|groups| groups.values_mut()) {
            seen.changed = false;
        }
    }

    /// The row of one group in one window.
    fn row_of(&self, (start, end): (i64, i64), group: Vec<RefGroup>, seen: &Seen, early: bool) -> RefRow {
        let first = self.first_event_ms.expect("set");
        let complete = start > first + self.config.delay_ms + self.config.restart_margin_ms;
        let values = self
            .config
            .aggregates
            .iter()
            .enumerate()
            .map(|(index, (_, function, field))| {
                let inputs = seen.inputs.iter().filter_map(|inputs| inputs[index].as_ref());
                match field {
                    None => RefValue::Int(seen.count as i64),
                    // Values of different types, and an integer and a float, are different values.
                    Some(_) if function == "count_distinct" || function == "approx_count_distinct" => {
                        let distinct: std::collections::BTreeSet<String> =
                            inputs.map(|input| format!("{input:?}")).collect();
                        match distinct.len() {
                            n if function == "approx_count_distinct" && n > EXACT_UP_TO => RefValue::Estimate(n as i64),
                            n => RefValue::Int(n as i64),
                        }
                    }
                    Some(_) => {
                        let numbers: Vec<Num> = inputs
                            .map(|input| match input {
                                Input::Num(number) => *number,
                                Input::Text(_) => panic!("text only for count_distinct"),
                            })
                            .collect();
                        aggregate(function, &numbers)
                    }
                }
            })
            .collect();
        RefRow {
            window_start: format_time(start),
            window_end: format_time(end),
            group,
            values,
            complete,
            rank: None,
            early,
        }
    }

    fn watermark(&self) -> Option<i64> {
        self.max_event_ms.map(|max| max - self.config.delay_ms)
    }

    /// Every window holding the event, as (start, end).
    fn windows_of(&self, event_ms: i64) -> Vec<(i64, i64)> {
        let (size, slide) = (self.config.size_ms, self.config.slide_ms);
        if self.config.cumulate {
            let period = event_ms - event_ms.rem_euclid(size);
            return (1..=size / slide)
                .map(|j| (period, period + j * slide))
                .filter(|&(_, end)| end > event_ms)
                .collect();
        }
        let last_start = event_ms - event_ms.rem_euclid(slide);
        (0..size / slide).map(|i| (last_start - i * slide, last_start - i * slide + size)).collect()
    }
}

/// A window's rows (in group order) ranked per partition: partitions in the order their first group comes,
/// each sorted by the ranked value (null the smallest) with ties in group order, cut at N.
fn top_n_rows(rows: Vec<RefRow>, top_n: &RefTopN, config: &ReferenceConfig) -> Vec<RefRow> {
    let by = config.aggregates.iter().position(|(name, _, _)| *name == top_n.by).expect("TOP_N_BY names an aggregate");
    let fields: Vec<usize> = top_n
        .partition_by
        .iter()
        .map(|field| config.group_by.iter().position(|name| name == field).expect("a GROUP_BY field"))
        .collect();
    let mut partitions: Vec<(Vec<RefGroup>, Vec<RefRow>)> = Vec::new();
    for row in rows {
        let key: Vec<RefGroup> = fields.iter().map(|&field| row.group[field].clone()).collect();
        match partitions.iter_mut().find(|(known, _)| *known == key) {
            Some((_, members)) => members.push(row),
            None => partitions.push((key, vec![row])),
        }
    }
    let as_num = |value: RefValue| match value {
        RefValue::Null => None,
        RefValue::Int(int) => Some(Num::Int(int)),
        RefValue::Float(float) | RefValue::Approx(float) => Some(Num::Float(float)),
        RefValue::Estimate(int) => Some(Num::Int(int)),
    };
    let mut ranked = Vec::new();
    for (_, mut members) in partitions {
        // A stable sort keeps equal values in group order.
        members.sort_by(|a, b| {
            let order = match (as_num(a.values[by]), as_num(b.values[by])) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => compare(x, y),
            };
            if top_n.descending {
                order.reverse()
            } else {
                order
            }
        });
        for (rank, mut row) in (1..).zip(members.into_iter().take(top_n.n)) {
            row.rank = top_n.rank_field.is_some().then_some(rank);
            ranked.push(row);
        }
    }
    ranked
}

/// One aggregate of a field over a window's non-null inputs, in arrival order.
fn aggregate(function: &str, inputs: &[Num]) -> RefValue {
    let float_sum = || {
        let ints: Vec<i128> =
            inputs.iter().filter_map(|n| if let Num::Int(i) = n { Some(i128::from(*i)) } else { None }).collect();
        // From -0.0, the identity of float addition: a sum of -0.0 alone is -0.0, as Flink prints it.
        let floats = inputs.iter().fold(-0.0, |sum, n| if let Num::Float(f) = n { sum + f } else { sum });
        if ints.is_empty() {
            floats
        } else {
            ints.iter().sum::<i128>() as f64 + floats
        }
    };
    let finite = |x: f64| if x.is_finite() { RefValue::Float(x) } else { RefValue::Null };
    match function {
        "count" => RefValue::Int(inputs.len() as i64),
        _ if inputs.is_empty() => RefValue::Null,
        "sum" => {
            let all_ints: Option<Vec<i64>> =
                inputs.iter().map(|n| if let Num::Int(i) = n { Some(*i) } else { None }).collect();
            match all_ints.map(|ints| ints.iter().map(|i| i128::from(*i)).sum::<i128>()) {
                Some(exact) if i64::try_from(exact).is_ok() => RefValue::Int(exact as i64),
                _ => finite(float_sum()),
            }
        }
        "avg" => finite(float_sum() / inputs.len() as f64),
        "min" => extreme(inputs, Ordering::Less),
        "max" => extreme(inputs, Ordering::Greater),
        // The value at rank ⌊q·(n − 1)⌋ of the sorted values.
        percentile if percentile.starts_with("percentile:") => {
            // In millionths, as the setting allows six decimals: 0.58 · 50 in floats is 28.999999999999996.
            let q: f64 = percentile["percentile:".len()..].parse().expect("a quantile");
            let millionths = (q * 1e6).round() as usize;
            let mut sorted = inputs.to_vec();
            sorted.sort_by(|a, b| compare(*a, *b));
            RefValue::Approx(match sorted[millionths * (sorted.len() - 1) / 1_000_000] {
                Num::Int(int) => int as f64,
                Num::Float(float) => float,
            })
        }
        other => panic!("unknown function {other}"),
    }
}

/// The smallest (`Less`) or largest (`Greater`) input; ties prefer an integer, then `-0.0` for the
/// minimum and `0.0` for the maximum.
fn extreme(inputs: &[Num], want: Ordering) -> RefValue {
    let rank = |n: &Num| match n {
        Num::Int(_) => 0,
        Num::Float(f) if f.is_sign_negative() == (want == Ordering::Less) => 1,
        Num::Float(_) => 2,
    };
    let best = inputs
        .iter()
        .copied()
        .reduce(|best, next| {
            let order = compare(next, best);
            if order == want || (order == Ordering::Equal && rank(&next) < rank(&best)) {
                next
            } else {
                best
            }
        })
        .expect("not empty");
    match best {
        Num::Int(i) => RefValue::Int(i),
        Num::Float(f) => RefValue::Float(f),
    }
}

/// Exact numeric order of two numbers, through 128-bit integers where a float is whole.
fn compare(a: Num, b: Num) -> Ordering {
    let int_vs_float = |i: i64, f: f64| -> Ordering {
        if f.fract() == 0.0 {
            i128::from(i).cmp(&(f as i128))
        } else if i128::from(i) <= f.floor() as i128 {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    };
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).expect("finite"),
        (Num::Int(x), Num::Float(y)) => int_vs_float(x, y),
        (Num::Float(x), Num::Int(y)) => int_vs_float(y, x).reverse(),
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A date-time string in the given `TIMESTAMP_FORMAT` (`auto`, `sql` or `iso`), read with chrono.
pub fn parse_time(text: &str, format: &str) -> Option<i64> {
    let sql = format != "iso";
    let iso = format != "sql";
    let bytes = text.as_bytes();
    if bytes.len() < 19 || !bytes[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let with_t = match bytes[10] {
        b' ' if sql => false,
        b'T' if iso => true,
        _ => return None,
    };
    let (local, zone) = match text.find(['+', 'Z']).or_else(|| text[19..].find('-').map(|at| at + 19)) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    if let Some((_, fraction)) = local.split_once('.') {
        if !(1..=9).contains(&fraction.len()) {
            return None;
        }
    }
    let naive = NaiveDateTime::parse_from_str(&local.replace('T', " "), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let offset_ms = match zone {
        "" => 0,
        "Z" if with_t || iso => 0,
        zone if with_t && zone.len() == 6 => {
            let fixed =
                DateTime::parse_from_str(&format!("2000-01-01 00:00:00 {zone}"), "%Y-%m-%d %H:%M:%S %:z").ok()?;
            i64::from(fixed.offset().local_minus_utc()) * 1000
        }
        _ => return None,
    };
    let ms = naive.and_utc().timestamp_millis() - offset_ms;
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// An epoch number in the given `TIMESTAMP_FORMAT` (`auto` and `epoch_ms`: integer milliseconds; `epoch_s`:
/// seconds in any number form, floored to the millisecond).
fn epoch_time(number: &serde_json::Number, format: &str) -> Option<i64> {
    let ms = match format {
        "epoch_s" => match number.as_i64() {
            Some(seconds) => seconds.checked_mul(1000)?,
            // The shortest decimal of the float serde_json read: the number as written, for the streams'
            // values (at most 16 significant digits).
            None => floor_ms_of_seconds(&number.to_string())?,
        },
        _ => number.as_i64()?,
    };
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// `digits × 10^(exponent − fraction digits + 3)` milliseconds, floored, in 128-bit integers.
fn floor_ms_of_seconds(decimal: &str) -> Option<i64> {
    let (mantissa, exponent) = decimal.split_once(['e', 'E']).unwrap_or((decimal, "0"));
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let power = exponent.parse::<i32>().ok()? - fraction.len() as i32 + 3;
    let ms = if power >= 0 {
        digits.checked_mul(10_i128.checked_pow(power as u32)?)?
    } else {
        digits.div_euclid(10_i128.checked_pow(power.unsigned_abs())?)
    };
    i64::try_from(ms).ok()
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

/// Reads a row the transform wrote back into the model's terms, checking its shape: window bounds, the
/// group fields in order, then the aggregates in order, and nothing else but the incomplete flag.
pub fn row_from_json(value: &[u8], config: &ReferenceConfig, incomplete: bool, early: bool) -> RefRow {
    let parsed: serde_json::Map<String, Value> = serde_json::from_slice(value).expect("rows are JSON objects");
    let names: Vec<&str> = parsed.keys().map(String::as_str).filter(|name| *name != "incomplete").collect();
    let rank_field = config.top_n.as_ref().and_then(|top_n| top_n.rank_field.as_deref());
    let expected: Vec<&str> = ["window_start", "window_end"]
        .into_iter()
        .chain(config.group_by.iter().map(String::as_str))
        .chain(config.aggregates.iter().map(|(name, _, _)| name.as_str()))
        .chain(rank_field)
        .collect();
    assert_eq!(names, expected, "row fields in order: {}", String::from_utf8_lossy(value));
    let text = |name: &str| parsed[name].as_str().unwrap_or_else(|| panic!("row lacks {name}")).to_string();
    let group = config
        .group_by
        .iter()
        .map(|name| match &parsed[name] {
            Value::String(text) => RefGroup::Text(text.clone()),
            Value::Number(number) => RefGroup::Int(number.as_i64().expect("integer group values")),
            other => panic!("group value {other}"),
        })
        .collect();
    let values = config
        .aggregates
        .iter()
        .map(|(name, _, _)| match &parsed[name] {
            Value::Null => RefValue::Null,
            Value::Number(number) if number.is_i64() => RefValue::Int(number.as_i64().unwrap()),
            Value::Number(number) => RefValue::Float(number.as_f64().unwrap()),
            other => panic!("aggregate value {other}"),
        })
        .collect();
    let rank = rank_field.map(|field| parsed[field].as_u64().expect("ranks are whole numbers"));
    RefRow {
        window_start: text("window_start"),
        window_end: text("window_end"),
        group,
        values,
        complete: !incomplete,
        rank,
        early,
    }
}
