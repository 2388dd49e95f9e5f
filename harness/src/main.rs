//! `harness`: run a Redpanda data-transform module outside the broker, faithfully.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clickstream_aggregation::aggregator::{DETAIL_HEADER, REASON_HEADER};
use clickstream_aggregation::config::{parse_aggregates, VARIABLES};
use clickstream_aggregation::duration::{parse_duration_ms, parse_size_bytes};
use clickstream_aggregation::time::{parse_timestamp_ms, TimestampFormat};
use harness::generate::{Generator, GeneratorConfig};
use harness::host::{Limits, LogLine, TransformMeta, TransformModule};
use harness::input::{InputFormat, RecordReader};
use harness::pipeline::{OutputRecord, OutputSink, Pipeline, PipelineConfig, RecordTime, RunStats};
use harness::report::TopGroups;
use harness::wire::PayloadView;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Runs a Redpanda data-transform module the way the broker does: same host functions, limits and quirks, no broker needed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once")]
enum Command {
    /// Stream records through a module and write what it produces.
    Replay(ReplayArgs),
    /// Write a deterministic clickstream as JSON lines.
    Generate(GenerateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// One line per record: its value as the module wrote it.
    Values,
    /// One JSON object per record, as `rpk topic consume` prints it (key, value, headers, partition, offset, timestamp).
    Records,
}

#[derive(Clone, Copy, ValueEnum)]
enum InputFormatArg {
    /// Decide from the first line.
    Auto,
    /// Each line is one record value.
    Values,
    /// Records as `rpk topic consume` prints them (one per line or pretty-printed).
    Rpk,
}

#[derive(Clone, Copy, ValueEnum)]
enum RecordTimeArg {
    /// A producer sending events as they happen: follows event time, ignoring jumps of over an hour.
    Live,
    /// The harness's wall clock.
    Wall,
    /// Each event's own timestamp.
    Event,
}

#[derive(Args)]
struct ReplayArgs {
    /// The transform module (.wasm, or .wat text).
    #[arg(long)]
    wasm: PathBuf,
    /// JSON lines of record values, or records as `rpk topic consume` prints them; `-` for stdin.
    #[arg(long)]
    input: String,
    #[arg(long, value_enum, default_value = "auto")]
    input_format: InputFormatArg,
    /// Where records of the first output topic go; default stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Where records of the other output topics (the dead letters) go, as JSON with topic, reason,
    /// detail, key and value; default: counted only.
    #[arg(long)]
    dlq: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "values")]
    format: OutputFormat,
    /// Where the module's log lines go (`-` for stderr); default: counted, and the last (summary) line shown.
    #[arg(long)]
    logs: Option<String>,
    /// The transform's name, topics and env; default ./transform.yaml when it exists.
    #[arg(long)]
    transform_yaml: Option<PathBuf>,
    /// Set or override an environment variable of the transform (repeatable), like `rpk transform deploy --var`.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Input partitions (records are keyed and partitioned like the Kafka default partitioner).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Output partitions; default: as many as the input.
    #[arg(long)]
    output_partitions: Option<u32>,
    /// Cores: partition p is led on shard p mod N, and each shard has one VM shared by its partitions.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// The value field whose text is the record key; `none` for no key.
    #[arg(long, default_value = "user_id")]
    key_field: String,
    /// The value field holding event time; default: the transform's TIMESTAMP_FIELD, else `timestamp`.
    /// Its form (date-time text, epoch milliseconds or seconds) follows the transform's TIMESTAMP_FORMAT.
    #[arg(long)]
    time_field: Option<String>,
    /// Record timestamps for inputs that carry none.
    #[arg(long, value_enum, default_value = "live")]
    record_time: RecordTimeArg,
    /// Producer batch.size in bytes.
    #[arg(long, default_value = "16384")]
    batch_bytes: String,
    /// Producer linger.ms, on record time.
    #[arg(long, default_value = "5ms")]
    linger: String,
    /// Linear memory per VM (data_transforms_per_function_memory_limit).
    #[arg(long, default_value = "2MiB")]
    memory_limit: String,
    /// CPU per record (data_transforms_runtime_limit_ms), as fuel.
    #[arg(long, default_value = "3s")]
    runtime_limit: String,
    /// Native wasm stack.
    #[arg(long, default_value = "64KiB")]
    stack_limit: String,
    /// data_transforms_commit_interval_ms, on record time.
    #[arg(long, default_value = "3s")]
    commit_interval: String,
    /// Inject a VM failure after every N records handled for the first time.
    #[arg(long, value_name = "N")]
    restart_every: Option<u64>,
    /// Inject a VM failure once, at the record with this offset (`OFFSET` or `PARTITION:OFFSET`); repeatable.
    #[arg(long, value_name = "[PARTITION:]OFFSET")]
    restart_at: Vec<String>,
    /// At the end, send every partition a heartbeat far ahead so every open window closes, repeated while the
    /// transform reports a backlog (`backlog_windows`) or writes records unlike the previous heartbeat's.
    #[arg(long)]
    close_windows: bool,
    /// Print the N busiest groups of the last window that closed, ranked by the first aggregate.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of events (heartbeats not included).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[arg(long, default_value_t = 50)]
    users: u32,
    /// Event time of the first event (UTC).
    #[arg(long, default_value = "2020-11-16 19:00:00")]
    start: String,
    /// Mean events per second of event time (gaps are random, so quiet spells occur).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Move each event back by up to this much (out of order).
    #[arg(long, default_value = "0ms")]
    jitter: String,
    /// Percent of events placed --late-by behind the stream.
    #[arg(long, default_value_t = 0.0)]
    late_percent: f64,
    #[arg(long, default_value = "10m")]
    late_by: String,
    /// Percent of records that are malformed (not JSON, missing or mistyped fields, bad or far-future times, ...).
    #[arg(long, default_value_t = 0.0)]
    malformed_percent: f64,
    /// When no event comes for this long, emit a heartbeat (a value holding only the timestamp) this often.
    #[arg(long)]
    heartbeat_every: Option<String>,
    /// Default stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay(args),
        Command::Generate(args) => generate(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("harness: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The transform's default for one of its settings.
fn default_setting(name: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|(variable, _)| *variable == name).and_then(|(_, default)| *default)
}

fn duration_ms(flag: &str, text: &str) -> anyhow::Result<i64> {
    parse_duration_ms(text)
        .map(|ms| ms as i64)
        .with_context(|| format!("--{flag} {text:?}: expected a duration like 300ms, 10s, 5m or 1h"))
}

fn size_bytes(flag: &str, text: &str) -> anyhow::Result<u64> {
    parse_size_bytes(text).with_context(|| format!("--{flag} {text:?}: expected a size like 16384, 64KiB or 2MiB"))
}

fn create(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate {}: expected a positive number of events per second", args.rate);
    }
    for (flag, value) in [("late-percent", args.late_percent), ("malformed-percent", args.malformed_percent)] {
        if !(0.0..=100.0).contains(&value) {
            bail!("--{flag} {value}: expected a percentage from 0 to 100");
        }
    }
    let config = GeneratorConfig {
        seed: args.seed,
        events: args.events,
        users: args.users.max(1),
        start_ms: parse_timestamp_ms(&args.start)
            .with_context(|| format!("--start {:?}: expected YYYY-MM-DD HH:MM:SS", args.start))?,
        rate_per_sec: args.rate,
        jitter_ms: duration_ms("jitter", &args.jitter)?,
        late_percent: args.late_percent,
        late_by_ms: duration_ms("late-by", &args.late_by)?,
        malformed_percent: args.malformed_percent,
        heartbeat_every_ms: args
            .heartbeat_every
            .as_deref()
            .map(|every| duration_ms("heartbeat-every", every))
            .transpose()?,
    };
    let mut out = create(&args.output)?;
    for line in Generator::new(config) {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
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
    fn flush(&mut self) {
        let outputs = [Some(&mut self.first_topic), self.other_topics.as_mut(), self.logs.as_mut()];
        for out in outputs.into_iter().flatten() {
            if let Err(error) = out.flush() {
                self.output_error.get_or_insert(error);
            }
        }
    }
}

/// Writes outputs to files, tallies the last window's busiest groups, and keeps the module's logs.
struct FileSink {
    first_topic: Box<dyn Write>,
    other_topics: Option<Box<dyn Write>>,
    format: OutputFormat,
    logs: Option<Box<dyn Write>>,
    last_log: Option<String>,
    /// Only with `--top`.
    top: Option<TopGroups>,
    /// The first error writing an output: it ends the run.
    output_error: Option<std::io::Error>,
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

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        memory_bytes: size_bytes("memory-limit", &args.memory_limit)?,
        runtime_ms: duration_ms("runtime-limit", &args.runtime_limit)? as u64,
        stack_bytes: size_bytes("stack-limit", &args.stack_limit)? as usize,
        ..Limits::default()
    };
    let bytes = std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let module = TransformModule::load(&bytes, limits).with_context(|| format!("loading {}", args.wasm.display()))?;
    for warning in &module.warnings {
        eprintln!("harness: warning: {warning}");
    }
    let yaml = args.transform_yaml.clone().or_else(|| Some(PathBuf::from("transform.yaml")).filter(|p| p.exists()));
    let mut meta = match &yaml {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            harness::meta::read_transform_yaml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => TransformMeta {
            name: "transform".into(),
            input_topic: "input".into(),
            output_topics: vec!["output".into()],
            env: vec![],
        },
    };
    harness::meta::apply_overrides(&mut meta, &args.env)?;
    harness::meta::validate(&meta)?;
    let env = |name: &str| meta.env.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    // The aggregates' names, to rank the top groups by the first; the module itself reports a bad list.
    let setting = |name: &str| env(name).or_else(|| default_setting(name).map(str::to_string)).unwrap_or_default();
    let aggregate_names: Vec<String> = parse_aggregates(&setting("AGGREGATES"), &[])
        .map(|aggregates| aggregates.into_iter().map(|aggregate| aggregate.name).collect())
        .unwrap_or_else(|_| vec!["event_count".into()]);
    let time_format = TimestampFormat::ALL
        .into_iter()
        .find(|format| format.name() == setting("TIMESTAMP_FORMAT").trim())
        .unwrap_or(TimestampFormat::Auto);
    if args.partitions == 0 || args.shards == 0 || args.output_partitions == Some(0) {
        bail!("--partitions, --output-partitions and --shards must be at least 1");
    }
    if args.restart_every == Some(0) {
        bail!("--restart-every must be at least 1");
    }
    let restart_at = args
        .restart_at
        .iter()
        .map(|spec| {
            let parsed = match spec.split_once(':') {
                Some((partition, offset)) => partition.parse().ok().map(Some).zip(offset.parse().ok()),
                None => spec.parse().ok().map(|offset| (None, offset)),
            };
            let (partition, offset) =
                parsed.with_context(|| format!("--restart-at {spec:?}: expected OFFSET or PARTITION:OFFSET"))?;
            if let Some(partition) = partition.filter(|partition| *partition >= args.partitions) {
                bail!("--restart-at {spec:?}: there is no partition {partition} (--partitions {})", args.partitions);
            }
            Ok((partition, offset))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = PipelineConfig {
        partitions: args.partitions,
        output_partitions: args.output_partitions,
        shards: args.shards,
        batch_bytes: size_bytes("batch-bytes", &args.batch_bytes)? as usize,
        linger_ms: duration_ms("linger", &args.linger)?,
        key_field: Some(args.key_field.clone()).filter(|field| field != "none"),
        time_field: args.time_field.clone().unwrap_or_else(|| setting("TIMESTAMP_FIELD")),
        time_format,
        record_time: match args.record_time {
            RecordTimeArg::Live => RecordTime::Live,
            RecordTimeArg::Wall => RecordTime::Wall,
            RecordTimeArg::Event => RecordTime::Event,
        },
        commit_interval_ms: duration_ms("commit-interval", &args.commit_interval)?,
        restart_every: args.restart_every,
        restart_at,
    };

    let (input, input_len): (Box<dyn Read>, Option<u64>) = if args.input == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        let len = file.metadata().ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let format = match args.input_format {
        InputFormatArg::Auto => None,
        InputFormatArg::Values => Some(InputFormat::Values),
        InputFormatArg::Rpk => Some(InputFormat::Rpk),
    };
    let mut reader = RecordReader::new(input, format);
    let mut sink = FileSink {
        first_topic: create(&args.output)?,
        other_topics: args.dlq.as_ref().map(|path| create(&Some(path.clone()))).transpose()?,
        format: args.format,
        logs: match args.logs.as_deref() {
            None => None,
            Some("-") => Some(Box::new(std::io::stderr())),
            Some(path) => Some(create(&Some(PathBuf::from(path)))?),
        },
        last_log: None,
        top: args.top.map(|_| TopGroups::new(aggregate_names)),
        output_error: None,
    };
    let topics = meta.output_topics.clone();
    let memory_limit = limits.memory_bytes;
    let runtime_ms = limits.runtime_ms;
    let mut pipeline = Pipeline::new(module, meta, config, &mut sink);
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let outcome = (|| -> anyhow::Result<Result<RunStats, harness::host::VmFailure>> {
        if let Err(failure) = pipeline.start() {
            return Ok(Err(failure));
        }
        let mut last_progress = Instant::now();
        while let Some(record) = reader.next_record()? {
            if let Err(failure) = pipeline.push(record) {
                return Ok(Err(failure));
            }
            if progress && last_progress.elapsed() > Duration::from_millis(250) {
                last_progress = Instant::now();
                let share =
                    input_len.filter(|len| *len > 0).map(|len| format!(" ({}%)", reader.bytes_read() * 100 / len));
                eprint!(
                    "\r{} records read{}, {} written   ",
                    pipeline.stats.records_in,
                    share.unwrap_or_default(),
                    pipeline.stats.written.iter().sum::<u64>()
                );
            }
        }
        if progress {
            eprint!("\r{}\r", " ".repeat(72));
        }
        if args.close_windows {
            if let Err(failure) = pipeline.close_windows() {
                return Ok(Err(failure));
            }
        }
        let elapsed = pipeline.elapsed();
        Ok(pipeline.finish().map(|stats| (stats, elapsed)).map(|(stats, elapsed)| {
            print_summary(&stats, &topics, elapsed, memory_limit, runtime_ms, args.partitions, args.shards);
            stats
        }))
    })()?;
    sink.flush();
    match sink.output_error {
        // A reader that has seen enough (`| head`) ends the run, as it ends ripgrep's: quietly.
        Some(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(error) => bail!("writing output: {error}"),
        None => {}
    }
    match outcome {
        Ok(_) => {
            if let Some(line) = &sink.last_log {
                eprintln!("  last module log line: {line}");
            }
            if let (Some(n), Some(top)) = (args.top, &sink.top) {
                eprint!("{}", top.table(n));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) if failure.record.is_none() => {
            eprintln!(
                "harness: the transform did not start; in Redpanda it would be restarted again and again:\n  {failure}"
            );
            Ok(ExitCode::from(1))
        }
        Err(failure) => {
            eprintln!("harness: the transform failed; in Redpanda the VM would restart and retry this record forever:\n  {failure}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_summary(
    stats: &RunStats,
    topics: &[String],
    elapsed: Duration,
    memory_limit: u64,
    runtime_ms: u64,
    partitions: u32,
    shards: u32,
) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "replayed {} records (partitions: {}, shards: {}) in {:.2} s: {:.0} records/s",
        stats.records_in,
        partitions,
        shards,
        seconds,
        stats.records_in as f64 / seconds
    );
    for (index, topic) in topics.iter().enumerate() {
        let mut line = format!("  {topic}: {} records", stats.written[index]);
        if index > 0 && !stats.dead_letters.is_empty() {
            let reasons: Vec<String> = stats.dead_letters.iter().map(|(reason, n)| format!("{reason}={n}")).collect();
            line.push_str(&format!(" ({})", reasons.join(" ")));
        }
        eprintln!("{line}");
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    eprintln!(
        "  peak linear memory {:.2} MiB of {:.2} MiB; most CPU for one record {:.3} ms of {} ms; module log lines {}",
        mib(stats.peak_memory_bytes),
        mib(memory_limit),
        stats.max_record_fuel as f64 / harness::host::FUEL_PER_MS as f64,
        runtime_ms,
        stats.log_lines
    );
    eprintln!(
        "  batches {}, commits {}, restarts {}, outputs re-produced after restarts {}, suppressed {}",
        stats.batches, stats.commits, stats.restarts, stats.replayed_outputs, stats.suppressed_outputs
    );
}
