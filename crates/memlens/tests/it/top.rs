//! `memlens top` in a real terminal: tmux (its own socket in a temp dir) runs it at 200x50,
//! the tests read the screen with `capture-pane` (polled against a deadline, never slept on),
//! send keys, and check the figures against the kernel's `smaps_rollup`, the order of rows
//! after each sort key, the filter, the detail view, escaping of a hostile comm and cmdline,
//! `NO_COLOR`, and that the terminal is restored (alternate screen left, canonical mode back,
//! cursor shown) after `q`, SIGTERM and a panic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(90);

/// A tmux server of its own running one command in a 200x50 pane; killed on drop.
struct Tmux {
    dir: TempDir,
}

impl Tmux {
    /// Runs `memlens ARGS` with `env` in a pane; after it exits, the pane shows
    /// `MEMLENS-EXIT:<code>` and `STTY:<icanon or -icanon>`, and stays open.
    fn start(env: &str, args: &str) -> Tmux {
        let dir = TempDir::new("top");
        let bin = env!("CARGO_BIN_EXE_memlens");
        let cmd = format!(
            "env -u NO_COLOR {env} {bin} {args}; echo MEMLENS-EXIT:$?; \
             echo STTY:$(stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'); exec sleep 600"
        );
        let t = Tmux { dir };
        t.tmux(&["new-session", "-d", "-x", "200", "-y", "50", &cmd]);
        t
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("sock")
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .args(["-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn screen_with_escapes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e"])
    }

    fn display(&self, what: &str) -> String {
        self.tmux(&["display", "-p", what]).trim().to_string()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn text(&self, s: &str) {
        self.tmux(&["send-keys", "-l", s]);
    }

    /// Polls the screen until `ok` holds; panics with the last screen at the deadline.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The memlens process: the pane's shell's child (or the shell itself after `exec`).
    fn memlens_pid(&self) -> u32 {
        let shell: u32 = self.display("#{pane_pid}").parse().expect("pane pid");
        let end = Instant::now() + DEADLINE;
        loop {
            let exe = std::fs::read_link(format!("/proc/{shell}/exe")).unwrap_or_default();
            if exe.file_name().is_some_and(|n| n == "memlens") {
                return shell;
            }
            let kids = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
                .unwrap_or_default();
            for k in kids.split_whitespace() {
                let exe = std::fs::read_link(format!("/proc/{k}/exe")).unwrap_or_default();
                if exe.file_name().is_some_and(|n| n == "memlens") {
                    return k.parse().expect("pid");
                }
            }
            assert!(Instant::now() < end, "memlens not found under the pane");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the view, then filters it to `text` (so that other Python processes on a busy
    /// host cannot push the family off the screen).
    fn filter(&self, text: &str) {
        self.wait("the view", |s| s.contains("q quit"));
        self.keys(&["/"]);
        self.text(text);
        self.keys(&["Enter"]);
    }

    /// After memlens exited: its exit code, and the terminal restored.
    fn assert_exited_restored(&self, code: i32) {
        let marker = format!("MEMLENS-EXIT:{code}");
        let s = self.wait(&marker, |s| s.contains(&marker) && s.contains("STTY:"));
        assert_eq!(
            self.display("#{alternate_on}"),
            "0",
            "alternate screen left"
        );
        assert_eq!(self.display("#{cursor_flag}"), "1", "cursor shown again");
        assert!(
            s.lines().any(|l| l.trim() == "STTY:icanon"),
            "raw mode undone (canonical mode back):\n{s}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// A parent (comm `mlt<tag>` + backspace + `p`, an ESC sequence in its cmdline) with two
/// forked children `mlt<tag>a` (40 MB of objects) and `mlt<tag>b` (80 MB), READY once the
/// children said so over a pipe.
fn family(python: &Path, tag: u32) -> (Target, u32, u32, u32) {
    let body = r#"
import os, sys, time
def name(n):
    with open('/proc/self/comm', 'w') as f:
        f.write(n)
keep = [bytes(1000) for _ in range(20000)]
r, w = os.pipe()
pids = []
for suffix, n in (('a', 40000), ('b', 80000)):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        name('mltTAG' + suffix)
        mine = [bytes(1000) for _ in range(n)]
        os.write(w, b'x')
        while True:
            time.sleep(3600)
    pids.append(pid)
os.close(w)
got = b''
while len(got) < 2:
    got += os.read(r, 2)
name('mltTAG\x08p')
print('WORKERS', *pids)
print('READY', flush=True)
sys.stdin.read()
"#;
    let script = format!(
        "#\x1b[31mHOSTILE\x1b[0m{}",
        body.replace("TAG", &tag.to_string())
    );
    let t = Target::python(python, &script);
    let line = t
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("WORKERS "))
        .expect("WORKERS line")
        .to_string();
    let kids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    let p = t.pid();
    (t, p, kids[0], kids[1])
}

/// The cells of `pid`'s row (the tree mark dropped), if on screen.
fn row(screen: &str, pid: u32) -> Option<Vec<String>> {
    let id = pid.to_string();
    screen.lines().find_map(|l| {
        let cells: Vec<String> = l
            .split_whitespace()
            .filter(|c| *c != "└")
            .map(str::to_string)
            .collect();
        (cells.first() == Some(&id)).then_some(cells)
    })
}

/// The line number of `pid`'s row.
fn line_of(screen: &str, pid: u32) -> Option<usize> {
    let id = pid.to_string();
    screen.lines().position(|l| {
        l.split_whitespace()
            .find(|c| *c != "└")
            .is_some_and(|c| c == id)
    })
}

/// Rows with the ledger columns read (PY-HEAP is a number, not `...`).
fn with_ledger(screen: &str, pids: &[u32]) -> bool {
    pids.iter()
        .all(|&p| row(screen, p).is_some_and(|c| c.len() > 6 && c[5].parse::<u64>().is_ok()))
}

fn before(screen: &str, a: u32, b: u32) -> bool {
    matches!((line_of(screen, a), line_of(screen, b)), (Some(x), Some(y)) if x < y)
}

#[test]
fn shows_sorts_filters_selects_and_quits_restored() {
    let tag = std::process::id() % 100_000;
    let (_t, parent, a, b) = family(&python(), tag);
    let tmux = Tmux::start("", "--bytes top --interval 300ms");
    tmux.filter(&format!("mlt{tag}"));
    tmux.wait("the family's rows with their ledgers", |s| {
        with_ledger(s, &[parent, a, b])
    });
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "on the alternate screen"
    );
    // PSS on screen against the kernel's. Shared pages (libc, libpython) move a PSS whenever
    // another process on the host maps or unmaps them, so the screen is polled until a
    // refresh and the kernel's reading just after the capture agree within 2% for all three.
    let within = |s: &str| {
        [parent, a, b].iter().all(|&pid| {
            let shown: Option<u64> = row(s, pid).and_then(|c| c[2].parse().ok());
            let kernel = rollup_field(pid, "Pss");
            shown.is_some_and(|v| (v as f64 - kernel as f64).abs() <= kernel as f64 * 0.02)
        })
    };
    let s = tmux.wait("PSS on screen within 2% of smaps_rollup's", within);
    // The hostile comm's backspace is shown escaped, not executed.
    let hostile = format!("mlt{tag}\\u{{8}}p");
    assert_eq!(row(&s, parent).expect("row")[1], hostile, "{s}");
    assert!(
        line_of(&s, parent) < line_of(&s, b),
        "the root above its children"
    );
    // Sorted by PSS, b (80 MB) above a (40 MB); by name a above b; and back.
    assert!(before(&s, b, a), "PSS order:\n{s}");
    tmux.keys(&["n"]);
    tmux.wait("name order", |s| {
        s.contains("sort: name") && before(s, a, b)
    });
    tmux.keys(&["p"]);
    tmux.wait("PSS order", |s| s.contains("sort: PSS") && before(s, b, a));
    tmux.keys(&["u"]);
    tmux.wait("USS order", |s| s.contains("sort: USS") && before(s, b, a));
    // Filter: only b.
    tmux.keys(&["/"]);
    tmux.text("b");
    tmux.wait("the filter", |s| {
        row(s, b).is_some() && row(s, a).is_none() && row(s, parent).is_none()
    });
    // Enter keeps the filter, Enter again opens b's ledger.
    tmux.keys(&["Enter"]);
    tmux.keys(&["Enter"]);
    let d = tmux.wait("b's detail view", |s| {
        s.contains(&format!("PID {b} "))
            && s.contains("ledger by category")
            && s.contains("native-heap")
    });
    assert!(
        d.contains("PAUSES the process"),
        "the census says it pauses:\n{d}"
    );
    // Back, widen the filter to the family, select the parent (one up from b), open it.
    tmux.keys(&["Escape"]);
    tmux.keys(&["/", "BSpace", "Enter"]);
    tmux.wait("the family filtered", |s| {
        row(s, b).is_some() && row(s, a).is_some() && row(s, parent).is_some()
    });
    tmux.keys(&["k", "Enter"]);
    let d = tmux.wait("the parent's detail view", |s| {
        s.contains(&format!("PID {parent} ")) && s.contains("python-heap")
    });
    assert!(
        d.contains("\\u{1b}[31mHOSTILE"),
        "the cmdline's ESC is escaped:\n{d}"
    );
    // Colours are on without NO_COLOR (so the NO_COLOR test below can fail).
    assert!(
        has_colour(&tmux.screen_with_escapes()),
        "colours without NO_COLOR"
    );
    tmux.keys(&["q"]);
    tmux.assert_exited_restored(0);
}

/// Whether an SGR sequence of the capture sets a colour (30-38, 40-48, 90-97, 100-107).
fn has_colour(captured: &str) -> bool {
    let mut rest = captured;
    while let Some(i) = rest.find("\x1b[") {
        rest = &rest[i + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';' || c == ':'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with('m') {
            let colour = rest[..end].split([';', ':']).any(|p| {
                matches!(
                    p.parse::<u32>(),
                    Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
                )
            });
            if colour {
                return true;
            }
        }
        rest = &rest[end..];
    }
    false
}

#[test]
fn no_color_draws_without_colours() {
    let tag = std::process::id() % 100_000 + 1;
    let (_t, parent, a, b) = family(&python(), tag);
    let tmux = Tmux::start("NO_COLOR=1", "--bytes top --interval 300ms");
    tmux.filter(&format!("mlt{tag}"));
    tmux.wait("the family's rows", |s| with_ledger(s, &[parent, a, b]));
    let captured = tmux.screen_with_escapes();
    assert!(
        !has_colour(&captured),
        "no colour escapes with NO_COLOR:\n{captured:?}"
    );
    tmux.keys(&["Enter"]);
    tmux.wait("a detail view", |s| s.contains("ledger by category"));
    let captured = tmux.screen_with_escapes();
    assert!(
        !has_colour(&captured),
        "no colour escapes with NO_COLOR:\n{captured:?}"
    );
    // Esc leaves the detail view, Esc again quits.
    tmux.keys(&["Escape"]);
    tmux.wait("the list", |s| {
        s.contains("q quit") && !s.contains("ledger by category")
    });
    tmux.keys(&["Escape"]);
    tmux.assert_exited_restored(0);
}

#[test]
fn sigterm_and_sighup_restore_the_terminal() {
    for (sig, code) in [("-TERM", 143), ("-HUP", 129), ("-INT", 130)] {
        let tmux = Tmux::start("", "top --interval 200ms");
        tmux.wait("the view", |s| {
            s.contains("memlens top") && s.contains("q quit")
        });
        assert_eq!(tmux.display("#{alternate_on}"), "1");
        kill(tmux.memlens_pid(), sig);
        tmux.assert_exited_restored(code);
    }
}

#[test]
fn a_panic_restores_the_terminal() {
    let tag = std::process::id() % 100_000 + 2;
    let (_t, parent, _, _) = family(&python(), tag);
    let tmux = Tmux::start("MEMLENS_TOP_TEST_PANIC=1", "top --interval 200ms");
    let s = tmux.wait("the panic message", |s| s.contains("MEMLENS-EXIT:"));
    assert!(s.contains("MEMLENS-EXIT:101"), "a panic exits 101:\n{s}");
    assert!(
        s.contains("MEMLENS_TOP_TEST_PANIC"),
        "its message is shown:\n{s}"
    );
    tmux.assert_exited_restored(101);
    let _ = parent;
}

#[test]
fn not_a_terminal_is_a_usage_error() {
    let out = memlens()
        .args(["top"])
        .stdin(Stdio::null())
        .output()
        .expect("memlens runs");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs a terminal"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
}
