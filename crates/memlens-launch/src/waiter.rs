//! Waiting between ticks on a signal, a child's exit or a watched process's exit.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::signals::{child_exited, clear_wake_fd, install, set_wake_fd};

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
        set_wake_fd(write.as_raw_fd());
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
        clear_wake_fd(self.write.as_raw_fd());
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
