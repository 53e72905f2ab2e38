//! memlens-launch: running a program transparently under `memlens run` and supervising it.
//!
//! It forks the program and holds it before exec ([`hold`]) while it joins the run's own
//! memory cgroup ([`OwnCgroup`], a guard removed on drop unless kept), forwards signals to it
//! and leaves ignored ones ignored ([`forward_signals`]), reaps it and the orphans of its tree
//! as a subreaper ([`reap`], [`become_subreaper`]), and wakes the supervision loop on a signal
//! or an exit ([`Waiter`]). It also reads memlens's own CPU clocks ([`cputime`]), which the
//! recorder's budget is charged in.
//!
//! With `memlens-remote`, this is one of the two memlens crates allowed `unsafe`: fork, exec,
//! signal handlers, `wait4`, `poll`, `prctl` and `clock_gettime` live here, each block with a
//! `// SAFETY:` comment. It never signals a process other than the program it started, never
//! leaves a child stopped, and never removes a cgroup it did not create. It prints nothing.

pub mod cgroup;
pub mod cputime;
mod error;
mod reap;
mod signals;
mod spawn;
mod waiter;

pub use cgroup::OwnCgroup;
pub use error::{CgroupError, SpawnError};
pub use reap::{become_subreaper, reap, Reaped};
pub use signals::{
    clear_child, forward_signals, set_child, signal_name, stop_on_signals, stop_requested,
    take_forwarded, FORWARDED,
};
pub use spawn::{hold, hold_with_env, Held};
pub use waiter::{next_tick, Waiter};
