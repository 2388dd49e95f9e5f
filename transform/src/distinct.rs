//! The sets behind `count_distinct`: one per group and pane, of value ids (the engine interns each value's
//! tagged text once, shared with group values). A window's count is the size of the union of its panes' sets.

use crate::aggregate::NO_SET;

/// Bytes a set counts in the state: its vector's header and allocation.
pub const SET_BYTES: usize = 24;
/// Bytes a value counts in a set: its id, twice over, as a vector may double its room.
pub const ENTRY_BYTES: usize = 8;

/// Sets of value ids, each sorted, addressed by the id a `count_distinct` accumulator holds.
#[derive(Default)]
pub struct DistinctSets {
    sets: Vec<Vec<u32>>,
    free: Vec<u32>,
}

impl DistinctSets {
    /// Whether the set `set` (maybe [`NO_SET`]) holds `value`.
    pub fn contains(&self, set: u32, value: u32) -> bool {
        set != NO_SET && self.sets[set as usize].binary_search(&value).is_ok()
    }

    /// Adds `value` to the set `*set`, making the set first if it is [`NO_SET`]. Returns the bytes the state
    /// grew by, `None` when the value was there already.
    pub fn insert(&mut self, set: &mut u32, value: u32) -> Option<usize> {
        let mut grown = 0;
        if *set == NO_SET {
            *set = match self.free.pop() {
                Some(id) => id,
                None => {
                    self.sets.push(Vec::new());
                    (self.sets.len() - 1) as u32
                }
            };
            grown += SET_BYTES;
        }
        let values = &mut self.sets[*set as usize];
        let at = values.binary_search(&value).err()?;
        if values.capacity() == 0 {
            values.reserve_exact(1); // a vector's first room is otherwise four values, counted as one
        }
        values.insert(at, value);
        Some(grown + ENTRY_BYTES)
    }

    pub fn values(&self, set: u32) -> &[u32] {
        if set == NO_SET {
            &[]
        } else {
            &self.sets[set as usize]
        }
    }

    /// Frees the set; returns its values (for the caller to release) and the bytes it counted.
    pub fn remove(&mut self, set: u32) -> (Vec<u32>, usize) {
        if set == NO_SET {
            return (Vec::new(), 0);
        }
        let values = std::mem::take(&mut self.sets[set as usize]);
        self.free.push(set);
        let bytes = SET_BYTES + ENTRY_BYTES * values.len();
        (values, bytes)
    }
}

/// The number of distinct values in `values` (the panes' sets one after another); sorts it in place.
pub fn union_len(values: &mut Vec<u32>) -> u64 {
    values.sort_unstable();
    values.dedup();
    values.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keep_each_value_once_and_count_their_bytes() {
        let mut sets = DistinctSets::default();
        let (mut a, mut b) = (NO_SET, NO_SET);
        assert_eq!(sets.insert(&mut a, 7), Some(SET_BYTES + ENTRY_BYTES));
        assert_eq!(sets.insert(&mut a, 3), Some(ENTRY_BYTES));
        assert_eq!(sets.insert(&mut a, 7), None);
        assert_eq!(sets.insert(&mut b, 3), Some(SET_BYTES + ENTRY_BYTES));
        assert!(sets.contains(a, 3) && !sets.contains(b, 7) && !sets.contains(NO_SET, 3));
        let mut panes = [sets.values(a), sets.values(b), sets.values(NO_SET)].concat();
        assert_eq!(union_len(&mut panes), 2);
        assert_eq!(sets.remove(a), (vec![3, 7], SET_BYTES + 2 * ENTRY_BYTES));
        let mut c = NO_SET;
        sets.insert(&mut c, 1);
        assert_eq!(c, a, "a freed set is reused");
    }
}
