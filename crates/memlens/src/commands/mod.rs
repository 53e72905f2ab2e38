//! One module per command: its `Args` (clap) and its `run` function.

pub mod census;
pub mod diff;
pub mod leak;
pub mod preload_lib;
pub mod ps;
pub mod record;
pub mod record_trace;
pub mod referrers;
pub mod report;
pub mod report_trace;
pub mod run;
pub mod run_trace;
pub mod serve;
pub mod snapshot;
pub mod stacks;
pub mod top;

use std::process::ExitCode;

use crate::cli::Command;
use crate::exit::CliResult;
use crate::output::Global;

/// Runs a command, returning the exit code on success.
pub fn dispatch(cmd: Command, global: &Global) -> CliResult<ExitCode> {
    match cmd {
        Command::Ps(a) => ps::run(a, global),
        Command::Snapshot(a) => snapshot::run(a, global),
        Command::Run(a) => run::run(a, global),
        Command::Record(a) => record::run(a, global),
        Command::Report(a) => report::run(a, global),
        Command::Stacks(a) => stacks::run(a, global),
        Command::Census(a) => census::run(a, global),
        Command::Top(a) => top::run(a, global),
        Command::Serve(a) => serve::run(a, global),
        Command::Diff(a) => diff::run(a, global),
    }
}
