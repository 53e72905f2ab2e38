//! A bounded read cache that copies the target's memory in chunks of 1 MiB, so that walking
//! millions of objects costs a few hundred system calls instead of millions, while memlens's
//! own memory stays under a cap (least-recently-used chunks are dropped).
//!
//! A chunk is a 1 MiB-aligned range of addresses; each of its pages is either copied (it lies
//! in a readable mapping) or marked unreadable, whatever the mappings that share the chunk.
//! Reads of any length go through the chunks. With a [`PageLog`] the cache records the words
//! every read covers, hashes pages as chunks leave, and checks pages copied again, for the
//! consistency proof of [`PageLog::verify`]. Failed reads are counted and kept (up to a bound)
//! so that they can be checked again in the pause.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bitmap::AddrMap;
use crate::budget::MemoryBudget;
use crate::error::{Error, Result};
use crate::memory::ProcessMemory;
use crate::pagelog::{hash_pages, PageLog, PAGE};
use crate::sealer::Sealer;

/// Above every user-space address (x86_64 and aarch64): reads there fail without a look.
const MAX_ADDR: u64 = 1 << 57;
/// Chunk size: one pymalloc arena on 3.10+.
pub const CHUNK: u64 = 1 << 20;
const PAGES: usize = (CHUNK / PAGE) as usize;
/// Failed reads kept for the re-check in the pause; more make the walk unverifiable.
const MAX_FAILED_KEPT: usize = 1 << 16;
/// Times the mappings are read again when a read falls outside them.
const MAX_REFRESHES: u32 = 8;

struct Slot {
    base: u64,
    data: Vec<u8>,
    valid: [u64; PAGES / 64],
    /// Words read from this copy, one bit per 8 bytes (empty without a log).
    used: Vec<u64>,
    stamp: u64,
}

/// Words of the used-bits of a slot.
const USED_WORDS: usize = (CHUNK / 8 / 64) as usize;

/// Marks the words of `[off, off + len)` of a slot as read (`len` > 0).
#[inline(always)]
fn mark(used: &mut [u64], off: u64, len: u64) {
    if used.is_empty() {
        return;
    }
    let (w0, w1) = (off >> 3, (off + len - 1) >> 3);
    if w0 >> 6 == w1 >> 6 {
        used[(w0 >> 6) as usize] |= (!0u64 >> (63 - (w1 - w0))) << (w0 & 63);
    } else {
        for w in w0..=w1 {
            used[(w >> 6) as usize] |= 1 << (w & 63);
        }
    }
}

impl Slot {
    fn covers(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.base) < CHUNK
    }
    fn pages_valid(&self, off: usize, len: usize) -> bool {
        let (first, last) = (off / PAGE as usize, (off + len - 1) / PAGE as usize);
        (first..=last).all(|p| self.valid[p >> 6] & (1 << (p & 63)) != 0)
    }
}

/// Counters of one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes copied from the target (reloads included).
    pub copied: u64,
    /// Chunks copied.
    pub loads: u64,
    /// Reads that failed (some byte unreadable).
    pub failed_reads: u64,
    /// Bytes those reads asked for.
    pub failed_bytes: u64,
}

struct State {
    slots: Vec<Slot>,
    index: AddrMap<usize>,
    last: usize,
    /// The slot used before `last` (reads often alternate between two chunks).
    prev: usize,
    clock: u64,
    /// Readable `[start, end)` ranges, sorted, adjacent ones merged.
    regions: Vec<(u64, u64)>,
    last_region: usize,
    refreshes: u32,
    log: Option<PageLog>,
    /// Hashes copies leaving the cache on another thread (with a log).
    sealer: Option<Sealer>,
    failed: Vec<(u64, u64)>,
    failed_overflow: bool,
    stats: CacheStats,
}

/// Caches reads of `inner` in chunks, within a memory budget.
pub struct CachedMemory<M> {
    inner: M,
    pid: Option<u32>,
    max_slots: usize,
    logging: bool,
    budget: Rc<MemoryBudget>,
    state: RefCell<State>,
}

/// Rounds ranges out to whole pages (mappings are made of whole pages; a copied page is then
/// always copied whole), sorts them and merges those that touch.
pub fn merge_regions(mut regions: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    regions.retain(|r| r.0 < r.1);
    for r in regions.iter_mut() {
        r.0 &= !(PAGE - 1);
        r.1 = r.1.saturating_add(PAGE - 1) & !(PAGE - 1);
    }
    regions.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(regions.len());
    for r in regions {
        match out.last_mut() {
            Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
            _ => out.push(r),
        }
    }
    out
}

/// What the cache hands back at the end of a walk.
#[derive(Debug)]
pub struct Finished {
    /// The record of what was read (when the cache kept one), every page hashed.
    pub log: Option<PageLog>,
    /// Failed reads `(addr, len)`, when all of them were kept.
    pub failed: Option<Vec<(u64, u64)>>,
    /// Counters.
    pub stats: CacheStats,
}

impl<M: ProcessMemory> CachedMemory<M> {
    /// A cache over `inner` limited to `regions` (readable `[start, end)` address ranges),
    /// holding at most `cache_bytes` of copies, all of it charged to `budget`. With a `pid`,
    /// `/proc/PID/maps` is read again (a few times at most) when a read falls outside them.
    pub fn new(
        inner: M,
        regions: Vec<(u64, u64)>,
        cache_bytes: u64,
        budget: Rc<MemoryBudget>,
    ) -> Self {
        CachedMemory {
            inner,
            pid: None,
            max_slots: (cache_bytes / CHUNK).max(2) as usize,
            logging: false,
            budget,
            state: RefCell::new(State {
                slots: Vec::new(),
                index: AddrMap::default(),
                last: usize::MAX,
                prev: usize::MAX,
                clock: 0,
                regions: merge_regions(regions),
                last_region: 0,
                refreshes: 0,
                log: None,
                sealer: None,
                failed: Vec::new(),
                failed_overflow: false,
                stats: CacheStats::default(),
            }),
        }
    }

    /// Reads `/proc/PID/maps` again when a read falls outside the known regions.
    pub fn refresh_from(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Records every read in a [`PageLog`] (see the module documentation).
    pub fn with_log(mut self) -> Self {
        {
            let mut st = self.state.borrow_mut();
            let log = PageLog::new(self.budget.clone());
            st.sealer = Sealer::start(log.seed());
            st.log = Some(log);
        }
        self.logging = true;
        self
    }

    /// The backend.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        self.state.borrow().stats
    }

    /// Pages copied twice with different contents so far (0 without a log).
    pub fn mismatches(&self) -> u64 {
        self.state
            .borrow()
            .log
            .as_ref()
            .map_or(0, PageLog::mismatches)
    }

    /// Whether `[addr, addr + len)` lies in one readable region: how a length read from the
    /// target is bounded before it is used. A range that does not is recorded as a failed
    /// read (it is checked again in the pause like one).
    pub fn contains_range(&self, addr: u64, len: u64) -> bool {
        let mut st = self.state.borrow_mut();
        let end = addr.checked_add(len);
        if let Some(r) = st.regions.get(st.last_region) {
            if r.0 <= addr && end.is_some_and(|e| e <= r.1) {
                return true;
            }
        }
        let inside = |st: &mut State| {
            let i = st.regions.partition_point(|r| r.1 <= addr);
            st.last_region = i;
            let i = st.regions.partition_point(|r| r.1 <= addr);
            st.regions
                .get(i)
                .is_some_and(|r| r.0 <= addr && addr.checked_add(len).is_some_and(|e| e <= r.1))
        };
        if inside(&mut st) {
            return true;
        }
        if self.refresh(&mut st) && inside(&mut st) {
            return true;
        }
        Self::record_failure(&mut st, addr, len);
        false
    }

    /// Whether the chunk holding `addr` is copied now (a read of it costs no system call);
    /// if so, the CPU is asked to start loading the copy of `addr` (the walk reads it soon).
    pub fn is_resident(&self, addr: u64) -> bool {
        let st = self.state.borrow();
        let base = addr & !(CHUNK - 1);
        let slot = match (st.slots.get(st.last), st.slots.get(st.prev)) {
            (Some(s), _) if s.base == base => s,
            (_, Some(s)) if s.base == base => s,
            _ => match st.index.get(&base) {
                Some(&i) => &st.slots[i],
                None => return false,
            },
        };
        prefetch(&slot.data[(addr - base) as usize..]);
        true
    }

    /// Ends the walk: hashes every page still copied, frees the copies, and returns the log,
    /// the failed reads and the counters.
    pub fn finish(self) -> Finished {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        for i in 0..st.slots.len() {
            if let Err(e) = self.seal_slot(st, i) {
                // the walk's record is incomplete: it cannot be verified
                log::debug!("census: {e}");
                st.failed_overflow = true;
            }
        }
        if let (Some(sealer), Some(log)) = (st.sealer.as_mut(), st.log.as_mut()) {
            sealer.finish(log);
            if sealer.broken() {
                st.failed_overflow = true;
            }
        }
        self.release_sealer(st);
        let slots = std::mem::take(&mut st.slots);
        st.index.clear();
        self.budget.release(slots.len() as u64 * self.slot_bytes());
        drop(slots);
        Finished {
            log: st.log.take(),
            failed: (!st.failed_overflow).then(|| std::mem::take(&mut st.failed)),
            stats: st.stats,
        }
    }

    fn record_failure(st: &mut State, addr: u64, len: u64) {
        // Saturating: a target's own fields give the lengths, and a corrupt one asked for
        // reads near 2^64 bytes in all (fuzz: interpreter).
        st.stats.failed_reads = st.stats.failed_reads.saturating_add(1);
        st.stats.failed_bytes = st.stats.failed_bytes.saturating_add(len);
        if st.failed.len() < MAX_FAILED_KEPT {
            st.failed.push((addr, len));
        } else {
            st.failed_overflow = true;
        }
    }

    /// Reads the mappings again (bounded); returns whether they changed.
    fn refresh(&self, st: &mut State) -> bool {
        let Some(pid) = self.pid else { return false };
        if st.refreshes >= MAX_REFRESHES {
            return false;
        }
        st.refreshes += 1;
        match crate::vm::readable_regions(pid) {
            Ok(r) => {
                let r = merge_regions(r);
                let changed = r != st.regions;
                st.regions = r;
                changed
            }
            Err(e) => {
                log::debug!("re-reading the mappings of {pid}: {e}");
                false
            }
        }
    }

    /// The slot holding `base`, copying the chunk if needed.
    fn slot(&self, st: &mut State, base: u64) -> Result<usize> {
        if let Some(&i) = st.index.get(&base) {
            return Ok(i);
        }
        let i = if st.slots.len() < self.max_slots {
            self.budget
                .charge(self.slot_bytes(), "copying the target's memory")?;
            let used = if st.log.is_some() {
                vec![0u64; USED_WORDS]
            } else {
                Vec::new()
            };
            st.slots.push(Slot {
                base: u64::MAX,
                data: vec![0u8; CHUNK as usize],
                valid: [0; PAGES / 64],
                used,
                stamp: 0,
            });
            st.slots.len() - 1
        } else {
            let (i, _) = st
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.stamp)
                .ok_or(Error::Unreadable { addr: base, len: 0 })?;
            let old = st.slots[i].base;
            if old != u64::MAX {
                self.seal_slot(st, i)?;
                st.index.remove(&old);
            }
            i
        };
        st.slots[i].base = u64::MAX;
        self.load(st, i, base)?;
        st.index.insert(base, i);
        Ok(i)
    }

    fn load(&self, st: &mut State, i: usize, base: u64) -> Result<()> {
        let end = base.saturating_add(CHUNK);
        let first = st.regions.partition_point(|r| r.1 <= base);
        let pieces: Vec<(u64, u64)> = st.regions[first..]
            .iter()
            .take_while(|r| r.0 < end)
            .map(|r| (r.0.max(base), r.1.min(end)))
            .collect();
        let slot = &mut st.slots[i];
        slot.valid = [0; PAGES / 64];
        slot.used.fill(0);
        let mut copied = 0;
        for (s, e) in pieces {
            let (off, len) = ((s - base) as usize, (e - s) as usize);
            match self.inner.read(s, &mut slot.data[off..off + len]) {
                Ok(()) => {
                    set_valid(&mut slot.valid, off, len);
                    copied += len as u64;
                }
                Err(Error::Unreadable { .. }) => {
                    // the mapping changed since it was listed: page by page
                    for p in (off..off + len).step_by(PAGE as usize) {
                        let at = base + p as u64;
                        let page = &mut slot.data[p..p + PAGE as usize];
                        match self.inner.read(at, page) {
                            Ok(()) => {
                                set_valid(&mut slot.valid, p, PAGE as usize);
                                copied += PAGE;
                            }
                            Err(Error::Unreadable { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        slot.base = base;
        st.stats.copied += copied;
        st.stats.loads += 1;
        if let Some(log) = st.log.as_mut() {
            if let Some(sealer) = st.sealer.as_mut() {
                sealer.wait_for(log, base);
            }
            let s = &st.slots[i];
            log.check(s.base, &s.data, &s.valid);
        }
        Ok(())
    }

    /// The copy in slot `i` leaves the cache: its used words join the log, and the pages that
    /// gained words are hashed, on the hashing thread when there is one.
    fn seal_slot(&self, st: &mut State, i: usize) -> Result<()> {
        let Some(log) = st.log.as_mut() else {
            return Ok(());
        };
        let s = &mut st.slots[i];
        if s.base == u64::MAX {
            return Ok(());
        }
        let pending = log.merge(s.base, &s.valid, &s.used)?;
        if pending.is_empty() {
            return Ok(());
        }
        let pending = match st.sealer.as_mut() {
            Some(sealer) => {
                if sealer.needs_buffer() {
                    self.budget.charge(CHUNK, "hashing copies")?;
                }
                let data = std::mem::take(&mut s.data);
                match sealer.submit(log, s.base, data, pending) {
                    Ok(replacement) => {
                        s.data = replacement;
                        return Ok(());
                    }
                    Err((data, pending)) => {
                        s.data = data;
                        pending
                    }
                }
            }
            None => pending,
        };
        let hashes = hash_pages(log.seed(), &s.data, &pending);
        log.store(s.base, &hashes);
        Ok(())
    }

    /// The common case: `buf` lies on one or two copied pages of the chunk of the last read.
    /// `None` sends the read to the general path.
    #[inline(always)]
    fn read_fast(&self, st: &mut State, addr: u64, buf: &mut [u8]) -> Option<Result<()>> {
        let slot = st.slots.get_mut(st.last)?;
        let off = addr.wrapping_sub(slot.base);
        let len = buf.len() as u64;
        if len == 0 || off >= CHUNK || len > CHUNK - off {
            return None;
        }
        let (p0, p1) = ((off >> 12) as usize, ((off + len - 1) >> 12) as usize);
        if p1 > p0 + 1
            || slot.valid[p0 >> 6] & (1 << (p0 & 63)) == 0
            || slot.valid[p1 >> 6] & (1 << (p1 & 63)) == 0
        {
            return None;
        }
        buf.copy_from_slice(&slot.data[off as usize..(off + len) as usize]);
        mark(&mut slot.used, off, len);
        Some(Ok(()))
    }

    /// Reads `N` bytes, through the fast path when it applies.
    #[inline(always)]
    fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        {
            let mut guard = self.state.borrow_mut();
            if let Some(r) = self.read_fast(&mut guard, addr, &mut b) {
                return r.map(|()| b);
            }
        }
        self.read(addr, &mut b)?;
        Ok(b)
    }

    /// Copies one piece that lies in one chunk; marks it in the log.
    fn read_piece(&self, st: &mut State, addr: u64, buf: &mut [u8]) -> Result<()> {
        let base = addr & !(CHUNK - 1);
        let i = if st.last < st.slots.len() && st.slots[st.last].base == base {
            st.last
        } else if st.prev < st.slots.len() && st.slots[st.prev].base == base {
            std::mem::swap(&mut st.last, &mut st.prev);
            st.clock += 1;
            let i = st.last;
            st.slots[i].stamp = st.clock;
            i
        } else {
            let i = self.slot(st, base)?;
            st.prev = st.last;
            st.last = i;
            // least recently used, as of the last switch to each chunk
            st.clock += 1;
            st.slots[i].stamp = st.clock;
            i
        };
        let off = (addr - base) as usize;
        let slot = &mut st.slots[i];
        debug_assert!(slot.covers(addr));
        if !slot.pages_valid(off, buf.len()) {
            return Err(Error::Unreadable {
                addr,
                len: buf.len(),
            });
        }
        buf.copy_from_slice(&slot.data[off..off + buf.len()]);
        mark(&mut slot.used, off as u64, buf.len() as u64);
        Ok(())
    }

    fn read_locked(&self, st: &mut State, addr: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = addr.checked_add(done as u64).ok_or(Error::Unreadable {
                addr,
                len: buf.len(),
            })?;
            let n = (buf.len() - done).min((CHUNK - (at & (CHUNK - 1))) as usize);
            self.read_piece(st, at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// Hints the CPU to load the cache line at the start of `bytes`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    // SAFETY: prefetching is a hint without architectural effect; the pointer is in bounds of
    // a live slice (and a prefetch of any address never faults anyway).
    unsafe {
        core::arch::x86_64::_mm_prefetch(
            bytes.as_ptr().cast::<i8>(),
            core::arch::x86_64::_MM_HINT_T0,
        )
    }
}

/// No prefetch hint on other architectures.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch(_bytes: &[u8]) {}

impl<M> CachedMemory<M> {
    /// Stops the hashing thread and gives back the buffers it made.
    fn release_sealer(&self, st: &mut State) {
        if let Some(sealer) = st.sealer.take() {
            self.budget.release(sealer.buffers_made() as u64 * CHUNK);
        }
    }

    /// Memory of one slot: the copy, and the used-bits with a log.
    fn slot_bytes(&self) -> u64 {
        CHUNK
            + if self.logging {
                USED_WORDS as u64 * 8
            } else {
                0
            }
    }
}

impl<M> Drop for CachedMemory<M> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        let n = st.slots.len() as u64;
        let made = st.sealer.take().map_or(0, |s| s.buffers_made() as u64);
        self.budget.release(n * self.slot_bytes() + made * CHUNK);
    }
}

fn set_valid(valid: &mut [u64; PAGES / 64], off: usize, len: usize) {
    for p in off / PAGE as usize..(off + len).div_ceil(PAGE as usize) {
        valid[p >> 6] |= 1 << (p & 63);
    }
}

impl<M: ProcessMemory> ProcessMemory for CachedMemory<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > MAX_ADDR)
        {
            return Err(Error::Unreadable {
                addr,
                len: buf.len(),
            });
        }
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        if let Some(r) = self.read_fast(st, addr, buf) {
            return r;
        }
        match self.read_locked(st, addr, buf) {
            Err(Error::Unreadable { .. }) => {
                // outside the regions known when its chunk was copied: the mappings may have
                // grown since; read them again (a few times at most) and copy afresh
                if self.refresh(st) {
                    let stale: Vec<u64> = st.index.keys().copied().collect();
                    for base in stale {
                        if let Some(i) = st.index.remove(&base) {
                            self.seal_slot(st, i)?;
                            st.slots[i].base = u64::MAX;
                            st.slots[i].stamp = 0;
                        }
                    }
                    st.last = usize::MAX;
                    st.prev = usize::MAX;
                    if self.read_locked(st, addr, buf).is_ok() {
                        return Ok(());
                    }
                }
                // A process that exited has no mappings left to copy from: ask the backend
                // itself, which says so (ProcessGone) rather than "unreadable".
                let mut probe = [0u8; 1];
                if let Err(e @ (Error::ProcessGone { .. } | Error::PermissionDenied { .. })) =
                    self.inner.read(addr, &mut probe)
                {
                    return Err(e);
                }
                Self::record_failure(st, addr, buf.len() as u64);
                Err(Error::Unreadable {
                    addr,
                    len: buf.len(),
                })
            }
            other => other,
        }
    }

    fn prefetch(&self, addr: u64) {
        self.is_resident(addr);
    }

    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64> {
        self.read_array(addr).map(u64::from_ne_bytes)
    }

    #[inline]
    fn read_i64(&self, addr: u64) -> Result<i64> {
        self.read_array(addr).map(i64::from_ne_bytes)
    }

    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32> {
        self.read_array(addr).map(u32::from_ne_bytes)
    }

    #[inline]
    fn read_i32(&self, addr: u64) -> Result<i32> {
        self.read_array(addr).map(i32::from_ne_bytes)
    }

    #[inline]
    fn read_u8(&self, addr: u64) -> Result<u8> {
        self.read_array::<1>(addr).map(|b| b[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SliceMemory;

    fn budget() -> Rc<MemoryBudget> {
        Rc::new(MemoryBudget::new(1 << 30))
    }

    #[test]
    fn reads_across_chunks_and_outside_regions() {
        let mut m = SliceMemory::new();
        let base = 3 * CHUNK - PAGE;
        let bytes: Vec<u8> = (0..2 * PAGE).map(|i| i as u8).collect();
        m.map(base, bytes.clone());
        let c = CachedMemory::new(m, vec![(base, base + 2 * PAGE)], 4 * CHUNK, budget());
        let mut b = [0u8; 16];
        c.read(base + PAGE - 8, &mut b).expect("spans two chunks");
        assert_eq!(&b[..], &bytes[PAGE as usize - 8..PAGE as usize + 8]);
        assert_eq!(c.read_u8(base + 2 * PAGE - 1).ok(), Some(255));
        assert!(c.read_u8(base + 2 * PAGE).is_err());
        assert_eq!(c.stats().failed_reads, 1);
        assert_eq!(c.stats().copied, 2 * PAGE);
    }

    /// A region given in bytes covers whole pages: a page is copied whole or not at all.
    #[test]
    fn regions_are_whole_pages() {
        let mut m = SliceMemory::new();
        let base = 7 * CHUNK;
        m.map(base, (0..PAGE).map(|i| (i % 251) as u8 + 1).collect());
        let c = CachedMemory::new(m, vec![(base + 8, base + 100)], 2 * CHUNK, budget());
        assert_eq!(c.read_u8(base + 200).ok(), Some(201));
        assert_eq!(c.read_u8(base + 3).ok(), Some(4));
    }

    /// Two mappings that share one chunk index and a read of more than a chunk: the defect of
    /// issue 7 (pieces keyed by chunk index overwrote each other; long reads bypassed the copy).
    #[test]
    fn mappings_sharing_a_chunk_and_long_reads() {
        let mut m = SliceMemory::new();
        let a = 5 * CHUNK + 4 * PAGE;
        let b = 5 * CHUNK + 64 * PAGE;
        let big = 3 * CHUNK + 5 * PAGE;
        let ab: Vec<u8> = (0..8 * PAGE).map(|i| (i % 251) as u8).collect();
        let bb: Vec<u8> = (0..big).map(|i| (i % 241) as u8).collect();
        m.map(a, ab.clone());
        m.map(b, bb.clone());
        let c = CachedMemory::new(
            m,
            vec![(b, b + big), (a, a + 8 * PAGE)],
            2 * CHUNK,
            budget(),
        );
        for _ in 0..2 {
            assert_eq!(
                c.read_vec(a + 100, 200).ok().as_deref(),
                Some(&ab[100..300])
            );
            assert_eq!(c.read_vec(b + 7, 300).ok().as_deref(), Some(&bb[7..307]));
            assert_eq!(
                c.read_vec(b + 5, (big - 5) as usize).ok().as_deref(),
                Some(&bb[5..]),
                "a read of three chunks through a cache of two"
            );
        }
        assert!(c.read_vec(a + 8 * PAGE - 4, 8).is_err(), "between them");
        assert!(c.contains_range(b, big));
        assert!(!c.contains_range(a, 9 * PAGE));
        let f = c.finish();
        assert_eq!(f.failed.map(|v| v.len()), Some(2));
    }

    /// A read outside the regions known at the start makes the cache read the mappings again
    /// and drop its copies; the dropped slots are then reused (this path once sealed an empty
    /// slot). The region given is not page-aligned, and `b` may follow `a` on the same page
    /// (a page copied in part was once taken as copied whole).
    #[test]
    fn mappings_read_again_when_a_read_falls_outside_them() {
        let a: Vec<u8> = (0..4 * CHUNK).map(|i| (i % 253) as u8).collect();
        let b: Vec<u8> = (0..CHUNK).map(|i| (i % 239) as u8).collect();
        let (pa, pb) = (a.as_ptr() as u64, b.as_ptr() as u64);
        let me = std::process::id();
        let mem = crate::vm::RemoteMemory::open(me).expect("opens");
        let c = CachedMemory::new(&mem, vec![(pa, pa + a.len() as u64)], 2 * CHUNK, budget())
            .refresh_from(me)
            .with_log();
        for round in 0..2 {
            for off in [0, CHUNK, 2 * CHUNK, 3 * CHUNK + 5] {
                assert_eq!(
                    c.read_u8(pa + off).ok(),
                    Some(a[off as usize]),
                    "{round} {off}"
                );
            }
            assert_eq!(
                c.read_u8(pb + 7).ok(),
                Some(b[7]),
                "{round}: found by reading maps"
            );
        }
        assert_eq!(c.mismatches(), 0);
        let f = c.finish();
        assert!(f.log.is_some_and(|l| l.pages() >= 5));
        assert_eq!(f.stats.failed_reads, 0);
    }

    /// A process that exited is gone, not unreadable, even when nothing is left to copy.
    #[test]
    fn an_exited_process_is_gone_not_unreadable() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let mem = crate::vm::RemoteMemory::open(pid).expect("opens");
        let regions = crate::vm::readable_regions(pid).expect("maps");
        let stack = regions.last().map(|r| r.0).expect("a region");
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let c = CachedMemory::new(&mem, regions, 4 * CHUNK, budget()).refresh_from(pid);
        assert!(matches!(c.read_u64(stack), Err(Error::ProcessGone { .. })));
        let c = CachedMemory::new(&mem, Vec::new(), 4 * CHUNK, budget()).refresh_from(pid);
        assert!(
            matches!(c.read_u64(stack), Err(Error::ProcessGone { .. })),
            "no regions known: {:?}",
            c.read_u64(stack)
        );
    }

    #[test]
    fn copies_stay_within_the_budget_and_a_changed_page_is_seen() {
        let budget = Rc::new(MemoryBudget::new(3 * CHUNK + PAGE));
        let mut m = SliceMemory::new();
        let bytes: Vec<u8> = vec![1; (8 * CHUNK) as usize];
        m.map(0, bytes);
        let c = CachedMemory::new(m, vec![(0, 8 * CHUNK)], 64 * CHUNK, budget.clone());
        for i in 0..3 {
            assert!(c.read_u64(i * CHUNK).is_ok());
        }
        assert!(matches!(
            c.read_u64(5 * CHUNK),
            Err(Error::MemoryCap { .. })
        ));
        drop(c);

        let mut m = SliceMemory::new();
        m.map(0, vec![2; (4 * CHUNK) as usize]);
        // two copies, their used-bits, the log and the hashing thread's two buffers
        let budget = Rc::new(MemoryBudget::new(5 * CHUNK));
        let c = CachedMemory::new(m, vec![(0, 4 * CHUNK)], 2 * CHUNK, budget.clone()).with_log();
        for i in 0..4 {
            assert!(c.read_u64(i * CHUNK + 8).is_ok());
        }
        // chunk 0 was dropped; read again, it is unchanged
        assert!(c.read_u64(8).is_ok());
        assert_eq!(c.mismatches(), 0);
        let f = c.finish();
        let log = f.log.expect("log");
        assert_eq!(log.pages(), 4);
        let mut changed = SliceMemory::new();
        let mut bytes = vec![2; (4 * CHUNK) as usize];
        bytes[(2 * CHUNK + 8) as usize] = 3;
        changed.map(0, bytes);
        assert_eq!(log.verify(&changed, 2, 1).expect("reads").changed, 1);
        assert!(budget.peak() <= 5 * CHUNK);
        drop(log);
        assert_eq!(budget.used(), 0, "all given back");
    }
}
