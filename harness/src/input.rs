//! Reading input: JSON lines of event values, or the JSON lines `rpk topic consume` prints, told apart
//! by the first line. Read one line at a time, so memory stays flat on inputs of any size.

use std::io::BufRead;

use anyhow::Context;
use serde_json::Value;

use crate::pipeline::ProducerRecord;
use crate::wire::Header;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Each line is one record value, byte for byte (malformed lines included).
    Values,
    /// Each line is a record as `rpk topic consume` prints it: topic, key, value, headers, timestamp,
    /// partition, offset.
    Rpk,
}

/// Whether a line looks like one of `rpk topic consume`'s records.
pub fn detect_format(line: &[u8]) -> InputFormat {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(fields)) if ["topic", "partition", "offset"].iter().all(|f| fields.contains_key(*f)) => {
            InputFormat::Rpk
        }
        _ => InputFormat::Values,
    }
}

/// Reads records from `reader`, counting the bytes read for progress.
pub struct RecordReader<R> {
    reader: R,
    format: Option<InputFormat>,
    line: Vec<u8>,
    line_number: u64,
    pub bytes_read: u64,
}

impl<R: BufRead> RecordReader<R> {
    /// `format: None` detects it from the first non-empty line.
    pub fn new(reader: R, format: Option<InputFormat>) -> Self {
        RecordReader { reader, format, line: Vec::new(), line_number: 0, bytes_read: 0 }
    }

    pub fn format(&self) -> Option<InputFormat> {
        self.format
    }

    /// The next record; blank lines are skipped.
    pub fn next_record(&mut self) -> anyhow::Result<Option<ProducerRecord>> {
        loop {
            self.line.clear();
            let read = self.reader.read_until(b'\n', &mut self.line).context("reading the input")?;
            if read == 0 {
                return Ok(None);
            }
            self.bytes_read += read as u64;
            self.line_number += 1;
            while matches!(self.line.last(), Some(b'\n' | b'\r')) {
                self.line.pop();
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let format = *self.format.get_or_insert_with(|| detect_format(&self.line));
            return match format {
                InputFormat::Values => Ok(Some(ProducerRecord { value: Some(self.line.clone()), ..Default::default() })),
                InputFormat::Rpk => parse_rpk_record(&self.line)
                    .map(Some)
                    .with_context(|| format!("input line {}: not a record as `rpk topic consume` prints it", self.line_number)),
            };
        }
    }
}

fn parse_rpk_record(line: &[u8]) -> anyhow::Result<ProducerRecord> {
    let record: Value = serde_json::from_slice(line)?;
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
    Ok(ProducerRecord { key: text("key")?, value: text("value")?, headers, timestamp_ms: number("timestamp"), partition })
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
        assert_eq!(reader.bytes_read, input.len() as u64);
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
    fn a_broken_rpk_line_names_its_line_number() {
        let input = b"{\"topic\":\"t\",\"partition\":0,\"offset\":0,\"value\":\"v\"}\n{\"topic\":\"t\",\"partition\":-1,\"offset\":1}\n";
        let mut reader = RecordReader::new(&input[..], None);
        reader.next_record().unwrap();
        let error = reader.next_record().unwrap_err();
        assert!(format!("{error:#}").contains("input line 2"), "{error:#}");
    }
}
