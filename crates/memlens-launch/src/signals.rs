//! Signals: forwarded to the program (`run`), or asking the recording to stop (`record`), and
//! `SIGCHLD`; every handler also wakes the [`crate::Waiter`].

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Signals `memlens run` forwards to the program.
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Forwarded signals that were ignored when memlens started (bit `sig`): memlens leaves them
/// ignored, and so does the program, as after a plain start (`nohup`, a background job of a
/// non-interactive shell).
static IGNORED_AT_START: AtomicU64 = AtomicU64::new(0);

static CHILD: AtomicI32 = AtomicI32::new(0);
static PENDING: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// The write end of the [`crate::Waiter`]'s pipe, for the signal handlers (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The forwarded signals that were ignored when memlens started (bit `sig`).
pub(crate) fn ignored_at_start() -> u64 {
    IGNORED_AT_START.load(Ordering::SeqCst)
}

/// Points the signal handlers' wake-ups at this descriptor (-1: none).
pub(crate) fn set_wake_fd(fd: i32) {
    WAKE_FD.store(fd, Ordering::SeqCst);
}

/// Stops the wake-ups into `fd`, if they still go there.
pub(crate) fn clear_wake_fd(fd: i32) {
    let _ = WAKE_FD.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
}

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    // Signals the kernel sent to the whole process group (Ctrl-C, Ctrl-\, hangup) reached the
    // program too, which shares memlens's group: forwarding them would deliver them twice.
    if code == libc::SI_KERNEL {
        return;
    }
    let bit = 1u64 << (sig as u64 & 63);
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(child, sig);
        }
        SENT.fetch_or(bit, Ordering::SeqCst);
    } else {
        PENDING.fetch_or(bit, Ordering::SeqCst);
    }
    wake();
}

extern "C" fn stop(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    wake();
}

pub(crate) extern "C" fn child_exited(_sig: libc::c_int) {
    wake();
}

/// Makes the [`crate::Waiter`] return (from a signal handler: only write(2)).
fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe (EAGAIN) already wakes the waiter.
        unsafe {
            libc::write(fd, b"!".as_ptr().cast(), 1);
        }
    }
}

pub(crate) fn install(sig: i32, handler: libc::sighandler_t, siginfo: bool) {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler is an extern "C" fn that
    // only touches atomics and calls async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags =
            libc::SA_RESTART | libc::SA_NOCLDSTOP | if siginfo { libc::SA_SIGINFO } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            log::warn!("cannot install a handler for signal {sig}");
        }
    }
}

/// Whether `sig` is ignored now (`SIG_IGN`).
fn ignored_now(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// `memlens run`: forward [`FORWARDED`] signals to the program (once [`set_child`] is called;
/// those that arrive earlier are sent then). Exec resets the handlers in the child. A signal
/// ignored when memlens started stays ignored, by memlens and by the program, as it would be
/// for the program started without memlens.
pub fn forward_signals() {
    let h = forward as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
    for sig in FORWARDED {
        if ignored_now(sig) {
            IGNORED_AT_START.fetch_or(1u64 << sig, Ordering::SeqCst);
            continue;
        }
        install(sig, h as libc::sighandler_t, true);
    }
}

/// `memlens record`: SIGINT, SIGTERM and SIGHUP ask the recording to stop ([`stop_requested`]).
pub fn stop_on_signals() {
    let h = stop as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        install(sig, h as libc::sighandler_t, false);
    }
}

/// Whether a stop signal arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Tells the forwarder the program's PID and sends it the signals that arrived before.
pub fn set_child(pid: u32) {
    let pid = i32::try_from(pid).unwrap_or(0);
    CHILD.store(pid, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    for sig in FORWARDED {
        if pending & (1u64 << sig) != 0 {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(pid, sig);
            }
            SENT.fetch_or(1u64 << sig, Ordering::SeqCst);
        }
    }
}

/// Stops forwarding (the program has been reaped: its PID may be reused). Signals that arrive
/// later are only recorded as pending.
pub fn clear_child() {
    CHILD.store(0, Ordering::SeqCst);
}

/// Signals forwarded since the last call.
pub fn take_forwarded() -> Vec<i32> {
    let bits = SENT.swap(0, Ordering::SeqCst);
    FORWARDED
        .into_iter()
        .filter(|s| bits & (1u64 << s) != 0)
        .collect()
}

/// The name of a signal (`SIGTERM`), for messages.
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    n.to_string()
}
