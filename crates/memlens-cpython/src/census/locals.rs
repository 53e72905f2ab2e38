//! The local variables of every frame of every thread, as roots of the referrer walk.
//!
//! - 3.8-3.10: frame objects; the fast locals are `f_localsplus`, the last field of
//!   `PyFrameObject` (at the frame type's `tp_basicsize` less one pointer); their names are
//!   `co_varnames` (the pointer after `co_names`), `co_nlocals` of them (the fourth `int` of
//!   the code object).
//! - 3.11+: `_PyInterpreterFrame.localsplus`, `co_nlocalsplus` of them (cells and free
//!   variables included); their names are `co_localsplusnames`, two pointers before
//!   `co_filename` (`co_localsplusnames, co_localspluskinds, co_filename` in 3.11-3.14); 3.14
//!   tags the references (`_PyStackRef`), the tag bits are cleared.
//!
//! Offsets not in the generated tables are checked on what they find: the names must be a
//! tuple of exactly the expected number of `str`s, or the frame's locals are not read (and
//! counted in `frames_unread`).

use memlens_model::referrers::Root;
use memlens_remote::ProcessMemory;

use super::MAX_ADDR;
use crate::error::Result;
use crate::objects::{read_str, MAX_NAME};
use crate::process::Interpreter;

/// Threads read, at most.
const MAX_THREADS: usize = 1 << 12;
/// Frames read per thread, at most.
const MAX_FRAMES: usize = 4096;
/// Locals of all frames kept as roots, at most.
const MAX_ROOTS: usize = 1 << 20;
/// Locals per frame, at most.
const MAX_LOCALS: u64 = 1 << 16;
/// `co_nlocals` in the 3.8-3.10 code object (after `co_argcount`, `co_posonlyargcount` and
/// `co_kwonlyargcount`).
const CODE_NLOCALS_OLD: u64 = 16 + 12;

/// `(root, value)` of each bound local of each frame, innermost frames first, and the number
/// of frames whose locals could not be read.
pub fn frame_locals<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
) -> Result<(Vec<(Root, u64)>, u64)> {
    let l = it.layout;
    let mut out = Vec::new();
    let mut unread = 0u64;
    let mut tstate = mem.read_u64(it.interp.wrapping_add(l.interp_threads_head))?;
    let mut threads = 0;
    while tstate != 0 && tstate < MAX_ADDR && threads < MAX_THREADS {
        threads += 1;
        let thread_id = mem.read_u64(tstate.wrapping_add(l.tstate_thread_id))?;
        let native = match l.tstate_native_thread_id {
            Some(off) => mem.read_u64(tstate + off).ok().map(|v| v as u32),
            None => None,
        };
        let frames = frames(it, mem, tstate).unwrap_or_else(|e| {
            log::debug!("referrers: frames of {thread_id:#x}: {e}");
            unread += 1;
            Vec::new()
        });
        for (code, values) in frames {
            match locals_of(it, mem, code, values) {
                Ok((function, locals)) => {
                    if out.len() + locals.len() > MAX_ROOTS {
                        // bounded: the rest are not roots (counted as unread frames)
                        unread += 1;
                        continue;
                    }
                    for (name, v) in locals {
                        let root = Root::Local {
                            thread_id,
                            native_thread_id: native,
                            function: function.clone(),
                            name,
                        };
                        out.push((root, v));
                    }
                }
                Err(e) => {
                    log::debug!("referrers: locals of a frame of {thread_id:#x}: {e}");
                    unread += 1;
                }
            }
        }
        tstate = mem.read_u64(tstate.wrapping_add(l.tstate_next))?;
    }
    Ok((out, unread))
}

/// `(code, first local)` of each Python frame of the thread at `tstate`.
fn frames<M: ProcessMemory>(it: &Interpreter, mem: &M, tstate: u64) -> Result<Vec<(u64, u64)>> {
    let l = it.layout;
    let mut out = Vec::new();
    if let (Some(top), Some(back), Some(code_off)) = (l.tstate_frame, l.frame_back, l.frame_code) {
        let mut frame = mem.read_u64(tstate + top)?;
        while frame != 0 && frame < MAX_ADDR && out.len() < MAX_FRAMES {
            let code = mem.read_u64(frame + code_off)?;
            let fty = mem.read_u64(frame.wrapping_add(l.object_type))?;
            let basic = mem.read_u64(fty.wrapping_add(l.type_basicsize))?;
            if (16..1 << 16).contains(&basic) {
                out.push((code, frame + basic - 8));
            }
            frame = mem.read_u64(frame + back)?;
        }
        return Ok(out);
    }
    let (Some(code_off), Some(prev_off), Some(owner_off), Some(localsplus)) = (
        l.iframe_code,
        l.iframe_previous,
        l.iframe_owner,
        l.iframe_localsplus,
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
            if cframe == 0 || cframe >= MAX_ADDR {
                0
            } else {
                mem.read_u64(cframe + cur)?
            }
        }
        (_, _, Some(cur)) => mem.read_u64(tstate + cur)?,
        _ => 0,
    };
    let tag = l.stackref_tag_bits.unwrap_or(0);
    let mut walked = 0;
    while frame != 0 && frame < MAX_ADDR && walked < MAX_FRAMES {
        walked += 1;
        let owner = u64::from(mem.read_u8(frame + owner_off)?);
        let skip =
            l.frame_owned_by_cstack == Some(owner) || l.frame_owned_by_interpreter == Some(owner);
        if !skip {
            let code = mem.read_u64(frame + code_off)? & !tag;
            if it.types.code == 0
                || mem.read_u64(code.wrapping_add(l.object_type))? == it.types.code
            {
                out.push((code, frame + localsplus));
            }
        }
        frame = mem.read_u64(frame + prev_off)?;
    }
    Ok(out)
}

/// The function's name and its bound locals `(name, object)`.
fn locals_of<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    code: u64,
    values: u64,
) -> Result<(String, Vec<(String, u64)>)> {
    let l = it.layout;
    let bad = |what: &str| crate::error::Error::Decode {
        addr: code,
        what: what.into(),
    };
    if code == 0 || code >= MAX_ADDR {
        return Err(bad("a code object"));
    }
    let (n, names_at) = match l.code_nlocalsplus {
        Some(off) => (
            i64::from(mem.read_i32(code + off)?),
            l.code_filename
                .checked_sub(16)
                .ok_or_else(|| bad("a layout"))?,
        ),
        None => (
            i64::from(mem.read_i32(code + CODE_NLOCALS_OLD)?),
            l.code_names + 8,
        ),
    };
    if !(0..MAX_LOCALS as i64).contains(&n) {
        return Err(bad("a local count"));
    }
    let name_p = match l.code_qualname {
        Some(q) => mem.read_u64(code + q)?,
        None => mem.read_u64(code + l.code_name)?,
    };
    let function = read_str(mem, l, name_p, MAX_NAME)?;
    let n = n as u64;
    if n == 0 {
        return Ok((function, Vec::new()));
    }
    let names = mem.read_u64(code + names_at)?;
    if names == 0 || names >= MAX_ADDR {
        return Err(bad("local names"));
    }
    if mem.read_u64(names.wrapping_add(l.object_type))? != it.types.tuple
        || mem.read_i64(names.wrapping_add(l.var_size))? != n as i64
    {
        return Err(bad("local names: not a tuple of the local count"));
    }
    let name_ptrs = mem.read_vec(names + l.tuple_item, (n * 8) as usize)?;
    let vals = mem.read_vec(values, (n * 8) as usize)?;
    let tag = l.stackref_tag_bits.unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..n as usize {
        let np = super::word(&name_ptrs, (i * 8) as u64);
        if mem.read_u64(np.wrapping_add(l.object_type))? != it.types.str {
            return Err(bad("local names: not a str"));
        }
        let v = super::word(&vals, (i * 8) as u64) & !tag;
        if v == 0 {
            continue; // unbound
        }
        out.push((read_str(mem, l, np, MAX_NAME)?, v));
    }
    Ok((function, out))
}
