//! Growth phases of a series: stretches where memory rose steadily, with their rate.

use serde::Serialize;

/// A stretch of time where the tree's memory grew.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    /// Start (s).
    pub start_seconds: f64,
    /// End (s).
    pub end_seconds: f64,
    /// Least-squares slope of the series over the phase (bytes per second).
    pub rate_bytes_per_second: f64,
    /// Net growth from start to end (bytes).
    pub bytes: u64,
}

/// Finds the growth phases of `(t, value)` points sorted by time. `resolution` is the smallest
/// time step worth looking at (the sampling interval).
pub fn phases(points: &[(f64, u64)], resolution: f64) -> Vec<Phase> {
    if points.len() < 3 {
        return Vec::new();
    }
    let t0 = points[0].0;
    let t1 = points[points.len() - 1].0;
    let duration = (t1 - t0).max(resolution);
    let peak = points.iter().map(|p| p.1).max().unwrap_or(0);
    // Buckets: fine enough to see a phase, coarse enough to average sampling noise.
    let width = resolution.max(duration / 200.0).max(0.05);
    let n = ((duration / width).ceil() as usize).max(1) + 1;
    let mut sum = vec![0f64; n];
    let mut cnt = vec![0u32; n];
    for &(t, v) in points {
        let b = (((t - t0) / width) as usize).min(n - 1);
        sum[b] += v as f64;
        cnt[b] += 1;
    }
    let buckets: Vec<(f64, f64)> = (0..n)
        .filter(|&b| cnt[b] > 0)
        .map(|b| (t0 + (b as f64 + 0.5) * width, sum[b] / f64::from(cnt[b])))
        .collect();
    if buckets.len() < 2 {
        return Vec::new();
    }
    // A phase must grow faster than this: 64 KiB/s, or 5 % of the peak over the whole run.
    let threshold = (64.0 * 1024.0_f64).max(0.05 * peak as f64 / duration);
    // Slope over a centred window of five buckets, so jitter does not look like growth.
    let m = buckets.len();
    let growing: Vec<bool> = (0..m)
        .map(|i| {
            let (a, b) = (i.saturating_sub(2), (i + 2).min(m - 1));
            a < b && (buckets[b].1 - buckets[a].1) / (buckets[b].0 - buckets[a].0) > threshold
        })
        .collect();
    let step_grows = |i: usize| buckets[i + 1].1 - buckets[i].1 > threshold * width * 0.5;
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < m {
        if !growing[i] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < m && growing[j + 1] {
            j += 1;
        }
        // The window smears the edges: trim flat steps at both ends.
        let (mut a, mut b) = (i, j);
        while a < b && !step_grows(a) {
            a += 1;
        }
        while b > a && !step_grows(b - 1) {
            b -= 1;
        }
        if a < b {
            runs.push((a, b));
        }
        i = j + 1;
    }
    let min_net = (1u64 << 20).max(peak / 50) as f64;
    runs.into_iter()
        .filter_map(|(a, b)| {
            let (ts, vs) = buckets[a];
            let (te, ve) = buckets[b];
            let net = ve - vs;
            if net < min_net {
                return None;
            }
            // The rate from the raw points inside the phase (least squares), or the net rate
            // when the phase is a step shorter than a few samples.
            let inside: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.0 >= ts && p.0 <= te)
                .map(|&(t, v)| (t, v as f64))
                .collect();
            let rate = slope(&inside).unwrap_or(net / (te - ts).max(resolution));
            Some(Phase {
                start_seconds: ts,
                end_seconds: te,
                rate_bytes_per_second: rate,
                bytes: net as u64,
            })
        })
        .collect()
}

/// Least-squares slope of points; `None` with fewer than 4 points or no time spread.
fn slope(p: &[(f64, f64)]) -> Option<f64> {
    if p.len() < 4 {
        return None;
    }
    let n = p.len() as f64;
    let mt = p.iter().map(|x| x.0).sum::<f64>() / n;
    let mv = p.iter().map(|x| x.1).sum::<f64>() / n;
    let cov: f64 = p.iter().map(|x| (x.0 - mt) * (x.1 - mv)).sum();
    let var: f64 = p.iter().map(|x| (x.0 - mt) * (x.0 - mt)).sum();
    (var > 0.0).then(|| cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_steady_leak_and_its_rate() {
        // Flat 10 MiB for 1 s, +20 MiB/s for 3 s, flat 1 s; samples every 10 ms with jitter.
        let mut pts = Vec::new();
        for k in 0..500 {
            let t = k as f64 * 0.01;
            let base = 10u64 << 20;
            let grow = if t < 1.0 {
                0.0
            } else if t < 4.0 {
                (t - 1.0) * 20.0 * 1048576.0
            } else {
                60.0 * 1048576.0
            };
            let jitter = ((k * 7919) % 13) as u64 * 4096;
            pts.push((t, base + grow as u64 + jitter));
        }
        let ph = phases(&pts, 0.01);
        assert_eq!(ph.len(), 1, "{ph:?}");
        let p = ph[0];
        assert!((p.start_seconds - 1.0).abs() < 0.1, "{p:?}");
        assert!((p.end_seconds - 4.0).abs() < 0.1, "{p:?}");
        let rate = p.rate_bytes_per_second / 1048576.0;
        assert!((rate - 20.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn flat_series_has_no_phase_and_short_input_is_fine() {
        let pts: Vec<(f64, u64)> = (0..100).map(|k| (k as f64 * 0.01, 5 << 20)).collect();
        assert!(phases(&pts, 0.01).is_empty());
        assert!(phases(&[], 0.01).is_empty());
        assert!(phases(&[(0.0, 1)], 0.01).is_empty());
    }

    #[test]
    fn a_step_is_a_short_phase() {
        let pts: Vec<(f64, u64)> = (0..200)
            .map(|k| (k as f64 * 0.01, if k < 100 { 1 << 20 } else { 200 << 20 }))
            .collect();
        let ph = phases(&pts, 0.01);
        assert_eq!(ph.len(), 1, "{ph:?}");
        assert!(ph[0].bytes > 190 << 20);
    }
}
