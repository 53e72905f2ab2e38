//! Finding the new processes of a tree at a cost that does not grow with its threads.
//!
//! A child is listed in `/proc/PID/task/TID/children` of the thread that forked it. Reading
//! every thread's file every pass costs a syscall per thread (2,000 threads at 50 passes a
//! second are 100,000 reads a second, several percent of a core) and keeping them open costs
//! a descriptor per thread. So each process keeps only its main thread's file open (most
//! forks come from it) and its other threads' files are visited a few per pass, in turn, and
//! only while a new task may exist: `/proc/loadavg` names the last PID the kernel handed out
//! (threads included), so when it has not moved since a full turn over the threads, nothing
//! new can be hiding there. Under `run`, the tree's own cgroup lists every process in one
//! read, and no thread file is needed at all.

use std::fs::File;
use std::path::Path;

use memlens_procfs::bytes::{fields, parse_u64};

/// Reads a whole kept-open `/proc` file from offset 0 into `buf`; returns its length, 0 when
/// the read failed (the process or thread exited: it has no children to list).
fn pread_all(f: &File, buf: &mut Vec<u8>) -> usize {
    memlens_procfs::read_from_start(f, buf).unwrap_or(0)
}

fn pids_in(bytes: &[u8], out: &mut Vec<u32>) {
    out.extend(
        fields(bytes)
            .filter_map(parse_u64)
            .filter_map(|p| u32::try_from(p).ok()),
    );
}

/// The `children` files of one process's threads.
#[derive(Debug, Default)]
pub(crate) struct ThreadChildren {
    main: Option<File>,
    /// The other threads, visited in turn from `cursor`; re-listed after each turn.
    tids: Vec<u32>,
    cursor: usize,
}

impl ThreadChildren {
    /// Opens the main thread's file of `pid` (none when the process is gone or unreadable).
    pub(crate) fn open(pid: u32) -> ThreadChildren {
        let main = File::open(format!("/proc/{pid}/task/{pid}/children")).ok();
        ThreadChildren {
            main,
            tids: Vec::new(),
            cursor: 0,
        }
    }

    /// The children of the main thread.
    pub(crate) fn read_main(&self, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
        if let Some(f) = &self.main {
            let n = pread_all(f, buf);
            pids_in(&buf[..n], out);
        }
    }

    /// Visits up to `max` of the other threads' files (opened and closed each time); returns
    /// how many were visited and whether the turn over the threads ended (the list is read
    /// again at the start of the next).
    pub(crate) fn visit(
        &mut self,
        pid: u32,
        max: usize,
        buf: &mut Vec<u8>,
        out: &mut Vec<u32>,
    ) -> (usize, bool) {
        if self.cursor == 0 {
            self.list(pid);
        }
        let mut visited = 0;
        while visited < max && self.cursor < self.tids.len() {
            let tid = self.tids[self.cursor];
            self.cursor += 1;
            visited += 1;
            if let Ok(f) = File::open(format!("/proc/{pid}/task/{tid}/children")) {
                let n = pread_all(&f, buf);
                pids_in(&buf[..n], out);
            }
        }
        let done = self.cursor >= self.tids.len();
        if done {
            self.cursor = 0;
        }
        (visited, done)
    }

    fn list(&mut self, pid: u32) {
        self.tids.clear();
        let dir = Path::new("/proc").join(pid.to_string()).join("task");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let tid = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok());
                if let Some(tid) = tid.filter(|&t| t != pid) {
                    self.tids.push(tid);
                }
            }
        }
    }
}

/// The last PID the kernel handed out in memlens's PID namespace (`/proc/loadavg`, 5th field):
/// when it has not moved, no process or thread was created.
#[derive(Debug)]
pub(crate) struct LastPid {
    file: Option<File>,
    last: Option<u64>,
}

impl LastPid {
    pub(crate) fn open() -> LastPid {
        LastPid {
            file: File::open("/proc/loadavg").ok(),
            last: None,
        }
    }

    /// Whether a task may have been created since the last call (always, when unreadable).
    pub(crate) fn moved(&mut self, buf: &mut Vec<u8>) -> bool {
        let now = self.file.as_ref().and_then(|f| {
            let n = pread_all(f, buf);
            fields(&buf[..n]).nth(4).and_then(parse_u64)
        });
        let moved = now.is_none() || now != self.last;
        self.last = now;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_of_a_secondary_thread_is_found_in_turn() {
        // A thread forks a child and stays alive: the child is listed in that thread's file,
        // not in the main thread's, and a turn over the threads finds it.
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let forker = std::thread::spawn(move || {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep starts");
            tx.send(child.id()).expect("send");
            let _ = done_rx.recv();
            let _ = child.kill();
            let _ = child.wait();
        });
        let child = rx.recv().expect("child pid");
        let mut tc = ThreadChildren::open(me);
        let (mut buf, mut main, mut found) = (Vec::new(), Vec::new(), Vec::new());
        tc.read_main(&mut buf, &mut main);
        let mut turns = 0;
        while turns < 2 && !found.contains(&child) {
            let (visited, done) = tc.visit(me, 2, &mut buf, &mut found);
            assert!(visited <= 2);
            turns += usize::from(done);
        }
        let _ = done_tx.send(());
        forker.join().expect("thread");
        assert!(!main.contains(&child), "listed under the main thread");
        assert!(found.contains(&child), "not found in a turn: {found:?}");
    }

    #[test]
    fn last_pid_moves_when_a_task_is_created() {
        let mut lp = LastPid::open();
        let mut buf = Vec::new();
        lp.moved(&mut buf);
        std::process::Command::new("true")
            .status()
            .expect("true runs");
        assert!(lp.moved(&mut buf));
    }
}
