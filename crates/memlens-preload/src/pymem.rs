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
//! installed before: `PYTHONMALLOC=debug|malloc`, `-X tracemalloc`), samples with the same
//! per-thread sampler as the malloc hooks, and records domain [`crate::ring::PYMALLOC`].
//! While the allocator underneath runs, the thread is marked: the malloc and mmap it makes
//! (arenas, blocks over 512 bytes) are not recorded a second time, while the frees it makes
//! are still looked up (an arena mapped before the swap is still recognised when pymalloc
//! unmaps it). Its realloc and free take sampled pointers out of the pointer table as the
//! malloc hooks do, whichever domain recorded them. A program that later installs its own
//! allocator (`tracemalloc.start()`, `PyMem_SetAllocator`) wraps this one and keeps working.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::hooks::{py_alloc_done, py_freeing, py_put_back, py_take, with_py_mark};

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

/// The allocators replaced, one per domain: the `ctx` of the wrapper installed for that
/// domain. Written once, before the wrapper that reads it is installed (under the GIL, whose
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

struct Api {
    is_initialized: AtomicUsize,
    gil_check: AtomicUsize,
    this_thread_state: AtomicUsize,
    current_state: AtomicUsize,
    get_allocator: AtomicUsize,
    set_allocator: AtomicUsize,
}

static API: Api = Api {
    is_initialized: AtomicUsize::new(0),
    gil_check: AtomicUsize::new(0),
    this_thread_state: AtomicUsize::new(0),
    current_state: AtomicUsize::new(0),
    get_allocator: AtomicUsize::new(0),
    set_allocator: AtomicUsize::new(0),
};

type IntFn = unsafe extern "C" fn() -> c_int;
type PtrFn = unsafe extern "C" fn() -> *mut c_void;
type GetAllocatorFn = unsafe extern "C" fn(c_int, *mut Allocator);
type SetAllocatorFn = unsafe extern "C" fn(c_int, *mut Allocator);

fn sym(name: &CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT (the global scope: the executable, its libpython) and
    // a NUL-terminated name; null when absent.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// Looks the C API up (at load, after the tracer started): a process without it stays
/// [`NONE`].
pub(crate) fn find() {
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

/// Installs the wrapper if the interpreter runs and this thread holds the GIL; called from
/// the hooks' slow path only (a sampled allocation, the free of a sampled pointer).
#[cold]
pub(crate) fn maybe_install() {
    if STATE.load(Ordering::Acquire) != PENDING {
        return;
    }
    // SAFETY: the addresses dlsym gave for these functions, whose C types these are; each
    // only reads interpreter state (a flag, thread-specific data, the current thread state)
    // and is callable from any thread at any time once loaded.
    let holds_gil = unsafe {
        let f = |slot: &AtomicUsize| slot.load(Ordering::Relaxed);
        std::mem::transmute::<usize, IntFn>(f(&API.is_initialized))() != 0 && {
            let mine = std::mem::transmute::<usize, PtrFn>(f(&API.this_thread_state))();
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
        for (i, d) in DOMAINS.iter().enumerate() {
            let mut w = Allocator {
                ctx: &mut old[i] as *mut Allocator as *mut c_void,
                malloc: Some(wrap_malloc),
                calloc: Some(wrap_calloc),
                realloc: Some(wrap_realloc),
                free: Some(wrap_free),
            };
            set(*d, &mut w);
        }
    }
    STATE.store(INSTALLED, Ordering::Release);
}

/// The allocator a wrapper forwards to.
///
/// # Safety
/// `ctx` must be the `ctx` this module gave the wrapper: an entry of [`REPLACED`].
#[inline(always)]
unsafe fn replaced<'a>(ctx: *mut c_void) -> &'a Allocator {
    // SAFETY: the caller's contract; REPLACED is never written after installation.
    unsafe { &*(ctx as *const Allocator) }
}

// The wrappers: `maybe_install` refuses to install unless every function of both replaced allocators
// is set, so each `unwrap_unchecked` below holds.

unsafe extern "C" fn wrap_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ctx is ours (this function is only installed with it); the replaced malloc
    // with the caller's arguments.
    let p = with_py_mark(|| unsafe {
        let o = replaced(ctx);
        o.malloc.unwrap_unchecked()(o.ctx, size)
    });
    py_alloc_done(p, size);
    p
}

unsafe extern "C" fn wrap_calloc(ctx: *mut c_void, n: usize, m: usize) -> *mut c_void {
    // SAFETY: as wrap_malloc.
    let p = with_py_mark(|| unsafe {
        let o = replaced(ctx);
        o.calloc.unwrap_unchecked()(o.ctx, n, m)
    });
    py_alloc_done(p, n.saturating_mul(m));
    p
}

unsafe extern "C" fn wrap_realloc(ctx: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
    let old = py_take(p);
    // SAFETY: as wrap_malloc.
    let q = with_py_mark(|| unsafe {
        let o = replaced(ctx);
        o.realloc.unwrap_unchecked()(o.ctx, p, size)
    });
    if q.is_null() {
        // Failed (these domains never return null for a size of 0): p is still allocated.
        if let Some(e) = old {
            py_put_back(p, e);
        }
        return q;
    }
    if let Some(e) = old {
        py_freeing(p, e);
    }
    py_alloc_done(q, size);
    q
}

unsafe extern "C" fn wrap_free(ctx: *mut c_void, p: *mut c_void) {
    if let Some(e) = py_take(p) {
        py_freeing(p, e);
    }
    // SAFETY: as wrap_malloc.
    unsafe {
        let o = replaced(ctx);
        o.free.unwrap_unchecked()(o.ctx, p)
    }
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
        let ours = DOMAINS.iter().enumerate().all(|(i, d)| {
            let mut now = EMPTY;
            get(*d, &mut now);
            now.ctx == &mut old[i] as *mut Allocator as *mut c_void
                && now.malloc.map(|f| f as usize) == Some(wrap_malloc as *const () as usize)
                && now.free.map(|f| f as usize) == Some(wrap_free as *const () as usize)
        });
        if !ours {
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
