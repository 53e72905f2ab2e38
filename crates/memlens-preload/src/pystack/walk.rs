//! The walk of this thread's Python frames, and its per-thread cache of resolved stacks.

use super::*;

/// A plausible address of an object or frame: user space, 8-aligned, not the first page.
#[inline]
pub(super) fn plausible(p: usize) -> bool {
    // (4096..1 << 47).contains(&p) && p % 8 == 0 in three instructions: rotated, an aligned
    // address is p / 8 (512..1 << 44), any other has a low bit in the top three.
    p.rotate_right(3).wrapping_sub(4096 >> 3) < (1 << 44) - (4096 >> 3)
}

/// Reads a word of this process.
///
/// # Safety
/// `addr` must be readable (checked plausible and part of a live object).
#[inline]
pub(super) unsafe fn rd(addr: usize) -> usize {
    // SAFETY: the caller's contract; unaligned in case an offset is.
    unsafe { std::ptr::read_unaligned(addr as *const usize) }
}

#[inline]
unsafe fn rd_i32(addr: usize) -> i32 {
    // SAFETY: as rd.
    unsafe { std::ptr::read_unaligned(addr as *const i32) }
}

#[inline]
pub(super) unsafe fn rd_u8(addr: usize) -> u8 {
    // SAFETY: as rd.
    unsafe { std::ptr::read_unaligned(addr as *const u8) }
}

/// One frame as walked: the code object, its fingerprint, the position (3.8-3.10: `f_lasti`,
/// in the unit of the minor's line table format, bytes for 3.8-3.9, code units for 3.10;
/// 3.11+: the instruction pointer's offset in bytes from the code object's address, converted
/// to code units only when its line is read).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RawFrame {
    /// The code object's address.
    pub code: usize,
    /// `co_filename` (the str's address).
    pub file: usize,
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: usize,
    /// `co_firstlineno`.
    pub first_line: i32,
    /// The instruction position.
    pub pos: i64,
}

impl RawFrame {
    /// Equal in every field (`==`, the position and code address compared first: in a loop
    /// they are what differs).
    #[inline(always)]
    pub(super) fn same(&self, o: &RawFrame) -> bool {
        self.pos == o.pos
            && self.code == o.code
            && self.file == o.file
            && self.name == o.name
            && self.first_line == o.first_line
    }
}

/// A walked stack, and this thread's cache of the stack ids of its last walks.
///
/// Each thread keeps its own `Walk` (the tracer's thread-local buffer), so its `frames` still
/// hold the previous walk's frames when the next walk starts: the walk compares each outer
/// frame (index 1 and up) with the one it replaces. While the outer frames, the depth and the
/// flags are equal to the previous walk's, the stack ids already resolved in that context are
/// kept in `near`, keyed by the innermost frame and the domain (linear probing, at most
/// [`NEAR_PROBES`] slots); any change of the outer frames starts a new context (`ctx`), which
/// empties it. The values compared (code address, fingerprint, position, per frame) are
/// exactly those the shared cache hashes and the code and line tables key on, so a hit gives
/// the id the uncached path would give; what is saved is the hashing, the shared lock and its
/// lookup. A frame reused at the same address after a return (another call at the same depth)
/// runs another code or position, or its callers do, so some compared value differs.
pub struct Walk {
    /// Innermost first.
    pub frames: [RawFrame; MAX_DEPTH],
    /// Frames in `frames`.
    pub n: usize,
    /// [`TRUNCATED`], [`UNREADABLE`].
    pub flags: u8,
    /// The context of `near`'s entries, in multiples of 256 (the low byte of an entry's key is
    /// its domain); never 0, so a zeroed entry (key 0) is of no context.
    pub(super) ctx: u32,
    pub(super) near: [Near; NEAR_SLOTS],
}

/// Entries of a thread's cache of stacks in the current outer context.
pub(super) const NEAR_SLOTS: usize = 32;
/// Slots a key of that cache may take, from its home on.
pub(super) const NEAR_PROBES: usize = 4;

/// A stack id resolved in a walk's context: its innermost frame and domain.
#[derive(Clone, Copy)]
pub(super) struct Near {
    pub(super) frame: RawFrame,
    /// `Walk::ctx | domain` when made (0: empty).
    pub(super) key: u32,
    pub(super) id: u32,
}

/// No frame: the innermost frame of an empty walk.
pub(super) const NO_FRAME: RawFrame = RawFrame {
    code: 0,
    file: 0,
    name: 0,
    first_line: 0,
    pos: 0,
};

impl Walk {
    /// An empty walk.
    pub const fn new() -> Walk {
        Walk {
            frames: [NO_FRAME; MAX_DEPTH],
            n: 0,
            flags: 0,
            ctx: 256,
            near: [Near {
                frame: NO_FRAME,
                key: 0,
                id: 0,
            }; NEAR_SLOTS],
        }
    }

    /// The home slot of `near` for the innermost frame `f` (of any domain: the domain is
    /// compared, not hashed; one site's blocks are nearly always of one domain).
    #[inline(always)]
    pub(super) fn near_slot(f: &RawFrame) -> usize {
        let h =
            (f.code as u64 ^ (f.pos as u64).rotate_left(24)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - NEAR_SLOTS.trailing_zeros())) as usize
    }

    /// Starts a new context: the entries of the last one are no longer found.
    #[inline(always)]
    pub(super) fn new_context(&mut self) {
        if self.ctx >= u32::MAX - 255 {
            // Every context number used: empty the entries, so none is taken as current.
            self.near.iter_mut().for_each(|e| e.key = 0);
            self.ctx = 0;
        }
        self.ctx += 256;
    }
}

impl Default for Walk {
    fn default() -> Self {
        Walk::new()
    }
}

impl Python {
    #[inline(always)]
    fn is_code(&self, code: usize, o: &Offsets) -> bool {
        // SAFETY: a plausible address; ob_type is the first words of every object.
        plausible(code) && unsafe { rd(code + o.ob_type) } == self.code_type
    }

    /// Walks this thread's Python frames into `w` (empty when the thread has none, or the
    /// interpreter is not initialised): whether an outer frame (index 1 and up) differs from
    /// the one it replaced (see [`Walk`]). `gil`: the caller holds the GIL of the only
    /// interpreter (the allocator domains' wrapper), so the current thread state is this
    /// thread's and is read instead of the `PyGILState` one.
    #[inline(always)]
    pub fn walk(&self, w: &mut Walk, gil: bool) -> bool {
        let tstate = match self.current_tstate {
            // SAFETY: the word `current_tstate` loads (current_field: an aligned field inside
            // `_PyRuntime`, a static of the interpreter mapped for the process's life), read
            // as it does, atomically; with the GIL held by this thread it is this thread's.
            _ if gil && self.current_at != 0 => unsafe {
                (*(self.current_at as *const AtomicUsize)).load(Ordering::Relaxed)
            },
            // SAFETY: reads the runtime's current thread state (3.8-3.11: an atomic field;
            // 3.12+: a thread-local), no lock, no allocation; with the GIL held by this thread
            // it is this thread's.
            Some(current) if gil => unsafe { current() },
            // SAFETY: PyGILState_GetThisThreadState reads this thread's TSS slot (no lock, no
            // allocation); null before initialisation and for threads Python does not know.
            _ => unsafe { (self.this_tstate)() },
        };
        if tstate == 0 || !plausible(tstate) {
            w.n = 0;
            w.flags = if tstate == 0 { 0 } else { UNREADABLE };
            return false;
        }
        // One copy of the walk per minor version with its offsets as constants (immediates,
        // no registers held for them): `self.off` is that constant for the minor found
        // (`detect` takes the same layout, `minor_offsets`), `self.off` itself for a minor
        // without one.
        macro_rules! by_minor {
            ($($m:literal)*) => {
                match self.version.1 {
                    $($m => match &Minor::<$m>::OFF {
                        Some(o) => self.walk_frames(w, tstate, o),
                        None => self.walk_frames(w, tstate, &self.off),
                    },)*
                    _ => self.walk_frames(w, tstate, &self.off),
                }
            };
        }
        by_minor!(8 9 10 11 12 13 14 15)
    }

    /// [`Python::walk`] with offsets `o`, by frame kind.
    #[inline(always)]
    fn walk_frames(&self, w: &mut Walk, tstate: usize, o: &Offsets) -> bool {
        match o.kind {
            0 => self.walk_kind::<0>(w, tstate, o),
            1 => self.walk_kind::<1>(w, tstate, o),
            _ => self.walk_kind::<2>(w, tstate, o),
        }
    }

    /// [`Python::walk`]'s frames from `tstate` on, for the frame kind `K` (`Offsets::kind`).
    ///
    /// Each frame's code address, fingerprint and position are read as the frame is reached;
    /// the innermost frame's are stored as they are, an outer frame's compared with the ones
    /// the previous walk left at its index and written only when they differ (a difference
    /// makes the result true, see [`Walk`]). Every value compared is read afresh at every
    /// walk: a code object freed and another made at its address while a new frame runs it at
    /// the same place gives the same address and position, and only the fingerprint tells
    /// them apart.
    #[inline(always)]
    fn walk_kind<const K: u8>(&self, w: &mut Walk, tstate: usize, o: &Offsets) -> bool {
        // SAFETY: tstate is this thread's live PyThreadState.
        let mut f = unsafe { rd(tstate + o.top) };
        if K == 1 {
            // 3.11-3.12: f is the thread's CFrame (on its C stack).
            if f != 0 && !plausible(f) {
                w.n = 0;
                w.flags = UNREADABLE;
                return false;
            }
            if f != 0 {
                // SAFETY: checked plausible; the CFrame of this thread.
                f = unsafe { rd(f + o.cur) };
            }
        }
        // The frames visited are bounded (MAX_WALK): at most MAX_DEPTH kept (then
        // `truncated`), and the skipped ones (not Python frames) counted down from the rest.
        let (mut n, mut changed, mut skips) = (0usize, false, MAX_WALK - MAX_DEPTH);
        let mut flags = 0;
        while f != 0 {
            if !plausible(f) {
                flags = UNREADABLE;
                break;
            }
            let (code, pos);
            if K == 0 {
                // 3.8-3.10: frame objects; f_code is always code.
                // SAFETY: f is a frame of this thread's chain, checked plausible.
                code = unsafe { rd(f + o.code) };
                if !self.is_code(code, o) {
                    flags = UNREADABLE;
                    break;
                }
                // SAFETY: as above.
                pos = i64::from(unsafe { rd_i32(f + o.pos) });
            } else {
                // SAFETY: an interpreter frame of this thread's chain, checked plausible.
                let owner = u32::from(unsafe { rd_u8(f + o.owner) });
                if o.skip.checked_shr(owner).unwrap_or(0) & 1 != 0 {
                    if skips == 0 {
                        flags = UNREADABLE;
                        break;
                    }
                    skips -= 1;
                    // SAFETY: as above.
                    f = unsafe { rd(f + o.back) };
                    continue;
                }
                // SAFETY: as above. Only 3.14+ tags f_executable.
                let mut c = unsafe { rd(f + o.code) };
                if K == 2 {
                    c &= !o.tag;
                }
                if !self.is_code(c, o) {
                    if K == 1 {
                        // Before 3.13 f_code is always code: anything else is a torn frame.
                        flags = UNREADABLE;
                        break;
                    }
                    // 3.13+: f_executable may be something else (not a Python frame).
                    if skips == 0 {
                        flags = UNREADABLE;
                        break;
                    }
                    skips -= 1;
                    // SAFETY: as above.
                    f = unsafe { rd(f + o.back) };
                    continue;
                }
                code = c;
                // The instruction pointer's offset from the code object (bytes): the position
                // in code units is `(pos - adaptive) / 2` ([`Python::line`]), one-to-one.
                // SAFETY: as above.
                pos = unsafe { rd(f + o.pos) }.wrapping_sub(code) as i64;
            }
            if n == MAX_DEPTH {
                flags = TRUNCATED;
                break;
            }
            // SAFETY: a code object of a frame of the chain being walked (is_code checked),
            // alive while its frame runs.
            let new = unsafe {
                RawFrame {
                    code,
                    file: rd(code + o.co_file),
                    name: rd(code + o.co_name),
                    first_line: rd_i32(code + o.co_first),
                    pos,
                }
            };
            let slot = &mut w.frames[n];
            if n == 0 {
                *slot = new;
            } else if !slot.same(&new) {
                changed = true;
                *slot = new;
            }
            n += 1;
            // SAFETY: as above.
            f = unsafe { rd(f + o.back) };
        }
        w.n = n;
        w.flags = flags;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rotated test of an address is the range-and-alignment one it replaces.
    #[test]
    fn plausible_is_range_and_alignment() {
        let naive = |p: usize| (4096..(1 << 47)).contains(&p) && p % 8 == 0;
        let edges = [
            0,
            8,
            4088,
            4095,
            4096,
            4097,
            4104,
            (1 << 47) - 8,
            1 << 47,
            usize::MAX,
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15usize;
        for p in edges.into_iter().chain((0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x >> (x % 20)
        })) {
            for q in [p, p & !7, p.wrapping_add(1)] {
                assert_eq!(plausible(q), naive(q), "{q:#x}");
            }
        }
    }
}
