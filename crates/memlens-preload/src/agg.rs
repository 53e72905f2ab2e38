//! The aggregate kept from the drained events, and its lines in the trace file.

use crate::ring::{Event, ALLOC, FREE, MMAP, PYMALLOC};

/// Counters of events the hooks could not queue (atomics in the hooks, copied here to print).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Drops {
    /// Sampled allocations refused by a full ring (not counted in the estimates).
    pub allocs: u64,
    /// Frees of sampled allocations refused by a full ring (their bytes stay in `live`).
    pub frees: u64,
    /// Sampled allocations left out because the pointer table had no free slot nearby.
    pub table_full: u64,
    /// Events queued at fork and discarded in the child (the parent keeps them).
    pub at_fork: u64,
}

/// Estimates from the sampled events; all byte figures are estimates (sums of weights), exact
/// in `all` mode.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Estimated bytes allocated and not freed (both sources).
    pub live: f64,
    /// The part of `live` from anonymous mmap.
    pub live_mmap: f64,
    /// The part of `live` from CPython's wrapped allocator domains ([`PYMALLOC`]).
    pub live_pymalloc: f64,
    /// The part of `live` from the C malloc family called directly ([`crate::ring::MALLOC`]).
    pub live_malloc: f64,
    /// Live sampled bytes with no resident page, as last measured ([`crate::residency`]); an
    /// estimate, set by the writer before a line.
    pub untouched: f64,
    /// The highest `live` seen, in event order.
    pub peak_live: f64,
    /// Estimated bytes allocated in all (since start, or since fork in a child).
    pub total: f64,
    /// Sampled allocations seen.
    pub alloc_samples: u64,
    /// Frees of sampled allocations seen.
    pub free_samples: u64,
}

impl Aggregate {
    /// Applies one event.
    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            ALLOC => {
                self.live += e.weight;
                self.total += e.weight;
                *self.domain_live(e.domain) += e.weight;
                self.alloc_samples += 1;
                if self.live > self.peak_live {
                    self.peak_live = self.live;
                }
            }
            FREE => {
                self.live -= e.weight;
                *self.domain_live(e.domain) -= e.weight;
                self.free_samples += 1;
            }
            _ => {}
        }
    }

    fn domain_live(&mut self, domain: u8) -> &mut f64 {
        match domain {
            MMAP => &mut self.live_mmap,
            PYMALLOC => &mut self.live_pymalloc,
            _ => &mut self.live_malloc,
        }
    }

    /// The state a forked child starts from: what is live is inherited, the rest restarts.
    pub fn for_child(&self) -> Aggregate {
        Aggregate {
            live: self.live,
            live_mmap: self.live_mmap,
            live_pymalloc: self.live_pymalloc,
            live_malloc: self.live_malloc,
            untouched: self.untouched,
            peak_live: self.live,
            ..Aggregate::default()
        }
    }

    /// One `snap` or `end` line (format version 1, see the crate docs), newline included.
    pub fn line(&self, tag: &str, t_ns: u64, d: &Drops) -> String {
        let b = |x: f64| if x <= 0.0 { 0 } else { x.round() as u64 };
        format!(
            "{tag} t_ns={t_ns} live_bytes={} live_mmap_bytes={} live_pymalloc_bytes={} \
             live_malloc_bytes={} peak_live_bytes={} total_bytes={} untouched_bytes={} alloc_samples={} free_samples={} live_samples={} dropped_allocs={} dropped_frees={} \
             table_full={} lost_at_fork={}\n",
            b(self.live),
            b(self.live_mmap),
            b(self.live_pymalloc),
            b(self.live_malloc),
            b(self.peak_live),
            b(self.total),
            b(self.untouched),
            self.alloc_samples,
            self.free_samples,
            self.alloc_samples.saturating_sub(self.free_samples),
            d.allocs,
            d.frees,
            d.table_full,
            d.at_fork,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_peak_and_line() {
        let mut a = Aggregate::default();
        let ev = |kind, w: f64, domain| Event {
            kind,
            domain,
            weight: w,
            ..Event::default()
        };
        a.apply(&ev(ALLOC, 100.0, 0));
        a.apply(&ev(ALLOC, 50.0, 1));
        a.apply(&ev(FREE, 100.0, 0));
        a.apply(&ev(ALLOC, 20.0, 0));
        a.apply(&ev(ALLOC, 8.0, PYMALLOC));
        a.apply(&ev(ALLOC, 4.0, PYMALLOC));
        a.apply(&ev(FREE, 4.0, PYMALLOC));
        assert_eq!(a.live, 78.0);
        assert_eq!(a.live_mmap, 50.0);
        assert_eq!(a.live_pymalloc, 8.0);
        assert_eq!(a.live_malloc, 20.0);
        assert_eq!(a.peak_live, 150.0);
        assert_eq!(a.total, 182.0);
        a.untouched = 12.4;
        let l = a.line("snap", 5, &Drops::default());
        assert!(l.starts_with("snap t_ns=5 live_bytes=78 live_mmap_bytes=50 live_pymalloc_bytes=8 live_malloc_bytes=20 peak_live_bytes=150 total_bytes=182 untouched_bytes=12 alloc_samples=5 free_samples=2 live_samples=3 "), "{l}");
        assert!(l.ends_with("lost_at_fork=0\n"));
        let c = a.for_child();
        assert_eq!(
            (
                c.live,
                c.live_pymalloc,
                c.peak_live,
                c.total,
                c.alloc_samples
            ),
            (78.0, 8.0, 78.0, 0.0, 0)
        );
    }
}
