//! What each thread of the interpreter holds besides its stack, for the `thread-stacks`
//! advice (docs/advice.md): its thread state's malloc'd size, its first data-stack chunk
//! (3.11+), its frame objects (before 3.11), and whether it waits for work.

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::process::Interpreter;
use crate::threads::{self, Thread};

/// Frames weighed at most per thread (3.8-3.10).
const MAX_FRAMES: usize = 4096;
/// A chunk larger than this is not believed (a misread chunk header).
const MAX_STATE: u64 = 1 << 20;

/// One thread's figures read from the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadState {
    /// The thread as the stacks view reads it (kernel thread id, frames).
    pub thread: Thread,
    /// The thread state's allocation: the size glibc's chunk header (the word before it)
    /// records, `None` when it cannot be read or does not fit the struct's size.
    pub state_bytes: Option<u64>,
    /// 3.11+: the first data-stack chunk's address and size (`datastack_chunk`), `None`
    /// before 3.11 or when the thread has none.
    pub data_stack: Option<(u64, u64)>,
    /// 3.8-3.10: the bytes allocated for its frame objects (pymalloc's size class or glibc's
    /// chunk size of each); `None` from 3.11 (frames live in the data stack) or unreadable.
    pub frame_bytes: Option<u64>,
}

/// The size of the allocation at `addr`: pymalloc's size class when it lies in one of
/// `arenas`, else glibc's chunk size (the header word before it, flag bits cleared; an
/// mmapped chunk's size includes its header).
pub fn allocation_size<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    arenas: &[(u64, u64)],
    addr: u64,
) -> Result<u64> {
    let l = it.layout;
    if arenas.iter().any(|&(s, e)| (s..e).contains(&addr)) {
        let pool = addr & !(l.pool_size - 1);
        let szidx = u64::from(mem.read_u32(pool + l.pool_szidx)?);
        return Ok((szidx + 1) * l.pymalloc_alignment);
    }
    let size = mem.read_u64(addr.wrapping_sub(8))? & !7;
    if !(16..=MAX_STATE).contains(&size) {
        return Err(Error::Decode {
            addr,
            what: "a malloc chunk header".into(),
        });
    }
    Ok(size)
}

/// Every thread of the main interpreter with its figures, in the order of the thread list
/// (read in one go: the caller pauses the process around it).
pub fn read<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Vec<ThreadState>> {
    let l = it.layout;
    let listed = threads::threads(it, mem)?;
    let arenas = crate::pymalloc::arena_ranges(it, mem).unwrap_or_default();
    let mut out = Vec::with_capacity(listed.len());
    let mut tstate = mem.read_u64(it.interp.wrapping_add(l.interp_threads_head))?;
    for thread in listed {
        if tstate == 0 || tstate >= crate::census::MAX_ADDR {
            return Err(Error::Invalid {
                pid: it.pid,
                why: "the thread list changed during the read".into(),
            });
        }
        let id = mem.read_u64(tstate.wrapping_add(l.tstate_thread_id))?;
        if id != thread.thread_id {
            return Err(Error::Invalid {
                pid: it.pid,
                why: "the thread list changed during the read".into(),
            });
        }
        // the thread state is malloc'd (PyMem_RawMalloc/Calloc), never in a pymalloc arena:
        // glibc's chunk for it is the struct's size plus the header word in 16-byte steps
        // (a split free chunk may leave up to 16 more); anything else is not believed
        let state_bytes = allocation_size(it, mem, &[], tstate).ok().filter(|&got| {
            let want = (l.tstate_alloc_size + 8).div_ceil(16).max(2) * 16;
            l.tstate_alloc_size != crate::layouts::POISON && (want..=want + 16).contains(&got)
        });
        let data_stack = match (l.tstate_datastack_chunk, l.stackchunk_size) {
            (Some(at), Some(size_at)) => {
                let chunk = mem.read_u64(tstate + at)?;
                if chunk == 0 || chunk >= crate::census::MAX_ADDR {
                    None
                } else {
                    Some((chunk, mem.read_u64(chunk + size_at)?))
                }
            }
            _ => None,
        };
        let frame_bytes = match (l.tstate_frame, l.frame_back) {
            (Some(top), Some(back)) => frame_bytes(it, mem, &arenas, tstate + top, back).ok(),
            _ => None,
        };
        out.push(ThreadState {
            thread,
            state_bytes,
            data_stack,
            frame_bytes,
        });
        tstate = mem.read_u64(tstate.wrapping_add(l.tstate_next))?;
    }
    Ok(out)
}

/// The allocated bytes of the frame objects chained from the pointer at `top`.
fn frame_bytes<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    arenas: &[(u64, u64)],
    top: u64,
    back: u64,
) -> Result<u64> {
    let mut sum = 0;
    let mut frame = mem.read_u64(top)?;
    let mut n = 0;
    while frame != 0 && n < MAX_FRAMES {
        if frame >= crate::census::MAX_ADDR {
            return Err(Error::Decode {
                addr: top,
                what: "a frame pointer".into(),
            });
        }
        // a frame object carries the collector's header before it
        sum += allocation_size(it, mem, arenas, frame - it.layout.gc_head_size)?;
        frame = mem.read_u64(frame + back)?;
        n += 1;
    }
    Ok(sum)
}

/// Whether a thread waits for work: its innermost Python frame is one of the standard
/// library's waits (`threading`'s `wait`/`join`, `queue`'s `get`/`put`, `selectors`'
/// `select`, `socket`'s `accept`, an idle `concurrent.futures` worker).
pub fn waits(thread: &Thread) -> Option<String> {
    const WAITS: &[(&str, &[&str])] = &[
        ("threading.py", &["wait", "_wait_for_tstate_lock", "join"]),
        ("queue.py", &["get", "put"]),
        ("selectors.py", &["select"]),
        ("socket.py", &["accept"]),
        ("concurrent/futures/thread.py", &["_worker"]),
    ];
    let f = thread.frames.first()?;
    WAITS
        .iter()
        .any(|(file, fns)| {
            (f.file.ends_with(&format!("/{file}")) || f.file == *file)
                && fns.contains(&f.function.as_str())
        })
        .then(|| {
            format!(
                "{} ({})",
                f.function,
                f.file.rsplit('/').next().unwrap_or("")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threads::Frame;

    fn thread(function: &str, file: &str) -> Thread {
        Thread {
            thread_id: 1,
            native_thread_id: Some(2),
            name: None,
            frames: vec![Frame {
                function: function.into(),
                file: file.into(),
                line: Some(1),
            }],
            frames_omitted: 0,
        }
    }

    #[test]
    fn idle_is_a_standard_library_wait_innermost() {
        let w = |f, file| waits(&thread(f, file));
        assert_eq!(
            w("wait", "/usr/lib/python3.11/threading.py").as_deref(),
            Some("wait (threading.py)")
        );
        assert!(w("get", "/usr/lib/python3.11/queue.py").is_some());
        assert!(w("_worker", "/x/concurrent/futures/thread.py").is_some());
        // a wait of the program's own, or work, is not idle
        assert!(w("wait", "/app/mythreading.py").is_none());
        assert!(w("compute", "/app/main.py").is_none());
        let mut none = thread("wait", "threading.py");
        none.frames.clear();
        assert!(waits(&none).is_none());
    }
}
