//! A run: the producer model sending into the broker model, with the knobs of both in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::{Broker, BrokerStats, Watched};
pub use crate::broker::{
    BrokerConfig, InjectedFailure, Move, OutputRecord, OutputSink, Restart, StartOffset, WriteConfig,
};
use crate::meta::TransformMeta;
use crate::producer::{Producer, ProducerStats, SentBatch};
pub use crate::producer::{ProducerConfig, ProducerRecord, RecordTime, TimeField};
use crate::vm::{TransformModule, VmFailure};

/// How the producer and the broker are set up.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Input partitions; records naming a higher partition add partitions.
    pub partitions: u32,
    pub producer: ProducerConfig,
    pub broker: BrokerConfig,
    /// How the transform reports its windows in its log, if it does (read by the closing heartbeats).
    pub window_report: Option<Arc<dyn WindowReport>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            partitions: 1,
            producer: ProducerConfig::default(),
            broker: BrokerConfig::default(),
            window_report: None,
        }
    }
}

/// What a windowing transform reports of its windows in a log line (a summary it logs, say).
pub trait WindowReport: std::fmt::Debug + Send + Sync {
    /// `None` for a line that is no report.
    fn read(&self, line: &str) -> Option<WindowState>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Windows that fired and have rows still to write over the following records.
    pub backlog: u64,
    /// What has not fired yet: windows, or the panes they are made of.
    pub open: u64,
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub producer: ProducerStats,
    pub broker: BrokerStats,
}

pub struct Pipeline<'a> {
    producer: Producer,
    broker: Broker<'a>,
    window_report: Option<Arc<dyn WindowReport>>,
    sent: Vec<SentBatch>,
    started: Instant,
}

/// Closing heartbeats one partition may take before the run is called a runaway.
const MAX_CLOSING_HEARTBEATS: i64 = 100_000;

impl<'a> Pipeline<'a> {
    pub fn new(
        module: TransformModule,
        meta: TransformMeta,
        config: PipelineConfig,
        sink: &'a mut dyn OutputSink,
    ) -> Pipeline<'a> {
        let partitions = config.partitions.max(1);
        Pipeline {
            producer: Producer::new(config.producer, partitions),
            window_report: config.window_report,
            broker: Broker::new(module, meta, config.broker, partitions, sink),
            sent: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.producer.partition_count()
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Starts every shard's VM now, so a start-up failure shows before any input is read.
    pub fn start(&mut self) -> Result<(), VmFailure> {
        self.broker.start()
    }

    /// Produces one record (see [`Producer::send`]); each batch it sends is handled at once.
    pub fn push(&mut self, record: ProducerRecord) -> Result<(), VmFailure> {
        self.producer.send(record, &mut self.sent);
        self.deliver_sent()
    }

    fn deliver_sent(&mut self) -> Result<(), VmFailure> {
        for batch in self.sent.drain(..) {
            self.broker.append(batch.partition, batch.records)?;
        }
        Ok(())
    }

    /// Sends every partition, after every event, a heartbeat far enough past the latest believable event
    /// to close every window: windows and watermark delays are at most 7 days each, so 15 days ahead (or
    /// the last expressible instant), stamped with that same time so no future-event guard refuses it.
    /// This is how a replay compares with a bounded batch job. A transform deployed with a start offset
    /// is deployed first.
    ///
    /// A transform may write what one record fires over the following records (one that bounds each
    /// record's share), so the heartbeat is repeated, a minute of record time apart so a transform that
    /// reports once a minute does so each time, while its last [`WindowReport`] has a backlog or the
    /// heartbeat writes records that differ from the previous one's (a transform that echoes or copies
    /// its input writes the same each time).
    ///
    /// Returns what the last report of each shard's VM still holds open (0 without reports): more than 0
    /// when the heartbeats did not close the windows, e.g. because the transform refused them.
    pub fn close_windows(&mut self) -> Result<u64, VmFailure> {
        const AHEAD_MS: i64 = 15 * 86_400_000;
        self.producer.flush(&mut self.sent);
        self.deliver_sent()?;
        self.broker.deploy()?;
        let Some(max) = self.producer.stats.max_event_ms else { return Ok(0) };
        let last_ms = self.producer.max_event_ms();
        let at_ms = max.saturating_add(AHEAD_MS).min(last_ms);
        let value = self.producer.heartbeat(at_ms);
        let mut reports = BTreeMap::new();
        for partition in 0..self.partition_count() {
            let mut previous = None;
            for round in 0.. {
                if round == MAX_CLOSING_HEARTBEATS {
                    return Err(VmFailure::harness(format!(
                        "{MAX_CLOSING_HEARTBEATS} closing heartbeats and the transform still writes"
                    )));
                }
                // A partition that is restarting reads its heartbeat only afterwards: wait it out first.
                if !self.broker.is_running(partition) {
                    self.broker.finish()?;
                }
                self.broker.watch = Some(Watched::default());
                self.producer.send(
                    ProducerRecord {
                        value: Some(value.clone()),
                        timestamp_ms: Some(at_ms.saturating_add(60_000 * round).min(last_ms)),
                        partition: Some(partition),
                        ..Default::default()
                    },
                    &mut self.sent,
                );
                self.producer.flush_partition(partition, &mut self.sent);
                self.deliver_sent()?;
                let watched = self.broker.watch.take().expect("set above");
                let mut backlog = None;
                for (shard, line) in &watched.logs {
                    if let Some(state) = self.window_report.as_ref().and_then(|report| report.read(line)) {
                        reports.insert(*shard, state);
                        backlog = Some(state.backlog);
                    }
                }
                let writing = watched.records > 0 && previous != Some(watched.digest);
                if !writing && backlog.is_none_or(|windows| windows == 0) {
                    break;
                }
                previous = Some(watched.digest);
            }
        }
        Ok(reports.values().map(|state| state.open).sum())
    }

    /// Sends every open batch and handles everything, waiting out every restart; returns the totals.
    pub fn finish(mut self) -> Result<RunStats, VmFailure> {
        self.producer.flush(&mut self.sent);
        self.deliver_sent()?;
        self.broker.finish()?;
        Ok(self.stats())
    }

    /// A heartbeat value at `at_ms` (see [`Producer::heartbeat`]).
    pub fn heartbeat(&self, at_ms: i64) -> Vec<u8> {
        self.producer.heartbeat(at_ms)
    }

    pub fn stats(&self) -> RunStats {
        RunStats { producer: self.producer.stats.clone(), broker: self.broker.stats.clone() }
    }
}
