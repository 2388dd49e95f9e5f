//! `harness consume`: the rows as they arrive, or a live table of the busiest groups of the latest closed
//! window on stdout, refreshed in place on a terminal. A closed stdout (`| head`) ends it quietly.

use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use clickstream_aggregation::config::{default_of, parse_aggregates};
use harness::report::TopGroups;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, partition_count, stop_requested, topic_exists};
use crate::flags::{duration, OutputFormat};

#[derive(Args)]
pub(crate) struct ConsumeArgs {
    /// The broker to bootstrap from (HOST:PORT, comma-separated).
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "clickstream_aggregated")]
    topic: String,
    /// Read the topic from its start; default: only what arrives from now on.
    #[arg(long)]
    from_beginning: bool,
    #[arg(long, value_enum, default_value = "values")]
    format: OutputFormat,
    /// Keep a table of the N busiest groups of the latest closed window (ranked by the first aggregate),
    /// refreshed every second on stdout (in place on a terminal, else one whole table each time, a blank
    /// line between), instead of printing rows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// The transform's AGGREGATES, to tell group fields from aggregates in `--top`; default: the transform's
    /// default.
    #[arg(long)]
    aggregates: Option<String>,
    /// The rows are a Window Top-N (the transform sets TOP_N): `--top` shows them as the module ranked them,
    /// in the order written, instead of ranking them again.
    #[arg(long)]
    ranked: bool,
    /// With `--ranked`: the transform's TOP_N_RANK_FIELD, shown as the first value column.
    #[arg(long, requires = "ranked")]
    rank_field: Option<String>,
    /// Stop once nothing has arrived for this long; default: run until Ctrl-C.
    #[arg(long, value_parser = duration)]
    idle_exit: Option<i64>,
    #[command(flatten)]
    outage: super::OutageArgs,
}

pub(crate) fn consume(args: ConsumeArgs) -> anyhow::Result<std::process::ExitCode> {
    let aggregates = args.aggregates.clone().unwrap_or_else(|| default_of("AGGREGATES").unwrap_or_default().into());
    let aggregate_names: Vec<String> = parse_aggregates(&aggregates, &[])
        .map_err(|error| anyhow::anyhow!("--aggregates {aggregates:?}: {error}"))?
        .into_iter()
        .map(|aggregate| aggregate.name)
        .collect();
    let consumer: BaseConsumer = client_config(&args.brokers)
        .set("group.id", "harness-consume")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
    let Some(partitions) = partition_count(consumer.client(), &args.topic)? else {
        bail!("topic {:?} does not exist", args.topic)
    };
    let mut assignment = TopicPartitionList::new();
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(&args.topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let groups = match args.ranked {
        true => TopGroups::new(aggregate_names).ranked_by_the_module(args.rank_field.clone()),
        false => TopGroups::new(aggregate_names),
    };
    let table = args.top.map(|n| LiveTable::new(groups, n));
    match print_topic(&args, &consumer, table) {
        // A reader that has seen enough (`| head`) ends consume, as it ends replay: quietly.
        Err(error) if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) => {
            Ok(std::process::ExitCode::SUCCESS)
        }
        result => result.map(|()| std::process::ExitCode::SUCCESS),
    }
}

/// Prints the rows, or keeps the table, until Ctrl-C or `--idle-exit`.
fn print_topic(args: &ConsumeArgs, consumer: &BaseConsumer, mut table: Option<LiveTable>) -> anyhow::Result<()> {
    let stop = stop_requested();
    let mut outage = super::Outage::new(args.outage.limit());
    // Paused from the first sign of an outage until the broker has the topic again (see `topic_exists`);
    // `Some(true)` once it answered without it: the topic is created anew, and read from its start.
    let mut paused: Option<bool> = None;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut last_message, mut rows) = (Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) {
        if args.idle_exit.is_some_and(|ms| last_message.elapsed() > Duration::from_millis(ms as u64)) {
            break;
        }
        if let Some(table) = &mut table {
            table.refresh(&mut out, rows)?;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            out.flush()?;
            // Asked once the errors queued meanwhile are read: each would start another outage.
            if let Some(lost_topic) = &mut paused {
                match topic_exists(consumer.client(), &args.topic) {
                    Err(error) => outage.failed(error)?,
                    Ok(false) => {
                        outage.ended();
                        if !std::mem::replace(lost_topic, true) {
                            stderrln!(
                                "harness: the broker answers without topic {:?} (lost in a restart, or deleted); reading waits until it is there",
                                args.topic
                            );
                        }
                    }
                    Ok(true) => {
                        outage.ended();
                        if *lost_topic {
                            let mut from_start = TopicPartitionList::new();
                            for element in consumer.assignment()?.elements() {
                                from_start.add_partition_offset(
                                    element.topic(),
                                    element.partition(),
                                    Offset::Beginning,
                                )?;
                            }
                            consumer.assign(&from_start)?;
                        }
                        consumer.resume(&consumer.assignment()?)?;
                        paused = None;
                    }
                }
            }
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                outage.failed(error)?;
                if paused.is_none() {
                    consumer.pause(&consumer.assignment()?)?;
                    paused = Some(false);
                }
                continue;
            }
        };
        outage.ended();
        last_message = Instant::now();
        rows += 1;
        match (&mut table, args.format) {
            (Some(table), _) => {
                if let Some(value) = message.payload() {
                    table.top.add(value);
                }
            }
            (None, OutputFormat::Values) => {
                out.write_all(message.payload().unwrap_or(b"null"))?;
                out.write_all(b"\n")?;
            }
            (None, OutputFormat::Records) => {
                let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
                let headers: Vec<serde_json::Value> = message
                    .headers()
                    .map(|headers| {
                        headers.iter().map(|h| serde_json::json!({ "key": h.key, "value": text(h.value) })).collect()
                    })
                    .unwrap_or_default();
                let record = serde_json::json!({
                    "topic": message.topic(),
                    "key": text(message.key()),
                    "value": text(message.payload()),
                    "headers": headers,
                    "timestamp": message.timestamp().to_millis(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                });
                writeln!(out, "{record}")?;
            }
        }
    }
    if let Some(table) = &mut table {
        table.finish(&mut out, rows)?;
    }
    Ok(out.flush()?)
}

/// The `--top` table on stdout: redrawn in place on a terminal; elsewhere one whole table per refresh,
/// a blank line between, so a pipe or a file gets every table.
struct LiveTable {
    top: TopGroups,
    n: usize,
    terminal: bool,
    started: Instant,
    /// When the table was last drawn, and with how many rows read.
    drawn: Option<(Instant, u64)>,
}

impl LiveTable {
    fn new(top: TopGroups, n: usize) -> LiveTable {
        LiveTable { top, n, terminal: std::io::stdout().is_terminal(), started: Instant::now(), drawn: None }
    }

    /// Draws the table once a second while rows arrive.
    fn refresh(&mut self, out: &mut impl Write, rows: u64) -> std::io::Result<()> {
        let (since, drawn_rows) = self.drawn.unwrap_or((self.started, 0));
        if rows != drawn_rows && since.elapsed() >= Duration::from_secs(1) {
            self.draw(out, rows)?;
        }
        Ok(())
    }

    /// The table at the end, unless the last one drawn shows it already.
    fn finish(&mut self, out: &mut impl Write, rows: u64) -> std::io::Result<()> {
        if self.drawn.is_none_or(|(_, drawn_rows)| drawn_rows != rows) {
            self.draw(out, rows)?;
        }
        Ok(())
    }

    fn draw(&mut self, out: &mut impl Write, rows: u64) -> std::io::Result<()> {
        if self.terminal {
            // Clear the screen and draw the table at the top.
            write!(out, "\x1b[H\x1b[2J")?;
        } else if self.drawn.is_some() {
            writeln!(out)?;
        }
        write!(out, "{rows} rows read\n{}", self.top.table(self.n))?;
        out.flush()?;
        self.drawn = Some((Instant::now(), rows));
        Ok(())
    }
}
