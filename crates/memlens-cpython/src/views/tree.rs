//! The Python views of one snapshot: every process of a tree read once, the root first so that
//! forked workers reuse what its read found.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::attach::{AttachCounts, Attacher};
use crate::reader::SharedPages;
use crate::session::PythonView;
use crate::Error;

/// pymalloc's arenas, `(start, end)`: the ledger sorts these ranges into python-heap ahead of
/// its name rules.
pub type ArenaRanges = Vec<(u64, u64)>;

/// The Python view and pymalloc's arenas of `pid`. Never fails: a process without a supported
/// Python gives `(None, [])` and a logged message.
pub fn inspect(pid: u32, nonblocking: bool) -> (Option<PythonView>, ArenaRanges) {
    inspect_with(&Attacher::new(), pid, nonblocking)
}

/// [`inspect`] with an attacher that may already know the process's Python binary.
pub fn inspect_with(
    attacher: &Attacher,
    pid: u32,
    nonblocking: bool,
) -> (Option<PythonView>, ArenaRanges) {
    let session = match attacher.attach(pid) {
        Ok(s) => s,
        Err(e @ Error::NotPython { .. }) => {
            log::debug!("pid {pid}: {e}");
            return (None, Vec::new());
        }
        Err(e) => {
            log::warn!("pid {pid}: no Python view: {e}");
            return (None, Vec::new());
        }
    };
    match session.view(super::mode(nonblocking)) {
        Ok((view, stats)) => {
            log::info!(
                "pid {pid}: Python view in {:.2} ms{} ({} reads, {} pagemap reads, {} reused)",
                stats.elapsed.as_secs_f64() * 1e3,
                stats.paused.map_or(String::new(), |p| format!(
                    ", paused {:.2} ms",
                    p.as_secs_f64() * 1e3
                )),
                stats.reads.reads,
                stats.reads.pagemap_reads,
                stats.reads.reused
            );
            let arenas = view
                .pymalloc
                .as_ref()
                .map(|p| p.arena_ranges.clone())
                .unwrap_or_default();
            (Some(view), arenas)
        }
        Err(e) => {
            log::warn!("pid {pid}: no Python view: {e}");
            (None, Vec::new())
        }
    }
}

/// How long the Python view of a process waits for the root's to finish (so that forked
/// workers reuse what the root's read found) before it goes on alone.
const ROOT_WAIT: Duration = Duration::from_secs(2);

/// The Python views of the processes of one snapshot: one attacher for all (each Python binary
/// is discovered once, forked workers reuse their parent's findings and the pages it read),
/// called from several threads.
pub struct TreeViews {
    attacher: Attacher,
    pages: Arc<SharedPages>,
    root: u32,
    nonblocking: bool,
    views: Mutex<HashMap<u32, PythonView>>,
    root_done: (Mutex<bool>, Condvar),
}

impl std::fmt::Debug for TreeViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeViews")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl TreeViews {
    /// Views of the tree of `root` (`tree`: several processes, which may share pages).
    pub fn new(root: u32, nonblocking: bool, tree: bool) -> TreeViews {
        let pages = Arc::new(SharedPages::deferred());
        TreeViews {
            attacher: if tree {
                Attacher::with_shared_pages(Arc::clone(&pages))
            } else {
                Attacher::new()
            },
            pages,
            root,
            nonblocking,
            views: Mutex::new(HashMap::new()),
            root_done: (Mutex::new(false), Condvar::new()),
        }
    }

    /// Reads the view of `pid` and returns pymalloc's arenas for its ledger; keeps the view.
    /// The root's view is read first: others wait for it (at most [`ROOT_WAIT`]).
    pub fn read(&self, pid: u32) -> ArenaRanges {
        let (done, cv) = &self.root_done;
        if pid != self.root {
            let guard = done.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cv
                .wait_timeout_while(guard, ROOT_WAIT, |d| !*d)
                .unwrap_or_else(|p| p.into_inner());
        }
        let (view, arenas) = inspect_with(&self.attacher, pid, self.nonblocking);
        if let Some(v) = view {
            self.views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pid, v);
        }
        if pid == self.root {
            *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        arenas
    }

    /// The views read, by process id. Pages a process reused from another are confirmed now
    /// (see [`crate::reader`]); a process whose reuse does not hold is read again on its own.
    pub fn into_views(self) -> HashMap<u32, PythonView> {
        let again = self.pages.confirm();
        log::info!(
            "Python views: {:?}, {} pieces reused, {} processes read again",
            self.attacher.counts(),
            self.pages.reused(),
            again.len()
        );
        let mut views = self.views.into_inner().unwrap_or_else(|p| p.into_inner());
        let alone = Attacher::new();
        for pid in again {
            match inspect_with(&alone, pid, self.nonblocking).0 {
                Some(v) => views.insert(pid, v),
                None => views.remove(&pid),
            };
        }
        views
    }

    /// What the attacher did (discoveries, reuses).
    pub fn counts(&self) -> AttachCounts {
        self.attacher.counts()
    }
}
