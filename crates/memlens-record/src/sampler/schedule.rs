//! The budget schedule: memlens's CPU clocks charged to the budget at each tick, when the
//! next tick falls (spaced out when the budget cannot afford the interval), when the tree is
//! at a new high worth a ledger, and the state the expensive reads ([`super::reads`]) are
//! scheduled on.

use std::time::Duration;

use memlens_launch::cputime::{process_cpu_seconds, thread_cpu_seconds};

use crate::budget::{Budget, CostModel};

/// A new high worth a ledger: this fraction above the tree's RSS (or PSS) at the highest
/// ledger so far, and at least [`PEAK_STEP_MIN`].
pub(super) const PEAK_STEP: f64 = 0.05;
pub(super) const PEAK_STEP_MIN: u64 = 4 << 20;

/// The CPU clocks at the start of the last tick, and what was charged since.
#[derive(Debug, Clone, Copy, Default)]
struct Clocks {
    thread: f64,
    process: f64,
    /// Seconds of this thread already charged (to the bucket or the background) since.
    charged: f64,
}

/// Predicted costs of the expensive reads.
#[derive(Debug, Clone)]
pub(super) struct Costs {
    pub(super) rollup: CostModel,
    pub(super) ledger: CostModel,
    /// A pass of copy-on-write sharing: `smaps` and the resident part of `pagemap` of each
    /// worker and its parent.
    pub(super) sharing: CostModel,
}

/// What the schedule knows: the budget, the predicted costs, and when each kind of read last
/// happened.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) budget: Budget,
    pub(super) costs: Costs,
    clocks: Option<Clocks>,
    last_commit: f64,
    pub(super) last_ledger: Option<f64>,
    /// Tree RSS (sum of the counters) at the highest ledger so far.
    pub(super) ledger_high: u64,
    /// Tree PSS of the highest ledger so far.
    pub(super) ledger_high_pss: u64,
    /// A PSS round found the tree's PSS well above the highest ledger's (copy-on-write pages
    /// un-shared without RSS moving): the next tick takes a ledger.
    pub(super) pss_high: bool,
    pub(super) last_round: f64,
    /// When the last sharing pass was due and tried (s).
    pub(super) last_sharing: f64,
    /// Work units of the last sharing pass (`None` before the first).
    pub(super) sharing_work: Option<f64>,
    pub(super) last_json: Option<f64>,
    pub(super) best_ledger_pss: u64,
    /// The longest tick interval the budget imposed.
    pub(super) stretched: f64,
    /// When the last tick started (s).
    last_tick: f64,
}

/// The step above `high` that makes a new high.
pub(super) fn step(high: u64) -> u64 {
    ((high as f64 * PEAK_STEP) as u64).max(PEAK_STEP_MIN)
}

impl Schedule {
    pub(super) fn new(cpu_budget: f64) -> Schedule {
        Schedule {
            budget: Budget::new(cpu_budget),
            // Starting guesses (debug builds, a loaded machine); learnt from the first reads.
            costs: Costs {
                rollup: CostModel::new(0.2e-3, 15e-6),
                ledger: CostModel::new(1e-3, 20e-6),
                sharing: CostModel::new(1e-3, 40e-6),
            },
            clocks: None,
            last_commit: 0.0,
            last_ledger: None,
            ledger_high: 0,
            ledger_high_pss: 0,
            pss_high: false,
            last_round: f64::NEG_INFINITY,
            last_sharing: f64::NEG_INFINITY,
            sharing_work: None,
            last_json: None,
            best_ledger_pss: 0,
            stretched: 0.0,
            last_tick: 0.0,
        }
    }

    /// A tick starts at `t` (s); `first` when it is the first. Charges the CPU since the last
    /// one (see [`Schedule::account`]) and notes how the budget spaces ticks.
    pub(super) fn start_tick(&mut self, t: f64, first: bool, interval: Duration) {
        self.last_tick = t;
        let cheap = self.account(t);
        if !first {
            self.budget.note_tick_cost(cheap);
            let configured = interval.as_secs_f64();
            let iv = self.budget.tick_interval(configured);
            if iv > configured * 1.05 {
                self.stretched = self.stretched.max(iv);
            }
        }
    }

    /// Charges the CPU memlens used since the last tick: this thread's to the bucket (less
    /// what the reads already paid), other threads' to the background account. Returns what
    /// the cheap part of the last tick cost.
    pub(super) fn account(&mut self, t: f64) -> f64 {
        let now = Clocks {
            thread: thread_cpu_seconds(),
            process: process_cpu_seconds(),
            charged: 0.0,
        };
        self.budget.refill(t);
        let Some(prev) = self.clocks.replace(now) else {
            return 0.0;
        };
        let on_thread = (now.thread - prev.thread).max(0.0);
        let elsewhere = (now.process - prev.process - on_thread).max(0.0);
        let cheap = (on_thread - prev.charged).max(0.0);
        self.budget.charge(cheap);
        self.budget.charge_background(elsewhere);
        cheap
    }

    /// Pays for a read that ran on this thread now, so the next reads of this tick see it.
    pub(super) fn charge_read(&mut self, cost: f64) {
        self.budget.charge(cost);
        if let Some(c) = self.clocks.as_mut() {
            c.charged += cost;
        }
    }

    /// Pays for work done on other threads (the Python view) from the background account.
    pub(super) fn charge_elsewhere(&mut self, cost: f64) {
        self.budget.charge_background(cost);
        if let Some(c) = self.clocks.as_mut() {
            c.charged += cost;
        }
    }

    /// Whether a commit is due at `t` (and counts it as done).
    pub(super) fn commit_due(&mut self, t: f64, every: Duration) -> bool {
        let due = t - self.last_commit >= every.as_secs_f64();
        if due {
            self.last_commit = t;
        }
        due
    }

    /// Whether the tree's RSS (or a PSS round) is a step above the highest ledger's.
    pub(super) fn new_high(&self, tree_rss: u64) -> bool {
        self.pss_high || tree_rss >= self.ledger_high + step(self.ledger_high)
    }

    /// How long from `now` until the next tick is due: a fixed schedule, so the interval does
    /// not drift with the cost of the reads; spaced out when the budget cannot afford the
    /// configured interval.
    pub(super) fn until_next_tick(&self, now: f64, interval: Duration) -> Duration {
        let configured = interval.as_secs_f64();
        let iv = self.budget.tick_interval(configured);
        let next = if iv <= configured * 1.001 {
            ((now / iv).floor() + 1.0) * iv
        } else {
            // Spaced out: from the last tick, not on a grid that moves with the spacing.
            (self.last_tick + iv).max(((now / configured).floor() + 1.0) * configured)
        };
        Duration::from_secs_f64((next - now).max(0.0))
    }
}
