//! Command-line arguments. Each command's own arguments live beside its code in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// How much memory does a Python program really use, and why?
#[derive(Debug, Parser)]
#[command(name = "memlens", version, about, long_about = None, propagate_version = true)]
// Plain styles: the error text is then exactly what memlens escapes and prints (lib.rs).
#[command(styles = clap::builder::Styles::plain())]
pub struct Cli {
    /// More messages on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print sizes as exact byte counts instead of KiB/MiB/GiB.
    #[arg(long, global = true)]
    pub bytes: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Python processes on this host, as trees, with RSS/PSS/USS/swap and tree totals.
    Ps(commands::ps::Args),
    /// The reconciled memory ledger of a process (or its whole tree).
    Snapshot(commands::snapshot::Args),
    /// Run a program, sample its whole process tree, and explain its memory at exit.
    Run(commands::run::Args),
    /// Record a running process tree over time, until Ctrl-C or `--duration`.
    Record(commands::record::Args),
    /// Render a recording: terminal summary, `--json`, `--html`.
    Report(commands::report::Args),
    /// Python stacks of every thread, read from outside (like `py-spy dump`).
    Stacks(commands::stacks::Args),
    /// Object census by type (count, shallow bytes), read from outside; `--growth` for growth.
    Census(commands::census::Args),
    /// Live terminal view of the host's Python processes as trees (PSS, heaps, sharing, growth).
    Top(commands::top::Args),
    /// An OpenMetrics/Prometheus endpoint (`/metrics`) with every Python tree's ledger.
    Serve(commands::serve::Args),
    /// Compare two snapshots (`snapshot --json` files) or two recordings: what grew, where.
    Diff(commands::diff::Args),
}
