//! The broker's data path around the VMs: a producer that keys, partitions and batches records, partition
//! logs with offsets, one VM per shard shared by the partitions led there, output partitions and
//! offsets, periodic commits, and restarts that replay from the last commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clickstream_aggregation::aggregator::REASON_HEADER;
use clickstream_aggregation::time::{format_timestamp_ms, TimestampFormat, MAX_TIMESTAMP_MS};

use crate::host::{
    BatchOutput, BatchRecord, InputBatch, LogLine, MonotonicClock, TransformMeta, TransformModule, Vm, VmFailure,
};
use crate::wire::{encode_payload, Header, Payload, PayloadView};

/// A record as a producer sends it; unset fields are filled the way a Kafka producer would.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub timestamp_ms: Option<i64>,
    pub partition: Option<u32>,
}

/// Where a record's Kafka timestamp comes from when the input does not give one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTime {
    /// A producer sending events as they happen: its clock follows the events' own times, but one event
    /// claiming to be more than an hour ahead does not move it.
    Live,
    /// The harness's wall clock: a producer replaying old events now.
    Wall,
    /// Each event's own time, as a producer that stamps records with event time.
    Event,
}

/// How the broker side is set up.
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
    /// The value field whose text is the record key (the seed's producer keys by `user_id`).
    pub key_field: Option<String>,
    /// The value field holding event time (for record timestamps and heartbeats).
    pub time_field: String,
    /// The transform's TIMESTAMP_FORMAT: numbers are seconds with `EpochS`, else milliseconds; strings are
    /// date-times; heartbeats are written in the form it reads.
    pub time_format: TimestampFormat,
    pub record_time: RecordTime,
    /// `data_transforms_commit_interval_ms`, on the broker clock (the newest record timestamp processed).
    pub commit_interval_ms: i64,
    /// Inject a VM failure after every N records delivered for the first time.
    pub restart_every: Option<u64>,
    /// Inject a VM failure once when the record at (partition, offset) is handled; no partition: any.
    pub restart_at: Vec<(Option<u32>, i64)>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            partitions: 1,
            output_partitions: None,
            shards: 1,
            batch_bytes: 16_384,
            linger_ms: 5,
            key_field: Some("user_id".into()),
            time_field: "timestamp".into(),
            time_format: TimestampFormat::Auto,
            record_time: RecordTime::Live,
            commit_interval_ms: 3_000,
            restart_every: None,
            restart_at: Vec::new(),
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
    /// Append time: the broker's clock when the output batch is built.
    pub timestamp_ms: i64,
    pub payload: PayloadView<'a>,
    /// Produced while re-handling input after a restart.
    pub replayed: bool,
}

/// Receives what the pipeline produces.
pub trait OutputSink {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()>;
    /// A log line of the VM on `shard`.
    fn log(&mut self, shard: u32, line: &LogLine);
    /// A batch handed to the VM on `shard` (re-deliveries after restarts included); for tests and traces.
    fn delivered(&mut self, _shard: u32, _batch: &InputBatch) {}
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
    /// Output records with a `dead-letter-reason` header, by reason.
    pub dead_letters: BTreeMap<String, u64>,
    pub log_lines: u64,
    pub peak_memory_bytes: u64,
    pub max_record_fuel: u64,
    pub restarts: u64,
    pub replayed_outputs: u64,
    pub suppressed_outputs: u64,
    pub commits: u64,
    /// The latest believable event time read from an input value.
    pub max_event_ms: Option<i64>,
    /// The latest record timestamp produced.
    pub max_record_ms: Option<i64>,
}

struct Partition {
    open: Vec<BatchRecord>,
    open_bytes: usize,
    next_offset: i64,
    /// Sealed batches not yet covered by every output's commit.
    retained: VecDeque<Arc<InputBatch>>,
    processed_through: i64,
    /// Last committed input offset per output topic (−1: none).
    committed: Vec<i64>,
    /// Highest offset ever delivered: later deliveries at or below it are replays.
    delivered_through: i64,
}

impl Partition {
    fn new(outputs: usize) -> Partition {
        Partition {
            open: Vec::new(),
            open_bytes: 0,
            next_offset: 0,
            retained: VecDeque::new(),
            processed_through: -1,
            committed: vec![-1; outputs],
            delivered_through: -1,
        }
    }
}

pub struct Pipeline<'a> {
    module: TransformModule,
    meta: TransformMeta,
    config: PipelineConfig,
    sink: &'a mut dyn OutputSink,
    vms: Vec<Option<Vm>>,
    /// Each shard's monotonic clock, which outlives its VMs as in the broker.
    clocks: Vec<MonotonicClock>,
    partitions: Vec<Partition>,
    pending: VecDeque<(u32, Arc<InputBatch>)>,
    output_offsets: BTreeMap<(usize, u32), i64>,
    producer_clock_ms: Option<i64>,
    broker_clock_ms: i64,
    last_commit_ms: Option<i64>,
    round_robin: u32,
    /// Whether the latest event time was a JSON number (the closing heartbeats use the same form).
    time_as_number: bool,
    first_deliveries: u64,
    /// Set while a closing heartbeat is handled.
    closing: Option<Closing>,
    pub stats: RunStats,
    started: Instant,
}

/// How far ahead of its producer's clock an event time is believed (the module's default MAX_EVENT_AHEAD).
const PLAUSIBLE_AHEAD_MS: i64 = 3_600_000;

/// Closing heartbeats one partition may take before the run is called a runaway.
const MAX_CLOSING_HEARTBEATS: i64 = 100_000;

/// What the batch of one closing heartbeat produced.
#[derive(Default)]
struct Closing {
    records: usize,
    /// A digest of the records written (topic and payload).
    digest: u64,
    /// `backlog_windows` of the transform's summary line, if it logged one.
    backlog_windows: Option<u64>,
}

/// Gives up after this many injected restarts in a row without progress (a restart loop).
const MAX_RESTARTS_WITHOUT_PROGRESS: u32 = 100;

impl<'a> Pipeline<'a> {
    pub fn new(
        module: TransformModule,
        meta: TransformMeta,
        config: PipelineConfig,
        sink: &'a mut dyn OutputSink,
    ) -> Pipeline<'a> {
        let outputs = meta.output_topics.len();
        let partitions = (0..config.partitions.max(1)).map(|_| Partition::new(outputs)).collect();
        Pipeline {
            vms: (0..config.shards.max(1)).map(|_| None).collect(),
            clocks: (0..config.shards.max(1)).map(|_| MonotonicClock::default()).collect(),
            stats: RunStats { written: vec![0; outputs], ..RunStats::default() },
            module,
            meta,
            config,
            sink,
            partitions,
            pending: VecDeque::new(),
            output_offsets: BTreeMap::new(),
            producer_clock_ms: None,
            broker_clock_ms: 0,
            last_commit_ms: None,
            round_robin: 0,
            time_as_number: false,
            first_deliveries: 0,
            closing: None,
            started: Instant::now(),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Starts every shard's VM now, so a start-up failure shows before any input is read.
    pub fn start(&mut self) -> Result<(), VmFailure> {
        (0..self.vms.len()).try_for_each(|shard| self.vm(shard).map(|_| ()))
    }

    /// Produces one record: it is keyed, partitioned, timestamped and batched, and each batch that fills
    /// up is handled at once. Heartbeats (an object holding only the time field) go to every partition.
    pub fn push(&mut self, mut record: ProducerRecord) -> Result<(), VmFailure> {
        self.stats.records_in += 1;
        let fields = record
            .value
            .as_deref()
            .and_then(|value| TopFields::read(value, &self.config.time_field, self.config.key_field.as_deref()));
        let time = fields.as_ref().and_then(|f| f.time.as_ref());
        if let Some(time) = time {
            self.time_as_number = time.is_number();
        }
        let event_ms = time.and_then(|time| self.event_ms(time));
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(|| self.producer_time(event_ms));
        // Only events a transform would believe (at most an hour ahead of their record) count here.
        if let Some(event_ms) = event_ms.filter(|event_ms| *event_ms <= timestamp_ms.saturating_add(PLAUSIBLE_AHEAD_MS))
        {
            self.stats.max_event_ms = Some(self.stats.max_event_ms.map_or(event_ms, |max| max.max(event_ms)));
        }
        if record.key.is_none() {
            record.key = fields.as_ref().and_then(|f| f.key.as_ref()).map(|key| key.as_bytes().to_vec());
        }
        let is_heartbeat = fields.as_ref().is_some_and(|f| f.others == 0 && event_ms.is_some());
        let payload =
            encode_payload(&Payload { key: record.key.clone(), value: record.value, headers: record.headers });
        let targets: Vec<u32> = match record.partition {
            Some(partition) => vec![partition],
            None if is_heartbeat => (0..self.partitions.len() as u32).collect(),
            None => vec![self.partition_for(record.key.as_deref())],
        };
        for partition in targets {
            self.append(partition, timestamp_ms, payload.clone())?;
        }
        Ok(())
    }

    /// Sends every partition a heartbeat far enough past the latest believable event to close every
    /// window: windows and watermark delays are at most 7 days each, so 15 days ahead (or the last
    /// expressible instant), stamped with that same time so no future-event guard refuses it. This is
    /// how a replay compares with a bounded batch job.
    ///
    /// A transform may write what one record fires over the following records (the clickstream transform
    /// bounds each record's share), so the heartbeat is repeated, a minute of record time apart so the
    /// transform logs its summary each time, while the summary reports `backlog_windows` above 0 or the
    /// heartbeat writes records that differ from the previous one's (a transform that echoes or copies its
    /// input writes the same each time).
    pub fn close_windows(&mut self) -> Result<(), VmFailure> {
        const AHEAD_MS: i64 = 15 * 86_400_000;
        let Some(max) = self.stats.max_event_ms else { return Ok(()) };
        let at_ms = (max + AHEAD_MS).min(MAX_TIMESTAMP_MS);
        let value = self.heartbeat(at_ms);
        for partition in 0..self.partition_count() {
            let mut previous = None;
            for round in 0.. {
                if round == MAX_CLOSING_HEARTBEATS {
                    return Err(VmFailure {
                        reason: format!("{MAX_CLOSING_HEARTBEATS} closing heartbeats and the transform still writes"),
                        record: None,
                        last_logs: Vec::new(),
                    });
                }
                self.closing = Some(Closing::default());
                self.push(ProducerRecord {
                    value: Some(value.clone()),
                    timestamp_ms: Some(at_ms.saturating_add(60_000 * round).min(MAX_TIMESTAMP_MS)),
                    partition: Some(partition),
                    ..Default::default()
                })?;
                self.seal(partition)?;
                let closing = self.closing.take().expect("set above");
                let writing = closing.records > 0 && previous != Some(closing.digest);
                if !writing && closing.backlog_windows.is_none_or(|windows| windows == 0) {
                    break;
                }
                previous = Some(closing.digest);
            }
        }
        Ok(())
    }

    /// Seals every open batch and handles what is left; returns the totals.
    pub fn finish(mut self) -> Result<RunStats, VmFailure> {
        for partition in 0..self.partitions.len() as u32 {
            self.seal(partition)?;
        }
        Ok(std::mem::take(&mut self.stats))
    }

    /// A heartbeat value at `at_ms` (to the second for epoch seconds), its time in the form the events
    /// used, so a transform pinned to one form reads it.
    pub fn heartbeat(&self, at_ms: i64) -> Vec<u8> {
        let time = match (self.time_as_number, self.config.time_format) {
            (true, TimestampFormat::EpochS) => serde_json::json!(at_ms.div_euclid(1_000)),
            (true, _) => serde_json::json!(at_ms),
            (false, format) => {
                let mut text = String::new();
                format_timestamp_ms(at_ms, &mut text);
                if format == TimestampFormat::Iso {
                    text = format!("{}Z", text.replacen(' ', "T", 1));
                }
                serde_json::json!(text)
            }
        };
        serde_json::json!({ self.config.time_field.as_str(): time }).to_string().into_bytes()
    }

    /// An event time as the transform reads it: a date-time string, or an epoch number.
    fn event_ms(&self, time: &serde_json::Value) -> Option<i64> {
        match time {
            serde_json::Value::String(text) => TimestampFormat::Auto.parse_text(text),
            serde_json::Value::Number(number) => {
                let format = match self.config.time_format {
                    TimestampFormat::EpochS => TimestampFormat::EpochS,
                    _ => TimestampFormat::EpochMs,
                };
                format.parse_number(&number.to_string())
            }
            _ => None,
        }
    }

    fn producer_time(&mut self, event_ms: Option<i64>) -> i64 {
        let wall = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let clock = match (self.config.record_time, event_ms, self.producer_clock_ms) {
            (RecordTime::Wall, _, _) => wall(),
            (RecordTime::Event, Some(event), _) => event,
            (RecordTime::Live, Some(event), Some(clock)) if event <= clock + PLAUSIBLE_AHEAD_MS => clock.max(event),
            (RecordTime::Live, Some(event), None) => event,
            (_, _, Some(clock)) => clock,
            (_, _, None) => wall(),
        };
        self.producer_clock_ms = Some(clock);
        clock
    }

    /// Kafka's default partitioner: murmur2 of the key; records without a key go round-robin.
    fn partition_for(&mut self, key: Option<&[u8]>) -> u32 {
        let count = self.partitions.len() as u32;
        match key {
            Some(key) => (murmur2(key) & 0x7fff_ffff) % count,
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.round_robin % count
            }
        }
    }

    fn append(&mut self, partition: u32, timestamp_ms: i64, payload: Vec<u8>) -> Result<(), VmFailure> {
        self.stats.max_record_ms = Some(self.stats.max_record_ms.map_or(timestamp_ms, |max| max.max(timestamp_ms)));
        while self.partitions.len() <= partition as usize {
            self.partitions.push(Partition::new(self.meta.output_topics.len()));
        }
        // The producer's linger runs on its clock for every partition: a batch goes out once it has waited
        // long enough, not when its partition gets the next record (which may come much later).
        for other in 0..self.partitions.len() as u32 {
            let first = self.partitions[other as usize].open.first();
            if first.is_some_and(|first| timestamp_ms.saturating_sub(first.timestamp_ms) >= self.config.linger_ms) {
                self.seal(other)?;
            }
        }
        let state = &mut self.partitions[partition as usize];
        if state.open_bytes + payload.len() > self.config.batch_bytes && !state.open.is_empty() {
            self.seal(partition)?;
        }
        let state = &mut self.partitions[partition as usize];
        state.open_bytes += payload.len();
        state.open.push(BatchRecord { offset: 0, timestamp_ms, payload });
        Ok(())
    }

    fn seal(&mut self, partition: u32) -> Result<(), VmFailure> {
        let state = &mut self.partitions[partition as usize];
        if state.open.is_empty() {
            return Ok(());
        }
        let mut records = std::mem::take(&mut state.open);
        state.open_bytes = 0;
        for record in &mut records {
            record.offset = state.next_offset;
            state.next_offset += 1;
        }
        let batch = Arc::new(InputBatch { partition, records });
        state.retained.push_back(batch.clone());
        self.stats.batches += 1;
        self.pending.push_back((partition, batch));
        self.drain()
    }

    fn drain(&mut self) -> Result<(), VmFailure> {
        let mut restarts_in_a_row = 0;
        while let Some((partition, batch)) = self.pending.pop_front() {
            if self.deliver(partition, &batch)? {
                restarts_in_a_row = 0;
                continue;
            }
            restarts_in_a_row += 1;
            if restarts_in_a_row > MAX_RESTARTS_WITHOUT_PROGRESS {
                return Err(VmFailure {
                    reason: format!("{MAX_RESTARTS_WITHOUT_PROGRESS} injected restarts in a row without progress"),
                    record: None,
                    last_logs: Vec::new(),
                });
            }
            self.rewind(partition);
        }
        Ok(())
    }

    /// Delivers one batch to its shard's VM. False when an injected failure hit it.
    fn deliver(&mut self, partition: u32, batch: &Arc<InputBatch>) -> Result<bool, VmFailure> {
        let failure_at = self.injected_failure(partition, batch);
        let handled = match failure_at {
            Some(index) => Arc::new(InputBatch { partition, records: batch.records[..index].to_vec() }),
            None => batch.clone(),
        };
        let shard = (partition % self.vms.len() as u32) as usize;
        let state = &mut self.partitions[partition as usize];
        let replayed = handled.records.last().is_some_and(|last| last.offset <= state.delivered_through);
        if let Some(last) = handled.records.last() {
            state.delivered_through = state.delivered_through.max(last.offset);
        }
        self.stats.deliveries += handled.records.len() as u64;
        self.sink.delivered(shard as u32, &handled);
        let output = match self.vm(shard)?.transform(handled.clone()) {
            Ok(output) => output,
            Err(failure) => {
                self.vms[shard] = None;
                return Err(failure);
            }
        };
        self.produce(shard as u32, &handled, output, replayed).map_err(|error| VmFailure {
            reason: format!("writing output: {error:#}"),
            record: None,
            last_logs: Vec::new(),
        })?;
        if failure_at.is_some() {
            // The VM dies mid-batch: its state is gone and this batch is not committed.
            self.vms[shard] = None;
            self.stats.restarts += 1;
            return Ok(false);
        }
        let last = batch.records.last().expect("batches are not empty");
        self.partitions[partition as usize].processed_through = last.offset;
        self.broker_clock_ms =
            self.broker_clock_ms.max(batch.records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0));
        self.maybe_commit();
        Ok(true)
    }

    /// Index of the record in `batch` at which an injected failure strikes, if any; each fires once.
    fn injected_failure(&mut self, partition: u32, batch: &InputBatch) -> Option<usize> {
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

    /// After a failure: every batch after the partition's last commit is delivered again.
    fn rewind(&mut self, partition: u32) {
        self.pending.retain(|(p, _)| *p != partition);
        let state = &mut self.partitions[partition as usize];
        let resume_after = state.committed.iter().copied().min().unwrap_or(-1);
        state.processed_through = resume_after;
        for batch in state.retained.iter().rev() {
            if batch.records.last().is_some_and(|last| last.offset > resume_after) {
                self.pending.push_front((partition, batch.clone()));
            }
        }
    }

    fn vm(&mut self, shard: usize) -> Result<&mut Vm, VmFailure> {
        if self.vms[shard].is_none() {
            let (vm, logs) = Vm::start_on_clock(&self.module, &self.meta, self.clocks[shard].clone())?;
            self.log(shard as u32, &logs);
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

    fn produce(&mut self, shard: u32, batch: &InputBatch, output: BatchOutput, replayed: bool) -> anyhow::Result<()> {
        self.log(shard, &output.logs);
        if let Some(closing) = &mut self.closing {
            use std::hash::{Hash, Hasher};
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            for (topic, payload) in output.records() {
                (topic, payload.key, payload.value).hash(&mut digest);
                closing.records += 1;
            }
            closing.digest = digest.finish();
            closing.backlog_windows = output.logs.iter().rev().find_map(|line| {
                let (_, rest) = line.text.split_once(" backlog_windows=")?;
                rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            });
        }
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(output.peak_memory_bytes);
        self.stats.max_record_fuel = self.stats.max_record_fuel.max(output.max_record_fuel);
        let Some(last) = batch.records.last() else { return Ok(()) };
        let output_partitions = self.config.output_partitions.unwrap_or(self.partitions.len() as u32).max(1);
        let append_time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        for (topic, payload) in output.records() {
            if last.offset <= self.partitions[batch.partition as usize].committed[topic] {
                self.stats.suppressed_outputs += 1; // this output already committed past it
                continue;
            }
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
            if let Some(reason) = payload.header(REASON_HEADER) {
                *self.stats.dead_letters.entry(String::from_utf8_lossy(reason).into_owned()).or_default() += 1;
            }
            self.sink.record(&record)?;
        }
        Ok(())
    }

    /// Commits every partition's progress once the broker clock has moved a commit interval.
    fn maybe_commit(&mut self) {
        if self.last_commit_ms.is_some_and(|last| self.broker_clock_ms < last + self.config.commit_interval_ms) {
            return;
        }
        self.last_commit_ms = Some(self.broker_clock_ms);
        self.stats.commits += 1;
        for state in &mut self.partitions {
            state.committed.iter_mut().for_each(|committed| *committed = (*committed).max(state.processed_through));
            let committed = state.committed.iter().copied().min().unwrap_or(-1);
            while state
                .retained
                .front()
                .is_some_and(|batch| batch.records.last().is_some_and(|r| r.offset <= committed))
            {
                state.retained.pop_front();
            }
        }
    }
}

/// What the producer reads of a JSON value: the time field, the key field (a string) and how many other
/// members it has, without building the whole value. A repeated time or key field: the last one counts.
#[derive(Debug, Default, PartialEq)]
struct TopFields {
    time: Option<serde_json::Value>,
    key: Option<String>,
    others: usize,
}

impl TopFields {
    /// `None` unless `value` is one JSON object.
    fn read(value: &[u8], time_field: &str, key_field: Option<&str>) -> Option<TopFields> {
        use serde::de::DeserializeSeed;
        let mut reader = serde_json::Deserializer::from_slice(value);
        let fields = FieldsSeed { time_field, key_field }.deserialize(&mut reader).ok()?;
        reader.end().ok()?;
        Some(fields)
    }
}

struct FieldsSeed<'a> {
    time_field: &'a str,
    key_field: Option<&'a str>,
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = TopFields;

    /// Anything but an object is an error (of serde's own), which `TopFields::read` turns into `None`.
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldsSeed<'_> {
    type Value = TopFields;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = TopFields::default();
        let names = NameSeed { time_field: self.time_field, key_field: self.key_field };
        while let Some(name) = map.next_key_seed(names)? {
            match name {
                Name::Time => fields.time = Some(map.next_value()?),
                Name::Key => {
                    let value: serde_json::Value = map.next_value()?;
                    fields.key = value.as_str().map(str::to_string);
                    fields.others += 1;
                }
                Name::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    fields.others += 1;
                }
            }
        }
        Ok(fields)
    }
}

/// The value of one top-level member of a JSON object, reading nothing else whole.
pub(crate) fn top_field(value: &[u8], name: &str) -> Option<serde_json::Value> {
    TopFields::read(value, name, None)?.time
}

/// Which of the producer's fields a member name is, compared without copying it.
#[derive(Clone, Copy)]
struct NameSeed<'a> {
    time_field: &'a str,
    key_field: Option<&'a str>,
}

enum Name {
    Time,
    Key,
    Other,
}

impl<'de> serde::de::DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Name;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameSeed<'_> {
    type Value = Name;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Name, E> {
        Ok(if name == self.time_field {
            Name::Time
        } else if Some(name) == self.key_field {
            Name::Key
        } else {
            Name::Other
        })
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions the Java client computes for these keys with 3 partitions (Utils.toPositive(murmur2) % 3).
    #[test]
    fn top_fields_read_what_a_full_parse_reads() {
        let read = |value: &str| TopFields::read(value.as_bytes(), "t", Some("k"));
        let fields = read(r#"{"t":"2020-01-01 00:00:00","k":"u1","x":[1,{"t":2}],"y":null}"#).unwrap();
        assert_eq!(fields.time, Some(serde_json::json!("2020-01-01 00:00:00")));
        assert_eq!((fields.key.as_deref(), fields.others), (Some("u1"), 3));
        // A repeated time field is no other member; the last value counts.
        let repeated = read(r#"{"t":1,"t":2}"#).unwrap();
        assert_eq!((repeated.time, repeated.others), (Some(serde_json::json!(2)), 0));
        assert_eq!(read(r#"{"k":7}"#).unwrap().key, None, "a key that is not a string is no key");
        for not_one_object in [r#"[1,2]"#, r#""t""#, "12", "null", r#"{"t":1} {}"#, r#"{"t":"#] {
            assert_eq!(read(not_one_object), None, "{not_one_object}");
        }
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Known murmur2 values from Kafka's own test suite (UtilsTest.testMurmur2).
        let cases: [(&[u8], i32); 5] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{}", String::from_utf8_lossy(key));
        }
    }
}
