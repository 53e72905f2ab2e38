//! `ps`: the Python processes of the host (or every process), grouped into trees, with the
//! kernel's totals per process from `smaps_rollup`.

use memlens_procfs::tree::ProcessTable;
use memlens_procfs::{Error, Process, Result};

use crate::process::{cmdline_string, Amounts, AmountsOf, PythonInfo};

pub use memlens_model::host::{PsProcess, PsReport, PsTree};

/// Whether a process is a Python: by executable name or a mapped libpython. `Err` when the
/// kernel refuses to show its executable or mappings (another user's process): it may be one.
fn python_of(proc: &Process) -> std::result::Result<Option<PythonInfo>, Denied> {
    let (exe, maps) = match (proc.exe(), proc.maps()) {
        (Ok(exe), Ok(maps)) => (exe, maps),
        (Err(Error::PermissionDenied { .. }), _) | (_, Err(Error::PermissionDenied { .. })) => {
            return Err(Denied)
        }
        _ => return Ok(None),
    };
    Ok(crate::process::detect_python(
        &exe,
        maps.iter().map(|m| m.path.as_slice()),
    ))
}

/// The kernel refused to show a process.
struct Denied;

enum Row {
    Listed(Box<PsProcess>),
    Unreadable,
    Skip,
}

fn read_row(pid: u32, all: bool) -> Row {
    let Ok(proc) = Process::new(pid) else {
        return Row::Skip;
    };
    let status = match proc.status() {
        Ok(s) if s.is_kernel_thread() || s.has_exited() => return Row::Skip,
        Ok(s) => s,
        Err(Error::PermissionDenied { .. }) => return Row::Unreadable,
        Err(_) => return Row::Skip,
    };
    let Ok(python) = python_of(&proc) else {
        return Row::Unreadable;
    };
    if python.is_none() && !all {
        return Row::Skip;
    }
    let totals = match proc.smaps_rollup() {
        Ok(c) => Amounts::of(&c),
        Err(Error::PermissionDenied { .. }) => return Row::Unreadable,
        Err(_) => return Row::Skip,
    };
    Row::Listed(Box::new(PsProcess {
        pid,
        ppid: status.ppid,
        name: String::from_utf8_lossy(&status.name).into_owned(),
        cmdline: cmdline_string(&proc.cmdline().unwrap_or_default()),
        python,
        threads: status.threads,
        vm_hwm: status.vm_hwm,
        totals,
        depth: 0,
        sharing: None,
    }))
}

/// Whether `ps` measures copy-on-write sharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsSharing {
    /// Not asked: no sharing field at all (the totals only, as [`ps`] gives them).
    Skip,
    /// Measured for every process whose parent is listed in its tree, and each tree's
    /// exclusive total (trees of more than one process only).
    Measure,
    /// Not measured, for this reason (said in each field that would hold a figure).
    Off(String),
}

/// Lists the Python processes (every process with `all`) as trees, with the kernel's totals
/// only. memlens itself is left out.
pub fn ps(all: bool) -> Result<PsReport> {
    ps_with(all, &PsSharing::Skip)
}

/// [`ps`], with copy-on-write sharing as `sharing` says. Only trees of more than one process
/// are read page by page (their `smaps` and the resident part of their `pagemap`, chunked as
/// `snapshot --tree` reads them), so a host of single processes costs what [`ps`] costs.
pub fn ps_with(all: bool, sharing: &PsSharing) -> Result<PsReport> {
    let mut report = ps_rows(all)?;
    for t in report.trees.iter_mut().filter(|t| t.processes.len() > 1) {
        match sharing {
            PsSharing::Skip => {}
            PsSharing::Measure => measure_tree(t),
            PsSharing::Off(reason) => {
                for p in t.processes.iter_mut().filter(|p| p.depth > 0) {
                    p.sharing = Some(memlens_model::sharing::Sharing::not_measured(
                        p.ppid,
                        reason.clone(),
                    ));
                }
                t.exclusive = Some(memlens_model::sharing::Exclusive::not_measured(
                    reason.clone(),
                ));
            }
        }
    }
    Ok(report)
}

/// Measures one tree's sharing: each process below the root against its parent (listed in
/// the same tree by construction), the tree's exclusive total.
fn measure_tree(t: &mut PsTree) {
    let subjects: Vec<crate::sharing::Subject> = t
        .processes
        .iter()
        .map(|p| crate::sharing::Subject {
            pid: p.pid,
            ppid: if p.depth > 0 { p.ppid } else { 0 },
            arenas: Vec::new(),
        })
        .collect();
    let m = crate::sharing::measure_subjects(t.root, &subjects);
    for (p, s) in t.processes.iter_mut().zip(m.sharing) {
        p.sharing = s;
    }
    t.exclusive = Some(m.exclusive);
}

fn ps_rows(all: bool) -> Result<PsReport> {
    let table = ProcessTable::scan()?;
    let me = std::process::id();
    let entries: Vec<_> = table.iter().filter(|e| e.pid != me).collect();
    let reads = crate::parallel::map(&entries, |e| read_row(e.pid, all));
    let mut rows: Vec<PsProcess> = Vec::new();
    let mut unreadable = 0;
    for r in reads {
        match r {
            Row::Listed(p) => rows.push(*p),
            Row::Unreadable => unreadable += 1,
            Row::Skip => {}
        }
    }
    Ok(group(rows, all, unreadable))
}

/// Groups rows into trees: a root is a row whose parent is not listed (or, listing every
/// process, whose parent is init, so the host does not collapse into one tree).
pub fn group(rows: Vec<PsProcess>, all: bool, unreadable: u32) -> PsReport {
    let listed: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.pid).collect();
    let is_root =
        |r: &PsProcess| !listed.contains(&r.ppid) || r.ppid == r.pid || (all && r.ppid <= 1);
    let mut trees = Vec::new();
    let mut totals = Amounts::default();
    for root in rows.iter().filter(|r| is_root(r)) {
        let mut procs = Vec::new();
        let mut stack = vec![(root.pid, 0u32)];
        while let Some((pid, depth)) = stack.pop() {
            let Some(r) = rows.iter().find(|r| r.pid == pid) else {
                continue;
            };
            let mut r = r.clone();
            r.depth = depth;
            procs.push(r);
            let mut kids: Vec<u32> = rows
                .iter()
                .filter(|c| c.ppid == pid && c.pid != pid && !is_root(c))
                .map(|c| c.pid)
                .collect();
            kids.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(kids.into_iter().map(|k| (k, depth + 1)));
        }
        let mut t = Amounts::default();
        for p in &procs {
            t.add(&p.totals);
        }
        totals.add(&t);
        trees.push(PsTree {
            root: root.pid,
            totals: t,
            rss_overcount: t.rss.saturating_sub(t.pss),
            processes: procs,
            exclusive: None,
        });
    }
    trees.sort_by(|a, b| b.totals.pss.cmp(&a.totals.pss).then(a.root.cmp(&b.root)));
    PsReport {
        trees,
        totals,
        unreadable,
    }
}

/// Waits `d`, reading the PSS of `pid` (`smaps_rollup`) `samples` + 1 times evenly through it:
/// `(seconds since the start, bytes)`, and how many reads failed (those points are left out:
/// a verdict on fewer points says so by its minimum).
pub fn sample_pss(pid: u32, d: std::time::Duration, samples: u32) -> (Vec<(f64, u64)>, u32) {
    let start = std::time::Instant::now();
    let proc = Process::new(pid).ok();
    let mut out = Vec::new();
    let mut failed = 0;
    for i in 0..=samples {
        let at = d.mul_f64(f64::from(i) / f64::from(samples.max(1)));
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = start.elapsed().as_secs_f64();
        match proc.as_ref().map(|p| p.smaps_rollup()) {
            Some(Ok(c)) => out.push((t, c.pss)),
            Some(Err(e)) => {
                log::debug!("PSS of {pid}: {e}");
                failed += 1;
            }
            None => failed += 1,
        }
    }
    (out, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, ppid: u32, pss: u64) -> PsProcess {
        PsProcess {
            pid,
            ppid,
            name: "python3".into(),
            cmdline: String::new(),
            python: None,
            threads: 1,
            vm_hwm: 0,
            totals: Amounts {
                rss: pss * 2,
                pss,
                uss: pss / 2,
                swap: 0,
            },
            depth: 0,
            sharing: None,
        }
    }

    #[test]
    fn groups_trees_and_sums() {
        let r = group(
            vec![
                row(10, 1, 100),
                row(11, 10, 50),
                row(12, 11, 25),
                row(20, 5, 500),
            ],
            false,
            0,
        );
        assert_eq!(r.trees.len(), 2);
        assert_eq!(r.trees[0].root, 20);
        let t = &r.trees[1];
        assert_eq!(
            t.processes
                .iter()
                .map(|p| (p.pid, p.depth))
                .collect::<Vec<_>>(),
            vec![(10, 0), (11, 1), (12, 2)]
        );
        assert_eq!(t.totals.pss, 175);
        assert_eq!(t.rss_overcount, 175);
        assert_eq!(r.totals.pss, 675);
    }
}
