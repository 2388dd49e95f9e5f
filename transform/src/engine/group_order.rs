//! The order groups are visited in, which is the order of their rows: field by field, integers before
//! strings (the order of [`GroupValue`](super::GroupValue)).
//!
//! The live groups are kept sorted (`ordered`). A new group goes into a binary heap by that order as it is
//! created, for O(log n) comparisons charged to the record that made it; each pass then merges the heap into
//! the sorted groups as it walks them, taking the heap's smallest group when it comes before the next sorted
//! one, and writes the merged order for the next pass as it goes. So no single call sorts many groups: a
//! record's work stays within its share however many groups arrive at once. Groups created while a pass is
//! under way wait in a second heap for the next pass, as the pass has walked past their places.
//!
//! Sessions ending together and the groups of an early pass are put in order through the same heap, a share
//! of them per call.

use std::cmp::Ordering;

use super::{Engine, GroupText, Pass, NIL};

impl Engine {
    /// Gives a new group its place for the next pass.
    pub(super) fn place_new_group(&mut self, group: u32) {
        let mut heap = std::mem::take(&mut self.arriving);
        heap_push(&mut heap, group, self.precedes());
        self.arriving = heap;
    }

    /// Starts the pass of `window`: the groups that arrived since the last one are merged into it.
    pub(super) fn begin_pass(&mut self, window: i64) -> Pass {
        debug_assert!(self.merging.is_empty() && self.merged.is_empty(), "the last pass merged them all");
        // The emptied heap's room is given back: new groups start a heap of their own.
        self.merging = std::mem::take(&mut self.arriving);
        // Exactly the room the visited groups can need: no vector of them doubles.
        self.merged = Vec::with_capacity(self.ordered.len() + self.merging.len());
        Pass { window, position: 0, from: 0, merge_at: None }
    }

    /// Whether the pass has groups left to visit.
    pub(super) fn has_next_group(&self, pass: &Pass) -> bool {
        pass.from < self.ordered.len() || !self.merging.is_empty()
    }

    /// The pass's next group in order, and the work taking it cost. Where the heap's smallest group goes among
    /// the sorted ones is found by a binary search, so merging costs O(log n) comparisons a new group.
    pub(super) fn next_group(&mut self, pass: &mut Pass) -> (u32, usize) {
        let mut work = 1;
        if let Some(&new) = self.merging.first() {
            let merge_at = *pass.merge_at.get_or_insert_with(|| {
                let rest = &self.ordered[pass.from..];
                work += rest.len().max(1).ilog2() as usize;
                pass.from + rest.partition_point(|&old| self.compare_groups(old, new).is_lt())
            });
            if merge_at == pass.from {
                let mut heap = std::mem::take(&mut self.merging);
                let taken = heap_pop(&mut heap, self.precedes());
                self.merging = heap;
                pass.merge_at = None;
                if let Some((group, taking)) = taken {
                    return (group, work + taking);
                }
            }
        }
        let group = self.ordered.get(pass.from).copied().unwrap_or(NIL);
        pass.from += 1;
        (group, work)
    }

    /// Keeps a visited group that is still open in the order of the next pass.
    pub(super) fn keep_in_order(&mut self, group: u32) {
        if self.lists[group as usize].first != NIL {
            self.merged.push(group);
        }
    }

    /// Once every group of the pass is visited: the merged order is the order.
    pub(super) fn finish_order(&mut self) {
        self.ordered = std::mem::take(&mut self.merged);
    }

    /// Whether one group comes before another in the order, as the heaps take it.
    pub(super) fn precedes(&self) -> impl Fn(&u32, &u32) -> bool + '_ {
        |&a, &b| self.compare_groups(a, b).is_lt()
    }

    /// Orders groups by their value ids.
    pub(super) fn compare_groups(&self, a: u32, b: u32) -> Ordering {
        self.compare_values(self.groups.get(a), self.groups.get(b))
    }

    /// Orders groups given by their value ids.
    pub(super) fn compare_values(&self, a: &[u32], b: &[u32]) -> Ordering {
        for (&x, &y) in a.iter().zip(b) {
            if x != y {
                return GroupText(self.values.get(x)).value().cmp(&GroupText(self.values.get(y)).value());
            }
        }
        a.len().cmp(&b.len())
    }
}

/// Adds `item` to a binary heap whose smallest item (by `less`) is first; returns the work: one per level.
pub(super) fn heap_push<T>(heap: &mut Vec<T>, item: T, less: impl Fn(&T, &T) -> bool) -> usize {
    heap.push(item);
    let mut at = heap.len() - 1;
    let mut work = 1;
    while at > 0 {
        let parent = (at - 1) / 2;
        if !less(&heap[at], &heap[parent]) {
            break;
        }
        heap.swap(at, parent);
        at = parent;
        work += 1;
    }
    work
}

/// Takes the smallest item out of a heap [`heap_push`] built, with the work: one per level.
pub(super) fn heap_pop<T>(heap: &mut Vec<T>, less: impl Fn(&T, &T) -> bool) -> Option<(T, usize)> {
    if heap.is_empty() {
        return None;
    }
    let smallest = heap.swap_remove(0);
    Some((smallest, sift_down(heap, less)))
}

/// Moves the smallest item of a heap to its last place, and makes the items before it a heap again (heapsort
/// in place: with `less` reversed, the items end in ascending order). Returns the work: one per level.
pub(super) fn heap_pop_in_place<T>(heap: &mut [T], less: impl Fn(&T, &T) -> bool) -> usize {
    let Some(last) = heap.len().checked_sub(1) else { return 0 };
    heap.swap(0, last);
    sift_down(&mut heap[..last], less)
}

/// Moves the first item down to its place in a heap whose other items are in heap order.
fn sift_down<T>(heap: &mut [T], less: impl Fn(&T, &T) -> bool) -> usize {
    let mut at = 0;
    let mut work = 1;
    loop {
        let mut least = at;
        for child in [2 * at + 1, 2 * at + 2] {
            if child < heap.len() && less(&heap[child], &heap[least]) {
                least = child;
            }
        }
        if least == at {
            return work;
        }
        heap.swap(at, least);
        at = least;
        work += 1;
    }
}
