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
/// value, headers).
#[derive(Debug, Default)]
pub struct RecordBatch {
    records: Vec<u8>,
    count: i64,
}

impl RecordBatch {
    pub fn push(&mut self, payload: &[u8]) {
        let mut prefix = Vec::with_capacity(8);
        prefix.push(0); // attributes
        put_varint(&mut prefix, 0); // timestamp delta
        put_varint(&mut prefix, self.count); // offset delta
        put_varint(&mut self.records, (prefix.len() + payload.len()) as i64);
        self.records.extend_from_slice(&prefix);
        self.records.extend_from_slice(payload);
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
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// The batch's size as stored: the header and the records, compressed whole. The codecs are Kafka's
    /// (gzip, xerial-framed snappy, the LZ4 frame format, a zstd frame) at their default levels.
    pub fn stored_bytes(&self, compression: Compression) -> usize {
        BATCH_HEADER_BYTES
            + match compression {
                Compression::None => self.records.len(),
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
        self.count = 0;
    }
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
        let mut batch = RecordBatch::default();
        batch.push(&payload);
        // length 1, attributes 1, timestamp delta 1, offset delta 1.
        assert_eq!(batch.raw_bytes(), BATCH_HEADER_BYTES + 4 + 13);
        for _ in 1..100 {
            batch.push(&payload);
        }
        // Offset deltas from 64 on take two bytes (zigzag).
        assert_eq!(batch.raw_bytes(), BATCH_HEADER_BYTES + 100 * 17 + 36);
        assert_eq!(batch.stored_bytes(Compression::None), batch.raw_bytes());
    }

    #[test]
    fn repetitive_records_compress_with_every_codec() {
        let payload = vec![b'a'; 1_000];
        let mut batch = RecordBatch::default();
        for _ in 0..100 {
            batch.push(&encode_payload(&Payload { key: None, value: Some(payload.clone()), headers: vec![] }));
        }
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let stored = batch.stored_bytes(compression);
            assert!(stored < batch.raw_bytes() / 10, "{compression:?}: {stored} of {}", batch.raw_bytes());
        }
    }
}
