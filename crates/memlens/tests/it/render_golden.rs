//! Golden files of the text renderers that draw a live read (`census`, `census --growth`,
//! `stacks`, the Python view of `snapshot`), fed constructed inputs so that the bytes are
//! fixed: no process, no clock. Untrusted names carry escape sequences and control characters
//! (shown escaped), sizes are drawn in binary units and with `--bytes`.
//!
//! After an intended change of output: `MEMLENS_BLESS=1 cargo test -p memlens --test it
//! render_golden` rewrites the files; review them with `git diff` before committing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use memlens_model::census::{
    Census, CensusReport, Consistency, Grown, Method, TypeCount, Unreadable,
};
use memlens_model::packages::{ExtensionModules, Package, PackageKind, PythonPackages, NOTE};
use memlens_model::python::{GcState, Generation, Modules, ObjectKinds, Pymalloc, Tally};
use memlens_model::stacks::{Frame, StacksReport, Thread};
use memlens_model::Amounts;
use memlens_report::{census_text, python_text, stacks_text};

use crate::golden::{check, fixture_ledger};

fn types(rows: &[(&str, u64, u64)]) -> Vec<TypeCount> {
    rows.iter()
        .map(|(n, c, b)| TypeCount {
            type_name: (*n).into(),
            count: *c,
            bytes: *b,
            estimated: 0,
            data_owned: 0,
            data_viewed: 0,
        })
        .collect()
}

fn census(rows: &[(&str, u64, u64)], consistency: Consistency) -> Census {
    let types = types(rows);
    Census {
        objects: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
        types,
        unreadable: Unreadable::default(),
        consistency,
        tallies: Default::default(),
    }
}

fn render_census(report: &CensusReport, bytes: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = census_text::Options { bytes };
    census_text::render(report, 4242, Duration::from_millis(37), &opts, &mut out).unwrap();
    out
}

#[test]
fn census_text() {
    let mut c = census(
        &[
            ("dict", 120_000, 22_080_000),
            ("str", 80_000, 5_120_000),
            ("ndarray", 3, 8_000_336),
            ("Decimal", 10, 1040),
            ("evil\x1b[31mred\u{7}", 1, 56),
            ("int", 5, 140),
        ],
        Consistency {
            method: Method::Verified,
            attempts: 2,
            pause_us: 1234,
            pages_verified: 4000,
            collections_waited: 0,
        },
    );
    c.types[2].data_owned = 8_000_000;
    c.types[2].data_viewed = 4096;
    c.types[3].estimated = 10;
    c.unreadable = Unreadable {
        objects: 7,
        bytes: 3 << 20,
    };
    // Five of six types shown: the totals still count all of them.
    let report = CensusReport::new("3.12.1".into(), c, None, 5, false);
    check("census.txt", &render_census(&report, false));
    check("census-bytes.txt", &render_census(&report, true));
}

#[test]
fn census_growth_text() {
    let paused = Consistency {
        method: Method::Paused,
        attempts: 3,
        pause_us: 56_700,
        pages_verified: 0,
        collections_waited: 1,
    };
    let before = census(
        &[("bytearray", 1, 100), ("str", 10, 500), ("int", 5, 140)],
        paused,
    );
    let after = census(
        &[
            ("bytearray", 1, 10_000_100),
            ("str", 30, 1500),
            ("int", 4, 112),
            ("dict", 2, 464),
            ("list\x1b]0;title\u{7}", 1, 56),
        ],
        paused,
    );
    let grown = Grown::between(&before, &after, 3);
    let report = CensusReport::new("3.9.18".into(), after, Some(grown), 3, false);
    check("census-growth.txt", &render_census(&report, false));
    check("census-growth-bytes.txt", &render_census(&report, true));
    // Nothing grew: each table says so.
    let same = CensusReport::new(
        "3.9.18".into(),
        before.clone(),
        Some(Grown::between(&before, &before, 3)),
        3,
        true,
    );
    let mut text = render_census(&same, false);
    text.extend_from_slice(b"---- nonblocking, nothing grew ----\n");
    check("census-growth-none.txt", &text);
}

#[test]
fn stacks_text() {
    let frame = |function: &str, file: &str, line| Frame {
        function: function.into(),
        file: file.into(),
        line,
    };
    let report = StacksReport {
        python: memlens_model::census::PythonVersion {
            version: "3.13.0".into(),
        },
        threads: vec![
            Thread {
                thread_id: 0x7f00_dead_beef,
                native_thread_id: Some(4242),
                name: Some("MainThread".into()),
                frames: vec![
                    frame("work", "/srv/app/main.py", Some(12)),
                    frame("<module>", "/srv/app/main.py", Some(30)),
                ],
                frames_omitted: 0,
            },
            Thread {
                thread_id: 0x7f00_0000_1000,
                native_thread_id: None,
                name: Some("worker\x1b[2J\r".into()),
                frames: vec![frame("recurse\u{7}", "/tmp/x\x1b[31m.py", None)],
                frames_omitted: 5000,
            },
            Thread {
                thread_id: 0x7f00_0000_2000,
                native_thread_id: Some(4244),
                name: None,
                frames: vec![],
                frames_omitted: 0,
            },
        ],
        inexact: false,
    };
    let mut out = Vec::new();
    stacks_text::render(&report, 4242, Some(Duration::from_micros(2500)), &mut out).unwrap();
    out.extend_from_slice(b"---- nonblocking ----\n");
    stacks_text::render(&report, 4242, None, &mut out).unwrap();
    check("stacks.txt", &out);
}

fn package(name: &str, kind: PackageKind, bytes: [u64; 4], pss: Option<u64>) -> Package {
    let tally = |b: u64| Tally {
        count: b / 100,
        bytes: b,
    };
    let by_kind = ObjectKinds {
        code: tally(bytes[0]),
        functions: tally(bytes[1]),
        classes: tally(bytes[2]),
        modules: tally(bytes[3]),
        ..Default::default()
    };
    Package {
        name: name.into(),
        kind,
        object_bytes: bytes.iter().sum(),
        objects: bytes.iter().map(|b| b / 100).sum(),
        by_kind,
        extension: pss.map(|pss| ExtensionModules {
            amounts: Amounts {
                rss: pss * 2,
                pss,
                uss: pss / 2,
                swap: 0,
            },
            size: pss * 3,
            mappings: 4,
        }),
    }
}

fn packages() -> PythonPackages {
    let mut packages = vec![
        package(
            "numpy",
            PackageKind::Distribution,
            [3 << 20, 1 << 20, 512 << 10, 64 << 10],
            Some(30 << 20),
        ),
        package(
            "stdlib",
            PackageKind::Stdlib,
            [2 << 20, 900 << 10, 300 << 10, 100 << 10],
            None,
        ),
        package(
            "a-very-long-distribution-name-indeed\x1b[31m",
            PackageKind::Distribution,
            [1000, 2000, 3000, 400],
            Some(8192),
        ),
    ];
    // More than the text shows (20): the rest is counted.
    for i in 0..20 {
        packages.push(package(
            &format!("pkg{i:02}"),
            PackageKind::Distribution,
            [100, 100, 100, 100],
            None,
        ));
    }
    PythonPackages {
        note: NOTE,
        object_bytes: packages.iter().map(|p| p.object_bytes).sum(),
        method: Method::Verified,
        pause_us: 900,
        unreadable_objects: 3,
        unreadable_names: 1,
        packages,
        types: Vec::new(),
    }
}

#[test]
fn python_view_text() {
    let mut tree = fixture_ledger();
    let py = tree.processes[0]
        .python
        .as_mut()
        .expect("the fixture is a Python process");
    let generation = |count, threshold, collections| Generation {
        count,
        threshold,
        collections,
        collected: 0,
        uncollectable: 0,
    };
    py.version = Some("3.11.7".into());
    py.gc = Some(GcState {
        generations: vec![
            generation(523, 700, 91),
            generation(3, 10, 8),
            generation(1, 10, 0),
        ],
        frozen: 12,
        collecting: true,
    });
    py.pymalloc = Some(Pymalloc {
        arenas: 12,
        pools: 700,
        used_bytes: 2_500_000,
        free_bytes: 640_000,
        arena_size: 1 << 20,
        arena_ranges: vec![],
    });
    py.modules = Some(Modules {
        count: 87,
        names: vec![],
    });
    py.inexact = true;
    py.packages = Some(packages());
    let mut out = Vec::new();
    for bytes in [false, true] {
        python_text::render_views(&tree, &python_text::Options { bytes }, &mut out).unwrap();
    }
    check("python-view.txt", &out);
}
