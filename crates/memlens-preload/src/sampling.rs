//! Poisson sampling by bytes: the distance to the next sampled byte and the weight of a sample.
//!
//! Every allocated byte is a Bernoulli trial with probability 1/T (T = the mean sample
//! interval); the distance between sampled bytes is then exponential with mean T, so a thread
//! keeps a countdown of bytes to the next sample point and an allocation is sampled when the
//! point falls inside it. An allocation of `s` bytes contains at least one point with
//! probability p = 1 - exp(-s/T); weighting each sample by 1/p times its size,
//! `w = s / (1 - exp(-s/T))`, makes the sum of weights an unbiased estimate of the bytes
//! allocated (the Horvitz-Thompson estimator). This is the estimator of tcmalloc, jemalloc
//! (PROFILING_INTERNALS.md), Go's heap profiler and perfetto's heapprofd sampling design doc;
//! Datadog's Python heap profiler (dd-trace-py `_memalloc_heap.cpp`) derives the same from
//! tcmalloc. For s << T it tends to T + s/2, for s >> T to s. Distances are drawn
//! *exponential*, never Poisson-distributed (dd-trace-php PR #4160: that overestimated
//! allocations near the interval by ~50%), and large allocations are not force-sampled (Go
//! commit dc889025), so the process stays Poisson. After a sample the countdown is redrawn
//! from the end of the allocation: by memorylessness the distance to the next point is again
//! exponential with mean T (../shared/research/anchors-2026-11.md, "Sampling math").

/// The weight of a sampled allocation of `size` bytes under mean interval `mean` bytes.
pub fn weight(size: u64, mean: u64) -> f64 {
    if mean <= 1 {
        return size as f64;
    }
    let s = size as f64;
    let t = mean as f64;
    let p = -(-s / t).exp_m1(); // 1 - exp(-s/T), accurate for small s/T
    if p <= 0.0 {
        t
    } else {
        s / p
    }
}

/// A xorshift64* generator: no allocation, no lock, state in the thread's TLS.
pub fn next_u64(state: &mut u64) -> u64 {
    let mut x = *state;
    if x == 0 {
        x = 0x9E37_79B9_7F4A_7C15;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A distance in bytes to the next sample point, exponential with mean `mean` (at least 1).
pub fn next_distance(state: &mut u64, mean: u64) -> u64 {
    // u uniform in (0, 1]: 53 random bits, never 0 so ln(u) is finite.
    let u = ((next_u64(state) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let d = -(mean as f64) * u.ln();
    if d < 1.0 {
        1
    } else if d >= u64::MAX as f64 {
        u64::MAX
    } else {
        d as u64
    }
}

/// A per-thread countdown: `take(size)` says whether an allocation of `size` bytes is sampled.
#[derive(Debug, Clone, Copy)]
pub struct Countdown {
    /// Bytes left before the next sample point; 0 until first drawn.
    pub left: u64,
    /// The generator's state.
    pub rng: u64,
}

impl Countdown {
    /// Whether an allocation of `size` bytes contains the next sample point; advances.
    #[inline]
    pub fn take(&mut self, size: u64, mean: u64) -> bool {
        if self.left > size {
            self.left -= size;
            return false;
        }
        self.slow(size, mean)
    }

    #[cold]
    fn slow(&mut self, size: u64, mean: u64) -> bool {
        if self.left == 0 {
            // First use on this thread: draw where the first point lies, then decide.
            self.left = next_distance(&mut self.rng, mean);
            if self.left > size {
                self.left -= size;
                return false;
            }
        }
        self.left = next_distance(&mut self.rng, mean);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_limits() {
        assert_eq!(weight(100, 1), 100.0);
        let t = 512 * 1024;
        // s >> T: the weight is the size.
        let w = weight(100 * t, t);
        assert!((w / (100 * t) as f64 - 1.0).abs() < 1e-9);
        // s << T: T + s/2.
        let w = weight(64, t);
        assert!((w - (t as f64 + 32.0)).abs() < 1.0, "{w}");
        assert_eq!(weight(0, t), t as f64);
    }

    #[test]
    fn distances_have_the_mean() {
        let mut s = 12345;
        let n = 200_000;
        let mean = 65536u64;
        let sum: f64 = (0..n).map(|_| next_distance(&mut s, mean) as f64).sum();
        let m = sum / n as f64;
        // Standard error of the mean of an exponential: mean/sqrt(n) = 0.22%.
        assert!((m / mean as f64 - 1.0).abs() < 0.01, "{m}");
    }

    /// The estimator is unbiased: a stream of mixed sizes, sampled, sums to its bytes.
    #[test]
    fn estimate_is_unbiased() {
        let mean = 64 * 1024;
        let mut c = Countdown { left: 0, rng: 99 };
        let mut rng = 7u64;
        let (mut truth, mut est) = (0u64, 0f64);
        for _ in 0..400_000 {
            let size = 16 + next_u64(&mut rng) % (256 * 1024);
            truth += size;
            if c.take(size, mean) {
                est += weight(size, mean);
            }
        }
        let err = est / truth as f64 - 1.0;
        assert!(err.abs() < 0.01, "relative error {err}");
    }
}
