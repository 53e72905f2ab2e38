//! The Python stack of a sampled allocation, walked in the allocating thread, and the tables
//! that intern code objects and stacks into small numbers for the trace file.
//!
//! The interpreter is found once ([`detect`]): `Py_GetVersion` gives the minor version, whose
//! layout comes from the same generated tables memlens's outside reader uses
//! (`memlens-cpython/src/layouts/generated.rs`, included here by path); `PyCode_Type`,
//! `PyUnicode_Type` and `PyGILState_GetThisThreadState` are looked up with `dlsym`. On a
//! sampled allocation only, [`Stacks::sample`] takes this thread's own thread state (valid
//! without the GIL on 3.8-3.15; `_PyThreadState_UncheckedGet` would give the GIL holder on
//! 3.8-3.11) and walks its frames innermost first: 3.8-3.10 `PyFrameObject` (`f_back`,
//! `f_code`, `f_lasti`), 3.11-3.12 `tstate->cframe->current_frame`, 3.13+
//! `tstate->current_frame` (3.14+: `f_executable` is a tagged `_PyStackRef`), skipping the
//! frames owned by the C stack or the interpreter. Only this thread changes its own frame
//! chain, and the code objects its frames run stay alive while they run, so the reads are of
//! live memory; still every pointer is checked (non-null, aligned, user-space) and every code
//! object's type is `PyCode_Type` before it is read further: a frame that fails stops the walk
//! (`unreadable`), deeper than [`MAX_DEPTH`] frames is cut (`truncated`).
//!
//! What the walk gives (code address, its fingerprint, the instruction position, per frame) is
//! first compared with this thread's previous walk: while the outer frames, depth and flags
//! are unchanged, the ids already resolved in that context are kept per innermost frame and
//! domain in the thread's own small cache ([`Walk`]), so an allocation in a loop takes no
//! lock and hashes nothing. Otherwise it is hashed twice (128 bits) and looked up in a shared
//! direct-mapped cache of stacks already resolved;
//! on a miss each frame's code object is interned (address -> file-local id, the fingerprint
//! `co_filename` pointer + `co_name` pointer + `co_firstlineno` guarding against an address
//! reused by another code object), its strings decoded to UTF-8 into the tracer's own arena,
//! its line read from the code object's line table with memlens-cpython's pure decoder
//! (`linetable.rs`, included by path), and the resolved stack (domain, flags, (code id, line)
//! frames) interned. Everything lives in memory mapped once ([`Region`]), bounded: a code,
//! string or stack that does not fit is counted (`stacks_lost`) and its sample is given the
//! empty stack of its domain marked `lost=1`. Nothing here allocates through the allocator it
//! traces.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[rustfmt::skip]
#[path = "../../memlens-cpython/src/layouts/generated.rs"]
#[allow(dead_code, missing_docs, clippy::all, clippy::pedantic)]
mod generated;
#[path = "../../memlens-cpython/src/linetable.rs"]
#[allow(dead_code, missing_docs)]
mod linetable;

use crate::agg::{push_i64, push_u64};
use generated::Layout;

/// The deepest stack kept; deeper frames are left out (`truncated`).
pub const MAX_DEPTH: usize = 128;
/// Frame records visited at most in one walk (skipped shim frames included).
const MAX_WALK: usize = 4 * MAX_DEPTH;
/// Characters kept of a file name or function name.
const MAX_CHARS: usize = 1024;

/// Stack flag: deeper frames were left out.
pub const TRUNCATED: u8 = 1;
/// Stack flag: the walk stopped on a frame it could not read.
pub const UNREADABLE: u8 = 2;
/// Stack flag: the stack did not fit in the tracer's tables (its frames are not recorded).
pub const LOST: u8 = 4;

/// Domain numbers of the trace file's `stack domain=` (the event's source).
pub fn domain_name(d: u8) -> &'static str {
    match d {
        0 => "malloc",
        1 => "mmap",
        _ => "pymalloc",
    }
}

// ---------------------------------------------------------------- the interpreter

/// What was found of the interpreter in this process.
pub struct Python {
    /// `(3, minor)`.
    pub version: (u8, u8),
    layout: &'static Layout,
    off: Offsets,
    code_type: usize,
    str_type: usize,
    this_tstate: unsafe extern "C" fn() -> usize,
    /// `PyThreadState_GetUnchecked` (3.13+) or `_PyThreadState_UncheckedGet`: the
    /// interpreter's current thread state (the GIL holder's on 3.8-3.11, this thread's
    /// attached one on 3.12+), cheaper than the `PyGILState` lookup; used only when the
    /// caller holds the GIL of the only interpreter, where both are this thread's.
    current_tstate: Option<unsafe extern "C" fn() -> usize>,
    /// Where that function reads the current thread state, when it is one load of a field of
    /// `_PyRuntime` (3.8-3.11's `gilstate.tstate_current`, x86-64: [`current_field`]), read
    /// here without the call; 0 otherwise.
    current_at: usize,
}

/// The offsets the walk reads, taken out of the layout once (plain numbers in one place: the
/// walk runs on every sampled allocation, every allocation in `all` mode). For each minor
/// version the layout tables know, they are also a constant ([`minor_offsets`]), so the walk
/// of the interpreter found reads them as immediates ([`Python::walk`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Offsets {
    /// 0: frame objects (3.8-3.10), 1: `tstate->cframe->current_frame` (3.11-3.12),
    /// 2: `tstate->current_frame` (3.13+).
    kind: u8,
    /// `tstate->frame`, `tstate->cframe` or `tstate->current_frame`.
    top: usize,
    /// `cframe->current_frame`.
    cur: usize,
    /// `f_back` / `previous`.
    back: usize,
    /// `f_code` / `f_executable`.
    code: usize,
    /// `f_lasti` / `prev_instr` / `instr_ptr`.
    pos: usize,
    /// `owner` (3.11+).
    owner: usize,
    /// The frame owners that are not Python frames, one bit each (owner `k`: bit `k`; none
    /// before 3.12, so the test folds away in their constant walks).
    skip: u64,
    /// The tag bits of `f_executable` (3.14+).
    tag: usize,
    /// `co_code_adaptive`.
    adaptive: usize,
    ob_type: usize,
    co_file: usize,
    co_name: usize,
    co_first: usize,
}

/// `Some(v)`'s `v` as an offset, or `or` (a `const fn` `map_or`).
const fn or(v: Option<u64>, or: usize) -> usize {
    match v {
        Some(v) => v as usize,
        None => or,
    }
}

/// The walk's offsets in layout `l`; `None` when it lacks one the walk needs. (A `const fn`:
/// [`minor_offsets`].)
const fn offsets(l: &Layout) -> Option<Offsets> {
    let base = Offsets {
        kind: 0,
        top: 0,
        cur: 0,
        back: 0,
        code: 0,
        pos: 0,
        owner: 0,
        skip: 0,
        tag: or(l.stackref_tag_bits, 0),
        adaptive: 0,
        ob_type: l.object_type as usize,
        co_file: l.code_filename as usize,
        co_name: or(l.code_qualname, l.code_name as usize),
        co_first: l.code_firstlineno as usize,
    };
    if let (Some(top), Some(back), Some(code), Some(pos)) =
        (l.tstate_frame, l.frame_back, l.frame_code, l.frame_lasti)
    {
        return Some(Offsets {
            top: top as usize,
            back: back as usize,
            code: code as usize,
            pos: pos as usize,
            ..base
        });
    }
    let (Some(code), Some(back), Some(pos), Some(owner), Some(adaptive)) = (
        l.iframe_code,
        l.iframe_previous,
        l.iframe_instr,
        l.iframe_owner,
        l.code_code_adaptive,
    ) else {
        return None;
    };
    let (kind, top, cur) = match (
        l.tstate_cframe,
        l.cframe_current_frame,
        l.tstate_current_frame,
    ) {
        (Some(cf), Some(cur), _) => (1, cf, cur),
        (_, _, Some(cur)) => (2, cur, 0),
        _ => return None,
    };
    // An owner number of 64 or more would not fit the bit set: no layout has one (none skipped).
    let mut skip = 0u64;
    if let Some(v @ 0..64) = l.frame_owned_by_cstack {
        skip |= 1 << v;
    }
    if let Some(v @ 0..64) = l.frame_owned_by_interpreter {
        skip |= 1 << v;
    }
    Some(Offsets {
        kind,
        top: top as usize,
        cur: cur as usize,
        back: back as usize,
        code: code as usize,
        pos: pos as usize,
        owner: owner as usize,
        skip,
        adaptive: adaptive as usize,
        ..base
    })
}

/// The layouts of this architecture.
const fn layouts() -> &'static [Layout] {
    if cfg!(target_arch = "aarch64") {
        generated::AARCH64
    } else {
        generated::X86_64
    }
}

/// The layout [`detect`] takes for `version`: the first of the version not made from a
/// binary's debug offsets.
const fn layout_of(version: (u8, u8)) -> Option<&'static Layout> {
    let table = layouts();
    let mut i = 0;
    while i < table.len() {
        let l = &table[i];
        if l.version.0 == version.0 && l.version.1 == version.1 && !l.from_debug_offsets {
            return Some(l);
        }
        i += 1;
    }
    None
}

/// [`minor_offsets`] of `M`, as an item (a reference to it is a constant's).
struct Minor<const M: u8>;

impl<const M: u8> Minor<M> {
    const OFF: Option<Offsets> = minor_offsets(M);
}

/// The offsets of minor version `3.M`'s layout, as a constant (those of the interpreter
/// found when it is that minor: the same layout, [`layout_of`]).
const fn minor_offsets(minor: u8) -> Option<Offsets> {
    match layout_of((3, minor)) {
        Some(l) => offsets(l),
        None => None,
    }
}

impl Python {
    /// The offset of `interpreters.head` in `_PyRuntime` (the newest interpreter; the main
    /// one while no subinterpreter exists).
    pub fn interpreters_head(&self) -> u64 {
        self.layout.runtime_interpreters_head
    }

    /// The offset of `interp` in a `PyThreadState`.
    pub fn tstate_interp(&self) -> u64 {
        self.layout.tstate_interp
    }

    /// The offset of `next` in a `PyInterpreterState`.
    pub fn interp_next(&self) -> u64 {
        self.layout.interp_next
    }
}

/// The interpreter of this process: `None` when it is not a Python process or one whose minor
/// version has no layout. Must run once the libraries are loaded (the constructor).
pub fn detect() -> Option<Python> {
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: dlsym over the global scope with a NUL-terminated name.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    };
    let (ver, gil, code_type, str_type) = (
        sym(c"Py_GetVersion"),
        sym(c"PyGILState_GetThisThreadState"),
        sym(c"PyCode_Type"),
        sym(c"PyUnicode_Type"),
    );
    if ver == 0 || gil == 0 || code_type == 0 || str_type == 0 {
        return None;
    }
    // SAFETY: Py_GetVersion's C type; it formats constant strings into a static buffer and
    // may be called before the interpreter is initialised.
    let text = unsafe {
        let f: unsafe extern "C" fn() -> *const libc::c_char = std::mem::transmute(ver);
        let p = f();
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_bytes()
    };
    let version = parse_version(text)?;
    let current = match sym(c"PyThreadState_GetUnchecked") {
        0 => sym(c"_PyThreadState_UncheckedGet"),
        p => p,
    };
    // A free-threaded build (3.13t+) has another object header: no layout here for it.
    if text.windows(14).any(|w| w == b"free-threading") {
        return None;
    }
    let layout = layout_of(version)?;
    Some(Python {
        version,
        layout,
        off: offsets(layout)?,
        code_type,
        str_type,
        // SAFETY: PyGILState_GetThisThreadState's C type (PyThreadState *(void)).
        this_tstate: unsafe { std::mem::transmute::<usize, unsafe extern "C" fn() -> usize>(gil) },
        // SAFETY: PyThreadState_GetUnchecked's C type (PyThreadState *(void)), as the old name.
        current_tstate: (current != 0).then(|| unsafe {
            std::mem::transmute::<usize, unsafe extern "C" fn() -> usize>(current)
        }),
        current_at: match sym(c"_PyRuntime") {
            0 => 0,
            rt => current_field(current, rt, layout.runtime_size as usize).unwrap_or(0),
        },
    })
}

/// The address `_PyThreadState_UncheckedGet` at `f` loads its result from, when its code is
/// exactly one load of an aligned word of `_PyRuntime` (`[rt, rt + size)`) and a return; else
/// `None` (the function is then called). On 3.8-3.11 it returns
/// `_PyRuntime.gilstate.tstate_current`, whose offset no layout table has; its x86-64 code is
/// `mov rax, [rip + d]` then `ret` in an executable linked with the interpreter, or, in a
/// shared libpython, `mov rax, [rip + d]` (the GOT slot holding `&_PyRuntime`) then
/// `mov rax, [rax + d]` and `ret` (either after an `endbr64`). Anything else (3.12+'s
/// thread-local, another compiler's code, another architecture) is not recognised.
fn current_field(f: usize, rt: usize, size: usize) -> Option<usize> {
    if !cfg!(target_arch = "x86_64") || f == 0 {
        return None;
    }
    // SAFETY: `f` is the function's entry, in the interpreter's mapped code; each byte is
    // read only when the ones before it are the start of the instruction expected there,
    // whose rest is then code of the function too.
    let byte = |a: usize| unsafe { rd_u8(a) };
    // SAFETY: a GOT slot of the interpreter's (found below), mapped and aligned.
    let word = |a: usize| unsafe { rd(a) };
    decode_current(f, byte, word).filter(|&a| a >= rt && a < rt + size && a % 8 == 0)
}

/// [`current_field`]'s decoding of the code at `f`, reading its bytes with `byte` and a GOT
/// slot with `word`: the address loaded.
fn decode_current(
    f: usize,
    byte: impl Fn(usize) -> u8,
    word: impl Fn(usize) -> usize,
) -> Option<usize> {
    let is = |at: usize, b: &[u8]| b.iter().enumerate().all(|(i, &v)| byte(at + i) == v);
    let disp32 =
        |at: usize| i32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)]);
    let mut at = f;
    if is(at, &[0xf3, 0x0f, 0x1e, 0xfa]) {
        at += 4; // endbr64
    }
    if !is(at, &[0x48, 0x8b, 0x05]) {
        return None; // mov rax, [rip + disp32]
    }
    let slot = (at + 7).wrapping_add_signed(disp32(at + 3) as isize);
    at += 7;
    if is(at, &[0xc3]) {
        return Some(slot); // ret: the word loaded is the field itself
    }
    let off = if is(at, &[0x48, 0x8b, 0x40]) {
        at += 4; // mov rax, [rax + disp8]
        byte(at - 1) as i8 as isize
    } else if is(at, &[0x48, 0x8b, 0x80]) {
        at += 7; // mov rax, [rax + disp32]
        disp32(at - 4) as isize
    } else {
        return None;
    };
    is(at, &[0xc3]).then(|| word(slot).wrapping_add_signed(off))
}

/// `3.M` from the start of `Py_GetVersion()`'s text.
pub fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
    let s = std::str::from_utf8(text.get(..text.len().min(16))?).ok()?;
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major: u8 = it.next()?.parse().ok()?;
    let minor: u8 = it.next()?.parse().ok()?;
    (major == 3).then_some((major, minor))
}

// ---------------------------------------------------------------- reading own memory

/// A plausible address of an object or frame: user space, 8-aligned, not the first page.
#[inline]
fn plausible(p: usize) -> bool {
    // (4096..1 << 47).contains(&p) && p % 8 == 0 in three instructions: rotated, an aligned
    // address is p / 8 (512..1 << 44), any other has a low bit in the top three.
    p.rotate_right(3).wrapping_sub(4096 >> 3) < (1 << 44) - (4096 >> 3)
}

/// Reads a word of this process.
///
/// # Safety
/// `addr` must be readable (checked plausible and part of a live object).
#[inline]
unsafe fn rd(addr: usize) -> usize {
    // SAFETY: the caller's contract; unaligned in case an offset is.
    unsafe { std::ptr::read_unaligned(addr as *const usize) }
}

#[inline]
unsafe fn rd_i32(addr: usize) -> i32 {
    // SAFETY: as rd.
    unsafe { std::ptr::read_unaligned(addr as *const i32) }
}

#[inline]
unsafe fn rd_u8(addr: usize) -> u8 {
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
    fn same(&self, o: &RawFrame) -> bool {
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
    ctx: u32,
    near: [Near; NEAR_SLOTS],
}

/// Entries of a thread's cache of stacks in the current outer context.
const NEAR_SLOTS: usize = 32;
/// Slots a key of that cache may take, from its home on.
const NEAR_PROBES: usize = 4;

/// A stack id resolved in a walk's context: its innermost frame and domain.
#[derive(Clone, Copy)]
struct Near {
    frame: RawFrame,
    /// `Walk::ctx | domain` when made (0: empty).
    key: u32,
    id: u32,
}

/// No frame: the innermost frame of an empty walk.
const NO_FRAME: RawFrame = RawFrame {
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
    fn near_slot(f: &RawFrame) -> usize {
        let h =
            (f.code as u64 ^ (f.pos as u64).rotate_left(24)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - NEAR_SLOTS.trailing_zeros())) as usize
    }

    /// Starts a new context: the entries of the last one are no longer found.
    #[inline(always)]
    fn new_context(&mut self) {
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

    /// The line `f` executes (0 when unknown).
    fn line(&self, f: &RawFrame) -> u32 {
        let l = self.layout;
        // SAFETY: f.code is a live code object (checked when walked, alive while its frame
        // runs, and the frame runs: this is still the allocating call).
        let table = unsafe { rd(f.code + l.code_linetable as usize) };
        if !plausible(table) {
            return 0;
        }
        // SAFETY: co_linetable / co_lnotab is a bytes object; ob_size then its characters.
        let len = unsafe { rd(table + l.var_size as usize) };
        if len > 1 << 22 {
            return 0;
        }
        // SAFETY: the bytes object's `len` characters at ob_sval.
        let bytes = unsafe {
            std::slice::from_raw_parts((table + l.bytes_sval as usize) as *const u8, len)
        };
        let first = i64::from(f.first_line);
        let pos = if self.off.kind == 0 {
            f.pos
        } else {
            // The walk's byte offset of the instruction pointer from the code object; the
            // same arithmetic as `(instr - (code + adaptive)) / 2`.
            f.pos.wrapping_sub(self.off.adaptive as i64) / 2
        };
        let line = match l.linetable_format {
            linetable::LNOTAB => Some(linetable::lnotab_line(bytes, first, pos)),
            linetable::LINETABLE_310 => linetable::linetable310_line(bytes, first, pos * 2),
            linetable::LOCATIONS => linetable::location_line(bytes, first, pos),
            _ => None,
        };
        line.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
    }

    /// Decodes the str at `s` as UTF-8 into `out` (at most [`MAX_CHARS`] characters); false
    /// when it is not a readable compact str.
    fn decode(&self, s: usize, out: &mut Buf) -> bool {
        let l = self.layout;
        // SAFETY: a plausible address; ob_type is at the object's start.
        if !plausible(s) || unsafe { rd(s + l.object_type as usize) } != self.str_type {
            return false;
        }
        // SAFETY: a str object (its type checked), referenced by a live code object.
        let (state, len) = unsafe {
            (
                std::ptr::read_unaligned((s + l.str_state as usize) as *const u32),
                rd(s + l.str_length as usize),
            )
        };
        let mask = l.str_kind_mask as u32;
        let kind = (state & mask) >> mask.trailing_zeros();
        let compact = state & l.str_compact_bit as u32 != 0;
        let ascii = state & l.str_ascii_bit as u32 != 0;
        if !compact || !matches!(kind, 1 | 2 | 4) || len > 1 << 30 {
            return false;
        }
        let data = s + if ascii {
            l.str_ascii_size
        } else {
            l.str_compact_size
        } as usize;
        for i in 0..len.min(MAX_CHARS) {
            // SAFETY: character i < len of the str's data, `kind` bytes each.
            let c = unsafe {
                match kind {
                    1 => u32::from(rd_u8(data + i)),
                    2 => u32::from(std::ptr::read_unaligned((data + 2 * i) as *const u16)),
                    _ => std::ptr::read_unaligned((data + 4 * i) as *const u32),
                }
            };
            let ch = char::from_u32(c).unwrap_or('\u{fffd}');
            let mut b = [0u8; 4];
            out.extend(ch.encode_utf8(&mut b).as_bytes());
        }
        true
    }
}

/// A small fixed buffer for one decoded string.
pub struct Buf {
    b: [u8; 4 * MAX_CHARS],
    n: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            b: [0; 4 * MAX_CHARS],
            n: 0,
        }
    }
    fn extend(&mut self, s: &[u8]) {
        if self.n + s.len() <= self.b.len() {
            self.b[self.n..self.n + s.len()].copy_from_slice(s);
            self.n += s.len();
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

// ---------------------------------------------------------------- the tables

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
    addr: usize,
    file: usize,
    name: usize,
    first_line: i32,
    /// id + 1; 0: empty.
    id1: u32,
}

/// A code object as recorded.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CodeRec {
    /// `co_firstlineno`.
    pub first_line: i32,
    file_off: u32,
    file_len: u32,
    name_off: u32,
    name_len: u32,
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
    n: u16,
    off: u32,
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
    pos: i64,
    /// id + 1; 0: empty.
    id1: u32,
    line: u32,
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
    cur: *mut T,
    /// log2 of its slots.
    bits: u32,
    /// log2 of the last level's.
    max: u32,
    /// Its occupied slots (kept by the inserts).
    used: usize,
}

impl<T: Occupied> Grown<T> {
    /// Bytes of the levels of `2^min` to `2^max` slots.
    fn bytes((min, max): (u32, u32)) -> usize {
        ((1usize << (max + 1)) - (1usize << min)) * std::mem::size_of::<T>()
    }

    /// Levels from `base`, [`Grown::bytes`] of zeroed memory.
    fn new(base: *mut T, (min, max): (u32, u32)) -> Grown<T> {
        Grown {
            cur: base,
            bits: min,
            max,
            used: 0,
        }
    }

    /// Slots of the current level.
    #[inline]
    fn len(&self) -> usize {
        1 << self.bits
    }

    /// Slot `i` (wrapped) of the current level.
    #[inline]
    fn at(&self, i: usize) -> *mut T {
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

struct Tables {
    code_slots: Grown<CodeSlot>,
    codes: *mut CodeRec,
    stack_slots: Grown<StackSlot>,
    stacks: *mut StackRec,
    frames: *mut [u32; 2],
    cache: Grown<CacheSlot>,
    lines: Grown<LineSlot>,
    strings: *mut u8,
    n_codes: u32,
    n_stacks: u32,
    n_frames: u32,
    n_strings: u32,
    lost: [u32; LOST_STACKS],
}

/// The interned codes and stacks, shared by all threads: interning happens under a spin lock
/// (on sampled allocations only); what is published (ids below [`Stacks::codes`] and
/// [`Stacks::stacks`]) is never changed again and is read by the drain without the lock.
pub struct Stacks {
    lock: AtomicBool,
    t: std::cell::UnsafeCell<Tables>,
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
        let line = py.line(f);
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

    /// Appends the `code` line of published code `id`.
    pub fn code_line(&self, id: u32, out: &mut String) {
        if id >= self.codes() {
            return;
        }
        // SAFETY: the region pointers never change after new(); a published record and its
        // strings are immutable.
        let (c, file, name) = unsafe {
            let t = &*self.t.get();
            let c = *t.codes.add(id as usize);
            let s = |off: u32, len: u32| {
                std::slice::from_raw_parts(t.strings.add(off as usize), len as usize)
            };
            (c, s(c.file_off, c.file_len), s(c.name_off, c.name_len))
        };
        out.push_str("code id=");
        push_u64(out, u64::from(id));
        out.push_str(" first_line=");
        push_i64(out, i64::from(c.first_line));
        out.push_str(" file=");
        escape(file, out);
        out.push_str(" name=");
        escape(name, out);
        out.push('\n');
    }

    /// The record of published stack `id`.
    pub fn stack(&self, id: u32) -> Option<StackRec> {
        if id >= self.stacks() {
            return None;
        }
        // SAFETY: a published record (immutable); the region pointer never changes.
        Some(unsafe { *(*self.t.get()).stacks.add(id as usize) })
    }

    /// Appends the `stack` line of published stack `id`.
    pub fn stack_line(&self, id: u32, out: &mut String) {
        let Some(r) = self.stack(id) else { return };
        // SAFETY: the frames of a published stack (immutable).
        let frames = unsafe {
            std::slice::from_raw_parts((*self.t.get()).frames.add(r.off as usize), usize::from(r.n))
        };
        out.push_str("stack id=");
        push_u64(out, u64::from(id));
        out.push_str(" domain=");
        out.push_str(domain_name(r.domain));
        out.push_str(" frames=");
        out.reserve(frames.len() * 12);
        // Each frame's `,ID:LINE` made in a small buffer and appended at once (a deep stack
        // has thousands of numbers, and the final write has all the stacks).
        let mut b = [0u8; 24];
        for (i, f) in frames.iter().enumerate() {
            let mut n = usize::from(i > 0);
            b[0] = b',';
            n += put_u32(&mut b[n..], f[0]);
            b[n] = b':';
            n += 1;
            n += put_u32(&mut b[n..], f[1]);
            // SAFETY: ASCII (a comma, a colon and digits).
            out.push_str(unsafe { std::str::from_utf8_unchecked(&b[..n]) });
        }
        for (flag, text) in [
            (TRUNCATED, " truncated=1"),
            (UNREADABLE, " unreadable=1"),
            (LOST, " lost=1"),
        ] {
            if r.flags & flag != 0 {
                out.push_str(text);
            }
        }
        out.push('\n');
    }
}

/// Writes the decimal digits of `v` at the start of `b` (at least 10 bytes); their count.
#[inline]
fn put_u32(b: &mut [u8], v: u32) -> usize {
    let (mut len, mut t) = (1, v);
    while t >= 10 {
        t /= 10;
        len += 1;
    }
    let mut v = v;
    for k in (0..len).rev() {
        b[k] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    len
}

/// Percent-encodes a string value of the trace file (docs/trace-format.md).
pub fn escape(b: &[u8], out: &mut String) {
    for &c in b {
        if (0x21..=0x7e).contains(&c) && c != b'%' && c != b'=' {
            out.push(char::from(c));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"3.11.7 (main, Dec)"), Some((3, 11)));
        assert_eq!(parse_version(b"3.8.18"), Some((3, 8)));
        assert_eq!(parse_version(b"2.7.18"), None);
        assert_eq!(parse_version(b"junk"), None);
    }

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

    /// A stack line's numbers are the plain decimal ones.
    #[test]
    fn frame_numbers_are_decimal() {
        let mut b = [0u8; 10];
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            999_999_999,
            1_000_000_000,
            u32::MAX,
        ] {
            let n = put_u32(&mut b, v);
            assert_eq!(&b[..n], v.to_string().as_bytes());
        }
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape("a b=%é/x.py".as_bytes(), &mut s);
        assert_eq!(s, "a%20b%3D%25%C3%A9/x.py");
    }

    /// The constant offsets of each minor are those taken from the layout [`detect`] finds.
    #[test]
    fn minor_offsets_are_the_layouts() {
        for l in layouts().iter().filter(|l| !l.from_debug_offsets) {
            assert_eq!(minor_offsets(l.version.1), offsets(l), "{:?}", l.version);
        }
        for m in 8..=15 {
            assert!(layout_of((3, m)).is_some(), "3.{m}");
        }
        assert_eq!(Minor::<11>::OFF, minor_offsets(11));
        assert_eq!(minor_offsets(7), None);
    }

    /// `_PyThreadState_UncheckedGet`'s code as compilers emit it (the bytes of CPython 3.11's
    /// shared libpython and of an executable linked with it), decoded to the word it loads;
    /// any other code is not.
    #[test]
    fn current_field_decoding() {
        let f = 0x1000usize;
        let run = |code: &[u8], got: usize| {
            let code = code.to_vec();
            decode_current(
                f,
                move |a| code.get(a - f).copied().unwrap_or(0xcc),
                move |a| if a == got { 0x7000_0000 } else { 0xdead },
            )
        };
        // mov rax, [rip + 0x1ae269]; mov rax, [rax + 0x240]; ret
        let shared = [
            0x48, 0x8b, 0x05, 0x69, 0xe2, 0x1a, 0x00, 0x48, 0x8b, 0x80, 0x40, 0x02, 0x00, 0x00,
            0xc3,
        ];
        assert_eq!(run(&shared, f + 7 + 0x1ae269), Some(0x7000_0240));
        // endbr64; the same with a disp8 and a negative GOT displacement
        let short = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x8b, 0x05, 0xf0, 0xff, 0xff, 0xff, 0x48, 0x8b, 0x40,
            0x38, 0xc3,
        ];
        assert_eq!(run(&short, f + 11 - 16), Some(0x7000_0038));
        // mov rax, [rip + 0x100]; ret (an executable: the field itself)
        assert_eq!(
            run(&[0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3], 0),
            Some(f + 7 + 0x100)
        );
        // 3.12's thread-local (a call), a load not followed by ret, nothing known
        let tls = [
            0x48, 0x83, 0xec, 0x08, 0x66, 0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xc3,
        ];
        assert_eq!(run(&tls, 0), None);
        let mut long = shared;
        long[14] = 0x90;
        assert_eq!(run(&long, f + 7 + 0x1ae269), None);
        assert_eq!(run(&[0xc3], 0), None);
        // Outside `_PyRuntime`, or misaligned: not taken.
        assert_eq!(current_field(0, 0x1000, 0x100), None);
    }

    #[test]
    fn every_minor_has_a_frame_walk() {
        for l in generated::X86_64.iter().filter(|l| !l.from_debug_offsets) {
            let old = l.tstate_frame.is_some() && l.frame_back.is_some() && l.frame_lasti.is_some();
            let new = l.iframe_code.is_some()
                && l.iframe_previous.is_some()
                && l.iframe_instr.is_some()
                && l.iframe_owner.is_some()
                && l.code_code_adaptive.is_some()
                && (l.tstate_current_frame.is_some() || l.tstate_cframe.is_some());
            assert!(old || new, "{:?}", l.version);
        }
    }

    /// Stacks without Python (no interpreter): one per domain, interned once; the tables'
    /// lines; and a lost stack when the table is full is counted.
    #[test]
    fn interning_without_python() {
        let len = bytes_needed();
        let mut v = vec![0u64; len / 8 + 1];
        let r = Region {
            ptr: v.as_mut_ptr() as *mut u8,
            len,
        };
        // SAFETY: zeroed, aligned, lives for the test.
        let s = unsafe { Stacks::new(r) };
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
