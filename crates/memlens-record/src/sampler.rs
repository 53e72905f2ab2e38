//! The sampler (DESIGN §7): cheap counters of every process of the tree at a fixed interval,
//! PSS from `smaps_rollup` and full ledgers within a CPU budget, a ledger whenever the tree
//! reaches a new high, new children picked up as they appear, exited ones kept with their last
//! figures. The expensive reads are scheduled in [`reads`].

mod reads;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use memlens_ledger::process::cmdline_string as cmdline_string_of;
use memlens_procfs::{CounterFiles, Error as ProcError, Process};

use crate::budget::{Budget, CostModel};
use crate::cgroup::OwnCgroup;
use crate::cputime::{process_cpu_seconds, thread_cpu_seconds};
use crate::discovery::{LastPid, ThreadChildren};
use crate::error::Result;
use crate::python::PythonView;
use crate::writer::{Counters, ProcessInfo, RecordingWriter};

/// `status` is read every this many ticks (`statm` in between).
const STATUS_EVERY: u32 = 5;

/// Other threads' `children` files visited per discovery pass, over the whole tree.
const THREAD_FILES_PER_PASS: usize = 8;

/// How the sampler works.
#[derive(Debug, Clone)]
pub struct Config {
    /// Period of the cheap counters (default 10 ms); the budget spaces ticks out when the
    /// counters of a large tree alone would cost more than half of it.
    pub interval: Duration,
    /// Share of one core memlens may spend recording: a ceiling on everything it does.
    pub cpu_budget: f64,
    /// Period of full ledgers (default 1 s), stretched when the budget cannot afford them;
    /// a ledger is also taken whenever the tree reaches a new high.
    pub ledger_interval: Duration,
    /// Shortest period between two rounds of PSS reads of the tree (default 100 ms): the
    /// budget is a ceiling, not a target, and PSS between reads is estimated from RSS.
    pub pss_interval: Duration,
    /// Period of commits: what a crash can lose at most.
    pub commit_interval: Duration,
    /// Ask the Python view for a census this often (`None`: never).
    pub census_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_millis(10),
            cpu_budget: 0.02,
            ledger_interval: Duration::from_secs(1),
            pss_interval: Duration::from_millis(100),
            commit_interval: Duration::from_millis(500),
            census_interval: None,
        }
    }
}

#[derive(Debug)]
struct Tracked {
    id: i64,
    pid: u32,
    name: Vec<u8>,
    files: Option<CounterFiles>,
    children: ThreadChildren,
    last: Counters,
    stored: Option<Counters>,
    first_t: f64,
    last_t: f64,
    exit_t: Option<f64>,
    /// PSS / RSS at the last read, to estimate PSS from RSS between reads.
    pss_ratio: Option<f64>,
    peak_pss: u64,
    ru_maxrss: Option<u64>,
    had_children: bool,
    cmdline_rechecks: u8,
    status_countdown: u32,
    /// Its `smaps` could not be read (noted in the recording once).
    unreadable: bool,
    /// When its Python view was last read (`NEG_INFINITY`: never).
    python_t: f64,
    /// Its Python view was read: an interpreter is attached, so a ledger may ask for the
    /// arenas (asking a process that is not attached would attach it inside the ledger).
    python_seen: bool,
    /// When its last census was taken (`NEG_INFINITY`: never).
    census_t: f64,
}

impl Tracked {
    fn alive(&self) -> bool {
        self.files.is_some()
    }

    /// PSS estimated from RSS and the ratio at the last read; RSS itself before any read.
    fn pss_estimate(&self) -> u64 {
        (self.last.rss as f64 * self.pss_ratio.unwrap_or(1.0)) as u64
    }
}

/// What a finished recording saw, for the caller's summary.
#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// Exit code to record (`run`), if any.
    pub exit_code: Option<i32>,
    /// Signal that killed the program (`run`), if any.
    pub exit_signal: Option<i32>,
}

/// The CPU clocks at the start of the last tick, and what was charged since.
#[derive(Debug, Clone, Copy, Default)]
struct Clocks {
    thread: f64,
    process: f64,
    /// Seconds of this thread already charged (to the bucket or the background) since.
    charged: f64,
}

/// Predicted costs of the expensive reads.
#[derive(Debug, Clone)]
struct Costs {
    rollup: CostModel,
    ledger: CostModel,
}

/// Samples a process tree into a recording.
pub struct Sampler {
    cfg: Config,
    writer: RecordingWriter,
    root: u32,
    procs: Vec<Tracked>,
    live: HashMap<u32, usize>,
    seen: HashSet<(u32, u64)>,
    extra_parents: Vec<(u32, ThreadChildren)>,
    start: Instant,
    budget: Budget,
    costs: Costs,
    clocks: Option<Clocks>,
    last_commit: f64,
    last_ledger: Option<f64>,
    /// Tree RSS (sum of the counters) at the highest ledger so far.
    ledger_high: u64,
    /// Tree PSS of the highest ledger so far.
    ledger_high_pss: u64,
    /// A PSS round found the tree's PSS well above the highest ledger's (copy-on-write pages
    /// un-shared without RSS moving): the next tick takes a ledger.
    pss_high: bool,
    last_round: f64,
    python: Option<Box<dyn PythonView>>,
    cgroup: Option<OwnCgroup>,
    last_pid: LastPid,
    /// Processes still owed a full turn over their threads' `children` files.
    turns_owed: usize,
    thread_turn: usize,
    buf: Vec<u8>,
    ticks: u64,
    tree_peak_pss: u64,
    last_json: Option<f64>,
    best_ledger_pss: u64,
    /// The longest tick interval the budget imposed.
    stretched: f64,
    /// When the last tick started (s).
    last_tick: f64,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("root", &self.root)
            .field("processes", &self.procs.len())
            .finish()
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

fn is_gone(e: &ProcError) -> bool {
    matches!(e, ProcError::ProcessGone { .. })
}

impl Sampler {
    /// Starts sampling the tree of `root` (already running: `record`, or just spawned: `run`).
    /// `start` is the moment time 0 of the recording stands for.
    pub fn new(
        cfg: Config,
        writer: RecordingWriter,
        root: u32,
        start: Instant,
        cgroup: Option<OwnCgroup>,
    ) -> Result<Sampler> {
        let budget = Budget::new(cfg.cpu_budget);
        let mut s = Sampler {
            cfg,
            writer,
            root,
            procs: Vec::new(),
            live: HashMap::new(),
            seen: HashSet::new(),
            extra_parents: Vec::new(),
            start,
            budget,
            // Starting guesses (debug builds, a loaded machine); learnt from the first reads.
            costs: Costs {
                rollup: CostModel::new(0.2e-3, 15e-6),
                ledger: CostModel::new(1e-3, 20e-6),
            },
            clocks: None,
            last_commit: 0.0,
            last_ledger: None,
            ledger_high: 0,
            ledger_high_pss: 0,
            pss_high: false,
            last_round: f64::NEG_INFINITY,
            python: None,
            cgroup,
            last_pid: LastPid::open(),
            turns_owed: 0,
            thread_turn: 0,
            buf: Vec::with_capacity(4096),
            ticks: 0,
            tree_peak_pss: 0,
            last_json: None,
            best_ledger_pss: 0,
            stretched: 0.0,
            last_tick: 0.0,
        };
        // The wall-clock time of t = 0, whatever the caller did between `start` and now
        // (creating the file can take a while on a loaded disk).
        let origin = std::time::SystemTime::now()
            .checked_sub(start.elapsed())
            .and_then(|o| o.duration_since(std::time::UNIX_EPOCH).ok());
        if let Some(o) = origin {
            s.writer
                .update_meta(|m| m.started_unix = Some(o.as_secs_f64()))?;
        }
        let t = s.now();
        // A root that is already gone (a program that exited at once) leaves an empty tree:
        // the caller still has its exit status and rusage.
        match s.track(root, t) {
            Ok(()) => {}
            Err(crate::Error::Procfs(e)) if is_gone(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(s)
    }

    /// Follows the descendants the root already has (`record`: a tree that is running).
    pub fn track_existing_descendants(&mut self) -> Result<()> {
        let t = self.now();
        let table = memlens_procfs::tree::ProcessTable::scan()?;
        for pid in table.subtree(self.root).into_iter().skip(1) {
            match self.track(pid, t) {
                Ok(()) => {}
                Err(crate::Error::Procfs(e)) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Also adopts new children of `pid` (memlens itself when it is a subreaper: orphans of the
    /// tree are re-parented to it). Only the main thread's children are watched.
    pub fn adopt_children_of(&mut self, pid: u32) {
        self.extra_parents.push((pid, ThreadChildren::open(pid)));
    }

    /// Attaches the Python view (another crate provides it); without one the recording holds
    /// the OS view only.
    pub fn set_python_view(&mut self, view: Box<dyn PythonView>) {
        self.python = Some(view);
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The cgroup the program runs in, if memlens made one.
    pub fn cgroup(&self) -> Option<&OwnCgroup> {
        self.cgroup.as_ref()
    }

    /// Abandons the recording (after a write error: the file stays as last committed) and
    /// hands back the cgroup, so the caller can still remove it when the program ends.
    pub fn abandon(mut self) -> Option<OwnCgroup> {
        self.cgroup.take()
    }

    /// Live processes.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The PIDs of the live processes (`record` waits on their exit between ticks).
    pub fn live_pids(&self) -> Vec<u32> {
        self.live.keys().copied().collect()
    }

    /// The recording being written.
    pub fn writer(&mut self) -> &mut RecordingWriter {
        &mut self.writer
    }

    fn track(&mut self, pid: u32, t: f64) -> Result<()> {
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
        let id = self.writer.add_process(&info, t)?;
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
        self.writer.event(
            t,
            "start",
            Some(id),
            &format!("pid {pid}: {}", info.cmdline),
        )?;
        Ok(())
    }

    fn mark_exited(&mut self, i: usize, t: f64) -> Result<()> {
        let p = &mut self.procs[i];
        if !p.alive() {
            return Ok(());
        }
        p.files = None;
        p.children = ThreadChildren::default();
        p.exit_t = Some(t);
        self.live.remove(&p.pid);
        let (id, last_t, hwm, peak, ru) = (p.id, p.last_t, p.last.vm_hwm, p.peak_pss, p.ru_maxrss);
        self.writer
            .close_process(id, last_t, Some(t), hwm, peak, ru)?;
        Ok(self
            .writer
            .event(t, "exit", Some(id), &format!("pid {}", p.pid))?)
    }

    /// Tells the sampler memlens reaped a process (`wait4`): it is gone, and its `ru_maxrss`
    /// is its exact peak RSS when it had no children of its own.
    /// A process memlens never saw alive (it exited before the first tick) is added with
    /// `fallback` as its command line when one is given.
    pub fn reaped(&mut self, pid: u32, max_rss: u64, fallback: Option<&str>) -> Result<()> {
        let t = self.now();
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
                let id = self.writer.add_process(&info, 0.0)?;
                self.writer
                    .close_process(id, 0.0, Some(t), max_rss, 0, Some(max_rss))?;
                self.writer.event(
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
            self.mark_exited(i, t)
        } else {
            self.close_process(i)
        }
    }

    /// Writes the final figures of process `i`.
    fn close_process(&mut self, i: usize) -> Result<()> {
        let p = &self.procs[i];
        Ok(self.writer.close_process(
            p.id,
            p.last_t,
            p.exit_t,
            p.last.vm_hwm,
            p.peak_pss,
            p.ru_maxrss,
        )?)
    }

    /// Charges the CPU memlens used since the last tick: this thread's to the bucket (less
    /// what the reads already paid), other threads' to the background account. Returns what
    /// the cheap part of the last tick cost.
    fn account(&mut self, t: f64) -> f64 {
        let now = Clocks {
            thread: thread_cpu_seconds(),
            process: process_cpu_seconds(),
            charged: 0.0,
        };
        self.budget.refill(t);
        let Some(prev) = self.clocks.replace(now) else {
            return 0.0;
        };
        let on_thread = (now.thread - prev.thread).max(0.0);
        let elsewhere = (now.process - prev.process - on_thread).max(0.0);
        let cheap = (on_thread - prev.charged).max(0.0);
        self.budget.charge(cheap);
        self.budget.charge_background(elsewhere);
        cheap
    }

    /// One round: counters of every live process, new children, the tree's totals, a commit
    /// when one is due, then a ledger at a new high and other reads as the budget allows.
    pub fn tick(&mut self) -> Result<()> {
        let t = self.now();
        self.last_tick = t;
        let cheap = self.account(t);
        if self.ticks > 0 {
            self.budget.note_tick_cost(cheap);
            let configured = self.cfg.interval.as_secs_f64();
            let iv = self.budget.tick_interval(configured);
            if iv > configured * 1.05 {
                self.stretched = self.stretched.max(iv);
            }
        }
        self.ticks += 1;
        self.read_counters(t)?;
        self.discover(t)?;
        let mut rss = 0u64;
        let mut pss = 0u64;
        for &i in self.live.values() {
            let p = &self.procs[i];
            rss += p.last.rss;
            pss += p.pss_estimate();
        }
        let n = self.live.len() as u32;
        let usage = self.cgroup.as_ref().and_then(OwnCgroup::usage);
        self.writer.tick(t, rss, pss, n, usage)?;
        self.tree_peak_pss = self.tree_peak_pss.max(pss);
        self.python_ready()?;
        if t - self.last_commit >= self.cfg.commit_interval.as_secs_f64() {
            self.writer.commit()?;
            self.last_commit = t;
        }
        self.expensive(t, rss)
    }

    fn read_counters(&mut self, t: f64) -> Result<()> {
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
                            self.writer.sample(t, id, &c)?;
                        }
                        continue;
                    }
                    // No address space (exiting): read status now.
                    Ok(_) => {}
                    Err(e) if is_gone(&e) => {
                        self.mark_exited(i, t)?;
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
                    self.mark_exited(i, t)?;
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
                        self.writer.sample(t, id, &c)?;
                    }
                    if exec || recheck {
                        self.refresh_identity(i, exec)?;
                    }
                }
                Err(e) if is_gone(&e) => self.mark_exited(i, t)?,
                Err(e) => {
                    log::debug!("pid {}: {e}", p.pid);
                    self.mark_exited(i, t)?;
                }
            }
        }
        Ok(())
    }

    /// After an exec (new name) or at a few ages: re-reads the command line; an exec also
    /// reopens the counter files (an open `smaps_rollup` still points at the old address space).
    fn refresh_identity(&mut self, i: usize, exec: bool) -> Result<()> {
        let p = &mut self.procs[i];
        if !exec {
            p.cmdline_rechecks += 1;
        }
        let Ok(proc) = Process::new(p.pid) else {
            return Ok(());
        };
        if exec {
            if let Some(view) = self.python.as_mut() {
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
        Ok(self.writer.rename_process(id, &name, &cmdline)?)
    }

    /// Finds new processes: every other tick, the main thread's `children` of each process
    /// (and memlens's own when it adopts orphans), the tree's cgroup when memlens made one,
    /// else a few other threads' files in turn while a new task may exist (see
    /// [`crate::discovery`]).
    fn discover(&mut self, t: f64) -> Result<()> {
        if self.ticks % 2 == 0 {
            return Ok(());
        }
        let mut found = Vec::new();
        for &i in self.live.values() {
            self.procs[i].children.read_main(&mut self.buf, &mut found);
        }
        for (_, scan) in &self.extra_parents {
            scan.read_main(&mut self.buf, &mut found);
        }
        match &self.cgroup {
            Some(cg) => cg.members(&mut self.buf, &mut found),
            None => self.visit_threads(&mut found),
        }
        for pid in found {
            if self.live.contains_key(&pid) {
                continue;
            }
            match self.track(pid, t) {
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

    /// Reads every live process once more, writes the last figures of every process and the
    /// end of the recording, and returns the file.
    pub fn finish(mut self, fin: &Finish) -> Result<std::path::PathBuf> {
        // Readings of the Python view still under way are awaited (2 s at most) and written.
        if let Some(view) = self.python.as_mut() {
            view.settle(Duration::from_secs(2));
        }
        self.python_ready()?;
        let t = self.now();
        if !self.live.is_empty() {
            self.read_counters(t)?;
        }
        for i in 0..self.procs.len() {
            self.close_process(i)?;
        }
        log::debug!(
            "sampler: {} ticks, counters {:.1} µs a tick (moving average), tick interval {:.1} ms",
            self.ticks,
            self.budget.tick_cost() * 1e6,
            self.budget.tick_interval(self.cfg.interval.as_secs_f64()) * 1e3
        );
        let mut end = memlens_recording::End {
            end_t: Some(t),
            ticks: Some(self.ticks),
            budget_interval_s: (self.stretched > 0.0).then_some(self.stretched),
            exit_code: fin.exit_code,
            exit_signal: fin.exit_signal,
            ..memlens_recording::End::default()
        };
        if let Ok(st) = Process::new(std::process::id()).and_then(|p| p.stat()) {
            // memlens's own CPU (all threads, children excluded): what the recording cost.
            let cpu = (st.utime + st.stime) as f64 / memlens_procfs::clock_ticks() as f64;
            end.memlens_cpu_s = Some(cpu);
        }
        if let Some(cg) = self.cgroup.take() {
            end.cgroup_peak = cg.peak();
            cg.remove();
        }
        Ok(self.writer.finish(&end)?)
    }

    /// Changes the recording's metadata now (what the caller learns after the start: the
    /// root's PID, why there is no cgroup).
    pub fn update_meta(&mut self, change: impl FnOnce(&mut memlens_recording::Meta)) -> Result<()> {
        Ok(self.writer.update_meta(change)?)
    }

    /// The highest tree PSS seen so far (estimated between reads).
    pub fn tree_peak_pss(&self) -> u64 {
        self.tree_peak_pss
    }

    /// Records an event.
    pub fn event(&mut self, kind: &str, detail: &str) -> Result<()> {
        let t = self.now();
        Ok(self.writer.event(t, kind, None, detail)?)
    }

    /// How long until the next tick is due: a fixed schedule, so the interval does not drift
    /// with the cost of the reads; spaced out when the budget cannot afford the configured
    /// interval.
    pub fn until_next_tick(&self) -> Duration {
        let configured = self.cfg.interval.as_secs_f64();
        let iv = self.budget.tick_interval(configured);
        let now = self.now();
        let next = if iv <= configured * 1.001 {
            ((now / iv).floor() + 1.0) * iv
        } else {
            // Spaced out: from the last tick, not on a grid that moves with the spacing.
            (self.last_tick + iv).max(((now / configured).floor() + 1.0) * configured)
        };
        Duration::from_secs_f64((next - now).max(0.0))
    }

    /// When the next tick is due (see [`Sampler::until_next_tick`]): the supervision loops of
    /// `run` and `record` wait until then.
    pub fn next_tick(&self) -> Instant {
        Instant::now() + self.until_next_tick()
    }

    /// Sleeps until the next tick is due (see [`Sampler::until_next_tick`]).
    pub fn sleep_until_next(&self) {
        let wait = self.until_next_tick();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Recording;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("memlens-sampler-{name}-{}.db", std::process::id()))
    }

    #[test]
    fn samples_a_live_tree_and_keeps_exited_processes() {
        let path = tmp("tree");
        // A shell that starts a child, then exits after it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3 & wait"])
            .spawn()
            .unwrap();
        let writer = RecordingWriter::create(
            &path,
            &crate::Meta {
                mode: Some(crate::Mode::Record),
                ..Default::default()
            },
        )
        .unwrap();
        let mut s =
            Sampler::new(Config::default(), writer, child.id(), Instant::now(), None).unwrap();
        let mut saw_two = false;
        while child.try_wait().unwrap().is_none() {
            s.tick().unwrap();
            saw_two |= s.live_count() >= 2;
            s.sleep_until_next();
        }
        s.tick().unwrap();
        assert_eq!(s.live_count(), 0);
        s.finish(&Finish::default()).unwrap();
        assert!(saw_two, "the child of the shell was not followed");
        let r = Recording::open(&path).unwrap();
        assert_eq!(r.processes.len(), 2, "{:?}", r.processes);
        assert!(r
            .processes
            .iter()
            .all(|p| p.exit_t.is_some() && p.vm_hwm > 0));
        assert!(r.ticks.len() > 10);
        assert!(!r.ledgers.is_empty() && r.ledgers[0].has_json);
        assert!(r.ledger_json(r.ledgers[0].id).unwrap()["processes"].is_array());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn every_pss_read_is_a_round_of_the_whole_tree_at_one_tick() {
        // Two processes (a shell and its child): each PSS row's time has a row for every
        // process alive at that tick, so the tree's PSS at that moment is read, not estimated.
        let path = tmp("rounds");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 1 & wait"])
            .spawn()
            .unwrap();
        let writer = RecordingWriter::create(
            &path,
            &crate::Meta {
                mode: Some(crate::Mode::Record),
                ..Default::default()
            },
        )
        .unwrap();
        let cfg = Config {
            cpu_budget: 0.5,
            ..Config::default()
        };
        let mut s = Sampler::new(cfg, writer, child.id(), Instant::now(), None).unwrap();
        while child.try_wait().unwrap().is_none() {
            s.tick().unwrap();
            s.sleep_until_next();
        }
        s.tick().unwrap();
        s.finish(&Finish::default()).unwrap();
        let r = Recording::open(&path).unwrap();
        let mut times: Vec<f64> = r.pss.iter().map(|p| p.t).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        assert!(times.len() >= 3, "{} rounds", times.len());
        let mut complete = 0;
        for t in &times {
            let rows = r.pss.iter().filter(|p| p.t == *t).count();
            let tick = r
                .ticks
                .iter()
                .find(|k| k.t == *t)
                .expect("a tick at each round");
            assert!(rows <= tick.processes as usize);
            complete += usize::from(rows == tick.processes as usize);
        }
        // Rounds are incomplete only when a process exits during one.
        assert!(complete + 1 >= times.len(), "{complete} of {}", times.len());
        let _ = std::fs::remove_file(&path);
    }
}
