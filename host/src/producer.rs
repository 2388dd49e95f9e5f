//! The producer model: what a Kafka producer (the seed's) does before the broker sees a record. It keys
//! records by a value field, partitions them as the default partitioner does, stamps them with a record
//! time, sends heartbeats to every partition, and batches per partition by `batch.size` and `linger.ms`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::BatchRecord;
use crate::top_fields::TopFields;
pub use crate::top_fields::{top_texts, Scalar};
use crate::wire::{encode_payload, Header, Payload};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordTime {
    /// A producer sending events as they happen: its clock follows the events' own times, but one event
    /// claiming to be more than an hour ahead does not move it.
    Live,
    /// The harness's wall clock: a producer replaying old events now.
    Wall,
    /// Each event's own time, as a producer that stamps records with event time.
    Event,
}

/// Where a record's event time is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeField {
    /// A top-level member of the JSON value.
    Member(String),
    /// The record's own timestamp (what Kafka Streams uses by default); a heartbeat is then the empty object.
    RecordTimestamp,
}

impl TimeField {
    /// The member's name, if event time is in one.
    pub fn member(&self) -> Option<&str> {
        match self {
            TimeField::Member(name) => Some(name),
            TimeField::RecordTimestamp => None,
        }
    }
}

impl From<&str> for TimeField {
    fn from(name: &str) -> TimeField {
        TimeField::Member(name.to_string())
    }
}

/// How event times are read from, and heartbeats written into, the time field: the transform's own rules.
pub trait EventTime: Debug + Send + Sync {
    /// Milliseconds since the epoch of a time field's value, if the transform would read it as a time.
    fn read(&self, time: &Scalar<'_>) -> Option<i64>;
    /// The time field's value for `at_ms`; `as_number`: the last time read was a JSON number.
    fn write(&self, at_ms: i64, as_number: bool) -> serde_json::Value;
    /// The latest time the transform accepts.
    fn max_ms(&self) -> i64;
}

/// The host's default: event times are JSON integers of epoch milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochMillis;

impl EventTime for EpochMillis {
    fn read(&self, time: &Scalar<'_>) -> Option<i64> {
        match time {
            Scalar::Number(number) => number.as_i64(),
            _ => None,
        }
    }

    fn write(&self, at_ms: i64, _as_number: bool) -> serde_json::Value {
        serde_json::json!(at_ms)
    }

    fn max_ms(&self) -> i64 {
        i64::MAX
    }
}

/// How the producer behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `batch.size`.
    pub batch_bytes: usize,
    /// `linger.ms`, on record time.
    pub linger_ms: i64,
    /// The value field whose text is the record key.
    pub key_field: Option<String>,
    /// Where event time is (for record timestamps and heartbeats).
    pub time_field: TimeField,
    pub event_time: Arc<dyn EventTime>,
    pub record_time: RecordTime,
    /// How far ahead of the producer's clock an event time is believed (a transform that refuses events
    /// further ahead than its own limit passes that).
    pub plausible_ahead_ms: i64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes: 16_384,
            linger_ms: 5,
            key_field: None,
            time_field: "timestamp".into(),
            event_time: Arc::new(EpochMillis),
            record_time: RecordTime::Live,
            plausible_ahead_ms: 3_600_000,
        }
    }
}

/// Totals of the producer.
#[derive(Debug, Clone, Default)]
pub struct ProducerStats {
    pub records_in: u64,
    pub batches: u64,
    /// The latest believable event time of a JSON object value (its record's timestamp with
    /// [`TimeField::RecordTimestamp`]).
    pub max_event_ms: Option<i64>,
    /// The latest record timestamp produced.
    pub max_record_ms: Option<i64>,
}

/// A batch the producer sends: its partition and records (offsets are the broker's to give).
#[derive(Debug)]
pub struct SentBatch {
    pub partition: u32,
    pub records: Vec<BatchRecord>,
}

#[derive(Default)]
struct OpenBatch {
    records: Vec<BatchRecord>,
    bytes: usize,
    /// When its first record was produced (a count of records), so older batches are sent first.
    first_sent: u64,
}

pub struct Producer {
    config: ProducerConfig,
    open: Vec<OpenBatch>,
    clock_ms: Option<i64>,
    round_robin: u32,
    /// Whether the latest event time read was a JSON number (heartbeats use the same form).
    time_as_number: bool,
    pub stats: ProducerStats,
}

impl Producer {
    pub fn new(config: ProducerConfig, partitions: u32) -> Producer {
        Producer {
            config,
            open: (0..partitions.max(1)).map(|_| OpenBatch::default()).collect(),
            clock_ms: None,
            round_robin: 0,
            time_as_number: false,
            stats: ProducerStats::default(),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.open.len() as u32
    }

    /// Produces one record: it is keyed, partitioned, timestamped and batched; batches that fill up or
    /// have lingered long enough are put in `sent`. Heartbeats (an object holding only the time field, or
    /// `{}` when event time is the record's) go to every partition.
    pub fn send(&mut self, mut record: ProducerRecord, sent: &mut Vec<SentBatch>) {
        self.stats.records_in += 1;
        let fields = record.value.as_deref().and_then(|value| {
            TopFields::read(value, self.config.time_field.member(), self.config.key_field.as_deref())
        });
        let time = fields.as_ref().and_then(|f| f.time.as_ref());
        let field_ms = time.and_then(|time| self.config.event_time.read(time));
        if field_ms.is_some() {
            self.time_as_number = matches!(time, Some(Scalar::Number(_)));
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(|| self.producer_time(field_ms));
        let event_ms = match self.config.time_field {
            TimeField::Member(_) => field_ms,
            TimeField::RecordTimestamp => fields.as_ref().map(|_| timestamp_ms),
        };
        // Only events a transform would believe (at most an hour ahead of their record) count here.
        if let Some(event_ms) =
            event_ms.filter(|event_ms| *event_ms <= timestamp_ms.saturating_add(self.config.plausible_ahead_ms))
        {
            self.stats.max_event_ms = Some(self.stats.max_event_ms.map_or(event_ms, |max| max.max(event_ms)));
        }
        if record.key.is_none() {
            record.key = fields.as_ref().and_then(|f| f.key.as_ref()).map(|key| key.as_bytes().to_vec());
        }
        let is_heartbeat = fields.as_ref().is_some_and(|f| f.others == 0 && event_ms.is_some());
        drop(fields);
        let (first, last) = match record.partition {
            Some(partition) => (partition, partition),
            None if is_heartbeat => (0, self.partition_count() - 1),
            None => {
                let partition = self.partition_for(record.key.as_deref());
                (partition, partition)
            }
        };
        let payload = encode_payload(&Payload { key: record.key, value: record.value, headers: record.headers });
        for partition in first..last {
            self.append(partition, timestamp_ms, payload.clone(), sent);
        }
        self.append(last, timestamp_ms, payload, sent);
    }

    /// Sends every open batch, the oldest first, as a producer does.
    pub fn flush(&mut self, sent: &mut Vec<SentBatch>) {
        self.seal_oldest_first(|_| true, sent);
    }

    /// Sends the open batch of one partition.
    pub fn flush_partition(&mut self, partition: u32, sent: &mut Vec<SentBatch>) {
        self.seal(partition, sent);
    }

    /// A heartbeat value at `at_ms`: its time in the form the transform reads (see [`EventTime::write`]),
    /// or `{}` when event time is the record's (stamp it `at_ms` too).
    pub fn heartbeat(&self, at_ms: i64) -> Vec<u8> {
        match &self.config.time_field {
            TimeField::Member(name) => {
                let time = self.config.event_time.write(at_ms, self.time_as_number);
                serde_json::json!({ name.as_str(): time }).to_string().into_bytes()
            }
            TimeField::RecordTimestamp => b"{}".to_vec(),
        }
    }

    /// The latest time a heartbeat may carry.
    pub fn max_event_ms(&self) -> i64 {
        self.config.event_time.max_ms()
    }

    fn producer_time(&mut self, event_ms: Option<i64>) -> i64 {
        let wall = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let clock = match (self.config.record_time, event_ms, self.clock_ms) {
            (RecordTime::Wall, _, _) => wall(),
            (RecordTime::Event, Some(event), _) => event,
            (RecordTime::Live, Some(event), Some(clock))
                if event <= clock.saturating_add(self.config.plausible_ahead_ms) =>
            {
                clock.max(event)
            }
            (RecordTime::Live, Some(event), None) => event,
            (_, _, Some(clock)) => clock,
            (_, _, None) => wall(),
        };
        self.clock_ms = Some(clock);
        clock
    }

    /// Kafka's default partitioner: murmur2 of the key; records without a key go round-robin.
    fn partition_for(&mut self, key: Option<&[u8]>) -> u32 {
        let count = self.partition_count();
        match key {
            Some(key) => (murmur2(key) & 0x7fff_ffff) % count,
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.round_robin % count
            }
        }
    }

    fn append(&mut self, partition: u32, timestamp_ms: i64, payload: Vec<u8>, sent: &mut Vec<SentBatch>) {
        self.stats.max_record_ms = Some(self.stats.max_record_ms.map_or(timestamp_ms, |max| max.max(timestamp_ms)));
        while self.open.len() <= partition as usize {
            self.open.push(OpenBatch::default());
        }
        // The producer's linger runs on its clock for every partition: a batch goes out once it has waited
        // long enough, not when its partition gets the next record (which may come much later).
        let linger_ms = self.config.linger_ms;
        self.seal_oldest_first(|first| timestamp_ms.saturating_sub(first.timestamp_ms) >= linger_ms, sent);
        let open = &self.open[partition as usize];
        if open.bytes + payload.len() > self.config.batch_bytes && !open.records.is_empty() {
            self.seal(partition, sent);
        }
        let open = &mut self.open[partition as usize];
        if open.records.is_empty() {
            open.first_sent = self.stats.records_in;
        }
        open.bytes += payload.len();
        open.records.push(BatchRecord { offset: 0, timestamp_ms, payload });
    }

    /// Sends the open batches whose first record passes `due`, in the order their first records were
    /// produced: on a shared VM, a newer batch sent first would make the older batches' events late.
    fn seal_oldest_first(&mut self, due: impl Fn(&BatchRecord) -> bool, sent: &mut Vec<SentBatch>) {
        let mut partitions: Vec<u32> = (0..self.partition_count())
            .filter(|&partition| self.open[partition as usize].records.first().is_some_and(&due))
            .collect();
        partitions.sort_by_key(|&partition| self.open[partition as usize].first_sent);
        for partition in partitions {
            self.seal(partition, sent);
        }
    }

    fn seal(&mut self, partition: u32, sent: &mut Vec<SentBatch>) {
        let open = std::mem::take(&mut self.open[partition as usize]);
        if !open.records.is_empty() {
            self.stats.batches += 1;
            sent.push(SentBatch { partition, records: open.records });
        }
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

    fn producer(time_field: TimeField, partitions: u32) -> Producer {
        let config = ProducerConfig { time_field, record_time: RecordTime::Event, ..ProducerConfig::default() };
        Producer::new(config, partitions)
    }

    fn send(producer: &mut Producer, value: &str, partition: Option<u32>, sent: &mut Vec<SentBatch>) {
        let record = ProducerRecord {
            value: Some(value.as_bytes().to_vec()),
            timestamp_ms: Some(1_000),
            partition,
            ..Default::default()
        };
        producer.send(record, sent);
    }

    /// Regression (end_of_input_sealed_in_partition_order): a newer batch of partition 0 went out before
    /// older ones of partitions 1 and 2, so on a shared VM their events came after its later ones.
    #[test]
    fn flush_sends_the_open_batches_oldest_first() {
        let mut producer = producer("t".into(), 3);
        let mut sent = Vec::new();
        for partition in [1, 2, 0, 1] {
            send(&mut producer, r#"{"t":1000,"x":1}"#, Some(partition), &mut sent);
        }
        assert!(sent.is_empty(), "nothing lingered yet");
        producer.flush(&mut sent);
        let order: Vec<(u32, usize)> = sent.iter().map(|batch| (batch.partition, batch.records.len())).collect();
        assert_eq!(order, [(1, 2), (2, 1), (0, 1)]);
    }

    /// Regression (record_time_closed_nothing): with event time in the record's timestamp, no event time
    /// was known, so no closing heartbeat was sent; `{}` is that transform's heartbeat.
    #[test]
    fn with_record_timestamps_the_heartbeat_is_the_empty_object_sent_to_every_partition() {
        let mut producer = producer(TimeField::RecordTimestamp, 3);
        let mut sent = Vec::new();
        send(&mut producer, r#"{"k":"u"}"#, None, &mut sent);
        send(&mut producer, "not json", None, &mut sent);
        assert_eq!(producer.stats.max_event_ms, Some(1_000), "an object's record timestamp is its event time");
        assert_eq!(producer.heartbeat(5_000), b"{}");
        producer.flush(&mut sent);
        sent.clear();
        send(&mut producer, "{}", None, &mut sent);
        producer.flush(&mut sent);
        assert_eq!(sent.len(), 3, "a heartbeat goes to every partition");
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
