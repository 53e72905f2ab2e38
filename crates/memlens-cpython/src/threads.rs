//! Threads and their Python frames.
//!
//! Read through a page-caching reader ([`crate::reader::PageReader`]): a thread state or a run
//! of frames costs one read of the page holding it, not one per field; each code object is
//! decoded once however many frames run it. Thread names come from `threading._active` (the
//! `Thread` objects' `_name`, matched by ident), as py-spy shows them.

use std::collections::HashMap;

use memlens_remote::ProcessMemory;

use crate::attrs;
use crate::error::{Error, Result};
use crate::layouts;
use crate::linetable;
use crate::objects::{read_bytes, read_str, MAX_NAME};
use crate::process::Interpreter;

/// Threads read at most (a bound for a corrupt or changing list).
const MAX_THREADS: usize = 1 << 16;
/// Frames shown per thread; the rest of a deeper stack is counted, not shown.
pub const MAX_FRAMES: usize = 4096;
/// Frames walked at most per thread (a bound for a corrupt chain).
const MAX_WALK: u64 = 1 << 24;
const MAX_LINETABLE: usize = 1 << 20;

pub use memlens_model::stacks::{Frame, Thread};

/// What a code object says, decoded once.
struct Code {
    function: String,
    file: String,
    first_line: i64,
    table: Vec<u8>,
}

/// Decoded code objects by address, for one read.
#[derive(Default)]
struct Codes {
    known: HashMap<u64, Option<Code>>,
}

impl Codes {
    fn get<M: ProcessMemory>(&mut self, it: &Interpreter, mem: &M, code: u64) -> Option<&Code> {
        self.known
            .entry(code)
            .or_insert_with(|| match decode_code(it, mem, code) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::debug!("code object at {code:#x}: {e}");
                    None
                }
            })
            .as_ref()
    }

    /// The frame running `code` at `position` (see [`Code::frame`]); a code object that cannot
    /// be read gives a frame that says so.
    fn frame<M: ProcessMemory>(
        &mut self,
        it: &Interpreter,
        mem: &M,
        code: u64,
        position: i64,
    ) -> Frame {
        match self.get(it, mem, code) {
            Some(c) => c.frame(it.layout.linetable_format, position),
            None => Frame {
                function: "<unreadable code object>".into(),
                file: String::new(),
                line: None,
            },
        }
    }
}

/// A pointer read from the target, checked before any offset is added to it.
fn ptr<M: ProcessMemory>(mem: &M, at: u64) -> Result<u64> {
    let p = mem.read_u64(at)?;
    if p >= crate::census::MAX_ADDR {
        return Err(Error::Decode {
            addr: at,
            what: "a pointer".into(),
        });
    }
    Ok(p)
}

fn decode_code<M: ProcessMemory>(it: &Interpreter, mem: &M, code: u64) -> Result<Code> {
    let l = it.layout;
    if code >= crate::census::MAX_ADDR {
        return Err(Error::Decode {
            addr: code,
            what: "a code object".into(),
        });
    }
    Ok(Code {
        function: read_str(
            mem,
            l,
            mem.read_u64(code.wrapping_add(l.code_name))?,
            MAX_NAME,
        )?,
        file: read_str(
            mem,
            l,
            mem.read_u64(code.wrapping_add(l.code_filename))?,
            4 * MAX_NAME,
        )?,
        first_line: i64::from(mem.read_i32(code.wrapping_add(l.code_firstlineno))?),
        table: read_bytes(
            mem,
            l,
            mem.read_u64(code.wrapping_add(l.code_linetable))?,
            MAX_LINETABLE,
        )?,
    })
}

impl Code {
    /// `position`: `f_lasti` before 3.11 (bytes in 3.8-3.9, code units in 3.10), the code-unit
    /// index from 3.11; `format`: the table's `linetable_format`.
    fn frame(&self, format: u64, position: i64) -> Frame {
        let line = match format {
            linetable::LNOTAB => Some(linetable::lnotab_line(
                &self.table,
                self.first_line,
                position,
            )),
            linetable::LINETABLE_310 => {
                linetable::linetable310_line(&self.table, self.first_line, position * 2)
            }
            linetable::LOCATIONS => {
                linetable::location_line(&self.table, self.first_line, position)
            }
            _ => None,
        };
        Frame {
            function: self.function.clone(),
            file: self.file.clone(),
            line: line.and_then(|n| u32::try_from(n).ok()),
        }
    }
}

/// Brent's cycle check over a chain of addresses, in constant memory.
struct CycleCheck {
    tortoise: u64,
    power: u64,
    steps: u64,
}

impl CycleCheck {
    fn new() -> Self {
        CycleCheck {
            tortoise: 0,
            power: 1,
            steps: 0,
        }
    }

    /// `true` when `addr` was seen before on this chain.
    fn seen(&mut self, addr: u64) -> bool {
        if addr == self.tortoise {
            return true;
        }
        self.steps += 1;
        if self.steps == self.power {
            self.tortoise = addr;
            self.power *= 2;
            self.steps = 0;
        }
        false
    }
}

/// Reads every thread of the main interpreter with its frames and names.
pub fn threads<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Vec<Thread>> {
    let l = it.layout;
    let names = thread_names(it, mem).unwrap_or_else(|e| {
        log::debug!("pid {}: no thread names: {e}", it.pid);
        HashMap::new()
    });
    let tasks = if l.tstate_native_thread_id.is_none() {
        task_ids(it.pid)
    } else {
        Vec::new()
    };
    let mut codes = Codes::default();
    let mut out = Vec::new();
    let mut cycle = CycleCheck::new();
    let mut tstate = ptr(mem, it.interp.wrapping_add(l.interp_threads_head))?;
    while tstate != 0 && out.len() < MAX_THREADS {
        if cycle.seen(tstate) {
            return Err(Error::Invalid {
                pid: it.pid,
                why: format!("the thread list loops at {tstate:#x}"),
            });
        }
        let thread_id = mem.read_u64(tstate.wrapping_add(l.tstate_thread_id))?;
        let native_thread_id = match l.tstate_native_thread_id {
            Some(off) => Some(mem.read_u64(tstate + off)? as u32),
            None => glibc_tid(mem, thread_id, &tasks),
        };
        let (frames, frames_omitted) = frames(it, mem, tstate, &mut codes).unwrap_or_else(|e| {
            log::debug!("frames of thread {thread_id:#x}: {e}");
            (Vec::new(), 0)
        });
        out.push(Thread {
            thread_id,
            native_thread_id,
            name: names.get(&thread_id).cloned(),
            frames,
            frames_omitted,
        });
        tstate = ptr(mem, tstate.wrapping_add(l.tstate_next))?;
    }
    Ok(out)
}

/// `{ident: name}` of `threading._active` (empty when `threading` was never imported).
fn thread_names<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<HashMap<u64, String>> {
    let l = it.layout;
    let mut out = HashMap::new();
    // a layout read from _Py_DebugOffsets alone lacks the dict and instance fields
    it.layout.require_tables("thread names")?;
    let modules = mem.read_u64(it.interp.wrapping_add(l.interp_modules))?;
    if modules == 0 {
        return Ok(out);
    }
    let Some(threading) = attrs::dict_get(mem, l, modules, "threading")? else {
        return Ok(out);
    };
    let Some(active) = attrs::module_attr(mem, l, threading, "_active")? else {
        return Ok(out);
    };
    for (key, thread) in crate::dicts::read_dict(mem, l, active)?.items {
        let Ok(ident) = attrs::read_u64_int(mem, l, key) else {
            continue;
        };
        let name = attrs::instance_attr(it, mem, thread, "_name")
            .ok()
            .flatten()
            .and_then(|s| attrs::str_value(mem, l, s));
        if let Some(name) = name {
            out.insert(ident, name);
        }
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
/// `struct pthread *`, whose `tid` field sits where [`layouts::glibc_pthread_tid`] says (found
/// by `scripts/gen_layouts.py` against its host's glibc, x86_64 only); when the word there is
/// not one of the process's thread ids (another glibc or libc, another architecture), the
/// struct is searched for a word that is.
fn glibc_tid<M: ProcessMemory>(mem: &M, thread_id: u64, tasks: &[u32]) -> Option<u32> {
    if thread_id == 0 || thread_id >= crate::census::MAX_ADDR {
        return None;
    }
    if let Some(at) = layouts::glibc_pthread_tid() {
        if let Ok(v) = mem.read_u32(thread_id + at) {
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

/// A thread's frames (innermost first, at most [`MAX_FRAMES`]) and how many more its chain
/// holds.
fn frames<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    tstate: u64,
    codes: &mut Codes,
) -> Result<(Vec<Frame>, u64)> {
    let l = it.layout;
    let mut out = Vec::new();
    let mut omitted = 0u64;
    let mut cycle = CycleCheck::new();
    let mut walked = 0u64;
    let mut step = |frame: u64| -> Result<()> {
        walked += 1;
        if cycle.seen(frame) || walked > MAX_WALK {
            return Err(Error::Invalid {
                pid: it.pid,
                why: format!("the frame chain loops or exceeds {MAX_WALK} frames at {frame:#x}"),
            });
        }
        Ok(())
    };
    if let (Some(top), Some(back), Some(code_off), Some(lasti_off)) =
        (l.tstate_frame, l.frame_back, l.frame_code, l.frame_lasti)
    {
        // 3.8-3.10: frame objects
        let mut frame = ptr(mem, tstate + top)?;
        while frame != 0 {
            step(frame)?;
            if out.len() < MAX_FRAMES {
                let code = ptr(mem, frame + code_off)?;
                let lasti = i64::from(mem.read_i32(frame + lasti_off)?);
                out.push(codes.frame(it, mem, code, lasti));
            } else {
                omitted += 1;
            }
            frame = ptr(mem, frame + back)?;
        }
        return Ok((out, omitted));
    }
    let (Some(code_off), Some(prev_off), Some(instr_off), Some(owner_off), Some(adaptive)) = (
        l.iframe_code,
        l.iframe_previous,
        l.iframe_instr,
        l.iframe_owner,
        l.code_code_adaptive,
    ) else {
        return Ok((out, 0));
    };
    let mut frame = match (
        l.tstate_cframe,
        l.cframe_current_frame,
        l.tstate_current_frame,
    ) {
        (Some(cf), Some(cur), _) => {
            let cframe = ptr(mem, tstate + cf)?;
            if cframe == 0 {
                0
            } else {
                ptr(mem, cframe + cur)?
            }
        }
        (_, _, Some(cur)) => ptr(mem, tstate + cur)?,
        _ => 0,
    };
    // 3.14: f_executable is a tagged _PyStackRef
    let tag = l.stackref_tag_bits.unwrap_or(0);
    while frame != 0 {
        step(frame)?;
        let owner = u64::from(mem.read_u8(frame + owner_off)?);
        // shim frames of C calls (3.12+) and the interpreter's base frame (3.14)
        let skip =
            l.frame_owned_by_cstack == Some(owner) || l.frame_owned_by_interpreter == Some(owner);
        if !skip {
            if out.len() >= MAX_FRAMES {
                omitted += 1;
            } else {
                let code = ptr(mem, frame + code_off)? & !tag;
                let is_code = it.types.code == 0
                    || mem.read_u64(code.wrapping_add(l.object_type))? == it.types.code;
                if is_code {
                    let instr = mem.read_u64(frame + instr_off)?;
                    let index = (instr as i64).wrapping_sub(code.wrapping_add(adaptive) as i64) / 2;
                    out.push(codes.frame(it, mem, code, index));
                }
            }
        }
        frame = ptr(mem, frame + prev_off)?;
    }
    Ok((out, omitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_check_finds_loops_and_passes_chains() {
        let mut c = CycleCheck::new();
        assert!((1..10_000u64).all(|a| !c.seen(a * 16)), "a plain chain");
        let mut c = CycleCheck::new();
        let ring = [0x10u64, 0x20, 0x30, 0x40, 0x50];
        let looped = (0..100).map(|i| ring[i % ring.len()]).any(|a| c.seen(a));
        assert!(looped, "a ring is caught");
    }
}
