//! Flink-exact hopping-window aggregates (count, sum, min, max, avg, count_distinct; percentiles within 1 %,
//! approximate distinct counts within 2.3 %) of JSON events, with Window Top-N, in plain Rust.
//!
//! The module's SDK adapter (`main.rs`) feeds each record to [`aggregator::Aggregator`], which reads the
//! event ([`event`]), adds it to the window [`engine::Engine`] (whose per-pane state is [`aggregate::Accumulator`]s)
//! and pushes rows ([`row_format`]) and dead letters ([`dead_letter`]) into an [`aggregator::Output`]; under
//! `TOP_N` the engine ranks each window's rows first ([`top_n`]). Nothing here
//! knows about Redpanda, so all of it is tested natively.

pub mod aggregate;
pub mod aggregator;
pub mod chunked;
pub mod config;
pub mod dead_letter;
pub mod distinct;
pub mod duration;
pub mod engine;
pub mod event;
pub mod hll;
pub mod intern;
pub mod json;
pub mod log_limiter;
pub mod row_format;
pub mod sketch;
pub mod time;
pub mod top_n;
