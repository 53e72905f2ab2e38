//! Advice with figures in a recording's report (`memlens report`, `memlens run`;
//! docs/advice.md): the kinds computable without a census, from the ledger shown for the peak
//! and the Python view and copy-on-write measurements the recorder took around it.
//!
//! A recording stores its ledgers without the Python view (`python.pymalloc`, `python.gc`) and
//! without copy-on-write figures, and none of those is taken at a ledger's moment
//! ([`pymalloc_at`], [`cow_at`]): each kind of advice stands only on the readings on either
//! side of the ledger, when they show that what it is computed from did not change across it.

use std::fmt::Write as _;
use std::io::{Result, Write};

use serde::{Deserialize, Serialize};

use memlens_model::advice::{advise_figures, Advice, Figures, PymallocFigures, StoredProcess};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;
use crate::model::{LedgerAtPeak, PythonPoint};
use crate::sharing_over_time::SharingOverTime;
use memlens_model::advice::HeapSharing;

/// What object-level advice needs, said wherever a report shows advice.
pub const NOTE: &str = "computed from the ledger shown for the peak and the Python view's \
readings and copy-on-write measurements on either side of it: fragmentation and cow-freeze \
only; object-level advice (slots, scalar-list, duplicate-values) needs a census: memlens \
snapshot PID --advice while the program runs";

/// The advice of a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingAdvice {
    /// When the ledger it was computed from was taken (s).
    pub at_seconds: f64,
    /// The advice, largest saving first.
    #[serde(skip)]
    pub items: Vec<Advice>,
    /// Advice withheld, and why, a sentence each: a process whose stored ledger could not be
    /// read, or fragmentation the Python view's readings around the ledger cannot support.
    pub skipped: Vec<String>,
    /// What it was computed from, and what it leaves out.
    pub note: &'static str,
}

/// How far apart the savings computed from the two readings on either side of a ledger may
/// be, in percent of the larger, for the heap to count as unchanged across the ledger.
///
/// Two readings of a heap that did not change differ only by what the program held briefly at
/// one of them (a steady program: KiB, against savings of MiB) and by the read itself, which
/// walks the pools while the program runs. A heap built or freed across the ledger differs by
/// the share of that work done between them: readings taken mid-free gave 9.5 and 13.0 MB
/// against 17.6 and 18.8 MB measured in CI, 46% and 31% short. The smaller saving is advised:
/// at most 5% below what the other reading shows, well inside the 25% the estimate is tested
/// to. A worker's copied python-heap pages on either side of a ledger agree within the same
/// share ([`cow_at`]).
pub const AGREE_PERCENT: u64 = 5;

/// A reading: when (s), and what it read.
type Reading<T> = (f64, T);

/// The readings nearest `t` at or before it and after it, of `readings` in time order. A
/// reading stamped at `t` counts as before it: a ledger's time is its tick's start, and its
/// reads follow.
fn around<T: Copy>(readings: &[Reading<T>], t: f64) -> (Option<Reading<T>>, Option<Reading<T>>) {
    let before = readings.iter().rev().find(|r| r.0 <= t).copied();
    let after = readings.iter().find(|r| r.0 > t).copied();
    (before, after)
}

/// Whether two figures read on either side of a ledger agree: at most [`AGREE_PERCENT`] of the
/// larger apart.
fn agree(a: u64, b: u64) -> bool {
    a.abs_diff(b).saturating_mul(100) <= a.max(b).saturating_mul(AGREE_PERCENT)
}

/// Says in `skipped` why `kind` advice for `pid` is withheld from the ledger at `t`, when a
/// reading alone would have `advised` it: advice withheld is said; a process with nothing to
/// advise either way is not.
fn withhold(skipped: &mut Vec<String>, advised: bool, kind: &str, pid: u32, t: f64, why: &str) {
    if advised {
        skipped.push(format!(
            "pid {pid}: no {kind} advice from the ledger at {t:.2} s: {why}"
        ));
    }
}

/// The Python view's readings of `pid` that read pymalloc: when, and the figures, in time
/// order.
fn readings(python: &[PythonPoint], pid: u32) -> Vec<(f64, PymallocFigures)> {
    let mut out: Vec<(f64, PymallocFigures)> = python
        .iter()
        .filter(|p| p.pid == pid)
        .filter_map(|p| {
            let (arenas, used, free) = (p.pymalloc_arenas?, p.pymalloc_used?, p.pymalloc_free?);
            let f = PymallocFigures {
                arenas,
                arena_size: used.saturating_add(free).checked_div(arenas).unwrap_or(0),
                used_bytes: used,
                free_bytes: free,
            };
            Some((p.t, f))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// What the Python view's readings say of pymalloc at a ledger's moment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AtLedger {
    /// The readings on either side of the ledger (read at `before` and `after`) found its arena
    /// bytes and agree: the figures of the one with the smaller saving, read at `read_at`.
    Same {
        figures: PymallocFigures,
        read_at: f64,
        before: f64,
        after: f64,
    },
    /// Not known.
    Unknown,
}

/// pymalloc at the moment `t` of a ledger that found `arena_bytes` of arenas, for the process
/// of figures `f` (without pymalloc's), from its `readings` (in time order). When unknown while
/// a reading on either side would have given fragmentation advice, the reason goes to
/// `skipped` (advice withheld is said; a heap with nothing to advise either way is not).
///
/// No reading is taken at the ledger's moment: the ledger reads only pymalloc's arena table
/// (which arenas exist, not the blocks in use), and the Python view reads the pools on a thread
/// of its own while the program runs. The sampler asks for a reading in the tick of a ledger
/// at a new high, but only once that ledger is written, so that reading is stamped after the
/// ledger. One reading, however near, shows the heap at its own moment only: a program freeing
/// its bulk data changes the blocks in use by megabytes in tens of milliseconds while keeping
/// its arenas, and a loaded host delays the view's thread by as much. So the nearest reading at
/// or before the ledger and the nearest after it must both have found the ledger's arena bytes
/// and agree ([`AGREE_PERCENT`]). A reading stamped at the ledger's very time counts as before
/// it: a ledger's time is its tick's start, and its reads follow. A heap that changed and came
/// back between the two readings is not told apart.
fn pymalloc_at(
    readings: &[(f64, PymallocFigures)],
    t: f64,
    arena_bytes: Option<u64>,
    f: &Figures,
    skipped: &mut Vec<String>,
) -> AtLedger {
    let (before, after) = around(readings, t);
    let advised = |r: Option<(f64, PymallocFigures)>| {
        r.is_some_and(|(_, pm)| {
            let g = Figures {
                pymalloc: Some(pm),
                ..f.clone()
            };
            advise_figures(&g).iter().any(|a| a.id == "fragmentation")
        })
    };
    let mut why = |w: String| {
        let advised = advised(before) || advised(after);
        withhold(skipped, advised, "fragmentation", f.pid, t, &w);
        AtLedger::Unknown
    };
    let size = |b: u64| SizeStyle::Binary.size(b).to_string();
    let (Some((tb, b)), Some((ta, a))) = (before, after) else {
        let side = if before.is_none() { "before" } else { "after" };
        return why(format!(
            "the Python view read pymalloc on one side of it only (none {side} it), so whether \
             the heap was changing then cannot be told"
        ));
    };
    let found = |pm: &PymallocFigures| pm.arenas.saturating_mul(pm.arena_size);
    for (tr, pm) in [(tb, b), (ta, a)] {
        if arena_bytes != Some(found(&pm)) {
            let ledger = arena_bytes.map_or_else(|| "none".to_string(), size);
            return why(format!(
                "the Python view's reading at {tr:.2} s found {} of pymalloc arenas, the ledger \
                 {ledger}: the heap changed between them",
                size(found(&pm))
            ));
        }
    }
    let rss = f.python_heap_rss;
    let (sb, sa) = (b.fragmentation_saving(rss), a.fragmentation_saving(rss));
    if !agree(sb, sa) {
        return why(format!(
            "the Python view's readings on either side of it disagree (in use {} at {tb:.2} s, \
             {} at {ta:.2} s: savings of {} and {}, more than {AGREE_PERCENT}% apart): the heap \
             was changing, and what it held at the ledger is not known",
            size(b.used_bytes),
            size(a.used_bytes),
            size(sb),
            size(sa)
        ));
    }
    let (read_at, figures) = if sa < sb { (ta, a) } else { (tb, b) };
    AtLedger::Same {
        figures,
        read_at,
        before: tb,
        after: ta,
    }
}

/// A worker's copy-on-write measurements (the python-heap row of each measured one), in time
/// order.
fn cow_measurements(sharing: &SharingOverTime, pid: u32) -> Vec<(f64, HeapSharing)> {
    let heap = memlens_model::Category::PythonHeap.name();
    let mut out: Vec<(f64, HeapSharing)> = sharing
        .workers
        .iter()
        .filter(|w| w.pid == pid)
        .flat_map(|w| w.points.iter().map(move |p| (w.parent_pid, p)))
        .filter(|(_, p)| p.measured)
        .filter_map(|(parent, p)| {
            let row = p.by_category.iter().find(|c| c.category == heap)?;
            let s = HeapSharing {
                parent,
                shared_with_parent: row.shared_with_parent,
                copied: row.copied,
            };
            Some((p.t, s))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The Python view's readings of `pid`'s frozen count (`gc.get_freeze_count()`), in time order.
fn frozen_readings(python: &[PythonPoint], pid: u32) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = python
        .iter()
        .filter(|p| p.pid == pid)
        .filter_map(|p| Some((p.t, p.gc_frozen?)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// What a worker's copy-on-write measurements and the Python view's frozen counts on either
/// side of a ledger agree on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CowAtLedger {
    /// The python-heap row of the measurement with fewer copies.
    sharing: HeapSharing,
    /// When that measurement was taken.
    measured_at: f64,
    /// When the measurements before and after the ledger were taken.
    measured: (f64, f64),
    /// The frozen count, the same in both readings.
    frozen: u64,
    /// When the readings of it before and after the ledger were taken.
    read: (f64, f64),
}

/// The copies of a worker's inherited python heap and its collector's frozen count at the
/// moment `t` of a ledger, for the process of figures `f` (without either), from its
/// copy-on-write `measurements` and frozen-count `readings` (each in time order). When unknown
/// while a measurement and a reading on either side would together have given cow-freeze
/// advice, the reason goes to `skipped` (as for fragmentation, [`pymalloc_at`]).
///
/// No measurement is taken at the ledger's moment: the recorder runs a copy-on-write pass
/// (every `--sharing-every`, 2 s by default, when the budget affords it) only in a tick that
/// takes no ledger and no PSS round, stamped with that tick's start, and the frozen count comes
/// with the Python view's readings, on a thread of its own. Between a measurement and the
/// ledger, a collection in the worker copies every inherited page holding an object it tracks
/// (megabytes in milliseconds), and `gc.freeze()` moves the whole tracked heap into the frozen
/// count at once. So the nearest measurement at or before the ledger and the nearest after it
/// must agree, and so must the nearest readings of the frozen count:
/// - copies within [`AGREE_PERCENT`] of the larger: an inherited page once copied stays the
///   worker's own while it stays mapped, so the copies only grow, and two measurements that
///   agree bound every moment between them; the worker's own writes (reference counts) add
///   pages a few at a time, a collection the whole tracked heap. The measurement with fewer
///   copies is advised: the smaller saving.
/// - frozen counts equal: the count moves only by `gc.freeze()` and `gc.unfreeze()` (which
///   decide the advice) and by frozen objects freed, and a heap this advice is for has (almost)
///   none frozen; a count that moved at all says the collector's state was changed across the
///   ledger.
///
/// Copies unmapped between the two measurements and made again are not told apart. A long
/// recording's measurements reach the report thinned (at most 300 a worker, evenly): the
/// nearest kept on either side stand, farther apart than those taken.
fn cow_at(
    measurements: &[(f64, HeapSharing)],
    readings: &[(f64, u64)],
    t: f64,
    f: &Figures,
    skipped: &mut Vec<String>,
) -> Option<CowAtLedger> {
    let (mb, ma) = around(measurements, t);
    let (rb, ra) = around(readings, t);
    let advised = [mb, ma].iter().flatten().any(|&(_, s)| {
        [rb, ra].iter().flatten().any(|&(_, frozen)| {
            let g = Figures {
                gc_frozen: Some(frozen),
                python_heap_sharing: Some(s),
                ..f.clone()
            };
            advise_figures(&g).iter().any(|a| a.id == "cow-freeze")
        })
    });
    let mut why = |w: String| {
        withhold(skipped, advised, "cow-freeze", f.pid, t, &w);
        None
    };
    let side = |before: bool| if before { "before" } else { "after" };
    let (Some((tb, b)), Some((ta, a))) = (mb, ma) else {
        return why(format!(
            "its copy-on-write was measured on one side of it only (none {} it), so whether the \
             worker was copying its inherited heap then cannot be told",
            side(mb.is_none())
        ));
    };
    let (Some((fb, zb)), Some((fa, za))) = (rb, ra) else {
        return why(format!(
            "the Python view read its frozen count on one side of it only (none {} it), so \
             whether gc.freeze() ran then cannot be told",
            side(rb.is_none())
        ));
    };
    if !agree(b.copied, a.copied) {
        let size = |b: u64| SizeStyle::Binary.size(b).to_string();
        return why(format!(
            "its copy-on-write measurements on either side of it disagree (python-heap pages \
             copied {} at {tb:.2} s, {} at {ta:.2} s, more than {AGREE_PERCENT}% apart): the \
             worker was copying its inherited heap (a collection copies every page holding an \
             object it tracks), and what it had copied at the ledger is not known",
            size(b.copied),
            size(a.copied)
        ));
    }
    if zb != za {
        return why(format!(
            "the Python view's readings on either side of it found different frozen counts \
             ({zb} at {fb:.2} s, {za} at {fa:.2} s): gc.freeze() or gc.unfreeze() ran, or \
             frozen objects were freed, between them"
        ));
    }
    let (measured_at, sharing) = if a.copied < b.copied {
        (ta, a)
    } else {
        (tb, b)
    };
    Some(CowAtLedger {
        sharing,
        measured_at,
        measured: (tb, ta),
        frozen: zb,
        read: (fb, fa),
    })
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
            let all = readings(python, f.pid);
            let at = pymalloc_at(&all, l.t, stored.arena_bytes(), &f, &mut skipped);
            if let AtLedger::Same {
                figures,
                read_at: t,
                before,
                after,
            } = at
            {
                f.pymalloc = Some(figures);
                read_at = Some((t, before, after));
            }
        }
        let mut cow = None;
        if f.gc_frozen.is_none() && f.python_heap_sharing.is_none() {
            let measurements = cow_measurements(sharing, f.pid);
            let frozen = frozen_readings(python, f.pid);
            cow = cow_at(&measurements, &frozen, l.t, &f, &mut skipped);
            if let Some(c) = cow {
                f.gc_frozen = Some(c.frozen);
                f.python_heap_sharing = Some(c.sharing);
            }
        }
        for mut a in advise_figures(&f) {
            let mut when = String::new();
            if let (Some(c), "cow-freeze") = (cow, a.id.as_str()) {
                let ((mb, ma), (fb, fa)) = (c.measured, c.read);
                let _ = write!(
                    when,
                    " (copy-on-write as measured at {:.2} s: its measurements at {mb:.2} s and \
                     {ma:.2} s, on either side of the ledger at {:.2} s, found python-heap copies \
                     within {AGREE_PERCENT}%, the fewer taken; the frozen count, {}, the same in \
                     the Python view's readings at {fb:.2} s and {fa:.2} s)",
                    c.measured_at, l.t, c.frozen
                );
            }
            if let (Some((t, before, after)), "fragmentation") = (read_at, a.id.as_str()) {
                let _ = write!(
                    when,
                    " (pymalloc's figures as the Python view read them at {t:.2} s: its readings \
                     at {before:.2} s and {after:.2} s, on either side of the ledger at {:.2} s, \
                     found the ledger's arenas and savings within {AGREE_PERCENT}%, the smaller \
                     taken; the python-heap row's RSS from that ledger)",
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

#[cfg(test)]
mod tests;
