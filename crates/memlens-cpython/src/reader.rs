//! Reading a process's Python view in few system calls.
//!
//! [`PageReader`] serves the many small reads of the GC state, `sys.modules` and thread states
//! from whole pages read once (one `pread` of `/proc/PID/mem` per run of pages instead of one
//! per field). pymalloc's pool headers are one small read per pool (whole arenas would copy
//! every object), so for a tree of forked workers [`SharedPages`] lets a worker reuse what was
//! read in another process when both map the very same physical page:
//!
//! - the kernel's `/proc/PID/pagemap` gives each page's frame number (root with
//!   `CAP_SYS_ADMIN` only; without it nothing is shared and every page is read) and whether
//!   the page is mapped by one process only;
//! - a piece read in process S is kept only if its page was shared (mapped more than once)
//!   when read: a shared anonymous page is read-only in every process that maps it;
//! - process W reuses the piece for a page of its own only if, during W's read, W maps the
//!   same frame shared, and S still maps that frame at the same address (re-read now).
//!
//! The content of a frame can change between S's read and W's only if the frame stopped being
//! shared, was written by its single owner and was shared again; the last step needs that
//! owner to fork, and S (which existed before) can then not map it at the same address again.
//! KSM can also merge pages, so nothing is shared while KSM runs.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use memlens_procfs::pagemap::{Entry, Pagemap};
use memlens_remote::ProcessMemory;

/// Pagemap entries read at a time (one 4 KiB read: 2 MiB of 4 KiB pages).
const WINDOW: u64 = 512;
/// Reads longer than this many pages go straight to the target, uncached.
const MAX_CACHED_RUN: u64 = 64;
/// At most this many pages are kept per reader.
const MAX_PAGES: usize = 8192;
/// Bytes [`SharedPages`] keeps at most.
const MAX_SHARED_BYTES: usize = 64 << 20;
/// Processes whose pages [`SharedPages`] keeps at most (each holds its `pagemap` open; in a
/// forked tree the root provides nearly every piece).
const MAX_SOURCES: usize = 64;

/// How many system calls and bytes a read took (for logs, tests and the benches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads of the target's memory.
    pub reads: u64,
    /// Bytes copied from the target.
    pub bytes: u64,
    /// Reads of `pagemap` files.
    pub pagemap_reads: u64,
    /// Small reads served by a page another process read.
    pub reused: u64,
}

/// A piece of a physical page, read in process `source` at its virtual page `vpn`.
#[derive(Debug)]
struct Piece {
    source: u32,
    vpn: u64,
    offset: u32,
    data: Box<[u8]>,
}

impl Piece {
    fn covers(&self, offset: u32, len: usize) -> bool {
        self.offset <= offset && (offset - self.offset) as usize + len <= self.data.len()
    }
}

/// A hasher for page frame numbers: they come from the kernel, not from the target, so a
/// multiply-and-fold is enough (SipHash cost more than the lookups it guarded).
#[derive(Debug, Default, Clone, Copy)]
struct FrameHasher(u64);

impl std::hash::Hasher for FrameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

type ByFrame<V> = HashMap<u64, V, std::hash::BuildHasherDefault<FrameHasher>>;

/// A reuse whose source is checked once every process of the tree was read.
#[derive(Debug, Clone, Copy)]
struct Use {
    reader: u32,
    source: u32,
    vpn: u64,
    frame: u64,
}

#[derive(Debug, Default)]
struct Shared {
    pieces: ByFrame<Vec<Piece>>,
    sources: HashMap<u32, Arc<Pagemap>>,
    bytes: usize,
}

/// Pieces of physical pages read in one process and reusable in another that maps the same
/// page (see the module documentation). One per tree snapshot; safe to share between threads.
#[derive(Debug)]
pub struct SharedPages {
    inner: RwLock<Shared>,
    uses: Mutex<Vec<Use>>,
    enabled: AtomicBool,
    reused: AtomicU64,
    /// Sources are checked by [`SharedPages::confirm`] at the end, not at each reuse.
    deferred: bool,
}

fn ksm_running() -> bool {
    std::fs::read("/sys/kernel/mm/ksm/run").is_ok_and(|v| v.first() == Some(&b'1'))
}

impl SharedPages {
    /// An empty set (disabled when KSM runs); each reuse checks its source at once.
    pub fn new() -> SharedPages {
        SharedPages {
            inner: RwLock::new(Shared::default()),
            uses: Mutex::new(Vec::new()),
            enabled: AtomicBool::new(!ksm_running()),
            reused: AtomicU64::new(0),
            deferred: false,
        }
    }

    /// An empty set whose reuses are checked together by [`SharedPages::confirm`] once every
    /// process was read: each source's `pagemap` is then read once, not once per reader. Until
    /// confirmed, the figures built on reused pieces are provisional.
    pub fn deferred() -> SharedPages {
        SharedPages {
            deferred: true,
            ..SharedPages::new()
        }
    }

    /// Checks every reuse made since the last call (deferred sets): the source must still map
    /// the frame at the same address, shared. Returns the processes whose reads used a piece
    /// that fails this; read them again without sharing.
    pub fn confirm(&self) -> HashSet<u32> {
        let uses = std::mem::take(&mut *self.uses.lock().unwrap_or_else(|p| p.into_inner()));
        let sources = self.read().sources.clone();
        let mut windows: HashMap<(u32, u64), Vec<Entry>> = HashMap::new();
        let mut bad = HashSet::new();
        for u in uses {
            let key = (u.source, u.vpn / WINDOW);
            let entries = windows.entry(key).or_insert_with(|| {
                sources
                    .get(&u.source)
                    .and_then(|m| m.read(key.1 * WINDOW, WINDOW as usize).ok())
                    .unwrap_or_default()
            });
            let now = entries.get((u.vpn % WINDOW) as usize).copied();
            if !now.is_some_and(|e| e.frame() == Some(u.frame) && !e.exclusive()) {
                bad.insert(u.reader);
            }
        }
        bad
    }

    /// Whether pieces are shared (frame numbers visible, KSM off).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Small reads served from another process's pages so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    // A panic while holding a lock leaves plain data behind: keep using it.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Shared> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies into `buf` the bytes at `offset` of a piece of `frame` read in a process other
    /// than `reader` and not in `skip`; returns where it was read (source, its virtual page).
    fn take(
        &self,
        frame: u64,
        offset: u32,
        buf: &mut [u8],
        reader: u32,
        skip: &[u32],
    ) -> Option<(u32, u64)> {
        let g = self.read();
        let p = g.pieces.get(&frame)?.iter().find(|p| {
            p.source != reader && !skip.contains(&p.source) && p.covers(offset, buf.len())
        })?;
        let at = (offset - p.offset) as usize;
        buf.copy_from_slice(&p.data[at..at + buf.len()]);
        Some((p.source, p.vpn))
    }

    fn record(&self, uses: &mut Vec<Use>) {
        if !uses.is_empty() {
            self.uses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(uses);
        }
    }

    fn insert(&self, frame: u64, piece: Piece, pagemap: impl FnOnce() -> Option<Pagemap>) {
        let mut g = self.write();
        if g.bytes + piece.data.len() > MAX_SHARED_BYTES {
            return;
        }
        if g.sources.len() >= MAX_SOURCES && !g.sources.contains_key(&piece.source) {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = g.sources.entry(piece.source) {
            match pagemap() {
                Some(m) => {
                    v.insert(Arc::new(m));
                }
                None => return,
            }
        }
        g.bytes += piece.data.len();
        g.pieces.entry(frame).or_default().push(piece);
    }

    fn source(&self, pid: u32) -> Option<Arc<Pagemap>> {
        self.read().sources.get(&pid).cloned()
    }
}

impl Default for SharedPages {
    fn default() -> Self {
        Self::new()
    }
}

/// A page-caching reader of one process, for one read of its Python view (drop it when the
/// pause ends: pages are kept only for its lifetime).
pub struct PageReader<'a, M> {
    mem: &'a M,
    pid: u32,
    page: u64,
    pages: RefCell<HashMap<u64, Box<[u8]>>>,
    shared: Option<&'a SharedPages>,
    own_map: RefCell<Option<Option<Pagemap>>>,
    own_windows: RefCell<ByFrame<Vec<Entry>>>,
    source_windows: RefCell<HashMap<(u32, u64), Vec<Entry>>>,
    /// Reuses to confirm later (a deferred [`SharedPages`]), handed over on drop.
    uses: RefCell<Vec<Use>>,
    counts: Cell<ReadCounts>,
}

impl<'a, M: ProcessMemory> PageReader<'a, M> {
    /// A reader of process `pid` through `mem`; with `shared`, pool headers may come from
    /// pages another process read (see the module documentation).
    pub fn new(mem: &'a M, pid: u32, shared: Option<&'a SharedPages>) -> Self {
        PageReader {
            mem,
            pid,
            page: memlens_procfs::page_size(),
            pages: RefCell::new(HashMap::new()),
            shared,
            own_map: RefCell::new(None),
            own_windows: RefCell::new(ByFrame::default()),
            source_windows: RefCell::new(HashMap::new()),
            uses: RefCell::new(Vec::new()),
            counts: Cell::new(ReadCounts::default()),
        }
    }

    /// What the reads cost so far.
    pub fn counts(&self) -> ReadCounts {
        self.counts.get()
    }

    fn count(&self, f: impl FnOnce(&mut ReadCounts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    fn raw_read(&self, addr: u64, buf: &mut [u8]) -> memlens_remote::Result<()> {
        self.count(|c| {
            c.reads += 1;
            c.bytes += buf.len() as u64;
        });
        self.mem.read(addr, buf)
    }

    /// Reads the missing blocks of `first..=last` into the cache, one read per run.
    fn fill(&self, first: u64, last: u64) -> memlens_remote::Result<()> {
        let p = self.page;
        let mut vpn = first;
        while vpn <= last {
            if self.pages.borrow().contains_key(&vpn) {
                vpn += 1;
                continue;
            }
            let start = vpn;
            while vpn <= last && !self.pages.borrow().contains_key(&vpn) {
                vpn += 1;
            }
            let mut run = vec![0u8; ((vpn - start) * p) as usize];
            self.raw_read(start * p, &mut run)?;
            let mut pages = self.pages.borrow_mut();
            for (i, chunk) in run.chunks_exact(p as usize).enumerate() {
                pages.insert(start + i as u64, chunk.into());
            }
        }
        Ok(())
    }

    fn own_entry(&self, vpn: u64) -> Option<Entry> {
        let window = vpn / WINDOW;
        if let Some(w) = self.own_windows.borrow().get(&window) {
            return w.get((vpn % WINDOW) as usize).copied();
        }
        let entries = {
            let mut m = self.own_map.borrow_mut();
            let map = m
                .get_or_insert_with(|| Pagemap::open(self.pid).ok())
                .as_ref()?;
            self.count(|c| c.pagemap_reads += 1);
            map.read(window * WINDOW, WINDOW as usize).ok()?
        };
        let e = entries.get((vpn % WINDOW) as usize).copied();
        self.own_windows.borrow_mut().insert(window, entries);
        e
    }

    fn source_entry(&self, shared: &SharedPages, source: u32, vpn: u64) -> Option<Entry> {
        let key = (source, vpn / WINDOW);
        if let Some(w) = self.source_windows.borrow().get(&key) {
            return w.get((vpn % WINDOW) as usize).copied();
        }
        let map = shared.source(source)?;
        self.count(|c| c.pagemap_reads += 1);
        let entries = map
            .read(key.1 * WINDOW, WINDOW as usize)
            .unwrap_or_default();
        let e = entries.get((vpn % WINDOW) as usize).copied();
        self.source_windows.borrow_mut().insert(key, entries);
        e
    }

    /// The frame of a page of this process that is shared (mapped more than once), if the
    /// kernel shows it; turns sharing off when frames are hidden.
    fn shared_frame(&self, shared: &SharedPages, vpn: u64) -> Option<u64> {
        let e = self.own_entry(vpn)?;
        if e.present() && e.frame().is_none() {
            log::debug!("page frame numbers are hidden (no CAP_SYS_ADMIN): every page is read");
            shared.disable();
            return None;
        }
        (!e.exclusive()).then(|| e.frame()).flatten()
    }

    /// Fills `buf` with the bytes of `frame` that another process read, if still valid now
    /// (or, for a deferred set, recorded for [`SharedPages::confirm`]; see the module docs).
    fn reuse(&self, shared: &SharedPages, frame: u64, offset: u32, buf: &mut [u8]) -> bool {
        let mut tried = [0u32; 4];
        for i in 0..tried.len() {
            let Some((source, vpn)) = shared.take(frame, offset, buf, self.pid, &tried[..i]) else {
                return false;
            };
            let valid = shared.deferred || {
                let now = self.source_entry(shared, source, vpn);
                now.is_some_and(|e| e.frame() == Some(frame) && !e.exclusive())
            };
            if valid {
                if shared.deferred {
                    self.uses.borrow_mut().push(Use {
                        reader: self.pid,
                        source,
                        vpn,
                        frame,
                    });
                }
                shared.reused.fetch_add(1, Ordering::Relaxed);
                self.count(|c| c.reused += 1);
                return true;
            }
            tried[i] = source;
        }
        false
    }

    fn read_one_shared(
        &self,
        shared: &SharedPages,
        addr: u64,
        buf: &mut [u8],
    ) -> memlens_remote::Result<()> {
        let p = self.page;
        let (vpn, offset) = (addr / p, (addr % p) as u32);
        let frame = if (offset as u64) + buf.len() as u64 <= p {
            self.shared_frame(shared, vpn)
        } else {
            None
        };
        if let Some(f) = frame {
            if self.reuse(shared, f, offset, buf) {
                return Ok(());
            }
        }
        self.raw_read(addr, buf)?;
        if let Some(f) = frame {
            let piece = Piece {
                source: self.pid,
                vpn,
                offset,
                data: buf.to_vec().into_boxed_slice(),
            };
            shared.insert(f, piece, || Pagemap::open(self.pid).ok());
        }
        Ok(())
    }
}

impl<M> Drop for PageReader<'_, M> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared {
            shared.record(self.uses.get_mut());
        }
    }
}

impl<M: ProcessMemory> ProcessMemory for PageReader<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> memlens_remote::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let p = self.page;
        let end =
            addr.checked_add(buf.len() as u64 - 1)
                .ok_or(memlens_remote::Error::Unreadable {
                    addr,
                    len: buf.len(),
                })?;
        let (first, last) = (addr / p, end / p);
        if last - first >= MAX_CACHED_RUN || self.pages.borrow().len() >= MAX_PAGES {
            return self.raw_read(addr, buf);
        }
        if self.fill(first, last).is_err() {
            // A page of the run is unreadable: read exactly what was asked, for its error.
            return self.raw_read(addr, buf);
        }
        let pages = self.pages.borrow();
        let mut done = 0usize;
        for vpn in first..=last {
            let Some(page) = pages.get(&vpn) else {
                return Err(memlens_remote::Error::Unreadable {
                    addr,
                    len: buf.len(),
                });
            };
            let from = if vpn == first { (addr % p) as usize } else { 0 };
            let n = (page.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[from..from + n]);
            done += n;
        }
        Ok(())
    }

    /// Small reads scattered over many pages (pool headers): each from a page already read, a
    /// page another process read (when shared), or one read of just its bytes.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<memlens_remote::Result<()>> {
        let p = self.page;
        let shared = self.shared.filter(|s| s.enabled());
        reqs.iter_mut()
            .map(|(addr, buf)| {
                let vpn = *addr / p;
                let off = (*addr % p) as usize;
                if off + buf.len() <= p as usize {
                    if let Some(page) = self.pages.borrow().get(&vpn) {
                        buf.copy_from_slice(&page[off..off + buf.len()]);
                        return Ok(());
                    }
                }
                match shared.filter(|s| s.enabled()) {
                    Some(s) => self.read_one_shared(s, *addr, buf),
                    None => self.raw_read(*addr, buf),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_remote::SliceMemory;

    #[test]
    fn reads_whole_pages_once_and_small_reads_alone() {
        let p = memlens_procfs::page_size();
        let base = 16 * p;
        let bytes: Vec<u8> = (0..3 * p).map(|i| (i % 251) as u8).collect();
        let mut m = SliceMemory::new();
        m.map(base, bytes.clone());
        let r = PageReader::new(&m, 0, None);
        assert_eq!(
            r.read_u64(base + 8).ok(),
            Some(u64::from_ne_bytes(bytes[8..16].try_into().unwrap()))
        );
        assert_eq!(
            r.read_u32(base + 100).ok(),
            Some(u32::from_ne_bytes(bytes[100..104].try_into().unwrap()))
        );
        assert_eq!(r.counts().reads, 1, "two fields of one page: one read");
        // across the page boundary: the second page is read, the first comes from the cache
        let across = r.read_vec(base + p - 4, 8).expect("reads");
        assert_eq!(&across[..], &bytes[(p - 4) as usize..(p + 4) as usize]);
        assert_eq!(r.counts().reads, 2);
        // beyond the mapped bytes: an error, not a panic
        assert!(r.read_u64(base + 3 * p - 4).is_err());
        assert!(r.read_u64(u64::MAX - 3).is_err());
        // small scattered reads: from cached pages, else one read each
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let mut reqs: Vec<(u64, &mut [u8])> = vec![(base + 16, &mut a), (base + 2 * p + 8, &mut b)];
        let res = r.read_many(&mut reqs);
        assert!(res.iter().all(|x| x.is_ok()));
        assert_eq!(&a[..], &bytes[16..24]);
        assert_eq!(&b[..], &bytes[(2 * p + 8) as usize..(2 * p + 16) as usize]);
    }
}
