//! Window Top-N, as Flink's `ROW_NUMBER() OVER (PARTITION BY window_start, window_end, FIELDS ORDER BY agg
//! DESC) <= N`: while the engine visits a fired window's groups (in group order), each partition keeps its N
//! best rows in a heap; once every group is visited, the kept rows come out partition by partition (in the
//! order each partition's first group was visited), best first, with their rank.
//!
//! Ties: Flink leaves the order among equal values undefined. Here the group visited first (the earlier in
//! group order) ranks first, so the same input always gives the same rows.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use crate::aggregate::Number;

/// What `TOP_N`, `TOP_N_BY`, `TOP_N_ORDER` and `TOP_N_PARTITION_BY` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopNSpec {
    /// Rows kept per window and partition.
    pub n: usize,
    /// The aggregate ranked by, as its index in output order.
    pub by: usize,
    /// Largest first (`desc`, the default) or smallest first.
    pub descending: bool,
    /// The group fields that partition a window, as indexes into the group.
    pub partition_by: Vec<usize>,
}

/// One group's row of the window being ranked, kept until it is written or pushed out.
#[derive(Debug)]
pub struct Candidate<Group> {
    /// The group, in whatever form its owner can write it later.
    pub group: Group,
    pub count: u64,
    pub values: Vec<Option<Number>>,
    /// Its place in the visit: ties go to the earlier group.
    pub visited: u64,
}

/// Orders ranked values: null below every number, numbers by value (an integer and a float of equal value
/// are a tie), as Flink orders nulls by default (smallest: last when descending, first when ascending).
pub fn compare_ranked(a: Option<Number>, b: Option<Number>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.cmp_value(b),
    }
}

/// A candidate in a heap whose top is the partition's worst kept row.
struct Kept<Group> {
    candidate: Candidate<Group>,
    descending: bool,
    by: usize,
}

impl<Group> Kept<Group> {
    /// `Less` when `self` ranks before `other`.
    fn rank_order(&self, other: &Self) -> Ordering {
        rank_order(self.descending, self.key(self.by), other.key(self.by))
    }

    fn key(&self, by: usize) -> (Option<Number>, u64) {
        (self.candidate.values[by], self.candidate.visited)
    }
}

/// `Less` when a row of ranked value `a.0`, visited at `a.1`, ranks before `b`.
fn rank_order(descending: bool, a: (Option<Number>, u64), b: (Option<Number>, u64)) -> Ordering {
    let by_value = compare_ranked(a.0, b.0);
    let by_value = if descending { by_value.reverse() } else { by_value };
    by_value.then(a.1.cmp(&b.1))
}

impl<Group> PartialEq for Kept<Group> {
    fn eq(&self, other: &Self) -> bool {
        self.rank_order(other) == Ordering::Equal
    }
}

impl<Group> Eq for Kept<Group> {}

impl<Group> PartialOrd for Kept<Group> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<Group> Ord for Kept<Group> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank_order(other)
    }
}

/// The N best rows of each partition of one window, then those rows in rank order.
pub struct Ranking<Group> {
    spec: TopNSpec,
    /// Partition key (the values of its fields, as ids the owner gives) → index into `heaps`, in the order
    /// the partitions were first offered a row. (A BTreeMap: no hashing seeds to ask the host for.)
    partitions: BTreeMap<Vec<u32>, usize>,
    heaps: Vec<BinaryHeap<Kept<Group>>>,
    /// While the rows are taken: the next partition, and the current one's rows best first with the next rank.
    next_heap: usize,
    current: Option<(std::vec::IntoIter<Kept<Group>>, u64)>,
}

impl<Group> Ranking<Group> {
    pub fn new(spec: TopNSpec) -> Ranking<Group> {
        Ranking { spec, partitions: BTreeMap::new(), heaps: Vec::new(), next_heap: 0, current: None }
    }

    pub fn spec(&self) -> &TopNSpec {
        &self.spec
    }

    /// Whether a row of `partition` with this ranked value, visited at `visited`, would be kept: O(log P)
    /// with no allocation, so the rows that are not kept cost little.
    pub fn would_keep(&self, partition: &[u32], value: Option<Number>, visited: u64) -> bool {
        let Some(&index) = self.partitions.get(partition) else { return true };
        let heap = &self.heaps[index];
        match heap.peek() {
            Some(worst) if heap.len() >= self.spec.n => {
                rank_order(self.spec.descending, (value, visited), worst.key(self.spec.by)) == Ordering::Less
            }
            _ => true,
        }
    }

    /// Keeps a candidate [`Ranking::would_keep`] accepted; returns the one it pushed out of its partition.
    pub fn offer(&mut self, partition: &[u32], candidate: Candidate<Group>) -> Option<Candidate<Group>> {
        let index = match self.partitions.get(partition) {
            Some(&index) => index,
            None => {
                self.partitions.insert(partition.to_vec(), self.heaps.len());
                self.heaps.push(BinaryHeap::new());
                self.heaps.len() - 1
            }
        };
        let kept = Kept { candidate, descending: self.spec.descending, by: self.spec.by };
        let heap = &mut self.heaps[index];
        if heap.len() < self.spec.n {
            // Room doubles from one row up to N: a partition of one row holds one.
            if heap.len() == heap.capacity() {
                heap.reserve_exact(heap.len().clamp(1, self.spec.n - heap.len()));
            }
            heap.push(kept);
            return None;
        }
        let mut worst = heap.peek_mut().expect("N is at least 1");
        Some(std::mem::replace(&mut *worst, kept).candidate)
    }

    /// The kept rows with their ranks (from 1), one at a time: partition by partition in the order they
    /// were first offered a row, each best first. `None` once all are taken: the ranking is then empty.
    pub fn next_ranked(&mut self) -> Option<(u64, Candidate<Group>)> {
        loop {
            if let Some((rows, rank)) = &mut self.current {
                if let Some(kept) = rows.next() {
                    *rank += 1;
                    return Some((*rank, kept.candidate));
                }
            }
            let Some(heap) = self.heaps.get_mut(self.next_heap) else {
                // Fresh maps: a window of many partitions leaves no large allocation behind.
                (self.partitions, self.heaps, self.next_heap, self.current) = (BTreeMap::new(), Vec::new(), 0, None);
                return None;
            };
            self.current = Some((std::mem::take(heap).into_sorted_vec().into_iter(), 0));
            self.next_heap += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Number::{Float, Int};

    /// A ranking and the number of groups offered to it so far.
    fn ranking(n: usize, descending: bool) -> (Ranking<&'static str>, u64) {
        (Ranking::new(TopNSpec { n, by: 0, descending, partition_by: vec![] }), 0)
    }

    fn offer(top: &mut (Ranking<&'static str>, u64), partition: u32, group: &'static str, value: Option<Number>) {
        let candidate = Candidate { group, count: 1, values: vec![value], visited: top.1 };
        top.1 += 1;
        if top.0.would_keep(&[partition], value, candidate.visited) {
            top.0.offer(&[partition], candidate);
        }
    }

    fn ranked(top: &mut (Ranking<&'static str>, u64)) -> Vec<(u64, &'static str)> {
        std::iter::from_fn(|| top.0.next_ranked()).map(|(rank, candidate)| (rank, candidate.group)).collect()
    }

    #[test]
    fn keeps_the_n_largest_of_each_partition_best_first() {
        let mut top = ranking(2, true);
        offer(&mut top, 7, "a", Some(Int(3)));
        offer(&mut top, 9, "x", Some(Int(1)));
        offer(&mut top, 7, "b", Some(Int(5)));
        offer(&mut top, 7, "c", Some(Float(4.5)));
        offer(&mut top, 7, "d", Some(Int(1)));
        assert_eq!(ranked(&mut top), [(1, "b"), (2, "c"), (1, "x")]);
        assert!(ranked(&mut top).is_empty());
    }

    #[test]
    fn ascending_keeps_the_smallest_and_nulls_rank_as_the_smallest_value() {
        let mut top = ranking(2, false);
        offer(&mut top, 0, "a", Some(Int(3)));
        offer(&mut top, 0, "null", None);
        offer(&mut top, 0, "b", Some(Int(-1)));
        assert_eq!(ranked(&mut top), [(1, "null"), (2, "b")]);
        let mut top = ranking(2, true);
        offer(&mut top, 0, "null", None);
        offer(&mut top, 0, "a", Some(Int(3)));
        offer(&mut top, 0, "b", Some(Int(-1)));
        assert_eq!(ranked(&mut top), [(1, "a"), (2, "b")]);
    }

    #[test]
    fn ties_go_to_the_group_visited_first() {
        let mut top = ranking(2, true);
        offer(&mut top, 0, "first", Some(Int(2)));
        offer(&mut top, 0, "second", Some(Float(2.0)));
        offer(&mut top, 0, "third", Some(Int(2)));
        assert_eq!(ranked(&mut top), [(1, "first"), (2, "second")]);
    }
}
