//! Flink-exact hopping-window counts of clickstream events, in plain Rust.
//!
//! The module's SDK adapter (`main.rs`) feeds each record to [`aggregator::Aggregator`], which reads the
//! event, counts it in the window [`engine::Engine`] and pushes rows and dead letters into an
//! [`aggregator::Output`]. Nothing here knows about Redpanda, so all of it is tested natively.

pub mod aggregator;
pub mod config;
pub mod duration;
pub mod engine;
pub mod intern;
pub mod json;
pub mod time;
