//! `harness consume`: the rows as they arrive, or a live table of the busiest groups of the latest closed
//! window, refreshed in place on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use clickstream_aggregation::config::parse_aggregates;
use harness::report::TopGroups;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, partition_count, stop_requested};
use crate::OutputFormat;

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
    /// refreshed in place on a terminal, instead of printing rows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// The transform's AGGREGATES, to tell group fields from aggregates in `--top`; default: the transform's
    /// default.
    #[arg(long)]
    aggregates: Option<String>,
    /// Stop once nothing has arrived for this long; default: run until Ctrl-C.
    #[arg(long, value_parser = crate::duration)]
    idle_exit: Option<i64>,
}

pub(crate) fn consume(args: ConsumeArgs) -> anyhow::Result<std::process::ExitCode> {
    let aggregates =
        args.aggregates.clone().unwrap_or_else(|| crate::default_setting("AGGREGATES").unwrap_or_default().into());
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
    let stop = stop_requested();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut top = args.top.map(|_| TopGroups::new(aggregate_names));
    let live_table = std::io::stderr().is_terminal();
    let (mut last_message, mut last_table, mut rows) = (Instant::now(), Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) {
        if args.idle_exit.is_some_and(|ms| last_message.elapsed() > Duration::from_millis(ms as u64)) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            out.flush()?;
            continue;
        };
        let message = message.context("reading the topic")?;
        last_message = Instant::now();
        rows += 1;
        match (&mut top, args.format) {
            (Some(top), _) => {
                if let Some(value) = message.payload() {
                    top.add(value);
                }
                if live_table && last_table.elapsed() > Duration::from_secs(1) {
                    last_table = Instant::now();
                    // Clear the screen and draw the table at the top.
                    stderr!("\x1b[H\x1b[2J{rows} rows read\n{}", top.table(args.top.unwrap_or(10)));
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
    out.flush()?;
    if let (Some(top), Some(n)) = (&top, args.top) {
        stderr!("{rows} rows read\n{}", top.table(n));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
