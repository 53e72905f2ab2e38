//! The queue of the main interpreter's GIL holder's events in `all` mode (hooks.rs,
//! `deliver_gil`): one producer at a time, no locked instruction per event.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::agg::Aggregate;
use crate::ring::PYMALLOC;

/// Cells of a [`GilRing`]: a locked instruction (the aggregate's try-lock) per this many events.
pub(crate) const GIL_CELLS: usize = 256;

/// What a [`GilRing`] keeps of an event: what the aggregate reads of it, and its time. Its
/// domain is [`PYMALLOC`] (only the blocks of hooks.rs's `gil_table` go there, all of that
/// domain), its pointer and size are not needed: the blocks are of at most `PYMALLOC_MAX` bytes
/// (512, hooks.rs), which
/// the residency list ignores (`Residency::apply` returns at once for a block under its
/// `LARGE` of a domain other than mmap), so the drain applies the event to the aggregate
/// alone. 24 bytes where a full event and its time took 48: half the stores and loads.
#[derive(Clone, Copy)]
struct GilEvent {
    weight: f64,
    now: u64,
    stack: u32,
    kind: u8,
}

/// The queue of hooks.rs's `deliver_gil`: one producer at a time (the main interpreter's GIL
/// holder), drained by the aggregate's lock holder; a bounded single-producer single-consumer
/// queue in the process's data (6 KiB, resident only once `all` mode uses it).
pub(crate) struct GilRing {
    cells: UnsafeCell<[GilEvent; GIL_CELLS]>,
    /// Events pushed (written by the producer, Release).
    head: AtomicUsize,
    /// Events taken (written by the consumer, Release).
    tail: AtomicUsize,
    /// The producer's own: `head` may reach this without a look at `tail` (a value of `tail`
    /// it read, plus [`GIL_CELLS`]; `tail` only grows, so the cells below it are free).
    room_to: UnsafeCell<usize>,
}

// SAFETY: a cell is written only by the producer (one at a time: the main GIL), between the
// consumer's Release of `tail` past it and its own Release of `head` past it; read only by
// the consumer (one at a time: the aggregate's lock), between the Acquire of that `head` and
// its Release of `tail` past it. `room_to` is the producer's alone (and a forked child's one
// thread's).
unsafe impl Sync for GilRing {}

const NO_EVENT: GilEvent = GilEvent {
    weight: 0.0,
    now: 0,
    stack: 0,
    kind: 0,
};

impl GilRing {
    /// An empty queue (const, for a static).
    pub(crate) const fn new() -> GilRing {
        GilRing {
            cells: UnsafeCell::new([NO_EVENT; GIL_CELLS]),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            room_to: UnsafeCell::new(0),
        }
    }

    /// The cell of position `i` (a raw pointer: the producer and the consumer use different
    /// cells at the same time).
    #[inline]
    fn cell(&self, i: usize) -> *mut GilEvent {
        // SAFETY: i % GIL_CELLS is within the array.
        unsafe { self.cells.get().cast::<GilEvent>().add(i % GIL_CELLS) }
    }

    /// Queues the event of `kind`, `stack` and `weight` at `now` (the producer: the main GIL
    /// held; an event of domain [`PYMALLOC`], of at most `PYMALLOC_MAX` bytes: [`GilEvent`]);
    /// false when full.
    #[inline(always)]
    pub(crate) fn push(&self, kind: u8, stack: u32, weight: f64, now: u64) -> bool {
        let h = self.head.load(Ordering::Relaxed);
        // SAFETY: the producer's own (the type's note).
        if h == unsafe { *self.room_to.get() } && !self.more_room(h) {
            return false;
        }
        // SAFETY: cell h is free (the consumer released it: Acquire of `tail` in more_room,
        // now or at an earlier push) and this is the only producer (the type's note).
        unsafe {
            self.cell(h).write(GilEvent {
                weight,
                now,
                stack,
                kind,
            })
        };
        self.head.store(h.wrapping_add(1), Ordering::Release);
        true
    }

    /// The producer's look at `tail` once `head` has reached `room_to` (`h`): false when the
    /// queue is full. Once a push in [`GIL_CELLS`] at most, where each looked.
    #[cold]
    #[inline(never)]
    fn more_room(&self, h: usize) -> bool {
        let to = self.tail.load(Ordering::Acquire).wrapping_add(GIL_CELLS);
        // SAFETY: the producer's own (the type's note).
        unsafe { *self.room_to.get() = to };
        to != h
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == self.tail.load(Ordering::Relaxed)
    }

    /// Applies what is queued to `agg` (the aggregate's lock held) and says how many: the
    /// cells from the tail's to the array's end, then from its start, each run read as a slice
    /// (a pointer stepped through it, where an index wrapped at each cell cost four
    /// instructions an event); the time of a new peak never before `start` (the header's).
    pub(crate) fn drain(&self, agg: &mut Aggregate, start: u64) -> usize {
        let h = self.head.load(Ordering::Acquire);
        let t = self.tail.load(Ordering::Relaxed);
        let n = h.wrapping_sub(t);
        let at = t % GIL_CELLS;
        let first = n.min(GIL_CELLS - at);
        // At most `at`: the cells before the tail's (so while n <= GIL_CELLS, which `push`
        // keeps, exactly n - first; the bound only keeps the slice in the array).
        let second = (n - first).min(at);
        for (at, len) in [(at, first), (0, second)] {
            // SAFETY: cells at..at + len lie within the array (len <= GIL_CELLS - at), each
            // published by the producer (Acquire of head above), not written again until the
            // tail's Release below; the consumer is this thread alone (the aggregate's lock).
            let run = unsafe { std::slice::from_raw_parts(self.cell(at), len) };
            // Not the residency list: GilEvent's note.
            agg.apply_run(
                PYMALLOC,
                start,
                run.iter().map(|ev| (ev.kind, ev.stack, ev.weight, ev.now)),
            );
        }
        self.tail.store(h, Ordering::Release);
        n
    }

    /// In a forked child (one thread): forgets what was queued and says how many. `room_to`
    /// stays right: a value of `tail` plus [`GIL_CELLS`], `tail` having only grown since.
    pub(crate) fn reset(&self) -> usize {
        let h = self.head.load(Ordering::Relaxed);
        let lost = h.wrapping_sub(self.tail.load(Ordering::Relaxed));
        self.tail.store(h, Ordering::Relaxed);
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Event, ALLOC, FREE, FREE_TEMP};

    /// Events pushed in bursts and drained at random points, across the cells' wrap: the queue
    /// refuses a push exactly when [`GIL_CELLS`] are queued, and the drains leave the
    /// aggregate `apply` leaves, each event in turn (a new peak's time never before the
    /// start's); a reset forgets what was queued.
    #[test]
    fn pushes_and_drains_keep_order_and_bounds() {
        let ring = Box::new(GilRing::new());
        let start = 5_000;
        let mut agg = Aggregate::new();
        let mut want = Aggregate::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut live: Vec<(u32, f64)> = Vec::new();
        let mut queued = 0usize;
        for t in 0..20_000u64 {
            let ev = if live.is_empty() || rnd(2) == 0 {
                let (stack, w) = (rnd(30) as u32, (rnd(512) + 1) as f64);
                live.push((stack, w));
                (ALLOC, stack, w)
            } else {
                let (stack, w) = live.swap_remove(rnd(live.len() as u64) as usize);
                (if rnd(2) == 0 { FREE } else { FREE_TEMP }, stack, w)
            };
            let e = Event {
                kind: ev.0,
                domain: PYMALLOC,
                stack: ev.1,
                size: ev.2 as u64,
                weight: ev.2,
                ..Event::default()
            };
            let now = t * 3;
            if !ring.push(e.kind, e.stack, e.weight, now) {
                assert_eq!(queued, GIL_CELLS, "refused at {t}");
                assert_eq!(ring.drain(&mut agg, start), GIL_CELLS);
                queued = 0;
                assert!(ring.push(e.kind, e.stack, e.weight, now));
            }
            want.apply(&e, now.max(start));
            queued += 1;
            if rnd(300) == 0 {
                assert_eq!(ring.drain(&mut agg, start), queued);
                queued = 0;
                assert_eq!(agg, want);
            }
        }
        assert!(!ring.is_empty());
        ring.drain(&mut agg, start);
        assert!(ring.is_empty());
        assert_eq!(agg, want);
        // A forked child's reset forgets what was queued; the queue goes on from there.
        let e = Event {
            domain: PYMALLOC,
            ..Event::default()
        };
        for _ in 0..10 {
            assert!(ring.push(e.kind, e.stack, e.weight, 1));
        }
        assert_eq!(ring.reset(), 10);
        assert_eq!(ring.drain(&mut agg, start), 0);
        for _ in 0..GIL_CELLS {
            assert!(ring.push(e.kind, e.stack, e.weight, 1));
        }
        assert!(!ring.push(e.kind, e.stack, e.weight, 1));
        assert_eq!(agg, want);
    }
}
