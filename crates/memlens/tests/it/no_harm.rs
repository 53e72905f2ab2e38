//! memlens under hostile conditions (issue 8): it never replaces, truncates or writes through
//! what it did not create, finds bad destinations before the program runs, ends promptly,
//! bounds its flags, gives the documented exit codes for exited, kernel and traced targets,
//! survives closed pipes and a full disk, and escapes what it echoes. Ground truth comes from
//! the kernel (inodes, `/proc/PID/stat` states, `TracerPid`) and from construction; every wait
//! is on an event (a line, a process's exit) or on a condition, never a fixed sleep.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{kill, memlens, no_panic, python, report_json, stderr, u, Target, TempDir};
use serde_json::Value;

fn out_in(dir: &Path, args: &[&str]) -> Output {
    memlens()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Waits for a child to exit, for at most `limit` (a bound far above the expected time, so a
/// hang fails the test instead of blocking it): the wait itself is on the process's exit.
fn wait_within(mut child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e);
        }
        let status = child.wait().unwrap();
        let _ = tx.send(Output {
            status,
            stdout: o,
            stderr: e,
        });
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("memlens (pid {pid}) did not exit within {limit:?}");
    })
}

/// Polls a condition (not a time): true once it holds, panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What is at a path, link or not: type, inode, mode, device number, content or link target.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    ino: u64,
    mode: u32,
    rdev: u64,
    content: Vec<u8>,
}

fn found(p: &Path) -> Found {
    let m = std::fs::symlink_metadata(p).unwrap();
    let content = if m.file_type().is_symlink() {
        std::fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else if m.file_type().is_file() {
        std::fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    Found {
        ino: m.ino(),
        mode: m.mode(),
        rdev: m.rdev(),
        content,
    }
}

/// Every kind of thing that memlens did not write, made in `dir`: name -> path.
fn foreign_files(dir: &TempDir) -> Vec<(&'static str, PathBuf)> {
    let device = dir.join("device");
    let st = Command::new("mknod")
        .arg(&device)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod (tests run as root)");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let readonly = dir.join("readonly.db");
    std::fs::write(&readonly, b"read-only data\n").unwrap();
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o444)).unwrap();
    let unrelated = dir.join("unrelated.db");
    std::fs::write(&unrelated, b"SQLite format 3\0 but not memlens's").unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("link.db");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = dir.join("dangling.db");
    std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
    let directory = dir.join("directory");
    std::fs::create_dir(&directory).unwrap();
    let socket = dir.join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::mem::forget(listener);
    vec![
        ("device", device),
        ("fifo", fifo),
        ("readonly", readonly),
        ("unrelated", unrelated),
        ("link", link),
        ("dangling", dangling),
        ("directory", directory),
        ("socket", socket),
    ]
}

/// `memlens ARGS -- touch MARKER` must exit 8 without running touch and leave `target` as
/// it was.
fn refused_before_running(dir: &TempDir, args: &[&str], target: &Path, what: &str) {
    let marker = dir.join("ran");
    let before = found(target);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "touch", marker.to_str().unwrap()]);
    let out = out_in(&dir.0, &all);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(8), "{what}: {}", stderr(&out));
    assert!(!marker.exists(), "{what}: the program ran");
    assert_eq!(found(target), before, "{what}: changed");
    assert!(
        stderr(&out).contains(target.file_name().unwrap().to_str().unwrap()),
        "{what}: {}",
        stderr(&out)
    );
}

#[test]
fn dash_o_refuses_everything_memlens_did_not_write_before_the_program_runs() {
    let dir = TempDir::new("dash-o");
    let victim = dir.join("victim");
    for (what, path) in foreign_files(&dir) {
        for force in [false, true] {
            let mut args = vec!["run", "-q", "-o", path.to_str().unwrap()];
            if force {
                args.push("--force");
            }
            refused_before_running(&dir, &args, &path, what);
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !dir.join("nowhere").exists(),
            "{what}: a dangling link was followed"
        );
    }
    // A stray SQLite companion beside the name: untouched, nothing created.
    let wal = dir.join("new.db-wal");
    std::fs::write(&wal, b"someone's log").unwrap();
    let new = dir.join("new.db");
    refused_before_running(
        &dir,
        &["run", "-q", "-o", new.to_str().unwrap()],
        &wal,
        "wal",
    );
    assert!(!new.exists());
    // `record` shares the rule.
    let t = Target::sleeper();
    let fifo = dir.join("fifo");
    let before = found(&fifo);
    let out = out_in(
        &dir.0,
        &["record", &t.pid().to_string(), "-o", fifo.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert_eq!(found(&fifo), before);
}

#[test]
fn a_recording_is_replaced_only_with_force_and_only_if_memlens_wrote_it() {
    let dir = TempDir::new("force");
    let db = dir.join("r.db");
    let out = out_in(&dir.0, &["run", "-q", "-o", "r.db", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = found(&db);
    refused_before_running(&dir, &["run", "-q", "-o", "r.db"], &db, "no --force");
    assert!(
        stderr(&out_in(&dir.0, &["run", "-q", "-o", "r.db", "--", "true"])).contains("--force")
    );
    let marker = dir.join("ran");
    let out = out_in(
        &dir.0,
        &[
            "run",
            "-q",
            "--force",
            "-o",
            "r.db",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists());
    // The new recording (the old one's inode may be reused: compare what they hold).
    let j = report_json(&db);
    assert!(
        j["command"].as_str().unwrap().starts_with("touch"),
        "{}",
        j["command"]
    );
    assert_ne!(found(&db).content, first.content);
    assert_eq!(j["exit_code"], 0);
    // Reports follow the same rule.
    let html = dir.join("r.html");
    let out = out_in(&dir.0, &["report", "r.db", "--html", "r.html"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = found(&html);
    let out = out_in(&dir.0, &["report", "r.db", "--html", "r.html"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert_eq!(found(&html), page);
    let out = out_in(&dir.0, &["report", "r.db", "--html", "r.html", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Renamed over it: the new file existed beside the old one, so its inode differs.
    assert_ne!(found(&html).ino, page.ino);
}

#[test]
fn report_files_are_never_written_through_a_link_or_over_a_foreign_file() {
    let dir = TempDir::new("html-link");
    let db = dir.join("r.db");
    let victim = dir.join("victim");
    for (what, path) in foreign_files(&dir) {
        for flag in ["--html", "--json-out"] {
            let _ = std::fs::remove_file(&db);
            refused_before_running(
                &dir,
                &[
                    "run",
                    "-q",
                    "-o",
                    "r.db",
                    flag,
                    path.to_str().unwrap(),
                    "--force",
                ],
                &path,
                &format!("{flag} {what}"),
            );
            assert!(!db.exists(), "{flag} {what}: a recording was left");
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().mode() & 0o777,
            0o600,
            "{what}"
        );
        assert!(
            !dir.join("nowhere").exists(),
            "{what}: a dangling link was followed"
        );
    }
    // A missing directory is found before the program runs, and its status is not lost.
    let missing = dir.join("missing/out.html");
    let out_db = dir.join("m.db");
    refused_before_running(
        &dir,
        &[
            "run",
            "-q",
            "-o",
            out_db.to_str().unwrap(),
            "--html",
            missing.to_str().unwrap(),
        ],
        &dir.0,
        "missing directory",
    );
    assert!(!out_db.exists());
    // `report` refuses a linked destination too; nothing but the link and its victim remain.
    let out = out_in(&dir.0, &["run", "-q", "-o", "r.db", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let link = dir.join("link.db");
    let before = found(&link);
    let out = out_in(&dir.0, &["report", "r.db", "--html", "link.db", "--force"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert_eq!(found(&link), before);
    let leftovers: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn two_runs_started_together_in_one_directory_both_succeed() {
    let dir = TempDir::new("together");
    let script = "import sys; print('READY', flush=True); sys.stdin.readline()";
    let py = python();
    let spawn = || {
        memlens()
            .args(["run", "-q", "--", py.to_str().unwrap(), "-c", script])
            .current_dir(&dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both start within the same millisecond range; each program waits until both run.
    let mut a = spawn();
    let mut b = spawn();
    for c in [&mut a, &mut b] {
        let mut line = String::new();
        BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY");
    }
    for c in [&mut a, &mut b] {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for c in [a, b] {
        let out = wait_within(c, Duration::from_secs(120));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let dbs: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    for db in dbs {
        let j = report_json(&db);
        assert_eq!(j["complete"], true);
        assert_eq!(j["exit_code"], 0);
    }
}

#[test]
fn json_out_keeps_the_report_apart_from_the_programs_stdout() {
    let dir = TempDir::new("json-out");
    let py = python();
    let out = out_in(
        &dir.0,
        &[
            "run",
            "--json-out",
            "r.json",
            "-o",
            "r.db",
            "--",
            py.to_str().unwrap(),
            "-c",
            "import sys; print('hello'); print('{'); sys.exit(5)",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n{\n");
    let j: Value = serde_json::from_slice(&std::fs::read(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(j["exit_code"], 5);
    assert_eq!(j["recording"], "r.db");
    // record writes it too, beside its text summary on stdout.
    let t = Target::sleeper();
    let out = out_in(
        &dir.0,
        &[
            "record",
            &t.pid().to_string(),
            "--duration",
            "50ms",
            "-o",
            "s.db",
            "--json-out",
            "s.json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("peak:"));
    let j: Value = serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
    assert_eq!(j["mode"], "record");
    assert!(j["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| u(&p["pid"]) == u64::from(t.pid())));
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (tests run as root)");
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` until it is full.
fn fill_disk(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    loop {
        match f.write_all(&block).and_then(|()| f.flush()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// Whether a live recording already holds a process with at least `bytes` of VmHWM.
fn recorded(db: &Path, bytes: u64) -> bool {
    let out = memlens()
        .args(["report", "--json"])
        .arg(db)
        .output()
        .unwrap();
    out.status.success()
        && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|j| {
            j["processes"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["vm_hwm"].as_u64() >= Some(bytes)))
        })
}

#[test]
fn a_full_disk_keeps_what_was_recorded_and_the_programs_status() {
    let dir = TempDir::new("full");
    let mnt = Tmpfs::mount(dir.join("mnt"), "8m");
    let db = mnt.0.join("r.db");
    // The program holds 24 MiB, then waits; the test fills the disk, then lets it exit.
    let script = "import sys\nx = b'f' * (24 << 20)\nprint('READY', flush=True)\nsys.stdin.readline()\nsys.exit(3)\n";
    let mut child = memlens()
        .args(["run", "-o"])
        .arg(&db)
        .args(["--", python().to_str().unwrap(), "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    wait_for("the allocation committed", Duration::from_secs(60), || {
        recorded(&db, 24 << 20)
    });
    fill_disk(&mnt.0);
    child.stdin.take().unwrap().write_all(b"exit\n").unwrap();
    let out = wait_within(child, Duration::from_secs(120));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the disk is full"),
        "{}",
        stderr(&out)
    );
    // The disk is still full: the report reads what SQLite can read and says it was cut off.
    let j = report_json(&db);
    assert_eq!(j["complete"], false);
    assert!(u(&j["samples"]) > 0);
    assert!(
        j["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| u(&p["vm_hwm"]) >= 24 << 20),
        "{}",
        j["processes"]
    );
    let text = memlens().arg("report").arg(&db).output().unwrap();
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(String::from_utf8_lossy(&text.stdout).contains("cut off"));

    // `record` stops, prints the report of what it kept, and exits 8.
    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    let t = Target::python(
        &python(),
        "import time; x = b'r' * (16 << 20); print('READY', flush=True); time.sleep(600)",
    );
    let db2 = mnt.0.join("rec.db");
    let rec = memlens()
        .args(["record", &t.pid().to_string(), "-o"])
        .arg(&db2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the target recorded", Duration::from_secs(60), || {
        recorded(&db2, 16 << 20)
    });
    fill_disk(&mnt.0);
    let out = wait_within(rec, Duration::from_secs(120));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the disk is full"),
        "{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cut off"));
}

#[test]
fn run_and_record_end_with_the_program_or_a_signal_whatever_the_interval() {
    let dir = TempDir::new("prompt");
    // The program exits while memlens waits for its next tick, an hour away: memlens does
    // not wait it out.
    let mut c = memlens()
        .args(["run", "-q", "--interval", "1h", "-o", "a.db", "--"])
        .arg(python())
        .args(["-c", "print('READY', flush=True); input()"])
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    c.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let out = wait_within(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report_json(&dir.join("a.db"))["complete"], true);
    // SIGTERM reaches the program at once and memlens ends with it.
    let mut cmd = memlens();
    cmd.args(["run", "-q", "--interval", "1h", "-o", "b.db", "--"])
        .arg(python())
        .args([
            "-c",
            "import time; print('READY', flush=True); time.sleep(3600)",
        ])
        .current_dir(&dir.0);
    let mut t = Target::spawn(cmd);
    kill(t.pid(), "-TERM");
    let (tx, rx) = mpsc::channel();
    let pid = t.pid();
    let waiter = std::thread::spawn(move || {
        let st = t.child.wait().unwrap();
        let _ = tx.send(st.code());
    });
    let code = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            kill(pid, "-KILL");
            panic!("run ignored SIGTERM")
        });
    waiter.join().unwrap();
    assert_eq!(code, Some(143));
    assert_eq!(report_json(&dir.join("b.db"))["exit_signal"], 15);

    // record: Ctrl-C, then the end of the tree, each at once.
    let target = Target::sleeper();
    let spawn_record = |db: &str| {
        let mut c = memlens()
            .args([
                "record",
                &target.pid().to_string(),
                "--interval",
                "1h",
                "-o",
                db,
            ])
            .current_dir(&dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut err = BufReader::new(c.stderr.take().unwrap());
        err.read_line(&mut line).unwrap();
        assert!(line.contains("recording pid"), "{line}");
        (c, err)
    };
    let (c, _err) = spawn_record("c.db");
    kill(c.id(), "-INT");
    let out = wait_within(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report_json(&dir.join("c.db"))["complete"], true);
    let (c, _err) = spawn_record("d.db");
    drop(target);
    let out = wait_within(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn flag_values_out_of_range_are_usage_errors_with_one_message_style() {
    let dir = TempDir::new("flags");
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--interval", "100000h", "--", "true"],
            "out of range: a duration from 1ms to 1h",
        ),
        (
            &["run", "--interval", "0", "--", "true"],
            "out of range: a duration from 1ms to 1h",
        ),
        (
            &["run", "--interval", "ten", "--", "true"],
            "not a duration",
        ),
        (
            &["run", "--ledger-every", "2h", "--", "true"],
            "out of range: a duration from 1ms to 1h",
        ),
        (
            &["run", "--census-every", "0s", "--", "true"],
            "out of range: a duration from 1ms to 1h",
        ),
        (
            &["run", "--max-peak", "99999999999999999999999", "--", "true"],
            "out of range: a size from 1B to 8EiB",
        ),
        (
            &["run", "--max-peak", "16EiB", "--", "true"],
            "out of range: a size from 1B to 8EiB",
        ),
        (
            &["run", "--max-peak", "0", "--", "true"],
            "out of range: a size from 1B to 8EiB",
        ),
        (
            &["run", "--max-peak", "12 parsecs", "--", "true"],
            "not a size",
        ),
        (
            &["run", "--cpu-budget", "0", "--", "true"],
            "out of range: a percentage from 0.01 to 100",
        ),
        (
            &["record", "1", "--duration", "0", "-o", "x.db"],
            "out of range: a duration from 1ms to 30d",
        ),
        (
            &["record", "1", "--duration", "100d", "-o", "x.db"],
            "out of range: a duration from 1ms to 30d",
        ),
        (
            &["census", "1", "--growth", "0"],
            "out of range: a duration from 1ms to 24h",
        ),
        // `--max-memory` once went through a float parser that saturated: 99999999999T was
        // accepted as a cap of 16 EiB (no cap at all).
        (
            &["census", "1", "--max-memory", "99999999999T"],
            "out of range: a size from 1B to 8EiB",
        ),
        (
            &["census", "1", "--max-memory", "2MiB"],
            "too small for a census (at least 4MiB)",
        ),
        (&["census", "1", "--max-memory", "lots"], "not a size"),
    ];
    for (args, msg) in cases {
        let out = out_in(&dir.0, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
    }
    assert!(
        std::fs::read_dir(&dir.0).unwrap().next().is_none(),
        "a usage error wrote a file"
    );
    // The bounds themselves are accepted.
    let out = out_in(
        &dir.0,
        &[
            "run",
            "-q",
            "--max-peak",
            "8EiB",
            "--interval",
            "1h",
            "--cpu-budget",
            "100",
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A kernel thread of this machine, from the kernel's own word (`Kthread: 1`, or no address
/// space and parent kthreadd on kernels without that line).
fn kernel_thread() -> u32 {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter()
        .find(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            s.lines().any(|l| l == "Kthread:\t1")
                || (!s.contains("VmSize:") && s.lines().any(|l| l == "PPid:\t2"))
        })
        .expect("a kernel thread")
}

fn state_of(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

#[test]
fn zombies_kernel_threads_and_traced_targets_get_their_codes() {
    // A zombie: the child has exited (waitid with WNOWAIT returns only then) and is not reaped.
    let t = Target::python(
        &python(),
        "import os, sys\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)\nprint(pid, flush=True)\nprint('READY', flush=True)\nsys.stdin.readline()\n",
    );
    let zombie: u32 = t.lines[0].trim().parse().unwrap();
    assert_eq!(state_of(zombie), 'Z');
    let z = zombie.to_string();
    for args in [
        vec!["snapshot", &z],
        vec!["snapshot", "--tree", &z],
        vec!["stacks", &z],
        vec!["census", &z],
        vec!["record", &z, "-o", "/nonexistent/never.db"],
    ] {
        let out = memlens().args(&args).output().unwrap();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("has exited"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    drop(t);

    let k = kernel_thread().to_string();
    for args in [vec!["snapshot", &k], vec!["stacks", &k], vec!["census", &k]] {
        let out = memlens().args(&args).output().unwrap();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("kernel thread"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // Already traced: the message names the tracer (pid and name from TracerPid).
    let t = Target::python(
        &python(),
        "import time; print('READY', flush=True); time.sleep(600)",
    );
    // The tracer: a Python that seizes the target with ptrace (as gdb, strace or py-spy would)
    // and holds it until the test ends.
    let seize = format!(
        "import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.ptrace(0x4206, {}, None, None) != 0:\n    sys.exit('PTRACE_SEIZE failed: %d' % ctypes.get_errno())\nprint('READY', flush=True)\nsys.stdin.readline()\n",
        t.pid()
    );
    let tracer = Target::python(&python(), &seize);
    let tracer_pid = tracer.pid();
    // Ground truth from the kernel: the target's TracerPid is the tracer.
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    assert!(
        status.contains(&format!("TracerPid:\t{tracer_pid}\n")),
        "{status}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{tracer_pid}/comm")).unwrap();
    for cmd in ["stacks", "census"] {
        let out = memlens()
            .args([cmd, &t.pid().to_string()])
            .output()
            .unwrap();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(4), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "already traced by pid {tracer_pid} ({})",
                comm.trim()
            )),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    drop(tracer);
}

#[test]
fn unprivileged_ps_counts_the_processes_it_cannot_read() {
    let t = Target::python(
        &python(),
        "import time; print('READY', flush=True); time.sleep(600)",
    );
    // Root sees the target (ground truth for what nobody cannot see).
    let out = memlens().args(["ps", "--json"]).output().unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["trees"]
        .as_array()
        .unwrap()
        .iter()
        .any(|tr| tr["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| u(&p["pid"]) == u64::from(t.pid()))));
    let as_nobody = |args: &[&str]| {
        memlens()
            .args(args)
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .output()
            .unwrap()
    };
    let out = as_nobody(&["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(u(&j["unreadable"]) >= 1, "{j}");
    let out = as_nobody(&["ps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("could not be read"), "{text}");
    assert!(
        !text.contains("memlens ps --all lists every process"),
        "{text}"
    );
}

#[test]
fn a_closed_or_broken_stderr_keeps_the_programs_status() {
    let dir = TempDir::new("stderr");
    let m = env!("CARGO_BIN_EXE_memlens");
    // fd 2 closed for real.
    let st = Command::new("sh")
        .args(["-c", "exec \"$0\" run -o \"$1\" -- sh -c 'exit 3' 2>&-", m])
        .arg(dir.join("a.db"))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    // A pipe whose reader has gone: every write to stderr fails with EPIPE.
    let broken = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        memlens()
            .args(args)
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(writer)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(
        broken(&["run", "-o", "b.db", "--", "sh", "-c", "exit 3"]),
        Some(3)
    );
    assert_eq!(broken(&["run", "--", "no-such-program-memlens"]), Some(127));
    assert_eq!(broken(&["snapshot", "4194300"]), Some(3));
    assert_eq!(broken(&["report", "missing.db"]), Some(6));
    assert_eq!(broken(&["run", "--interval", "0", "--", "true"]), Some(2));
    assert_eq!(report_json(&dir.join("b.db"))["exit_code"], 3);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = TempDir::new("stdout");
    let out = out_in(&dir.0, &["run", "-q", "-o", "r.db", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = Target::sleeper();
    let broken = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = memlens()
            .args(args)
            .current_dir(&dir.0)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        no_panic(&out);
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
        out.status.code()
    };
    let pid = t.pid().to_string();
    for args in [
        vec!["ps", "--all"],
        vec!["ps", "--json"],
        vec!["snapshot", &pid],
        vec!["snapshot", "--json", &pid],
        vec!["report", "r.db"],
        vec!["report", "--json", "r.db"],
    ] {
        assert_eq!(broken(&args), Some(0), "{args:?}");
    }
    // run keeps the program's status.
    assert_eq!(
        broken(&["run", "--json", "-o", "j.db", "--", "sh", "-c", "exit 4"]),
        Some(4)
    );
    // fd 1 closed for real.
    let st = Command::new("sh")
        .args([
            "-c",
            "exec \"$0\" report \"$1\" >&-",
            env!("CARGO_BIN_EXE_memlens"),
        ])
        .arg(dir.join("r.db"))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn paths_and_commands_from_the_user_are_escaped_on_stderr() {
    let dir = TempDir::new("escape");
    let hostile = dir.join("a\x1b[31mred\x07/x.db");
    let out = out_in(
        &dir.0,
        &["run", "-o", hostile.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let program = "no\x1b]0;pwned\x07such-program";
    let out2 = out_in(&dir.0, &["run", "-o", "p.db", "--", program]);
    assert_eq!(out2.status.code(), Some(127), "{}", stderr(&out2));
    let out3 = out_in(&dir.0, &["report", "missing\x1b[2J.db"]);
    assert_eq!(out3.status.code(), Some(6));
    // clap's usage errors quote the value too.
    let out4 = out_in(&dir.0, &["run", "--interval", "\x1b[2J", "--", "true"]);
    assert_eq!(out4.status.code(), Some(2));
    for o in [&out, &out2, &out3, &out4] {
        assert!(
            !o.stderr.iter().any(|&b| b == 0x1b || b == 0x07),
            "raw control bytes: {:?}",
            stderr(o)
        );
        assert!(stderr(o).contains("\\u{1b}"), "{}", stderr(o));
    }
}

#[test]
fn an_unwritable_directory_is_found_before_the_program_runs() {
    let dir = TempDir::new("unwritable");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let marker = dir.join("ran");
    let db = locked.join("r.db");
    let html = locked.join("r.html");
    let ok_db = dir.join("ok.db");
    // As an unprivileged user (root writes anywhere): -o, then --html, in a read-only directory.
    for args in [
        vec!["run", "-q", "-o", db.to_str().unwrap()],
        vec![
            "run",
            "-q",
            "-o",
            ok_db.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    ] {
        let out = memlens()
            .args(&args)
            .args(["--", "touch", marker.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .current_dir(&dir.0)
            .output()
            .unwrap();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(8), "{args:?}: {}", stderr(&out));
        assert!(!marker.exists(), "{args:?}: the program ran");
        assert!(
            stderr(&out).contains("ermission denied"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!ok_db.exists());
    assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);
}

#[test]
fn the_held_program_gets_the_signal_state_it_would_get_from_a_shell() {
    // memlens forks the program itself and holds it before exec: the mask and the ignored
    // signals it sees must be those of a plain run (the test's own, blocked bits included).
    // grep reads its own status (a shell's own mask changes while it forks and waits).
    let grep = ["grep", "-E", "^(SigBlk|SigIgn)", "/proc/self/status"];
    let plain = Command::new(grep[0]).args(&grep[1..]).output().unwrap();
    let dir = TempDir::new("sigstate");
    let mut args = vec!["run", "-q", "-o", "s.db", "--"];
    args.extend(grep);
    let out = out_in(&dir.0, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );
    // Signals ignored when memlens starts (nohup, a background job of a script) stay ignored
    // for the program, as without memlens: a shell's `trap ""` ignores them, exec keeps that.
    let ignoring = |cmd: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("trap '' INT QUIT HUP; exec {cmd}")])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let grep_cmd = "grep -E '^(SigBlk|SigIgn)' /proc/self/status";
    let plain = ignoring(grep_cmd);
    assert!(!plain.contains("SigIgn:\t0000000000000000"), "{plain}");
    let via = ignoring(&format!(
        "{} run -q -o s2.db -- {grep_cmd}",
        env!("CARGO_BIN_EXE_memlens")
    ));
    assert_eq!(via, plain, "signals ignored at start");
}
