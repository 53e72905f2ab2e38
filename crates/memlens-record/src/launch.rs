//! Running a program transparently: spawn (optionally into a cgroup before exec), forward
//! signals, reap children with their resource usage. The only `unsafe` of the crate lives here
//! and in [`crate::cputime`].
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
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

static CHILD: AtomicI32 = AtomicI32::new(0);
static PENDING: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No such file, or not on `PATH`.
    #[error("{program}: command not found")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// Found but not executable (permission, a directory, not an executable format).
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program as given.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another failure.
    #[error("{program}: cannot start: {source}")]
    Other {
        /// The program as given.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Starts `program args...` with inherited stdio. When `cgroup_procs` is given, the child writes
/// `0` into it (moving itself into that cgroup) after fork and before exec, so every page the
/// program touches is charged there. Returns the PID.
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    cgroup_procs: Option<&File>,
) -> Result<u32, SpawnError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(f) = cgroup_procs {
        let fd = f.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls write(2),
        // which is async-signal-safe; `fd` stays open in the child until exec (the File lives
        // in the parent for the duration of spawn).
        unsafe {
            cmd.pre_exec(move || {
                let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                Ok(())
            });
        }
    }
    let name = program.to_string_lossy().into_owned();
    match cmd.spawn() {
        Ok(child) => {
            let pid = child.id();
            // The child is reaped through `reap`, never through `Child::wait`.
            drop(child);
            Ok(pid)
        }
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => SpawnError::NotFound { program: name },
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                SpawnError::NotExecutable {
                    program: name,
                    source: e,
                }
            }
            _ => SpawnError::Other {
                program: name,
                source: e,
            },
        }),
    }
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
}

extern "C" fn stop(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install(sig: i32, handler: libc::sighandler_t, siginfo: bool) {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler is an extern "C" fn that
    // only touches atomics and calls async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART | if siginfo { libc::SA_SIGINFO } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            log::warn!("cannot install a handler for signal {sig}");
        }
    }
}

/// `memlens run`: forward [`FORWARDED`] signals to the program (once [`set_child`] is called;
/// those that arrive earlier are sent then). Exec resets the handlers in the child.
pub fn forward_signals() {
    let h = forward as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
    for sig in FORWARDED {
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

/// Makes memlens the reaper of orphaned descendants, so a daemonising grandchild stays visible
/// (it is re-parented to memlens and reaped by [`reap`]).
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        log::debug!("PR_SET_CHILD_SUBREAPER failed");
    }
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// PID.
    pub pid: u32,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when a signal killed it.
    pub signal: Option<i32>,
    /// Peak RSS of it and its reaped descendants (`ru_maxrss`), bytes.
    pub max_rss: u64,
}

impl Reaped {
    /// The status a shell would report: the code, or 128 + signal.
    pub fn shell_status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 1,
        }
    }
}

/// Reaps every child that has ended, without blocking.
pub fn reap() -> Vec<Reaped> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the two out-parameters we own.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru) };
        if pid <= 0 {
            break;
        }
        let (code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            continue;
        };
        out.push(Reaped {
            pid: pid as u32,
            code,
            signal,
            max_rss: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
        });
    }
    out
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
