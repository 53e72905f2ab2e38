//! The sampler (DESIGN §7): cheap counters of every process of the tree at a fixed interval,
//! PSS from `smaps_rollup` and full ledgers within a CPU budget, a ledger whenever the tree
//! reaches a new high, new children picked up as they appear, exited ones kept with their last
//! figures. The expensive reads are scheduled in [`reads`].

mod reads;
mod schedule;
mod sharing;
mod tree;

use std::time::{Duration, Instant};

use memlens_launch::OwnCgroup;
use memlens_procfs::Process;

use crate::error::Result;
use crate::python::PythonView;
use crate::writer::RecordingWriter;
use schedule::Schedule;
use tree::{is_gone, Tree};

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
    /// Measure each forked worker's copy-on-write sharing with its parent this often, within
    /// the budget (`None`: never, `--no-sharing`).
    pub sharing_interval: Option<Duration>,
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
            sharing_interval: Some(Duration::from_secs(2)),
        }
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

/// Samples a process tree into a recording: the tick loop over the tree's processes
/// ([`tree`]) and the expensive reads ([`reads`]) on the budget's schedule ([`schedule`]).
pub struct Sampler {
    cfg: Config,
    writer: RecordingWriter,
    root: u32,
    /// The moment t = 0 of the recording stands for.
    start: Instant,
    tree: Tree,
    schedule: Schedule,
    python: Option<Box<dyn PythonView>>,
    cgroup: Option<OwnCgroup>,
    ticks: u64,
    tree_peak_pss: u64,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("root", &self.root)
            .field("processes", &self.tree.procs.len())
            .finish()
    }
}

impl Sampler {
    /// Starts sampling the tree of `root` (already running: `record`, or just spawned: `run`).
    /// `start` is the moment time 0 of the recording stands for.
    pub fn new(cfg: Config, writer: RecordingWriter, root: u32, start: Instant) -> Result<Sampler> {
        let schedule = Schedule::new(cfg.cpu_budget);
        let mut s = Sampler {
            cfg,
            writer,
            root,
            start,
            tree: Tree::new(),
            schedule,
            python: None,
            cgroup: None,
            ticks: 0,
            tree_peak_pss: 0,
        };
        // The wall-clock time of t = 0, whatever the caller did between `start` and now
        // (creating the file can take a while on a loaded disk).
        let origin = memlens_model::clock::wall_time_at(start)
            .duration_since(std::time::UNIX_EPOCH)
            .ok();
        if let Some(o) = origin {
            s.writer
                .update_meta(|m| m.started_unix = Some(o.as_secs_f64()))?;
        }
        let t = s.now();
        // A root that is already gone (a program that exited at once) leaves an empty tree:
        // the caller still has its exit status and rusage.
        match s.tree.track(root, t, &mut s.writer) {
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
        // memlens is never part of the tree it records (`record` of one of its own ancestors,
        // as the memlens Python package runs it): its memory is not the program's.
        let me = std::process::id();
        for pid in table
            .subtree(self.root)
            .into_iter()
            .skip(1)
            .filter(|&p| p != me)
        {
            match self.tree.track(pid, t, &mut self.writer) {
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
        self.tree.adopt_children_of(pid);
    }

    /// Attaches the Python view (another crate provides it); without one the recording holds
    /// the OS view only.
    pub fn set_python_view(&mut self, view: Box<dyn PythonView>) {
        self.python = Some(view);
    }

    /// Takes over the memory cgroup the program runs in (`run`): its members are the tree, its
    /// charge and peak are recorded, and it is removed when the sampler finishes or is dropped.
    pub fn place_in(&mut self, cgroup: OwnCgroup) {
        self.cgroup = Some(cgroup);
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
    /// hands back the cgroup, for the caller to drop (which removes it) once the program has
    /// ended.
    pub fn abandon(mut self) -> Option<OwnCgroup> {
        self.cgroup.take()
    }

    /// Live processes.
    pub fn live_count(&self) -> usize {
        self.tree.live.len()
    }

    /// The PIDs of the live processes (`record` waits on their exit between ticks).
    pub fn live_pids(&self) -> Vec<u32> {
        self.tree.live.keys().copied().collect()
    }

    /// The recording being written.
    pub fn writer(&mut self) -> &mut RecordingWriter {
        &mut self.writer
    }

    /// Tells the sampler memlens reaped a process (`wait4`): it is gone, and its `ru_maxrss`
    /// is its exact peak RSS when it had no children of its own.
    /// A process memlens never saw alive (it exited before the first tick) is added with
    /// `fallback` as its command line when one is given.
    pub fn reaped(&mut self, pid: u32, max_rss: u64, fallback: Option<&str>) -> Result<()> {
        let t = self.now();
        self.tree
            .reaped(pid, max_rss, fallback, t, &mut self.writer)
    }

    /// One round: counters of every live process, new children, the tree's totals, a commit
    /// when one is due, then a ledger at a new high and other reads as the budget allows.
    pub fn tick(&mut self) -> Result<()> {
        let t = self.now();
        self.schedule
            .start_tick(t, self.ticks == 0, self.cfg.interval);
        self.ticks += 1;
        self.tree
            .read_counters(t, &mut self.writer, &mut self.python)?;
        // New processes every other tick.
        if self.ticks % 2 == 1 {
            self.tree
                .discover(t, self.cgroup.as_ref(), &mut self.writer)?;
        }
        let (rss, pss) = self.tree.totals();
        let n = self.tree.live.len() as u32;
        let usage = self.cgroup.as_ref().and_then(OwnCgroup::usage);
        self.writer.tick(t, rss, pss, n, usage)?;
        self.tree_peak_pss = self.tree_peak_pss.max(pss);
        self.python_ready()?;
        if self.schedule.commit_due(t, self.cfg.commit_interval) {
            self.writer.commit()?;
        }
        self.expensive(t, rss)
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
        if !self.tree.live.is_empty() {
            self.tree
                .read_counters(t, &mut self.writer, &mut self.python)?;
            // The tree ends above its highest ledger (a recording stopped while the program
            // holds its peak, before the budget afforded that peak's ledger): one last ledger,
            // whatever the budget, so that the peak has its breakdown.
            let (rss, _) = self.tree.totals();
            if rss > self.schedule.ledger_high {
                let (_, units) = self.work();
                self.take_ledger(t, "end", rss, units)?;
            }
        }
        for i in 0..self.tree.procs.len() {
            self.tree.close_process(i, &mut self.writer)?;
        }
        log::debug!(
            "sampler: {} ticks, counters {:.1} µs a tick (moving average), tick interval {:.1} ms",
            self.ticks,
            self.schedule.budget.tick_cost() * 1e6,
            self.schedule
                .budget
                .tick_interval(self.cfg.interval.as_secs_f64())
                * 1e3
        );
        let mut end = memlens_recording::End {
            end_t: Some(t),
            ticks: Some(self.ticks),
            budget_interval_s: (self.schedule.stretched > 0.0).then_some(self.schedule.stretched),
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
            // Dropped: the cgroup is removed (the program has ended).
            drop(cg);
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
        self.schedule.until_next_tick(self.now(), self.cfg.interval)
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
        let mut s = Sampler::new(Config::default(), writer, child.id(), Instant::now()).unwrap();
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
        let mut s = Sampler::new(cfg, writer, child.id(), Instant::now()).unwrap();
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
