//! [`Late`]: a value set once, like `OnceLock`'s, whose holder may also read it without the
//! look at its state where it has proven it set (`all` mode's wrappers, hooks.rs `gil_mode`:
//! `OnceLock::get` loads its state even under `unwrap_unchecked`, an atomic load the compiler
//! keeps, one per static per event).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

/// A value set at most once, then read by any thread.
pub(crate) struct Late<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one thread whose claim (EMPTY -> WRITING) won,
// before its Release of SET; it is read only after an Acquire load of SET ([`Late::get`]) or
// where the caller proves such a load happened before ([`Late::get_unchecked`]), and never
// written again. So a `Late<T>` shares a `&T` between threads (T: Sync) and may hand a `T` set
// in one thread to others (T: Send).
unsafe impl<T: Sync + Send> Sync for Late<T> {}

impl<T> Late<T> {
    /// An empty one (const, for a static).
    pub(crate) const fn new() -> Late<T> {
        Late {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Sets the value; `Err(v)` when it was set (or is being set) already. A value set is
    /// never dropped (these live in statics).
    pub(crate) fn set(&self, v: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(v);
        }
        // SAFETY: this thread's claim won: no other thread writes the value, and none reads
        // it before the Release below.
        unsafe { (*self.value.get()).write(v) };
        self.state.store(SET, Ordering::Release);
        Ok(())
    }

    /// The value, once set.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == SET {
            // SAFETY: SET was stored (Release) after the value was written, and this Acquire
            // load saw it; the value is never written again.
            Some(unsafe { self.get_unchecked() })
        } else {
            None
        }
    }

    /// The value, without the look at the state.
    ///
    /// # Safety
    /// The value must be set, and its setting must happen before this call (an Acquire load
    /// that saw SET here, or a Release/Acquire chain from one: hooks.rs `set_gil_table_on`).
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self) -> &T {
        // SAFETY: set, and ordered before this read (the contract); never written again.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set once: a second set gives its value back; threads that see it set read the first.
    #[test]
    fn set_once_then_read() {
        let l: &'static Late<Vec<u32>> = Box::leak(Box::new(Late::new()));
        assert!(l.get().is_none());
        let ts: Vec<_> = (0..4u32)
            .map(|i| std::thread::spawn(move || l.set(vec![i; 3]).is_ok()))
            .collect();
        let won = ts
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(won, 1);
        let v = l.get().unwrap().clone();
        assert!(v.len() == 3 && v.iter().all(|&x| x == v[0]));
        assert_eq!(l.set(vec![9]), Err(vec![9]));
        // SAFETY: set (seen by the get above, in this thread).
        assert_eq!(unsafe { l.get_unchecked() }, &v);
    }
}
