//! Running the real module through the harness, and collecting everything it produces.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use transform_host::pipeline::{OutputRecord, OutputSink, Pipeline, PipelineConfig, ProducerRecord, RunStats};
use transform_host::wire::{decode_payload, Payload};
use transform_host::{InputBatch, Limits, LogLine, TransformMeta, TransformModule, VmFailure};

/// The module `make build` made (or `CLICKSTREAM_WASM`), read once.
pub fn module_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = std::env::var_os("CLICKSTREAM_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clickstream-aggregation.wasm"));
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make build` (or `make test`) first", path.display()))
    })
}

/// The module `make build` leaves at the workspace root (or `CLICKSTREAM_WASM`), compiled once per
/// test binary and set of limits.
pub fn module(limits: Limits) -> TransformModule {
    static COMPILED: Mutex<Vec<(Limits, TransformModule)>> = Mutex::new(Vec::new());
    let bytes = module_bytes();
    let mut compiled = COMPILED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, module)) = compiled.iter().find(|(known, _)| *known == limits) {
        return module.clone();
    }
    let module = TransformModule::load(bytes, limits).expect("the module loads");
    compiled.push((limits, module.clone()));
    module
}

/// The project's transform.yaml with `env` overrides applied.
pub fn meta(env: &[(&str, &str)]) -> TransformMeta {
    let mut meta = transform_host::meta::read_transform_yaml(include_str!("../../transform.yaml")).unwrap();
    let overrides: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    transform_host::meta::apply_overrides(&mut meta, &overrides).unwrap();
    meta
}

/// The clickstream transform's producer and event-time rules, with the host's other defaults.
pub fn clickstream_config() -> PipelineConfig {
    harness::clickstream::pipeline_config(clickstream_aggregation::time::TimestampFormat::Auto)
}

/// One output record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub topic_index: usize,
    pub shard: u32,
    pub partition: u32,
    pub payload: Payload,
    pub replayed: bool,
}

impl Produced {
    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(self.payload.value.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn header(&self, key: &str) -> Option<String> {
        self.payload.header(key).map(|value| String::from_utf8_lossy(value).into_owned())
    }
}

/// Everything a run produced: output records in order, log lines, and what each shard's VM was given.
#[derive(Default)]
pub struct Collected {
    pub produced: Vec<Produced>,
    pub logs: Vec<(u32, LogLine)>,
    /// Per shard: (record value, record timestamp) in delivery order.
    pub delivered: Vec<Vec<(Option<Vec<u8>>, i64)>>,
}

impl Collected {
    /// The numbers of the last `summary:` line each shard's VM logged (`state_bytes=N/B` reads as N).
    pub fn last_summaries(&self) -> BTreeMap<u32, BTreeMap<String, i64>> {
        let mut summaries = BTreeMap::new();
        for (shard, line) in &self.logs {
            if let Some(fields) = line.text.trim_end().strip_prefix("summary: ") {
                let numbers = fields
                    .split(' ')
                    .filter_map(|field| field.split_once('='))
                    .filter_map(|(name, value)| Some((name.to_string(), value.split('/').next()?.parse().ok()?)))
                    .collect();
                summaries.insert(*shard, numbers);
            }
        }
        summaries
    }

    pub fn rows(&self) -> impl Iterator<Item = &Produced> {
        self.produced.iter().filter(|p| p.topic_index == 0)
    }

    pub fn dead_letters(&self) -> impl Iterator<Item = &Produced> {
        self.produced.iter().filter(|p| p.topic_index == 1)
    }
}

impl OutputSink for Collected {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()> {
        self.produced.push(Produced {
            topic_index: record.topic_index,
            shard: record.shard,
            partition: record.partition,
            payload: record.payload.to_payload(),
            replayed: record.replayed,
        });
        Ok(())
    }

    fn log(&mut self, shard: u32, line: &LogLine) {
        self.logs.push((shard, line.clone()));
    }

    fn delivered(&mut self, shard: u32, batch: &InputBatch) {
        if self.delivered.len() <= shard as usize {
            self.delivered.resize(shard as usize + 1, Vec::new());
        }
        for record in &batch.records {
            let payload = decode_payload(&record.payload).expect("the harness encodes valid payloads");
            self.delivered[shard as usize].push((payload.value, record.timestamp_ms));
        }
    }
}

/// Sends each partition one more heartbeat, a minute of record time apart, so every VM logs a summary
/// (the module logs one per minute of record time) that covers every record it was given.
fn log_final_summaries(pipeline: &mut Pipeline<'_>) -> Result<(), VmFailure> {
    let heartbeat = pipeline.heartbeat(pipeline.stats().producer.max_event_ms.unwrap_or(0));
    let record_ms = pipeline.stats().producer.max_record_ms.unwrap_or(0);
    for partition in 0..pipeline.partition_count() {
        pipeline.push(ProducerRecord {
            value: Some(heartbeat.clone()),
            timestamp_ms: Some(record_ms + 61_000 * (i64::from(partition) + 1)),
            partition: Some(partition),
            ..Default::default()
        })?;
    }
    Ok(())
}

/// Replays record values through the real module; `close_windows` also closes every window at the end
/// and has each VM log a final summary.
pub fn replay(
    values: impl IntoIterator<Item = Vec<u8>>,
    env: &[(&str, &str)],
    config: PipelineConfig,
    limits: Limits,
    close_windows: bool,
) -> (Collected, Result<RunStats, VmFailure>) {
    let mut collected = Collected::default();
    let result = (|| {
        let mut pipeline = Pipeline::new(module(limits), meta(env), config, &mut collected);
        pipeline.start()?;
        for value in values {
            pipeline.push(ProducerRecord { value: Some(value), ..Default::default() })?;
        }
        if close_windows {
            pipeline.close_windows()?;
            log_final_summaries(&mut pipeline)?;
        }
        pipeline.finish()
    })();
    (collected, result)
}
