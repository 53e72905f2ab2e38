//! A census from a consistent view, with a short pause.
//!
//! This kernel kind has no soft-dirty bits (`CONFIG_MEM_SOFT_DIRTY` is off) and no page-idle
//! tracking, so nothing tells memlens which pages a running process wrote. The census
//! therefore proves consistency itself:
//!
//! 1. It walks the running target through a bounded chunk cache that records every word the
//!    walk read and, per page, a hash of those words ([`memlens_remote::PageLog`]); a chunk
//!    copied twice with different used words makes the walk inconsistent at once.
//! 2. It stops the target and re-reads exactly the pages the walk used, on every core, and
//!    compares their hashes; reads that failed during the walk must still fail. If all agree,
//!    every byte the walk used held the same value at the pause: the census is exactly the
//!    census of the paused process (method `verified`), and the pause lasted only as long as
//!    the re-read.
//! 3. If something changed, it walks again (a bounded number of times), then falls back to a
//!    walk done entirely while the target is stopped (method `paused`; memory still capped).
//!
//! A pause that finds a collection running (`gc.collecting`: the generation lists are in
//! flux) resumes the target, waits for the collection to end and tries again, a bounded
//! number of times.

use std::rc::Rc;
use std::time::{Duration, Instant};

use memlens_model::clock::reported;
use memlens_remote::cache::{merge_regions, Finished};
use memlens_remote::{vm, CachedMemory, MemoryBudget, Pause, ProcessMemory, RemoteMemory};

use super::{take_with, Census, Consistency, Extras, Method, ModuleObjects};
use crate::error::{Error, Result};
use crate::gc;
use crate::process::Interpreter;

/// The default hard cap on memlens's own memory for one census: chunk copies, bitmaps, page
/// hashes and work stacks (documented in docs/cli.md; `census --max-memory`). A census that
/// needs more fails. About 2.5% of the heap walked goes to bitmaps and hashes, so the default
/// reaches heaps of about 8 GiB.
pub const CENSUS_MEMORY_CAP: u64 = 256 << 20;
/// Copies of the target's memory held at once (part of the cap).
pub const CENSUS_CACHE: u64 = 32 << 20;
/// Walks of the running target before the census walks a stopped one.
const WALKS_WHILE_RUNNING: u32 = 2;
/// Walks of the stopped target, when a stop lands mid-update of a GC list.
const STOPPED_WALKS: u32 = 10;
/// Walks without stopping the target (`--nonblocking`) when a GC list changed under it.
const NONBLOCKING_WALKS: u32 = 3;
/// Pauses that may find a collection running before the census gives up.
const MAX_COLLECTION_WAITS: u32 = 50;
/// The longest wait for one collection to end (a full collection of a large heap takes
/// seconds; the target runs meanwhile, memlens only polls a flag).
const COLLECTION_WAIT: Duration = Duration::from_secs(60);
/// Failed reads up to this length are re-read in the pause; longer ones (lengths that did not
/// fit a mapping) are checked against the mappings then.
const RECHECK_READ_MAX: u64 = 1 << 20;
/// Bytes of failed reads re-read in one pause, at most.
const RECHECK_TOTAL_MAX: u64 = 16 << 20;

/// A census with what it cost.
#[derive(Debug, Clone)]
pub struct CensusRead {
    /// The census (its `consistency` says how it was read).
    pub census: Census,
    /// How long the target was stopped, all pauses together (`None` when never stopped; zero
    /// under a fixed clock, `memlens_model::clock`).
    pub paused: Option<Duration>,
    /// Bytes copied from the target.
    pub copied: u64,
    /// Code objects, functions, classes and modules by the name they carry, from the same
    /// walk (when asked for: [`read_with`]).
    pub by_module: Option<ModuleObjects>,
}

/// A census with what the walk attributed to module names and files.
type Taken = (Census, Option<ModuleObjects>);

/// Milliseconds to hold the walk after its first object, for the test that makes a target
/// exit mid-walk (`MEMLENS_TEST_HOLD_WALK_MS`); 0 otherwise.
fn test_hold_walk() -> Duration {
    std::env::var("MEMLENS_TEST_HOLD_WALK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
}

struct Reader<'a> {
    it: &'a Interpreter,
    mem: &'a RemoteMemory,
    budget: Rc<MemoryBudget>,
    hold: Duration,
    copied: u64,
    paused: Duration,
    consistency: Consistency,
    by_module: Extras,
}

/// Takes a census of the process of `it`, with at most `cap` bytes of memlens's own memory.
/// With `stop` (which stops every thread of the target and returns the guard that resumes
/// it), the census is exact as of a pause; without, the target is never stopped and the
/// census is flagged inexact. Fails with [`Error::Incomplete`] when more than 0.1% of the
/// objects reached could not be read.
pub fn read(
    it: &Interpreter,
    mem: &RemoteMemory,
    stop: Option<&dyn Fn() -> Result<Pause>>,
    cap: u64,
) -> Result<CensusRead> {
    read_with(it, mem, stop, cap, false)
}

/// [`read`], and with `by_module` the attribution of code objects, functions, classes and
/// modules to module names and files ([`ModuleObjects`]), from the same consistent walk and
/// within the same cap.
pub fn read_with(
    it: &Interpreter,
    mem: &RemoteMemory,
    stop: Option<&dyn Fn() -> Result<Pause>>,
    cap: u64,
    extras: impl Into<Extras>,
) -> Result<CensusRead> {
    let by_module = extras.into();
    let mut r = Reader {
        it,
        mem,
        budget: Rc::new(MemoryBudget::new(cap)),
        hold: test_hold_walk(),
        copied: 0,
        paused: Duration::ZERO,
        consistency: Consistency::default(),
        by_module,
    };
    let (mut census, by_module) = match stop {
        None => r.nonblocking()?,
        Some(stop) => match r.verified(stop)? {
            Some(c) => c,
            None => r.paused(stop)?,
        },
    };
    log::debug!(
        "census of {}: {:?}, memlens's own census memory peaked at {} KiB",
        it.pid,
        r.consistency,
        r.budget.peak() >> 10
    );
    census.consistency = r.consistency;
    super::result::check_complete(&census, it.pid)?;
    Ok(CensusRead {
        census,
        paused: stop.map(|_| r.paused),
        copied: r.copied,
        by_module,
    })
}

/// CPU time the process's threads have run (nanoseconds, `/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let ran = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        sum = sum.saturating_add(ran.unwrap_or(0));
    }
    Some(sum)
}

/// Waits (at most 1 s) until the resumed target has run for a while (100 µs of CPU), so the
/// next stop does not land where the last one did.
fn wait_for_progress(pid: u32) {
    let Some(start) = cpu_ns(pid) else { return };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match cpu_ns(pid) {
            Some(now) if now >= start.saturating_add(100_000) => return,
            Some(_) => std::thread::sleep(Duration::from_micros(200)),
            None => return,
        }
    }
}

/// Readable regions of the process and their total size.
fn regions(pid: u32) -> Result<(Vec<(u64, u64)>, u64)> {
    let r = merge_regions(vm::readable_regions(pid)?);
    let total = r.iter().map(|(s, e)| e - s).sum();
    Ok((r, total))
}

impl Reader<'_> {
    fn pid(&self) -> u32 {
        self.it.pid
    }

    /// One walk through a fresh cache; returns the census (or the walk's error) and what the
    /// cache recorded.
    fn walk(&mut self, log: bool) -> Result<(Result<Taken>, Finished)> {
        let (regions, readable) = regions(self.pid())?;
        // the copies take at most half the cap
        let copies = CENSUS_CACHE.min(self.budget.cap() / 2);
        let mut cache = CachedMemory::new(self.mem, regions, copies, self.budget.clone())
            .refresh_from(self.pid());
        if log {
            cache = cache.with_log();
        }
        let census = take_with(
            self.it,
            &cache,
            self.budget.clone(),
            readable,
            self.hold,
            self.by_module,
        );
        let mismatches = cache.mismatches();
        let finished = cache.finish();
        log::debug!(
            "census walk: {:?}, {} pages logged",
            finished.stats,
            finished.log.as_ref().map_or(0, |l| l.pages())
        );
        self.copied += finished.stats.copied;
        if mismatches > 0 {
            log::debug!("census: {mismatches} pages changed between two copies");
            return Ok((
                Err(Error::Inconsistent {
                    pid: self.pid(),
                    why: "pages changed while they were read".into(),
                }),
                finished,
            ));
        }
        Ok((census, finished))
    }

    fn nonblocking(&mut self) -> Result<Taken> {
        let mut last = None;
        for _ in 0..NONBLOCKING_WALKS {
            self.consistency.attempts += 1;
            match self.walk(false)?.0 {
                Ok(c) => return Ok(c),
                Err(e @ Error::BrokenGcList { .. }) | Err(e @ Error::Inconsistent { .. }) => {
                    log::debug!("census: {e}; walking again");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Inconsistent {
            pid: self.pid(),
            why: format!(
                "the GC lists changed under each of {NONBLOCKING_WALKS} walks without a pause ({}); try without --nonblocking",
                last.map_or_else(String::new, |e| e.to_string())
            ),
        })
    }

    /// Stops the target; a collection running then resumes it, waits for the collection's end
    /// and stops it again (bounded).
    fn stop_outside_collection(&mut self, stop: &dyn Fn() -> Result<Pause>) -> Result<Pause> {
        let state = gc::state_address(self.it)?;
        let flag = state + self.it.layout.gc_collecting;
        loop {
            let p = stop()?;
            if self.mem.read_i32(flag)? == 0 {
                return Ok(p);
            }
            self.paused += reported(p.resume());
            self.consistency.collections_waited += 1;
            if self.consistency.collections_waited > MAX_COLLECTION_WAITS {
                return Err(Error::Inconsistent {
                    pid: self.pid(),
                    why: format!(
                        "a garbage collection was running at each of {MAX_COLLECTION_WAITS} pauses"
                    ),
                });
            }
            let deadline = Instant::now() + COLLECTION_WAIT;
            while self.mem.read_i32(flag)? != 0 {
                if Instant::now() > deadline {
                    return Err(Error::Inconsistent {
                        pid: self.pid(),
                        why: format!(
                            "a garbage collection has run for more than {COLLECTION_WAIT:?}"
                        ),
                    });
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }

    /// Walks of the running target, each verified in a short pause. `None` when none could
    /// be verified.
    fn verified(&mut self, stop: &dyn Fn() -> Result<Pause>) -> Result<Option<Taken>> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..WALKS_WHILE_RUNNING {
            self.consistency.attempts += 1;
            let (census, finished) = self.walk(true)?;
            let census = match census {
                Ok(c) => c,
                Err(e @ Error::BrokenGcList { .. }) | Err(e @ Error::Inconsistent { .. }) => {
                    log::debug!("census: {e}; walking again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (Some(log), Some(failed)) = (finished.log, finished.failed) else {
                log::debug!("census: too many failed reads to check them again");
                continue;
            };
            let pause = self.stop_outside_collection(stop)?;
            let started = Instant::now();
            let stop_at = (log.pages() / 1000).max(16);
            let checked = log
                .verify(self.mem, threads, stop_at)
                .map_err(Error::from)
                .and_then(|v| Ok((v, self.failures_still_fail(&failed)?)));
            self.paused += reported(pause.resume());
            let (v, failures_hold) = checked?;
            log::debug!(
                "census: verified {} pages in {:?}: {} changed, failed reads {}",
                v.pages,
                started.elapsed(),
                v.changed,
                if failures_hold {
                    "still fail"
                } else {
                    "now succeed"
                }
            );
            if v.changed == 0 && failures_hold {
                self.consistency.method = Method::Verified;
                self.consistency.pages_verified = v.pages;
                self.consistency.pause_us = self.paused.as_micros() as u64;
                return Ok(Some(census));
            }
            // Changes on many pages (the comparison stops there) mean a busy heap: another
            // walk of the running target would fail the same way. A few pages mean a rare
            // write (a counter, a cache): worth another walk.
            if v.changed >= stop_at {
                log::debug!("census: the heap changes all over; no second walk while it runs");
                break;
            }
        }
        Ok(None)
    }

    /// Whether every read that failed during the walk fails in the pause too.
    fn failures_still_fail(&self, failed: &[(u64, u64)]) -> Result<bool> {
        if failed.is_empty() {
            return Ok(true);
        }
        let (regions, _) = regions(self.pid())?;
        let mut buf = Vec::new();
        let mut reread = 0u64;
        for &(addr, len) in failed {
            if len <= RECHECK_READ_MAX {
                reread += len;
                if reread > RECHECK_TOTAL_MAX {
                    // too much to read again in a pause: this walk is not verified
                    return Ok(false);
                }
                buf.resize(len as usize, 0);
                match self.mem.read(addr, &mut buf) {
                    Ok(()) => return Ok(false),
                    Err(memlens_remote::Error::Unreadable { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                let i = regions.partition_point(|r| r.1 <= addr);
                if regions
                    .get(i)
                    .is_some_and(|r| r.0 <= addr && addr.saturating_add(len) <= r.1)
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The whole walk while the target is stopped. A stop can land inside the few
    /// instructions that link an object into a generation list (the list then ends in a null
    /// link for a moment): such a walk is thrown away and the target stopped again, a bounded
    /// number of times.
    fn paused(&mut self, stop: &dyn Fn() -> Result<Pause>) -> Result<Taken> {
        log::info!(
            "census of {}: the heap kept changing under {} walks; walking it stopped",
            self.pid(),
            self.consistency.attempts
        );
        self.consistency.method = Method::Paused;
        let mut tries = 0;
        loop {
            tries += 1;
            let pause = self.stop_outside_collection(stop)?;
            let walked = self.walk(false);
            self.paused += reported(pause.resume());
            self.consistency.pause_us = self.paused.as_micros() as u64;
            match walked?.0 {
                Err(e @ Error::BrokenGcList { .. }) if tries < STOPPED_WALKS => {
                    log::debug!("census: {e} while stopped (mid-update); stopping it again");
                    // On a busy machine a resumed thread may not run before the next stop and
                    // would be caught at the very same instruction: let it run first.
                    wait_for_progress(self.pid());
                }
                other => return other,
            }
        }
    }
}
