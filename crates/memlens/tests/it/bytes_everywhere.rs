//! `--bytes` reaches every size a renderer prints: findings, notes, warnings and growth rates
//! included (they were once worded in binary units whatever the flag). Checked on the golden
//! fixtures, through the CLI for the text reports and through the library for the snapshot
//! text and the HTML page (whose chart axes alone keep binary units).
#![allow(clippy::unwrap_used)]

use memlens_recording::reader::Recording;
use memlens_report::{html, ledger_text, Model};

use crate::golden::{fixture_ledger, fixtures, report};

/// The binary units `--bytes` must not print, each with where it was found.
fn binary_units(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            ["KiB", "MiB", "GiB", "TiB", "PiB"]
                .iter()
                .any(|u| l.contains(u))
        })
        .map(str::to_string)
        .collect()
}

/// The page without its SVG charts (their axis labels keep binary units).
fn without_charts(page: &str) -> String {
    let mut out = String::new();
    let mut rest = page;
    while let Some(a) = rest.find("<svg") {
        out.push_str(&rest[..a]);
        match rest[a..].find("</svg>") {
            Some(b) => rest = &rest[a + b + "</svg>".len()..],
            None => panic!("an <svg> without its end"),
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn text_reports_of_recordings_print_no_binary_unit_under_bytes() {
    for db in ["run.db", "record.db"] {
        let text = String::from_utf8(report(db, &["--bytes"])).unwrap();
        assert_eq!(binary_units(&text), Vec::<String>::new(), "{db}");
        // The same report without --bytes does print them: the check can fail.
        let plain = String::from_utf8(report(db, &[])).unwrap();
        assert!(!binary_units(&plain).is_empty(), "{db}");
        // The run's growth rate is in bytes per second.
        if db == "run.db" {
            assert!(text.contains(" bytes/s\n"), "{text}");
        }
    }
}

#[test]
fn snapshot_text_prints_no_binary_unit_under_bytes() {
    let tree = fixture_ledger();
    assert!(!tree.findings.is_empty());
    for (bytes, expect_units) in [(true, false), (false, true)] {
        let mut out = Vec::new();
        let opts = ledger_text::Options {
            bytes,
            ..Default::default()
        };
        ledger_text::render_snapshot(&tree, &opts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(!binary_units(&text).is_empty(), expect_units, "{text}");
    }
}

#[test]
fn html_pages_print_no_binary_unit_outside_the_chart_axes_under_bytes() {
    for db in ["run.db", "record.db"] {
        let rec = Recording::open(&fixtures().join(db)).unwrap();
        let model = Model::from_recording(&rec).unwrap();
        let page = |bytes| {
            let mut out = Vec::new();
            let opts = html::Options {
                bytes,
                ..Default::default()
            };
            html::render(&model, &opts, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let exact = page(true);
        assert_eq!(
            binary_units(&without_charts(&exact)),
            Vec::<String>::new(),
            "{db}"
        );
        // The peak's label on the chart is a size like any other.
        assert!(
            exact.contains(&format!("peak {} at", model.peak.bytes)),
            "{db}"
        );
        assert!(
            !binary_units(&without_charts(&page(false))).is_empty(),
            "{db}"
        );
    }
}

#[test]
fn the_max_peak_verdict_honours_bytes() {
    // 100 MiB of bytes held by a real Python, against a budget of 50 MiB (52428800 bytes).
    let dir = crate::support::TempDir::new("budget-bytes");
    let py = crate::support::python();
    let db = dir.join("b.db");
    let out = crate::support::memlens()
        .args(["--bytes", "run", "-q", "--max-peak", "50M", "-o"])
        .arg(&db)
        .arg("--")
        .arg(&py)
        .args(["-c", "import time; x = b'm' * (100 << 20); time.sleep(0.1)"])
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("exceeds --max-peak 52428800 ("), "{err}");
    let line = err.lines().find(|l| l.contains("--max-peak")).unwrap();
    assert_eq!(binary_units(line), Vec::<String>::new());
    let peak: u64 = line
        .split("peak ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak in bytes: {line}"));
    assert!(peak >= 100 << 20, "{line}");
}

#[test]
fn report_html_files_honour_bytes_through_the_cli() {
    let dir = crate::support::TempDir::new("bytes-html");
    for (bytes, expect_units) in [(true, false), (false, true)] {
        let out = dir.join(&format!("page-{bytes}.html"));
        let mut cmd = crate::support::memlens();
        if bytes {
            cmd.arg("--bytes");
        }
        let o = cmd
            .args(["report", "--html"])
            .arg(&out)
            .arg(fixtures().join("run.db"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", crate::support::stderr(&o));
        let page = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            !binary_units(&without_charts(&page)).is_empty(),
            expect_units,
            "--bytes {bytes}"
        );
    }
}
