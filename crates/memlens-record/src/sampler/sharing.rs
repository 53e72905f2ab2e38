//! Copy-on-write sharing over time (DESIGN §6, §7): every `sharing_interval`, when nothing
//! dearer is due and the budget holds its predicted cost beside one ledger's, each live process
//! whose parent is live in the tree is compared page by page with its parent
//! (`memlens_ledger::sharing`, on this thread), and each comparison is written to the
//! recording's `sharing` table, failed ones with their reason.

use std::time::Instant;

use memlens_ledger::sharing::{measure_subjects_on, Subject};
use memlens_procfs::Process;

use super::Sampler;
use crate::error::Result;
use memlens_launch::cputime::thread_cpu_seconds;

/// Work units of one process in a pass: a MiB of resident memory (its pagemap is read where
/// resident, and its `smaps`), and a fixed part.
fn units(rss: u64) -> f64 {
    rss as f64 / f64::from(1u32 << 20) + 8.0
}

impl Sampler {
    /// The processes to compare: each live one whose parent is live in the tree (read from
    /// `status`), and those parents; with their indices in the tree.
    fn sharing_subjects(&mut self) -> (Vec<Subject>, Vec<usize>) {
        let mut live: Vec<(u32, usize)> = self.tree.live.iter().map(|(&p, &i)| (p, i)).collect();
        live.sort_by_key(|&(_, i)| i);
        let ppids: Vec<Option<u32>> = live
            .iter()
            .map(|&(pid, _)| {
                Process::new(pid)
                    .and_then(|p| p.status())
                    .ok()
                    .map(|s| s.ppid)
            })
            .collect();
        let is_live = |pid: u32| live.iter().any(|&(p, _)| p == pid);
        let mut subjects = Vec::new();
        let mut index = Vec::new();
        for (k, &(pid, i)) in live.iter().enumerate() {
            let ppid = ppids[k].filter(|&pp| pp != pid && is_live(pp));
            let is_parent = ppids
                .iter()
                .enumerate()
                .any(|(j, pp)| *pp == Some(pid) && live[j].0 != pid);
            if ppid.is_none() && !is_parent {
                continue;
            }
            let arenas = match self.python.as_mut() {
                Some(v) if self.tree.procs[i].python_seen => v.hints(pid).python_arenas,
                _ => Vec::new(),
            };
            subjects.push(Subject {
                pid,
                ppid: ppid.unwrap_or(0),
                arenas,
            });
            index.push(i);
        }
        (subjects, index)
    }

    /// Runs a sharing pass when one is due and the budget holds its predicted cost and
    /// `reserve` (one ledger's) besides; a pass with no worker to compare is not a read.
    pub(super) fn sharing_if_due(&mut self, t: f64, reserve: f64) -> Result<()> {
        let Some(every) = self.cfg.sharing_interval.map(|d| d.as_secs_f64()) else {
            return Ok(());
        };
        if t - self.schedule.last_sharing < every * 0.999 {
            return Ok(());
        }
        // Afford the last pass's work (every live process before the first) before reading
        // anyone's parent: a pass waiting for the budget costs nothing per tick.
        let guess = self.schedule.sharing_work.unwrap_or_else(|| {
            self.tree
                .live
                .values()
                .map(|&i| units(self.tree.procs[i].last.rss))
                .sum()
        });
        let reserve_cost = self.schedule.costs.sharing.predict(guess);
        self.schedule.budget.fit(reserve_cost, reserve);
        if !self.schedule.budget.affords(reserve_cost, reserve) {
            return Ok(());
        }
        let c0 = thread_cpu_seconds();
        let (subjects, index) = self.sharing_subjects();
        if subjects.is_empty() {
            self.schedule.charge_read(thread_cpu_seconds() - c0);
            self.schedule.last_sharing = t;
            self.schedule.sharing_work = Some(0.0);
            return Ok(());
        }
        let work: f64 = index
            .iter()
            .map(|&i| units(self.tree.procs[i].last.rss))
            .sum();
        self.schedule.sharing_work = Some(work);
        let cost = self.schedule.costs.sharing.predict(work);
        self.schedule.budget.fit(cost, reserve);
        if !self.schedule.budget.affords(cost, reserve) {
            self.schedule.charge_read(thread_cpu_seconds() - c0);
            return Ok(()); // due, waiting for the budget
        }
        let wall = Instant::now();
        let measured = measure_subjects_on(self.root, &subjects, false);
        let duration = wall.elapsed().as_secs_f64();
        let spent = thread_cpu_seconds() - c0;
        self.schedule.charge_read(spent);
        self.schedule.costs.sharing.learn(work, spent);
        self.schedule.last_sharing = t;
        log::debug!(
            "sharing at {t:.3} s: {} processes, {:.2} ms for {work:.0} units",
            subjects.len(),
            spent * 1e3
        );
        for (k, s) in measured.sharing.iter().enumerate() {
            let Some(s) = s else { continue };
            let Some(j) = index
                .iter()
                .zip(&subjects)
                .find_map(|(&j, sub)| (sub.pid == s.parent).then_some(j))
            else {
                continue;
            };
            let (id, parent) = (self.tree.procs[index[k]].id, self.tree.procs[j].id);
            self.writer.sharing(t, id, parent, duration, s)?;
        }
        Ok(())
    }
}
