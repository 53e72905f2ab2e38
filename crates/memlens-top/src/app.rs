//! The view's state: the latest `ps`, each process's PSS history, the ledgers read, the sort
//! key, the filter, the selection, and what each key does.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use memlens_ledger::host::PsProcess;
use memlens_model::census::Census;
use memlens_model::ledger::ProcessLedger;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::refresh::{Update, Wanted};
use crate::Options;

/// PSS samples kept per process (the sparkline's width).
pub const HISTORY: usize = 60;
/// Census types shown.
pub const CENSUS_TOP: usize = 15;

/// The sort keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// PSS, largest first.
    Pss,
    /// USS, largest first.
    Uss,
    /// Swap, largest first.
    Swap,
    /// Growth per second, fastest first.
    Growth,
    /// Name, A to Z.
    Name,
}

impl SortKey {
    /// The word on screen.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Pss => "PSS",
            SortKey::Uss => "USS",
            SortKey::Swap => "swap",
            SortKey::Growth => "growth",
            SortKey::Name => "name",
        }
    }
}

/// What a key asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    Continue,
    /// Quit.
    Quit,
}

/// The top types of a census, by bytes.
#[derive(Debug, Clone)]
pub struct CensusView {
    /// Objects counted.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `(type name, count, bytes)`, most bytes first (names untrusted: escape them).
    pub types: Vec<(String, u64, u64)>,
}

impl CensusView {
    /// The `top` types of a census by bytes.
    pub fn of(c: &Census, top: usize) -> CensusView {
        let mut types: Vec<(String, u64, u64)> = c
            .types
            .iter()
            .map(|t| (t.type_name.clone(), t.count, t.bytes))
            .collect();
        types.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        types.truncate(top);
        CensusView {
            objects: c.objects,
            bytes: c.bytes,
            types,
        }
    }
}

/// The census of the detail view.
#[derive(Debug)]
pub enum CensusState {
    /// Running since.
    Running(u32, Instant),
    /// Done.
    Done(u32, Result<CensusView, String>),
}

/// A process's ledger as last read.
#[derive(Debug)]
pub struct LedgerEntry {
    /// When it was read.
    pub at: Instant,
    /// The process's ledger (with its sharing when its parent is in the tree).
    pub ledger: ProcessLedger,
}

/// A row on screen.
#[derive(Debug, Clone)]
pub struct Line {
    /// The process.
    pub process: PsProcess,
    /// Its tree's root.
    pub root: u32,
    /// Depth in the tree as shown (0 for roots).
    pub depth: u32,
}

/// The view's state.
pub struct App {
    /// Options.
    pub opts: Options,
    /// Processes of the latest `ps`, by tree.
    pub trees: Vec<(u32, Vec<PsProcess>)>,
    /// Unreadable processes of the latest `ps`.
    pub unreadable: u32,
    /// Why the latest `ps` failed.
    pub ps_error: Option<String>,
    /// When the latest `ps` was read.
    pub ps_at: Option<Instant>,
    /// PSS history per PID.
    pub history: HashMap<u32, VecDeque<(Instant, u64)>>,
    /// Ledgers per PID.
    pub ledgers: HashMap<u32, LedgerEntry>,
    /// Ledger failures per root.
    pub ledger_errors: HashMap<u32, String>,
    /// Sort key.
    pub sort: SortKey,
    /// Filter text.
    pub filter: String,
    /// Typing the filter.
    pub editing_filter: bool,
    /// The selected PID.
    pub selected: Option<u32>,
    /// The detail view's PID.
    pub detail: Option<u32>,
    /// The help overlay.
    pub help: bool,
    /// The census of the detail view.
    pub census: Option<CensusState>,
    /// The table's rows on screen: `(first line, count)`, set by each draw.
    pub window: (usize, usize),
    census_rx: Option<Receiver<Update>>,
    wanted: Arc<Mutex<Wanted>>,
}

impl App {
    /// A new, empty view.
    pub fn new(opts: Options, wanted: Arc<Mutex<Wanted>>) -> App {
        App {
            opts,
            trees: Vec::new(),
            unreadable: 0,
            ps_error: None,
            ps_at: None,
            history: HashMap::new(),
            ledgers: HashMap::new(),
            ledger_errors: HashMap::new(),
            sort: SortKey::Pss,
            filter: String::new(),
            editing_filter: false,
            selected: None,
            detail: None,
            help: false,
            census: None,
            window: (0, usize::MAX),
            census_rx: None,
            wanted,
        }
    }

    /// Whether any process was listed.
    pub fn has_rows(&self) -> bool {
        self.trees.iter().any(|(_, p)| !p.is_empty())
    }

    /// Takes in an update of the refresh.
    pub fn apply(&mut self, u: Update) {
        match u {
            Update::Ps { at, report } => match report {
                Ok(r) => {
                    self.ps_error = None;
                    self.ps_at = Some(at);
                    self.unreadable = r.unreadable;
                    let live: std::collections::HashSet<u32> = r
                        .trees
                        .iter()
                        .flat_map(|t| t.processes.iter().map(|p| p.pid))
                        .collect();
                    self.history.retain(|pid, _| live.contains(pid));
                    self.ledgers.retain(|pid, _| live.contains(pid));
                    self.ledger_errors.retain(|root, _| live.contains(root));
                    for p in r.trees.iter().flat_map(|t| &t.processes) {
                        let h = self.history.entry(p.pid).or_default();
                        h.push_back((at, p.totals.pss));
                        while h.len() > HISTORY {
                            h.pop_front();
                        }
                    }
                    self.trees = r.trees.into_iter().map(|t| (t.root, t.processes)).collect();
                }
                Err(e) => self.ps_error = Some(e),
            },
            Update::Ledger { root, at, ledger } => match ledger {
                Ok(t) => {
                    self.ledger_errors.remove(&root);
                    for p in t.processes {
                        self.ledgers.insert(p.pid, LedgerEntry { at, ledger: p });
                    }
                }
                Err(e) => {
                    self.ledger_errors.insert(root, e);
                }
            },
            Update::Census { pid, result } => {
                self.census = Some(CensusState::Done(pid, result));
                self.census_rx = None;
            }
        }
        self.publish_wanted();
    }

    /// A finished census, if one is waiting.
    pub fn poll_census(&mut self) -> Option<Update> {
        self.census_rx.as_ref().and_then(|rx| rx.try_recv().ok())
    }

    /// PSS growth per second over the last refresh interval.
    pub fn growth(&self, pid: u32) -> Option<f64> {
        let h = self.history.get(&pid)?;
        let n = h.len();
        if n < 2 {
            return None;
        }
        let (t0, a) = h[n - 2];
        let (t1, b) = h[n - 1];
        let dt = t1.duration_since(t0).as_secs_f64();
        (dt > 0.0).then(|| (b as f64 - a as f64) / dt)
    }

    fn matches(&self, p: &PsProcess) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let f = self.filter.to_lowercase();
        p.name.to_lowercase().contains(&f) || p.cmdline.to_lowercase().contains(&f)
    }

    fn key_of(&self, p: &PsProcess) -> f64 {
        match self.sort {
            SortKey::Pss => p.totals.pss as f64,
            SortKey::Uss => p.totals.uss as f64,
            SortKey::Swap => p.totals.swap as f64,
            SortKey::Growth => self.growth(p.pid).unwrap_or(0.0),
            SortKey::Name => 0.0,
        }
    }

    /// Orders `a` before `b` by the sort key (largest first; names A to Z), PID last.
    fn order(&self, a: &PsProcess, b: &PsProcess) -> std::cmp::Ordering {
        let by = match self.sort {
            SortKey::Name => a.name.cmp(&b.name),
            _ => self.key_of(b).total_cmp(&self.key_of(a)),
        };
        by.then(a.pid.cmp(&b.pid))
    }

    /// The rows on screen: trees ordered by their root under the sort key (by the tree's sum
    /// for sizes and growth), each tree's children ordered the same way under their parent;
    /// with a filter, only the matching processes (their depth kept).
    pub fn lines(&self) -> Vec<Line> {
        let mut trees: Vec<(&u32, &Vec<PsProcess>, f64)> = self
            .trees
            .iter()
            .map(|(root, procs)| {
                let sum = procs.iter().map(|p| self.key_of(p)).sum();
                (root, procs, sum)
            })
            .collect();
        trees.sort_by(|a, b| {
            let ra = a.1.first();
            let rb = b.1.first();
            match (self.sort, ra, rb) {
                (SortKey::Name, Some(x), Some(y)) => self.order(x, y),
                _ => b.2.total_cmp(&a.2).then(a.0.cmp(b.0)),
            }
        });
        let mut out = Vec::new();
        for (root, procs, _) in trees {
            let Some(top) = procs.first() else { continue };
            let mut stack = vec![(top, 0u32)];
            while let Some((p, depth)) = stack.pop() {
                if self.matches(p) {
                    out.push(Line {
                        process: p.clone(),
                        root: *root,
                        depth,
                    });
                }
                let mut kids: Vec<&PsProcess> = procs
                    .iter()
                    .filter(|c| c.ppid == p.pid && c.pid != p.pid && c.pid != top.pid)
                    .collect();
                kids.sort_by(|a, b| self.order(b, a));
                stack.extend(kids.into_iter().map(|k| (k, depth + 1)));
            }
        }
        out
    }

    /// Tells the refresh which trees are on screen and which is selected.
    pub fn publish_wanted(&mut self) {
        let lines = self.lines();
        if self
            .selected
            .is_none_or(|s| !lines.iter().any(|l| l.process.pid == s))
        {
            self.selected = lines.first().map(|l| l.process.pid);
        }
        let mut roots: Vec<u32> = Vec::new();
        for l in &lines {
            if !roots.contains(&l.root) {
                roots.push(l.root);
            }
        }
        let focus = self
            .selected
            .and_then(|s| lines.iter().find(|l| l.process.pid == s))
            .map(|l| l.root);
        if let Ok(mut w) = self.wanted.lock() {
            w.visible_roots = roots;
            w.focus_root = focus;
        }
    }

    fn move_selection(&mut self, by: isize) {
        let lines = self.lines();
        if lines.is_empty() {
            return;
        }
        let at = self
            .selected
            .and_then(|s| lines.iter().position(|l| l.process.pid == s))
            .unwrap_or(0);
        let to = at.saturating_add_signed(by).min(lines.len() - 1);
        self.selected = Some(lines[to].process.pid);
    }

    /// Handles a key.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing_filter {
            match k.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() && self.filter.len() < 64 => {
                    self.filter.push(c)
                }
                _ => {}
            }
            self.publish_wanted();
            return Action::Continue;
        }
        if self.help {
            self.help = false;
            return match k.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Continue,
            };
        }
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => return Action::Quit,
            KeyCode::Backspace | KeyCode::Left if self.detail.is_some() => self.detail = None,
            KeyCode::Char('c') if self.detail.is_some() => self.start_census(),
            KeyCode::Char('h') | KeyCode::Char('?') => self.help = true,
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Enter => self.detail = self.selected,
            KeyCode::Char('/') => {
                self.detail = None;
                self.editing_filter = true;
            }
            KeyCode::Char('p') => self.sort = SortKey::Pss,
            KeyCode::Char('u') => self.sort = SortKey::Uss,
            KeyCode::Char('s') => self.sort = SortKey::Swap,
            KeyCode::Char('g') => self.sort = SortKey::Growth,
            KeyCode::Char('n') => self.sort = SortKey::Name,
            _ => {}
        }
        if self.detail.is_some() {
            self.detail = self.selected; // arrows move the detail view too
        }
        self.publish_wanted();
        Action::Continue
    }

    fn start_census(&mut self) {
        let Some(pid) = self.detail else { return };
        if matches!(self.census, Some(CensusState::Running(..))) {
            return;
        }
        self.census = Some(CensusState::Running(pid, Instant::now()));
        self.census_rx = Some(crate::refresh::census(pid, CENSUS_TOP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn app() -> App {
        let opts = Options {
            interval: Duration::from_secs(1),
            bytes: true,
            no_color: true,
        };
        App::new(opts, Arc::new(Mutex::new(Wanted::default())))
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn quit_keys() {
        let mut a = app();
        assert_eq!(a.key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(a.key(key(KeyCode::Esc)), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(a.key(ctrl_c), Action::Quit);
        // Ctrl-C quits while typing a filter too; `q` there is text.
        a.key(key(KeyCode::Char('/')));
        assert_eq!(a.key(key(KeyCode::Char('q'))), Action::Continue);
        assert_eq!(a.filter, "q");
        assert_eq!(a.key(ctrl_c), Action::Quit);
    }

    #[test]
    fn filter_editing() {
        let mut a = app();
        a.key(key(KeyCode::Char('/')));
        for c in "wsgi".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        a.key(key(KeyCode::Backspace));
        a.key(key(KeyCode::Enter));
        assert_eq!(a.filter, "wsg");
        assert!(!a.editing_filter);
        // Sort keys work again once the filter is kept.
        a.key(key(KeyCode::Char('n')));
        assert_eq!(a.sort, SortKey::Name);
        a.key(key(KeyCode::Char('/')));
        a.key(key(KeyCode::Esc));
        assert_eq!(a.filter, "");
        assert!(!a.editing_filter);
    }

    #[test]
    fn sort_keys_and_help() {
        let mut a = app();
        for (c, k) in [
            ('u', SortKey::Uss),
            ('s', SortKey::Swap),
            ('g', SortKey::Growth),
            ('n', SortKey::Name),
            ('p', SortKey::Pss),
        ] {
            a.key(key(KeyCode::Char(c)));
            assert_eq!(a.sort, k);
        }
        a.key(key(KeyCode::Char('h')));
        assert!(a.help);
        // Any key closes the help without acting.
        assert_eq!(a.key(key(KeyCode::Esc)), Action::Continue);
        assert!(!a.help);
    }

    #[test]
    fn growth_is_the_last_interval_per_second() {
        let mut a = app();
        let t0 = Instant::now();
        let h = a.history.entry(7).or_default();
        h.push_back((t0, 1000));
        assert_eq!(a.growth(7), None);
        a.history
            .entry(7)
            .or_default()
            .push_back((t0 + Duration::from_millis(500), 3000));
        assert_eq!(a.growth(7), Some(4000.0));
    }
}
