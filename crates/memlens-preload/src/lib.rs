//! memlens's allocation tracer, loaded with `LD_PRELOAD` (the foundation of
//! `memlens run --trace`, DESIGN.md §8).
//!
//! It interposes the malloc family (`malloc`, `calloc`, `realloc`, `reallocarray`, `free`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, C23 `free_sized` and
//! `free_aligned_sized`) and anonymous `mmap`/`mmap64`/`munmap`/`mremap`, forwarding each to the
//! next definition (`dlsym(RTLD_NEXT)`; while dlsym itself runs, its `calloc` is served from a
//! small static arena recognised at free); `_exit`/`_Exit` are wrapped to write the last line.
//! In a CPython process it also wraps the interpreter's `PyMem_Malloc` and `PyObject_Malloc`
//! allocator domains ([`pymem`](#cpythons-allocator-domains-pymalloc)), so pymalloc's small
//! blocks are seen one by one without changing the program's allocator.
//! A hook never re-enters (a per-thread guard); what it allocates itself (only a hook that
//! drains, for the snapshot line) goes straight to the real allocator, untraced. It samples by bytes ([`sampling`]), records a sampled pointer in a lock-free table
//! ([`table`], with a counting filter in front) so its free is recognised in O(1), and hands an event to the [`agg::Aggregate`]: applied at once, in the
//! allocating thread, when the aggregate's try-lock is free and nothing is queued before it
//! (no wait), else queued ([`ring`]; `hooks::deliver`); only a hook that finds the queue full
//! waits for the lock and drains it (`hooks::deliver_full`: nothing is dropped while
//! tracing). The queue is drained into
//! the aggregate by the next hook that takes the lock, before its own event (so events are
//! applied in an order consistent with the order they happened in), by a hook that queues
//! one when it is a quarter full, and at exit, `_exit` and fork. In `all` mode the pymalloc
//! blocks the allocator domains' wrapper records while the main interpreter is the only one
//! go in a second table changed only under that interpreter's GIL (plain loads and stores:
//! `hooks::gil_table`), and their events in a queue with one producer at a time, the GIL's
//! holder (`hooks::deliver_gil`), which every drain takes first: no locked instruction per
//! event but the aggregate's try-lock once per 256. A snapshot is appended to the
//! trace file by the hook that finds the period elapsed (the clock is looked at every 64th
//! event in `all` mode; an event for the GIL's queue compares its own coarse clock reading
//! with the time due). There is deliberately no
//! tracer thread: CPython 3.12+ warns on `os.fork()` in a process with more than one thread,
//! so a thread would change what a forking program prints (memray's file mode and Fil have none
//! either).
//!
//! # Environment
//! - `MEMLENS_TRACE_OUT`: the trace file; without it nothing is traced. Created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600): if it exists, the library says so on stderr and
//!   traces nothing. The first process sets `MEMLENS_TRACE_ROOT_PID` in its environment;
//!   descendants (forked children, exec'd images, subprocesses) write `OUT.PID` (`OUT.PID.N` if
//!   the PID already has one, as after fork then exec).
//! - `MEMLENS_SAMPLE_BYTES`: mean sample interval in bytes (default 524288); `1` or
//!   `MEMLENS_TRACE=all` records every allocation with its exact size.
//! - `MEMLENS_TRACE_PERIOD_MS`: how often a snapshot line is appended (default 1000).
//! - `MEMLENS_TRACE_RING_CELLS`: the event queue's size (default 65536 in `all` mode; sampled
//!   2^28 / mean, within 512 (the default mean) to 16384; 40 bytes each); smaller only to test
//!   that what a full queue refuses is counted.
//!
//! # Python stacks
//! On a sampled allocation only (never on the unsampled fast path), the allocating thread
//! walks its own Python frames ([`pystack`]): its thread state from
//! `PyGILState_GetThisThreadState` (or, in the allocator domains' wrapper, whose caller holds
//! the GIL of the only interpreter, the interpreter's current one), the frame chain and line tables read with the layouts
//! memlens's outside reader uses (generated tables included by path), every pointer checked
//! and every code object's type compared with `PyCode_Type`; a walk that stops early marks its
//! stack `unreadable` (counted in `unreadable_stacks`), deeper than 128 frames `truncated`.
//! Code objects and stacks are interned in bounded tables in memory mapped once (65536 codes,
//! 65536 stacks, 2 Mi frames, 8 MiB of names); a stack that does not fit is counted
//! (`stacks_lost`) and its sample given an empty `lost=1` stack of its domain (about 40 MiB
//! of address space, `MAP_NORESERVE`, touched only as used: the hashed tables grow by levels,
//! so a few interned stacks make a few pages resident, `pystack/tables.rs`). A free-threaded build, or a minor
//! without a layout, is `python=none`. The sampled
//! pointer keeps its stack id and a coarse timestamp (`CLOCK_MONOTONIC_COARSE`, read through
//! the vDSO, resolution one kernel tick, 1-4 ms), so its free is attributed to the same stack
//! and classed *temporary* when it comes within `temp_ns` = 10 ms (a window wider than
//! the clock's tick; an allocation freed 10 ms +- one tick after it was made may fall on
//! either side).
//!
//! The drain keeps per stack: live bytes and count, allocated, freed, temporary; and the live
//! set at the peak, Fil's way: at the first free after a new high of the live total (or at the
//! next write while still there) the per-stack live figures changed since the previous copy
//! are copied (a dirty list: the cost is the stacks touched since, not all stacks).
//!
//! # Its own pages
//! At the end of the constructor, the pages of the library's read-only and executable
//! segments, and libgcc_s's (loaded only as Rust std's unwinder), are released
//! (`MADV_DONTNEED` of unwritten file pages, checked in `/proc/self/pagemap`: `own_text.rs`,
//! which says why that is safe): only the code that runs afterwards faults back in. The
//! snapshot lines are written without `core::fmt`, and the library's allocations go through
//! its own `GlobalAlloc` (the C allocator, as std's `System`), so a snapshot does not fault
//! std's formatting and allocator shims, which lie among its cold code, back in.
//!
//! # Trace file format, version 3
//! The contract with memlens is docs/trace-format.md. In short: a header (`memlens-trace 3`,
//! with `python=3.M|none` and `temp_ns=`), then per period `code` and `stack` lines for what
//! is new, a `snap` line, `site` lines for the stacks that changed, and a `peak` block with
//! its `peaksite` lines when the peak changed; `end` (with its site and peak lines) at normal
//! exit. Byte figures are estimates (sums of sample weights, rounded), exact in `all` mode:
//! `live` is allocated and not yet freed, `peak_live` its highest value in event order, `total`
//! all bytes allocated; `live_mmap`, `live_pymalloc` and `live_malloc` split `live` by domain:
//! anonymous mmap, CPython's wrapped allocator domains, the C malloc family called directly
//! (each rounded on its own); `untouched` is the estimate of live bytes with no resident page
//! (below). Counters of what could not
//! be recorded are never silent: `dropped_allocs` (queue full: those samples are missing from
//! the figures), `dropped_frees` (queue full: those bytes stay in `live`), `table_full` (no
//! free slot for the pointer: sample missing), `lost_at_fork` (events queued in the parent at
//! fork, discarded in the child), `unreadable_stacks`, `stacks_lost`. A forked child counts
//! what it inherited apart from what it allocates: the parent's live blocks at fork are its
//! `inherited` figures (`inherited_live_bytes` on the header and on each `snap`, and
//! `inherited_bytes` per stack on its `site` lines), lowered as it frees them; its `live`,
//! `peak_live`, peak block, `total` and counters count only its own allocations, from 0. A
//! free tells an inherited block by the fork depth kept in its pointer-table entry (the
//! process's depth when it made the block: a child's is its parent's plus one, up to 7); it
//! writes the `code` and `stack` lines it names again in its own file. No `end` line means the process
//! was killed or exec'd another image: the last `snap` is the latest figure.
//!
//! # CPython's allocator domains (`pymalloc`)
//! Most of a Python program's objects are pymalloc blocks (512 bytes or less) carved out of
//! 1 MiB arenas (256 KiB before 3.10) that pymalloc maps itself: the malloc and mmap hooks
//! alone see the arenas, not the objects. The tracer looks up `PyMem_GetAllocator`,
//! `PyMem_SetAllocator`, `Py_IsInitialized`, `PyGILState_Check`,
//! `PyGILState_GetThisThreadState` and `PyThreadState_GetUnchecked` (3.13+) or
//! `_PyThreadState_UncheckedGet` with `dlsym(RTLD_DEFAULT)` when it is loaded: they are
//! exported by pyenv's shared builds (libpython) and by the static, stripped Debian
//! executables (3.11, sid's 3.14 and 3.15). A process without them (not Python, or a
//! libpython `dlopen`ed later) is traced by the malloc and mmap hooks alone.
//!
//! **When it is installed**: from the slow path of a hook only (a sampled allocation, or the
//! free of a sampled pointer; never the fast path), the first time `Py_IsInitialized()` says
//! the interpreter runs *and* the calling thread holds the GIL (its current thread state is
//! its own `PyGILState` one, and `PyGILState_Check()`). The MEM and OBJ domains may only be
//! called with the GIL held, so no other thread is inside them while their function pointers
//! are replaced. In `all` mode that is the first allocation after the interpreter's
//! initialisation; sampled, the first sample after it (on average within 512 KiB of
//! allocation). The wrapper forwards every call to the allocator it replaced (pymalloc, or
//! what `PYTHONMALLOC`/`-X tracemalloc` installed before), samples by bytes like the hooks
//! (with one countdown in plain globals guarded by the GIL while the main interpreter is the
//! only one, no thread-local access on that path; per thread otherwise: `pymem.rs`) and
//! records domain `pymalloc` for blocks of at most 512 bytes (sampled, the sampled ones are
//! served from malloc so that its `free` needs no wrapper: `pymem.rs`) (`malloc` for larger ones, which
//! pymalloc passes to malloc: where the memory lands); while the allocator underneath runs
//! the thread is marked, so the arenas and large blocks (over 512 bytes: malloc) it makes are not recorded
//! again. Its realloc and free find sampled pointers in the same table as the malloc hooks,
//! whichever domain recorded them. A program that installs its own allocator later
//! (`tracemalloc.start()`, `PyMem_SetAllocator`) wraps the tracer's and keeps working.
//!
//! **What is missed before**: the blocks pymalloc hands out during start-up are seen only as
//! the arenas that hold them, counted as `mmap` (1 or 2 arenas on 3.10+, a few on 3.8/3.9,
//! depending on the address layout); those arenas stay counted until pymalloc unmaps them,
//! and blocks later carved out of them are counted again as `pymalloc` (an over-count bounded
//! by those arenas, 1-2 MiB). Blocks over 512 bytes allocated before are counted as `malloc`
//! and freed correctly. Not wrapped: the RAW domain (plain malloc, seen by the hooks),
//! subinterpreters' own allocators (3.12+ shares the process's), a program that restores an
//! allocator it saved *before* the wrap (`tracemalloc.stop()` after `-X tracemalloc`:
//! blocks recorded by the wrapper then stay live), and free-threaded builds (not tested).
//!
//! # Untouched memory
//! `untouched_bytes` estimates the live traced bytes that have no resident page
//! ([`residency`]): the live sampled allocations of 64 KiB or more are kept in a side list
//! (ordered by address, updated as the queue is drained) and the kernel is asked with
//! `mincore` which pages of their page-aligned inner range are resident, each time a `snap`
//! or `end` line is written; an allocation contributes its weight times the fraction not
//! resident. It is an estimate: smaller allocations count as touched, a swapped-out page
//! counts as untouched, and a block freed by another thread but not yet drained is measured
//! as it is then. Its cost grows with the number of large live samples (one `mincore` per
//! 16 MiB of them per line).
//!
//! # Limits of this first step
//! - Snapshots are written by allocating hooks: a process that stops allocating writes none
//!   until it allocates again or exits (its `end` line is complete).
//! - Stacks are Python frames only (no native frames); a process that loads libpython after
//!   start (embedding by `dlopen`) is `python=none`. The time of a `peak` is the coarse clock's
//!   at the event that made it (one tick before it at most), or that of the drain that
//!   applied it when the event was queued (within a period).
//! - Must be preloaded to trace malloc and mmap: its thread-local state is in the static TLS
//!   block, which the hooks reach at its fixed offset from the thread pointer, without a call
//!   (`hooks::TLS_AT`, set only when `LD_PRELOAD` names the library). `dlopen`ed into a running CPython 3.14+ (`memlens record PID --trace`, PEP 768,
//!   [`attach`](#attached-to-a-running-program)) it interposes nothing and traces only the
//!   wrapped allocator domains.
//!
//! # Attached to a running program
//! `attach.rs`: `memlens_attach(path, sample_bytes, period_ms)` and `memlens_detach()`, called
//! by the scripts `memlens record PID --trace` has the interpreter run (PEP 768) through
//! `ctypes.PyDLL` (GIL held). The attach opens the trace file memlens created (never creates
//! one, never through a link), starts the writer and installs the `pymem.rs` wrapper; the
//! detach puts the replaced allocators back when the wrapper is still the installed one (else
//! it stays, forwarding, tracing nothing), then writes the `end` line. Nothing is read from
//! the environment: the constructor sees the interpreter initialised and does nothing. Forked
//! children of an attached program are not traced.
//! - Traced anonymous mappings are listed by address ([`maps`]): `munmap`, `mremap` and a
//!   `MAP_FIXED` mapping take out exactly the pages they unmap (an end, a hole, a range
//!   across several), each piece keeping its share of the weight; a `MAP_FIXED` anonymous
//!   mapping is traced as any other. Not seen: a mapping unmapped by a direct system call or
//!   by the C library's own internal calls, and the resize of an untraced (unsampled, or
//!   file) mapping by `mremap`; a hole split off a mapping counts as a sample of its own from
//!   then (`freed_count` counts each piece's free).
//! - An image replaced by `exec` writes no `end` line (its last `snap` stands), nor does a
//!   process killed by a signal (`exit`, `_exit` and `_Exit` write it). A forked child that execs leaves `OUT.PID` (from the
//!   fork) and `OUT.PID.1` (the new image).
//! - The file grows by one line a period (~250 bytes a second at the default) for as long as
//!   the process lives.
//! - The environment of the traced program gains `MEMLENS_TRACE_ROOT_PID`.
//! - The pointer table has levels of 64 Ki to 8 Mi slots in `all` mode (every live pymalloc
//!   block takes one; 16 Mi slots, 512 MiB of address space) and of 1 Ki to 64 Ki sampled
//!   (87,040 slots); a level is opened when the one before is 3/4 full, so the resident part
//!   follows the live samples (`table.rs`). What does not fit is counted as `table_full`. Its filter (two bytes a
//!   word: 4 MiB in `all` mode, 256 KiB sampled) answers the free of an unsampled pointer
//!   without a probe of the table.

pub mod agg;
#[cfg(not(test))]
mod attach;
mod gilring;
#[cfg(not(test))]
mod hooks;
mod late;
pub mod maps;
#[cfg(target_pointer_width = "64")]
mod own_text;
#[cfg(not(test))]
mod pymem;
pub mod pystack;
pub mod residency;
pub mod ring;
pub mod sampling;
pub mod table;
