//! The broker model: what Redpanda does with the batches a producer sends, read from its source.
//!
//! - Each input partition is a log with offsets, and has a processor (`transform_processor.cc`) that reads
//!   its batches in order and hands them to the VM of its shard: partition `p` is led on shard
//!   `p mod shards`, and all partitions of a shard share one VM (`wasm/cache.cc`).
//! - Outputs of input partition `p` go to partition `p mod N` of each output topic. Once a batch's outputs
//!   are written, its last offset is queued for commit; the commit batcher flushes queued offsets every
//!   `data_transforms_commit_interval_ms` (`commit_batcher.cc`).
//! - A trap restarts the shard's VM at once, so every partition of the shard loses the state it built;
//!   only the failed partition's processor stops. It is started again after a back-off of 1, 2, 4, 8,
//!   16, then 30 s, reset when it fails more than 10 s after its last start (`transform_manager.cc`),
//!   and before it reads its committed offset it waits one commit interval for earlier commits to flush
//!   (`commit_batcher::wait_for_previous_flushes`). So it normally reads again from the failed batch,
//!   while the shard's other partitions go on with the new VM.
//! - The broker's clock here is record time: the newest record timestamp sent so far.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::host::{
    BatchOutput, BatchRecord, InputBatch, MonotonicClock, TransformMeta, TransformModule, Vm, VmFailure, VmServices,
    FUEL_PER_MS,
};
use crate::logs::LogLine;
use crate::record_batch::{Compression, RecordBatch};
use crate::schema_registry::SchemaRegistry;
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
    /// `-N`: the last N records of each partition.
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
    /// Deploy after the input is written, starting here; `None`: deployed before the first record.
    pub from_offset: Option<StartOffset>,
    /// Output records are counted by the value of this header (the clickstream transform's dead-letter
    /// reason).
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

/// One processor's producer loop for one output topic, on its shard's fuel clock.
#[derive(Debug)]
struct ProducerLoop {
    queued: RecordBatch,
    /// When the first queued record was written, and the input record that wrote the last one.
    queued_since: u64,
    last_input: i64,
    /// When the write in flight ends. The VM yields to the core's other tasks every `FUEL_PER_MS`
    /// (`src/v/wasm/wasmtime.cc`: `millisecond_fuel_amount`); the loop pops at the first yield after.
    busy_until: u64,
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
    /// Produced while re-handling input after a restart.
    pub replayed: bool,
}

/// A VM failure the run went on from, as the broker would.
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

/// Receives what the broker produces.
pub trait OutputSink {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()>;
    /// A log line of the VM on `shard`.
    fn log(&mut self, shard: u32, line: &LogLine);
    /// A batch handed to the VM on `shard` (re-deliveries after restarts included); for tests and traces.
    fn delivered(&mut self, _shard: u32, _batch: &InputBatch) {}
    /// A failure the run went on from.
    fn restart(&mut self, _restart: &Restart) {}
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
    pub restarts: u64,
    pub replayed_outputs: u64,
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
    /// Deployed with a start offset: waits until the input is written.
    NotDeployed,
    Running,
    /// Stopped after a failure; reads again from its last commit at this broker time.
    Restarting {
        at_ms: i64,
    },
}

/// One input partition: its log and its processor.
struct Partition {
    /// Batches not yet covered by every output's flushed commit, oldest first.
    log: VecDeque<Arc<InputBatch>>,
    next_offset: i64,
    state: ProcessorState,
    /// The next offset the processor hands to the VM.
    read_from: i64,
    /// The last offset whose outputs are written (its commit is queued).
    processed_through: i64,
    /// The flushed commit (−1: none). The broker keeps one per output topic, as each output is written on
    /// its own; the harness writes a batch's outputs together, so they are always equal.
    committed: i64,
    /// Highest offset ever delivered: later first deliveries are new records (for `restart_every`).
    delivered_through: i64,
    /// Highest offset whose outputs were ever written: outputs of records at or below it are replays.
    produced_through: i64,
    backoff: Backoff,
    /// The record that failed last, and how often in a row.
    failing: Option<(i64, u32)>,
}

impl Partition {
    fn new(state: ProcessorState) -> Partition {
        Partition {
            log: VecDeque::new(),
            next_offset: 0,
            state,
            read_from: 0,
            processed_through: -1,
            committed: -1,
            delivered_through: -1,
            produced_through: -1,
            backoff: Backoff::default(),
            failing: None,
        }
    }

    fn resume_from(&self) -> i64 {
        self.committed + 1
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
    producer_loops: BTreeMap<(u32, usize), ProducerLoop>,
    /// Batches each shard's VM has handled: 0 for a fresh VM.
    vm_batches: Vec<u64>,
    /// Each shard's monotonic clock, which outlives its VMs as in the broker.
    clocks: Vec<MonotonicClock>,
    schema_registry: SchemaRegistry,
    partitions: Vec<Partition>,
    /// Sent batches in the order they reached the broker.
    arrivals: VecDeque<Arc<InputBatch>>,
    output_offsets: BTreeMap<(usize, u32), i64>,
    clock_ms: i64,
    last_flush_ms: Option<i64>,
    /// False while a transform with a start offset waits for its input to be written.
    deployed: bool,
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
            producer_loops: BTreeMap::new(),
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
            output_offsets: BTreeMap::new(),
            clock_ms: i64::MIN,
            last_flush_ms: None,
            deployed: config.from_offset.is_none(),
            first_deliveries: 0,
            watch: None,
            config,
        };
        broker.add_partitions(partitions.max(1));
        broker
    }

    fn add_partitions(&mut self, count: u32) {
        let state = if self.deployed { ProcessorState::Running } else { ProcessorState::NotDeployed };
        while self.partitions.len() < count as usize {
            self.partitions.push(Partition::new(state));
        }
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
        log.log.push_back(batch.clone());
        self.arrivals.push_back(batch);
        self.pump()
    }

    /// Deploys a transform that waited for its input (`from_offset`): each processor starts where the
    /// start offset points in the log as written so far.
    pub fn deploy(&mut self) -> Result<(), VmFailure> {
        let Some(start) = self.config.from_offset.filter(|_| !self.deployed) else { return Ok(()) };
        self.deployed = true;
        for partition in &mut self.partitions {
            if partition.state != ProcessorState::NotDeployed {
                continue;
            }
            let end = partition.next_offset;
            let first = match start {
                StartOffset::Timestamp(ms) => partition
                    .log
                    .iter()
                    .flat_map(|batch| &batch.records)
                    .find(|record| record.timestamp_ms >= ms)
                    .map_or(end, |record| record.offset),
                StartOffset::FromStart(n) => n.min((end - 1).max(0)),
                StartOffset::FromEnd(n) => (end - n).max(0),
            };
            partition.read_from = first;
            partition.processed_through = first - 1;
            partition.committed = first - 1;
            partition.state = ProcessorState::Running;
        }
        self.pump()
    }

    /// Handles everything sent so far, waiting out every back-off (the clock moves to the last restart).
    pub fn finish(&mut self) -> Result<(), VmFailure> {
        self.deploy()?;
        self.pump()?;
        while let Some(at_ms) = self.next_restart_ms() {
            self.clock_ms = self.clock_ms.max(at_ms);
            self.pump()?;
        }
        self.flush_producer_loops()
    }

    /// With no input left, each producer loop writes what it holds once its last write is done (the VM
    /// idles meanwhile).
    fn flush_producer_loops(&mut self) -> Result<(), VmFailure> {
        let mut holding: Vec<u32> = self
            .producer_loops
            .iter()
            .filter(|(_, producer)| !producer.queued.is_empty())
            .map(|(&(partition, _), _)| partition)
            .collect();
        holding.dedup(); // the map is ordered by partition
        for partition in holding {
            let shard = partition as usize % self.vms.len();
            let range = (partition, 0)..=(partition, usize::MAX);
            let done = self.producer_loops.range(range).map(|(_, producer)| producer.busy_until).max().unwrap_or(0);
            self.fuel_clocks[shard] = self.fuel_clocks[shard].max(done);
            self.pop_producer_loops(partition, self.fuel_clocks[shard], true)?;
        }
        Ok(())
    }

    /// Whether `partition`'s processor is reading (not waiting out a restart).
    pub(crate) fn is_running(&self, partition: u32) -> bool {
        self.partitions.get(partition as usize).is_none_or(|p| p.state == ProcessorState::Running)
    }

    fn next_restart_ms(&self) -> Option<i64> {
        self.partitions
            .iter()
            .filter_map(|p| match p.state {
                ProcessorState::Restarting { at_ms } => Some(at_ms),
                _ => None,
            })
            .min()
    }

    /// Flushes commits that are due, restarts processors whose wait is over, and hands every batch that
    /// can be read to its VM, in the order the batches arrived.
    fn pump(&mut self) -> Result<(), VmFailure> {
        if !self.deployed {
            return Ok(());
        }
        loop {
            self.flush_commits_if_due();
            self.restart_processors_due()?;
            let Some(batch) = self.arrivals.pop_front() else { return Ok(()) };
            let partition = &self.partitions[batch.partition as usize];
            let last = batch.records.last().expect("batches are not empty").offset;
            // A stopped processor reads this batch from its log when it starts again.
            if partition.state == ProcessorState::Running && last >= partition.read_from {
                self.process(&batch)?;
            }
        }
    }

    fn restart_processors_due(&mut self) -> Result<(), VmFailure> {
        for index in 0..self.partitions.len() {
            let partition = &mut self.partitions[index];
            match partition.state {
                ProcessorState::Restarting { at_ms } if at_ms <= self.clock_ms => {}
                _ => continue,
            }
            partition.state = ProcessorState::Running;
            partition.backoff.last_start_ms = Some(self.clock_ms);
            partition.read_from = partition.resume_from();
            partition.processed_through = partition.read_from - 1;
            // What arrived while it was stopped is read from the log now, before newer arrivals.
            let backlog: Vec<Arc<InputBatch>> = partition
                .log
                .iter()
                .filter(|batch| batch.records.last().is_some_and(|last| last.offset >= partition.read_from))
                .cloned()
                .collect();
            for batch in backlog {
                if self.partitions[index].state != ProcessorState::Running {
                    break; // failed again
                }
                self.process(&batch)?;
            }
        }
        Ok(())
    }

    /// Hands one batch (from the processor's read position on) to its shard's VM and writes its outputs.
    fn process(&mut self, batch: &Arc<InputBatch>) -> Result<(), VmFailure> {
        let index = batch.partition as usize;
        let read_from = self.partitions[index].read_from;
        let batch = if batch.records[0].offset < read_from {
            let records = batch.records.iter().filter(|r| r.offset >= read_from).cloned().collect();
            Arc::new(InputBatch { partition: batch.partition, records })
        } else {
            batch.clone()
        };
        let injected_at = self.injected_failure(&batch);
        let handled = match injected_at {
            Some(at) => Arc::new(InputBatch { partition: batch.partition, records: batch.records[..at].to_vec() }),
            None => batch.clone(),
        };
        let shard = batch.partition as usize % self.vms.len();
        let partition = &mut self.partitions[index];
        let replayed = batch.records.last().is_some_and(|last| last.offset <= partition.produced_through);
        // The record an injected failure strikes counts as delivered, so it strikes once.
        let reached = injected_at.map_or(batch.records.last(), |at| batch.records.get(at));
        if let Some(last) = reached {
            partition.delivered_through = partition.delivered_through.max(last.offset);
        }
        self.stats.deliveries += handled.records.len() as u64;
        self.sink.delivered(shard as u32, &handled);
        let fresh = self.vm_batches[shard] == 0;
        let result = self.vm(shard)?.transform(handled.clone());
        if !handled.records.is_empty() {
            self.vm_batches[shard] += 1;
        }
        match (result, injected_at) {
            (Err(failure), _) => {
                self.log(shard as u32, &failure.logs);
                self.fail(&batch, shard, failure, fresh)
            }
            (Ok(output), Some(at)) => {
                // The batch's outputs die with the VM; its log lines reached the log topic.
                self.note_logs(shard as u32, &output);
                let record = batch.records[at].offset;
                let kind = self.config.injected;
                self.inject(&batch, shard, record, kind);
                Ok(())
            }
            (Ok(output), None) => {
                if let Err(failure) = self.write_batches(shard, &batch, &output) {
                    self.note_logs(shard as u32, &output);
                    return self.fail(&batch, shard, failure, fresh);
                }
                self.produce(shard as u32, &batch, output, replayed)
                    .map_err(|error| VmFailure::harness(format!("writing output: {error:#}")))?;
                let last = batch.records.last().expect("batches are not empty").offset;
                let partition = &mut self.partitions[index];
                partition.processed_through = last;
                partition.produced_through = partition.produced_through.max(last);
                partition.read_from = last + 1;
                partition.failing = None;
                Ok(())
            }
        }
    }

    /// A real failure: the shard's VM restarts and the processor backs off, unless the same record has
    /// failed again in a fresh VM, which would block the partition forever.
    fn fail(&mut self, batch: &InputBatch, shard: usize, failure: VmFailure, fresh: bool) -> Result<(), VmFailure> {
        self.restart_vm(shard);
        let offset = failure.record.map(|(_, offset)| offset).unwrap_or(batch.records[0].offset);
        let partition = &mut self.partitions[batch.partition as usize];
        let failures = match partition.failing {
            Some((known, count)) if known == offset => count + 1,
            _ => 1,
        };
        partition.failing = Some((offset, failures));
        if failures > 1 && (fresh || failures >= MAX_FAILURES_OF_ONE_RECORD) {
            let last = if fresh { "the last in a fresh VM" } else { "the harness's limit" };
            return Err(VmFailure {
                reason: format!(
                    "{}\n  this record failed {failures} times, {last}: in Redpanda it would block partition {} \
                     forever (the processor retries it with a back-off of up to 30 s)",
                    failure.reason, batch.partition
                ),
                ..failure
            });
        }
        let record = Some(offset);
        self.stop_processor(batch.partition, shard, record, failure.reason, None);
        Ok(())
    }

    /// Queues the batch's outputs in their producer loops as the VM wrote them, on the shard's fuel clock,
    /// and writes what each loop pops: at a yield of the VM or the batch's end, once its last write is done.
    /// A batch the output topic refuses fails the processor, as in the broker.
    fn write_batches(&mut self, shard: usize, batch: &InputBatch, output: &BatchOutput) -> Result<(), VmFailure> {
        // A VM that waited for this batch let its producer loops finish their writes meanwhile; one that had
        // input queued did not.
        let origin = *self.fuel_origin_ms.get_or_insert(self.clock_ms);
        let waited = u64::try_from(self.clock_ms.saturating_sub(origin)).unwrap_or(0).saturating_mul(FUEL_PER_MS);
        let start = self.fuel_clocks[shard].max(waited);
        for written in &output.written {
            let now = start + written.fuel;
            self.pop_producer_loops(batch.partition, now, false)?;
            let compression = self.config.writes.compression;
            let producer = self.producer_loops.entry((batch.partition, written.topic)).or_insert_with(|| {
                ProducerLoop { queued: RecordBatch::new(compression), queued_since: 0, last_input: 0, busy_until: 0 }
            });
            if producer.queued.is_empty() {
                producer.queued_since = now;
            }
            producer.queued.push(output.payload(written));
            producer.last_input = batch.records[written.record].offset;
        }
        let end = start + output.fuel;
        self.fuel_clocks[shard] = end;
        self.pop_producer_loops(batch.partition, end, false)?;
        self.pop_producer_loops(batch.partition, end, true)
    }

    /// Each loop of `partition` whose write is done pops what is queued at its first chance by `now`: the
    /// next yield of the VM or, with `batch_end`, the end of the batch.
    fn pop_producer_loops(&mut self, partition: u32, now: u64, batch_end: bool) -> Result<(), VmFailure> {
        let WriteConfig { latency_fuel, batch_max_bytes, compression } = self.config.writes;
        for (&(_, topic), producer) in self.producer_loops.range_mut((partition, 0)..=(partition, usize::MAX)) {
            let ready = producer.busy_until.max(producer.queued_since);
            let at = if batch_end { now } else { ready.div_ceil(FUEL_PER_MS) * FUEL_PER_MS };
            if producer.queued.is_empty() || ready > now || at > now {
                continue;
            }
            let (raw, stored) = (producer.queued.raw_bytes(), producer.queued.stored_bytes());
            let largest = &mut self.stats.largest_batch[topic];
            *largest = (largest.0.max(raw), largest.1.max(stored));
            self.stats.output_batches[topic] += 1;
            if stored > batch_max_bytes {
                let reason = format!(
                    "the output topic {} refuses a batch of {} records, {stored} bytes as stored ({raw} uncompressed, \
                     compression {}), over its limit of {batch_max_bytes} bytes (max.message.bytes): the processor \
                     fails and reads again from its last commit",
                    self.meta.output_topics[topic],
                    producer.queued.len(),
                    compression.name()
                );
                return Err(VmFailure {
                    reason,
                    record: Some((partition, producer.last_input)),
                    logs: Vec::new(),
                    at_start: false,
                });
            }
            producer.queued.clear();
            producer.busy_until = at + latency_fuel;
        }
        Ok(())
    }

    /// An injected failure at `record`: a trap of this VM, or a crash of the whole broker.
    fn inject(&mut self, batch: &InputBatch, shard: usize, record: i64, kind: InjectedFailure) {
        match kind {
            InjectedFailure::Trap => {
                self.restart_vm(shard);
                self.stop_processor(batch.partition, shard, Some(record), "injected trap".into(), Some(kind));
            }
            InjectedFailure::Crash => {
                self.stats.restarts += 1;
                self.producer_loops.clear();
                // A new broker process: new VMs, new core clocks, processors without a failure history.
                (0..self.vms.len()).for_each(|shard| {
                    self.vms[shard] = None;
                    self.vm_batches[shard] = 0;
                    self.clocks[shard] = MonotonicClock::default();
                });
                // Commits queued but not flushed are lost; every processor starts again after one commit
                // interval (its wait for earlier flushes) from its flushed commit.
                let at_ms = self.clock_ms.saturating_add(self.config.commit_interval_ms);
                for partition in &mut self.partitions {
                    if partition.state != ProcessorState::NotDeployed {
                        partition.processed_through = partition.resume_from() - 1;
                        partition.state = ProcessorState::Restarting { at_ms };
                        partition.backoff = Backoff::default();
                        partition.failing = None;
                    }
                }
                let restart = Restart {
                    shard: shard as u32,
                    partition: batch.partition,
                    offset: Some(record),
                    reason: "injected broker crash".into(),
                    injected: Some(kind),
                    at_ms: self.clock_ms,
                    backoff_ms: 0,
                    resume_at_ms: at_ms,
                    resume_from: self.partitions[batch.partition as usize].resume_from(),
                };
                self.sink.restart(&restart);
            }
        }
    }

    /// The broker restarts a shard's VM as soon as it fails (`shared_engine` in `cache.cc`).
    fn restart_vm(&mut self, shard: usize) {
        self.vms[shard] = None;
        self.vm_batches[shard] = 0;
        self.stats.restarts += 1;
    }

    /// Stops a failed partition's processor until its back-off and the wait for earlier flushes are over.
    fn stop_processor(
        &mut self,
        partition: u32,
        shard: usize,
        offset: Option<i64>,
        reason: String,
        injected: Option<InjectedFailure>,
    ) {
        let now = self.clock_ms;
        let interval = self.config.commit_interval_ms;
        // What its producer loops held is lost; the replay writes it again.
        self.producer_loops.retain(|&(loop_partition, _), _| loop_partition != partition);
        let state = &mut self.partitions[partition as usize];
        let backoff_ms = state.backoff.next(now);
        let resume_at_ms = now.saturating_add(backoff_ms).saturating_add(interval);
        state.state = ProcessorState::Restarting { at_ms: resume_at_ms };
        let restart = Restart {
            shard: shard as u32,
            partition,
            offset,
            reason,
            injected,
            at_ms: now,
            backoff_ms,
            resume_at_ms,
            resume_from: state.processed_through + 1,
        };
        self.sink.restart(&restart);
    }

    /// Index of the record in `batch` at which an injected failure strikes, if any; each fires once.
    fn injected_failure(&mut self, batch: &InputBatch) -> Option<usize> {
        let partition = batch.partition;
        let delivered_through = self.partitions[partition as usize].delivered_through;
        for (index, record) in batch.records.iter().enumerate() {
            if let Some(at) = self
                .config
                .restart_at
                .iter()
                .position(|&(p, offset)| offset == record.offset && p.is_none_or(|p| p == partition))
            {
                self.config.restart_at.remove(at);
                return Some(index);
            }
            if record.offset > delivered_through {
                self.first_deliveries += 1;
                if self.config.restart_every.is_some_and(|every| self.first_deliveries.is_multiple_of(every)) {
                    return Some(index);
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

    fn produce(&mut self, shard: u32, batch: &InputBatch, output: BatchOutput, replayed: bool) -> anyhow::Result<()> {
        self.note_logs(shard, &output);
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
        let output_partitions = self.config.output_partitions.unwrap_or(self.partitions.len() as u32).max(1);
        let append_time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        for (topic, payload) in output.records() {
            let partition = batch.partition % output_partitions;
            let offset = self.output_offsets.entry((topic, partition)).or_insert(0);
            let record = OutputRecord {
                topic: &self.meta.output_topics[topic],
                topic_index: topic,
                shard,
                partition,
                offset: *offset,
                timestamp_ms: append_time,
                payload,
                replayed,
            };
            *offset += 1;
            self.stats.written[topic] += 1;
            if replayed {
                self.stats.replayed_outputs += 1;
            }
            if let Some(value) = self.config.tally_header.as_deref().and_then(|header| payload.header(header)) {
                *self.stats.tallies.entry(String::from_utf8_lossy(value).into_owned()).or_default() += 1;
            }
            self.sink.record(&record)?;
        }
        Ok(())
    }

    /// The commit batcher's flush: every commit interval of broker time, each processor's queued commit
    /// becomes its committed offset, and the log before it is no longer needed.
    fn flush_commits_if_due(&mut self) {
        if self.last_flush_ms.is_some_and(|last| self.clock_ms < last.saturating_add(self.config.commit_interval_ms)) {
            return;
        }
        self.last_flush_ms = Some(self.clock_ms);
        self.stats.commits += 1;
        for partition in &mut self.partitions {
            partition.committed = partition.committed.max(partition.processed_through);
            let committed = partition.committed;
            while partition.log.front().is_some_and(|batch| batch.records.last().is_some_and(|r| r.offset <= committed))
            {
                partition.log.pop_front();
            }
        }
    }
}
