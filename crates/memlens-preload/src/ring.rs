//! The event queue from the hooks to whichever hook drains it: a bounded lock-free queue
//! (Vyukov's bounded MPMC array queue) over memory mapped once. A producer that finds it full
//! gets `false` back and counts the event as dropped; nothing blocks and nothing allocates.
//!
//! A cell's sequence number is stored less the cell's index, so zeroed memory is an empty
//! ring: nothing is written at start (the queue's pages become resident only as events pass
//! through them; writing every cell's first number made the whole queue resident at start,
//! 640 KiB sampled and 10 MiB in `all` mode).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One traced event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[repr(C)]
pub struct Event {
    /// 1: a sampled allocation, 2: the free of a sampled allocation.
    pub kind: u8,
    /// Where the memory came from: [`MALLOC`], [`MMAP`] or [`PYMALLOC`].
    pub domain: u8,
    /// The interned stack of the sampled allocation (for a free, the allocation's).
    pub stack: u32,
    /// The pointer.
    pub ptr: usize,
    /// Bytes requested (for a free, the bytes the allocation had).
    pub size: u64,
    /// The sample's weight in estimated bytes.
    pub weight: f64,
}

/// Event kind: a sampled allocation.
pub const ALLOC: u8 = 1;
/// Event kind: the free of a sampled allocation.
pub const FREE: u8 = 2;
/// Event kind: the free of a sampled allocation made less than the trace's `temp_ns` before
/// (a temporary).
pub const FREE_TEMP: u8 = 3;
/// Event kind: in a forked child, the free of a sampled allocation inherited at fork (made by
/// an ancestor before it forked).
pub const FREE_INHERITED: u8 = 4;
/// Event kind: part of a traced mapping unmapped (munmap, mremap or `MAP_FIXED` over it:
/// maps.rs): its bytes leave the live figures, the sample stays live with the rest. `ptr` is
/// the first byte unmapped and `size` the bytes unmapped.
pub const PART: u8 = 5;
/// [`PART`] within the trace's `temp_ns` of the mapping (its bytes count as temporary).
pub const PART_TEMP: u8 = 6;
/// [`PART`] of a mapping inherited at fork, in a forked child.
pub const PART_INHERITED: u8 = 7;
/// Event kind: a traced mapping became two pieces (a hole unmapped in its middle), each freed
/// on its own from then: one more live sample, no bytes.
pub const SPLIT: u8 = 8;
/// [`SPLIT`] of a mapping inherited at fork, in a forked child.
pub const SPLIT_INHERITED: u8 = 9;

/// Domain: the C malloc family, called directly (not from inside the wrapped CPython
/// allocator).
pub const MALLOC: u8 = 0;
/// Domain: anonymous `mmap`, called directly.
pub const MMAP: u8 = 1;
/// Domain: CPython's `PyMem_Malloc`/`PyObject_Malloc` domains (wrapped with
/// `PyMem_SetAllocator`: the crate docs), whatever allocator serves them.
pub const PYMALLOC: u8 = 2;

/// A slot: its sequence number and the event.
#[repr(C)]
pub struct Cell {
    seq: AtomicUsize,
    ev: UnsafeCell<Event>,
}

/// The queue over `cap` cells of memory it does not own.
pub struct Ring {
    cells: *const Cell,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// SAFETY: a cell's event is written only by the producer that claimed its sequence number and
// read only by the consumer after the producer published it (Release/Acquire on `seq`).
unsafe impl Sync for Ring {}
// SAFETY: as above.
unsafe impl Send for Ring {}

impl Ring {
    /// Bytes of memory a ring of `cap` cells needs.
    pub fn bytes_for(cap: usize) -> usize {
        cap * std::mem::size_of::<Cell>()
    }

    /// A ring over `cells`, `cap` (a power of two) cells.
    ///
    /// # Safety
    /// `cells` must be valid, zeroed, aligned for [`Cell`], not used by anything else, and
    /// live as long as the ring.
    pub unsafe fn from_raw(cells: *mut Cell, cap: usize) -> Ring {
        debug_assert!(cap.is_power_of_two());
        Ring {
            cells,
            mask: cap - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Empties the ring (after fork, in the child, where only one thread is left: a producer
    /// of the parent may have claimed a cell and not published it). Returns how many events
    /// were queued or being written, now discarded. Only the cells between the consumer and
    /// the producers are written (each made empty for its next lap), so the child copies no
    /// page of the queue it does not need.
    pub fn reset(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let lost = head.wrapping_sub(tail);
        for pos in (0..lost.min(self.mask + 1)).map(|k| tail.wrapping_add(k)) {
            self.set_seq(pos, pos.wrapping_add(self.mask + 1), Ordering::Relaxed);
        }
        self.tail.store(head, Ordering::Release);
        lost
    }

    /// The sequence number of the cell of `pos` (stored less the cell's index).
    #[inline]
    fn seq(&self, pos: usize, order: Ordering) -> usize {
        self.cell(pos).seq.load(order).wrapping_add(pos & self.mask)
    }

    #[inline]
    fn set_seq(&self, pos: usize, seq: usize, order: Ordering) {
        self.cell(pos)
            .seq
            .store(seq.wrapping_sub(pos & self.mask), order);
    }

    #[inline]
    fn cell(&self, i: usize) -> &Cell {
        // SAFETY: masked index into the region of from_raw's contract.
        unsafe { &*self.cells.add(i & self.mask) }
    }

    /// Queues an event; false when the ring is full.
    pub fn push(&self, ev: Event) -> bool {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let c = self.cell(pos);
            let seq = self.seq(pos, Ordering::Acquire);
            let dif = seq.wrapping_sub(pos) as isize;
            if dif == 0 {
                match self.head.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: this producer alone owns the cell until it publishes seq.
                        unsafe { *c.ev.get() = ev };
                        self.set_seq(pos, pos.wrapping_add(1), Ordering::Release);
                        return true;
                    }
                    Err(p) => pos = p,
                }
            } else if dif < 0 {
                return false;
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published event. One consumer at a time (the caller holds the
    /// aggregate's lock).
    pub fn pop(&self) -> Option<Event> {
        let pos = self.tail.load(Ordering::Relaxed);
        let c = self.cell(pos);
        let seq = self.seq(pos, Ordering::Acquire);
        if seq != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: the producer published the cell (Acquire above); the consumer owns it now.
        let ev = unsafe { *c.ev.get() };
        self.set_seq(pos, pos.wrapping_add(self.mask + 1), Ordering::Release);
        self.tail.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(ev)
    }

    /// Events queued and not yet taken (approximate while producers run).
    pub fn len(&self) -> usize {
        self.head
            .load(Ordering::Relaxed)
            .wrapping_sub(self.tail.load(Ordering::Relaxed))
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cells in the ring.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(cap: usize) -> (Vec<Cell>, Ring) {
        let mut v: Vec<Cell> = (0..cap)
            .map(|_| Cell {
                seq: AtomicUsize::new(0),
                ev: UnsafeCell::new(Event::default()),
            })
            .collect();
        // SAFETY: the vector outlives the ring in each test and nothing else uses it.
        let r = unsafe { Ring::from_raw(v.as_mut_ptr(), cap) };
        (v, r)
    }

    #[test]
    fn fifo_and_full() {
        let (_v, r) = ring(4);
        for i in 0..4 {
            assert!(r.push(Event {
                ptr: i,
                ..Event::default()
            }));
        }
        assert!(!r.push(Event::default()));
        for i in 0..4 {
            assert_eq!(r.pop().map(|e| e.ptr), Some(i));
        }
        assert_eq!(r.pop(), None);
        assert!(r.push(Event::default()));
        assert_eq!(r.reset(), 1);
        assert_eq!(r.pop(), None);
        // Usable after the reset, lap after lap.
        for lap in 0..10 {
            for i in 0..4 {
                assert!(r.push(Event {
                    ptr: lap * 10 + i,
                    ..Event::default()
                }));
            }
            assert!(!r.push(Event::default()));
            for i in 0..4 {
                assert_eq!(r.pop().map(|e| e.ptr), Some(lap * 10 + i));
            }
        }
    }

    /// A cell claimed and never published (its producer gone with the fork): the reset
    /// discards it and the queued events, and the ring works again; only the cells between
    /// the consumer and the producers are written.
    #[test]
    fn reset_after_an_unpublished_claim() {
        let (v, r) = ring(8);
        for i in 0..3 {
            assert!(r.push(Event {
                ptr: i,
                ..Event::default()
            }));
        }
        assert_eq!(r.pop().map(|e| e.ptr), Some(0));
        // A producer that claimed position 3 and stopped before publishing it.
        r.head.fetch_add(1, Ordering::Relaxed);
        assert_eq!(r.pop().map(|e| e.ptr), Some(1));
        assert_eq!(r.pop().map(|e| e.ptr), Some(2));
        assert_eq!(r.pop(), None, "stuck at the unpublished cell");
        let before: Vec<usize> = v.iter().map(|c| c.seq.load(Ordering::Relaxed)).collect();
        assert_eq!(r.reset(), 1);
        let after: Vec<usize> = v.iter().map(|c| c.seq.load(Ordering::Relaxed)).collect();
        let changed: Vec<usize> = (0..8).filter(|&i| before[i] != after[i]).collect();
        assert_eq!(changed, vec![3]);
        for i in 10..26 {
            assert!(r.push(Event {
                ptr: i,
                ..Event::default()
            }));
            assert_eq!(r.pop().map(|e| e.ptr), Some(i));
        }
        assert_eq!(r.len(), 0);
    }

    /// 8 producers, one consumer: every event arrives once, or was refused (and counted).
    #[test]
    fn concurrent_producers_lose_nothing_uncounted() {
        let (_v, r) = ring(256);
        let refused = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let mut seen = vec![0u32; 8 * 20_000];
        std::thread::scope(|sc| {
            for t in 0..8usize {
                let (r, refused, done) = (&r, &refused, &done);
                sc.spawn(move || {
                    for i in 0..20_000usize {
                        let ev = Event {
                            ptr: t * 20_000 + i,
                            ..Event::default()
                        };
                        if !r.push(ev) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Release);
                });
            }
            loop {
                match r.pop() {
                    Some(e) => seen[e.ptr] += 1,
                    None if done.load(Ordering::Acquire) == 8 && r.is_empty() => break,
                    None => std::hint::spin_loop(),
                }
            }
        });
        assert!(seen.iter().all(|&n| n <= 1));
        let got = seen.iter().filter(|&&n| n == 1).count();
        assert_eq!(got + refused.load(Ordering::Relaxed), 8 * 20_000);
    }
}
