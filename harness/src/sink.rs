//! Where a replay's outputs go: the first output topic's rows, the other topics' records, the module's
//! log lines, and the summary printed at the end; and the output files of `replay` and `generate`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clickstream_aggregation::dead_letter::{DETAIL_HEADER, REASON_HEADER};
use harness::report::TopGroups;
use transform_host::broker::{Move, OutputRecord, OutputSink, Restart};
use transform_host::logs::LogLine;
use transform_host::pipeline::RunStats;
use transform_host::wire::PayloadView;

use crate::flags::OutputFormat;

/// A buffered writer to `path`, or to stdout without one.
pub fn create(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}

impl FileSink {
    fn write(&mut self, record: &OutputRecord<'_>) -> std::io::Result<()> {
        if record.topic_index == 0 {
            if let (Some(top), Some(value)) = (&mut self.top, record.payload.value) {
                top.add(value);
            }
            match self.format {
                OutputFormat::Values => {
                    self.first_topic.write_all(record.payload.value.unwrap_or(b"null"))?;
                    self.first_topic.write_all(b"\n")?;
                }
                OutputFormat::Records => writeln!(self.first_topic, "{}", record_json(record))?,
            }
        } else if let Some(out) = &mut self.other_topics {
            let detail = header_text(record.payload, DETAIL_HEADER);
            let line = match self.format {
                OutputFormat::Values => serde_json::json!({
                    "topic": record.topic,
                    "reason": header_text(record.payload, REASON_HEADER),
                    "detail": detail,
                    "key": text(record.payload.key),
                    "value": text(record.payload.value),
                }),
                OutputFormat::Records => record_json(record),
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// Flushes every output; the first error is kept like a failed write.
    pub fn flush(&mut self) {
        let outputs = [Some(&mut self.first_topic), self.other_topics.as_mut(), self.logs.as_mut()];
        for out in outputs.into_iter().flatten() {
            if let Err(error) = out.flush() {
                self.output_error.get_or_insert(error);
            }
        }
    }
}

/// Writes outputs to files, tallies the last window's busiest groups, and keeps the module's logs.
pub struct FileSink {
    pub first_topic: Box<dyn Write>,
    pub other_topics: Option<Box<dyn Write>>,
    pub format: OutputFormat,
    pub logs: Option<Box<dyn Write>>,
    pub last_log: Option<String>,
    /// Only with `--top`.
    pub top: Option<TopGroups>,
    /// The first error writing an output: it ends the run.
    pub output_error: Option<std::io::Error>,
    /// Restarts the run went on from, printed as they happen unless quiet.
    pub restarts: u64,
    pub quiet: bool,
}

impl OutputSink for FileSink {
    /// A failed write stops the run; the error is kept, as it is the output's and not the transform's.
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()> {
        self.write(record).map_err(|error| {
            let message = anyhow::anyhow!("writing output: {error}");
            self.output_error = Some(error);
            message
        })
    }

    fn log(&mut self, shard: u32, line: &LogLine) {
        let text = line.text.trim_end();
        if let Some(out) = &mut self.logs {
            let _ = writeln!(out, "[shard {shard}] {text}");
        }
        if text.starts_with("summary:") || self.last_log.as_deref().is_none_or(|last| !last.starts_with("summary:")) {
            self.last_log = Some(text.to_string());
        }
    }

    /// Each restart gets a line on stderr as it happens (the first ten, then every hundredth).
    fn restart(&mut self, restart: &Restart) {
        self.restarts += 1;
        if !self.quiet && (self.restarts <= 10 || self.restarts.is_multiple_of(100)) {
            stderrln!("harness: restart {}: {restart}", self.restarts);
        }
    }

    fn moved(&mut self, moved: &Move) {
        if !self.quiet {
            stderrln!("harness: {moved}");
        }
    }
}

/// Bytes as text, for the JSON that the harness writes.
fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn header_text(payload: PayloadView<'_>, key: &str) -> Option<String> {
    payload.header(key).map(|value| String::from_utf8_lossy(value).into_owned())
}

fn record_json(record: &OutputRecord<'_>) -> serde_json::Value {
    let headers: Vec<serde_json::Value> = record
        .payload
        .headers()
        .map(|(key, value)| serde_json::json!({ "key": String::from_utf8_lossy(key), "value": text(value) }))
        .collect();
    serde_json::json!({
        "topic": record.topic,
        "key": text(record.payload.key),
        "value": text(record.payload.value),
        "headers": headers,
        "timestamp": record.timestamp_ms,
        "partition": record.partition,
        "offset": record.offset,
    })
}

pub fn print_summary(
    stats: &RunStats,
    topics: &[String],
    elapsed: Duration,
    limits: &transform_host::Limits,
    partitions: u32,
    shards: u32,
    batch_max_bytes: u64,
) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    stderrln!(
        "replayed {} records (partitions: {}, shards: {}) in {:.2} s: {:.0} records/s",
        stats.producer.records_in,
        partitions,
        shards,
        seconds,
        stats.producer.records_in as f64 / seconds
    );
    for (index, topic) in topics.iter().enumerate() {
        let mut line = format!("  {topic}: {} records", stats.broker.written[index]);
        if index > 0 && !stats.broker.tallies.is_empty() {
            let reasons: Vec<String> = stats.broker.tallies.iter().map(|(reason, n)| format!("{reason}={n}")).collect();
            line.push_str(&format!(" ({})", reasons.join(" ")));
        }
        let (raw, stored) = stats.broker.largest_batch[index];
        line.push_str(&format!(
            " in {} batches, the largest {stored} bytes as stored ({raw} uncompressed) of {batch_max_bytes}",
            stats.broker.output_batches[index]
        ));
        stderrln!("{line}");
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    stderrln!(
        "  peak linear memory {:.2} MiB of {:.2} MiB; most CPU for one record {:.3} ms of {} ms; module log lines {}",
        mib(stats.broker.peak_memory_bytes),
        mib(limits.memory_bytes),
        stats.broker.max_record_fuel as f64 / transform_host::FUEL_PER_MS as f64,
        limits.runtime_ms,
        stats.broker.log_lines
    );
    let moves = if stats.broker.moves > 0 { format!(", moves {}", stats.broker.moves) } else { String::new() };
    stderrln!(
        "  batches {}, commits {}, restarts {}{moves}, records written again {}",
        stats.producer.batches,
        stats.broker.commits,
        stats.broker.restarts,
        stats.broker.written_again
    );
    let (invalid, full) = stats.broker.dropped_log_lines;
    if invalid + full > 0 {
        stderrln!(
            "  log lines the broker would drop: {invalid} with invalid UTF-8 or control characters (after the 1 KiB cut), \
             {full} for a full log buffer"
        );
    }
}
