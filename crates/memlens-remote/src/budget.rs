//! A hard cap on the memory memlens itself spends on one read of a process (chunk copies,
//! bitmaps, page hashes, work stacks): every structure that grows with the target charges it
//! first, and a charge over the cap is an error, never an allocation.

use std::cell::Cell;

use crate::error::{Error, Result};

/// Bytes charged against a cap. Shared (by `Rc`) between the structures of one read.
#[derive(Debug)]
pub struct MemoryBudget {
    cap: u64,
    used: Cell<u64>,
    peak: Cell<u64>,
}

impl MemoryBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64) -> Self {
        MemoryBudget {
            cap,
            used: Cell::new(0),
            peak: Cell::new(0),
        }
    }

    /// Charges `bytes` for `what`, or fails without charging when the cap would be passed.
    pub fn charge(&self, bytes: u64, what: &'static str) -> Result<()> {
        let used = self.used.get().saturating_add(bytes);
        if used > self.cap {
            return Err(Error::MemoryCap {
                cap_mib: self.cap >> 20,
                what,
            });
        }
        self.used.set(used);
        self.peak.set(self.peak.get().max(used));
        Ok(())
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: u64) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    /// The most charged at once.
    pub fn peak(&self) -> u64 {
        self.peak.get()
    }

    /// The cap.
    pub fn cap(&self) -> u64 {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_cap() {
        let b = MemoryBudget::new(100);
        assert!(b.charge(60, "a").is_ok());
        assert!(matches!(
            b.charge(41, "b"),
            Err(Error::MemoryCap { what: "b", .. })
        ));
        assert_eq!(b.used(), 60);
        b.release(60);
        assert!(b.charge(100, "c").is_ok());
        assert_eq!(b.peak(), 100);
    }
}
