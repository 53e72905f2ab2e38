//! `memlens ps`.

use std::process::ExitCode;

use crate::exit::{CliError, CliResult, Code};
use crate::output::Global;

/// Arguments of `memlens ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(_args: Args, _global: &Global) -> CliResult<ExitCode> {
    Err(CliError::new(Code::Failure, "not built yet"))
}
