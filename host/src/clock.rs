//! The monotonic clock of a core, which outlives the VMs that read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The monotonic clock `clock_time_get` reads: 0, then 1 ms more on each read (`wasi.cc`). In the broker it
/// belongs to the core's engine, so a VM that restarts after a trap goes on from where the last one was.
#[derive(Debug, Clone, Default)]
pub struct MonotonicClock(Arc<AtomicU64>);

impl MonotonicClock {
    /// The time in nanoseconds; the next read is 1 ms later.
    pub(crate) fn read(&self) -> u64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }
}
