//! The reports of traced allocations (`memlens run --trace`, issue 10): the text report and
//! `--lines` against golden files, the flame graph parsed back by an independent XML parser
//! (Python's `xml.etree`), the HTML section driven in headless Chromium under the page's own
//! Content-Security-Policy, and `report --flamegraph` / `--lines` on recordings without a
//! trace (exit 6, nothing written) and with bad destinations (exit 8, nothing touched).
//!
//! The allocations are built by hand (sizes by construction, hostile names included): the
//! renderers are tested apart from the reader of trace files.
//!
//! After an intended change of output: `MEMLENS_BLESS=1 cargo test -p memlens --test it
//! trace_report` rewrites the golden files; review them with `git diff` before committing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use memlens_model::allocations::{
    Allocations, AtPeak, Breakdown, ByLine, Domain, Frame, LineTotals, Lines, Lost, Reconciliation,
    Stack,
};
use memlens_report::{alloc_flame, alloc_html, alloc_lines, alloc_text, html, sha256};

use crate::golden::{check, fixtures};
use crate::support::{memlens_output, stderr, TempDir};
// it::trace_live loads its page with these too.
pub(crate) use crate::support::{chromium, chromium_dom as load};

const MIB: u64 = 1 << 20;
const EVIL_FUNCTION: &str = "evil;\x1b[31m<script>alert(1)</script>";
const EVIL_FILE: &str = "/srv/app/\u{202e}x&y.py";

fn frame(file: &str, function: &str, line: u32) -> Frame {
    Frame {
        file: file.into(),
        function: function.into(),
        line,
    }
}

fn by_line(file: &str, line: u32, function: &str, bytes: u64, count: u64) -> ByLine {
    ByLine {
        file: file.into(),
        line,
        function: function.into(),
        bytes,
        count,
    }
}

fn totals(file: &str, line: u32, function: &str, alloc: u64, freed: u64) -> LineTotals {
    LineTotals {
        file: file.into(),
        line,
        function: function.into(),
        allocated_bytes: alloc,
        allocated_count: alloc / 4096,
        freed_bytes: freed,
        freed_count: freed / 4096,
    }
}

/// A sampled run of `/srv/app/main.py`: a table built by `build_table` (pymalloc), a file
/// loaded by `io.load` (malloc), an mmap with no Python frame, and a hostile name.
fn allocations() -> Allocations {
    let main = "/srv/app/main.py";
    let io = "/srv/app/io.py";
    let module = frame(main, "<module>", 50);
    Allocations {
        mode: "sampled".into(),
        sample_interval_bytes: 64 << 10,
        at_peak: AtPeak {
            t: 2.5,
            bytes: 100 * MIB,
            inherited_bytes: 0,
            inherited_by_line: Vec::new(),
            breakdown: Breakdown::Complete,
            highest_seen_bytes: 100 * MIB,
            highest_seen_t: 2.5,
            by_line: vec![
                by_line(main, 12, "Table.build", 60 * MIB, 1200),
                by_line(io, 7, "load", 30 * MIB, 3),
                by_line("", 0, "", 6 * MIB, 1),
                by_line(EVIL_FILE, 3, EVIL_FUNCTION, 4 * MIB, 2),
            ],
            stacks: vec![
                Stack {
                    frames: vec![
                        frame(main, "Table.build", 12),
                        frame(main, "main", 40),
                        module.clone(),
                    ],
                    domain: Domain::Pymalloc,
                    bytes: 60 * MIB,
                    count: 1200,
                    pid: 4242,
                },
                Stack {
                    frames: vec![
                        frame(io, "load", 7),
                        frame(main, "main", 41),
                        module.clone(),
                    ],
                    domain: Domain::Malloc,
                    bytes: 30 * MIB,
                    count: 3,
                    pid: 4242,
                },
                Stack {
                    frames: vec![],
                    domain: Domain::Mmap,
                    bytes: 6 * MIB,
                    count: 1,
                    pid: 4242,
                },
                Stack {
                    frames: vec![
                        frame(EVIL_FILE, EVIL_FUNCTION, 3),
                        frame(main, "main", 42),
                        module,
                    ],
                    domain: Domain::Malloc,
                    bytes: 4 * MIB,
                    count: 2,
                    pid: 4242,
                },
            ],
        },
        leaked: Lines {
            bytes: 8 * MIB,
            by_line: vec![by_line(main, 13, "Table.build", 8 * MIB, 160)],
        },
        temporary: Lines {
            bytes: 2048 * MIB,
            by_line: vec![
                by_line(main, 20, "spike", 2000 * MIB, 40),
                by_line(io, 9, "load", 48 * MIB, 12),
            ],
        },
        reconciliation: vec![
            Reconciliation {
                category: "python-heap".into(),
                traced_bytes: 60 * MIB,
                pss: 66 * MIB,
                untouched_bytes: 0,
                tracer_bytes: 0,
            },
            Reconciliation {
                category: "native-heap".into(),
                traced_bytes: 40 * MIB,
                pss: 26 * MIB,
                untouched_bytes: 16 * MIB,
                tracer_bytes: 2 * MIB,
            },
        ],
        totals_by_line: vec![
            totals(main, 12, "Table.build", 64 * MIB, 4 * MIB),
            totals(main, 13, "Table.build", 8 * MIB, 0),
            totals(main, 20, "spike", 2000 * MIB, 2000 * MIB),
            totals(io, 7, "load", 30 * MIB, 0),
            totals(io, 9, "load", 48 * MIB, 48 * MIB),
        ],
        lost: Lost {
            dropped_frees: 2,
            unreadable_stacks: 5,
            ..Lost::default()
        },
        over_time: Default::default(),
    }
}

/// The source of `/srv/app/main.py` as it ran (line numbers as in [`allocations`]).
fn main_source() -> String {
    let mut lines: Vec<String> = (1..=52).map(|_| String::new()).collect();
    lines[9] = "class Table:".into();
    lines[10] = "    def build(self, n):".into();
    lines[11] = "        self.rows = [dict(k=i) for i in range(n)]".into();
    lines[12] = "        self.index = {i: i for i in range(n)}".into();
    lines[13] = "        return self".into();
    lines[18] = "def spike():".into();
    lines[19] = "\tdata = bytearray(2000 << 20)  # \x1b[2J".into();
    lines[39] = "def main():".into();
    lines[49] = "main()".into();
    lines.join("\n") + "\n"
}

fn text(a: &Allocations, bytes: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = alloc_text::Options {
        bytes,
        ..alloc_text::Options::default()
    };
    alloc_text::render(a, &opts, &mut out).unwrap();
    out
}

#[test]
fn text_report_golden() {
    let a = allocations();
    let t = text(&a, false);
    let s = String::from_utf8(t.clone()).unwrap();
    // Escaped, not interpreted.
    assert!(!s.contains('\x1b') && !s.contains('\u{202e}'), "{s}");
    assert!(s.contains("estimate") && s.contains("64.0 KiB"), "{s}");
    assert!(s.contains("warning: the tracer lost records"), "{s}");
    check("alloc-text.txt", &t);
    check("alloc-text-bytes.txt", &text(&a, true));
    // `all` mode and nothing lost: exact, no warning.
    let mut exact = a.clone();
    exact.mode = "all".into();
    exact.sample_interval_bytes = 1;
    exact.lost = Lost::default();
    let s = String::from_utf8(text(&exact, false)).unwrap();
    assert!(!s.contains("estimate") && !s.contains("warning"), "{s}");
}

fn lines(a: &Allocations, spec: &str, source: &alloc_lines::Source, bytes: bool) -> Vec<u8> {
    let sel = alloc_lines::select(a, spec).unwrap();
    let mut out = Vec::new();
    alloc_lines::render(a, &sel, source, bytes, &mut out).unwrap();
    out
}

#[test]
fn lines_golden() {
    let a = allocations();
    let src = alloc_lines::Source::Read {
        path: "main.py".into(),
        text: main_source(),
    };
    let whole = lines(&a, "main.py", &src, false);
    let s = String::from_utf8(whole.clone()).unwrap();
    // Every line of the file, blank figures where nothing was allocated, the net signed.
    assert_eq!(
        s.lines().filter(|l| l.starts_with("     ")).count(),
        52,
        "{s}"
    );
    let row = |n: u32| {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
            .unwrap()
            .to_string()
    };
    assert!(
        row(12).contains("64.0 MiB") && row(12).contains("+60.0 MiB"),
        "{s}"
    );
    assert_eq!(row(11).split_whitespace().count(), 4, "{}", row(11));
    assert!(row(20).contains("\\u{1b}[2J") && !s.contains('\x1b'), "{s}");
    check("alloc-lines.txt", &whole);
    // One function, its range from its traced lines; the source not readable.
    let gone = alloc_lines::Source::Unavailable("main.py: No such file or directory".into());
    let f = lines(&a, "/srv/app/main.py:build", &gone, true);
    let s = String::from_utf8(f.clone()).unwrap();
    assert!(s.contains("lines 12–13"), "{s}");
    check("alloc-lines-function-bytes.txt", &f);
    // With the source: the function's `def` and body around its traced lines (12–13).
    let f = String::from_utf8(lines(&a, "main.py:build", &src, false)).unwrap();
    assert!(
        f.contains("function Table.build of /srv/app/main.py, lines 11–14"),
        "{f}"
    );
    let shown: Vec<&str> = f
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(shown, ["11", "12", "13", "14"], "{f}");
}

/// Each frame of an SVG flame graph as an independent XML parser reads it: its name (the
/// `<title>` less inferno's figures) and its width in bytes (`fg:w`), with `total_samples`.
fn parse_svg(svg: &Path) -> (u64, Vec<(String, u64)>) {
    let script = r#"
import json, re, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
frames = [e for e in root.iter(ns + "svg") if e.get("id") == "frames"][0]
out = []
for g in frames.iter(ns + "g"):
    title = g.find(ns + "title").text
    rect = g.find(ns + "rect")
    name = re.sub(r" \([0-9,]+ bytes, [0-9.]+%\)$", "", title)
    out.append([name, int(rect.get("{http://github.com/jonhoo/inferno}w"))])
print(json.dumps({"total": int(frames.get("total_samples")), "frames": out}))
"#;
    let out = std::process::Command::new(crate::support::python())
        .args(["-c", script])
        .arg(svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SVG does not parse: {}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_string(), f[1].as_u64().unwrap()))
        .collect();
    (v["total"].as_u64().unwrap(), frames)
}

#[test]
fn flame_graph_parses_back_to_the_stacks() {
    let a = allocations();
    let dir = TempDir::new("trace-flame");
    let svg = dir.join("peak.svg");
    let mut out = Vec::new();
    alloc_flame::render(&a, &alloc_flame::Options::default(), &mut out).unwrap();
    std::fs::write(&svg, &out).unwrap();
    let (total, frames) = parse_svg(&svg);
    // The expected width of every frame: the bytes of the stacks under it, by construction.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    want.insert("all".into(), 100 * MIB);
    for s in &a.at_peak.stacks {
        let mut names: Vec<String> = s.frames.iter().rev().map(alloc_flame::frame_name).collect();
        if names.is_empty() {
            names.push(alloc_flame::NO_PYTHON_FRAME.into());
        }
        // A frame is identified by its path from the root (the same name twice under
        // different callers is two frames).
        for k in 1..=names.len() {
            *want.entry(names[..k].join(" <- ")).or_default() += s.bytes;
        }
    }
    assert_eq!(total, 100 * MIB);
    // Rebuild the paths: inferno writes frames depth by depth? No: order is not promised, so
    // compare the multiset of (name, width) with the leaves' names.
    let mut got: Vec<(String, u64)> = frames.clone();
    got.sort();
    let mut expected: Vec<(String, u64)> = want
        .iter()
        .map(|(path, w)| (path.rsplit(" <- ").next().unwrap().to_string(), *w))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    // The hostile frame: its `;` did not split it, its markup is text, its controls gone.
    let evil = frames.iter().find(|(n, _)| n.contains("alert(1)")).unwrap();
    assert_eq!(
        evil,
        &(
            "evil%3B\u{fffd}[31m<script>alert(1)</script> (/srv/app/\u{fffd}x&y.py:3)".into(),
            4 * MIB
        )
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(alloc_flame::MARKER));
    assert!(
        text.contains("sampled: estimates, one sample per 64.0 KiB allocated"),
        "{text}"
    );
    assert!(!text.contains("<script>alert"), "markup unescaped");
    // Opened on its own, inferno's script (search, zoom) starts without an error.
    if let Some(chromium) = chromium() {
        let dom = load(&chromium, &svg, &dir.join("profile"));
        assert!(dom.contains("total_samples"), "{dom}");
    }
}

/// What the test's driver script does in the page: searches, zooms, writes what it saw into
/// `data-test` on `<body>` (read back from the DOM Chromium dumps).
const DRIVER: &str = r##"(function () {
var fg = document.getElementById("fg");
var input = fg.querySelector(".fg-search");
var res = {};
input.value = "Table\\.build";
input.dispatchEvent(new Event("input"));
res.search = fg.querySelector(".fg-matched").textContent;
res.hits = fg.querySelectorAll(".fg-match").length;
input.value = "(";
input.dispatchEvent(new Event("input"));
res.bad = fg.querySelector(".fg-matched").textContent;
var gs = Array.prototype.slice.call(document.querySelectorAll("#fg-frames g"));
var load = gs.filter(function (g) { return g.querySelector("title").textContent.indexOf("load (") === 0; })[0];
load.querySelector("rect").dispatchEvent(new MouseEvent("click", {bubbles: true}));
res.zoomWidth = load.querySelector("rect").getAttribute("width");
res.hidden = document.querySelectorAll("#fg-frames .fg-hide").length;
res.parents = document.querySelectorAll("#fg-frames .fg-parent").length;
res.reset = fg.querySelector(".fg-reset").hidden;
fg.querySelector(".fg-reset").click();
res.after = document.querySelectorAll("#fg-frames .fg-hide").length;
document.body.setAttribute("data-test", JSON.stringify(res));
})();"##;

#[test]
fn html_section_searches_and_zooms_in_chromium_under_its_csp() {
    let rec = memlens_recording::Recording::open(&fixtures().join("run.db")).unwrap();
    let model = memlens_report::Model::from_recording(&rec).unwrap();
    let a = allocations();
    let mut page = Vec::new();
    html::render_with(&model, Some(&a), &html::Options::default(), &mut page).unwrap();
    let page = String::from_utf8(page).unwrap();
    // Without allocations the page is the one `render` draws: no script, the same CSP.
    let mut plain = Vec::new();
    html::render_with(&model, None, &html::Options::default(), &mut plain).unwrap();
    let plain = String::from_utf8(plain).unwrap();
    assert!(!plain.contains("<script") && !plain.contains("script-src"));
    // One script, the section's, allowed by its hash; nothing to fetch; names escaped.
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src {}",
        alloc_html::csp_script_source()
    );
    assert!(page.contains(&csp), "no CSP with the script's hash");
    assert_eq!(page.matches("<script").count(), 1);
    let lower = page.to_lowercase();
    for bad in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<link", "<img", "<iframe",
        "onload", "onclick",
    ] {
        assert!(!lower.contains(bad), "the page contains `{bad}`");
    }
    assert!(page.contains("evil%3B\u{fffd}[31m&lt;script&gt;alert(1)&lt;/script&gt;"));
    // The bidi override of the hostile file name is neutralised in the tables too.
    assert!(!page.contains('\u{202e}'), "a bidi control in the page");

    let Some(chromium) = chromium() else { return };
    let dir = TempDir::new("trace-html");
    // The page as memlens writes it: it must load without a console message (a script refused
    // by the CSP is one) or a request.
    let file = dir.join("page.html");
    std::fs::write(&file, &page).unwrap();
    let dom = load(&chromium, &file, &dir.join("profile"));
    assert!(
        dom.contains("id=\"fg-frames\""),
        "no flame graph in the DOM"
    );
    // The same page with the driver after the section's script, its hash added to the CSP.
    let driven = page
        .replace(&csp, &format!("{csp} {}", sha256::csp_source(DRIVER)))
        .replace("</body>", &format!("<script>{DRIVER}</script></body>"));
    let file = dir.join("driven.html");
    std::fs::write(&file, &driven).unwrap();
    let dom = load(&chromium, &file, &dir.join("profile"));
    let json = dom
        .split("data-test=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("the driver did not run: {dom}"))
        .replace("&quot;", "\"");
    let res: serde_json::Value = serde_json::from_str(&json).unwrap();
    // `Table.build` is one frame of 60 of the 100 MiB.
    assert_eq!(
        res["search"], "1 frame matched, 60.0% of the bytes",
        "{res}"
    );
    assert_eq!(res["hits"], 1, "{res}");
    assert_eq!(res["bad"], "not a regular expression", "{res}");
    // Zoomed to `load` (30 MiB): it spans the width, its two callers dimmed, other frames
    // hidden (Table.build, its caller main:40, the mmap's frame, the hostile frame and its
    // caller main:42); the reset button shows, and resetting hides nothing.
    assert_eq!(res["zoomWidth"], "100.0000%", "{res}");
    assert_eq!(res["parents"], 3, "{res}");
    assert_eq!(res["hidden"], 5, "{res}");
    assert_eq!(res["reset"], false, "{res}");
    assert_eq!(res["after"], 0, "{res}");
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn flamegraph_and_lines_need_a_trace_and_touch_nothing() {
    let dir = TempDir::new("trace-cli");
    let rec = fixtures().join("run.db");
    let rec = rec.to_str().unwrap();
    let svg = dir.join("peak.svg");
    let svg_s = svg.to_str().unwrap();
    // A recording made without --trace: exit 6, said plainly, nothing written.
    for args in [
        vec!["report", rec, "--flamegraph", svg_s],
        vec!["report", rec, "--lines", "main.py"],
        vec![
            "report",
            rec,
            "--lines",
            "main.py:build",
            "--flamegraph",
            svg_s,
        ],
    ] {
        let out = memlens_output(&args);
        crate::support::no_panic(&out);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("holds no traced allocations")
                && stderr(&out).contains("memlens run --trace"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }
    // --lines replaces the summary: not with --json (usage, exit 2).
    let out = memlens_output(&["report", rec, "--lines", "main.py", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The flame graph and the HTML page at one path: usage.
    let out = memlens_output(&["report", rec, "--flamegraph", svg_s, "--html", svg_s]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A destination memlens did not write, or a link: exit 8 before anything is read (the
    // recording here does not even exist), the file and the link's target untouched.
    std::fs::write(&svg, "<svg>not memlens's</svg>").unwrap();
    let target = dir.join("target.svg");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.join("link.svg");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for dest in [&svg, &link] {
        for force in [false, true] {
            let mut args = vec![
                "report",
                "/nonexistent.db",
                "--flamegraph",
                dest.to_str().unwrap(),
            ];
            if force {
                args.push("--force");
            }
            let out = memlens_output(&args);
            assert_eq!(out.status.code(), Some(8), "{args:?}: {}", stderr(&out));
        }
    }
    assert_eq!(
        std::fs::read_to_string(&svg).unwrap(),
        "<svg>not memlens's</svg>"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let mut names = leftovers(dir.path());
    names.sort();
    assert_eq!(names, ["link.svg", "peak.svg", "target.svg"]);
    // A flame graph memlens wrote is recognised (its marker) and replaced only with --force:
    // without it exit 8; with it the recording is read (and, without a trace, refused: 6).
    let mut ours = Vec::new();
    alloc_flame::render(&allocations(), &alloc_flame::Options::default(), &mut ours).unwrap();
    std::fs::write(&svg, &ours).unwrap();
    let out = memlens_output(&["report", rec, "--flamegraph", svg_s]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = memlens_output(&["report", rec, "--flamegraph", svg_s, "--force"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(std::fs::read(&svg).unwrap(), ours);
}
