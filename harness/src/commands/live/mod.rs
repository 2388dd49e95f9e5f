//! Commands against a live Kafka-protocol broker (Redpanda, Apache Kafka, tansu), through librdkafka
//! (the `rdkafka` crate): the seed's producer, a consumer of the results, the module run as the broker
//! runs it, and a deploy through Redpanda's admin API.
//!
//! librdkafka is the client every Kafka-compatible broker is tested against, handles the group protocol
//! and rebalances, and is what Redpanda's own tools use; the bundled build needs only a C compiler.

pub(crate) mod consume;
pub(crate) mod deploy;
pub(crate) mod produce;
pub(crate) mod run;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// How long to wait for metadata and commits.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the brokers at `brokers` (HOST:PORT, comma-separated).
pub(crate) fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "harness")
        // While a broker is away librdkafka tries it again, and times records out, only this often (its
        // default, 10 s, would delay both: the end of an outage, and `--give-up-after`).
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// The partition count of `topic`, `None` when it does not exist.
pub(crate) fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> anyhow::Result<Option<u32>> {
    let metadata = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading the metadata of topic {topic:?} (is a broker running there?)"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    match found.error() {
        None if !found.partitions().is_empty() => Ok(Some(found.partitions().len() as u32)),
        None => Ok(None),
        Some(error) if RDKafkaErrorCode::from(error) == RDKafkaErrorCode::UnknownTopicOrPartition => Ok(None),
        Some(error) => bail!("topic {topic:?}: {}", RDKafkaErrorCode::from(error)),
    }
}

/// Whether the broker has `topic` now (an error while it cannot be reached). librdkafka 2.12 crashes on
/// tansu's answer to a fetch from a topic it does not have (one lost in a restart: a CurrentLeader tag
/// under a zero topic id), so the consumers pause fetching at the first sign of an outage until the
/// broker answers with the topic.
pub(crate) fn topic_exists<C: ClientContext>(client: &Client<C>, topic: &str) -> rdkafka::error::KafkaResult<bool> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(1))?;
    Ok(metadata
        .topics()
        .iter()
        .any(|found| found.name() == topic && found.error().is_none() && !found.partitions().is_empty()))
}

/// Set once Ctrl-C is pressed: the long-running commands stop cleanly.
pub(crate) fn stop_requested() -> Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        if let Err(error) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
            stderrln!("harness: warning: Ctrl-C will not stop cleanly: {error}");
        }
        stop
    })
    .clone()
}

/// Counts the broker's acknowledgements of produced records, and keeps the first failure.
#[derive(Default)]
pub(crate) struct Deliveries {
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
    /// The first record that timed out (`--give-up-after`): the broker has not answered for that long.
    timed_out: Mutex<Option<String>>,
    /// Where no other part of the command watches the broker (`produce`), the producer reports an outage:
    /// it begins with librdkafka's first error and ends with the next acknowledgement.
    outage: Option<Mutex<Outage>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(outage) = &self.outage {
            // The limit is the records' delivery timeout: a record that runs out of it fails.
            let _ = outage.lock().expect("never poisoned").failed(format_args!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(outage) = &self.outage {
                    outage.lock().expect("never poisoned").ended();
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().expect("never poisoned").get_or_insert_with(|| error.to_string());
                if *error == KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) {
                    self.timed_out.lock().expect("never poisoned").get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

impl Deliveries {
    /// Deliveries that report an outage of the broker themselves (see `outage`).
    pub(crate) fn reporting_outages(give_up: Duration) -> Deliveries {
        Deliveries { outage: Some(Mutex::new(Outage::new(give_up))), ..Deliveries::default() }
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.first_error.lock().expect("never poisoned").clone()
    }

    /// The reason of the first record that ran out of its delivery timeout, if one did.
    pub(crate) fn timed_out(&self) -> Option<String> {
        self.timed_out.lock().expect("never poisoned").clone()
    }
}

/// A producer that reports each delivery to `deliveries`; `acks=all`, as the seed's producer and the
/// broker's writes. librdkafka retries a record until `delivery_timeout` runs out (through an outage, say).
pub(crate) fn producer(
    brokers: &str,
    delivery_timeout: Duration,
    deliveries: Deliveries,
) -> anyhow::Result<BaseProducer<Deliveries>> {
    client_config(brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
        .create_with_context(deliveries)
        .context("creating the Kafka producer")
}

/// Sends one record, waiting while librdkafka's queue is full.
pub(crate) fn send(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    partition: i32,
    timestamp_ms: Option<i64>,
    payload: &transform_host::wire::Payload,
) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    for header in &payload.headers {
        let key = String::from_utf8_lossy(&header.key);
        headers = headers.insert(Header { key: &key, value: header.value.as_deref() });
    }
    loop {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).partition(partition).headers(headers.clone());
        if let Some(key) = payload.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = payload.value.as_deref() {
            record = record.payload(value);
        }
        if let Some(ms) = timestamp_ms {
            record = record.timestamp(ms);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((error, _)) => bail!("producing to {topic}/{partition}: {error}"),
        }
    }
}

/// Waits until every record sent is acknowledged or has failed (librdkafka fails a record once its
/// delivery timeout, the producer's `--give-up-after`, runs out).
pub(crate) fn flush(producer: &BaseProducer<Deliveries>) -> anyhow::Result<()> {
    producer.flush(rdkafka::util::Timeout::Never).context("waiting for the broker to acknowledge the records sent")
}

/// How long the live commands ride out a broker they cannot reach (a restart, a network cut).
#[derive(clap::Args)]
pub(crate) struct OutageArgs {
    /// Give up once the broker has not answered for this long (records not yet acknowledged then fail).
    #[arg(long, default_value = "5m", value_parser = crate::flags::duration)]
    pub(crate) give_up_after: i64,
}

impl OutageArgs {
    pub(crate) fn limit(&self) -> Duration {
        Duration::from_millis(self.give_up_after as u64)
    }
}

/// A broker that cannot be reached, for the commands that ride it out: reported once when it begins and
/// once when it ends (librdkafka reconnects meanwhile); past `give_up` the command stops with the reason.
pub(crate) struct Outage {
    since: Option<std::time::Instant>,
    give_up: Duration,
}

impl Outage {
    pub(crate) fn new(give_up: Duration) -> Outage {
        Outage { since: None, give_up }
    }

    /// A call to the broker failed with `error`: an error once the outage has lasted `give_up`.
    pub(crate) fn failed(&mut self, error: impl std::fmt::Display) -> anyhow::Result<()> {
        let since = *self.since.get_or_insert_with(|| {
            stderrln!(
                "harness: the broker cannot be reached ({error}); reconnecting, for up to {} s (--give-up-after)",
                self.give_up.as_secs()
            );
            std::time::Instant::now()
        });
        if since.elapsed() > self.give_up {
            bail!("the broker could not be reached for {} s: {error}", self.give_up.as_secs());
        }
        Ok(())
    }

    /// A call to the broker succeeded.
    pub(crate) fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            stderrln!("harness: the broker answers again, after {:.1} s", since.elapsed().as_secs_f64());
        }
    }
}
