//! The ledger of a process tree: sums of PSS (the honest total), USS and RSS, the cgroup view,
//! and one-line findings.

use memlens_procfs::tree::ProcessTable;
use memlens_procfs::{Error, Process, Result};

use crate::distribution::DistributionResolver;
use crate::process::{
    build, thread_stack_pointers, Hints, ProcessLedger, ProcessParts, StackPointers,
};

pub use memlens_model::tree::{assemble, by_category, Skipped, TreeLedger};

/// Takes the ledger of `pid`, or of it and every descendant with `tree`. `python` supplies
/// interpreter-derived address ranges per process (return `Hints::default()` when the Python
/// view is off); it is called from several threads at once, the root's first.
/// Descendants that exit during the read are left out; the root exiting is an error.
pub fn snapshot(
    pid: u32,
    tree: bool,
    python: &(dyn Fn(u32) -> Hints + Sync),
) -> Result<TreeLedger> {
    let root = Process::new(pid)?;
    let pids = if tree {
        // memlens itself is never part of the tree it reads (`snapshot --tree` of one of its
        // own ancestors): its memory is not the program's.
        let me = std::process::id();
        let mut pids = ProcessTable::scan()?.subtree(pid);
        pids.retain(|&p| p == pid || p != me);
        pids
    } else {
        vec![pid]
    };
    // One list of jobs on every core: the root's Python view first (forked workers reuse what
    // it read), the `/proc` reads next, the other Python views last.
    enum Job {
        Parts(usize),
        Python(usize),
    }
    enum Done {
        Parts(Result<ProcessParts>),
        Python(Hints),
    }
    let jobs: Vec<Job> = std::iter::once(Job::Python(0))
        .chain((0..pids.len()).map(Job::Parts))
        .chain((1..pids.len()).map(Job::Python))
        .collect();
    // The threads' stack pointers first, before any Python view pauses (and so wakes) them:
    // a thread made runnable by the resume shows no registers for a while on a loaded host.
    let early: Vec<Option<StackPointers>> = pids
        .iter()
        .map(|&p| {
            Process::new(p)
                .and_then(|proc| thread_stack_pointers(&proc))
                .ok()
        })
        .collect();
    let done = crate::parallel::map(&jobs, |job| match *job {
        Job::Parts(i) => {
            let sps = early[i].clone();
            Done::Parts(Process::new(pids[i]).and_then(|proc| ProcessParts::read_with(&proc, sps)))
        }
        Job::Python(i) => Done::Python(python(pids[i])),
    });
    let mut reads: Vec<Option<Result<ProcessParts>>> = (0..pids.len()).map(|_| None).collect();
    let mut hints: Vec<Hints> = vec![Hints::default(); pids.len()];
    for (job, d) in jobs.iter().zip(done) {
        match (job, d) {
            (Job::Parts(i), Done::Parts(r)) => reads[*i] = Some(r),
            (Job::Python(i), Done::Python(h)) => hints[*i] = h,
            _ => {}
        }
    }
    let reads = reads
        .into_iter()
        .zip(hints)
        .map(|(r, h)| (r.unwrap_or(Err(Error::ProcessGone { pid })), h));
    let (processes, skipped) = build_all(&pids, Some(pid), reads)?;
    let cgroup = root.memory_cgroup().unwrap_or_else(|e| {
        log::debug!("no cgroup view for {pid}: {e}");
        None
    });
    let mut t = assemble(pid, processes, cgroup);
    t.skipped = skipped;
    t.refresh_findings();
    Ok(t)
}

/// The ledgers of a list of processes, in its order. Processes that exit during the read are
/// left out; those that cannot be read (permission, kernel threads) are listed as skipped,
/// except `required`, whose failure is the error. With `parallel`, processes are read on
/// every core; without, all on the calling thread (a sampler charging its own CPU time to a
/// budget). `hints` is called after each process is read, on the calling thread.
pub fn read_processes(
    pids: &[u32],
    required: Option<u32>,
    parallel: bool,
    hints: &mut dyn FnMut(u32) -> Hints,
) -> Result<(Vec<ProcessLedger>, Vec<Skipped>)> {
    let read = |&p: &u32| {
        let proc = Process::new(p)?;
        let parts = ProcessParts::read(&proc)?;
        // Each read() of smaps needs the address space: a process that exits between two of
        // them ends the file early, the mappings after that point missing. A read that
        // finished after the exit is no ledger of the process.
        let st = proc.status()?;
        if st.state == b'Z' || st.state == b'X' || st.vm_size == 0 {
            return Err(Error::ProcessGone { pid: p });
        }
        Ok(parts)
    };
    let reads = if parallel {
        crate::parallel::map(pids, read)
    } else {
        pids.iter().map(read).collect()
    };
    let with_hints = pids.iter().zip(reads).map(|(&p, r)| {
        let h = if r.is_ok() {
            hints(p)
        } else {
            Hints::default()
        };
        (r, h)
    });
    build_all(pids, required, with_hints)
}

/// Builds the ledgers of processes read (with their hints), in order.
fn build_all(
    pids: &[u32],
    required: Option<u32>,
    reads: impl Iterator<Item = (Result<ProcessParts>, Hints)>,
) -> Result<(Vec<ProcessLedger>, Vec<Skipped>)> {
    let first = pids.first().copied().unwrap_or(0);
    let mut resolver = DistributionResolver::new(format!("/proc/{first}/root"));
    let mut processes = Vec::with_capacity(pids.len());
    let mut skipped = Vec::new();
    for (&p, (read, h)) in pids.iter().zip(reads) {
        match read {
            Ok(parts) => processes.push(build(&parts, &h, &mut resolver)),
            Err(e) if Some(p) == required => return Err(e),
            Err(Error::ProcessGone { .. }) => continue,
            Err(e) => {
                log::debug!("ledger of {p}: {e}");
                skipped.push(Skipped {
                    pid: p,
                    reason: e.to_string(),
                    permission_denied: matches!(e, Error::PermissionDenied { .. }),
                });
            }
        }
    }
    Ok((processes, skipped))
}
