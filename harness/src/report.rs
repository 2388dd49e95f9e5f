//! The busiest groups of the last window that closed, from the rows a module wrote.

use serde_json::Value;

/// Keeps the rows of the latest window seen (by `window_start`), to rank them at the end.
#[derive(Default)]
pub struct TopGroups {
    window: Option<(String, String)>,
    rows: Vec<(Vec<(String, String)>, u64)>,
}

impl TopGroups {
    /// Takes one output value; values that are not aggregate rows are ignored.
    pub fn add(&mut self, value: &[u8]) {
        let Ok(Value::Object(row)) = serde_json::from_slice::<Value>(value) else { return };
        let (Some(start), Some(end), Some(count)) = (
            row.get("window_start").and_then(Value::as_str),
            row.get("window_end").and_then(Value::as_str),
            row.get("event_count").and_then(Value::as_u64),
        ) else {
            return;
        };
        match &self.window {
            Some((latest, _)) if start < latest.as_str() => return,
            Some((latest, _)) if start == latest.as_str() => {}
            _ => {
                self.window = Some((start.to_string(), end.to_string()));
                self.rows.clear();
            }
        }
        let group = row
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "window_start" | "window_end" | "event_count" | "incomplete"))
            .map(|(name, value)| (name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_string)))
            .collect();
        self.rows.push((group, count));
    }

    /// A text table of the `n` largest counts, ties in group order.
    pub fn table(&self, n: usize) -> String {
        let Some((start, end)) = &self.window else { return "no window closed\n".to_string() };
        let mut rows: Vec<&(Vec<(String, String)>, u64)> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(n);
        let names: Vec<&str> =
            rows.first().map(|(group, _)| group.iter().map(|(name, _)| name.as_str()).collect()).unwrap_or_default();
        let mut widths: Vec<usize> = names.iter().map(|name| name.len()).collect();
        for (group, _) in &rows {
            for (width, (_, value)) in widths.iter_mut().zip(group) {
                *width = (*width).max(value.chars().count());
            }
        }
        let mut out = format!("busiest groups in the last closed window [{start}, {end}):\n");
        let mut line = String::new();
        for (name, width) in names.iter().zip(&widths) {
            line.push_str(&format!("{name:<width$}  "));
        }
        out.push_str(&format!("  {line}events\n"));
        for (group, count) in rows {
            line.clear();
            for ((_, value), width) in group.iter().zip(&widths) {
                line.push_str(&format!("{value:<width$}  "));
            }
            out.push_str(&format!("  {line}{count:>6}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_the_latest_window_only() {
        let mut top = TopGroups::default();
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
        assert!(lines[2].contains('b') && lines[2].trim_end().ends_with('5'), "{table}");
        assert!(!table.contains("old") && !table.contains("late"));
    }
}
