//! The sketch behind `approx_count_distinct(FIELD)`: HyperLogLog (Flajolet, Fusy, Gandouet and Meunier, 2007)
//! with 2^11 registers, standard error 1.04 / √2048 ≈ 2.3 %, and the two ideas of HyperLogLog++ (Heule,
//! Nunkesser and Hall, 2013) that matter here: a sparse form (the 64-bit hashes themselves) while a set is
//! small, so a group with a few values costs a few words and counts them exactly, and linear counting for
//! small estimates. Code of our own: the published crates start dense (kilobytes per group and pane).

/// Register index bits: 2^11 registers.
const PRECISION: u32 = 11;
const REGISTERS: usize = 1 << PRECISION;
/// The standard error of a dense estimate.
pub const STANDARD_ERROR: f64 = 1.04 / 45.254_833_995_939_04; // √2048
/// A sparse sketch holds at most this many hashes (as many bytes as the dense registers).
pub const SPARSE_MAX: usize = REGISTERS / 8;

/// Bytes a sketch counts in the state: its header.
pub const SKETCH_BYTES: usize = 24;
/// Bytes a hash counts in a sparse sketch: 8, twice over, as a vector may double its room.
pub const HASH_BYTES: usize = 16;
/// Bytes of the registers of a dense sketch.
pub const DENSE_BYTES: usize = REGISTERS;

/// A dense sketch's registers, and the scratch a window's union is made in.
pub type Registers = [u8; REGISTERS];

/// The hash of a value's tagged text: FNV-1a, then MurmurHash3's 64-bit finaliser to spread its bits.
pub fn hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Hll {
    /// The distinct hashes, sorted.
    Sparse(Vec<u64>),
    /// For each register, the longest run of leading zeros plus one among the hashes that fell in it.
    Dense(Box<Registers>),
}

impl Default for Hll {
    fn default() -> Hll {
        Hll::Sparse(Vec::new())
    }
}

fn register_of(hash: u64) -> (usize, u8) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = hash << PRECISION | 1 << (PRECISION - 1); // a sentinel bit bounds the run
    (index, rest.leading_zeros() as u8 + 1)
}

impl Hll {
    /// The bytes adding `hash` would add to the state.
    pub fn growth(&self, hash: u64) -> usize {
        match self {
            Hll::Sparse(hashes) if hashes.binary_search(&hash).is_ok() => 0,
            Hll::Sparse(hashes) if hashes.len() < SPARSE_MAX => HASH_BYTES,
            // Becoming dense: the registers, less the hashes given back.
            Hll::Sparse(hashes) => DENSE_BYTES.saturating_sub(HASH_BYTES * hashes.len()),
            Hll::Dense(_) => 0,
        }
    }

    /// Adds a hash; returns the change in the bytes the state counts.
    pub fn add(&mut self, hash: u64) -> isize {
        match self {
            Hll::Sparse(hashes) => match hashes.binary_search(&hash) {
                Ok(_) => 0,
                Err(at) if hashes.len() < SPARSE_MAX => {
                    if hashes.capacity() == 0 {
                        hashes.reserve_exact(1); // a vector's first room is otherwise four hashes, counted as one
                    }
                    hashes.insert(at, hash);
                    HASH_BYTES as isize
                }
                Err(_) => {
                    let freed = (HASH_BYTES * hashes.len()) as isize;
                    let mut registers = Box::new([0u8; REGISTERS]);
                    for &old in hashes.iter().chain([&hash]) {
                        let (index, rank) = register_of(old);
                        registers[index] = registers[index].max(rank);
                    }
                    *self = Hll::Dense(registers);
                    DENSE_BYTES as isize - freed
                }
            },
            Hll::Dense(registers) => {
                let (index, rank) = register_of(hash);
                registers[index] = registers[index].max(rank);
                0
            }
        }
    }

    /// The bytes this sketch counts in the state.
    pub fn bytes(&self) -> usize {
        SKETCH_BYTES
            + match self {
                Hll::Sparse(hashes) => HASH_BYTES * hashes.len(),
                Hll::Dense(_) => DENSE_BYTES,
            }
    }

    /// The work of reading it.
    pub fn size(&self) -> usize {
        match self {
            Hll::Sparse(hashes) => hashes.len(),
            Hll::Dense(_) => REGISTERS,
        }
    }
}

/// The distinct count of the union of `sketches` (a window's panes): exact while their hashes together are at
/// most [`SPARSE_MAX`] and all sparse, else the HyperLogLog estimate. `hashes` and `registers` are scratch.
pub fn union_estimate<'a>(
    sketches: impl Iterator<Item = &'a Hll> + Clone,
    hashes: &mut Vec<u64>,
    registers: &mut Registers,
) -> u64 {
    hashes.clear();
    let mut dense = false;
    for sketch in sketches.clone() {
        match sketch {
            Hll::Sparse(more) if !dense => hashes.extend_from_slice(more),
            _ => dense = true,
        }
        // Kept small: duplicates out as it grows, and dense once the union is past the exact sets.
        if !dense && hashes.len() > 2 * SPARSE_MAX {
            hashes.sort_unstable();
            hashes.dedup();
            dense = hashes.len() > SPARSE_MAX;
        }
    }
    if !dense {
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.len() <= SPARSE_MAX {
            return hashes.len() as u64;
        }
    }
    registers.fill(0);
    for sketch in sketches {
        match sketch {
            Hll::Sparse(more) => {
                for &hash in more {
                    let (index, rank) = register_of(hash);
                    registers[index] = registers[index].max(rank);
                }
            }
            Hll::Dense(theirs) => {
                for (mine, &their) in registers.iter_mut().zip(theirs.iter()) {
                    *mine = (*mine).max(their);
                }
            }
        }
    }
    hashes.clear();
    estimate(registers)
}

/// HyperLogLog's estimate, by linear counting while it is small (under 2.5 m with empty registers left).
fn estimate(registers: &Registers) -> u64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = registers.iter().map(|&rank| (-f64::from(rank)).exp2()).sum();
    let raw = alpha * m * m / sum;
    let empty = registers.iter().filter(|&&rank| rank == 0).count();
    let estimate = if raw <= 2.5 * m && empty > 0 { m * (m / empty as f64).ln() } else { raw };
    estimate.round() as u64
}

/// Sketches addressed by the id an `approx_count_distinct` accumulator holds, with a list of free ids.
#[derive(Default)]
pub struct Hlls {
    sketches: Vec<Hll>,
    free: Vec<u32>,
}

impl Hlls {
    pub fn create(&mut self) -> u32 {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.sketches.push(Hll::default());
                (self.sketches.len() - 1) as u32
            }
        }
    }

    pub fn get(&self, id: u32) -> &Hll {
        &self.sketches[id as usize]
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Hll {
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

    fn count(values: impl Iterator<Item = String>, panes: usize) -> u64 {
        let mut sketches = vec![Hll::default(); panes];
        for (index, value) in values.enumerate() {
            sketches[index % panes].add(hash(&value));
        }
        union_estimate(sketches.iter(), &mut Vec::new(), &mut Box::new([0; REGISTERS]))
    }

    #[test]
    fn a_small_union_of_many_panes_is_counted_exactly() {
        let mut pane = Hll::default();
        for user in 0..100 {
            pane.add(hash(&format!("suser{user}")));
        }
        let panes = vec![pane; 30];
        let estimate = union_estimate(panes.iter(), &mut Vec::new(), &mut Box::new([0; REGISTERS]));
        assert_eq!(estimate, 100, "30 panes of the same 100 values");
    }

    #[test]
    fn small_sets_are_counted_exactly() {
        for distinct in [0, 1, 7, SPARSE_MAX] {
            let values = (0..3 * distinct).map(|i| format!("suser{}", i % distinct.max(1)));
            let values: Vec<String> = if distinct == 0 { Vec::new() } else { values.collect() };
            assert_eq!(count(values.into_iter(), 3), distinct as u64);
        }
    }

    /// The README's promise: on 20 seeds each, large cardinalities are estimated within three standard errors.
    #[test]
    fn large_cardinalities_are_within_three_standard_errors() {
        for cardinality in [1_000u64, 5_000, 20_000, 100_000, 400_000] {
            for seed in 0..20 {
                let values = (0..cardinality).map(|i| format!("s{seed}-visitor-{i}"));
                let estimate = count(values, 4) as f64;
                let error = (estimate - cardinality as f64).abs() / cardinality as f64;
                assert!(error <= 3.0 * STANDARD_ERROR, "{cardinality} (seed {seed}): {estimate}, {error:.4}");
            }
        }
    }

    #[test]
    fn the_state_grows_by_what_growth_says() {
        let mut sketch = Hll::default();
        for i in 0..(SPARSE_MAX as u64 + 10) {
            let hash = hash(&format!("i{i}"));
            let before = sketch.bytes() as isize;
            let expected = sketch.growth(hash) as isize;
            let change = sketch.add(hash);
            assert_eq!(sketch.bytes() as isize - before, change);
            assert_eq!(change.max(0), expected, "value {i}");
        }
        assert!(matches!(sketch, Hll::Dense(_)));
    }
}
