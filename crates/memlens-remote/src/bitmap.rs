//! A compact set of addresses of another process: one bit per granule (16 bytes for object
//! starts), allocated in blocks of 2 MiB of address space only where addresses are set, each
//! block charged to a [`MemoryBudget`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::budget::MemoryBudget;
use crate::error::Result;

/// Address span of one block.
pub const BLOCK_SHIFT: u32 = 21;
/// Entries of the direct-mapped cache of recent blocks.
const RECENT: usize = 16;

/// A hasher for block numbers and addresses (a multiply-shift mix; keys are not adversarial
/// beyond what a bounded map of blocks can take).
#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by addresses or block numbers.
pub type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

/// A set of addresses at a granularity of `1 << shift` bytes.
#[derive(Debug)]
pub struct AddressBits {
    shift: u32,
    words: usize,
    blocks: Vec<Box<[u64]>>,
    index: AddrMap<usize>,
    /// Recent lookups, direct-mapped by block number: (block number, position).
    recent: [(u64, usize); RECENT],
    budget: Rc<MemoryBudget>,
}

impl AddressBits {
    /// An empty set of granules of `1 << shift` bytes (3 to 12).
    pub fn new(shift: u32, budget: Rc<MemoryBudget>) -> Self {
        let shift = shift.clamp(3, 12);
        AddressBits {
            shift,
            words: 1 << (BLOCK_SHIFT - shift - 6),
            blocks: Vec::new(),
            index: AddrMap::default(),
            recent: [(u64::MAX, 0); RECENT],
            budget,
        }
    }

    #[inline]
    fn find(&mut self, block: u64) -> Option<usize> {
        let r = &mut self.recent[block as usize % RECENT];
        if r.0 == block {
            return Some(r.1);
        }
        let pos = *self.index.get(&block)?;
        *r = (block, pos);
        Some(pos)
    }

    fn bit(&self, addr: u64) -> (usize, u64) {
        let g = (addr & ((1 << BLOCK_SHIFT) - 1)) >> self.shift;
        ((g >> 6) as usize, 1u64 << (g & 63))
    }

    /// Whether the granule of `addr` is set.
    pub fn contains(&mut self, addr: u64) -> bool {
        let Some(pos) = self.find(addr >> BLOCK_SHIFT) else {
            return false;
        };
        let (w, m) = self.bit(addr);
        self.blocks[pos][w] & m != 0
    }

    /// Sets the granule of `addr`; returns whether it was unset. Fails (setting nothing) when
    /// a new block would pass the budget.
    pub fn insert(&mut self, addr: u64) -> Result<bool> {
        let block = addr >> BLOCK_SHIFT;
        let pos = match self.find(block) {
            Some(p) => p,
            None => {
                self.budget
                    .charge(self.words as u64 * 8 + 64, "marking visited objects")?;
                self.blocks.push(vec![0u64; self.words].into_boxed_slice());
                let p = self.blocks.len() - 1;
                self.index.insert(block, p);
                self.recent[block as usize % RECENT] = (block, p);
                p
            }
        };
        let (w, m) = self.bit(addr);
        let word = &mut self.blocks[pos][w];
        let fresh = *word & m == 0;
        *word |= m;
        Ok(fresh)
    }

    /// Bytes of bitmap allocated.
    pub fn bytes(&self) -> u64 {
        (self.blocks.len() * (self.words * 8 + 64)) as u64
    }
}

impl Drop for AddressBits {
    fn drop(&mut self) {
        self.budget.release(self.bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_granules_sparsely_within_the_budget() {
        let budget = Rc::new(MemoryBudget::new(3 * ((16 << 10) + 64)));
        let mut s = AddressBits::new(4, budget.clone());
        assert!(!s.contains(0x7f00_0000_0010));
        assert_eq!(s.insert(0x7f00_0000_0010).ok(), Some(true));
        assert_eq!(s.insert(0x7f00_0000_0018).ok(), Some(false), "same granule");
        assert!(s.contains(0x7f00_0000_0010));
        assert!(!s.contains(0x7f00_0000_0020));
        assert_eq!(s.insert(0x1000).ok(), Some(true));
        assert!(s.contains(0x1008) && !s.contains(0x7f00_0020_0010));
        assert_eq!(budget.used(), s.bytes());
        // three blocks of 16 KiB fit; the fourth does not
        assert!(s.insert(0x4000_0000).is_ok());
        assert!(s.insert(0x8000_0000).is_err());
        assert!(!s.contains(0x8000_0000));
        drop(s);
        assert_eq!(budget.used(), 0);
    }
}
