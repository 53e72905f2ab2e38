//! The leak verdict (docs/leaks.md): whether memory grows steadily over the last part of a
//! series, as a leak does, rather than growing and then stopping (a plateau: a cache filled, a
//! pool warmed up). Used by `report`/`run` on the tree's total and by `census --growth` on the
//! process's PSS.
//!
//! The rule, on `(t, bytes)` points:
//! - the window is the last half of the series' span; it needs at least [`MIN_POINTS`] points
//!   and [`MIN_WINDOW_S`] seconds, else the verdict is `too-short`;
//! - a least-squares line over the window gives the slope and R²; the growth is slope x
//!   window;
//! - it is a `leak` when the slope is positive, R² ≥ [`MIN_R2`], the growth is at least
//!   [`MIN_GROWTH`] bytes and [`MIN_GROWTH_FRACTION`] of the window's mean, and the last half
//!   of the window still grows at least [`TAIL_RATIO`] as fast as the whole window (a series
//!   that grew then stopped inside the window fails this); otherwise `no-leak`.

use serde::Serialize;

use memlens_recording::reader::Recording;

/// Points a window needs.
pub const MIN_POINTS: usize = 8;
/// Seconds a window needs.
pub const MIN_WINDOW_S: f64 = 1.0;
/// The fit must explain this much of the variance (a steady line).
pub const MIN_R2: f64 = 0.9;
/// Growth over the window, at least (bytes).
pub const MIN_GROWTH: f64 = (1u64 << 20) as f64;
/// Growth over the window, at least this fraction of the window's mean.
pub const MIN_GROWTH_FRACTION: f64 = 0.02;
/// The last half of the window must grow at least this fraction of the window's slope.
pub const TAIL_RATIO: f64 = 0.5;
/// Types listed, at most.
pub const MAX_TYPES: usize = 10;

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Grows steadily over the window.
    Leak,
    /// Does not (flat, shrinking, noisy, or grew then stopped).
    NoLeak,
    /// Too few points or seconds to say.
    TooShort,
}

/// A least-squares fit of a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// The verdict.
    pub verdict: Verdict,
    /// Slope over the window (bytes per second).
    pub slope_bytes_per_s: f64,
    /// Slope over the window's last half (bytes per second).
    pub tail_slope_bytes_per_s: f64,
    /// R² of the line over the window.
    pub r2: f64,
    /// The window (s).
    pub window_s: f64,
    /// Slope x window (bytes; negative when it shrank).
    pub growth_bytes: i64,
}

/// A type whose census bytes grew over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeGrowth {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects gained.
    pub count_delta: i64,
    /// `sys.getsizeof` bytes gained.
    pub bytes_delta: i64,
}

/// The verdict on a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leak {
    /// The fit of the tree's total.
    #[serde(flatten)]
    pub fit: Fit,
    /// The series judged: `cgroup` or `pss` (the one growth phases use).
    pub series: &'static str,
    /// The process whose memory grew most over the window.
    pub pid: Option<u32>,
    /// The ledger category whose PSS grew most over the window (from the ledgers taken in
    /// it; `None` with fewer than two).
    pub category: Option<String>,
    /// Its growth over the window (bytes, first to last ledger in it).
    pub category_growth_bytes: Option<i64>,
    /// Types whose census bytes grew most over the window (first to last census of `pid` in
    /// it; empty without two censuses, `--census-every`).
    pub types: Vec<TypeGrowth>,
}

fn line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
    let stt: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let stv: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
    let svv: f64 = points.iter().map(|p| (p.1 - mv).powi(2)).sum();
    if stt <= 0.0 {
        return None;
    }
    let slope = stv / stt;
    let r2 = if svv > 0.0 {
        (stv * stv) / (stt * svv)
    } else {
        0.0
    };
    Some((slope, r2))
}

/// Judges `(t, bytes)` points sorted by time (see the module's rule).
pub fn judge(points: &[(f64, u64)]) -> Fit {
    let short = |window_s: f64| Fit {
        verdict: Verdict::TooShort,
        slope_bytes_per_s: 0.0,
        tail_slope_bytes_per_s: 0.0,
        r2: 0.0,
        window_s,
        growth_bytes: 0,
    };
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return short(0.0);
    };
    let start = last.0 - (last.0 - first.0) / 2.0;
    let window: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= start)
        .map(|p| (p.0, p.1 as f64))
        .collect();
    let window_s = last.0 - start;
    if window.len() < MIN_POINTS || window_s < MIN_WINDOW_S {
        return short(window_s);
    }
    let Some((slope, r2)) = line(&window) else {
        return short(window_s);
    };
    let mid = start + window_s / 2.0;
    let tail: Vec<(f64, f64)> = window.iter().copied().filter(|p| p.0 >= mid).collect();
    let tail_slope = line(&tail).map_or(0.0, |l| l.0);
    let growth = slope * window_s;
    let mean = window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64;
    let leak = slope > 0.0
        && r2 >= MIN_R2
        && growth >= MIN_GROWTH
        && growth >= MIN_GROWTH_FRACTION * mean
        && tail_slope >= TAIL_RATIO * slope;
    Fit {
        verdict: if leak { Verdict::Leak } else { Verdict::NoLeak },
        slope_bytes_per_s: slope,
        tail_slope_bytes_per_s: tail_slope,
        r2,
        window_s,
        growth_bytes: growth as i64,
    }
}

/// The verdict on a recording: the fit of `total` (the tree's series named `series`), and
/// where it grew.
pub fn of_recording(rec: &Recording, series: &'static str, total: &[(f64, u64)]) -> Leak {
    let fit = judge(total);
    let start = match (total.first(), total.last()) {
        (Some(a), Some(b)) => b.0 - (b.0 - a.0) / 2.0,
        _ => 0.0,
    };
    // the process that grew most: last minus first sample in the window
    let mut best: Option<(u32, i64, i64)> = None;
    for p in &rec.processes {
        let s = rec.samples_of(p.id);
        let k = s.partition_point(|x| x.t < start);
        let before = if k > 0 { s.get(k - 1) } else { s.first() };
        let (Some(a), Some(b)) = (before, s.last()) else {
            continue;
        };
        let grew = b.counters.rss as i64 - a.counters.rss as i64;
        if best.is_none_or(|(_, g, _)| grew > g) {
            best = Some((p.pid, grew, p.id));
        }
    }
    let pid = best.map(|b| b.0);
    // the ledger category that grew most
    let ledgers: Vec<_> = rec.ledgers.iter().filter(|l| l.t >= start).collect();
    let (mut category, mut category_growth) = (None, None);
    if let (Some(a), Some(b)) = (ledgers.first(), ledgers.last()) {
        if ledgers.len() >= 2 {
            let pss = |l: &memlens_recording::reader::LedgerRow, c: &str| {
                l.categories
                    .iter()
                    .find(|(n, _)| n == c)
                    .map_or(0, |(_, a)| a.pss as i64)
            };
            let mut names: Vec<&String> = b.categories.iter().map(|(n, _)| n).collect();
            names.extend(a.categories.iter().map(|(n, _)| n));
            for n in names {
                let g = pss(b, n) - pss(a, n);
                if category_growth.is_none_or(|best| g > best) {
                    category = Some(n.clone());
                    category_growth = Some(g);
                }
            }
        }
    }
    // the types that grew most, between the first and last census of that process in the window
    let mut types = Vec::new();
    if let Some((_, _, id)) = best {
        let censuses: Vec<_> = rec
            .python
            .iter()
            .filter(|r| r.process == id && !r.sample.census.is_empty())
            .collect();
        let k = censuses.partition_point(|r| r.t < start);
        let first = if k > 0 {
            censuses.get(k - 1)
        } else {
            censuses.first()
        };
        if let (Some(a), Some(b)) = (first, censuses.last()) {
            if a.t < b.t {
                types = grown(&a.sample.census, &b.sample.census);
            }
        }
    }
    Leak {
        fit,
        series,
        pid,
        category,
        category_growth_bytes: category_growth,
        types,
    }
}

/// Types whose bytes grew from `a` to `b`, most first (at most [`MAX_TYPES`]). A type in `b`
/// but not in `a`'s top list counts from 0 (the recorded census lists only the top types).
pub fn grown(
    a: &[memlens_recording::CensusEntry],
    b: &[memlens_recording::CensusEntry],
) -> Vec<TypeGrowth> {
    let mut out: Vec<TypeGrowth> = b
        .iter()
        .map(|e| {
            let before = a.iter().find(|x| x.type_name == e.type_name);
            TypeGrowth {
                type_name: e.type_name.clone(),
                count_delta: e.count as i64 - before.map_or(0, |x| x.count as i64),
                bytes_delta: e.bytes as i64 - before.map_or(0, |x| x.bytes as i64),
            }
        })
        .filter(|t| t.bytes_delta > 0)
        .collect();
    out.sort_by(|x, y| {
        y.bytes_delta
            .cmp(&x.bytes_delta)
            .then_with(|| x.type_name.cmp(&y.type_name))
    });
    out.truncate(MAX_TYPES);
    out
}

/// One line of text: `leak: yes, +1.2 MiB/s over the last 10 s (R² 0.99) in python-heap, pid
/// 123, types: Item +1.0 MiB`.
pub fn words(l: &Leak, style: memlens_model::units::SizeStyle) -> String {
    let f = &l.fit;
    match f.verdict {
        Verdict::TooShort => format!(
            "leak:    too short to say (a verdict needs {MIN_POINTS} samples over at least {MIN_WINDOW_S} s in the last half of the recording)"
        ),
        v => {
            let mut s = format!(
                "leak:    {} - {}/s over the last {:.1} s (R² {:.2}, last half {}/s)",
                if v == Verdict::Leak {
                    "LEAK, memory grows steadily"
                } else {
                    "no leak"
                },
                style.delta(f.slope_bytes_per_s as i64),
                f.window_s,
                f.r2,
                style.delta(f.tail_slope_bytes_per_s as i64)
            );
            if v == Verdict::Leak {
                if let Some(c) = &l.category {
                    s.push_str(&format!(
                        "; most in {} ({})",
                        crate::escape::terminal(c),
                        style.delta(l.category_growth_bytes.unwrap_or(0))
                    ));
                }
                if let Some(p) = l.pid {
                    s.push_str(&format!("; process {p}"));
                }
                if !l.types.is_empty() {
                    let t: Vec<String> = l
                        .types
                        .iter()
                        .take(5)
                        .map(|t| {
                            format!(
                                "{} {}",
                                crate::escape::terminal(&t.type_name),
                                style.delta(t.bytes_delta)
                            )
                        })
                        .collect();
                    s.push_str(&format!("; types: {}", t.join(", ")));
                }
            }
            s
        }
    }
}

/// The verdict on bare points, with nothing to say where it grew (tests, `census --growth`).
pub fn of_recording_points(series: &'static str, total: &[(f64, u64)]) -> Leak {
    Leak {
        fit: judge(total),
        series,
        pid: None,
        category: None,
        category_growth_bytes: None,
        types: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, u64)> {
        (0..100)
            .map(|i| {
                let t = f64::from(i) * 0.1;
                (t, f(t) as u64)
            })
            .collect()
    }

    #[test]
    fn steady_growth_is_a_leak() {
        let f = judge(&series(|t| 50e6 + 1e6 * t));
        assert_eq!(f.verdict, Verdict::Leak);
        assert!((f.slope_bytes_per_s - 1e6).abs() < 1e3, "{f:?}");
        assert!(f.r2 > 0.99);
    }

    #[test]
    fn a_plateau_is_not() {
        // grew for 7 s then stopped: the last half of the window is flat
        let f = judge(&series(|t| 50e6 + 1e6 * t.min(7.0)));
        assert_eq!(f.verdict, Verdict::NoLeak, "{f:?}");
        // flat
        assert_eq!(judge(&series(|_| 50e6)).verdict, Verdict::NoLeak);
        // grew before the window only
        let f = judge(&series(|t| 50e6 + 1e6 * t.min(4.0)));
        assert_eq!(f.verdict, Verdict::NoLeak, "{f:?}");
    }

    #[test]
    fn small_or_short_growth_is_not() {
        // steady but only 100 KB over the window
        assert_eq!(judge(&series(|t| 50e6 + 2e4 * t)).verdict, Verdict::NoLeak);
        assert_eq!(judge(&series(|t| 1e6 * t)[..5]).verdict, Verdict::TooShort);
        assert_eq!(judge(&[]).verdict, Verdict::TooShort);
    }
}
