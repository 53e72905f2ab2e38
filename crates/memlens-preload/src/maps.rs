//! The live traced anonymous mappings, ordered by address, so that an `munmap`, `mremap` or
//! `MAP_FIXED` mapping over any range (the end or the middle of a traced mapping, or a range
//! spanning several) takes out exactly the bytes it unmaps.
//!
//! The pointer table is keyed by a block's start: it can tell a free of that address, not which
//! mapping holds an address inside it. Mappings are few (a program's own `mmap` calls and, in
//! `all` mode, pymalloc's arenas made before its allocator is wrapped; sampled, only the
//! sampled ones), so they are kept apart, in an array sorted by start over memory mapped once
//! (`MAP_NORESERVE`, touched as used) that the hooks change under a lock of their own
//! (hooks.rs). Nothing here allocates.
//!
//! **Part of a mapping unmapped.** The bytes unmapped leave the live figures with their share
//! of the sample's weight, `weight x bytes / size`, and the rest keeps the rest, at the same
//! stack and time (a hole in the middle leaves two pieces, each with its share). In `all` mode
//! the weight is the size, so every figure stays exact. Sampled, the share is unbiased: a
//! mapping of `s` bytes is sampled with probability `p` and weighs `s / p`, so a piece of `r`
//! of its bytes is expected to contribute `p x (s / p) x r / s = r`, what it holds.

use crate::table::Entry;

/// A page.
pub const PAGE: usize = 4096;

/// `len` rounded up to whole pages (saturating).
pub fn page_round(len: usize) -> usize {
    len.saturating_add(PAGE - 1) & !(PAGE - 1)
}

/// One traced mapping: its start and its table entry (size, weight, stack, time).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Map {
    /// The first byte.
    pub start: usize,
    /// Its size (bytes asked for; it spans them rounded up to pages), weight, stack and time.
    pub e: Entry,
}

impl Map {
    /// The end of the pages it spans.
    fn end(&self) -> usize {
        self.start.saturating_add(page_round(self.e.size as usize))
    }
}

/// What a cut did to one traced mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    /// Unmapped whole: the free of the mapping at `start`.
    Whole {
        /// Its start.
        start: usize,
        /// Its entry.
        e: Entry,
    },
    /// Unmapped in part: `size` of its bytes from `at`, of weight `weight`, left the mapping,
    /// whose entry was `e`; the rest stays live.
    Part {
        /// The first byte unmapped.
        at: usize,
        /// Bytes unmapped (of the mapping's size).
        size: u64,
        /// Their share of the weight.
        weight: f64,
        /// The mapping's entry before the cut (its stack, domain and time).
        e: Entry,
        /// The mapping is now two pieces (a hole was unmapped in its middle).
        split: bool,
        /// There was no room for a second piece: the bytes after the hole were taken out too
        /// (included in `size`), and are counted as `table_full` by the caller.
        lost: bool,
    },
}

/// The share of `e`'s weight that `n` of its bytes carry: exactly `n` when the weight is the
/// size (`all` mode).
fn share(e: &Entry, n: u64) -> f64 {
    if e.weight == e.size as f64 {
        n as f64
    } else {
        e.weight * (n as f64 / e.size as f64)
    }
}

/// The sorted array of live traced mappings, over memory it does not own.
#[derive(Debug)]
pub struct Maps {
    buf: *mut Map,
    cap: usize,
    len: usize,
}

impl Maps {
    /// No array yet (const, for a static).
    pub const fn empty() -> Maps {
        Maps {
            buf: std::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    /// An empty array over `cap` maps at `buf`.
    ///
    /// # Safety
    /// `buf` must be valid for reads and writes of `cap` [`Map`]s, suitably aligned, for as
    /// long as this is used, and used by nothing else.
    pub unsafe fn over(buf: *mut Map, cap: usize) -> Maps {
        Maps { buf, cap, len: 0 }
    }

    /// Whether it has memory.
    pub fn has_memory(&self) -> bool {
        !self.buf.is_null()
    }

    /// How many mappings are listed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The listed mappings, by address.
    pub fn as_slice(&self) -> &[Map] {
        if self.buf.is_null() {
            return &[];
        }
        // SAFETY: the first `len` maps of the buffer are written (`over`'s contract).
        unsafe { std::slice::from_raw_parts(self.buf, self.len) }
    }

    /// Inserts `m` at index `i` (room checked by the caller).
    fn insert_at(&mut self, i: usize, m: Map) {
        debug_assert!(self.len < self.cap && i <= self.len);
        // SAFETY: i <= len < cap: the moved range and the written slot are in the buffer.
        unsafe {
            std::ptr::copy(self.buf.add(i), self.buf.add(i + 1), self.len - i);
            self.buf.add(i).write(m);
        }
        self.len += 1;
    }

    fn remove_at(&mut self, i: usize) {
        debug_assert!(i < self.len);
        // SAFETY: i < len: the moved range is in the written part of the buffer.
        unsafe { std::ptr::copy(self.buf.add(i + 1), self.buf.add(i), self.len - i - 1) };
        self.len -= 1;
    }

    fn get_mut(&mut self, i: usize) -> &mut Map {
        debug_assert!(i < self.len);
        // SAFETY: i < len, a written map; the borrow of self keeps it unique.
        unsafe { &mut *self.buf.add(i) }
    }

    /// Lists a new mapping at `start`; false when there is no room (or no memory). The
    /// caller cuts its range first, so it overlaps none listed.
    pub fn insert(&mut self, start: usize, e: Entry) -> bool {
        if self.len >= self.cap {
            return false;
        }
        let i = self.as_slice().partition_point(|m| m.start < start);
        self.insert_at(i, Map { start, e });
        true
    }

    /// Forgets the mapping listed at `start` (an allocation the queue refused), if any.
    pub fn remove(&mut self, start: usize) {
        if let Ok(i) = self.as_slice().binary_search_by_key(&start, |m| m.start) {
            self.remove_at(i);
        }
    }

    /// Takes the page range `[a, b)` out of the listed mappings (it was unmapped or mapped
    /// over), telling `out` what it did to each one it met, in address order.
    pub fn cut(&mut self, a: usize, b: usize, mut out: impl FnMut(Cut)) {
        if a >= b {
            return;
        }
        let mut i = self.as_slice().partition_point(|m| m.end() <= a);
        while i < self.len {
            let m = *self.get_mut(i);
            if m.start >= b {
                break;
            }
            let end = m.end();
            let (lo, hi) = (a.max(m.start), b.min(end));
            let size = m.e.size;
            let left = (lo - m.start) as u64;
            // Bytes of the mapping from `hi` on (its size, not its last page's slack).
            let mut right = if hi < end {
                size.saturating_sub((hi - m.start) as u64)
            } else {
                0
            };
            if left == 0 && right == 0 {
                self.remove_at(i);
                out(Cut::Whole {
                    start: m.start,
                    e: m.e,
                });
                continue;
            }
            let split = left > 0 && right > 0;
            let lost = split && self.len >= self.cap;
            if lost {
                right = 0;
            }
            let (wl, wr) = (share(&m.e, left), share(&m.e, right));
            let rest = |n: u64, w: f64| Entry {
                size: n,
                weight: w,
                ..m.e
            };
            if left > 0 {
                self.get_mut(i).e = rest(left, wl);
                if right > 0 {
                    self.insert_at(
                        i + 1,
                        Map {
                            start: hi,
                            e: rest(right, wr),
                        },
                    );
                    i += 1;
                }
            } else {
                *self.get_mut(i) = Map {
                    start: hi,
                    e: rest(right, wr),
                };
            }
            i += 1;
            out(Cut::Part {
                at: lo,
                size: size - left - right,
                weight: m.e.weight - wl - wr,
                e: m.e,
                split: split && !lost,
                lost,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE;

    fn entry(size: u64, weight: f64) -> Entry {
        Entry {
            size,
            weight,
            domain: 1,
            stack: 7,
            t: 3,
        }
    }

    /// A list over a vector's memory, and the vector (kept alive with it).
    fn list(cap: usize) -> (Maps, Vec<Map>) {
        let mut v: Vec<Map> = Vec::with_capacity(cap);
        // SAFETY: the vector's buffer holds `cap` maps and outlives the list in each test.
        let m = unsafe { Maps::over(v.as_mut_ptr(), cap) };
        (m, v)
    }

    fn cut(m: &mut Maps, a: usize, b: usize) -> Vec<Cut> {
        let mut got = Vec::new();
        m.cut(a, b, |c| got.push(c));
        got
    }

    fn spans(m: &Maps) -> Vec<(usize, u64, f64)> {
        m.as_slice()
            .iter()
            .map(|x| (x.start, x.e.size, x.e.weight))
            .collect()
    }

    #[test]
    fn a_tail_leaves_the_head_with_its_bytes() {
        let (mut m, _v) = list(8);
        assert!(m.insert(0x10000, entry(8 * P as u64, 8.0 * P as f64)));
        let c = cut(&mut m, 0x10000 + 6 * P, 0x10000 + 8 * P);
        assert_eq!(
            c,
            vec![Cut::Part {
                at: 0x10000 + 6 * P,
                size: 2 * P as u64,
                weight: 2.0 * P as f64,
                e: entry(8 * P as u64, 8.0 * P as f64),
                split: false,
                lost: false,
            }]
        );
        assert_eq!(spans(&m), vec![(0x10000, 6 * P as u64, 6.0 * P as f64)]);
    }

    #[test]
    fn a_hole_splits_and_the_pieces_keep_their_shares() {
        let (mut m, _v) = list(8);
        // Sampled: a weight that is not the size; a size that ends inside its last page.
        let size = 10 * P as u64 - 100;
        m.insert(0x100000, entry(size, 20.0 * P as f64));
        let c = cut(&mut m, 0x100000 + 2 * P, 0x100000 + 5 * P);
        let Cut::Part {
            at,
            size: gone,
            weight,
            split,
            lost,
            ..
        } = c[0]
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            (at, gone, split, lost),
            (0x100000 + 2 * P, 3 * P as u64, true, false)
        );
        let s = spans(&m);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0, s[0].1), (0x100000, 2 * P as u64));
        assert_eq!((s[1].0, s[1].1), (0x100000 + 5 * P, 5 * P as u64 - 100));
        let total = s[0].2 + s[1].2 + weight;
        assert!((total - 20.0 * P as f64).abs() < 1e-6, "{total}");
        assert!((s[0].2 - 20.0 * P as f64 * (2 * P) as f64 / size as f64).abs() < 1e-6);
        // The tail's last page, slack included, takes the rest.
        let c = cut(&mut m, 0x100000 + 5 * P, 0x100000 + 10 * P);
        assert!(matches!(c[0], Cut::Whole { start, .. } if start == 0x100000 + 5 * P));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_range_over_several_takes_each_its_part() {
        let (mut m, _v) = list(8);
        for k in 0..4 {
            m.insert(k * 16 * P, entry(4 * P as u64, 4.0 * P as f64));
        }
        // The end of the first, the second and third whole, the start of the fourth.
        let c = cut(&mut m, 2 * P, 16 * 3 * P + P);
        assert_eq!(c.len(), 4);
        assert!(matches!(c[0], Cut::Part { at, size, .. } if at == 2 * P && size == 2 * P as u64));
        assert!(matches!(c[1], Cut::Whole { start, .. } if start == 16 * P));
        assert!(matches!(c[2], Cut::Whole { start, .. } if start == 32 * P));
        assert!(matches!(c[3], Cut::Part { at, size, .. } if at == 48 * P && size == P as u64));
        assert_eq!(
            spans(&m),
            vec![
                (0, 2 * P as u64, 2.0 * P as f64),
                (48 * P + P, 3 * P as u64, 3.0 * P as f64)
            ]
        );
        // Nothing listed there: nothing done.
        assert!(cut(&mut m, 4 * P, 40 * P).is_empty());
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_full_list_takes_the_piece_after_a_hole_out_and_says_so() {
        let (mut m, _v) = list(1);
        m.insert(0, entry(8 * P as u64, 8.0 * P as f64));
        assert!(!m.insert(64 * P, entry(P as u64, P as f64)));
        let c = cut(&mut m, 2 * P, 3 * P);
        assert!(
            matches!(c[0], Cut::Part { size, weight, split: false, lost: true, .. }
                if size == 6 * P as u64 && weight == 6.0 * P as f64),
            "{c:?}"
        );
        assert_eq!(spans(&m), vec![(0, 2 * P as u64, 2.0 * P as f64)]);
    }

    #[test]
    fn insert_keeps_the_order_and_remove_forgets() {
        let (mut m, _v) = list(4);
        for s in [5 * P, P, 9 * P] {
            m.insert(s, entry(P as u64, 1.0));
        }
        let starts: Vec<usize> = m.as_slice().iter().map(|x| x.start).collect();
        assert_eq!(starts, vec![P, 5 * P, 9 * P]);
        m.remove(5 * P);
        m.remove(6 * P);
        let starts: Vec<usize> = m.as_slice().iter().map(|x| x.start).collect();
        assert_eq!(starts, vec![P, 9 * P]);
    }
}
