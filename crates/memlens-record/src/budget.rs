//! The CPU budget of the sampler: a token bucket of CPU seconds. The cheap counters are paid
//! first; PSS reads, ledgers and the Python view spend what is left, never less than a quarter
//! of the budget so PSS is still read when the counters alone cost more.

/// Token bucket of CPU seconds.
#[derive(Debug, Clone)]
pub struct Budget {
    share: f64,
    tokens: f64,
    cap: f64,
    last_t: Option<f64>,
    counter_rate: f64,
}

impl Budget {
    /// A budget of `share` of one core (0.025 = 2.5 %).
    pub fn new(share: f64) -> Self {
        let share = share.clamp(0.0001, 1.0);
        // Up to two seconds of budget, and at least 50 ms, may be saved for a burst: the first
        // reads of a new tree (attaching to an interpreter reads its binary, ~20 ms) would
        // otherwise put a short program's whole run in debt. Over a long run it is noise.
        let cap = (share * 2.0).max(0.05);
        Budget {
            share,
            tokens: cap,
            cap,
            last_t: None,
            counter_rate: 0.0,
        }
    }

    /// Adds what the time since the last call earned, after paying `counter_cost` seconds of
    /// cheap reads.
    pub fn refill(&mut self, t: f64, counter_cost: f64) {
        let dt = match self.last_t {
            Some(last) => (t - last).max(0.0),
            None => 0.0,
        };
        self.last_t = Some(t);
        if dt <= 0.0 {
            return;
        }
        let rate = counter_cost.max(0.0) / dt;
        self.counter_rate = 0.9 * self.counter_rate + 0.1 * rate;
        self.tokens = (self.tokens + dt * self.expensive_rate()).min(self.cap);
    }

    /// The share of a core left for expensive reads: the budget minus the counters, never
    /// less than a quarter of the budget.
    pub fn expensive_rate(&self) -> f64 {
        (self.share - self.counter_rate).max(self.share * 0.25)
    }

    /// Whether an expensive read may start now.
    pub fn allows(&self) -> bool {
        self.tokens > 0.0
    }

    /// Pays for a read that cost `seconds` of CPU (may go into debt: the next waits longer).
    pub fn charge(&mut self, seconds: f64) {
        self.tokens -= seconds.max(0.0);
    }

    /// The share of one core spent on cheap counters (moving average).
    pub fn counter_share(&self) -> f64 {
        self.counter_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_spend_stays_within_the_share() {
        // Each read costs 10 ms; at 2.5 % of a core, over 100 s about 250 reads fit.
        let mut b = Budget::new(0.025);
        let mut spent = 0.0;
        let mut reads = 0;
        for k in 0..10_000 {
            let t = k as f64 * 0.01;
            b.refill(t, 0.0);
            while b.allows() {
                b.charge(0.010);
                spent += 0.010;
                reads += 1;
            }
        }
        assert!(spent <= 0.025 * 100.0 + 0.05 + 0.010, "spent {spent}");
        assert!(reads >= 240, "only {reads} reads");
    }

    #[test]
    fn counters_first_but_a_floor_remains() {
        let mut b = Budget::new(0.02);
        let mut reads = 0;
        for k in 0..10_000 {
            let t = k as f64 * 0.01;
            // Counters cost 3 % alone: more than the whole budget.
            b.refill(t, 0.0003);
            while b.allows() {
                b.charge(0.001);
                reads += 1;
            }
        }
        // A quarter of 2 % over 100 s is 0.5 s: about 500 reads of 1 ms.
        assert!((450..=560).contains(&reads), "{reads} reads");
    }
}
