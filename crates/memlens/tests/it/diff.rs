//! `memlens diff A B` (issue 12 item 3) and `snapshot --html` (item 4): a real target grows by
//! construction between two snapshots (or two recordings); the diff must name the category and
//! the type that grew with the bytes the target itself reports (`sys.getsizeof` sums, sizes by
//! construction) and the kernel's `smaps_rollup` for the totals; inputs that cannot be compared
//! exit 11 (6 for a corrupt recording) without a panic; the pages load in headless Chromium.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::Value;

use crate::golden::{check, fixtures};
use crate::support::{
    chromium, chromium_dom, kill, memlens, memlens_output, no_panic, pythons, rollup_field, stderr,
    u, Target, TempDir,
};

/// Instances the target adds, and the bytearray it allocates.
const N: u64 = 60_000;
const BLOB: u64 = 24 << 20;

/// Waits on stdin; on a line, adds `N` `DiffGrown` instances and a `BLOB`-byte bytearray, prints
/// `TRUTH <sum of getsizeof of the instances> <getsizeof of the bytearray>`, then READY again.
fn script() -> String {
    format!(
        "import sys\n\
         class DiffGrown:\n    def __init__(self, i):\n        self.i = i\n\
         keep = []\n\
         print('READY', flush=True)\n\
         sys.stdin.readline()\n\
         keep.extend(DiffGrown(i) for i in range({N}))\n\
         blob = bytearray({BLOB})\n\
         print('TRUTH', sum(sys.getsizeof(o) for o in keep), sys.getsizeof(blob), flush=True)\n\
         print('READY', flush=True)\n\
         sys.stdin.readline()\n"
    )
}

/// Sends "go" and reads the TRUTH line and the following READY.
fn grow(t: &mut Target) -> (u64, u64) {
    t.send("go");
    let line = t.read_line().expect("TRUTH line");
    let f: Vec<u64> = line
        .strip_prefix("TRUTH ")
        .unwrap_or_else(|| panic!("expected TRUTH, got {line:?}"))
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(t.read_line().as_deref(), Some("READY"));
    (f[0], f[1])
}

fn snapshot_to(pid: u32, file: &Path) {
    let out = memlens_output(&["snapshot", &pid.to_string(), "--packages", "--json"]);
    assert!(out.status.success(), "snapshot: {}", stderr(&out));
    std::fs::write(file, &out.stdout).unwrap();
}

fn diff_json(a: &Path, b: &Path) -> Value {
    let out = memlens_output(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "diff: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn category<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", d["categories"]))
}

fn grown<'a>(d: &'a Value, type_name: &str) -> &'a Value {
    d["census"]["grown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == type_name)
        .unwrap_or_else(|| panic!("{type_name} not among the grown types: {}", d["census"]))
}

/// `b` within `pct` percent of `truth`, or `slack` bytes.
fn near(what: &str, got: i64, truth: u64, pct: f64, slack: u64) {
    let diff = (got as f64 - truth as f64).abs();
    assert!(
        diff <= truth as f64 * pct / 100.0 + slack as f64,
        "{what}: {got} is not within {pct}% + {slack} B of {truth}"
    );
}

/// The growth the target made, checked against a diff point.
fn check_growth(label: &str, d: &Value, instances: u64, blob: u64) {
    // The type that grew: exactly N new instances, their getsizeof sum; the bytearray.
    let g = grown(d, "DiffGrown");
    assert_eq!(u(&g["count"]["delta"]), N, "{label}: {g}");
    near(
        &format!("{label}: DiffGrown bytes"),
        g["bytes"]["delta"].as_i64().unwrap(),
        instances,
        0.0,
        0,
    );
    let b = grown(d, "bytearray");
    near(
        &format!("{label}: bytearray bytes"),
        b["bytes"]["delta"].as_i64().unwrap(),
        blob,
        1.0,
        64 << 10,
    );
    // The category that grew most is native-heap (the bytearray's buffer, outside pymalloc),
    // by about the buffer; python-heap grew by at least the instances (pymalloc objects).
    assert_eq!(
        d["categories"][0]["category"], "native-heap",
        "{label}: {}",
        d["categories"]
    );
    let native = category(d, "native-heap")["pss"]["delta"].as_i64().unwrap();
    near(
        &format!("{label}: native-heap PSS"),
        native,
        blob,
        8.0,
        1 << 20,
    );
    let heap = category(d, "python-heap")["pss"]["delta"].as_i64().unwrap();
    assert!(
        heap >= instances as i64 * 9 / 10,
        "{label}: python-heap grew {heap} B, less than the instances' {instances} B"
    );
}

#[test]
fn snapshot_diff_names_the_category_and_type_that_grew() {
    let dir = TempDir::new("diff-snap");
    for py in pythons() {
        for launch in 0..2 {
            let label = format!("{} launch {launch}", py.label);
            let mut t = Target::python(&py.path, &script());
            let pid = t.pid();
            let (a, b) = (dir.join("a.json"), dir.join("b.json"));
            // The kernel's PSS just before each snapshot: the snapshot's ledger is read before
            // its census, and the census's reads may fault pages of the target in.
            let kernel_a = rollup_field(pid, "Pss");
            snapshot_to(pid, &a);
            let (instances, blob) = grow(&mut t);
            let kernel_b = rollup_field(pid, "Pss");
            snapshot_to(pid, &b);
            let doc = diff_json(&a, &b);
            assert_eq!(doc["compared"], "snapshots");
            let d = &doc["diffs"][0];
            assert_eq!(d["point"], "snapshot");
            check_growth(&label, d, instances, blob);
            // Totals against the kernel's own PSS, read right after each snapshot (the target
            // waits on its stdin meanwhile).
            near(
                &format!("{label}: PSS total"),
                d["totals"]["pss"]["delta"].as_i64().unwrap(),
                kernel_b - kernel_a,
                3.0,
                512 << 10,
            );
            assert_eq!(d["processes"][0]["matched_by"], "pid", "{label}");
            assert!(d["census_absent"].is_null(), "{label}");
            // The text names them too.
            let out = memlens_output(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
            assert!(out.status.success(), "{}", stderr(&out));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("native-heap") && text.contains("DiffGrown"),
                "{text}"
            );
        }
    }
}

/// Records the target for a short while into `file`, with a census every 100 ms.
/// Records `pid` into `file` until the recording holds a ledger taken after a census (polled
/// with the sqlite3 shell, read-only), then stops it with SIGINT: so its end has a census
/// however slowly a loaded machine takes them (a fixed duration could end before the first).
fn record_to(pid: u32, file: &Path) {
    let rec = memlens()
        .args([
            "record",
            &pid.to_string(),
            "--census-every",
            "100ms",
            "--ledger-every",
            "100ms",
            "--cpu-budget",
            "100",
            "-o",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let uri = format!("file:{}?mode=ro", file.display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no ledger after a census in {}",
            file.display()
        );
        // memlens installs its SIGINT handler before it creates the file.
        if file.exists() {
            let q = std::process::Command::new("sqlite3")
                .arg(&uri)
                .arg("select count(*) from ledgers where t >= (select min(t) from census)")
                .output()
                .expect("sqlite3 runs");
            let n: u64 = String::from_utf8_lossy(&q.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            if n > 0 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    kill(rec.id(), "-INT");
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success(), "record: {}", stderr(&out));
}

#[test]
fn recording_diff_compares_peaks_and_ends() {
    let dir = TempDir::new("diff-rec");
    for py in pythons() {
        let label = py.label.clone();
        let mut t = Target::python(&py.path, &script());
        let (a, b) = (
            dir.join(&format!("a-{label}.db")),
            dir.join(&format!("b-{label}.db")),
        );
        record_to(t.pid(), &a);
        let (instances, blob) = grow(&mut t);
        record_to(t.pid(), &b);
        let doc = diff_json(&a, &b);
        assert_eq!(doc["compared"], "recordings");
        let points: Vec<&str> = doc["diffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["point"].as_str().unwrap())
            .collect();
        assert_eq!(points, ["peak", "end"]);
        // The peak: for an idle target, a recording's peak ledger may be its first, taken
        // before any census (and before the Python view placed the arenas): the totals grew by
        // at least what the target built, and the census is said absent, not zero.
        let peak = &doc["diffs"][0];
        let grew = peak["totals"]["pss"]["delta"].as_i64().unwrap();
        assert!(
            grew >= (blob + instances) as i64 * 9 / 10,
            "{label} peak: {grew}"
        );
        if peak["census"].is_null() {
            assert!(
                peak["census_absent"].as_str().unwrap().contains("census"),
                "{label}"
            );
        }
        // The end: the last ledgers, each with the last census before it.
        let end = &doc["diffs"][1];
        let l = format!("{label} end");
        check_growth(&l, end, instances, blob);
        // A recording keeps a census's 20 largest types: DiffGrown was not in A's at all.
        assert_eq!(grown(end, "DiffGrown")["absent_from"], "a", "{l}");
        assert_eq!(end["census"]["top_only"], true, "{l}");
    }
}

#[test]
fn inputs_that_cannot_be_compared_exit_11_with_a_reason() {
    let dir = TempDir::new("diff-bad");
    let snap = fixtures().join("diff-a.json");
    let rec = fixtures().join("run.db");
    let cases: Vec<(std::path::PathBuf, &str, i32)> = vec![
        (
            rec.clone(),
            "one is a snapshot (JSON), the other a recording",
            11,
        ),
        (dir.join("missing.json"), "cannot read", 11),
        (
            write(&dir, "other.json", b"{\"root\": \"x\", \"a\": 1}"),
            "is not a memlens snapshot",
            11,
        ),
        (
            write(&dir, "text.txt", b"hello\n"),
            "is not a memlens snapshot",
            11,
        ),
        (
            write(&dir, "empty.json", b""),
            "is not a memlens snapshot",
            11,
        ),
        (dir.0.clone(), "is not a regular file", 11),
        (
            write(
                &dir,
                "corrupt.db",
                b"SQLite format 3\0garbage garbage garbage",
            ),
            "",
            6,
        ),
    ];
    for (other, words, code) in cases {
        let out = memlens_output(&["diff", snap.to_str().unwrap(), other.to_str().unwrap()]);
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}: {}",
            other.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(words),
            "{}: {}",
            other.display(),
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn diff_text_golden() {
    let (a, b) = (
        fixtures().join("diff-a.json"),
        fixtures().join("diff-b.json"),
    );
    for (name, extra) in [("diff.txt", None), ("diff-bytes.txt", Some("--bytes"))] {
        let mut c = memlens();
        c.current_dir(fixtures())
            .args(["diff", "diff-a.json", "diff-b.json"]);
        if let Some(e) = extra {
            c.arg(e);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        check(name, &out.stdout);
    }
    let out = memlens()
        .current_dir(fixtures())
        .args(["diff", "run.db", "record.db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    check("diff-recordings.txt", &out.stdout);
    // JSON carries the same figures: A and B as read, the change between them.
    let doc = diff_json(&a, &b);
    let t = &doc["diffs"][0]["totals"]["pss"];
    assert_eq!(
        t["delta"].as_i64().unwrap(),
        u(&t["b"]) as i64 - u(&t["a"]) as i64
    );
}

/// The page's own checks: escaped, nothing that could run or fetch anything, a CSP.
fn page_is_inert(html: &str) {
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "unescaped <script> in the page");
    for bad in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<link", "<img", "<iframe",
    ] {
        assert!(!lower.contains(bad), "the page contains `{bad}`");
    }
    assert!(html.contains("default-src 'none'"), "no CSP");
}

#[test]
fn diff_and_snapshot_pages_load_in_chromium_with_hostile_strings_escaped() {
    let dir = TempDir::new("diff-html");
    // The diff page of the fixtures: B's command line carries markup and an escape sequence.
    let page = dir.join("diff.html");
    let out = memlens_output(&[
        "diff",
        fixtures().join("diff-a.json").to_str().unwrap(),
        fixtures().join("diff-b.json").to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    page_is_inert(&html);
    assert!(
        html.contains("red&lt;/td&gt;&lt;script&gt;"),
        "escaped cmdline missing"
    );
    // A second run refuses to replace it without --force, and replaces it with --force.
    let again = memlens_output(&[
        "diff",
        "--html",
        page.to_str().unwrap(),
        fixtures().join("diff-a.json").to_str().unwrap(),
        fixtures().join("diff-b.json").to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(8), "{}", stderr(&again));
    let forced = memlens_output(&[
        "diff",
        "--force",
        "--html",
        page.to_str().unwrap(),
        fixtures().join("diff-a.json").to_str().unwrap(),
        fixtures().join("diff-b.json").to_str().unwrap(),
    ]);
    assert!(forced.status.success(), "{}", stderr(&forced));

    // The snapshot page of a live target whose command line carries markup.
    let hostile = "<script>alert(1)</script>\"'&";
    let mut cmd = std::process::Command::new(crate::support::python());
    cmd.args([
        "-c",
        "import sys\nclass Hostile: pass\nkeep = [Hostile() for _ in range(5000)]\nprint('READY', flush=True)\nsys.stdin.readline()\n",
        hostile,
    ]);
    let t = Target::spawn(cmd);
    let snap = dir.join("snapshot.html");
    let out = memlens_output(&[
        "snapshot",
        &t.pid().to_string(),
        "--packages",
        "--json",
        "--html",
        snap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ledger: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shtml = std::fs::read_to_string(&snap).unwrap();
    page_is_inert(&shtml);
    assert!(
        shtml.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"),
        "escaped cmdline missing"
    );

    let Some(chromium) = chromium() else { return };
    let dom = chromium_dom(&chromium, &page, &dir.join("profile"));
    assert!(
        !dom.to_lowercase().contains("<script"),
        "a script element in the DOM"
    );
    assert!(
        dom.contains("native-heap") && dom.contains("Widget"),
        "figures missing from the DOM"
    );
    let dom = chromium_dom(&chromium, &snap, &dir.join("profile"));
    assert!(
        !dom.to_lowercase().contains("<img"),
        "an img element in the DOM"
    );
    // The figures: the root's PSS as the JSON says it (same renderer's units), its census type.
    let pss = u(&ledger["totals"]["pss"]);
    let shown = memlens_model::units::SizeStyle::Binary
        .size(pss)
        .to_string();
    assert!(dom.contains(&shown), "PSS {shown} missing from the DOM");
    assert!(
        dom.contains("Hostile") && dom.contains("python-heap"),
        "census or ledger missing"
    );
}
