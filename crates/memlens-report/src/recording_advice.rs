//! Advice with figures in a recording's report (`memlens report`, `memlens run`;
//! docs/advice.md): the kinds computable without a census, from the ledger shown for the peak
//! and the Python view the recorder read near it.
//!
//! A recording stores its ledgers without the Python view (`python.pymalloc`, `python.gc`) and
//! without copy-on-write figures; pymalloc's arenas come from the Python view's samples (the
//! one of the process nearest the ledger in time), taken only when the arena bytes it read are
//! those the ledger found (the heap did not change between the two readings).

use std::fmt::Write as _;
use std::io::{Result, Write};

use serde::{Deserialize, Serialize};

use memlens_model::advice::{advise_figures, Advice, PymallocFigures, StoredProcess};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;
use crate::model::{LedgerAtPeak, PythonPoint};
use crate::sharing_over_time::SharingOverTime;
use memlens_model::advice::HeapSharing;

/// What object-level advice needs, said wherever a report shows advice.
pub const NOTE: &str = "computed from the ledger shown for the peak, the Python view and the \
copy-on-write measurements nearest it: fragmentation and cow-freeze only; object-level advice \
(slots, scalar-list, duplicate-values) needs a census: memlens snapshot PID --advice while the \
program runs";

/// How far from the ledger (s) a Python view reading or a copy-on-write measurement may be to
/// stand for the process at the ledger's moment (cow-freeze).
pub const NEAR_SECONDS: f64 = 10.0;

/// The advice of a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingAdvice {
    /// When the ledger it was computed from was taken (s).
    pub at_seconds: f64,
    /// The advice, largest saving first.
    #[serde(skip)]
    pub items: Vec<Advice>,
    /// Processes whose figures could not be used, and why.
    pub skipped: Vec<String>,
    /// What it was computed from, and what it leaves out.
    pub note: &'static str,
}

/// The Python view's readings of `pid` that read pymalloc's arenas: when, and the figures.
fn readings(python: &[PythonPoint], pid: u32) -> Vec<(f64, PymallocFigures)> {
    python
        .iter()
        .filter(|p| p.pid == pid)
        .filter_map(|p| {
            let (arenas, used, free) = (p.pymalloc_arenas?, p.pymalloc_used?, p.pymalloc_free?);
            (arenas > 0).then(|| {
                let f = PymallocFigures {
                    arenas,
                    arena_size: used.saturating_add(free) / arenas,
                    used_bytes: used,
                    free_bytes: free,
                };
                (p.t, f)
            })
        })
        .collect()
}

/// The advice computable from the ledger at the peak and the Python view.
pub fn of(l: &LedgerAtPeak, python: &[PythonPoint], sharing: &SharingOverTime) -> RecordingAdvice {
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let processes = l
        .json
        .get("processes")
        .and_then(|p| p.as_array())
        .map_or(&[][..], |p| p.as_slice());
    for json in processes {
        let stored = match StoredProcess::deserialize(json) {
            Ok(s) => s,
            Err(e) => {
                skipped.push(format!(
                    "a process of the stored ledger could not be read: {e}"
                ));
                continue;
            }
        };
        let mut f = stored.figures();
        let mut read_at = None;
        if f.pymalloc.is_none() {
            // The reading nearest the ledger among those that found the arenas the ledger
            // found (same bytes): the heap as the ledger saw it, as far as can be told.
            let all = readings(python, f.pid);
            let same = all
                .iter()
                .filter(|(_, pm)| {
                    stored.arena_bytes() == Some(pm.arenas.saturating_mul(pm.arena_size))
                })
                .min_by(|a, b| (a.0 - l.t).abs().total_cmp(&(b.0 - l.t).abs()));
            match same {
                Some(&(t, pm)) => {
                    f.pymalloc = Some(pm);
                    read_at = Some(t);
                }
                None if all.iter().any(|(_, pm)| pm.free_bytes >= pm.used_bytes) => {
                    skipped.push(format!(
                        "pid {}: no reading of the Python view found pymalloc's arenas as the \
                         ledger at {:.2} s did: no fragmentation advice",
                        f.pid, l.t
                    ));
                }
                None => {}
            }
        }
        let mut cow_at = None;
        if f.gc_frozen.is_none() && f.python_heap_sharing.is_none() {
            let frozen = python
                .iter()
                .filter(|p| p.pid == f.pid && (p.t - l.t).abs() <= NEAR_SECONDS)
                .filter_map(|p| Some((p.t, p.gc_frozen?)))
                .min_by(|a, b| (a.0 - l.t).abs().total_cmp(&(b.0 - l.t).abs()));
            let copied = sharing
                .workers
                .iter()
                .filter(|w| w.pid == f.pid)
                .flat_map(|w| w.points.iter().map(move |p| (w.parent_pid, p)))
                .filter(|(_, p)| p.measured && (p.t - l.t).abs() <= NEAR_SECONDS)
                .filter_map(|(parent, p)| {
                    let row = p
                        .by_category
                        .iter()
                        .find(|c| c.category == memlens_model::Category::PythonHeap.name())?;
                    Some((
                        p.t,
                        HeapSharing {
                            parent,
                            shared_with_parent: row.shared_with_parent,
                            copied: row.copied,
                        },
                    ))
                })
                .min_by(|a, b| (a.0 - l.t).abs().total_cmp(&(b.0 - l.t).abs()));
            if let (Some((tf, frozen)), Some((ts, s))) = (frozen, copied) {
                f.gc_frozen = Some(frozen);
                f.python_heap_sharing = Some(s);
                cow_at = Some((ts, tf));
            }
        }
        for mut a in advise_figures(&f) {
            let mut when = String::new();
            if let (Some((ts, tf)), "cow-freeze") = (cow_at, a.id.as_str()) {
                let _ = write!(
                    when,
                    " (copy-on-write measured at {ts:.2} s, the frozen count read at {tf:.2} s, \
                     the ledger at {:.2} s)",
                    l.t
                );
            }
            if let (Some(t), "fragmentation") = (read_at, a.id.as_str()) {
                let _ = write!(
                    when,
                    " (pymalloc's figures as the Python view read them at {t:.2} s, the \
                     python-heap row's RSS from the ledger at {:.2} s)",
                    l.t
                );
            }
            a.text.push_str(&when);
            a.text_bytes.push_str(&when);
            items.push(a);
        }
    }
    items.sort_by(|a, b| {
        b.saving_bytes
            .cmp(&a.saving_bytes)
            .then(a.id.cmp(&b.id))
            .then(a.pid.cmp(&b.pid))
    });
    RecordingAdvice {
        at_seconds: l.t,
        items,
        skipped,
        note: NOTE,
    }
}

/// The advice section of the text report.
pub fn render_text(a: &RecordingAdvice, style: SizeStyle, w: &mut dyn Write) -> Result<()> {
    writeln!(
        w,
        "advice:  estimated savings at {:.2} s, largest first (docs/advice.md)",
        a.at_seconds
    )?;
    if a.items.is_empty() {
        writeln!(
            w,
            "         none: no change found with {}",
            crate::advice_text::threshold(style)
        )?;
    }
    for (i, x) in a.items.iter().enumerate() {
        writeln!(
            w,
            "  {}. [{}] PID {} {}: saves ~{}",
            i + 1,
            x.id,
            x.pid,
            terminal(&x.subject),
            style.size(x.saving_bytes)
        )?;
        writeln!(w, "     {}", terminal(crate::advice_text::worded(x, style)))?;
    }
    for s in &a.skipped {
        writeln!(w, "         {}", terminal(s))?;
    }
    writeln!(w, "         ({})", a.note)
}

/// The advice section of the HTML report.
pub fn html(h: &mut String, a: &RecordingAdvice, style: SizeStyle) {
    let _ = write!(h, "<h2>Advice at {:.2} s</h2>", a.at_seconds);
    crate::advice_text::html_items(h, &a.items, style);
    for s in &a.skipped {
        let _ = write!(h, "<p class=\"muted\">{}</p>", crate::html::escape(s));
    }
    let _ = write!(
        h,
        "<p class=\"muted\">Advice {}.</p>",
        crate::html::escape(a.note)
    );
}
