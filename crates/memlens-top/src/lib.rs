//! `memlens top`: a live terminal view of the host's Python processes as trees (ratatui on its
//! crossterm backend).
//!
//! What it owns: the view's state ([`app`]), the data refresh on a thread of its own
//! ([`refresh`]), the drawing ([`render`]) and the terminal's safety ([`terminal`]: raw mode,
//! alternate screen and cursor restored on exit, on panic and on SIGINT/SIGTERM/SIGHUP).
//! What it must not do: read `/proc` or the target itself (it calls `memlens-ledger` and
//! `memlens-cpython`), print an untrusted string unescaped, or pause a target unless the user
//! asked for a census in the detail view.
//!
//! Cost per refresh (bounded, whatever the number of processes): one `memlens ps` (each Python
//! process's `smaps_rollup`), then full ledgers (smaps, the Python view read without stopping
//! the target, copy-on-write sharing from pagemap) of the trees that have a row on screen
//! only, the selected one first, the others oldest first, until half the interval is spent
//! (at least one tree per refresh). Columns that come from a ledger show its latest figures.

pub mod app;
pub mod refresh;
pub mod render;
pub mod terminal;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

/// What `memlens top` is asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the process list is read.
    pub interval: Duration,
    /// Sizes as exact byte counts.
    pub bytes: bool,
    /// No colours (`NO_COLOR` set and not empty).
    pub no_color: bool,
}

/// How the view ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The user quit (`q`, Esc, Ctrl-C).
    Quit,
    /// A signal ended it (its number); the terminal was restored first.
    Signal(i32),
}

/// Why `memlens top` could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Standard output is not a terminal.
    #[error("memlens top needs a terminal: standard output is not a TTY")]
    NotATerminal,
    /// The terminal could not be set up or written.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// The refresh thread stopped.
    #[error("the data refresh stopped: {0}")]
    Refresh(String),
}

/// Whether `NO_COLOR` asks for no colours (set and not empty, as no-color.org says).
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Runs the live view until the user quits or a signal ends it. The terminal is restored on
/// every path (a panic included) before this returns or the panic unwinds further.
pub fn run(opts: Options) -> Result<Outcome, Error> {
    if !std::io::stdout().is_terminal() {
        return Err(Error::NotATerminal);
    }
    let signals = terminal::Signals::register()?;
    let mut term = terminal::Guard::enter()?;
    let refresher = refresh::Refresher::spawn(opts.interval);
    let mut app = app::App::new(opts.clone(), refresher.wanted());
    let tick = Duration::from_millis(100);
    let result = (|| -> Result<Outcome, Error> {
        let mut dirty = true;
        let mut last_draw = Instant::now();
        loop {
            if let Some(sig) = signals.received() {
                return Ok(Outcome::Signal(sig));
            }
            while let Some(u) = refresher.try_recv().map_err(Error::Refresh)? {
                app.apply(u);
                dirty = true;
            }
            if let Some(u) = app.poll_census() {
                app.apply(u);
                dirty = true;
            }
            // Ages and the "census running" line move with time.
            if dirty || last_draw.elapsed() >= Duration::from_secs(1) {
                term.draw(|f| render::draw(f, &mut app))?;
                app.publish_wanted(); // the rows on screen may have moved
                last_draw = Instant::now();
                dirty = false;
            }
            if event::poll(tick)? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if app.key(k) == app::Action::Quit {
                            return Ok(Outcome::Quit);
                        }
                        refresher.wake();
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
            panic_for_tests(&app);
        }
    })();
    term.restore();
    signals.unregister();
    result
}

/// Debug builds only: `MEMLENS_TOP_TEST_PANIC=1` panics once the first rows are drawn, so the
/// integration tests can check that a panic restores the terminal. Release builds ignore it.
fn panic_for_tests(app: &app::App) {
    if cfg!(debug_assertions)
        && app.has_rows()
        && std::env::var_os("MEMLENS_TOP_TEST_PANIC").is_some_and(|v| v == "1")
    {
        panic!("MEMLENS_TOP_TEST_PANIC: a panic asked for by the tests");
    }
}
