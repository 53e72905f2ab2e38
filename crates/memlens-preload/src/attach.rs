//! Loaded into a running CPython 3.14+ by `memlens record PID --trace` (PEP 768: memlens asks
//! the interpreter to run a small script, which `dlopen`s this library with `ctypes.PyDLL` and
//! calls [`memlens_attach`]; at the end a second script calls [`memlens_detach`]).
//!
//! Loaded with `dlopen`, the library interposes nothing: the program's malloc, mmap and
//! `_exit` calls were bound at its start and stay bound to the C library. Only CPython's MEM
//! and OBJ allocator domains are traced, through the same wrapper as under `LD_PRELOAD`
//! ([`crate::pymem`]): pymalloc blocks and the `PyMem_Malloc`/`PyObject_Malloc` requests over
//! 512 bytes (recorded as `malloc`); allocations of C extensions and libraries calling malloc
//! directly, and anonymous mmap, are not seen. Blocks allocated before the attach are not
//! known: their frees are not counted (the figures are those of what was allocated since).
//!
//! Nothing is read from the environment: the trace file, the mode and the period are the
//! arguments of [`memlens_attach`]. The constructor sees that the interpreter is already
//! initialised ([`loaded_late`]) and leaves everything to it (a program run under
//! `memlens run --trace` has the library preloaded; memlens refuses to attach to it).
//!
//! `ctypes.PyDLL` keeps the GIL held during the call, which installing and removing the
//! wrapper need. The thread-local state, which `LD_PRELOAD` puts in the static TLS block, is
//! allocated by glibc on each thread's first use (with malloc, which is not interposed here).
//! Forked children of an attached program are not traced.

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once [`memlens_attach`] started tracing.
pub(crate) static ATTACHED: AtomicBool = AtomicBool::new(false);

/// Whether the library is loaded into an interpreter that already runs (a `dlopen` from
/// Python): under `LD_PRELOAD`, constructors run before `main`, so `Py_IsInitialized` is 0.
pub(crate) fn loaded_late() -> bool {
    // SAFETY: dlsym over the global scope with a NUL-terminated name; the function, when
    // present, is Py_IsInitialized (int(void)), callable at any time.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"Py_IsInitialized".as_ptr());
        !f.is_null()
            && std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn() -> c_int>(f)() != 0
    }
}

/// Tracing started.
pub const OK: c_int = 0;
/// Already attached (this copy of the library).
pub const ALREADY: c_int = 1;
/// The trace file is not an empty regular file this process can open for writing.
pub const BAD_FILE: c_int = 2;
/// The tracer's tables could not be mapped, or the header not written.
pub const NO_MEMORY: c_int = 3;
/// CPython's allocator API was not found, or the wrapper could not be installed (the GIL not
/// held by the caller, or an allocator without every function).
pub const NO_WRAP: c_int = 4;

/// Starts tracing CPython's MEM and OBJ allocator domains into `path` (a file memlens
/// created, empty; opened without following a link, never created here), sampling every
/// `sample_bytes` on average (1: every allocation, `--trace=all`), a snapshot line every
/// `period_ms` (0: 1000). Call with the GIL held (`ctypes.PyDLL`). Returns [`OK`] or the
/// reason it did not start (then nothing is traced and nothing changed).
///
/// # Safety
/// `path` is a NUL-terminated string; the caller holds the GIL.
#[no_mangle]
pub unsafe extern "C" fn memlens_attach(
    path: *const c_char,
    sample_bytes: u64,
    period_ms: u64,
) -> c_int {
    if path.is_null() || sample_bytes == 0 {
        return BAD_FILE;
    }
    if ATTACHED.swap(true, Ordering::AcqRel) {
        return ALREADY;
    }
    // SAFETY: the caller's contract.
    let p = unsafe { CStr::from_ptr(path) };
    // SAFETY: a NUL-terminated path; no O_CREAT: the file memlens made, or nothing.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        ATTACHED.store(false, Ordering::Release);
        return BAD_FILE;
    }
    // SAFETY: fstat of our descriptor into a zeroed stat.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some(st)
    };
    if !st.is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG && s.st_size == 0) {
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        ATTACHED.store(false, Ordering::Release);
        return BAD_FILE;
    }
    if period_ms > 0 {
        crate::hooks::set_period_ms(period_ms);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if !crate::hooks::begin(fd, pid, sample_bytes, None) {
        crate::hooks::finish();
        return NO_MEMORY;
    }
    crate::pymem::find(crate::hooks::interpreters_head(), false);
    crate::pymem::maybe_install();
    if !crate::pymem::installed() {
        crate::hooks::finish();
        return NO_WRAP;
    }
    OK
}

/// Stops tracing: puts back the allocators the wrapper replaced (see
/// [`crate::pymem::uninstall`]), then drains the queue, writes the `end` line and closes the
/// file, and gives the pointer table's pages back ([`crate::hooks::release_table`]). Returns 0
/// when the allocators were put back, 2 when another allocator was installed
/// over the wrapper since (it stays, forwarding, tracing nothing), 1 when not attached. Call
/// with the GIL held.
#[no_mangle]
pub extern "C" fn memlens_detach() -> c_int {
    if !ATTACHED.load(Ordering::Acquire) {
        return 1;
    }
    let r = match crate::pymem::uninstall() {
        1 => 0, // the attach failed before installing: nothing to put back
        r => r,
    };
    crate::hooks::finish();
    crate::hooks::release_table();
    r
}
