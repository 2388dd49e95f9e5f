//! `harness produce`: the seed's producer against a live broker. Records go through the same producer
//! model as `harness replay` (keyed by `user_id`, murmur2 partitioner, record time = event time,
//! heartbeats to every partition), so a live run can be compared with a replay of the same input.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use clickstream_aggregation::time::TimestampFormat;
use harness::generate::Generator;
use harness::input::RecordReader;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{Producer as _, PurgeConfig};
use transform_host::producer::{Producer, ProducerConfig, ProducerRecord, RecordTime, SentBatch};
use transform_host::wire::decode_payload;

use super::{flush, partition_count, producer, send, stop_requested, Deliveries};
use crate::flags::GeneratorOptions;

/// Heartbeats each partition gets with `--close-windows`.
const CLOSING_HEARTBEATS: i64 = 60;

#[derive(Args)]
pub(crate) struct ProduceArgs {
    /// The broker to bootstrap from (HOST:PORT, comma-separated).
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "clickstream")]
    topic: String,
    /// JSON lines of values, or records as `rpk topic consume` prints them (`-` for stdin); default: a
    /// generated clickstream (the generator options below).
    #[arg(long)]
    input: Option<String>,
    #[command(flatten)]
    generator: GeneratorOptions,
    /// Records per second (default: as fast as the broker takes them).
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Create the topic with this many partitions when it does not exist.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    partitions: Option<u32>,
    /// The value field whose text is the record key; `none` for no key.
    #[arg(long, default_value = "user_id")]
    key_field: String,
    /// The value field holding event time; `@record` for the record's own timestamp (heartbeats are then `{}`).
    #[arg(long, default_value = "timestamp")]
    time_field: String,
    /// At the end, once every event is acknowledged and a second has passed, send every partition
    /// heartbeats far past the last event, a minute apart for an hour, so every window closes and its rows
    /// are written.
    #[arg(long)]
    close_windows: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    outage: super::OutageArgs,
}

pub(crate) fn produce(args: ProduceArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.rate.is_some_and(|rate| rate.is_nan() || rate <= 0.0) {
        bail!("--rate: expected a positive number of records per second");
    }
    let producer = producer(&args.brokers, args.outage.limit(), Deliveries::reporting_outages(args.outage.limit()))?;
    let partitions = match (partition_count(producer.client(), &args.topic)?, args.partitions) {
        (Some(existing), _) => existing,
        (None, Some(wanted)) => {
            create_topic(&args.brokers, &args.topic, wanted)?;
            wanted
        }
        (None, None) => bail!("topic {:?} does not exist; pass --partitions N to create it", args.topic),
    };
    let mut model = Producer::new(
        ProducerConfig {
            key_field: Some(args.key_field.clone()).filter(|field| field != "none"),
            time_field: harness::clickstream::time_field(&args.time_field),
            record_time: RecordTime::Live,
            ..harness::clickstream::pipeline_config(TimestampFormat::Auto).producer
        },
        partitions,
    );
    let records: Box<dyn Iterator<Item = anyhow::Result<ProducerRecord>>> = match &args.input {
        Some(path) => {
            let input: Box<dyn std::io::Read> = if path == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(path).with_context(|| format!("opening {path}"))?)
            };
            let mut reader = RecordReader::new(input, None);
            Box::new(std::iter::from_fn(move || reader.next_record().transpose()))
        }
        None => Box::new(
            Generator::new(args.generator.config()?)
                .map(|value| Ok(ProducerRecord { value: Some(value), ..Default::default() })),
        ),
    };
    let stop = stop_requested();
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut sent, mut sent_batches, mut last_progress) = (0u64, Vec::new(), Instant::now());
    let ship = |batches: &mut Vec<SentBatch>, sent: &mut u64| -> anyhow::Result<()> {
        for batch in batches.drain(..) {
            for record in batch.records {
                let payload = decode_payload(&record.payload).expect("the producer model encodes valid payloads");
                send(&producer, &args.topic, batch.partition as i32, Some(record.timestamp_ms), &payload)?;
                *sent += 1;
            }
        }
        producer.poll(Duration::ZERO);
        Ok(())
    };
    // Whatever stops the sending, what was acknowledged is counted and shown.
    let sending = (|| -> anyhow::Result<()> {
        for (index, record) in records.enumerate() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let mut record = record?;
            if record.partition.is_some_and(|partition| partition >= partitions) {
                record.partition = None; // a captured record from a topic with more partitions: partition it anew
            }
            model.send(record, &mut sent_batches);
            ship(&mut sent_batches, &mut sent)?;
            // What follows would time out as well: the broker has not answered for --give-up-after.
            if let Some(error) = producer.context().timed_out() {
                // The rest fails now rather than after waiting as long again.
                producer.purge(PurgeConfig::default().queue().inflight());
                bail!(
                    "the broker did not acknowledge a record for {} s (--give-up-after): {error}",
                    args.outage.limit().as_secs()
                );
            }
            if let Some(rate) = args.rate {
                let due = started + Duration::from_secs_f64((index + 1) as f64 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            if progress && last_progress.elapsed() > Duration::from_millis(250) {
                last_progress = Instant::now();
                let acked = producer.context().acked.load(Ordering::Relaxed);
                stderr!("\r{sent} records sent, {acked} acknowledged   ");
            }
        }
        if args.close_windows {
            // The events first, acknowledged, and a second for consumers that keep up to read them: a heartbeat
            // read before another partition's last events would make them late.
            model.flush(&mut sent_batches);
            ship(&mut sent_batches, &mut sent)?;
            flush(&producer)?;
            std::thread::sleep(Duration::from_secs(1));
            if let Some(max) = model.stats.max_event_ms {
                // Far past every window and watermark delay (at most 7 days each), then a minute apart for an
                // hour: a transform that writes what one record fires over the following records (as the
                // clickstream transform does, 1 MiB a record) writes it all.
                for round in 0..CLOSING_HEARTBEATS {
                    let at_ms = (max + 15 * 86_400_000 + round * 60_000).min(model.max_event_ms());
                    let value = model.heartbeat(at_ms);
                    for partition in 0..partitions {
                        let heartbeat = ProducerRecord {
                            value: Some(value.clone()),
                            timestamp_ms: Some(at_ms),
                            partition: Some(partition),
                            ..Default::default()
                        };
                        model.send(heartbeat, &mut sent_batches);
                    }
                }
            }
        }
        model.flush(&mut sent_batches);
        ship(&mut sent_batches, &mut sent)?;
        flush(&producer)?;
        Ok(())
    })();
    if sending.is_err() {
        let _ = flush(&producer);
    }
    if progress {
        stderr!("\r{}\r", " ".repeat(60));
    }
    let deliveries = producer.context();
    let (acked, failed) = (deliveries.acked.load(Ordering::Relaxed), deliveries.failed.load(Ordering::Relaxed));
    stderrln!(
        "produced {sent} records to {} ({partitions} partitions) in {:.1} s: {acked} acknowledged, {failed} failed",
        args.topic,
        started.elapsed().as_secs_f64()
    );
    sending?;
    if let Some(error) = deliveries.failure() {
        stderrln!("harness: {failed} records were not delivered; the first failure: {error}");
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Creates `topic` with `partitions` partitions and one replica.
pub(crate) fn create_topic(brokers: &str, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        super::client_config(brokers).create().context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics(&[new], &AdminOptions::new()))
        .with_context(|| format!("creating topic {topic:?}"))?;
    for result in results {
        if let Err((name, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("creating topic {name:?}: {code}");
            }
        }
    }
    Ok(())
}
