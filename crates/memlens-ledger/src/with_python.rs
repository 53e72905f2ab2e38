//! The ledger of `memlens snapshot`: a process or tree read from `/proc` with the Python view
//! of each Python process (its pymalloc arenas sort the heap, the rest is attached), and, on
//! request, each one's Python objects by package (a census per process).

use std::collections::HashMap;

use memlens_cpython::views::{mode, TreeViews};
use memlens_cpython::Attacher;
use memlens_model::census::Tallies;

use crate::distribution::DistributionResolver;
use crate::process::{Hints, PythonViewExt};
use crate::tree::TreeLedger;

/// The ledger of `pid` (with every descendant when `tree`), each Python process's view read
/// (without stopping it when `nonblocking`) and attached.
pub fn snapshot_with_python(
    pid: u32,
    tree: bool,
    nonblocking: bool,
) -> memlens_procfs::Result<TreeLedger> {
    let views = TreeViews::new(pid, nonblocking, tree);
    let mut ledger = crate::tree::snapshot(pid, tree, &|pid| Hints {
        python_arenas: views.read(pid),
    })?;
    let mut views = views.into_views();
    for p in &mut ledger.processes {
        if let Some(v) = views.remove(&p.pid) {
            p.attach_python_view(v);
        }
    }
    Ok(ledger)
}

/// A census for `--packages` that failed: the process and why.
#[derive(Debug)]
pub struct PackagesError {
    /// The process.
    pub pid: u32,
    /// Why its census failed.
    pub error: memlens_cpython::Error,
}

/// Takes a census of each process with a Python view and attaches its objects by package.
/// The root's failure fails the whole (no figures rather than wrong ones); a descendant that
/// exited meanwhile is left without packages.
pub fn attach_packages(
    ledger: &mut TreeLedger,
    root: u32,
    nonblocking: bool,
) -> Result<(), PackagesError> {
    census_each(ledger, root, nonblocking, true, false).map(|_| ())
}

/// Takes a census of each process with a Python view (one walk each): with `packages`,
/// attaches each one's objects by package; with `advice`, returns each one's tallies for
/// advice (`memlens_model::advice`) by pid. Failures as in [`attach_packages`].
pub fn census_each(
    ledger: &mut TreeLedger,
    root: u32,
    nonblocking: bool,
    packages: bool,
    advice: bool,
) -> Result<HashMap<u32, Tallies>, PackagesError> {
    let attacher = Attacher::new();
    let mode = mode(nonblocking);
    let mut tallies = HashMap::new();
    for p in &mut ledger.processes {
        let viewed = p
            .python
            .as_ref()
            .is_some_and(|py| py.gc.is_some() || py.pymalloc.is_some() || py.modules.is_some());
        if !viewed {
            continue; // no Python view read: no interpreter to census
        }
        let pid = p.pid;
        let cap = memlens_cpython::census::CENSUS_MEMORY_CAP;
        let read = attacher.attach(pid).and_then(|s| {
            if advice {
                // the objects by package for `package-import` too
                s.census_for_advice(mode, cap, true)
            } else if packages {
                s.census_by_module(mode, cap)
                    .map(|(c, m, stats)| (c, Some(m), stats))
            } else {
                s.census_capped(mode, cap)
                    .map(|(c, stats)| (c, None, stats))
            }
        });
        match read {
            Ok((mut census, by_module, stats)) => {
                log::info!(
                    "pid {pid}: census in {:.1} ms ({} objects)",
                    stats.elapsed.as_secs_f64() * 1e3,
                    census.objects,
                );
                if let Some(by_module) = by_module {
                    let mut dists = DistributionResolver::new(format!("/proc/{pid}/root"));
                    p.attach_packages(&census, &by_module, &mut dists);
                    if advice {
                        census.tallies.packages = p
                            .python
                            .as_ref()
                            .and_then(|py| py.packages.as_ref())
                            .map(|pk| pk.packages.clone())
                            .unwrap_or_default();
                    }
                    if !packages {
                        if let Some(py) = p.python.as_mut() {
                            py.packages = None; // taken for advice only
                        }
                    }
                }
                if advice {
                    tallies.insert(pid, std::mem::take(&mut census.tallies));
                }
            }
            Err(e) if e.is_process_gone() && pid != root => {
                log::info!("pid {pid} exited before its census: no packages or advice");
            }
            Err(error) => return Err(PackagesError { pid, error }),
        }
    }
    Ok(tallies)
}
