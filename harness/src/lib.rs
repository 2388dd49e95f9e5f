//! The `harness` tool: the generic host of [`transform_host`] (re-exported here), plus what is specific to
//! the clickstream transform ([`clickstream`], [`generate`], [`report`]) and the tools that feed a run
//! ([`input`]).

pub use transform_host::{broker, host, logs, meta, pipeline, producer, record_batch, schema_registry, wire};

pub mod clickstream;
pub mod generate;
pub mod input;
pub mod report;
