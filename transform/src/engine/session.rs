//! Session windows, Flink's `SESSION(TABLE t PARTITION BY <group>, DESCRIPTOR(ts), gap)`, on the engine's
//! cells.
//!
//! Each event opens the window `[t, t + gap)`. It merges with every session of its group that has not
//! fired and that it touches (Flink's windows intersect when one starts at or before the other's end), and
//! the merged session is `[first event, last event + gap)`. A session fires once the watermark reaches its
//! end − 1 ms, and a fired session takes no more events: a later event near it opens a new one. An event
//! whose own window has fired and that touches no open session is late.
//!
//! A session is one or more cells (one per session merged into it), each carrying the session's end in
//! `visible_from` and the earliest event it holds in `pane`. A group's cells are kept in order of their
//! session's end, so a session's cells are consecutive, and the session that fires first is the group's
//! first. `sessions` lists every session not yet written by (end, group), which is the order they fire.

use super::group_order::{heap_pop, heap_push};
use super::{Admission, Cell, Engine, GroupValue, Pass, RowSink, Span, NIL};
use crate::aggregate::Input;
use crate::time::MAX_TIMESTAMP_MS;

/// A session's entry in the set of sessions by end, and its place in a batch being written.
const SESSION_BYTES: usize = 40;

impl Engine {
    pub(super) fn observe_session(
        &mut self,
        event_ms: i64,
        group: &[GroupValue<'_>],
        inputs: &[Option<Input<'_>>],
    ) -> Admission {
        let Some(own_end) = event_ms.checked_add(self.spec.size_ms).filter(|&end| end <= MAX_TIMESTAMP_MS) else {
            return Admission::OutOfRange;
        };
        let watermark = self.watermark_ms().unwrap_or(i64::MIN);
        let (mut new_bytes, known_group) = self.find_group(group);
        // The sessions of the group that have not fired and that [event, event + gap) touches: consecutive
        // in its list, from the first cell of the first to the end of the last.
        let mut touched: Option<(u32, i64)> = None;
        let mut touched_ends = 0;
        if let Some(id) = known_group {
            let mut at = self.lists[id as usize].first;
            while at != NIL {
                let (first, end) = (at, self.cells.get(at).visible_from);
                let mut start = i64::MAX;
                while at != NIL && self.cells.get(at).visible_from == end {
                    start = start.min(self.cells.get(at).pane);
                    at = self.cells.get(at).next;
                }
                if end - 1 > watermark && start <= own_end && end >= event_ms {
                    touched = Some((touched.map_or(first, |(first, _)| first), end));
                    touched_ends += 1;
                }
            }
        }
        if touched.is_none() && own_end - 1 <= watermark {
            return Admission::Late;
        }
        new_bytes += self.side_state_bytes(touched.map(|(first, _)| first), inputs);
        new_bytes += self.value_table_growth(self.new_values);
        if touched.is_none() {
            new_bytes += SESSION_BYTES + self.new_cell_bytes();
            if known_group.is_none() {
                new_bytes += self.group_bytes() + self.group_table_growth(group.len());
            }
        }
        if self.state_bytes + new_bytes > self.budget_bytes {
            self.advance(event_ms);
            return Admission::OverCapacity { needed_bytes: new_bytes };
        }
        match (touched, known_group) {
            (Some((first, last_end)), Some(id)) => {
                // One session now, ending at the later of the last touched session's end and this event's.
                let end = last_end.max(own_end);
                let mut at = first;
                while at != NIL && self.cells.get(at).visible_from <= last_end {
                    let cell = self.cells.get(at);
                    if cell.visible_from != end {
                        self.sessions.remove(&(cell.visible_from, id));
                    }
                    self.cells.get_mut(at).visible_from = end;
                    at = cell.next;
                }
                self.sessions.insert((end, id));
                self.state_bytes -= SESSION_BYTES * (touched_ends - 1);
                let cell = self.cells.get_mut(first);
                cell.pane = cell.pane.min(event_ms);
                self.add_to_cell(id, first, inputs);
            }
            _ => {
                let id = self.acquire_group(known_group, group);
                let cell = self.new_cell(Cell { pane: event_ms, visible_from: own_end, next: NIL, count: 0 });
                self.link_cell(id, cell);
                self.add_to_cell(id, cell, inputs);
                self.sessions.insert((own_end, id));
                self.state_bytes += SESSION_BYTES;
            }
        }
        self.advance(event_ms);
        Admission::Counted { missed_windows: 0 }
    }

    /// Writes the rows of fired sessions, in order of their end then group order, within the work share;
    /// as [`Engine::emit`].
    pub(super) fn emit_sessions(&mut self, sink: &mut impl RowSink) -> bool {
        let Some(watermark) = self.watermark_ms() else { return true };
        let mut work = 0;
        loop {
            let mut pass = match self.pass {
                Some(pass) => pass,
                None => {
                    let Some(&(end, _)) = self.sessions.first().filter(|(end, _)| end - 1 <= watermark) else {
                        return true;
                    };
                    Pass { window: end, position: 0, from: 0, merge_at: None }
                }
            };
            // The sessions ending then go into a heap in group order, then out of it to be written.
            let mut batch = std::mem::take(&mut self.session_batch);
            let finished = loop {
                if work >= self.work_per_emit {
                    break false;
                }
                if let Some(&(_, group)) = self.sessions.first().filter(|&&(end, _)| end == pass.window) {
                    self.sessions.pop_first();
                    work += heap_push(&mut batch, group, self.precedes());
                    continue;
                }
                let Some((group, taking)) = heap_pop(&mut batch, self.precedes()) else {
                    break true;
                };
                let (cost, go_on) = self.visit(group, pass.position, Span::Session(pass.window), sink);
                self.state_bytes -= SESSION_BYTES;
                pass.position += 1;
                work += taking + cost;
                if !go_on {
                    break false;
                }
            };
            self.session_batch = batch;
            if !finished {
                self.pass = Some(pass);
                return false;
            }
            self.pass = None;
            self.give_memory_back();
        }
    }

    /// Sessions not yet written, and those of them that have fired.
    pub(super) fn session_counts(&self) -> (usize, u64) {
        let waiting = self.session_batch.len();
        let watermark = self.watermark_ms().unwrap_or(i64::MIN);
        let fired = self.sessions.iter().take_while(|(end, _)| end - 1 <= watermark).count();
        (self.sessions.len() + waiting, (waiting + fired) as u64)
    }
}
