//! Reads what each thread of a Python process holds for the `thread-stacks` advice
//! (docs/advice.md): the interpreter's thread states (in a short pause), each thread's stack
//! mapping (by its stack pointer) and the resident pages of its data-stack chunk (pagemap).

use std::collections::{BTreeMap, HashMap};

use memlens_cpython::{ReadMode, Session};
use memlens_model::thread_costs::{ThreadCost, ThreadCosts};

/// Data-stack bytes read from the pagemap at most per thread (a chunk is 16 KiB; a thread
/// with a deep stack may hold more chunks, not counted).
const MAX_CHUNK: u64 = 1 << 24;

/// Pages of one stack block read from the pagemap at most (1 GiB of 4 KiB pages, an 8 MiB
/// buffer): a larger block (a stack merged with a large mapping) gets no stack figure.
const MAX_BLOCK_PAGES: usize = 1 << 18;

/// The threads of `pid`; `None` when they could not be read (said in the log): no
/// `thread-stacks` advice follows.
pub fn read(pid: u32, nonblocking: bool) -> Option<ThreadCosts> {
    let proc = memlens_procfs::Process::new(pid).ok()?;
    // stack pointers before the pause: a thread woken by it shows none for a while
    let sps = match crate::process::thread_stack_pointers(&proc) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("pid {pid}: threads not read ({e})");
            return None;
        }
    };
    let session = match Session::attach(pid) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("pid {pid}: threads not read ({e})");
            return None;
        }
    };
    let mode = if nonblocking {
        ReadMode::Nonblocking
    } else {
        ReadMode::Paused
    };
    let states = match session.thread_states(mode) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("pid {pid}: thread states not read ({e})");
            return None;
        }
    };
    let smaps = match proc.smaps() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("pid {pid}: threads not read (smaps: {e})");
            return None;
        }
    };
    let pagemap = memlens_procfs::pagemap::Pagemap::open(pid).ok();
    let page = memlens_procfs::page_size();
    let stacks = stack_bytes(pid, &states, &smaps, &sps, pagemap.as_ref(), page);
    let threads = states
        .into_iter()
        .map(|s| {
            let tid = s.thread.native_thread_id;
            let stack = stacks.get(&s.thread.thread_id).copied();
            let data_stack = s.data_stack.and_then(|(addr, size)| {
                let pm = pagemap.as_ref()?;
                if size == 0 || size > MAX_CHUNK || addr % page != 0 {
                    return None;
                }
                let pages = size.div_ceil(page) as usize;
                let entries = pm.read(addr / page, pages).ok()?;
                Some(resident_pages(&entries) * page)
            });
            ThreadCost {
                native_thread_id: tid,
                waiting_in: memlens_cpython::thread_costs::waits(&s.thread),
                stack,
                state: s.state_bytes,
                data_stack,
                frames: s.frame_bytes,
            }
        })
        .collect();
    Some(ThreadCosts { threads })
}

/// The resident bytes of each thread's stack block, by thread id (`pthread_self()`, the
/// address of glibc's thread descriptor, which sits at the top of the thread's stack block).
/// The mapping holding the descriptor must hold the thread's stack pointer too (when known);
/// the main thread (`[stack]`, its descriptor elsewhere) is left out. Where the kernel merged
/// several threads' stacks into one mapping (glibc 2.43 guards its stacks without a mapping
/// of their own), the mapping is cut at each descriptor's page: a thread's block runs from the
/// previous cut (or the mapping's start) to the end of the page holding its descriptor (the
/// last one to the mapping's end), and its resident pages are counted by pagemap. Without
/// pagemap, only a mapping holding one thread gives a figure (its RSS).
fn stack_bytes(
    pid: u32,
    states: &[memlens_cpython::thread_costs::ThreadState],
    smaps: &[memlens_procfs::smaps::Mapping],
    sps: &crate::process::StackPointers,
    pagemap: Option<&memlens_procfs::pagemap::Pagemap>,
    page: u64,
) -> HashMap<u64, u64> {
    let mut by_mapping: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for s in states {
        let t = &s.thread;
        if t.native_thread_id == Some(pid) || t.thread_id == 0 {
            continue;
        }
        let Some(i) = smaps.iter().position(|m| m.entry.contains(t.thread_id)) else {
            continue;
        };
        let m = &smaps[i];
        if m.entry.path == b"[stack]" || !m.entry.is_anonymous() {
            continue;
        }
        let sp = t
            .native_thread_id
            .and_then(|n| sps.iter().find(|(id, _)| *id == n))
            .and_then(|x| x.1);
        if sp.is_some_and(|sp| !m.entry.contains(sp)) {
            continue;
        }
        by_mapping.entry(i).or_default().push(t.thread_id);
    }
    let mut out = HashMap::new();
    for (i, mut ids) in by_mapping {
        let e = &smaps[i].entry;
        ids.sort_unstable();
        ids.dedup();
        if ids.len() == 1 && pagemap.is_none() {
            out.insert(ids[0], smaps[i].counters.rss);
            continue;
        }
        let Some(pm) = pagemap else { continue };
        let mut from = e.start;
        for (k, id) in ids.iter().enumerate() {
            let to = if k + 1 == ids.len() {
                e.end
            } else {
                (id / page + 1) * page
            };
            let pages = ((to - from) / page) as usize;
            if pages > MAX_BLOCK_PAGES {
                from = to;
                continue;
            }
            if let Ok(entries) = pm.read(from / page, pages) {
                if entries.len() == pages {
                    let present = resident_pages(&entries);
                    out.insert(*id, present * page);
                }
            }
            from = to;
        }
    }
    out
}

/// Pages resident and mapped only here: a page the process (or memlens's reads of it) only
/// read is mapped to the kernel's shared zero page, which pagemap shows present but which
/// no process's RSS counts and no change to the program frees.
fn resident_pages(entries: &[memlens_procfs::pagemap::Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.present() && e.exclusive())
        .count() as u64
}
