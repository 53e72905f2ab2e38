//! Starting a program held before exec: it joins its memory cgroup while memlens prepares the
//! recording, and runs only when released.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{spawn_error, SpawnError};
use crate::signals::{ignored_at_start, FORWARDED};

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
    hold_with_env(program, args, cgroup_procs, &[])
}

/// As [`hold`], with `env` set in the program's environment (each replacing the variable of
/// the same name in memlens's own; memlens's environment itself is not changed).
pub fn hold_with_env(
    program: &OsString,
    args: &[OsString],
    cgroup_procs: Option<&File>,
    env: &[(OsString, OsString)],
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
    let envp = if env.is_empty() {
        None
    } else {
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
            .collect();
        vars.extend(env.iter().cloned());
        let strings: Vec<CString> = vars
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv)
            })
            .collect::<Result<_, _>>()
            .map_err(|_| nul())?;
        Some(strings)
    };
    let mut envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .flatten()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptr = envp.as_ref().map(|_| envp_ptrs.as_mut_ptr().cast_const());
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
        unsafe { exec_when_told(&fds, path.as_ptr(), argv_ptrs.as_ptr(), envp_ptr) }
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
/// Only in the child of a fork, with `path` and `argv` (and `envp` when given) valid
/// NUL-terminated strings and arrays.
unsafe fn exec_when_told(
    fds: &ChildFds,
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: Option<*const *const libc::c_char>,
) -> ! {
    // SAFETY: signal, write, close, read, execvp(e) and _exit are
    // async-signal-safe; every pointer was prepared before the fork.
    unsafe {
        let ignored = ignored_at_start();
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
        match envp {
            Some(envp) => libc::execvpe(path, argv, envp),
            None => libc::execvp(path, argv),
        };
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        let _ = libc::write(fds.err_write, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

impl Held {
    /// The PID of the held child.
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pid).unwrap_or(0)
    }

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
