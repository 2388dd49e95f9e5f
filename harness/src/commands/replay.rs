//! `harness replay`: stream records through a module on the broker model and write what it produces.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use harness::input::{InputFormat, RecordReader};
use harness::report::TopGroups;
use transform_host::broker::{InjectedFailure, StartOffset, WriteConfig, MAX_PARTITIONS_PER_SHARD, MAX_SHARDS};
use transform_host::pipeline::{BrokerConfig, Pipeline, PipelineConfig, ProducerConfig, RunStats};
use transform_host::producer::RecordTime;
use transform_host::{VmFailure, FUEL_PER_MS};

use crate::flags::{duration, size, OutputFormat, Transform, TransformArgs};
use crate::sink::{create, print_summary, FileSink};

#[derive(Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    transform: TransformArgs,
    /// JSON lines of record values, or records as `rpk topic consume` prints them; `-` for stdin.
    #[arg(long)]
    input: String,
    /// The input's form; default: decided from the first line.
    #[arg(long, value_enum)]
    input_format: Option<InputFormat>,
    /// Where records of the first output topic go; default stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Where records of the other output topics (the dead letters) go, as JSON with topic, reason,
    /// detail, key and value; default: counted only. Refused when the transform has one output topic
    /// (as without a transform.yaml).
    #[arg(long)]
    dlq: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "values")]
    format: OutputFormat,
    /// Where the module's log lines go (`-` for stderr); default: counted, and the last (summary) line shown.
    #[arg(long)]
    logs: Option<String>,
    /// Input partitions (records are keyed and partitioned like the Kafka default partitioner).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Output partitions; default: as many as the input.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    output_partitions: Option<u32>,
    /// Cores: partition p is led on shard p mod N, and each shard has one VM shared by its partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SHARDS)))]
    shards: u32,
    /// The value field whose text is the record key; `none` for no key.
    #[arg(long, default_value = "user_id")]
    key_field: String,
    /// The value field holding event time (`@record`: the record's timestamp); default: the transform's
    /// TIMESTAMP_FIELD, else `timestamp`.
    /// Its form (date-time text, epoch milliseconds or seconds) follows the transform's TIMESTAMP_FORMAT.
    #[arg(long)]
    time_field: Option<String>,
    /// Record timestamps for inputs that carry none.
    #[arg(long, value_enum, default_value = "live")]
    record_time: RecordTime,
    /// Producer batch.size in bytes.
    #[arg(long, default_value = "16384", value_parser = size)]
    batch_bytes: u64,
    /// Producer linger.ms, on record time.
    #[arg(long, default_value = "5ms", value_parser = duration)]
    linger: i64,
    /// data_transforms_commit_interval_ms, on record time: commits are flushed this often, and a processor
    /// that restarts waits this long for earlier flushes.
    #[arg(long, default_value = "3s", value_parser = duration)]
    commit_interval: i64,
    /// Inject a failure after every N records handled for the first time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    restart_every: Option<u64>,
    /// Inject a failure once, at the record with this offset (`OFFSET` or `PARTITION:OFFSET`); repeatable.
    #[arg(long, value_name = "[PARTITION:]OFFSET", value_parser = record_position)]
    restart_at: Vec<(Option<u32>, i64)>,
    /// What an injected failure is.
    #[arg(long, value_enum, default_value = "trap")]
    injected_failure: InjectedFailure,
    /// Move a partition's leadership once, as its processor reaches the record at this offset; repeatable.
    /// The processor stops, dropping the outputs it has not written yet, and one on the next shard (with
    /// --shards 1, the same shard) reads again from its last commit after a commit interval, with the VM
    /// and state of that shard; the old shard's VM goes on, with the partition's state, while other
    /// partitions use it.
    #[arg(long, value_name = "PARTITION:OFFSET", value_parser = partition_offset)]
    move_at: Vec<(u32, i64)>,
    /// Deploy once the input is written and start reading as `rpk transform deploy --from-offset` does:
    /// `@T` (epoch milliseconds), `+N` (offset N) or `-N` (the last N records) of each partition. Default:
    /// deployed before the first record, so every record is read.
    #[arg(long, value_name = "@T|+N|-N", allow_hyphen_values = true)]
    from_offset: Option<StartOffset>,
    /// Run as a cluster without a schema registry (its host functions answer −1).
    #[arg(long)]
    no_schema_registry: bool,
    /// How long one write of outputs takes (a replicated produce to the output partition), in VM time
    /// (2,000,000 fuel units a ms): what the VM writes meanwhile joins the producer loop's next batch.
    #[arg(long, default_value = "5ms", value_parser = duration)]
    write_latency: i64,
    /// The output topics' max.message.bytes (the cluster's kafka_batch_max_bytes by default): an output batch
    /// larger as stored fails its processor, as in the broker.
    #[arg(long, default_value = "1MiB", value_parser = size)]
    batch_max_bytes: u64,
    /// At the end, after every event, send every partition a heartbeat far ahead so every open window closes
    /// (`{}` with TIMESTAMP_FIELD=@record), repeated while the transform reports a backlog (`backlog_windows`)
    /// or writes records unlike the previous heartbeat's. Exits 1 if its summary still shows open panes.
    #[arg(long)]
    close_windows: bool,
    /// Print the N busiest groups of the last window that closed, ranked by the first aggregate (under TOP_N,
    /// its first N rows as the module ranked them).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// No progress line, and no line for each restart.
    #[arg(long)]
    quiet: bool,
}

/// `OFFSET` or `PARTITION:OFFSET`.
fn record_position(text: &str) -> Result<(Option<u32>, i64), String> {
    let parsed = match text.split_once(':') {
        Some((partition, offset)) => partition.parse().ok().map(Some).zip(offset.parse().ok()),
        None => text.parse().ok().map(|offset| (None, offset)),
    };
    parsed.ok_or_else(|| "expected OFFSET or PARTITION:OFFSET".into())
}

/// `PARTITION:OFFSET`.
fn partition_offset(text: &str) -> Result<(u32, i64), String> {
    match record_position(text) {
        Ok((Some(partition), offset)) => Ok((partition, offset)),
        _ => Err("expected PARTITION:OFFSET".into()),
    }
}

pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let max_partitions = MAX_PARTITIONS_PER_SHARD * args.shards;
    for (flag, partitions) in [("partitions", Some(args.partitions)), ("output-partitions", args.output_partitions)] {
        if partitions.is_some_and(|partitions| partitions > max_partitions) {
            bail!(
                "--{flag} {}: at most {MAX_PARTITIONS_PER_SHARD} partitions per shard (topic_partitions_per_shard), \
                 {max_partitions} with --shards {}",
                partitions.unwrap_or_default(),
                args.shards
            );
        }
    }
    let Transform { module, meta, limits, aggregate_names, top_n, time_format, time_field, yaml, compression } =
        args.transform.load()?;
    if let (Some(dlq), [only]) = (&args.dlq, meta.output_topics.as_slice()) {
        let source = match yaml {
            Some(path) => format!("{} names", path.display()),
            None => "with no transform.yaml here (--transform-yaml names one), the transform has".to_string(),
        };
        bail!("--dlq {}: {source} one output topic, {only:?}, so nothing would be written there", dlq.display());
    }
    let restarts = args.restart_at.iter().filter_map(|&(partition, offset)| Some(("restart-at", partition?, offset)));
    let moves = args.move_at.iter().map(|&(partition, offset)| ("move-at", partition, offset));
    for (flag, partition, offset) in restarts.chain(moves) {
        if partition >= args.partitions {
            bail!(
                "--{flag} \"{partition}:{offset}\": there is no partition {partition} (--partitions {})",
                args.partitions
            );
        }
    }
    let clickstream = harness::clickstream::pipeline_config(time_format);
    let config = PipelineConfig {
        partitions: args.partitions,
        producer: ProducerConfig {
            batch_bytes: args.batch_bytes as usize,
            linger_ms: args.linger,
            key_field: Some(args.key_field.clone()).filter(|field| field != "none"),
            time_field: harness::clickstream::time_field(args.time_field.as_deref().unwrap_or(&time_field)),
            record_time: args.record_time,
            ..clickstream.producer
        },
        broker: BrokerConfig {
            output_partitions: args.output_partitions,
            shards: args.shards,
            commit_interval_ms: args.commit_interval,
            restart_every: args.restart_every,
            restart_at: args.restart_at.clone(),
            injected: args.injected_failure,
            move_at: args.move_at.clone(),
            from_offset: args.from_offset,
            schema_registry: !args.no_schema_registry,
            writes: WriteConfig {
                latency_fuel: args.write_latency as u64 * FUEL_PER_MS,
                batch_max_bytes: args.batch_max_bytes as usize,
                compression,
            },
            ..clickstream.broker
        },
        window_report: clickstream.window_report,
    };

    let (input, input_len): (Box<dyn Read>, Option<u64>) = if args.input == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        let len = file.metadata().ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let mut reader = RecordReader::new(input, args.input_format);
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
        top: args.top.map(|_| match top_n {
            Some(rank_field) => TopGroups::new(aggregate_names).ranked_by_the_module(rank_field),
            None => TopGroups::new(aggregate_names),
        }),
        output_error: None,
        restarts: 0,
        quiet: args.quiet,
    };
    let topics = meta.output_topics.clone();
    let mut pipeline = Pipeline::new(module, meta, config, &mut sink);
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let mut still_open = 0;
    let outcome = (|| -> anyhow::Result<Result<RunStats, VmFailure>> {
        if let Err(failure) = pipeline.start() {
            return Ok(Err(failure));
        }
        let mut last_progress = Instant::now();
        while let Some(record) = reader.next_record()? {
            if let Some(partition) = record.partition.filter(|p| *p >= max_partitions) {
                bail!(
                    "a record names partition {partition}: at most {MAX_PARTITIONS_PER_SHARD} partitions per shard \
                     (topic_partitions_per_shard), {max_partitions} with --shards {}",
                    args.shards
                );
            }
            if let Err(failure) = pipeline.push(record) {
                return Ok(Err(failure));
            }
            if progress && last_progress.elapsed() > Duration::from_millis(250) {
                last_progress = Instant::now();
                let stats = pipeline.stats();
                let share =
                    input_len.filter(|len| *len > 0).map(|len| format!(" ({}%)", reader.bytes_read() * 100 / len));
                stderr!(
                    "\r{} records read{}, {} written   ",
                    stats.producer.records_in,
                    share.unwrap_or_default(),
                    stats.broker.written.iter().sum::<u64>()
                );
            }
        }
        if progress {
            stderr!("\r{}\r", " ".repeat(72));
        }
        if args.close_windows {
            match pipeline.close_windows() {
                Ok(open) => still_open = open,
                Err(failure) => return Ok(Err(failure)),
            }
        }
        let elapsed = pipeline.elapsed();
        Ok(pipeline.finish().inspect(|stats| {
            print_summary(stats, &topics, elapsed, &limits, args.partitions, args.shards, args.batch_max_bytes)
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
                stderrln!("  last module log line: {line}");
            }
            if let (Some(n), Some(top)) = (args.top, &sink.top) {
                stderr!("{}", top.table(n));
            }
            if still_open > 0 {
                stderrln!(
                    "harness: windows are still open after --close-windows: the transform's last summary shows \
                     open_panes={still_open}, so the closing heartbeats did not close them (were they dead-lettered?)"
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) if failure.at_start => {
            stderrln!(
                "harness: the transform did not start; in Redpanda it would be restarted again and again:\n  {failure}"
            );
            Ok(ExitCode::from(1))
        }
        Err(failure) => {
            stderrln!("harness: the transform failed:\n  {failure}");
            Ok(ExitCode::from(1))
        }
    }
}
