//! The set of live sampled pointers: a fixed-size, lock-free, open-addressing hash table in
//! memory mapped once, so a free looks its pointer up in O(1) without allocating.
//!
//! Keys are pointers (never 0 or 1): 0 marks an empty slot, 1 a removed one (a tombstone, so
//! probe chains stay intact). A pointer is inserted by the thread that got it from the
//! allocator before the program sees it, and removed by the one freeing it before the allocator
//! can hand the address out again, so one key is never in the table twice. Probing is linear
//! and bounded: a free of an unsampled pointer usually stops at the first, empty, slot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;
/// The most slots one lookup or insert visits.
pub const MAX_PROBES: usize = 64;

/// One slot: the pointer, its size (and domain in the top two bits), its weight's bits, its
/// stack and time.
#[repr(C)]
pub struct Slot {
    key: AtomicUsize,
    size: AtomicU64,
    weight: AtomicU64,
    meta: AtomicU64,
}

/// What the table keeps about a sampled allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// Bytes requested.
    pub size: u64,
    /// The sample's weight (estimated bytes it stands for).
    pub weight: f64,
    /// The domain ([`crate::ring::MALLOC`], [`crate::ring::MMAP`], [`crate::ring::PYMALLOC`]).
    pub domain: u8,
    /// The interned stack of the allocation.
    pub stack: u32,
    /// When it was allocated, in units of 2^16 ns of the coarse monotonic clock (wrapping).
    pub t: u32,
}

const DOMAIN_SHIFT: u32 = 62;
const SIZE_MASK: u64 = (1 << DOMAIN_SHIFT) - 1;

/// The table over `cap` slots of memory it does not own.
pub struct Table {
    slots: *const Slot,
    mask: usize,
    shift: u32,
}

// SAFETY: all access to the slots is through atomics; the memory lives for the process.
unsafe impl Sync for Table {}
// SAFETY: as above; the raw pointer is only an address of shared atomics.
unsafe impl Send for Table {}

impl Table {
    /// A table over `slots`, a zeroed region of `cap` (a power of two) slots.
    ///
    /// # Safety
    /// `slots` must be valid, zeroed, aligned for [`Slot`] and live as long as the table.
    pub unsafe fn from_raw(slots: *mut Slot, cap: usize) -> Table {
        debug_assert!(cap.is_power_of_two() && cap >= 2);
        Table {
            slots,
            mask: cap - 1,
            shift: 64 - cap.trailing_zeros(),
        }
    }

    /// Bytes of memory a table of `cap` slots needs.
    pub fn bytes_for(cap: usize) -> usize {
        cap * std::mem::size_of::<Slot>()
    }

    #[inline]
    fn slot(&self, i: usize) -> &Slot {
        // SAFETY: i is masked to the table's size; the region is valid (from_raw's contract).
        unsafe { &*self.slots.add(i & self.mask) }
    }

    #[inline]
    fn home(&self, key: usize) -> usize {
        ((key as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Inserts `key`; false when no free slot lies within [`MAX_PROBES`] (the sample is then
    /// dropped by the caller and counted).
    pub fn insert(&self, key: usize, e: Entry) -> bool {
        debug_assert!(key > TOMBSTONE);
        let h = self.home(key);
        for i in 0..MAX_PROBES.min(self.mask + 1) {
            let s = self.slot(h + i);
            let cur = s.key.load(Ordering::Relaxed);
            if cur != EMPTY && cur != TOMBSTONE {
                continue;
            }
            // Claim the slot first; its values are read only by the thread that frees this
            // pointer, which the program orders after the allocation returned.
            if s.key
                .compare_exchange(cur, key, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let d = u64::from(e.domain & 3) << DOMAIN_SHIFT;
                s.size.store((e.size & SIZE_MASK) | d, Ordering::Relaxed);
                s.meta
                    .store(u64::from(e.stack) << 32 | u64::from(e.t), Ordering::Relaxed);
                s.weight.store(e.weight.to_bits(), Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Removes `key` and returns what was kept for it, if it was sampled.
    #[inline]
    pub fn remove(&self, key: usize) -> Option<Entry> {
        let h = self.home(key);
        for i in 0..MAX_PROBES.min(self.mask + 1) {
            let s = self.slot(h + i);
            let cur = s.key.load(Ordering::Acquire);
            if cur == EMPTY {
                return None;
            }
            if cur == key {
                let weight = f64::from_bits(s.weight.load(Ordering::Acquire));
                let size = s.size.load(Ordering::Relaxed);
                let meta = s.meta.load(Ordering::Relaxed);
                s.key.store(TOMBSTONE, Ordering::Release);
                return Some(Entry {
                    size: size & SIZE_MASK,
                    weight,
                    domain: (size >> DOMAIN_SHIFT) as u8,
                    stack: (meta >> 32) as u32,
                    t: meta as u32,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(cap: usize) -> (Vec<Slot>, Table) {
        let mut v: Vec<Slot> = (0..cap)
            .map(|_| Slot {
                key: AtomicUsize::new(0),
                size: AtomicU64::new(0),
                weight: AtomicU64::new(0),
                meta: AtomicU64::new(0),
            })
            .collect();
        // SAFETY: the vector is zeroed, aligned and outlives the table in each test.
        let t = unsafe { Table::from_raw(v.as_mut_ptr(), cap) };
        (v, t)
    }

    #[test]
    fn insert_remove_roundtrip() {
        let (_v, t) = table(1024);
        let e = |s| Entry {
            size: s,
            weight: s as f64 * 1.5,
            domain: (s % 3) as u8,
            stack: s as u32 * 3,
            t: 7,
        };
        for k in 0..500usize {
            assert!(t.insert(0x1000 + k * 16, e(k as u64)));
        }
        assert_eq!(t.remove(0x10), None);
        for k in (0..500usize).rev() {
            assert_eq!(t.remove(0x1000 + k * 16), Some(e(k as u64)));
            assert_eq!(t.remove(0x1000 + k * 16), None);
        }
        // Tombstones are reused.
        for k in 0..500usize {
            assert!(t.insert(0x9000 + k * 32, e(1)));
        }
    }

    #[test]
    fn full_table_refuses() {
        let (_v, t) = table(8);
        let e = Entry {
            size: 1,
            weight: 1.0,
            domain: 0,
            stack: 0,
            t: 0,
        };
        for k in 0..8usize {
            assert!(t.insert(0x100 + k * 16, e));
        }
        assert!(!t.insert(0x9990, e));
    }

    #[test]
    fn concurrent_inserts_and_removes() {
        let (_v, t) = table(1 << 14);
        std::thread::scope(|sc| {
            for th in 0..8usize {
                let t = &t;
                sc.spawn(move || {
                    for round in 0..50usize {
                        let base = 0x1_0000_0000 * (th + 1) + round * 0x10_0000;
                        for k in 0..500usize {
                            let e = Entry {
                                size: k as u64,
                                weight: 1.0,
                                domain: 0,
                                stack: 1,
                                t: 2,
                            };
                            assert!(t.insert(base + k * 16, e));
                        }
                        for k in 0..500usize {
                            assert_eq!(t.remove(base + k * 16).map(|e| e.size), Some(k as u64));
                        }
                    }
                });
            }
        });
    }
}
