//! Options every command shares, printing data on stdout and messages on stderr.
//!
//! Neither panics when its stream is closed: Rust's `println!`/`eprintln!` do. A closed stdout
//! (its reader left, as in `memlens ps | head -1`) ends the command quietly with exit 0, as
//! ripgrep and Unix filters do; a closed stderr loses the messages, nothing else (`run` still
//! returns the program's status).

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
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| match e.io_error_kind() {
        Some(_) => write_error(std::io::Error::from(e)),
        None => CliError::new(Code::Failure, format!("cannot write JSON: {e}")),
    })?;
    writeln!(out).map_err(write_error)?;
    out.flush().map_err(write_error)
}

/// Maps a stdout write failure to an error: a closed stdout (`EPIPE`, `EBADF`) is a quiet end,
/// anything else (a full disk behind a redirection) a failure with a message.
pub fn write_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(libc::EBADF) {
        return CliError::quiet();
    }
    CliError::new(Code::Failure, format!("cannot write output: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_stdout_is_quiet_and_other_errors_are_not() {
        let q = write_error(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!((q.code, q.message.as_str()), (Code::Ok, ""));
        let q = write_error(std::io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(q.code, Code::Ok);
        let e = write_error(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.code, Code::Failure);
    }
}
