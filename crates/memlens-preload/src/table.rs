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
//! the next one becomes `top` (moved by the counted insert that reaches the mark). So the levels in use stay dense: their resident size follows
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
//! claim, the filter word's count and bits, the live count, `top`): no locked instruction;
//! a removal stores the filter word's next value from the one it loaded to find the levels.
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

/// An [`Entry`] as its slot keeps it.
#[derive(Clone, Copy)]
struct Packed {
    /// The size, the domain in the top two bits.
    size: u64,
    /// The weight's bits.
    weight: u64,
    /// The stack in the high half, the time below.
    meta: u64,
}

impl Packed {
    #[inline(always)]
    fn of(e: Entry) -> Packed {
        Packed {
            size: (e.size & SIZE_MASK) | u64::from(e.domain & 3) << DOMAIN_SHIFT,
            weight: e.weight.to_bits(),
            meta: u64::from(e.stack) << 32 | u64::from(e.t),
        }
    }

    #[inline(always)]
    fn entry(self) -> Entry {
        Entry {
            size: self.size & SIZE_MASK,
            weight: f64::from_bits(self.weight),
            domain: (self.size >> DOMAIN_SHIFT) as u8,
            stack: (self.meta >> 32) as u32,
            t: self.meta as u32,
        }
    }
}

/// A key just taken out of a table in exclusive use ([`Table::take_excl`]): its slot, whose
/// values stay as its insert wrote them until the table's next insert, which only the lock's
/// holder makes (the module doc's last section). The caller, that holder, reads them before
/// it inserts again: a pointer where an [`Entry`] went through memory, and only the words
/// the caller reads are loaded.
#[derive(Clone, Copy)]
pub struct Taken<'a>(&'a Slot);

impl Taken<'_> {
    /// The sample's weight.
    #[inline(always)]
    pub fn weight(self) -> f64 {
        f64::from_bits(self.0.weight.load(Ordering::Relaxed))
    }

    /// The stack and the time ([`Entry::stack`], [`Entry::t`]).
    #[inline(always)]
    pub fn stack_t(self) -> (u32, u32) {
        let meta = self.0.meta.load(Ordering::Relaxed);
        ((meta >> 32) as u32, meta as u32)
    }

    /// The whole entry.
    #[inline(always)]
    pub fn entry(self) -> Entry {
        Packed {
            size: self.0.size.load(Ordering::Relaxed),
            weight: self.0.weight.load(Ordering::Relaxed),
            meta: self.0.meta.load(Ordering::Relaxed),
        }
        .entry()
    }
}

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

/// The hash of the home slots (its top bits: a level of `2^b` slots takes the top `b`), the
/// filter word ([`FILTER_POS`]) and the live counts' pick ([`LIVE_POS`]): one multiplication
/// for all three, where each had its own (two multiplications and a variable shift less per
/// insert and per removal). The bits each takes do not overlap ([`Table::from_raw`] checks
/// it for the shape), so which keys share a filter word, or are counted, does not follow from
/// which share a home. Middle bits of a multiplicative hash are weaker than its top bits for
/// keys that differ only above them (keys 8 TiB apart share their filter word and pick): that
/// costs a free a probe at most, never an answer.
#[inline(always)]
fn mix(key: usize) -> u64 {
    (key as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The lowest bit of [`mix`] the filter word's hashed index takes.
const FILTER_POS: u32 = 20;
/// The lowest bit of [`mix`] the live counts' pick takes (below [`FILTER_POS`]).
const LIVE_POS: u32 = 16;

/// The tables and their filter, in memory they do not own.
pub struct Table {
    /// The newest level in use (monotonic), then each level's live keys.
    hdr: *const AtomicUsize,
    filter: *const AtomicU16,
    /// The filter word's index: `(mix >> FILTER_POS & hmask) | (key >> rshift & rmask)`
    /// ([`Shape::filter_region_bits`]; `rmask` 0 when the index is all hash).
    hmask: usize,
    rshift: u32,
    rmask: usize,
    shape: Shape,
    /// Each level's figures, computed once (a probe used to derive them from the shape at
    /// each slot); the levels past `shape.levels` probe no slot.
    lv: [Level; MAX_LEVELS as usize],
    /// `2^live_shift - 1` ([`Table::counts_live`]).
    live_mask: u64,
    /// `2^live_shift`: what a counted key adds to its level's live count.
    live_unit: usize,
}

/// One level's figures: its first slot, its size less one (the mask of a slot index), the
/// live count at which it is 3/4 full, the shift of the home hash, its bit in a filter word,
/// and the most slots a probe visits. 32 bytes: a level's index scales by a shift.
#[derive(Clone, Copy)]
#[repr(C)]
struct Level {
    base: *const Slot,
    mask: usize,
    full_at: usize,
    hshift: u16,
    bit: u16,
    probes: u32,
}

/// The one slot of a level past the shape's: always empty (no insert probes it, a removal
/// only loads its key, which is never that of a key it looks for).
static NO_SLOT: Slot = Slot {
    key: AtomicUsize::new(EMPTY),
    size: AtomicU64::new(0),
    weight: AtomicU64::new(0),
    meta: AtomicU64::new(0),
};

/// A level past the shape's: no slot is probed by an insert (`probes` 0), a removal finds its
/// home, [`NO_SLOT`], empty; none is ever full.
const NO_LEVEL: Level = Level {
    base: &NO_SLOT,
    mask: 0,
    full_at: usize::MAX,
    hshift: 63,
    bit: 0,
    probes: 0,
};

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
        assert!(shape.filter_bits >= 1 && shape.filter_bits < 32);
        // The index's bits from the hash: all, or those within a page of words.
        let fbits_hashed = if shape.filter_region_bits > FILTER_PAGE_BITS
            && shape.filter_bits > FILTER_PAGE_BITS
        {
            FILTER_PAGE_BITS
        } else {
            shape.filter_bits
        };
        // mix's bits: the live pick below the filter's, the filter's below the largest
        // level's home.
        assert!(LIVE_POS + shape.live_shift <= FILTER_POS);
        assert!(FILTER_POS + fbits_hashed + shape.level_bits(shape.levels - 1) <= 64);
        // SAFETY: the slots follow the header and the filter, inside the region (from_raw's
        // contract); HEADER and the filter's bytes keep Slot's alignment.
        let slots = unsafe { mem.add(Shape::HEADER + shape.filter_len() * 2) } as *const Slot;
        let mut lv = [NO_LEVEL; MAX_LEVELS as usize];
        for (l, v) in lv.iter_mut().enumerate().take(shape.levels as usize) {
            let bits = shape.level_bits(l as u32);
            *v = Level {
                // SAFETY: level l's slots lie inside the region (Shape::bytes counts them).
                base: unsafe { slots.add(shape.level_start(l as u32)) },
                mask: (1usize << bits) - 1,
                full_at: (1usize << bits) / 4 * 3,
                hshift: 64 - bits as u16,
                bit: 0x100 << l,
                probes: MAX_PROBES.min(1 << bits) as u32,
            };
        }
        // 1 + MAX_LEVELS words fit the header.
        const _: () = assert!((1 + MAX_LEVELS as usize) * 8 <= Shape::HEADER);
        Table {
            hdr: mem as *const AtomicUsize,
            // SAFETY: the filter follows the header, inside the region (from_raw's contract).
            filter: unsafe { mem.add(Shape::HEADER) } as *const AtomicU16,
            hmask: (1 << fbits_hashed) - 1,
            rshift: shape.filter_region_bits.saturating_sub(FILTER_PAGE_BITS),
            rmask: if fbits_hashed < shape.filter_bits {
                shape.filter_len() - 1 - ((1 << FILTER_PAGE_BITS) - 1)
            } else {
                0
            },
            shape,
            lv,
            live_mask: (1u64 << shape.live_shift) - 1,
            live_unit: 1 << shape.live_shift,
        }
    }

    /// The newest level in use.
    #[inline(always)]
    fn top(&self) -> &AtomicUsize {
        // SAFETY: the header's first word (from_raw's contract).
        unsafe { &*self.hdr }
    }

    /// Live keys of level `l`.
    #[inline(always)]
    fn live(&self, l: u32) -> &AtomicUsize {
        // SAFETY: l < MAX_LEVELS: the header's words 1..=MAX_LEVELS.
        unsafe { &*self.hdr.add(1 + (l % MAX_LEVELS) as usize) }
    }

    /// The filter word of `key`, whose [`mix`] is `m`.
    #[inline(always)]
    fn word(&self, key: usize, m: u64) -> &AtomicU16 {
        let mut i = (m >> FILTER_POS) as usize & self.hmask;
        // Sampled mode's index by region; `all` mode's is all hash (one test, no shift).
        if self.rmask != 0 {
            i |= (key >> self.rshift) & self.rmask;
        }
        // SAFETY: i < filter_len (hmask below it; rmask 0 or below it); the region is valid
        // (from_raw).
        unsafe { &*self.filter.add(i) }
    }

    /// Counts `key` in the filter (saturating at [`STUCK`]) and sets `bit`, its level's, in
    /// the same word: one atomic operation (on the machines memlens is measured on, each
    /// locked instruction costs about 30 ns, more than the rest of an insert). Exclusive
    /// (`X`): a load and a store.
    #[inline(always)]
    fn count_up<const X: bool>(c: &AtomicU16, bit: u16) {
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            let next = if cur & COUNT == STUCK {
                cur | bit
            } else {
                (cur + 1) | bit
            };
            if X {
                c.store(next, Ordering::Relaxed);
                return;
            }
            if next == cur {
                return;
            }
            match c.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Whether the key of [`mix`] `m` is one of the keys the levels' live counts count (one
    /// in `2^live_shift`, by bits of the mix the home and the filter word do not take). A
    /// key's insert and removal agree, so the counts never drift; with `live_shift` 4 an
    /// `all`-mode level's count is within a few percent of its live keys once it holds
    /// thousands (the 3/4 mark of the smallest is 49,152), at a sixteenth of the atomic
    /// additions.
    #[inline(always)]
    fn counts_live(&self, m: u64) -> bool {
        m >> LIVE_POS & self.live_mask == 0
    }

    /// `c`'s next value once a key it counted is removed, its value `cur` (a stuck count
    /// stays); zero, bits included, when the count becomes zero.
    #[inline(always)]
    fn uncounted(cur: u16) -> u16 {
        debug_assert!(cur & COUNT > 0);
        let less = cur.wrapping_sub(1);
        if cur & COUNT == STUCK {
            cur
        } else if less & COUNT == 0 {
            0
        } else {
            less
        }
    }

    /// Uncounts a key of `c`, which was counted, through an atomic operation.
    fn count_down(c: &AtomicU16) {
        let mut cur = c.load(Ordering::Relaxed);
        while cur & COUNT != STUCK {
            match c.compare_exchange_weak(
                cur,
                Self::uncounted(cur),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Level `l`'s figures (`l` < [`MAX_LEVELS`], a power of two: the modulo only spares a
    /// bounds check; the levels past the shape's probe no slot).
    #[inline(always)]
    fn level(&self, l: u32) -> &Level {
        &self.lv[l as usize % MAX_LEVELS as usize]
    }

    /// The filter word of `key`.
    #[cfg(test)]
    fn word_of(&self, key: usize) -> &AtomicU16 {
        self.word(key, mix(key))
    }

    /// Slot `i` (wrapped) of level `l`.
    #[cfg(test)]
    fn slot(&self, l: u32, i: usize) -> &Slot {
        let v = self.level(l);
        assert!(v.probes > 0);
        // SAFETY: l < levels and i is masked to the level's size: inside the region
        // (from_raw's contract).
        unsafe { &*v.base.add(i & v.mask) }
    }

    /// Inserts `key`; false when no free slot lies within [`MAX_PROBES`] of its home in any
    /// level in use (the sample is then dropped by the caller and counted).
    pub fn insert(&self, key: usize, e: Entry) -> bool {
        self.insert_as::<false>(key, e)
    }

    /// [`Table::insert`] for a table in exclusive use (the module doc's last section): the
    /// same steps, with plain loads and stores where `insert` has atomic read-modify-writes.
    /// Inline, the common case's steps only: the key's slot in level `top`, its filter word,
    /// and one key in `2^live_shift` its level's live count; the rest apart
    /// ([`Table::insert_past`]).
    #[inline(always)]
    pub fn insert_excl(&self, key: usize, e: Entry) -> bool {
        self.insert_as::<true>(key, e)
    }

    #[inline(always)]
    fn insert_as<const X: bool>(&self, key: usize, e: Entry) -> bool {
        debug_assert!(key > TOMBSTONE);
        let m = mix(key);
        let p = Packed::of(e);
        // The newest level: moved on by the counted insert that fills it to 3/4
        // ([`Table::count_live`]), or below when it has no free slot near the key's home.
        let top = self.top().load(Ordering::Relaxed) as u32;
        if self.insert_in::<X>(top, key, m, p) {
            self.placed::<X>(key, m, top);
            return true;
        }
        self.insert_past::<X>(key, top, p.size, p.weight, p.meta)
    }

    /// [`Table::insert`] when level `top` has no free slot near the key's home: the next
    /// levels become `top` in turn (one thread moves it; the others see it moved), and past
    /// the last one the older levels are tried, where keys were freed. The entry comes as
    /// its slot's words, in registers (as an [`Entry`] it went through memory on the inline
    /// path, stored before every insert's probe).
    #[cold]
    #[inline(never)]
    fn insert_past<const X: bool>(
        &self,
        key: usize,
        mut top: u32,
        size: u64,
        weight: u64,
        meta: u64,
    ) -> bool {
        let m = mix(key);
        let p = Packed { size, weight, meta };
        while top + 1 < self.shape.levels {
            self.move_top::<X>(top);
            top = self.top().load(Ordering::Relaxed) as u32;
            if self.insert_in::<X>(top, key, m, p) {
                self.placed::<X>(key, m, top);
                return true;
            }
        }
        for l in (0..top).rev() {
            if self.insert_in::<X>(l, key, m, p) {
                self.placed::<X>(key, m, l);
                return true;
            }
        }
        false
    }

    /// Counts `key` (of [`mix`] `m`), just put in level `l`, in its filter word (with `l`'s
    /// bit) and, if its mix picks it, in the level's live count. Done before
    /// [`Table::insert`] returns, so before the program has the pointer and can free it.
    #[inline(always)]
    fn placed<const X: bool>(&self, key: usize, m: u64, l: u32) {
        if self.counts_live(m) {
            self.count_live::<X>(l);
        }
        Self::count_up::<X>(self.word(key, m), self.level(l).bit);
    }

    /// Counts a picked key in level `l`'s live count; the insert that brings it to the 3/4
    /// mark moves `top` on from `l` (when `l` is `top`: a level below it may fill again as
    /// keys are put back in it). The count only grows by these inserts, so every level that
    /// reaches its mark while `top` is seen by one of them: `top` moves on as when each insert
    /// compared the count first, one insert later at most, without a load and a compare per
    /// insert.
    #[cold]
    #[inline(never)]
    fn count_live<const X: bool>(&self, l: u32) {
        let live = self.live(l);
        let n = if X {
            let n = live.load(Ordering::Relaxed).wrapping_add(self.live_unit);
            live.store(n, Ordering::Relaxed);
            n
        } else {
            live.fetch_add(self.live_unit, Ordering::Relaxed)
                .wrapping_add(self.live_unit)
        };
        if n < self.level(l).full_at || l + 1 >= self.shape.levels {
            return;
        }
        self.move_top::<X>(l);
    }

    /// Moves `top` on from level `from` to the next, if it is still `from` (one thread moves
    /// it; the others see it moved). The caller checked that a next level exists.
    #[inline]
    fn move_top<const X: bool>(&self, from: u32) {
        let from = from as usize;
        if X {
            if self.top().load(Ordering::Relaxed) == from {
                self.top().store(from + 1, Ordering::Relaxed);
            }
        } else {
            let _ =
                self.top()
                    .compare_exchange(from, from + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Puts `key` (of [`mix`] `m`) in the first free slot from its home in level `l`.
    #[inline(always)]
    fn insert_in<const X: bool>(&self, l: u32, key: usize, m: u64, p: Packed) -> bool {
        let Level {
            base, mask, probes, ..
        } = *self.level(l);
        let h = (m >> self.level(l).hshift) as usize;
        for i in 0..probes as usize {
            // SAFETY: the index is masked to the level's size: inside the region (from_raw's
            // contract); a level past the shape's has no probe.
            let s = unsafe { &*base.add((h + i) & mask) };
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
                s.size.store(p.size, Ordering::Relaxed);
                s.meta.store(p.meta, Ordering::Relaxed);
                s.weight.store(p.weight, Ordering::Release);
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
        self.remove_slow(key)
    }

    /// [`Table::remove`] for a table in exclusive use (the module doc's last section).
    #[inline(always)]
    pub fn remove_excl(&self, key: usize) -> Option<Entry> {
        self.take_excl(key).map(Taken::entry)
    }

    /// [`Table::remove_excl`] that gives the slot taken out ([`Taken`]); inline, probe
    /// included (its hot caller is the wrapper's free of a sampled block).
    #[inline(always)]
    pub fn take_excl(&self, key: usize) -> Option<Taken<'_>> {
        // A zero word has no level bit: nothing is probed.
        self.remove_probe::<true, _>(key, Taken)
    }

    /// False when `key` is certainly not in the table (its filter word is zero): the one
    /// load of the free of an unsampled pointer.
    #[inline(always)]
    pub fn may_hold(&self, key: usize) -> bool {
        self.word(key, mix(key)).load(Ordering::Relaxed) != 0
    }

    /// [`Table::remove`] past the filter: the probe of the levels of the word's bits, newest
    /// first.
    #[inline(never)]
    fn remove_slow(&self, key: usize) -> Option<Entry> {
        // The values before the slot is let go (another thread may claim it then).
        self.remove_probe::<false, _>(key, |s| {
            Packed {
                weight: s.weight.load(Ordering::Acquire),
                size: s.size.load(Ordering::Relaxed),
                meta: s.meta.load(Ordering::Relaxed),
            }
            .entry()
        })
    }

    /// The removal of [`Table::remove_slow`] and [`Table::take_excl`]: the probe of the
    /// levels of the word's bits, newest first; `read` takes what is kept from the slot
    /// found, before the slot is let go (a tombstone), the level's live count and the
    /// filter word counted down. A bit is never set for a level past the shape's (`placed`
    /// sets only the bit of a level a key was put in); if one were, that level probes no slot.
    /// Inline, the newest level's probe only: a word's keys nearly always lie in one level
    /// (its bits are cleared when its count returns to zero); the others apart.
    #[inline(always)]
    fn remove_probe<'a, const X: bool, R>(
        &'a self,
        key: usize,
        read: impl FnOnce(&'a Slot) -> R,
    ) -> Option<R> {
        let m = mix(key);
        let word = self.word(key, m);
        let cur = word.load(Ordering::Relaxed);
        let bits = u32::from(cur >> 8);
        if bits == 0 {
            return None;
        }
        let l = 31 - bits.leading_zeros();
        let (s, l) = match self.find_in::<X>(l, key, m) {
            Some(s) => (s, l),
            None => {
                let rest = bits ^ 1 << l;
                if rest == 0 {
                    return None;
                }
                self.find_older::<X>(rest, key, m)?
            }
        };
        let r = read(s);
        s.key.store(TOMBSTONE, Ordering::Release);
        if self.counts_live(m) {
            self.uncount_live::<X>(l);
        }
        if X {
            // Exclusive: no other thread wrote the word since `cur` was loaded (the module
            // doc's last section), so its next value follows from `cur`.
            if cur & COUNT != STUCK {
                word.store(Self::uncounted(cur), Ordering::Relaxed);
            }
        } else {
            Self::count_down(word);
        }
        Some(r)
    }

    /// [`Table::remove_probe`]'s search in the levels of `bits` but the newest of the word's:
    /// the slot and its level.
    #[cold]
    #[inline(never)]
    fn find_older<const X: bool>(&self, mut bits: u32, key: usize, m: u64) -> Option<(&Slot, u32)> {
        while bits != 0 {
            let l = 31 - bits.leading_zeros();
            bits ^= 1 << l;
            if let Some(s) = self.find_in::<X>(l, key, m) {
                return Some((s, l));
            }
        }
        None
    }

    /// The slot of `key` (of [`mix`] `m`) in level `l`, if it is there.
    #[inline(always)]
    fn find_in<const X: bool>(&self, l: u32, key: usize, m: u64) -> Option<&Slot> {
        // The level's figures in locals: the compiler may not move a load of them past the
        // shared table's Acquire loads below (a reload per probe).
        let Level {
            base, mask, probes, ..
        } = *self.level(l);
        let h = (m >> self.level(l).hshift) as usize;
        // The home slot first, then on up to `probes` in all (a level past the shape's has
        // none but its home, NO_SLOT, which is always empty).
        let mut i = 0;
        loop {
            // SAFETY: the index is masked to the level's size: inside the region (from_raw's
            // contract), or NO_SLOT.
            let s = unsafe { &*base.add((h + i) & mask) };
            // Exclusive: the lock orders the slot's stores before this call.
            let k = s.key.load(if X {
                Ordering::Relaxed
            } else {
                Ordering::Acquire
            });
            if k == key {
                return Some(s);
            }
            i += 1;
            if k == EMPTY || i >= probes as usize {
                return None;
            }
        }
    }

    /// Takes a picked key out of level `l`'s live count.
    #[cold]
    #[inline(never)]
    fn uncount_live<const X: bool>(&self, l: u32) {
        let live = self.live(l);
        if X {
            let n = live.load(Ordering::Relaxed);
            live.store(n.wrapping_sub(self.live_unit), Ordering::Relaxed);
        } else {
            live.fetch_sub(self.live_unit, Ordering::Relaxed);
        }
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
mod tests;
