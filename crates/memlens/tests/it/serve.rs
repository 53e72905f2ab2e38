//! `memlens serve` (issue 11 item 2): a real Prometheus (Debian's `prometheus`) scrapes it on
//! loopback and its HTTP API is asked for the PSS of a known tree of Python processes (a parent
//! and forked workers), compared with the kernel's `smaps_rollup`; `promtool check metrics`
//! lints the exposition; hostile `comm` and command lines come back as labels intact and inject
//! nothing; bad addresses and ports in use are clear errors with their exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    assert_close, memlens, no_panic, python, rollup_field, stderr, Target, TempDir,
};

/// A running `memlens serve`, stopped with SIGTERM on drop.
struct Serve {
    child: Child,
    addr: String,
    stderr_lines: Vec<String>,
}

impl Serve {
    /// Starts `memlens serve --listen 127.0.0.1:0 ARGS` and waits for its `serving` line.
    fn start(args: &[&str]) -> Serve {
        let mut child = memlens()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memlens serve starts");
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let mut lines = Vec::new();
        let addr = loop {
            let mut l = String::new();
            if err.read_line(&mut l).unwrap_or(0) == 0 {
                panic!("memlens serve ended before serving: {lines:?}");
            }
            if let Some(rest) = l.trim().strip_prefix("memlens: serving http://") {
                break rest.trim_end_matches("/metrics").to_string();
            }
            lines.push(l);
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        Serve {
            child,
            addr,
            stderr_lines: lines,
        }
    }

    /// Scrapes `/metrics` with an `Accept` header: (content type, body).
    fn scrape(&self, accept: Option<&str>) -> (String, String) {
        let (head, body) = http_get(&self.addr, "/metrics", accept);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let ct = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        (ct, body)
    }

    /// Scrapes until a collection is complete that has every one of `pids` (deadline 120 s).
    fn wait_for(&self, pids: &[u32]) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, body) = self.scrape(None);
            let has = |pid: &u32| {
                body.contains(&format!("memlens_process_total_pss_bytes{{pid=\"{pid}\""))
            };
            if pids.iter().all(has) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "no collection with {pids:?} in 120 s:\n{body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        crate::support::kill(self.child.id(), "-TERM");
        self.child.wait().expect("memlens serve exits")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::support::kill_if_alive(self.child.id(), "-TERM");
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over HTTP/1.1 on loopback: (status line and headers, body).
fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("response");
    let (head, body) = all.split_once("\r\n\r\n").expect("headers end");
    (head.to_string(), body.to_string())
}

/// A free loopback port (released at once: Prometheus binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running Prometheus with a temporary config and storage, scraping `target` every second.
struct Prometheus {
    child: Child,
    api: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: memlens\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let api = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`) starts");
        let p = Prometheus {
            child,
            api,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(&p.api).is_ok()
                && http_get(&p.api, "/-/ready", None)
                    .0
                    .starts_with("HTTP/1.1 200")
            {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// `/api/v1/query?query=q`: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let mut enc = String::new();
        for b in q.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        let (head, body) = http_get(&self.api, &format!("/api/v1/query?query={enc}"), None);
        assert!(head.starts_with("HTTP/1.1 200"), "{q}: {head}\n{body}");
        let v: Value = serde_json::from_str(&body).expect("API JSON");
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `q` until `done` holds for its result (deadline 120 s).
    fn wait(&self, q: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.query(q);
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{q}: not there in 120 s: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parent with a 40 MB heap and three forked workers that each copy a part of it (touching
/// its objects) and build 8 MB of their own; READY once every worker said so over a pipe.
const TREE: &str = r#"
import os, signal, sys
heap = [str(i) * 4 for i in range(600000)]
r, w = os.pipe()
for k in range(3):
    if os.fork() == 0:
        os.close(r)
        part = heap[k * 100000:(k + 1) * 100000]
        for s in part:
            s.upper()
        mine = [bytes(64) for _ in range(100000)]
        os.write(w, b"R")
        while True:
            signal.pause()
os.close(w)
got = 0
while got < 3:
    got += len(os.read(r, 3 - got))
print(os.getpid(), *(int(c) for c in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()), flush=True)
print("READY", flush=True)
sys.stdin.read()
"#;

/// A process whose `comm` and command line try to break out of their labels.
const HOSTILE_COMM: &str = "a\"b\\c}\nd{x=\"1";
const HOSTILE_ARG: &str = "evil\"} 666\nmemlens_injected_total 1\n# EOF\n\\";

fn hostile(dir: &TempDir) -> Target {
    let script = dir.join("hostile.py");
    std::fs::write(
        &script,
        format!(
            "import sys\nopen('/proc/self/comm', 'w').write({HOSTILE_COMM:?})\nprint('READY', flush=True)\nsys.stdin.read()\n"
        ),
    )
    .expect("script");
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(HOSTILE_ARG);
    Target::spawn(cmd)
}

/// The kernel's view of a label: the `Name:` of `/proc/PID/status` (the kernel writes `comm`
/// there with `\` and a line feed escaped, and memlens names processes by it everywhere), and
/// the arguments of `/proc/PID/cmdline` joined by spaces, cut to the label's 200 bytes.
fn kernel_comm(pid: u32) -> String {
    let s = std::fs::read(format!("/proc/{pid}/status")).expect("status");
    let s = String::from_utf8_lossy(&s).into_owned();
    let name = s
        .lines()
        .find_map(|l| l.strip_prefix("Name:\t"))
        .expect("Name");
    name.to_string()
}

fn kernel_cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    let joined: Vec<u8> = raw
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    let s = String::from_utf8_lossy(&joined).into_owned();
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) runs");
    c.stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("promtool stdin");
    let out = c.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn value(r: &[Value]) -> f64 {
    r.first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_the_pss_of_a_forked_tree_within_3_percent_of_the_kernel() {
    let dir = TempDir::new("serve-tree");
    let tree = Target::python(&python(), TREE);
    let pids: Vec<u32> = tree.lines[0]
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 4, "{:?}", tree.lines);
    let evil = hostile(&dir);
    let serve = Serve::start(&["--interval", "1s", "--cpu-budget", "100"]);
    let mut all = pids.clone();
    all.push(evil.pid());
    let body = serve.wait_for(&all);

    // promtool lints the Prometheus text exposition (it reads no OpenMetrics).
    let (_, text) = serve.scrape(Some("text/plain;version=0.0.4"));
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
    assert!(
        body.contains("memlens_python_gc_collections_total{"),
        "{body}"
    );

    // Prometheus asks for OpenMetrics first; its scrapes go through that parser.
    let prom = Prometheus::start(&serve.addr);
    let regex = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("|");
    prom.wait(
        &format!("count(count by (pid) (memlens_process_pss_bytes{{pid=~\"{regex}\"}}))"),
        |r| value(r) == 4.0,
    );
    let q = format!("sum(memlens_process_pss_bytes{{pid=~\"{regex}\"}})");
    let scraped = value(&prom.query(&q));
    let kernel: u64 = pids.iter().map(|p| rollup_field(*p, "Pss")).sum();
    eprintln!("serve: Prometheus's sum {scraped} B, the kernel's {kernel} B");
    assert_close(
        "sum of memlens_process_pss_bytes vs smaps_rollup",
        scraped as u64,
        kernel,
        3.0,
    );
    let up = prom.query("up{job=\"memlens\"}");
    assert_eq!(value(&up), 1.0, "{up:?}");

    // The hostile labels arrive intact, and nothing was injected.
    let info = prom.wait(
        &format!("memlens_process_info{{pid=\"{}\"}}", evil.pid()),
        |r| !r.is_empty(),
    );
    assert_eq!(
        info[0]["metric"]["comm"],
        kernel_comm(evil.pid()).as_str(),
        "{info:?}"
    );
    assert_eq!(
        info[0]["metric"]["cmdline"],
        kernel_cmdline(evil.pid()).as_str(),
        "{info:?}"
    );
    assert!(kernel_cmdline(evil.pid()).contains(HOSTILE_ARG));
    assert!(prom.query("memlens_injected_total").is_empty());
    assert!(prom.query("{__name__=~\"memlens_injected.*\"}").is_empty());

    drop(prom);
    let status = serve.stop();
    assert!(
        status.success(),
        "memlens serve ended with {status:?} on SIGTERM"
    );
}

#[test]
fn both_formats_are_negotiated_and_carry_the_same_samples() {
    let tree = Target::python(&python(), "import sys\nx = [str(i) for i in range(100000)]\nprint('READY', flush=True)\nsys.stdin.read()\n");
    let serve = Serve::start(&["--interval", "1s", "--cpu-budget", "100"]);
    serve.wait_for(&[tree.pid()]);
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, om) = serve.scrape(Some(prometheus_accept));
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# UNIT memlens_process_pss_bytes bytes\n"));
    assert!(om.contains("# TYPE memlens_python_gc_collections counter\n"));
    let (ct, text) = serve.scrape(None);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert!(text.contains("# TYPE memlens_python_gc_collections_total counter\n"));
    // Only /metrics.
    let (head, _) = http_get(&serve.addr, "/", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(&serve.addr, "/metricsx", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(serve.stderr_lines.is_empty(), "{:?}", serve.stderr_lines);
}

#[test]
fn a_bad_address_is_a_usage_error_and_a_port_in_use_exits_10() {
    let out = memlens()
        .args(["serve", "--listen", "localhost:no"])
        .output()
        .expect("runs");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = memlens()
        .args(["serve", "--listen", &addr])
        .output()
        .expect("runs");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("memlens: error: cannot listen on {addr}")),
        "{err}"
    );
    assert!(err.contains("pick another port with --listen"), "{err}");
}

#[test]
fn a_non_loopback_address_is_warned_about() {
    let mut child = memlens()
        .args(["serve", "--listen", "0.0.0.0:0", "--interval", "1h"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut first = String::new();
    err.read_line(&mut first).expect("a line");
    let mut second = String::new();
    err.read_line(&mut second).expect("a line");
    assert!(
        second.starts_with("memlens: serving http://0.0.0.0:"),
        "{second}"
    );
    crate::support::kill(child.id(), "-TERM");
    let status = child.wait().expect("exits");
    assert!(first.starts_with("memlens: warn: 0.0.0.0:"), "{first}");
    assert!(first.contains("can be reached from other hosts"), "{first}");
    assert!(status.success(), "{status:?}");
}

/// The dashboard in docs/ is valid JSON with a Prometheus datasource variable, and every metric
/// its queries name is in a real exposition (with `--census`, so the census types are too).
#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
        .expect("the dashboard is JSON");
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");

    let tree = Target::python(&python(), "import os, sys\nx = [str(i) for i in range(100000)]\nif os.fork() == 0:\n    y = [bytes(32) for _ in range(50000)]\n    sys.stdin.read()\n    os._exit(0)\nprint('READY', flush=True)\nsys.stdin.read()\n");
    let serve = Serve::start(&[
        "--interval",
        "1s",
        "--cpu-budget",
        "100",
        "--census",
        "--census-top",
        "3",
    ]);
    let body = serve.wait_for(&[tree.pid()]);
    // Declared families (a cgroup without a limit has no limit sample, but the metric exists).
    let names: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for core in [
        "memlens_process_pss_bytes",
        "memlens_tree_pss_bytes",
        "memlens_python_census_bytes",
    ] {
        assert!(
            body.contains(&format!("\n{core}{{")),
            "no {core} sample:\n{body}"
        );
    }
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                names.contains(name.as_str()),
                "{name} (in {e:?}) is not exported: {names:?}"
            );
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    ("definition", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// The `memlens_*` names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("memlens_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

/// A sample's value in a Prometheus text exposition (the first sample of that name).
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `memlens_collections_total` reaches `n` (deadline 300 s): the last body.
fn wait_collections(serve: &Serve, n: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = serve.scrape(None);
        if sample(&body, "memlens_collections_total").unwrap_or(0.0) >= n {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{n} collections not done in 300 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CPU seconds (user + system) the kernel counted for `pid`.
fn kernel_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm end") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the state (field 3).
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    ticks
        / String::from_utf8_lossy(&hz.stdout)
            .trim()
            .parse::<f64>()
            .expect("CLK_TCK")
}

/// With `--interval 1ms`, only the budget spaces collections: memlens's CPU (as the kernel
/// counts it) stays within the budget's share of the time it ran, plus the last collection's
/// charge and the one running now (the first one is taken at once, whatever it costs), with
/// room for scrapes and startup. Without the budget it would use most of a core.
#[test]
fn the_collector_keeps_within_its_cpu_budget() {
    let tree = Target::python(
        &python(),
        "import os, sys, signal\nx = [str(i) for i in range(200000)]\nfor _ in range(4):\n    if os.fork() == 0:\n        while True:\n            signal.pause()\nprint('READY', flush=True)\nsys.stdin.read()\n",
    );
    let started = Instant::now();
    let serve = Serve::start(&["--interval", "1ms", "--cpu-budget", "5"]);
    serve.wait_for(&[tree.pid()]);
    let body = wait_collections(&serve, 4.0);
    let cpu = kernel_cpu_seconds(serve.child.id());
    let wall = started.elapsed().as_secs_f64();
    let last = sample(&body, "memlens_collection_cpu_seconds").expect("collection CPU");
    let total = sample(&body, "memlens_collector_cpu_seconds_total").expect("collector CPU");
    eprintln!("serve budget: {cpu:.3} s CPU in {wall:.3} s (collections: last {last:.3} s, all {total:.3} s)");
    assert!(
        cpu <= 0.05 * wall + 3.0 * last.max(0.1) + 0.3,
        "{cpu} s of CPU in {wall} s is over a 5% budget (a collection costs {last} s)"
    );
    assert!(
        total <= cpu + 0.05,
        "the collector counts {total} s, the kernel {cpu} s"
    );
}

/// Processes that exit while they are read are skipped and counted; the collector goes on and
/// every exposition stays valid.
#[test]
fn a_tree_whose_workers_come_and_go_is_collected_and_counted() {
    let churn = Target::python(
        &python(),
        "import os, sys, time\nprint('READY', flush=True)\nwhile True:\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(0.002)\n        os._exit(0)\n    os.waitpid(pid, 0)\n",
    );
    let serve = Serve::start(&["--interval", "1ms", "--cpu-budget", "100"]);
    serve.wait_for(&[churn.pid()]);
    let body = wait_collections(&serve, 6.0);
    let (ok, said) = promtool_check(&body);
    assert!(ok, "promtool check metrics: {said}\n{body}");
    assert!(
        body.contains("memlens_targets_skipped_total{reason=\"gone\"} "),
        "{body}"
    );
    let (_, after) = serve.scrape(None);
    assert!(after.contains(&format!(
        "memlens_process_total_pss_bytes{{pid=\"{}\"",
        churn.pid()
    )));
    let status = serve.stop();
    assert!(status.success(), "{status:?}");
}
