//! A short, guarded stop of every thread of a process, for a consistent read.
//!
//! Mechanism: each thread is attached with `PTRACE_SEIZE` and stopped with `PTRACE_INTERRUPT`.
//! No `SIGSTOP` is ever sent, so the process is never put in a job-control (group) stop that
//! could outlive memlens. Resuming is `PTRACE_DETACH` of each thread, done by [`Drop`] — on
//! success, on error and while a panic unwinds. If memlens dies instead (SIGKILL, SIGINT,
//! SIGTERM, abort), the kernel detaches every tracee of the exiting tracer and wakes those in a
//! ptrace stop (`exit_ptrace` → `__ptrace_unlink`), so the target always runs on.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Threads that do not reach the stop in this time make the pause fail (and resume all).
const STOP_TIMEOUT: Duration = Duration::from_millis(2000);

/// While alive, every thread of the process is stopped. Dropping it resumes them.
#[derive(Debug)]
pub struct Pause {
    pid: u32,
    /// Stopped threads, with a signal to re-deliver on detach (0 for none).
    threads: Vec<(i32, i32)>,
    started: Instant,
}

fn ptrace(req: libc::c_uint, tid: i32, data: usize) -> std::io::Result<()> {
    // SAFETY: the requests used here (SEIZE, INTERRUPT, DETACH) take no pointer arguments:
    // `addr` is null and `data` is an integer (options or a signal number).
    let r = unsafe {
        libc::ptrace(
            req,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn task_ids(pid: u32) -> Result<Vec<i32>> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| Error::from_os(pid, "list the threads of", e))?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Whether `pid` has exited (a zombie, or no process at all).
fn exited(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = stat
                .iter()
                .rposition(|b| *b == b')')
                .and_then(|i| stat.get(i + 2));
            matches!(after, Some(b'Z') | Some(b'X'))
        }
        Err(_) => true,
    }
}

impl Pause {
    /// Stops every thread of `pid`, including threads created while stopping.
    pub fn stop(pid: u32) -> Result<Pause> {
        let mut pause = Pause {
            pid,
            threads: Vec::new(),
            started: Instant::now(),
        };
        let mut seized: Vec<i32> = Vec::new();
        loop {
            let fresh: Vec<i32> = task_ids(pid)?
                .into_iter()
                .filter(|t| !seized.contains(t))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for tid in fresh {
                match ptrace(libc::PTRACE_SEIZE, tid, 0) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) => {
                        // `pause` drops here and detaches what was seized
                        pause.threads.extend(seized.iter().map(|t| (*t, 0)));
                        if exited(pid) {
                            // a zombie refuses ptrace with EPERM: it is gone, not forbidden
                            return Err(Error::ProcessGone { pid });
                        }
                        return Err(Error::from_os(pid, "pause (ptrace)", e));
                    }
                }
                seized.push(tid);
                if let Err(e) = ptrace(libc::PTRACE_INTERRUPT, tid, 0) {
                    log::debug!("PTRACE_INTERRUPT {tid}: {e}");
                }
            }
        }
        // Record every seized thread first so that Drop detaches them whatever happens next.
        pause.threads = seized.iter().map(|t| (*t, 0)).collect();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut i = 0;
        while i < pause.threads.len() {
            let tid = pause.threads[i].0;
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a valid, writable c_int for the duration of the call.
            let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == 0 {
                if Instant::now() > deadline {
                    return Err(Error::StopTimeout {
                        pid,
                        tid,
                        ms: STOP_TIMEOUT.as_millis() as u64,
                    });
                }
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ECHILD) {
                    pause.threads.remove(i); // exited
                    continue;
                }
                return Err(Error::from_os(pid, "pause (waitpid)", e));
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                pause.threads.remove(i);
                continue;
            }
            if libc::WIFSTOPPED(status) {
                let event = (status >> 16) & 0xff;
                let sig = libc::WSTOPSIG(status);
                if event == libc::PTRACE_EVENT_STOP {
                    // The interrupt stop (or a group stop): nothing to re-deliver.
                } else {
                    // A signal arrived first: the thread is stopped in signal-delivery; give the
                    // signal back when detaching.
                    pause.threads[i].1 = sig;
                }
            }
            i += 1;
        }
        log::debug!(
            "paused {} threads of {pid} in {:?}",
            pause.threads.len(),
            pause.started.elapsed()
        );
        Ok(pause)
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stopped threads.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Resumes the process now (same as dropping the guard); returns how long it was stopped.
    pub fn resume(mut self) -> Duration {
        self.detach_all();
        self.started.elapsed()
    }

    fn detach_all(&mut self) {
        for (tid, sig) in self.threads.drain(..) {
            if let Err(e) = ptrace(libc::PTRACE_DETACH, tid, sig as usize) {
                log::debug!("PTRACE_DETACH {tid}: {e}");
            }
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.detach_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pausing_a_zombie_says_it_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let p = Pause::stop(pid).expect("pauses a live process");
        assert_eq!(p.thread_count(), 1);
        p.resume();
        child.kill().expect("kill");
        // not reaped: a zombie
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !exited(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            matches!(Pause::stop(pid), Err(Error::ProcessGone { pid: p }) if p == pid),
            "{:?}",
            Pause::stop(pid).err()
        );
        child.wait().expect("reaped");
        assert!(matches!(Pause::stop(pid), Err(Error::ProcessGone { .. })));
    }
}
