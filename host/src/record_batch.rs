//! Output records as the broker stores them: each write of a producer loop is one Kafka v2 record batch,
//! compressed as the transform was deployed (`rpk transform deploy --compression`), and refused whole when
//! it is larger than the output topic's `max.message.bytes` (`src/v/transform/transform_processor.cc`
//! `run_producer_loop`, `model::transformed_data::make_batch`).

use std::io::Write;

use crate::wire::put_varint;

/// A v2 record batch's header: base offset, length, leader epoch, magic, CRC, attributes, last offset
/// delta, first and max timestamps, producer id, producer epoch, base sequence, record count.
pub const BATCH_HEADER_BYTES: usize = 61;

/// `rpk transform deploy --compression`: how the broker compresses the transform's output batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The records of one batch in their stored form: for each, its length, attributes, timestamp delta (0: the
/// broker stamps a whole write with one time), offset delta, then the payload as it crossed the ABI (key,
/// value, headers). Only a batch to compress keeps the bytes; an uncompressed one needs only their length.
#[derive(Debug)]
pub struct RecordBatch {
    compression: Compression,
    records: Vec<u8>,
    records_len: usize,
    count: i64,
}

impl RecordBatch {
    pub fn new(compression: Compression) -> RecordBatch {
        RecordBatch { compression, records: Vec::new(), records_len: 0, count: 0 }
    }

    pub fn push(&mut self, payload: &[u8]) {
        // Attributes (0) and the timestamp delta (0) take a byte each.
        let body = 2 + varint_len(self.count) + payload.len();
        self.records_len += varint_len(body as i64) + body;
        if self.compression != Compression::None {
            put_varint(&mut self.records, body as i64);
            self.records.extend_from_slice(&[0, 0]);
            put_varint(&mut self.records, self.count);
            self.records.extend_from_slice(payload);
        }
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// The batch's size uncompressed: the header and the records.
    pub fn raw_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records_len
    }

    /// The batch's size as stored: the header and the records, compressed whole. The codecs are Kafka's
    /// (gzip, xerial-framed snappy, the LZ4 frame format, a zstd frame) at their default levels.
    pub fn stored_bytes(&self) -> usize {
        BATCH_HEADER_BYTES
            + match self.compression {
                Compression::None => self.records_len,
                Compression::Gzip => {
                    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    encoder.write_all(&self.records).expect("writing to memory");
                    encoder.finish().expect("writing to memory").len()
                }
                Compression::Snappy => xerial_snappy_bytes(&self.records),
                Compression::Lz4 => {
                    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                    encoder.write_all(&self.records).expect("writing to memory");
                    encoder.finish().expect("writing to memory").len()
                }
                Compression::Zstd => zstd::bulk::compress(&self.records, 0).expect("compressing in memory").len(),
            }
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.records_len = 0;
        self.count = 0;
    }

    /// Why the output topic `topic` refuses this batch (`local_service::produce`: larger as stored than the
    /// topic's `max.message.bytes`), or `None` when it fits.
    pub fn refusal(&self, topic: &str, batch_max_bytes: usize) -> Option<String> {
        let (raw, stored) = (self.raw_bytes(), self.stored_bytes());
        (stored > batch_max_bytes).then(|| self.refusal_reason(topic, raw, stored, batch_max_bytes))
    }

    /// The broker's refusal of this batch, sized `raw` and `stored` bytes, over `batch_max_bytes`.
    pub fn refusal_reason(&self, topic: &str, raw: usize, stored: usize, batch_max_bytes: usize) -> String {
        format!(
            "the output topic {topic} refuses a batch of {} records, {stored} bytes as stored ({raw} uncompressed, \
             compression {}), over its limit of {batch_max_bytes} bytes (max.message.bytes): the processor \
             fails and reads again from its last commit",
            self.len(),
            self.compression.name()
        )
    }
}

/// Bytes of a zigzag varint.
fn varint_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    (64 - zigzag.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Snappy as Kafka's Java clients and Redpanda frame it (xerial): a 16-byte header, then blocks of at most
/// 32 KiB, each compressed alone behind its 4-byte length.
fn xerial_snappy_bytes(bytes: &[u8]) -> usize {
    const BLOCK: usize = 32 << 10;
    let mut encoder = snap::raw::Encoder::new();
    16 + bytes
        .chunks(BLOCK)
        .map(|block| 4 + encoder.compress_vec(block).expect("snappy takes any block").len())
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_payload, Header, Payload};

    #[test]
    fn a_batch_is_the_header_and_each_record_framed() {
        let payload = encode_payload(&Payload {
            key: Some(b"k".to_vec()),
            value: Some(b"value".to_vec()),
            headers: vec![Header { key: b"h".to_vec(), value: Some(b"v".to_vec()) }],
        });
        // key: length 1 + 1; value: length 1 + 5; headers: count 1, key 1 + 1, value 1 + 1.
        assert_eq!(payload.len(), 13);
        let mut batch = RecordBatch::new(Compression::None);
        batch.push(&payload);
        // length 1, attributes 1, timestamp delta 1, offset delta 1.
        assert_eq!(batch.raw_bytes(), BATCH_HEADER_BYTES + 4 + 13);
        for _ in 1..100 {
            batch.push(&payload);
        }
        // Offset deltas from 64 on take two bytes (zigzag).
        assert_eq!(batch.raw_bytes(), BATCH_HEADER_BYTES + 100 * 17 + 36);
        assert_eq!(batch.stored_bytes(), batch.raw_bytes());
        let mut kept = RecordBatch::new(Compression::Gzip);
        (0..100).for_each(|_| kept.push(&payload));
        assert_eq!(kept.raw_bytes(), BATCH_HEADER_BYTES + kept.records.len(), "the length counted is the bytes kept");
    }

    #[test]
    fn repetitive_records_compress_with_every_codec() {
        let payload = encode_payload(&Payload { key: None, value: Some(vec![b'a'; 1_000]), headers: vec![] });
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut batch = RecordBatch::new(compression);
            (0..100).for_each(|_| batch.push(&payload));
            let stored = batch.stored_bytes();
            assert!(stored < batch.raw_bytes() / 10, "{compression:?}: {stored} of {}", batch.raw_bytes());
        }
    }
}
