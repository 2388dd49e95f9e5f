//! Reference-counted interning: each distinct value is stored once and named by a small id, and is freed
//! when its last user lets go, so state never grows with values that no open window needs.
//!
//! The map from values to ids is resized a few entries at a time: when it is full (or mostly empty), a map
//! of the new size takes its place and every later insert also moves a few entries of the old one across.
//! A hash map that resized itself would rehash every entry in one insert, work that grows with the open
//! groups and would fall on whichever record made one too many.

use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

pub struct Interner<T: ?Sized + Hash + Eq> {
    ids: HashMap<Rc<T>, u32>,
    /// While `ids` is being resized: the previous map, and the slots (by id) whose values may still be in it.
    moving: HashMap<Rc<T>, u32>,
    to_move: std::ops::Range<usize>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

/// Slots looked at for entries to move across per insert while the map is resized.
const MOVES_PER_INSERT: usize = 4;

struct Slot<T: ?Sized> {
    value: Option<Rc<T>>,
    users: u32,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Interner { ids: HashMap::new(), moving: HashMap::new(), to_move: 0..0, slots: Vec::new(), free: Vec::new() }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Rc<T>: From<&'a T>,
{
    /// The id of `value` if it is interned.
    pub fn find(&self, value: &T) -> Option<u32> {
        self.ids.get(value).or_else(|| self.moving.get(value)).copied()
    }

    /// Adds one user of `value`, interning it first if needed, and returns its id.
    pub fn acquire(&mut self, value: &T) -> u32 {
        let id = match self.find(value) {
            Some(id) => id,
            None => self.insert(value),
        };
        self.slots[id as usize].users += 1;
        id
    }

    /// Adds one user of an interned id.
    pub fn acquire_id(&mut self, id: u32) {
        self.slots[id as usize].users += 1;
    }

    /// Drops one user of `id`; returns the value when that was the last user and it has been freed.
    pub fn release(&mut self, id: u32) -> Option<Rc<T>> {
        let slot = &mut self.slots[id as usize];
        slot.users -= 1;
        if slot.users > 0 {
            return None;
        }
        let value = slot.value.take().expect("released ids are live");
        if self.ids.remove(&*value).is_none() {
            self.moving.remove(&*value);
        }
        self.free.push(id);
        Some(value)
    }

    /// The value behind a live id.
    pub fn get(&self, id: u32) -> &T {
        self.slots[id as usize].value.as_deref().expect("resolved ids are live")
    }

    /// How many distinct values are interned.
    pub fn len(&self) -> usize {
        self.ids.len() + self.moving.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns spare capacity to the allocator once most of it is unused.
    pub fn shrink_when_sparse(&mut self) {
        let in_use = self.slots.iter().rposition(|slot| slot.value.is_some()).map_or(0, |last| last + 1);
        if in_use < self.slots.len() / 2 {
            self.slots.truncate(in_use);
            self.slots.shrink_to_fit();
            self.free.retain(|&id| (id as usize) < in_use);
            self.free.shrink_to_fit();
            self.to_move.end = self.to_move.end.min(in_use);
        }
        // After the slots, whose number sizes the new map.
        if self.moving.is_empty() && self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.start_moving(2 * self.ids.len());
        }
    }

    /// Replaces the map by one that holds `entries` without resizing, and at least every entry and every
    /// insert until the old map's last entry has moved across.
    fn start_moving(&mut self, entries: usize) {
        let capacity = entries.max(self.ids.len() + self.slots.len() / MOVES_PER_INSERT + 1);
        self.moving = std::mem::replace(&mut self.ids, HashMap::with_capacity(capacity));
        self.to_move = 0..self.slots.len();
    }

    /// Moves the entries of the next few slots across, if the map is being resized.
    fn move_some(&mut self) {
        for id in self.to_move.by_ref().take(MOVES_PER_INSERT) {
            let Some(value) = &self.slots[id].value else { continue };
            if let Some((value, id)) = self.moving.remove_entry(&**value) {
                self.ids.insert(value, id);
            }
        }
        if self.moving.is_empty() {
            self.to_move = 0..0;
            if self.moving.capacity() > 0 {
                self.moving = HashMap::new();
            }
        }
    }

    fn insert(&mut self, value: &T) -> u32 {
        if self.moving.is_empty() && self.ids.len() == self.ids.capacity() {
            self.start_moving(2 * self.ids.len().max(8));
        }
        let shared: Rc<T> = Rc::from(value);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].value = Some(shared.clone());
                id
            }
            None => {
                self.slots.push(Slot { value: Some(shared.clone()), users: 0 });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 live values")
            }
        };
        self.ids.insert(shared, id);
        self.move_some();
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_equal_values_and_frees_on_last_release() {
        let mut strings: Interner<str> = Interner::default();
        let a = strings.acquire("user_1");
        assert_eq!(strings.acquire("user_1"), a);
        let b = strings.acquire("user_2");
        assert_ne!(a, b);
        assert_eq!(strings.get(a), "user_1");
        assert!(strings.release(a).is_none());
        assert_eq!(strings.release(a).as_deref(), Some("user_1"));
        assert_eq!(strings.find("user_1"), None);
        assert_eq!(strings.len(), 1);
        // The freed id is reused.
        assert_eq!(strings.acquire("user_3"), a);
    }

    /// Growing and shrinking move entries a few at a time: every value stays findable under its id all along.
    #[test]
    fn values_stay_found_while_the_map_is_resized() {
        let mut strings: Interner<str> = Interner::default();
        let mut live = Vec::new();
        for round in 0..3 {
            for i in 0..5_000 {
                let text = format!("value {round} {i}");
                live.push((strings.acquire(&text), text));
                if i % 3 == 0 {
                    let (id, text) = live.swap_remove(live.len() / 2);
                    assert_eq!(strings.release(id).as_deref(), Some(text.as_str()));
                }
                if i % 997 == 0 {
                    assert!(live.iter().all(|(id, text)| strings.find(text) == Some(*id) && strings.get(*id) == text));
                }
            }
            // Most go: the map shrinks, a few entries at a time again.
            for (id, _) in live.drain(live.len() / 10..) {
                strings.release(id);
            }
            strings.shrink_when_sparse();
            assert_eq!(strings.len(), live.len());
            assert!(live.iter().all(|(id, text)| strings.find(text) == Some(*id)));
        }
    }

    #[test]
    fn shrinking_keeps_live_ids() {
        let mut groups: Interner<[u32]> = Interner::default();
        let ids: Vec<u32> = (0..1000).map(|i| groups.acquire(&[i, i + 1][..])).collect();
        for &id in &ids[1..] {
            groups.release(id);
        }
        groups.shrink_when_sparse();
        assert_eq!(groups.get(ids[0]), &[0, 1]);
        assert_eq!(groups.len(), 1);
        let again = groups.acquire(&[7, 7][..]);
        assert_eq!(groups.get(again), &[7, 7]);
    }
}
