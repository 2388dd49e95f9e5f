//! `harness run`: the module against a live broker, the way Redpanda runs it, with the host code of
//! `harness replay`. One process is one shard: the input partitions this process holds (through a
//! consumer group named after the transform) share one VM. Outputs of input partition `p` go to
//! partition `p mod N` of each output topic, and input offsets are committed only once the outputs they
//! produced are acknowledged (at least once, as in the broker). A trap restarts the VM at once and
//! stops the failed partition for the broker's back-off and one commit interval; it then reads again
//! from its last commit. A rebalance commits what is done and starts a fresh VM; Ctrl-C stops after a
//! final commit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use transform_host::broker::{Backoff, Restart, StartOffset};
use transform_host::record_batch::{Compression, RecordBatch};
use transform_host::wire::{encode_payload, Header, Payload};
use transform_host::{
    BatchOutput, BatchRecord, InputBatch, TransformMeta, TransformModule, Vm, VmFailure, VmServices, FUEL_PER_MS,
};

use super::{
    client_config, flush, partition_count, producer, send, stop_requested, topic_exists, Deliveries, Outage, TIMEOUT,
};
use crate::flags::{duration, size, TransformArgs};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The broker to bootstrap from (HOST:PORT, comma-separated).
    #[arg(long)]
    brokers: String,
    #[command(flatten)]
    transform: TransformArgs,
    /// Where a partition with no committed offset starts, as `rpk transform deploy --from-offset`:
    /// `@T` (epoch milliseconds), `+N` or `-N`; default: the end of the log when it is assigned, as a
    /// newly deployed transform.
    #[arg(long, value_name = "@T|+N|-N", allow_hyphen_values = true)]
    from_offset: Option<StartOffset>,
    /// The consumer group; default: the transform's name.
    #[arg(long)]
    group: Option<String>,
    /// data_transforms_commit_interval_ms: a restarted partition waits this long before it reads again.
    #[arg(long, default_value = "3s", value_parser = duration)]
    commit_interval: i64,
    /// The group session timeout: how soon a dead process's partitions move to the others.
    #[arg(long, default_value = "10s", value_parser = duration)]
    session_timeout: i64,
    /// Where the module's log lines go (`-` for stderr); default: counted.
    #[arg(long)]
    logs: Option<String>,
    #[command(flatten)]
    outage: super::OutageArgs,
    /// The output topics' max.message.bytes, as in `replay`: the outputs of one input batch to one topic,
    /// as a record batch compressed as deployed, must fit, or the processor fails as in the broker.
    #[arg(long, default_value = "1MiB", value_parser = size)]
    batch_max_bytes: u64,
}

/// What the consumer's rebalance callbacks tell the loop.
#[derive(Default)]
struct Assignments {
    /// Partitions assigned since the loop last looked.
    assigned: Mutex<Vec<i32>>,
    /// Set when partitions were revoked or assigned: the VM starts afresh.
    changed: std::sync::atomic::AtomicBool,
}

struct RunContext(Arc<Assignments>);

impl ClientContext for RunContext {}

impl ConsumerContext for RunContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut assigned = self.0.assigned.lock().expect("never poisoned");
                assigned.extend(partitions.elements().iter().map(|element| element.partition()));
                stderrln!(
                    "harness: assigned partitions {:?}",
                    partitions.elements().iter().map(|e| e.partition()).collect::<Vec<_>>()
                );
            }
            Rebalance::Revoke(partitions) => {
                stderrln!(
                    "harness: revoked partitions {:?}",
                    partitions.elements().iter().map(|e| e.partition()).collect::<Vec<_>>()
                );
            }
            Rebalance::Error(error) => stderrln!("harness: rebalance error: {error}"),
        }
        self.0.changed.store(true, Ordering::SeqCst);
    }
}

/// Where a partition with no committed offset starts is found in its log itself, read from its first
/// record: ListOffsets is not trusted (tansu answers the last batch's base offset + 1 for the end).
#[derive(Debug)]
enum Start {
    /// Reading the log up to the first record at or after the start, or to its end (a partition EOF),
    /// keeping the records that may come after the start (`-N`, or `+N` past the end: the last record).
    Finding { rule: Option<StartOffset>, log_start: i64, seen_end: i64, kept: VecDeque<BatchRecord> },
    /// Found (or committed before): records before `next` are skipped.
    Reading,
}

/// One input partition this process holds.
struct Held {
    start: Start,
    /// The next offset to hand to the VM; records before it are skipped (a replay after a seek).
    next: Option<i64>,
    /// The offset after the last record read (skipped or not) since the partition was last read from its
    /// log's start: at a partition EOF, the log's end.
    read_to: Option<i64>,
    /// The offset after the last committed record (where a restart reads from).
    committed: Option<i64>,
    /// Done but not committed yet: the offset after the last record whose outputs are acknowledged.
    done: Option<i64>,
    /// Stopped after a failure until then.
    stopped_until: Option<Instant>,
    backoff: Backoff,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let transform = args.transform.load()?;
    let meta = transform.meta;
    let group = args.group.clone().unwrap_or_else(|| meta.name.clone());
    let assignments = Arc::new(Assignments::default());
    let session_ms = args.session_timeout.max(1_000);
    let consumer: BaseConsumer<RunContext> = client_config(&args.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // The end of a log is where a fetch reports it, not what ListOffsets answers (see `Start`).
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", (session_ms / 3).to_string())
        .create_with_context(RunContext(assignments.clone()))
        .context("creating the Kafka consumer")?;
    // The consumer's side reports an outage (see `Outage`); the producer's deliveries are only counted.
    let producer = producer(&args.brokers, args.outage.limit(), Deliveries::default())?;
    let Some(input_partitions) = partition_count(consumer.client(), &meta.input_topic)? else {
        bail!("the input topic {:?} does not exist", meta.input_topic)
    };
    let mut output_partitions = Vec::new();
    for topic in &meta.output_topics {
        match partition_count(producer.client(), topic)? {
            Some(count) => output_partitions.push(count),
            None => bail!("the output topic {topic:?} does not exist"),
        }
    }
    consumer.subscribe(&[&meta.input_topic]).context("joining the consumer group")?;
    let mut logs: Option<Box<dyn std::io::Write>> = match args.logs.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stderr())),
        Some(path) => Some(Box::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?)),
    };
    let mut runner = Runner {
        module: transform.module,
        meta,
        services: VmServices::default(),
        vm: None,
        held: BTreeMap::new(),
        output_partitions,
        compression: transform.compression,
        batch_max_bytes: args.batch_max_bytes as usize,
        commit_interval: Duration::from_millis(args.commit_interval as u64),
        started: Instant::now(),
        outage: Outage::new(args.outage.limit()),
        fetching_paused: false,
        missing_input_said: false,
        commits_made: BTreeMap::new(),
        records: 0,
        written: 0,
        restarts: 0,
    };
    runner.start_vm().map_err(|failure| anyhow::anyhow!("the transform did not start:\n  {failure}"))?;
    stderrln!("harness: running {} on {} as group {group:?}; Ctrl-C stops", runner.meta.name, args.brokers);
    let stop = stop_requested();
    let mut last_commit = Instant::now();
    let mut last_group_check = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if last_group_check.elapsed() >= Duration::from_millis(session_ms as u64) {
            last_group_check = Instant::now();
            let unheld = unheld_partitions(&consumer, &group, &runner.meta.input_topic, input_partitions);
            if !unheld.is_empty() {
                // tansu, after a member's session expires, answers the survivor's SyncGroup with the old
                // assignment: joining again as a new member makes it assign every partition.
                stderrln!(
                    "harness: partitions {unheld:?} of {} are held by no member of group {group:?}; joining the group again",
                    runner.meta.input_topic
                );
                runner.commit(&consumer, &producer)?;
                consumer.unsubscribe();
                consumer.subscribe(&[&runner.meta.input_topic]).context("joining the consumer group again")?;
            }
        }
        if assignments.changed.swap(false, Ordering::SeqCst) {
            let assigned: Vec<i32> = std::mem::take(&mut *assignments.assigned.lock().expect("never poisoned"));
            runner.rebalanced(&consumer, &assigned, args.from_offset)?;
        }
        if runner.fetching_paused {
            runner.resume_once_the_input_topic_is_back(&consumer)?;
        }
        runner.restart_stopped_partitions(&consumer)?;
        let batches = read_batches(&consumer, &mut runner, &assignments)?;
        for batch in batches {
            runner.transform(&consumer, &producer, batch, &mut logs)?;
        }
        if last_commit.elapsed() >= runner.commit_interval.min(Duration::from_secs(1)) {
            runner.commit(&consumer, &producer)?;
            last_commit = Instant::now();
        }
    }
    // The last outputs acknowledged (or failed, once the delivery timeout runs out) before the last commit.
    flush(&producer)?;
    runner.commit(&consumer, &producer)?;
    stderrln!(
        "harness: stopped after {:.1} s: {} records read, {} written, {} restarts",
        runner.started.elapsed().as_secs_f64(),
        runner.records,
        runner.written,
        runner.restarts
    );
    for (partition, held) in &runner.held {
        match held.committed {
            Some(offset) => stderrln!("harness: partition {partition}: committed at offset {offset}, where the next start reads"),
            None => stderrln!(
                "harness: partition {partition}: nothing committed (its start was not found yet); the next start finds it again"
            ),
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

struct Runner {
    module: TransformModule,
    meta: TransformMeta,
    services: VmServices,
    vm: Option<Vm>,
    held: BTreeMap<i32, Held>,
    output_partitions: Vec<u32>,
    compression: Compression,
    batch_max_bytes: usize,
    commit_interval: Duration,
    started: Instant,
    /// The broker unreachable since then, if it is.
    outage: Outage,
    /// Fetching is paused from the first sign of an outage until the broker has the input topic again
    /// (see `topic_exists`).
    fetching_paused: bool,
    /// Said once per outage: the broker answers without the input topic.
    missing_input_said: bool,
    /// The last offset this process committed for each partition, kept when the partition is revoked: a
    /// group whose commits the broker lost resumes from it rather than where a new transform starts.
    commits_made: BTreeMap<i32, i64>,
    records: u64,
    written: u64,
    restarts: u64,
}

impl Held {
    /// While the start is being found: `Some(record)` when this record is the first at or after it (`@T`,
    /// or `+N` within the log); otherwise it is kept if it may follow the start found at the log's end.
    fn starts_at(&mut self, record: BatchRecord) -> Option<BatchRecord> {
        let Start::Finding { rule, log_start, seen_end, kept } = &mut self.start else { return Some(record) };
        *seen_end = record.offset + 1;
        let starts = match *rule {
            Some(StartOffset::Timestamp(ms)) => record.timestamp_ms >= ms,
            Some(StartOffset::FromStart(n)) => record.offset >= *log_start + n,
            _ => false,
        };
        if starts {
            return Some(record);
        }
        let keep = match *rule {
            Some(StartOffset::FromEnd(n)) => n as usize,
            Some(StartOffset::FromStart(_)) => 1,
            _ => 0,
        };
        if keep > 0 {
            kept.push_back(record);
            if kept.len() > keep {
                kept.pop_front();
            }
        }
        None
    }

    /// At a partition EOF: the log's end and the position, when the end is before it (the broker lost
    /// records, or the topic was deleted and created again, and its offsets start over).
    fn log_ends_before_position(&self) -> Option<(i64, i64)> {
        let (Start::Reading, Some(end), Some(next)) = (&self.start, self.read_to, self.next) else { return None };
        (end < next).then_some((end, next))
    }

    /// The log's end, reached while the start is being found: the start, by the broker's rule.
    fn log_end_reached(&self) -> Option<i64> {
        let Start::Finding { rule, log_start, seen_end, .. } = &self.start else { return None };
        // A new transform with no `--from-offset` starts at the end; `@T` past every record too.
        Some(rule.map_or(*seen_end, |rule| rule.first_offset(*log_start, *seen_end, None)))
    }
}

impl Runner {
    /// The start of a partition with no commit is found: the records kept from its log that follow it go to
    /// the VM first, and it is committed at once, as the broker commits the offset before it.
    fn start_found(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        partition: i32,
        start: i64,
        batch: &mut Vec<BatchRecord>,
    ) -> anyhow::Result<()> {
        let held = self.held.get_mut(&partition).expect("held");
        if let Start::Finding { kept, .. } = std::mem::replace(&mut held.start, Start::Reading) {
            batch.extend(kept.into_iter().filter(|record| record.offset >= start));
        }
        self.commit_start(consumer, partition, start)?;
        stderrln!("harness: partition {partition} starts at offset {start}");
        Ok(())
    }

    /// Reading a partition starts at `start`, committed at once as the broker commits a start, so a
    /// restart before any other commit reads again from it.
    fn commit_start(&mut self, consumer: &BaseConsumer<RunContext>, partition: i32, start: i64) -> anyhow::Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.meta.input_topic, partition, Offset::Offset(start))?;
        consumer.commit(&list, CommitMode::Sync).context("committing the start offset")?;
        let held = self.held.get_mut(&partition).expect("held");
        held.next = Some(start);
        held.committed = Some(start);
        self.commits_made.insert(partition, start);
        Ok(())
    }

    /// A partition EOF before the position: said, and the log is read again from its start, where reading
    /// is committed (records below the position in the new log would otherwise be skipped).
    fn read_again_from_the_log_start(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        partition: i32,
        (end, position): (i64, i64),
    ) -> anyhow::Result<()> {
        let topic = self.meta.input_topic.clone();
        let (log_start, _) = consumer.fetch_watermarks(&topic, partition, TIMEOUT)?;
        stderrln!(
            "harness: partition {partition}: its log ends at {end}, before our position {position}: the broker lost records or the topic was re-created; reading from its start {log_start}"
        );
        let held = self.held.get_mut(&partition).expect("held");
        held.done = None;
        held.read_to = None;
        self.commit_start(consumer, partition, log_start)?;
        read_from_the_log_start(consumer, &topic, partition)
    }

    /// The first sign that the broker cannot be reached: fetching pauses (see `fetching_paused`).
    fn broker_unreachable(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        error: impl std::fmt::Display,
    ) -> anyhow::Result<()> {
        self.outage.failed(error)?;
        if !self.fetching_paused {
            self.fetching_paused = true;
            consumer.pause(&self.fetching_partitions())?;
        }
        Ok(())
    }

    /// While fetching is paused for an outage: once the broker answers with the input topic, it goes on.
    fn resume_once_the_input_topic_is_back(&mut self, consumer: &BaseConsumer<RunContext>) -> anyhow::Result<()> {
        let topic = self.meta.input_topic.clone();
        let exists = match topic_exists(consumer.client(), &topic) {
            Ok(exists) => exists,
            Err(error) => return self.outage.failed(error),
        };
        self.outage.ended();
        if !exists {
            if !std::mem::replace(&mut self.missing_input_said, true) {
                stderrln!("harness: the broker answers without the input topic {topic:?} (lost in a restart, or deleted); reading waits until it is there");
            }
            return Ok(());
        }
        self.fetching_paused = false;
        consumer.resume(&self.fetching_partitions())?;
        if std::mem::take(&mut self.missing_input_said) {
            // The group may have been assigned what the broker had meanwhile: no partition of the topic.
            stderrln!("harness: the input topic {topic:?} is there again; joining the group again");
            consumer.unsubscribe();
            consumer.subscribe(&[&topic]).context("joining the consumer group again")?;
        }
        Ok(())
    }

    /// The held partitions that fetch unless paused for an outage (not those stopped after a failure).
    fn fetching_partitions(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (&partition, held) in &self.held {
            if held.stopped_until.is_none() {
                list.add_partition(&self.meta.input_topic, partition);
            }
        }
        list
    }

    fn start_vm(&mut self) -> Result<(), VmFailure> {
        let (vm, _) = Vm::start_with(&self.module, &self.meta, self.services.clone())?;
        self.vm = Some(vm);
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// After a rebalance: what was done is committed, the VM starts afresh, and each newly held partition
    /// starts at its committed offset, or where a new transform would.
    fn rebalanced(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        assigned: &[i32],
        from_offset: Option<StartOffset>,
    ) -> anyhow::Result<()> {
        let held_now: BTreeSet<i32> = consumer
            .assignment()
            .map(|list| list.elements().iter().map(|element| element.partition()).collect())
            .unwrap_or_default();
        self.held.retain(|partition, _| held_now.contains(partition));
        self.start_vm().map_err(|failure| anyhow::anyhow!("the transform did not restart:\n  {failure}"))?;
        let topic = self.meta.input_topic.clone();
        for &partition in assigned {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            let committed = consumer.committed_offsets(list, TIMEOUT).context("reading committed offsets")?;
            let committed = committed.elements().first().and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
            let committed_here = self.commits_made.get(&partition).copied();
            let start = match (committed, committed_here) {
                (Some(offset), _) => {
                    stderrln!("harness: partition {partition} resumes at offset {offset}, its commit");
                    Start::Reading
                }
                // Not a first start: the broker lost the group's commits (a restart without storage).
                (None, Some(offset)) => {
                    stderrln!("harness: partition {partition} resumes at offset {offset}, where this process committed it (the group's commit is gone)");
                    Start::Reading
                }
                (None, None) => {
                    let (log_start, _) = consumer.fetch_watermarks(&topic, partition, TIMEOUT)?;
                    Start::Finding { rule: from_offset, log_start, seen_end: log_start, kept: VecDeque::new() }
                }
            };
            read_from_the_log_start(consumer, &topic, partition)?;
            let held = Held {
                start,
                next: committed,
                read_to: None,
                committed,
                done: None,
                stopped_until: None,
                backoff: Backoff::default(),
            };
            self.held.insert(partition, held);
            if let (None, Some(offset)) = (committed, committed_here) {
                self.commit_start(consumer, partition, offset)?;
            }
        }
        // librdkafka keeps a partition paused across a revoke: one paused before (an outage, a failure)
        // is paused or resumed anew.
        let mut list = TopicPartitionList::new();
        for &partition in assigned {
            list.add_partition(&topic, partition);
        }
        if self.fetching_paused {
            consumer.pause(&list)?;
        } else {
            consumer.resume(&list)?;
        }
        Ok(())
    }

    /// Partitions whose back-off is over read again from their last commit.
    fn restart_stopped_partitions(&mut self, consumer: &BaseConsumer<RunContext>) -> anyhow::Result<()> {
        if self.fetching_paused {
            return Ok(()); // they resume with the others
        }
        let now = Instant::now();
        let topic = self.meta.input_topic.clone();
        let now_ms = self.now_ms();
        for (&partition, held) in &mut self.held {
            if held.stopped_until.is_none_or(|until| until > now) {
                continue;
            }
            held.stopped_until = None;
            held.backoff.last_start_ms = Some(now_ms);
            held.next = held.committed;
            held.read_to = None;
            read_from_the_log_start(consumer, &topic, partition)?;
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            consumer.resume(&list)?;
        }
        Ok(())
    }

    /// Hands one partition's records to the VM and sends its outputs; a failure restarts the VM and stops
    /// the partition.
    fn transform(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        producer: &BaseProducer<Deliveries>,
        batch: InputBatch,
        logs: &mut Option<Box<dyn std::io::Write>>,
    ) -> anyhow::Result<()> {
        let partition = batch.partition as i32;
        let last = batch.records.last().expect("batches are not empty").offset;
        let first = batch.records[0].offset;
        self.records += batch.records.len() as u64;
        let vm = self.vm.as_mut().expect("started");
        let result = vm.transform(Arc::new(batch));
        match result.and_then(|output| self.refused_write(&output, partition as u32, last).map_or(Ok(output), Err)) {
            Ok(output) => {
                for line in &output.logs {
                    if let Some(out) = logs {
                        let _ = writeln!(out, "[partition {partition}] {}", line.text.trim_end());
                    }
                }
                for (topic, payload) in output.records() {
                    let output_partition = (partition as u32 % self.output_partitions[topic]) as i32;
                    send(producer, &self.meta.output_topics[topic], output_partition, None, &payload.to_payload())?;
                    self.written += 1;
                }
                let held = self.held.get_mut(&partition).expect("held");
                held.done = Some(last + 1);
                held.next = Some(last + 1);
            }
            Err(failure) => {
                self.restarts += 1;
                // Outputs of the batches before it must be acknowledged before anything is committed.
                self.commit(consumer, producer)?;
                let now_ms = self.now_ms();
                let held = self.held.get_mut(&partition).expect("held");
                let backoff_ms = held.backoff.next(now_ms);
                let wait = Duration::from_millis(backoff_ms as u64) + self.commit_interval;
                held.stopped_until = Some(Instant::now() + wait);
                let resume_from = held.committed.unwrap_or(first);
                let mut list = TopicPartitionList::new();
                list.add_partition(&self.meta.input_topic, partition);
                consumer.pause(&list)?;
                let restart = Restart {
                    shard: 0,
                    partition: partition as u32,
                    offset: failure.record.map(|(_, offset)| offset),
                    reason: failure.reason.clone(),
                    injected: None,
                    at_ms: now_ms,
                    backoff_ms,
                    resume_at_ms: now_ms + wait.as_millis() as i64,
                    resume_from,
                };
                stderrln!("harness: restart {}: {restart}", self.restarts);
                self.start_vm().map_err(|failure| anyhow::anyhow!("the transform did not restart:\n  {failure}"))?;
            }
        }
        Ok(())
    }

    /// The broker's producer loops write what the VM queued for each output topic whenever it yields (every
    /// 2,000,000 units of fuel) and at the batch's end; the first batch a topic refuses fails the processor.
    /// (`replay` also joins what is written while a previous write is in flight: `--write-latency`.)
    fn refused_write(&self, output: &BatchOutput, partition: u32, last: i64) -> Option<VmFailure> {
        (0..self.meta.output_topics.len()).find_map(|topic| {
            let mut batch = RecordBatch::new(self.compression);
            let mut refusal = None;
            let mut yield_interval = None;
            for written in output.written.iter().filter(|written| written.topic == topic) {
                let interval = written.fuel / FUEL_PER_MS;
                if yield_interval.replace(interval).is_some_and(|previous| previous != interval) {
                    refusal = refusal.or_else(|| batch.refusal(&self.meta.output_topics[topic], self.batch_max_bytes));
                    batch.clear();
                }
                batch.push(output.payload(written));
            }
            let reason = refusal.or_else(|| batch.refusal(&self.meta.output_topics[topic], self.batch_max_bytes))?;
            Some(VmFailure { reason, record: Some((partition, last)), logs: Vec::new(), at_start: false })
        })
    }

    /// Once every output is acknowledged, commits what they came from. While the broker cannot be reached,
    /// nothing is committed and the next call tries again.
    fn commit(
        &mut self,
        consumer: &BaseConsumer<RunContext>,
        producer: &BaseProducer<Deliveries>,
    ) -> anyhow::Result<()> {
        let pending: Vec<(i32, i64)> =
            self.held.iter().filter_map(|(&partition, held)| Some((partition, held.done?))).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(error) = producer.flush(Duration::from_secs(1)) {
            return self.outage.failed(error);
        }
        if let Some(error) = producer.context().failure() {
            bail!(
                "an output record was not delivered ({error}); nothing more is committed, so a restart reads it again"
            );
        }
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in &pending {
            list.add_partition_offset(&self.meta.input_topic, partition, Offset::Offset(offset))?;
        }
        if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
            return self.outage.failed(error);
        }
        self.outage.ended();
        for (partition, offset) in pending {
            if let Some(held) = self.held.get_mut(&partition) {
                held.committed = Some(offset);
                held.done = None;
            }
            self.commits_made.insert(partition, offset);
        }
        Ok(())
    }
}

/// Partitions of `topic` that no member of a stable `group` holds, as the broker describes the group
/// (DescribeGroups); none while it rebalances, or cannot be described or told.
fn unheld_partitions(consumer: &BaseConsumer<RunContext>, group: &str, topic: &str, partitions: u32) -> Vec<i32> {
    let Ok(groups) = consumer.fetch_group_list(Some(group), TIMEOUT) else { return Vec::new() };
    let Some(described) = groups.groups().iter().find(|described| described.name() == group) else {
        return Vec::new();
    };
    if described.state() != "Stable" || described.members().is_empty() {
        return Vec::new();
    }
    let assignments: Option<Vec<Vec<i32>>> = described
        .members()
        .iter()
        .map(|member| member.assignment().and_then(|assignment| assigned_partitions(assignment, topic)))
        .collect();
    let held: BTreeSet<i32> = match assignments {
        Some(assignments) => assignments.into_iter().flatten().collect(),
        // tansu describes members without their assignments: alone in the group, this process's own
        // assignment is the group's.
        None if described.members().len() == 1 => consumer
            .assignment()
            .map(|list| list.elements().iter().map(|element| element.partition()).collect())
            .unwrap_or_default(),
        None => return Vec::new(),
    };
    (0..partitions as i32).filter(|partition| !held.contains(partition)).collect()
}

/// The partitions of `topic` in a consumer protocol assignment: a version (int16), then topics, each a
/// name (int16 length, bytes) and partitions (int32 count, int32s), then user data.
fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<i32>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(taken)
    }
    let int = |bytes: &mut &[u8], n: usize| -> Option<i32> {
        let taken = take(bytes, n)?;
        Some(taken.iter().fold(0i32, |value, byte| (value << 8) | i32::from(*byte)))
    };
    let mut bytes = assignment;
    let mut partitions = Vec::new();
    int(&mut bytes, 2)?;
    for _ in 0..int(&mut bytes, 4)? {
        let name_len = int(&mut bytes, 2)?;
        let name = take(&mut bytes, usize::try_from(name_len).ok()?)?;
        for _ in 0..int(&mut bytes, 4)? {
            let partition = int(&mut bytes, 4)?;
            if name == topic.as_bytes() {
                partitions.push(partition);
            }
        }
    }
    Some(partitions)
}

/// Positions a held partition at its log's first record: tansu answers a fetch from inside a batch with
/// nothing, so positions (commits, starts) are reached by skipping the records before them.
fn read_from_the_log_start(consumer: &BaseConsumer<RunContext>, topic: &str, partition: i32) -> anyhow::Result<()> {
    consumer
        .seek(topic, partition, Offset::Beginning, TIMEOUT)
        .with_context(|| format!("seeking partition {partition}"))
}

/// Reads what has arrived (up to 100 ms or 1,000 records), as one batch per partition in offset order,
/// leaving out what comes before a partition's start, after a failure, or before its read position.
fn read_batches(
    consumer: &BaseConsumer<RunContext>,
    runner: &mut Runner,
    assignments: &Assignments,
) -> anyhow::Result<Vec<InputBatch>> {
    let mut batches: BTreeMap<i32, Vec<BatchRecord>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut count = 0;
    // A rebalance (run by a poll) ends the read, so newly held partitions are set up before their records.
    while count < 1_000 && !assignments.changed.load(Ordering::SeqCst) {
        let message = match consumer.poll(deadline.saturating_duration_since(Instant::now())) {
            None => break,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                let Some(held) = runner.held.get_mut(&partition) else { continue };
                if let Some(start) = held.log_end_reached() {
                    runner.start_found(consumer, partition, start, batches.entry(partition).or_default())?;
                } else if let Some(end_and_position) = held.log_ends_before_position() {
                    runner.read_again_from_the_log_start(consumer, partition, end_and_position)?;
                }
                continue;
            }
            Some(Err(error)) => {
                // Errors queued during an outage are all read now, not one a loop: one read after the
                // broker answers again would start another outage.
                runner.broker_unreachable(consumer, error)?;
                continue;
            }
            Some(Ok(message)) => message,
        };
        runner.outage.ended();
        let partition = message.partition();
        let Some(held) = runner.held.get_mut(&partition) else { continue };
        held.read_to = Some(message.offset() + 1);
        if held.stopped_until.is_some() || held.next.is_some_and(|next| message.offset() < next) {
            continue;
        }
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| Header {
                        key: header.key.as_bytes().to_vec(),
                        value: header.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let payload =
            Payload { key: message.key().map(<[u8]>::to_vec), value: message.payload().map(<[u8]>::to_vec), headers };
        let record = BatchRecord {
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            payload: encode_payload(&payload),
        };
        let finding = matches!(held.start, Start::Finding { .. });
        let Some(record) = held.starts_at(record) else { continue };
        let batch = batches.entry(partition).or_default();
        if finding {
            runner.start_found(consumer, partition, record.offset, batch)?;
        }
        batch.push(record);
        count += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    batches.retain(|_, records| !records.is_empty());
    Ok(batches.into_iter().map(|(partition, records)| InputBatch { partition: partition as u32, records }).collect())
}
