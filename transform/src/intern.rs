//! Reference-counted interning: each distinct value is stored once and named by a small id, and is freed
//! when its last user lets go, so state never grows with values that no open window needs.

use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

pub struct Interner<T: ?Sized + Hash + Eq> {
    ids: HashMap<Rc<T>, u32>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

struct Slot<T: ?Sized> {
    value: Option<Rc<T>>,
    users: u32,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Interner { ids: HashMap::new(), slots: Vec::new(), free: Vec::new() }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Rc<T>: From<&'a T>,
{
    /// The id of `value` if it is interned.
    pub fn find(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
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
        self.ids.remove(&*value);
        self.free.push(id);
        Some(value)
    }

    /// The value behind a live id.
    pub fn get(&self, id: u32) -> &T {
        self.slots[id as usize].value.as_deref().expect("resolved ids are live")
    }

    /// How many distinct values are interned.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Returns spare capacity to the allocator once most of it is unused.
    pub fn shrink_when_sparse(&mut self) {
        if self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to_fit();
        }
        let in_use = self.slots.iter().rposition(|slot| slot.value.is_some()).map_or(0, |last| last + 1);
        if in_use < self.slots.len() / 2 {
            self.slots.truncate(in_use);
            self.slots.shrink_to_fit();
            self.free.retain(|&id| (id as usize) < in_use);
            self.free.shrink_to_fit();
        }
    }

    fn insert(&mut self, value: &T) -> u32 {
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
