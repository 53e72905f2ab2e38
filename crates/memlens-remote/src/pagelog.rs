//! What a walk of a running process read, so that a short pause can prove the walk saw one
//! consistent state.
//!
//! Every read marks the 8-byte words it covers (in a bitmap of its chunk in the cache). When a
//! copied chunk leaves the cache, its marks join the log and each page with new marks gets a
//! 64-bit hash of exactly the words marked so far (a word never read, such as a reference
//! count, never matters); a page copied again later must hash the same, or the walk is
//! inconsistent. During the pause the pages are read once more and hashed:
//! if every hash matches, each byte the walk used holds the same value at the pause, so the
//! walk computed exactly what a walk of the paused process would have.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::bitmap::{AddrMap, BLOCK_SHIFT};
use crate::budget::MemoryBudget;
use crate::error::{Error, Result};
use crate::memory::ProcessMemory;

/// Page size the log works in.
pub const PAGE: u64 = 4096;
const PAGES_PER_BLOCK: usize = 1 << (BLOCK_SHIFT - 12);
const WORDS_PER_BLOCK: usize = 1 << (BLOCK_SHIFT - 3);
/// Pages per read while verifying (256 KiB: the copy stays in cache while it is hashed).
const VERIFY_PIECE_PAGES: usize = 64;

struct LogBlock {
    /// One bit per 8-byte word of the block that the walk read.
    used: Box<[u64]>,
    /// Hash of the used words of each page, valid where `hashed` is set.
    hash: Box<[u64]>,
    hashed: [u64; PAGES_PER_BLOCK / 64],
}

const BLOCK_BYTES: u64 = (WORDS_PER_BLOCK / 8 + PAGES_PER_BLOCK * 8 + PAGES_PER_BLOCK / 8) as u64;

/// The record of a walk: the words it read and the hashes of their pages.
pub struct PageLog {
    blocks: Vec<LogBlock>,
    index: AddrMap<usize>,
    last: (u64, usize),
    seed: u64,
    mismatches: u64,
    budget: Rc<MemoryBudget>,
}

impl std::fmt::Debug for PageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageLog")
            .field("blocks", &self.blocks.len())
            .field("mismatches", &self.mismatches)
            .finish()
    }
}

/// What re-reading the logged pages found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verification {
    /// Pages compared.
    pub pages: u64,
    /// Pages whose used words differ (or that became unreadable); the comparison stops once
    /// it has found the number it was asked to stop at, so this is a count up to that.
    pub changed: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;

fn fmix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hash of the words of `page` (4,096 bytes) selected by `used` (8 mask words): four
/// independent lanes, each round `lane = rotl((lane + word) * P, 29)`, a bijection of the lane
/// and of the word, so one changed word always changes its lane's final value; the lanes and
/// the mask are then mixed together.
pub fn page_hash(seed: u64, page: &[u8], used: &[u64]) -> u64 {
    let mut acc = [seed ^ P1, seed ^ P2, seed ^ P3, seed ^ P4];
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&page[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    for (mi, &m) in used.iter().enumerate().take(MASK_PER_PAGE) {
        if m == !0 {
            for q in (mi * 64..mi * 64 + 64).step_by(4) {
                for (lane, a) in acc.iter_mut().enumerate() {
                    *a = a
                        .wrapping_add(word(q + lane))
                        .wrapping_mul(P2)
                        .rotate_left(29);
                }
            }
        } else {
            // the used words only, dealt to the lanes in turn
            let mut bits = m;
            let mut lane = 0;
            while bits != 0 {
                let i = mi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = &mut acc[lane & 3];
                *a = a.wrapping_add(word(i)).wrapping_mul(P2).rotate_left(29);
                lane += 1;
            }
        }
        // the mask is part of what was compared: the same values in other words differ
        acc[mi & 3] ^= fmix(m ^ (mi as u64).wrapping_mul(P3));
    }
    fmix(
        acc[0]
            .rotate_left(1)
            .wrapping_add(acc[1].rotate_left(7))
            .wrapping_add(acc[2].rotate_left(12))
            .wrapping_add(acc[3].rotate_left(18)),
    )
}

/// Mask words of one page (one bit per 8-byte word).
pub const MASK_PER_PAGE: usize = 512 / 64;

/// Pages of a chunk to hash: (page index in the chunk, the page's logged mask).
pub type Pending = Vec<(usize, [u64; MASK_PER_PAGE])>;

/// Hashes the pending pages of a chunk's copy `data`: (page index in the chunk, hash).
pub fn hash_pages(seed: u64, data: &[u8], pending: &Pending) -> Vec<(usize, u64)> {
    pending
        .iter()
        .map(|(i, mask)| {
            let page = &data[i * PAGE as usize..(i + 1) * PAGE as usize];
            (*i, page_hash(seed, page, mask))
        })
        .collect()
}

fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    fmix(t ^ (&local as *const u8 as u64) ^ u64::from(std::process::id()).rotate_left(32))
}

impl PageLog {
    /// An empty log; its blocks are charged to `budget`.
    pub fn new(budget: Rc<MemoryBudget>) -> Self {
        PageLog {
            blocks: Vec::new(),
            index: AddrMap::default(),
            last: (u64::MAX, 0),
            seed: fresh_seed(),
            mismatches: 0,
            budget,
        }
    }

    #[inline]
    fn find(&mut self, block: u64) -> Option<usize> {
        if self.last.0 == block {
            return Some(self.last.1);
        }
        let pos = *self.index.get(&block)?;
        self.last = (block, pos);
        Some(pos)
    }

    fn find_or_add(&mut self, block: u64) -> Result<usize> {
        if let Some(p) = self.find(block) {
            return Ok(p);
        }
        self.budget
            .charge(BLOCK_BYTES, "recording what the walk read")?;
        self.blocks.push(LogBlock {
            used: vec![0u64; WORDS_PER_BLOCK / 64].into_boxed_slice(),
            hash: vec![0u64; PAGES_PER_BLOCK].into_boxed_slice(),
            hashed: [0; PAGES_PER_BLOCK / 64],
        });
        let p = self.blocks.len() - 1;
        self.index.insert(block, p);
        self.last = (block, p);
        Ok(p)
    }

    /// The pages of a chunk leave the cache: `used` (one bit per word of `data`) holds the
    /// words the walk read from this copy. They join the log, and each page with words not
    /// logged before is hashed again over all its logged words. `data` starts at the
    /// page-aligned `base` and lies in one block; `valid` has a bit per page that was copied.
    pub fn seal(&mut self, base: u64, data: &[u8], valid: &[u64], used: &[u64]) -> Result<()> {
        let pending = self.merge(base, valid, used)?;
        let hashes = hash_pages(self.seed, data, &pending);
        self.store(base, &hashes);
        Ok(())
    }

    /// The first half of [`PageLog::seal`]: merges `used` into the log and returns the pages
    /// to hash again (those that were copied and gained words), with their logged masks.
    pub fn merge(&mut self, base: u64, valid: &[u64], used: &[u64]) -> Result<Pending> {
        let mut out = Vec::new();
        if used.iter().all(|w| *w == 0) {
            return Ok(out);
        }
        let pos = self.find_or_add(base >> BLOCK_SHIFT)?;
        let b = &mut self.blocks[pos];
        let first = ((base >> 12) as usize) & (PAGES_PER_BLOCK - 1);
        for (i, mine) in used.chunks_exact(MASK_PER_PAGE).enumerate() {
            let p = first + i;
            let logged = &mut b.used[p * MASK_PER_PAGE..][..MASK_PER_PAGE];
            let mut grew = false;
            for (l, m) in logged.iter_mut().zip(mine) {
                grew |= m & !*l != 0;
                *l |= m;
            }
            if grew && valid[i >> 6] & (1 << (i & 63)) != 0 {
                let mut mask = [0u64; MASK_PER_PAGE];
                mask.copy_from_slice(logged);
                out.push((i, mask));
            }
        }
        Ok(out)
    }

    /// The second half of [`PageLog::seal`]: records the hashes of pages of the chunk at
    /// `base` (page index in the chunk, hash).
    pub fn store(&mut self, base: u64, hashes: &[(usize, u64)]) {
        let Some(pos) = self.find(base >> BLOCK_SHIFT) else {
            return;
        };
        let b = &mut self.blocks[pos];
        let first = ((base >> 12) as usize) & (PAGES_PER_BLOCK - 1);
        for &(i, h) in hashes {
            let p = first + i;
            b.hash[p] = h;
            b.hashed[p >> 6] |= 1 << (p & 63);
        }
    }

    /// The seed of the page hashes (for [`hash_pages`] run elsewhere).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A chunk was copied again: its pages hashed before must hash the same now.
    pub fn check(&mut self, base: u64, data: &[u8], valid: &[u64]) {
        let Some(pos) = self.find(base >> BLOCK_SHIFT) else {
            return;
        };
        let seed = self.seed;
        let b = &self.blocks[pos];
        let first = ((base >> 12) as usize) & (PAGES_PER_BLOCK - 1);
        let mut bad = 0;
        for (i, page) in data.chunks_exact(PAGE as usize).enumerate() {
            let p = first + i;
            if b.hashed[p >> 6] & (1 << (p & 63)) == 0 {
                continue;
            }
            let same = valid[i >> 6] & (1 << (i & 63)) != 0
                && page_hash(seed, page, &b.used[p * MASK_PER_PAGE..][..MASK_PER_PAGE])
                    == b.hash[p];
            if !same {
                bad += 1;
            }
        }
        if bad > 0 {
            log::debug!("{bad} pages at {base:#x} changed between two copies");
        }
        self.mismatches += bad;
    }

    /// Pages that were copied twice with different used words (the walk is inconsistent).
    pub fn mismatches(&self) -> u64 {
        self.mismatches
    }

    /// Pages with a hash.
    pub fn pages(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| {
                b.hashed
                    .iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Pieces of consecutive hashed pages: (address, block position, first page in block,
    /// pages), in address order.
    fn pieces(&self) -> Vec<(u64, usize, usize, usize)> {
        let mut blocks: Vec<(u64, usize)> = self.index.iter().map(|(k, v)| (*k, *v)).collect();
        blocks.sort_unstable();
        let mut out = Vec::new();
        for (bn, pos) in blocks {
            let b = &self.blocks[pos];
            let mut p = 0;
            while p < PAGES_PER_BLOCK {
                if b.hashed[p >> 6] & (1 << (p & 63)) == 0 {
                    p += 1;
                    continue;
                }
                let start = p;
                while p < PAGES_PER_BLOCK
                    && p - start < VERIFY_PIECE_PAGES
                    && b.hashed[p >> 6] & (1 << (p & 63)) != 0
                {
                    p += 1;
                }
                out.push((
                    (bn << BLOCK_SHIFT) + start as u64 * PAGE,
                    pos,
                    start,
                    p - start,
                ));
            }
        }
        out
    }

    /// Reads every hashed page again through `mem` (the process should be paused), on up to
    /// `threads` threads, and compares. Stops once `stop_at` pages (at least 1) differ. Fails
    /// only when the process is gone (or refuses reads); an unreadable page counts as changed.
    pub fn verify<M: ProcessMemory + Sync>(
        &self,
        mem: &M,
        threads: usize,
        stop_at: u64,
    ) -> Result<Verification> {
        let pieces = self.pieces();
        let next = AtomicUsize::new(0);
        let changed = AtomicU64::new(0);
        let stop_at = stop_at.max(1);
        let pages = AtomicU64::new(0);
        let seed = self.seed;
        let blocks = &self.blocks;
        let work = || -> Result<()> {
            let mut buf = vec![0u8; VERIFY_PIECE_PAGES * PAGE as usize];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(addr, pos, first, n)) = pieces.get(i) else {
                    return Ok(());
                };
                if changed.load(Ordering::Relaxed) >= stop_at {
                    return Ok(());
                }
                let data = &mut buf[..n * PAGE as usize];
                match mem.read(addr, data) {
                    Ok(()) => {}
                    Err(Error::Unreadable { .. }) => {
                        changed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let b = &blocks[pos];
                for (k, page) in data.chunks_exact(PAGE as usize).enumerate() {
                    let p = first + k;
                    let h = page_hash(seed, page, &b.used[p * MASK_PER_PAGE..][..MASK_PER_PAGE]);
                    if h != b.hash[p] {
                        log::debug!(
                            "page {:#x} changed before the pause",
                            addr + k as u64 * PAGE
                        );
                        changed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                pages.fetch_add(n as u64, Ordering::Relaxed);
            }
        };
        let threads = threads.clamp(1, 16).min(pieces.len().max(1));
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut out = vec![work()];
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        what: "verify the copied pages".into(),
                        source: std::io::Error::other("a verifying thread panicked"),
                    })
                }));
            }
            out
        });
        for r in results {
            r?;
        }
        Ok(Verification {
            pages: pages.load(Ordering::Relaxed),
            changed: changed.load(Ordering::Relaxed),
        })
    }
}

impl Drop for PageLog {
    fn drop(&mut self) {
        self.budget.release(self.blocks.len() as u64 * BLOCK_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SliceMemory;

    fn page_of(v: u64) -> Vec<u8> {
        (0..512u64).flat_map(|i| (v + i).to_ne_bytes()).collect()
    }

    #[test]
    fn hash_covers_used_words_only() {
        let mut used = [0u64; 8];
        used[0] = 0b10; // word 1
        used[7] = 1 << 63; // word 511
        let a = page_of(100);
        let mut b = a.clone();
        b[0] ^= 0xff; // word 0: unused
        assert_eq!(page_hash(7, &a, &used), page_hash(7, &b, &used));
        b[8] ^= 1; // word 1: used
        assert_ne!(page_hash(7, &a, &used), page_hash(7, &b, &used));
        let mut c = a.clone();
        c[4095] ^= 0x80; // word 511: used
        assert_ne!(page_hash(7, &a, &used), page_hash(7, &c, &used));
        let mut more = used;
        more[0] |= 1;
        assert_ne!(
            page_hash(7, &a, &used),
            page_hash(7, &a, &more),
            "mask counts"
        );
    }

    #[test]
    fn verifies_unchanged_pages_and_finds_a_changed_word() {
        let budget = Rc::new(MemoryBudget::new(1 << 30));
        let base = 0x40_0000u64;
        let mut bytes: Vec<u8> = (0..4 * PAGE).map(|i| (i * 7) as u8).collect();
        let mut log = PageLog::new(budget.clone());
        // words read: word 1 of page 0, and bytes 100..400 of page 2 (words 12..=49)
        let mut used = vec![0u64; 4 * 8];
        used[0] = 0b10;
        for w in 12..=49 {
            used[16 + w / 64] |= 1 << (w % 64);
        }
        log.seal(base, &bytes, &[0b1111], &used).expect("seal");
        assert_eq!(log.pages(), 2);
        // a reference count (word 0) changes: still the same
        bytes[0] ^= 1;
        let mut m = SliceMemory::new();
        m.map(base, bytes.clone());
        assert_eq!(
            log.verify(&m, 2, 1).expect("reads"),
            Verification {
                pages: 2,
                changed: 0
            }
        );
        // a used word changes
        bytes[(PAGE * 2 + 300) as usize] ^= 1;
        let mut m = SliceMemory::new();
        m.map(base, bytes.clone());
        assert_eq!(log.verify(&m, 1, 1).expect("reads").changed, 1);
        // copied again with the change: a mismatch between two copies
        log.check(base, &bytes, &[0b1111]);
        assert_eq!(log.mismatches(), 1);
        // a page gone is a change too
        let mut m = SliceMemory::new();
        m.map(base, bytes[..PAGE as usize * 2].to_vec());
        assert_eq!(log.verify(&m, 2, 10).expect("reads").changed, 1);
        drop(log);
        assert_eq!(budget.used(), 0);
    }
}
