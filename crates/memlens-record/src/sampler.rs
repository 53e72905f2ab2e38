//! The sampler (DESIGN §7): cheap counters of every process of the tree at a fixed interval,
//! PSS from `smaps_rollup` and full ledgers as often as a CPU budget allows, new children picked
//! up as they appear, exited ones kept with their last figures.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use memlens_ledger::process::cmdline_string as cmdline_string_of;
use memlens_ledger::tree::{assemble, read_processes};
use memlens_ledger::{Amounts, Hints, TreeLedger};
use memlens_procfs::bytes::{fields, parse_u64};
use memlens_procfs::{Error as ProcError, Process};

use crate::budget::Budget;
use crate::cgroup::OwnCgroup;
use crate::cputime::thread_cpu_seconds;
use crate::error::Result;
use crate::python::PythonView;
use crate::writer::{Counters, ProcessInfo, RecordingWriter};
use memlens_procfs::CounterFiles;

/// `status` is read every this many ticks (`statm` in between).
const STATUS_EVERY: u32 = 5;

/// How the sampler works.
#[derive(Debug, Clone)]
pub struct Config {
    /// Period of the cheap counters (default 10 ms).
    pub interval: Duration,
    /// Share of one core the sampler may spend (counters first; PSS reads, ledgers and the
    /// Python view use what is left, never less than a quarter of it).
    pub cpu_budget: f64,
    /// Period of full ledgers (default 1 s), stretched when the budget cannot afford them.
    pub ledger_interval: Duration,
    /// Shortest period between two PSS reads of one process (default 100 ms): the budget is
    /// a ceiling, not a target, and PSS between reads is estimated from RSS every tick.
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

/// Open `task/TID/children` files of a process's threads.
#[derive(Debug, Default)]
struct ChildScan {
    files: Vec<File>,
    threads: u32,
    refreshed_t: f64,
}

impl ChildScan {
    fn refresh(&mut self, pid: u32, threads: u32, t: f64) {
        self.files.clear();
        self.threads = threads;
        self.refreshed_t = t;
        let dir = Path::new("/proc").join(pid.to_string()).join("task");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if let Ok(f) = File::open(e.path().join("children")) {
                    self.files.push(f);
                }
            }
        }
    }

    fn read(&self, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
        if buf.len() < 4096 {
            buf.resize(4096, 0);
        }
        for f in &self.files {
            let n = f.read_at(buf, 0).unwrap_or(0);
            out.extend(fields(&buf[..n]).filter_map(parse_u64).map(|p| p as u32));
        }
    }
}

#[derive(Debug)]
struct Tracked {
    id: i64,
    pid: u32,
    name: Vec<u8>,
    files: Option<CounterFiles>,
    children: ChildScan,
    last: Counters,
    stored: Option<Counters>,
    first_t: f64,
    last_t: f64,
    exit_t: Option<f64>,
    pss_ratio: Option<f64>,
    pss_t: f64,
    peak_pss: u64,
    ru_maxrss: Option<u64>,
    had_children: bool,
    cmdline_rechecks: u8,
    status_countdown: u32,
}

impl Tracked {
    fn alive(&self) -> bool {
        self.files.is_some()
    }

    fn pss_estimate(&self, fallback: f64) -> u64 {
        (self.last.rss as f64 * self.pss_ratio.unwrap_or(fallback)) as u64
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

/// Samples a process tree into a recording.
pub struct Sampler {
    cfg: Config,
    writer: RecordingWriter,
    root: u32,
    procs: Vec<Tracked>,
    live: HashMap<u32, usize>,
    seen: HashSet<(u32, u64)>,
    extra_parents: Vec<(u32, ChildScan)>,
    start: Instant,
    budget: Budget,
    last_commit: f64,
    last_ledger: Option<f64>,
    ledger_trigger: u64,
    last_census: Option<f64>,
    python: Option<Box<dyn PythonView>>,
    cgroup: Option<OwnCgroup>,
    buf: Vec<u8>,
    ticks: u64,
    tree_peak_pss: u64,
    carry: f64,
    ledger_cost: f64,
    last_json: Option<f64>,
    best_ledger_pss: u64,
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
            last_commit: 0.0,
            last_ledger: None,
            ledger_trigger: 0,
            last_census: None,
            python: None,
            cgroup,
            buf: Vec::with_capacity(4096),
            ticks: 0,
            tree_peak_pss: 0,
            carry: 0.0,
            ledger_cost: 0.0,
            last_json: None,
            best_ledger_pss: 0,
        };
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
    /// tree are re-parented to it).
    pub fn adopt_children_of(&mut self, pid: u32) {
        let mut scan = ChildScan::default();
        scan.refresh(pid, 0, 0.0);
        self.extra_parents.push((pid, scan));
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
        // read again (soon: the parent goes to the front of the queue).
        let mut parent_ratio = None;
        if let Some(&pi) = self.live.get(&stat.ppid) {
            let parent = &mut self.procs[pi];
            parent.had_children = true;
            parent.pss_ratio = parent.pss_ratio.map(|r| r / 2.0);
            parent.pss_t = f64::NEG_INFINITY;
            parent_ratio = parent.pss_ratio;
        }
        let mut children = ChildScan::default();
        children.refresh(pid, 0, t);
        self.live.insert(pid, self.procs.len());
        self.procs.push(Tracked {
            id,
            pid,
            name: stat.comm,
            files: Some(files),
            children,
            last: Counters::default(),
            stored: None,
            first_t: t,
            last_t: t,
            exit_t: None,
            pss_ratio: parent_ratio,
            pss_t: f64::NEG_INFINITY,
            peak_pss: 0,
            ru_maxrss: None,
            had_children: false,
            cmdline_rechecks: 0,
            status_countdown: 0,
        });
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
        p.children = ChildScan::default();
        p.exit_t = Some(t);
        self.live.remove(&p.pid);
        let (id, last_t, hwm, peak, ru) = (p.id, p.last_t, p.last.vm_hwm, p.peak_pss, p.ru_maxrss);
        self.writer
            .close_process(id, last_t, Some(t), hwm, peak, ru)?;
        self.writer
            .event(t, "exit", Some(id), &format!("pid {}", p.pid))
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
        self.writer.close_process(
            p.id,
            p.last_t,
            p.exit_t,
            p.last.vm_hwm,
            p.peak_pss,
            p.ru_maxrss,
        )
    }

    /// One round: counters of every live process, new children, the tree's totals, then PSS
    /// reads and ledgers as the budget allows, and a commit when one is due.
    pub fn tick(&mut self) -> Result<()> {
        let t = self.now();
        let cpu0 = thread_cpu_seconds();
        self.ticks += 1;
        self.read_counters(t)?;
        self.discover(t)?;
        let mut rss = 0u64;
        let mut pss = 0u64;
        for &i in self.live.values() {
            let p = &self.procs[i];
            rss += p.last.rss;
            pss += p.pss_estimate(1.0);
        }
        let n = self.live.len() as u32;
        let usage = self.cgroup.as_ref().and_then(OwnCgroup::usage);
        self.writer.tick(t, rss, pss, n, usage)?;
        self.tree_peak_pss = self.tree_peak_pss.max(pss);
        self.budget
            .refill(t, self.carry + thread_cpu_seconds() - cpu0);
        self.expensive(t, pss)?;
        self.python_ready()?;
        let c1 = thread_cpu_seconds();
        if t - self.last_commit >= self.cfg.commit_interval.as_secs_f64() {
            self.writer.commit()?;
            self.last_commit = t;
        }
        // The commit is paid with the next tick's cheap work.
        self.carry = thread_cpu_seconds() - c1;
        Ok(())
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
            // ticks, and at once when RSS passes the last VmHWM seen. VmHWM only grows, so a
            // spike between two reads is still caught by the next.
            let full = p.status_countdown == 0;
            if !full {
                match files.statm() {
                    Ok(sm) if sm.resident > 0 && sm.resident <= p.last.vm_hwm => {
                        p.status_countdown -= 1;
                        let shmem = p.last.shmem.min(sm.shared);
                        let c = Counters {
                            rss: sm.resident,
                            anon: sm.resident.saturating_sub(sm.shared),
                            file: sm.shared - shmem,
                            shmem,
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
                    // A new high, or no address space (exiting): read status now.
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
                    if st.threads != p.children.threads || t - p.children.refreshed_t > 1.0 {
                        p.children.refresh(p.pid, st.threads, t);
                    }
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
            p.pss_t = f64::NEG_INFINITY;
        }
        let name = proc
            .status()
            .map(|s| s.name)
            .unwrap_or_else(|_| p.name.clone());
        let cmdline = cmdline_string_of(&proc.cmdline().unwrap_or_default());
        p.name = name;
        let id = p.id;
        let name = String::from_utf8_lossy(&p.name).into_owned();
        self.writer.rename_process(id, &name, &cmdline)
    }

    fn discover(&mut self, t: f64) -> Result<()> {
        // Every other tick: new processes are seen within two intervals.
        if self.ticks % 2 == 0 {
            return Ok(());
        }
        let mut found = Vec::new();
        for &i in self.live.values() {
            self.procs[i].children.read(&mut self.buf, &mut found);
        }
        for (pid, scan) in &mut self.extra_parents {
            if t - scan.refreshed_t > 1.0 {
                scan.refresh(*pid, 0, t);
            }
            scan.read(&mut self.buf, &mut found);
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

    fn expensive(&mut self, t: f64, tree_pss: u64) -> Result<()> {
        // Ledgers may use half of what the budget leaves for expensive reads, so PSS reads
        // keep their share: a costly ledger stretches the ledger interval.
        let ledger_every = self
            .cfg
            .ledger_interval
            .as_secs_f64()
            .max(self.ledger_cost / (self.budget.expensive_rate() * 0.5));
        let ledger_due = match self.last_ledger {
            None => true,
            Some(last) => {
                let since = t - last;
                since >= ledger_every
                    || (tree_pss > self.ledger_trigger + self.ledger_trigger / 20
                        && since >= (self.cfg.interval.as_secs_f64() * 5.0).max(0.1))
            }
        };
        if ledger_due && self.budget.allows() && !self.live.is_empty() {
            let reason = match self.last_ledger {
                None => "first",
                Some(last) if t - last >= ledger_every => "interval",
                Some(_) => "peak",
            };
            let c0 = thread_cpu_seconds();
            self.take_ledger(t, reason)?;
            self.ledger_cost = thread_cpu_seconds() - c0;
            self.budget.charge(self.ledger_cost);
            self.ledger_trigger = self.ledger_trigger.max(tree_pss);
            return Ok(());
        }
        let interval = self
            .cfg
            .interval
            .as_secs_f64()
            .max(self.cfg.pss_interval.as_secs_f64());
        while self.budget.allows() {
            let next = self
                .live
                .values()
                .copied()
                .filter(|&i| t - self.procs[i].pss_t >= interval * 0.999)
                .min_by(|&a, &b| self.procs[a].pss_t.total_cmp(&self.procs[b].pss_t));
            let Some(i) = next else {
                break;
            };
            let c0 = thread_cpu_seconds();
            let p = &mut self.procs[i];
            p.pss_t = t;
            let Some(files) = p.files.as_mut() else {
                break;
            };
            let read = files.smaps_rollup();
            let cost = thread_cpu_seconds() - c0;
            self.budget.charge(cost);
            match read {
                Ok(c) => {
                    let a = Amounts::of(&c);
                    self.note_pss(i, &a);
                    let id = self.procs[i].id;
                    self.writer.pss(t, id, &a, (cost * 1e6) as u64)?;
                }
                Err(e) => {
                    // An exec leaves the open rollup on the old address space: reopen.
                    log::debug!("pid {}: smaps_rollup: {e}", self.procs[i].pid);
                    if let Ok(f) = CounterFiles::open(self.procs[i].pid) {
                        self.procs[i].files = Some(f);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the Python view's finished readings, at the time each was read, and charges
    /// what they cost (they run on the view's own thread) to the budget.
    fn python_ready(&mut self) -> Result<()> {
        let Some(view) = self.python.as_mut() else {
            return Ok(());
        };
        let ready = view.take_ready();
        self.budget.charge(ready.cpu_seconds);
        for (pid, s) in ready.samples {
            let i = self.live.get(&pid).copied();
            let Some(p) = i
                .map(|i| &self.procs[i])
                .or_else(|| self.procs.iter().rev().find(|p| p.pid == pid))
            else {
                continue;
            };
            let t = s.read_at.map_or_else(
                || self.now(),
                |at| at.saturating_duration_since(self.start).as_secs_f64(),
            );
            self.writer.python(t, p.id, &s)?;
        }
        Ok(())
    }

    fn note_pss(&mut self, i: usize, a: &Amounts) {
        let p = &mut self.procs[i];
        if a.rss > 0 {
            p.pss_ratio = Some((a.pss as f64 / a.rss as f64).min(1.0));
        }
        p.peak_pss = p.peak_pss.max(a.pss);
    }

    fn take_ledger(&mut self, t: f64, reason: &str) -> Result<()> {
        let ledger = self.ledger_now()?;
        for pl in &ledger.processes {
            if let Some(&i) = self.live.get(&pl.pid) {
                self.note_pss(i, &pl.totals);
                self.procs[i].pss_t = t;
            }
        }
        let pss = ledger.totals.pss;
        let keep_json = self.last_json.is_none_or(|last| t - last >= 60.0)
            || pss >= self.best_ledger_pss - self.best_ledger_pss / 20;
        if keep_json {
            self.last_json = Some(t);
        }
        self.best_ledger_pss = self.best_ledger_pss.max(pss);
        self.writer.ledger(t, reason, &ledger, keep_json)?;
        if let Some(view) = self.python.as_mut() {
            let census = match (self.cfg.census_interval, self.last_census) {
                (Some(_), None) => true,
                (Some(every), Some(last)) => t - last >= every.as_secs_f64(),
                (None, _) => false,
            };
            if census {
                self.last_census = Some(t);
            }
            let live: Vec<(u32, i64)> = self
                .live
                .values()
                .map(|&i| (self.procs[i].pid, self.procs[i].id))
                .collect();
            for (pid, _) in live {
                view.request(pid, census);
            }
        }
        self.last_ledger = Some(t);
        Ok(())
    }

    /// The full ledger of every live process of the tree (the processes memlens follows, so
    /// re-parented orphans are included).
    pub fn ledger_now(&mut self) -> Result<TreeLedger> {
        let mut pids: Vec<(u32, usize)> = self.live.iter().map(|(&p, &i)| (p, i)).collect();
        pids.sort_by_key(|&(_, i)| i);
        let pids: Vec<u32> = pids.into_iter().map(|(p, _)| p).collect();
        let first = pids.first().copied().unwrap_or(self.root);
        // One process after the other on this thread: the budget is charged in this thread's
        // CPU time, and a recording should not compete with the program for every core.
        let python = &mut self.python;
        let (processes, skipped) =
            read_processes(&pids, None, false, &mut |pid| match python.as_mut() {
                Some(v) => v.hints(pid),
                None => Hints::default(),
            })?;
        // The cgroup memlens made for the tree when there is one (a process that is exiting
        // already shows the root cgroup), else the first process's.
        let cgroup = match &self.cgroup {
            Some(own) => memlens_procfs::cgroup::read_memory(
                own.version(),
                own.path().as_bytes().to_vec(),
                own.dir(),
            )
            .ok(),
            None => Process::new(first)
                .ok()
                .and_then(|p| p.memory_cgroup().ok().flatten()),
        };
        let mut ledger = assemble(self.root, processes, cgroup);
        ledger.skipped = skipped;
        ledger.refresh_findings();
        Ok(ledger)
    }

    /// Reads every live process once more, writes the last figures of every process and the
    /// end of the recording, and returns the file.
    pub fn finish(mut self, fin: &Finish) -> Result<std::path::PathBuf> {
        let t = self.now();
        if !self.live.is_empty() {
            self.read_counters(t)?;
        }
        if let Some(view) = self.python.as_mut() {
            view.settle(Duration::from_secs(2));
        }
        self.python_ready()?;
        for i in 0..self.procs.len() {
            self.close_process(i)?;
        }
        self.writer.set_meta("end_t", &format!("{t:.6}"))?;
        self.writer.set_meta("ticks", &self.ticks.to_string())?;
        if let Ok(st) = Process::new(std::process::id()).and_then(|p| p.stat()) {
            // memlens's own CPU (all threads, children excluded): what the recording cost.
            let cpu = (st.utime + st.stime) as f64 / memlens_procfs::clock_ticks() as f64;
            self.writer
                .set_meta("memlens_cpu_s", &format!("{cpu:.3}"))?;
        }
        if let Some(c) = fin.exit_code {
            self.writer.set_meta("exit_code", &c.to_string())?;
        }
        if let Some(s) = fin.exit_signal {
            self.writer.set_meta("exit_signal", &s.to_string())?;
        }
        if let Some(cg) = self.cgroup.take() {
            if let Some(peak) = cg.peak() {
                self.writer.set_meta("cgroup_peak", &peak.to_string())?;
            }
            cg.remove();
        }
        self.writer.finish()
    }

    /// Writes a `meta` key now.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.writer.set_meta(key, value)
    }

    /// The highest tree PSS seen so far (estimated between reads).
    pub fn tree_peak_pss(&self) -> u64 {
        self.tree_peak_pss
    }

    /// Records an event.
    pub fn event(&mut self, kind: &str, detail: &str) -> Result<()> {
        let t = self.now();
        self.writer.event(t, kind, None, detail)
    }

    /// Sleeps until the next tick is due (`n` ticks after the start): a fixed schedule, so the
    /// interval does not drift with the cost of the reads.
    pub fn sleep_until_next(&self) {
        let iv = self.cfg.interval.as_secs_f64();
        let next = ((self.now() / iv).floor() + 1.0) * iv;
        let wait = next - self.now();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Recording;

    #[test]
    fn samples_a_live_tree_and_keeps_exited_processes() {
        let path = std::env::temp_dir().join(format!("memlens-sampler-{}.db", std::process::id()));
        // A shell that starts a child, then exits after it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3 & wait"])
            .spawn()
            .unwrap();
        let writer = RecordingWriter::create(&path, &[("mode", "record".into())]).unwrap();
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
}
