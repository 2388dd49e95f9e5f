//! Reading input: JSON lines of event values, or the records `rpk topic consume` prints (one per line,
//! or pretty-printed over several lines), told apart by the first line. Read as a stream, so memory stays
//! flat on inputs of any size.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Chain, Cursor, Read};
use std::rc::Rc;

use anyhow::Context;
use serde_json::Value;

use transform_host::producer::ProducerRecord;
use transform_host::wire::Header;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// Each line is one record value, byte for byte (malformed lines included).
    Values,
    /// JSON records as `rpk topic consume` prints them: topic, key, value, headers, timestamp, partition,
    /// offset; one per line or pretty-printed.
    Rpk,
}

/// Whether a first line starts what `rpk topic consume` prints.
pub fn detect_format(line: &[u8]) -> InputFormat {
    if line.trim_ascii() == b"{" {
        return InputFormat::Rpk; // the first line of a pretty-printed record
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(fields)) if ["topic", "partition", "offset"].iter().all(|f| fields.contains_key(*f)) => {
            InputFormat::Rpk
        }
        _ => InputFormat::Values,
    }
}

/// Counts the bytes read through it, for progress.
struct Counted<R> {
    inner: R,
    bytes: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

type RpkStream<R> = serde_json::StreamDeserializer<'static, serde_json::de::IoRead<Chain<Cursor<Vec<u8>>, R>>, Value>;

enum Source<R: BufRead> {
    Lines(R),
    Rpk(Box<RpkStream<R>>),
    Done,
}

/// Reads records from a stream.
pub struct RecordReader<R: Read> {
    source: Source<BufReader<Counted<R>>>,
    format: Option<InputFormat>,
    line: Vec<u8>,
    records: u64,
    bytes: Rc<Cell<u64>>,
}

impl<R: Read> RecordReader<R> {
    /// `format: None` detects it from the first non-blank line.
    pub fn new(reader: R, format: Option<InputFormat>) -> Self {
        let bytes = Rc::new(Cell::new(0));
        let reader = BufReader::with_capacity(1 << 16, Counted { inner: reader, bytes: bytes.clone() });
        RecordReader { source: Source::Lines(reader), format, line: Vec::new(), records: 0, bytes }
    }

    pub fn format(&self) -> Option<InputFormat> {
        self.format
    }

    /// Bytes of input consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.get()
    }

    /// The next record; blank lines between values are skipped.
    pub fn next_record(&mut self) -> anyhow::Result<Option<ProducerRecord>> {
        loop {
            match &mut self.source {
                Source::Done => return Ok(None),
                Source::Rpk(stream) => {
                    return match stream.next() {
                        None => Ok(None),
                        Some(parsed) => {
                            self.records += 1;
                            let record = parsed.map_err(anyhow::Error::from).and_then(|value| parse_rpk_record(&value));
                            record.map(Some).with_context(|| {
                                format!("input record {}: not a record as `rpk topic consume` prints it", self.records)
                            })
                        }
                    };
                }
                Source::Lines(reader) => {
                    self.line.clear();
                    if reader.read_until(b'\n', &mut self.line).context("reading the input")? == 0 {
                        return Ok(None);
                    }
                    if self.line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match *self.format.get_or_insert_with(|| detect_format(&self.line)) {
                        InputFormat::Values => {
                            while matches!(self.line.last(), Some(b'\n' | b'\r')) {
                                self.line.pop();
                            }
                            self.records += 1;
                            return Ok(Some(ProducerRecord { value: Some(self.line.clone()), ..Default::default() }));
                        }
                        InputFormat::Rpk => {
                            // Hand the rest, this line first, to a JSON stream reader.
                            let Source::Lines(reader) = std::mem::replace(&mut self.source, Source::Done) else {
                                unreachable!("matched above")
                            };
                            let rest = Cursor::new(std::mem::take(&mut self.line)).chain(reader);
                            self.source =
                                Source::Rpk(Box::new(serde_json::Deserializer::from_reader(rest).into_iter()));
                        }
                    }
                }
            }
        }
    }
}

fn parse_rpk_record(record: &Value) -> anyhow::Result<ProducerRecord> {
    let missing: Vec<&str> =
        ["topic", "partition", "offset"].into_iter().filter(|field| record.get(field).is_none()).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "it has no {} (is it a plain value among captured records?)",
        missing.join(", ")
    );
    let text = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match record.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_bytes().to_vec())),
            Some(other) => anyhow::bail!("{name} must be a string, not {other}"),
        }
    };
    let number = |name: &str| record.get(name).and_then(Value::as_i64);
    let headers = match record.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let key = item.get("key").and_then(Value::as_str).context("a header without a string key")?;
                let value = item.get("value").and_then(Value::as_str).map(|v| v.as_bytes().to_vec());
                Ok(Header { key: key.as_bytes().to_vec(), value })
            })
            .collect::<anyhow::Result<_>>()?,
        Some(other) => anyhow::bail!("headers must be an array, not {other}"),
    };
    let partition = number("partition").map(|p| u32::try_from(p).context("partition out of range")).transpose()?;
    Ok(ProducerRecord {
        key: text("key")?,
        value: text("value")?,
        headers,
        timestamp_ms: number("timestamp"),
        partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_byte_for_byte_and_skips_blank_lines() {
        let input = b"{\"a\":1}\r\n\n  \nnot json \xff\n".to_vec();
        let mut reader = RecordReader::new(&input[..], None);
        assert_eq!(reader.next_record().unwrap().unwrap().value.unwrap(), b"{\"a\":1}");
        assert_eq!(reader.next_record().unwrap().unwrap().value.unwrap(), b"not json \xff");
        assert!(reader.next_record().unwrap().is_none());
        assert_eq!(reader.format(), Some(InputFormat::Values));
        assert_eq!(reader.bytes_read(), input.len() as u64);
    }

    #[test]
    fn reads_what_rpk_topic_consume_prints() {
        let input = br#"{"topic":"clickstream","key":"user1","value":"{\"timestamp\":\"2020-11-16 22:59:59\"}","headers":[{"key":"h","value":"v"}],"timestamp":1605567599000,"partition":2,"offset":41}
{"topic":"clickstream","value":null,"timestamp":1605567599001,"partition":0,"offset":42}
"#;
        let mut reader = RecordReader::new(&input[..], None);
        let first = reader.next_record().unwrap().unwrap();
        assert_eq!(reader.format(), Some(InputFormat::Rpk));
        assert_eq!(first.key.as_deref(), Some(&b"user1"[..]));
        assert_eq!(first.value.as_deref(), Some(&br#"{"timestamp":"2020-11-16 22:59:59"}"#[..]));
        assert_eq!(first.headers, vec![Header { key: b"h".to_vec(), value: Some(b"v".to_vec()) }]);
        assert_eq!((first.timestamp_ms, first.partition), (Some(1_605_567_599_000), Some(2)));
        let second = reader.next_record().unwrap().unwrap();
        assert_eq!((second.key, second.value, second.partition), (None, None, Some(0)));
    }

    #[test]
    fn reads_pretty_printed_records() {
        let input = b"{\n  \"topic\": \"t\",\n  \"value\": \"a\",\n  \"partition\": 1,\n  \"offset\": 0\n}\n{\n  \"topic\": \"t\", \"value\": \"b\", \"partition\": 0, \"offset\": 1\n}\n";
        let mut reader = RecordReader::new(&input[..], None);
        let first = reader.next_record().unwrap().unwrap();
        assert_eq!((first.value.as_deref(), first.partition), (Some(&b"a"[..]), Some(1)));
        assert_eq!(reader.next_record().unwrap().unwrap().value.as_deref(), Some(&b"b"[..]));
        assert!(reader.next_record().unwrap().is_none());
        assert_eq!(reader.format(), Some(InputFormat::Rpk));
    }

    /// Regression (plain_value_in_rpk_input_was_silent): a line holding a plain value among captured
    /// records became a record with no key and no value.
    #[test]
    fn a_plain_value_among_rpk_records_is_an_error() {
        let input = b"{\"topic\":\"t\",\"partition\":0,\"offset\":0,\"value\":\"v\"}\n{\"timestamp\":\"2020-11-16 19:00:00\",\"user_id\":\"u\"}\n";
        let mut reader = RecordReader::new(&input[..], None);
        reader.next_record().unwrap();
        let error = format!("{:#}", reader.next_record().unwrap_err());
        assert!(error.contains("input record 2") && error.contains("no topic, partition, offset"), "{error}");
    }

    #[test]
    fn a_broken_rpk_record_names_its_number() {
        let input = b"{\"topic\":\"t\",\"partition\":0,\"offset\":0,\"value\":\"v\"}\n{\"topic\":\"t\",\"partition\":-1,\"offset\":1}\n";
        let mut reader = RecordReader::new(&input[..], None);
        reader.next_record().unwrap();
        let error = reader.next_record().unwrap_err();
        assert!(format!("{error:#}").contains("input record 2"), "{error:#}");
    }
}
