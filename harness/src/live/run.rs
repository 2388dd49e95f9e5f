//! `harness run`: the module against a live broker, the way Redpanda runs it, with the host code of
//! `harness replay`. One process is one shard: the input partitions this process holds (through a
//! consumer group named after the transform) share one VM. Outputs of input partition `p` go to
//! partition `p mod N` of each output topic, and input offsets are committed only once the outputs they
//! produced are acknowledged (at least once, as in the broker). A trap restarts the VM at once and
//! stops the failed partition for the broker's back-off and one commit interval; it then reads again
//! from its last commit. A rebalance commits what is done and starts a fresh VM; Ctrl-C stops after a
//! final commit.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use harness::broker::{Backoff, Restart, StartOffset};
use harness::host::{BatchRecord, InputBatch, TransformMeta, TransformModule, Vm, VmFailure, VmServices};
use harness::wire::{encode_payload, Header, Payload};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, flush, partition_count, producer, send, stop_requested, Deliveries, TIMEOUT};
use crate::TransformArgs;

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
    #[arg(long, default_value = "3s", value_parser = crate::duration)]
    commit_interval: i64,
    /// The group session timeout: how soon a dead process's partitions move to the others.
    #[arg(long, default_value = "10s", value_parser = crate::duration)]
    session_timeout: i64,
    /// Where the module's log lines go (`-` for stderr); default: counted.
    #[arg(long)]
    logs: Option<String>,
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

/// Which records of a partition with no committed offset are before the transform's start.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Records below this offset.
    Offset(i64),
    /// Records below `end` (the log end when assigned) until the first with a timestamp at or after `ms`.
    Timestamp {
        ms: i64,
        end: i64,
    },
    Reading,
}

/// One input partition this process holds.
struct Held {
    start: Start,
    /// The next offset to hand to the VM; records before it are skipped (a replay after a seek).
    next: Option<i64>,
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
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", (session_ms / 3).to_string())
        .create_with_context(RunContext(assignments.clone()))
        .context("creating the Kafka consumer")?;
    let producer = producer(&args.brokers)?;
    let Some(_) = partition_count(consumer.client(), &meta.input_topic)? else {
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
        commit_interval: Duration::from_millis(args.commit_interval as u64),
        started: Instant::now(),
        records: 0,
        written: 0,
        restarts: 0,
    };
    runner.start_vm().map_err(|failure| anyhow::anyhow!("the transform did not start:\n  {failure}"))?;
    stderrln!("harness: running {} on {} as group {group:?}; Ctrl-C stops", runner.meta.name, args.brokers);
    let stop = stop_requested();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if assignments.changed.swap(false, Ordering::SeqCst) {
            let assigned: Vec<i32> = std::mem::take(&mut *assignments.assigned.lock().expect("never poisoned"));
            runner.rebalanced(&consumer, &assigned, args.from_offset)?;
        }
        runner.restart_stopped_partitions(&consumer)?;
        let batches = read_batches(&consumer, &mut runner)?;
        for batch in batches {
            runner.transform(&consumer, &producer, batch, &mut logs)?;
        }
        if last_commit.elapsed() >= runner.commit_interval.min(Duration::from_secs(1)) {
            runner.commit(&consumer, &producer)?;
            last_commit = Instant::now();
        }
    }
    runner.commit(&consumer, &producer)?;
    stderrln!(
        "harness: stopped after {:.1} s: {} records read, {} written, {} restarts; offsets committed",
        runner.started.elapsed().as_secs_f64(),
        runner.records,
        runner.written,
        runner.restarts
    );
    Ok(std::process::ExitCode::SUCCESS)
}

struct Runner {
    module: TransformModule,
    meta: TransformMeta,
    services: VmServices,
    vm: Option<Vm>,
    held: BTreeMap<i32, Held>,
    output_partitions: Vec<u32>,
    commit_interval: Duration,
    started: Instant,
    records: u64,
    written: u64,
    restarts: u64,
}

impl Runner {
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
            let start = match committed {
                Some(_) => Start::Reading,
                None => {
                    let (low, high) = consumer.fetch_watermarks(&topic, partition, TIMEOUT)?;
                    match from_offset {
                        None => Start::Offset(high),
                        Some(StartOffset::FromStart(n)) => Start::Offset((low + n).min(high - 1).max(low)),
                        Some(StartOffset::FromEnd(n)) => Start::Offset((high - n).max(low)),
                        Some(StartOffset::Timestamp(ms)) => Start::Timestamp { ms, end: high },
                    }
                }
            };
            let held = Held {
                start,
                next: committed,
                committed,
                done: None,
                stopped_until: None,
                backoff: Backoff::default(),
            };
            self.held.insert(partition, held);
        }
        Ok(())
    }

    /// Partitions whose back-off is over read again from their last commit.
    fn restart_stopped_partitions(&mut self, consumer: &BaseConsumer<RunContext>) -> anyhow::Result<()> {
        let now = Instant::now();
        let topic = self.meta.input_topic.clone();
        let now_ms = self.now_ms();
        for (&partition, held) in &mut self.held {
            if held.stopped_until.is_none_or(|until| until > now) {
                continue;
            }
            held.stopped_until = None;
            held.backoff.last_start_ms = Some(now_ms);
            let from = held.committed.unwrap_or(0);
            held.next = Some(from);
            consumer.seek(&topic, partition, Offset::Offset(from), TIMEOUT).context("seeking")?;
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
        match vm.transform(Arc::new(batch)) {
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

    /// Waits for every output to be acknowledged, then commits what they came from.
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
        flush(producer)?;
        if let Some(error) = producer.context().failure() {
            bail!(
                "an output record was not delivered ({error}); nothing more is committed, so a restart reads it again"
            );
        }
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in &pending {
            list.add_partition_offset(&self.meta.input_topic, partition, Offset::Offset(offset))?;
        }
        consumer.commit(&list, CommitMode::Sync).context("committing offsets")?;
        for (partition, offset) in pending {
            if let Some(held) = self.held.get_mut(&partition) {
                held.committed = Some(offset);
                held.done = None;
            }
        }
        Ok(())
    }
}

/// Reads what has arrived (up to 100 ms or 1,000 records), as one batch per partition in offset order,
/// leaving out what comes before a partition's start, after a failure, or before its read position.
fn read_batches(consumer: &BaseConsumer<RunContext>, runner: &mut Runner) -> anyhow::Result<Vec<InputBatch>> {
    let mut batches: BTreeMap<i32, Vec<BatchRecord>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut count = 0;
    while count < 1_000 {
        let Some(message) = consumer.poll(deadline.saturating_duration_since(Instant::now())) else { break };
        let message = message.context("reading the input topic")?;
        let partition = message.partition();
        let Some(held) = runner.held.get_mut(&partition) else { continue };
        if held.stopped_until.is_some() || held.next.is_some_and(|next| message.offset() < next) {
            continue;
        }
        let timestamp_ms = message.timestamp().to_millis().unwrap_or(0);
        match held.start {
            Start::Offset(first) if message.offset() < first => continue,
            Start::Timestamp { ms, end } if message.offset() < end && timestamp_ms < ms => continue,
            _ => held.start = Start::Reading,
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
        batches.entry(partition).or_default().push(BatchRecord {
            offset: message.offset(),
            timestamp_ms,
            payload: encode_payload(&payload),
        });
        count += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(batches.into_iter().map(|(partition, records)| InputBatch { partition: partition as u32, records }).collect())
}
