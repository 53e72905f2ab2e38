//! `memlens top`: a live terminal view of the host's Python processes as trees.

use std::process::ExitCode;
use std::time::Duration;

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::Global;

/// Arguments of `memlens top`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How often the process list is read (1ms to 1h, e.g. `500ms`, `2s`).
    #[arg(long, value_parser = flags::period, default_value = "1s")]
    pub interval: Duration,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let opts = memlens_top::Options {
        interval: args.interval,
        bytes: global.bytes,
        no_color: memlens_top::no_color_env(),
    };
    // Log lines on stderr would tear the screen: silent while the view runs.
    let level = log::max_level();
    log::set_max_level(log::LevelFilter::Off);
    let outcome = memlens_top::run(opts);
    log::set_max_level(level);
    match outcome {
        Ok(memlens_top::Outcome::Quit) => Ok(Code::Ok.into()),
        // As a shell reports a process a signal ended: 128 + the signal's number.
        Ok(memlens_top::Outcome::Signal(sig)) => {
            Ok(ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)))
        }
        Err(e @ memlens_top::Error::NotATerminal) => Err(CliError::new(Code::Usage, e.to_string())
            .with_hint("run it in a terminal; `memlens ps` (or `ps --json`) prints the same processes to a pipe or file")),
        Err(e) => Err(CliError::new(Code::Failure, e.to_string())),
    }
}
