//! PEP 768 (CPython 3.14+): asks a running interpreter to execute a Python script at its next
//! safe point, as `sys.remote_exec(pid, path)` does. `memlens record PID --trace` uses it to
//! load its tracer into a running program: the one opt-in injection memlens does.
//!
//! The request is what CPython's own `sys.remote_exec` writes, located through the target's
//! `_Py_DebugOffsets` (`debugger_support`, the last group of the struct in 3.14 and 3.15):
//! the script path, NUL-terminated, into the main thread state's
//! `remote_debugger_support.debugger_script_path` (512 bytes), `debugger_pending_call = 1`,
//! then `_PY_EVAL_PLEASE_STOP_BIT` (bit 5) in the thread's `eval_breaker`. At its next
//! eval-breaker check the main thread clears `debugger_pending_call`, copies the path and runs
//! the file (audit event `cpython.remote_debugger_script`) with the GIL held. CPython looks
//! at the request only when `remote_debug` of the interpreter's config is 1: it is 0 under
//! `PYTHON_DISABLE_REMOTE_DEBUG`, `-X disable-remote-debug`, and in builds
//! `--without-remote-debug`; memlens refuses such a target before writing anything.
//!
//! The eval-breaker update is a read then a write of its **low byte only** (another process
//! cannot make the interpreter's atomic OR): the event bits 0-7 live there, the instrumentation
//! version in the bytes above, which memlens never writes (CPython's `sys.remote_exec` writes
//! the whole word). A bit the target sets or clears in the microseconds between the read and
//! the write can be lost or set again: a spurious bit only makes the thread check its pending
//! work once more; a lost request (GIL drop, signal, pending call) is made again by its
//! requester or served at the next check (the same race as `sys.remote_exec`, narrower).
//! A request is refused while another debugger's is pending (`debugger_pending_call` is 1).

use memlens_remote::{ProcessMemory, RemoteMemory};

use crate::error::Error;
use crate::session::Session;

/// `_PY_EVAL_PLEASE_STOP_BIT`.
const PLEASE_STOP: u8 = 1 << 5;
/// `_Py_DebugOffsets.debugger_support`: six `uint64_t`, the struct's last group (3.14, 3.15).
const SUPPORT_LEN: u64 = 6 * 8;
/// `_Py_DebugOffsets.interpreter_state.threads_main`: after the cookie, version,
/// free_threaded, the three of runtime_state and size, id, next, threads_head.
const THREADS_MAIN_AT: u64 = 8 + 8 + 8 + 3 * 8 + 4 * 8;

/// Why a request was not made.
#[derive(Debug, thiserror::Error)]
pub enum RemoteExecError {
    /// The target cannot take one: an older CPython, remote debugging disabled, another
    /// debugger's request pending (memlens's exit code 5).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing the target failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<memlens_remote::Error> for RemoteExecError {
    fn from(e: memlens_remote::Error) -> Self {
        RemoteExecError::Failed(Error::Remote(e))
    }
}

/// Where a process's PEP 768 request goes.
#[derive(Debug)]
pub struct RemoteExec {
    pid: u32,
    mem: RemoteMemory,
    /// The CPython version, `3.M.m`.
    pub version: String,
    /// The main thread state.
    tstate: u64,
    eval_breaker: u64,
    pending: u64,
    path: u64,
    path_size: u64,
}

fn refused(why: impl Into<String>) -> RemoteExecError {
    RemoteExecError::Refused(why.into())
}

impl RemoteExec {
    /// Finds the main thread state of `pid`'s interpreter and checks it takes requests: CPython
    /// 3.14+ with remote debugging enabled, nothing pending. Only reads.
    pub fn locate(pid: u32) -> std::result::Result<RemoteExec, RemoteExecError> {
        let session = Session::attach(pid).map_err(|e| match e {
            Error::Unsupported { what } => refused(format!(
                "unsupported: {what}: memlens attaches its tracer to GIL builds of CPython 3.14+ only (PEP 768)"
            )),
            e @ Error::NotPython { .. } => refused(format!(
                "{e}: memlens attaches its tracer to CPython 3.14+ only"
            )),
            e => RemoteExecError::Failed(e),
        })?;
        let it = &session.interpreter;
        let version = it.version.to_string();
        if it.version.minor < 14 {
            return Err(refused(format!(
                "process {pid} runs CPython {version}: attaching the tracer to a running program needs CPython 3.14+ (PEP 768, sys.remote_exec); start it with `memlens run --trace` instead"
            )));
        }
        let size = it.layout.dbg_size.ok_or_else(|| {
            refused(format!(
                "CPython {version}: memlens knows no _Py_DebugOffsets for it"
            ))
        })?;
        let mem = RemoteMemory::open(pid)?;
        let at = it.runtime + size - SUPPORT_LEN;
        let f: Vec<u64> = (0..6)
            .map(|i| mem.read_u64(at + 8 * i))
            .collect::<std::result::Result<_, _>>()?;
        let (eval_breaker, support, enabled_at, pending_in, path_in, path_size) =
            (f[0], f[1], f[2], f[3], f[4], f[5]);
        let sane = |o: u64| o < 1 << 20;
        if !(16..=4096).contains(&path_size)
            || ![eval_breaker, support, enabled_at].into_iter().all(sane)
            || pending_in + 4 > path_in
            || path_in + path_size > 64 * 1024
        {
            return Err(refused(format!(
                "CPython {version}: its _Py_DebugOffsets.debugger_support do not look valid ({f:?}); not writing to it"
            )));
        }
        let enabled = mem.read_i32(it.interp + enabled_at)?;
        if enabled != 1 {
            return Err(refused(format!(
                "process {pid} has remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or a build --without-remote-debug): the tracer cannot be attached; start it with `memlens run --trace` instead"
            )));
        }
        let main_at = mem.read_u64(it.runtime + THREADS_MAIN_AT)?;
        let tstate = if sane(main_at) {
            mem.read_u64(it.interp + main_at)?
        } else {
            0
        };
        if tstate == 0 {
            return Err(RemoteExecError::Failed(Error::Invalid {
                pid,
                why: "no main thread state".into(),
            }));
        }
        let r = RemoteExec {
            pid,
            mem,
            version,
            tstate,
            eval_breaker: tstate + eval_breaker,
            pending: tstate + support + pending_in,
            path: tstate + support + path_in,
            path_size,
        };
        if r.is_pending()? {
            return Err(refused(format!(
                "process {pid} already has a remote-debugger request pending (another debugger's sys.remote_exec); try again once it has run"
            )));
        }
        Ok(r)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The longest script path a request can carry (NUL excluded).
    pub fn max_path(&self) -> usize {
        self.path_size as usize - 1
    }

    /// Whether a request is pending (written and not yet taken by the interpreter).
    pub fn is_pending(&self) -> std::result::Result<bool, RemoteExecError> {
        Ok(self.mem.read_i32(self.pending)? != 0)
    }

    /// Asks the interpreter to run the script at `path` (an absolute path the target can
    /// open) at its next safe point. The script runs on the main thread, with the GIL, when
    /// it next executes Python code: a thread blocked in C does not take the request until it
    /// returns.
    pub fn request(&self, path: &[u8]) -> std::result::Result<(), RemoteExecError> {
        if path.is_empty() || path.len() > self.max_path() || path.contains(&0) {
            return Err(refused(format!(
                "the script path must be 1 to {} bytes without NUL",
                self.max_path()
            )));
        }
        if self.is_pending()? {
            return Err(refused(format!(
                "process {} already has a remote-debugger request pending",
                self.pid
            )));
        }
        let mut p = path.to_vec();
        p.push(0);
        memlens_remote::write::write_exact(self.pid, self.path, &p)?;
        memlens_remote::write::write_exact(self.pid, self.pending, &1i32.to_ne_bytes())?;
        // The low byte of the little-endian word (x86_64, aarch64: memlens's targets).
        let b = self.mem.read_u8(self.eval_breaker)?;
        memlens_remote::write::write_exact(self.pid, self.eval_breaker, &[b | PLEASE_STOP])?;
        Ok(())
    }

    /// Withdraws a request not yet taken (`debugger_pending_call = 0`); the eval-breaker bit,
    /// if still set, only makes the thread check once more. Returns whether it was still
    /// pending: false when the interpreter had taken it (then the caller's own protocol, a
    /// claim by the script, decides whether it runs).
    pub fn withdraw(&self) -> std::result::Result<bool, RemoteExecError> {
        if !self.is_pending()? {
            return Ok(false);
        }
        memlens_remote::write::write_exact(self.pid, self.pending, &0i32.to_ne_bytes())?;
        Ok(true)
    }

    /// The main thread state's address (for logs).
    pub fn thread_state(&self) -> u64 {
        self.tstate
    }
}
