//! `untouched_bytes`: live sampled bytes with no resident page, an estimate.
//!
//! Allocators hand out memory the program may never write (an `np.zeros` array is calloc'd
//! zero pages, a buffer reserved larger than it is filled): allocation tracers count it as if
//! it were resident. Only large allocations matter for this, and they are few, so the drain
//! keeps a side list of the live sampled allocations of at least [`LARGE`] bytes (ordered by
//! address; never the whole pointer table, which has up to 22 Mi slots in `all` mode), and the writer
//! asks the kernel (`mincore`) which pages of each are resident when it appends a `snap` or
//! `end` line. An allocation's page-aligned inner range is measured (the partial pages at its
//! ends count as touched: the allocator's headers live there); its untouched share is its
//! weight times the fraction of that range not resident, so the figure is weighted like the
//! others (exact per page in `all` mode, an estimate in `sampled` mode).
//!
//! It is an estimate in every mode: smaller allocations are not measured (counted as
//! touched), a page swapped out counts as untouched (mincore cannot tell the two apart), and
//! an allocation freed by another thread whose free is not drained yet is measured as it is
//! then (an unmapped range counts as touched).

use std::collections::BTreeMap;

use crate::ring::{
    Event, ALLOC, FREE, FREE_INHERITED, FREE_TEMP, MMAP, PART, PART_INHERITED, PART_TEMP,
};

/// Allocations of at least this many bytes are measured.
pub const LARGE: u64 = 64 * 1024;

pub(crate) const PAGE: usize = 4096;

/// The live sampled allocations of at least [`LARGE`] bytes: address -> (size, weight).
#[derive(Debug, Default, Clone)]
pub struct Residency {
    live: BTreeMap<usize, (u64, f64)>,
}

impl Residency {
    /// An empty list.
    pub const fn new() -> Residency {
        Residency {
            live: BTreeMap::new(),
        }
    }

    /// Applies one drained event (in the order the aggregate applies them). Inlined: the
    /// test that rules an event out runs for every event in `all` mode.
    #[inline]
    pub fn apply(&mut self, e: &Event) {
        // A free smaller than LARGE can only concern a listed allocation when it unmaps the
        // prefix of a mapping.
        if e.size < LARGE && (e.kind == ALLOC || e.domain != MMAP || self.live.is_empty()) {
            return;
        }
        self.apply_listed(e);
    }

    /// [`Residency::apply`] past its test.
    #[cold]
    #[inline(never)]
    fn apply_listed(&mut self, e: &Event) {
        match e.kind {
            ALLOC => {
                self.live.insert(e.ptr, (e.size, e.weight));
            }
            // Every kind of free: a temporary (freed soon after it was made) and, in a forked
            // child, an inherited block (not listed there: its list starts empty) too.
            FREE | FREE_TEMP | FREE_INHERITED => {
                // A mapping unmapped from its start (munmap of a prefix): the rest stays live
                // at its new start with the rest of the weight, as in the pointer table.
                if let Some((size, weight)) = self.live.remove(&e.ptr) {
                    if e.size < size && e.size > 0 {
                        let rest = size - e.size;
                        if rest >= LARGE {
                            self.live
                                .insert(e.ptr + e.size as usize, (rest, weight - e.weight));
                        }
                    }
                }
            }
            // Part of a mapping unmapped (maps.rs): the listed mapping that holds
            // `[ptr, ptr+size)` keeps its pieces before and after, each with its share.
            PART | PART_TEMP | PART_INHERITED => {
                let Some((&start, &(size, weight))) = self.live.range(..=e.ptr).next_back() else {
                    return;
                };
                if e.ptr >= start + size as usize {
                    return;
                }
                self.live.remove(&start);
                let left = (e.ptr - start) as u64;
                let after = e.ptr + e.size as usize;
                let right = (start + size as usize).saturating_sub(after) as u64;
                let share = |n: u64| weight * (n as f64 / size as f64);
                if left >= LARGE {
                    self.live.insert(start, (left, share(left)));
                }
                if right >= LARGE {
                    self.live.insert(after, (right, share(right)));
                }
            }
            _ => {}
        }
    }

    /// How many allocations are listed.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The untouched estimate, given `nonresident(start, len)`: the bytes of the page-aligned
    /// range `[start, start+len)` that have no resident page (`None`: could not be asked).
    pub fn untouched(&self, mut nonresident: impl FnMut(usize, usize) -> Option<u64>) -> f64 {
        let mut sum = 0.0;
        for (&ptr, &(size, weight)) in &self.live {
            let start = (ptr + PAGE - 1) & !(PAGE - 1);
            let end = ptr.saturating_add(size as usize) & !(PAGE - 1);
            if end <= start {
                continue;
            }
            if let Some(n) = nonresident(start, end - start) {
                sum += weight * (n as f64 / size as f64);
            }
        }
        sum
    }
}

/// The bytes of the page-aligned range `[start, start+len)` with no resident page, asked of
/// the kernel with `mincore` in windows of 16 MiB (a stack buffer: nothing allocated). `None`
/// when a window is not mapped (freed meanwhile).
pub fn nonresident_bytes(start: usize, len: usize) -> Option<u64> {
    const WINDOW_PAGES: usize = 4096;
    let mut vec = [0u8; WINDOW_PAGES];
    let pages = len / PAGE;
    let mut done = 0;
    let mut missing = 0u64;
    while done < pages {
        let n = (pages - done).min(WINDOW_PAGES);
        // SAFETY: mincore writes one byte per page of the range into `vec`, which has room
        // for `n` pages; the range is page-aligned. It only reads the page tables.
        let r = unsafe {
            libc::mincore(
                (start + done * PAGE) as *mut libc::c_void,
                n * PAGE,
                vec.as_mut_ptr(),
            )
        };
        if r != 0 {
            return None;
        }
        missing += not_resident(&vec[..n]);
        done += n;
    }
    Some(missing * PAGE as u64)
}

/// The pages of a `mincore` vector that are not resident (bit 0 clear), counted 8 bytes at a
/// time: a snapshot in `all` mode counts the ~145,000 pages of the tracer's own mappings
/// (`tracer_bytes`), which byte by byte was most of its cost (15% of the target's CPU with the
/// debug tracer at a 100 ms period, numpy's import under the static 3.11).
pub fn not_resident(v: &[u8]) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let mut chunks = v.chunks_exact(8);
    let mut resident = 0u64;
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        resident += u64::from((w & LOW).count_ones());
    }
    resident += chunks.remainder().iter().filter(|b| **b & 1 != 0).count() as u64;
    v.len() as u64 - resident
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: u8, ptr: usize, size: u64, weight: f64) -> Event {
        Event {
            kind,
            ptr,
            size,
            weight,
            ..Event::default()
        }
    }

    #[test]
    fn not_resident_counts_the_pages_with_bit_0_clear() {
        // mincore sets bit 0 of a resident page's byte; the other bits are reserved (any value)
        let mut v = Vec::new();
        let mut clear = 0u64;
        for i in 0..1003u32 {
            let resident = (i * 7 + i / 5) % 3 == 0;
            let junk = ((i * 37) as u8) & 0xfe;
            v.push(junk | u8::from(resident));
            clear += u64::from(!resident);
        }
        for len in [0, 1, 7, 8, 9, 64, 1000, 1003] {
            let want = v[..len].iter().filter(|b| **b & 1 == 0).count() as u64;
            assert_eq!(not_resident(&v[..len]), want, "len {len}");
        }
        assert_eq!(not_resident(&v), clear);
        assert_eq!(not_resident(&[0xff; 4096]), 0);
        assert_eq!(not_resident(&[0xfe; 4097]), 4097);
    }

    #[test]
    fn large_only_and_prefix_unmap() {
        let mut r = Residency::new();
        r.apply(&ev(ALLOC, 0x10000, 1000, 1000.0));
        assert!(r.is_empty());
        r.apply(&ev(ALLOC, 0x100000, 1 << 20, 2.0 * (1 << 20) as f64));
        r.apply(&ev(ALLOC, 0x400000, 1 << 20, (1 << 20) as f64));
        assert_eq!(r.len(), 2);
        // All of it untouched: the weight.
        let all = r.untouched(|_, len| Some(len as u64));
        assert_eq!(all, 3.0 * (1 << 20) as f64);
        // Half of the first unmapped from its start: half its weight stays.
        let mut cut = ev(FREE, 0x100000, 1 << 19, (1 << 20) as f64);
        cut.domain = MMAP;
        r.apply(&cut);
        assert_eq!(r.len(), 2);
        let all = r.untouched(|_, len| Some(len as u64));
        assert_eq!(all, 2.0 * (1 << 20) as f64);
        r.apply(&ev(FREE, 0x400000, 1 << 20, (1 << 20) as f64));
        r.apply(&ev(FREE, 0x180000, 1 << 19, (1 << 20) as f64));
        assert!(r.is_empty());
    }

    /// Part of a listed mapping unmapped (`PART`, maps.rs): its pieces before and after stay
    /// listed with their shares of the weight (those under LARGE are dropped), wherever the
    /// range lies in it.
    #[test]
    fn a_part_unmapped_leaves_the_pieces_around_it() {
        let mut r = Residency::new();
        let m = 1usize << 20;
        r.apply(&ev(ALLOC, 0x1000_0000, 4 * m as u64, 8.0 * m as f64));
        // A hole of 1 MiB at 1 MiB: 1 MiB before (weight 2 MiB), 2 MiB after (4 MiB).
        let mut hole = ev(PART, 0x1000_0000 + m, m as u64, 2.0 * m as f64);
        hole.domain = MMAP;
        r.apply(&hole);
        assert_eq!(r.len(), 2);
        let mut seen = Vec::new();
        r.untouched(|start, len| {
            seen.push((start, len));
            Some(len as u64)
        });
        assert_eq!(seen, vec![(0x1000_0000, m), (0x1000_0000 + 2 * m, 2 * m)]);
        assert_eq!(r.untouched(|_, len| Some(len as u64)), 6.0 * m as f64);
        // The end of the last piece, leaving 32 KiB: under LARGE, dropped.
        let mut tail = ev(
            PART,
            0x1000_0000 + 2 * m + (32 << 10),
            2 * m as u64 - (32 << 10),
            0.0,
        );
        tail.domain = MMAP;
        r.apply(&tail);
        assert_eq!(r.len(), 1);
        // A part of nothing listed: nothing done.
        let mut none = ev(PART_INHERITED, 0x5000_0000, m as u64, 0.0);
        none.domain = MMAP;
        r.apply(&none);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_temporary_free_takes_the_allocation_off() {
        // A large block freed soon after it was made (FREE_TEMP) was left listed, so it was
        // measured after its free and the list grew.
        let mut r = Residency::new();
        r.apply(&ev(ALLOC, 0x100000, 1 << 20, (1 << 20) as f64));
        r.apply(&ev(ALLOC, 0x400000, 1 << 20, (1 << 20) as f64));
        r.apply(&ev(FREE_TEMP, 0x100000, 1 << 20, (1 << 20) as f64));
        assert_eq!(r.len(), 1);
        r.apply(&ev(FREE_INHERITED, 0x400000, 1 << 20, (1 << 20) as f64));
        assert!(r.is_empty());
    }

    #[test]
    fn inner_pages_only() {
        let mut r = Residency::new();
        // 0x1010 + 128 KiB: the inner range is 0x2000..0x21000 (31 pages).
        r.apply(&ev(ALLOC, 0x1010, 128 << 10, (128 << 10) as f64));
        let mut seen = vec![];
        r.untouched(|s, l| {
            seen.push((s, l));
            Some(0)
        });
        assert_eq!(seen, vec![(0x2000, 31 * 4096)]);
    }

    /// The kernel's answer on a fresh mapping: untouched until written.
    #[test]
    fn mincore_sees_touched_pages() {
        let len = 64 * PAGE;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(nonresident_bytes(p as usize, len), Some(len as u64));
        for i in 0..16 {
            // SAFETY: inside the mapping.
            unsafe { *(p as *mut u8).add(i * PAGE) = 1 };
        }
        assert_eq!(nonresident_bytes(p as usize, len), Some((48 * PAGE) as u64));
        // SAFETY: our mapping.
        unsafe { libc::munmap(p, len) };
        assert_eq!(nonresident_bytes(p as usize, len), None);
    }
}
