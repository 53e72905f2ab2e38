//! `memlens record PID --trace`: the allocation tracer attached to a running CPython 3.14+
//! through PEP 768 (`sys.remote_exec`'s interface, [`memlens_cpython::remote_exec`]), the one
//! opt-in injection memlens does. Nothing is written into the target without `--trace`.
//!
//! memlens creates a private directory (as `run --trace` does) and, in it, with `O_EXCL` (never
//! an existing file, never through a link): a copy of the tracer library, two small Python
//! scripts (attach and detach), the empty trace file and two status files. It then asks the
//! interpreter to run the attach script at its next safe point: the script loads the library
//! with `ctypes.PyDLL` (the GIL stays held) and calls `memlens_attach(trace, sample_bytes,
//! period_ms)`, which wraps CPython's MEM and OBJ allocator domains and starts the trace
//! writer. At the end of the recording (duration, Ctrl-C) a second request runs the detach
//! script: `memlens_detach()` puts the replaced allocators back (or leaves the wrapper, inert,
//! when another allocator was installed over it since), writes the `end` line and closes the
//! file; the trace is then imported as `run --trace` imports it.
//!
//! Loaded with `dlopen`, the tracer interposes no malloc or mmap: only the CPython allocator
//! domains are traced (pymalloc blocks, and `PyMem`/`PyObject` requests over 512 bytes, as
//! `malloc`); C extensions' and libraries' own malloc and mmap are not, nor are allocations
//! made before the attach (their frees are not counted either). The report says so (an event).
//! The scripts import `ctypes` and `fcntl` into the target if it had not.
//!
//! Refused, exit 5 (unsupported), before anything is written: CPython before 3.14, a target
//! with remote debugging disabled (`PYTHON_DISABLE_REMOTE_DEBUG`, `-X disable-remote-debug`,
//! `--without-remote-debug`), one already traced (its tracer library mapped: `run --trace`),
//! one in another mount namespace or chroot (it would not find the files at memlens's paths),
//! one with another debugger's request pending; and, after the request, a target whose main
//! thread does not run Python code within [`attach_timeout`] (blocked in a system call or in
//! C): the request is withdrawn and the script, if the interpreter takes it later, does
//! nothing (it and memlens settle who goes first under a `flock` of the status file).
//!
//! Ownership: the directory is memlens's (mode 0700). When the target runs as another user
//! (memlens as root), the trace and status files are given to the target's user (mode 0600:
//! it writes them, nobody else reads them) and the directory gets mode 0711 so the target can
//! reach the files by name (nobody but memlens can list or change the directory); the library
//! and the scripts are 0644 (nothing secret in them).
//!
//! When the detach does not run in time (the target's main thread blocked), the request stays
//! pending, so the target puts its allocators back itself when it next runs Python code; the
//! directory is then kept (the target needs the script and writes the trace there) and named.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memlens_cpython::remote_exec::{RemoteExec, RemoteExecError};
use memlens_recording::trace_store::{ImportReport, TraceDir, TraceFiles};

use crate::exit::{CliError, CliResult, Code};
use crate::messages;

/// What the report and the docs say of an attached trace.
pub const NOTE: &str = "the tracer was attached to the running program (PEP 768): only CPython's allocator domains are traced (pymalloc blocks and PyMem/PyObject requests over 512 bytes), from the attach to the detach; C extensions' and libraries' own malloc and mmap are not, and blocks allocated before the attach are not known";

/// The help of `record --trace` (the options are `run`'s, [`super::run_trace::TraceArgs`]).
pub const TRACE_HELP: &str = "Attach memlens's allocation tracer to the running program (CPython 3.14+, through PEP 768's remote-exec interface: the one injection memlens makes, only with this flag) and attribute CPython's allocations to Python lines until the recording ends: `sampled` (the default: by bytes, every --sample-bytes on average) or `all` (every allocation). Only CPython's allocator domains are traced, not C extensions' own malloc or mmap. Refused (exit 5) on older Pythons and where the target disables remote debugging";

/// How long the target has to take a request: `MEMLENS_ATTACH_TIMEOUT_MS` (for tests), else
/// 5 s.
pub fn attach_timeout() -> Duration {
    std::env::var("MEMLENS_ATTACH_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// A file memlens created, to delete only while it is still that file.
#[derive(Debug)]
struct Made {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// The tracer attached to a running program.
#[derive(Debug)]
pub struct Attached {
    dir: TraceDir,
    rx: RemoteExec,
    made: Vec<Made>,
    detach_script: PathBuf,
    detach_status: PathBuf,
    /// The detach request is pending: the directory must stay.
    keep: bool,
}

impl Attached {
    /// The trace files, for the import.
    pub fn files(&self) -> TraceFiles {
        self.dir.files().clone()
    }
}

fn failed(pid: u32, what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(Code::Failure, format!("--trace: pid {pid}: {what}: {e}"))
}

/// Creates `path` (never an existing file, never through a link) with `bytes` and `mode`.
fn create_new(made: &mut Vec<Made>, path: &Path, bytes: &[u8], mode: u32) -> CliResult<File> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            CliError::new(
                Code::Output,
                format!("--trace: cannot create {}: {e}", path.display()),
            )
        })?;
    let m = f
        .metadata()
        .map_err(|e| CliError::new(Code::Output, format!("--trace: {}: {e}", path.display())))?;
    made.push(Made {
        path: path.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
    });
    // A umask may have taken bits: exactly `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .map_err(|e| CliError::new(Code::Output, format!("--trace: {}: {e}", path.display())))?;
    Ok(f)
}

/// Writes the tracer library into `dir` and returns its path: a copy of `$MEMLENS_PRELOAD`
/// when it is set (missing: exit 5), else the library carried in the memlens binary.
fn install_library(made: &mut Vec<Made>, dir: &Path) -> CliResult<PathBuf> {
    let bytes = match super::run_trace::user_library() {
        None => std::borrow::Cow::Borrowed(super::preload_lib::EMBEDDED),
        Some(Err(p)) => {
            return Err(CliError::new(
                Code::Unsupported,
                format!(
                    "--trace: MEMLENS_PRELOAD names {}, which is not a file",
                    p.display()
                ),
            )
            .with_hint("unset MEMLENS_PRELOAD to use the tracer carried in memlens"))
        }
        Some(Ok(lib)) => std::borrow::Cow::Owned(std::fs::read(&lib).map_err(|e| {
            CliError::new(
                Code::Unsupported,
                format!("--trace: cannot read {}: {e}", lib.display()),
            )
        })?),
    };
    let to = dir.join(super::preload_lib::LIBRARY);
    create_new(made, &to, &bytes, 0o644)?;
    Ok(to)
}

/// A Python bytes literal of `b`, every byte escaped (paths are not trusted to be text).
fn py_bytes(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for x in b {
        s.push_str(&format!("\\x{x:02x}"));
    }
    s.push('\'');
    s
}

/// The script the interpreter runs: takes the status file's lock; if memlens withdrew the
/// request (the file is not empty) it does nothing, else it says `claimed`, calls `call` and
/// writes `done N` (or `error ...`). Everything is caught: nothing is printed in the target.
fn script(lib: &Path, status: &Path, call: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        r#"# memlens record --trace (PEP 768); memlens deletes this file.
def _memlens(lib, status):
    import os
    try:
        fd = os.open(status, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except BaseException:
        return
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size:
            return
        os.write(fd, b"claimed\n")
        import ctypes
        dll = ctypes.PyDLL(os.fsdecode(lib))
        {call}
        os.write(fd, b"done %d\n" % r)
    except BaseException as e:
        try:
            os.write(fd, b"error " + repr(e).encode("utf-8", "replace")[:300].replace(b"\n", b" ") + b"\n")
        except BaseException:
            pass
    finally:
        os.close(fd)
_memlens({}, {})
"#,
        py_bytes(lib.as_os_str().as_bytes()),
        py_bytes(status.as_os_str().as_bytes())
    )
}

/// Whether `pid` has memlens's tracer mapped already (`run --trace`).
fn already_traced(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/maps"))
        .map(|m| {
            m.split(|b| *b == b'\n')
                .any(|l| l.ends_with(super::preload_lib::LIBRARY.as_bytes()))
        })
        .unwrap_or(false)
}

/// The most memlens reads of a status file (the target writes it: a few short lines).
const STATUS_MAX: u64 = 4096;

/// Why `pid` does not see the files at the paths memlens sees them (another mount namespace:
/// a container; another root directory: chroot), if it does not. Unreadable: `None` (the
/// write of the request is then refused by the kernel anyway).
fn other_filesystem_view(pid: u32) -> Option<&'static str> {
    let id = |p: String| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let (ns, my_ns) = (
        id(format!("/proc/{pid}/ns/mnt")),
        id("/proc/self/ns/mnt".into()),
    );
    if ns.is_some() && my_ns.is_some() && ns != my_ns {
        return Some("runs in another mount namespace (a container?)");
    }
    let (root, my_root) = (
        id(format!("/proc/{pid}/root")),
        id("/proc/self/root".into()),
    );
    if root.is_some() && my_root.is_some() && root != my_root {
        return Some("has another root directory (chroot)");
    }
    None
}

/// The status file's content (its first [`STATUS_MAX`] bytes), read under its lock (the
/// script holds it while it runs).
fn status(path: &Path) -> std::io::Result<String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)?;
    let mut b = Vec::new();
    f.take(STATUS_MAX).read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Whether `pid` has exited (gone, or a zombie).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(") ")
            .and_then(|i| s[i + 2..].chars().next())
            .is_none_or(|c| c == 'Z' || c == 'X'),
    }
}

/// The status line of a process that exited while memlens waited.
const GONE: &str = "gone";

/// Waits for the script's `done N` (or `error ...`) until `deadline`; `None` at the deadline,
/// [`GONE`] when `pid` exits first.
fn wait_done(path: &Path, pid: u32, deadline: Instant) -> std::io::Result<Option<String>> {
    loop {
        let s = status(path)?;
        if let Some(l) = s
            .lines()
            .find(|l| l.starts_with("done ") || l.starts_with("error "))
        {
            return Ok(Some(l.to_string()));
        }
        if gone(pid) {
            return Ok(Some(GONE.to_string()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What [`withdraw`] found.
enum Withdrawn {
    /// The script claimed the request first: it runs.
    No,
    /// Withdrawn before the interpreter took it.
    Pending,
    /// The interpreter had taken the request but the script never claimed it (an audit hook
    /// refused `cpython.remote_debugger_script`, the script could not be opened or failed
    /// before its claim); withdrawn all the same, so it does nothing if it runs late.
    Taken,
}

/// Withdraws a request not yet taken: writes `withdrawn` into the status file under its lock
/// if the script has not claimed it, and clears the pending flag (the script, if the
/// interpreter runs it later, does nothing).
fn withdraw(rx: &RemoteExec, path: &Path) -> std::io::Result<Withdrawn> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
    if f.metadata()?.len() != 0 {
        return Ok(Withdrawn::No);
    }
    f.write_all(b"withdrawn\n")?;
    drop(f);
    match rx.withdraw() {
        Ok(true) => Ok(Withdrawn::Pending),
        Ok(false) => Ok(Withdrawn::Taken),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Checks the target, creates the directory and its files, and attaches the tracer (`None`
/// without `--trace`). Refusals are exit 5; nothing is left behind on any error.
pub fn attach(pid: u32, args: &super::run_trace::TraceArgs) -> CliResult<Option<Attached>> {
    let Some(mode) = args.trace.as_deref() else {
        return Ok(None);
    };
    let sample = super::run_trace::sample_interval(mode, args.sample_bytes)?;
    if already_traced(pid) {
        return Err(CliError::new(
            Code::Unsupported,
            format!("--trace: process {pid} already has memlens's tracer loaded (started with `memlens run --trace`, or a detach still pending); not attaching a second one"),
        ));
    }
    if let Some(why) = other_filesystem_view(pid) {
        return Err(CliError::new(
            Code::Unsupported,
            format!("--trace: process {pid} {why}: the script and the library memlens writes would not be at the same path for it; not attaching"),
        ));
    }
    let rx = RemoteExec::locate(pid).map_err(|e| match e {
        RemoteExecError::Refused(why) => {
            CliError::new(Code::Unsupported, format!("--trace: {why}"))
        }
        RemoteExecError::Failed(e) => {
            let code = if e.is_process_gone() {
                Code::NoProcess
            } else if e.is_permission_denied() {
                Code::PermissionDenied
            } else {
                Code::Failure
            };
            CliError::new(code, format!("--trace: pid {pid}: {e}"))
        }
    })?;
    let dir = super::run_trace::private_dir()?;
    let mut a = Attached {
        rx,
        made: Vec::new(),
        detach_script: PathBuf::new(),
        detach_status: PathBuf::new(),
        keep: false,
        dir,
    };
    match set_up_and_attach(&mut a, pid, sample) {
        Ok(()) => {
            messages::note(&format!(
                "--trace: tracer attached to pid {pid} (CPython {}): only CPython's allocator domains are traced",
                a.rx.version
            ));
            Ok(Some(a))
        }
        Err(e) => {
            clean_up(a);
            Err(e)
        }
    }
}

fn set_up_and_attach(a: &mut Attached, pid: u32, sample: u64) -> CliResult<()> {
    let d = a.dir.files().dir.clone();
    let target = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(|e| failed(pid, "cannot read its owner", e))?;
    let me = std::fs::metadata("/proc/self").map_err(|e| failed(pid, "/proc/self", e))?;
    let other_user = target.uid() != me.uid();
    let lib = install_library(&mut a.made, &d)?;
    let out = a.dir.files().out();
    let attach_status = d.join("attach.status");
    let detach_status = d.join("detach.status");
    for (p, bytes) in [
        (&out, &[][..]),
        (&attach_status, &[]),
        (&detach_status, &[]),
    ] {
        let f = create_new(&mut a.made, p, bytes, 0o600)?;
        if other_user {
            std::os::unix::fs::fchown(&f, Some(target.uid()), Some(target.gid()))
                .map_err(|e| failed(pid, "cannot give the trace files to the target's user", e))?;
        }
    }
    if other_user {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| failed(pid, "cannot open the private directory to the target", e))?;
    }
    let call = format!(
        "f = dll.memlens_attach; f.argtypes = (ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64); f.restype = ctypes.c_int; r = f({}, {sample}, 0)",
        {
            use std::os::unix::ffi::OsStrExt;
            py_bytes(out.as_os_str().as_bytes())
        }
    );
    let attach_script = d.join("attach.py");
    create_new(
        &mut a.made,
        &attach_script,
        script(&lib, &attach_status, &call).as_bytes(),
        0o644,
    )?;
    a.detach_script = d.join("detach.py");
    a.detach_status = detach_status.clone();
    create_new(
        &mut a.made,
        &a.detach_script,
        script(
            &lib,
            &detach_status,
            "f = dll.memlens_detach; f.restype = ctypes.c_int; r = f()",
        )
        .as_bytes(),
        0o644,
    )?;
    let timeout = attach_timeout();
    request(&a.rx, &attach_script)?;
    let deadline = Instant::now() + timeout;
    let done = match wait_done(&attach_status, pid, deadline)
        .map_err(|e| failed(pid, "attach.status", e))?
    {
        Some(l) => l,
        None => {
            let secs = timeout.as_secs_f64();
            match withdraw(&a.rx, &attach_status).map_err(|e| failed(pid, "attach.status", e))? {
                Withdrawn::Pending => return Err(CliError::new(
                    Code::Unsupported,
                    format!(
                        "--trace: process {pid} did not reach a safe point within {secs:.1} s (its main thread runs no Python code: blocked in a system call or in C); the request was withdrawn and nothing was loaded"
                    ),
                )
                .with_hint("attach while the program runs Python code, or set MEMLENS_ATTACH_TIMEOUT_MS, or start it with `memlens run --trace`")),
                Withdrawn::Taken => return Err(CliError::new(
                    Code::Unsupported,
                    format!(
                        "--trace: process {pid} took the request but memlens's script did not run within {secs:.1} s (an audit hook refusing cpython.remote_debugger_script, or an open_code hook?); nothing was loaded"
                    ),
                )),
                // The script claimed it just before: it runs; give it as long again.
                Withdrawn::No => wait_done(&attach_status, pid, Instant::now() + timeout)
                    .map_err(|e| failed(pid, "attach.status", e))?
                    .ok_or_else(|| failed(pid, "the attach script", "did not finish"))?,
            }
        }
    };
    match done.as_str() {
        "done 0" => Ok(()),
        other => {
            // Whatever happened, the detach puts back what may have been installed.
            let _ = detach(a, true);
            let e = CliError::new(
                Code::Failure,
                format!("--trace: the tracer could not start in process {pid}: {other}"),
            );
            Err(if other.contains("OSError") {
                e.with_hint("the library is loaded from TMPDIR: a directory on a noexec mount cannot hold it; set TMPDIR to another")
            } else {
                e
            })
        }
    }
}

fn request(rx: &RemoteExec, script: &Path) -> CliResult<()> {
    use std::os::unix::ffi::OsStrExt;
    rx.request(script.as_os_str().as_bytes())
        .map_err(|e| match e {
            RemoteExecError::Refused(why) => {
                CliError::new(Code::Unsupported, format!("--trace: {why}"))
            }
            RemoteExecError::Failed(e) if e.is_process_gone() => {
                CliError::new(Code::NoProcess, format!("--trace: pid {}: {e}", rx.pid()))
            }
            RemoteExecError::Failed(e) => failed(rx.pid(), "cannot write the request", e),
        })
}

/// At the end of the recording: asks the target to detach the tracer and waits for it. A
/// target that has exited wrote its `end` line at exit. When the detach does not run in time,
/// the request stays pending (the target detaches when it next runs Python code) and the
/// directory is kept. Returns whether it detached.
pub fn detach(a: &mut Attached, running: bool) -> bool {
    if !running || gone(a.rx.pid()) {
        return true; // its `end` line was written at exit
    }
    if let Err(e) = request(&a.rx, &a.detach_script) {
        if e.code == Code::NoProcess || gone(a.rx.pid()) {
            // Exiting (its memory is gone): it wrote its `end` line in exit.
            return true;
        }
        messages::error(&format!(
            "{}; the tracer stays attached to pid {} (tracing until it exits)",
            e.message,
            a.rx.pid()
        ));
        a.keep = true;
        return false;
    }
    let timeout = attach_timeout();
    match wait_done(&a.detach_status, a.rx.pid(), Instant::now() + timeout) {
        // done 1: the attach had failed before installing anything: nothing to put back.
        Ok(Some(l)) if l == "done 0" || l == "done 1" || l == GONE => true,
        Ok(Some(l)) if l == "done 2" => {
            messages::message("warn", &format!("--trace: pid {}: another allocator was installed over the tracer's since the attach (tracemalloc?); the tracer's wrapper stays in place, forwarding, tracing nothing", a.rx.pid()));
            true
        }
        Ok(Some(l)) => {
            messages::error(&format!(
                "--trace: the detach in pid {} said: {l}",
                a.rx.pid()
            ));
            true
        }
        Ok(None) | Err(_) => {
            messages::error(&format!(
                "--trace: pid {} did not reach a safe point within {:.1} s to detach the tracer; the request stays pending (it detaches when its main thread next runs Python code), and {} is kept",
                a.rx.pid(),
                timeout.as_secs_f64(),
                a.dir.files().dir.display()
            ));
            a.keep = true;
            false
        }
    }
}

/// The recording did not start: detaches the tracer and deletes the directory (kept when
/// the detach is still pending).
pub fn abandon(mut a: Attached, pid: u32) {
    let running = std::path::Path::new(&format!("/proc/{pid}")).exists();
    detach(&mut a, running);
    clean_up(a);
}

/// Deletes the files memlens made (only while each is still the file it created) and the
/// directory; what cannot be is said.
fn clean_up(a: Attached) {
    if a.keep {
        return;
    }
    let out = a.dir.files().out();
    for m in &a.made {
        if m.path == out {
            continue; // TraceDir::remove deletes the tracer's files
        }
        match std::fs::symlink_metadata(&m.path) {
            Ok(s) if s.is_file() && (s.dev(), s.ino()) == (m.dev, m.ino) => {
                if let Err(e) = std::fs::remove_file(&m.path) {
                    messages::error(&format!("--trace: {}: {e}", m.path.display()));
                }
            }
            Ok(_) => messages::error(&format!(
                "--trace: {} is no longer the file memlens created; left alone",
                m.path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => messages::error(&format!("--trace: {}: {e}", m.path.display())),
        }
    }
    if let Err(e) = a.dir.remove() {
        messages::error(&format!("--trace: {e}"));
    }
}

/// After the recording: says what the import could not do and removes the directory once the
/// trace is in the recording (kept, and named, otherwise).
pub fn finish(a: Attached, r: Option<&Result<ImportReport, memlens_record::Error>>) {
    let why = match r {
        Some(Ok(rep)) => {
            if rep.files == 0 {
                messages::error("--trace: the tracer wrote no trace file");
            }
            for w in &rep.problems {
                messages::message("warn", w);
            }
            if a.keep {
                return;
            }
            return clean_up(a);
        }
        Some(Err(e)) => format!("the trace file could not be imported: {e}"),
        None => "the recording stopped early; the trace file was not imported".to_string(),
    };
    messages::error(&format!(
        "--trace: {why}; it is kept in {}",
        a.dir.files().dir.display()
    ));
}
