//! The wrap of CPython's `PyMem_Malloc` and `PyObject_Malloc` allocator domains (MEM and OBJ)
//! with `PyMem_GetAllocator`/`PyMem_SetAllocator`, so the blocks pymalloc carves out of its
//! arenas are seen one by one without changing the program's allocator (no `PYTHONMALLOC`).
//!
//! The C API is looked up with `dlsym(RTLD_DEFAULT)` at load: in a process that is not Python
//! (or embeds a libpython loaded later with `dlopen`) nothing is found and nothing happens. The
//! swap is made from a traced hook's slow path (a sampled allocation, or the free of a sampled
//! pointer), never on the fast path, and only when `Py_IsInitialized()` says the interpreter
//! runs and this thread holds the GIL (its current thread state is its own `PyGILState` one,
//! and `PyGILState_Check()`): the MEM and OBJ domains may only be called with the GIL held, so
//! no other thread is inside them while their function pointers change. A call of the old
//! allocator already running on this thread (the hook may be under pymalloc) finishes in the
//! old code; since the wrapper forwards everything to that same allocator, blocks allocated
//! before the swap are freed correctly through it.
//!
//! The wrapper forwards each call to the allocator it replaced (pymalloc, or whatever was
//! installed before: `PYTHONMALLOC=debug|malloc`, `-X tracemalloc`), samples by bytes as the
//! malloc hooks do (with its own countdown: below), and records domain
//! [`crate::ring::PYMALLOC`].
//! While the allocator underneath runs, the thread is marked: the malloc and mmap it makes
//! (arenas, blocks over 512 bytes) are not recorded a second time, while the frees it makes
//! are still looked up (an arena mapped before the swap is still recognised when pymalloc
//! unmaps it). Its realloc and free take sampled pointers out of the pointer table as the
//! malloc hooks do, whichever domain recorded them. A program that later installs its own
//! allocator (`tracemalloc.start()`, `PyMem_SetAllocator`) wraps this one and keeps working.
//!
//! # The free path: sampled blocks served from malloc, `free` not wrapped
//! Every free of a Python object would otherwise pass through a wrapper whose only work is to
//! rule the pointer out (a filter load, about 16 instructions and a call level, for blocks
//! that are almost never sampled). When sampling (not `all` mode), with the library preloaded
//! (its `free` hook interposed) and an interpreter whose allocators are `pymalloc` or
//! `malloc` (`_PyMem_GetCurrentAllocatorName`), the wrapper instead asks the allocator
//! underneath for 513 bytes for a *sampled* request of at most 512 bytes: pymalloc passes it
//! to `PyMem_RawMalloc` (malloc), counting it as one of its raw blocks, exactly as a larger
//! request. Its free then reaches `PyMem_RawFree`, the C `free`, whose hook takes it out of
//! the pointer table; so the replaced `free` is installed as it is, with its own `ctx` (the
//! wrappers are per domain and pass that `ctx` on). A sampled realloc of at most 512 bytes
//! copies the block it got into such a block. The sample keeps its requested size and domain
//! `pymalloc`; the price is one malloc block of 513 bytes instead of a pymalloc block per
//! sample (about 0.1% of the sampled stream at the default 512 KiB, in the native heap).
//! Otherwise (`all` mode, an attach, `pymalloc_debug`/`malloc_debug` whose free passes on
//! another address, mimalloc, an allocator installed by an embedder) `free` is wrapped as
//! before. `it::pymem_served_raw` checks the frees and `sys.getallocatedblocks()`.
//!
//! # The fast path: the main interpreter's GIL instead of thread-local state
//! Every Python object's allocation goes through the wrapper, so its common case (not
//! sampled) must be a handful of instructions. Thread-local state in this cdylib is reached
//! through `__tls_get_addr` (the general-dynamic model: a call each time), so the wrapper
//! keeps its state in plain globals instead, protected by the GIL: the MEM and OBJ domains may
//! only be called with the GIL held, so while a single GIL exists, one thread at a time runs
//! the wrapper. The globals are a byte countdown and its generator ([`LEFT`], [`RNG`]: one
//! sampling stream for all threads of the interpreter, which is as unbiased as one per
//! thread, the process being Poisson over the bytes in whatever order they come) and the
//! re-entrancy mark ([`OWNER`]: the thread pointer of the thread running the allocator
//! underneath, which the malloc and mmap hooks compare with their own, since they also run
//! on threads without the GIL).
//!
//! Several GILs exist only with subinterpreters created with their own GIL (3.12+), whose
//! threads call the same wrapper at the same time as the main interpreter's. So the fast path
//! is taken only while `_PyRuntime.interpreters.head` (the newest interpreter, found with the
//! layout tables and checked at installation against the installing thread's interpreter) is
//! the main interpreter: a thread of a subinterpreter, which exists only while its interpreter
//! is in that list, always sees another head and takes the thread-local path (the mark and
//! countdown in the hooks' TLS), as do all threads while any subinterpreter exists (one that
//! shares the GIL included: rare, and correct either way). A thread of the main interpreter
//! decides at each call, and keeps the decision for that call. Free-threaded builds (no
//! layout: `python=none`) and interpreters whose `_PyRuntime` is not found always take the
//! thread-local path. The globals are atomics read and written with relaxed loads and stores
//! (plain moves): a program that breaks the rule and calls these domains without the GIL can
//! lose a count-down or a mark, never corrupt memory.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::hooks::{
    py_decide, py_freeing, py_may_be_sampled, py_put_back, py_record, py_sample_lost, py_take,
    with_py_mark, PYMALLOC_MAX,
};
use crate::sampling::{weight, Countdown};

/// CPython's `PyMemAllocatorEx` (unchanged since 3.5).
#[repr(C)]
#[derive(Clone, Copy)]
struct Allocator {
    ctx: *mut c_void,
    malloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    calloc: Option<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>,
    realloc: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
}

const EMPTY: Allocator = Allocator {
    ctx: std::ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};

/// `PYMEM_DOMAIN_MEM` and `PYMEM_DOMAIN_OBJ`.
const DOMAINS: [c_int; 2] = [1, 2];

/// The allocators replaced, one per domain (MEM, OBJ), read by that domain's wrappers
/// ([`old`]). Written once, before the wrapper that reads it is installed (under the GIL, whose
/// release and acquisition order the write before any other thread's call).
struct Replaced(UnsafeCell<[Allocator; 2]>);
// SAFETY: written once by the installing thread before publication, read-only after.
unsafe impl Sync for Replaced {}
static REPLACED: Replaced = Replaced(UnsafeCell::new([EMPTY; 2]));

/// Nothing to wrap (not Python, not tracing), the API found and not yet installed, being
/// installed, installed.
const NONE: u8 = 0;
const PENDING: u8 = 1;
const INSTALLING: u8 = 2;
const INSTALLED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(NONE);

/// Whether the malloc hooks see the frees libpython makes with `free` (the library was
/// preloaded, not `dlopen`ed by an attach): set by [`find`].
static FREES_HOOKED: AtomicBool = AtomicBool::new(false);
/// Whether the sampled blocks of at most 512 bytes are served from malloc (through the
/// allocator underneath, by asking it for 513 bytes) instead of pymalloc's arenas, so that
/// the replaced `free` is installed as it is (no wrapper on the free path). Decided at
/// installation: see [`raw_serving_allowed`].
static SERVED_RAW: AtomicBool = AtomicBool::new(false);

struct Api {
    runtime: AtomicUsize,
    head_offset: AtomicUsize,
    /// Where `interp` lies in a `PyThreadState` (the layout's; 0 when unknown).
    tstate_interp: AtomicUsize,
    /// Where `next` lies in a `PyInterpreterState` (the layout's).
    interp_next: AtomicUsize,
    is_initialized: AtomicUsize,
    gil_check: AtomicUsize,
    this_thread_state: AtomicUsize,
    current_state: AtomicUsize,
    get_allocator: AtomicUsize,
    set_allocator: AtomicUsize,
    /// `_PyMem_GetCurrentAllocatorName` (exported by 3.8+), 0 when absent.
    allocator_name: AtomicUsize,
}

static API: Api = Api {
    runtime: AtomicUsize::new(0),
    head_offset: AtomicUsize::new(0),
    tstate_interp: AtomicUsize::new(0),
    interp_next: AtomicUsize::new(0),
    is_initialized: AtomicUsize::new(0),
    gil_check: AtomicUsize::new(0),
    this_thread_state: AtomicUsize::new(0),
    current_state: AtomicUsize::new(0),
    get_allocator: AtomicUsize::new(0),
    set_allocator: AtomicUsize::new(0),
    allocator_name: AtomicUsize::new(0),
};

type IntFn = unsafe extern "C" fn() -> c_int;
type PtrFn = unsafe extern "C" fn() -> *mut c_void;
type GetAllocatorFn = unsafe extern "C" fn(c_int, *mut Allocator);
type SetAllocatorFn = unsafe extern "C" fn(c_int, *mut Allocator);
type NameFn = unsafe extern "C" fn() -> *const std::ffi::c_char;

fn sym(name: &CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT (the global scope: the executable, its libpython) and
    // a NUL-terminated name; null when absent.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// Looks the C API up (at load, after the tracer started): a process without it stays
/// [`NONE`]. `head_offset`: where `interpreters.head` lies in `_PyRuntime`, from the layout of
/// the interpreter found ([`crate::pystack::Python::interpreters_head`]); without it (no
/// layout, a free-threaded build) the wrapper always takes the thread-local path.
/// `frees_hooked`: the library was preloaded, so its `free` hook sees libpython's frees.
pub(crate) fn find(head_offset: Option<u64>, frees_hooked: bool) {
    FREES_HOOKED.store(frees_hooked, Ordering::Relaxed);
    API.allocator_name
        .store(sym(c"_PyMem_GetCurrentAllocatorName"), Ordering::Relaxed);
    if let (Some(off), Some((interp, next))) = (head_offset, crate::hooks::interp_offsets()) {
        let rt = sym(c"_PyRuntime");
        if rt != 0 && interp != 0 {
            API.runtime.store(rt, Ordering::Relaxed);
            API.head_offset.store(off as usize, Ordering::Relaxed);
            API.tstate_interp.store(interp as usize, Ordering::Relaxed);
            API.interp_next.store(next as usize, Ordering::Relaxed);
        }
    }
    let current = match sym(c"PyThreadState_GetUnchecked") {
        0 => sym(c"_PyThreadState_UncheckedGet"), // 3.8-3.12
        p => p,                                   // 3.13+
    };
    let all = [
        (&API.is_initialized, sym(c"Py_IsInitialized")),
        (&API.gil_check, sym(c"PyGILState_Check")),
        (
            &API.this_thread_state,
            sym(c"PyGILState_GetThisThreadState"),
        ),
        (&API.current_state, current),
        (&API.get_allocator, sym(c"PyMem_GetAllocator")),
        (&API.set_allocator, sym(c"PyMem_SetAllocator")),
    ];
    if all.iter().any(|(_, p)| *p == 0) {
        return;
    }
    for (slot, p) in all {
        slot.store(p, Ordering::Relaxed);
    }
    STATE.store(PENDING, Ordering::Release);
}

/// Whether the wrapper is still to be installed (the C API was found, nothing installed yet).
#[inline]
pub(crate) fn pending() -> bool {
    STATE.load(Ordering::Relaxed) == PENDING
}

/// Installs the wrapper if the interpreter runs and this thread holds the GIL; called from
/// the hooks' slow path (a sampled allocation, the free of a sampled pointer) and from every
/// malloc while [`pending`].
#[cold]
pub(crate) fn maybe_install() {
    if STATE.load(Ordering::Acquire) != PENDING {
        return;
    }
    let mut mine = std::ptr::null_mut();
    // SAFETY: the addresses dlsym gave for these functions, whose C types these are; each
    // only reads interpreter state (a flag, thread-specific data, the current thread state)
    // and is callable from any thread at any time once loaded.
    let holds_gil = unsafe {
        let f = |slot: &AtomicUsize| slot.load(Ordering::Relaxed);
        std::mem::transmute::<usize, IntFn>(f(&API.is_initialized))() != 0 && {
            mine = std::mem::transmute::<usize, PtrFn>(f(&API.this_thread_state))();
            let current = std::mem::transmute::<usize, PtrFn>(f(&API.current_state))();
            !mine.is_null()
                && mine == current
                && std::mem::transmute::<usize, IntFn>(f(&API.gil_check))() != 0
        }
    };
    if !holds_gil
        || STATE
            .compare_exchange(PENDING, INSTALLING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    // SAFETY: the addresses dlsym gave for PyMem_GetAllocator/PyMem_SetAllocator, with their
    // C types. This thread holds the GIL (checked above), so no thread is inside the MEM or
    // OBJ domain's functions; REPLACED is written here only, before the wrappers reading it
    // are installed.
    unsafe {
        let get =
            std::mem::transmute::<usize, GetAllocatorFn>(API.get_allocator.load(Ordering::Relaxed));
        let set =
            std::mem::transmute::<usize, SetAllocatorFn>(API.set_allocator.load(Ordering::Relaxed));
        let old = &mut *REPLACED.0.get();
        for (i, d) in DOMAINS.iter().enumerate() {
            get(*d, &mut old[i]);
        }
        if old.iter().any(|a| {
            a.malloc.is_none() || a.calloc.is_none() || a.realloc.is_none() || a.free.is_none()
        }) {
            STATE.store(NONE, Ordering::Release);
            return;
        }
        enable_fast_path(mine as usize);
        SERVED_RAW.store(raw_serving_allowed(), Ordering::Relaxed);
        crate::hooks::set_gil_table_on(gil_table_allowed());
        for (i, d) in DOMAINS.iter().enumerate() {
            let mut w = ours(i, &old[i]);
            set(*d, &mut w);
        }
    }
    STATE.store(INSTALLED, Ordering::Release);
}

/// The allocator installed over `old` for domain index `i`: the wrappers, with `old`'s own
/// `ctx`; its `free` is `old`'s when [`SERVED_RAW`]; `all` mode's own malloc, calloc and free
/// when [`crate::hooks::GIL_TABLE_ON`] (set before, never changed after).
fn ours(i: usize, old: &Allocator) -> Allocator {
    let mut w = if i == 0 {
        Allocator {
            ctx: old.ctx,
            malloc: Some(wrap_malloc::<0>),
            calloc: Some(wrap_calloc::<0>),
            realloc: Some(wrap_realloc::<0>),
            free: Some(wrap_free::<0>),
        }
    } else {
        Allocator {
            ctx: old.ctx,
            malloc: Some(wrap_malloc::<1>),
            calloc: Some(wrap_calloc::<1>),
            realloc: Some(wrap_realloc::<1>),
            free: Some(wrap_free::<1>),
        }
    };
    if SERVED_RAW.load(Ordering::Relaxed) {
        w.free = old.free;
    }
    if crate::hooks::GIL_TABLE_ON.load(Ordering::Relaxed) {
        if i == 0 {
            w.malloc = Some(wrap_malloc_all::<0>);
            w.calloc = Some(wrap_calloc_all::<0>);
            w.free = Some(wrap_free_all::<0>);
        } else {
            w.malloc = Some(wrap_malloc_all::<1>);
            w.calloc = Some(wrap_calloc_all::<1>);
            w.free = Some(wrap_free_all::<1>);
        }
    }
    w
}

/// Whether the wrapper's pymalloc blocks go in the table in exclusive use under the main
/// interpreter's GIL (hooks.rs, `gil_table`): in `all` mode, when the allocator underneath is
/// pymalloc (its small blocks lie in its arenas, never given to `free` by a working program).
fn gil_table_allowed() -> bool {
    crate::hooks::tracing_mean() == Some(1) && allocator_name().is_some_and(|n| n == b"pymalloc")
}

/// The interpreter's name for its allocators (`_PyMem_GetCurrentAllocatorName`), with the GIL
/// held; `None` when absent or unknown (an allocator installed by the program or an embedder).
fn allocator_name() -> Option<&'static [u8]> {
    let f = API.allocator_name.load(Ordering::Relaxed);
    if f == 0 {
        return None;
    }
    // SAFETY: the address dlsym gave for `_PyMem_GetCurrentAllocatorName` (const char
    // *(void)), called with the GIL held (maybe_install); it returns null or a static string.
    let name = unsafe { std::mem::transmute::<usize, NameFn>(f)() };
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated static string of the interpreter.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// Whether sampled small blocks may be served from malloc, leaving `free` unwrapped: only
/// when that free reaches the free hook. That holds when sampling (in `all` mode every block
/// would move out of pymalloc), with the library preloaded (an attach hooks no `free`), and
/// when the interpreter reports its allocators as `pymalloc` or `malloc`: pymalloc's
/// realloc and free pass a block outside its arenas to `PyMem_RawRealloc`/`PyMem_RawFree`,
/// which are the C `realloc` and `free` (3.8-3.15, `_PyObject_Free`/`pymalloc_free`'s
/// `address_in_range`), and with `malloc` every block is one. A debug allocator (its free
/// passes on another address), mimalloc (its free of a foreign block is undefined) or an
/// allocator installed by the program or an embedder (`NULL`) keeps the free wrapper.
fn raw_serving_allowed() -> bool {
    if !FREES_HOOKED.load(Ordering::Relaxed)
        || crate::hooks::tracing_mean().is_none_or(|mean| mean <= 1)
    {
        return false;
    }
    matches!(allocator_name(), Some(b"pymalloc" | b"malloc"))
}

// ---------------------------------------------------------------- the fast path's state

/// Never equal to a main interpreter's address: [`HEAD`] points here until the fast path is
/// enabled.
static NO_HEAD: AtomicUsize = AtomicUsize::new(usize::MAX);
/// `&_PyRuntime.interpreters.head` once enabled, [`NO_HEAD`] before.
static HEAD: AtomicPtr<AtomicUsize> =
    AtomicPtr::new(&NO_HEAD as *const AtomicUsize as *mut AtomicUsize);
/// The main interpreter's `PyInterpreterState`.
static MAIN: AtomicUsize = AtomicUsize::new(0);
/// The fast path's countdown: bytes left before the next sample point (0: draw first, or
/// `all` mode, where it stays 0 so every block goes to [`sample_slow`]).
static LEFT: AtomicU64 = AtomicU64::new(0);
/// The fast path's generator state (0: not seeded yet).
static RNG: AtomicU64 = AtomicU64::new(0);
/// The thread pointer of the thread inside the allocator underneath the fast path, 0 when
/// none: its malloc and mmap calls are not recorded again.
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// Enables the fast path if `_PyRuntime.interpreters.head` is where the layout says: called
/// once, by the installing thread, which holds the GIL; `mine`, its `PyGILState` thread state
/// (non-null, its current one).
///
/// The offset is trusted only if the word there is `mine->interp` (at the layout's offset)
/// and that interpreter's `next` is null: the head is the newest interpreter and the main one
/// the oldest, so a head with no next is the only interpreter, the main one. (The installing
/// thread's own interpreter alone would not do: installed from a subinterpreter's thread, as
/// `record --trace` on 3.14+ may, while that subinterpreter is the newest, it would be taken
/// for the main one, and the main interpreter's threads, under another GIL, would take the
/// fast path beside its threads.) A wrong offset would have to find that address by chance;
/// without a match the wrapper always takes the thread-local path (correct, slower). This
/// reads what `PyInterpreterState_Main()` and `PyInterpreterState_Head()` would return
/// without calling them: in the static Debian 3.11 both lie among the executable's cold
/// code, and calling them made two 64 KiB fault-around windows of its text resident (128 KiB
/// of the traced program's peak, for two calls at installation).
fn enable_fast_path(mine: usize) {
    let (rt, off, interp_off, next_off) = (
        API.runtime.load(Ordering::Relaxed),
        API.head_offset.load(Ordering::Relaxed),
        API.tstate_interp.load(Ordering::Relaxed),
        API.interp_next.load(Ordering::Relaxed),
    );
    if rt == 0
        || interp_off == 0
        || mine == 0
        || (rt + off) % 8 != 0
        || (mine + interp_off) % 8 != 0
        || next_off % 8 != 0
    {
        return;
    }
    let addr = (rt + off) as *mut AtomicUsize;
    // SAFETY: `addr` lies inside `_PyRuntime` (a static of the interpreter, mapped for the
    // life of the process) at the layout's offset of an aligned pointer field, read with an
    // atomic load (CPython writes it under its lock); `mine` is this thread's live thread
    // state (the caller holds the GIL with it), whose `interp` field, at the layout's offset
    // inside the structure, is aligned and not changed while the thread exists.
    let (main, seen) = unsafe {
        (
            (*((mine + interp_off) as *const AtomicUsize)).load(Ordering::Relaxed),
            (*addr).load(Ordering::Relaxed),
        )
    };
    if main == 0 || main != seen || main % 8 != 0 {
        return;
    }
    // SAFETY: `main` is this thread's live interpreter (its thread state's), `next` an aligned
    // pointer field at the layout's offset inside it, written under the runtime's lock.
    let next = unsafe { (*((main + next_off) as *const AtomicUsize)).load(Ordering::Relaxed) };
    if next != 0 {
        return;
    }
    MAIN.store(main, Ordering::Relaxed);
    HEAD.store(addr, Ordering::Relaxed);
}

/// Whether the calling thread, inside the wrapper, may use the global state: the fast path is
/// enabled and no interpreter other than the main one exists (so the thread holds the one GIL).
#[inline(always)]
fn one_gil() -> bool {
    // SAFETY: HEAD points to NO_HEAD or to `_PyRuntime.interpreters.head` (enable_fast_path),
    // both live for the process and aligned.
    unsafe {
        (*HEAD.load(Ordering::Relaxed)).load(Ordering::Relaxed) == MAIN.load(Ordering::Relaxed)
    }
}

/// The calling thread's thread pointer (its TCB address, `pthread_self()` on glibc): an
/// identity of the thread read without a call.
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux %fs:0 holds the TCB's own address (the TLS ABI); a read.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(nostack, preserves_flags, readonly, pure));
        }
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                options(nomem, nostack, preserves_flags, pure));
        }
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: no preconditions.
        unsafe { libc::pthread_self() as usize }
    }
}

/// Whether the calling thread is inside the allocator underneath the fast path (the hooks'
/// thread-local mark covers the other path).
#[inline(always)]
pub(crate) fn marked_here() -> bool {
    let o = OWNER.load(Ordering::Relaxed);
    o != 0 && o == thread_pointer()
}

/// Runs the allocator underneath the fast path with this thread marked. The mark is cleared
/// after, not restored: the allocators underneath (pymalloc, the debug hooks, tracemalloc)
/// never call the MEM or OBJ domain themselves, so the wrapper is never nested on a thread
/// (were it, the outer call's own malloc after the nested one could be recorded twice).
#[inline(always)]
fn with_owner<R>(call: impl FnOnce() -> R) -> R {
    OWNER.store(thread_pointer(), Ordering::Relaxed);
    let r = call();
    OWNER.store(0, Ordering::Relaxed);
    r
}

/// The fast path's sample decision for `size` bytes, taken before the allocation: true when
/// the sample point is not in them (the countdown went down), false for [`decide_gil`]
/// (the countdown unchanged).
#[inline(always)]
fn not_sampled(size: usize) -> bool {
    let left = LEFT.load(Ordering::Relaxed);
    if left > size as u64 {
        LEFT.store(left - size as u64, Ordering::Relaxed);
        return true;
    }
    false
}

/// The fast path's sample decision past [`not_sampled`] (the sample point may fall in this
/// block, or first use, or `all` mode, or not tracing): the block's weight when sampled.
/// `all` mode's answer (every block, at its size) is given here, inline: in that mode every
/// allocation comes this way.
#[inline(always)]
fn decide_gil(size: usize) -> Option<f64> {
    if crate::hooks::tracing_mean() == Some(1) {
        return Some(size as f64);
    }
    decide_gil_sampled(size)
}

/// [`decide_gil`] but in `all` mode.
#[cold]
#[inline(never)]
fn decide_gil_sampled(size: usize) -> Option<f64> {
    let mean = crate::hooks::tracing_mean()?;
    if mean <= 1 {
        return Some(size as f64);
    }
    let mut c = Countdown {
        left: LEFT.load(Ordering::Relaxed),
        rng: RNG.load(Ordering::Relaxed),
    };
    if c.rng == 0 {
        c.rng = crate::hooks::new_seed(&RNG as *const AtomicU64 as u64);
    }
    let sampled = c.take(size as u64, mean);
    LEFT.store(c.left, Ordering::Relaxed);
    RNG.store(c.rng, Ordering::Relaxed);
    sampled.then(|| weight(size as u64, mean))
}

/// In a forked child (one thread, which was not inside the allocator): no thread is marked,
/// and the generator is reseeded so the child's samples are not the parent's.
pub(crate) fn after_fork() {
    OWNER.store(0, Ordering::Relaxed);
    RNG.store(0, Ordering::Relaxed);
    // 0: draw the first point again (in `all` mode it is always 0).
    LEFT.store(0, Ordering::Relaxed);
}

// The wrappers, one instance per domain (`D`: the index in [`REPLACED`]), installed with the
// replaced allocator's own `ctx`, which they pass on unchanged. `maybe_install` refuses to
// install unless every function of both replaced allocators is set, so each
// `unwrap_unchecked` below holds.
//
// The fast path runs in the wrappers themselves: one GIL, the sample point not in the block
// (decided before the call, so nothing but the mark is left to do after it). Everything else
// (another interpreter, a sample, `all` mode) is a separate `extern "C"` function reached by a
// tail call, so the fast path saves no register.

/// The allocator domain `D` forwards to.
#[inline(always)]
fn old<const D: usize>() -> &'static Allocator {
    // SAFETY: REPLACED is written once, before any wrapper reading it is installed, and never
    // after (see its note).
    unsafe { &(*REPLACED.0.get())[D] }
}

/// Calls `call` with the mark of the path taken: the fast path's [`OWNER`] when `gil`, the
/// hooks' thread-local mark otherwise.
#[inline(always)]
fn marked<R>(gil: bool, call: impl FnOnce() -> R) -> R {
    if gil {
        with_owner(call)
    } else {
        with_py_mark(call)
    }
}

/// The size to ask the allocator underneath for a block of `size` bytes that is sampled:
/// with [`SERVED_RAW`], a size pymalloc passes to malloc (so the block lies outside its
/// arenas and its free reaches the free hook), else `size`.
#[inline(always)]
fn sampled_size(size: usize) -> usize {
    if size <= PYMALLOC_MAX && SERVED_RAW.load(Ordering::Relaxed) {
        PYMALLOC_MAX + 1
    } else {
        size
    }
}

unsafe extern "C" fn wrap_malloc<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    if !one_gil() || !not_sampled(size) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { malloc_slow::<D>(ctx, size) };
    }
    // SAFETY: the replaced malloc with the caller's arguments (its own ctx).
    with_owner(|| unsafe { old::<D>().malloc.unwrap_unchecked()(ctx, size) })
}

/// `wrap_malloc` past its fast path: another interpreter exists, or the block may hold the
/// sample point (the countdown has not gone down for this call).
#[cold]
#[inline(never)]
unsafe extern "C" fn malloc_slow<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    let gil = one_gil();
    let w = if gil {
        decide_gil(size)
    } else {
        py_decide(size)
    };
    let ask = if w.is_some() {
        sampled_size(size)
    } else {
        size
    };
    // SAFETY: as wrap_malloc.
    let p = marked(gil, || unsafe {
        old::<D>().malloc.unwrap_unchecked()(ctx, ask)
    });
    if let (Some(w), false) = (w, p.is_null()) {
        py_record(p, size, w, gil);
    }
    p
}

unsafe extern "C" fn wrap_calloc<const D: usize>(
    ctx: *mut c_void,
    n: usize,
    m: usize,
) -> *mut c_void {
    if !one_gil() || !not_sampled(n.saturating_mul(m)) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { calloc_slow::<D>(ctx, n, m) };
    }
    // SAFETY: as wrap_malloc.
    with_owner(|| unsafe { old::<D>().calloc.unwrap_unchecked()(ctx, n, m) })
}

/// `wrap_calloc` past its fast path (as [`malloc_slow`]).
#[cold]
#[inline(never)]
unsafe extern "C" fn calloc_slow<const D: usize>(
    ctx: *mut c_void,
    n: usize,
    m: usize,
) -> *mut c_void {
    let size = n.saturating_mul(m);
    let gil = one_gil();
    let w = if gil {
        decide_gil(size)
    } else {
        py_decide(size)
    };
    // A sampled block served outside the arenas: n*m did not overflow (it is at most 512).
    let (n2, m2) = match w {
        Some(_) if sampled_size(size) != size => (1, sampled_size(size)),
        _ => (n, m),
    };
    // SAFETY: as wrap_malloc.
    let p = marked(gil, || unsafe {
        old::<D>().calloc.unwrap_unchecked()(ctx, n2, m2)
    });
    if let (Some(w), false) = (w, p.is_null()) {
        py_record(p, size, w, gil);
    }
    p
}

unsafe extern "C" fn wrap_realloc<const D: usize>(
    ctx: *mut c_void,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    if one_gil() && !py_may_be_sampled(p) && not_sampled(size) {
        // SAFETY: as wrap_malloc.
        return with_owner(|| unsafe { old::<D>().realloc.unwrap_unchecked()(ctx, p, size) });
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { realloc_slow::<D>(ctx, p, size) }
}

/// `wrap_realloc` past its fast path: `p` may be sampled, or the new block may hold the sample
/// point, or another interpreter exists (the countdown has not gone down for this call).
#[cold]
#[inline(never)]
unsafe extern "C" fn realloc_slow<const D: usize>(
    ctx: *mut c_void,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    let old_entry = py_take(p);
    let gil = one_gil();
    let w = if gil {
        decide_gil(size)
    } else {
        py_decide(size)
    };
    let o = old::<D>();
    // SAFETY: as wrap_malloc.
    let q = marked(gil, || unsafe {
        o.realloc.unwrap_unchecked()(ctx, p, size)
    });
    if q.is_null() {
        // Failed (these domains never return null for a size of 0): p is still allocated.
        if let Some((e, _)) = old_entry {
            py_put_back(p, e, gil);
        }
        return q;
    }
    if let Some((e, excl)) = old_entry {
        py_freeing(p, e, excl);
    }
    let Some(w) = w else {
        return q;
    };
    let ask = sampled_size(size);
    if ask == size {
        py_record(q, size, w, gil);
        return q;
    }
    // A sampled block served outside the arenas: q may lie in one (pymalloc may have moved or
    // kept p there), so its first `size` bytes (all it holds for the caller) move to a block
    // pymalloc passes to malloc, and q goes back to the allocator underneath.
    // SAFETY: as wrap_malloc; r has room for `ask` > `size` bytes, q holds `size` bytes,
    // and the two are distinct live blocks.
    unsafe {
        let r = marked(gil, || o.malloc.unwrap_unchecked()(ctx, ask));
        if r.is_null() {
            py_sample_lost();
            return q;
        }
        std::ptr::copy_nonoverlapping(q as *const u8, r as *mut u8, size);
        marked(gil, || o.free.unwrap_unchecked()(ctx, q));
        py_record(r, size, w, gil);
        r
    }
}

// `all` mode with pymalloc underneath ([`crate::hooks::GIL_TABLE_ON`]): every block is
// recorded, so there is no sample decision to take, and nearly every block is one of
// pymalloc's, recorded with the GIL in the table in exclusive use. These wrappers take that
// way inline ([`crate::hooks::record_gil`], [`crate::hooks::free_all`]), and hand anything
// else (a larger block, another interpreter) to the general path above. realloc, rarer,
// keeps the general wrapper.

unsafe extern "C" fn wrap_malloc_all<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    if size > PYMALLOC_MAX || !one_gil() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { malloc_slow::<D>(ctx, size) };
    }
    // SAFETY: as wrap_malloc.
    let p = with_owner(|| unsafe { old::<D>().malloc.unwrap_unchecked()(ctx, size) });
    if !p.is_null() {
        // SAFETY: all mode's wrapper (record_gil's contract).
        unsafe { crate::hooks::record_gil(p, size) };
    }
    p
}

unsafe extern "C" fn wrap_calloc_all<const D: usize>(
    ctx: *mut c_void,
    n: usize,
    m: usize,
) -> *mut c_void {
    let size = n.saturating_mul(m);
    if size > PYMALLOC_MAX || !one_gil() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { calloc_slow::<D>(ctx, n, m) };
    }
    // SAFETY: as wrap_malloc.
    let p = with_owner(|| unsafe { old::<D>().calloc.unwrap_unchecked()(ctx, n, m) });
    if !p.is_null() {
        // SAFETY: all mode's wrapper (record_gil's contract).
        unsafe { crate::hooks::record_gil(p, size) };
    }
    p
}

unsafe extern "C" fn wrap_free_all<const D: usize>(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: all mode's wrapper (free_all's contract).
    unsafe { crate::hooks::free_all(p) };
    // SAFETY: as wrap_malloc.
    unsafe { old::<D>().free.unwrap_unchecked()(ctx, p) }
}

/// Installed only without [`SERVED_RAW`] (`all` mode, a debug or unknown allocator, attached).
unsafe extern "C" fn wrap_free<const D: usize>(ctx: *mut c_void, p: *mut c_void) {
    if py_may_be_sampled(p) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { free_sampled::<D>(ctx, p) };
    }
    // SAFETY: as wrap_malloc.
    unsafe { old::<D>().free.unwrap_unchecked()(ctx, p) }
}

/// The free of a block the filter did not rule out: the table's probe, its free event, the
/// free (apart, so the common case saves no register).
#[cold]
#[inline(never)]
unsafe extern "C" fn free_sampled<const D: usize>(ctx: *mut c_void, p: *mut c_void) {
    crate::hooks::py_free_sampled(p);
    // SAFETY: as wrap_malloc.
    unsafe { old::<D>().free.unwrap_unchecked()(ctx, p) }
}

/// Whether the wrapper is installed.
pub(crate) fn installed() -> bool {
    STATE.load(Ordering::Acquire) == INSTALLED
}

/// Puts back the allocators the wrapper replaced (`memlens_detach`, attach.rs), with the GIL
/// held by the caller: 0 when restored; 2 when another allocator was installed over the
/// wrapper since (`tracemalloc.start()`): restoring would remove it, so the wrapper stays,
/// forwarding (with tracing stopped, it records nothing); 1 when none was installed.
///
/// Sound because the wrapper only forwards: every block allocated through it was allocated
/// by the replaced allocator with the replaced `ctx`, so once that allocator is back, its
/// realloc and free receive exactly the blocks they made. With the GIL held, no thread is
/// inside the MEM or OBJ functions while the pointers change; the wrapper's code stays
/// mapped (the library is never unloaded), so a call that read the old pointer finishes.
pub(crate) fn uninstall() -> c_int {
    if STATE
        .compare_exchange(INSTALLED, INSTALLING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return 1;
    }
    // SAFETY: as in maybe_install (the caller holds the GIL); REPLACED was written at
    // installation and is read-only since.
    unsafe {
        let get =
            std::mem::transmute::<usize, GetAllocatorFn>(API.get_allocator.load(Ordering::Relaxed));
        let set =
            std::mem::transmute::<usize, SetAllocatorFn>(API.set_allocator.load(Ordering::Relaxed));
        let old = &mut *REPLACED.0.get();
        let still_ours = DOMAINS.iter().enumerate().all(|(i, d)| {
            let mut now = EMPTY;
            get(*d, &mut now);
            let w = ours(i, &old[i]);
            now.ctx == w.ctx
                && now.malloc.map(|f| f as usize) == w.malloc.map(|f| f as usize)
                && now.free.map(|f| f as usize) == w.free.map(|f| f as usize)
        });
        if !still_ours {
            STATE.store(INSTALLED, Ordering::Release);
            return 2;
        }
        for (i, d) in DOMAINS.iter().enumerate() {
            let mut a = old[i];
            set(*d, &mut a);
        }
    }
    // Never PENDING again: a later sampled hook must not install it a second time.
    STATE.store(NONE, Ordering::Release);
    0
}
