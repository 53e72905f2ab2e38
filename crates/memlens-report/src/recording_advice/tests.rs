//! The unit tests of a recording's advice (apart: recording_advice.rs stays under its size),
//! with figures made by construction.

use super::*;
use crate::model::Model;
use crate::peak::Breakdown;
use crate::sharing_over_time::{CategoryShare, SharingPoint, WorkerSharing};
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

/// The worker's inherited python heap: 24 MiB, copied and still shared together.
const INHERITED: f64 = 24.0;
/// A frozen count that says the inherited heap was frozen (one object per 64 bytes of it).
const FROZEN: u64 = 400_000;
/// The copies a worker's collection made (advised alone: 20 MiB).
const COLLECTED: f64 = 20.0;

/// A copy-on-write measurement at `t` of the worker (pid 7, forked from pid 1) with
/// `copied` MiB of its inherited python heap copied.
fn measured(t: f64, copied: f64) -> SharingPoint {
    let copied = (copied * MIB as f64) as u64;
    let shared = (INHERITED * MIB as f64) as u64 - copied;
    SharingPoint {
        t,
        duration_seconds: 0.01,
        measured: true,
        reason: None,
        shared_with_parent: Some(shared),
        copied: Some(copied),
        own: Some(0),
        zero_page: Some(0),
        failed_reads: Some(0),
        by_category: vec![CategoryShare {
            category: Category::PythonHeap.name().into(),
            shared_with_parent: shared,
            copied,
            own: 0,
        }],
    }
}

/// A reading of the Python view at `t` with the frozen count `n` (and no pymalloc).
fn frozen(t: f64, n: u64) -> PythonPoint {
    PythonPoint {
        t,
        pid: PID,
        gc_counts: Vec::new(),
        gc_collections: Vec::new(),
        gc_frozen: Some(n),
        pymalloc_arenas: None,
        pymalloc_used: None,
        pymalloc_free: None,
    }
}

/// The advice from the ledger at 3 s, the Python view's `python` and the worker's
/// copy-on-write `points`.
fn cow_advice(python: &[PythonPoint], points: Vec<SharingPoint>) -> RecordingAdvice {
    let sharing = SharingOverTime {
        measured: true,
        reason: None,
        interval_seconds: Some(2.0),
        workers: vec![WorkerSharing {
            pid: PID,
            parent_pid: 1,
            command: "python3 app.py".into(),
            points,
        }],
    };
    of(&ledger(3.0), python, &sharing)
}

fn cow_freeze(a: &RecordingAdvice) -> Option<&Advice> {
    a.items.iter().find(|i| i.id == "cow-freeze")
}

#[test]
fn agreeing_measurements_and_counts_give_the_fewer_copies_and_every_time() {
    // 256 KiB more copied after the ledger (the worker's own writes): within 5%.
    let python = [frozen(2.2, 0), frozen(3.4, 0)];
    let points = vec![measured(2.0, COLLECTED), measured(4.0, COLLECTED + 0.25)];
    let a = cow_advice(&python, points);
    let c = cow_freeze(&a).expect("advised");
    assert_eq!(c.saving_bytes, 20 * MIB);
    assert!(c.estimated);
    assert!(
        c.text.contains(
            "(copy-on-write as measured at 2.00 s: its measurements at 2.00 s and 4.00 s, \
             on either side of the ledger at 3.00 s, found python-heap copies within 5%, \
             the fewer taken; the frozen count, 0, the same in the Python view's readings \
             at 2.20 s and 3.40 s)"
        ),
        "{}",
        c.text
    );
    assert!(a.skipped.is_empty(), "{a:?}");
    // Fewer after (pages unmapped): the one after is taken.
    let points = vec![measured(2.0, COLLECTED + 0.25), measured(4.0, COLLECTED)];
    let a = cow_advice(&python, points);
    let c = cow_freeze(&a).expect("advised");
    assert_eq!(c.saving_bytes, 20 * MIB);
    assert!(c.text.contains("as measured at 4.00 s"), "{}", c.text);
    // The nearest on either side decide, whatever lies farther: a measurement before the
    // worker collected, and one long after with the frozen count changed.
    let python = [
        frozen(0.5, 0),
        frozen(2.2, 0),
        frozen(3.4, 0),
        frozen(9.0, 7),
    ];
    let points = vec![
        measured(9.0, INHERITED),
        measured(0.5, 0.0),
        measured(2.0, COLLECTED),
        measured(4.0, COLLECTED),
    ];
    let a = cow_advice(&python, points);
    assert_eq!(cow_freeze(&a).map(|c| c.saving_bytes), Some(20 * MIB));
    assert!(a.skipped.is_empty(), "{a:?}");
}

#[test]
fn copies_may_differ_by_5_percent_and_no_more() {
    let python = [frozen(2.5, 0), frozen(3.5, 0)];
    // 20 MiB is 5% below 21.05 MiB; a little more copied after is too much.
    let edge = COLLECTED / 0.95;
    let a = cow_advice(&python, vec![measured(2.0, COLLECTED), measured(4.0, edge)]);
    assert_eq!(cow_freeze(&a).map(|c| c.saving_bytes), Some(20 * MIB));
    let past = edge + 1.0 / 64.0;
    let a = cow_advice(&python, vec![measured(2.0, COLLECTED), measured(4.0, past)]);
    assert_eq!(cow_freeze(&a), None, "{a:?}");
    assert!(a.skipped[0].contains("more than 5% apart"), "{a:?}");
}

#[test]
fn copies_made_across_the_ledger_give_no_advice_and_say_why() {
    // The worker collected between the measurements: 1 MiB copied before, 20 after.
    let python = [frozen(2.5, 0), frozen(3.5, 0)];
    let a = cow_advice(&python, vec![measured(2.0, 1.0), measured(4.0, COLLECTED)]);
    assert_eq!(cow_freeze(&a), None, "{a:?}");
    assert_eq!(a.skipped.len(), 1, "{a:?}");
    assert_eq!(
        a.skipped[0],
        "pid 7: no cow-freeze advice from the ledger at 3.00 s: its copy-on-write \
         measurements on either side of it disagree (python-heap pages copied 1.00 MiB at \
         2.00 s, 20.0 MiB at 4.00 s, more than 5% apart): the worker was copying its \
         inherited heap (a collection copies every page holding an object it tracks), and \
         what it had copied at the ledger is not known"
    );
}

#[test]
fn a_frozen_count_changed_across_the_ledger_gives_no_advice_and_says_why() {
    let points = || vec![measured(2.0, COLLECTED), measured(4.0, COLLECTED)];
    // gc.freeze() between the readings, and gc.unfreeze(): either side alone advises.
    for (before, after) in [(0, FROZEN), (FROZEN, 0)] {
        let a = cow_advice(&[frozen(2.5, before), frozen(3.5, after)], points());
        assert_eq!(cow_freeze(&a), None, "{a:?}");
        assert_eq!(a.skipped.len(), 1, "{a:?}");
        let s = &a.skipped[0];
        assert!(s.starts_with("pid 7: no cow-freeze advice from the ledger at 3.00 s"));
        assert!(
            s.contains(&format!(
                "found different frozen counts ({before} at 2.50 s, {after} at 3.50 s)"
            )),
            "{s}"
        );
    }
    // Frozen on both sides, a few frozen objects freed between: no advice either way, so
    // nothing is said.
    let a = cow_advice(&[frozen(2.5, FROZEN), frozen(3.5, FROZEN - 5)], points());
    assert_eq!(a.items, Vec::new());
    assert!(a.skipped.is_empty(), "{a:?}");
}

#[test]
fn a_side_missing_gives_no_advice_and_says_which() {
    let python = [frozen(2.5, 0), frozen(3.5, 0)];
    let a = cow_advice(
        &python,
        vec![measured(1.0, COLLECTED), measured(2.0, COLLECTED)],
    );
    assert_eq!(cow_freeze(&a), None, "{a:?}");
    assert_eq!(a.skipped.len(), 1, "{a:?}");
    assert!(
        a.skipped[0].contains("measured on one side of it only (none after it)"),
        "{a:?}"
    );
    let a = cow_advice(&python, vec![measured(4.0, COLLECTED)]);
    assert!(a.skipped[0].contains("(none before it)"), "{a:?}");
    // A measurement stamped at the ledger's very time is on the side before it.
    let a = cow_advice(&python, vec![measured(3.0, COLLECTED)]);
    assert!(a.skipped[0].contains("(none after it)"), "{a:?}");
    let a = cow_advice(&python, vec![measured(3.0, COLLECTED), measured(3.2, 20.0)]);
    assert!(cow_freeze(&a).is_some(), "{a:?}");
    // The frozen count read before the ledger only.
    let points = || vec![measured(2.0, COLLECTED), measured(4.0, COLLECTED)];
    let a = cow_advice(&[frozen(2.5, 0)], points());
    assert_eq!(cow_freeze(&a), None, "{a:?}");
    assert!(
        a.skipped[0].contains("read its frozen count on one side of it only (none after it)"),
        "{a:?}"
    );
    // Nothing measured, or no count read: no side could advise, nothing is said.
    for (python, points) in [(&python[..], Vec::new()), (&[][..], points())] {
        let a = cow_advice(python, points);
        assert_eq!(a.items, Vec::new());
        assert!(a.skipped.is_empty(), "{a:?}");
    }
    // A frozen heap measured on one side only: nothing to advise either way.
    let a = cow_advice(&[frozen(2.5, FROZEN)], points());
    assert!(a.skipped.is_empty(), "{a:?}");
    // Failed measurements and another worker's are not this one's.
    let mut failed = measured(4.0, COLLECTED);
    failed.measured = false;
    let a = cow_advice(&python, vec![measured(2.0, COLLECTED), failed]);
    assert!(a.skipped[0].contains("(none after it)"), "{a:?}");
    let mut other = frozen(2.5, 0);
    other.pid = 8;
    let a = cow_advice(&[other, frozen(3.5, 0)], points());
    assert!(a.skipped[0].contains("(none before it)"), "{a:?}");
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
