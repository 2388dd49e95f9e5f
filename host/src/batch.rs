//! The batches a VM reads and what it writes for them: the types every import family and the broker model
//! share.

use crate::logs::{DroppedLines, LogLine};
use crate::wire::PayloadView;

/// One record of an input batch, payload already in wire form.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// An input batch as the broker reads it from a partition.
#[derive(Debug, Clone)]
pub struct InputBatch {
    pub partition: u32,
    pub records: Vec<BatchRecord>,
}

/// One record the guest wrote: to which output topic (index into `output_topics`), while handling which
/// record of the batch, after how much of the batch's fuel, and where its payload is in
/// [`BatchOutput::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub topic: usize,
    pub record: usize,
    /// Fuel the batch had used when the record was written: the VM's clock, which the broker's producer
    /// loops run on (the VM yields to them every 2,000,000 units).
    pub fuel: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// What one batch produced.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// The payloads the guest wrote, in wire form, one after another (one buffer for the whole batch).
    pub bytes: Vec<u8>,
    pub written: Vec<Written>,
    pub logs: Vec<LogLine>,
    /// Log lines the broker would not have kept.
    pub dropped_logs: DroppedLines,
    /// The most fuel any record of the batch used.
    pub max_record_fuel: u64,
    /// Fuel every record of the batch used together: how long the VM ran.
    pub fuel: u64,
    /// The largest linear memory so far, in bytes.
    pub peak_memory_bytes: u64,
}

impl BatchOutput {
    /// One written record's payload, in wire form.
    pub fn payload(&self, written: &Written) -> &[u8] {
        &self.bytes[written.start..written.end]
    }

    /// Each record written that a Kafka client can read: its topic index and payload. (The broker also takes
    /// some payloads cut short, which it stores as written and no client can read: they are left out.)
    pub fn records(&self) -> impl Iterator<Item = (usize, PayloadView<'_>)> {
        self.written.iter().filter_map(|written| Some((written.topic, PayloadView::parse(self.payload(written))?)))
    }
}
