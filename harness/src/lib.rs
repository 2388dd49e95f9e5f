//! The `harness` tool: the generic host of [`transform_host`] with what is specific to
//! the clickstream transform ([`clickstream`], [`generate`], [`report`]) and the tools that feed a run
//! ([`input`]).

pub mod clickstream;
pub mod generate;
pub mod input;
pub mod report;
