//! The memlens command line: argument parsing, commands, messages and exit codes.
//!
//! The libraries do the work; this crate turns their typed errors into messages with hints and
//! documented exit codes (see `docs/cli.md`). Data goes to stdout, messages to stderr.

mod cli;
mod commands;
mod exit;
mod flags;
mod logger;
mod messages;
mod output;
pub mod python_view;
mod recording;

use std::process::ExitCode;

use clap::Parser;

pub use exit::{CliError, Code};

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            messages::usage(&e.render().ansi().to_string());
            return Code::Usage.into();
        }
        Err(e) => {
            // --help, --version: memlens's own text on stdout (a closed stdout is fine).
            let _ = e.print();
            return Code::Ok.into();
        }
    };
    logger::init(args.verbose);
    let global = output::Global::from_cli(&args);
    match commands::dispatch(args.command, &global) {
        Ok(code) => code,
        Err(err) => {
            err.print();
            err.code.into()
        }
    }
}
