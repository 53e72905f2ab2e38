//! The set of live sampled pointers: lock-free open-addressing hash tables in memory mapped
//! once, so a free looks its pointer up in O(1) without allocating.
//!
//! Keys are pointers (never 0 or 1): 0 marks an empty slot, 1 a removed one (a tombstone, so
//! probe chains stay intact). A pointer is inserted by the thread that got it from the
//! allocator before the program sees it, and removed by the one freeing it before the allocator
//! can hand the address out again, so one key is never in the table twice. Probing is linear
//! and bounded.
//!
//! **Levels.** The hash spreads the keys, so a table makes about one page resident per live
//! key until it is dense: one fixed table sized for `all` mode (16 Mi slots) held ~6x the live
//! heap resident for 1,000-byte blocks. The slots are therefore [`Shape::levels`] tables of
//! growing size (each 2x or 4x the last) laid out in one mapping reserved at start and touched only
//! as used. Inserts go to the newest level in use (`top`); once it holds 3/4 of its capacity
//! (by its live count, which in `all` mode counts one key in 16, see [`Shape::live_shift`])
//! the next one becomes `top`. So the levels in use stay dense: their resident size follows
//! the live keys (at most the level sizes up to `top`), never the table's whole reservation.
//! Nothing is moved between levels (no rehash, no lock); a key stays where it was put.
//!
//! Tombstones are never turned back into empty slots (doing so safely while another thread
//! probes past the slot to insert would need more than one atomic), so in a long run a level
//! fills with them and a probe for an absent key would walk [`MAX_PROBES`] slots. A free
//! of an unsampled pointer (nearly every free) therefore asks a counting filter first: one
//! 16-bit word per `hash(key)`, whose low byte counts the keys of that hash (counted up, with
//! the level's bit below in the same atomic operation, once a key is in its slot and before
//! the insert returns; down after it is removed) and whose high byte has one bit per level a
//! key of that hash was put in since the count was last zero. A zero word proves the key
//! absent without touching the table; a non-zero one (the key, or another live key of the same
//! word) sends the lookup on to the levels of its bits only (nearly always one). A count that
//! reaches 255 sticks there (never counted down, its bits never cleared), so a count is never
//! below the number of live keys that map to it, and a zero is never wrong.
//!
//! Why a zero is never wrong under threads: the insert of key K (its count's increment and its
//! level bit included) happens before any free of K (the program can only free what it was
//! given), so the free's load sees K's increment and bit, or a later value in the word's
//! modification order. Every decrement in that order follows its own key's increment (same
//! argument), and K's own decrement comes only after its removal; so each value from K's
//! increment on counts K, unless the count is stuck at 255. The bits are cleared only by the
//! decrement that brings the count to zero, which by the same argument no value from K's bit
//! to K's decrement is; so the free finds K's level among the bits. A free reads `top` after
//! the insert read it, so (read-read coherence of the one monotonic atomic) it never sees a
//! lower `top` than the level K was put in; the lookup does not need `top` at all, only the
//! bits.
//!
//! **Exclusive use.** [`Table::insert_excl`] and [`Table::remove_excl`] do the same steps with
//! a plain load and store where the others have an atomic read-modify-write (the slot's
//! claim, the filter word's count and bits, the live count, `top`): no locked instruction.
//! They are for a table whose every change is made by threads that exclude one another by
//! a lock held around each call (hooks.rs: the main interpreter's GIL, for the `all`-mode
//! table of its pymalloc blocks), so each read-modify-write is one thread's alone, and the
//! lock's release and acquisition order one call's stores before the next call's loads: the
//! argument above holds with "the next value in the word's modification order" being simply
//! the next call's. Calls of `insert`/`remove` must never be mixed with these on one table
//! (a plain store could overwrite a concurrent atomic one). A thread that does not hold the
//! lock may still call [`Table::may_hold`] and `remove_excl` for a key that this table
//! cannot hold: the probe only loads, and a slot holds only keys put in this table, so it
//! finds nothing and writes nothing.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};

const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;
/// The most slots one lookup or insert visits in one level.
pub const MAX_PROBES: usize = 64;
/// log2 of the filter words in a page (4 KiB of 16-bit words).
const FILTER_PAGE_BITS: u32 = 11;

/// The most levels a table has (one bit each in a filter word's high byte).
pub const MAX_LEVELS: u32 = 8;

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

/// A filter count's sticky value.
const STUCK: u16 = 0xFF;
const COUNT: u16 = 0xFF;

/// The sizes of a table: level `i` has `2^(base_bits + growth_bits * i)` slots; the filter
/// `2^filter_bits` words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// log2 of the first level's slots.
    pub base_bits: u32,
    /// log2 of each level's size over the one before.
    pub growth_bits: u32,
    /// How many levels (at most [`MAX_LEVELS`]).
    pub levels: u32,
    /// log2 of the filter's words.
    pub filter_bits: u32,
    /// 0: a key's filter word is a hash of the key (any of the filter's pages). Else: the
    /// word's 4 KiB page (of 2,048 words) is picked by the key's address bits from
    /// `filter_region_bits` up (the `2^filter_region_bits` bytes of address space it lies
    /// in, the pages taken in turn), its word in that page by the hash. A small program's
    /// samples, which lie in a few such regions, then write a few of the filter's pages, not
    /// one page each (a filter word is made resident by its first count; ~30 of a 256 KiB
    /// filter's 64 pages were on w6). What it costs: the share of a region's words that
    /// are non-zero (the frees that go past the filter) follows the live samples in that
    /// region (sampling by bytes: about `2^filter_region_bits / mean` of them), not all.
    pub filter_region_bits: u32,
    /// The levels' live counts count only the keys whose hash picks them, one in
    /// `2^live_shift`, each as `2^live_shift` (0: every key, exactly). See [`Table::live`].
    pub live_shift: u32,
}

impl Shape {
    /// Sampled mode: levels of 256, 1 Ki, 4 Ki, 16 Ki and 64 Ki slots (8 KiB to 2 MiB,
    /// 87,296 slots in all: a small program's few dozen live samples keep only the first 8 KiB
    /// resident, where a first level of 1 Ki slots made all of its 32 KiB resident), a filter
    /// of 128 Ki words (256 KiB: few are non-zero with the few live samples sampling keeps, so
    /// a free rarely goes past it), its pages picked by 4 MiB region of address space
    /// ([`Shape::filter_region_bits`]: about 8 live samples a region at the default mean, so
    /// 8 of a page's 2,048 words are non-zero, where 1 in 2,048 of the whole filter's were
    /// for a program of 64 live samples; the same share once a program's live memory spans
    /// the filter's 64 regions, 256 MiB).
    pub const SAMPLED: Shape = Shape {
        base_bits: 8,
        growth_bits: 2,
        levels: 5,
        filter_bits: 17,
        filter_region_bits: 22,
        live_shift: 0,
    };
    /// Sampled mode at a mean of `mean` bytes: [`Shape::SAMPLED`] with a filter twice (four
    /// times) as large for a mean of 256 KiB (128 KiB or less), which keep as many more live
    /// samples: the share of non-zero words, the frees that go past the filter, stays that of
    /// the default.
    pub fn sampled(mean: u64) -> Shape {
        let more = if mean <= 128 << 10 {
            2
        } else if mean <= 256 << 10 {
            1
        } else {
            0
        };
        Shape {
            filter_bits: Self::SAMPLED.filter_bits + more,
            ..Self::SAMPLED
        }
    }

    /// `all` mode: every pymalloc block too (one slot each for as long as it lives: 5 M objects
    /// need 5 M slots; an interpreter's start-up leaves ~50,000): levels of 64 Ki to 8 Mi
    /// slots, each twice the last (16 Mi slots in all, 512 MiB of address space, touched as
    /// used), a filter of 512 Ki words (1 MiB). In `all` mode nearly every free asks for a key
    /// that is in the table (only blocks made before tracing started are not), so the filter
    /// is kept small: in a Python process, where the main interpreter's pymalloc blocks go in
    /// a table of their own (hooks.rs, `gil_table`), this one holds few keys, spread over
    /// every page of its filter.
    pub const ALL: Shape = Shape {
        base_bits: 16,
        growth_bits: 1,
        levels: 8,
        filter_bits: 19,
        filter_region_bits: 0,
        live_shift: 4,
    };

    /// `all` mode's table of the main interpreter's pymalloc blocks (hooks.rs, `gil_table`):
    /// [`Shape::ALL`]'s levels with a filter of 256 Ki words (512 KiB). Nearly every free
    /// that asks this table is of a key in it; the filter only has to rule out the blocks
    /// made before the wrapper was installed (an interpreter's start-up leaves ~50,000), so
    /// a smaller one keeps fewer pages resident and in cache.
    pub const ALL_GIL: Shape = Shape {
        filter_bits: 18,
        ..Shape::ALL
    };

    fn level_bits(self, l: u32) -> u32 {
        self.base_bits + self.growth_bits * l
    }

    /// Slots before level `l`.
    fn level_start(self, l: u32) -> usize {
        (0..l).map(|i| 1usize << self.level_bits(i)).sum()
    }

    fn filter_len(self) -> usize {
        1 << self.filter_bits
    }

    /// Bytes of the header: `top`, then each level's live count.
    const HEADER: usize = 128;

    /// Bytes of memory a table of this shape needs: header, filter, levels.
    pub fn bytes(self) -> usize {
        Self::HEADER
            + self.filter_len() * 2
            + self.level_start(self.levels) * std::mem::size_of::<Slot>()
    }
}

/// The tables and their filter, in memory they do not own.
pub struct Table {
    /// The newest level in use (monotonic), then each level's live keys.
    hdr: *const AtomicUsize,
    filter: *const AtomicU16,
    /// The filter word's index: `(key >> rshift & rmask) | hash >> fshift`
    /// ([`Shape::filter_region_bits`]; `rmask` 0 when the index is all hash).
    fshift: u32,
    rshift: u32,
    rmask: usize,
    slots: *const Slot,
    shape: Shape,
    /// Each level's figures, computed once (a probe used to derive them from the shape at
    /// each slot).
    lv: [Level; MAX_LEVELS as usize],
    /// `2^live_shift - 1` ([`Table::counts_live`]).
    live_mask: u64,
}

/// One level's figures: its first slot (index into `slots`), its size less one (the mask of
/// a slot index), the shift of the home hash, the most slots a probe visits, and the live
/// count at which it is 3/4 full.
#[derive(Clone, Copy, Default)]
struct Level {
    start: usize,
    mask: usize,
    hshift: u32,
    probes: usize,
    full_at: usize,
}

// SAFETY: all access to the memory is through atomics; the memory lives for the process.
unsafe impl Sync for Table {}
// SAFETY: as above; the raw pointers are only addresses of shared atomics.
unsafe impl Send for Table {}

impl Table {
    /// A table of `shape` over `mem`, a zeroed region of [`Shape::bytes`] bytes. All zeros is
    /// an empty table, header included (so the region may be given back with `MADV_DONTNEED`
    /// once nothing uses it).
    ///
    /// # Safety
    /// `mem` must be valid for that many bytes, zeroed, aligned for [`Slot`] and live as long
    /// as the table.
    pub unsafe fn from_raw(mem: *mut u8, shape: Shape) -> Table {
        assert!(shape.levels >= 1 && shape.levels <= MAX_LEVELS && shape.base_bits >= 1);
        assert!(shape.level_bits(shape.levels - 1) < 48);
        assert!(shape.filter_bits >= 1 && shape.filter_bits < 32);
        // The index's bits from the hash: all, or those within a page of words.
        let fbits_hashed = if shape.filter_region_bits > FILTER_PAGE_BITS
            && shape.filter_bits > FILTER_PAGE_BITS
        {
            FILTER_PAGE_BITS
        } else {
            shape.filter_bits
        };
        let mut lv = [Level::default(); MAX_LEVELS as usize];
        for (l, v) in lv.iter_mut().enumerate().take(shape.levels as usize) {
            let bits = shape.level_bits(l as u32);
            *v = Level {
                start: shape.level_start(l as u32),
                mask: (1usize << bits) - 1,
                hshift: 64 - bits,
                probes: MAX_PROBES.min(1 << bits),
                full_at: (1usize << bits) / 4 * 3,
            };
        }
        // 1 + MAX_LEVELS words fit the header.
        const _: () = assert!((1 + MAX_LEVELS as usize) * 8 <= Shape::HEADER);
        Table {
            hdr: mem as *const AtomicUsize,
            // SAFETY: the filter follows the header, the slots the filter, inside the region
            // (from_raw's contract); HEADER and the filter's bytes keep Slot's alignment.
            filter: unsafe { mem.add(Shape::HEADER) } as *const AtomicU16,
            fshift: 64 - fbits_hashed,
            rshift: shape.filter_region_bits.saturating_sub(FILTER_PAGE_BITS),
            rmask: if fbits_hashed < shape.filter_bits {
                shape.filter_len() - 1 - ((1 << FILTER_PAGE_BITS) - 1)
            } else {
                0
            },
            // SAFETY: as above.
            slots: unsafe { mem.add(Shape::HEADER + shape.filter_len() * 2) } as *const Slot,
            shape,
            lv,
            live_mask: (1u64 << shape.live_shift) - 1,
        }
    }

    /// The newest level in use.
    #[inline]
    fn top(&self) -> &AtomicUsize {
        // SAFETY: the header's first word (from_raw's contract).
        unsafe { &*self.hdr }
    }

    /// Live keys of level `l`.
    #[inline]
    fn live(&self, l: u32) -> &AtomicUsize {
        // SAFETY: l < MAX_LEVELS: the header's words 1..=MAX_LEVELS.
        unsafe { &*self.hdr.add(1 + l as usize) }
    }

    /// The filter word of `key` (a hash independent of the slot's).
    #[inline]
    fn word(&self, key: usize) -> &AtomicU16 {
        let h = ((key as u64 >> 4).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> self.fshift) as usize;
        let i = ((key >> self.rshift) & self.rmask) | h;
        // SAFETY: i < filter_len (rmask is 0 or below filter_len, h < 2^(64 - fshift), at most
        // filter_len); the region is valid (from_raw).
        unsafe { &*self.filter.add(i) }
    }

    /// Counts `key` in the filter (saturating at [`STUCK`]) and sets `bit`, its level's, in
    /// the same word: one atomic operation (on the machines memlens is measured on, each
    /// locked instruction costs about 30 ns, more than the rest of an insert).
    fn count_up<const X: bool>(c: &AtomicU16, bit: u16) {
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            let next = if cur & COUNT == STUCK {
                if cur & bit != 0 {
                    return;
                }
                cur | bit
            } else {
                (cur + 1) | bit
            };
            if X {
                c.store(next, Ordering::Relaxed);
                return;
            }
            match c.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Whether `key` is one of the keys the levels' live counts count (one in
    /// `2^live_shift`, by a hash independent of the slot's and the filter's). A key's
    /// insert and removal agree, so the counts never drift; with `live_shift` 4 an `all`-mode
    /// level's count is within a few percent of its live keys once it holds thousands (the
    /// 3/4 mark of the smallest is 49,152), at a sixteenth of the atomic additions.
    #[inline]
    fn counts_live(&self, key: usize) -> bool {
        (key as u64 >> 4).wrapping_mul(0xA076_1D64_78BD_642F) >> 32 & self.live_mask == 0
    }

    /// Uncounts `key`, which was counted (a stuck count stays); the word becomes zero, bits
    /// included, when the count does.
    fn count_down<const X: bool>(c: &AtomicU16) {
        let mut cur = c.load(Ordering::Relaxed);
        while cur & COUNT != STUCK {
            debug_assert!(cur & COUNT > 0);
            let next = if cur & COUNT == 1 { 0 } else { cur - 1 };
            if X {
                c.store(next, Ordering::Relaxed);
                return;
            }
            match c.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Level `l`'s figures (`l` < levels <= [`MAX_LEVELS`], a power of two: the modulo only
    /// spares a bounds check).
    #[inline(always)]
    fn level(&self, l: u32) -> &Level {
        &self.lv[l as usize % MAX_LEVELS as usize]
    }

    /// Slot `i` (wrapped) of level `l`.
    #[inline]
    fn slot(&self, l: u32, i: usize) -> &Slot {
        let v = self.level(l);
        // SAFETY: l < levels and i is masked to the level's size: inside the region
        // (from_raw's contract).
        unsafe { &*self.slots.add(v.start + (i & v.mask)) }
    }

    #[inline]
    fn home(&self, l: u32, key: usize) -> usize {
        ((key as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.level(l).hshift) as usize
    }

    #[inline]
    fn probes(&self, l: u32) -> usize {
        self.level(l).probes
    }

    /// Inserts `key`; false when no free slot lies within [`MAX_PROBES`] of its home in any
    /// level in use (the sample is then dropped by the caller and counted).
    pub fn insert(&self, key: usize, e: Entry) -> bool {
        self.insert_as::<false>(key, e)
    }

    /// [`Table::insert`] for a table in exclusive use (the module doc's last section): the
    /// same steps, with plain loads and stores where `insert` has atomic read-modify-writes.
    /// Inline: its one hot caller (the wrapper's `all`-mode record) saves a call.
    #[inline]
    pub fn insert_excl(&self, key: usize, e: Entry) -> bool {
        self.insert_as::<true>(key, e)
    }

    #[inline]
    fn insert_as<const X: bool>(&self, key: usize, e: Entry) -> bool {
        debug_assert!(key > TOMBSTONE);
        let mut top = self.top().load(Ordering::Relaxed) as u32;
        let mut full = self.live(top).load(Ordering::Relaxed) >= self.level(top).full_at;
        loop {
            // The newest level, moved on when it is 3/4 full or has no free slot near the
            // key's home (one thread moves it; the others see it moved).
            if full && top + 1 < self.shape.levels {
                if X {
                    self.top().store(top as usize + 1, Ordering::Relaxed);
                } else {
                    let _ = self.top().compare_exchange(
                        top as usize,
                        top as usize + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                top = self.top().load(Ordering::Relaxed) as u32;
            }
            if self.insert_in::<X>(top, key, e) {
                self.placed::<X>(key, top);
                return true;
            }
            if top + 1 >= self.shape.levels {
                break;
            }
            full = true;
        }
        // The last level is full near the key's home: the older ones, where keys were freed.
        for l in (0..top).rev() {
            if self.insert_in::<X>(l, key, e) {
                self.placed::<X>(key, l);
                return true;
            }
        }
        false
    }

    /// Counts `key`, just put in level `l`, in its filter word (with `l`'s bit) and, if its
    /// hash picks it, in the level's live count. Done before [`Table::insert`] returns, so
    /// before the program has the pointer and can free it.
    fn placed<const X: bool>(&self, key: usize, l: u32) {
        if self.counts_live(key) {
            let live = self.live(l);
            if X {
                let n = live.load(Ordering::Relaxed);
                live.store(
                    n.wrapping_add(1 << self.shape.live_shift),
                    Ordering::Relaxed,
                );
            } else {
                live.fetch_add(1 << self.shape.live_shift, Ordering::Relaxed);
            }
        }
        Self::count_up::<X>(self.word(key), 0x100 << l);
    }

    #[inline]
    fn insert_in<const X: bool>(&self, l: u32, key: usize, e: Entry) -> bool {
        let h = self.home(l, key);
        for i in 0..self.probes(l) {
            let s = self.slot(l, h + i);
            let cur = s.key.load(Ordering::Relaxed);
            if cur != EMPTY && cur != TOMBSTONE {
                continue;
            }
            // Claim the slot first; its values are read only by the thread that frees this
            // pointer, which the program orders after the allocation returned.
            let claimed = if X {
                s.key.store(key, Ordering::Relaxed);
                true
            } else {
                s.key
                    .compare_exchange(cur, key, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            };
            if claimed {
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
        if !self.may_hold(key) {
            return None;
        }
        self.remove_slow::<false>(key)
    }

    /// [`Table::remove`] for a table in exclusive use (the module doc's last section); inline,
    /// probe included (its hot caller is the wrapper's free of a sampled block).
    #[inline(always)]
    pub fn remove_excl(&self, key: usize) -> Option<Entry> {
        // A zero word has no level bit: nothing is probed.
        self.remove_probe::<true>(key)
    }

    /// False when `key` is certainly not in the table (its filter word is zero): the one
    /// load of the free of an unsampled pointer.
    #[inline]
    pub fn may_hold(&self, key: usize) -> bool {
        self.word(key).load(Ordering::Relaxed) != 0
    }

    /// [`Table::remove`] past the filter: the probe of the levels of the word's bits, newest
    /// first.
    #[inline(never)]
    fn remove_slow<const X: bool>(&self, key: usize) -> Option<Entry> {
        self.remove_probe::<X>(key)
    }

    /// The probe of [`Table::remove_slow`] and [`Table::remove_excl`].
    #[inline(always)]
    fn remove_probe<const X: bool>(&self, key: usize) -> Option<Entry> {
        let word = self.word(key);
        let mut bits = word.load(Ordering::Relaxed) >> 8;
        while bits != 0 {
            let l = 15 - bits.leading_zeros();
            bits &= !(1 << l);
            if l < self.shape.levels {
                if let Some(e) = self.remove_in::<X>(l, key, word) {
                    return Some(e);
                }
            }
        }
        None
    }

    #[inline]
    fn remove_in<const X: bool>(&self, l: u32, key: usize, word: &AtomicU16) -> Option<Entry> {
        let h = self.home(l, key);
        for i in 0..self.probes(l) {
            let s = self.slot(l, h + i);
            let cur = s.key.load(Ordering::Acquire);
            if cur == EMPTY {
                return None;
            }
            if cur == key {
                let weight = f64::from_bits(s.weight.load(Ordering::Acquire));
                let size = s.size.load(Ordering::Relaxed);
                let meta = s.meta.load(Ordering::Relaxed);
                s.key.store(TOMBSTONE, Ordering::Release);
                if self.counts_live(key) {
                    let live = self.live(l);
                    if X {
                        let n = live.load(Ordering::Relaxed);
                        live.store(
                            n.wrapping_sub(1 << self.shape.live_shift),
                            Ordering::Relaxed,
                        );
                    } else {
                        live.fetch_sub(1 << self.shape.live_shift, Ordering::Relaxed);
                    }
                }
                Self::count_down::<X>(word);
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

    /// The newest level in use, and the live keys of each level (for tests and figures).
    pub fn levels_in_use(&self) -> (u32, [usize; MAX_LEVELS as usize]) {
        let mut live = [0; MAX_LEVELS as usize];
        for (l, n) in live.iter_mut().enumerate() {
            *n = self.live(l as u32).load(Ordering::Relaxed);
        }
        (self.top().load(Ordering::Relaxed) as u32, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One level of `1 << bits` slots, a filter of `1 << fbits` words.
    fn one(bits: u32, fbits: u32) -> Shape {
        Shape {
            base_bits: bits,
            growth_bits: 2,
            levels: 1,
            filter_bits: fbits,
            filter_region_bits: 0,
            live_shift: 0,
        }
    }

    fn table(shape: Shape) -> (Vec<u64>, Table) {
        let mut v = vec![0u64; shape.bytes().div_ceil(8)];
        // SAFETY: the vector is zeroed, 8-aligned (as Slot needs), as long as bytes() says
        // and outlives the table in each test.
        let t = unsafe { Table::from_raw(v.as_mut_ptr().cast(), shape) };
        (v, t)
    }

    /// Non-zero filter words.
    fn counted(t: &Table) -> usize {
        (0..t.shape.filter_len())
            // SAFETY: within the filter (filter_len words follow the header).
            .filter(|&i| unsafe { &*t.filter.add(i) }.load(Ordering::Relaxed) != 0)
            .count()
    }

    #[test]
    fn insert_remove_roundtrip() {
        let (_v, t) = table(one(10, 14));
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
        let (_v, t) = table(one(3, 7));
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
        let (_v, t) = table(one(14, 18));
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
        let (_v, t) = table(one(8, 12));
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
        let tomb = (0..256).filter(|&i| t.slot(0, i).key.load(Ordering::Relaxed) == TOMBSTONE);
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
        let (_v, t) = table(one(10, 14));
        // 300 keys on one counter: it sticks at 255 and the keys past it are still found.
        let first = 0x1000usize;
        let c0 = t.word(first) as *const AtomicU16;
        let keys: Vec<usize> = (0..)
            .map(|k| first + k * 16)
            .filter(|&k| std::ptr::eq(t.word(k), c0))
            .take(300)
            .collect();
        for &k in &keys {
            assert!(t.insert(k, entry(k as u64)));
        }
        assert_eq!(t.word(first).load(Ordering::Relaxed) & COUNT, STUCK);
        for &k in keys.iter().rev() {
            assert_eq!(t.remove(k), Some(entry(k as u64)));
        }
        assert_eq!(t.word(first).load(Ordering::Relaxed) & COUNT, STUCK);
        assert_eq!(t.remove(first), None);
        assert_eq!(counted(&t), 1);
    }

    #[test]
    fn stuck_counter_still_names_a_new_level() {
        // Level 0 of 512 slots (moved on at 384 keys), level 1 of 2,048.
        let shape = Shape {
            base_bits: 9,
            growth_bits: 2,
            levels: 2,
            filter_bits: 10,
            filter_region_bits: 0,
            live_shift: 0,
        };
        let (_v, t) = table(shape);
        let first = 0x1000usize;
        let c0 = t.word(first) as *const AtomicU16;
        let same: Vec<usize> = (0..)
            .map(|k| first + k * 16)
            .filter(|&k| std::ptr::eq(t.word(k), c0))
            .take(301)
            .collect();
        // 300 keys of one word stick its count in level 0 ...
        for &k in &same[..300] {
            assert!(t.insert(k, entry(k as u64)));
        }
        assert_eq!(t.levels_in_use().0, 0);
        assert_eq!(t.word(first).load(Ordering::Relaxed), STUCK | 0x100);
        // ... other keys move `top` on to level 1 ...
        let mut k = 0x4000_0000usize;
        while t.levels_in_use().0 == 0 {
            if !std::ptr::eq(t.word(k), c0) {
                assert!(t.insert(k, entry(1)));
            }
            k += 16;
        }
        // ... and a key of the stuck word put there sets level 1's bit: it is found.
        let last = same[300];
        assert!(t.insert(last, entry(7)));
        assert_eq!(t.word(first).load(Ordering::Relaxed), STUCK | 0x300);
        assert_eq!(t.remove(last), Some(entry(7)));
    }

    #[test]
    fn refused_insert_uncounts() {
        let (_v, t) = table(one(3, 7));
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
        let mut seen: Vec<*const AtomicU16> = Vec::new();
        let mut n = 0;
        for k in keys {
            let c = t.word(k) as *const AtomicU16;
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
        let (_v, t) = table(one(8, 12));
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

    /// Levels open as they fill and every key is found again, through the shared operations
    /// or (`excl`) the exclusive ones, which keep the same table: levels, filter, live counts.
    /// Exclusive, a churn over few addresses (as a Python loop's) among the live keys finds
    /// every key too. The filter and counts return to zero.
    fn levels_grow_and_every_key_is_found_with(excl: bool) {
        let insert = |t: &Table, k, e| {
            if excl {
                t.insert_excl(k, e)
            } else {
                t.insert(k, e)
            }
        };
        let remove = |t: &Table, k| {
            if excl {
                t.remove_excl(k)
            } else {
                t.remove(k)
            }
        };
        let shape = Shape {
            base_bits: 4,
            growth_bits: 2,
            levels: 4,
            filter_bits: 16,
            filter_region_bits: 0,
            live_shift: 0,
        };
        let (_v, t) = table(shape);
        // 16, 64, 256, 1024 slots: 1,000 keys need the fourth level.
        let keys: Vec<usize> = (0..1000usize).map(|k| 0x10_0000 + k * 1008).collect();
        for &k in &keys {
            assert!(insert(&t, k, entry(k as u64)));
        }
        let (top, live) = t.levels_in_use();
        assert_eq!(top, 3, "live per level {live:?}");
        assert_eq!(live.iter().sum::<usize>(), 1000);
        // Each level below the top was filled to 3/4 before the next was opened.
        assert!(live[0] >= 12 && live[1] >= 48 && live[2] >= 192, "{live:?}");
        assert_eq!(remove(&t, 0x10), None);
        if excl {
            // Churn: 64 addresses allocated and freed again and again among the live keys.
            for round in 0..200u64 {
                for a in 0..64usize {
                    assert!(insert(&t, 0x90_0000 + a * 48, entry(round)));
                }
                for a in 0..64usize {
                    assert_eq!(remove(&t, 0x90_0000 + a * 48), Some(entry(round)));
                }
            }
        }
        for &k in keys.iter().rev() {
            assert_eq!(remove(&t, k), Some(entry(k as u64)));
            assert_eq!(remove(&t, k), None);
        }
        assert_eq!(counted(&t), 0);
        assert_eq!(t.levels_in_use().1, [0; MAX_LEVELS as usize]);
        // Freed slots of the older levels take keys again once the newest one is full.
        for k in 0..1000usize {
            assert!(insert(&t, 0x90_0000 + k * 48, entry(1)));
        }
    }

    #[test]
    fn levels_grow_and_every_key_is_found() {
        levels_grow_and_every_key_is_found_with(false);
    }

    #[test]
    fn exclusive_use_keeps_the_same_table() {
        levels_grow_and_every_key_is_found_with(true);
    }

    #[test]
    fn sampled_live_counts_estimate_and_return_to_zero() {
        // `all` mode's shape: the levels' counts count one key in 16, each as 16.
        let shape = Shape::ALL;
        let mut v = vec![0u64; shape.bytes().div_ceil(8)];
        // SAFETY: zeroed, 8-aligned, as long as bytes() says, outlives the table.
        let t = unsafe { Table::from_raw(v.as_mut_ptr().cast(), shape) };
        // pymalloc-like keys: 48-byte blocks in a few hundred pages.
        let keys: Vec<usize> = (0..40_000usize)
            .map(|k| 0x7f12_3400_0000 + k * 48)
            .collect();
        for &k in &keys {
            assert!(t.insert(k, entry(k as u64)));
        }
        let (top, live) = t.levels_in_use();
        assert_eq!(top, 0, "40,000 keys stay below level 0's 3/4 mark");
        let est = live[0] as f64;
        assert!(
            (est - 40_000.0).abs() < 0.05 * 40_000.0,
            "estimate {est} for 40,000 live keys"
        );
        // Churn: every key removed and put back twice; then all removed. A key's insert and
        // removal agree on whether it is counted, so the counts end at exactly zero.
        for _ in 0..2 {
            for &k in &keys {
                assert_eq!(t.remove(k), Some(entry(k as u64)));
                assert!(t.insert(k, entry(k as u64)));
            }
        }
        for &k in &keys {
            assert_eq!(t.remove(k), Some(entry(k as u64)));
        }
        assert_eq!(t.levels_in_use().1, [0; MAX_LEVELS as usize]);
        assert_eq!(counted(&t), 0);
    }

    #[test]
    fn concurrent_while_growing() {
        // Levels of 256 slots to 32 Ki: eight threads keep up to 2,000 keys live each while `top`
        // moves on under them.
        let shape = Shape {
            base_bits: 8,
            growth_bits: 1,
            levels: 8,
            filter_bits: 12,
            filter_region_bits: 0,
            live_shift: 0,
        };
        let (_v, t) = table(shape);
        std::thread::scope(|sc| {
            for th in 0..8usize {
                let t = &t;
                sc.spawn(move || {
                    let mut live = std::collections::VecDeque::new();
                    for n in 0..30_000usize {
                        let k = 0x1_0000_0000 * (th + 1) + n * 32;
                        assert!(t.insert(k, entry(n as u64)), "thread {th} key {n}");
                        live.push_back((k, n));
                        if live.len() > 2000 || (n % 3 == 0 && live.len() > 100) {
                            let (k, n) = live.pop_front().expect("non-empty");
                            assert_eq!(t.remove(k), Some(entry(n as u64)));
                        }
                        assert_eq!(t.remove(k + 16), None);
                    }
                    for (k, n) in live {
                        assert_eq!(t.remove(k), Some(entry(n as u64)));
                    }
                });
            }
        });
        assert_eq!(counted(&t), 0);
        let (top, live) = t.levels_in_use();
        assert!(top >= 3, "top {top}");
        assert_eq!(live, [0; MAX_LEVELS as usize]);
    }

    #[test]
    fn smaller_means_get_larger_filters() {
        assert_eq!(Shape::sampled(512 << 10), Shape::SAMPLED);
        assert_eq!(Shape::sampled(1 << 30).filter_bits, 17);
        assert_eq!(Shape::sampled(256 << 10).filter_bits, 18);
        assert_eq!(Shape::sampled(64 << 10).filter_bits, 19);
        assert_eq!(Shape::sampled(2).levels, Shape::SAMPLED.levels);
    }

    /// Resident bytes of `len` bytes at `p`, asked of the kernel.
    fn resident(p: *mut libc::c_void, len: usize) -> usize {
        let pages = len.div_ceil(4096);
        let mut v = vec![0u8; pages];
        // SAFETY: mincore writes one byte per page of our mapping into `v`.
        assert_eq!(unsafe { libc::mincore(p, len, v.as_mut_ptr()) }, 0);
        v.iter().filter(|b| **b & 1 != 0).count() * 4096
    }

    fn mapped(shape: Shape) -> (*mut libc::c_void, Table) {
        // SAFETY: a fresh private anonymous mapping (zeroed), unmapped by the caller.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                shape.bytes(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: zeroed, page-aligned, shape.bytes() long, unmapped after the table's use.
        (p, unsafe { Table::from_raw(p.cast(), shape) })
    }

    /// The kernel's figure for the table in `all` mode: 60,000 live keys 1,008 bytes apart
    /// (1,000-byte malloc blocks) keep at most ~300 bytes each resident, filter included (one
    /// fixed table of 16 Mi slots kept a page each: 4 KiB).
    #[test]
    fn resident_size_follows_the_live_keys() {
        let (p, t) = mapped(Shape::ALL);
        let n = 60_000usize;
        for k in 0..n {
            assert!(
                t.insert(0x5555_0000_0000 + k * 1008, entry(1000)),
                "key {k}: {:?}",
                t.levels_in_use()
            );
        }
        let r = resident(p, Shape::ALL.bytes());
        let (top, live) = t.levels_in_use();
        eprintln!("all mode: {n} live keys, {r} bytes resident, top {top}, live {live:?}");
        assert!(r <= n * 300, "{r} bytes resident for {n} keys");
        // The filter alone touches at most its 1 MiB; the levels in use are dense.
        assert!(r >= n * 32, "{r}");
        // Sampled mode: 100,000 samples over a run, at most 150 live at once (the first
        // level's 256 slots hold 192), keep little resident however many went through.
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(p, Shape::ALL.bytes()) };
        let (p, t) = mapped(Shape::SAMPLED);
        let mut live = std::collections::VecDeque::new();
        for k in 0..100_000usize {
            let key = 0x7000_0000_0000 + k * 4_000_016;
            assert!(t.insert(key, entry(1)));
            live.push_back(key);
            if live.len() > 150 {
                assert!(t.remove(live.pop_front().expect("non-empty")).is_some());
            }
        }
        let r = resident(p, Shape::SAMPLED.bytes());
        eprintln!(
            "sampled: {r} bytes resident, levels {:?}",
            t.levels_in_use()
        );
        assert_eq!(t.levels_in_use().0, 0);
        assert!(r <= 4096 + (1 << 8) * 32 + (2 << 17), "{r}");
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(p, Shape::SAMPLED.bytes()) };
    }

    /// Sampled mode's filter pages follow the address space the samples lie in: 100,000
    /// samples in 12 MiB (a small program's heap: three 4 MiB regions) make at most 3 of its
    /// 64 pages resident (all 64 with the index all hash), the first level's 8 KiB and the
    /// header's page; and every key is still found, every other key still ruled out by a
    /// zero word or the probe.
    #[test]
    fn sampled_filter_pages_follow_the_regions_sampled() {
        let shape = Shape::SAMPLED;
        let hashed = Shape {
            filter_region_bits: 0,
            ..shape
        };
        let base = 0x7f00_0000_0000usize;
        let keys: Vec<usize> = (0..100_000usize)
            .map(|k| (base + (k.wrapping_mul(0x9E37_79B9) % (12 << 20))) & !15)
            .collect();
        let mut figures = Vec::new();
        for s in [shape, hashed] {
            let (p, t) = mapped(s);
            let mut live = std::collections::VecDeque::new();
            for (n, &key) in keys.iter().enumerate() {
                if live.contains(&key) || !t.insert(key, entry(n as u64)) {
                    continue;
                }
                live.push_back(key);
                if live.len() > 40 {
                    let k = live.pop_front().expect("non-empty");
                    assert!(t.remove(k).is_some(), "{k:#x}");
                    assert!(t.remove(k).is_none());
                }
            }
            for &k in &live {
                assert!(t.may_hold(k));
            }
            // Header and filter (page-aligned from the header).
            let filter = resident(p, Shape::HEADER + s.filter_len() * 2);
            let all = resident(p, s.bytes());
            eprintln!(
                "filter_region_bits {}: filter {filter}, all {all} bytes resident",
                s.filter_region_bits
            );
            figures.push((filter, all));
            // SAFETY: our mapping, no longer used.
            unsafe { libc::munmap(p, s.bytes()) };
        }
        // The filter's bytes start 128 bytes into the header's page: a region's page may
        // straddle two; the header's page.
        assert!(figures[0].0 <= 7 * 4096, "{figures:?}");
        assert!(figures[0].1 <= 7 * 4096 + (1 << 8) * 32, "{figures:?}");
        assert!(figures[1].0 >= 60 * 4096, "{figures:?}");
    }
}
