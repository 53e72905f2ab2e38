//! Running a program transparently: spawn (optionally into a cgroup before exec), forward
//! signals, reap children with their resource usage. The only `unsafe` of the crate lives here
//! and in [`crate::cputime`].
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Instant;

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
/// The write end of the [`Waiter`]'s pipe, for the signal handlers (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

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

fn spawn_error(program: &OsString, e: std::io::Error) -> SpawnError {
    let name = program.to_string_lossy().into_owned();
    match e.raw_os_error() {
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
    }
}

/// A program forked and held before exec: its memory cgroup is joined while memlens prepares
/// the recording (moving a process between v1 cgroups waits for an RCU grace period, several
/// milliseconds, which this overlaps with memlens's own start-up), and it runs only once
/// [`Held::release`] is called. Dropped or [`Held::cancel`]led, it exits without running.
///
/// The fork and exec are done here rather than by `std::process::Command`, whose `spawn`
/// blocks until the exec: holding the child would then need a thread, and each hand-over
/// between threads costs a wake-up, which on a busy machine is milliseconds.
#[derive(Debug)]
pub struct Held {
    pid: libc::pid_t,
    go: Option<OwnedFd>,
    exec_error: Option<OwnedFd>,
    program: OsString,
}

/// Forks `program args...` with inherited stdio and holds it before exec (see [`Held`]).
/// When `cgroup_procs` is given, the child writes `0` into it (moving itself into that
/// cgroup) right after fork, so every page the program touches is charged there. memlens must
/// have no other thread running when it calls this (the child only calls async-signal-safe
/// functions, but a lock held by another thread at the fork would stay held in it).
pub fn hold(
    program: &OsString,
    args: &[OsString],
    cgroup_procs: Option<&File>,
) -> Result<Held, SpawnError> {
    let fail = |e| spawn_error(program, e);
    let nul = || fail(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    // Everything the child needs is built before the fork: it must not allocate.
    let path = CString::new(program.as_bytes()).map_err(|_| nul())?;
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args)
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| nul())?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (go_read, go_write) = pipe().map_err(fail)?;
    let (err_read, err_write) = pipe().map_err(fail)?;
    let fds = ChildFds {
        procs: cgroup_procs.map(AsRawFd::as_raw_fd),
        go_read: go_read.as_raw_fd(),
        go_write: go_write.as_raw_fd(),
        err_write: err_write.as_raw_fd(),
    };
    // SAFETY: fork has no preconditions; the child runs only `exec_when_told`, which calls
    // async-signal-safe functions on memory prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child of a fork; the pointers stay valid (this process's copy).
        unsafe { exec_when_told(&fds, path.as_ptr(), argv_ptrs.as_ptr()) }
    }
    drop((go_read, err_write));
    Ok(Held {
        pid,
        go: Some(go_write),
        exec_error: Some(err_read),
        program: program.clone(),
    })
}

/// The descriptors the held child uses.
struct ChildFds {
    procs: Option<RawFd>,
    go_read: RawFd,
    go_write: RawFd,
    err_write: RawFd,
}

/// In the child, between fork and exec: default actions for the signals memlens handles (a
/// signal sent while it is held acts on it as on the program) and for SIGPIPE (Rust ignores
/// it; an exec would keep it ignored); the signal mask is left as memlens got it, as a shell
/// would; then the cgroup, memlens's go and the exec. An exec failure is reported to memlens
/// as an errno through a close-on-exec pipe.
///
/// # Safety
/// Only in the child of a fork, with `path` and `argv` valid NUL-terminated strings.
unsafe fn exec_when_told(
    fds: &ChildFds,
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
) -> ! {
    // SAFETY: signal, write, close, read, execvp and _exit are
    // async-signal-safe; every pointer was prepared before the fork.
    unsafe {
        let ignored = IGNORED_AT_START.load(Ordering::SeqCst);
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD, libc::SIGPIPE]) {
            if ignored & (1u64 << sig) == 0 {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if let Some(fd) = fds.procs {
            let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        libc::close(fds.go_write);
        let mut b = 0u8;
        loop {
            let n = libc::read(fds.go_read, (&mut b as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // memlens gave up (or died): do not run the program.
            libc::_exit(127);
        }
        libc::execvp(path, argv);
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        let _ = libc::write(fds.err_write, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

impl Held {
    /// Lets the program run; returns its PID once it has been executed, or why it could not.
    pub fn release(mut self) -> Result<u32, SpawnError> {
        if let Some(go) = self.go.take() {
            // SAFETY: a one-byte write to the pipe memlens owns.
            let _ = unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        }
        // The error pipe closes at the exec (end of file), or carries the exec's errno.
        let mut buf = [0u8; 4];
        let mut n = 0;
        if let Some(err) = self.exec_error.take() {
            let mut f = File::from(err);
            while n < buf.len() {
                match std::io::Read::read(&mut f, &mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if n == 0 {
            return u32::try_from(self.pid)
                .map_err(|_| spawn_error(&self.program, std::io::Error::other("bad PID")));
        }
        self.reap();
        let errno = i32::from_ne_bytes(buf);
        Err(spawn_error(
            &self.program,
            std::io::Error::from_raw_os_error(errno),
        ))
    }

    /// Makes the held child exit without running the program, and reaps it.
    pub fn cancel(mut self) {
        self.go = None;
        self.reap();
    }

    fn reap(&mut self) {
        if self.pid > 0 {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is an out-parameter we own.
            while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
            self.pid = 0;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.go.is_some() {
            self.go = None;
            self.reap();
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

extern "C" fn child_exited(_sig: libc::c_int) {
    wake();
}

/// Makes the [`Waiter`] return (from a signal handler: only write(2)).
fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe (EAGAIN) already wakes the waiter.
        unsafe {
            libc::write(fd, b"!".as_ptr().cast(), 1);
        }
    }
}

fn install(sig: i32, handler: libc::sighandler_t, siginfo: bool) {
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

/// Waits for the next tick, a signal, or the end of a process, whichever comes first: the
/// supervision loops of `run` and `record` sleep here instead of for a whole interval, so they
/// end as soon as the program exits or a signal arrives, however long `--interval` is.
///
/// The signal handlers of this module (forwarding, stop, `SIGCHLD`) write a byte into a
/// close-on-exec pipe that [`Waiter::wait_until`] polls (the self-pipe trick); the processes
/// given to [`Waiter::watch`] are polled through pidfds (`pidfd_open`, Linux 5.3), which
/// become readable when the process exits, whoever its parent is.
#[derive(Debug)]
pub struct Waiter {
    read: OwnedFd,
    write: OwnedFd,
    pidfds: HashMap<u32, OwnedFd>,
    /// Watched processes seen exiting, not watched again while listed (a zombie's pidfd stays
    /// readable until its parent reaps it).
    exited: std::collections::HashSet<u32>,
    /// A watched process was already gone when memlens tried to watch it.
    gone: bool,
}

impl Waiter {
    /// The most pidfds a waiter holds: the sampler keeps files open for every process too.
    pub const MAX_WATCHED: usize = 128;

    /// Creates the waiter and points the signal handlers at it. One waiter at a time.
    pub fn new() -> std::io::Result<Waiter> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(Waiter {
            read,
            write,
            pidfds: HashMap::new(),
            exited: std::collections::HashSet::new(),
            gone: false,
        })
    }

    /// Also wakes when a child of memlens exits (`SIGCHLD`): `run`'s program and the orphans
    /// memlens reaps as a subreaper.
    pub fn wake_on_child_exit(&self) {
        install(
            libc::SIGCHLD,
            child_exited as extern "C" fn(libc::c_int) as libc::sighandler_t,
            false,
        );
    }

    /// Watches these processes (`record`: the live processes of the tree): a pidfd is opened
    /// for each new one, up to [`Waiter::MAX_WATCHED`] (the others' exits are seen at the next
    /// tick), and closed for those no longer listed.
    pub fn watch(&mut self, pids: &[u32]) {
        let listed: std::collections::HashSet<u32> = pids.iter().copied().collect();
        self.pidfds.retain(|pid, _| listed.contains(pid));
        self.exited.retain(|pid| listed.contains(pid));
        for &pid in pids {
            if self.pidfds.len() >= Self::MAX_WATCHED {
                break;
            }
            if self.pidfds.contains_key(&pid) || self.exited.contains(&pid) {
                continue;
            }
            let Ok(raw) = libc::pid_t::try_from(pid) else {
                continue;
            };
            // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
            if fd >= 0 {
                // SAFETY: the descriptor was just created and is owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                self.pidfds.insert(pid, fd);
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                self.exited.insert(pid);
                self.gone = true;
            }
            // Other failures (a kernel without pidfds): that process's exit is seen at the
            // next tick instead.
        }
    }

    /// Sleeps until `deadline`, or less: returns `true` when woken early by a signal, the exit
    /// of a child or of a watched process.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        if std::mem::take(&mut self.gone) {
            return true;
        }
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.read.as_raw_fd())
            .chain(self.pidfds.values().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up, so a wait never ends just before its deadline and spins.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            // EINTR: a signal arrived; its handler also wrote into the pipe.
            self.drain();
            return true;
        }
        if n == 0 {
            return false;
        }
        if fds[0].revents != 0 {
            self.drain();
        }
        let exited: Vec<RawFd> = fds[1..]
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| p.fd)
            .collect();
        // A process seen exiting is not watched again (its pidfd would stay readable).
        let done: Vec<u32> = self
            .pidfds
            .iter()
            .filter(|(_, fd)| exited.contains(&fd.as_raw_fd()))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in done {
            self.pidfds.remove(&pid);
            self.exited.insert(pid);
        }
        true
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a buffer we own from a non-blocking pipe we own.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = WAKE_FD.compare_exchange(
            self.write.as_raw_fd(),
            -1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// The deadline of the next tick: ticks fall on whole multiples of `interval` after `start`.
pub fn next_tick(start: Instant, interval: std::time::Duration) -> Instant {
    let iv = interval.as_nanos().max(1);
    let done = start.elapsed().as_nanos() / iv + 1;
    let offset = u64::try_from(done * iv).unwrap_or(u64::MAX);
    start + std::time::Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn a_watched_process_ending_wakes_the_waiter() {
        let mut w = Waiter::new().unwrap();
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id();
        w.watch(&[pid]);
        // Nothing has happened yet: the wait runs to its (short) deadline.
        assert!(!w.wait_until(Instant::now() + Duration::from_millis(1)));
        child.kill().unwrap();
        // The exit ends the wait long before its deadline (a hang would fail it).
        assert!(w.wait_until(Instant::now() + Duration::from_secs(600)));
        child.wait().unwrap();
        // Seen once: the same (reaped) process does not wake it again while still listed.
        w.watch(&[pid]);
        assert!(!w.wait_until(Instant::now() + Duration::from_millis(1)));
        // A process already gone when watched wakes it at once.
        w.watch(&[]);
        w.watch(&[pid]);
        assert!(w.wait_until(Instant::now() + Duration::from_secs(600)));
    }

    #[test]
    fn ticks_fall_on_multiples_of_the_interval() {
        let start = Instant::now();
        let iv = Duration::from_millis(7);
        let next = next_tick(start, iv);
        let offset = next.duration_since(start).as_nanos();
        assert_eq!(offset % iv.as_nanos(), 0);
        assert!(next > Instant::now() - iv);
    }
}
