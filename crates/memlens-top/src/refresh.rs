//! The data refresh, on a thread of its own so the view stays responsive: every interval one
//! `ps` of the host's Python processes, then ledgers of the trees on screen within a budget
//! (see the crate docs), each sent to the UI as soon as it is read.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memlens_ledger::host::PsReport;
use memlens_ledger::TreeLedger;

/// What the view wants ledgers of, written by the UI, read by the refresh at each round.
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    /// Roots of the trees with a row on screen, in screen order.
    pub visible_roots: Vec<u32>,
    /// The root of the selected process's tree (read first).
    pub focus_root: Option<u32>,
}

/// What the refresh sends.
#[derive(Debug)]
pub enum Update {
    /// A `ps` of the host, read at `at`.
    Ps {
        /// When it was read.
        at: Instant,
        /// The processes, or why `ps` failed.
        report: Result<PsReport, String>,
    },
    /// The ledger of one tree (with each Python process's view and copy-on-write sharing).
    Ledger {
        /// The tree's root.
        root: u32,
        /// When it was read.
        at: Instant,
        /// The ledger, or why it failed.
        ledger: Result<Box<TreeLedger>, String>,
    },
    /// A census the user asked for.
    Census {
        /// The process.
        pid: u32,
        /// Top types by bytes, or why the census failed.
        result: Result<crate::app::CensusView, String>,
    },
}

/// The refresh thread's handle.
pub struct Refresher {
    updates: Receiver<Update>,
    wake: Sender<()>,
    wanted: Arc<Mutex<Wanted>>,
}

impl Refresher {
    /// Starts the thread.
    pub fn spawn(interval: Duration) -> Refresher {
        let (tx, updates) = mpsc::channel();
        let (wake, woken) = mpsc::channel();
        let wanted = Arc::new(Mutex::new(Wanted::default()));
        let shared = Arc::clone(&wanted);
        std::thread::spawn(move || run(interval, &tx, &woken, &shared));
        Refresher {
            updates,
            wake,
            wanted,
        }
    }

    /// Where the UI says what it shows.
    pub fn wanted(&self) -> Arc<Mutex<Wanted>> {
        Arc::clone(&self.wanted)
    }

    /// The next update, if one is waiting; `Err` when the thread ended.
    pub fn try_recv(&self) -> Result<Option<Update>, String> {
        match self.updates.try_recv() {
            Ok(u) => Ok(Some(u)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err("the refresh thread ended".into()),
        }
    }

    /// Starts the next round's ledgers now (the selection changed); the `ps` keeps its pace.
    pub fn wake(&self) {
        let _ = self.wake.send(());
    }
}

/// The ledger budget of one round: half the interval, from 50 ms to 5 s.
fn ledger_budget(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// The order in which trees get a ledger this round: the focus first, then the visible trees
/// never read, then the others oldest first; only roots that `ps` listed.
pub fn ledger_order(
    wanted: &Wanted,
    listed: &[u32],
    last_read: &HashMap<u32, Instant>,
) -> Vec<u32> {
    let mut order: Vec<u32> = wanted
        .visible_roots
        .iter()
        .copied()
        .filter(|r| listed.contains(r))
        .collect();
    order.sort_by_key(|r| last_read.get(r).copied());
    order.dedup();
    if let Some(f) = wanted.focus_root.filter(|f| listed.contains(f)) {
        order.retain(|r| *r != f);
        order.insert(0, f);
    }
    order
}

fn read_ledger(root: u32) -> Result<Box<TreeLedger>, String> {
    // Never stops the target (nonblocking): the view's figures are read while it runs.
    let mut t = memlens_ledger::with_python::snapshot_with_python(root, true, true)
        .map_err(|e| e.to_string())?;
    memlens_ledger::sharing::measure(&mut t);
    Ok(Box::new(t))
}

fn run(interval: Duration, tx: &Sender<Update>, woken: &Receiver<()>, wanted: &Mutex<Wanted>) {
    let budget = ledger_budget(interval);
    let mut last_read: HashMap<u32, Instant> = HashMap::new();
    let mut listed: Vec<u32> = Vec::new();
    let mut next_ps = Instant::now();
    loop {
        if Instant::now() >= next_ps {
            next_ps = Instant::now() + interval;
            let report = memlens_ledger::host::ps(false).map_err(|e| e.to_string());
            if let Ok(r) = &report {
                listed = r.trees.iter().map(|t| t.root).collect();
                last_read.retain(|root, _| listed.contains(root));
            }
            let at = Instant::now();
            if tx.send(Update::Ps { at, report }).is_err() {
                return;
            }
        }
        let want = wanted.lock().map(|w| w.clone()).unwrap_or_default();
        let start = Instant::now();
        for root in ledger_order(&want, &listed, &last_read) {
            let fresh = last_read.get(&root).is_some_and(|t| t.elapsed() < interval);
            if fresh || (start.elapsed() >= budget && root != want.focus_root.unwrap_or(0)) {
                continue;
            }
            let ledger = read_ledger(root);
            let at = Instant::now();
            last_read.insert(root, at);
            if tx.send(Update::Ledger { root, at, ledger }).is_err() {
                return;
            }
            if start.elapsed() >= budget {
                break;
            }
        }
        match woken.recv_timeout(next_ps.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Takes a census of `pid` on a thread of its own (it may pause the target briefly, as
/// `memlens census` does) and sends its top types.
pub fn census(pid: u32, top: usize) -> Receiver<Update> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = memlens_cpython::Attacher::new()
            .attach(pid)
            .and_then(|s| s.census(memlens_cpython::views::mode(false)))
            .map(|(c, _)| crate::app::CensusView::of(&c, top))
            .map_err(|e| e.to_string());
        let _ = tx.send(Update::Census { pid, result });
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focus_first_then_never_read_then_oldest() {
        let now = Instant::now();
        let mut last = HashMap::new();
        last.insert(10, now);
        last.insert(20, now - Duration::from_secs(5));
        let w = Wanted {
            visible_roots: vec![10, 20, 30, 40],
            focus_root: Some(40),
        };
        // 40 is the focus; 30 never read; 20 older than 10. 99 is not listed by ps: never.
        assert_eq!(
            ledger_order(&w, &[10, 20, 30, 40], &last),
            vec![40, 30, 20, 10]
        );
        let w = Wanted {
            visible_roots: vec![10, 99],
            focus_root: Some(99),
        };
        assert_eq!(ledger_order(&w, &[10], &last), vec![10]);
    }

    #[test]
    fn budget_is_bounded() {
        assert_eq!(
            ledger_budget(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            ledger_budget(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            ledger_budget(Duration::from_secs(3600)),
            Duration::from_secs(5)
        );
    }
}
