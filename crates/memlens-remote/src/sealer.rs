//! Hashes the pages of copies leaving the cache on a thread of its own, so that a walk does
//! not wait for it: the copy's buffer goes to the thread with the pages to hash, the cache
//! takes a spare buffer in its place, and the hashes come back into the [`PageLog`]. At most
//! [`IN_FLIGHT`] copies are away at once, so the spare buffers are bounded too.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::pagelog::{hash_pages, PageLog, Pending};

/// Copies handed over and not yet hashed, at most.
pub const IN_FLIGHT: usize = 2;

struct Job {
    base: u64,
    data: Vec<u8>,
    pages: Pending,
}

struct Done {
    base: u64,
    data: Vec<u8>,
    hashes: Vec<(usize, u64)>,
}

/// The hashing thread and what is away with it.
pub struct Sealer {
    tx: Option<Sender<Job>>,
    rx: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
    away: Vec<u64>,
    spare: Vec<Vec<u8>>,
    /// Buffers made beyond the cache's own (at most `IN_FLIGHT`).
    made: usize,
    /// Hashes were lost (the thread ended): the log cannot prove anything.
    broken: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("away", &self.away).finish()
    }
}

impl Sealer {
    /// Starts the thread; `None` when it cannot be started (the cache then hashes itself).
    pub fn start(seed: u64) -> Option<Sealer> {
        let (tx, jobs) = channel::<Job>();
        let (done, rx) = channel::<Done>();
        let handle = std::thread::Builder::new()
            .name("memlens-sealer".into())
            .spawn(move || {
                for j in jobs {
                    let hashes = hash_pages(seed, &j.data, &j.pages);
                    let back = Done {
                        base: j.base,
                        data: j.data,
                        hashes,
                    };
                    if done.send(back).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| log::debug!("no hashing thread: {e}"))
            .ok()?;
        Some(Sealer {
            tx: Some(tx),
            rx,
            handle: Some(handle),
            away: Vec::new(),
            spare: Vec::new(),
            made: 0,
            broken: false,
        })
    }

    /// Buffers made beyond the cache's own, each of the cache's chunk size.
    pub fn buffers_made(&self) -> usize {
        self.made
    }

    /// Whether another buffer must be made for the next [`Sealer::submit`] (the caller
    /// charges it first).
    pub fn needs_buffer(&self) -> bool {
        self.spare.is_empty() && self.away.len() < IN_FLIGHT
    }

    fn receive_one(&mut self, log: &mut PageLog) -> bool {
        match self.rx.recv() {
            Ok(d) => {
                log.store(d.base, &d.hashes);
                self.away.retain(|b| *b != d.base);
                self.spare.push(d.data);
                true
            }
            Err(_) => {
                self.broken = true;
                self.away.clear();
                false
            }
        }
    }

    /// Whether hashes were lost: pages of the log may lack theirs, so it proves nothing.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Hands `data` (the copy at `base`) over with the pages to hash; returns a buffer of the
    /// same length for the cache to use instead, or gives `data` back when the thread is gone
    /// (the caller then hashes itself).
    pub fn submit(
        &mut self,
        log: &mut PageLog,
        base: u64,
        data: Vec<u8>,
        pages: Pending,
    ) -> Result<Vec<u8>, (Vec<u8>, Pending)> {
        while self.away.len() >= IN_FLIGHT {
            if !self.receive_one(log) {
                return Err((data, pages));
            }
        }
        if self.broken {
            return Err((data, pages));
        }
        let replacement = match self.spare.pop() {
            Some(b) => b,
            None => {
                self.made += 1;
                vec![0u8; data.len()]
            }
        };
        let Some(tx) = &self.tx else {
            return Err((data, pages));
        };
        match tx.send(Job { base, data, pages }) {
            Ok(()) => {
                self.away.push(base);
                Ok(replacement)
            }
            Err(e) => {
                self.spare.push(replacement);
                Err((e.0.data, e.0.pages))
            }
        }
    }

    /// Waits until the copy at `base` (if away) has been hashed into `log`.
    pub fn wait_for(&mut self, log: &mut PageLog, base: u64) {
        while self.away.contains(&base) && self.receive_one(log) {}
    }

    /// Waits until every copy away has been hashed into `log`.
    pub fn finish(&mut self, log: &mut PageLog) {
        while !self.away.is_empty() && self.receive_one(log) {}
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's loop
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::debug!("the hashing thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::memory::SliceMemory;
    use crate::pagelog::PAGE;
    use std::rc::Rc;

    #[test]
    fn hashes_on_its_thread_what_a_pause_then_verifies() {
        let chunk = 16 * PAGE as usize;
        let mut log = PageLog::new(Rc::new(MemoryBudget::new(1 << 30)));
        let mut sealer = Sealer::start(log.seed()).expect("a thread");
        let used = vec![0x0f0f_u64; chunk / 8 / 64];
        let valid = [!0u64; 4];
        let base = 0x100_0000u64;
        let mut all = Vec::new();
        for k in 0..5u64 {
            let data: Vec<u8> = (0..chunk).map(|i| (i as u64 * 7 + k) as u8).collect();
            let at = base + k * chunk as u64;
            let pages = log.merge(at, &valid, &used).expect("merge");
            assert_eq!(pages.len(), 16);
            let back = sealer
                .submit(&mut log, at, data.clone(), pages)
                .expect("handed over");
            assert_eq!(back.len(), chunk);
            all.extend_from_slice(&data);
        }
        sealer.finish(&mut log);
        assert!(!sealer.broken());
        assert!(sealer.buffers_made() <= IN_FLIGHT);
        assert_eq!(log.pages(), 80);
        let mut same = SliceMemory::new();
        same.map(base, all.clone());
        let v = log.verify(&same, 2, 100).expect("reads");
        assert_eq!((v.pages, v.changed), (80, 0));
        all[3 * chunk + 8] ^= 1; // a used word of the fourth chunk
        let mut changed = SliceMemory::new();
        changed.map(base, all);
        assert_eq!(log.verify(&changed, 2, 100).expect("reads").changed, 1);
    }
}
