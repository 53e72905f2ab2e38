//! `memlens serve [--listen ADDR]`: an OpenMetrics/Prometheus endpoint with every Python tree's
//! ledger (`memlens-serve`; the metrics are in docs/metrics.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::Global;

/// Arguments of `memlens serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// IP address and port to listen on (`[::1]:9464`, `0.0.0.0:9464`; port 0 picks a free
    /// one). Loopback by default: an address other hosts can reach prints a warning.
    #[arg(long, default_value = memlens_serve::DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Share of one core the collector may use on average, in percent from 0.01 to 100.
    #[arg(long, default_value = "5", value_name = "PCT", value_parser = flags::percent)]
    pub cpu_budget: f64,
    /// Collect at most this often (1ms to 1h); the CPU budget may space collections further.
    #[arg(long, default_value = "10s", value_name = "D", value_parser = flags::period)]
    pub interval: Duration,
    /// Export at most this many processes (trees largest PSS first); the rest are counted.
    #[arg(long, default_value_t = 500, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_processes: u32,
    /// Also export each Python process's largest object types. A census STOPS each Python
    /// process briefly (a pause of milliseconds to a second, with its heap) at every collection.
    #[arg(long)]
    pub census: bool,
    /// Types exported per process with `--census` (1 to 100).
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub census_top: u32,
    /// Memory memlens may use for one census (as `census --max-memory`).
    #[arg(long, default_value = "256M", value_name = "SIZE", value_parser = flags::size)]
    pub census_max_memory: u64,
}

/// Runs the command until SIGINT or SIGTERM.
pub fn run(args: Args, _global: &Global) -> CliResult<ExitCode> {
    let listener = memlens_serve::bind(args.listen).map_err(|e| {
        let err = CliError::new(Code::CannotListen, e.to_string());
        if e.is_addr_in_use() {
            err.with_hint("another program listens there: pick another port with --listen")
        } else {
            err
        }
    })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    if !addr.ip().is_loopback() {
        crate::messages::message(
            "warn",
            &format!("{addr} can be reached from other hosts: the metrics name every Python process and its command line, without TLS or authentication"),
        );
    }
    let cfg = memlens_serve::Config {
        max_processes: args.max_processes as usize,
        cpu_budget: args.cpu_budget,
        interval: args.interval,
        census: args.census,
        census_top: args.census_top as usize,
        census_max_memory: args.census_max_memory,
    };
    let ready = || crate::messages::note(&format!("serving http://{addr}/metrics"));
    memlens_serve::serve(listener, cfg, ready)
        .map_err(|e| CliError::new(Code::Failure, e.to_string()))?;
    Ok(Code::Ok.into())
}
