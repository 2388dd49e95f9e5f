//! A stand-in for the Redpanda broker around any data-transform module: the same host functions, limits
//! and quirks (a [`Vm`] links one module per import family), the same data path ([`producer`] into
//! [`broker`], joined by [`pipeline`]), and the same failures, commits and restarts.
//!
//! Layers, each using only those above it: the batch types, the core's clock, log rules and wire forms;
//! guest memory access; the import families (`transform_abi`, `wasi`, `schema_registry`); the VM (`vm`);
//! the broker and producer models (the producer reads values with `top_fields`); the pipeline joining them.

mod batch;
pub mod broker;
mod clock;
mod deploy;
mod guest_memory;
pub mod guests;
pub mod logs;
pub mod meta;
pub mod pipeline;
pub mod producer;
pub mod record_batch;
pub mod schema_registry;
mod top_fields;
mod transform_abi;
mod vm;
mod wasi;
pub mod wire;

pub use batch::{BatchOutput, BatchRecord, InputBatch, Written};
pub use clock::MonotonicClock;
pub use logs::{LogLevel, LogLine};
pub use meta::TransformMeta;
pub use vm::{EngineProfile, Limits, TransformModule, Vm, VmFailure, VmServices, FUEL_PER_MS};
