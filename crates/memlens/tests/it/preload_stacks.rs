//! memlens-preload's Python stacks and trace format version 2 (docs/trace-format.md) on real
//! CPython processes: `preload_stacks.py` allocates by construction at lines it marks
//! `# @NAME` (found in the script here, not written down twice), and the `site` and `peaksite`
//! lines of the stacks whose innermost frames are those lines hold the constructed bytes:
//! within 2% in `all` mode, 10% sampled. The trace file is parsed here (a small reader of the
//! contract, checking that every `code` and `stack` line comes before its first use).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::preload::{lines, traced};
use crate::support::{pythons, target_script, Python, TempDir};
use crate::support_trace::{close, markers, tagged_pid};

const MIB: f64 = (1 << 20) as f64;
const SCRIPT: &str = "preload_stacks.py";

/// Cumulative figures of one stack (its last `site` line).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fig {
    pub(crate) live: f64,
    /// In a forked child: inherited at fork, still live (format 3).
    pub(crate) inherited: f64,
    pub(crate) alloc: f64,
    pub(crate) freed: f64,
    pub(crate) temp: f64,
    pub(crate) temp_count: u64,
}

#[derive(Debug)]
pub(crate) struct Stack {
    /// Innermost first: (file, function, line).
    pub(crate) frames: Vec<(String, String, u64)>,
    pub(crate) unreadable: bool,
    pub(crate) truncated: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) header: HashMap<String, String>,
    pub(crate) stacks: HashMap<u64, Stack>,
    /// The last `site` line of each stack.
    pub(crate) sites: HashMap<u64, Fig>,
    /// The last `peak` block: its total and its stacks' bytes.
    pub(crate) peak_total: f64,
    pub(crate) peak: HashMap<u64, f64>,
    /// The `end` line's fields.
    pub(crate) end: HashMap<String, u64>,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kv(line: &str) -> HashMap<&str, &str> {
    line.split(' ').filter_map(|x| x.split_once('=')).collect()
}

fn num(m: &HashMap<&str, &str>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k} in {m:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} not a number in {m:?}"))
}

/// Parses a version 2 trace file, checking the order the contract promises.
pub(crate) fn parse(path: &Path) -> Trace {
    let mut t = Trace::default();
    let mut codes: HashMap<u64, (String, String)> = HashMap::new();
    let all = lines(path);
    let first = all.first().expect("a header");
    assert!(first.starts_with("memlens-trace 3 "), "{first}");
    t.header = kv(first)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut in_peak = false;
    for l in &all[1..] {
        let (kind, _) = l.split_once(' ').unwrap_or((l, ""));
        let m = kv(l);
        if kind != "peaksite" {
            in_peak = false;
        }
        match kind {
            "code" => {
                let id = num(&m, "id");
                assert!(!codes.contains_key(&id), "code {id} twice: {l}");
                codes.insert(id, (unescape(m["file"]), unescape(m["name"])));
            }
            "stack" => {
                let id = num(&m, "id");
                assert!(!t.stacks.contains_key(&id), "stack {id} twice: {l}");
                let frames = m["frames"]
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| {
                        let (c, line) = x.split_once(':').expect("C:L");
                        let c: u64 = c.parse().expect("code id");
                        let (file, name) = codes
                            .get(&c)
                            .unwrap_or_else(|| panic!("code {c} used before its line: {l}"))
                            .clone();
                        (file, name, line.parse().expect("line"))
                    })
                    .collect();
                assert!(["malloc", "mmap", "pymalloc"].contains(&m["domain"]), "{l}");
                t.stacks.insert(
                    id,
                    Stack {
                        frames,
                        unreadable: m.contains_key("unreadable"),
                        truncated: m.contains_key("truncated"),
                    },
                );
            }
            "site" => {
                let id = num(&m, "stack");
                assert!(t.stacks.contains_key(&id), "stack {id} used before: {l}");
                t.sites.insert(
                    id,
                    Fig {
                        live: num(&m, "live_bytes") as f64,
                        // written only when not 0
                        inherited: m
                            .get("inherited_bytes")
                            .map_or(0, |_| num(&m, "inherited_bytes"))
                            as f64,
                        alloc: num(&m, "alloc_bytes") as f64,
                        freed: num(&m, "freed_bytes") as f64,
                        temp: num(&m, "temp_bytes") as f64,
                        temp_count: num(&m, "temp_count"),
                    },
                );
            }
            "peak" => {
                t.peak.clear();
                t.peak_total = num(&m, "live_bytes") as f64;
                in_peak = true;
            }
            "peaksite" => {
                assert!(in_peak, "a peaksite outside a peak block: {l}");
                let id = num(&m, "stack");
                assert!(t.stacks.contains_key(&id), "stack {id} used before: {l}");
                t.peak.insert(id, num(&m, "bytes") as f64);
            }
            "end" => {
                t.end = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                    .collect();
            }
            _ => {}
        }
    }
    assert!(!t.end.is_empty(), "no end line in {}", path.display());
    t
}

impl Trace {
    /// The stacks whose innermost frame is `inner` (function, line) of the script and whose
    /// next is `next` (function, line; line 0: any line, function matched by its last dotted
    /// part, e.g. `Thread.run` for `run`, in any file).
    fn stacks_at(&self, inner: (&str, u64), next: (&str, u64)) -> Vec<u64> {
        self.stacks
            .iter()
            .filter(|(_, s)| {
                let ok_inner = s.frames.first().is_some_and(|(file, name, line)| {
                    file.ends_with(SCRIPT) && name == inner.0 && *line == inner.1
                });
                let ok_next = s.frames.get(1).is_some_and(|(file, name, line)| {
                    if next.1 == 0 {
                        name.rsplit('.').next() == Some(next.0)
                    } else {
                        file.ends_with(SCRIPT) && name == next.0 && *line == next.1
                    }
                });
                ok_inner && ok_next
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The sum of the figures of `ids`.
    fn fig(&self, ids: &[u64]) -> Fig {
        let mut f = Fig::default();
        for id in ids {
            if let Some(s) = self.sites.get(id) {
                f.live += s.live;
                f.inherited += s.inherited;
                f.alloc += s.alloc;
                f.freed += s.freed;
                f.temp += s.temp;
                f.temp_count += s.temp_count;
            }
        }
        f
    }

    fn at_peak(&self, ids: &[u64]) -> f64 {
        ids.iter().filter_map(|id| self.peak.get(id)).sum()
    }
}

/// Runs the script under the preload (and once without, for its output and status).
fn run(py: &Python, out: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, Trace) {
    let o = traced(&py.path, SCRIPT, args, out, env)
        .output()
        .expect("python runs");
    let plain = Command::new(&py.path)
        .arg(target_script(SCRIPT))
        .args(args)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(7), "{}: {o:?}", py.label);
    assert_eq!(plain.status.code(), Some(7), "{}: {plain:?}", py.label);
    assert!(
        o.stderr.is_empty(),
        "{}: {}",
        py.label,
        String::from_utf8_lossy(&o.stderr)
    );
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("CHILD "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&stdout),
        strip(&String::from_utf8_lossy(&plain.stdout)),
        "{}: the same output",
        py.label
    );
    (stdout, parse(out))
}

/// Checks the figures of the script's stacks; `pct`: the tolerance; `sampled`: only the
/// sites above 5% of the peak are held to it.
fn check(py: &Python, t: &Trace, pct: f64) {
    let mk = markers(SCRIPT);
    let l = |k: &str| mk[k];
    let who = &py.label;
    assert_eq!(
        t.header["python"],
        format!("{}.{}", py.version.0, py.version.1),
        "{who}: the interpreter found"
    );
    assert_eq!(t.end["unreadable_stacks"], 0, "{who}: {:?}", t.end);
    assert_eq!(t.end["stacks_lost"], 0, "{who}: {:?}", t.end);
    assert!(
        t.stacks.values().all(|s| !s.unreadable),
        "{who}: an unreadable stack"
    );

    let f = t.stacks_at(("f", l("f")), ("g", l("g")));
    assert!(!f.is_empty(), "{who}: no stack f <- g in {:#?}", t.stacks);
    let ff = t.fig(&f);
    close(&format!("{who} f allocated"), ff.alloc, 40.0 * MIB, pct);
    close(
        &format!("{who} f at the peak"),
        t.at_peak(&f),
        40.0 * MIB,
        pct,
    );
    assert!(
        ff.live < 0.5 * MIB,
        "{who}: f's buffers were released: {ff:?}"
    );

    let sp = t.stacks_at(("spike", l("spike")), ("main", l("main_spike")));
    assert!(!sp.is_empty(), "{who}: no stack spike <- main");
    let sf = t.fig(&sp);
    close(
        &format!("{who} spike allocated"),
        sf.alloc,
        160.0 * MIB,
        pct,
    );
    close(&format!("{who} spike freed"), sf.freed, 160.0 * MIB, pct);
    close(
        &format!("{who} spike at the peak"),
        t.at_peak(&sp),
        8.0 * MIB,
        pct,
    );
    // Each spike buffer lives for one memset of 8 MiB: most are temporaries (freed within the
    // trace's temp_ns), whatever the machine's load.
    assert!(
        sf.temp >= 0.5 * sf.freed,
        "{who}: the spike's buffers are temporaries: {sf:?} (temp_ns={})",
        t.header["temp_ns"]
    );

    let th = t.stacks_at(("worker", l("thread")), ("run", 0));
    assert!(!th.is_empty(), "{who}: no stack worker <- Thread.run");
    close(
        &format!("{who} threads live at the end"),
        t.fig(&th).live,
        12.0 * MIB,
        pct,
    );

    let lk = t.stacks_at(("leak", l("leak")), ("main", l("main_leak")));
    assert!(!lk.is_empty(), "{who}: no stack leak <- main");
    close(
        &format!("{who} leak live at the end"),
        t.fig(&lk).live,
        10.0 * MIB,
        pct,
    );

    // 151 frames of `deep` (and main, <module>): the innermost 128 kept, marked truncated.
    let dp = t.stacks_at(("deep", l("deep")), ("deep", l("deep_call")));
    assert!(!dp.is_empty(), "{who}: no stack deep <- deep");
    for id in &dp {
        let s = &t.stacks[id];
        assert!(s.truncated, "{who}: deep stack not marked truncated: {s:?}");
        assert_eq!(s.frames.len(), 128, "{who}: the depth limit");
        assert!(s.frames[1..]
            .iter()
            .all(|(_, n, line)| n == "deep" && *line == l("deep_call")));
    }
    close(
        &format!("{who} deep live at the end"),
        t.fig(&dp).live,
        MIB,
        pct,
    );
    // only the recursion is deeper than the limit (with pymalloc wrapped, every frame and
    // object `deep` allocates has a stack of its own, each truncated)
    for s in t.stacks.values().filter(|s| s.truncated) {
        assert!(
            s.frames.iter().filter(|(_, n, _)| n == "deep").count() >= 100,
            "{who}: only the deep stacks are truncated: {s:?}"
        );
    }
}

/// `MEMLENS_TRACE=all`: every figure within 2% of the construction on every CPython; the
/// peak set is the live set at the highest live total (its sites sum to it).
#[test]
fn all_mode_stacks_hold_the_constructed_bytes() {
    let dir = TempDir::new("preload-stacks-all");
    for py in pythons() {
        let out = dir.join(&format!("{}-all", py.label));
        let (_, t) = run(&py, &out, &[], &[("MEMLENS_TRACE", "all")]);
        check(&py, &t, 2.0);
        let sum: f64 = t.peak.values().sum();
        close(
            &format!("{} peak sites sum to the peak", py.label),
            sum,
            t.peak_total,
            0.01,
        );
        assert!(
            t.peak_total >= 60.0 * MIB,
            "{}: peak {} below the constructed 60 MiB",
            py.label,
            t.peak_total
        );
    }
}

/// Sampled at 64 KiB: the sites above 5% of the peak within 10%.
#[test]
fn sampled_stacks_within_ten_percent() {
    let dir = TempDir::new("preload-stacks-sampled");
    for py in pythons() {
        let out = dir.join(&format!("{}-sampled", py.label));
        let (_, t) = run(&py, &out, &[], &[("MEMLENS_SAMPLE_BYTES", "65536")]);
        assert_eq!(t.header["mode"], "sampled");
        check(&py, &t, 10.0);
    }
}

/// A forked child writes its own file with its own code and stack lines: its allocations at
/// the child's line, and what it inherited, alive at its end.
#[test]
fn forked_child_has_its_own_stacks() {
    let dir = TempDir::new("preload-stacks-fork");
    let mk = markers(SCRIPT);
    for py in pythons() {
        let out = dir.join(&format!("{}-fork", py.label));
        let (stdout, parent) = run(&py, &out, &["fork"], &[("MEMLENS_TRACE", "all")]);
        let child = tagged_pid(&stdout, "CHILD");
        let t = parse(Path::new(&format!("{}.{child}", out.display())));
        assert!(t.header.contains_key("forked_from"), "{:?}", t.header);
        let c = t.stacks_at(
            ("child_work", mk["child"]),
            ("child_main", mk["child_main"]),
        );
        assert!(!c.is_empty(), "{}: no child_work stack", py.label);
        close(
            &format!("{} child live at its end", py.label),
            t.fig(&c).live,
            18.0 * MIB,
            2.0,
        );
        let lk = t.stacks_at(("leak", mk["leak"]), ("main", mk["main_leak"]));
        // Inherited, not the child's own (format 3).
        close(
            &format!("{} inherited leak live in the child", py.label),
            t.fig(&lk).inherited,
            10.0 * MIB,
            2.0,
        );
        assert_eq!(
            t.fig(&lk).live,
            0.0,
            "{}: the leak is not the child's",
            py.label
        );
        let pc = parent.stacks_at(
            ("child_work", mk["child"]),
            ("child_main", mk["child_main"]),
        );
        assert!(
            parent.fig(&pc).alloc == 0.0,
            "{}: the child's allocations are not the parent's",
            py.label
        );
    }
}
