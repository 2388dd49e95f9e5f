//! A stand-in for the Redpanda broker around a data-transform module: the same host functions, limits
//! and quirks ([`host`]), the same data path ([`pipeline`]), plus the tools to feed it ([`input`],
//! [`generate`]).

pub mod generate;
pub mod host;
pub mod input;
pub mod meta;
pub mod pipeline;
pub mod report;
mod schema_registry;
mod wasi;
pub mod wire;
