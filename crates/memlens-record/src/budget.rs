//! The CPU budget of the sampler, a ceiling on the share of one core memlens spends recording.
//!
//! A token bucket of CPU seconds fills at the budget's rate and pays, in order of priority:
//! the cheap counters of every tick (paid after the fact; when they alone would take more than
//! a third of the rate, ticks are spaced out), a ledger at a new high of the tree, PSS reads,
//! periodic ledgers and Python samples (each started only when the bucket holds its predicted
//! cost, and the last three only while one ledger's cost stays in reserve).
//!
//! Work whose cost is known only afterwards, or that no schedule of the sampler's controls,
//! goes to a second account, the background's: attaching to an interpreter, censuses, and the
//! CPU of memlens's other threads. It earns nothing of its own: it is paid back from what the
//! bucket holds beyond one ledger's reserve, after the sampler's own reads, and from what the
//! bucket cannot hold. A census may start only while it is out of debt and may put it into
//! debt; so a census never delays a PSS read or a ledger, and the whole stays within the
//! budget plus one census.
//!
//! Costs are predicted from the work they scale with ([`CostModel`]): resident memory (the
//! kernel walks page tables), threads (a ledger reads each thread's stack pointer), processes.

/// The counters of a tick may use at most this part of the budget; beyond it, ticks are
/// spaced out (the rest is for the reads that explain the memory, a ledger at a new high
/// first).
const COUNTER_SHARE: f64 = 1.0 / 3.0;

/// Ticks whose cost is averaged before the average may space the ticks out.
const SETTLE_TICKS: u32 = 50;

/// What the background account may hold in advance.
const BACKGROUND_CAP: f64 = 0.01;

/// The bucket and the background account.
#[derive(Debug, Clone)]
pub struct Budget {
    share: f64,
    tokens: f64,
    cap: f64,
    background: f64,
    last_t: Option<f64>,
    tick_cost: Option<f64>,
    ticks_noted: u32,
}

impl Budget {
    /// A budget of `share` of one core (0.02 = 2 %). The bucket starts full: up to two seconds
    /// of budget, and at least 50 ms, may be spent in a burst (the first reads of a new tree
    /// would otherwise put a short program's whole run in debt).
    pub fn new(share: f64) -> Self {
        let share = share.clamp(0.0001, 1.0);
        let cap = (share * 2.0).max(0.05);
        Budget {
            share,
            tokens: cap,
            cap,
            background: BACKGROUND_CAP,
            last_t: None,
            tick_cost: None,
            ticks_noted: 0,
        }
    }

    /// The share of one core memlens may spend.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Adds what the time since the last call earned; what the bucket cannot hold pays the
    /// background account back.
    pub fn refill(&mut self, t: f64) {
        let dt = match self.last_t {
            Some(last) => (t - last).max(0.0),
            None => 0.0,
        };
        self.last_t = Some(t);
        let earned = self.tokens + dt * self.share;
        self.tokens = earned.min(self.cap);
        let spare = (earned - self.tokens).max(0.0);
        self.background = (self.background + spare).min(BACKGROUND_CAP);
    }

    /// Pays the bucket for work already done (may go into debt).
    pub fn charge(&mut self, seconds: f64) {
        self.tokens -= seconds.max(0.0);
    }

    /// Pays the background account for work already done (may go into debt).
    pub fn charge_background(&mut self, seconds: f64) {
        self.background -= seconds.max(0.0);
    }

    /// Records what one tick's counters cost (moving average), for the tick spacing.
    pub fn note_tick_cost(&mut self, seconds: f64) {
        let s = seconds.max(0.0);
        self.ticks_noted += 1;
        self.tick_cost = Some(0.95 * self.tick_cost.unwrap_or(0.0) + 0.05 * s);
    }

    /// What one tick's counters cost (moving average, seconds).
    pub fn tick_cost(&self) -> f64 {
        self.tick_cost.unwrap_or(0.0)
    }

    /// The interval between ticks: the configured one, or longer when the counters alone
    /// would take more than a third of the budget at that pace.
    pub fn tick_interval(&self, configured: f64) -> f64 {
        // Not before the average means something: the first ticks pay for setting up
        // (statements prepared, files opened, the first commit), from the bucket's start.
        if self.ticks_noted < SETTLE_TICKS {
            return configured;
        }
        configured.max(self.tick_cost() / (self.share * COUNTER_SHARE))
    }

    /// The rate (share of a core) left for expensive reads once the counters are paid.
    pub fn expensive_rate(&self) -> f64 {
        self.share * (1.0 - COUNTER_SHARE)
    }

    /// Whether the bucket holds `cost` and still `reserve` after it.
    pub fn affords(&self, cost: f64, reserve: f64) -> bool {
        self.tokens - cost >= reserve
    }

    /// Makes room in the bucket for a read of `cost` with `reserve` kept: without it, a read
    /// predicted to cost more than the bucket holds at most would never start.
    pub fn fit(&mut self, cost: f64, reserve: f64) {
        self.cap = self.cap.max((cost + reserve) * 1.25);
    }

    /// Pays the background account's debt from what the bucket holds beyond `reserve` (what
    /// the reads of the sampler keep for a ledger at a new high).
    pub fn repay(&mut self, reserve: f64) {
        let spare = (self.tokens - reserve.max(0.0)).max(0.0);
        let pay = spare.min((BACKGROUND_CAP - self.background).max(0.0));
        self.tokens -= pay;
        self.background += pay;
    }

    /// Whether the background account is out of debt (a census may start).
    pub fn background_clear(&self) -> bool {
        self.background >= 0.0
    }

    /// Tokens of the bucket (tests and logs).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// The background account (tests and logs).
    pub fn background(&self) -> f64 {
        self.background
    }
}

/// The predicted CPU cost of a kind of read, `fixed + per_unit × units`, where units count what
/// the cost scales with. Both are fitted to the reads already made (least squares over a
/// decaying window, so a tree that changes shape is followed), pulled toward a prior guess:
/// reads all of about one size say little about the slope, and a tree that suddenly has 2,000
/// threads must not be predicted from the noise of reads with ten.
#[derive(Debug, Clone)]
pub struct CostModel {
    fixed0: f64,
    per_unit0: f64,
    /// Decayed sums of 1, u, c, u², u·c over the reads.
    n: f64,
    su: f64,
    sc: f64,
    suu: f64,
    suc: f64,
}

/// Weight of the prior: the fixed part counts as one read, the slope as one read of this many
/// units.
const PRIOR_UNITS: f64 = 100.0;

impl CostModel {
    /// A model starting from a guess: `fixed` seconds a read plus `per_unit` seconds a unit.
    pub fn new(fixed: f64, per_unit: f64) -> Self {
        CostModel {
            fixed0: fixed,
            per_unit0: per_unit,
            n: 0.0,
            su: 0.0,
            sc: 0.0,
            suu: 0.0,
            suc: 0.0,
        }
    }

    /// The fitted `(fixed, per_unit)`.
    fn fit(&self) -> (f64, f64) {
        // Ridge regression toward the guess: the normal equations with one pseudo-read for
        // the fixed part and PRIOR_UNITS² of weight on the slope.
        let (lf, ls) = (1.0, PRIOR_UNITS * PRIOR_UNITS);
        let a = self.n + lf;
        let b = self.su;
        let d = self.suu + ls;
        let e = self.sc + lf * self.fixed0;
        let g = self.suc + ls * self.per_unit0;
        let det = a * d - b * b;
        if det.abs() < 1e-12 {
            return (self.fixed0, self.per_unit0);
        }
        let fixed = (e * d - b * g) / det;
        let slope = (a * g - b * e) / det;
        (fixed.max(0.0), slope.max(0.0))
    }

    /// Predicted seconds for `units` of work.
    pub fn predict(&self, units: f64) -> f64 {
        let (fixed, slope) = self.fit();
        fixed + slope * units.max(0.0)
    }

    /// Learns from a read of `units` that cost `seconds`.
    pub fn learn(&mut self, units: f64, seconds: f64) {
        let (u, c) = (units.max(0.0), seconds.max(0.0));
        const KEEP: f64 = 0.9;
        self.n = self.n * KEEP + 1.0;
        self.su = self.su * KEEP + u;
        self.sc = self.sc * KEEP + c;
        self.suu = self.suu * KEEP + u * u;
        self.suc = self.suc * KEEP + u * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `secs` of 10 ms ticks where counters cost `counter` s a tick and a read costs
    /// `read` s, started whenever affordable; returns (CPU spent, reads).
    fn simulate(b: &mut Budget, secs: f64, counter: f64, read: f64) -> (f64, u32) {
        let (mut spent, mut reads, mut t) = (0.0, 0, 0.0);
        let mut next_tick = 0.0;
        while t < secs {
            b.refill(t);
            if t >= next_tick {
                b.charge(counter);
                b.note_tick_cost(counter);
                spent += counter;
                next_tick = t + b.tick_interval(0.01);
            }
            b.fit(read, 0.0);
            if b.affords(read, 0.0) {
                b.charge(read);
                spent += read;
                reads += 1;
            }
            t += 0.001;
        }
        (spent, reads)
    }

    #[test]
    fn the_budget_is_a_ceiling_however_costly_the_reads() {
        // 10 ms reads at 2 % over 100 s: about 200 fit, and never more than the share plus
        // the burst allowance.
        let mut b = Budget::new(0.02);
        let (spent, reads) = simulate(&mut b, 100.0, 0.000_05, 0.010);
        assert!(spent <= 0.02 * 100.0 + 0.05 + 0.010, "spent {spent}");
        assert!(reads >= 100, "only {reads} reads");
        // A read that costs more than the bucket holds still runs, at its budgeted pace.
        let mut b = Budget::new(0.02);
        let (spent, reads) = simulate(&mut b, 100.0, 0.0, 0.5);
        assert!(spent <= 0.02 * 100.0 + 0.7, "spent {spent}");
        assert!(reads >= 3, "only {reads} reads");
    }

    #[test]
    fn counters_that_cost_more_than_the_budget_space_the_ticks() {
        // Counters of 1 ms a tick at 100 Hz would be 10 % of a core; the ticks are spaced so
        // the whole stays within the 2 % share.
        let mut b = Budget::new(0.02);
        let (spent, _) = simulate(&mut b, 100.0, 0.001, 0.002);
        assert!(spent <= 0.02 * 100.0 * 1.05 + 0.05, "spent {spent}");
        assert!(b.tick_interval(0.01) >= 0.09, "{}", b.tick_interval(0.01));
    }

    #[test]
    fn background_debt_is_repaid_from_what_the_bucket_can_spare() {
        let mut b = Budget::new(0.02);
        b.refill(0.0);
        // 10 ms held in advance, 30 ms spent: 20 ms of debt.
        b.charge_background(0.03);
        // The bucket holds 50 ms; with 40 ms kept for a ledger, 10 ms go to the debt.
        b.repay(0.04);
        assert!((b.background() + 0.01).abs() < 1e-9, "{}", b.background());
        assert!((b.tokens() - 0.04).abs() < 1e-9);
        b.repay(0.0);
        assert!(b.background_clear());
    }

    #[test]
    fn background_debt_is_repaid_only_by_what_the_bucket_cannot_hold() {
        let mut b = Budget::new(0.02);
        b.refill(0.0);
        assert!(b.background_clear());
        // A census of 1 s: the background is in debt, the bucket untouched.
        b.charge_background(1.0);
        assert!(!b.background_clear());
        assert!(b.affords(0.04, 0.0));
        // A busy tree spends all it earns: the debt stays.
        for k in 1..=100 {
            b.refill(f64::from(k));
            b.charge(0.02);
        }
        assert!(!b.background_clear());
        // A quiet one lets it be repaid: 1 s at 2 % takes 50 s.
        b.refill(140.0);
        assert!(!b.background_clear());
        b.refill(160.0);
        assert!(b.background_clear());
    }

    #[test]
    fn cost_models_learn_a_fixed_part_and_a_slope() {
        // 2 ms fixed + 10 µs a unit, read as the tree grows from 10 to 400 units.
        let mut m = CostModel::new(1e-3, 2e-5);
        for u in (10..400).step_by(10) {
            m.learn(f64::from(u), 0.002 + 1e-5 * f64::from(u));
        }
        // 12 ms, extrapolated from the recent reads (300-400 units) with the guess's pull: a
        // little high rather than low.
        let p = m.predict(1000.0);
        assert!((0.0115..0.015).contains(&p), "{p}");
        assert!((m.predict(400.0) - 0.006).abs() < 0.000_5);
    }

    #[test]
    fn noisy_small_reads_do_not_make_a_large_one_look_huge() {
        // Reads of 20-30 units costing 3-30 ms (noise on a loaded machine): a read of 2,000
        // units is not predicted from that slope.
        let mut m = CostModel::new(1e-3, 2e-5);
        for (u, c) in [
            (26.0, 0.0069),
            (32.0, 0.0296),
            (28.0, 0.0125),
            (30.0, 0.0035),
        ] {
            m.learn(u, c);
        }
        let p = m.predict(2000.0);
        assert!(p < 0.2, "{p}");
        // Once a large read has been seen, its cost is learnt.
        for _ in 0..5 {
            m.learn(2000.0, 0.06);
        }
        let p = m.predict(2000.0);
        assert!((p - 0.06).abs() < 0.01, "{p}");
    }
}
