//! A run: the producer model sending into the broker model, with the knobs of both in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::{Broker, BrokerConfig, Watched, WriteConfig};
pub use crate::broker::{InjectedFailure, Move, OutputRecord, OutputSink, Restart, StartOffset};
use crate::host::{TransformMeta, TransformModule, VmFailure};
use crate::producer::{EpochMillis, EventTime, Producer, ProducerConfig, SentBatch};
pub use crate::producer::{ProducerRecord, RecordTime, TimeField};

/// How the producer and the broker are set up.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Input partitions; records naming a higher partition add partitions.
    pub partitions: u32,
    /// Output partitions; default: as many as the input.
    pub output_partitions: Option<u32>,
    /// Cores: partition `p` is led on shard `p mod shards`, whose single VM it shares.
    pub shards: u32,
    /// Producer `batch.size`.
    pub batch_bytes: usize,
    /// Producer `linger.ms`, on record time.
    pub linger_ms: i64,
    /// The value field whose text is the record key.
    pub key_field: Option<String>,
    /// Where event time is (for record timestamps and heartbeats).
    pub time_field: TimeField,
    /// How event times are read and heartbeats written: the transform's rules.
    pub event_time: Arc<dyn EventTime>,
    /// How the transform reports its windows in its log, if it does (read by the closing heartbeats).
    pub window_report: Option<Arc<dyn WindowReport>>,
    pub record_time: RecordTime,
    /// `data_transforms_commit_interval_ms`, on the broker clock (record time).
    pub commit_interval_ms: i64,
    /// Inject a failure after every N records delivered for the first time.
    pub restart_every: Option<u64>,
    /// Inject a failure once when the record at (partition, offset) is handled; no partition: any.
    pub restart_at: Vec<(Option<u32>, i64)>,
    /// What an injected failure stands for.
    pub injected: InjectedFailure,
    /// Move the partition's leadership to the next shard once, as its processor reaches this offset.
    pub move_at: Vec<(u32, i64)>,
    /// Deploy after the input is written, starting here (`rpk transform deploy --from-offset`); `None`:
    /// deployed before the first record, so every record is read.
    pub from_offset: Option<StartOffset>,
    /// Output records are counted by the value of this header.
    pub tally_header: Option<String>,
    /// Whether the cluster has a schema registry (without one, its host functions answer −1).
    pub schema_registry: bool,
    /// How outputs are written: write latency, batch limit, compression.
    pub writes: WriteConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let broker = BrokerConfig::default();
        PipelineConfig {
            partitions: 1,
            output_partitions: broker.output_partitions,
            shards: broker.shards,
            batch_bytes: 16_384,
            linger_ms: 5,
            key_field: None,
            time_field: "timestamp".into(),
            event_time: Arc::new(EpochMillis),
            window_report: None,
            record_time: RecordTime::Live,
            commit_interval_ms: broker.commit_interval_ms,
            restart_every: broker.restart_every,
            restart_at: broker.restart_at,
            injected: broker.injected,
            move_at: broker.move_at,
            from_offset: broker.from_offset,
            tally_header: broker.tally_header,
            schema_registry: broker.schema_registry,
            writes: broker.writes,
        }
    }
}

/// What a windowing transform reports of its windows in a log line (the clickstream transform: its summary).
pub trait WindowReport: std::fmt::Debug + Send + Sync {
    /// `None` for a line that is no report.
    fn read(&self, line: &str) -> Option<WindowState>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Windows that fired and have rows still to write over the following records.
    pub backlog: u64,
    /// What has not fired yet: windows, or the panes they are made of.
    pub open: u64,
}

impl PipelineConfig {
    fn split(self) -> (ProducerConfig, BrokerConfig) {
        let producer = ProducerConfig {
            batch_bytes: self.batch_bytes,
            linger_ms: self.linger_ms,
            key_field: self.key_field,
            time_field: self.time_field,
            event_time: self.event_time,
            record_time: self.record_time,
        };
        let broker = BrokerConfig {
            output_partitions: self.output_partitions,
            shards: self.shards,
            commit_interval_ms: self.commit_interval_ms,
            restart_every: self.restart_every,
            restart_at: self.restart_at,
            injected: self.injected,
            move_at: self.move_at,
            from_offset: self.from_offset,
            tally_header: self.tally_header,
            schema_registry: self.schema_registry,
            writes: self.writes,
        };
        (producer, broker)
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub records_in: u64,
    pub batches: u64,
    /// Records delivered to VMs, re-deliveries after restarts included.
    pub deliveries: u64,
    /// Output records per topic index.
    pub written: Vec<u64>,
    /// Output records by the value of the tally header.
    pub tallies: BTreeMap<String, u64>,
    pub log_lines: u64,
    /// Log lines the broker would drop: invalid text (after the 1 KiB cut), and a full log buffer.
    pub dropped_log_lines: (u64, u64),
    pub peak_memory_bytes: u64,
    pub max_record_fuel: u64,
    /// Processor restarts after failures, and broker crashes.
    pub restarts: u64,
    pub moves: u64,
    /// Output records written again by a processor that read again from its last commit.
    pub written_again: u64,
    pub commits: u64,
    /// Per output topic: the largest batch written, raw and as stored, and the batches written.
    pub largest_batch: Vec<(usize, usize)>,
    pub output_batches: Vec<u64>,
    /// The latest believable event time read from an input value.
    pub max_event_ms: Option<i64>,
    /// The latest record timestamp produced.
    pub max_record_ms: Option<i64>,
}

pub struct Pipeline<'a> {
    producer: Producer,
    broker: Broker<'a>,
    window_report: Option<Arc<dyn WindowReport>>,
    sent: Vec<SentBatch>,
    started: Instant,
}

/// Closing heartbeats one partition may take before the run is called a runaway.
const MAX_CLOSING_HEARTBEATS: i64 = 100_000;

impl<'a> Pipeline<'a> {
    pub fn new(
        module: TransformModule,
        meta: TransformMeta,
        config: PipelineConfig,
        sink: &'a mut dyn OutputSink,
    ) -> Pipeline<'a> {
        let partitions = config.partitions.max(1);
        let window_report = config.window_report.clone();
        let (producer, broker) = config.split();
        Pipeline {
            producer: Producer::new(producer, partitions),
            window_report,
            broker: Broker::new(module, meta, broker, partitions, sink),
            sent: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.producer.partition_count()
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Starts every shard's VM now, so a start-up failure shows before any input is read.
    pub fn start(&mut self) -> Result<(), VmFailure> {
        self.broker.start()
    }

    /// Produces one record (see [`Producer::send`]); each batch it sends is handled at once.
    pub fn push(&mut self, record: ProducerRecord) -> Result<(), VmFailure> {
        self.producer.send(record, &mut self.sent);
        self.deliver_sent()
    }

    fn deliver_sent(&mut self) -> Result<(), VmFailure> {
        for batch in self.sent.drain(..) {
            self.broker.append(batch.partition, batch.records)?;
        }
        Ok(())
    }

    /// Sends every partition, after every event, a heartbeat far enough past the latest believable event
    /// to close every window: windows and watermark delays are at most 7 days each, so 15 days ahead (or
    /// the last expressible instant), stamped with that same time so no future-event guard refuses it.
    /// This is how a replay compares with a bounded batch job. A transform deployed with a start offset
    /// is deployed first.
    ///
    /// A transform may write what one record fires over the following records (the clickstream transform
    /// bounds each record's share), so the heartbeat is repeated, a minute of record time apart so the
    /// transform logs its summary each time, while its last [`WindowReport`] has a backlog or the
    /// heartbeat writes records that differ from the previous one's (a transform that echoes or copies
    /// its input writes the same each time).
    ///
    /// Returns what the last report of each shard's VM still holds open (0 without reports): more than 0
    /// when the heartbeats did not close the windows, e.g. because the transform refused them.
    pub fn close_windows(&mut self) -> Result<u64, VmFailure> {
        const AHEAD_MS: i64 = 15 * 86_400_000;
        self.producer.flush(&mut self.sent);
        self.deliver_sent()?;
        self.broker.deploy()?;
        let Some(max) = self.producer.stats.max_event_ms else { return Ok(0) };
        let last_ms = self.producer.max_event_ms();
        let at_ms = max.saturating_add(AHEAD_MS).min(last_ms);
        let value = self.producer.heartbeat(at_ms);
        let mut reports = BTreeMap::new();
        for partition in 0..self.partition_count() {
            let mut previous = None;
            for round in 0.. {
                if round == MAX_CLOSING_HEARTBEATS {
                    return Err(VmFailure::harness(format!(
                        "{MAX_CLOSING_HEARTBEATS} closing heartbeats and the transform still writes"
                    )));
                }
                // A partition that is restarting reads its heartbeat only afterwards: wait it out first.
                if !self.broker.is_running(partition) {
                    self.broker.finish()?;
                }
                self.broker.watch = Some(Watched::default());
                self.producer.send(
                    ProducerRecord {
                        value: Some(value.clone()),
                        timestamp_ms: Some(at_ms.saturating_add(60_000 * round).min(last_ms)),
                        partition: Some(partition),
                        ..Default::default()
                    },
                    &mut self.sent,
                );
                self.producer.flush_partition(partition, &mut self.sent);
                self.deliver_sent()?;
                let watched = self.broker.watch.take().expect("set above");
                let mut backlog = None;
                for (shard, line) in &watched.logs {
                    if let Some(state) = self.window_report.as_ref().and_then(|report| report.read(line)) {
                        reports.insert(*shard, state);
                        backlog = Some(state.backlog);
                    }
                }
                let writing = watched.records > 0 && previous != Some(watched.digest);
                if !writing && backlog.is_none_or(|windows| windows == 0) {
                    break;
                }
                previous = Some(watched.digest);
            }
        }
        Ok(reports.values().map(|state| state.open).sum())
    }

    /// Sends every open batch and handles everything, waiting out every restart; returns the totals.
    pub fn finish(mut self) -> Result<RunStats, VmFailure> {
        self.producer.flush(&mut self.sent);
        self.deliver_sent()?;
        self.broker.finish()?;
        Ok(self.stats())
    }

    /// A heartbeat value at `at_ms` (see [`Producer::heartbeat`]).
    pub fn heartbeat(&self, at_ms: i64) -> Vec<u8> {
        self.producer.heartbeat(at_ms)
    }

    pub fn stats(&self) -> RunStats {
        let (producer, broker) = (&self.producer.stats, &self.broker.stats);
        RunStats {
            records_in: producer.records_in,
            batches: producer.batches,
            deliveries: broker.deliveries,
            written: broker.written.clone(),
            tallies: broker.tallies.clone(),
            log_lines: broker.log_lines,
            dropped_log_lines: broker.dropped_log_lines,
            peak_memory_bytes: broker.peak_memory_bytes,
            max_record_fuel: broker.max_record_fuel,
            restarts: broker.restarts,
            moves: broker.moves,
            written_again: broker.written_again,
            commits: broker.commits,
            largest_batch: broker.largest_batch.clone(),
            output_batches: broker.output_batches.clone(),
            max_event_ms: producer.max_event_ms,
            max_record_ms: producer.max_record_ms,
        }
    }
}
