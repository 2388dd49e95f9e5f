//! The window engine: Flink's `HOP`, `TUMBLE`, `CUMULATE` and `SESSION` with their aggregates on event
//! time, record by record, and early rows of open windows ([`early`]; sessions are in [`session`]).
//!
//! Events are aggregated per group in cells one pane (a slide or a step) wide; a window covers a run of
//! panes (see [`WindowSpec`]), so a group's row for it combines the group's cells of those panes. A late event
//! lands in its pane and is therefore counted by exactly the windows containing it that have not fired
//! yet, which is Flink's rule.
//!
//! Firing and writing are apart: a window fires when the watermark passes it, and its rows are written
//! by [`Engine::emit`], which does a bounded amount of work per call and resumes where it stopped. So one
//! record that moves the watermark far cannot cause unbounded work: the rows it fires are written over
//! the following calls, in the same order. Events that arrive in between are kept out of the windows
//! that fired before them.

mod early;
mod group_order;
mod session;

use std::collections::{BTreeMap, BTreeSet};

use crate::aggregate::NO_SET;
use crate::aggregate::{Accumulator, Function, Input, Number};
use crate::chunked::{Chunked, CHUNK};
use crate::distinct::{union_len, DistinctSets, ENTRY_BYTES, SET_BYTES};
use crate::hll::{self, Hlls, Registers};
use crate::intern::{Boxed, IdRows, Interner};
use crate::json;
use crate::sketch::{Sketch, Sketches, BUCKET_BYTES, SKETCH_BYTES};
use crate::time::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};
use crate::top_n::{Candidate, Ranking, TopNSpec};

/// Which windows an event belongs to, as Flink SQL's window table functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `HOP` (and `TUMBLE`, the slide equal to the size): windows `[k·slide, k·slide + size)`.
    Hop,
    /// `CUMULATE`: in each period `[p, p + size)` aligned to the epoch, the windows `[p, p + j·step)` for
    /// j = 1 … size/step, each firing at its own end.
    Cumulate,
    /// `SESSION` (partitioned by the group): a group's events closer than the gap (the size) to each
    /// other make one window, from the first event to the last plus the gap (see [`session`]).
    Session,
}

/// The window kind, size, pane width (the hop's slide or the cumulation's step) and watermark delay in
/// milliseconds. Build it with [`WindowSpec::new`], [`WindowSpec::cumulate`] or [`WindowSpec::session`].
///
/// Every window ends at the end of a pane, and no two windows end together, so the engine names a window
/// by its last pane: window `w` is `[first_pane(w)·pane, (w + 1)·pane)` and fires when the watermark
/// reaches its end − 1 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    kind: WindowKind,
    size_ms: i64,
    slide_ms: i64,
    delay_ms: i64,
    /// `size_ms / slide_ms`, divided once: every row asks for its window's first pane.
    panes_per_window: i64,
}

impl WindowSpec {
    /// Hopping windows; `None` unless the slide is positive and the size a positive whole multiple of it.
    pub fn new(size_ms: i64, slide_ms: i64, delay_ms: i64) -> Option<WindowSpec> {
        Self::of_kind(WindowKind::Hop, size_ms, slide_ms, delay_ms)
    }

    /// Cumulating windows of at most `size_ms`, growing by `step_ms`; the same conditions.
    pub fn cumulate(size_ms: i64, step_ms: i64, delay_ms: i64) -> Option<WindowSpec> {
        Self::of_kind(WindowKind::Cumulate, size_ms, step_ms, delay_ms)
    }

    /// Session windows that close after `gap_ms` without an event of their group; the gap is the size.
    pub fn session(gap_ms: i64, delay_ms: i64) -> Option<WindowSpec> {
        Self::of_kind(WindowKind::Session, gap_ms, 1, delay_ms)
    }

    fn of_kind(kind: WindowKind, size_ms: i64, slide_ms: i64, delay_ms: i64) -> Option<WindowSpec> {
        let valid = slide_ms > 0 && size_ms > 0 && size_ms % slide_ms == 0 && delay_ms >= 0;
        valid.then(|| WindowSpec { kind, size_ms, slide_ms, delay_ms, panes_per_window: size_ms / slide_ms })
    }

    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The largest window's size.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The pane width: the hop's slide, the cumulation's step.
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }

    pub fn delay_ms(&self) -> i64 {
        self.delay_ms
    }

    fn panes_per_window(&self) -> i64 {
        self.panes_per_window
    }

    fn pane_of(&self, event_ms: i64) -> i64 {
        event_ms.div_euclid(self.slide_ms)
    }

    /// The first pane of window `window`.
    fn first_pane(&self, window: i64) -> i64 {
        match self.kind {
            WindowKind::Hop | WindowKind::Session => window - self.panes_per_window() + 1,
            WindowKind::Cumulate => window - window.rem_euclid(self.panes_per_window()),
        }
    }

    /// The last window that holds `pane`; the first is `pane` itself.
    fn last_window_of(&self, pane: i64) -> i64 {
        match self.kind {
            WindowKind::Hop | WindowKind::Session => pane + self.panes_per_window() - 1,
            WindowKind::Cumulate => self.first_pane(pane) + self.panes_per_window() - 1,
        }
    }

    /// The last window that has fired once the watermark is `watermark_ms`: window `w` fires when
    /// `watermark ≥ (w + 1)·pane − 1`.
    fn fired_through(&self, watermark_ms: i64) -> i64 {
        (watermark_ms + 1).div_euclid(self.slide_ms) - 1
    }
}

/// One value of a group-by field: an integer stays an integer, and `42` and `"42"` are different groups.
/// Groups order field by field, integers (by value) before strings (by bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupValue<'a> {
    Int(i64),
    Text(&'a str),
}

/// A group value as the engine keeps it: a type tag, then the value's text (`i42`; `sab` for the string
/// `ab`, whose JSON is its text quoted; `ea"b` for one with characters JSON escapes). A row writes it
/// without parsing it again, and almost always without escaping it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupText<'a>(&'a str);

impl<'a> GroupText<'a> {
    /// Writes `value` tagged into `out`.
    pub(crate) fn write(value: &GroupValue<'_>, out: &mut String) {
        out.clear();
        match value {
            GroupValue::Int(int) => {
                out.push('i');
                json::write_int(out, *int);
            }
            GroupValue::Text(text) => {
                out.push(if json::needs_escape(text) { 'e' } else { 's' });
                out.push_str(text);
            }
        }
    }

    pub fn value(self) -> GroupValue<'a> {
        match self.0.split_at(1) {
            ("i", int) => GroupValue::Int(int.parse().expect("tagged integers are written by `write`")),
            (_, text) => GroupValue::Text(text),
        }
    }

    /// Appends the value as JSON.
    pub fn write_json(self, out: &mut String) {
        match self.0.split_at(1) {
            ("i", int) => out.push_str(int),
            ("s", text) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            (_, text) => json::write_string(out, text),
        }
    }
}

/// A row's group values in `GROUP_BY` order, read by id where the engine keeps them (none is gathered per row).
#[derive(Clone, Copy)]
pub struct GroupFields<'a> {
    values: &'a Interner<Boxed<str>>,
    ids: &'a [u32],
}

impl<'a> GroupFields<'a> {
    pub fn iter(self) -> impl ExactSizeIterator<Item = GroupText<'a>> {
        self.ids.iter().map(move |&id| GroupText(self.values.get(id)))
    }
}

impl std::fmt::Debug for GroupFields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One output row: the aggregates of one group in one window.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub group: GroupFields<'a>,
    /// Events counted for the group in the window.
    pub count: u64,
    /// One value per aggregate, in configuration order; `None` is JSON null.
    pub values: &'a [Option<Number>],
    /// False when the window may miss events another instance handled: it began before this engine's
    /// first event plus the watermark delay and the restart margin.
    pub complete: bool,
    /// Its rank in its partition of the window, under `TOP_N`.
    pub rank: Option<u64>,
    /// An early row (`EMIT_EARLY`): the window is still open, and its final row comes later.
    pub early: bool,
}

/// Receives the rows of fired windows, in window order, then group order.
pub trait RowSink {
    /// Takes one row; false asks the engine to stop writing until its next [`Engine::emit`].
    fn row(&mut self, row: &Row<'_>) -> bool;
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in every window containing it but `missed_windows`, which had already fired.
    Counted { missed_windows: u32 },
    /// Every window containing the event has fired.
    Late,
    /// Counting it would need `needed_bytes` of new state, more than the budget has left.
    OverCapacity { needed_bytes: usize },
    /// Some window containing the event starts before year 0000 or ends after year 9999, where window
    /// times have no text form.
    OutOfRange,
}

// Accounted bytes of state: the constants model the module's wasm32 layout (see the README's limits), where a
// vector that grows by doubling may hold twice its length. The interners' slots (live or free) and indexes are
// accounted as they are (`Engine::table_bytes`).

/// The module's allocator (wasi-libc's dlmalloc on wasm32) puts a 4-byte header before each allocation and
/// rounds it up to 16 bytes (`pad_request`).
const ALLOCATION_HEADER_BYTES: usize = 4;
const ALLOCATION_ALIGN_BYTES: usize = 16;

/// The heap an interned text of `len` bytes takes beyond its slot: its box, with the allocator's header and
/// rounding (an empty text is not allocated).
fn text_bytes(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (len + ALLOCATION_HEADER_BYTES).next_multiple_of(ALLOCATION_ALIGN_BYTES)
}

/// A value's slot: its users and hash (8), the pointer to its box (8), and its share of the two chunks'
/// headers and places in the vectors of chunks (24 bytes a chunk of 32, rounded up).
const VALUE_SLOT_BYTES: usize = 18;
/// The longest integer group value as text (`-9223372036854775808`).
const MAX_INT_TEXT_BYTES: usize = 20;
/// A live group beyond its slot: its places in the group order (sorted, and merged for the next pass: 4
/// each, as vectors sized once a pass; new: 8, as a heap in a vector).
const GROUP_BYTES: usize = 16;
/// A group's slot beyond its value ids: its users and hash (8), its cell list's ends and events (12), and its
/// share of three chunks' headers and places.
const GROUP_SLOT_BYTES: usize = 23;
/// A group value's id.
const GROUP_FIELD_BYTES: usize = 4;
/// The most group fields a candidate's value ids can hold (GROUP_BY's limit).
const MAX_GROUP_FIELDS: usize = 8;
/// The unused room of the last chunk of each vector kept in chunks, whatever the open groups: values' slots
/// and pointers, groups' slots and value ids, and cell lists.
const PARTIAL_CHUNKS_BYTES: usize = CHUNK * (8 + 8 + 8 + GROUP_FIELD_BYTES * MAX_GROUP_FIELDS + 12);
/// A Top-N candidate in the module: its rank, count and visit order, two vectors and their allocations.
const CANDIDATE_BYTES: usize = 64;
/// One aggregate's value in a candidate's row.
const ROW_VALUE_BYTES: usize = 16;
/// A partition's entry in the Top-N index (key vector, index, hash slot) and its heap.
const PARTITION_BYTES: usize = 96;
/// A pane's entry in the map of open panes.
const PANE_BYTES: usize = 48;
/// One cell slot.
const CELL_BYTES: usize = std::mem::size_of::<Cell>();
/// One aggregate's state in one cell.
const ACCUMULATOR_BYTES: usize = std::mem::size_of::<Accumulator>();

/// At most this much work (a unit per group visited and per cell walked, plus one per aggregate that keeps
/// state for each cell combined into a row, two per cell freed, one per level of the heap a new group is
/// taken from) per call of [`Engine::emit`]: what is left waits for the next call.
pub const WORK_PER_EMIT: usize = 100_000;

/// A snapshot of the engine's size, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub open_panes: usize,
    pub open_groups: usize,
    pub open_strings: usize,
    pub state_bytes: usize,
    pub watermark_ms: Option<i64>,
    /// Fired windows from the next one with rows left to write to the last (empty ones included).
    pub backlog_windows: u64,
}

const NIL: u32 = u32::MAX;

/// A group's events in one pane: the cells of a group form a list in pane order.
#[derive(Debug, Clone, Copy)]
struct Cell {
    pane: i64,
    /// The first window that counts these events. Events that arrive after some windows of their pane
    /// have fired but before those windows' rows are all written get a cell of their own, hidden from them.
    visible_from: i64,
    next: u32,
    count: u32,
}

/// The first and last cell of a group (`NIL` for an id no live group has), and the events its cells hold
/// (`u32::MAX` once that many: no longer kept): a row that counts all its cells takes its count from here
/// instead of walking them.
#[derive(Debug, Clone, Copy)]
struct CellList {
    first: u32,
    last: u32,
    events: u32,
}

const EMPTY_LIST: CellList = CellList { first: NIL, last: NIL, events: 0 };

impl Default for CellList {
    fn default() -> Self {
        EMPTY_LIST
    }
}

/// The window whose rows are being written (under `SESSION`, the end of the sessions), and how far
/// through the groups.
#[derive(Debug, Clone, Copy)]
struct Pass {
    window: i64,
    /// Groups visited so far.
    position: usize,
    /// The next group of the sorted order to visit, and where among them the smallest group still to merge
    /// in goes, once found (see [`group_order`]).
    from: usize,
    merge_at: Option<usize>,
}

/// The cells, from the first of a group's list, that one row combines.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// Window `w` from its first pane: the cells of its panes that it sees. (Earlier cells, which only
    /// early rows meet, are walked past.)
    Window { window: i64, first_pane: i64 },
    /// The session ending then: the leading cells that carry that end.
    Session(i64),
}

impl Span {
    /// Whether the row walks `cell` (the walk stops at the first it does not) and then counts it.
    fn walks(self, cell: &Cell) -> Option<bool> {
        match self {
            Span::Window { window, first_pane } => {
                (cell.pane <= window).then_some(cell.pane >= first_pane && cell.visible_from <= window)
            }
            Span::Session(end) => (cell.visible_from == end).then_some(true),
        }
    }
}

pub struct Engine {
    spec: WindowSpec,
    budget_bytes: usize,
    state_bytes: usize,
    /// The part of `state_bytes` that is the interners' slots and indexes ([`Engine::table_bytes`]).
    table_bytes: usize,
    restart_margin_ms: i64,
    work_per_emit: usize,
    /// The aggregates, in output order.
    functions: Vec<Function>,
    /// The empty state of each aggregate that keeps one: one block per cell.
    empty_accumulators: Vec<Accumulator>,
    /// Group values as [`GroupText`], shared by every group that holds them.
    values: Interner<Boxed<str>>,
    /// A group is its field values as value ids; its users are its cells.
    groups: Interner<IdRows>,
    /// Each group's cells, by group id.
    lists: Chunked<CellList>,
    cells: CellStore,
    /// Cells hidden from some windows of their pane (`visible_from` after it; not under `SESSION`).
    hidden_cells: usize,
    /// Open panes and how many cells each has.
    panes: BTreeMap<i64, u32>,
    /// Live groups in output order; the order the pass under way writes for the next; heaps of the groups
    /// it merges in and of those created since it began (see [`group_order`]).
    ordered: Vec<u32>,
    merged: Vec<u32>,
    merging: Vec<u32>,
    arriving: Vec<u32>,
    max_event_ms: Option<i64>,
    first_event_ms: Option<i64>,
    /// Every window through this one has all its rows written.
    written_through: Option<i64>,
    pass: Option<Pass>,
    // Buffers reused across calls.
    group_ids: Vec<u32>,
    /// The values an event would intern, counted while its state is sized.
    new_values: usize,
    tagged: String,
    /// The row being made: one state per aggregate that keeps one, from its first counted pane's (see
    /// [`Engine::combine`]; left as the last row made when a walk counts no pane, as no row is made then).
    row_accumulators: Vec<Accumulator>,
    row_values: Vec<Option<Number>>,
    /// `count_distinct`: the sets of every group and pane, and for the row being made, each such
    /// aggregate's values from all its panes, then their number.
    distinct: DistinctSets,
    row_distinct: Vec<Vec<u32>>,
    row_distinct_counts: Vec<u64>,
    /// `percentile`: the sketches of every group and pane, and for the row being made, each such aggregate's
    /// panes merged.
    sketches: Sketches,
    row_sketches: Vec<Sketch>,
    /// `approx_count_distinct`: the HyperLogLogs of every group and pane; for the row being made, each such
    /// aggregate's estimate, and the scratch a union is made in.
    hlls: Hlls,
    row_hll_counts: Vec<u64>,
    hll_hashes: Vec<u64>,
    hll_registers: Box<Registers>,
    /// Under `TOP_N`: the candidates of the window whose groups are being visited, then its ranked rows
    /// left to write; what each group's state counts for a candidate it may leave behind; the partition
    /// key of the group being offered.
    top_n: Option<Ranking<Held>>,
    candidate_reserve: usize,
    partition_key: Vec<u32>,
    /// Under `SESSION`: every session not yet written, by (end, group), and the groups of those ending
    /// together that are being written.
    sessions: BTreeSet<(i64, u32)>,
    session_batch: Vec<u32>,
    /// Under `EMIT_EARLY`: its period, the last multiple of it the watermark passed, whether an early pass is
    /// due, the groups noted since the last one, and the pass under way.
    early_every_ms: Option<i64>,
    early_tick: Option<i64>,
    early_due: bool,
    noted: early::Noted,
    early_pass: Option<early::EarlyPass>,
}

/// A Top-N candidate's group: its value ids (each holding a use of its value, so the text outlives the
/// group), and whether it carries the reserve its freed group counted for it.
#[derive(Debug)]
struct Held {
    values: Vec<u32>,
    owns_reserve: bool,
}

impl Engine {
    /// An engine that counts events (`count`) and keeps state within `budget_bytes`.
    pub fn new(spec: WindowSpec, budget_bytes: usize) -> Engine {
        Engine {
            spec,
            budget_bytes,
            state_bytes: PARTIAL_CHUNKS_BYTES,
            table_bytes: 0,
            restart_margin_ms: 0,
            work_per_emit: WORK_PER_EMIT,
            functions: vec![Function::Count],
            empty_accumulators: Vec::new(),
            values: Interner::default(),
            groups: Interner::default(),
            lists: Chunked::default(),
            cells: CellStore::default(),
            hidden_cells: 0,
            panes: BTreeMap::new(),
            ordered: Vec::new(),
            merged: Vec::new(),
            merging: Vec::new(),
            arriving: Vec::new(),
            max_event_ms: None,
            first_event_ms: None,
            written_through: None,
            pass: None,
            group_ids: Vec::new(),
            new_values: 0,
            tagged: String::new(),
            row_accumulators: Vec::new(),
            row_values: Vec::new(),
            distinct: DistinctSets::default(),
            row_distinct: Vec::new(),
            row_distinct_counts: Vec::new(),
            sketches: Sketches::default(),
            row_sketches: Vec::new(),
            hlls: Hlls::default(),
            row_hll_counts: Vec::new(),
            hll_hashes: Vec::new(),
            hll_registers: Box::new([0; hll::DENSE_BYTES]),
            top_n: None,
            candidate_reserve: 0,
            partition_key: Vec::new(),
            sessions: BTreeSet::new(),
            session_batch: Vec::new(),
            early_every_ms: None,
            early_tick: None,
            early_due: false,
            noted: early::Noted::new(),
            early_pass: None,
        }
    }

    /// Writes only each window's Top-N rows (see [`crate::top_n`]), each with its rank. Every group's state
    /// counts [`Engine::candidate_bytes`] more, for the candidate it may leave behind when freed.
    pub fn with_top_n(mut self, spec: TopNSpec) -> Engine {
        self.candidate_reserve = Self::candidate_bytes(spec.partition_by.len(), &self.functions);
        self.top_n = Some(Ranking::new(spec));
        self
    }

    /// The most a Top-N candidate costs: the candidate with its value ids and row values (twice, as a heap
    /// may double its room), and an entry in the partition index. 320 bytes with one aggregate, 32 more for
    /// each other, 4 for each partition field.
    pub fn candidate_bytes(partition_fields: usize, functions: &[Function]) -> usize {
        let candidate = CANDIDATE_BYTES + ROW_VALUE_BYTES * functions.len() + GROUP_FIELD_BYTES * MAX_GROUP_FIELDS;
        2 * candidate + PARTITION_BYTES + GROUP_FIELD_BYTES * partition_fields
    }

    /// Computes these aggregates instead of the count alone.
    pub fn with_aggregates(mut self, functions: &[Function]) -> Engine {
        self.functions = functions.to_vec();
        self.empty_accumulators = functions.iter().filter_map(|f| Accumulator::empty(*f)).collect();
        self.cells = CellStore { blocks: self.empty_accumulators.len(), ..CellStore::default() };
        self.row_accumulators = self.empty_accumulators.clone();
        let distinct = functions.iter().filter(|function| **function == Function::CountDistinct).count();
        self.row_distinct = vec![Vec::new(); distinct];
        let percentiles = functions.iter().filter(|function| matches!(function, Function::Percentile(_))).count();
        self.row_sketches = vec![Sketch::default(); percentiles];
        self
    }

    /// Marks incomplete the windows that begin up to `margin_ms` later than the watermark delay alone
    /// would (see the README's "Restarts").
    pub fn with_restart_margin(mut self, margin_ms: i64) -> Engine {
        self.restart_margin_ms = margin_ms;
        self
    }

    /// Writes each open window's changed rows again whenever the watermark passes a multiple of
    /// `every_ms`, marked early (see [`early`]).
    pub fn with_early_rows(mut self, every_ms: i64) -> Engine {
        self.early_every_ms = Some(every_ms);
        self
    }

    /// Does at most `units` of work per [`Engine::emit`] instead of [`WORK_PER_EMIT`] (tests use tiny
    /// shares to make every stream leave rows for later calls).
    pub fn with_work_per_emit(mut self, units: usize) -> Engine {
        self.work_per_emit = units;
        self
    }

    /// Counts one event of `group` at `event_ms`, with one input per aggregate (`None`: absent or null;
    /// ignored by `count`), then advances the watermark. Rows of the windows that fire are written by
    /// [`Engine::emit`].
    pub fn observe(&mut self, event_ms: i64, group: &[GroupValue<'_>], inputs: &[Option<Input<'_>>]) -> Admission {
        if self.spec.kind == WindowKind::Session {
            return self.observe_session(event_ms, group, inputs);
        }
        let pane = self.spec.pane_of(event_ms);
        let last_window = self.spec.last_window_of(pane);
        let first_start = self.spec.first_pane(pane).checked_mul(self.spec.slide_ms);
        let last_end = (last_window + 1).checked_mul(self.spec.slide_ms);
        if first_start.is_none_or(|start| start < MIN_TIMESTAMP_MS) || last_end.is_none_or(|end| end > MAX_TIMESTAMP_MS)
        {
            return Admission::OutOfRange;
        }
        let fired = self.fired_through();
        if fired.is_some_and(|fired| last_window <= fired) {
            return Admission::Late;
        }
        // Windows that fired but are not all written must not see this event. The first window that holds
        // it is the one ending with its pane.
        let visible_from = match (fired, self.written_through) {
            (Some(fired), written) if written.is_none_or(|written| written < fired) => (fired + 1).max(pane),
            _ => pane,
        };
        let counted = self.count(pane, visible_from, group, inputs);
        self.advance(event_ms);
        if let Err(needed_bytes) = counted {
            return Admission::OverCapacity { needed_bytes };
        }
        let missed = fired.map_or(0, |fired| (fired - pane + 1).clamp(0, last_window - pane + 1));
        Admission::Counted { missed_windows: missed as u32 }
    }

    /// Moves the watermark to `event_ms − delay` if that is ahead; the windows it passes fire.
    pub fn advance(&mut self, event_ms: i64) {
        self.first_event_ms.get_or_insert(event_ms);
        if self.max_event_ms.is_none_or(|max| event_ms > max) {
            self.max_event_ms = Some(event_ms);
            self.tick();
        }
    }

    /// Largest event time seen minus the delay; `None` before the first event.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.max_event_ms.map(|max| max - self.spec.delay_ms)
    }

    /// The last window the watermark has passed.
    fn fired_through(&self) -> Option<i64> {
        self.watermark_ms().map(|watermark| self.spec.fired_through(watermark))
    }

    /// Whether fired windows still have rows to write.
    pub fn has_backlog(&self) -> bool {
        match self.spec.kind {
            WindowKind::Session => {
                let watermark = self.watermark_ms().unwrap_or(i64::MIN);
                self.pass.is_some() || self.sessions.first().is_some_and(|(end, _)| end - 1 <= watermark)
            }
            _ => self.backlog_windows() > 0,
        }
    }

    /// Fired windows from the next one with rows to write (some may hold no event).
    fn backlog_windows(&self) -> u64 {
        let Some(fired) = self.fired_through() else { return 0 };
        let next = self.pass.map(|pass| pass.window).or_else(|| self.next_window(fired));
        next.map_or(0, |window| (fired - window + 1) as u64)
    }

    /// Under `SESSION`, `open_panes` counts the sessions not yet written and `backlog_windows` those that
    /// fired.
    pub fn stats(&self) -> EngineStats {
        let (open_panes, backlog_windows) = match self.spec.kind {
            WindowKind::Session => self.session_counts(),
            _ => (self.panes.len(), self.backlog_windows()),
        };
        EngineStats {
            open_panes,
            open_groups: self.groups.len(),
            open_strings: self.values.len(),
            state_bytes: self.state_bytes,
            watermark_ms: self.watermark_ms(),
            backlog_windows,
        }
    }

    /// Writes the rows of fired windows, in window order then group order, until they are all written
    /// (true), or its work share ([`WORK_PER_EMIT`]) is spent or the sink asks to stop (false); the next call goes on
    /// from there. Each fired window that holds any event gives one row per group with events in it.
    pub fn emit(&mut self, sink: &mut impl RowSink) -> bool {
        if self.spec.kind == WindowKind::Session {
            return self.emit_sessions(sink);
        }
        let mut work = 0;
        self.emit_fired(&mut work, sink) && self.emit_early(&mut work, sink)
    }

    /// The rows of fired windows, within the work share (`work` is what is spent of it).
    fn emit_fired(&mut self, work: &mut usize, sink: &mut impl RowSink) -> bool {
        let Some(fired) = self.fired_through() else { return true };
        loop {
            let mut pass = match self.pass {
                Some(pass) => pass,
                None => match self.next_window(fired) {
                    Some(window) => self.begin_pass(window),
                    None => {
                        self.written_through = Some(fired);
                        return true;
                    }
                },
            };
            while self.has_next_group(&pass) {
                if *work >= self.work_per_emit {
                    self.pass = Some(pass);
                    return false;
                }
                let (group, taking) = self.next_group(&mut pass);
                let (cost, go_on) = self.visit(group, pass.position, self.window_span(pass.window), sink);
                self.keep_in_order(group);
                pass.position += 1;
                *work += taking + cost;
                if !go_on {
                    self.pass = Some(pass);
                    return false;
                }
            }
            if !self.write_ranked(pass.window, work, sink) {
                self.pass = Some(pass);
                return false;
            }
            self.end_pass(pass.window);
        }
    }

    /// The first window after those written that holds any event, if it has fired.
    fn next_window(&self, fired: i64) -> Option<i64> {
        let after = self.written_through.map_or(i64::MIN, |written| written + 1);
        let lowest = self.written_through.map_or(i64::MIN, |written| self.spec.first_pane(written + 1));
        let (&pane, _) = self.panes.range(lowest..).next()?;
        let window = pane.max(after);
        (window <= fired).then_some(window)
    }

    fn end_pass(&mut self, window: i64) {
        self.finish_order();
        self.pass = None;
        self.written_through = Some(window);
        self.give_memory_back();
    }

    /// Gives memory back once most of it is free: interned values and groups, then cells.
    fn give_memory_back(&mut self) {
        self.values.shrink_when_sparse();
        self.groups.shrink_when_sparse();
        self.lists.truncate(self.groups.slot_count());
        self.account_tables();
        self.compact_when_sparse();
    }

    /// Brings the tables' bytes in the state up to date, after values or groups were interned or the
    /// tables shrunk.
    fn account_tables(&mut self) {
        let now = self.table_bytes();
        self.state_bytes = self.state_bytes - self.table_bytes + now;
        self.table_bytes = now;
    }

    /// The interners' slots, live or free (a group's with its cell list), and their indexes.
    fn table_bytes(&self) -> usize {
        let group_slot = GROUP_SLOT_BYTES + GROUP_FIELD_BYTES * self.groups.store().width();
        self.values.index_bytes()
            + self.groups.index_bytes()
            + VALUE_SLOT_BYTES * self.values.slot_count()
            + group_slot * self.groups.slot_count()
    }

    /// What interning `inserts` new values adds to the tables: slots where no free one is left, and a larger
    /// index if it must grow.
    fn value_table_growth(&self, inserts: usize) -> usize {
        let new_slots = inserts.saturating_sub(self.values.free_slots());
        self.values.growth_bytes(inserts) + VALUE_SLOT_BYTES * new_slots
    }

    /// What interning a new group of `fields` values adds to the tables.
    fn group_table_growth(&self, fields: usize) -> usize {
        let new_slot = self.groups.free_slots() == 0;
        self.groups.growth_bytes(1) + usize::from(new_slot) * (GROUP_SLOT_BYTES + GROUP_FIELD_BYTES * fields)
    }

    /// Writes the group's row of `window` if it has events there, then frees its cells that no later window
    /// holds (a hop's first pane; a cumulation's whole period after its last window). Returns the work done and whether the sink wants more.
    fn visit(&mut self, group: u32, position: usize, span: Span, sink: &mut impl RowSink) -> (usize, bool) {
        let (count, bounds, mut work) = self.combine(group, span);
        let go_on = match (count, span) {
            (0, _) => true,
            (_, Span::Window { window, .. }) if self.top_n.is_some() => {
                // The group is freed below when no later window holds any of its cells (it has cells: its
                // count is not 0).
                let freed = self.cells.get(self.lists[group as usize].last).pane < self.spec.first_pane(window + 1);
                work += self.offer(group, position as u64, count, freed);
                true
            }
            _ => self.write_row(bounds, group, count, false, sink),
        };
        for sketch in &mut self.row_sketches {
            sketch.release_if_large();
        }
        while let Some(first) = Some(self.lists[group as usize].first).filter(|&first| first != NIL) {
            let cell = self.cells.get(first);
            let later_rows_need_it = match span {
                Span::Window { window, .. } => cell.pane >= self.spec.first_pane(window + 1),
                Span::Session(end) => cell.visible_from != end,
            };
            if later_rows_need_it {
                break;
            }
            self.lists[group as usize].first = cell.next;
            let events = &mut self.lists[group as usize].events;
            if *events != u32::MAX {
                *events -= cell.count;
            }
            self.free_cell(first);
            self.release_group(group);
            work += 2; // freeing the cell, and the group and its values with its last cell
        }
        (work, go_on)
    }

    /// Combines the group's cells that `span` counts into the row buffers (`row_accumulators`, the distinct
    /// counts, `row_sketches`, `row_hll_counts`). Returns the events counted, the row's window bounds and
    /// the work done. With no event counted the buffers do not describe a row, and none may be made.
    fn combine(&mut self, group: u32, span: Span) -> (u64, (i64, i64), usize) {
        if let Some(row) = self.count_of_whole_list(group, span) {
            return row;
        }
        let blocks = self.empty_accumulators.len();
        let mut count = 0u64;
        let mut work = 1;
        for values in &mut self.row_distinct {
            values.clear();
        }
        let mut at = self.lists[group as usize].first;
        let mut session_start = i64::MAX;
        let mut first = true;
        while let Some(counted) = Some(at).filter(|&at| at != NIL).and_then(|at| span.walks(&self.cells.get(at))) {
            let cell = self.cells.get(at);
            work += 1; // every cell walked, seen by this window or not
            if counted {
                // The first counted pane's block is copied: for the kinds merged below, that is what merging it
                // into the empty state gives; the kinds combined elsewhere (sets, sketches, HyperLogLogs) are
                // never read from `row_accumulators`.
                if first {
                    self.row_accumulators.copy_from_slice(self.cells.block(at));
                }
                session_start = session_start.min(cell.pane);
                count += u64::from(cell.count);
                let mut distinct = self.row_distinct.iter_mut();
                for (total, pane_state) in self.row_accumulators.iter_mut().zip(self.cells.block(at)) {
                    match pane_state {
                        Accumulator::Sketch(id) if *id != NO_SET => work += self.sketches.get(*id).buckets(),
                        Accumulator::Hll(id) if *id != NO_SET => work += self.hlls.get(*id).size(),
                        Accumulator::Distinct(set) => {
                            let values = self.distinct.values(*set);
                            distinct.next().expect("one per count_distinct").extend_from_slice(values);
                            work += values.len();
                        }
                        pane_state if !first => total.merge(pane_state),
                        _ => {}
                    }
                }
                work += blocks;
                first = false;
            }
            at = cell.next;
        }
        self.row_distinct_counts.clear();
        for values in &mut self.row_distinct {
            self.row_distinct_counts.push(union_len(values));
            if values.capacity() > 4_096 {
                *values = Vec::new(); // no scratch stays large
            }
        }
        self.sum_sketches(group, span);
        self.estimate_hlls(group, span);
        let bounds = match span {
            Span::Window { window, .. } => self.window_bounds(window),
            Span::Session(end) => (session_start, end),
        };
        (count, bounds, work)
    }

    /// A row of `count` alone whose window sees every cell of the group (the usual case: no cell is ahead of
    /// the window, behind its first pane or hidden from it) is the group's event count: no walk.
    /// As [`Engine::combine`].
    fn count_of_whole_list(&self, group: u32, span: Span) -> Option<(u64, (i64, i64), usize)> {
        let Span::Window { window, first_pane } = span else { return None };
        let list = self.lists[group as usize];
        let sees_all = self.empty_accumulators.is_empty()
            && self.hidden_cells == 0
            && list.first != NIL
            && list.events != u32::MAX
            && self.cells.get(list.first).pane >= first_pane
            && self.cells.get(list.last).pane <= window;
        sees_all.then(|| (u64::from(list.events), self.window_bounds(window), 1))
    }

    /// The row's aggregate values, from its count and `row_accumulators`, into `row_values`.
    fn fill_row_values(&mut self, count: u64) {
        debug_assert!(count > 0, "a row counts at least one pane, copied into `row_accumulators`");
        self.row_values.clear();
        let mut accumulators = self.row_accumulators.iter();
        let mut distinct_counts = self.row_distinct_counts.iter();
        let mut sketches = self.row_sketches.iter();
        let mut hll_counts = self.row_hll_counts.iter();
        for function in &self.functions {
            self.row_values.push(match function {
                Function::ApproxCountDistinct => {
                    accumulators.next();
                    hll_counts.next().map(|&estimate| Number::Int(estimate as i64))
                }
                Function::Percentile(q) => {
                    accumulators.next();
                    sketches.next().and_then(|sketch| sketch.quantile(*q))
                }
                Function::Count => Some(Number::Int(i64::try_from(count).unwrap_or(i64::MAX))),
                Function::CountDistinct => {
                    accumulators.next();
                    distinct_counts.next().map(|&distinct| Number::Int(distinct as i64))
                }
                function => accumulators.next().and_then(|acc| acc.result(*function)),
            });
        }
    }

    /// For each `percentile` aggregate, the sum of the group's sketches of the panes `window` sees.
    fn sum_sketches(&mut self, group: u32, span: Span) {
        let mut block_of_sketch = 0;
        for (index, function) in self.functions.iter().filter(|function| function.reads_a_field()).enumerate() {
            let Function::Percentile(_) = function else { continue };
            let (cells, sketches) = (&self.cells, &self.sketches);
            let panes = counted_cells(cells, self.lists[group as usize].first, span).filter_map(|at| {
                match cells.block(at)[index] {
                    Accumulator::Sketch(id) if id != NO_SET => Some(sketches.get(id)),
                    _ => None,
                }
            });
            self.row_sketches[block_of_sketch].sum_of(panes);
            block_of_sketch += 1;
        }
    }

    /// For each `approx_count_distinct` aggregate, the estimate of the union of the group's HyperLogLogs of the
    /// panes `window` sees.
    fn estimate_hlls(&mut self, group: u32, span: Span) {
        self.row_hll_counts.clear();
        for (index, function) in self.functions.iter().filter(|function| function.reads_a_field()).enumerate() {
            let Function::ApproxCountDistinct = function else { continue };
            let (cells, hlls) = (&self.cells, &self.hlls);
            let panes = counted_cells(cells, self.lists[group as usize].first, span).filter_map(|at| {
                match cells.block(at)[index] {
                    Accumulator::Hll(id) if id != NO_SET => Some(hlls.get(id)),
                    _ => None,
                }
            });
            let estimate = hll::union_estimate(panes, &mut self.hll_hashes, &mut self.hll_registers);
            self.row_hll_counts.push(estimate);
        }
        if self.hll_hashes.capacity() > 4 * hll::SPARSE_MAX {
            self.hll_hashes = Vec::new(); // no scratch stays large
        }
    }

    fn write_row(&mut self, bounds: (i64, i64), group: u32, count: u64, early: bool, sink: &mut impl RowSink) -> bool {
        self.fill_row_values(count);
        let fields = self.group_fields(self.groups.get(group));
        sink.row(&self.row(bounds, fields, count, &self.row_values, None, early))
    }

    fn window_span(&self, window: i64) -> Span {
        Span::Window { window, first_pane: self.spec.first_pane(window) }
    }

    /// Window `window`'s start and end.
    fn window_bounds(&self, window: i64) -> (i64, i64) {
        (self.spec.first_pane(window) * self.spec.slide_ms, (window + 1) * self.spec.slide_ms)
    }

    /// A group's values, from their ids.
    fn group_fields<'r>(&'r self, ids: &'r [u32]) -> GroupFields<'r> {
        GroupFields { values: &self.values, ids }
    }

    fn row<'r>(
        &self,
        (window_start_ms, window_end_ms): (i64, i64),
        group: GroupFields<'r>,
        count: u64,
        values: &'r [Option<Number>],
        rank: Option<u64>,
        early: bool,
    ) -> Row<'r> {
        let complete = self
            .first_event_ms
            .is_some_and(|first| window_start_ms > first + self.spec.delay_ms + self.restart_margin_ms);
        Row { window_start_ms, window_end_ms, group, count, values, complete, rank, early }
    }

    /// Offers the group's row to the Top-N ranking; returns the work it took. A kept candidate holds a use of
    /// each of the group's values; when the group is about to be freed (`freed`), the candidate takes over the
    /// reserve the group's state counted for it, so the state never grows while a window is ranked.
    fn offer(&mut self, group: u32, visited: u64, count: u64, freed: bool) -> usize {
        self.fill_row_values(count);
        let ids = self.groups.get(group);
        let top_n = self.top_n.as_mut().expect("offered under TOP_N");
        self.partition_key.clear();
        self.partition_key.extend(top_n.spec().partition_by.iter().map(|&field| ids[field]));
        if !top_n.would_keep(&self.partition_key, self.row_values[top_n.spec().by], visited) {
            // The row's values, its partition key, and finding and comparing with the partition's last.
            return 3 + self.partition_key.len();
        }
        let ids = ids.to_vec();
        for &id in &ids {
            self.values.acquire_id(id);
        }
        let work = 2 + ids.len() + self.row_values.len();
        let candidate = Candidate {
            group: Held { values: ids, owns_reserve: freed },
            count,
            values: self.row_values.clone(),
            visited,
        };
        let pushed_out = self.top_n.as_mut().expect("offered under TOP_N").offer(&self.partition_key, candidate);
        if freed {
            // Counted again here, as the group's release after this visit takes it off.
            self.state_bytes += self.candidate_reserve;
        }
        if let Some(pushed_out) = pushed_out {
            self.drop_candidate(pushed_out);
        }
        work
    }

    fn drop_candidate(&mut self, candidate: Candidate<Held>) {
        if candidate.group.owns_reserve {
            self.state_bytes -= self.candidate_reserve;
        }
        for &value in &candidate.group.values {
            self.release_value(value);
        }
    }

    /// Under `TOP_N`, once every group of the window is visited: writes its ranked rows, within the work
    /// share (one unit per row and field). False when the share is spent or the sink asks to stop.
    fn write_ranked(&mut self, window: i64, work: &mut usize, sink: &mut impl RowSink) -> bool {
        while self.top_n.is_some() {
            if *work >= self.work_per_emit {
                return false;
            }
            let Some((rank, candidate)) = self.top_n.as_mut().and_then(Ranking::next_ranked) else { break };
            *work += 1 + candidate.group.values.len();
            let fields = self.group_fields(&candidate.group.values);
            let bounds = self.window_bounds(window);
            let go_on = sink.row(&self.row(bounds, fields, candidate.count, &candidate.values, Some(rank), false));
            self.drop_candidate(candidate);
            if !go_on {
                return false;
            }
        }
        true
    }

    /// Adds one event to its group's cell of `pane` if the budget allows what that needs; if not, the bytes
    /// it would need.
    fn count(
        &mut self,
        pane: i64,
        visible_from: i64,
        group: &[GroupValue<'_>],
        inputs: &[Option<Input<'_>>],
    ) -> Result<(), usize> {
        let (mut new_bytes, known_group) = self.find_group(group);
        let known_cell = known_group.and_then(|id| self.find_cell(id, pane, visible_from));
        new_bytes += self.side_state_bytes(known_cell, inputs) + self.noting_bytes(known_group, pane, visible_from);
        new_bytes += self.value_table_growth(self.new_values);
        if let (Some(cell), Some(group_id)) = (known_cell, known_group) {
            // Only new distinct values, sketch buckets and notes for early rows can need new state here.
            if self.state_bytes + new_bytes > self.budget_bytes {
                return Err(new_bytes);
            }
            self.add_to_cell(group_id, cell, inputs);
            self.note(group_id, pane, visible_from);
            return Ok(());
        }
        new_bytes += self.new_cell_bytes();
        if !self.panes.contains_key(&pane) {
            new_bytes += PANE_BYTES;
        }
        if known_group.is_none() {
            new_bytes += self.group_bytes() + self.group_table_growth(group.len());
        }
        if self.state_bytes + new_bytes > self.budget_bytes {
            return Err(new_bytes);
        }
        let group_id = self.acquire_group(known_group, group);
        let cell = self.new_cell(Cell { pane, visible_from, next: NIL, count: 0 });
        self.hidden_cells += usize::from(visible_from != pane);
        self.link_cell(group_id, cell);
        self.add_to_cell(group_id, cell, inputs);
        self.note(group_id, pane, visible_from);
        let cells_in_pane = self.panes.entry(pane).or_insert_with(|| {
            self.state_bytes += PANE_BYTES;
            0
        });
        *cells_in_pane += 1;
        Ok(())
    }

    /// The group's id if it is open, and the bytes its values not yet interned would need (counted in
    /// `new_values`).
    fn find_group(&mut self, group: &[GroupValue<'_>]) -> (usize, Option<u32>) {
        let mut new_bytes = 0;
        self.new_values = 0;
        self.group_ids.clear();
        for value in group {
            GroupText::write(value, &mut self.tagged);
            match self.values.find(&self.tagged) {
                Some(id) => self.group_ids.push(id),
                None => {
                    new_bytes += text_bytes(self.tagged.len());
                    self.new_values += 1;
                }
            }
        }
        let known = if self.group_ids.len() == group.len() { self.groups.find(&self.group_ids) } else { None };
        (new_bytes, known)
    }

    /// The group's cell for `pane` whose events are visible from `visible_from`.
    fn find_cell(&self, group: u32, pane: i64, visible_from: i64) -> Option<u32> {
        let list = self.lists[group as usize];
        let last = self.cells.get(list.last);
        if last.pane == pane && last.visible_from == visible_from {
            return Some(list.last);
        }
        let mut at = list.first;
        while at != NIL {
            let cell = self.cells.get(at);
            if cell.pane == pane && cell.visible_from == visible_from {
                return Some(at);
            }
            at = cell.next;
        }
        None
    }

    fn add_to_cell(&mut self, group: u32, cell: u32, inputs: &[Option<Input<'_>>]) {
        let slot = self.cells.get_mut(cell);
        slot.count = slot.count.saturating_add(1);
        let events = &mut self.lists[group as usize].events;
        *events = events.saturating_add(1);
        let mut block = 0;
        for (index, &input) in inputs.iter().enumerate() {
            let function = self.functions[index];
            if !function.reads_a_field() {
                continue;
            }
            match (function, input) {
                (Function::CountDistinct | Function::Percentile(_) | Function::ApproxCountDistinct, None) => {}
                (Function::ApproxCountDistinct, Some(value)) => self.add_to_hll(cell, block, value),
                (Function::CountDistinct, Some(value)) => self.add_distinct(cell, block, value),
                (Function::Percentile(_), Some(value)) => self.add_to_sketch(cell, block, value),
                (_, input) => self.cells.block_mut(cell)[block].add(input.and_then(Input::number)),
            }
            block += 1;
        }
    }

    /// Adds a value to the cell's set of a `count_distinct` aggregate (its `block`), interning its text.
    fn add_distinct(&mut self, cell: u32, block: usize, value: Input<'_>) {
        value.write_tagged(&mut self.tagged);
        let before = self.values.len();
        let id = self.values.acquire(&self.tagged);
        if self.values.len() > before {
            self.state_bytes += text_bytes(self.tagged.len());
            self.account_tables();
        }
        let Accumulator::Distinct(mut set) = self.cells.block(cell)[block] else { return };
        match self.distinct.insert(&mut set, id) {
            Some(grown) => self.state_bytes += grown,
            // Already in the set, which holds a use of it.
            None => {
                self.values.release(id);
            }
        }
        self.cells.block_mut(cell)[block] = Accumulator::Distinct(set);
    }

    /// Adds a value's hash to the cell's HyperLogLog of an `approx_count_distinct` aggregate (its `block`).
    fn add_to_hll(&mut self, cell: u32, block: usize, value: Input<'_>) {
        let Accumulator::Hll(mut id) = self.cells.block(cell)[block] else { return };
        if id == NO_SET {
            id = self.hlls.create();
            self.state_bytes += hll::SKETCH_BYTES;
            self.cells.block_mut(cell)[block] = Accumulator::Hll(id);
        }
        value.write_tagged(&mut self.tagged);
        let change = self.hlls.get_mut(id).add(hll::hash(&self.tagged));
        self.state_bytes = self.state_bytes.saturating_add_signed(change);
    }

    /// Adds a number to the cell's sketch of a `percentile` aggregate (its `block`).
    fn add_to_sketch(&mut self, cell: u32, block: usize, value: Input<'_>) {
        let (Accumulator::Sketch(mut id), Some(number)) = (self.cells.block(cell)[block], value.number()) else {
            return;
        };
        if id == NO_SET {
            id = self.sketches.create();
            self.state_bytes += SKETCH_BYTES;
            self.cells.block_mut(cell)[block] = Accumulator::Sketch(id);
        }
        self.state_bytes += self.sketches.get_mut(id).add(number);
    }

    /// The state the `count_distinct` and `percentile` inputs of an event would add to `cell` (a new one when
    /// `None`): at most, as two such aggregates of one field count its text twice here. Adds the values not
    /// yet interned to `new_values`.
    fn side_state_bytes(&mut self, cell: Option<u32>, inputs: &[Option<Input<'_>>]) -> usize {
        let mut bytes = 0;
        let with_state = self.functions.iter().zip(inputs).filter(|(function, _)| function.reads_a_field());
        for (block, (&function, &input)) in with_state.enumerate() {
            let state = cell.map(|cell| self.cells.block(cell)[block]);
            if let (Function::ApproxCountDistinct, Some(value)) = (function, input) {
                value.write_tagged(&mut self.tagged);
                bytes += match state {
                    Some(Accumulator::Hll(id)) if id != NO_SET => self.hlls.get(id).growth(hll::hash(&self.tagged)),
                    _ => hll::SKETCH_BYTES + hll::HASH_BYTES,
                };
                continue;
            }
            if let (Function::Percentile(_), Some(number)) = (function, input.and_then(Input::number)) {
                let x = match number {
                    Number::Int(int) => int as f64,
                    Number::Float(float) => float,
                };
                bytes += match state {
                    Some(Accumulator::Sketch(id)) if id != NO_SET => {
                        if self.sketches.get(id).needs_bucket(x) {
                            BUCKET_BYTES
                        } else {
                            0
                        }
                    }
                    _ => SKETCH_BYTES + BUCKET_BYTES,
                };
                continue;
            }
            let (Function::CountDistinct, Some(value)) = (function, input) else { continue };
            let set = match state {
                Some(Accumulator::Distinct(set)) => set,
                _ => NO_SET,
            };
            value.write_tagged(&mut self.tagged);
            match self.values.find(&self.tagged) {
                Some(id) if self.distinct.contains(set, id) => continue,
                Some(_) => {}
                None => {
                    bytes += text_bytes(self.tagged.len());
                    self.new_values += 1;
                }
            }
            bytes += ENTRY_BYTES + if set == NO_SET { SET_BYTES } else { 0 };
        }
        bytes
    }

    /// What a new cell needs beyond its group and side state: a chunk of slots when none is free.
    fn new_cell_bytes(&self) -> usize {
        if self.cells.is_full() {
            CHUNK_CELLS * self.cell_bytes()
        } else {
            0
        }
    }

    /// A cell slot with empty accumulators; a new chunk of slots if none is free.
    fn new_cell(&mut self, cell: Cell) -> u32 {
        if self.cells.is_full() {
            self.cells.add_chunk(&self.empty_accumulators);
            self.state_bytes += CHUNK_CELLS * self.cell_bytes();
        }
        let id = self.cells.take_free();
        *self.cells.get_mut(id) = cell;
        self.cells.block_mut(id).clone_from_slice(&self.empty_accumulators);
        id
    }

    /// Where a cell goes in its group's list: its pane, or under `SESSION` its session's end.
    fn list_order(&self, cell: u32) -> i64 {
        let cell = self.cells.get(cell);
        if self.spec.kind == WindowKind::Session {
            cell.visible_from
        } else {
            cell.pane
        }
    }

    /// Puts a new cell in its group's list in [`Engine::list_order`] (a late event's cell goes before later
    /// panes).
    fn link_cell(&mut self, group: u32, cell: u32) {
        if self.lists.len() <= group as usize {
            self.lists.grow_to(group as usize + 1);
        }
        let order = self.list_order(cell);
        let list = self.lists[group as usize];
        if list.first == NIL {
            self.lists[group as usize] = CellList { first: cell, last: cell, events: 0 };
        } else if self.list_order(list.last) <= order {
            self.cells.get_mut(list.last).next = cell;
            self.lists[group as usize].last = cell;
        } else if self.list_order(list.first) > order {
            self.cells.get_mut(cell).next = list.first;
            self.lists[group as usize].first = cell;
        } else {
            let mut at = list.first;
            while self.list_order(self.cells.get(at).next) <= order {
                at = self.cells.get(at).next;
            }
            self.cells.get_mut(cell).next = self.cells.get(at).next;
            self.cells.get_mut(at).next = cell;
        }
    }

    fn free_cell(&mut self, cell: u32) {
        for block in 0..self.cells.blocks {
            match self.cells.block(cell)[block] {
                Accumulator::Sketch(id) if id != NO_SET => self.state_bytes -= self.sketches.remove(id),
                Accumulator::Hll(id) if id != NO_SET => self.state_bytes -= self.hlls.remove(id),
                _ => {}
            }
            let Accumulator::Distinct(set) = self.cells.block(cell)[block] else { continue };
            let (values, bytes) = self.distinct.remove(set);
            self.state_bytes -= bytes;
            for value in values {
                self.release_value(value);
            }
        }
        let Cell { pane, visible_from, .. } = self.cells.get(cell);
        if self.spec.kind != WindowKind::Session && visible_from != pane {
            self.hidden_cells -= 1;
        }
        if let Some(cells_in_pane) = self.panes.get_mut(&pane) {
            *cells_in_pane -= 1;
            if *cells_in_pane == 0 {
                self.panes.remove(&pane);
                self.state_bytes -= PANE_BYTES;
            }
        }
        self.cells.release(cell);
    }

    fn cell_bytes(&self) -> usize {
        cell_bytes(self.empty_accumulators.len())
    }

    /// The state counted before any group, whatever the budget: the unused room of the last chunks, and the
    /// chunk of cell slots the first event allocates.
    pub fn fixed_state_bytes(functions: &[Function]) -> usize {
        let reading = functions.iter().filter(|function| function.reads_a_field()).count();
        PARTIAL_CHUNKS_BYTES + CHUNK_CELLS * cell_bytes(reading)
    }

    /// The most state the first event can need: the fixed state, its pane, its group and each of the group's
    /// `fields` values `value_bytes` long. A smaller budget might never count an event.
    pub fn state_for_first_event(fields: usize, functions: &[Function], value_bytes: usize) -> usize {
        let value = text_bytes(1 + value_bytes.max(MAX_INT_TEXT_BYTES)); // 1: the type tag
        let empty = Engine::new(WindowSpec::new(1, 1, 0).expect("a valid spec"), 0);
        let tables = empty.value_table_growth(fields) + empty.group_table_growth(fields);
        Self::fixed_state_bytes(functions) + PANE_BYTES + GROUP_BYTES + fields * value + tables
    }

    fn intern_group(&mut self, group: &[GroupValue<'_>]) -> u32 {
        self.group_ids.clear();
        for value in group {
            GroupText::write(value, &mut self.tagged);
            let before = self.values.len();
            self.group_ids.push(self.values.acquire(&self.tagged));
            if self.values.len() > before {
                self.state_bytes += text_bytes(self.tagged.len());
            }
        }
        let before = self.groups.len();
        let id = self.groups.acquire(&self.group_ids);
        self.account_tables();
        if self.groups.len() > before {
            self.state_bytes += self.group_bytes();
            if self.spec.kind != WindowKind::Session {
                self.place_new_group(id); // sessions are put in order when they fire
            }
        } else {
            // The group already existed: the value users taken above are not needed.
            for &value in &self.group_ids {
                self.values.release(value);
            }
        }
        id
    }

    /// A use of the group for a new cell: of the open group `known`, or of `group` interned now.
    fn acquire_group(&mut self, known: Option<u32>, group: &[GroupValue<'_>]) -> u32 {
        match known {
            Some(id) => {
                self.groups.acquire_id(id);
                id
            }
            None => self.intern_group(group),
        }
    }

    /// Drops a use of an interned value, and its bytes with its last use.
    fn release_value(&mut self, value: u32) {
        if self.values.is_last_use(value) {
            self.state_bytes -= text_bytes(self.values.get(value).len());
        }
        self.values.release(value);
    }

    /// An open group's bytes beyond its slot: its places in the order, and under `TOP_N` the reserve for its
    /// candidate.
    fn group_bytes(&self) -> usize {
        GROUP_BYTES + self.candidate_reserve
    }

    fn release_group(&mut self, group: u32) {
        if self.groups.is_last_use(group) {
            let fields = self.groups.get(group).len();
            for field in 0..fields {
                self.release_value(self.groups.get(group)[field]);
            }
            self.lists[group as usize] = EMPTY_LIST;
            self.state_bytes -= self.group_bytes();
        }
        self.groups.release(group);
    }

    /// Gives memory back once most cell slots are free: live cells move to the first chunks, lists follow.
    fn compact_when_sparse(&mut self) {
        let slots = self.cells.chunks.len() * CHUNK_CELLS;
        let live = slots - self.cells.free_slots;
        if live > 0 && (self.cells.chunks.len() <= 2 || live >= slots / 4) {
            return;
        }
        let mut compact = CellStore { blocks: self.cells.blocks, ..CellStore::default() };
        for list in self.lists.iter_mut().filter(|list| list.first != NIL) {
            let mut at = list.first;
            let mut previous = NIL;
            while at != NIL {
                if compact.is_full() {
                    compact.add_chunk(&self.empty_accumulators);
                }
                let moved = compact.take_free();
                let cell = self.cells.get(at);
                *compact.get_mut(moved) = Cell { next: NIL, ..cell };
                compact.block_mut(moved).clone_from_slice(self.cells.block(at));
                match previous {
                    NIL => list.first = moved,
                    previous => compact.get_mut(previous).next = moved,
                }
                list.last = moved;
                previous = moved;
                at = cell.next;
            }
        }
        self.state_bytes -= (self.cells.chunks.len() - compact.chunks.len()) * CHUNK_CELLS * self.cell_bytes();
        self.cells = compact;
    }
}

/// Cells per chunk of the cell store.
const CHUNK_CELLS: usize = 128;

/// One cell slot's bytes: the cell and its accumulators.
fn cell_bytes(accumulators: usize) -> usize {
    CELL_BYTES + ACCUMULATOR_BYTES * accumulators
}

/// Cell slots and their accumulators in chunks of [`CHUNK_CELLS`], so growing never copies the cells (a
/// vector that doubles would hold both copies at once). Free slots form a list through their `next`.
struct CellStore {
    chunks: Vec<Chunk>,
    /// The first free slot (`NIL` if none) and how many there are.
    free: u32,
    free_slots: usize,
    /// Accumulators per cell.
    blocks: usize,
}

impl Default for CellStore {
    fn default() -> Self {
        CellStore { chunks: Vec::new(), free: NIL, free_slots: 0, blocks: 0 }
    }
}

struct Chunk {
    cells: Box<[Cell]>,
    accumulators: Box<[Accumulator]>,
}

impl CellStore {
    fn is_full(&self) -> bool {
        self.free == NIL
    }

    /// A chunk of free slots, listed in order, which keeps a group's cells close.
    fn add_chunk(&mut self, empty: &[Accumulator]) {
        let first = (self.chunks.len() * CHUNK_CELLS) as u32;
        let cells = (first..first + CHUNK_CELLS as u32)
            .map(|slot| Cell { pane: 0, visible_from: 0, next: slot + 1, count: 0 })
            .collect::<Box<[Cell]>>();
        let accumulators = (0..CHUNK_CELLS).flat_map(|_| empty.iter().cloned()).collect();
        self.chunks.push(Chunk { cells, accumulators });
        self.get_mut(first + CHUNK_CELLS as u32 - 1).next = self.free;
        self.free = first;
        self.free_slots += CHUNK_CELLS;
    }

    fn take_free(&mut self) -> u32 {
        assert!(!self.is_full(), "a chunk is added when no slot is free");
        let slot = self.free;
        self.free = self.get(slot).next;
        self.free_slots -= 1;
        slot
    }

    fn release(&mut self, cell: u32) {
        self.get_mut(cell).next = self.free;
        self.free = cell;
        self.free_slots += 1;
    }

    fn get(&self, cell: u32) -> Cell {
        self.chunks[cell as usize / CHUNK_CELLS].cells[cell as usize % CHUNK_CELLS]
    }

    fn get_mut(&mut self, cell: u32) -> &mut Cell {
        &mut self.chunks[cell as usize / CHUNK_CELLS].cells[cell as usize % CHUNK_CELLS]
    }

    fn block(&self, cell: u32) -> &[Accumulator] {
        let at = cell as usize % CHUNK_CELLS * self.blocks;
        &self.chunks[cell as usize / CHUNK_CELLS].accumulators[at..at + self.blocks]
    }

    fn block_mut(&mut self, cell: u32) -> &mut [Accumulator] {
        let at = cell as usize % CHUNK_CELLS * self.blocks;
        &mut self.chunks[cell as usize / CHUNK_CELLS].accumulators[at..at + self.blocks]
    }
}

/// The cells from `first` on, along its list, that `span` counts.
fn counted_cells(cells: &CellStore, first: u32, span: Span) -> impl Iterator<Item = u32> + Clone + '_ {
    let first = Some(first).filter(|&at| at != NIL);
    std::iter::successors(first, |&at| Some(cells.get(at).next).filter(|&next| next != NIL))
        .map_while(move |at| span.walks(&cells.get(at)).map(|counted| (at, counted)))
        .filter_map(|(at, counted)| counted.then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp_ms;

    #[derive(Default)]
    struct Collect(Vec<(i64, i64, Vec<String>, u64, bool)>);

    impl RowSink for Collect {
        fn row(&mut self, row: &Row<'_>) -> bool {
            let group = row
                .group
                .iter()
                .map(|value| match value.value() {
                    GroupValue::Text(text) => text.to_string(),
                    GroupValue::Int(int) => format!("#{int}"),
                })
                .collect();
            self.0.push((row.window_start_ms, row.window_end_ms, group, row.count, row.complete));
            true
        }
    }

    const COUNTED: Admission = Admission::Counted { missed_windows: 0 };

    /// Counts an event whose group values are all strings.
    fn observe(engine: &mut Engine, event_ms: i64, group: &[&str], rows: &mut Collect) -> Admission {
        let group: Vec<GroupValue<'_>> = group.iter().map(|text| GroupValue::Text(text)).collect();
        let admission = engine.observe(event_ms, &group, &[]);
        flush(engine, rows);
        admission
    }

    /// Writes every fired row, however many calls that takes.
    fn flush(engine: &mut Engine, rows: &mut impl RowSink) {
        while !engine.emit(rows) {}
    }

    fn advance(engine: &mut Engine, event_ms: i64, rows: &mut impl RowSink) {
        engine.advance(event_ms);
        flush(engine, rows);
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

    /// CUMULATE over one minute by 20 s: each period's windows grow from its start, fire at their own
    /// ends, and the period's state is freed once its last window is written.
    #[test]
    fn cumulating_windows_grow_from_the_period_start_and_free_it_at_its_end() {
        let mut engine = Engine::new(WindowSpec::cumulate(60_000, 20_000, 1).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        // The first period began before the first event: its rows are marked incomplete (`false`).
        let row = |start: &str, end: &str, group: &str, count| {
            (at(start), at(end), vec![group.to_string()], count, at(start) > at("19:00:05"))
        };
        observe(&mut engine, at("19:00:05"), &["A"], &mut rows);
        observe(&mut engine, at("19:00:25"), &["A"], &mut rows);
        observe(&mut engine, at("19:00:45"), &["B"], &mut rows);
        assert_eq!(rows.0, [row("19:00:00", "19:00:20", "A", 1), row("19:00:00", "19:00:40", "A", 2)]);
        // Behind the watermark: [19:00:00, 19:00:40) has fired, [19:00:00, 19:01:00) has not.
        assert_eq!(observe(&mut engine, at("19:00:39"), &["C"], &mut rows), Admission::Counted { missed_windows: 1 });
        observe(&mut engine, at("19:01:02"), &["A"], &mut rows);
        assert_eq!(
            rows.0[2..],
            [
                row("19:00:00", "19:01:00", "A", 2),
                row("19:00:00", "19:01:00", "B", 1),
                row("19:00:00", "19:01:00", "C", 1)
            ]
        );
        assert_eq!(observe(&mut engine, at("19:00:59"), &["D"], &mut rows), Admission::Late);
        assert_eq!(engine.stats().open_groups, 1, "only the new period's group is kept");
        // A quiet step still gives the period's rows: the window holds what came before it.
        advance(&mut engine, at("19:02:00"), &mut rows);
        assert_eq!(
            rows.0[5..],
            [
                row("19:01:00", "19:01:20", "A", 1),
                row("19:01:00", "19:01:40", "A", 1),
                row("19:01:00", "19:02:00", "A", 1)
            ]
        );
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.state_bytes), (0, 0, PARTIAL_CHUNKS_BYTES));
    }

    /// SESSION with a 10 s gap and a 20 s watermark delay: events of a group closer than the gap make one
    /// session (touching counts), an event that bridges two sessions merges them, and a fired session takes
    /// no more events.
    #[test]
    fn sessions_grow_merge_fire_and_free_their_state() {
        let mut engine = Engine::new(WindowSpec::session(10_000, 20_000).unwrap(), usize::MAX);
        let mut rows = Collect::default();
        let second = |s: i64| at("19:00:00") + s * 1_000;
        let row = |start: i64, end: i64, group: &str, count| {
            (second(start), second(end), vec![group.to_string()], count, start > 20)
        };
        for (time, group) in [(0, "A"), (8, "A"), (30, "A"), (2, "B")] {
            assert_eq!(observe(&mut engine, second(time), &[group], &mut rows), COUNTED);
        }
        // 18 touches [0, 18) and not [30, 40).
        observe(&mut engine, second(18), &["A"], &mut rows);
        assert_eq!(engine.stats().open_panes, 3);
        // 20 touches [0, 28) and [30, 40): one session.
        observe(&mut engine, second(20), &["A"], &mut rows);
        assert_eq!(engine.stats().open_panes, 2);
        assert_eq!(rows.0, []);
        observe(&mut engine, second(35), &["C"], &mut rows);
        assert_eq!(rows.0, [row(2, 12, "B", 1)]);
        observe(&mut engine, second(61), &["C"], &mut rows);
        assert_eq!(rows.0[1..], [row(0, 40, "A", 5)]);
        // Within the gap of A's fired session, but its own window is open: a new session.
        assert_eq!(observe(&mut engine, second(45), &["A"], &mut rows), COUNTED);
        assert_eq!(observe(&mut engine, second(20), &["B"], &mut rows), Admission::Late);
        advance(&mut engine, at("19:02:00"), &mut rows);
        assert_eq!(rows.0[2..], [row(35, 45, "C", 1), row(45, 55, "A", 1), row(61, 71, "C", 1)]);
        let stats = engine.stats();
        assert_eq!((stats.open_panes, stats.open_groups, stats.state_bytes), (0, 0, PARTIAL_CHUNKS_BYTES));
    }

    /// EMIT_EARLY every 20 s on one-minute windows: each time the watermark passes a multiple of 20 s, the
    /// open windows' rows of the groups with new events come again, marked early; the final rows come first
    /// when a window fires.
    #[test]
    fn early_rows_repeat_changed_groups_of_open_windows() {
        struct Marked(Vec<(i64, String, u64, bool)>);
        impl RowSink for Marked {
            fn row(&mut self, row: &Row<'_>) -> bool {
                let GroupValue::Text(group) = row.group.iter().next().expect("one group field").value() else {
                    panic!("text groups")
                };
                self.0.push((row.window_start_ms, group.to_string(), row.count, row.early));
                true
            }
        }
        let mut engine = Engine::new(WindowSpec::new(60_000, 60_000, 1).unwrap(), usize::MAX).with_early_rows(20_000);
        let mut rows = Marked(Vec::new());
        for (time, group) in [("05", "A"), ("15", "A"), ("18", "B"), ("21", "A"), ("30", "A"), ("45", "B"), ("50", "C")]
        {
            engine.observe(at(&format!("19:00:{time}")), &[GroupValue::Text(group)], &[]);
            flush(&mut engine, &mut rows);
        }
        engine.observe(at("19:01:05"), &[GroupValue::Text("D")], &[]);
        flush(&mut engine, &mut rows);
        let row = |minute: &str, group: &str, count, early| (at(minute), group.to_string(), count, early);
        assert_eq!(
            rows.0,
            [
                row("19:00:00", "A", 3, true),
                row("19:00:00", "B", 1, true),
                row("19:00:00", "A", 4, true),
                row("19:00:00", "B", 2, true),
                row("19:00:00", "A", 4, false),
                row("19:00:00", "B", 2, false),
                row("19:00:00", "C", 1, false),
                row("19:01:00", "D", 1, true),
            ]
        );
        advance(&mut engine, at("19:10:00"), &mut rows);
        let stats = engine.stats();
        assert_eq!(
            (stats.open_panes, stats.open_groups, stats.open_strings, stats.state_bytes),
            (0, 0, 0, PARTIAL_CHUNKS_BYTES)
        );
    }

    /// Regression (early_pass_resumed_mid_window): an early pass paused in one window and resumed after it
    /// fired went on in the next window from the paused group, so the groups before it got no early row
    /// there.
    #[test]
    fn an_early_pass_resumed_after_its_window_fired_starts_the_next_window_from_its_first_group() {
        struct Early(Vec<(i64, String)>);
        impl RowSink for Early {
            fn row(&mut self, row: &Row<'_>) -> bool {
                let GroupValue::Text(group) = row.group.iter().next().expect("one group field").value() else {
                    panic!("text groups")
                };
                if row.early {
                    self.0.push((row.window_end_ms, group.to_string()));
                }
                true
            }
        }
        let mut engine = Engine::new(WindowSpec::new(20_000, 10_000, 0).unwrap(), usize::MAX)
            .with_early_rows(1_000)
            .with_work_per_emit(5);
        let mut rows = Early(Vec::new());
        let start = at("19:00:00");
        for (ms, group) in [(5_000, "A"), (5_000, "B"), (6_000, "A"), (10_000, "C")] {
            engine.observe(start + ms, &[GroupValue::Text(group)], &[]);
            engine.emit(&mut rows);
        }
        flush(&mut engine, &mut rows);
        let window_ending = |s: i64, group: &str| (start + s * 1_000, group.to_string());
        assert!(rows.0.contains(&window_ending(20, "A")), "{:?}", rows.0);
        assert!(rows.0.contains(&window_ending(20, "B")), "{:?}", rows.0);
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
        // A's slots stay, free and counted, while B's come after them.
        let free_slots = VALUE_SLOT_BYTES + GROUP_SLOT_BYTES + GROUP_FIELD_BYTES;
        assert_eq!(stats.state_bytes, one_small_group_bytes() + free_slots);
    }

    /// Regression (index_shrink_went_over_budget): a mostly empty index was replaced by a smaller one beside
    /// it, added to the state without a check, and the old one stayed until enough new values arrived to
    /// move its entries: the state went over its budget and kept both. It is now rebuilt smaller at once.
    #[test]
    fn a_mostly_empty_index_is_rebuilt_smaller_at_once_within_the_budget() {
        let budget = 400_000;
        let mut engine = Engine::new(WindowSpec::new(1_000, 1_000, 0).unwrap(), budget);
        let mut rows = Collect::default();
        for i in 0..2_000 {
            observe(&mut engine, at("19:00:00") + i / 4, &[&format!("user{i}")], &mut rows);
        }
        let burst = engine.values.index_bytes() + engine.groups.index_bytes();
        // One group a second from then on: no new value arrives to move entries across.
        for second in 1..10 {
            observe(&mut engine, at("19:00:00") + second * 1_000, &["steady"], &mut rows);
            assert!(engine.stats().state_bytes <= budget, "{} of {budget}", engine.stats().state_bytes);
        }
        let now = engine.values.index_bytes() + engine.groups.index_bytes();
        assert!(burst > 8_000 && now < 1_000, "indexes of {burst} bytes, then {now}");
    }

    /// The whole state of one group of one one-letter value in one pane, with the first indexes.
    fn one_small_group_bytes() -> usize {
        let empty = hop();
        let tables = empty.value_table_growth(1) + empty.group_table_growth(1);
        let group = GROUP_BYTES + text_bytes(2); // 2: the tagged value ("sA")
        PARTIAL_CHUNKS_BYTES + tables + PANE_BYTES + CHUNK_CELLS * CELL_BYTES + group
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
        advance(&mut engine, at("20:00:00"), &mut rows);
        let stats = engine.stats();
        assert_eq!(
            (stats.open_panes, stats.open_groups, stats.open_strings, stats.state_bytes),
            (0, 0, 0, PARTIAL_CHUNKS_BYTES)
        );
    }

    #[test]
    fn the_budget_refuses_new_state_but_keeps_counting_known_groups() {
        let one_group = one_small_group_bytes();
        let mut engine = Engine::new(WindowSpec::new(300_000, 10_000, 1).unwrap(), one_group);
        let mut rows = Collect::default();
        assert_eq!(observe(&mut engine, at("19:00:00"), &["A"], &mut rows), COUNTED);
        assert!(matches!(observe(&mut engine, at("19:00:01"), &["B"], &mut rows), Admission::OverCapacity { .. }));
        assert_eq!(observe(&mut engine, at("19:00:02"), &["A"], &mut rows), COUNTED);
        // A new pane for a known group needs room too.
        assert!(matches!(observe(&mut engine, at("19:00:12"), &["A"], &mut rows), Admission::OverCapacity { .. }));
        assert!(engine.stats().state_bytes <= one_group);
        advance(&mut engine, at("19:05:01"), &mut rows);
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

    /// The README's "began at or before": a window starting exactly at the first event + delay + margin is
    /// marked; one starting a millisecond later is not.
    #[test]
    fn a_window_starting_exactly_at_the_incomplete_boundary_is_marked() {
        let spec = WindowSpec::new(20_000, 10_000, 1).unwrap();
        for (margin, first_complete) in [(9_999, "19:00:20"), (9_998, "19:00:10")] {
            let mut rows = Collect::default();
            let mut engine = Engine::new(spec, usize::MAX).with_restart_margin(margin);
            for second in 0..60 {
                observe(&mut engine, at(&format!("19:00:{second:02}")), &["A"], &mut rows);
            }
            let found = rows.0.iter().find(|row| row.4).map(|row| row.0);
            assert_eq!(found, Some(at(first_complete)), "margin {margin}");
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
            engine.observe(at("19:00:01"), &[value], &[]);
            flush(&mut engine, &mut rows);
        }
        advance(&mut engine, at("19:00:10"), &mut rows);
        let summary: Vec<(String, u64)> = rows.0.iter().map(|row| (row.2[0].clone(), row.3)).collect();
        let expected = [("#-7", 1), ("#42", 2), ("10", 1), ("42", 1)];
        assert_eq!(summary, expected.map(|(group, count)| (group.to_string(), count)));
    }

    /// Text that JSON escapes is kept as it came and written escaped; it orders by its own bytes, among the
    /// text that needs no escape.
    #[test]
    fn group_text_is_written_as_json_and_ordered_by_its_bytes() {
        let mut engine = Engine::new(WindowSpec::new(10_000, 10_000, 0).unwrap(), usize::MAX);
        let mut json = Vec::new();
        struct Json<'a>(&'a mut Vec<String>);
        impl RowSink for Json<'_> {
            fn row(&mut self, row: &Row<'_>) -> bool {
                let mut text = String::new();
                row.group.iter().next().expect("one group field").write_json(&mut text);
                self.0.push(text);
                true
            }
        }
        for value in ["a\"", "a!", "a", "a\n", "-1"] {
            engine.observe(at("19:00:01"), &[GroupValue::Text(value)], &[]);
        }
        engine.observe(at("19:00:01"), &[GroupValue::Int(-1)], &[]);
        engine.advance(at("19:00:10"));
        while !engine.emit(&mut Json(&mut json)) {}
        assert_eq!(json, ["-1", r#""-1""#, r#""a""#, r#""a\n""#, r#""a!""#, r#""a\"""#]);
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
            fn row(&mut self, row: &Row<'_>) -> bool {
                self.0.push((row.window_start_ms, row.values.to_vec()));
                true
            }
        }
        let mut rows = Values(Vec::new());
        let group = [GroupValue::Text("A")];
        for (time, value) in [("19:00:01", Some(Int(3))), ("19:00:02", None), ("19:00:11", Some(Float(0.5)))] {
            let value = value.map(Input::Number);
            engine.observe(at(time), &group, &[None, value, value, value, value]);
            flush(&mut engine, &mut rows);
        }
        advance(&mut engine, at("19:01:00"), &mut rows);
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
        assert_eq!(engine.stats().state_bytes, PARTIAL_CHUNKS_BYTES, "every accumulator is accounted and freed");
    }

    /// Rows with their rank, as (window start, group, count, rank).
    #[derive(Default)]
    struct Ranked(Vec<(i64, String, u64, Option<u64>)>);

    impl RowSink for Ranked {
        fn row(&mut self, row: &Row<'_>) -> bool {
            let group: Vec<String> = row.group.iter().map(|value| format!("{:?}", value.value())).collect();
            self.0.push((row.window_start_ms, group.join("/"), row.count, row.rank));
            true
        }
    }

    fn top_n_engine(n: usize, partition_by: Vec<usize>, work_per_emit: usize) -> Engine {
        Engine::new(WindowSpec::new(20_000, 10_000, 0).unwrap(), usize::MAX)
            .with_work_per_emit(work_per_emit)
            .with_top_n(TopNSpec { n, by: 0, descending: true, partition_by })
    }

    /// Counts `events` events of each (site, page) at `time`.
    fn feed(engine: &mut Engine, time: &str, groups: &[(&str, &str, usize)], rows: &mut impl RowSink) {
        for &(site, page, events) in groups {
            for _ in 0..events {
                engine.observe(at(time), &[GroupValue::Text(site), GroupValue::Text(page)], &[]);
                while !engine.emit(rows) {}
            }
        }
    }

    #[test]
    fn top_n_keeps_the_busiest_groups_of_each_partition_and_frees_all_it_held() {
        for work in [1, 2, 3, 1_000] {
            let mut engine = top_n_engine(2, vec![0], work);
            let mut rows = Ranked::default();
            let groups =
                [("s1", "a", 1), ("s1", "b", 3), ("s2", "c", 2), ("s1", "c", 3), ("s2", "d", 1), ("s1", "d", 2)];
            feed(&mut engine, "19:00:01", &groups, &mut rows);
            feed(&mut engine, "19:00:12", &[("s2", "d", 4)], &mut rows);
            advance(&mut engine, at("19:01:00"), &mut rows);
            let text = |site: &str, page: &str| format!("Text({site:?})/Text({page:?})");
            assert_eq!(
                rows.0,
                vec![
                    // [18:59:50, 19:00:10): s1's two busiest, the tie in group order; then s2's.
                    (at("18:59:50"), text("s1", "b"), 3, Some(1)),
                    (at("18:59:50"), text("s1", "c"), 3, Some(2)),
                    (at("18:59:50"), text("s2", "c"), 2, Some(1)),
                    (at("18:59:50"), text("s2", "d"), 1, Some(2)),
                    (at("19:00:00"), text("s1", "b"), 3, Some(1)),
                    (at("19:00:00"), text("s1", "c"), 3, Some(2)),
                    (at("19:00:00"), text("s2", "d"), 5, Some(1)),
                    (at("19:00:00"), text("s2", "c"), 2, Some(2)),
                    (at("19:00:10"), text("s2", "d"), 4, Some(1)),
                ],
                "work share {work}"
            );
            assert_eq!(
                engine.stats().state_bytes,
                PARTIAL_CHUNKS_BYTES,
                "every group, candidate and value is freed (share {work})"
            );
        }
    }

    #[test]
    fn top_n_counts_each_groups_candidate_in_the_state_and_never_grows_it_while_ranking() {
        let plain = {
            let mut engine = hop();
            engine.observe(at("19:00:01"), &[GroupValue::Text("A")], &[]);
            engine.stats().state_bytes
        };
        let mut engine = top_n_engine(1, vec![], 1);
        engine.observe(at("19:00:01"), &[GroupValue::Text("A")], &[]);
        assert_eq!(Engine::candidate_bytes(0, &[Function::Count]), 320, "the README's figure");
        assert_eq!(engine.stats().state_bytes, plain + 320);
        let mut rows = Ranked::default();
        for group in ["B", "C", "D", "E"] {
            engine.observe(at("19:00:02"), &[GroupValue::Text(group)], &[]);
        }
        let full = engine.stats().state_bytes;
        engine.advance(at("19:00:40"));
        while !engine.emit(&mut rows) {
            assert!(engine.stats().state_bytes <= full, "ranking grew the state");
        }
        assert_eq!(rows.0.len(), 2, "one row for each of the two windows: {:?}", rows.0);
        assert_eq!(engine.stats().state_bytes, PARTIAL_CHUNKS_BYTES);
    }

    #[test]
    fn count_distinct_counts_each_value_once_across_panes_and_frees_all_it_held() {
        let functions = [Function::Count, Function::CountDistinct];
        let mut engine =
            Engine::new(WindowSpec::new(20_000, 10_000, 0).unwrap(), usize::MAX).with_aggregates(&functions);
        struct Values(Vec<(i64, Vec<Option<Number>>)>);
        impl RowSink for Values {
            fn row(&mut self, row: &Row<'_>) -> bool {
                self.0.push((row.window_start_ms, row.values.to_vec()));
                true
            }
        }
        let mut rows = Values(Vec::new());
        let group = [GroupValue::Text("page")];
        let inputs = [
            ("19:00:01", Some(Input::Text("u1"))),
            ("19:00:02", Some(Input::Text("u1"))),
            ("19:00:03", None),
            ("19:00:04", Some(Input::Number(Number::Int(1)))),
            ("19:00:05", Some(Input::Number(Number::Float(1.0)))),
            ("19:00:11", Some(Input::Text("u1"))),
            ("19:00:12", Some(Input::Text("u2"))),
        ];
        for (time, input) in inputs {
            engine.observe(at(time), &group, &[None, input]);
            flush(&mut engine, &mut rows);
        }
        advance(&mut engine, at("19:01:00"), &mut rows);
        use Number::Int;
        assert_eq!(
            rows.0,
            vec![
                // u1, 1 and 1.0 (an integer and a float are two values); null is not counted.
                (at("18:59:50"), vec![Some(Int(5)), Some(Int(3))]),
                (at("19:00:00"), vec![Some(Int(7)), Some(Int(4))]),
                (at("19:00:10"), vec![Some(Int(2)), Some(Int(2))]),
            ]
        );
        assert_eq!(engine.stats().state_bytes, PARTIAL_CHUNKS_BYTES, "every set and value is freed");
    }

    #[test]
    fn a_new_distinct_value_beyond_the_budget_is_refused_and_a_known_one_is_not() {
        let functions = [Function::CountDistinct];
        let spec = WindowSpec::new(20_000, 10_000, 0).unwrap();
        let full = {
            let mut engine = Engine::new(spec, usize::MAX).with_aggregates(&functions);
            engine.observe(at("19:00:01"), &[GroupValue::Text("page")], &[Some(Input::Text("u1"))]);
            engine.stats().state_bytes
        };
        let mut engine = Engine::new(spec, full).with_aggregates(&functions);
        let group = [GroupValue::Text("page")];
        assert_eq!(engine.observe(at("19:00:01"), &group, &[Some(Input::Text("u1"))]), COUNTED);
        assert_eq!(engine.observe(at("19:00:02"), &group, &[Some(Input::Text("u1"))]), COUNTED);
        assert_eq!(engine.observe(at("19:00:03"), &group, &[None]), COUNTED);
        let needed = text_bytes("su2".len()) + VALUE_SLOT_BYTES + ENTRY_BYTES;
        assert_eq!(
            engine.observe(at("19:00:04"), &group, &[Some(Input::Text("u2"))]),
            Admission::OverCapacity { needed_bytes: needed }
        );
        assert_eq!(engine.stats().state_bytes, full);
    }

    #[test]
    fn approx_count_distinct_is_exact_for_small_sets_and_frees_all_it_held() {
        let functions = [Function::ApproxCountDistinct];
        let mut engine =
            Engine::new(WindowSpec::new(20_000, 10_000, 0).unwrap(), usize::MAX).with_aggregates(&functions);
        let texts: Vec<String> = (0..2_000).map(|i| format!("visitor{i}")).collect();
        for (i, text) in texts.iter().enumerate() {
            // 200 distinct in the first pane, 1,000 others in the second.
            let time = if i < 1_000 { "19:00:01" } else { "19:00:11" };
            let value = if i < 1_000 { &texts[i % 200] } else { text };
            engine.observe(at(time), &[GroupValue::Text("page")], &[Some(Input::Text(value))]);
        }
        struct Values(Vec<Option<Number>>);
        impl RowSink for Values {
            fn row(&mut self, row: &Row<'_>) -> bool {
                self.0.push(row.values[0]);
                true
            }
        }
        let mut values = Values(Vec::new());
        engine.advance(at("19:01:00"));
        while !engine.emit(&mut values) {}
        let counts: Vec<i64> = values
            .0
            .iter()
            .map(|value| match value {
                Some(Number::Int(count)) => *count,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(counts[0], 200, "exact while small");
        for (count, exact) in counts[1..].iter().zip([1_200, 1_000]) {
            assert!(
                (count - exact).abs() as f64 <= 3.0 * crate::hll::STANDARD_ERROR * exact as f64,
                "{count} for {exact}"
            );
        }
        assert_eq!(engine.stats().state_bytes, PARTIAL_CHUNKS_BYTES);
    }
}
