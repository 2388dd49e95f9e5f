//! A stand-in for the Redpanda broker around any data-transform module: the same host functions, limits
//! and quirks ([`host`], with one file per import family), the same data path ([`producer`] into
//! [`broker`], joined by [`pipeline`]), and the same failures, commits and restarts.

pub mod broker;
mod deploy;
mod guest_memory;
pub mod guests;
pub mod host;
pub mod logs;
pub mod meta;
pub mod pipeline;
pub mod producer;
pub mod record_batch;
pub mod schema_registry;
mod transform_abi;
mod wasi;
pub mod wire;
