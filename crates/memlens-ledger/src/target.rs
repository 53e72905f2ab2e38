//! Whether a PID can be a target at all, who traces it, and what a `/proc` failure means: the
//! answers the CLI words into messages and exit codes, so that it needs no `/proc` reader of
//! its own.

use memlens_procfs::Process;

/// The error of a `/proc` read ([`memlens_procfs::Error`]), as the ledger's readers return it.
pub use memlens_procfs::Error as ReadError;

/// What a failed `/proc` read means for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The process does not exist (any more).
    ProcessGone {
        /// Its PID.
        pid: u32,
    },
    /// The kernel refused the read; the PID when the path names one (`/proc/PID/...`).
    PermissionDenied {
        /// The process whose file was refused, when known.
        pid: Option<u32>,
    },
    /// A kernel thread: no user-space memory.
    KernelThread {
        /// Its PID.
        pid: u32,
    },
    /// Anything else (I/O, a file that does not parse): the message says it.
    Other,
}

/// What `e` means for the user.
pub fn cause(e: &ReadError) -> Cause {
    match e {
        ReadError::ProcessGone { pid } => Cause::ProcessGone { pid: *pid },
        ReadError::PermissionDenied { path } => Cause::PermissionDenied {
            pid: path
                .iter()
                .nth(2)
                .and_then(|c| c.to_str())
                .and_then(|c| c.parse().ok()),
        },
        ReadError::KernelThread { pid } => Cause::KernelThread { pid: *pid },
        _ => Cause::Other,
    }
}

/// Why a PID cannot be a target, whatever the command.
#[derive(Debug)]
pub enum Unfit {
    /// It does not exist (the `/proc` error that said so).
    Gone(ReadError),
    /// It has exited and waits to be reaped by its parent (a zombie): no memory left.
    Exited {
        /// The parent that has not reaped it.
        ppid: u32,
    },
    /// A kernel thread (the error that says so).
    KernelThread(ReadError),
}

/// Whether `pid` cannot be a target: it does not exist, has exited (a zombie) or is a kernel
/// thread. `None` for a live user process, or one whose state cannot be read (the command's
/// own read then says why).
pub fn unfit(pid: u32) -> Option<Unfit> {
    let status = match Process::new(pid).and_then(|p| p.status()) {
        Ok(s) => s,
        Err(e @ ReadError::ProcessGone { .. }) => return Some(Unfit::Gone(e)),
        Err(_) => return None,
    };
    if status.has_exited() {
        return Some(Unfit::Exited { ppid: status.ppid });
    }
    if status.is_kernel_thread() {
        return Some(Unfit::KernelThread(ReadError::KernelThread { pid }));
    }
    None
}

/// The process tracing another one (from `TracerPid` in its `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracer {
    /// Its PID.
    pub pid: u32,
    /// Its name (`comm`), raw; empty when it could not be read.
    pub name: String,
}

/// Who traces `pid` (gdb, strace, py-spy...), if anyone: such a process cannot be paused, as a
/// process has one tracer at a time.
pub fn tracer_of(pid: u32) -> Option<Tracer> {
    let status = Process::new(pid).and_then(|p| p.status()).ok()?;
    if status.tracer_pid == 0 {
        return None;
    }
    let name = Process::new(status.tracer_pid)
        .and_then(|p| p.status())
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .unwrap_or_default();
    Some(Tracer {
        pid: status.tracer_pid,
        name,
    })
}

/// Whether `pid` is a kernel thread (`false` when its state cannot be read).
pub fn is_kernel_thread(pid: u32) -> bool {
    Process::new(pid)
        .and_then(|p| p.status())
        .is_ok_and(|s| s.is_kernel_thread())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_missing_and_kernel_threads() {
        assert!(unfit(std::process::id()).is_none());
        assert!(tracer_of(std::process::id()).is_none());
        assert!(matches!(unfit(u32::MAX), Some(Unfit::Gone(_))));
        if let Some(pid) = (2..64).find(|&pid| is_kernel_thread(pid)) {
            assert!(matches!(unfit(pid), Some(Unfit::KernelThread(_))));
        }
        let e = ReadError::PermissionDenied {
            path: "/proc/42/smaps".into(),
        };
        assert_eq!(cause(&e), Cause::PermissionDenied { pid: Some(42) });
        assert_eq!(
            cause(&ReadError::ProcessGone { pid: 7 }),
            Cause::ProcessGone { pid: 7 }
        );
    }
}
