//! Process tracking: the processes of the tree memlens follows, alive or exited, their cheap
//! counters (`statm` every tick, `status` every few) and the discovery of new ones.

use std::collections::{HashMap, HashSet};

use memlens_launch::OwnCgroup;
use memlens_ledger::process::cmdline_string as cmdline_string_of;
use memlens_procfs::{CounterFiles, Error as ProcError, Process};

use crate::discovery::{LastPid, ThreadChildren};
use crate::error::Result;
use crate::python::PythonView;
use crate::writer::{Counters, ProcessInfo, RecordingWriter};

/// `status` is read every this many ticks (`statm` in between).
const STATUS_EVERY: u32 = 5;

/// Other threads' `children` files visited per discovery pass, over the whole tree.
const THREAD_FILES_PER_PASS: usize = 8;

/// One process of the tree, alive (its counter files open) or exited (its last figures).
#[derive(Debug)]
pub(super) struct Tracked {
    /// Its row in the recording.
    pub(super) id: i64,
    pub(super) pid: u32,
    pub(super) name: Vec<u8>,
    pub(super) files: Option<CounterFiles>,
    pub(super) children: ThreadChildren,
    pub(super) last: Counters,
    pub(super) stored: Option<Counters>,
    pub(super) first_t: f64,
    pub(super) last_t: f64,
    pub(super) exit_t: Option<f64>,
    /// PSS / RSS at the last read, to estimate PSS from RSS between reads.
    pub(super) pss_ratio: Option<f64>,
    pub(super) peak_pss: u64,
    pub(super) ru_maxrss: Option<u64>,
    pub(super) had_children: bool,
    pub(super) cmdline_rechecks: u8,
    pub(super) status_countdown: u32,
    /// Its `smaps` could not be read (noted in the recording once).
    pub(super) unreadable: bool,
    /// When its Python view was last read (`NEG_INFINITY`: never).
    pub(super) python_t: f64,
    /// Its Python view was read: an interpreter is attached, so a ledger may ask for the
    /// arenas (asking a process that is not attached would attach it inside the ledger).
    pub(super) python_seen: bool,
    /// When its last census was taken (`NEG_INFINITY`: never).
    pub(super) census_t: f64,
}

impl Tracked {
    pub(super) fn alive(&self) -> bool {
        self.files.is_some()
    }

    /// PSS estimated from RSS and the ratio at the last read; RSS itself before any read.
    pub(super) fn pss_estimate(&self) -> u64 {
        (self.last.rss as f64 * self.pss_ratio.unwrap_or(1.0)) as u64
    }
}

/// Whether a process's counters moved enough since its last stored row to store another:
/// any change of VmHWM, threads or swap; RSS or its anonymous part by 64 KiB or 0.1 %. The
/// tree's exact sums are in `ticks` every tick; this keeps busy processes from writing a row
/// per process per tick for a page or two.
fn worth_storing(stored: Option<&Counters>, c: &Counters) -> bool {
    let Some(s) = stored else {
        return true;
    };
    let moved = |a: u64, b: u64| a.abs_diff(b) >= (64 << 10).max(b / 1000);
    s.vm_hwm != c.vm_hwm
        || s.threads != c.threads
        || s.swap != c.swap
        || moved(s.rss, c.rss)
        || moved(s.anon, c.anon)
}

pub(super) fn is_gone(e: &ProcError) -> bool {
    matches!(e, ProcError::ProcessGone { .. })
}

/// The processes followed: every one seen (exited ones keep their last figures), the live
/// ones by PID, and the state of the search for new ones.
#[derive(Debug)]
pub(super) struct Tree {
    pub(super) procs: Vec<Tracked>,
    /// Live processes: PID to index in `procs`.
    pub(super) live: HashMap<u32, usize>,
    /// (PID, start time) of every process ever followed: a process is new once.
    seen: HashSet<(u32, u64)>,
    /// Other processes whose new children join the tree (memlens as a subreaper).
    extra_parents: Vec<(u32, ThreadChildren)>,
    last_pid: LastPid,
    /// Processes still owed a full turn over their threads' `children` files.
    turns_owed: usize,
    thread_turn: usize,
    buf: Vec<u8>,
}

impl Tree {
    pub(super) fn new() -> Tree {
        Tree {
            procs: Vec::new(),
            live: HashMap::new(),
            seen: HashSet::new(),
            extra_parents: Vec::new(),
            last_pid: LastPid::open(),
            turns_owed: 0,
            thread_turn: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Also adopts new children of `pid` (only its main thread's children are watched).
    pub(super) fn adopt_children_of(&mut self, pid: u32) {
        self.extra_parents.push((pid, ThreadChildren::open(pid)));
    }

    /// The tree's RSS (sum of the counters) and PSS (estimated between reads).
    pub(super) fn totals(&self) -> (u64, u64) {
        let mut rss = 0u64;
        let mut pss = 0u64;
        for &i in self.live.values() {
            let p = &self.procs[i];
            rss += p.last.rss;
            pss += p.pss_estimate();
        }
        (rss, pss)
    }

    pub(super) fn track(&mut self, pid: u32, t: f64, writer: &mut RecordingWriter) -> Result<()> {
        let proc = Process::new(pid)?;
        let stat = proc.stat()?;
        // A zombie (exited, not yet reaped) or a process already followed is not new.
        if stat.state == b'Z' || stat.state == b'X' || self.seen.contains(&(pid, stat.start_time)) {
            return Err(ProcError::ProcessGone { pid }.into());
        }
        self.seen.insert((pid, stat.start_time));
        let files = CounterFiles::open(pid)?;
        let cmdline = proc.cmdline().unwrap_or_default();
        let info = ProcessInfo {
            pid,
            ppid: stat.ppid,
            start_ticks: stat.start_time,
            name: String::from_utf8_lossy(&stat.comm).into_owned(),
            cmdline: cmdline_string_of(&cmdline),
        };
        let id = writer.add_process(&info, t)?;
        // A fresh fork shares its parent's pages: both hold about half of them until PSS is
        // read again (soon: the tree's RSS sum jumps, which calls for a ledger).
        let mut parent_ratio = None;
        if let Some(&pi) = self.live.get(&stat.ppid) {
            let parent = &mut self.procs[pi];
            parent.had_children = true;
            parent.pss_ratio = parent.pss_ratio.map(|r| r / 2.0);
            parent_ratio = parent.pss_ratio;
        }
        self.live.insert(pid, self.procs.len());
        self.procs.push(Tracked {
            id,
            pid,
            name: stat.comm,
            files: Some(files),
            children: ThreadChildren::open(pid),
            last: Counters::default(),
            stored: None,
            first_t: t,
            last_t: t,
            exit_t: None,
            pss_ratio: parent_ratio,
            peak_pss: 0,
            ru_maxrss: None,
            had_children: false,
            cmdline_rechecks: 0,
            status_countdown: 0,
            unreadable: false,
            python_t: f64::NEG_INFINITY,
            python_seen: false,
            census_t: f64::NEG_INFINITY,
        });
        self.turns_owed = self.live.len();
        writer.event(
            t,
            "start",
            Some(id),
            &format!("pid {pid}: {}", info.cmdline),
        )?;
        Ok(())
    }

    fn mark_exited(&mut self, i: usize, t: f64, writer: &mut RecordingWriter) -> Result<()> {
        let p = &mut self.procs[i];
        if !p.alive() {
            return Ok(());
        }
        p.files = None;
        p.children = ThreadChildren::default();
        p.exit_t = Some(t);
        self.live.remove(&p.pid);
        let (id, last_t, hwm, peak, ru) = (p.id, p.last_t, p.last.vm_hwm, p.peak_pss, p.ru_maxrss);
        writer.close_process(id, last_t, Some(t), hwm, peak, ru)?;
        Ok(writer.event(t, "exit", Some(id), &format!("pid {}", p.pid))?)
    }

    /// memlens reaped a process (`wait4`): it is gone, and its `ru_maxrss`
    /// is its exact peak RSS when it had no children of its own.
    /// A process memlens never saw alive (it exited before the first tick) is added with
    /// `fallback` as its command line when one is given.
    pub(super) fn reaped(
        &mut self,
        pid: u32,
        max_rss: u64,
        fallback: Option<&str>,
        t: f64,
        writer: &mut RecordingWriter,
    ) -> Result<()> {
        let Some(i) = self.procs.iter().rposition(|p| p.pid == pid) else {
            if let Some(cmdline) = fallback {
                let info = ProcessInfo {
                    pid,
                    ppid: std::process::id(),
                    start_ticks: 0,
                    name: cmdline
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    cmdline: cmdline.to_string(),
                };
                let id = writer.add_process(&info, 0.0)?;
                writer.close_process(id, 0.0, Some(t), max_rss, 0, Some(max_rss))?;
                writer.event(
                    t,
                    "exit",
                    Some(id),
                    &format!("pid {pid} (exited before the first sample)"),
                )?;
            }
            return Ok(());
        };
        let p = &mut self.procs[i];
        p.ru_maxrss = Some(max_rss);
        if !p.had_children && max_rss > p.last.vm_hwm {
            p.last.vm_hwm = max_rss;
        }
        if p.alive() {
            self.mark_exited(i, t, writer)
        } else {
            self.close_process(i, writer)
        }
    }

    /// Writes the final figures of process `i`.
    pub(super) fn close_process(&self, i: usize, writer: &mut RecordingWriter) -> Result<()> {
        let p = &self.procs[i];
        Ok(writer.close_process(
            p.id,
            p.last_t,
            p.exit_t,
            p.last.vm_hwm,
            p.peak_pss,
            p.ru_maxrss,
        )?)
    }

    /// Reads the counters of every live process (see [`STATUS_EVERY`]) and stores those that
    /// moved; an exec or a process gone is noted.
    pub(super) fn read_counters(
        &mut self,
        t: f64,
        writer: &mut RecordingWriter,
        python: &mut Option<Box<dyn PythonView>>,
    ) -> Result<()> {
        let live: Vec<usize> = self.live.values().copied().collect();
        for i in live {
            let p = &mut self.procs[i];
            let Some(files) = p.files.as_mut() else {
                continue;
            };
            // `statm` every tick (about 2 µs: RSS and its shared part); `status` (VmHWM, the
            // anon/file/shmem split, swap, threads, the name that changes on exec) every few
            // ticks. Between them, RSS above the last VmHWM read raises VmHWM to RSS (it is at
            // least that); VmHWM only grows, so a spike between two reads is caught by the next.
            let full = p.status_countdown == 0;
            if !full {
                match files.statm() {
                    Ok(sm) if sm.resident > 0 => {
                        p.status_countdown -= 1;
                        let shmem = p.last.shmem.min(sm.shared);
                        let c = Counters {
                            rss: sm.resident,
                            anon: sm.resident.saturating_sub(sm.shared),
                            file: sm.shared - shmem,
                            shmem,
                            vm_hwm: p.last.vm_hwm.max(sm.resident),
                            ..p.last
                        };
                        p.last = c;
                        p.last_t = t;
                        if worth_storing(p.stored.as_ref(), &c) {
                            let id = p.id;
                            p.stored = Some(c);
                            writer.sample(t, id, &c)?;
                        }
                        continue;
                    }
                    // No address space (exiting): read status now.
                    Ok(_) => {}
                    Err(e) if is_gone(&e) => {
                        self.mark_exited(i, t, writer)?;
                        continue;
                    }
                    Err(e) => log::debug!("pid {}: statm: {e}", p.pid),
                }
            }
            let p = &mut self.procs[i];
            let Some(files) = p.files.as_mut() else {
                continue;
            };
            p.status_countdown = STATUS_EVERY - 1;
            match files.status() {
                Ok(st) if st.state == b'Z' || st.state == b'X' || st.vm_size == 0 => {
                    self.mark_exited(i, t, writer)?;
                }
                Ok(st) => {
                    let c = Counters {
                        rss: st.vm_rss,
                        anon: st.rss_anon,
                        file: st.rss_file,
                        shmem: st.rss_shmem,
                        swap: st.vm_swap,
                        vm_hwm: st.vm_hwm.max(p.last.vm_hwm),
                        threads: st.threads,
                    };
                    p.last = c;
                    p.last_t = t;
                    let exec = st.name != p.name;
                    let recheck = p.cmdline_rechecks < 3
                        && t - p.first_t >= [0.05, 0.5, 2.0][p.cmdline_rechecks as usize];
                    if worth_storing(p.stored.as_ref(), &c) {
                        let id = p.id;
                        p.stored = Some(c);
                        writer.sample(t, id, &c)?;
                    }
                    if exec || recheck {
                        self.refresh_identity(i, exec, writer, python)?;
                    }
                }
                Err(e) if is_gone(&e) => self.mark_exited(i, t, writer)?,
                Err(e) => {
                    log::debug!("pid {}: {e}", p.pid);
                    self.mark_exited(i, t, writer)?;
                }
            }
        }
        Ok(())
    }

    /// After an exec (new name) or at a few ages: re-reads the command line; an exec also
    /// reopens the counter files (an open `smaps_rollup` still points at the old address space).
    fn refresh_identity(
        &mut self,
        i: usize,
        exec: bool,
        writer: &mut RecordingWriter,
        python: &mut Option<Box<dyn PythonView>>,
    ) -> Result<()> {
        let p = &mut self.procs[i];
        if !exec {
            p.cmdline_rechecks += 1;
        }
        let Ok(proc) = Process::new(p.pid) else {
            return Ok(());
        };
        if exec {
            if let Some(view) = python.as_mut() {
                view.exec(p.pid);
            }
            if let Ok(f) = CounterFiles::open(p.pid) {
                p.files = Some(f);
            }
            p.pss_ratio = None;
            p.python_t = f64::NEG_INFINITY;
            p.python_seen = false;
            p.unreadable = false;
        }
        let name = proc
            .status()
            .map(|s| s.name)
            .unwrap_or_else(|_| p.name.clone());
        let cmdline = cmdline_string_of(&proc.cmdline().unwrap_or_default());
        p.name = name;
        let id = p.id;
        let name = String::from_utf8_lossy(&p.name).into_owned();
        Ok(writer.rename_process(id, &name, &cmdline)?)
    }

    /// Finds new processes: the main thread's `children` of each process
    /// (and memlens's own when it adopts orphans), the tree's cgroup when memlens made one,
    /// else a few other threads' files in turn while a new task may exist (see
    /// [`crate::discovery`]).
    pub(super) fn discover(
        &mut self,
        t: f64,
        cgroup: Option<&OwnCgroup>,
        writer: &mut RecordingWriter,
    ) -> Result<()> {
        let mut found = Vec::new();
        for &i in self.live.values() {
            self.procs[i].children.read_main(&mut self.buf, &mut found);
        }
        for (_, scan) in &self.extra_parents {
            scan.read_main(&mut self.buf, &mut found);
        }
        match cgroup {
            Some(cg) => cg.members(&mut self.buf, &mut found),
            None => self.visit_threads(&mut found),
        }
        let me = std::process::id();
        for pid in found {
            // memlens itself is never followed (see `track_existing_descendants`).
            if self.live.contains_key(&pid) || pid == me {
                continue;
            }
            match self.track(pid, t, writer) {
                Ok(()) => {}
                Err(crate::Error::Procfs(e)) => log::debug!("new child {pid}: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Visits up to [`THREAD_FILES_PER_PASS`] `children` files of other threads, process by
    /// process in turn, until each process has had one full turn since a task was last
    /// created (in memlens's PID namespace) or a process joined the tree.
    fn visit_threads(&mut self, found: &mut Vec<u32>) {
        let mut order: Vec<usize> = self.live.values().copied().collect();
        order.sort_unstable();
        let n = order.len();
        if n == 0 {
            return;
        }
        if self.last_pid.moved(&mut self.buf) {
            self.turns_owed = n;
        }
        let mut left = THREAD_FILES_PER_PASS;
        let mut steps = 0;
        while left > 0 && self.turns_owed > 0 && steps < n {
            let i = order[self.thread_turn % n];
            let p = &mut self.procs[i];
            // A process with one thread has nothing but its main thread's file, read anyway.
            let done = if p.last.threads > 1 {
                let (visited, done) = p.children.visit(p.pid, left, &mut self.buf, found);
                left = left.saturating_sub(visited.max(1));
                done
            } else {
                true
            };
            if !done {
                break;
            }
            self.thread_turn = self.thread_turn.wrapping_add(1);
            self.turns_owed -= 1;
            steps += 1;
        }
    }
}
