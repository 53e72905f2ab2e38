//! The exported allocator entry points, the process-wide state, the constructor, the
//! draining of the queue and the fork and exit handlers. Not compiled into the unit tests (a test binary
//! must keep its own allocator).

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::agg::{Aggregate, Drops};
use crate::gilring::GilRing;
use crate::late::Late;
use crate::maps::{page_round, Cut, Map, Maps};
use crate::pystack::{Python, Region, Stacks, Walk};
use crate::residency::{nonresident_bytes, Residency};
use crate::ring::{
    Event, Ring, ALLOC, FREE, FREE_INHERITED, FREE_TEMP, MALLOC, MMAP, PART, PART_INHERITED,
    PART_TEMP, PYMALLOC, SPLIT, SPLIT_INHERITED,
};
use crate::sampling::{weight, Countdown};
use crate::table::{Entry, Shape, Table, Taken};

// ---------------------------------------------------------------- per-thread state
//
// `thread_local!` with a `const` initialiser of a type without `Drop` compiles, on Linux, to a
// plain `#[thread_local]` static: no lazy initialisation, no destructor registration, no
// allocation on first access (std's `thread_local` "eager"/"const" path). In a library loaded
// at startup (LD_PRELOAD) its block is in the static TLS area glibc sets up when each thread
// is created, so `__tls_get_addr` only reads the DTV and never calls malloc. (A pthread key
// would cost a call per hook and, past 32 keys, glibc allocates in pthread_setspecific.) A
// library `dlopen`ed later would get its TLS lazily through malloc: this one must be preloaded.

struct Tls {
    busy: Cell<bool>,
    left: Cell<u64>,
    rng: Cell<u64>,
    /// Set while CPython's wrapped allocator runs underneath [`crate::pymem`]'s wrapper: what
    /// it allocates with malloc/mmap is already recorded as a pymalloc block.
    in_py: Cell<bool>,
    /// The frames of this thread's last sampled stack (5 KiB), used only while the guard is
    /// held ([`Guard::walk`]).
    walk: UnsafeCell<Walk>,
}

thread_local! {
    static TLS: Tls = const {
        Tls {
            busy: Cell::new(false),
            left: Cell::new(0),
            rng: Cell::new(0),
            in_py: Cell::new(false),
            walk: UnsafeCell::new(Walk::new()),
        }
    };
}

/// Where every thread's [`Tls`] lies from its thread pointer (a wrapping difference), when the
/// library was loaded at start-up; 0 when not known ([`this_tls`] then asks `TLS.with`).
///
/// `TLS.with` in a shared library is a call to `__tls_get_addr` (the general-dynamic TLS model:
/// stable Rust offers no other for a cdylib), about 15 instructions with the call through the
/// PLT, on every hook: in `all` mode eight times a w6 iteration, 2-3% of its time. A library
/// loaded at start-up (`LD_PRELOAD`) has its block in the static TLS area, which ld.so lays out
/// once, before any thread exists, at one fixed offset from the thread pointer in every thread
/// (the TLS ABI's variant II on x86-64, variant I on aarch64; forked children keep it). A
/// library `dlopen`ed later (attached) may be given a block per thread with malloc, anywhere:
/// it keeps the call. Debug builds check every use against `TLS.with`.
static TLS_AT: AtomicUsize = AtomicUsize::new(0);

/// This thread's [`Tls`].
#[inline(always)]
fn this_tls() -> *const Tls {
    let at = TLS_AT.load(Ordering::Relaxed);
    if at != 0 {
        let t = crate::pymem::thread_pointer().wrapping_add(at) as *const Tls;
        debug_assert_eq!(t, TLS.with(|t| t as *const Tls));
        return t;
    }
    TLS.with(|t| t as *const Tls)
}

/// Sets [`TLS_AT`] when this library was loaded at start-up: called once by the constructor,
/// in the only thread. Loaded at start-up means named in `LD_PRELOAD` (ld.so keeps the name as
/// written there, which `dladdr` gives back); a library loaded with `dlopen` that `LD_PRELOAD`
/// also names would have been loaded at start-up already, and `dlopen` returns that one.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn find_tls_offset() {
    // SAFETY: dladdr fills the struct it is given for an address of this library; the name it
    // points to is kept by the loader while the library is loaded.
    let me = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(find_tls_offset as *const c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return;
        }
        CStr::from_ptr(info.dli_fname).to_bytes()
    };
    let Some(list) = getenv(c"LD_PRELOAD") else {
        return;
    };
    if !list
        .split(|b| *b == b':' || *b == b' ')
        .any(|name| !name.is_empty() && name == me)
    {
        return;
    }
    let t = TLS.with(|t| t as *const Tls as usize);
    let at = t.wrapping_sub(crate::pymem::thread_pointer());
    if at != 0 {
        TLS_AT.store(at, Ordering::Relaxed);
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn find_tls_offset() {}

/// The reentrancy guard: set while a hook runs on this thread, so anything the hook (or the
/// real allocator, or dlsym) allocates goes straight to the real functions, untraced. It keeps
/// the address of this thread's [`Tls`], so the hook reaches its thread's state once.
struct Guard(*const Tls);

impl Guard {
    #[inline]
    fn enter() -> Option<Guard> {
        // SAFETY: this thread's TLS block (a const thread-local without a destructor): it
        // lives as long as the thread; the reference does not leave this call.
        let t = unsafe { &*this_tls() };
        if t.busy.get() {
            None
        } else {
            t.busy.set(true);
            Some(Guard(t as *const Tls))
        }
    }

    /// This thread's state.
    #[inline(always)]
    fn tls(&self) -> &Tls {
        // SAFETY: the thread's own TLS block (a const thread-local without a destructor, in
        // the static TLS area): it lives as long as the thread, and the guard (a raw pointer:
        // neither Send nor Sync) never leaves the thread that made it.
        unsafe { &*self.0 }
    }

    /// This thread's walk buffer.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn walk(&self) -> &mut Walk {
        // SAFETY: the guard is held: no other hook runs on this thread, and only a guard's
        // holder uses the buffer, one call at a time (the reference does not outlive it).
        unsafe { &mut *self.tls().walk.get() }
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        self.tls().busy.set(false);
    }
}

// ---------------------------------------------------------------- the real functions

struct Real {
    malloc: AtomicUsize,
    calloc: AtomicUsize,
    realloc: AtomicUsize,
    free: AtomicUsize,
    posix_memalign: AtomicUsize,
    aligned_alloc: AtomicUsize,
    memalign: AtomicUsize,
    valloc: AtomicUsize,
    pvalloc: AtomicUsize,
    free_sized: AtomicUsize,
    free_aligned_sized: AtomicUsize,
    mmap: AtomicUsize,
    mmap64: AtomicUsize,
    munmap: AtomicUsize,
    mremap: AtomicUsize,
}

static REAL: Real = Real {
    malloc: AtomicUsize::new(0),
    calloc: AtomicUsize::new(0),
    realloc: AtomicUsize::new(0),
    free: AtomicUsize::new(0),
    posix_memalign: AtomicUsize::new(0),
    aligned_alloc: AtomicUsize::new(0),
    memalign: AtomicUsize::new(0),
    valloc: AtomicUsize::new(0),
    pvalloc: AtomicUsize::new(0),
    free_sized: AtomicUsize::new(0),
    free_aligned_sized: AtomicUsize::new(0),
    mmap: AtomicUsize::new(0),
    mmap64: AtomicUsize::new(0),
    munmap: AtomicUsize::new(0),
    mremap: AtomicUsize::new(0),
};

/// 0: not resolved, 1: resolving (dlsym may call calloc: served by the arena), 2: resolved.
static RESOLVED: AtomicU8 = AtomicU8::new(0);

fn resolve() {
    if RESOLVED
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let get = |name: &CStr, slot: &AtomicUsize| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; a null result stays 0.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        slot.store(p as usize, Ordering::Release);
    };
    // calloc first: dlsym's own calloc is served by the arena until it is known.
    get(c"calloc", &REAL.calloc);
    get(c"malloc", &REAL.malloc);
    get(c"realloc", &REAL.realloc);
    get(c"free", &REAL.free);
    get(c"posix_memalign", &REAL.posix_memalign);
    get(c"aligned_alloc", &REAL.aligned_alloc);
    get(c"memalign", &REAL.memalign);
    get(c"valloc", &REAL.valloc);
    get(c"pvalloc", &REAL.pvalloc);
    get(c"free_sized", &REAL.free_sized);
    get(c"free_aligned_sized", &REAL.free_aligned_sized);
    get(c"mmap", &REAL.mmap);
    get(c"mmap64", &REAL.mmap64);
    get(c"munmap", &REAL.munmap);
    get(c"mremap", &REAL.mremap);
    RESOLVED.store(2, Ordering::Release);
}

#[inline]
fn real(slot: &AtomicUsize) -> usize {
    let p = slot.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    resolve();
    slot.load(Ordering::Acquire)
}

macro_rules! real_fn {
    ($slot:ident, $ty:ty) => {{
        let p = real(&REAL.$slot);
        if p == 0 {
            None
        } else {
            // SAFETY: p is the address dlsym gave for this symbol, whose C type is $ty.
            Some(unsafe { std::mem::transmute::<usize, $ty>(p) })
        }
    }};
}

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type FreeSizedFn = unsafe extern "C" fn(*mut c_void, usize);
type FreeAlignedSizedFn = unsafe extern "C" fn(*mut c_void, usize, usize);
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type AlignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type MmapFn = unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, c_int, i64) -> *mut c_void;
type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;
type MremapFn = unsafe extern "C" fn(*mut c_void, usize, usize, c_int, ...) -> *mut c_void;

// ---------------------------------------------------------------- bootstrap arena

const ARENA_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: disjoint ranges are handed out by an atomic bump pointer.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// Memory for calls made before the real allocator is known (dlsym's calloc): zeroed, never
/// reused, a 16-byte header holding the size. Null when exhausted.
fn arena_alloc(size: usize) -> *mut c_void {
    let need = match size.checked_add(16 + 15) {
        Some(n) => n & !15,
        None => return std::ptr::null_mut(),
    };
    let off = ARENA_USED.fetch_add(need, Ordering::Relaxed);
    if off + need > ARENA_SIZE {
        return std::ptr::null_mut();
    }
    let base = ARENA.0.get() as *mut u8;
    // SAFETY: [off, off+need) is inside the arena and handed out to this call alone.
    unsafe {
        (base.add(off) as *mut usize).write(size);
        base.add(off + 16) as *mut c_void
    }
}

fn in_arena(p: *mut c_void) -> bool {
    let base = ARENA.0.get() as usize;
    (p as usize) >= base && (p as usize) < base + ARENA_SIZE
}

/// The size an arena block was asked for.
///
/// # Safety
/// `p` must come from [`arena_alloc`].
unsafe fn arena_size(p: *mut c_void) -> usize {
    // SAFETY: the header lies 16 bytes before every arena block.
    unsafe { ((p as *mut u8).sub(16) as *const usize).read() }
}

// ---------------------------------------------------------------- tracing state

static TRACING: AtomicBool = AtomicBool::new(false);
/// The mean sample interval in bytes; 1: every allocation.
static MEAN: AtomicU64 = AtomicU64::new(512 * 1024);
static TABLE: OnceLock<Table> = OnceLock::new();
/// `all` mode: the table of the pymalloc blocks (at most 512 bytes) that the allocator domains'
/// wrapper records while the main interpreter is the only one ([`gil_table`]).
static GIL_TABLE: Late<Table> = Late::new();
/// Whether [`GIL_TABLE`] is in use: set by the wrapper's installation (pymem.rs, through
/// [`set_gil_table_on`]: only once `GIL_TABLE`, [`RING`] and [`STACKS`] are set, with Release,
/// for [`gil_mode`]), with the GIL held, before any wrapper runs, when the allocator underneath
/// is pymalloc; never cleared.
pub(crate) static GIL_TABLE_ON: AtomicBool = AtomicBool::new(false);
static RING: Late<Ring> = Late::new();
static DROP_ALLOCS: AtomicU64 = AtomicU64::new(0);
static DROP_FREES: AtomicU64 = AtomicU64::new(0);
static TABLE_FULL: AtomicU64 = AtomicU64::new(0);
static AT_FORK: AtomicU64 = AtomicU64::new(0);
static SEED: AtomicU64 = AtomicU64::new(0x853C_49E6_748F_EA9B);
/// The interpreter found at start, if any.
static PY: OnceLock<Python> = OnceLock::new();
/// The interned code objects and stacks.
static STACKS: Late<Stacks> = Late::new();
/// An allocation freed within this many nanoseconds is a temporary (`temp_ns`).
const TEMP_NS: u64 = 10_000_000;
/// The unit of the times kept with sampled pointers (2^19 ns, about 0.5 ms: the coarse clock's
/// resolution is 1-4 ms anyway).
const TIME_SHIFT: u32 = 19;
/// An entry's `t` (table.rs) is the fork depth of the process that made the block in its top
/// 3 bits, and the time below them: 29 bits of 2^19 ns wrap after 2^48 ns (78 h), as the 32
/// bits of 2^16 ns did before.
const DEPTH_SHIFT: u32 = 29;
const TIME_MASK: u32 = (1 << DEPTH_SHIFT) - 1;
/// The deepest fork depth told apart: a process deeper still takes what its parent made at
/// this depth for its own (its inherited figure is then too low, and its own too high).
const MAX_DEPTH: u32 = 7;
/// This process's fork depth: 0 in the traced program and in each exec'd image, its parent's
/// plus one in a forked child. A block whose entry has a smaller depth was inherited at fork.
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// The coarse monotonic clock in ns (the vDSO reads it without a system call; its resolution
/// is the kernel's tick, 1-4 ms: it is `CLOCK_MONOTONIC` rounded down to the last tick).
///
/// `all` mode reads it at every event, a third of the tracer's time on w6 beside the rest,
/// so the vDSO's function is called directly when it was found ([`find_vdso_clock`]): the
/// libc wrapper and its PLT jump cost a third of the call (measured on this machine kind:
/// 28 against 40 ns a call, under load).
#[inline]
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let f = VDSO_CLOCK.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: the vDSO's clock_gettime (find_vdso_clock: found by its versioned name,
        // whose C type this is), mapped for the process's life; it writes the timespec.
        unsafe { std::mem::transmute::<usize, ClockFn>(f)(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    } else {
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;

/// The vDSO's `clock_gettime` ([`coarse_ns`]); 0: libc's is called (none found: another
/// architecture, or a vDSO-less run such as under valgrind).
static VDSO_CLOCK: AtomicUsize = AtomicUsize::new(0);

/// The vDSO's name for `clock_gettime` and its symbol version (the kernel's
/// `arch/*/entry/vdso/*.lds.S`).
#[cfg(target_arch = "x86_64")]
const VDSO_CLOCK_NAME: Option<(&CStr, &CStr)> = Some((c"__vdso_clock_gettime", c"LINUX_2.6"));
#[cfg(target_arch = "aarch64")]
const VDSO_CLOCK_NAME: Option<(&CStr, &CStr)> = Some((c"__kernel_clock_gettime", c"LINUX_2.6.39"));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const VDSO_CLOCK_NAME: Option<(&CStr, &CStr)> = None;

/// Looks up the vDSO's `clock_gettime` in the vDSO glibc already loaded (RTLD_NOLOAD: nothing
/// is loaded), at [`begin`], before anything is traced.
fn find_vdso_clock() {
    let Some((name, version)) = VDSO_CLOCK_NAME else {
        return;
    };
    // SAFETY: dlopen of an object's soname with RTLD_NOLOAD returns it only if it is already
    // loaded (null otherwise), and loads nothing; dlvsym with NUL-terminated strings returns
    // the address of that version of the symbol or null. The handle is closed: the vDSO is
    // never unloaded (its reference count only goes back to what it was).
    unsafe {
        let h = libc::dlopen(
            c"linux-vdso.so.1".as_ptr(),
            libc::RTLD_LAZY | libc::RTLD_NOLOAD,
        );
        if h.is_null() {
            return;
        }
        let f = libc::dlvsym(h, name.as_ptr(), version.as_ptr());
        libc::dlclose(h);
        VDSO_CLOCK.store(f as usize, Ordering::Relaxed);
    }
}

/// A [`coarse_ns`] time in the units of an entry's `t`: 2^19 ns, wrapping at 2^29 units.
#[inline]
fn units(ns: u64) -> u32 {
    (ns >> TIME_SHIFT) as u32 & TIME_MASK
}

/// An entry's `t` for a block made at `now` (the coarse clock) by this process: its fork
/// depth over the time in [`units`].
#[inline(always)]
fn entry_time(now: u64) -> u32 {
    units(now) | DEPTH.load(Ordering::Relaxed) << DEPTH_SHIFT
}

/// The sample decision for a new block or anonymous mapping of `size` bytes at `ptr`: its
/// weight when it is recorded (its size in `all` mode), none when it is not.
#[inline(always)]
fn new_weight(g: &Guard, ptr: *mut c_void, size: usize) -> Option<f64> {
    if ptr.is_null() || !TRACING.load(Ordering::Relaxed) {
        return None;
    }
    // Underneath the pymalloc wrapper, which records the block itself: neither recorded nor
    // counted down (the bytes of pymalloc's arenas are not part of the sampled stream).
    if g.tls().in_py.get() || crate::pymem::marked_here() {
        return None;
    }
    // Until CPython's domains are wrapped, every malloc tries (one load once they are): the
    // slow path alone may never run again after start-up in a program whose later mallocs
    // are few and small (measured: 3 of 24 sampled w6 runs traced no pymalloc block).
    if crate::pymem::pending() {
        crate::pymem::maybe_install();
    }
    let mean = MEAN.load(Ordering::Relaxed);
    if mean <= 1 {
        Some(size as f64)
    } else if thread_takes(g.tls(), size as u64, mean) {
        Some(weight(size as u64, mean))
    } else {
        None
    }
}

#[inline]
fn on_alloc(g: &Guard, ptr: *mut c_void, size: usize, domain: u8) {
    if let Some(w) = new_weight(g, ptr, size) {
        record_alloc(g, ptr as usize, size as u64, w, domain, false);
    }
}

/// Records a sampled allocation (`gil`: the caller holds the GIL of the only interpreter, so
/// the interpreter's current thread state is this thread's: [`Stacks::sample`]).
#[cold]
fn record_alloc(g: &Guard, ptr: usize, size: u64, weight: f64, domain: u8, gil: bool) {
    let (Some(table), Some(ring)) = (TABLE.get(), RING.get()) else {
        return;
    };
    if crate::pymem::pending() {
        crate::pymem::maybe_install();
    }
    let excl = if gil && domain == PYMALLOC {
        gil_table()
    } else {
        None
    };
    record_in(g, table, excl, ring, ptr, size, weight, domain, gil);
}

/// [`record_alloc`]'s work once its tables are known: the stack, the entry (in `excl`, the
/// table in exclusive use, when given, else in `table`), the event.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record_in(
    g: &Guard,
    table: &Table,
    excl: Option<&Table>,
    ring: &Ring,
    ptr: usize,
    size: u64,
    weight: f64,
    domain: u8,
    gil: bool,
) {
    let stack = STACKS
        .get()
        .map_or(0, |s| s.sample(PY.get(), domain, gil, g.walk()));
    let now = coarse_ns();
    let e = Entry {
        size,
        weight,
        domain,
        stack,
        t: entry_time(now),
    };
    let inserted = match excl {
        Some(t) => t.insert_excl(ptr, e),
        None => table.insert(ptr, e),
    };
    if !inserted {
        TABLE_FULL.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let ev = Event {
        kind: ALLOC,
        domain,
        stack,
        ptr,
        size,
        weight,
    };
    let ok = if excl.is_some() {
        deliver_gil(ring, &ev, now)
    } else {
        deliver(ring, &ev, now)
    };
    if !ok {
        match excl {
            Some(t) => t.remove_excl(ptr),
            None => table.remove(ptr),
        };
        DROP_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// `all` mode's record of a block of at most [`PYMALLOC_MAX`] bytes the wrapper's allocator
/// (pymalloc, [`GIL_TABLE_ON`]) just gave with the GIL of the only interpreter held
/// (`pymem::wrap_malloc_all`): what [`py_record`] and [`record_alloc`] do for it, with no
/// decision to take (every block at its size) and inline, into [`gil_table`], its event
/// queued in [`GIL_RING`] as what that queue keeps (an [`Event`] only on the way of
/// [`deliver`]). The wrapper is installed, so nothing is left to install.
///
/// # Safety
/// Only from `all` mode's wrappers (`pymem::wrap_malloc_all`, `wrap_calloc_all`), which are
/// installed only once [`GIL_TABLE_ON`] is set ([`gil_mode_installed`]).
#[inline(always)]
pub(crate) unsafe fn record_gil(p: *mut c_void, size: usize) {
    debug_assert!(size <= PYMALLOC_MAX);
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: called by those wrappers (the contract).
    let m = unsafe { gil_mode_installed() };
    let Some(g) = Guard::enter() else { return };
    let stack = m.stacks.sample(PY.get(), PYMALLOC, true, g.walk());
    let now = coarse_ns();
    let (ptr, size, weight) = (p as usize, size as u64, size as f64);
    let e = Entry {
        size,
        weight,
        domain: PYMALLOC,
        stack,
        t: entry_time(now),
    };
    if !m.table.insert_excl(ptr, e) {
        TABLE_FULL.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !gil_push(ALLOC, stack, weight, now) {
        record_gil_deliver(m.table, m.ring, ptr, size, stack, now);
    }
}

/// [`record_gil`]'s event the way of [`deliver`] (the guard held), its entry taken out again
/// when it is dropped. Its figures as scalars (an [`Entry`] went through memory before the
/// insert).
#[cold]
#[inline(never)]
fn record_gil_deliver(table: &Table, ring: &Ring, ptr: usize, size: u64, stack: u32, now: u64) {
    let ev = Event {
        kind: ALLOC,
        domain: PYMALLOC,
        stack,
        ptr,
        size,
        weight: size as f64,
    };
    if !deliver_as::<true>(ring, &ev, now) {
        table.remove_excl(ptr);
        DROP_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The table in exclusive use ([`Table::insert_excl`]) for the pymalloc blocks the wrapper
/// records while the main interpreter is the only one (`gil`), when it is on (`all` mode,
/// pymalloc underneath: [`GIL_TABLE_ON`]). Its lock is the main interpreter's GIL:
/// - a key goes in only from the wrapper with the GIL held and no other interpreter (the
///   wrapper's `gil`, its fast path's terms), and comes out only when the program frees or
///   moves that block through the wrapper (the MEM and OBJ domains are called with the GIL
///   held), by a thread that holds the main interpreter's GIL: a block of the main
///   interpreter's pymalloc is freed by that interpreter only (a subinterpreter with its own
///   GIL has its own pymalloc, CPython's `use_main_obmalloc`; one that shares the GIL holds
///   that GIL). So every change of this table is made under that one GIL.
/// - a thread of a subinterpreter with its own GIL may look its own blocks up here (a free
///   through the wrapper asks both tables): it only loads, and finds nothing, as its blocks
///   were never put here ([`Table::remove_excl`]).
/// - the C `free` hook does not look here: a pymalloc block is never given to `free` (a
///   block in an arena would corrupt the C heap; the ones pymalloc serves from malloc, as for
///   0 bytes, reach `free` through the wrapper's free, which took it out of this table
///   first). Only a program that frees a `PyObject_Malloc` block with `free` against the
///   C API would leave its entry here (its bytes would stay live).
///
/// So the pymalloc blocks, nearly all of `all` mode's events in a Python program, are
/// recorded without the slot's and the filter's locked instructions.
#[inline(always)]
fn gil_table() -> Option<&'static Table> {
    gil_mode().map(|m| m.table)
}

/// What `all` mode's wrappers use once [`GIL_TABLE_ON`] is set: [`gil_table`], the queue, the
/// stacks (a load and a branch in all, where each `OnceLock` cost its own).
#[derive(Clone, Copy)]
struct GilMode {
    table: &'static Table,
    ring: &'static Ring,
    stacks: &'static Stacks,
}

#[inline(always)]
fn gil_mode() -> Option<GilMode> {
    if !GIL_TABLE_ON.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: GIL_TABLE_ON is stored true only by set_gil_table_on, with Release, once each of
    // these was seen set (Late::get, Acquire); this Acquire load of it sees that store, so
    // their setting happens before this read (Late::get_unchecked's contract).
    unsafe {
        Some(GilMode {
            table: GIL_TABLE.get_unchecked(),
            ring: RING.get_unchecked(),
            stacks: STACKS.get_unchecked(),
        })
    }
}

/// [`gil_mode`] in `all` mode's wrappers, without the look at [`GIL_TABLE_ON`].
///
/// # Safety
/// Only from those wrappers (pymem.rs `ours`: installed only when `GIL_TABLE_ON` was set,
/// never cleared). Its store and the tables' happen before their installation, as
/// `pymem::REPLACED`'s do, and the installation before any call of them.
#[inline(always)]
unsafe fn gil_mode_installed() -> GilMode {
    debug_assert!(GIL_TABLE_ON.load(Ordering::Relaxed));
    // SAFETY: set before the caller was installed (the contract; set_gil_table_on checked
    // that each was set).
    unsafe {
        GilMode {
            table: GIL_TABLE.get_unchecked(),
            ring: RING.get_unchecked(),
            stacks: STACKS.get_unchecked(),
        }
    }
}

/// Sets [`GIL_TABLE_ON`] at the wrapper's installation (pymem.rs), before any wrapper runs:
/// on when `allowed` and `all` mode's tables are set ([`gil_mode`] relies on it).
pub(crate) fn set_gil_table_on(allowed: bool) {
    let ready = GIL_TABLE.get().is_some() && RING.get().is_some() && STACKS.get().is_some();
    GIL_TABLE_ON.store(allowed && ready, Ordering::Release);
}

/// Takes `ptr` out of the table before the real free (after it the address may be reused).
#[inline]
fn take(ptr: *mut c_void) -> Option<Entry> {
    TABLE.get()?.remove(ptr as usize)
}

/// Puts back an entry taken for a call that then failed.
fn put_back(ptr: usize, e: Entry) {
    if let Some(t) = TABLE.get() {
        if !t.insert(ptr, e) {
            TABLE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The kind of the free, at `now` (the coarse clock), of a block whose entry's time is `t`:
/// a temporary when its age, in the entry's units, is under [`TEMP_UNITS`] (in 32 bits, where
/// the age in ns took a 64-bit shift, mask and compare).
#[inline(always)]
fn free_kind(t: u32, now: u64) -> u8 {
    if t >> DEPTH_SHIFT < DEPTH.load(Ordering::Relaxed) {
        FREE_INHERITED
    } else if ((now >> TIME_SHIFT) as u32).wrapping_sub(t) & TIME_MASK < TEMP_UNITS {
        FREE_TEMP
    } else {
        FREE
    }
}

/// An age of `n` units (2^19 ns) is under [`TEMP_NS`] exactly when `n` is under this.
const TEMP_UNITS: u32 = TEMP_NS.div_ceil(1 << TIME_SHIFT) as u32;
const _: () = assert!(
    ((TEMP_UNITS as u64) << TIME_SHIFT) >= TEMP_NS
        && ((TEMP_UNITS as u64 - 1) << TIME_SHIFT) < TEMP_NS
);

/// The free event of `e` at `ptr`, at `now` (the coarse clock).
#[inline(always)]
fn free_event(ptr: usize, e: Entry, now: u64) -> Event {
    Event {
        kind: free_kind(e.t, now),
        domain: e.domain,
        stack: e.stack,
        ptr,
        size: e.size,
        weight: e.weight,
    }
}

/// The free event of `e`, taken out of [`gil_table`] when `excl`.
fn emit_free(ptr: usize, e: Entry, excl: bool) {
    let Some(ring) = RING.get() else { return };
    if crate::pymem::pending() {
        crate::pymem::maybe_install();
    }
    let now = coarse_ns();
    let ev = free_event(ptr, e, now);
    let ok = if excl {
        deliver_gil(ring, &ev, now)
    } else {
        deliver(ring, &ev, now)
    };
    if !ok {
        DROP_FREES.fetch_add(1, Ordering::Relaxed);
    }
}

/// A generator seed, different for each call, mixed with `salt`.
pub(crate) fn new_seed(salt: u64) -> u64 {
    SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ salt ^ now_ns()
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------- for pymem.rs's wrapper

/// Runs the allocator underneath the pymalloc wrapper with this thread marked, so the
/// malloc/mmap it makes are not recorded again (its frees are still looked up).
#[inline(always)]
pub(crate) fn with_py_mark<R>(call: impl FnOnce() -> R) -> R {
    // SAFETY: as in Guard::enter.
    let t = unsafe { &*this_tls() };
    let prev = t.in_py.replace(true);
    let r = call();
    t.in_py.set(prev);
    r
}

/// pymalloc serves requests of at most this many bytes itself (`SMALL_REQUEST_THRESHOLD`,
/// 3.8+); larger ones it passes to malloc.
pub(crate) const PYMALLOC_MAX: usize = 512;

/// Whether this thread's byte countdown (its own generator, seeded on first use) samples an
/// allocation of `size` bytes at mean `mean`.
#[inline(always)]
fn thread_takes(t: &Tls, size: u64, mean: u64) -> bool {
    let mut c = Countdown {
        left: t.left.get(),
        rng: t.rng.get(),
    };
    if c.rng == 0 {
        c.rng = new_seed(t as *const Tls as u64);
    }
    let s = c.take(size, mean);
    t.left.set(c.left);
    t.rng.set(c.rng);
    s
}

/// The sample decision for `size` bytes on the wrapper's thread-local path, taken before the
/// allocation: its weight when sampled, `None` when not (or not tracing, or inside a hook on
/// this thread). Counts down this thread's countdown, as the malloc hooks do.
pub(crate) fn py_decide(size: usize) -> Option<f64> {
    let mean = tracing_mean()?;
    let g = Guard::enter()?;
    if mean <= 1 {
        return Some(size as f64);
    }
    let sampled = thread_takes(g.tls(), size as u64, mean);
    sampled.then(|| weight(size as u64, mean))
}

/// A sample the wrapper could not record (the block it was to be served from could not be
/// allocated): counted as the queue's refusals are (`dropped_allocs`).
#[cold]
pub(crate) fn py_sample_lost() {
    DROP_ALLOCS.fetch_add(1, Ordering::Relaxed);
}

/// The mean sample interval while tracing (1: `all` mode), `None` when not tracing.
#[inline]
pub(crate) fn tracing_mean() -> Option<u64> {
    TRACING
        .load(Ordering::Relaxed)
        .then(|| MEAN.load(Ordering::Relaxed))
}

/// A block sampled by the wrapper, of `weight` bytes (`gil`: on the wrapper's fast path's
/// terms, the main interpreter alone, whose GIL the caller holds).
#[cold]
pub(crate) fn py_record(p: *mut c_void, size: usize, weight: f64, gil: bool) {
    if let Some(g) = Guard::enter() {
        let domain = if size <= PYMALLOC_MAX {
            PYMALLOC
        } else {
            MALLOC
        };
        record_alloc(&g, p as usize, size as u64, weight, domain, gil);
    }
}

/// The table's entry for a block about to be freed or moved by the wrapped allocator, and
/// whether it was in [`gil_table`].
#[inline(always)]
pub(crate) fn py_take(p: *mut c_void) -> Option<(Entry, bool)> {
    if p.is_null() {
        return None;
    }
    if let Some(t) = gil_table().and_then(|t| t.take_excl(p as usize)) {
        return Some((t.entry(), true));
    }
    take(p).map(|e| (e, false))
}

/// Whether a block the wrapped allocator is about to free may be sampled (false: certainly
/// not, from the table's filter alone).
#[inline(always)]
pub(crate) fn py_may_be_sampled(p: *mut c_void) -> bool {
    // The GIL table first: in `all` mode it holds nearly every block freed here.
    !p.is_null()
        && (gil_table().is_some_and(|t| t.may_hold(p as usize))
            || TABLE.get().is_some_and(|t| t.may_hold(p as usize)))
}

/// The free of a sampled block, taken out of the table by [`py_take`] (out of [`gil_table`]
/// when `excl`).
///
/// A block of `gil_table` is freed by its GIL's holder, whose event nearly always goes into
/// [`GIL_RING`] ([`gil_push`]): that path runs without the reentrancy guard (one
/// thread-local access less), as the table's removal before it already does. It calls
/// nothing that allocates, maps or frees, so no hook can run inside it on this thread but
/// one of a signal handler (which the guard would have left untraced; `malloc` is not
/// async-signal-safe anyway); `pymem::maybe_install` is not asked, the wrapper being the
/// caller. The way of [`deliver`] (which may drain and write a line) takes the guard.
#[cold]
pub(crate) fn py_freeing(p: *mut c_void, e: Entry, excl: bool) {
    if excl {
        if let Some(ring) = RING.get() {
            let now = coarse_ns();
            if !gil_push(free_kind(e.t, now), e.stack, e.weight, now) {
                free_gil_deliver(ring, p as usize, e, now);
            }
        }
        return;
    }
    let _g = Guard::enter();
    emit_free(p as usize, e, excl);
}

/// [`py_freeing`] of a block just taken out of [`gil_table`] ([`Taken`]: read before the
/// table's next insert), inline in the wrapper's free (its doc says why no guard): its kind,
/// stack, weight and time queued in [`GIL_RING`], the whole event built only on the way of
/// [`deliver`].
#[inline(always)]
fn py_freeing_gil(ring: &Ring, p: *mut c_void, t: Taken<'_>) {
    let now = coarse_ns();
    let (stack, at) = t.stack_t();
    if !gil_push(free_kind(at, now), stack, t.weight(), now) {
        free_gil_deliver(ring, p as usize, t.entry(), now);
    }
}

/// The free event of a block of [`gil_table`] the way of [`deliver`], under the guard.
#[cold]
#[inline(never)]
fn free_gil_deliver(ring: &Ring, ptr: usize, e: Entry, now: u64) {
    let _g = Guard::enter();
    if !deliver_as::<true>(ring, &free_event(ptr, e, now), now) {
        DROP_FREES.fetch_add(1, Ordering::Relaxed);
    }
}

/// The wrapper's free of a block its table's filter did not rule out: the probe of
/// [`gil_table`] and the free event, else the shared table's.
#[inline(always)]
pub(crate) fn py_free_sampled(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    if let Some(m) = gil_mode() {
        if let Some(t) = m.table.take_excl(p as usize) {
            return py_freeing_gil(m.ring, p, t);
        }
    }
    if let Some(e) = take(p) {
        py_freeing(p, e, false);
    }
}

/// `all` mode's free of every block (`pymem::wrap_free_all`: nearly all are in
/// [`gil_table`]): [`py_free_sampled`] all inline (one call less per free), without the look
/// at [`GIL_TABLE_ON`].
///
/// # Safety
/// Only from `pymem::wrap_free_all` ([`gil_mode_installed`]).
#[inline(always)]
pub(crate) unsafe fn free_all(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: called by that wrapper (the contract).
    let m = unsafe { gil_mode_installed() };
    if let Some(t) = m.table.take_excl(p as usize) {
        return py_freeing_gil(m.ring, p, t);
    }
    if let Some(e) = take(p) {
        py_freeing(p, e, false);
    }
}

/// An entry taken for a realloc that failed.
#[cold]
pub(crate) fn py_put_back(p: *mut c_void, e: Entry, gil: bool) {
    match gil_table() {
        Some(t) if gil && e.domain == PYMALLOC => {
            if !t.insert_excl(p as usize, e) {
                TABLE_FULL.fetch_add(1, Ordering::Relaxed);
            }
        }
        _ => put_back(p as usize, e),
    }
}

// ---------------------------------------------------------------- the hooks

/// An allocating call: the real one, then the sample decision, all under the guard.
#[inline]
fn alloc_with(size: usize, domain: u8, call: impl FnOnce() -> *mut c_void) -> *mut c_void {
    match Guard::enter() {
        None => call(),
        Some(g) => {
            let p = call();
            on_alloc(&g, p, size, domain);
            p
        }
    }
}

/// The C `malloc`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let Some(f) = real_fn!(malloc, MallocFn) else {
        return arena_alloc(size);
    };
    // SAFETY: the real malloc with the caller's argument.
    alloc_with(size, 0, || unsafe { f(size) })
}

/// The C `calloc`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, m: usize) -> *mut c_void {
    let Some(f) = real_fn!(calloc, CallocFn) else {
        return match n.checked_mul(m) {
            Some(s) => arena_alloc(s),
            None => std::ptr::null_mut(),
        };
    };
    let size = n.saturating_mul(m);
    // SAFETY: the real calloc with the caller's arguments (it checks the overflow itself).
    alloc_with(size, 0, || unsafe { f(n, m) })
}

/// The C `free`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() || in_arena(p) {
        return;
    }
    let Some(f) = real_fn!(free, FreeFn) else {
        return; // only while dlsym runs: a block it frees is leaked
    };
    // SAFETY: the real free with the caller pointer, not one of the arena.
    free_with(p, || unsafe { f(p) });
}

#[inline]
fn free_with(p: *mut c_void, call: impl FnOnce()) {
    match Guard::enter() {
        None => call(),
        Some(_g) => {
            if let Some(e) = take(p) {
                emit_free(p as usize, e, false);
            }
            call();
        }
    }
}

/// C23 `free_sized`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    if p.is_null() || in_arena(p) {
        return;
    }
    if let Some(f) = real_fn!(free_sized, FreeSizedFn) {
        // SAFETY: the real free_sized with the caller's arguments.
        free_with(p, || unsafe { f(p, size) });
    } else if let Some(f) = real_fn!(free, FreeFn) {
        // SAFETY: free_sized's contract is free's plus a size hint.
        free_with(p, || unsafe { f(p) });
    }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    if p.is_null() || in_arena(p) {
        return;
    }
    if let Some(f) = real_fn!(free_aligned_sized, FreeAlignedSizedFn) {
        // SAFETY: the real function with the caller's arguments.
        free_with(p, || unsafe { f(p, align, size) });
    } else if let Some(f) = real_fn!(free, FreeFn) {
        // SAFETY: glibc frees aligned blocks with free.
        free_with(p, || unsafe { f(p) });
    }
}

/// The C `realloc`: the free of the old block and an allocation of the new size.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if in_arena(p) {
        // SAFETY: our malloc; p is an arena block of arena_size bytes, q is a fresh block.
        unsafe {
            let q = malloc(size);
            if !q.is_null() {
                let n = arena_size(p).min(size);
                std::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, n);
            }
            return q;
        }
    }
    let Some(f) = real_fn!(realloc, ReallocFn) else {
        return if p.is_null() {
            arena_alloc(size)
        } else {
            std::ptr::null_mut()
        };
    };
    let Some(g) = Guard::enter() else {
        // SAFETY: the real realloc with the caller's arguments.
        return unsafe { f(p, size) };
    };
    let old = if p.is_null() { None } else { take(p) };
    // SAFETY: as above.
    let q = unsafe { f(p, size) };
    if q.is_null() && size != 0 {
        // Failed: p is untouched and still allocated.
        if let Some(e) = old {
            put_back(p as usize, e);
        }
        return q;
    }
    if let Some(e) = old {
        emit_free(p as usize, e, false);
    }
    on_alloc(&g, q, size, 0);
    q
}

/// `reallocarray` (glibc's would call its internal realloc, unseen).
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
    match n.checked_mul(m) {
        // SAFETY: our realloc with the caller's pointer.
        Some(s) => unsafe { realloc(p, s) },
        None => {
            // SAFETY: errno is this thread's.
            unsafe { *libc::__errno_location() = libc::ENOMEM };
            std::ptr::null_mut()
        }
    }
}

/// The C `posix_memalign`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    let Some(f) = real_fn!(posix_memalign, PosixMemalignFn) else {
        return libc::ENOMEM;
    };
    let Some(g) = Guard::enter() else {
        // SAFETY: the real function with the caller's arguments.
        return unsafe { f(out, align, size) };
    };
    // SAFETY: as above; on success *out holds the block.
    let r = unsafe { f(out, align, size) };
    if r == 0 {
        // SAFETY: the real function succeeded, so out is valid and written.
        on_alloc(&g, unsafe { *out }, size, 0);
    }
    r
}

/// The C11 `aligned_alloc`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    let Some(f) = real_fn!(aligned_alloc, AlignFn) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real function with the caller's arguments.
    alloc_with(size, 0, || unsafe { f(align, size) })
}

/// The obsolete `memalign`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(f) = real_fn!(memalign, AlignFn) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real function with the caller's arguments.
    alloc_with(size, 0, || unsafe { f(align, size) })
}

/// The obsolete `valloc`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let Some(f) = real_fn!(valloc, MallocFn) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real function with the caller's argument.
    alloc_with(size, 0, || unsafe { f(size) })
}

/// The obsolete `pvalloc`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let Some(f) = real_fn!(pvalloc, MallocFn) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real function with the caller's argument.
    alloc_with(size, 0, || unsafe { f(size) })
}

// ---------------------------------------------------------------- mappings (maps.rs)

/// The live traced anonymous mappings, ordered by address, under a spin lock (with
/// sched_yield) of their own, held across the `munmap`/`mremap`/`MAP_FIXED` system call and
/// the change it makes to the list: a concurrent `mmap` that gets the freed range back lists
/// its mapping only after (lock order: this one, then the stack tables' and the state's).
/// The fork handlers hold it across the fork. A signal handler's call on a thread already in
/// a hook is not traced (the guard), so it never waits on its own thread.
struct MapsLocked {
    lock: AtomicBool,
    maps: UnsafeCell<Maps>,
}

// SAFETY: the list is only touched while `lock` is held.
unsafe impl Sync for MapsLocked {}

static MAPS: MapsLocked = MapsLocked {
    lock: AtomicBool::new(false),
    maps: UnsafeCell::new(Maps::empty()),
};
/// How many mappings are listed (read without the lock: an `munmap` when none is skips it).
static MAPS_LEN: AtomicUsize = AtomicUsize::new(0);
/// The list's mapping (address, bytes), for [`own_resident`].
static MAPS_MAP: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
/// The most mappings listed (40 bytes each: 2.5 MiB of address space, touched as used); one
/// more is counted as `table_full` and left out, as the pointer table's are.
const MAPS_CAP: usize = 65536;

fn maps_lock() {
    while MAPS
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

fn maps_unlock() {
    MAPS.lock.store(false, Ordering::Release);
}

/// Runs `f` on the list with its lock held (its memory mapped at first use; without memory,
/// it lists nothing).
fn with_maps<R>(f: impl FnOnce(&mut Maps) -> R) -> R {
    maps_lock();
    // SAFETY: the lock is held: no other thread touches the list.
    let m = unsafe { &mut *MAPS.maps.get() };
    if !m.has_memory() {
        let bytes = MAPS_CAP * std::mem::size_of::<Map>();
        // SAFETY: a fresh private anonymous mapping (the system call: never this library's
        // hook), owned by the list from here on and never unmapped.
        let p = unsafe {
            libc::syscall(
                libc::SYS_mmap,
                0usize,
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0usize,
            )
        } as *mut c_void;
        if p != libc::MAP_FAILED {
            // SAFETY: `bytes` of fresh memory for MAPS_CAP maps, page-aligned, used by the
            // list alone.
            *m = unsafe { Maps::over(p as *mut Map, MAPS_CAP) };
            MAPS_MAP.0.store(p as usize, Ordering::Relaxed);
            MAPS_MAP.1.store(bytes, Ordering::Relaxed);
        }
    }
    let r = f(m);
    MAPS_LEN.store(m.len(), Ordering::Relaxed);
    maps_unlock();
    r
}

/// Hands what a cut did to one traced mapping to the aggregate: the free of a whole one, or
/// the bytes unmapped from one (`PART`) and, when a hole made it two, one more live sample
/// (`SPLIT`). A part or split the queue refuses is counted as `dropped_frees`.
fn emit_cut(c: Cut) {
    let (at, size, weight, e, split, lost) = match c {
        Cut::Whole { start, e } => return emit_free(start, e, false),
        Cut::Part {
            at,
            size,
            weight,
            e,
            split,
            lost,
        } => (at, size, weight, e, split, lost),
    };
    if lost {
        TABLE_FULL.fetch_add(1, Ordering::Relaxed);
    }
    let Some(ring) = RING.get() else { return };
    let now = coarse_ns();
    let age = u64::from(units(now).wrapping_sub(e.t) & TIME_MASK) << TIME_SHIFT;
    let inherited = e.t >> DEPTH_SHIFT < DEPTH.load(Ordering::Relaxed);
    let mut ev = Event {
        kind: if inherited {
            PART_INHERITED
        } else if age < TEMP_NS {
            PART_TEMP
        } else {
            PART
        },
        domain: e.domain,
        stack: e.stack,
        ptr: at,
        size,
        weight,
    };
    if !deliver(ring, &ev, now) {
        DROP_FREES.fetch_add(1, Ordering::Relaxed);
    }
    if split {
        ev.kind = if inherited { SPLIT_INHERITED } else { SPLIT };
        ev.size = 0;
        ev.weight = 0.0;
        if !deliver(ring, &ev, now) {
            DROP_FREES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sample decision for a new anonymous mapping of `size` bytes ([`new_weight`]), and
/// its record when sampled.
fn on_map(g: &Guard, ptr: *mut c_void, size: usize) {
    if let Some(w) = new_weight(g, ptr, size) {
        record_map(g, ptr as usize, size as u64, w, None);
    }
}

/// Records a traced mapping of `size` bytes and weight `weight` at `ptr`: its stack, its
/// entry in the list (anything listed where it lies is gone: cut first) and its event. With
/// `held`, the caller holds the list's lock and passes the list.
#[cold]
fn record_map(g: &Guard, ptr: usize, size: u64, weight: f64, held: Option<&mut Maps>) {
    let Some(ring) = RING.get() else { return };
    let stack = STACKS
        .get()
        .map_or(0, |s| s.sample(PY.get(), MMAP, false, g.walk()));
    let now = coarse_ns();
    let e = Entry {
        size,
        weight,
        domain: MMAP,
        stack,
        t: entry_time(now),
    };
    let listed = |m: &mut Maps| {
        m.cut(ptr, ptr.saturating_add(page_round(size as usize)), emit_cut);
        if !m.insert(ptr, e) {
            TABLE_FULL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ev = Event {
            kind: ALLOC,
            domain: MMAP,
            stack,
            ptr,
            size,
            weight,
        };
        if !deliver(ring, &ev, now) {
            m.remove(ptr);
            DROP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
    };
    match held {
        Some(m) => listed(m),
        None => with_maps(listed),
    }
}

fn do_mmap(
    real: Option<MmapFn>,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    let call = || match real {
        // SAFETY: the real mmap with the caller's arguments.
        Some(f) => unsafe { f(addr, len, prot, flags, fd, off) },
        // SAFETY: the system call itself, same arguments.
        None => unsafe {
            libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void
        },
    };
    let Some(g) = Guard::enter() else {
        return call();
    };
    let q = if flags & libc::MAP_FIXED != 0 && MAPS_LEN.load(Ordering::Relaxed) != 0 {
        // A fixed mapping replaces whatever was mapped there: traced mappings lose that range.
        with_maps(|m| {
            let q = call();
            if q != libc::MAP_FAILED {
                m.cut(
                    q as usize,
                    (q as usize).saturating_add(page_round(len)),
                    emit_cut,
                );
            }
            q
        })
    } else {
        call()
    };
    // Anonymous mappings the program asked for (pymalloc's arenas, numpy's huge pages...),
    // fixed ones too (what they replaced is cut above).
    if q != libc::MAP_FAILED && flags & libc::MAP_ANONYMOUS != 0 {
        on_map(&g, q, len);
    }
    q
}

/// The C `mmap`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    do_mmap(real_fn!(mmap, MmapFn), addr, len, prot, flags, fd, off)
}

/// The C `mmap64` (the same function on 64-bit Linux).
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    do_mmap(real_fn!(mmap64, MmapFn), addr, len, prot, flags, fd, off)
}

/// The C `munmap`: the traced mappings lose the pages unmapped, whichever part of them
/// (maps.rs).
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let call = || match real_fn!(munmap, MunmapFn) {
        // SAFETY: the real munmap with the caller's arguments.
        Some(f) => unsafe { f(addr, len) },
        // SAFETY: the system call itself.
        None => unsafe { libc::syscall(libc::SYS_munmap, addr, len) as c_int },
    };
    // None listed: this unmaps nothing traced (a mapping is listed before its mmap returns,
    // so before the program can unmap it).
    let Some(_g) = Guard::enter().filter(|_| MAPS_LEN.load(Ordering::Relaxed) != 0) else {
        return call();
    };
    with_maps(|m| {
        let r = call();
        if r == 0 {
            let a = addr as usize;
            m.cut(a, a.saturating_add(page_round(len)), emit_cut);
        }
        r
    })
}

/// The C `mremap` (variadic in C; on x86-64 and aarch64 Linux the optional fifth argument is
/// passed like a named one, so it is read as one and passed on). Shrunk in place, a traced
/// mapping loses its end, as by `munmap`; grown or moved, the traced part of the old range is
/// freed and the new mapping is an allocation at the `mremap`'s stack, as `realloc` is, of
/// the old part's weight scaled by `new_size / its size` (exact in `all` mode; unbiased
/// sampled: no new sample decision). An untraced mapping (unsampled, or a file's) stays so.
/// With `MREMAP_DONTUNMAP` the old range stays mapped, empty: it is counted as freed.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_size: usize,
    new_size: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    let call = || match real_fn!(mremap, MremapFn) {
        // SAFETY: the real mremap with the caller's arguments.
        Some(f) => unsafe { f(old, old_size, new_size, flags, new_addr) },
        // SAFETY: the system call itself.
        None => unsafe {
            libc::syscall(libc::SYS_mremap, old, old_size, new_size, flags, new_addr) as *mut c_void
        },
    };
    let Some(g) = Guard::enter().filter(|_| MAPS_LEN.load(Ordering::Relaxed) != 0) else {
        return call();
    };
    with_maps(|m| {
        let q = call();
        if q == libc::MAP_FAILED {
            return q;
        }
        let o = old as usize;
        let old_end = o.saturating_add(page_round(old_size));
        if q == old && new_size <= old_size {
            m.cut(o.saturating_add(page_round(new_size)), old_end, emit_cut);
            return q;
        }
        // The traced bytes of the old range and their weight.
        let (mut bytes, mut w) = (0u64, 0f64);
        m.cut(o, old_end, |c| {
            match c {
                Cut::Whole { e, .. } => {
                    bytes += e.size;
                    w += e.weight;
                }
                Cut::Part { size, weight, .. } => {
                    bytes += size;
                    w += weight;
                }
            }
            emit_cut(c);
        });
        if bytes > 0 && TRACING.load(Ordering::Relaxed) {
            let scaled = if w == bytes as f64 {
                new_size as f64
            } else {
                w * (new_size as f64 / bytes as f64)
            };
            record_map(&g, q as usize, new_size as u64, scaled, Some(m));
        }
        q
    })
}

// ---------------------------------------------------------------- the aggregate and its file

struct State {
    agg: Aggregate,
    /// The large live samples, for `untouched_bytes`.
    residency: Residency,
    /// `code` and `stack` lines written so far (ids below are in the file).
    codes_written: u32,
    stacks_written: u32,
    fd: c_int,
    /// The trace file's (device, inode), to notice a program that closed our descriptor and
    /// got the number back for a file of its own (never written then).
    file: (u64, u64),
    finished: bool,
    /// Events applied by [`deliver`] without the queue (to look at the clock every 64th).
    applied: u64,
    /// The header's `start_ns`.
    start_ns: u64,
}

fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value; fstat fills it or fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor number with a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Whether `s.fd` is still the trace file; when it is not, forgets it (without closing: the
/// number is the program's now) and stops tracing.
fn still_ours(s: &mut State) -> bool {
    if s.fd < 0 {
        return false;
    }
    if identity(s.fd) == Some(s.file) {
        return true;
    }
    warn("memlens-preload: the program closed the trace file's descriptor; tracing stops\n");
    s.fd = -1;
    TRACING.store(false, Ordering::Relaxed);
    false
}

/// A spin lock (with sched_yield) over the state, so the fork handlers can hold it across the
/// fork and release it in both processes.
struct Locked {
    lock: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: the state is only touched while `lock` is held.
unsafe impl Sync for Locked {}

static STATE: Locked = Locked {
    lock: AtomicBool::new(false),
    state: UnsafeCell::new(State {
        agg: Aggregate::new(),
        residency: Residency::new(),
        codes_written: 0,
        stacks_written: 0,
        fd: -1,
        file: (0, 0),
        finished: false,
        applied: 0,
        start_ns: 0,
    }),
};

fn lock() {
    while STATE
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

fn unlock() {
    STATE.lock.store(false, Ordering::Release);
}

/// The state; only between [`lock`] and [`unlock`].
#[allow(clippy::mut_from_ref)]
fn state() -> &'static mut State {
    // SAFETY: callers hold the lock, so this is the only reference.
    unsafe { &mut *STATE.state.get() }
}

fn drops() -> Drops {
    Drops {
        allocs: DROP_ALLOCS.load(Ordering::Relaxed),
        frees: DROP_FREES.load(Ordering::Relaxed),
        table_full: TABLE_FULL.load(Ordering::Relaxed),
        at_fork: AT_FORK.load(Ordering::Relaxed),
        unreadable_stacks: STACKS
            .get()
            .map_or(0, |s| s.unreadable.load(Ordering::Relaxed)),
        stacks_lost: STACKS.get().map_or(0, |s| s.lost.load(Ordering::Relaxed)),
    }
}

fn drain(s: &mut State) -> usize {
    let Some(ring) = RING.get() else { return 0 };
    // The main GIL's queue first (deliver_gil's doc: no event in it happened after one queued
    // in the other).
    let mut n = GIL_RING.drain(&mut s.agg, s.start_ns);
    let now = now_ns();
    while let Some(e) = ring.pop() {
        s.agg.apply(&e, now);
        s.residency.apply(&e);
        n += 1;
    }
    n
}

fn write_all(fd: c_int, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        // SAFETY: writing bytes of a live slice to a descriptor this library opened.
        let n = unsafe { libc::write(fd, b.as_ptr() as *const c_void, b.len()) };
        if n < 0 {
            // SAFETY: errno is this thread's.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return false;
        }
        b = &b[n as usize..];
    }
    true
}

fn write_line(s: &mut State, tag: &str) {
    if !still_ours(s) {
        return;
    }
    // The code and stack lines the site lines name, first; then the snapshot, the sites
    // changed since the last one and the live set at the peak when it changed.
    let mut out = String::new();
    if let Some(st) = STACKS.get() {
        // Stacks first: a stack's codes are published before it.
        let stacks = st.stacks();
        let codes = st.codes();
        for id in s.codes_written..codes {
            st.code_line(id, &mut out);
        }
        for id in s.stacks_written..stacks {
            st.stack_line(id, &mut out);
        }
        s.codes_written = codes;
        s.stacks_written = stacks;
    }
    s.agg.untouched = s.residency.untouched(nonresident_bytes);
    s.agg.tracer = own_resident();
    s.agg.push_line(tag, now_ns(), &drops(), &mut out);
    let peak = s.agg.peak_live;
    s.agg.sites.lines(peak, &mut out);
    if !write_all(s.fd, out.as_bytes()) {
        warn("memlens-preload: cannot write the trace file; tracing stops\n");
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(s.fd) };
        s.fd = -1;
        TRACING.store(false, Ordering::Relaxed);
    }
}

fn warn(msg: &str) {
    // stderr, one write, no allocation.
    // SAFETY: writing a live slice to fd 2.
    unsafe { libc::write(2, msg.as_ptr() as *const c_void, msg.len()) };
}

fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv with a NUL-terminated name; the result lives as long as the environment
    // entry (this library never changes it after reading).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string from the environment.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

static BASE: OnceLock<Vec<u8>> = OnceLock::new();
static PERIOD_NS: AtomicU64 = AtomicU64::new(1_000_000_000);

/// The snapshot period (10 ms at least), before [`begin`].
pub(crate) fn set_period_ms(ms: u64) {
    PERIOD_NS.store(ms.max(10) * 1_000_000, Ordering::Relaxed);
}

/// Creates the trace file: never an existing file, never through a link.
fn create(path: &[u8]) -> Result<c_int, c_int> {
    let mut p = path.to_vec();
    p.push(0);
    // SAFETY: a NUL-terminated path; O_EXCL|O_NOFOLLOW: a new file or nothing.
    let fd = unsafe {
        libc::open(
            p.as_ptr() as *const c_char,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        // SAFETY: errno is this thread's.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(fd)
    }
}

fn with_suffix(base: &[u8], pid: u32, n: u32) -> Vec<u8> {
    let mut p = base.to_vec();
    p.extend_from_slice(format!(".{pid}").as_bytes());
    if n > 0 {
        p.extend_from_slice(format!(".{n}").as_bytes());
    }
    p
}

/// A file for a process that is not the root of the traced tree: `BASE.PID`, or `BASE.PID.N`
/// when this PID already wrote one (an image exec'd by a forked child).
fn create_for_descendant(base: &[u8], pid: u32) -> Option<c_int> {
    for n in 0..64 {
        match create(&with_suffix(base, pid, n)) {
            Ok(fd) => return Some(fd),
            Err(libc::EEXIST) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// The header line (`start_ns`: `CLOCK_MONOTONIC` now, also kept in the state).
fn header(mean: u64, start_ns: u64, extra: &str) -> String {
    // SAFETY: getpid/getppid have no preconditions.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    let mode = if mean <= 1 { "all" } else { "sampled" };
    let python = match PY.get() {
        Some(p) => format!("{}.{}", p.version.0, p.version.1),
        None => "none".into(),
    };
    format!(
        "memlens-trace 3 pid={pid} ppid={ppid} mode={mode} sample_bytes={mean} clock=monotonic start_ns={start_ns} python={python} temp_ns={TEMP_NS}{extra}\n"
    )
}

fn map(bytes: usize) -> *mut c_void {
    // SAFETY: a fresh private anonymous mapping (the system call: never traced).
    let p = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            std::ptr::null_mut::<c_void>(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    } as *mut c_void;
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p
    }
}

const ROOT_ENV: &CStr = c"MEMLENS_TRACE_ROOT_PID";

fn start() {
    let Some(out) = getenv(c"MEMLENS_TRACE_OUT").filter(|o| !o.is_empty()) else {
        return;
    };
    let all = getenv(c"MEMLENS_TRACE").is_some_and(|v| v == b"all");
    let mean = if all {
        1
    } else {
        match getenv(c"MEMLENS_SAMPLE_BYTES") {
            None => 512 * 1024,
            Some(v) => match parse_u64(v) {
                Some(n) if n >= 1 => n,
                _ => {
                    warn("memlens-preload: MEMLENS_SAMPLE_BYTES is not a positive integer; not tracing\n");
                    return;
                }
            },
        }
    };
    if let Some(ms) = getenv(c"MEMLENS_TRACE_PERIOD_MS").and_then(parse_u64) {
        set_period_ms(ms);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let fd = if getenv(ROOT_ENV).is_none() {
        // The root of the traced tree writes MEMLENS_TRACE_OUT itself, which must not exist.
        match create(out) {
            Ok(fd) => {
                let v = std::ffi::CString::new(pid.to_string()).unwrap_or_default();
                // SAFETY: setenv before main, while no other thread of the program runs;
                // children and exec'd images then know they are descendants.
                unsafe { libc::setenv(ROOT_ENV.as_ptr(), v.as_ptr(), 1) };
                fd
            }
            Err(libc::EEXIST) => {
                warn("memlens-preload: MEMLENS_TRACE_OUT already exists; it is never overwritten; not tracing\n");
                return;
            }
            Err(_) => {
                warn("memlens-preload: cannot create MEMLENS_TRACE_OUT; not tracing\n");
                return;
            }
        }
    } else {
        match create_for_descendant(out, pid) {
            Some(fd) => fd,
            None => {
                warn("memlens-preload: cannot create this process's trace file; not tracing\n");
                return;
            }
        }
    };
    let _ = BASE.set(out.to_vec());
    let mut rcap = None;
    // A smaller queue, for tests of the drop counters (rounded to a power of two, 16 at least).
    if let Some(n) = getenv(c"MEMLENS_TRACE_RING_CELLS").and_then(parse_u64) {
        rcap = Some((n.clamp(16, 1 << 24) as usize).next_power_of_two());
    }
    begin(fd, pid, mean, rcap);
}

/// Starts tracing into `fd` (open, empty, this library's from now on): maps the tables, writes
/// the header, registers the fork handlers. False when it cannot (nothing traced).
pub(crate) fn begin(fd: c_int, pid: u32, mean: u64, rcap: Option<usize>) -> bool {
    find_vdso_clock();
    // The table's levels are touched as they fill (table.rs): its resident size follows the
    // live samples, not its reservation. The queue becomes resident as events cycle through
    // it: 64 Ki cells (2.5 MiB) in `all` mode, drained at a quarter (16 Ki events), so the
    // drops start only if other threads queue 48 Ki events during one drain.
    // Sampled, the events are a sample per `mean` bytes allocated on average and its free:
    // with 2^28 / mean cells (512, 20 KiB, at the default; 16 Ki at 16 KiB or less) a drain
    // comes every 2^26 / mean events (32-64 MiB of allocation) whatever the mean, so the
    // queue's resident part stays small on a small program (it cycles through all of it),
    // and the drops would need other threads to allocate ~100 MiB during one drain.
    let (shape, rcap) = if mean <= 1 {
        (Shape::ALL, rcap.unwrap_or(1usize << 16))
    } else {
        let cells = ((1u64 << 28) / mean).clamp(1 << 9, 1 << 14) as usize;
        (
            Shape::sampled(mean),
            rcap.unwrap_or(cells.next_power_of_two()),
        )
    };
    // `all` mode: a second table after the first (GIL_TABLE).
    let gil_bytes = if mean <= 1 { Shape::ALL_GIL.bytes() } else { 0 };
    let tmem = map(shape.bytes() + gil_bytes);
    let rmem = map(Ring::bytes_for(rcap));
    let smem = map(crate::pystack::bytes_needed());
    if tmem.is_null() || rmem.is_null() || smem.is_null() {
        warn("memlens-preload: cannot map the tracer's tables; not tracing\n");
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        return false;
    }
    TABLE_MAP.0.store(tmem as usize, Ordering::Relaxed);
    TABLE_MAP
        .1
        .store(shape.bytes() + gil_bytes, Ordering::Relaxed);
    RING_MAP.0.store(rmem as usize, Ordering::Relaxed);
    RING_MAP.1.store(Ring::bytes_for(rcap), Ordering::Relaxed);
    STACKS_MAP.0.store(smem as usize, Ordering::Relaxed);
    STACKS_MAP
        .1
        .store(crate::pystack::bytes_needed(), Ordering::Relaxed);
    // SAFETY: fresh zeroed mappings of the sizes the table and ring need, never unmapped.
    let _ = TABLE.set(unsafe { Table::from_raw(tmem as *mut _, shape) });
    if gil_bytes != 0 {
        // SAFETY: the rest of the same mapping, `gil_bytes` long (bytes() is a multiple of
        // Slot's alignment: a header of 128 bytes, 2-byte words by the thousand, 32-byte
        // slots).
        let _ = GIL_TABLE.set(unsafe {
            Table::from_raw((tmem as *mut u8).add(shape.bytes()).cast(), Shape::ALL_GIL)
        });
    }
    // SAFETY: as above.
    let _ = RING.set(unsafe { Ring::from_raw(rmem as *mut _, rcap) });
    let region = Region {
        ptr: smem as *mut u8,
        len: crate::pystack::bytes_needed(),
    };
    // SAFETY: as above (page-aligned).
    let _ = STACKS.set(unsafe { Stacks::new(region) });
    if let Some(py) = crate::pystack::detect() {
        let _ = PY.set(py);
    }
    MEAN.store(mean, Ordering::Relaxed);
    lock();
    let s = state();
    s.fd = fd;
    s.file = identity(fd).unwrap_or_default();
    s.start_ns = now_ns();
    let ok = write_all(fd, header(mean, s.start_ns, "").as_bytes());
    unlock();
    if !ok {
        return false;
    }
    // SAFETY: registering plain extern "C" functions.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    NEXT_WRITE_NS.store(
        now_ns() + PERIOD_NS.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    GIL_GATE.store(0, Ordering::Relaxed);
    OWNER_PID.store(u64::from(pid), Ordering::Relaxed);
    TRACING.store(true, Ordering::Release);
    true
}

/// The pointer table's mapping (address, bytes), for [`release_table`] and [`own_resident`].
static TABLE_MAP: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
/// The event queue's mapping (address, bytes), for [`own_resident`].
static RING_MAP: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
/// The code and stack tables' mapping (address, bytes), for [`own_resident`].
static STACKS_MAP: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));

/// Resident bytes of the tracer's own mappings (`tracer_bytes`): memory the ledger sees as the
/// program's anonymous memory, which the reconciliation sets apart. A mapping `mincore`
/// cannot read counts as nothing (they are never unmapped, so it does not happen).
fn own_resident() -> u64 {
    [&TABLE_MAP, &RING_MAP, &STACKS_MAP, &MAPS_MAP]
        .iter()
        .map(|m| (m.0.load(Ordering::Relaxed), m.1.load(Ordering::Relaxed)))
        .filter(|&(p, len)| p != 0 && len != 0)
        .filter_map(|(p, len)| {
            let whole = (len / crate::residency::PAGE * crate::residency::PAGE) as u64;
            nonresident_bytes(p, len).map(|missing| whole.saturating_sub(missing))
        })
        .sum()
}

/// Gives the pointer table's pages back to the system once tracing has stopped for good
/// (attach.rs, at the detach): in `all` mode its levels in use hold ~100 bytes a live block
/// (table.rs). The table lives
/// wholly in its mapping and all zeros is an empty table, so the mapping stays valid: a free
/// that still looks a pointer up (a wrapper left in place) finds nothing, as it should with
/// tracing stopped. The caller holds the GIL (no wrapper call runs) and nothing else uses the
/// table under `dlopen` (no hook is interposed).
pub(crate) fn release_table() {
    if TRACING.load(Ordering::Acquire) {
        return;
    }
    let (p, len) = (
        TABLE_MAP.0.load(Ordering::Relaxed),
        TABLE_MAP.1.load(Ordering::Relaxed),
    );
    if p != 0 && len != 0 {
        // SAFETY: our own private anonymous mapping of `len` bytes; MADV_DONTNEED makes it
        // read as zeros (an empty table) from now on.
        unsafe { libc::madvise(p as *mut c_void, len, libc::MADV_DONTNEED) };
    }
}

/// Hands one event to the aggregate (`now`: [`coarse_ns`] when it happened); false only once
/// tracing has finished (counted by the caller).
///
/// The event is applied at once, in this thread, when the state's lock is free (a try-lock)
/// and nothing is queued before it once the queue is drained: that saves the queue's write
/// and read, and their layers, per event. Otherwise (another thread holds the lock, or an
/// event queued before this one is not yet readable: its producer is still writing it) it is
/// queued, and the next holder of the lock drains the queue before it applies its own event.
/// So events are applied in an order consistent with the order they happened in: an event
/// that happened before another (an allocation and the free of its block, in whichever
/// threads) is applied before it, as with the queue alone; the live total, its peak and the
/// live set at the peak stay exact. A hook waits only when the queue is full
/// ([`deliver_full`]).
#[inline]
fn deliver(ring: &Ring, ev: &Event, now: u64) -> bool {
    deliver_as::<false>(ring, ev, now)
}

/// [`deliver`]; `GIL`: by the main interpreter's GIL holder for a block of [`gil_table`],
/// which opens [`GIL_GATE`] once its event is applied ([`open_gate`]). A push into the shared
/// queue closes the gate ([`close_gate`]).
#[inline]
fn deliver_as<const GIL: bool>(ring: &Ring, ev: &Event, now: u64) -> bool {
    if STATE
        .lock
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        let s = state();
        if !s.finished {
            if !ring.is_empty() || !GIL_RING.is_empty() {
                drain(s);
            }
            if ring.is_empty() {
                apply_locked(s, ev, now);
                if GIL {
                    open_gate(ring);
                }
                unlock();
                return true;
            }
        }
        unlock();
    }
    if !ring.push(*ev) {
        return deliver_full(ring, ev, now);
    }
    close_gate();
    maybe_drain();
    true
}

/// Applies `ev` (the state's lock held, nothing queued before it).
#[inline]
fn apply_locked(s: &mut State, ev: &Event, now: u64) {
    s.applied = s.applied.wrapping_add(1);
    // The clock is looked at every 64th event in `all` mode, at each sampled one. A snapshot
    // due is written before this event is applied: an allocation's block is not yet written
    // by the program while its hook runs, so measured now it would show as untouched however
    // soon it is filled.
    if s.applied % 64 == 0
        || MEAN.load(Ordering::Relaxed) > 1
        || now >= NEXT_WRITE_NS.load(Ordering::Relaxed)
    {
        snap_if_due(s);
    }
    // The peak's time: the coarse clock at the event, never before the header's.
    s.agg.apply(ev, now.max(s.start_ns));
    s.residency.apply(ev);
}

/// [`deliver`] with the queue full: the hook waits for the state's lock (yielding the CPU)
/// and drains, until its event can be applied (nothing left before it) or queued. The queue
/// fills only when its consumer cannot keep up: the lock's holder, or a producer between its
/// claim of a cell and its write of it, is off the CPU on a loaded host (measured: a
/// 64 Ki-cell queue full of 8 threads' events, 62,253 events dropped out of 323,199, in
/// it::trace_direct with both cores busy). Dropping them would leave every figure short of
/// what the program did; waiting costs only time, there, and cannot deadlock: the state's
/// lock is the last one taken (after the maps' and the stacks' locks: `fork_prepare`) and its
/// holder waits for nothing while it holds it. False (dropped, counted) once tracing finished.
#[cold]
#[inline(never)]
fn deliver_full(ring: &Ring, ev: &Event, now: u64) -> bool {
    loop {
        lock();
        let s = state();
        if s.finished {
            unlock();
            return false;
        }
        drain(s);
        if ring.is_empty() {
            apply_locked(s, ev, now);
            unlock();
            return true;
        }
        unlock();
        if ring.push(*ev) {
            close_gate();
            return true;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// Hands one event of a block of [`gil_table`] to the aggregate: queued in [`GIL_RING`],
/// without a locked instruction, while [`GIL_GATE`] is open for its time and `GIL_RING` has
/// room; else as [`deliver`] (which drains `GIL_RING` first). Called only by a thread that
/// holds the main interpreter's GIL (`gil_table`'s doc), so `GIL_RING` has one producer at a
/// time, in the GIL's order.
///
/// Events stay applied in an order consistent with the order they happened in. Within
/// `GIL_RING` it is the GIL's order. A drain (under the aggregate's lock) takes `GIL_RING`
/// before the shared queue, so what must hold is: no event E queued in the shared queue
/// happened before an event G put in `GIL_RING`. The gate is what keeps it: the shared
/// queue's pushers close it (after the push of E, a SeqCst fence F_E, then the store of 0,
/// C_E: [`close_gate`]), and only a GIL holder opens it ([`open_gate`], from `deliver_as`
/// with the aggregate's lock held and its own event applied: the store O of the time,
/// a SeqCst fence F_O, then loads of the shared queue's `head` and `tail`, and the store of
/// 0 again unless they were equal). Say E happened before G: C_E, in E's hook, happened
/// before G's load of the gate, which therefore reads C_E or a store after it in the gate's
/// order. If it read a 0, G went the way of `deliver`. Else it read an opening O after C_E;
/// the GIL holder that made O released the GIL after it, and after any 0 it stored next,
/// before G's holder took it, so G would have read that 0: that opening's loads found the
/// queue empty. As C_E comes before O in the gate's order, F_E comes before F_O in the
/// single order of SeqCst fences (else O would come before C_E), so the opening's load of
/// `head` saw E's claim of its cell; `tail` being equal, E had been taken out by a drain in
/// an earlier holding of the lock (only a holder moves `tail`, and the opener holds it), and
/// applied there. G's drain holds the lock after the opener's (it reads G's push, made after
/// that holding), so E is applied before G. An event the aggregate's lock holder applies
/// itself (`deliver`) drains `GIL_RING` first, so what happened before it in the GIL's order
/// is applied before it. So the live total, its peak and the live set at the peak stay exact;
/// the peak's time is the event's own clock reading, kept with it.
#[inline]
fn deliver_gil(ring: &Ring, ev: &Event, now: u64) -> bool {
    gil_push(ev.kind, ev.stack, ev.weight, now) || deliver_as::<true>(ring, ev, now)
}

/// [`deliver_gil`]'s way without a locked instruction: the event queued in [`GIL_RING`] while
/// [`GIL_GATE`] is open for `now` and `GIL_RING` has room; false (nothing done) otherwise. Only
/// by the main interpreter's GIL holder, for a block of [`gil_table`]. One load and a compare
/// for the gate, where the shared queue's `head` and `tail` and the snapshot's time were three
/// loads and two compares.
#[inline(always)]
fn gil_push(kind: u8, stack: u32, weight: f64, now: u64) -> bool {
    now < GIL_GATE.load(Ordering::Relaxed) && GIL_RING.push(kind, stack, weight, now)
}

/// The time up to which the main interpreter's GIL holder may queue events in [`GIL_RING`]
/// ([`deliver_gil`]'s proof): when a snapshot is due, as of its opening (a snapshot due goes
/// the way of `deliver`, which writes it; `now` is the coarse clock, never ahead of the one
/// the period is kept in; a snapshot written since only moved that time on), 0 while the
/// shared queue may hold an event. Read and opened by the GIL holder only.
static GIL_GATE: AtomicU64 = AtomicU64::new(0);

/// Opens [`GIL_GATE`] up to the next snapshot's time, unless the shared queue holds an event
/// (the main interpreter's GIL holder, the aggregate's lock held: [`deliver_gil`]'s proof).
#[cold]
#[inline(never)]
fn open_gate(ring: &Ring) {
    GIL_GATE.store(NEXT_WRITE_NS.load(Ordering::Relaxed), Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::SeqCst);
    if !ring.is_empty() {
        GIL_GATE.store(0, Ordering::Relaxed);
    }
}

/// Closes [`GIL_GATE`] after a push into the shared queue ([`deliver_gil`]'s proof).
#[inline]
fn close_gate() {
    std::sync::atomic::fence(Ordering::SeqCst);
    GIL_GATE.store(0, Ordering::Relaxed);
}

/// The queue of [`deliver_gil`] (gilring.rs): one producer at a time, the main interpreter's
/// GIL holder, for the events of [`gil_table`]'s blocks (of domain [`PYMALLOC`], at most
/// [`PYMALLOC_MAX`] bytes); drained by the aggregate's lock holder ([`drain`]).
static GIL_RING: GilRing = GilRing::new();

// The drain applies GIL_RING's events to the aggregate alone (GilRing's note).
const _: () = assert!((PYMALLOC_MAX as u64) < crate::residency::LARGE);

/// Appends a snapshot if the period has elapsed (the state's lock held).
#[cold]
#[inline(never)]
fn snap_if_due(s: &mut State) {
    let t = now_ns();
    if t >= NEXT_WRITE_NS.load(Ordering::Relaxed) {
        write_line(s, "snap");
        NEXT_WRITE_NS.store(t + PERIOD_NS.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Events queued since start, to look at the clock only every 64th in `all` mode.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// When the next snapshot line is due (monotonic ns).
static NEXT_WRITE_NS: AtomicU64 = AtomicU64::new(0);

/// Drains the queue and appends a snapshot from the hook that queued an event, when the queue
/// is a quarter full or the period has elapsed; under a try-lock, so a hook never waits (no
/// thread of the tracer's own: CPython 3.12+ warns at fork when a process has more than one).
#[inline]
fn maybe_drain() {
    let Some(ring) = RING.get() else { return };
    let n = EVENTS.fetch_add(1, Ordering::Relaxed);
    let full = ring.len() >= ring.capacity() / 4;
    if full || MEAN.load(Ordering::Relaxed) > 1 || n % 64 == 0 {
        drain_now(full);
    }
}

#[cold]
fn drain_now(full: bool) {
    let now = now_ns();
    let due = now >= NEXT_WRITE_NS.load(Ordering::Relaxed);
    if !full && !due {
        return;
    }
    if STATE
        .lock
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let s = state();
    if !s.finished {
        drain(s);
        if due {
            write_line(s, "snap");
            NEXT_WRITE_NS.store(now + PERIOD_NS.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
    unlock();
}

pub(crate) fn finish() {
    lock();
    let s = state();
    if !s.finished && s.fd >= 0 {
        drain(s);
        write_line(s, "end");
        if s.fd >= 0 {
            // SAFETY: our descriptor (write_line checked it), closed once.
            unsafe { libc::close(s.fd) };
        }
        s.fd = -1;
    }
    s.finished = true;
    TRACING.store(false, Ordering::Relaxed);
    unlock();
}

extern "C" fn fork_prepare() {
    let _g = Guard::enter();
    // No thread may be changing the list of mappings at fork (taken first: lock order).
    maps_lock();
    // No thread may be interning a stack at fork (the child would find the lock held).
    if let Some(st) = STACKS.get() {
        st.lock();
    }
    lock();
    // The child inherits an aggregate that includes everything queued so far.
    drain(state());
}

extern "C" fn fork_parent() {
    unlock();
    if let Some(st) = STACKS.get() {
        st.unlock();
    }
    maps_unlock();
}

extern "C" fn fork_child() {
    let _g = Guard::enter();
    // Only this thread exists now.
    let s = state();
    crate::pymem::after_fork();
    // This thread's generator too: children forked from one state would otherwise draw the
    // same sample points, and their errors would add up instead of averaging out.
    TLS.with(|t| {
        t.left.set(0);
        t.rng.set(0);
    });
    let lost = RING.get().map_or(0, |r| r.reset()) + GIL_RING.reset();
    GIL_GATE.store(0, Ordering::Relaxed);
    AT_FORK.store(lost as u64, Ordering::Relaxed);
    DROP_ALLOCS.store(0, Ordering::Relaxed);
    DROP_FREES.store(0, Ordering::Relaxed);
    TABLE_FULL.store(0, Ordering::Relaxed);
    if let Some(st) = STACKS.get() {
        st.unlock();
    }
    maps_unlock();
    // What was live here is inherited: its frees are told apart by the depth in its entry.
    let d = DEPTH.load(Ordering::Relaxed);
    DEPTH.store((d + 1).min(MAX_DEPTH), Ordering::Relaxed);
    let inherited = s.agg.live + s.agg.inherited;
    s.agg = s.agg.for_child();
    // Untouched memory is measured over this process's own blocks (the parent measures the
    // ones it still holds).
    s.residency = Residency::new();
    // A new file: its code and stack lines start again.
    s.codes_written = 0;
    s.stacks_written = 0;
    if s.fd >= 0 && identity(s.fd) == Some(s.file) {
        // SAFETY: the parent's trace file, this process's copy of the descriptor.
        unsafe { libc::close(s.fd) };
    }
    s.fd = -1;
    // Attached to a running program (attach.rs): its forked children are not traced (no
    // file of theirs is expected, and no warning may change their output).
    let live = !s.finished && !crate::attach::ATTACHED.load(Ordering::Relaxed);
    s.finished = true;
    TRACING.store(false, Ordering::Relaxed);
    if live {
        // SAFETY: getpid/getppid have no preconditions.
        let (pid, ppid) = unsafe { (libc::getpid() as u32, libc::getppid()) };
        if let Some(fd) = BASE.get().and_then(|b| create_for_descendant(b, pid)) {
            let extra = format!(
                " forked_from={ppid} inherited_live_bytes={}",
                inherited.max(0.0).round() as u64
            );
            s.start_ns = now_ns();
            s.applied = 0;
            if write_all(
                fd,
                header(MEAN.load(Ordering::Relaxed), s.start_ns, &extra).as_bytes(),
            ) {
                s.fd = fd;
                s.file = identity(fd).unwrap_or_default();
                s.finished = false;
                OWNER_PID.store(u64::from(pid), Ordering::Relaxed);
                TRACING.store(true, Ordering::Release);
            }
        } else {
            warn("memlens-preload: cannot create the forked child's trace file; the child is not traced\n");
        }
    }
    unlock();
}

type ExitFn = unsafe extern "C" fn(c_int) -> !;

/// The process whose trace the state is (a vfork child shares the memory, not the trace).
static OWNER_PID: AtomicU64 = AtomicU64::new(0);

fn exit_now(name: &CStr, status: c_int) -> ! {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } as u64 == OWNER_PID.load(Ordering::Relaxed) {
        let _g = Guard::enter();
        finish();
    }
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if !p.is_null() {
        // SAFETY: the next `_exit`/`_Exit`, whose C type is ExitFn.
        unsafe { std::mem::transmute::<*mut c_void, ExitFn>(p)(status) }
    }
    // SAFETY: the system call ends the process; it does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, status) };
    // SAFETY: exit_group does not return.
    unsafe { std::hint::unreachable_unchecked() }
}

/// `_exit` (Python's `os._exit`, multiprocessing's workers): the `end` line first, as
/// destructors do not run.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    exit_now(c"_exit", status)
}

/// `_Exit`, as `_exit`.
///
/// # Safety
/// As the C function.
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    exit_now(c"_Exit", status)
}

/// The library's own allocations (a snapshot's lines, the file names at start) go to the C
/// allocator, as with std's `System`, whose rules this follows; through this allocator's code,
/// which lies with the hooks, not through std's shim, which lies among std's cold code: a
/// snapshot would fault that code's pages back in after [`crate::own_text::release`].
struct CAlloc;

/// The alignment `malloc` guarantees (as std's `System` assumes on x86-64 and aarch64).
const MALLOC_ALIGN: usize = 16;

// SAFETY: the C allocator's contract: blocks of at least the size, aligned as asked
// (posix_memalign beyond malloc's own alignment), freed by `free`.
unsafe impl std::alloc::GlobalAlloc for CAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        if l.align() <= MALLOC_ALIGN && l.align() <= l.size() {
            // SAFETY: as the C function (a size > 0: GlobalAlloc's contract).
            unsafe { libc::malloc(l.size()) as *mut u8 }
        } else {
            let mut p = std::ptr::null_mut();
            let align = l.align().max(std::mem::size_of::<usize>());
            // SAFETY: a power of two, a multiple of the pointer size.
            if unsafe { libc::posix_memalign(&mut p, align, l.size()) } != 0 {
                return std::ptr::null_mut();
            }
            p as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        if l.align() <= MALLOC_ALIGN && l.align() <= l.size() {
            // SAFETY: as the C function.
            unsafe { libc::calloc(l.size(), 1) as *mut u8 }
        } else {
            // SAFETY: as alloc, then zeroing the block it returned.
            let p = unsafe { self.alloc(l) };
            if !p.is_null() {
                // SAFETY: `l.size()` bytes of the fresh block.
                unsafe { std::ptr::write_bytes(p, 0, l.size()) };
            }
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _: std::alloc::Layout) {
        // SAFETY: a block of this allocator.
        unsafe { libc::free(p as *mut c_void) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        if l.align() <= MALLOC_ALIGN && l.align() <= new {
            // SAFETY: a block of this allocator, malloc's alignment enough.
            unsafe { libc::realloc(p as *mut c_void, new) as *mut u8 }
        } else {
            // SAFETY: GlobalAlloc's default: a new block, the old contents copied, the old
            // block freed.
            unsafe {
                let n = self.alloc(std::alloc::Layout::from_size_align_unchecked(
                    new,
                    l.align(),
                ));
                if !n.is_null() {
                    std::ptr::copy_nonoverlapping(p, n, l.size().min(new));
                    self.dealloc(p, l);
                }
                n
            }
        }
    }
}

#[global_allocator]
static C_ALLOC: CAlloc = CAlloc;

extern "C" fn init() {
    let _g = Guard::enter();
    resolve();
    if crate::attach::loaded_late() {
        return; // dlopened into a running interpreter: memlens_attach starts it, not the environment
    }
    find_tls_offset();
    start();
    if TRACING.load(Ordering::Relaxed) {
        crate::pymem::find(interpreters_head(), true);
        // The start-up work is done: only the code the tracer runs from now on comes back.
        #[cfg(target_pointer_width = "64")]
        crate::own_text::release();
    }
}

/// Where `_PyRuntime.interpreters.head` lies, from the layout of the interpreter found.
pub(crate) fn interpreters_head() -> Option<u64> {
    PY.get().map(|p| p.interpreters_head())
}

/// Where `interp` lies in a `PyThreadState` and `next` in a `PyInterpreterState`, from the
/// layout of the interpreter found.
pub(crate) fn interp_offsets() -> Option<(u64, u64)> {
    PY.get().map(|p| (p.tstate_interp(), p.interp_next()))
}

extern "C" fn fini() {
    let _g = Guard::enter();
    finish();
}

// Run by the dynamic loader when the library is loaded, and at exit (after atexit handlers,
// so after the interpreter's own finalisation).
#[used]
#[link_section = ".init_array"]
static INIT_ARRAY: extern "C" fn() = init;

#[used]
#[link_section = ".fini_array"]
static FINI_ARRAY: extern "C" fn() = fini;
