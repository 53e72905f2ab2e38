//! The tables that intern code objects and stacks into small numbers for the trace file.

use super::*;

/// Memory the tables live in: mapped once, zeroed, never freed (the process's lifetime).
#[derive(Clone, Copy)]
pub struct Region {
    /// The start.
    pub ptr: *mut u8,
    /// Bytes.
    pub len: usize,
}

/// Code objects interned at most.
pub const MAX_CODES: usize = 1 << 16;
/// Stacks interned at most (plus one lost stack per domain).
pub const MAX_STACKS: usize = 1 << 16;
/// Frames over all interned stacks at most.
pub const MAX_FRAMES: usize = 1 << 21;
/// Bytes of decoded names at most.
pub const MAX_STRINGS: usize = 8 << 20;
/// log2 of the hashed tables' first and last level's slots ([`Grown`]): code slots (the last
/// level twice [`MAX_CODES`], so never more than half full), stack slots (likewise), the
/// direct-mapped caches of stacks and lines.
const CODE_BITS: (u32, u32) = (8, MAX_CODES.trailing_zeros() + 1);
const STACK_BITS: (u32, u32) = (8, MAX_STACKS.trailing_zeros() + 1);
const CACHE_BITS: (u32, u32) = (8, 15);
const LINE_BITS: (u32, u32) = (8, 15);
const LOST_STACKS: usize = 8;

#[derive(Clone, Copy)]
#[repr(C)]
struct CodeSlot {
    pub(super) addr: usize,
    pub(super) file: usize,
    pub(super) name: usize,
    pub(super) first_line: i32,
    /// id + 1; 0: empty.
    id1: u32,
}

/// A code object as recorded.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CodeRec {
    /// `co_firstlineno`.
    pub first_line: i32,
    pub(super) file_off: u32,
    pub(super) file_len: u32,
    pub(super) name_off: u32,
    pub(super) name_len: u32,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct StackSlot {
    hash: u64,
    /// id + 1; 0: empty.
    id1: u32,
}

/// A stack as recorded.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StackRec {
    /// The domain (0 malloc, 1 mmap, 2 pymalloc).
    pub domain: u8,
    /// [`TRUNCATED`], [`UNREADABLE`], [`LOST`].
    pub flags: u8,
    pub(super) n: u16,
    pub(super) off: u32,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct CacheSlot {
    h1: u64,
    h2: u64,
    /// id + 1; 0: empty.
    id1: u32,
}

/// A line already decoded: (code id, position) -> line.
#[derive(Clone, Copy)]
#[repr(C)]
struct LineSlot {
    pub(super) pos: i64,
    /// id + 1; 0: empty.
    id1: u32,
    pub(super) line: u32,
}

/// The slot of a code object's address in [`Tables::code_slots`] (unmasked).
#[inline]
fn code_home(addr: usize) -> usize {
    mix(0x77, addr as u64) as usize
}

/// The slot of a walk's first hash in a cache level of `2^bits` slots: the top bits of one more
/// multiply (h1's low bits do not depend on the high bits of what was mixed in last, the
/// innermost position rotated up, so stacks differing only there would share a slot and evict
/// each other at every sample).
#[inline]
fn cache_home(h1: u64, bits: u32) -> usize {
    (h1.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - bits)) as usize
}

/// The slot of (code id, position) in a line cache level of `2^bits` slots.
#[inline]
fn line_home(id: u32, pos: i64, bits: u32) -> usize {
    (mix(u64::from(id), pos as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - bits)) as usize
}

/// A slot of a hashed table: whether it holds an entry.
trait Occupied: Copy {
    fn occupied(&self) -> bool;
}

impl Occupied for CodeSlot {
    fn occupied(&self) -> bool {
        self.id1 != 0
    }
}
impl Occupied for StackSlot {
    fn occupied(&self) -> bool {
        self.id1 != 0
    }
}
impl Occupied for CacheSlot {
    fn occupied(&self) -> bool {
        self.id1 != 0
    }
}
impl Occupied for LineSlot {
    fn occupied(&self) -> bool {
        self.id1 != 0
    }
}

/// A hashed table of the interning, sized by use: its levels have `2^min` to `2^max` slots,
/// each twice the last, laid out one after the other in its part of the region (reserved,
/// touched only as used). A hashed slot lands on a random page, so a table of fixed size made
/// about one page resident per entry (4 KiB per interned code object in a table of 4 MiB);
/// a level holds its entries densely instead (at most 4 slots an entry). Before an insert
/// that would make the current level more than half full, every entry is moved into the next
/// level ([`Grown::make_room`]; the tables are used under the lock only, so nothing else
/// reads them meanwhile) and the old level's whole pages are given back (`MADV_DONTNEED`).
/// The last level stays: the code and stack tables' is twice their id limit, so it is never
/// more than half full; a cache's evicts, as a direct-mapped cache does.
struct Grown<T> {
    /// The current level's first slot.
    pub(super) cur: *mut T,
    /// log2 of its slots.
    pub(super) bits: u32,
    /// log2 of the last level's.
    max: u32,
    /// Its occupied slots (kept by the inserts).
    pub(super) used: usize,
}

impl<T: Occupied> Grown<T> {
    /// Bytes of the levels of `2^min` to `2^max` slots.
    pub(super) fn bytes((min, max): (u32, u32)) -> usize {
        ((1usize << (max + 1)) - (1usize << min)) * std::mem::size_of::<T>()
    }

    /// Levels from `base`, [`Grown::bytes`] of zeroed memory.
    pub(super) fn new(base: *mut T, (min, max): (u32, u32)) -> Grown<T> {
        Grown {
            cur: base,
            bits: min,
            max,
            used: 0,
        }
    }

    /// Slots of the current level.
    #[inline]
    pub(super) fn len(&self) -> usize {
        1 << self.bits
    }

    /// Slot `i` (wrapped) of the current level.
    #[inline]
    pub(super) fn at(&self, i: usize) -> *mut T {
        // SAFETY: masked to the current level, inside the table's part of the region.
        unsafe { self.cur.add(i & (self.len() - 1)) }
    }

    /// Before an insert: moves every entry into the next level when the current one would be
    /// more than half full. `home(entry, bits)` is an entry's slot in a level of `2^bits`
    /// slots; `probe`: linear probing (else direct-mapped: an entry whose slot is taken is
    /// dropped, as the cache would evict it).
    fn make_room(&mut self, home: impl Fn(&T, u32) -> usize, probe: bool) {
        if (self.used + 1) * 2 <= self.len() || self.bits >= self.max {
            return;
        }
        let (old, n) = (self.cur, self.len());
        // SAFETY: the next level follows this one (levels laid out in order, `bytes`).
        self.cur = unsafe { self.cur.add(n) };
        self.bits += 1;
        self.used = 0;
        for i in 0..n {
            // SAFETY: slot i of the old level.
            let e = unsafe { *old.add(i) };
            if !e.occupied() {
                continue;
            }
            let mut j = home(&e, self.bits);
            // At most a quarter of the new level is taken: an empty slot is near.
            for _ in 0..self.len() {
                let s = self.at(j);
                // SAFETY: a slot of the new level; the lock is held.
                unsafe {
                    if !(*s).occupied() {
                        *s = e;
                        self.used += 1;
                        break;
                    }
                }
                if !probe {
                    break;
                }
                j = j.wrapping_add(1);
            }
        }
        give_back(old as usize, n * std::mem::size_of::<T>());
    }
}

/// Gives the whole pages of `[p, p + len)`, memory of the region no longer used, back to the
/// system (they read as zeros after).
fn give_back(p: usize, len: usize) {
    let page = crate::residency::PAGE;
    let (a, b) = ((p + page - 1) & !(page - 1), (p + len) & !(page - 1));
    if b > a {
        // SAFETY: whole pages inside the region (private anonymous memory, Stacks::new's
        // contract), which nothing reads any more: the retired level.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
    }
}

/// Bytes of memory [`Stacks::new`] needs.
pub fn bytes_needed() -> usize {
    use std::mem::size_of;
    Grown::<CodeSlot>::bytes(CODE_BITS)
        + MAX_CODES * size_of::<CodeRec>()
        + Grown::<StackSlot>::bytes(STACK_BITS)
        + (MAX_STACKS + LOST_STACKS) * size_of::<StackRec>()
        + MAX_FRAMES * 8
        + Grown::<CacheSlot>::bytes(CACHE_BITS)
        + Grown::<LineSlot>::bytes(LINE_BITS)
        + MAX_STRINGS
        + PARTS * crate::residency::PAGE
}

/// The tables' parts in the region ([`Stacks::new`]), each from a page boundary: a small
/// part (a first level of 4 KiB, a few records) then keeps one page resident, not the two it
/// would straddle.
const PARTS: usize = 8;

pub(super) struct Tables {
    code_slots: Grown<CodeSlot>,
    pub(super) codes: *mut CodeRec,
    stack_slots: Grown<StackSlot>,
    pub(super) stacks: *mut StackRec,
    pub(super) frames: *mut [u32; 2],
    cache: Grown<CacheSlot>,
    lines: Grown<LineSlot>,
    pub(super) strings: *mut u8,
    n_codes: u32,
    n_stacks: u32,
    n_frames: u32,
    n_strings: u32,
    lost: [u32; LOST_STACKS],
    /// Where the last line decodes of a few code objects stopped ([`Python::line`]), by code
    /// id: an import runs its module's body, whose allocations are at increasing positions
    /// of one large table.
    cursors: [LineCursor; LINE_CURSORS],
}

/// Code objects whose line-table cursor is kept ([`Tables::cursors`]).
const LINE_CURSORS: usize = 8;

/// A line-table cursor ([`linetable::Cursor`]) and the table it was made on.
#[derive(Clone, Copy)]
pub(super) struct LineCursor {
    /// The code's id + 1 (0: none).
    pub(super) id1: u32,
    /// The bytes object of its line table, and its length.
    pub(super) table: usize,
    pub(super) len: usize,
    pub(super) c: linetable::Cursor,
}

const NO_CURSOR: LineCursor = LineCursor {
    id1: 0,
    table: 0,
    len: 0,
    c: linetable::Cursor::new(0),
};

/// The interned codes and stacks, shared by all threads: interning happens under a spin lock
/// (on sampled allocations only); what is published (ids below [`Stacks::codes`] and
/// [`Stacks::stacks`]) is never changed again and is read by the drain without the lock.
pub struct Stacks {
    pub(super) lock: AtomicBool,
    pub(super) t: std::cell::UnsafeCell<Tables>,
    codes_pub: AtomicU32,
    stacks_pub: AtomicU32,
    /// Samples whose walk stopped on a frame it could not read.
    pub unreadable: AtomicU64,
    /// Samples whose stack did not fit in the tables.
    pub lost: AtomicU64,
}

// SAFETY: the tables are changed only under `lock`; published records are immutable.
unsafe impl Sync for Stacks {}
// SAFETY: as above.
unsafe impl Send for Stacks {}

fn mix(mut h: u64, v: u64) -> u64 {
    h ^= v;
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

impl Stacks {
    /// Tables over `r`, zeroed memory of at least [`bytes_needed`] bytes.
    ///
    /// # Safety
    /// `r` must be valid, zeroed, 8-aligned, used by nothing else and live for the process,
    /// private anonymous memory (the whole pages of a retired level of a hashed table are
    /// given back with `MADV_DONTNEED`, [`Grown`]).
    pub unsafe fn new(r: Region) -> Stacks {
        use std::mem::size_of;
        assert!(r.len >= bytes_needed());
        let page = crate::residency::PAGE;
        let mut at = r.ptr as usize;
        let mut take = |bytes: usize| {
            let p = (at + page - 1) & !(page - 1);
            at = p + bytes;
            p
        };
        let t = Tables {
            code_slots: Grown::new(
                take(Grown::<CodeSlot>::bytes(CODE_BITS)) as *mut CodeSlot,
                CODE_BITS,
            ),
            codes: take(MAX_CODES * size_of::<CodeRec>()) as *mut CodeRec,
            stack_slots: Grown::new(
                take(Grown::<StackSlot>::bytes(STACK_BITS)) as *mut StackSlot,
                STACK_BITS,
            ),
            stacks: take((MAX_STACKS + LOST_STACKS) * size_of::<StackRec>()) as *mut StackRec,
            frames: take(MAX_FRAMES * 8) as *mut [u32; 2],
            cache: Grown::new(
                take(Grown::<CacheSlot>::bytes(CACHE_BITS)) as *mut CacheSlot,
                CACHE_BITS,
            ),
            lines: Grown::new(
                take(Grown::<LineSlot>::bytes(LINE_BITS)) as *mut LineSlot,
                LINE_BITS,
            ),
            strings: take(MAX_STRINGS) as *mut u8,
            n_codes: 0,
            n_stacks: 0,
            n_frames: 0,
            n_strings: 0,
            lost: [0; LOST_STACKS],
            cursors: [NO_CURSOR; LINE_CURSORS],
        };
        Stacks {
            lock: AtomicBool::new(false),
            t: std::cell::UnsafeCell::new(t),
            codes_pub: AtomicU32::new(0),
            stacks_pub: AtomicU32::new(0),
            unreadable: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// Takes the lock (a spin; held for a table lookup or one stack's interning). After a few
    /// tries the waiter yields its processor: on an oversubscribed host the holder may be
    /// descheduled, and spinning would burn the waiter's whole time slice.
    pub fn lock(&self) {
        let mut tries = 0u32;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            tries += 1;
            if tries < 16 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions (no allocation, no lock).
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases [`Stacks::lock`].
    pub fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// Code objects published so far (ids `0..codes()`).
    pub fn codes(&self) -> u32 {
        self.codes_pub.load(Ordering::Acquire)
    }

    /// Stacks published so far (ids `0..stacks()`).
    pub fn stacks(&self) -> u32 {
        self.stacks_pub.load(Ordering::Acquire)
    }

    /// The stack id of a sample of `domain` in this thread (`py`: the interpreter, if any;
    /// `gil`: the caller holds the GIL of the only interpreter, [`Python::walk`]).
    ///
    /// The walk and this thread's cache ([`Walk`]) inline, in the caller (which has saved
    /// the registers they use already); the rest ([`Stacks::sample_miss`]) apart.
    #[inline(always)]
    pub fn sample(&self, py: Option<&Python>, domain: u8, gil: bool, w: &mut Walk) -> u32 {
        let (n, flags) = (w.n, w.flags);
        let outer_changed = match py {
            Some(py) => py.walk(w, gil),
            None => {
                w.n = 0;
                w.flags = 0;
                false
            }
        };
        if w.flags & UNREADABLE != 0 {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
        }
        // This thread's stacks in the same outer context (Walk's doc).
        if outer_changed || w.n != n || w.flags != flags {
            w.new_context();
        }
        let inner = if w.n > 0 { w.frames[0] } else { NO_FRAME };
        let key = w.ctx | u32::from(domain);
        // Up to 4 slots from the key's home, to the first not of this context (entries are
        // only added within a context, each in the first such slot of its chain, so a key
        // not found by then is not kept): the 8-10 positions one loop allocates at would
        // otherwise often share a slot (the hash moves with the code's address) and evict
        // each other at every turn (w6: 2 misses an iteration in about half the runs).
        let home = Walk::near_slot(&inner);
        let mut slot = home;
        for k in 0..NEAR_PROBES {
            let i = (home + k) % NEAR_SLOTS;
            let e = &w.near[i];
            if e.key == key && e.frame.same(&inner) {
                return e.id;
            }
            if e.key & !0xff != w.ctx {
                slot = i;
                break;
            }
        }
        self.sample_miss(py, domain, w, slot)
    }

    /// [`Stacks::sample`] past this thread's cache: the id from the shared tables, kept in the
    /// cache's `slot`.
    #[cold]
    #[inline(never)]
    fn sample_miss(&self, py: Option<&Python>, domain: u8, w: &mut Walk, slot: usize) -> u32 {
        let inner = if w.n > 0 { w.frames[0] } else { NO_FRAME };
        let id = self.sample_shared(py, domain, w);
        // A lost stack is not kept: the next sample tries the tables again.
        if self.stack(id).is_some_and(|r| r.flags & LOST == 0) {
            w.near[slot] = Near {
                frame: inner,
                key: w.ctx | u32::from(domain),
                id,
            };
        }
        id
    }

    /// The stack id of walk `w` from the shared tables (their cache, else interned).
    fn sample_shared(&self, py: Option<&Python>, domain: u8, w: &Walk) -> u32 {
        // Two independent 64-bit lanes (they run in parallel): h1 over the code addresses and
        // positions, h2 over the code objects' fingerprints and the positions again. A cached
        // stack is taken for this one only when both match: the same frames, or a collision of
        // both lanes (about 2^-128), and an address reused by another code object changes h2.
        let head = u64::from(domain) | u64::from(w.flags) << 8 | (w.n as u64) << 16;
        let (mut h1, mut h2) = (mix(0x1234_5678, head), mix(0x8765_4321, head));
        for f in &w.frames[..w.n] {
            let pos = f.pos as u64;
            h1 = mix(h1, f.code as u64 ^ pos.rotate_right(17));
            h2 = mix(
                h2,
                (f.file as u64).rotate_left(13)
                    ^ (f.name as u64).rotate_left(37)
                    ^ (f.first_line as u32 as u64)
                    ^ pos.rotate_right(29),
            );
        }
        self.lock();
        // SAFETY: the lock is held: this thread alone touches the tables.
        let t = unsafe { &mut *self.t.get() };
        // The slot from the top bits of one more multiply: h1's low bits do not depend on the
        // high bits of what was mixed in last (the innermost position, rotated up), so stacks
        // differing only there would share a slot and evict each other at every sample.
        // SAFETY: an index of the current level (at() masks it).
        let c = unsafe { *t.cache.at(cache_home(h1, t.cache.bits)) };
        let id = if c.id1 != 0 && c.h1 == h1 && c.h2 == h2 {
            c.id1 - 1
        } else {
            match self.resolve(t, py, domain, w) {
                Some(id) => {
                    t.cache.make_room(|c, bits| cache_home(c.h1, bits), false);
                    let c = t.cache.at(cache_home(h1, t.cache.bits));
                    // SAFETY: a slot of the current level; the lock is held.
                    unsafe {
                        t.cache.used += usize::from((*c).id1 == 0);
                        *c = CacheSlot {
                            h1,
                            h2,
                            id1: id + 1,
                        };
                    }
                    id
                }
                None => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    self.lost_stack(t, domain)
                }
            }
        };
        self.unlock();
        id
    }

    /// The empty `lost` stack of `domain`, made on first use (room is kept for it).
    fn lost_stack(&self, t: &mut Tables, domain: u8) -> u32 {
        let d = usize::from(domain).min(LOST_STACKS - 1);
        if t.lost[d] == 0 {
            let id = t.n_stacks;
            // SAFETY: at most MAX_STACKS ordinary stacks, plus one per domain here.
            unsafe {
                *t.stacks.add(id as usize) = StackRec {
                    domain,
                    flags: LOST,
                    n: 0,
                    off: 0,
                }
            };
            t.n_stacks += 1;
            self.stacks_pub.store(t.n_stacks, Ordering::Release);
            t.lost[d] = id + 1;
        }
        t.lost[d] - 1
    }

    fn resolve(&self, t: &mut Tables, py: Option<&Python>, domain: u8, w: &Walk) -> Option<u32> {
        let mut frames = [[0u32; 2]; MAX_DEPTH];
        if let Some(py) = py {
            for (i, f) in w.frames[..w.n].iter().enumerate() {
                let id = self.code_id(t, py, f)?;
                frames[i] = [id, Self::line_of(t, py, id, f)];
            }
        }
        let frames = &frames[..w.n];
        let mut h = mix(0xabcd, u64::from(domain) | u64::from(w.flags) << 8);
        for f in frames {
            h = mix(h, u64::from(f[0]) << 32 | u64::from(f[1]));
        }
        t.stack_slots.make_room(|s, _| s.hash as usize, true);
        let mut i = h as usize;
        for _ in 0..t.stack_slots.len() {
            i &= t.stack_slots.len() - 1;
            // SAFETY: a slot of the current level (at() masks the index); the lock is held.
            let s = unsafe { &mut *t.stack_slots.at(i) };
            if s.id1 == 0 {
                if t.n_stacks as usize >= MAX_STACKS
                    || t.n_frames as usize + frames.len() > MAX_FRAMES
                {
                    return None;
                }
                let off = t.n_frames;
                // SAFETY: off..off+len is within the frames region (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        frames.as_ptr(),
                        t.frames.add(off as usize),
                        frames.len(),
                    )
                };
                t.n_frames += frames.len() as u32;
                let id = t.n_stacks;
                // SAFETY: id < MAX_STACKS + LOST_STACKS.
                unsafe {
                    *t.stacks.add(id as usize) = StackRec {
                        domain,
                        flags: w.flags,
                        n: frames.len() as u16,
                        off,
                    }
                };
                t.n_stacks += 1;
                self.stacks_pub.store(t.n_stacks, Ordering::Release);
                t.stack_slots.used += 1;
                *s = StackSlot {
                    hash: h,
                    id1: id + 1,
                };
                return Some(id);
            }
            if s.hash == h {
                let id = s.id1 - 1;
                // SAFETY: a published stack.
                let r = unsafe { *t.stacks.add(id as usize) };
                // SAFETY: its frames, written before it was published.
                let got = unsafe {
                    std::slice::from_raw_parts(t.frames.add(r.off as usize), usize::from(r.n))
                };
                if r.domain == domain && r.flags == w.flags && got == frames {
                    return Some(id);
                }
            }
            i += 1;
        }
        None
    }

    /// The line of `f`, whose code is interned as `id`: from a direct-mapped cache of lines
    /// already decoded (a line table is decoded from its start, so a deep stack of long
    /// functions costs thousands of instructions a frame, at every new stack).
    fn line_of(t: &mut Tables, py: &Python, id: u32, f: &RawFrame) -> u32 {
        // SAFETY: a slot of the current level (at() masks the index); the lock is held
        // (resolve's caller).
        let s = unsafe { *t.lines.at(line_home(id, f.pos, t.lines.bits)) };
        if s.id1 == id + 1 && s.pos == f.pos {
            return s.line;
        }
        let line = py.line(f, id, &mut t.cursors[id as usize % LINE_CURSORS]);
        t.lines
            .make_room(|s, bits| line_home(s.id1 - 1, s.pos, bits), false);
        // SAFETY: as above.
        let s = unsafe { &mut *t.lines.at(line_home(id, f.pos, t.lines.bits)) };
        t.lines.used += usize::from(s.id1 == 0);
        *s = LineSlot {
            pos: f.pos,
            id1: id + 1,
            line,
        };
        line
    }

    fn code_id(&self, t: &mut Tables, py: &Python, f: &RawFrame) -> Option<u32> {
        t.code_slots.make_room(|s, _| code_home(s.addr), true);
        let mut i = code_home(f.code);
        for _ in 0..t.code_slots.len() {
            i &= t.code_slots.len() - 1;
            // SAFETY: a slot of the current level (at() masks the index); the lock is held.
            let s = unsafe { &mut *t.code_slots.at(i) };
            if s.id1 != 0 && s.addr != f.code {
                i += 1;
                continue;
            }
            if s.id1 != 0 && s.file == f.file && s.name == f.name && s.first_line == f.first_line {
                return Some(s.id1 - 1);
            }
            // An empty slot, or the address reused by another code object: a new id here.
            let id = self.new_code(t, py, f)?;
            t.code_slots.used += usize::from(s.id1 == 0);
            *s = CodeSlot {
                addr: f.code,
                file: f.file,
                name: f.name,
                first_line: f.first_line,
                id1: id + 1,
            };
            return Some(id);
        }
        None
    }

    fn new_code(&self, t: &mut Tables, py: &Python, f: &RawFrame) -> Option<u32> {
        if t.n_codes as usize >= MAX_CODES {
            return None;
        }
        let mut b = Buf::new();
        let mut store = |t: &mut Tables, s: usize| -> Option<(u32, u32)> {
            b.n = 0;
            if !py.decode(s, &mut b) {
                b.extend(b"?");
            }
            let bytes = b.bytes();
            let off = t.n_strings as usize;
            if off + bytes.len() > MAX_STRINGS {
                return None;
            }
            // SAFETY: off..off+len within the strings region (checked).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), t.strings.add(off), bytes.len())
            };
            t.n_strings += bytes.len() as u32;
            Some((off as u32, bytes.len() as u32))
        };
        let (file_off, file_len) = store(t, f.file)?;
        let (name_off, name_len) = store(t, f.name)?;
        let id = t.n_codes;
        // SAFETY: id < MAX_CODES.
        unsafe {
            *t.codes.add(id as usize) = CodeRec {
                first_line: f.first_line,
                file_off,
                file_len,
                name_off,
                name_len,
            }
        };
        t.n_codes += 1;
        self.codes_pub.store(t.n_codes, Ordering::Release);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables in a zeroed heap buffer (kept alive by the caller: the vector).
    fn stacks_in_heap() -> (Stacks, Vec<u64>) {
        let len = bytes_needed();
        let mut v = vec![0u64; len / 8 + 1];
        let r = Region {
            ptr: v.as_mut_ptr() as *mut u8,
            len,
        };
        // SAFETY: zeroed, aligned; the buffer moves with the vector's ownership only (its heap
        // block stays), and the caller keeps it for as long as it uses the tables.
        (unsafe { Stacks::new(r) }, v)
    }

    /// Stacks without Python (no interpreter): one per domain, interned once; the tables'
    /// lines; and a lost stack when the table is full is counted.
    #[test]
    fn interning_without_python() {
        let (s, v) = stacks_in_heap();
        let mut w = Walk::new();
        let a = s.sample(None, 0, false, &mut w);
        let b = s.sample(None, 1, false, &mut w);
        assert_ne!(a, b);
        assert_eq!(s.sample(None, 0, false, &mut w), a);
        assert_eq!(s.stacks(), 2);
        let mut out = String::new();
        s.stack_line(b, &mut out);
        assert_eq!(out, format!("stack id={b} domain=mmap frames=\n"));
        assert_eq!(s.lost.load(Ordering::Relaxed), 0);
        drop(v);
    }

    /// A stack's line lists its frames as `ID:LINE` in decimal, innermost first, however
    /// wide the numbers (the line is written in place: lines.rs).
    #[test]
    fn stack_lines_list_frames() {
        let (s, v) = stacks_in_heap();
        let mut w = Walk::new();
        let id = s.sample(None, 2, false, &mut w);
        let frames: Vec<[u32; 2]> = [0, 1, 9, 10, 99, 100, 4_294_967, u32::MAX, 1_000_000_000]
            .iter()
            .zip([7, u32::MAX, 0, 10, 12_345, 99_999, 1, 100, 9])
            .map(|(&a, b)| [a, b])
            .collect();
        // SAFETY: no other thread uses the tables; the frames region has room at its start
        // (the stack has none of its own).
        unsafe {
            let t = &mut *s.t.get();
            std::ptr::copy_nonoverlapping(frames.as_ptr(), t.frames, frames.len());
            (*t.stacks.add(id as usize)).n = frames.len() as u16;
            (*t.stacks.add(id as usize)).off = 0;
        }
        let mut out = String::from("x");
        s.stack_line(id, &mut out);
        let want: Vec<String> = frames
            .iter()
            .map(|f| format!("{}:{}", f[0], f[1]))
            .collect();
        assert_eq!(
            out,
            format!("xstack id={id} domain=pymalloc frames={}\n", want.join(","))
        );
        drop(v);
    }

    /// The hashed tables grow by levels as stacks are interned: each stack keeps its id
    /// through the moves (asked again, through the cache or the table), and the retired
    /// levels' pages are given back (the kernel's `mincore`).
    #[test]
    fn tables_grow_by_levels() {
        let len = bytes_needed();
        // SAFETY: a fresh private anonymous mapping, as the tracer's; never unmapped (the test).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: zeroed, page-aligned, private anonymous, used by nothing else.
        let s = unsafe {
            Stacks::new(Region {
                ptr: p as *mut u8,
                len,
            })
        };
        let mut w = Walk::new();
        // Without Python a stack is its domain and flags: 256 x 32 distinct ones (flags other
        // than LOST's bit).
        let keys: Vec<(u8, u8)> = (0..=255u8)
            .flat_map(|d| (0..32u8).map(move |k| (d, k << 3)))
            .collect();
        let mut ids = Vec::new();
        for &(d, f) in &keys {
            w.flags = f;
            ids.push(s.sample_shared(None, d, &w));
        }
        assert_eq!(ids, (0..keys.len() as u32).collect::<Vec<_>>());
        // SAFETY: no other thread uses the tables (read between calls).
        let t = unsafe { &*s.t.get() };
        // 8,192 stacks: the level of 2^14 slots is half full.
        assert_eq!((t.stack_slots.bits, t.stack_slots.used), (14, 8192));
        assert!(t.cache.bits >= 13 && t.cache.used * 2 <= t.cache.len());
        assert_eq!(t.code_slots.bits, CODE_BITS.0);
        for (&(d, f), &id) in keys.iter().zip(&ids).rev() {
            w.flags = f;
            assert_eq!(s.sample_shared(None, d, &w), id);
            let r = s.stack(id).expect("published");
            assert_eq!((r.domain, r.flags), (d, f));
        }
        assert_eq!(s.lost.load(Ordering::Relaxed), 0);
        // SAFETY: as above.
        let t = unsafe { &*s.t.get() };
        // A lookup at a half-full level moves it on too (one entry early): 2^14 or 2^15.
        assert!(matches!(t.stack_slots.bits, 14 | 15) && t.stack_slots.used == 8192);
        // The retired levels before the current one: none of their whole pages resident.
        let size = std::mem::size_of::<StackSlot>();
        let cur = t.stack_slots.cur as usize;
        let base = cur - ((1 << t.stack_slots.bits) - (1 << STACK_BITS.0)) * size;
        let page = crate::residency::PAGE;
        let (a, b) = ((base + page - 1) & !(page - 1), cur & !(page - 1));
        let mut vec = vec![0u8; (b - a) / page];
        // SAFETY: whole pages of our mapping; `vec` has one byte a page.
        let rc = unsafe { libc::mincore(a as *mut libc::c_void, b - a, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(vec.len() >= 20, "{}", vec.len());
        assert_eq!(vec.iter().filter(|&&v| v & 1 != 0).count(), 0);
    }
}
