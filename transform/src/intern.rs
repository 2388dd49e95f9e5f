//! Reference-counted interning: each distinct value is stored once and named by a small id, and is freed
//! when its last user lets go, so state never grows with values that no open window needs.
//!
//! An id's slot holds its users and its value's hash; the values themselves are kept by a [`Store`]: boxed one
//! by one ([`Boxed`], for texts), or as rows of ids of one width side by side ([`IdRows`], for groups).
//! Values are found through an index of ids (open addressing with linear probing, at most two thirds
//! full): a value costs what its store keeps, an 8-byte slot and a few index entries of 4 bytes, not a second
//! reference to it in a map. Slots and stores are kept in chunks, so they grow without being copied.
//!
//! The index grows a few entries at a time: when it is two thirds full, an index half as large again takes its
//! place and every later insert also moves a few entries of the old one across. An index that grew in one
//! insert would rehash every entry there, work that grows with the open groups and would fall on whichever
//! record made one too many. An index that is mostly empty is rebuilt smaller at once, at the end of a pass.

use std::hash::{BuildHasher, Hash, RandomState};

use crate::chunked::{Chunked, CHUNK};

/// Where an interner keeps its values, by id.
pub trait Store: Default {
    type Value: ?Sized + Hash + Eq;
    /// The value at a live id.
    fn get(&self, id: u32) -> &Self::Value;
    /// Puts a value at `id`, one past the last id to add one.
    fn put(&mut self, id: u32, value: &Self::Value);
    /// Lets go of the value at `id`, which is free from now on.
    fn free(&mut self, id: u32);
    /// Keeps the first `ids` ids, and gives back the room of the others.
    fn truncate(&mut self, ids: usize);
}

/// Values boxed one by one: each costs its box (the allocator's header and rounding) and a pointer.
pub struct Boxed<T: ?Sized>(Chunked<Option<Box<T>>>);

impl<T: ?Sized> Default for Boxed<T> {
    fn default() -> Self {
        Boxed(Chunked::default())
    }
}

impl<T: ?Sized + Hash + Eq> Store for Boxed<T>
where
    for<'a> Box<T>: From<&'a T>,
{
    type Value = T;

    fn get(&self, id: u32) -> &T {
        self.0[id as usize].as_deref().expect("resolved ids are live")
    }

    fn put(&mut self, id: u32, value: &T) {
        self.0.grow_to(id as usize + 1);
        self.0[id as usize] = Some(Box::from(value));
    }

    fn free(&mut self, id: u32) {
        self.0[id as usize] = None;
    }

    fn truncate(&mut self, ids: usize) {
        self.0.truncate(ids);
    }
}

/// Rows of ids all of one width (set by the first row), side by side in chunks of [`CHUNK`] rows: each
/// costs its ids alone.
#[derive(Default)]
pub struct IdRows {
    width: usize,
    chunks: Vec<Box<[u32]>>,
}

impl IdRows {
    /// The ids in each row.
    pub fn width(&self) -> usize {
        self.width
    }

    fn at(&self, id: u32) -> (usize, usize) {
        (id as usize / CHUNK, id as usize % CHUNK * self.width)
    }
}

impl Store for IdRows {
    type Value = [u32];

    fn get(&self, id: u32) -> &[u32] {
        let (chunk, at) = self.at(id);
        &self.chunks[chunk][at..at + self.width]
    }

    fn put(&mut self, id: u32, row: &[u32]) {
        if self.chunks.is_empty() {
            self.width = row.len();
        }
        assert_eq!(row.len(), self.width, "rows of one width");
        let (chunk, at) = self.at(id);
        if chunk == self.chunks.len() {
            self.chunks.push(vec![0; CHUNK * self.width].into());
        }
        self.chunks[chunk][at..at + self.width].copy_from_slice(row);
    }

    fn free(&mut self, _id: u32) {}

    fn truncate(&mut self, ids: usize) {
        self.chunks.truncate(ids.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
    }
}

pub struct Interner<S: Store> {
    store: S,
    slots: Chunked<Slot>,
    /// The first free slot (`NONE` if none); each free slot's `hash` holds the next.
    free: u32,
    /// Every live value's id, in `index` or, while it is resized, in `moving`.
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

/// A new index has room for this many inserts beyond those until the old one has moved across, so one
/// event's inserts (at most its 8 group values and a distinct value for each of 16 aggregates) make it grow
/// at most once, and [`Interner::growth_bytes`] can tell ahead what they need.
pub const INSERTS_PER_EVENT: usize = 32;

/// No id: an empty index entry, the end of the free slots.
const NONE: u32 = u32::MAX;

/// An id's users (0: the id is free) and its value's hash, kept so that searches pass over other values
/// and the index moves entries without hashing them again.
#[derive(Default, Clone, Copy)]
struct Slot {
    users: u32,
    hash: u32,
}

impl<S: Store> Default for Interner<S> {
    fn default() -> Self {
        Interner {
            store: S::default(),
            slots: Chunked::default(),
            free: NONE,
            index: Index::default(),
            moving: Index::default(),
            to_move: 0..0,
            hasher: RandomState::new(),
        }
    }
}

impl<S: Store> Interner<S> {
    /// The id of `value` if it is interned.
    pub fn find(&self, value: &S::Value) -> Option<u32> {
        self.find_hashed(value, self.hash(value))
    }

    fn find_hashed(&self, value: &S::Value, hash: u32) -> Option<u32> {
        let is_value = |id: u32| self.slots[id as usize].hash == hash && self.store.get(id) == value;
        let at = |index: &Index| index.position(hash, is_value).map(|at| index.ids[at]);
        at(&self.index).or_else(|| at(&self.moving))
    }

    /// Adds one user of `value`, interning it first if needed, and returns its id.
    pub fn acquire(&mut self, value: &S::Value) -> u32 {
        let hash = self.hash(value);
        match self.find_hashed(value, hash) {
            Some(id) => {
                self.acquire_id(id);
                id
            }
            None => self.insert(value, hash),
        }
    }

    /// Adds one user of an interned id.
    pub fn acquire_id(&mut self, id: u32) {
        self.slots[id as usize].users += 1;
    }

    /// Whether `id` has one user left, whose release frees it.
    pub fn is_last_use(&self, id: u32) -> bool {
        self.slots[id as usize].users == 1
    }

    /// Drops one user of `id`; returns whether that was the last user and the value has been freed.
    pub fn release(&mut self, id: u32) -> bool {
        let slot = &mut self.slots[id as usize];
        slot.users -= 1;
        if slot.users > 0 {
            return false;
        }
        let hash = slot.hash;
        let slots = &self.slots;
        let hash_of = |id: u32| slots[id as usize].hash;
        for index in [&mut self.index, &mut self.moving] {
            if let Some(at) = index.position(hash, |indexed| indexed == id) {
                index.remove_at(at, hash_of);
                break;
            }
        }
        self.store.free(id);
        self.slots[id as usize].hash = self.free;
        self.free = id;
        true
    }

    /// The value behind a live id.
    pub fn get(&self, id: u32) -> &S::Value {
        debug_assert!(self.slots[id as usize].users > 0, "resolved ids are live");
        self.store.get(id)
    }

    /// How many distinct values are interned.
    pub fn len(&self) -> usize {
        self.index.len + self.moving.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Slots, live or free: the values' room, which is given back only when the last ones are free.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn free_slots(&self) -> usize {
        self.slots.len() - self.len()
    }

    /// The bytes of the index (and of the one being moved across).
    pub fn index_bytes(&self) -> usize {
        INDEX_ENTRY_BYTES * (self.index.ids.len() + self.moving.ids.len())
    }

    /// The bytes the index grows by if `inserts` values (at most [`INSERTS_PER_EVENT`]) are interned now.
    pub fn growth_bytes(&self, inserts: usize) -> usize {
        debug_assert!(inserts <= INSERTS_PER_EVENT);
        if self.moving.len > 0 {
            return 0; // the index being filled has room for them
        }
        let growing_after = (0..inserts).find(|&before| !self.index.has_room_for(before + 1));
        growing_after.map_or(0, |before| INDEX_ENTRY_BYTES * Index::size_for(self.grown_room(before)))
    }

    /// Returns spare room to the allocator once most of it is unused.
    pub fn shrink_when_sparse(&mut self) {
        let in_use = self.slots.iter().rposition(|slot| slot.users > 0).map_or(0, |last| last + 1);
        if 2 * in_use < self.slots.len() {
            self.slots.truncate(in_use);
            self.store.truncate(in_use);
            // The free chain again, without the slots cut off, lowest first.
            self.free = NONE;
            for id in (0..in_use).rev() {
                if self.slots[id].users == 0 {
                    self.slots[id].hash = self.free;
                    self.free = id as u32;
                }
            }
            self.to_move.end = self.to_move.end.min(in_use);
        }
        if self.is_empty() {
            // Nothing to find: no index until the next insert.
            (self.index, self.moving, self.to_move) = (Index::default(), Index::default(), 0..0);
        } else if self.moving.len == 0
            && self.index.len < self.index.ids.len() / 8
            && 2 * Index::size_for(self.shrunk_room()) <= self.index.ids.len()
        {
            self.rebuild_index(self.shrunk_room());
        }
    }

    /// Replaces the index by a smaller one at once, so the large one is given back now and the state never
    /// holds both (entries moved a few per insert would keep it until enough values arrive). The work is a
    /// pass over the slots, once the index is under an eighth full.
    fn rebuild_index(&mut self, entries: usize) {
        let mut index = Index::with_room(entries);
        for id in 0..self.slots.len() {
            let Slot { users: 1.., hash } = self.slots[id] else { continue };
            index.insert(hash, id as u32);
        }
        self.index = index;
    }

    /// The room of the index that replaces this one when it is full, once `before` more values are interned
    /// (each in a free slot while there is one): half as many entries again (or the first).
    fn grown_room(&self, before: usize) -> usize {
        let slots = self.slots.len() + before.saturating_sub(self.free_slots());
        Self::room_while_moving(self.index.ids.len(), self.len() + before, slots)
    }

    /// The room of an index that shrinks: twice its entries, and one event's inserts.
    fn shrunk_room(&self) -> usize {
        2 * self.len() + INSERTS_PER_EVENT
    }

    /// At least `entries`, and room for the `live` values, every insert until the last of them has moved
    /// across (a few of the `slots` per insert), and then one event's.
    fn room_while_moving(entries: usize, live: usize, slots: usize) -> usize {
        entries.max(live + slots / MOVES_PER_INSERT + 1 + INSERTS_PER_EVENT)
    }

    /// Replaces the full index by one with room for `entries`; the old one's entries move across a few at a
    /// time (an empty one is dropped by the first [`Interner::move_some`]).
    fn start_moving(&mut self, entries: usize) {
        self.moving = std::mem::replace(&mut self.index, Index::with_room(entries));
        self.to_move = 0..self.slots.len();
    }

    /// Moves the entries of the next few slots across, if the index is being resized.
    fn move_some(&mut self) {
        let slots = &self.slots;
        let hash_of = |id: u32| slots[id as usize].hash;
        for id in self.to_move.by_ref().take(MOVES_PER_INSERT) {
            let Slot { users: 1.., hash } = slots[id] else { continue };
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
    fn hash(&self, value: &S::Value) -> u32 {
        self.hasher.hash_one(value) as u32
    }

    /// Interns `value`, hashed to `hash`, with one user.
    fn insert(&mut self, value: &S::Value, hash: u32) -> u32 {
        if self.moving.len == 0 && !self.index.has_room_for(1) {
            self.start_moving(self.grown_room(0));
        }
        let id = if self.free == NONE {
            self.slots.push(Slot::default());
            u32::try_from(self.slots.len() - 1).ok().filter(|&id| id != NONE).expect("fewer than 2^32 - 1 live values")
        } else {
            let id = self.free;
            debug_assert_eq!(self.slots[id as usize].users, 0, "free ids have no users");
            self.free = self.slots[id as usize].hash;
            id
        };
        self.slots[id as usize] = Slot { users: 1, hash };
        self.store.put(id, value);
        self.index.insert(hash, id);
        self.move_some();
        id
    }
}

/// The bytes of an index entry.
const INDEX_ENTRY_BYTES: usize = 4;

/// Ids by their values' hashes: open addressing with linear probing, at most two thirds full, so a search
/// for a value that is here meets about two entries on average, and one for a new value about five. It
/// grows by half (homes are spread over any size by multiplying the hash by it).
#[derive(Default)]
struct Index {
    /// `NONE` where empty; none before the first insert.
    ids: Box<[u32]>,
    len: usize,
}

impl Index {
    /// The size of an index that holds `entries` at most two thirds full.
    fn size_for(entries: usize) -> usize {
        (3 * entries).div_ceil(2).max(8)
    }

    fn with_room(entries: usize) -> Index {
        Index { ids: vec![NONE; Self::size_for(entries)].into(), len: 0 }
    }

    fn has_room_for(&self, inserts: usize) -> bool {
        3 * (self.len + inserts) <= 2 * self.ids.len()
    }

    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.ids.len() as u64) >> 32) as usize
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.ids.len() {
            0
        } else {
            at + 1
        }
    }

    /// How far `at` is past `from`, going round.
    fn distance(&self, from: usize, at: usize) -> usize {
        if at >= from {
            at - from
        } else {
            at + self.ids.len() - from
        }
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
                _ => at = self.next(at),
            }
        }
    }

    /// Adds an id that is not here yet; there must be room.
    fn insert(&mut self, hash: u32, id: u32) {
        debug_assert!(self.has_room_for(1));
        let mut at = self.home(hash);
        while self.ids[at] != NONE {
            at = self.next(at);
        }
        self.ids[at] = id;
        self.len += 1;
    }

    /// Empties `hole` and moves later entries of its run back into it where that keeps each one reachable
    /// from its home (no tombstones, so searches stay short however many values come and go).
    fn remove_at(&mut self, mut hole: usize, hash_of: impl Fn(u32) -> u32) {
        let mut at = hole;
        loop {
            at = self.next(at);
            let id = self.ids[at];
            if id == NONE {
                break;
            }
            // It may fill the hole if the hole lies between its home and where it is.
            if self.distance(self.home(hash_of(id)), at) >= self.distance(hole, at) {
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
        let mut strings: Interner<Boxed<str>> = Interner::default();
        let a = strings.acquire("user_1");
        assert_eq!(strings.acquire("user_1"), a);
        let b = strings.acquire("user_2");
        assert_ne!(a, b);
        assert_eq!(strings.get(a), "user_1");
        assert!(!strings.release(a));
        assert!(strings.is_last_use(a));
        assert!(strings.release(a), "the last user frees it");
        assert_eq!(strings.find("user_1"), None);
        assert_eq!(strings.len(), 1);
        // The freed id is reused.
        assert_eq!(strings.acquire("user_3"), a);
    }

    /// Growing and shrinking move entries a few at a time: every value stays findable under its id all along.
    #[test]
    fn values_stay_found_while_the_map_is_resized() {
        let mut strings: Interner<Boxed<str>> = Interner::default();
        let mut live = Vec::new();
        for round in 0..3 {
            for i in 0..5_000 {
                let text = format!("value {round} {i}");
                live.push((strings.acquire(&text), text));
                if i % 3 == 0 {
                    let (id, text) = live.swap_remove(live.len() / 2);
                    assert_eq!(strings.get(id), text);
                    assert!(strings.release(id));
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
        let mut strings: Interner<Boxed<str>> = Interner::default();
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
                assert_eq!(freed, *users == 0);
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

    /// What `growth_bytes` says an event's inserts add to the index is at least what they add, and exactly
    /// the new index when one is made: the state's accounting of the index relies on it.
    #[test]
    fn growth_bytes_tells_ahead_what_inserts_add_to_the_index() {
        let mut strings: Interner<Boxed<str>> = Interner::default();
        let (mut next, mut live) = (0, Vec::new());
        let mut growths = 0;
        for inserts in (1..=INSERTS_PER_EVENT).cycle().take(1_000) {
            // Some values go between events, so inserts take free slots too.
            for _ in 0..inserts / 3 {
                if !live.is_empty() {
                    let id = live.swap_remove(next * 7 % live.len());
                    strings.release(id);
                }
            }
            let (before, predicted) = (strings.index_bytes(), strings.growth_bytes(inserts));
            let was_moving = strings.moving.len > 0;
            for _ in 0..inserts {
                live.push(strings.acquire(&format!("value {next}")));
                next += 1;
            }
            let after = strings.index_bytes();
            assert!(after <= before + predicted, "{inserts} inserts: {before} + {predicted} < {after}");
            if predicted > 0 {
                growths += 1;
                assert!(!was_moving && strings.index.ids.len() * INDEX_ENTRY_BYTES == predicted);
            }
        }
        assert!(growths > 5, "the index grew {growths} times");
    }

    #[test]
    fn shrinking_keeps_live_ids() {
        let mut groups: Interner<IdRows> = Interner::default();
        // Over several chunks of rows.
        let ids: Vec<u32> = (0..1000).map(|i| groups.acquire(&[i, i + 1][..])).collect();
        assert!(ids.iter().enumerate().all(|(i, &id)| groups.get(id) == [i as u32, i as u32 + 1]));
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
