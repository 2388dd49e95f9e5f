//! Early rows (`EMIT_EARLY`): while a window is open, the rows of the groups whose events changed it are
//! written again every so often, each marked early; the final row still comes once when it fires.
//!
//! The clock is the watermark: each time it passes a multiple of the period, an early pass writes, for
//! every open window in order, the row of every group (in group order) that counted an event in it since
//! the previous pass. Between passes the engine notes, per group, the cells its events went to (their pane
//! and the first window that sees them), which says exactly which windows changed. Groups are noted by
//! their value ids, each holding a use of its value, so a group freed and made again in between is still
//! the same group. Early passes share the work share of [`Engine::emit`] with the fired windows, which
//! come first; a window that fires during a pass gets no more early rows.

use super::group_order::{heap_pop_in_place, heap_push};
use super::{Engine, RowSink};

/// A noted group: its map entry, key vector and list of cells.
const NOTED_GROUP_BYTES: usize = 96;
/// One noted cell of a group.
const NOTED_CELL_BYTES: usize = 16;

/// The (pane, first window that sees it) of each cell a group's events went to.
type NotedCells = Vec<(i64, i64)>;

/// Groups (by value ids) noted since the last early pass, with their cells.
pub(super) type Noted = std::collections::BTreeMap<Vec<u32>, NotedCells>;

/// A noted group: its value ids and noted cells.
type NotedGroup = (Vec<u32>, NotedCells);

/// An early pass under way: its groups in group order (once those still to order have been put in a heap at
/// the front of `groups`, its first `heap_len`, and sorted out of it in place, a share at a time), the window
/// being written, the last that any noted cell is in, and how far through the groups.
pub(super) struct EarlyPass {
    groups: Vec<NotedGroup>,
    to_order: std::collections::btree_map::IntoIter<Vec<u32>, NotedCells>,
    heap_len: usize,
    window: i64,
    last_window: i64,
    position: usize,
}

impl Engine {
    /// The bytes noting an event of the group (`None`: new) in this cell would need.
    pub(super) fn noting_bytes(&self, group: Option<u32>, pane: i64, visible_from: i64) -> usize {
        if self.early_every_ms.is_none() {
            return 0;
        }
        match group.and_then(|id| self.noted.get(self.groups.get(id))) {
            Some(cells) if cells.contains(&(pane, visible_from)) => 0,
            Some(_) => NOTED_CELL_BYTES,
            None => NOTED_GROUP_BYTES + NOTED_CELL_BYTES,
        }
    }

    /// Notes that an event of `group` went to the cell of `pane` seen from `visible_from`.
    pub(super) fn note(&mut self, group: u32, pane: i64, visible_from: i64) {
        if self.early_every_ms.is_none() {
            return;
        }
        let values = self.groups.get(group);
        if let Some(cells) = self.noted.get_mut(values) {
            if !cells.contains(&(pane, visible_from)) {
                cells.push((pane, visible_from));
                self.state_bytes += NOTED_CELL_BYTES;
            }
            return;
        }
        let values = values.to_vec();
        for &value in &values {
            self.values.acquire_id(value);
        }
        self.noted.insert(values, vec![(pane, visible_from)]);
        self.state_bytes += NOTED_GROUP_BYTES + NOTED_CELL_BYTES;
    }

    /// After the watermark moved: whether it passed a multiple of the period since the last time.
    pub(super) fn tick(&mut self) {
        let (Some(every), Some(watermark)) = (self.early_every_ms, self.watermark_ms()) else { return };
        let tick = watermark.div_euclid(every);
        if self.early_tick.is_some_and(|last| tick > last) {
            self.early_due = true;
        }
        self.early_tick = Some(tick);
    }

    /// Writes the early rows of the pass under way, or of a new one when the clock has ticked, within what is
    /// left of the work share; false when the share is spent or the sink asks to stop.
    pub(super) fn emit_early(&mut self, work: &mut usize, sink: &mut impl RowSink) -> bool {
        let Some(mut pass) = self.early_pass.take().or_else(|| self.begin_early_pass()) else { return true };
        if !self.order_early_pass(&mut pass, work) {
            self.early_pass = Some(pass);
            return false;
        }
        // Windows that fired since the pass began get no more early rows; the next one starts from its first
        // group.
        let fired = self.fired_through().unwrap_or(i64::MIN);
        if pass.window <= fired {
            pass.window = fired + 1;
            pass.position = 0;
        }
        while pass.window <= pass.last_window {
            let window = pass.window;
            let first_pane = self.spec.first_pane(window);
            while pass.position < pass.groups.len() {
                if *work >= self.work_per_emit {
                    self.early_pass = Some(pass);
                    return false;
                }
                let (values, cells) = &pass.groups[pass.position];
                *work += cells.len();
                pass.position += 1;
                let changed =
                    cells.iter().any(|&(pane, seen_from)| first_pane <= pane && pane <= window && seen_from <= window);
                let Some(group) = self.groups.find(values).filter(|_| changed) else { continue };
                let (count, bounds, cost) = self.combine(group, self.window_span(window));
                *work += cost;
                let go_on = count == 0 || self.write_row(bounds, group, count, true, sink);
                for sketch in &mut self.row_sketches {
                    sketch.release_if_large();
                }
                if !go_on {
                    self.early_pass = Some(pass);
                    return false;
                }
            }
            pass.window += 1;
            pass.position = 0;
        }
        for (values, cells) in pass.groups {
            self.state_bytes -= NOTED_GROUP_BYTES + NOTED_CELL_BYTES * cells.len();
            for value in values {
                self.release_value(value);
            }
        }
        true
    }

    /// The groups noted since the last pass, when the clock has ticked and some were.
    fn begin_early_pass(&mut self) -> Option<EarlyPass> {
        if !std::mem::take(&mut self.early_due) || self.noted.is_empty() {
            return None;
        }
        let noted = std::mem::take(&mut self.noted);
        Some(EarlyPass {
            // Room for exactly the noted groups: no more than the state counts for them.
            groups: Vec::with_capacity(noted.len()),
            to_order: noted.into_iter(),
            heap_len: 0,
            window: i64::MAX,
            last_window: i64::MIN,
            position: 0,
        })
    }

    /// Puts the pass's groups in group order by a heapsort in place, within the work share: false when it is
    /// spent. Meanwhile finds the first and last window its noted cells changed.
    fn order_early_pass(&self, pass: &mut EarlyPass, work: &mut usize) -> bool {
        // The heap's first group is the last in group order, so each one taken out goes after those left.
        let later = |(a, _): &NotedGroup, (b, _): &NotedGroup| self.compare_values(a, b).is_gt();
        loop {
            if *work >= self.work_per_emit {
                return false;
            }
            if let Some(group) = pass.to_order.next() {
                for &(pane, seen_from) in &group.1 {
                    pass.window = pass.window.min(pane.max(seen_from));
                    pass.last_window = pass.last_window.max(self.spec.last_window_of(pane));
                }
                *work += 1 + group.1.len() + heap_push(&mut pass.groups, group, later);
                pass.heap_len += 1;
                continue;
            }
            if pass.heap_len <= 1 {
                pass.heap_len = 0;
                return true;
            }
            *work += heap_pop_in_place(&mut pass.groups[..pass.heap_len], later);
            pass.heap_len -= 1;
        }
    }
}
