//! Live traced bytes by stack over time ([`OverTime`]), from the `site` rows of every
//! snapshot: each stack's live bytes are its last `site` row at or before a time (the tracer
//! writes a stack's row only when its figures changed), summed over the processes whose
//! stacks have the same frames and domain, and 0 once its process wrote `end` and that time
//! has passed.

use std::collections::HashMap;

use memlens_model::allocations::{Domain, Frame, OverTime, StackSeries};

use crate::trace_store::Loaded;

/// The series of a run's traces (empty without snapshots).
pub(crate) fn over_time(traces: &[Loaded]) -> OverTime {
    let mut times: Vec<f64> = traces
        .iter()
        .flat_map(|tr| tr.snaps.iter().map(|s| s.t))
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    if times.is_empty() {
        return OverTime::default();
    }
    // Each (trace, stack) to its key: the same frames and domain in any process.
    let mut index: HashMap<(Domain, Vec<Frame>), usize> = HashMap::new();
    let mut keys: Vec<(Domain, Vec<Frame>, Vec<u32>)> = Vec::new();
    let mut slot: Vec<HashMap<u32, usize>> = vec![HashMap::new(); traces.len()];
    for (k, tr) in traces.iter().enumerate() {
        for s in &tr.sites {
            if slot[k].contains_key(&s.stack) {
                continue;
            }
            let (domain, frames) = tr.stack(s.stack);
            let key = *index.entry((domain, frames.clone())).or_insert_with(|| {
                keys.push((domain, frames, Vec::new()));
                keys.len() - 1
            });
            if !keys[key].2.contains(&tr.row.pid) {
                keys[key].2.push(tr.row.pid);
            }
            slot[k].insert(s.stack, key);
        }
    }
    let total: Vec<u64> = times
        .iter()
        .map(|&t| {
            traces
                .iter()
                .filter_map(|tr| tr.live_at(t))
                .map(|s| s.live)
                .fold(0u64, u64::saturating_add)
        })
        .collect();
    // Pass 1: each key's highest sum.
    let mut max: Vec<(u64, f64)> = vec![(0, 0.0); keys.len()];
    let mut sweep = Sweep::new(traces, &slot, keys.len());
    for &t in &times {
        sweep.advance(t, |key, sum| {
            if sum > max[key].0 {
                max[key] = (sum, t);
            }
        });
    }
    let mut order: Vec<usize> = (0..keys.len()).filter(|&k| max[k].0 > 0).collect();
    order.sort_by(|&a, &b| max[b].0.cmp(&max[a].0).then(a.cmp(&b)));
    order.truncate(OverTime::MAX_STACKS);
    // The times kept: all, or the one with the most live bytes in each equal run of them.
    let n = times.len();
    let keep: Vec<bool> = if n <= OverTime::MAX_POINTS {
        vec![true; n]
    } else {
        let mut keep = vec![false; n];
        let m = OverTime::MAX_POINTS;
        for b in 0..m {
            let (lo, hi) = (b * n / m, ((b + 1) * n / m).max(b * n / m + 1));
            let best = (lo..hi.min(n)).max_by_key(|&i| total[i]).unwrap_or(lo);
            keep[best] = true;
        }
        keep
    };
    // Pass 2: the kept stacks' sums at the kept times.
    let mut out = OverTime {
        snapshots: n as u64,
        stacks: order
            .iter()
            .map(|&k| StackSeries {
                frames: keys[k].1.clone(),
                domain: keys[k].0,
                pids: keys[k].2.clone(),
                max_bytes: max[k].0,
                max_t: max[k].1,
                bytes: Vec::new(),
            })
            .collect(),
        ..OverTime::default()
    };
    let mut sweep = Sweep::new(traces, &slot, keys.len());
    for (i, &t) in times.iter().enumerate() {
        sweep.advance(t, |_, _| {});
        if !keep[i] {
            continue;
        }
        out.t.push(t);
        out.live_bytes.push(total[i]);
        let mut drawn = 0u64;
        for (s, &k) in out.stacks.iter_mut().zip(&order) {
            let v = sweep.sums[k];
            drawn = drawn.saturating_add(v);
            s.bytes.push(v);
        }
        out.other_bytes.push(total[i].saturating_sub(drawn));
    }
    out
}

/// Every stack's live bytes as time moves forward.
struct Sweep<'a> {
    traces: &'a [Loaded],
    slot: &'a [HashMap<u32, usize>],
    /// The next site row of each trace.
    pos: Vec<usize>,
    /// Each trace's stacks' current live bytes.
    current: Vec<HashMap<u32, u64>>,
    /// Traces past their `end`.
    gone: Vec<bool>,
    /// Each key's sum.
    sums: Vec<u64>,
}

impl<'a> Sweep<'a> {
    fn new(traces: &'a [Loaded], slot: &'a [HashMap<u32, usize>], keys: usize) -> Sweep<'a> {
        Sweep {
            traces,
            slot,
            pos: vec![0; traces.len()],
            current: vec![HashMap::new(); traces.len()],
            gone: vec![false; traces.len()],
            sums: vec![0; keys],
        }
    }

    /// Applies every site row at or before `t`, and the end of the traces that ended before
    /// it; `changed(key, sum)` is told each new sum.
    fn advance(&mut self, t: f64, mut changed: impl FnMut(usize, u64)) {
        for (k, tr) in self.traces.iter().enumerate() {
            while let Some(s) = tr.sites.get(self.pos[k]).filter(|s| s.t <= t) {
                self.pos[k] += 1;
                let Some(&key) = self.slot[k].get(&s.stack) else {
                    continue;
                };
                let old = self.current[k].insert(s.stack, s.live).unwrap_or(0);
                let sum = &mut self.sums[key];
                *sum = sum.saturating_sub(old).saturating_add(s.live);
                changed(key, *sum);
            }
            let ended = tr.snaps.last().is_some_and(|e| e.at_end && e.t < t);
            if ended && !self.gone[k] {
                self.gone[k] = true;
                for (stack, live) in self.current[k].drain() {
                    if let Some(&key) = self.slot[k].get(&stack) {
                        let sum = &mut self.sums[key];
                        *sum = sum.saturating_sub(live);
                        changed(key, *sum);
                    }
                }
            }
        }
    }
}
