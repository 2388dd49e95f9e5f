//! `harness`: run a Redpanda data-transform module outside the broker, faithfully. This file parses the
//! command line and hands it to the command's file in [`commands`]; the flags they share are in [`flags`].

// `eprint!` panics when stderr's reader has gone; `stderr!` and `stderrln!` write there instead.
#![deny(clippy::print_stderr)]

#[macro_use]
mod messages;

mod commands;
mod flags;
mod sink;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{generate, live, replay};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Runs a Redpanda data-transform module the way the broker does: same host functions, limits and quirks, no broker needed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once")]
enum Command {
    /// Stream records through a module and write what it produces.
    Replay(replay::ReplayArgs),
    /// Write a deterministic clickstream as JSON lines.
    Generate(generate::GenerateArgs),
    /// Send records to a live broker as the seed's producer does (keyed, event-time stamped, heartbeats).
    Produce(live::produce::ProduceArgs),
    /// Print the rows of a live topic as they arrive, or a live table of the busiest groups.
    Consume(live::consume::ConsumeArgs),
    /// Run the module against a live broker the way Redpanda runs it (a consumer group, one VM per process).
    Run(live::run::RunArgs),
    /// Deploy the module through Redpanda's admin API and wait until it runs on every partition.
    Deploy(live::deploy::DeployArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::replay(args),
        Command::Generate(args) => generate::generate(args),
        Command::Produce(args) => live::produce::produce(args),
        Command::Consume(args) => live::consume::consume(args),
        Command::Run(args) => live::run::run(args),
        Command::Deploy(args) => live::deploy::deploy(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            stderrln!("harness: {error:#}");
            ExitCode::from(2)
        }
    }
}
