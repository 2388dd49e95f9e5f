//! The flags several commands share: the module and how the broker runs it, the generator's options,
//! output formats and value parsers. A command's own flags stay in its file, next to the code that reads them.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use clickstream_aggregation::config::{default_of, parse_aggregates};
use clickstream_aggregation::duration::{parse_duration_ms, parse_size_bytes};
use clickstream_aggregation::time::{parse_timestamp_ms, TimestampFormat};
use harness::generate::GeneratorConfig;
use transform_host::record_batch::Compression;
use transform_host::{Limits, TransformMeta, TransformModule};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    /// One line per record: its value as the module wrote it.
    Values,
    /// One JSON object per record, as `rpk topic consume` prints it (key, value, headers, partition, offset, timestamp).
    Records,
}

/// A duration flag: `300ms`, `10s`, `5m`, `1h`.
pub(crate) fn duration(text: &str) -> Result<i64, String> {
    parse_duration_ms(text).map(|ms| ms as i64).ok_or_else(|| "expected a duration like 300ms, 10s, 5m or 1h".into())
}

/// A size flag: `16384`, `64KiB`, `2MiB`.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    parse_size_bytes(text).ok_or_else(|| "expected a size like 16384, 64KiB or 2MiB".into())
}

/// The module and how the broker would run it.
#[derive(Args)]
pub(crate) struct TransformArgs {
    /// The transform module (.wasm, or .wat text).
    #[arg(long)]
    wasm: PathBuf,
    /// The transform's name, topics and env; default ./transform.yaml when it exists.
    #[arg(long)]
    transform_yaml: Option<PathBuf>,
    /// Set or override an environment variable of the transform (repeatable), like `rpk transform deploy --var`.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Linear memory per VM (data_transforms_per_function_memory_limit).
    #[arg(long, default_value = "2MiB", value_parser = size)]
    memory_limit: u64,
    /// CPU per record (data_transforms_runtime_limit_ms), as fuel.
    #[arg(long, default_value = "3s", value_parser = duration)]
    runtime_limit: i64,
    /// Native wasm stack.
    #[arg(long, default_value = "64KiB", value_parser = size)]
    stack_limit: u64,
    /// How the broker compresses the transform's output batches (rpk transform deploy --compression);
    /// default: the transform.yaml's `compression`, else none.
    #[arg(long, value_enum)]
    compression: Option<Compression>,
}

/// A loaded transform, and what the harness reads of its settings.
pub(crate) struct Transform {
    pub(crate) module: TransformModule,
    pub(crate) meta: TransformMeta,
    pub(crate) limits: Limits,
    /// The aggregates' names, to rank the top groups by the first.
    pub(crate) aggregate_names: Vec<String>,
    /// Under `TOP_N` (rows come ranked): `TOP_N_RANK_FIELD`, if set.
    pub(crate) top_n: Option<Option<String>>,
    pub(crate) time_format: TimestampFormat,
    /// TIMESTAMP_FIELD.
    pub(crate) time_field: String,
    /// The transform.yaml read; `None`: the default transform, from `input` to `output`.
    pub(crate) yaml: Option<PathBuf>,
    /// How the broker compresses its output batches.
    pub(crate) compression: Compression,
}

impl TransformArgs {
    pub(crate) fn wasm(&self) -> &std::path::Path {
        &self.wasm
    }

    /// Loads and checks the module and its metadata as the broker's deploy does; prints the warnings.
    pub(crate) fn load(&self) -> anyhow::Result<Transform> {
        let limits = Limits {
            memory_bytes: self.memory_limit,
            runtime_ms: self.runtime_limit as u64,
            stack_bytes: self.stack_limit as usize,
            ..Limits::default()
        };
        let bytes = std::fs::read(&self.wasm).with_context(|| format!("reading {}", self.wasm.display()))?;
        let module =
            TransformModule::load(&bytes, limits).with_context(|| format!("loading {}", self.wasm.display()))?;
        for warning in &module.warnings {
            stderrln!("harness: warning: {warning}");
        }
        let (mut meta, yaml) = self.meta()?;
        transform_host::meta::apply_overrides(&mut meta, &self.env)?;
        transform_host::meta::validate(&meta)?;
        let env = |name: &str| meta.env.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        let setting = |name: &str| env(name).or_else(|| default_of(name).map(str::to_string)).unwrap_or_default();
        // The module itself reports a bad list.
        let aggregate_names: Vec<String> = parse_aggregates(&setting("AGGREGATES"), &[])
            .map(|aggregates| aggregates.into_iter().map(|aggregate| aggregate.name).collect())
            .unwrap_or_else(|_| vec!["event_count".into()]);
        let time_format = TimestampFormat::ALL
            .into_iter()
            .find(|format| format.name() == setting("TIMESTAMP_FORMAT").trim())
            .unwrap_or(TimestampFormat::Auto);
        let time_field = setting("TIMESTAMP_FIELD");
        let compression = match (self.compression, &yaml) {
            (Some(compression), _) => compression,
            (None, Some(path)) => transform_host::meta::read_compression(&std::fs::read_to_string(path)?)
                .with_context(|| format!("in {}", path.display()))?
                .unwrap_or_default(),
            (None, None) => Compression::None,
        };
        let top_n = env("TOP_N").map(|_| env("TOP_N_RANK_FIELD").map(|field| field.trim().to_string()));
        Ok(Transform { module, meta, limits, aggregate_names, top_n, time_format, time_field, yaml, compression })
    }

    /// `--transform-yaml`, else ./transform.yaml, else a transform named `transform` from `input` to `output`;
    /// and the file read.
    fn meta(&self) -> anyhow::Result<(TransformMeta, Option<PathBuf>)> {
        let yaml = self.transform_yaml.clone().or_else(|| Some(PathBuf::from("transform.yaml")).filter(|p| p.exists()));
        let meta = match &yaml {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                transform_host::meta::read_transform_yaml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => TransformMeta {
                name: "transform".into(),
                input_topic: "input".into(),
                output_topics: vec!["output".into()],
                env: vec![],
            },
        };
        Ok((meta, yaml))
    }
}

/// What to generate: a deterministic clickstream.
#[derive(Args)]
pub(crate) struct GeneratorOptions {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of events (heartbeats not included).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    users: u32,
    /// Event time of the first event (UTC).
    #[arg(long, default_value = "2020-11-16 19:00:00")]
    start: String,
    /// Mean events per second of event time (gaps are random, so quiet spells occur).
    #[arg(long, default_value_t = 20.0)]
    event_rate: f64,
    /// Move each event back by up to this much (out of order).
    #[arg(long, default_value = "0ms", value_parser = duration)]
    jitter: i64,
    /// Percent of events placed --late-by behind the stream.
    #[arg(long, default_value_t = 0.0)]
    late_percent: f64,
    #[arg(long, default_value = "10m", value_parser = duration)]
    late_by: i64,
    /// Percent of records that are malformed (not JSON, missing or mistyped fields, bad or far-future times, ...).
    #[arg(long, default_value_t = 0.0)]
    malformed_percent: f64,
    /// When no event comes for this long, emit a heartbeat (a value holding only the timestamp) this often.
    #[arg(long, value_parser = duration)]
    heartbeat_every: Option<i64>,
}

impl GeneratorOptions {
    pub(crate) fn config(&self) -> anyhow::Result<GeneratorConfig> {
        if self.event_rate.is_nan() || self.event_rate <= 0.0 {
            bail!("--event-rate {}: expected a positive number of events per second", self.event_rate);
        }
        for (flag, value) in [("late-percent", self.late_percent), ("malformed-percent", self.malformed_percent)] {
            if !(0.0..=100.0).contains(&value) {
                bail!("--{flag} {value}: expected a percentage from 0 to 100");
            }
        }
        Ok(GeneratorConfig {
            seed: self.seed,
            events: self.events,
            users: self.users,
            start_ms: parse_timestamp_ms(&self.start)
                .with_context(|| format!("--start {:?}: expected YYYY-MM-DD HH:MM:SS", self.start))?,
            rate_per_sec: self.event_rate,
            jitter_ms: self.jitter,
            late_percent: self.late_percent,
            late_by_ms: self.late_by,
            malformed_percent: self.malformed_percent,
            heartbeat_every_ms: self.heartbeat_every,
        })
    }
}
