//! The hop-window engine: Flink's `HOP` + `COUNT` on event time, record by record.
//!
//! Events are counted in panes one slide wide; window `k` covers panes `k .. k + size/slide`, so its
//! count is the sum of those panes when it fires. A late event lands in its pane and is therefore counted
//! by exactly the windows containing it that have not fired yet, which is Flink's rule.

use std::collections::{BTreeMap, HashMap};

use crate::intern::Interner;

/// Window size, slide and watermark delay in milliseconds. Build it with [`WindowSpec::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    size_ms: i64,
    slide_ms: i64,
    delay_ms: i64,
}

impl WindowSpec {
    /// `None` unless the slide is positive and the size a positive whole multiple of it.
    pub fn new(size_ms: i64, slide_ms: i64, delay_ms: i64) -> Option<WindowSpec> {
        let valid = slide_ms > 0 && size_ms > 0 && size_ms % slide_ms == 0 && delay_ms >= 0;
        valid.then_some(WindowSpec { size_ms, slide_ms, delay_ms })
    }

    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }

    pub fn delay_ms(&self) -> i64 {
        self.delay_ms
    }

    fn panes_per_window(&self) -> i64 {
        self.size_ms / self.slide_ms
    }

    fn pane_of(&self, event_ms: i64) -> i64 {
        event_ms.div_euclid(self.slide_ms)
    }

    /// The last window index that has fired once the watermark is `watermark_ms`:
    /// window `k` fires when `watermark ≥ k·slide + size − 1`.
    fn fired_through(&self, watermark_ms: i64) -> i64 {
        (watermark_ms + 1 - self.size_ms).div_euclid(self.slide_ms)
    }
}

/// One output row: the count of one group in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub group: &'a [&'a str],
    pub count: u64,
    /// False when the window began before the first event this engine saw (plus the watermark delay):
    /// after a start or restart, events of that window may have been handled by a previous instance.
    pub complete: bool,
}

/// Receives the rows of fired windows, in window order, then group order.
pub trait RowSink {
    fn row(&mut self, row: &Row<'_>);
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Counted,
    /// Every window containing the event has fired.
    Late,
    /// Counting it would need state beyond the budget.
    OverCapacity,
}

/// Accounted bytes of state; constants model the module's wasm32 layout (see the README's limits).
const STRING_BYTES: usize = 80;
const GROUP_BYTES: usize = 96;
const GROUP_FIELD_BYTES: usize = 4;
const PANE_BYTES: usize = 128;
const PANE_ENTRY_BYTES: usize = 24;

/// A snapshot of the engine's size, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub open_panes: usize,
    pub open_groups: usize,
    pub open_strings: usize,
    pub state_bytes: usize,
    pub watermark_ms: Option<i64>,
}

pub struct Engine {
    spec: WindowSpec,
    budget_bytes: usize,
    state_bytes: usize,
    strings: Interner<str>,
    /// A group is its field values as string ids; its users are the pane entries that count it.
    groups: Interner<[u32]>,
    /// Pane index → group id → events.
    panes: BTreeMap<i64, HashMap<u32, u32>>,
    max_event_ms: Option<i64>,
    first_event_ms: Option<i64>,
    group_ids: Vec<u32>,
    totals: HashMap<u32, u64>,
}

impl Engine {
    pub fn new(spec: WindowSpec, budget_bytes: usize) -> Engine {
        Engine {
            spec,
            budget_bytes,
            state_bytes: 0,
            strings: Interner::default(),
            groups: Interner::default(),
            panes: BTreeMap::new(),
            max_event_ms: None,
            first_event_ms: None,
            group_ids: Vec::new(),
            totals: HashMap::new(),
        }
    }

    /// Counts one event of `group` at `event_ms`, then advances the watermark, firing what it passes.
    pub fn observe(&mut self, event_ms: i64, group: &[&str], sink: &mut impl RowSink) -> Admission {
        let pane = self.spec.pane_of(event_ms);
        if self.watermark_ms().is_some_and(|watermark| pane <= self.spec.fired_through(watermark)) {
            return Admission::Late;
        }
        let admission = if self.count(pane, group) { Admission::Counted } else { Admission::OverCapacity };
        self.advance(event_ms, sink);
        admission
    }

    /// Moves the watermark to `event_ms − delay` if that is ahead, firing every window it passes.
    pub fn advance(&mut self, event_ms: i64, sink: &mut impl RowSink) {
        self.first_event_ms.get_or_insert(event_ms);
        if self.max_event_ms.is_some_and(|max| event_ms <= max) {
            return;
        }
        let fired_before = self.watermark_ms().map(|watermark| self.spec.fired_through(watermark));
        self.max_event_ms = Some(event_ms);
        let fired_now = self.spec.fired_through(event_ms - self.spec.delay_ms);
        if fired_before != Some(fired_now) {
            self.fire(fired_before, fired_now, sink);
        }
    }

    /// Largest event time seen minus the delay; `None` before the first event.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.max_event_ms.map(|max| max - self.spec.delay_ms)
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            open_panes: self.panes.len(),
            open_groups: self.groups.len(),
            open_strings: self.strings.len(),
            state_bytes: self.state_bytes,
            watermark_ms: self.watermark_ms(),
        }
    }

    /// Adds one event to a pane if the budget allows what that needs; false if it does not.
    fn count(&mut self, pane: i64, group: &[&str]) -> bool {
        let mut new_bytes = 0;
        self.group_ids.clear();
        for value in group {
            match self.strings.find(value) {
                Some(id) => self.group_ids.push(id),
                None => new_bytes += STRING_BYTES + value.len(),
            }
        }
        let known_group = if self.group_ids.len() == group.len() { self.groups.find(&self.group_ids) } else { None };
        if let Some(count) = known_group.and_then(|id| self.panes.get_mut(&pane)?.get_mut(&id)) {
            *count = count.saturating_add(1);
            return true;
        }
        new_bytes += PANE_ENTRY_BYTES;
        if !self.panes.contains_key(&pane) {
            new_bytes += PANE_BYTES;
        }
        if known_group.is_none() {
            new_bytes += GROUP_BYTES + GROUP_FIELD_BYTES * group.len();
        }
        if self.state_bytes + new_bytes > self.budget_bytes {
            return false;
        }
        let group_id = match known_group {
            Some(id) => {
                self.groups.acquire_id(id);
                id
            }
            None => self.intern_group(group),
        };
        let counts = self.panes.entry(pane).or_insert_with(|| {
            self.state_bytes += PANE_BYTES;
            HashMap::new()
        });
        counts.insert(group_id, 1);
        self.state_bytes += PANE_ENTRY_BYTES;
        true
    }

    fn intern_group(&mut self, group: &[&str]) -> u32 {
        self.group_ids.clear();
        for value in group {
            let before = self.strings.len();
            self.group_ids.push(self.strings.acquire(value));
            if self.strings.len() > before {
                self.state_bytes += STRING_BYTES + value.len();
            }
        }
        let before = self.groups.len();
        let id = self.groups.acquire(&self.group_ids);
        if self.groups.len() > before {
            self.state_bytes += GROUP_BYTES + GROUP_FIELD_BYTES * group.len();
        } else {
            // The group already existed: the string users taken above are not needed.
            for &string in &self.group_ids {
                self.strings.release(string);
            }
        }
        id
    }

    /// Fires windows after `fired_before` up to `fired_now` that hold any event, then frees the panes
    /// no open window needs.
    fn fire(&mut self, fired_before: Option<i64>, fired_now: i64, sink: &mut impl RowSink) {
        let panes_per_window = self.spec.panes_per_window();
        let Some(&first_pane) = self.panes.keys().next() else { return };
        let mut window = (first_pane - panes_per_window + 1).max(fired_before.map_or(i64::MIN, |k| k + 1));
        while window <= fired_now {
            let Some(&pane) = self.panes.range(window..).next().map(|(pane, _)| pane) else { break };
            if pane >= window + panes_per_window {
                window = pane - panes_per_window + 1; // skip windows with no events
                continue;
            }
            self.emit_window(window, sink);
            window += 1;
        }
        let open = self.panes.split_off(&(fired_now + 1));
        for (_, counts) in std::mem::replace(&mut self.panes, open) {
            self.state_bytes -= PANE_BYTES + PANE_ENTRY_BYTES * counts.len();
            for group in counts.into_keys() {
                self.release_group(group);
            }
        }
        self.strings.shrink_when_sparse();
        self.groups.shrink_when_sparse();
    }

    fn release_group(&mut self, group: u32) {
        if let Some(strings) = self.groups.release(group) {
            self.state_bytes -= GROUP_BYTES + GROUP_FIELD_BYTES * strings.len();
            for &string in strings.iter() {
                if let Some(text) = self.strings.release(string) {
                    self.state_bytes -= STRING_BYTES + text.len();
                }
            }
        }
    }

    fn emit_window(&mut self, window: i64, sink: &mut impl RowSink) {
        self.totals.clear();
        for counts in self.panes.range(window..window + self.spec.panes_per_window()).map(|(_, counts)| counts) {
            for (&group, &count) in counts {
                *self.totals.entry(group).or_default() += u64::from(count);
            }
        }
        let mut rows: Vec<(u32, u64)> = self.totals.drain().collect();
        let values_of = |group: u32| self.groups.get(group).iter().map(|&string| self.strings.get(string));
        rows.sort_unstable_by(|a, b| values_of(a.0).cmp(values_of(b.0)));
        let window_start_ms = window * self.spec.slide_ms;
        let complete = self.first_event_ms.is_some_and(|first| window_start_ms > first + self.spec.delay_ms);
        let mut values: Vec<&str> = Vec::new();
        for (group, count) in rows {
            values.clear();
            values.extend(values_of(group));
            sink.row(&Row {
                window_start_ms,
                window_end_ms: window_start_ms + self.spec.size_ms,
                group: &values,
                count,
                complete,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp_ms;

    #[derive(Default)]
    struct Collect(Vec<(i64, i64, Vec<String>, u64, bool)>);

    impl RowSink for Collect {
        fn row(&mut self, row: &Row<'_>) {
            let group = row.group.iter().map(|value| value.to_string()).collect();
            self.0.push((row.window_start_ms, row.window_end_ms, group, row.count, row.complete));
        }
    }

    fn at(text: &str) -> i64 {
        parse_timestamp_ms(&format!("2020-11-16 {text}")).unwrap()
    }

    fn hop() -> Engine {
        Engine::new(WindowSpec::new(300_000, 10_000, 1).unwrap(), usize::MAX)
    }

    #[test]
    fn spec_requires_size_to_be_a_multiple_of_slide() {
        assert!(WindowSpec::new(300_000, 10_000, 1).is_some());
        assert!(WindowSpec::new(10_000, 10_000, 0).is_some());
        assert!(WindowSpec::new(300_000, 7_000, 1).is_none());
        assert!(WindowSpec::new(300_000, 0, 1).is_none());
        assert!(WindowSpec::new(0, 10_000, 1).is_none());
        assert!(WindowSpec::new(300_000, 10_000, -1).is_none());
    }

    /// The worked example of the semantics note.
    #[test]
    fn worked_example() {
        let mut engine = hop();
        let mut rows = Collect::default();
        assert_eq!(engine.observe(at("19:00:03"), &["A"], &mut rows), Admission::Counted);
        assert_eq!(engine.observe(at("19:00:07"), &["A"], &mut rows), Admission::Counted);
        assert!(rows.0.is_empty());
        assert_eq!(engine.observe(at("19:00:12"), &["B"], &mut rows), Admission::Counted);
        assert_eq!(engine.watermark_ms(), Some(at("19:00:11.999")));
        assert_eq!(rows.0, vec![(at("18:55:10"), at("19:00:10"), vec!["A".to_string()], 2, false)]);

        // Key C at 19:00:05 is behind the watermark: it misses the fired window but counts in the 29 later ones.
        assert_eq!(engine.observe(at("19:00:05"), &["C"], &mut rows), Admission::Counted);
        engine.observe(at("19:00:20"), &["A"], &mut rows);
        assert_eq!(
            rows.0[1..],
            vec![
                (at("18:55:20"), at("19:00:20"), vec!["A".to_string()], 2, false),
                (at("18:55:20"), at("19:00:20"), vec!["B".to_string()], 1, false),
                (at("18:55:20"), at("19:00:20"), vec!["C".to_string()], 1, false),
            ]
        );
        engine.observe(at("19:10:00"), &["D"], &mut rows);
        let c_windows = rows.0.iter().filter(|row| row.2 == ["C"]).count();
        assert_eq!(c_windows, 29);
    }

    #[test]
    fn an_event_whose_windows_all_fired_is_late() {
        let mut engine = hop();
        let mut rows = Collect::default();
        engine.observe(at("19:00:00"), &["A"], &mut rows);
        engine.observe(at("19:06:00"), &["A"], &mut rows);
        // The watermark is 19:05:59.999, so the window [19:01:00, 19:06:00) has fired too.
        assert_eq!(engine.observe(at("19:01:00"), &["A"], &mut rows), Admission::Late);
        assert_eq!(engine.observe(at("19:01:10"), &["A"], &mut rows), Admission::Counted);
    }

    #[test]
    fn zero_delay_counts_the_event_before_firing_its_own_window() {
        let mut engine = Engine::new(WindowSpec::new(10_000, 10_000, 0).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        engine.observe(at("19:00:00"), &["A"], &mut rows);
        engine.observe(at("19:00:09.999"), &["A"], &mut rows);
        assert_eq!(rows.0, vec![(at("19:00:00"), at("19:00:10"), vec!["A".to_string()], 2, false)]);
    }

    #[test]
    fn rows_come_in_group_order_and_windows_mark_completeness_from_the_first_event() {
        let mut engine = Engine::new(WindowSpec::new(20_000, 10_000, 1).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        for (time, user, page) in [("19:00:05", "b", "x"), ("19:00:06", "a", "y"), ("19:00:07", "a", "x")] {
            engine.observe(at(time), &[user, page], &mut rows);
        }
        engine.observe(at("19:00:15"), &["a", "x"], &mut rows);
        engine.observe(at("19:00:40"), &["c", "c"], &mut rows);
        let summary: Vec<(i64, Vec<String>, u64, bool)> =
            rows.0.into_iter().map(|(start, _, group, count, complete)| (start, group, count, complete)).collect();
        let group = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        assert_eq!(
            summary,
            vec![
                (at("18:59:50"), group("a", "x"), 1, false),
                (at("18:59:50"), group("a", "y"), 1, false),
                (at("18:59:50"), group("b", "x"), 1, false),
                (at("19:00:00"), group("a", "x"), 2, false),
                (at("19:00:00"), group("a", "y"), 1, false),
                (at("19:00:00"), group("b", "x"), 1, false),
                (at("19:00:10"), group("a", "x"), 1, true),
            ]
        );
    }

    #[test]
    fn a_long_gap_skips_empty_windows_and_frees_all_state() {
        let mut engine = hop();
        let mut rows = Collect::default();
        engine.observe(at("19:00:00"), &["A"], &mut rows);
        engine.observe(parse_timestamp_ms("9999-12-31 23:59:59").unwrap(), &["B"], &mut rows);
        assert_eq!(rows.0.len(), 30);
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.open_strings), (1, 1, 1));
        assert_eq!(
            stats.state_bytes,
            PANE_BYTES + PANE_ENTRY_BYTES + GROUP_BYTES + GROUP_FIELD_BYTES + STRING_BYTES + 1
        );
    }

    #[test]
    fn state_is_freed_when_windows_close() {
        let mut engine = hop();
        let mut rows = Collect::default();
        for i in 0..1_000 {
            let user = format!("user{i}");
            engine.observe(at("19:00:00") + i * 100, &[&user, "view", "/item/1"], &mut rows);
        }
        assert!(engine.stats().open_groups == 1_000);
        engine.advance(at("20:00:00"), &mut rows);
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.open_strings, stats.state_bytes), (0, 0, 0, 0));
    }

    #[test]
    fn the_budget_refuses_new_state_but_keeps_counting_known_groups() {
        let one_group = PANE_BYTES + PANE_ENTRY_BYTES + GROUP_BYTES + GROUP_FIELD_BYTES + STRING_BYTES + 1;
        let mut engine = Engine::new(WindowSpec::new(300_000, 10_000, 1).unwrap(), one_group);
        let mut rows = Collect::default();
        assert_eq!(engine.observe(at("19:00:00"), &["A"], &mut rows), Admission::Counted);
        assert_eq!(engine.observe(at("19:00:01"), &["B"], &mut rows), Admission::OverCapacity);
        assert_eq!(engine.observe(at("19:00:02"), &["A"], &mut rows), Admission::Counted);
        // A new pane for a known group needs room too.
        assert_eq!(engine.observe(at("19:00:12"), &["A"], &mut rows), Admission::OverCapacity);
        assert!(engine.stats().state_bytes <= one_group);
        engine.advance(at("19:05:01"), &mut rows);
        assert_eq!(rows.0.last().map(|row| row.3), Some(2));
        assert_eq!(engine.observe(at("19:05:02"), &["B"], &mut rows), Admission::Counted);
    }
}
