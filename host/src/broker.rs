//! The broker model: what Redpanda does with the batches a producer sends, read from its source.
//!
//! - Each input partition is a log with offsets, and has a processor (`transform_processor.cc`) that reads
//!   its batches in order and hands them to the VM of the shard leading it: partition `p` is led on shard
//!   `p mod shards` until it moves. All partitions of a shard share one VM, which runs while a processor
//!   of the shard is started (`wasm/cache.cc`, `shared_engine`).
//! - Outputs of input partition `p` go to partition `p mod N` of each output topic. The VM hands each one
//!   to a producer loop per output topic, which writes what it holds at the VM's next yield or the batch's
//!   end once its previous write is done; after a batch, an offset marker follows its outputs, and a loop
//!   that has written up to it queues that offset for commit. The commit batcher flushes queued offsets
//!   every `data_transforms_commit_interval_ms` (`commit_batcher.cc`).
//! - Every processor start, the first included, waits one commit interval for earlier commits to flush
//!   (`commit_batcher::wait_for_previous_flushes`), then reads from its commit, or where the deploy's start
//!   option points when it has none (`processor::load_latest_committed`).
//! - A stopped processor's loops drop what they hold (`processor::stop`); what they wrote stays in the
//!   output topics, and the processor that reads again from the commit writes it again.
//! - A trap restarts the shard's VM at once, so every partition of the shard loses the state it built;
//!   only the failed partition's processor stops. It is started again after a back-off of 1, 2, 4, 8,
//!   16, then 30 s, reset when it fails more than 10 s after its last start (`transform_manager.cc`).
//!   So it normally reads again from the failed batch, while the shard's other partitions go on with the
//!   new VM.
//! - A leadership move stops the partition's processor and starts one on the new shard at once
//!   (`manager::handle_leadership_change`). No VM restarts: the old shard's VM goes on while other
//!   partitions use it, keeping what it counted of the moved one, and the new shard's VM is the one its
//!   partitions already share, if any.
//! - The broker's clock here is record time: the newest record timestamp sent so far.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::{BatchOutput, BatchRecord, InputBatch};
use crate::clock::MonotonicClock;
use crate::logs::LogLine;
use crate::meta::TransformMeta;
use crate::record_batch::{Compression, RecordBatch};
use crate::schema_registry::SchemaRegistry;
use crate::vm::{TransformModule, Vm, VmFailure, VmServices, FUEL_PER_MS};
use crate::wire::PayloadView;

/// What an injected failure (`restart_every`, `restart_at`) stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InjectedFailure {
    /// The VM traps on that record: it restarts, and the partition reads again from its last commit
    /// after the broker's back-off, as for a real trap.
    #[default]
    Trap,
    /// The broker process dies on that record: every VM restarts, and every partition reads again from
    /// its last flushed commit, so everything since is handled again.
    Crash,
}

/// Where a transform deployed after its input was written starts reading (`rpk transform deploy
/// --from-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// `@T`: the first record with a timestamp at or after T (epoch milliseconds); none: after the last.
    Timestamp(i64),
    /// `+N`: offset N of each partition, at most its last record.
    FromStart(i64),
    /// `-N`: the last N records of each partition, but never its first: the broker commits
    /// `max(last offset − N, log start)` and reads after it.
    FromEnd(i64),
}

impl std::str::FromStr for StartOffset {
    type Err = String;

    /// rpk's forms: `@T`, `+N`, `-N`.
    fn from_str(text: &str) -> Result<StartOffset, String> {
        let number = |digits: &str| {
            digits.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| format!("{text:?}: expected @T, +N or -N"))
        };
        match text.split_at_checked(1) {
            Some(("@", ms)) => number(ms).map(StartOffset::Timestamp),
            Some(("+", n)) => number(n).map(StartOffset::FromStart),
            Some(("-", n)) => number(n).map(StartOffset::FromEnd),
            _ => Err(format!("{text:?}: bad prefix, expected @T (epoch milliseconds), +N or -N")),
        }
    }
}

impl StartOffset {
    /// The first offset a processor without a commit reads in a log holding `log_start..end`
    /// (`processor::load_latest_committed`), given the first offset whose record is at or after `@T`: it
    /// commits the offset before it from the last offset `end − 1`, so `+N` and `@T` start at that record
    /// (`+N` past the end at the last one), while `-N` commits `max(end − 1 − N, log_start)` and so never
    /// reads the log's first record.
    pub fn first_offset(self, log_start: i64, end: i64, first_at_time: Option<i64>) -> i64 {
        let last = end - 1;
        match self {
            StartOffset::Timestamp(_) => first_at_time.unwrap_or(end),
            StartOffset::FromStart(n) => (log_start + n).min(last).max(log_start),
            StartOffset::FromEnd(n) => (last - n).max(log_start) + 1,
        }
    }
}

/// How the broker side is set up.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Output partitions; default: as many as the input.
    pub output_partitions: Option<u32>,
    /// Cores: partition `p` is led on shard `p mod shards`, whose single VM it shares.
    pub shards: u32,
    /// `data_transforms_commit_interval_ms`, on the broker clock.
    pub commit_interval_ms: i64,
    /// Inject a failure after every N records delivered for the first time.
    pub restart_every: Option<u64>,
    /// Inject a failure once when the record at (partition, offset) is handled; no partition: any.
    pub restart_at: Vec<(Option<u32>, i64)>,
    pub injected: InjectedFailure,
    /// Move the partition's leadership to the next shard once, as its processor reaches this offset.
    pub move_at: Vec<(u32, i64)>,
    /// Deploy after the input is written, starting here; `None`: deployed before the first record.
    pub from_offset: Option<StartOffset>,
    /// Output records are counted by the value of this header (a dead-letter reason, say).
    pub tally_header: Option<String>,
    pub schema_registry: bool,
    /// The output path: how long one write takes and the limit and compression its batches meet.
    pub writes: WriteConfig,
}

/// How each processor's producer loops write: `src/v/transform/transform_processor.cc`
/// `run_producer_loop` pops everything queued for its output topic and writes it as one record batch,
/// compressed as deployed; the output topic refuses a batch over its `max.message.bytes`.
#[derive(Debug, Clone, Copy)]
pub struct WriteConfig {
    /// How long one write takes (a produce to the output partition, replicated), as fuel of the VM, which
    /// keeps running meanwhile: what it writes then joins the next batch.
    pub latency_fuel: u64,
    pub batch_max_bytes: usize,
    pub compression: Compression,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig { latency_fuel: 5 * FUEL_PER_MS, batch_max_bytes: 1 << 20, compression: Compression::None }
    }
}

/// A producer loop: (shard, input partition, output topic index).
type LoopKey = (usize, u32, usize);

/// One processor's producer loop for one output topic, on its shard's fuel clock.
#[derive(Debug)]
struct ProducerLoop {
    /// What the loop writes at its next pop: the one record batch it makes (for its size), and each record.
    batch: RecordBatch,
    queued: Vec<QueuedOutput>,
    /// The offset marker queued behind the records: the last offset of the newest batch the VM finished.
    marker: Option<i64>,
    /// When the oldest entry was queued, and the input record that wrote the last record.
    queued_since: u64,
    last_input: i64,
    /// When the write in flight ends. The VM yields to the core's other tasks every `FUEL_PER_MS`
    /// (`src/v/wasm/wasmtime.cc`: `millisecond_fuel_amount`); the loop pops at the first yield after.
    busy_until: u64,
}

#[derive(Debug)]
struct QueuedOutput {
    output: Arc<BatchOutput>,
    /// Its index in `output.written`.
    index: usize,
    /// The input record that wrote it, and how many outputs to the same topic that record wrote before it.
    input: i64,
    ordinal: u32,
}

/// When a producer loop pops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pop {
    /// At a yield of the VM (a whole millisecond of fuel), once its write is done.
    Yield,
    /// At the end of a batch.
    BatchEnd,
    /// As soon as its write is done: the VM is idle.
    Idle,
}

impl ProducerLoop {
    fn new(compression: Compression) -> ProducerLoop {
        ProducerLoop {
            batch: RecordBatch::new(compression),
            queued: Vec::new(),
            marker: None,
            queued_since: 0,
            last_input: 0,
            busy_until: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.marker.is_none()
    }

    /// When it pops what it holds, if by `now`.
    fn pop_at(&self, now: u64, pop: Pop) -> Option<u64> {
        let ready = self.busy_until.max(self.queued_since);
        let at = match pop {
            Pop::Yield => ready.div_ceil(FUEL_PER_MS) * FUEL_PER_MS,
            Pop::BatchEnd => now,
            Pop::Idle => ready,
        };
        (!self.is_empty() && ready <= now && at <= now).then_some(at)
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            output_partitions: None,
            shards: 1,
            commit_interval_ms: 3_000,
            restart_every: None,
            restart_at: Vec::new(),
            injected: InjectedFailure::Trap,
            move_at: Vec::new(),
            from_offset: None,
            tally_header: None,
            schema_registry: true,
            writes: WriteConfig::default(),
        }
    }
}

/// A record the transform produced, as it lands in an output topic.
#[derive(Debug, Clone)]
pub struct OutputRecord<'a> {
    pub topic: &'a str,
    pub topic_index: usize,
    /// The shard whose VM wrote it.
    pub shard: u32,
    pub partition: u32,
    pub offset: i64,
    /// Append time: the harness's wall clock when the record is written.
    pub timestamp_ms: i64,
    pub payload: PayloadView<'a>,
    /// Written again: an earlier reading of its input record (before the processor read again from its
    /// commit) put at least as many outputs in this topic as this one is the nth of.
    pub replayed: bool,
}

/// A failure the run went on from, as the broker would.
#[derive(Debug, Clone)]
pub struct Restart {
    pub shard: u32,
    /// The partition whose record failed, and that record.
    pub partition: u32,
    pub offset: Option<i64>,
    pub reason: String,
    /// `None`: a real failure of the module.
    pub injected: Option<InjectedFailure>,
    /// When it failed (broker clock).
    pub at_ms: i64,
    /// The back-off the broker waits before it starts the processor again (0 for a crash).
    pub backoff_ms: i64,
    /// When the partition reads again (broker clock): after the back-off and one commit interval.
    pub resume_at_ms: i64,
    /// The offset it reads again from: its last commit + 1.
    pub resume_from: i64,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.injected {
            None => "the VM failed",
            Some(InjectedFailure::Trap) => "injected trap",
            Some(InjectedFailure::Crash) => "injected broker crash",
        };
        write!(f, "{what} on shard {} at partition {}", self.shard, self.partition)?;
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        let reason = self.reason.lines().next().unwrap_or_default();
        if self.injected.is_none() {
            write!(f, " ({reason})")?;
        }
        let wait_s = self.resume_at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        match self.injected {
            Some(InjectedFailure::Crash) => write!(
                f,
                "; every VM restarts, and every partition reads again from its last flushed commit \
                 ({} for partition {}) after {wait_s:.1} s",
                self.resume_from, self.partition
            ),
            _ => write!(
                f,
                "; the VM restarts at once, and partition {} reads again from offset {} after {wait_s:.1} s \
                 (back-off {:.0} s, then a commit interval)",
                self.partition,
                self.resume_from,
                self.backoff_ms as f64 / 1000.0
            ),
        }
    }
}

/// A partition whose leadership moved to another shard (`--move-at`).
#[derive(Debug, Clone)]
pub struct Move {
    pub partition: u32,
    /// The record its processor had reached.
    pub offset: i64,
    pub from_shard: u32,
    pub to_shard: u32,
    /// Whether the old shard's VM goes on (other partitions use it), keeping what it counted of this one.
    pub old_vm_kept: bool,
    /// Whether the new shard's VM is already shared by other partitions, with the state they built.
    pub new_vm_shared: bool,
    pub at_ms: i64,
    /// When the new processor reads (after one commit interval), and from where: its last commit + 1.
    pub resume_at_ms: i64,
    pub resume_from: i64,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let old = if self.old_vm_kept { "goes on, keeping what it counted of it" } else { "stops" };
        let new = if self.new_vm_shared { "the VM its partitions share" } else { "a VM of its own" };
        write!(
            f,
            "partition {} moves from shard {} to shard {} at offset {}: shard {}'s VM {old}; it reads again from \
             offset {} after {:.1} s on {new}",
            self.partition,
            self.from_shard,
            self.to_shard,
            self.offset,
            self.from_shard,
            self.resume_from,
            self.resume_at_ms.saturating_sub(self.at_ms) as f64 / 1000.0
        )
    }
}

/// Receives what the broker produces.
pub trait OutputSink {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()>;
    /// A log line of the VM on `shard`.
    fn log(&mut self, shard: u32, line: &LogLine);
    /// A batch handed to the VM on `shard` (re-deliveries after restarts included); for tests and traces.
    fn delivered(&mut self, _shard: u32, _batch: &InputBatch) {}
    /// A failure the run went on from.
    fn restart(&mut self, _restart: &Restart) {}
    /// A partition's leadership moved.
    fn moved(&mut self, _moved: &Move) {}
}

/// Totals of the broker side.
#[derive(Debug, Clone, Default)]
pub struct BrokerStats {
    /// Records delivered to VMs, re-deliveries after restarts included.
    pub deliveries: u64,
    /// Output records per topic index.
    pub written: Vec<u64>,
    /// Output records by the value of the tally header.
    pub tallies: BTreeMap<String, u64>,
    pub log_lines: u64,
    /// Log lines the broker drops: invalid text, and a full log buffer.
    pub dropped_log_lines: (u64, u64),
    pub peak_memory_bytes: u64,
    pub max_record_fuel: u64,
    /// Processor restarts after failures, and broker crashes.
    pub restarts: u64,
    pub moves: u64,
    /// Output records written again by a processor that read again from its last commit (see
    /// [`OutputRecord::replayed`]).
    pub written_again: u64,
    pub commits: u64,
    /// Per output topic: the largest batch written, raw and as stored, and the batches written.
    pub largest_batch: Vec<(usize, usize)>,
    pub output_batches: Vec<u64>,
}

/// The broker's `topic_partitions_per_shard`: partitions one core may lead.
pub const MAX_PARTITIONS_PER_SHARD: u32 = 1_000;
/// Cores the harness models (a broker has one shard per core).
pub const MAX_SHARDS: u32 = 256;

/// A processor stops for good when the same record has failed this often (a state that rebuilds itself
/// on the shard before every retry would otherwise loop without end).
const MAX_FAILURES_OF_ONE_RECORD: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessorState {
    /// The transform is not deployed yet: with a start offset, until its input is written; otherwise until
    /// the first record.
    NotDeployed,
    /// Stopped (after a failure, or on the old shard of a move) until this broker time.
    Stopped {
        until_ms: i64,
    },
    /// Started, holding its shard's VM, and waiting for earlier commits to flush until this broker time.
    Starting {
        at_ms: i64,
    },
    Running,
}

/// One input partition: its log and its processor.
struct Partition {
    /// Batches not yet covered by every output's flushed commit, oldest first, each with its place in the
    /// order batches reached the broker.
    log: VecDeque<(u64, Arc<InputBatch>)>,
    next_offset: i64,
    state: ProcessorState,
    /// The shard leading it.
    shard: usize,
    /// The next offset the processor hands to the VM.
    read_from: i64,
    /// Per output topic: the last offset its producer loop has written the outputs of (its commit is
    /// queued).
    processed_through: Vec<i64>,
    /// Per output topic: the flushed commit (−1: none). The processor reads from the smallest.
    committed: Vec<i64>,
    /// Per output topic: the commit the processor started from. A producer loop does not write again the
    /// outputs of batches up to it, as when it is ahead of the others (`run_producer_loop`'s `suppress`).
    started_from: Vec<i64>,
    /// Where the processor starts while it has no commit: the transform's start option.
    start: Option<StartOffset>,
    /// Outputs in the output topics per input record above the flushed commit, by (offset, topic): a
    /// replay's outputs up to these counts are written again.
    in_topics: BTreeMap<(i64, usize), u32>,
    /// Highest offset ever delivered: later first deliveries are new records (for `restart_every`).
    delivered_through: i64,
    backoff: Backoff,
    /// The record that failed last, and how often in a row.
    failing: Option<(i64, u32)>,
}

impl Partition {
    fn new(shard: usize, topics: usize) -> Partition {
        Partition {
            log: VecDeque::new(),
            next_offset: 0,
            state: ProcessorState::NotDeployed,
            shard,
            read_from: 0,
            processed_through: vec![-1; topics],
            committed: vec![-1; topics],
            started_from: vec![-1; topics],
            start: None,
            in_topics: BTreeMap::new(),
            delivered_through: -1,
            backoff: Backoff::default(),
            failing: None,
        }
    }

    /// Where a processor started now reads from: after its smallest flushed commit.
    fn resume_from(&self) -> i64 {
        self.committed.iter().min().map_or(0, |last| last + 1)
    }

    /// Where it will read from once its queued commits are flushed.
    fn queued_resume_from(&self) -> i64 {
        self.processed_through.iter().min().map_or(0, |last| last + 1)
    }

    /// A processor done waiting for earlier flushes reads from its commit, or where the start option points
    /// when it has none.
    fn start_reading(&mut self) {
        if let Some(start) = self.start.take() {
            let first_at_time = match start {
                StartOffset::Timestamp(ms) => self
                    .log
                    .iter()
                    .flat_map(|(_, batch)| &batch.records)
                    .find(|record| record.timestamp_ms >= ms)
                    .map(|record| record.offset),
                _ => None,
            };
            let first = start.first_offset(0, self.next_offset, first_at_time);
            self.committed.fill(first - 1);
        }
        self.state = ProcessorState::Running;
        self.read_from = self.resume_from();
        self.processed_through.clone_from(&self.committed);
        self.started_from.clone_from(&self.committed);
    }

    /// Whether its processor is started, and so holds its shard's VM.
    fn holds_vm(&self) -> bool {
        matches!(self.state, ProcessorState::Running | ProcessorState::Starting { .. })
    }
}

/// The restart back-off of one processor (`transform_manager.cc`, `make_exponential_backoff_policy`).
#[derive(Debug, Default)]
pub struct Backoff {
    step: u32,
    /// When the processor last started (ms on the clock `next` is given).
    pub last_start_ms: Option<i64>,
}

impl Backoff {
    const MAX_MS: i64 = 30_000;
    /// A failure this long after the last start begins the sequence again.
    const RESET_AFTER_MS: i64 = 10_000;

    /// The wait before the next start, for a failure at `now_ms`.
    pub fn next(&mut self, now_ms: i64) -> i64 {
        if self.last_start_ms.is_some_and(|start| now_ms - start > Self::RESET_AFTER_MS) {
            self.step = 0;
        }
        let wait = (1_000i64 << self.step.min(5)).min(Self::MAX_MS);
        self.step += 1;
        wait
    }
}

/// What stops a processor as it reaches a record.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    Injected(InjectedFailure),
    Move,
}

pub struct Broker<'a> {
    module: TransformModule,
    meta: TransformMeta,
    config: BrokerConfig,
    sink: &'a mut dyn OutputSink,
    vms: Vec<Option<Vm>>,
    /// Each shard's clock for its producer loops, in fuel: the VM's work, and the broker time it waits for
    /// input (from `fuel_origin_ms`), whichever is later.
    fuel_clocks: Vec<u64>,
    fuel_origin_ms: Option<i64>,
    /// Each shard's next yield after the last time its loops were looked at.
    next_yields: Vec<u64>,
    producer_loops: BTreeMap<LoopKey, ProducerLoop>,
    /// The loops due to pop, and each topic's outputs of the record being queued: buffers kept for reuse.
    due_loops: Vec<(LoopKey, u64)>,
    ordinals: Vec<u32>,
    /// Batches each shard's VM has handled: 0 for a fresh VM.
    vm_batches: Vec<u64>,
    /// Each shard's monotonic clock, which outlives its VMs as in the broker.
    clocks: Vec<MonotonicClock>,
    schema_registry: SchemaRegistry,
    partitions: Vec<Partition>,
    /// Sent batches in the order they reached the broker, and how many did.
    arrivals: VecDeque<Arc<InputBatch>>,
    appended: u64,
    output_offsets: BTreeMap<(usize, u32), i64>,
    clock_ms: i64,
    last_flush_ms: Option<i64>,
    /// When the transform was deployed (broker clock).
    deployed_at_ms: Option<i64>,
    first_deliveries: u64,
    /// Set while the output of one batch is watched (the closing heartbeats).
    pub(crate) watch: Option<Watched>,
    pub stats: BrokerStats,
}

/// What the batches handled while watching produced.
#[derive(Default)]
pub(crate) struct Watched {
    pub(crate) records: usize,
    /// A digest of the records written (topic, key and value).
    pub(crate) digest: u64,
    /// The lines logged, with the shard whose VM logged them.
    pub(crate) logs: Vec<(u32, String)>,
}

impl<'a> Broker<'a> {
    pub fn new(
        module: TransformModule,
        meta: TransformMeta,
        config: BrokerConfig,
        partitions: u32,
        sink: &'a mut dyn OutputSink,
    ) -> Broker<'a> {
        let shards = config.shards.max(1) as usize;
        let outputs = meta.output_topics.len();
        let mut broker = Broker {
            vms: (0..shards).map(|_| None).collect(),
            fuel_clocks: vec![0; shards],
            fuel_origin_ms: None,
            next_yields: vec![0; shards],
            producer_loops: BTreeMap::new(),
            due_loops: Vec::new(),
            ordinals: vec![0; outputs],
            vm_batches: vec![0; shards],
            clocks: (0..shards).map(|_| MonotonicClock::default()).collect(),
            schema_registry: if config.schema_registry {
                SchemaRegistry::default()
            } else {
                SchemaRegistry::disabled()
            },
            stats: BrokerStats {
                written: vec![0; outputs],
                largest_batch: vec![(0, 0); outputs],
                output_batches: vec![0; outputs],
                ..BrokerStats::default()
            },
            module,
            meta,
            sink,
            partitions: Vec::new(),
            arrivals: VecDeque::new(),
            appended: 0,
            output_offsets: BTreeMap::new(),
            clock_ms: i64::MIN,
            last_flush_ms: None,
            deployed_at_ms: None,
            first_deliveries: 0,
            watch: None,
            config,
        };
        broker.add_partitions(partitions.max(1));
        broker
    }

    fn add_partitions(&mut self, count: u32) {
        while self.partitions.len() < count as usize {
            let index = self.partitions.len();
            self.partitions.push(Partition::new(index % self.vms.len(), self.meta.output_topics.len()));
            if let Some(at_ms) = self.deployed_at_ms {
                self.create_processor(index, at_ms);
            }
        }
    }

    /// Deploys the transform now: every partition's processor is created and started.
    fn deploy_at(&mut self, at_ms: i64) {
        self.deployed_at_ms = Some(at_ms);
        (0..self.partitions.len()).for_each(|index| self.create_processor(index, at_ms));
    }

    /// A new processor, started at `at_ms`: it reads where the transform's start option points (by default,
    /// deployed before the first record, from the first) once it has waited for earlier flushes.
    fn create_processor(&mut self, index: usize, at_ms: i64) {
        let start = self.config.from_offset.unwrap_or(StartOffset::FromStart(0));
        let interval = self.config.commit_interval_ms;
        let partition = &mut self.partitions[index];
        partition.start = Some(start);
        partition.backoff.last_start_ms = Some(at_ms);
        partition.state = ProcessorState::Starting { at_ms: at_ms.saturating_add(interval) };
    }

    /// Starts the VM of every shard that leads a partition now, so a start-up failure shows before any
    /// input is read.
    pub fn start(&mut self) -> Result<(), VmFailure> {
        let leading = self.vms.len().min(self.partitions.len());
        (0..leading).try_for_each(|shard| self.vm(shard).map(|_| ()))
    }

    /// Appends a producer's batch to its partition's log, then lets every processor catch up.
    pub fn append(&mut self, partition: u32, mut records: Vec<BatchRecord>) -> Result<(), VmFailure> {
        if records.is_empty() {
            return Ok(());
        }
        self.add_partitions(partition + 1);
        let log = &mut self.partitions[partition as usize];
        for record in &mut records {
            record.offset = log.next_offset;
            log.next_offset += 1;
        }
        self.clock_ms = self.clock_ms.max(records.iter().map(|r| r.timestamp_ms).max().unwrap_or(i64::MIN));
        let batch = Arc::new(InputBatch { partition, records });
        log.log.push_back((self.appended, batch.clone()));
        self.appended += 1;
        self.arrivals.push_back(batch);
        // Without a start offset the transform was deployed just before the first record.
        if self.deployed_at_ms.is_none() && self.config.from_offset.is_none() {
            self.deploy_at(self.clock_ms);
        }
        self.pump()
    }

    /// Deploys a transform that waited for its input (`from_offset`) now; its processors resolve the start
    /// offset in the log as written when they start reading.
    pub fn deploy(&mut self) -> Result<(), VmFailure> {
        if self.deployed_at_ms.is_none() {
            self.deploy_at(self.clock_ms);
        }
        self.pump()
    }

    /// Handles everything sent so far, waiting out every back-off and start (the clock moves to the last).
    pub fn finish(&mut self) -> Result<(), VmFailure> {
        self.deploy()?;
        while let Some(at_ms) = self.next_start_ms() {
            self.clock_ms = self.clock_ms.max(at_ms);
            self.pump()?;
        }
        self.flush_producer_loops()
    }

    /// With no input left, each producer loop writes what it holds once its last write is done (the VM
    /// idles meanwhile).
    fn flush_producer_loops(&mut self) -> Result<(), VmFailure> {
        for shard in 0..self.vms.len() {
            let range = (shard, 0, 0)..=(shard, u32::MAX, usize::MAX);
            let pending = self.producer_loops.range(range).filter(|(_, producer)| !producer.is_empty());
            let Some(done) = pending.map(|(_, producer)| producer.busy_until.max(producer.queued_since)).max() else {
                continue;
            };
            self.fuel_clocks[shard] = self.fuel_clocks[shard].max(done);
            self.pop_loops(shard, self.fuel_clocks[shard], Pop::BatchEnd)?;
        }
        Ok(())
    }

    /// Whether `partition`'s processor is reading (not stopped or waiting to start).
    pub(crate) fn is_running(&self, partition: u32) -> bool {
        self.partitions.get(partition as usize).is_none_or(|p| p.state == ProcessorState::Running)
    }

    /// When the next stopped or starting processor moves on.
    fn next_start_ms(&self) -> Option<i64> {
        self.partitions
            .iter()
            .filter_map(|p| match p.state {
                ProcessorState::Stopped { until_ms: at_ms } | ProcessorState::Starting { at_ms } => Some(at_ms),
                _ => None,
            })
            .min()
    }

    /// Flushes commits that are due, starts processors whose wait is over, and hands every batch that can
    /// be read to its VM, in the order the batches arrived.
    fn pump(&mut self) -> Result<(), VmFailure> {
        if self.deployed_at_ms.is_none() {
            return Ok(());
        }
        loop {
            self.flush_commits_if_due()?;
            self.start_processors_due()?;
            let Some(batch) = self.arrivals.pop_front() else { return Ok(()) };
            let partition = &self.partitions[batch.partition as usize];
            let last = batch.records.last().expect("batches are not empty").offset;
            // A processor that is not reading reads this batch from its log when it starts.
            if partition.state == ProcessorState::Running && last >= partition.read_from {
                self.process(&batch)?;
            }
        }
    }

    /// Moves each processor whose wait is over on: a stopped one starts (and waits one commit interval), a
    /// starting one reads. What arrived while they waited is read from their logs now, before newer
    /// arrivals; processors that start together read theirs in the order it arrived, as their batches reach
    /// the shard's VM in turn.
    fn start_processors_due(&mut self) -> Result<(), VmFailure> {
        let interval = self.config.commit_interval_ms;
        let mut backlog = Vec::new();
        for partition in &mut self.partitions {
            if let ProcessorState::Stopped { until_ms } = partition.state {
                if until_ms > self.clock_ms {
                    continue;
                }
                partition.backoff.last_start_ms = Some(until_ms);
                partition.state = ProcessorState::Starting { at_ms: until_ms.saturating_add(interval) };
            }
            match partition.state {
                ProcessorState::Starting { at_ms } if at_ms <= self.clock_ms => {}
                _ => continue,
            }
            partition.start_reading();
            let read_from = partition.read_from;
            let unread =
                partition.log.iter().filter(|(_, batch)| batch.records.last().is_some_and(|r| r.offset >= read_from));
            backlog.extend(unread.cloned());
        }
        backlog.sort_unstable_by_key(|&(arrival, _)| arrival);
        for (_, batch) in backlog {
            // A processor that stopped again reads the rest when it starts again.
            if self.partitions[batch.partition as usize].state == ProcessorState::Running {
                self.process(&batch)?;
            }
        }
        Ok(())
    }

    /// Hands one batch (from the processor's read position on) to its shard's VM and queues its outputs.
    fn process(&mut self, batch: &Arc<InputBatch>) -> Result<(), VmFailure> {
        let index = batch.partition as usize;
        let read_from = self.partitions[index].read_from;
        let batch = if batch.records[0].offset < read_from {
            let records = batch.records.iter().filter(|r| r.offset >= read_from).cloned().collect();
            Arc::new(InputBatch { partition: batch.partition, records })
        } else {
            batch.clone()
        };
        let interruption = self.interruption(&batch);
        let handled = match interruption {
            Some((at, _)) => Arc::new(InputBatch { partition: batch.partition, records: batch.records[..at].to_vec() }),
            None => batch.clone(),
        };
        let partition = &mut self.partitions[index];
        let shard = partition.shard;
        // The record an interruption strikes counts as delivered, so it strikes once.
        let reached = interruption.map_or(batch.records.last(), |(at, _)| batch.records.get(at));
        if let Some(last) = reached {
            partition.delivered_through = partition.delivered_through.max(last.offset);
        }
        self.stats.deliveries += handled.records.len() as u64;
        self.sink.delivered(shard as u32, &handled);
        let vm = self.vm(shard)?;
        let result = vm.transform(handled.clone());
        let unfinished = vm.take_unfinished_output();
        if !handled.records.is_empty() {
            self.vm_batches[shard] += 1;
        }
        let output = match result {
            Ok(output) => Arc::new(output),
            Err(failure) => {
                self.log(shard as u32, &failure.logs);
                let fresh = self.vm_is_fresh(shard);
                // What the producer loops popped at the VM's yields before the failure stays written.
                self.write_batches(shard, &handled, &Arc::new(unfinished), false)?;
                if self.partitions[index].state != ProcessorState::Running {
                    return Ok(()); // the output topic refused a batch first
                }
                let offset = failure.record.map_or(batch.records[0].offset, |(_, offset)| offset);
                return self.fail(batch.partition, offset, failure, fresh);
            }
        };
        self.note_batch(shard as u32, &output);
        self.write_batches(shard, &batch, &output, interruption.is_none())?;
        if self.partitions[index].state != ProcessorState::Running {
            return Ok(()); // the output topic refused a batch
        }
        match interruption {
            None => {
                let partition = &mut self.partitions[index];
                partition.read_from = batch.records.last().expect("batches are not empty").offset + 1;
                // A record fails again whenever the replay reaches it until the processor passes it.
                if partition.failing.is_some_and(|(offset, _)| offset < partition.read_from) {
                    partition.failing = None;
                }
                Ok(())
            }
            Some((at, Interruption::Injected(kind))) => {
                self.inject(batch.partition, shard, batch.records[at].offset, kind)
            }
            Some((at, Interruption::Move)) => {
                self.move_partition(batch.partition, batch.records[at].offset);
                Ok(())
            }
        }
    }

    /// Whether the shard's VM had handled no batch before the last one.
    fn vm_is_fresh(&self, shard: usize) -> bool {
        self.vm_batches[shard] <= 1
    }

    /// A real failure: the shard's VM restarts and the processor backs off, unless the same record has
    /// failed again in a fresh VM, which would block the partition forever.
    fn fail(&mut self, partition: u32, offset: i64, failure: VmFailure, fresh: bool) -> Result<(), VmFailure> {
        let state = &mut self.partitions[partition as usize];
        let shard = state.shard;
        let failures = match state.failing {
            Some((known, count)) if known == offset => count + 1,
            _ => 1,
        };
        state.failing = Some((offset, failures));
        if failures > 1 && (fresh || failures >= MAX_FAILURES_OF_ONE_RECORD) {
            let last = if fresh { "the last in a fresh VM" } else { "the harness's limit" };
            return Err(VmFailure {
                reason: format!(
                    "{}\n  this record failed {failures} times, {last}: in Redpanda it would block partition {partition} \
                     forever (the processor retries it with a back-off of up to 30 s)",
                    failure.reason
                ),
                ..failure
            });
        }
        self.restart_vm(shard);
        self.stop_processor(partition, Some(offset), failure.reason, None);
        Ok(())
    }

    /// Queues the batch's outputs in their producer loops as the VM wrote them, on the shard's fuel clock,
    /// and lets the shard's loops pop at the VM's yields and, unless the processor stopped at a record of it
    /// (`ended` false), at the batch's end, after its offset marker.
    fn write_batches(
        &mut self,
        shard: usize,
        batch: &InputBatch,
        output: &Arc<BatchOutput>,
        ended: bool,
    ) -> Result<(), VmFailure> {
        let partition = batch.partition;
        let index = partition as usize;
        let start = self.fuel_clocks[shard].max(self.waited_fuel());
        let first = batch.records[0].offset;
        let mut record = None;
        for (position, written) in output.written.iter().enumerate() {
            let now = start + written.fuel;
            self.pop_loops(shard, now, Pop::Yield)?;
            if self.partitions[index].state != ProcessorState::Running {
                return Ok(()); // the output topic refused a batch: the VM's later writes are dropped
            }
            if record != Some(written.record) {
                record = Some(written.record);
                self.ordinals.fill(0);
            }
            let ordinal = self.ordinals[written.topic];
            self.ordinals[written.topic] += 1;
            if first <= self.partitions[index].started_from[written.topic] {
                continue;
            }
            let input = batch.records[written.record].offset;
            let producer = self.producer_loop((shard, partition, written.topic));
            if producer.is_empty() {
                producer.queued_since = now;
            }
            producer.batch.push(output.payload(written));
            producer.queued.push(QueuedOutput { output: output.clone(), index: position, input, ordinal });
            producer.last_input = input;
        }
        let end = start + output.fuel;
        self.fuel_clocks[shard] = end;
        self.pop_loops(shard, end, Pop::Yield)?;
        if !ended || self.partitions[index].state != ProcessorState::Running {
            return Ok(());
        }
        let last = batch.records.last().expect("batches are not empty").offset;
        for topic in 0..self.meta.output_topics.len() {
            let producer = self.producer_loop((shard, partition, topic));
            if producer.is_empty() {
                producer.queued_since = end;
            }
            producer.marker = Some(last);
        }
        self.pop_loops(shard, end, Pop::BatchEnd)
    }

    fn producer_loop(&mut self, key: LoopKey) -> &mut ProducerLoop {
        let compression = self.config.writes.compression;
        self.producer_loops.entry(key).or_insert_with(|| ProducerLoop::new(compression))
    }

    /// The broker time since the first batch, as fuel: a VM that waited for input let its producer loops
    /// finish their writes meanwhile; one that had input queued did not.
    fn waited_fuel(&mut self) -> u64 {
        let origin = *self.fuel_origin_ms.get_or_insert(self.clock_ms);
        u64::try_from(self.clock_ms.saturating_sub(origin)).unwrap_or(0).saturating_mul(FUEL_PER_MS)
    }

    /// Each loop of the shard whose write is done pops what it holds at its first chance by `now`.
    fn pop_loops(&mut self, shard: usize, now: u64, pop: Pop) -> Result<(), VmFailure> {
        if pop == Pop::Yield {
            // Loops pop only at yields: nothing changes before the next one.
            if now < self.next_yields[shard] {
                return Ok(());
            }
            self.next_yields[shard] = (now / FUEL_PER_MS + 1) * FUEL_PER_MS;
        }
        let range = (shard, 0, 0)..=(shard, u32::MAX, usize::MAX);
        let mut due = std::mem::take(&mut self.due_loops);
        due.extend(
            self.producer_loops
                .range(range)
                .filter_map(|(key, producer)| producer.pop_at(now, pop).map(|at| (*key, at))),
        );
        let popped = due.drain(..).try_for_each(|(key, at)| self.pop(key, at));
        self.due_loops = due;
        popped
    }

    /// Loops of VMs that wait for input pop as soon as their writes are done, before the broker time moves
    /// on (to a commit flush, or a crash).
    fn pop_idle_loops(&mut self) -> Result<(), VmFailure> {
        if self.fuel_origin_ms.is_none() {
            return Ok(()); // nothing was handled yet
        }
        let waited = self.waited_fuel();
        for shard in 0..self.vms.len() {
            if self.fuel_clocks[shard] <= waited {
                self.pop_loops(shard, waited, Pop::Idle)?;
            }
        }
        Ok(())
    }

    /// One loop pops at `at`: it writes its records as one batch, which the output topic may refuse (the
    /// processor fails), and a popped marker queues the commit of its offset.
    fn pop(&mut self, key: LoopKey, at: u64) -> Result<(), VmFailure> {
        let (shard, partition, topic) = key;
        let WriteConfig { latency_fuel, batch_max_bytes, .. } = self.config.writes;
        let Some(producer) = self.producer_loops.get_mut(&key) else {
            return Ok(()); // its processor stopped meanwhile
        };
        let marker = producer.marker.take();
        if !producer.queued.is_empty() {
            let (raw, stored) = (producer.batch.raw_bytes(), producer.batch.stored_bytes());
            let largest = &mut self.stats.largest_batch[topic];
            *largest = (largest.0.max(raw), largest.1.max(stored));
            self.stats.output_batches[topic] += 1;
            if stored > batch_max_bytes {
                let reason =
                    producer.batch.refusal_reason(&self.meta.output_topics[topic], raw, stored, batch_max_bytes);
                let offset = producer.last_input;
                let failure =
                    VmFailure { reason, record: Some((partition, offset)), logs: Vec::new(), at_start: false };
                let fresh = self.vm_is_fresh(shard);
                return self.fail(partition, offset, failure, fresh);
            }
            producer.batch.clear();
            producer.busy_until = at + latency_fuel;
            let queued = std::mem::take(&mut producer.queued);
            self.write_to_topic(shard, partition, topic, queued)
                .map_err(|error| VmFailure::harness(format!("writing output: {error:#}")))?;
        }
        if let Some(offset) = marker {
            let processed = &mut self.partitions[partition as usize].processed_through[topic];
            *processed = (*processed).max(offset);
        }
        Ok(())
    }

    /// Appends what a loop popped to its output partition.
    fn write_to_topic(
        &mut self,
        shard: usize,
        partition: u32,
        topic: usize,
        queued: Vec<QueuedOutput>,
    ) -> anyhow::Result<()> {
        let output_partitions = self.config.output_partitions.unwrap_or(self.partitions.len() as u32).max(1);
        let output_partition = partition % output_partitions;
        let append_time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        for QueuedOutput { output, index, input, ordinal } in queued {
            let in_topic = self.partitions[partition as usize].in_topics.entry((input, topic)).or_default();
            let replayed = ordinal < *in_topic;
            *in_topic = (*in_topic).max(ordinal + 1);
            let payload = PayloadView::parse(output.payload(&output.written[index]))
                .expect("payloads are validated when written");
            let offset = self.output_offsets.entry((topic, output_partition)).or_insert(0);
            let record = OutputRecord {
                topic: &self.meta.output_topics[topic],
                topic_index: topic,
                shard: shard as u32,
                partition: output_partition,
                offset: *offset,
                timestamp_ms: append_time,
                payload,
                replayed,
            };
            *offset += 1;
            self.stats.written[topic] += 1;
            if replayed {
                self.stats.written_again += 1;
            }
            if let Some(value) = self.config.tally_header.as_deref().and_then(|header| payload.header(header)) {
                *self.stats.tallies.entry(String::from_utf8_lossy(value).into_owned()).or_default() += 1;
            }
            self.sink.record(&record)?;
        }
        Ok(())
    }

    /// An injected failure at `record`: a trap of this VM, or a crash of the whole broker.
    fn inject(&mut self, partition: u32, shard: usize, record: i64, kind: InjectedFailure) -> Result<(), VmFailure> {
        match kind {
            InjectedFailure::Trap => {
                self.restart_vm(shard);
                self.stop_processor(partition, Some(record), "injected trap".into(), Some(kind));
            }
            InjectedFailure::Crash => {
                // What the loops of idle VMs could write is written; what any loop still holds is lost.
                self.pop_idle_loops()?;
                self.stats.restarts += 1;
                self.producer_loops.clear();
                // A new broker process: new VMs, new core clocks, processors without a failure history.
                (0..self.vms.len()).for_each(|shard| {
                    self.vms[shard] = None;
                    self.vm_batches[shard] = 0;
                    self.clocks[shard] = MonotonicClock::default();
                });
                // Commits queued but not flushed are lost; every processor starts again from its flushed
                // commit after one commit interval (its wait for earlier flushes).
                let now = self.clock_ms;
                let at_ms = now.saturating_add(self.config.commit_interval_ms);
                for partition in &mut self.partitions {
                    if partition.state != ProcessorState::NotDeployed {
                        partition.processed_through.clone_from(&partition.committed);
                        partition.state = ProcessorState::Starting { at_ms };
                        partition.backoff = Backoff { last_start_ms: Some(now), ..Backoff::default() };
                        partition.failing = None;
                    }
                }
                let restart = Restart {
                    shard: shard as u32,
                    partition,
                    offset: Some(record),
                    reason: "injected broker crash".into(),
                    injected: Some(kind),
                    at_ms: now,
                    backoff_ms: 0,
                    resume_at_ms: at_ms,
                    resume_from: self.partitions[partition as usize].resume_from(),
                };
                self.sink.restart(&restart);
            }
        }
        Ok(())
    }

    /// The broker restarts a shard's VM as soon as it fails (`shared_engine` in `cache.cc`).
    fn restart_vm(&mut self, shard: usize) {
        self.vms[shard] = None;
        self.vm_batches[shard] = 0;
    }

    /// The shard's VM stops when the last processor holding it stops (`shared_engine::stop`), so the next
    /// one to start gets a fresh VM.
    fn release_vm(&mut self, shard: usize) {
        if !self.partitions.iter().any(|p| p.shard == shard && p.holds_vm()) {
            self.restart_vm(shard);
        }
    }

    /// Stops a failed partition's processor until its back-off and the wait for earlier flushes are over.
    /// What its producer loops held is lost; the replay writes it again.
    fn stop_processor(
        &mut self,
        partition: u32,
        offset: Option<i64>,
        reason: String,
        injected: Option<InjectedFailure>,
    ) {
        let now = self.clock_ms;
        let interval = self.config.commit_interval_ms;
        self.stats.restarts += 1;
        self.producer_loops.retain(|&(_, loop_partition, _), _| loop_partition != partition);
        let state = &mut self.partitions[partition as usize];
        let shard = state.shard;
        let backoff_ms = state.backoff.next(now);
        state.state = ProcessorState::Stopped { until_ms: now.saturating_add(backoff_ms) };
        let restart = Restart {
            shard: shard as u32,
            partition,
            offset,
            reason,
            injected,
            at_ms: now,
            backoff_ms,
            resume_at_ms: now.saturating_add(backoff_ms).saturating_add(interval),
            resume_from: state.queued_resume_from(),
        };
        self.release_vm(shard);
        self.sink.restart(&restart);
    }

    /// The partition's leadership moves to the next shard (the same one when there is one) as its processor
    /// reaches `offset`: the processor stops, dropping what its loops hold, and a new one starts on the new
    /// shard at once, without a back-off (`manager::handle_leadership_change`).
    fn move_partition(&mut self, partition: u32, offset: i64) {
        let now = self.clock_ms;
        let from = self.partitions[partition as usize].shard;
        let to = (from + 1) % self.vms.len();
        self.stats.moves += 1;
        self.producer_loops.retain(|&(_, loop_partition, _), _| loop_partition != partition);
        self.partitions[partition as usize].state = ProcessorState::Stopped { until_ms: now };
        let old_vm_kept = self.partitions.iter().any(|p| p.shard == from && p.holds_vm());
        self.release_vm(from);
        let new_vm_shared = self.partitions.iter().any(|p| p.shard == to && p.holds_vm());
        let state = &mut self.partitions[partition as usize];
        state.shard = to;
        state.backoff = Backoff::default();
        state.failing = None;
        let moved = Move {
            partition,
            offset,
            from_shard: from as u32,
            to_shard: to as u32,
            old_vm_kept,
            new_vm_shared,
            at_ms: now,
            resume_at_ms: now.saturating_add(self.config.commit_interval_ms),
            resume_from: state.queued_resume_from(),
        };
        self.sink.moved(&moved);
    }

    /// What stops the processor in `batch`, and at which index: an injected failure, or a move; each
    /// strikes once.
    fn interruption(&mut self, batch: &InputBatch) -> Option<(usize, Interruption)> {
        let partition = batch.partition;
        let delivered_through = self.partitions[partition as usize].delivered_through;
        for (index, record) in batch.records.iter().enumerate() {
            let offset = record.offset;
            let restart_at = &mut self.config.restart_at;
            if let Some(at) = restart_at.iter().position(|&(p, o)| o == offset && p.is_none_or(|p| p == partition)) {
                restart_at.remove(at);
                return Some((index, Interruption::Injected(self.config.injected)));
            }
            let move_at = &mut self.config.move_at;
            if let Some(at) = move_at.iter().position(|&position| position == (partition, offset)) {
                move_at.remove(at);
                return Some((index, Interruption::Move));
            }
            if offset > delivered_through {
                self.first_deliveries += 1;
                if self.config.restart_every.is_some_and(|every| self.first_deliveries.is_multiple_of(every)) {
                    return Some((index, Interruption::Injected(self.config.injected)));
                }
            }
        }
        None
    }

    fn vm(&mut self, shard: usize) -> Result<&mut Vm, VmFailure> {
        if self.vms[shard].is_none() {
            let services =
                VmServices { monotonic: self.clocks[shard].clone(), schema_registry: self.schema_registry.clone() };
            let (vm, started) = Vm::start_with(&self.module, &self.meta, services)?;
            self.note_logs(shard as u32, &started);
            self.vms[shard] = Some(vm);
        }
        Ok(self.vms[shard].as_mut().expect("started above"))
    }

    fn log(&mut self, shard: u32, lines: &[LogLine]) {
        for line in lines {
            self.stats.log_lines += 1;
            self.sink.log(shard, line);
        }
    }

    fn note_logs(&mut self, shard: u32, output: &BatchOutput) {
        self.stats.dropped_log_lines.0 += output.dropped_logs.invalid_text;
        self.stats.dropped_log_lines.1 += output.dropped_logs.buffer_full;
        self.log(shard, &output.logs);
    }

    /// What the VM did with a batch, whatever becomes of its outputs: its log lines, its use of memory and
    /// fuel, and what it wrote (when watched).
    fn note_batch(&mut self, shard: u32, output: &BatchOutput) {
        self.note_logs(shard, output);
        if let Some(watch) = &mut self.watch {
            use std::hash::{Hash, Hasher};
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            watch.digest.hash(&mut digest);
            for (topic, payload) in output.records() {
                (topic, payload.key, payload.value).hash(&mut digest);
                watch.records += 1;
            }
            watch.digest = digest.finish();
            watch.logs.extend(output.logs.iter().map(|line| (shard, line.text.clone())));
        }
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(output.peak_memory_bytes);
        self.stats.max_record_fuel = self.stats.max_record_fuel.max(output.max_record_fuel);
    }

    /// The commit batcher's flush: every commit interval of broker time, each processor's queued commits
    /// become its committed offsets, and the log before the smallest is no longer needed.
    fn flush_commits_if_due(&mut self) -> Result<(), VmFailure> {
        if self.last_flush_ms.is_some_and(|last| self.clock_ms < last.saturating_add(self.config.commit_interval_ms)) {
            return Ok(());
        }
        self.pop_idle_loops()?;
        self.last_flush_ms = Some(self.clock_ms);
        self.stats.commits += 1;
        for partition in &mut self.partitions {
            for (committed, processed) in partition.committed.iter_mut().zip(&partition.processed_through) {
                *committed = (*committed).max(*processed);
            }
            let done = partition.resume_from() - 1;
            while partition.log.front().is_some_and(|(_, batch)| batch.records.last().is_some_and(|r| r.offset <= done))
            {
                partition.log.pop_front();
            }
            partition.in_topics = partition.in_topics.split_off(&(done + 1, 0));
        }
        Ok(())
    }
}
