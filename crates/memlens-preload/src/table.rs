//! The set of live sampled pointers: a fixed-size, lock-free, open-addressing hash table in
//! memory mapped once, so a free looks its pointer up in O(1) without allocating.
//!
//! Keys are pointers (never 0 or 1): 0 marks an empty slot, 1 a removed one (a tombstone, so
//! probe chains stay intact). A pointer is inserted by the thread that got it from the
//! allocator before the program sees it, and removed by the one freeing it before the allocator
//! can hand the address out again, so one key is never in the table twice. Probing is linear
//! and bounded.
//!
//! Tombstones are never turned back into empty slots (doing so safely while another thread
//! probes past the slot to insert would need more than one atomic), so in a long run the
//! table fills with them and a probe for an absent key would walk [`MAX_PROBES`] slots. A free
//! of an unsampled pointer (nearly every free) therefore asks a counting filter first: one
//! byte counter per `hash(key)`, counted up before a key is inserted and down after it is
//! removed. A zero counter proves the key absent without touching the table; a non-zero one
//! (the key, or another live key of the same counter) sends the lookup on to the table. A
//! counter that reaches 255 sticks there (never counted down), so a counter is never below the
//! number of live keys that map to it, and a zero is never wrong.
//!
//! Why a zero is never wrong under threads: the insert of key K (its counter's increment
//! included) happens before any free of K (the program can only free what it was given), so
//! the free's load sees K's increment or a later value in the counter's modification order.
//! Every decrement in that order follows its own key's increment (same argument), and K's own
//! decrement comes only after its removal; so each value from K's increment on counts K, unless
//! the counter is stuck at 255.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

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
    /// When it was allocated and by which fork depth (hooks.rs: the depth in the top 3 bits,
    /// the coarse monotonic clock in units of 2^19 ns below them, wrapping).
    pub t: u32,
}

const DOMAIN_SHIFT: u32 = 62;
const SIZE_MASK: u64 = (1 << DOMAIN_SHIFT) - 1;

/// A filter counter's sticky value.
const STUCK: u8 = u8::MAX;

/// The table over `cap` slots, and its filter, in memory it does not own.
pub struct Table {
    slots: *const Slot,
    mask: usize,
    shift: u32,
    filter: *const AtomicU8,
    fshift: u32,
}

// SAFETY: all access to the slots is through atomics; the memory lives for the process.
unsafe impl Sync for Table {}
// SAFETY: as above; the raw pointer is only an address of shared atomics.
unsafe impl Send for Table {}

impl Table {
    /// A table of `cap` (a power of two) slots over `mem`, a zeroed region of
    /// [`Table::bytes_for`]`(cap)` bytes: the slots, then the filter.
    ///
    /// # Safety
    /// `mem` must be valid for that many bytes, zeroed, aligned for [`Slot`] and live as long
    /// as the table.
    pub unsafe fn from_raw(mem: *mut u8, cap: usize) -> Table {
        debug_assert!(cap.is_power_of_two() && cap >= 2);
        let n = Self::filter_len(cap);
        Table {
            slots: mem as *const Slot,
            mask: cap - 1,
            shift: 64 - cap.trailing_zeros(),
            // SAFETY: the filter follows the slots inside the region (from_raw's contract).
            filter: unsafe { mem.add(cap * std::mem::size_of::<Slot>()) } as *const AtomicU8,
            fshift: 64 - n.trailing_zeros(),
        }
    }

    /// Counters of the filter of a table of `cap` slots: 16 a slot (so few are non-zero while
    /// the table is far from full), 16 Mi at most (16 MiB, touched as used).
    fn filter_len(cap: usize) -> usize {
        (cap * 16).min(1 << 24)
    }

    /// Bytes of memory a table of `cap` slots needs (its slots and its filter).
    pub fn bytes_for(cap: usize) -> usize {
        cap * std::mem::size_of::<Slot>() + Self::filter_len(cap)
    }

    /// The filter counter of `key` (a hash independent of the slot's).
    #[inline]
    fn counter(&self, key: usize) -> &AtomicU8 {
        let i = ((key as u64 >> 4).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> self.fshift) as usize;
        // SAFETY: i < filter_len (the top bits of the hash); the region is valid (from_raw).
        unsafe { &*self.filter.add(i) }
    }

    /// Counts `key` in the filter (saturating at [`STUCK`]).
    fn count_up(&self, key: usize) {
        let c = self.counter(key);
        let mut cur = c.load(Ordering::Relaxed);
        while cur != STUCK {
            match c.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Uncounts `key`, which was counted (a stuck counter stays).
    fn count_down(&self, key: usize) {
        let c = self.counter(key);
        let mut cur = c.load(Ordering::Relaxed);
        while cur != STUCK {
            debug_assert!(cur > 0);
            match c.compare_exchange_weak(cur, cur - 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
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
        self.count_up(key);
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
        self.count_down(key);
        false
    }

    /// Removes `key` and returns what was kept for it, if it was sampled.
    #[inline]
    pub fn remove(&self, key: usize) -> Option<Entry> {
        if !self.may_hold(key) {
            return None;
        }
        self.remove_slow(key)
    }

    /// False when `key` is certainly not in the table (its filter counter is zero): the one
    /// load of the free of an unsampled pointer.
    #[inline]
    pub fn may_hold(&self, key: usize) -> bool {
        self.counter(key).load(Ordering::Relaxed) != 0
    }

    /// [`Table::remove`] past the filter: the probe of the table.
    #[inline(never)]
    fn remove_slow(&self, key: usize) -> Option<Entry> {
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
                self.count_down(key);
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

    fn table(cap: usize) -> (Vec<u64>, Table) {
        let mut v = vec![0u64; Table::bytes_for(cap).div_ceil(8)];
        // SAFETY: the vector is zeroed, 8-aligned (as Slot needs), as long as bytes_for says
        // and outlives the table in each test.
        let t = unsafe { Table::from_raw(v.as_mut_ptr().cast(), cap) };
        (v, t)
    }

    /// Non-zero filter counters.
    fn counted(t: &Table) -> usize {
        (0..Table::filter_len(t.mask + 1))
            // SAFETY: within the filter (filter_len counters follow the slots).
            .filter(|&i| unsafe { &*t.filter.add(i) }.load(Ordering::Relaxed) != 0)
            .count()
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

    fn entry(size: u64) -> Entry {
        Entry {
            size,
            weight: 1.0,
            domain: 0,
            stack: 1,
            t: 2,
        }
    }

    #[test]
    fn filter_answers_absent_in_a_table_of_tombstones() {
        let (_v, t) = table(256);
        // Every slot becomes a tombstone (each insert takes the first free slot from its home,
        // so 256 at a time fill the table).
        for round in 0..20usize {
            let keys: Vec<usize> = (0..256).map(|k| 0x10_0000 * (round + 1) + k * 16).collect();
            let stored = keys
                .iter()
                .filter(|&&k| t.insert(k, entry(k as u64)))
                .count();
            assert!(stored > 128, "round {round}: only {stored} of 256 stored");
            for &k in &keys {
                t.remove(k);
            }
        }
        let tomb = (0..256).filter(|&i| t.slot(i).key.load(Ordering::Relaxed) == TOMBSTONE);
        assert_eq!(tomb.count(), 256, "the table is all tombstones");
        assert_eq!(counted(&t), 0, "every counter is back to zero");
        for k in 0..10_000usize {
            assert_eq!(t.remove(0x7000_0000 + k * 16), None);
        }
        // Still usable: tombstones are claimed, and found again past the filter.
        for k in 0..100usize {
            assert!(t.insert(0x9000_0000 + k * 16, entry(k as u64)));
        }
        assert!((1..=100).contains(&counted(&t)));
        for k in 0..100usize {
            assert_eq!(t.remove(0x9000_0000 + k * 16), Some(entry(k as u64)));
        }
        assert_eq!(counted(&t), 0);
    }

    #[test]
    fn stuck_counter_never_hides_a_key() {
        let (_v, t) = table(1024);
        // 300 keys on one counter: it sticks at 255 and the keys past it are still found.
        let first = 0x1000usize;
        let c0 = t.counter(first) as *const AtomicU8;
        let keys: Vec<usize> = (0..)
            .map(|k| first + k * 16)
            .filter(|&k| std::ptr::eq(t.counter(k), c0))
            .take(300)
            .collect();
        for &k in &keys {
            assert!(t.insert(k, entry(k as u64)));
        }
        assert_eq!(t.counter(first).load(Ordering::Relaxed), STUCK);
        for &k in keys.iter().rev() {
            assert_eq!(t.remove(k), Some(entry(k as u64)));
        }
        assert_eq!(t.counter(first).load(Ordering::Relaxed), STUCK);
        assert_eq!(t.remove(first), None);
        assert_eq!(counted(&t), 1);
    }

    #[test]
    fn refused_insert_uncounts() {
        let (_v, t) = table(8);
        for k in 0..8usize {
            assert!(t.insert(0x100 + k * 16, entry(1)));
        }
        assert_eq!(
            counted(&t),
            8 - collisions(&t, (0..8).map(|k| 0x100 + k * 16))
        );
        assert!(!t.insert(0x9990, entry(1)));
        // The refused key is not counted: after the 8 leave, every counter is zero.
        for k in 0..8usize {
            assert_eq!(t.remove(0x100 + k * 16), Some(entry(1)));
        }
        assert_eq!(counted(&t), 0);
    }

    /// Keys sharing a counter with an earlier one.
    fn collisions(t: &Table, keys: impl Iterator<Item = usize>) -> usize {
        let mut seen: Vec<*const AtomicU8> = Vec::new();
        let mut n = 0;
        for k in keys {
            let c = t.counter(k) as *const AtomicU8;
            if seen.contains(&c) {
                n += 1;
            } else {
                seen.push(c);
            }
        }
        n
    }

    #[test]
    fn concurrent_shared_counters() {
        // A small filter (4 Ki counters), 8 threads with 64 live keys each: counters are shared
        // between threads all the time. Every key is found at its free, a key never inserted
        // is never found, and the counters end at zero.
        let (_v, t) = table(256);
        std::thread::scope(|sc| {
            for th in 0..8usize {
                let t = &t;
                sc.spawn(move || {
                    let mut live = std::collections::VecDeque::new();
                    for n in 0..40_000usize {
                        let k = 0x1_0000_0000 * (th + 1) + n * 16;
                        if t.insert(k, entry(n as u64)) {
                            live.push_back((k, n));
                        }
                        if live.len() > 16 {
                            let (k, n) = live.pop_front().expect("non-empty");
                            assert_eq!(t.remove(k), Some(entry(n as u64)));
                        }
                        // A key of this thread's that was never inserted.
                        assert_eq!(
                            t.remove(0x8000_0000_0000 + th * 0x1_0000_0000 + n * 16),
                            None
                        );
                    }
                    for (k, n) in live {
                        assert_eq!(t.remove(k), Some(entry(n as u64)));
                    }
                });
            }
        });
        assert_eq!(counted(&t), 0);
    }
}
