//! The terminal's safety: raw mode, the alternate screen and the hidden cursor are undone on
//! a normal exit (the guard's drop), on a panic (a hook that restores before the previous hook
//! prints) and on SIGINT/SIGTERM/SIGHUP (a flag the UI loop checks every 100 ms; it then
//! returns through the guard).

use std::io::{Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::{Frame, Terminal};

/// Whether the terminal is in its normal state (nothing to undo). The panic hook and the
/// guard both restore, once.
pub static RESTORED: AtomicBool = AtomicBool::new(true);

/// Undoes raw mode, the alternate screen and the hidden cursor, once; errors are ignored (a
/// terminal that hung up cannot be restored, and nothing else can be done).
pub fn restore_now() {
    if RESTORED.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = out.flush();
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_now();
            previous(info);
        }));
    });
}

/// The terminal in raw mode on the alternate screen; restored on drop.
pub struct Guard {
    term: Terminal<CrosstermBackend<Stdout>>,
}

impl Guard {
    /// Enters raw mode and the alternate screen, hides the cursor.
    pub fn enter() -> std::io::Result<Guard> {
        install_panic_hook();
        RESTORED.store(false, Ordering::SeqCst);
        let setup = || -> std::io::Result<Terminal<CrosstermBackend<Stdout>>> {
            terminal::enable_raw_mode()?;
            let mut out = std::io::stdout();
            execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
            Terminal::new(CrosstermBackend::new(out))
        };
        match setup() {
            Ok(term) => Ok(Guard { term }),
            Err(e) => {
                restore_now();
                Err(e)
            }
        }
    }

    /// Draws a frame, unless the terminal was already restored (a panic on another thread).
    pub fn draw(&mut self, f: impl FnOnce(&mut Frame)) -> std::io::Result<()> {
        if RESTORED.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.term.draw(f).map(|_| ())
    }

    /// Restores the terminal now.
    pub fn restore(&mut self) {
        restore_now();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore_now();
    }
}

/// SIGINT, SIGTERM and SIGHUP recorded as a flag instead of ending the process at once, so
/// the UI loop restores the terminal first.
pub struct Signals {
    received: Arc<AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Registers the three signals.
    pub fn register() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let received = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            ids.push(signal_hook::flag::register_usize(
                sig,
                Arc::clone(&received),
                sig as usize,
            )?);
        }
        Ok(Signals { received, ids })
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            s => i32::try_from(s).ok(),
        }
    }

    /// Puts the default actions back.
    pub fn unregister(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}
