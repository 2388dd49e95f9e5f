//! The Redpanda adapter: reads the configuration, then hands every record to the [`Aggregator`] and
//! writes what it produces with the SDK. All logic lives in the library.

#[cfg(target_os = "wasi")]
fn main() {
    module::run()
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!(
        "clickstream-aggregation is a Redpanda data transform: build it with `make build` \
         (cargo build --release --target wasm32-wasip1) and deploy it with `rpk transform deploy`, \
         or replay events through it with the harness (`make demo`)."
    );
    std::process::exit(2);
}

#[cfg(target_os = "wasi")]
mod module {
    use std::cell::RefCell;
    use std::io::Write;
    use std::time::UNIX_EPOCH;

    use clickstream_aggregation::aggregator::{Aggregator, Output};
    use clickstream_aggregation::config::Config;
    use clickstream_aggregation::dead_letter::{Reason, DETAIL_HEADER, OMITTED_VALUE_HEADER, REASON_HEADER};
    use clickstream_aggregation::row_format::{EARLY_HEADER, INCOMPLETE_HEADER};
    use redpanda_transform_sdk::{
        on_record_written, BorrowedHeader, BorrowedRecord, RecordWriter, WriteEvent, WriteOptions, WrittenRecord,
    };

    pub fn run() {
        let config = match Config::from_env(|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(error) => {
                log_line(&format!("clickstream-aggregation cannot start: {error}"));
                std::process::exit(1);
            }
        };
        let aggregator = Aggregator::new(config);
        log_line(&aggregator.describe());
        let aggregator = RefCell::new(aggregator);
        on_record_written(|event: WriteEvent<'_>, writer: &mut RecordWriter<'_>| {
            let record = &event.record;
            // Record timestamps are milliseconds since the epoch; the SDK rejects earlier ones itself.
            let record_ms = record.timestamp().duration_since(UNIX_EPOCH).map_or(0, |age| age.as_millis() as i64);
            let mut output = SdkOutput { record, writer, failed_writes: 0 };
            let mut aggregator = aggregator.borrow_mut();
            aggregator.on_record(record.value(), record_ms, &mut output);
            if output.failed_writes > 0 {
                log_line(&format!(
                    "{} writes were refused by the broker while handling one record",
                    output.failed_writes
                ));
            }
            // Never return an error: the SDK would turn it into a trap, and the broker would retry forever.
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// One `fd_write` per line: the broker turns each write into one log event.
    fn log_line(line: &str) {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        let _ = std::io::stderr().write_all(text.as_bytes());
    }

    struct SdkOutput<'a, 'w> {
        record: &'a WrittenRecord<'a>,
        writer: &'a mut RecordWriter<'w>,
        failed_writes: u32,
    }

    impl Output for SdkOutput<'_, '_> {
        fn row(&mut self, key: &[u8], value: &[u8], incomplete: bool, early: bool) {
            let marks = [(INCOMPLETE_HEADER, incomplete), (EARLY_HEADER, early)];
            let headers: Vec<BorrowedHeader> = marks
                .iter()
                .filter(|(_, on)| *on)
                .map(|(name, _)| BorrowedHeader::new(name.as_bytes(), Some(b"true")))
                .collect();
            if self.writer.write(BorrowedRecord::new_with_headers(Some(key), Some(value), headers)).is_err() {
                self.failed_writes += 1;
            }
        }

        fn dead_letter(&mut self, topic: &str, reason: Reason, detail: &str, keep_value: bool) {
            let mut headers = self.record.headers().to_vec();
            headers.push(BorrowedHeader::new(REASON_HEADER.as_bytes(), Some(reason.name().as_bytes())));
            headers.push(BorrowedHeader::new(DETAIL_HEADER.as_bytes(), Some(detail.as_bytes())));
            let omitted = (!keep_value).then(|| self.record.value().map_or(0, <[u8]>::len).to_string());
            if let Some(bytes) = &omitted {
                headers.push(BorrowedHeader::new(OMITTED_VALUE_HEADER.as_bytes(), Some(bytes.as_bytes())));
            }
            let value = if keep_value { self.record.value() } else { None };
            let copy = BorrowedRecord::new_with_headers(self.record.key(), value, headers);
            if self.writer.write_with_options(copy, WriteOptions::to_topic(topic)).is_err() {
                self.failed_writes += 1;
            }
        }

        fn log(&mut self, line: &str) {
            log_line(line);
        }
    }
}
