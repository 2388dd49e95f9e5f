//! The busiest groups of the last window that closed, from the rows a module wrote.

use std::cmp::Ordering;

use serde_json::Value;

/// Keeps the rows of the latest window seen (by `window_end`, then `window_start`: cumulating windows share
/// their start), to rank them at the end by the first
/// aggregate (or, for a Window Top-N stream, to show them as the module ranked them); the row's other
/// fields, but the window bounds, the aggregates and the rank, are its group. Rows are kept as written and
/// read whole only for the table: most windows are replaced by the next one.
pub struct TopGroups {
    aggregates: Vec<String>,
    /// The rows come ranked (`TOP_N`): shown in their order, with this rank field among the values if any.
    ranked_by_the_module: Option<Option<String>>,
    /// The latest window's end and start.
    window: Option<(String, String)>,
    /// The latest window's rows, one after another, and where each ends.
    rows: Vec<u8>,
    ends: Vec<usize>,
}

/// A row's group fields (name, value), its aggregate values as printed, and the first as a number.
type RankedRow = (Vec<(String, String)>, Vec<String>, Option<f64>);

impl TopGroups {
    /// Ranks by the first of `aggregates` (the names in the rows, in order) and shows them all.
    pub fn new(aggregates: Vec<String>) -> TopGroups {
        TopGroups { aggregates, ranked_by_the_module: None, window: None, rows: Vec::new(), ends: Vec::new() }
    }

    /// For the rows of a Window Top-N (`TOP_N`): already ranked, so shown in the order written, partition
    /// by partition, with the rank field (`TOP_N_RANK_FIELD`) as the first value column when there is one.
    pub fn ranked_by_the_module(mut self, rank_field: Option<String>) -> TopGroups {
        if let Some(field) = &rank_field {
            self.aggregates.insert(0, field.clone());
        }
        self.ranked_by_the_module = Some(rank_field);
        self
    }

    /// Takes one output value; values that are not aggregate rows are ignored.
    pub fn add(&mut self, value: &[u8]) {
        let (Some(end), Some(start)) = transform_host::producer::top_texts(value, "window_end", "window_start") else {
            return;
        };
        let latest =
            self.window.as_ref().map(|(latest_end, latest_start)| (latest_end.as_str(), latest_start.as_str()));
        match latest.map(|latest| (end.as_ref(), start.as_ref()).cmp(&latest)) {
            Some(Ordering::Less) => return,
            Some(Ordering::Equal) => {}
            _ => {
                self.window = Some((end.into_owned(), start.into_owned()));
                self.rows.clear();
                self.ends.clear();
            }
        }
        self.rows.extend_from_slice(value);
        self.ends.push(self.rows.len());
    }

    /// The kept rows that are aggregate rows, read whole, and the window's bounds.
    fn ranked_rows(&self) -> (Option<(String, String)>, Vec<RankedRow>) {
        let mut window = None;
        let mut ranked = Vec::new();
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        for (start, end) in starts.zip(&self.ends) {
            let Ok(Value::Object(row)) = serde_json::from_slice::<Value>(&self.rows[start..*end]) else { continue };
            let (Some(start), Some(end)) =
                (row.get("window_start").and_then(Value::as_str), row.get("window_end").and_then(Value::as_str))
            else {
                continue;
            };
            window.get_or_insert_with(|| (start.to_string(), end.to_string()));
            let shown = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_string);
            let group = row
                .iter()
                .filter(|(name, _)| {
                    !matches!(name.as_str(), "window_start" | "window_end" | "incomplete")
                        && !self.aggregates.contains(name)
                })
                .map(|(name, value)| (name.clone(), shown(value)))
                .collect();
            let values = self.aggregates.iter().map(|name| row.get(name).map_or_else(String::new, shown)).collect();
            let first = self.aggregates.first().and_then(|name| row.get(name)).and_then(Value::as_f64);
            ranked.push((group, values, first));
        }
        (window, ranked)
    }

    /// A text table of the `n` rows with the largest first aggregate (nulls last), ties in group order; of
    /// a Top-N stream, its first `n` rows as written.
    pub fn table(&self, n: usize) -> String {
        let (window, ranked) = self.ranked_rows();
        let Some((start, end)) = window else { return "no window closed\n".to_string() };
        let mut rows: Vec<&RankedRow> = ranked.iter().collect();
        let by_first = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
            (Some(a), Some(b)) => b.partial_cmp(a).unwrap_or(Ordering::Equal),
            (a, b) => b.is_some().cmp(&a.is_some()),
        };
        if self.ranked_by_the_module.is_none() {
            rows.sort_by(|a, b| by_first(&a.2, &b.2).then_with(|| a.0.cmp(&b.0)));
        }
        rows.truncate(n);
        let names: Vec<&str> =
            rows.first().map(|(group, _, _)| group.iter().map(|(name, _)| name.as_str()).collect()).unwrap_or_default();
        let mut widths: Vec<usize> = names.iter().map(|name| name.len()).collect();
        let mut value_widths: Vec<usize> = self.aggregates.iter().map(String::len).collect();
        for (group, values, _) in &rows {
            for (width, (_, value)) in widths.iter_mut().zip(group) {
                *width = (*width).max(value.chars().count());
            }
            for (width, value) in value_widths.iter_mut().zip(values) {
                *width = (*width).max(value.chars().count());
            }
        }
        let mut out = match self.ranked_by_the_module {
            None => format!("busiest groups in the last closed window [{start}, {end}):\n"),
            Some(_) => format!("the last closed window's rows [{start}, {end}), as the module ranked them:\n"),
        };
        let mut line = String::new();
        for (name, width) in names.iter().zip(&widths) {
            line.push_str(&format!("{name:<width$}  "));
        }
        for (name, width) in self.aggregates.iter().zip(&value_widths) {
            line.push_str(&format!("{name:>width$}  "));
        }
        out.push_str(&format!("  {}\n", line.trim_end()));
        for (group, values, _) in rows {
            line.clear();
            for ((_, value), width) in group.iter().zip(&widths) {
                line.push_str(&format!("{value:<width$}  "));
            }
            for (value, width) in values.iter().zip(&value_widths) {
                line.push_str(&format!("{value:>width$}  "));
            }
            out.push_str(&format!("  {}\n", line.trim_end()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_the_latest_window_only() {
        let mut top = TopGroups::new(vec!["event_count".into()]);
        let row = |start: &str, user: &str, count: u64| {
            format!(r#"{{"window_start":"{start}","window_end":"x","user_id":"{user}","event_count":{count}}}"#)
        };
        top.add(row("2020-11-16 19:00:00", "old", 99).as_bytes());
        top.add(row("2020-11-16 19:00:10", "a", 2).as_bytes());
        top.add(row("2020-11-16 19:00:10", "b", 5).as_bytes());
        top.add(row("2020-11-16 19:00:00", "late", 7).as_bytes());
        top.add(b"not a row");
        let table = top.table(10);
        assert!(table.contains("[2020-11-16 19:00:10, x)"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].contains("user_id") && lines[1].ends_with("event_count"), "{table}");
        assert!(lines[2].contains('b') && lines[2].trim_end().ends_with('5'), "{table}");
        assert!(!table.contains("old") && !table.contains("late"));
    }

    /// Cumulating windows share their start: the latest is the one that ends last.
    #[test]
    fn the_latest_cumulating_window_is_the_one_that_ends_last() {
        let mut top = TopGroups::new(vec!["views".into()]);
        let row = |end: &str, url: &str, views: u64| {
            format!(r#"{{"window_start":"19:40:00","window_end":"{end}","url":"{url}","views":{views}}}"#)
        };
        top.add(row("19:40:20", "/early", 1).as_bytes());
        top.add(row("19:40:40", "/a", 2).as_bytes());
        top.add(row("19:40:40", "/b", 3).as_bytes());
        let table = top.table(10);
        assert!(table.contains("[19:40:00, 19:40:40)"), "{table}");
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(!table.contains("/early"), "{table}");
    }

    #[test]
    fn ranks_by_the_first_aggregate_and_shows_the_others() {
        let mut top = TopGroups::new(vec!["revenue".into(), "orders".into()]);
        for (store, revenue, orders) in [("1", "12.5", "3"), ("2", "null", "9"), ("\"3\"", "99", "1")] {
            let row = format!(
                r#"{{"window_start":"s","window_end":"e","store_id":{store},"revenue":{revenue},"orders":{orders}}}"#
            );
            top.add(row.as_bytes());
        }
        let table = top.table(10);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["store_id", "revenue", "orders"], "{table}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["3", "99", "1"], "{table}");
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["1", "12.5", "3"], "{table}");
        assert_eq!(lines[4].split_whitespace().collect::<Vec<_>>(), ["2", "null", "9"], "a null ranks last: {table}");
    }

    #[test]
    fn shows_a_top_n_stream_as_written_with_its_rank_first() {
        let mut top = TopGroups::new(vec!["views".into()]).ranked_by_the_module(Some("rownum".into()));
        for (event, url, views, rank) in [("cart", "/a", 1, 1), ("cart", "/b", 1, 2), ("view", "/c", 9, 1)] {
            let row = format!(
                r#"{{"window_start":"s","window_end":"e","event":"{event}","url":"{url}","views":{views},"rownum":{rank}}}"#
            );
            top.add(row.as_bytes());
        }
        let table = top.table(10);
        let lines: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
        assert!(table.starts_with("the last closed window's rows [s, e), as the module ranked them"), "{table}");
        assert_eq!(lines[1], ["event", "url", "rownum", "views"], "{table}");
        assert_eq!(lines[2], ["cart", "/a", "1", "1"], "{table}");
        assert_eq!(lines[4], ["view", "/c", "1", "9"], "written order, not re-ranked: {table}");
    }
}
