//! The hop-window engine: Flink's `HOP` with `COUNT`, `SUM`, `MIN`, `MAX` and `AVG` on event time, record
//! by record.
//!
//! Events are aggregated in panes one slide wide; window `k` covers panes `k .. k + size/slide`, so its
//! aggregates combine those panes when it fires. A late event lands in its pane and is therefore counted
//! by exactly the windows containing it that have not fired yet, which is Flink's rule.

use std::collections::{BTreeMap, HashMap};

use crate::aggregate::{Accumulator, Function, Number};
use crate::intern::Interner;
use crate::time::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

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

/// One value of a group-by field: an integer stays an integer, and `42` and `"42"` are different groups.
/// Groups order field by field, integers (by value) before strings (by bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupValue<'a> {
    Int(i64),
    Text(&'a str),
}

/// One output row: the aggregates of one group in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub group: &'a [GroupValue<'a>],
    /// Events counted for the group in the window.
    pub count: u64,
    /// One value per aggregate, in configuration order; `None` is JSON null.
    pub values: &'a [Option<Number>],
    /// False when the window may miss events another instance handled: it began before this engine's
    /// first event plus the watermark delay and the restart margin.
    pub complete: bool,
}

/// Receives the rows of fired windows, in window order, then group order.
pub trait RowSink {
    fn row(&mut self, row: &Row<'_>);
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in every window containing it but `missed_windows`, which had already fired.
    Counted { missed_windows: u32 },
    /// Every window containing the event has fired.
    Late,
    /// Counting it would need state beyond the budget.
    OverCapacity,
    /// Some window containing the event starts before year 0000 or ends after year 9999, where window
    /// times have no text form.
    OutOfRange,
}

/// Accounted bytes of state; constants model the module's wasm32 layout (see the README's limits).
const STRING_BYTES: usize = 80;
const GROUP_BYTES: usize = 96;
const GROUP_FIELD_BYTES: usize = 4;
const PANE_BYTES: usize = 160;
const PANE_ENTRY_BYTES: usize = 28;
/// One aggregate's state for one group in one pane: the accumulator in the pane's vector.
const ACCUMULATOR_BYTES: usize = std::mem::size_of::<Accumulator>();

/// A snapshot of the engine's size, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub open_panes: usize,
    pub open_groups: usize,
    pub open_strings: usize,
    pub state_bytes: usize,
    pub watermark_ms: Option<i64>,
}

/// A group's events in one pane, and where its accumulators start in the pane's vector.
#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    first_accumulator: u32,
}

#[derive(Default)]
struct Pane {
    entries: HashMap<u32, Entry>,
    /// The accumulators of every group in the pane, one block per group.
    accumulators: Vec<Accumulator>,
}

pub struct Engine {
    spec: WindowSpec,
    budget_bytes: usize,
    state_bytes: usize,
    restart_margin_ms: i64,
    /// The aggregates, in output order.
    functions: Vec<Function>,
    /// The empty state of each aggregate that keeps one.
    empty_accumulators: Vec<Accumulator>,
    /// Group values as tagged text (`i42`, `stext`), shared by every group that holds them.
    values: Interner<str>,
    /// A group is its field values as value ids; its users are the pane entries that count it.
    groups: Interner<[u32]>,
    panes: BTreeMap<i64, Pane>,
    max_event_ms: Option<i64>,
    first_event_ms: Option<i64>,
    // Buffers reused across calls.
    group_ids: Vec<u32>,
    tagged: String,
    window_rows: HashMap<u32, usize>,
    window_counts: Vec<(u32, u64)>,
    window_accumulators: Vec<Accumulator>,
}

impl Engine {
    /// An engine that counts events (`count`) and keeps state within `budget_bytes`.
    pub fn new(spec: WindowSpec, budget_bytes: usize) -> Engine {
        Engine {
            spec,
            budget_bytes,
            state_bytes: 0,
            restart_margin_ms: 0,
            functions: vec![Function::Count],
            empty_accumulators: Vec::new(),
            values: Interner::default(),
            groups: Interner::default(),
            panes: BTreeMap::new(),
            max_event_ms: None,
            first_event_ms: None,
            group_ids: Vec::new(),
            tagged: String::new(),
            window_rows: HashMap::new(),
            window_counts: Vec::new(),
            window_accumulators: Vec::new(),
        }
    }

    /// Computes these aggregates instead of the count alone.
    pub fn with_aggregates(mut self, functions: &[Function]) -> Engine {
        self.functions = functions.to_vec();
        self.empty_accumulators = functions.iter().filter_map(|f| Accumulator::empty(*f)).collect();
        self
    }

    /// Marks incomplete the windows that begin up to `margin_ms` later than the watermark delay alone
    /// would (see the README's "Restarts").
    pub fn with_restart_margin(mut self, margin_ms: i64) -> Engine {
        self.restart_margin_ms = margin_ms;
        self
    }

    /// Counts one event of `group` at `event_ms`, with one input per aggregate (`None`: absent or null;
    /// ignored by `count`), then advances the watermark, firing what it passes.
    pub fn observe(
        &mut self,
        event_ms: i64,
        group: &[GroupValue<'_>],
        inputs: &[Option<Number>],
        sink: &mut impl RowSink,
    ) -> Admission {
        let pane = self.spec.pane_of(event_ms);
        let panes_per_window = self.spec.panes_per_window();
        let first_window = pane - panes_per_window + 1;
        let first_start = first_window.checked_mul(self.spec.slide_ms);
        let last_end = pane.checked_mul(self.spec.slide_ms).and_then(|start| start.checked_add(self.spec.size_ms));
        if first_start.is_none_or(|start| start < MIN_TIMESTAMP_MS) || last_end.is_none_or(|end| end > MAX_TIMESTAMP_MS)
        {
            return Admission::OutOfRange;
        }
        let fired_through = self.watermark_ms().map(|watermark| self.spec.fired_through(watermark));
        if fired_through.is_some_and(|fired| pane <= fired) {
            return Admission::Late;
        }
        let counted = self.count(pane, group, inputs);
        self.advance(event_ms, sink);
        if !counted {
            return Admission::OverCapacity;
        }
        let missed = fired_through.map_or(0, |fired| (fired - first_window + 1).clamp(0, panes_per_window));
        Admission::Counted { missed_windows: missed as u32 }
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
            open_strings: self.values.len(),
            state_bytes: self.state_bytes,
            watermark_ms: self.watermark_ms(),
        }
    }

    /// Writes a group value as interned text: a type tag, then the value.
    fn tag(value: &GroupValue<'_>, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        match value {
            GroupValue::Int(int) => {
                let _ = write!(out, "i{int}");
            }
            GroupValue::Text(text) => {
                out.push('s');
                out.push_str(text);
            }
        }
    }

    fn untag(tagged: &str) -> GroupValue<'_> {
        match tagged.split_at(1) {
            ("i", int) => GroupValue::Int(int.parse().expect("tagged integers are written by `tag`")),
            (_, text) => GroupValue::Text(text),
        }
    }

    /// Adds one event to a pane if the budget allows what that needs; false if it does not.
    fn count(&mut self, pane: i64, group: &[GroupValue<'_>], inputs: &[Option<Number>]) -> bool {
        let mut new_bytes = 0;
        self.group_ids.clear();
        for value in group {
            Self::tag(value, &mut self.tagged);
            match self.values.find(&self.tagged) {
                Some(id) => self.group_ids.push(id),
                None => new_bytes += STRING_BYTES + self.tagged.len(),
            }
        }
        let known_group = if self.group_ids.len() == group.len() { self.groups.find(&self.group_ids) } else { None };
        if let Some((id, state)) = known_group.and_then(|id| Some((id, self.panes.get_mut(&pane)?))) {
            if let Some(entry) = state.entries.get_mut(&id) {
                entry.count = entry.count.saturating_add(1);
                let first = entry.first_accumulator as usize;
                add_inputs(&self.functions, inputs, &mut state.accumulators[first..]);
                return true;
            }
        }
        let blocks = self.empty_accumulators.len();
        new_bytes += PANE_ENTRY_BYTES;
        let (len, capacity) = match self.panes.get(&pane) {
            Some(state) => (state.accumulators.len(), state.accumulators.capacity()),
            None => {
                new_bytes += PANE_BYTES;
                (0, 0)
            }
        };
        let grown = grown_capacity(len, capacity, blocks);
        new_bytes += (grown - capacity) * ACCUMULATOR_BYTES;
        if known_group.is_none() {
            new_bytes += self.group_bytes(group.len());
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
        let state = self.panes.entry(pane).or_insert_with(|| {
            self.state_bytes += PANE_BYTES;
            Pane::default()
        });
        let first = state.accumulators.len();
        state.accumulators.reserve_exact(grown - first);
        let growth = state.accumulators.capacity() - capacity;
        state.accumulators.extend_from_slice(&self.empty_accumulators);
        add_inputs(&self.functions, inputs, &mut state.accumulators[first..]);
        state.entries.insert(group_id, Entry { count: 1, first_accumulator: first as u32 });
        self.state_bytes += PANE_ENTRY_BYTES + growth * ACCUMULATOR_BYTES;
        true
    }

    /// An open group's bytes: its entry, its field ids, and room for its accumulators in the buffer that
    /// combines a window's panes when it fires (a window holds each open group at most once).
    fn group_bytes(&self, fields: usize) -> usize {
        GROUP_BYTES + GROUP_FIELD_BYTES * fields + ACCUMULATOR_BYTES * self.empty_accumulators.len()
    }

    fn intern_group(&mut self, group: &[GroupValue<'_>]) -> u32 {
        self.group_ids.clear();
        for value in group {
            Self::tag(value, &mut self.tagged);
            let before = self.values.len();
            self.group_ids.push(self.values.acquire(&self.tagged));
            if self.values.len() > before {
                self.state_bytes += STRING_BYTES + self.tagged.len();
            }
        }
        let before = self.groups.len();
        let id = self.groups.acquire(&self.group_ids);
        if self.groups.len() > before {
            self.state_bytes += self.group_bytes(group.len());
        } else {
            // The group already existed: the value users taken above are not needed.
            for &value in &self.group_ids {
                self.values.release(value);
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
        for (_, pane) in std::mem::replace(&mut self.panes, open) {
            self.state_bytes -=
                PANE_BYTES + PANE_ENTRY_BYTES * pane.entries.len() + ACCUMULATOR_BYTES * pane.accumulators.capacity();
            for group in pane.entries.into_keys() {
                self.release_group(group);
            }
        }
        self.values.shrink_when_sparse();
        self.groups.shrink_when_sparse();
        // The combining buffer is accounted per open group: give back what the open groups no longer cover.
        if self.window_accumulators.capacity() > self.groups.len() * self.empty_accumulators.len() {
            self.window_accumulators = Vec::new();
        }
    }

    fn release_group(&mut self, group: u32) {
        if let Some(values) = self.groups.release(group) {
            self.state_bytes -= self.group_bytes(values.len());
            for &value in values.iter() {
                if let Some(text) = self.values.release(value) {
                    self.state_bytes -= STRING_BYTES + text.len();
                }
            }
        }
    }

    /// Combines the window's panes, in pane order, per group; then writes one row per group in group order.
    fn emit_window(&mut self, window: i64, sink: &mut impl RowSink) {
        let blocks = self.empty_accumulators.len();
        self.window_rows.clear();
        self.window_counts.clear();
        self.window_accumulators.clear();
        self.window_accumulators.reserve_exact(self.groups.len() * blocks);
        for pane in self.panes.range(window..window + self.spec.panes_per_window()).map(|(_, pane)| pane) {
            for (&group, entry) in &pane.entries {
                let row = *self.window_rows.entry(group).or_insert_with(|| {
                    self.window_counts.push((group, 0));
                    self.window_accumulators.extend_from_slice(&self.empty_accumulators);
                    self.window_counts.len() - 1
                });
                self.window_counts[row].1 += u64::from(entry.count);
                let first = entry.first_accumulator as usize;
                for (total, pane_state) in
                    self.window_accumulators[row * blocks..].iter_mut().zip(&pane.accumulators[first..first + blocks])
                {
                    total.merge(pane_state);
                }
            }
        }
        let values_of = |group: u32| self.groups.get(group).iter().map(|&value| Self::untag(self.values.get(value)));
        let mut order: Vec<usize> = (0..self.window_counts.len()).collect();
        order.sort_unstable_by(|&a, &b| values_of(self.window_counts[a].0).cmp(values_of(self.window_counts[b].0)));
        let window_start_ms = window * self.spec.slide_ms;
        let complete = self
            .first_event_ms
            .is_some_and(|first| window_start_ms > first + self.spec.delay_ms + self.restart_margin_ms);
        let mut group: Vec<GroupValue<'_>> = Vec::new();
        let mut values: Vec<Option<Number>> = Vec::with_capacity(self.functions.len());
        for row in order {
            let (group_id, count) = self.window_counts[row];
            group.clear();
            group.extend(values_of(group_id));
            values.clear();
            let mut accumulators = self.window_accumulators[row * blocks..(row + 1) * blocks].iter();
            for function in &self.functions {
                values.push(match function {
                    Function::Count => Some(Number::Int(i64::try_from(count).unwrap_or(i64::MAX))),
                    function => accumulators.next().and_then(|acc| acc.result(*function)),
                });
            }
            sink.row(&Row {
                window_start_ms,
                window_end_ms: window_start_ms + self.spec.size_ms,
                group: &group,
                count,
                values: &values,
                complete,
            });
        }
    }
}

/// The capacity a pane's accumulator vector needs to take one more group's block: the same while it has
/// room, else a quarter more (at least 16 blocks), so growth wastes little and all of it is accounted.
fn grown_capacity(len: usize, capacity: usize, blocks: usize) -> usize {
    if capacity - len >= blocks {
        return capacity;
    }
    len + (len / 4).max(16 * blocks)
}

/// Adds one event's inputs to a group's accumulators (aggregates that keep none are skipped).
fn add_inputs(functions: &[Function], inputs: &[Option<Number>], accumulators: &mut [Accumulator]) {
    let with_state = functions.iter().zip(inputs).filter(|(function, _)| function.reads_a_field());
    for ((_, input), accumulator) in with_state.zip(accumulators) {
        accumulator.add(*input);
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
            let group = row
                .group
                .iter()
                .map(|value| match value {
                    GroupValue::Text(text) => text.to_string(),
                    GroupValue::Int(int) => format!("#{int}"),
                })
                .collect();
            self.0.push((row.window_start_ms, row.window_end_ms, group, row.count, row.complete));
        }
    }

    const COUNTED: Admission = Admission::Counted { missed_windows: 0 };

    /// Counts an event whose group values are all strings.
    fn observe(engine: &mut Engine, event_ms: i64, group: &[&str], rows: &mut Collect) -> Admission {
        let group: Vec<GroupValue<'_>> = group.iter().map(|text| GroupValue::Text(text)).collect();
        engine.observe(event_ms, &group, &[], rows)
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
        assert_eq!(observe(&mut engine, at("19:00:03"), &["A"], &mut rows), COUNTED);
        assert_eq!(observe(&mut engine, at("19:00:07"), &["A"], &mut rows), COUNTED);
        assert!(rows.0.is_empty());
        assert_eq!(observe(&mut engine, at("19:00:12"), &["B"], &mut rows), COUNTED);
        assert_eq!(engine.watermark_ms(), Some(at("19:00:11.999")));
        assert_eq!(rows.0, vec![(at("18:55:10"), at("19:00:10"), vec!["A".to_string()], 2, false)]);

        // Key C at 19:00:05 is behind the watermark: it misses the fired window but counts in the 29 later ones.
        assert_eq!(observe(&mut engine, at("19:00:05"), &["C"], &mut rows), Admission::Counted { missed_windows: 1 });
        observe(&mut engine, at("19:00:20"), &["A"], &mut rows);
        assert_eq!(
            rows.0[1..],
            vec![
                (at("18:55:20"), at("19:00:20"), vec!["A".to_string()], 2, false),
                (at("18:55:20"), at("19:00:20"), vec!["B".to_string()], 1, false),
                (at("18:55:20"), at("19:00:20"), vec!["C".to_string()], 1, false),
            ]
        );
        observe(&mut engine, at("19:10:00"), &["D"], &mut rows);
        let c_windows = rows.0.iter().filter(|row| row.2 == ["C"]).count();
        assert_eq!(c_windows, 29);
    }

    #[test]
    fn an_event_whose_windows_all_fired_is_late() {
        let mut engine = hop();
        let mut rows = Collect::default();
        observe(&mut engine, at("19:00:00"), &["A"], &mut rows);
        observe(&mut engine, at("19:06:00"), &["A"], &mut rows);
        // The watermark is 19:05:59.999, so the window [19:01:00, 19:06:00) has fired too.
        assert_eq!(observe(&mut engine, at("19:01:00"), &["A"], &mut rows), Admission::Late);
        assert_eq!(observe(&mut engine, at("19:01:10"), &["A"], &mut rows), Admission::Counted { missed_windows: 29 });
    }

    #[test]
    fn zero_delay_counts_the_event_before_firing_its_own_window() {
        let mut engine = Engine::new(WindowSpec::new(10_000, 10_000, 0).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        observe(&mut engine, at("19:00:00"), &["A"], &mut rows);
        observe(&mut engine, at("19:00:09.999"), &["A"], &mut rows);
        assert_eq!(rows.0, vec![(at("19:00:00"), at("19:00:10"), vec!["A".to_string()], 2, false)]);
    }

    #[test]
    fn rows_come_in_group_order_and_windows_mark_completeness_from_the_first_event() {
        let mut engine = Engine::new(WindowSpec::new(20_000, 10_000, 1).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        for (time, user, page) in [("19:00:05", "b", "x"), ("19:00:06", "a", "y"), ("19:00:07", "a", "x")] {
            observe(&mut engine, at(time), &[user, page], &mut rows);
        }
        observe(&mut engine, at("19:00:15"), &["a", "x"], &mut rows);
        observe(&mut engine, at("19:00:40"), &["c", "c"], &mut rows);
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
        observe(&mut engine, at("19:00:00"), &["A"], &mut rows);
        let far = parse_timestamp_ms("9999-12-31 23:50:00").unwrap();
        assert_eq!(observe(&mut engine, far, &["B"], &mut rows), COUNTED);
        assert_eq!(rows.0.len(), 30);
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.open_strings), (1, 1, 1));
        assert_eq!(
            stats.state_bytes,
            PANE_BYTES + PANE_ENTRY_BYTES + GROUP_BYTES + GROUP_FIELD_BYTES + STRING_BYTES + 2
        );
    }

    #[test]
    fn state_is_freed_when_windows_close() {
        let mut engine = hop();
        let mut rows = Collect::default();
        for i in 0..1_000 {
            let user = format!("user{i}");
            observe(&mut engine, at("19:00:00") + i * 100, &[&user, "view", "/item/1"], &mut rows);
        }
        assert!(engine.stats().open_groups == 1_000);
        engine.advance(at("20:00:00"), &mut rows);
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.open_strings, stats.state_bytes), (0, 0, 0, 0));
    }

    #[test]
    fn the_budget_refuses_new_state_but_keeps_counting_known_groups() {
        let one_group = PANE_BYTES + PANE_ENTRY_BYTES + GROUP_BYTES + GROUP_FIELD_BYTES + STRING_BYTES + 2;
        let mut engine = Engine::new(WindowSpec::new(300_000, 10_000, 1).unwrap(), one_group);
        let mut rows = Collect::default();
        assert_eq!(observe(&mut engine, at("19:00:00"), &["A"], &mut rows), COUNTED);
        assert_eq!(observe(&mut engine, at("19:00:01"), &["B"], &mut rows), Admission::OverCapacity);
        assert_eq!(observe(&mut engine, at("19:00:02"), &["A"], &mut rows), COUNTED);
        // A new pane for a known group needs room too.
        assert_eq!(observe(&mut engine, at("19:00:12"), &["A"], &mut rows), Admission::OverCapacity);
        assert!(engine.stats().state_bytes <= one_group);
        engine.advance(at("19:05:01"), &mut rows);
        assert_eq!(rows.0.last().map(|row| row.3), Some(2));
        assert_eq!(observe(&mut engine, at("19:05:02"), &["B"], &mut rows), COUNTED);
    }

    /// Regression (windows_before_year_0000): an event at 0000-01-01 00:00:05 made rows whose window
    /// started in year -1, printed as "-001-12-31 23:55:10".
    #[test]
    fn events_whose_windows_leave_years_0000_to_9999_are_out_of_range() {
        let mut engine = hop();
        let mut rows = Collect::default();
        let early = parse_timestamp_ms("0000-01-01 00:00:05").unwrap();
        assert_eq!(observe(&mut engine, early, &["A"], &mut rows), Admission::OutOfRange);
        let first_whole = parse_timestamp_ms("0000-01-01 00:04:50").unwrap();
        assert_eq!(observe(&mut engine, first_whole, &["A"], &mut rows), COUNTED);
        let late = parse_timestamp_ms("9999-12-31 23:55:00").unwrap();
        assert_eq!(observe(&mut engine, late, &["A"], &mut rows), Admission::OutOfRange);
        assert_eq!(observe(&mut engine, late - 1, &["A"], &mut rows), COUNTED);
        assert!(rows
            .0
            .iter()
            .all(|row| row.0 >= crate::time::MIN_TIMESTAMP_MS && row.1 <= crate::time::MAX_TIMESTAMP_MS));
        assert_eq!(rows.0.first().map(|row| row.0), Some(crate::time::MIN_TIMESTAMP_MS));
    }

    #[test]
    fn the_restart_margin_widens_what_is_marked_incomplete() {
        let spec = WindowSpec::new(20_000, 10_000, 1).unwrap();
        let mut rows = Collect::default();
        for (margin, complete_from) in [(0, "19:00:10"), (10_000, "19:00:20")] {
            rows.0.clear();
            let mut engine = Engine::new(spec, usize::MAX).with_restart_margin(margin);
            for second in 5..60 {
                observe(&mut engine, at(&format!("19:00:{second:02}")), &["A"], &mut rows);
            }
            let first_complete = rows.0.iter().find(|row| row.4).map(|row| row.0);
            assert_eq!(first_complete, Some(at(complete_from)), "margin {margin}");
            assert!(rows.0.iter().all(|row| row.4 == (row.0 >= at(complete_from))));
        }
    }

    #[test]
    fn integer_and_text_group_values_are_distinct_groups_in_type_then_value_order() {
        let mut engine = Engine::new(WindowSpec::new(10_000, 10_000, 0).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        for value in [
            GroupValue::Text("42"),
            GroupValue::Int(42),
            GroupValue::Int(-7),
            GroupValue::Text("10"),
            GroupValue::Int(42),
        ] {
            engine.observe(at("19:00:01"), &[value], &[], &mut rows);
        }
        engine.advance(at("19:00:10"), &mut rows);
        let summary: Vec<(String, u64)> = rows.0.iter().map(|row| (row.2[0].clone(), row.3)).collect();
        let expected = [("#-7", 1), ("#42", 2), ("10", 1), ("42", 1)];
        assert_eq!(summary, expected.map(|(group, count)| (group.to_string(), count)));
    }

    #[test]
    fn aggregates_combine_panes_and_skip_nulls() {
        use crate::aggregate::{
            Function,
            Number::{Float, Int},
        };
        let functions = [Function::Count, Function::Sum, Function::Min, Function::Avg, Function::CountField];
        let mut engine =
            Engine::new(WindowSpec::new(20_000, 10_000, 1).unwrap(), usize::MAX).with_aggregates(&functions);
        struct Values(Vec<(i64, Vec<Option<Number>>)>);
        impl RowSink for Values {
            fn row(&mut self, row: &Row<'_>) {
                self.0.push((row.window_start_ms, row.values.to_vec()));
            }
        }
        let mut rows = Values(Vec::new());
        let group = [GroupValue::Text("A")];
        for (time, value) in [("19:00:01", Some(Int(3))), ("19:00:02", None), ("19:00:11", Some(Float(0.5)))] {
            engine.observe(at(time), &group, &[None, value, value, value, value], &mut rows);
        }
        engine.advance(at("19:01:00"), &mut rows);
        assert_eq!(
            rows.0,
            vec![
                (at("18:59:50"), vec![Some(Int(2)), Some(Int(3)), Some(Int(3)), Some(Float(3.0)), Some(Int(1))]),
                (
                    at("19:00:00"),
                    vec![Some(Int(3)), Some(Float(3.5)), Some(Float(0.5)), Some(Float(1.75)), Some(Int(2))]
                ),
                (
                    at("19:00:10"),
                    vec![Some(Int(1)), Some(Float(0.5)), Some(Float(0.5)), Some(Float(0.5)), Some(Int(1))]
                ),
            ]
        );
        assert_eq!(engine.stats().state_bytes, 0, "every accumulator is accounted and freed");
    }
}
