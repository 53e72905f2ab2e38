//! The tracer's per-thread stack cache (memlens-preload `pystack::Walk`) never gives a wrong
//! stack: `stack_cache.py` makes allocations whose stacks differ from the previous one only
//! in what a cache keyed on the wrong thing would miss (another code object in a frame reused
//! at the same address, the same callee from another caller line, recursion depth, a
//! generator's two yields, code objects freed and compiled again, two threads in turn). In
//! `all` mode each site's `malloc` stacks must hold exactly the constructed count and bytes
//! (the script's `N` and `SIZES`, read from the script, not written down twice), on every
//! CPython.

use std::collections::HashMap;
use std::path::Path;

use crate::preload::{lines, traced};
use crate::support::{pythons, target_script, TempDir};
use crate::support_trace::markers;

const SCRIPT: &str = "stack_cache.py";

/// One frame: (file, function, line).
type Frame = (String, String, u64);

/// What the trace says: per `malloc` stack, its frames and its last `alloc_bytes`/`alloc_count`.
fn malloc_stacks(path: &Path) -> Vec<(Vec<Frame>, u64, u64)> {
    let mut codes: HashMap<u64, (String, String)> = HashMap::new();
    let mut stacks: HashMap<u64, Vec<Frame>> = HashMap::new();
    let mut sites: HashMap<u64, (u64, u64)> = HashMap::new();
    let kv = |l: &str| -> HashMap<String, String> {
        l.split(' ')
            .filter_map(|x| x.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let unescape = |s: &str| -> String {
        let b = s.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let num = |m: &HashMap<String, String>, k: &str| -> u64 {
        m[k].parse().unwrap_or_else(|_| panic!("{k} in {m:?}"))
    };
    for l in lines(path) {
        let m = kv(&l);
        if l.starts_with("code ") {
            codes.insert(num(&m, "id"), (unescape(&m["file"]), unescape(&m["name"])));
        } else if l.starts_with("stack ") && m["domain"] == "malloc" {
            let frames = m["frames"]
                .split(',')
                .filter(|x| !x.is_empty())
                .map(|x| {
                    let (c, line) = x.split_once(':').expect("C:L");
                    let (file, name) = codes[&c.parse::<u64>().expect("code id")].clone();
                    (file, name, line.parse().expect("line"))
                })
                .collect();
            stacks.insert(num(&m, "id"), frames);
        } else if l.starts_with("site ") {
            sites.insert(
                num(&m, "stack"),
                (num(&m, "alloc_bytes"), num(&m, "alloc_count")),
            );
        }
    }
    stacks
        .into_iter()
        .map(|(id, f)| {
            let (b, c) = sites.get(&id).copied().unwrap_or_default();
            (f, b, c)
        })
        .collect()
}

/// The script's `# @NAME` lines, `N` and `SIZES`.
fn script() -> (HashMap<String, u64>, u64, HashMap<String, u64>) {
    let text = std::fs::read_to_string(target_script(SCRIPT)).expect("script");
    let (mut n, mut sizes, mut in_sizes) = (0, HashMap::new(), false);
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("N = ") {
            n = v.trim().parse().expect("N");
        }
        if l.starts_with("SIZES = {") || l.starts_with('}') {
            in_sizes = l.starts_with('S');
        } else if in_sizes {
            for kv in l.trim().trim_end_matches(',').split(", ") {
                let (k, v) = kv.split_once(": ").expect("site: bytes");
                sizes.insert(k.trim_matches('"').to_string(), v.parse().expect("bytes"));
            }
        }
    }
    assert!(n > 0 && sizes.len() == 13, "N={n} SIZES={sizes:?}");
    (markers(SCRIPT), n, sizes)
}

#[test]
fn cached_stacks_hold_exactly_the_constructed_allocations() {
    let (mk, n, size) = script();
    let at = |name: &str, mark: &str| (SCRIPT.to_string(), name.to_string(), mk[mark]);
    let dir = TempDir::new("preload-stack-cache");
    for py in pythons() {
        let out = dir.join(&py.label);
        let o = traced(&py.path, SCRIPT, &[], &out, &[("MEMLENS_TRACE", "all")])
            .output()
            .expect("python runs");
        let who = &py.label;
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && stdout.starts_with("DONE "),
            "{who}: {o:?}"
        );
        eprintln!("{who}: {}", stdout.trim());
        let stacks = malloc_stacks(&out);
        // The innermost frames `want` (a prefix of the stack; the file matched by its end).
        let sum = |want: &[Frame]| -> (u64, u64) {
            let mut s = (0, 0);
            for (frames, b, c) in &stacks {
                let hit = frames.len() >= want.len()
                    && frames
                        .iter()
                        .zip(want)
                        .all(|(f, w)| f.0.ends_with(&w.0) && f.1 == w.1 && f.2 == w.2);
                if hit {
                    s.0 += b;
                    s.1 += c;
                }
            }
            s
        };
        let expect = |what: &str, want: &[Frame], count: u64, bytes: u64| {
            let got = sum(want);
            eprintln!("{who} {what}: (bytes, count) {got:?}, constructed ({bytes}, {count})");
            assert_eq!(
                got,
                (bytes, count),
                "{who} {what}: (bytes, count) by construction ({want:?})"
            );
        };
        // Each buffer is one malloc of its size plus a constant of the interpreter's bytearray
        // (1 for the NUL up to 3.14; 3.15 keeps a bytes object's header): taken from `alt_a`,
        // then every other site must hold exactly its count x (size + that constant).
        let main = |m: &str| at("main", m);
        let (alt_a, _) = sum(&[at("alt_a", "alt_a"), main("main_alt")]);
        let extra = (alt_a / n).saturating_sub(size["alt_a"]);
        assert!(
            alt_a % n == 0 && (1..=64).contains(&extra),
            "{who}: alt_a {alt_a} for {n} x {}",
            size["alt_a"]
        );
        let one = |s: &str| size[s] + extra;
        expect(
            "alt_a",
            &[at("alt_a", "alt_a"), main("main_alt")],
            n,
            n * one("alt_a"),
        );
        expect(
            "alt_b",
            &[at("alt_b", "alt_b"), main("main_alt")],
            n,
            n * one("alt_b"),
        );
        for m in ["main_twice1", "main_twice2"] {
            expect(m, &[at("twice", "twice"), main(m)], n, n * one("twice"));
        }
        for d in 0..4u64 {
            let half = size[&format!("rec{d}")] / 2;
            for (line, bytes) in [
                ("rec_down", half),
                ("rec_up", size[&format!("rec{d}")] - half),
            ] {
                let mut want = vec![at("rec", line)];
                want.extend((0..d).map(|_| at("rec", "rec_call")));
                want.push(main("main_rec"));
                expect(
                    &format!("rec depth {d} {line}"),
                    &want,
                    n,
                    n * (bytes + extra),
                );
            }
        }
        for g in ["gen1", "gen2"] {
            expect(g, &[at("gen", g), main("main_gen")], n, n * one(g));
        }
        for (g, line) in [("dyn1", 2), ("dyn2", 5)] {
            let want = [("<dyn>".into(), "dyn".into(), line), main("main_dyn")];
            expect(g, &want, n, n * one(g));
        }
        for t in ["thread_a", "thread_b"] {
            let run = ("threading.py".to_string(), "run".to_string(), 0);
            let got = stacks
                .iter()
                .filter(|(f, _, _)| {
                    f.first()
                        .is_some_and(|x| x.0.ends_with(SCRIPT) && x.1 == t && x.2 == mk[t])
                        && f.get(1)
                            .is_some_and(|x| x.0.ends_with(&run.0) && x.1.ends_with(&run.1))
                })
                .fold((0, 0), |s, (_, b, c)| (s.0 + b, s.1 + c));
            eprintln!("{who} {t}: {got:?}");
            assert_eq!(got, (n * one(t), n), "{who} {t}: by construction");
        }
    }
}
