//! Options every command shares, and helpers to print data on stdout.

use std::io::Write;

use crate::cli::Cli;
use crate::exit::{CliError, CliResult, Code};

/// Global output options. (memlens prints no colour codes, so `NO_COLOR` holds trivially.)
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// Exact byte counts instead of binary units.
    pub bytes: bool,
}

impl Global {
    /// Reads the global flags and the environment.
    pub fn from_cli(cli: &Cli) -> Self {
        Global { bytes: cli.bytes }
    }
}

/// Writes a serializable value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> CliResult<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(|e| CliError::new(Code::Failure, format!("cannot write JSON: {e}")))?;
    writeln!(out).map_err(write_error)?;
    out.flush().map_err(write_error)
}

/// Maps a stdout write failure (closed pipe, full disk) to an error.
pub fn write_error(e: std::io::Error) -> CliError {
    CliError::new(Code::Failure, format!("cannot write output: {e}"))
}
