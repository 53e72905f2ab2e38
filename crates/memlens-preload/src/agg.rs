//! The aggregate kept from the drained events, and its lines in the trace file.

use crate::ring::{
    Event, ALLOC, FREE, FREE_INHERITED, FREE_TEMP, MMAP, PART, PART_INHERITED, PART_TEMP, PYMALLOC,
    SPLIT, SPLIT_INHERITED,
};

/// Two ASCII digits of each number below 100.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal digits of `v` (the lines are written with this, not `format!`: a
/// trace of a program's start-up has thousands of stack lines of tens of frames, and
/// `format!` cost about 40,000 instructions a stack line). Two digits a step from [`PAIRS`],
/// into the string's own buffer: the digit-at-a-time loop with `push_str` cost about 110
/// instructions a call (580,000 calls, 64 M instructions, at the end of a w6 trace).
#[inline]
pub fn push_u64(out: &mut String, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        b[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        b[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        b[i] = b'0' + v as u8;
    }
    // SAFETY: ASCII digits only, appended whole: the string stays UTF-8.
    unsafe { out.as_mut_vec() }.extend_from_slice(&b[i..]);
}

/// Appends the decimal digits of `v`, with a `-` when negative.
pub fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Appends one `key=value` field: `key` (with its leading space and its `=`), then `v`.
fn kv(out: &mut String, key: &str, v: u64) {
    out.push_str(key);
    push_u64(out, v);
}

/// A byte figure of a line: a sum of weights, rounded, never negative.
fn bytes(x: f64) -> u64 {
    if x <= 0.0 {
        0
    } else {
        x.round() as u64
    }
}

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
    /// Samples whose stack walk stopped on a frame it could not read.
    pub unreadable_stacks: u64,
    /// Samples whose stack did not fit in the tracer's bounded tables (given a `lost` stack).
    pub stacks_lost: u64,
}

/// The figures of one interned stack (all byte figures are sums of sample weights). In a forked
/// child, all but `inherited` count the blocks it allocated itself.
///
/// What is live is what was allocated less what was freed ([`Site::live`],
/// [`Site::live_count`]), not kept apart: an event adds to two figures, not four (the drain's
/// share of an `all`-mode event). Exact as the sums are: in `all` mode the weights are whole
/// bytes, whose sums below 2^53 have no rounding. The figures a temporary's free adds to lie
/// side by side (`freed`, `temp`; their counts): the compiler may add each pair at once.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Site {
    /// Allocated in all.
    pub alloc: f64,
    /// Freed in all (a mapping's unmapped parts included).
    pub freed: f64,
    /// Freed within `temp_ns` of their allocation.
    pub temp: f64,
    /// Samples allocated.
    pub alloc_count: u64,
    /// Samples freed.
    pub freed_count: u64,
    /// Samples freed within `temp_ns`.
    pub temp_count: u64,
    /// Samples made by splitting a mapping in two (each piece is freed apart).
    pub split_count: u64,
    /// In a forked child: inherited at fork and not yet freed here.
    pub inherited: f64,
    /// Samples inherited at fork and not yet freed here.
    pub inherited_count: i64,
    /// [`CHANGED`] and [`PEAK_DIRTY`]: in [`Sites::changed`], [`Sites::peak_dirty`].
    marks: u8,
}

impl Site {
    /// Allocated and not yet freed.
    #[inline]
    pub fn live(&self) -> f64 {
        self.alloc - self.freed
    }

    /// Samples allocated and not yet freed.
    #[inline]
    pub fn live_count(&self) -> i64 {
        self.alloc_count.wrapping_add(self.split_count) as i64 - self.freed_count as i64
    }
}

/// A [`Site`] mark: changed since the last lines.
const CHANGED: u8 = 1;
/// A [`Site`] mark: its live figures changed since the last copy into the peak set.
const PEAK_DIRTY: u8 = 2;

/// The per-stack figures, the per-stack live set at the peak, and what changed since the last
/// lines were written.
///
/// The peak set is kept Fil's way: when the live total reaches a new high it is marked
/// pending, and the first free after it (or the next write, if still at the peak) copies the
/// per-stack live figures into the peak set, before that free is applied. Only the stacks
/// whose live figures changed since the previous copy are copied (a dirty list), so the cost
/// of a copy is the number of stacks touched since, not the number of stacks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sites {
    /// Indexed by stack id.
    pub sites: Vec<Site>,
    changed: Vec<u32>,
    /// (bytes, count) of each stack at the peak, indexed by stack id.
    pub peak: Vec<(f64, i64)>,
    peak_dirty: Vec<u32>,
    /// At a new high not yet copied.
    at_peak: bool,
    /// The peak changed since the last `peak` block.
    pub peak_changed: bool,
    /// When the peak was seen (the time given with the event that made it: its own, or the
    /// drain's for a queued one).
    pub peak_t_ns: u64,
}

impl Sites {
    /// An empty set (const, for a static).
    pub const fn new() -> Sites {
        Sites {
            sites: Vec::new(),
            changed: Vec::new(),
            peak: Vec::new(),
            peak_dirty: Vec::new(),
            at_peak: false,
            peak_changed: false,
            peak_t_ns: 0,
        }
    }

    /// The figures of stack `id`, marked changed and peak-dirty (the drain runs this for
    /// every event: a stack already marked both ways costs a bounds check and one compare).
    #[inline(always)]
    fn site(&mut self, id: u32) -> &mut Site {
        let i = id as usize;
        let p = self.sites.as_mut_ptr();
        // SAFETY: i < len, checked first.
        if i < self.sites.len() && unsafe { (*p.add(i)).marks } == CHANGED | PEAK_DIRTY {
            // SAFETY: as above; the one reference to the site, borrowed from `self`.
            return unsafe { &mut *p.add(i) };
        }
        self.mark(id)
    }

    /// Makes room for stack `id` and marks it changed and peak-dirty.
    #[cold]
    #[inline(never)]
    fn mark(&mut self, id: u32) -> &mut Site {
        let i = id as usize;
        if i >= self.sites.len() {
            self.sites.resize(i + 1, Site::default());
            self.peak.resize(i + 1, (0.0, 0));
        }
        let s = &mut self.sites[i];
        if s.marks & CHANGED == 0 {
            self.changed.push(id);
        }
        if s.marks & PEAK_DIRTY == 0 {
            self.peak_dirty.push(id);
        }
        s.marks = CHANGED | PEAK_DIRTY;
        s
    }

    /// Copies the live figures of the stacks changed since the last copy into the peak set.
    fn copy_peak(&mut self) {
        for &id in &self.peak_dirty {
            let s = &mut self.sites[id as usize];
            s.marks &= !PEAK_DIRTY;
            self.peak[id as usize] = (s.live(), s.live_count());
        }
        self.peak_dirty.clear();
    }

    /// An allocation of `w` by stack `id` ([`Sites::new_peak`] apart).
    #[inline(always)]
    fn alloc(&mut self, id: u32, w: f64) {
        let s = self.site(id);
        s.alloc += w;
        s.alloc_count += 1;
    }

    /// The allocation just applied made a new high of the live total, at `t_ns`.
    #[inline(always)]
    fn new_peak(&mut self, t_ns: u64) {
        self.peak_t_ns = t_ns;
        self.at_peak = true;
        self.peak_changed = true;
    }

    /// A free of `w` allocated by stack `id` (`temp`: within `temp_ns` of its allocation); at
    /// the first free after a new high, the peak set is copied first.
    #[inline(always)]
    fn free(&mut self, id: u32, w: f64, temp: bool) {
        if self.at_peak {
            self.copy_peak();
            self.at_peak = false;
        }
        let s = self.site(id);
        // Apart, so that each pair is added at once (`Site`'s note).
        if temp {
            s.freed += w;
            s.temp += w;
            s.freed_count += 1;
            s.temp_count += 1;
        } else {
            s.freed += w;
            s.freed_count += 1;
        }
    }

    /// Part of a mapping made by stack `id` unmapped, `w` of its weight: its bytes leave the
    /// live figures as a free's do, its sample stays (at the first free after a new high, the
    /// peak set is copied first).
    #[cold]
    fn part(&mut self, id: u32, w: f64, temp: bool) {
        if self.at_peak {
            self.copy_peak();
            self.at_peak = false;
        }
        let s = self.site(id);
        s.freed += w;
        if temp {
            s.temp += w;
        }
    }

    /// [`Sites::part`] of a mapping inherited at fork.
    #[cold]
    fn part_inherited(&mut self, id: u32, w: f64) {
        if self.at_peak {
            self.copy_peak();
            self.at_peak = false;
        }
        self.site(id).inherited -= w;
    }

    /// In a forked child, the free of a block inherited at fork, made by stack `id`: it lowers
    /// the inherited figures only (at the first free after a new high, the peak set is copied
    /// first).
    #[inline]
    fn free_inherited(&mut self, id: u32, w: f64) {
        if self.at_peak {
            self.copy_peak();
            self.at_peak = false;
        }
        let s = self.site(id);
        s.inherited -= w;
        s.inherited_count -= 1;
    }

    /// The `site` lines of the stacks changed since the last call, and the `peak` block when
    /// the peak changed (`peak_live`: its total); newline-terminated, appended to `out`.
    pub fn lines(&mut self, peak_live: f64, out: &mut String) {
        self.changed.sort_unstable();
        for &id in &self.changed {
            let s = &mut self.sites[id as usize];
            s.marks &= !CHANGED;
            kv(out, "site stack=", u64::from(id));
            kv(out, " live_bytes=", bytes(s.live()));
            kv(out, " live_count=", s.live_count().max(0) as u64);
            kv(out, " alloc_bytes=", bytes(s.alloc));
            kv(out, " alloc_count=", s.alloc_count);
            kv(out, " freed_bytes=", bytes(s.freed));
            kv(out, " freed_count=", s.freed_count);
            kv(out, " temp_bytes=", bytes(s.temp));
            kv(out, " temp_count=", s.temp_count);
            if s.inherited_count != 0 || bytes(s.inherited) > 0 {
                kv(out, " inherited_bytes=", bytes(s.inherited));
                kv(out, " inherited_count=", s.inherited_count.max(0) as u64);
            }
            out.push('\n');
        }
        self.changed.clear();
        if self.at_peak {
            self.copy_peak();
        }
        if self.peak_changed {
            self.peak_changed = false;
            kv(out, "peak t_ns=", self.peak_t_ns);
            kv(out, " live_bytes=", bytes(peak_live));
            // `sites=K`: the reader takes the block as complete once it has read K
            // `peaksite` lines (one read while this write is under way may see only a part).
            let k = self
                .peak
                .iter()
                .filter(|&&(b, count)| count > 0 || bytes(b) > 0)
                .count();
            kv(out, " sites=", k as u64);
            out.push('\n');
            for (id, &(b, count)) in self.peak.iter().enumerate() {
                if count > 0 || bytes(b) > 0 {
                    kv(out, "peaksite stack=", id as u64);
                    kv(out, " bytes=", bytes(b));
                    kv(out, " count=", count.max(0) as u64);
                    out.push('\n');
                }
            }
        }
    }

    /// The state a forked child starts from: what is live is inherited (shown in its first
    /// lines), the rest restarts (its own live set and its peak start empty).
    pub fn for_child(&self) -> Sites {
        let mut c = Sites::new();
        for (id, s) in self.sites.iter().enumerate() {
            c.sites.push(Site {
                inherited: s.live() + s.inherited,
                inherited_count: s.live_count() + s.inherited_count,
                ..Site::default()
            });
            c.peak.push((0.0, 0));
            if c.sites[id].inherited_count != 0 {
                c.sites[id].marks = CHANGED;
                c.changed.push(id as u32);
            }
        }
        c
    }
}

/// Estimates from the sampled events; all byte figures are estimates (sums of weights), exact
/// in `all` mode.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Aggregate {
    /// Estimated bytes allocated and not freed (both sources); in a forked child, by the
    /// child itself (the figures below too, but `inherited`).
    pub live: f64,
    /// In a forked child: bytes inherited at fork (live in the parent then) and not freed here
    /// since.
    pub inherited: f64,
    /// The part of `live` from anonymous mmap.
    pub live_mmap: f64,
    /// The part of `live` from CPython's wrapped allocator domains ([`PYMALLOC`]).
    pub live_pymalloc: f64,
    /// The part of `live` from the C malloc family called directly ([`crate::ring::MALLOC`]).
    pub live_malloc: f64,
    /// Live sampled bytes with no resident page, as last measured ([`crate::residency`]); an
    /// estimate, set by the writer before a line.
    pub untouched: f64,
    /// The tracer's own resident memory (its pointer table and filter, event queue, code and
    /// stack tables), as last measured with `mincore`; set by the writer before a line. The
    /// ledger counts it in the program's anonymous memory (`native-heap`).
    pub tracer: u64,
    /// The highest `live` seen, in event order.
    pub peak_live: f64,
    /// Sampled allocations seen.
    pub alloc_samples: u64,
    /// Frees of sampled allocations seen.
    pub free_samples: u64,
    /// Estimated bytes allocated in all (since start, or since fork in a child). Not beside
    /// `peak_live`: the compiler paired the two in one register over a drained run, at four
    /// shuffles an allocation.
    pub total: f64,
    /// The per-stack figures.
    pub sites: Sites,
}

impl Aggregate {
    /// An empty aggregate (const, for a static).
    pub const fn new() -> Aggregate {
        Aggregate {
            live: 0.0,
            inherited: 0.0,
            live_mmap: 0.0,
            live_pymalloc: 0.0,
            live_malloc: 0.0,
            untouched: 0.0,
            tracer: 0,
            peak_live: 0.0,
            total: 0.0,
            alloc_samples: 0,
            free_samples: 0,
            sites: Sites::new(),
        }
    }

    /// Applies one event (`now`: the event's time, or the drain's for a queued one: the time
    /// of a new peak).
    #[inline]
    pub fn apply(&mut self, e: &Event, now: u64) {
        self.apply_parts(e.kind, e.domain, e.stack, e.weight, now);
    }

    /// [`Aggregate::apply`] of an event given by its parts (what the figures read of it: a
    /// queue may keep no more): the allocation and the free, nearly every event, inline;
    /// the others apart.
    #[inline(always)]
    pub fn apply_parts(&mut self, kind: u8, domain: u8, stack: u32, w: f64, now: u64) {
        if kind == ALLOC {
            self.live += w;
            self.total += w;
            *self.domain_live(domain) += w;
            self.alloc_samples += 1;
            if self.live > self.peak_live {
                self.peak_live = self.live;
                self.sites.new_peak(now);
            }
            self.sites.alloc(stack, w);
        } else if kind == FREE || kind == FREE_TEMP {
            self.live -= w;
            *self.domain_live(domain) -= w;
            self.free_samples += 1;
            self.sites.free(stack, w, kind == FREE_TEMP);
        } else {
            self.apply_rare(kind, domain, stack, w);
        }
    }

    /// [`Aggregate::apply_parts`] of each event of `events`, in order, all of `domain`
    /// (`(kind, stack, weight, now)`, the time of a new peak `now.max(t_floor)`): the same
    /// operations on the same values, so the same figures to the bit, with the totals kept in
    /// locals over the run (the queue of the GIL's events is drained this way, 256 at a time).
    #[inline(always)]
    pub fn apply_run(
        &mut self,
        domain: u8,
        t_floor: u64,
        events: impl Iterator<Item = (u8, u32, f64, u64)>,
    ) {
        let mut live = self.live;
        let mut peak = self.peak_live;
        let mut total = self.total;
        let mut dlive = *self.domain_live(domain);
        let mut allocs = self.alloc_samples;
        let mut frees = self.free_samples;
        for (kind, stack, w, now) in events {
            if kind == ALLOC {
                live += w;
                total += w;
                dlive += w;
                allocs += 1;
                if live > peak {
                    peak = live;
                    self.sites.new_peak(now.max(t_floor));
                }
                self.sites.alloc(stack, w);
            } else if kind == FREE_TEMP {
                // A temporary's free and the other apart: each with its own pairs added at
                // once (`Site`'s note), no test of the kind inside.
                live -= w;
                dlive -= w;
                frees += 1;
                self.sites.free(stack, w, true);
            } else if kind == FREE {
                live -= w;
                dlive -= w;
                frees += 1;
                self.sites.free(stack, w, false);
            } else {
                self.live = live;
                self.peak_live = peak;
                self.total = total;
                *self.domain_live(domain) = dlive;
                self.alloc_samples = allocs;
                self.free_samples = frees;
                self.apply_rare(kind, domain, stack, w);
                live = self.live;
                peak = self.peak_live;
                total = self.total;
                dlive = *self.domain_live(domain);
                allocs = self.alloc_samples;
                frees = self.free_samples;
            }
        }
        self.live = live;
        self.peak_live = peak;
        self.total = total;
        *self.domain_live(domain) = dlive;
        self.alloc_samples = allocs;
        self.free_samples = frees;
    }

    /// The events but allocations and frees: an inherited block's free, a mapping's parts.
    #[cold]
    #[inline(never)]
    fn apply_rare(&mut self, kind: u8, domain: u8, stack: u32, w: f64) {
        match kind {
            FREE_INHERITED => {
                self.inherited -= w;
                self.sites.free_inherited(stack, w);
            }
            // Part of a mapping unmapped (maps.rs): its bytes, not its sample.
            PART | PART_TEMP => {
                self.live -= w;
                *self.domain_live(domain) -= w;
                self.sites.part(stack, w, kind == PART_TEMP);
            }
            PART_INHERITED => {
                self.inherited -= w;
                self.sites.part_inherited(stack, w);
            }
            SPLIT => {
                self.alloc_samples += 1;
                self.sites.site(stack).split_count += 1;
            }
            SPLIT_INHERITED => {
                self.sites.site(stack).inherited_count += 1;
            }
            _ => {}
        }
    }

    #[inline]
    fn domain_live(&mut self, domain: u8) -> &mut f64 {
        if domain == PYMALLOC {
            &mut self.live_pymalloc
        } else if domain == MMAP {
            &mut self.live_mmap
        } else {
            &mut self.live_malloc
        }
    }

    /// The state a forked child starts from: what is live is inherited (`inherited`, and per
    /// stack), the rest restarts: its own live figures and peak count what it allocates.
    pub fn for_child(&self) -> Aggregate {
        Aggregate {
            inherited: self.live + self.inherited,
            sites: self.sites.for_child(),
            ..Aggregate::default()
        }
    }

    /// One `snap` or `end` line (format version 3, docs/trace-format.md), newline included.
    /// `live_pymalloc_bytes`, `live_malloc_bytes` and `untouched_bytes` are 0 here (the
    /// `PyMem_SetAllocator` wrap fills them).
    pub fn line(&self, tag: &str, t_ns: u64, d: &Drops) -> String {
        let mut out = String::with_capacity(512);
        self.push_line(tag, t_ns, d, &mut out);
        out
    }

    /// [`Aggregate::line`], appended to `out` with [`push_u64`], not `format!`: a snapshot is
    /// written every period, and core's formatting code lies among std's cold code in the
    /// library's text, whose pages then stay resident (own_text.rs).
    pub fn push_line(&self, tag: &str, t_ns: u64, d: &Drops, out: &mut String) {
        out.push_str(tag);
        for (key, v) in [
            (" t_ns=", t_ns),
            (" live_bytes=", bytes(self.live)),
            (" live_mmap_bytes=", bytes(self.live_mmap)),
            (" live_pymalloc_bytes=", bytes(self.live_pymalloc)),
            (" live_malloc_bytes=", bytes(self.live_malloc)),
            (" peak_live_bytes=", bytes(self.peak_live)),
            (" total_bytes=", bytes(self.total)),
            (" untouched_bytes=", bytes(self.untouched)),
            (" alloc_samples=", self.alloc_samples),
            (" free_samples=", self.free_samples),
            (
                " live_samples=",
                self.alloc_samples.saturating_sub(self.free_samples),
            ),
            (" dropped_allocs=", d.allocs),
            (" dropped_frees=", d.frees),
            (" table_full=", d.table_full),
            (" lost_at_fork=", d.at_fork),
            (" unreadable_stacks=", d.unreadable_stacks),
            (" stacks_lost=", d.stacks_lost),
            (" tracer_bytes=", self.tracer),
            (" inherited_live_bytes=", bytes(self.inherited)),
        ] {
            kv(out, key, v);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// push_u64 writes what `format!` writes: every number of up to 3 digits, each power of
    /// ten and its neighbours, and a spread of others up to u64::MAX.
    #[test]
    fn push_u64_is_decimal() {
        let mut vals: Vec<u64> = (0..1000).collect();
        let mut p = 1u64;
        while let Some(q) = p.checked_mul(10) {
            vals.extend([p - 1, p, p + 1, q - 1]);
            p = q;
        }
        vals.extend([u64::MAX, u64::MAX - 1, p, p + 12_345]);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push(x >> (x % 64));
        }
        for v in vals {
            let mut out = String::from("x=");
            push_u64(&mut out, v);
            assert_eq!(out, format!("x={v}"));
        }
        let mut out = String::new();
        push_i64(&mut out, -1234567);
        assert_eq!(out, "-1234567");
    }

    /// The line written with push_u64 is the one `format!` wrote before (stop 21).
    #[test]
    fn push_line_is_the_formatted_line() {
        let mut a = Aggregate {
            live: 1234.4,
            live_mmap: 99.5,
            live_pymalloc: -3.0,
            live_malloc: 0.49,
            peak_live: 1e12,
            total: f64::NAN,
            untouched: 7.0,
            alloc_samples: 12,
            free_samples: 15,
            tracer: u64::MAX,
            inherited: 5.5,
            ..Aggregate::default()
        };
        let d = Drops {
            allocs: 1,
            frees: 2,
            table_full: 3,
            at_fork: 4,
            unreadable_stacks: 5,
            stacks_lost: 6,
        };
        let b = |x: f64| if x <= 0.0 { 0 } else { x.round() as u64 };
        for tag in ["snap", "end"] {
            let want = format!(
                "{tag} t_ns={} live_bytes={} live_mmap_bytes={} live_pymalloc_bytes={} \
                 live_malloc_bytes={} peak_live_bytes={} total_bytes={} untouched_bytes={} \
                 alloc_samples={} free_samples={} live_samples={} dropped_allocs={} \
                 dropped_frees={} table_full={} lost_at_fork={} unreadable_stacks={} \
                 stacks_lost={} tracer_bytes={} inherited_live_bytes={}\n",
                u64::MAX - 1,
                b(a.live),
                b(a.live_mmap),
                b(a.live_pymalloc),
                b(a.live_malloc),
                b(a.peak_live),
                b(a.total),
                b(a.untouched),
                a.alloc_samples,
                a.free_samples,
                a.alloc_samples.saturating_sub(a.free_samples),
                d.allocs,
                d.frees,
                d.table_full,
                d.at_fork,
                d.unreadable_stacks,
                d.stacks_lost,
                a.tracer,
                b(a.inherited),
            );
            assert_eq!(a.line(tag, u64::MAX - 1, &d), want);
            a.free_samples = 3;
        }
    }

    #[test]
    fn live_peak_and_line() {
        let mut a = Aggregate::default();
        let ev = |kind, w: f64, domain| Event {
            kind,
            domain,
            weight: w,
            ..Event::default()
        };
        a.apply(&ev(ALLOC, 100.0, 0), 1);
        a.apply(&ev(ALLOC, 50.0, 1), 1);
        a.apply(&ev(FREE, 100.0, 0), 1);
        a.apply(&ev(ALLOC, 20.0, 0), 1);
        a.apply(&ev(ALLOC, 8.0, PYMALLOC), 1);
        a.apply(&ev(ALLOC, 4.0, PYMALLOC), 1);
        a.apply(&ev(FREE, 4.0, PYMALLOC), 1);
        assert_eq!(a.live, 78.0);
        assert_eq!(a.live_mmap, 50.0);
        assert_eq!(a.live_pymalloc, 8.0);
        assert_eq!(a.live_malloc, 20.0);
        assert_eq!(a.peak_live, 150.0);
        assert_eq!(a.total, 182.0);
        a.untouched = 12.4;
        let l = a.line("snap", 5, &Drops::default());
        assert!(l.starts_with("snap t_ns=5 live_bytes=78 live_mmap_bytes=50 live_pymalloc_bytes=8 live_malloc_bytes=20 peak_live_bytes=150 total_bytes=182 untouched_bytes=12 alloc_samples=5 free_samples=2 live_samples=3 "), "{l}");
        assert!(l.ends_with(
            "lost_at_fork=0 unreadable_stacks=0 stacks_lost=0 tracer_bytes=0 inherited_live_bytes=0\n"
        ));
        // A forked child: what was live is inherited; its own figures start at 0.
        let c = a.for_child();
        assert_eq!(
            (
                c.live,
                c.inherited,
                c.live_pymalloc,
                c.peak_live,
                c.total,
                c.alloc_samples
            ),
            (0.0, 78.0, 0.0, 0.0, 0.0, 0)
        );
    }

    fn ev(kind: u8, stack: u32, w: f64) -> Event {
        Event {
            kind,
            stack,
            weight: w,
            ..Event::default()
        }
    }

    /// A run applied with `apply_run` leaves the aggregate `apply` leaves, to the bit (peak,
    /// its time and live set included), rare kinds among the events too.
    #[test]
    fn apply_run_is_apply_in_turn() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut live: Vec<(u32, f64)> = Vec::new();
        let mut evs = Vec::new();
        for t in 0..5_000u64 {
            let r = rnd();
            let (kind, stack, w) = if live.is_empty() || r % 5 < 3 {
                let stack = (r >> 8) as u32 % 40;
                let w = ((r >> 20) % 512 + 1) as f64 * 1.25;
                live.push((stack, w));
                (ALLOC, stack, w)
            } else {
                let (stack, w) = live.swap_remove((r >> 8) as usize % live.len());
                let kind = match r % 40 {
                    0 => FREE_INHERITED,
                    1 => SPLIT,
                    2..=20 => FREE_TEMP,
                    _ => FREE,
                };
                (kind, stack, w)
            };
            evs.push((kind, stack, w, 1_000 + t));
        }
        // The peaks of the first 500 events are timed at the floor.
        const FLOOR: u64 = 1_500;
        let mut a = Aggregate::new();
        let mut b = Aggregate::new();
        for chunk in evs.chunks(256) {
            for &(kind, stack, w, now) in chunk {
                a.apply(
                    &Event {
                        domain: PYMALLOC,
                        ..ev(kind, stack, w)
                    },
                    now.max(FLOOR),
                );
            }
            b.apply_run(PYMALLOC, FLOOR, chunk.iter().copied());
            // A copy of the peak set between runs, as a write does.
            let (mut la, mut lb) = (String::new(), String::new());
            a.sites.lines(a.peak_live, &mut la);
            b.sites.lines(b.peak_live, &mut lb);
            assert_eq!(la, lb);
        }
        assert!(a.peak_live > 0.0 && a.free_samples > 1_000);
        assert_eq!(a, b);
    }

    /// Part of a mapping unmapped (`PART`): its bytes leave the live figures, its sample
    /// stays; the peak set is copied before it; a hole (`SPLIT`) makes one more live sample,
    /// so that each piece's free leaves the counts right.
    #[test]
    fn parts_and_splits_of_a_mapping() {
        let mut a = Aggregate::new();
        let mut e = ev(ALLOC, 0, 1000.0);
        e.domain = MMAP;
        a.apply(&e, 1);
        let part = |kind, w| Event {
            domain: MMAP,
            ..ev(kind, 0, w)
        };
        a.apply(&part(PART, 250.0), 2); // the end: 750 stay
        a.apply(&part(PART_TEMP, 250.0), 3); // a hole: 500 in two pieces
        a.apply(&part(SPLIT, 0.0), 3);
        assert_eq!((a.live, a.live_mmap, a.peak_live), (500.0, 500.0, 1000.0));
        let mut out = String::new();
        a.sites.lines(a.peak_live, &mut out);
        assert_eq!(
            out,
            "site stack=0 live_bytes=500 live_count=2 alloc_bytes=1000 alloc_count=1 freed_bytes=500 freed_count=0 temp_bytes=250 temp_count=0\n\
             peak t_ns=1 live_bytes=1000 sites=1\n\
             peaksite stack=0 bytes=1000 count=1\n"
        );
        // Each piece freed: nothing live, no sample left.
        a.apply(&part(FREE, 200.0), 4);
        a.apply(&part(FREE, 300.0), 5);
        assert_eq!(a.live, 0.0);
        assert_eq!(a.alloc_samples - a.free_samples, 0);
        assert_eq!(a.sites.sites[0].live_count(), 0);
        // In a child: an inherited mapping cut and split lowers the inherited figures only.
        let mut c = Aggregate::new();
        c.apply(&e, 1);
        let mut c = c.for_child();
        c.apply(&part(PART_INHERITED, 400.0), 2);
        c.apply(&part(SPLIT_INHERITED, 0.0), 2);
        assert_eq!((c.live, c.inherited), (0.0, 600.0));
        assert_eq!(c.sites.sites[0].inherited_count, 2);
        assert_eq!((c.alloc_samples, c.free_samples), (0, 0));
    }

    /// Per-stack figures and the live set at the peak: the copy is taken at the first free
    /// after a new high, before it applies.
    #[test]
    fn sites_and_peak_set() {
        let mut a = Aggregate::new();
        a.apply(&ev(ALLOC, 0, 100.0), 1);
        a.apply(&ev(ALLOC, 1, 50.0), 2);
        a.apply(&ev(FREE_TEMP, 1, 50.0), 3); // peak 150 = {0: 100, 1: 50}
        a.apply(&ev(ALLOC, 2, 30.0), 4); // 130 < 150
        a.apply(&ev(FREE, 2, 30.0), 5);
        let mut out = String::new();
        a.sites.lines(a.peak_live, &mut out);
        assert_eq!(
            out,
            "site stack=0 live_bytes=100 live_count=1 alloc_bytes=100 alloc_count=1 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
             site stack=1 live_bytes=0 live_count=0 alloc_bytes=50 alloc_count=1 freed_bytes=50 freed_count=1 temp_bytes=50 temp_count=1\n\
             site stack=2 live_bytes=0 live_count=0 alloc_bytes=30 alloc_count=1 freed_bytes=30 freed_count=1 temp_bytes=0 temp_count=0\n\
             peak t_ns=2 live_bytes=150 sites=2\n\
             peaksite stack=0 bytes=100 count=1\n\
             peaksite stack=1 bytes=50 count=1\n"
        );
        // Nothing changed: nothing written.
        let mut out = String::new();
        a.sites.lines(a.peak_live, &mut out);
        assert_eq!(out, "");
        // A new high still held at write time is copied then.
        a.apply(&ev(ALLOC, 2, 200.0), 6);
        let mut out = String::new();
        a.sites.lines(a.peak_live, &mut out);
        assert!(out.ends_with("peak t_ns=6 live_bytes=300 sites=2\npeaksite stack=0 bytes=100 count=1\npeaksite stack=2 bytes=200 count=1\n"), "{out}");
        // A forked child: the live set inherited, shown in its first lines; no peak yet.
        let mut c = a.for_child();
        let mut out = String::new();
        c.sites.lines(c.peak_live, &mut out);
        assert_eq!(
            out,
            "site stack=0 live_bytes=0 live_count=0 alloc_bytes=0 alloc_count=0 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0 inherited_bytes=100 inherited_count=1\n\
             site stack=2 live_bytes=0 live_count=0 alloc_bytes=0 alloc_count=0 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0 inherited_bytes=200 inherited_count=1\n"
        );
        // Its own allocations make its live figures and its peak; an inherited block's free
        // lowers the inherited figure only (a free before the peak's copy: copied first).
        c.apply(&ev(ALLOC, 0, 40.0), 8);
        c.apply(&ev(FREE_INHERITED, 2, 200.0), 9);
        c.apply(&ev(ALLOC, 1, 10.0), 10);
        c.apply(&ev(FREE, 1, 10.0), 11);
        assert_eq!((c.live, c.inherited, c.peak_live), (40.0, 100.0, 50.0));
        assert_eq!((c.alloc_samples, c.free_samples), (2, 1));
        let mut out = String::new();
        c.sites.lines(c.peak_live, &mut out);
        assert_eq!(
            out,
            "site stack=0 live_bytes=40 live_count=1 alloc_bytes=40 alloc_count=1 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0 inherited_bytes=100 inherited_count=1\n\
             site stack=1 live_bytes=0 live_count=0 alloc_bytes=10 alloc_count=1 freed_bytes=10 freed_count=1 temp_bytes=0 temp_count=0\n\
             site stack=2 live_bytes=0 live_count=0 alloc_bytes=0 alloc_count=0 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
             peak t_ns=10 live_bytes=50 sites=2\n\
             peaksite stack=0 bytes=40 count=1\n\
             peaksite stack=1 bytes=10 count=1\n"
        );
        // A grandchild inherits its parent's own and inherited blocks.
        let g = c.for_child();
        assert_eq!((g.inherited, g.sites.sites[0].inherited_count), (140.0, 2));
    }
}
