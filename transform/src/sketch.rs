//! The quantile sketch behind `percentile(FIELD, q)` and `median(FIELD)`: DDSketch (Masson, Rim and Lee,
//! VLDB 2019) with 1 % relative accuracy. A value `x > 0` falls in bucket `ceil(log_γ x)` with
//! `γ = (1 + α) / (1 − α)` (α = 0.94 %, and answers rounded to four significant digits); a bucket's count is
//! all it keeps, so sketches of panes merge by adding counts. A quantile's answer is within 1 % (relative)
//! of the value at rank `⌊q · (n − 1)⌋` of the sorted values.
//! Code of our own: the published crates keep dense stores that grow by hundreds of buckets at once, too
//! coarse to account in a 2 MiB VM.

use crate::aggregate::{Number, Quantile};

/// The relative accuracy promised.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// The buckets' own accuracy α, a little finer, so that answers rounded to four significant digits (at most
/// 0.05 % off) keep the promise.
const BUCKET_ACCURACY: f64 = 0.0094;
const GAMMA: f64 = (1.0 + BUCKET_ACCURACY) / (1.0 - BUCKET_ACCURACY);

/// Bytes a sketch counts in the state: its header and its two vectors' headers.
pub const SKETCH_BYTES: usize = 40;
/// Bytes a bucket counts: its index and count, twice over, as a vector may double its room.
pub const BUCKET_BYTES: usize = 16;

/// Values by sign: zeros counted apart, the rest in buckets of their magnitude, sorted by index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    zeros: u64,
    positive: Vec<Bucket>,
    negative: Vec<Bucket>,
}

/// A bucket's index and count (saturating: a count that reaches 2^32 − 1 stays there).
type Bucket = (i32, u32);

/// The positive or the negative store of a sketch.
type StoreOf = fn(&Sketch) -> &Vec<Bucket>;

/// The bucket of a magnitude `x > 0`.
fn bucket(x: f64) -> i32 {
    (x.ln() / GAMMA.ln()).ceil() as i32
}

/// The value that stands for a bucket: within α of every magnitude in it, to four significant digits.
fn representative(bucket: i32) -> f64 {
    // In logarithms, so a bucket near the largest float does not overflow on the way (9e307 read as f64::MAX).
    let value = (f64::from(bucket) * GAMMA.ln() + (2.0 / (GAMMA + 1.0)).ln()).exp().min(f64::MAX);
    let scale = 10f64.powi(3 - value.log10().floor() as i32);
    let rounded = (value * scale).round() / scale;
    if rounded.is_finite() && rounded > 0.0 {
        rounded
    } else {
        value
    }
}

impl Sketch {
    fn store(&mut self, x: f64) -> Option<(&mut Vec<Bucket>, i32)> {
        if x > 0.0 {
            Some((&mut self.positive, bucket(x)))
        } else if x < 0.0 {
            Some((&mut self.negative, bucket(-x)))
        } else {
            None
        }
    }

    /// Whether adding `x` needs a new bucket.
    pub fn needs_bucket(&self, x: f64) -> bool {
        let (store, index) = match x {
            x if x > 0.0 => (&self.positive, bucket(x)),
            x if x < 0.0 => (&self.negative, bucket(-x)),
            _ => return false,
        };
        store.binary_search_by_key(&index, |&(index, _)| index).is_err()
    }

    /// Adds a value; returns the bytes the state grew by.
    pub fn add(&mut self, value: Number) -> usize {
        let x = match value {
            Number::Int(int) => int as f64,
            Number::Float(float) => float,
        };
        let Some((store, index)) = self.store(x) else {
            self.zeros += 1;
            return 0;
        };
        if store.capacity() == 0 {
            store.reserve_exact(1); // a vector's first room is otherwise four buckets, counted as one
        }
        match store.binary_search_by_key(&index, |&(index, _)| index) {
            Ok(at) => {
                store[at].1 = store[at].1.saturating_add(1);
                0
            }
            Err(at) => {
                store.insert(at, (index, 1));
                BUCKET_BYTES
            }
        }
    }

    /// Becomes the sum of `sketches` (the panes of a window): their buckets gathered, sorted and added up,
    /// in room reserved exactly (a window's row needs no more than half the bytes its panes count).
    pub fn sum_of<'a>(&mut self, sketches: impl Iterator<Item = &'a Sketch> + Clone) {
        self.zeros = sketches.clone().map(|sketch| sketch.zeros).sum();
        let stores: [(&mut Vec<Bucket>, StoreOf); 2] =
            [(&mut self.positive, |sketch| &sketch.positive), (&mut self.negative, |sketch| &sketch.negative)];
        for (mine, theirs) in stores {
            mine.clear();
            mine.reserve_exact(sketches.clone().map(|sketch| theirs(sketch).len()).sum());
            for sketch in sketches.clone() {
                mine.extend_from_slice(theirs(sketch));
            }
            mine.sort_unstable_by_key(|&(index, _)| index);
            mine.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 = kept.1.saturating_add(later.1);
                }
                same
            });
        }
    }

    /// Frees the room of a large sum once its row is made, so no scratch stays large.
    pub fn release_if_large(&mut self) {
        if self.positive.capacity() + self.negative.capacity() > 4_096 {
            *self = Sketch::default();
        }
    }

    pub fn buckets(&self) -> usize {
        self.positive.len() + self.negative.len() + 1
    }

    /// The bytes this sketch counts in the state.
    pub fn bytes(&self) -> usize {
        SKETCH_BYTES + BUCKET_BYTES * (self.positive.len() + self.negative.len())
    }

    /// The value at quantile `q`, within α of the exact one; `None` when the sketch is empty.
    pub fn quantile(&self, q: Quantile) -> Option<Number> {
        let negatives: u64 = self.negative.iter().map(|&(_, count)| u64::from(count)).sum();
        let positives: u64 = self.positive.iter().map(|&(_, count)| u64::from(count)).sum();
        let total = negatives + self.zeros + positives;
        if total == 0 {
            return None;
        }
        // ⌊q·(n − 1)⌋ in integers: in floats, 0.58 · 50 is 28.999999999999996.
        let rank = (u128::from(q.0) * u128::from(total - 1) / 1_000_000) as u64;
        // Ascending: the negatives from the largest magnitude, then the zeros, then the positives.
        let mut seen = 0;
        for &(index, count) in self.negative.iter().rev() {
            seen += u64::from(count);
            if seen > rank {
                return Some(Number::Float(-representative(index)));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(Number::Float(0.0));
        }
        for &(index, count) in &self.positive {
            seen += u64::from(count);
            if seen > rank {
                return Some(Number::Float(representative(index)));
            }
        }
        // Not reached: the rank is below the total.
        self.positive.last().map(|&(index, _)| Number::Float(representative(index)))
    }
}

/// Sketches addressed by the id a percentile accumulator holds, with a list of free ids.
#[derive(Default)]
pub struct Sketches {
    sketches: Vec<Sketch>,
    free: Vec<u32>,
}

impl Sketches {
    /// A new empty sketch's id.
    pub fn create(&mut self) -> u32 {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.sketches.push(Sketch::default());
                (self.sketches.len() - 1) as u32
            }
        }
    }

    pub fn get(&self, id: u32) -> &Sketch {
        &self.sketches[id as usize]
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Sketch {
        &mut self.sketches[id as usize]
    }

    /// Frees a sketch; returns the bytes it counted.
    pub fn remove(&mut self, id: u32) -> usize {
        let sketch = std::mem::take(&mut self.sketches[id as usize]);
        self.free.push(id);
        sketch.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: Quantile) -> f64 {
        sorted[(u128::from(q.0) * (sorted.len() - 1) as u128 / 1_000_000) as usize]
    }

    #[test]
    fn quantiles_are_within_the_relative_accuracy_of_the_exact_ones() {
        // Skewed values over twelve orders of magnitude, both signs, and zeros.
        let mut values: Vec<f64> = (0..5_000).map(|i| 1.0017f64.powi(i * 7 % 16_000) * 1e-3).collect();
        values.extend((0..700).map(|i| -(i as f64) * 3.25));
        values.extend([0.0; 40]);
        let mut sketch = Sketch::default();
        for &value in &values {
            sketch.add(Number::Float(value));
        }
        values.sort_by(f64::total_cmp);
        for q in [0, 10_000, 100_000, 250_000, 500_000, 580_000, 900_000, 950_000, 990_000, 999_000, 1_000_000] {
            let q = Quantile(q);
            let (Some(Number::Float(estimate)), expected) = (sketch.quantile(q), exact(&values, q)) else { panic!() };
            assert!(
                (estimate - expected).abs() <= RELATIVE_ACCURACY * expected.abs() * (1.0 + 1e-9),
                "q={q}: {estimate} for {expected}"
            );
        }
    }

    #[test]
    fn the_sum_of_sketches_equals_adding_their_values() {
        let (mut a, mut b, mut both) = (Sketch::default(), Sketch::default(), Sketch::default());
        for i in 0..300 {
            let value = Number::Int(i * i - 400);
            if i % 3 == 0 { &mut a } else { &mut b }.add(value);
            both.add(value);
        }
        let mut sum = Sketch::default();
        sum.sum_of([&a, &b].into_iter());
        assert_eq!(sum, both);
        assert_eq!(Sketch::default().quantile(Quantile::MEDIAN), None);
    }

    #[test]
    fn a_new_bucket_is_what_grows_the_state() {
        let mut sketch = Sketch::default();
        assert!(sketch.needs_bucket(10.0) && !sketch.needs_bucket(0.0));
        assert_eq!(sketch.add(Number::Int(10)), BUCKET_BYTES);
        assert!(!sketch.needs_bucket(10.05));
        assert_eq!(sketch.add(Number::Float(10.05)), 0);
        assert_eq!(sketch.add(Number::Int(0)), 0);
        assert_eq!(sketch.bytes(), SKETCH_BYTES + BUCKET_BYTES);
        // The README's figure: values from 1 to 10^6 fill at most 750 buckets.
        let mut wide = Sketch::default();
        for i in 0..=60_000 {
            wide.add(Number::Float(10f64.powf(f64::from(i) / 10_000.0)));
        }
        assert!(wide.buckets() <= 750, "{} buckets", wide.buckets());
    }

    /// Regressions found in review: the rank of 0.58 of 51 values came out 28 (floats), not 29; and 9e307
    /// came out as the largest float (the representative overflowed on the way).
    #[test]
    fn ranks_are_exact_and_huge_values_do_not_overflow() {
        let mut sketch = Sketch::default();
        for x in 1..=51 {
            sketch.add(Number::Int(x));
        }
        let Some(Number::Float(answer)) = sketch.quantile(Quantile(580_000)) else { panic!() };
        assert!((answer - 30.0).abs() <= 0.3, "{answer} for 30");
        for huge in [9e307, -9e307, 1e308, f64::MAX] {
            let mut sketch = Sketch::default();
            sketch.add(Number::Float(huge));
            let Some(Number::Float(answer)) = sketch.quantile(Quantile::MEDIAN) else { panic!() };
            assert!((answer - huge).abs() <= RELATIVE_ACCURACY * huge.abs(), "{answer} for {huge}");
        }
    }
}
