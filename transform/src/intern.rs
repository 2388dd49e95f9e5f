//! Reference-counted interning: each distinct value is stored once and named by a small id, and is freed
//! when its last user lets go, so state never grows with values that no open window needs.
//!
//! Each value is boxed once in its id's slot (with its hash and users) and found through an index of ids
//! (open addressing with linear probing, at most half full): a value costs its box, a 16-byte slot and two
//! to four index entries of 4 bytes, not a second reference to it in a map. The slots are kept in chunks,
//! so they grow without being copied.
//!
//! The index is resized a few entries at a time: when it is half full (or mostly empty), an index of the new
//! size takes its place and every later insert also moves a few entries of the old one across. An index
//! that resized itself would rehash every entry in one insert, work that grows with the open groups and
//! would fall on whichever record made one too many.

use std::hash::{BuildHasher, Hash, RandomState};

use crate::chunked::Chunked;

pub struct Interner<T: ?Sized> {
    slots: Chunked<Slot<T>>,
    /// The first free slot (`NONE` if none); each free slot's `users` holds the next.
    free: u32,
    live: usize,
    index: Index,
    /// While `index` is being resized: the previous index, and the slots (by id) whose values may still be
    /// in it.
    moving: Index,
    to_move: std::ops::Range<usize>,
    /// Seeded at random, so no input can choose values whose hashes collide.
    hasher: RandomState,
}

/// Slots looked at for entries to move across per insert while the index is resized.
const MOVES_PER_INSERT: usize = 4;

/// No id: an empty index entry, the end of the free slots.
const NONE: u32 = u32::MAX;

struct Slot<T: ?Sized> {
    value: Option<Box<T>>,
    users: u32,
    /// The value's hash, kept so that searches pass over other values and the index moves entries without
    /// hashing them again.
    hash: u32,
}

impl<T: ?Sized> Default for Slot<T> {
    fn default() -> Self {
        Slot { value: None, users: 0, hash: 0 }
    }
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            slots: Chunked::default(),
            free: NONE,
            live: 0,
            index: Index::default(),
            moving: Index::default(),
            to_move: 0..0,
            hasher: RandomState::new(),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Box<T>: From<&'a T>,
{
    /// The id of `value` if it is interned.
    pub fn find(&self, value: &T) -> Option<u32> {
        let hash = self.hash(value);
        let is_value = |id: u32| {
            let slot = &self.slots[id as usize];
            slot.hash == hash && slot.value.as_deref() == Some(value)
        };
        let at = |index: &Index| index.position(hash, is_value).map(|at| index.ids[at]);
        at(&self.index).or_else(|| at(&self.moving))
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
    pub fn release(&mut self, id: u32) -> Option<Box<T>> {
        let slot = &mut self.slots[id as usize];
        slot.users -= 1;
        if slot.users > 0 {
            return None;
        }
        let hash = self.slots[id as usize].hash;
        let slots = &self.slots;
        let hash_of = |id: u32| slots[id as usize].hash;
        for index in [&mut self.index, &mut self.moving] {
            if let Some(at) = index.position(hash, |indexed| indexed == id) {
                index.remove_at(at, hash_of);
                break;
            }
        }
        let slot = &mut self.slots[id as usize];
        slot.users = self.free;
        self.free = id;
        self.live -= 1;
        slot.value.take()
    }

    /// The value behind a live id.
    pub fn get(&self, id: u32) -> &T {
        self.slots[id as usize].value.as_deref().expect("resolved ids are live")
    }

    /// How many distinct values are interned.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Returns spare room to the allocator once most of it is unused.
    pub fn shrink_when_sparse(&mut self) {
        let in_use = self.slots.iter().rposition(|slot| slot.value.is_some()).map_or(0, |last| last + 1);
        if in_use < self.slots.len() / 2 {
            self.slots.truncate(in_use);
            // The free chain again, without the slots cut off, lowest first.
            self.free = NONE;
            for id in (0..in_use).rev() {
                if self.slots[id].value.is_none() {
                    self.slots[id].users = self.free;
                    self.free = id as u32;
                }
            }
            self.to_move.end = self.to_move.end.min(in_use);
        }
        // After the slots, whose number sizes the new index.
        if self.moving.len == 0 && self.index.ids.len() > 64 && self.index.len < self.index.ids.len() / 8 {
            self.start_moving(2 * self.index.len);
        }
    }

    /// Replaces the index by one with room for `entries`, and at least for every entry and every insert
    /// until the old index's last entry has moved across.
    fn start_moving(&mut self, entries: usize) {
        let room = entries.max(self.index.len + self.slots.len() / MOVES_PER_INSERT + 1);
        self.moving = std::mem::replace(&mut self.index, Index::with_room(room));
        self.to_move = 0..self.slots.len();
    }

    /// Moves the entries of the next few slots across, if the index is being resized.
    fn move_some(&mut self) {
        let slots = &self.slots;
        let hash_of = |id: u32| slots[id as usize].hash;
        for id in self.to_move.by_ref().take(MOVES_PER_INSERT) {
            let Slot { value: Some(_), hash, .. } = slots[id] else { continue };
            if let Some(at) = self.moving.position(hash, |indexed| indexed == id as u32) {
                self.moving.remove_at(at, hash_of);
                self.index.insert(hash, id as u32);
            }
        }
        if self.moving.len == 0 {
            self.to_move = 0..0;
            self.moving = Index::default();
        }
    }

    /// The value's hash as the index uses it.
    fn hash(&self, value: &T) -> u32 {
        self.hasher.hash_one(value) as u32
    }

    fn insert(&mut self, value: &T) -> u32 {
        if self.moving.len == 0 && !self.index.has_room() {
            self.start_moving(2 * (self.index.len + 1));
        }
        let hash = self.hash(value);
        let slot = Slot { value: Some(Box::from(value)), users: 0, hash };
        let id = if self.free == NONE {
            self.slots.push(slot);
            u32::try_from(self.slots.len() - 1).ok().filter(|&id| id != NONE).expect("fewer than 2^32 - 1 live values")
        } else {
            let id = self.free;
            self.free = self.slots[id as usize].users;
            self.slots[id as usize] = slot;
            id
        };
        self.live += 1;
        self.index.insert(hash, id);
        self.move_some();
        id
    }
}

/// Ids by their values' hashes: open addressing with linear probing, at most half full, so a search meets
/// about two entries on average.
#[derive(Default)]
struct Index {
    /// A power of two of entries (none before the first insert), `NONE` where empty.
    ids: Box<[u32]>,
    len: usize,
}

impl Index {
    /// An index that holds `entries` at most half full.
    fn with_room(entries: usize) -> Index {
        Index { ids: vec![NONE; (2 * entries).next_power_of_two().max(8)].into(), len: 0 }
    }

    fn has_room(&self) -> bool {
        2 * (self.len + 1) <= self.ids.len()
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & (self.ids.len() - 1)
    }

    /// Where the id hashed to `hash` for which `is` holds is, if it is here.
    fn position(&self, hash: u32, is: impl Fn(u32) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.home(hash);
        loop {
            match self.ids[at] {
                NONE => return None,
                id if is(id) => return Some(at),
                _ => at = (at + 1) & (self.ids.len() - 1),
            }
        }
    }

    /// Adds an id that is not here yet; there must be room.
    fn insert(&mut self, hash: u32, id: u32) {
        debug_assert!(self.has_room());
        let mut at = self.home(hash);
        while self.ids[at] != NONE {
            at = (at + 1) & (self.ids.len() - 1);
        }
        self.ids[at] = id;
        self.len += 1;
    }

    /// Empties `hole` and moves later entries of its run back into it where that keeps each one reachable
    /// from its home (no tombstones, so searches stay short however many values come and go).
    fn remove_at(&mut self, mut hole: usize, hash_of: impl Fn(u32) -> u32) {
        let mask = self.ids.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let id = self.ids[at];
            if id == NONE {
                break;
            }
            // It may fill the hole if the hole lies between its home and where it is.
            let home = self.home(hash_of(id));
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.ids[hole] = id;
                hole = at;
            }
        }
        self.ids[hole] = NONE;
        self.len -= 1;
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

    /// Random acquires and releases over a small pool of values, so index runs form and break up: every live
    /// value is found under its id, and every freed one is not, as a plain map of the same uses says.
    #[test]
    fn acquires_and_releases_agree_with_a_map_of_users() {
        let mut strings: Interner<str> = Interner::default();
        let mut model: std::collections::HashMap<String, (u32, u32)> = std::collections::HashMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..40_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let text = format!("v{}", state % 700);
            let acquiring = state >> 40 & 3 != 0 || !model.contains_key(&text);
            if acquiring {
                let id = strings.acquire(&text);
                let (known, users) = model.entry(text).or_insert((id, 0));
                assert_eq!(*known, id);
                *users += 1;
            } else {
                let (id, users) = model.get_mut(&text).unwrap();
                *users -= 1;
                let freed = strings.release(*id);
                assert_eq!(freed.is_some(), *users == 0);
                if *users == 0 {
                    model.remove(&text);
                }
            }
            if step % 5_000 == 0 {
                strings.shrink_when_sparse();
            }
            if step % 997 == 0 {
                assert_eq!(strings.len(), model.len());
                for i in 0..700 {
                    let text = format!("v{i}");
                    assert_eq!(strings.find(&text), model.get(&text).map(|(id, _)| *id), "{text}");
                }
            }
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
