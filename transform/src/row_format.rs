//! Rows as JSON: the Flink-format value, the identity key, and the header that marks incomplete rows.

use crate::config::{Config, IncompletePolicy};
use crate::engine::{Row, WindowKind};
use crate::json::{write_int, write_number, write_string};
use crate::time::format_timestamp_ms;

/// Header on rows of windows that may be missing events (see [`Row::complete`]).
pub const INCOMPLETE_HEADER: &str = "window-incomplete";
/// The header of an early row (`EMIT_EARLY`): its window is still open, and its final row comes later.
pub const EARLY_HEADER: &str = "window-early";

/// Formats rows as JSON into reused buffers.
pub(crate) struct RowFormatter {
    /// `,"name":` for each group-by field and each aggregate, escaped once.
    group_prefixes: Vec<String>,
    aggregate_prefixes: Vec<String>,
    /// `,"rank":` under `TOP_N_RANK_FIELD`.
    rank_prefix: Option<String>,
    incomplete_in_value: bool,
    /// Cumulating windows share their start: their keys name the end too.
    key_has_end: bool,
    /// The window (start, end) the buffers' heads were written for: its keys and values start with them.
    window: Option<(i64, i64)>,
    key: String,
    value: String,
    /// The lengths of the heads, where each row's own text starts.
    key_head: usize,
    value_head: usize,
}

impl RowFormatter {
    pub(crate) fn new(config: &Config) -> RowFormatter {
        let prefix = |name: &str| {
            let mut prefix = String::from(",");
            write_string(&mut prefix, name);
            prefix.push(':');
            prefix
        };
        RowFormatter {
            group_prefixes: config.group_by.iter().map(|name| prefix(name)).collect(),
            aggregate_prefixes: config.aggregates.iter().map(|aggregate| prefix(&aggregate.name)).collect(),
            rank_prefix: config.top_n.as_ref().and_then(|top_n| top_n.rank_field.as_deref()).map(prefix),
            incomplete_in_value: config.incomplete == IncompletePolicy::MarkValue,
            key_has_end: config.window.kind() == WindowKind::Cumulate,
            window: None,
            key: String::new(),
            value: String::new(),
            key_head: 0,
            value_head: 0,
        }
    }

    /// The row's value, `{"window_start":…,"window_end":…,<group fields>,<aggregates>}`, and its key,
    /// `[window_start, <group values>]`: a unique name for (window, group) so duplicates can be compacted away.
    pub(crate) fn format(&mut self, row: &Row<'_>) -> (&str, &str) {
        if self.window != Some((row.window_start_ms, row.window_end_ms)) {
            // Rows come window by window: the window's bounds are written once.
            self.window = Some((row.window_start_ms, row.window_end_ms));
            self.key.clear();
            self.key.push_str("[\"");
            format_timestamp_ms(row.window_start_ms, &mut self.key);
            if self.key_has_end {
                self.key.push_str("\",\"");
                format_timestamp_ms(row.window_end_ms, &mut self.key);
            }
            self.key.push('"');
            self.key_head = self.key.len();
            self.value.clear();
            self.value.push_str("{\"window_start\":\"");
            format_timestamp_ms(row.window_start_ms, &mut self.value);
            self.value.push_str("\",\"window_end\":\"");
            format_timestamp_ms(row.window_end_ms, &mut self.value);
            self.value.push('"');
            self.value_head = self.value.len();
        }
        let RowFormatter { key, value, .. } = self;
        key.truncate(self.key_head);
        value.truncate(self.value_head);
        for (prefix, field) in self.group_prefixes.iter().zip(row.group.iter()) {
            key.push(',');
            value.push_str(prefix);
            let start = value.len();
            field.write_json(value);
            key.push_str(&value[start..]);
        }
        key.push(']');
        for (prefix, result) in self.aggregate_prefixes.iter().zip(row.values) {
            value.push_str(prefix);
            match result {
                Some(number) => write_number(value, *number),
                None => value.push_str("null"),
            }
        }
        if let (Some(prefix), Some(rank)) = (&self.rank_prefix, row.rank) {
            value.push_str(prefix);
            write_int(value, rank as i64);
        }
        if self.incomplete_in_value && !row.complete {
            value.push_str(",\"incomplete\":true");
        }
        value.push('}');
        (key.as_str(), value.as_str())
    }
}
