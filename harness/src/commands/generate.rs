//! `harness generate`: write a deterministic clickstream as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use harness::generate::Generator;

use crate::flags::GeneratorOptions;
use crate::sink::create;

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    generator: GeneratorOptions,
    /// Default stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let config = args.generator.config()?;
    let mut out = create(&args.output)?;
    for line in Generator::new(config) {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
