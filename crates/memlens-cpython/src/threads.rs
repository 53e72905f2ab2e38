//! Threads and their Python frames.

use serde::Serialize;

use memlens_remote::ProcessMemory;

use crate::error::Result;
use crate::linetable;
use crate::objects::{read_bytes, read_str, MAX_NAME};
use crate::process::Interpreter;

/// Limits that keep a corrupt or changing list from looping forever.
const MAX_THREADS: usize = 4096;
const MAX_FRAMES: usize = 4096;
const MAX_LINETABLE: usize = 1 << 20;

/// One Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// `co_name` (untrusted).
    pub function: String,
    /// `co_filename` (untrusted).
    pub file: String,
    /// Line being executed, when the line table has one.
    pub line: Option<u32>,
}

/// One thread of the interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// `threading.get_ident()` (the `pthread_t`).
    pub thread_id: u64,
    /// The kernel's thread id, when known.
    pub native_thread_id: Option<u32>,
    /// Innermost frame first.
    pub frames: Vec<Frame>,
}

/// Reads every thread of the main interpreter with its frames.
pub fn threads<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Vec<Thread>> {
    let l = it.layout;
    let mut out = Vec::new();
    let mut tstate = mem.read_u64(it.interp + l.interp_threads_head)?;
    let tasks = task_ids(it.pid);
    while tstate != 0 && out.len() < MAX_THREADS {
        let thread_id = mem.read_u64(tstate + l.tstate_thread_id)?;
        let native_thread_id = match l.tstate_native_thread_id {
            Some(off) => Some(mem.read_u64(tstate + off)? as u32),
            None => glibc_tid(mem, thread_id, &tasks),
        };
        let frames = frames(it, mem, tstate).unwrap_or_else(|e| {
            log::debug!("frames of thread {thread_id:#x}: {e}");
            Vec::new()
        });
        out.push(Thread {
            thread_id,
            native_thread_id,
            frames,
        });
        tstate = mem.read_u64(tstate + l.tstate_next)?;
    }
    Ok(out)
}

fn task_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Before 3.11 CPython does not store the kernel thread id. `thread_id` is glibc's
/// `struct pthread *`, whose `tid` field sits at 0x2d0 on x86_64 (glibc 2.36); other libcs and
/// architectures are searched for a word equal to one of the process's thread ids.
fn glibc_tid<M: ProcessMemory>(mem: &M, thread_id: u64, tasks: &[u32]) -> Option<u32> {
    if thread_id == 0 {
        return None;
    }
    if cfg!(target_arch = "x86_64") {
        if let Ok(v) = mem.read_u32(thread_id + 0x2d0) {
            if tasks.contains(&v) {
                return Some(v);
            }
        }
    }
    let block = mem.read_vec(thread_id, 0x800).ok()?;
    block
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .find(|v| *v > 1 && tasks.contains(v))
}

fn frames<M: ProcessMemory>(it: &Interpreter, mem: &M, tstate: u64) -> Result<Vec<Frame>> {
    let l = it.layout;
    let mut out = Vec::new();
    if let (Some(top), Some(back), Some(code_off), Some(lasti_off)) =
        (l.tstate_frame, l.frame_back, l.frame_code, l.frame_lasti)
    {
        // 3.8-3.10: frame objects
        let mut frame = mem.read_u64(tstate + top)?;
        while frame != 0 && out.len() < MAX_FRAMES {
            let code = mem.read_u64(frame + code_off)?;
            let lasti = i64::from(mem.read_i32(frame + lasti_off)?);
            out.push(frame_of(it, mem, code, lasti, true)?);
            frame = mem.read_u64(frame + back)?;
        }
        return Ok(out);
    }
    let (Some(code_off), Some(prev_off), Some(instr_off), Some(owner_off), Some(adaptive)) = (
        l.iframe_code,
        l.iframe_previous,
        l.iframe_instr,
        l.iframe_owner,
        l.code_code_adaptive,
    ) else {
        return Ok(out);
    };
    let mut frame = match (
        l.tstate_cframe,
        l.cframe_current_frame,
        l.tstate_current_frame,
    ) {
        (Some(cf), Some(cur), _) => {
            let cframe = mem.read_u64(tstate + cf)?;
            if cframe == 0 {
                0
            } else {
                mem.read_u64(cframe + cur)?
            }
        }
        (_, _, Some(cur)) => mem.read_u64(tstate + cur)?,
        _ => 0,
    };
    let mut steps = 0;
    while frame != 0 && steps < MAX_FRAMES {
        steps += 1;
        let owner = u64::from(mem.read_u8(frame + owner_off)?);
        // shim frames of C calls (3.12+) and the interpreter's base frame (3.14)
        let skip =
            l.frame_owned_by_cstack == Some(owner) || l.frame_owned_by_interpreter == Some(owner);
        if !skip {
            // 3.14: f_executable is a tagged _PyStackRef
            let tag = l.stackref_tag_bits.unwrap_or(0);
            let code = mem.read_u64(frame + code_off)? & !tag;
            let is_code =
                it.types.code == 0 || mem.read_u64(code + l.object_type)? == it.types.code;
            if is_code {
                let instr = mem.read_u64(frame + instr_off)?;
                let first = code + adaptive;
                let index = (instr as i64).wrapping_sub(first as i64) / 2;
                out.push(frame_of(it, mem, code, index, false)?);
            }
        }
        frame = mem.read_u64(frame + prev_off)?;
    }
    Ok(out)
}

/// `position`: `f_lasti` before 3.11 (bytes in 3.8-3.9, code units in 3.10), the code-unit
/// index from 3.11.
fn frame_of<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    code: u64,
    position: i64,
    legacy: bool,
) -> Result<Frame> {
    let l = it.layout;
    let function = read_str(mem, l, mem.read_u64(code + l.code_name)?, MAX_NAME)?;
    let file = read_str(mem, l, mem.read_u64(code + l.code_filename)?, 4 * MAX_NAME)?;
    let first = i64::from(mem.read_i32(code + l.code_firstlineno)?);
    let table = read_bytes(
        mem,
        l,
        mem.read_u64(code + l.code_linetable)?,
        MAX_LINETABLE,
    )?;
    let line = match (legacy, it.version.minor) {
        (true, 8 | 9) => Some(linetable::lnotab_line(&table, first, position)),
        (true, _) => linetable::linetable310_line(&table, first, position * 2),
        (false, _) => linetable::location_line(&table, first, position),
    };
    Ok(Frame {
        function,
        file,
        line: line.and_then(|n| u32::try_from(n).ok()),
    })
}
