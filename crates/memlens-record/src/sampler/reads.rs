//! The expensive reads of the sampler and their schedule, in order of priority:
//! 1. a full ledger when the tree reaches a new high (its RSS sum, or the PSS a round read, a
//!    material step above the highest ledger's), whatever else is due: the breakdown at the
//!    peak is taken at the peak; above the highest ledger by less than a step, one every
//!    quarter second while the budget affords it;
//! 2. a round of PSS reads (`smaps_rollup` of every live process at one tick: a tree PSS read
//!    from the kernel, not estimated), at most every `pss_interval`;
//! 3. a full ledger every `ledger_interval`;
//! 4. a pass of copy-on-write sharing of each forked worker with its parent, every
//!    `sharing_interval` ([`super::sharing`]);
//! 5. the Python view of each process at the ledger interval.
//!
//! 2 keeps one ledger's predicted cost in the bucket, so 1 can start at once; a ledger of 3
//! (or a quarter-second one of 1) is the same read, taken when the bucket holds its cost.
//!
//! The Python view (4, attaching, censuses) reads on its own thread; its CPU is paid from the
//! background account (see [`crate::budget`]): it never delays 1-3.
//!
//! Costs are predicted per process from its resident memory and threads, learnt from the
//! reads themselves.

use memlens_ledger::tree::{assemble, read_processes};
use memlens_ledger::{Amounts, AmountsOf, Hints, TreeLedger};
use memlens_procfs::{CounterFiles, Error as ProcError, Process};

use super::schedule::step;
use super::Sampler;
use crate::error::Result;
use memlens_launch::cputime::thread_cpu_seconds;

/// Above the highest ledger by less than a step, a ledger is taken this often (s) when the
/// budget has room beyond its reserve.
const PEAK_REFRESH: f64 = 0.25;

/// After a ledger at a new high, a process's Python view is read again when its last reading
/// is older than this (s); its cost is charged to the background account, which must be out of
/// debt.
const PEAK_PYTHON_REFRESH: f64 = 0.05;

/// Units of work of one process: a MiB of resident memory is one (the kernel walks its page
/// tables); a thread costs a ledger about as much (its stack pointer and stack mapping); each
/// process has a fixed cost (opening and parsing its files).
fn units(rss: u64, threads: u32, per_thread: f64, fixed: f64) -> f64 {
    rss as f64 / f64::from(1u32 << 20) + f64::from(threads) * per_thread + fixed
}

impl Sampler {
    /// Work units of a PSS round and of a ledger over the live processes.
    pub(super) fn work(&self) -> (f64, f64) {
        self.tree.live.values().fold((0.0, 0.0), |(r, l), &i| {
            let c = &self.tree.procs[i].last;
            (
                r + units(c.rss, c.threads, 0.05, 2.0),
                l + units(c.rss, c.threads, 1.0, 8.0),
            )
        })
    }

    /// Runs the expensive reads that are due and affordable (see the module's order).
    pub(super) fn expensive(&mut self, t: f64, tree_rss: u64) -> Result<()> {
        if self.tree.live.is_empty() {
            return Ok(());
        }
        let (round_units, ledger_units) = self.work();
        let ledger_cost = self.schedule.costs.ledger.predict(ledger_units);
        let round_cost = self.schedule.costs.rollup.predict(round_units);
        self.schedule.budget.fit(ledger_cost, 0.0);
        self.schedule.budget.fit(round_cost, ledger_cost);
        // Attach first, on the background account, so no ledger attaches inside its own cost.
        self.first_python_reads(t)?;
        let rate = self.schedule.budget.expensive_rate();
        if self.ticks % 100 == 0 {
            log::debug!(
                "budget at {t:.2} s: {:.2} ms, background {:.2} ms; a ledger would cost {:.2} ms, \
                 a PSS round {:.2} ms; counters {:.0} µs a tick",
                self.schedule.budget.tokens() * 1e3,
                self.schedule.budget.background() * 1e3,
                ledger_cost * 1e3,
                round_cost * 1e3,
                self.schedule.budget.tick_cost() * 1e6
            );
        }
        if self.schedule.last_ledger.is_none() || self.schedule.new_high(tree_rss) {
            if self.schedule.budget.affords(ledger_cost, 0.0) {
                let reason = if self.schedule.last_ledger.is_none() {
                    "first"
                } else {
                    "peak"
                };
                self.take_ledger(t, reason, tree_rss, ledger_units)?;
                self.python_after_peak(t);
            }
            // Waiting for the budget: nothing else may spend what the ledger needs.
            return self.census(t);
        }
        let round_every = self
            .cfg
            .pss_interval
            .as_secs_f64()
            .max(self.cfg.interval.as_secs_f64())
            .max(round_cost / (rate * 0.5));
        let ledger_every = self
            .cfg
            .ledger_interval
            .as_secs_f64()
            .max(ledger_cost / (rate * 0.5));
        let since_ledger = self.schedule.last_ledger.map_or(f64::INFINITY, |l| t - l);
        // Above the highest ledger by less than a step: a ledger every PEAK_REFRESH while the
        // budget affords it, so a slowly growing tree's peak is not left a whole step behind.
        let above = tree_rss > self.schedule.ledger_high + (1 << 20);
        if above
            && since_ledger >= PEAK_REFRESH
            && self.schedule.budget.affords(ledger_cost, ledger_cost)
        {
            self.take_ledger(t, "peak", tree_rss, ledger_units)?;
        } else if since_ledger >= ledger_every
            && self.schedule.budget.affords(ledger_cost, ledger_cost)
        {
            self.take_ledger(t, "interval", tree_rss, ledger_units)?;
        } else if t - self.schedule.last_round >= round_every * 0.999
            && self.schedule.budget.affords(round_cost, ledger_cost)
        {
            self.pss_round(t, round_units)?;
        } else {
            self.sharing_if_due(t, ledger_cost)?;
        }
        self.python_samples(t, above);
        // What is left beyond a ledger's reserve pays for attaching and censuses.
        self.schedule.budget.repay(ledger_cost);
        self.census(t)
    }

    /// Reads `smaps_rollup` of every live process at this tick: a tree PSS read, not estimated.
    fn pss_round(&mut self, t: f64, round_units: f64) -> Result<()> {
        let c0 = thread_cpu_seconds();
        let mut order: Vec<usize> = self.tree.live.values().copied().collect();
        order.sort_unstable();
        let mut sum = 0u64;
        let mut complete = true;
        for i in order {
            let r0 = thread_cpu_seconds();
            let Some(files) = self.tree.procs[i].files.as_mut() else {
                continue;
            };
            let read = files.smaps_rollup();
            let cost = thread_cpu_seconds() - r0;
            match read {
                Ok(c) => {
                    let a = Amounts::of(&c);
                    sum += a.pss;
                    self.note_pss(i, &a);
                    let id = self.tree.procs[i].id;
                    self.writer.pss(t, id, &a, (cost * 1e6) as u64)?;
                }
                Err(e) => {
                    complete = false;
                    self.read_failed(i, t, &e)?;
                }
            }
        }
        let cost = thread_cpu_seconds() - c0;
        self.schedule.charge_read(cost);
        self.schedule.costs.rollup.learn(round_units, cost);
        self.schedule.last_round = t;
        let high = self.schedule.ledger_high_pss;
        if complete && sum >= high + step(high) {
            // Un-shared copy-on-write pages raise PSS without moving any RSS.
            self.schedule.pss_high = true;
        }
        Ok(())
    }

    /// What a failed PSS or `smaps` read means: a process gone, an exec (reopen the files), or
    /// a process memlens may not read (noted once, loudly, in the recording).
    fn read_failed(&mut self, i: usize, t: f64, e: &ProcError) -> Result<()> {
        match e {
            ProcError::ProcessGone { .. } => Ok(()),
            ProcError::PermissionDenied { .. } => self.note_unreadable(i, t, &e.to_string()),
            _ => {
                log::debug!("pid {}: smaps_rollup: {e}", self.tree.procs[i].pid);
                if let Ok(f) = CounterFiles::open(self.tree.procs[i].pid) {
                    self.tree.procs[i].files = Some(f);
                }
                Ok(())
            }
        }
    }

    /// Records, once per process, that its `smaps` cannot be read: its PSS and ledger are
    /// missing and the reports count its RSS in their place, and say so.
    fn note_unreadable(&mut self, i: usize, t: f64, why: &str) -> Result<()> {
        let p = &mut self.tree.procs[i];
        if p.unreadable {
            return Ok(());
        }
        p.unreadable = true;
        let (id, pid) = (p.id, p.pid);
        log::info!("pid {pid}: {why}");
        Ok(self.writer.event(
            t,
            "unreadable",
            Some(id),
            &format!(
                "pid {pid}: {why}: its PSS and ledger cannot be read, so its RSS stands in for \
                 its PSS (reading another user's process needs root or CAP_SYS_PTRACE)"
            ),
        )?)
    }

    pub(super) fn note_pss(&mut self, i: usize, a: &Amounts) {
        let p = &mut self.tree.procs[i];
        if a.rss > 0 {
            p.pss_ratio = Some((a.pss as f64 / a.rss as f64).min(1.0));
        }
        p.peak_pss = p.peak_pss.max(a.pss);
    }

    pub(super) fn take_ledger(
        &mut self,
        t: f64,
        reason: &str,
        tree_rss: u64,
        work: f64,
    ) -> Result<()> {
        let c0 = thread_cpu_seconds();
        let result = self.write_ledger(t, reason, tree_rss);
        let cost = thread_cpu_seconds() - c0;
        self.schedule.charge_read(cost);
        self.schedule.costs.ledger.learn(work, cost);
        log::debug!(
            "ledger ({reason}) at {t:.3} s: {:.2} ms for {work:.0} units, {:.2} ms left",
            cost * 1e3,
            self.schedule.budget.tokens() * 1e3
        );
        result
    }

    /// Reads the ledger of the tree and writes it, with a PSS row per process.
    fn write_ledger(&mut self, t: f64, reason: &str, tree_rss: u64) -> Result<()> {
        let ledger = self.ledger_now()?;
        self.schedule.last_ledger = Some(t);
        self.schedule.last_round = t;
        self.schedule.pss_high = false;
        for sk in ledger.skipped.iter().filter(|s| s.permission_denied) {
            if let Some(&i) = self.tree.live.get(&sk.pid) {
                self.note_unreadable(i, t, &sk.reason)?;
            }
        }
        if ledger.processes.is_empty() {
            // Nothing could be read: no ledger to write (its reasons are in the events).
            return Ok(());
        }
        for pl in &ledger.processes {
            if let Some(&i) = self.tree.live.get(&pl.pid) {
                self.note_pss(i, &pl.totals);
                // The ledger's per-process totals are PSS reads too (cost 0: paid by the ledger).
                let id = self.tree.procs[i].id;
                self.writer.pss(t, id, &pl.totals, 0)?;
            }
        }
        let pss = ledger.totals.pss;
        let keep_json = self.schedule.last_json.is_none_or(|last| t - last >= 60.0)
            || pss >= self.schedule.best_ledger_pss - self.schedule.best_ledger_pss / 20;
        if keep_json {
            self.schedule.last_json = Some(t);
        }
        self.schedule.best_ledger_pss = self.schedule.best_ledger_pss.max(pss);
        self.schedule.ledger_high = self.schedule.ledger_high.max(tree_rss);
        self.schedule.ledger_high_pss = self.schedule.ledger_high_pss.max(pss);
        self.writer.ledger(t, reason, &ledger, keep_json)?;
        Ok(())
    }

    /// Asks the Python view for a reading of `i` (with a census when asked). The view reads on
    /// its own thread; what it finishes is written, and its CPU charged, by
    /// [`Sampler::python_ready`].
    fn python_request(&mut self, i: usize, t: f64, census: bool) {
        let pid = self.tree.procs[i].pid;
        if let Some(v) = self.python.as_mut() {
            v.request(pid, census);
        }
        let p = &mut self.tree.procs[i];
        p.python_t = t;
        if census {
            p.census_t = t;
        }
    }

    /// Writes the Python view's finished readings, each at the time it was read, and charges
    /// the CPU they cost (on the view's own thread) to the background account: they never
    /// delay a ledger, and what they cost is repaid from what the bucket spares.
    pub(super) fn python_ready(&mut self) -> Result<()> {
        let Some(view) = self.python.as_mut() else {
            return Ok(());
        };
        let ready = view.take_ready();
        self.schedule.charge_elsewhere(ready.cpu_seconds);
        for (pid, s) in ready.samples {
            let i = self
                .tree
                .live
                .get(&pid)
                .copied()
                .or_else(|| self.tree.procs.iter().rposition(|p| p.pid == pid));
            let Some(i) = i else {
                continue;
            };
            let t = s.read_at.map_or_else(
                || self.now(),
                |at| at.saturating_duration_since(self.start).as_secs_f64(),
            );
            self.tree.procs[i].python_seen = true;
            let id = self.tree.procs[i].id;
            self.writer.python(t, id, &s)?;
        }
        Ok(())
    }

    fn python_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = self.tree.live.values().copied().collect();
        order.sort_by(|&a, &b| {
            self.tree.procs[a]
                .python_t
                .total_cmp(&self.tree.procs[b].python_t)
        });
        order
    }

    /// Reads that may attach to an interpreter (a process not yet seen as Python: new, just
    /// exec'd, or not Python at all), paid from the background account: attaching reads the
    /// interpreter's binary, tens of milliseconds. They wait while the account is in debt,
    /// except the root's tries until it is seen as Python (a short program still gets its
    /// view: its first try can come too early, and a debt from it must not stop the next); a
    /// process is tried every half second at most.
    fn first_python_reads(&mut self, t: f64) -> Result<()> {
        if self.python.is_none() {
            return Ok(());
        }
        for i in self.python_order() {
            let p = &self.tree.procs[i];
            let due = !p.python_seen && t - p.python_t >= 0.5;
            if due && (p.pid == self.root || self.schedule.budget.background_clear()) {
                self.python_request(i, t, false);
            }
        }
        Ok(())
    }

    /// Asks for the Python view of the processes seen as Python that are due for one (at the
    /// ledger interval, or five times that while the tree is above its highest ledger: the
    /// peak's breakdown first) while the background account is out of debt (the view reads on
    /// its own thread and its CPU is charged there).
    fn python_samples(&mut self, t: f64, growing: bool) {
        if self.python.is_none() || !self.schedule.budget.background_clear() {
            return;
        }
        let every = self.cfg.ledger_interval.as_secs_f64() * if growing { 5.0 } else { 1.0 };
        for i in self.python_order() {
            let p = &self.tree.procs[i];
            if p.python_seen && t - p.python_t >= every {
                self.python_request(i, t, false);
            }
        }
    }

    /// After a ledger at a new high: a reading of each process seen as Python that has had none
    /// for [`PEAK_PYTHON_REFRESH`], while the background account is out of debt, so that the Python
    /// view nearest the peak is not the one from the program's start (for a program shorter
    /// than the ledger interval, its only one).
    fn python_after_peak(&mut self, t: f64) {
        if self.python.is_none() || !self.schedule.budget.background_clear() {
            return;
        }
        for i in self.python_order() {
            let p = &self.tree.procs[i];
            if p.python_seen && t - p.python_t >= PEAK_PYTHON_REFRESH {
                self.python_request(i, t, false);
            }
        }
    }

    /// One census when one is due and the background account is out of debt (it may go into
    /// debt: a census's cost is known only afterwards).
    fn census(&mut self, t: f64) -> Result<()> {
        let Some(every) = self.cfg.census_interval.map(|d| d.as_secs_f64()) else {
            return Ok(());
        };
        if self.python.is_none() || !self.schedule.budget.background_clear() {
            return Ok(());
        }
        let due = self
            .tree
            .live
            .values()
            .copied()
            .filter(|&i| self.tree.procs[i].python_seen && t - self.tree.procs[i].census_t >= every)
            .min_by(|&a, &b| {
                self.tree.procs[a]
                    .census_t
                    .total_cmp(&self.tree.procs[b].census_t)
            });
        if let Some(i) = due {
            self.python_request(i, t, true);
        }
        Ok(())
    }

    /// The full ledger of every live process of the tree (the processes memlens follows, so
    /// re-parented orphans are included).
    pub fn ledger_now(&mut self) -> Result<TreeLedger> {
        let mut pids: Vec<(u32, usize)> = self.tree.live.iter().map(|(&p, &i)| (p, i)).collect();
        pids.sort_by_key(|&(_, i)| i);
        let pids: Vec<u32> = pids.into_iter().map(|(p, _)| p).collect();
        let first = pids.first().copied().unwrap_or(self.root);
        // One process after the other on this thread: the budget is charged in this thread's
        // CPU time, and a recording should not compete with the program for every core. The
        // Python view gives the pymalloc arenas of the processes it has read (cheap: the arena
        // table); it is not asked about others, which would attach inside the ledger.
        let seen: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| {
                self.tree
                    .live
                    .get(p)
                    .is_some_and(|&i| self.tree.procs[i].python_seen)
            })
            .collect();
        let python = &mut self.python;
        let (processes, skipped) =
            read_processes(&pids, None, false, &mut |pid| match python.as_mut() {
                Some(v) if seen.contains(&pid) => v.hints(pid),
                _ => Hints::default(),
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
}
