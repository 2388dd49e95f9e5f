//! Shared pieces of the integration tests: an independent reference model of the Flink job, and
//! random clickstreams to compare implementations on.

pub mod readme;
pub mod reference;
pub mod replay;
pub mod streams;
