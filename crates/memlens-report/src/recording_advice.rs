//! Advice with figures in a recording's report (`memlens report`, `memlens run`;
//! docs/advice.md): the kinds computable without a census, from the ledger shown for the peak
//! and the Python view the recorder read around it.
//!
//! A recording stores its ledgers without the Python view (`python.pymalloc`, `python.gc`) and
//! without copy-on-write figures. pymalloc's bytes in use and free come from the Python view's
//! readings, which are never taken at the ledger's moment ([`pymalloc_at`]): the fragmentation
//! advice stands only on the two readings on either side of the ledger, when both found the
//! arenas the ledger found and the same heap.

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
pub const NOTE: &str = "computed from the ledger shown for the peak, the Python view's readings \
on either side of it and the copy-on-write measurements nearest it: fragmentation and cow-freeze \
only; object-level advice (slots, scalar-list, duplicate-values) needs a census: memlens \
snapshot PID --advice while the program runs";

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
/// to.
pub const AGREE_PERCENT: u64 = 5;

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
    let before = readings.iter().rev().find(|r| r.0 <= t).copied();
    let after = readings.iter().find(|r| r.0 > t).copied();
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
        if advised(before) || advised(after) {
            skipped.push(format!(
                "pid {}: no fragmentation advice from the ledger at {t:.2} s: {w}",
                f.pid
            ));
        }
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
    if sb.abs_diff(sa).saturating_mul(100) > sb.max(sa).saturating_mul(AGREE_PERCENT) {
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
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::peak::Breakdown;
    use memlens_model::{Amounts, Category, Item, ProcessLedger, Row, ThreadStacks};
    use memlens_recording::reader::Recording;
    use memlens_recording::writer::{Counters, ProcessInfo, RecordingWriter};
    use memlens_recording::{End, Meta, Mode, PythonSample};

    const MIB: u64 = 1 << 20;
    const PID: u32 = 7;
    /// The ledger's arenas: 20 of 1 MiB (3.10 and later), all resident.
    const ARENAS: u64 = 20;

    /// The process as the ledger at the peak stored it: its `python-heap` row holds the arenas
    /// (20 MiB, resident) and 4 MiB besides.
    fn process() -> ProcessLedger {
        let arenas = Amounts {
            rss: ARENAS * MIB,
            pss: ARENAS * MIB,
            uss: ARENAS * MIB,
            swap: 0,
        };
        let heap = Amounts {
            rss: (ARENAS + 4) * MIB,
            pss: (ARENAS + 4) * MIB,
            uss: (ARENAS + 4) * MIB,
            swap: 0,
        };
        ProcessLedger {
            pid: PID,
            ppid: 1,
            name: "python3".into(),
            cmdline: "python3 app.py".into(),
            python: None,
            threads: 1,
            vm_hwm: 64 * MIB,
            totals: Amounts {
                rss: 64 * MIB,
                pss: 64 * MIB,
                uss: 64 * MIB,
                swap: 0,
            },
            size: 128 * MIB,
            ledger: vec![Row {
                category: Category::PythonHeap,
                amounts: heap,
                size: (ARENAS + 4) * MIB,
                mappings: 2,
                items: vec![Item {
                    name: "pymalloc arenas".into(),
                    amounts: arenas,
                    size: ARENAS * MIB,
                    mappings: 1,
                }],
                pymalloc: None,
            }],
            thread_stacks: ThreadStacks::default(),
            sharing: None,
        }
    }

    /// The ledger at the peak, at `t` s.
    fn ledger(t: f64) -> LedgerAtPeak {
        LedgerAtPeak {
            t,
            totals: Amounts::default(),
            categories: Vec::new(),
            json: serde_json::json!({ "processes": [process()] }),
            breakdown: Breakdown {
                t_seconds: t,
                from_peak_seconds: 0.0,
                at_peak: true,
                share_of_peak: 1.0,
                measure: "rss",
                bytes: 64 * MIB,
                peak_bytes: 64 * MIB,
            },
            findings: Vec::new(),
        }
    }

    /// A reading of the ledger's 20 arenas with `used` MiB in blocks.
    fn reading(t: f64, used: f64) -> PythonPoint {
        let used = (used * MIB as f64) as u64;
        PythonPoint {
            t,
            pid: PID,
            gc_counts: Vec::new(),
            gc_collections: Vec::new(),
            gc_frozen: None,
            pymalloc_arenas: Some(ARENAS),
            pymalloc_used: Some(used),
            pymalloc_free: Some(ARENAS * MIB - used),
        }
    }

    /// The heap finished: 1 MiB of survivors pinning the 20 arenas. The saving is the free
    /// 19 MiB (all resident) less 1.5 arenas of slack: 17.5 MiB.
    const FINISHED: f64 = 1.0;
    const FINISHED_SAVING: u64 = 35 * MIB / 2;
    /// Mid-build: the arenas made, their blocks in use (nothing to advise).
    const MID_BUILD: f64 = 19.0;
    /// Mid-free: 8 MiB still in use, a saving of 12 - 1.5 = 10.5 MiB (advised alone).
    const MID_FREE: f64 = 8.0;

    fn advice(l: &LedgerAtPeak, python: &[PythonPoint]) -> RecordingAdvice {
        let none = SharingOverTime {
            measured: false,
            reason: None,
            interval_seconds: None,
            workers: Vec::new(),
        };
        of(l, python, &none)
    }

    fn fragmentation(a: &RecordingAdvice) -> Option<&Advice> {
        a.items.iter().find(|i| i.id == "fragmentation")
    }

    #[test]
    fn each_heap_alone_would_be_advised_as_constructed() {
        // The figures mean what the tests below take them to: mid-free and finished each give
        // advice when both sides show it, mid-build none.
        for (used, saving) in [
            (FINISHED, Some(FINISHED_SAVING)),
            (MID_FREE, Some(21 * MIB / 2)),
        ] {
            let a = advice(&ledger(3.0), &[reading(2.0, used), reading(4.0, used)]);
            assert_eq!(fragmentation(&a).map(|i| i.saving_bytes), saving, "{a:?}");
            assert!(a.skipped.is_empty(), "{a:?}");
        }
        let a = advice(
            &ledger(3.0),
            &[reading(2.0, MID_BUILD), reading(4.0, MID_BUILD)],
        );
        assert_eq!(fragmentation(&a), None);
        assert!(a.skipped.is_empty(), "nothing was withheld: {a:?}");
    }

    #[test]
    fn a_reading_mid_build_before_and_the_finished_heap_after_give_no_advice() {
        // The nearest reading before the ledger found its arenas with their blocks in use, the
        // one after it the heap finished: the heap was changing at the ledger.
        for early in [MID_BUILD, MID_FREE] {
            let a = advice(&ledger(3.0), &[reading(2.9, early), reading(3.1, FINISHED)]);
            assert_eq!(fragmentation(&a), None, "{a:?}");
            assert_eq!(a.skipped.len(), 1, "{a:?}");
            let s = &a.skipped[0];
            assert!(s.starts_with("pid 7: no fragmentation advice from the ledger at 3.00 s"));
            assert!(s.contains("disagree"), "{s}");
            assert!(s.contains("at 2.90 s") && s.contains("at 3.10 s"), "{s}");
            // and the other way round: finished before, freed again or built after
            let a = advice(&ledger(3.0), &[reading(2.9, FINISHED), reading(3.1, early)]);
            assert_eq!(fragmentation(&a), None, "{a:?}");
            assert!(a.skipped[0].contains("disagree"), "{a:?}");
        }
    }

    #[test]
    fn agreeing_readings_on_either_side_give_the_smaller_saving_and_both_times() {
        // 64 KiB more in use after the ledger: 17.4375 MiB against 17.5, within 5%.
        let after = FINISHED + 1.0 / 16.0;
        let a = advice(&ledger(3.0), &[reading(2.5, FINISHED), reading(3.5, after)]);
        let f = fragmentation(&a).expect("advised");
        assert_eq!(f.saving_bytes, FINISHED_SAVING - MIB / 16);
        assert!(f.estimated);
        assert!(
            f.text.contains(
                "read them at 3.50 s: its readings at 2.50 s and 3.50 s, on either \
                 side of the ledger at 3.00 s"
            ),
            "{}",
            f.text
        );
        assert!(a.skipped.is_empty(), "{a:?}");
        // The same the other way round: the smaller is the one before.
        let a = advice(&ledger(3.0), &[reading(2.5, after), reading(3.5, FINISHED)]);
        let f = fragmentation(&a).expect("advised");
        assert_eq!(f.saving_bytes, FINISHED_SAVING - MIB / 16);
        assert!(f.text.contains("read them at 2.50 s"), "{}", f.text);
    }

    #[test]
    fn the_savings_may_differ_by_5_percent_and_no_more() {
        // 17.5 MiB before; after, 5% less (0.875 MiB more in use) agrees, a little more does not.
        let edge = FINISHED + 0.875;
        let a = advice(&ledger(3.0), &[reading(2.5, FINISHED), reading(3.5, edge)]);
        assert_eq!(
            fragmentation(&a).map(|i| i.saving_bytes),
            Some(FINISHED_SAVING - 7 * MIB / 8)
        );
        let past = edge + 1.0 / 1024.0;
        let a = advice(&ledger(3.0), &[reading(2.5, FINISHED), reading(3.5, past)]);
        assert_eq!(fragmentation(&a), None, "{a:?}");
        assert!(a.skipped[0].contains("more than 5% apart"), "{a:?}");
    }

    #[test]
    fn one_side_missing_gives_no_advice_and_says_which() {
        let a = advice(
            &ledger(3.0),
            &[reading(1.0, FINISHED), reading(2.0, FINISHED)],
        );
        assert_eq!(fragmentation(&a), None, "{a:?}");
        assert_eq!(a.skipped.len(), 1, "{a:?}");
        assert!(a.skipped[0].contains("none after it"), "{a:?}");
        let a = advice(&ledger(3.0), &[reading(4.0, FINISHED)]);
        assert_eq!(fragmentation(&a), None, "{a:?}");
        assert!(a.skipped[0].contains("none before it"), "{a:?}");
        // A reading stamped at the ledger's very time is on the side before it.
        let a = advice(&ledger(3.0), &[reading(3.0, FINISHED)]);
        assert!(a.skipped[0].contains("none after it"), "{a:?}");
        let a = advice(
            &ledger(3.0),
            &[reading(3.0, FINISHED), reading(3.2, FINISHED)],
        );
        assert!(fragmentation(&a).is_some(), "{a:?}");
        // No reading at all: nothing to say (not a Python, or never read).
        let a = advice(&ledger(3.0), &[]);
        assert_eq!(a.items, Vec::new());
        assert!(a.skipped.is_empty(), "{a:?}");
        // Another process's readings are not this one's.
        let mut other = reading(2.0, FINISHED);
        other.pid = 8;
        let a = advice(&ledger(3.0), &[other, reading(4.0, FINISHED)]);
        assert!(a.skipped[0].contains("none before it"), "{a:?}");
    }

    #[test]
    fn the_nearest_pair_decides_whatever_lies_farther() {
        // Mid-build and mid-free readings well before the ledger, a compacted heap well after
        // it (fewer arenas): the agreeing pair nearest on either side stands.
        let mut compact = reading(9.0, FINISHED);
        compact.pymalloc_arenas = Some(2);
        compact.pymalloc_free = Some(MIB);
        let python = [
            reading(0.5, MID_BUILD),
            reading(1.0, MID_FREE),
            reading(2.0, FINISHED),
            reading(4.0, FINISHED),
            compact,
        ];
        let a = advice(&ledger(3.0), &python);
        let f = fragmentation(&a).expect("advised");
        assert_eq!(f.saving_bytes, FINISHED_SAVING);
        assert!(
            f.text.contains("readings at 2.00 s and 4.00 s"),
            "{}",
            f.text
        );
        assert!(a.skipped.is_empty(), "{a:?}");
        // Unsorted, as they may come: the same.
        let mut shuffled = python.to_vec();
        shuffled.reverse();
        assert_eq!(advice(&ledger(3.0), &shuffled), a);
        // And the disagreeing reading nearest decides against: a mid-free one just before.
        let mut python = python.to_vec();
        python.push(reading(2.8, MID_FREE));
        let a = advice(&ledger(3.0), &python);
        assert_eq!(fragmentation(&a), None, "{a:?}");
        assert!(a.skipped[0].contains("at 2.80 s"), "{a:?}");
    }

    #[test]
    fn a_reading_of_other_arenas_on_either_side_gives_no_advice() {
        let mut fewer = reading(2.0, FINISHED);
        fewer.pymalloc_arenas = Some(ARENAS - 1);
        fewer.pymalloc_free = Some((ARENAS - 1) * MIB - MIB);
        let a = advice(&ledger(3.0), &[fewer, reading(4.0, FINISHED)]);
        assert_eq!(fragmentation(&a), None, "{a:?}");
        assert!(
            a.skipped[0].contains(
                "reading at 2.00 s found 19.0 MiB of pymalloc arenas, the ledger 20.0 MiB: \
                 the heap changed between them"
            ),
            "{a:?}"
        );
    }

    /// A recording of one process whose ledger at the peak (3 s) lies between a reading of the
    /// heap mid-free and one of it finished: the report says, in each form, why it gives no
    /// fragmentation advice.
    #[test]
    fn a_recording_whose_readings_disagree_around_the_peak_says_why_in_every_report() {
        let path = std::env::temp_dir().join(format!(
            "memlens-recording-advice-{}.db",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let meta = Meta {
            mode: Some(Mode::Record),
            ..Meta::default()
        };
        let mut w = RecordingWriter::create(&path, &meta).unwrap();
        let info = ProcessInfo {
            pid: PID,
            ppid: 1,
            start_ticks: 1,
            name: "python3".into(),
            cmdline: "python3 app.py".into(),
        };
        let id = w.add_process(&info, 0.0).unwrap();
        for (t, rss) in [(1.0, 40), (3.0, 64), (5.0, 64)] {
            let c = Counters {
                rss: rss * MIB,
                vm_hwm: rss * MIB,
                threads: 1,
                ..Counters::default()
            };
            w.sample(t, id, &c).unwrap();
            w.tick(t, rss * MIB, rss * MIB, 1, None).unwrap();
        }
        let mut tree = memlens_model::tree::assemble(PID, vec![process()], None);
        tree.totals = process().totals;
        w.ledger(3.0, "peak", &tree, true).unwrap();
        for (t, used) in [(2.5, MID_FREE), (3.5, FINISHED)] {
            let r = reading(t, used);
            let s = PythonSample {
                pymalloc_arenas: r.pymalloc_arenas,
                pymalloc_used: r.pymalloc_used,
                pymalloc_free: r.pymalloc_free,
                ..PythonSample::default()
            };
            w.python(t, id, &s).unwrap();
        }
        w.finish(&End {
            end_t: Some(5.0),
            ..End::default()
        })
        .unwrap();
        let m = Model::from_recording(&Recording::open(&path).unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let a = m.advice.as_ref().expect("a ledger at the peak");
        assert_eq!(a.at_seconds, 3.0);
        assert_eq!(a.items, Vec::new());
        let why = "pid 7: no fragmentation advice from the ledger at 3.00 s: the Python view's \
                   readings on either side of it disagree (in use 8.00 MiB at 2.50 s, 1.00 MiB \
                   at 3.50 s: savings of 10.5 MiB and 17.5 MiB, more than 5% apart)";
        assert!(
            a.skipped.len() == 1 && a.skipped[0].starts_with(why),
            "{a:?}"
        );

        let mut json = Vec::new();
        crate::recording_json::render(&m, &Default::default(), &mut json).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(j["advice"], serde_json::json!([]));
        assert_eq!(j["advice_from"]["at_seconds"], 3.0);
        assert_eq!(j["advice_from"]["skipped"][0], a.skipped[0].as_str());

        let mut text = Vec::new();
        crate::recording_text::render(&m, &Default::default(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(&format!("         {}", a.skipped[0])),
            "{text}"
        );

        let mut html = Vec::new();
        crate::html::render(&m, &Default::default(), &mut html).unwrap();
        let html = String::from_utf8(html).unwrap();
        assert!(
            html.contains("readings on either side of it disagree (in use 8.00 MiB at 2.50 s"),
            "{html}"
        );
    }
}
