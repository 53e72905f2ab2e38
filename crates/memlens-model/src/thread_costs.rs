//! What each thread of a Python process holds, as read from outside (docs/advice.md,
//! `thread-stacks`), and the advice computed from it: running fewer idle threads.

use crate::advice::Advice;
use crate::census::ClassDicts;
use crate::units::SizeStyle;

/// Idle threads the advice leaves running (a pool of this size waiting for work).
pub const IDLE_KEPT: u64 = 8;

/// The threads of one Python process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadCosts {
    /// Each thread the interpreter lists.
    pub threads: Vec<ThreadCost>,
}

/// One thread's resident cost, by part; `None` where the part could not be read (counted in
/// the advice's text, left out of the figure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadCost {
    /// The kernel's thread id, when known.
    pub native_thread_id: Option<u32>,
    /// The standard library wait its innermost Python frame is in (`wait (threading.py)`),
    /// `None` when it is not waiting in one: not idle.
    pub waiting_in: Option<String>,
    /// The RSS of its stack mapping (the one holding its stack pointer; with glibc's thread
    /// descriptor and TLS at its top).
    pub stack: Option<u64>,
    /// Its thread state's malloc'd size.
    pub state: Option<u64>,
    /// 3.11+: the resident bytes of its first data-stack chunk (pagemap).
    pub data_stack: Option<u64>,
    /// 3.8-3.10: its frame objects' allocated bytes.
    pub frames: Option<u64>,
}

impl ThreadCost {
    /// The parts known, summed.
    pub fn bytes(&self) -> u64 {
        [self.stack, self.state, self.data_stack, self.frames]
            .iter()
            .flatten()
            .sum()
    }
}

impl ThreadCosts {
    /// The idle threads beyond [`IDLE_KEPT`], and what they hold: the idle threads' mean cost
    /// times their number beyond the pool. `(idle, beyond, saving)`.
    pub fn saving(&self) -> (u64, u64, u64) {
        let idle: Vec<&ThreadCost> = self
            .threads
            .iter()
            .filter(|t| t.waiting_in.is_some())
            .collect();
        let n = idle.len() as u64;
        let beyond = n.saturating_sub(IDLE_KEPT);
        if beyond == 0 {
            return (n, 0, 0);
        }
        let total: u64 = idle.iter().map(|t| t.bytes()).sum();
        (n, beyond, total / n * beyond)
    }
}

/// The classes whose instances `threading.Thread` creates for each thread: the thread
/// object, its `_started` Event and that Event's Condition.
const PER_THREAD_CLASSES: [&str; 3] = ["Thread", "Event", "Condition"];

/// The bytes of the Python objects `threading.Thread` creates for each thread, from the
/// census's class tallies: the mean size (instance and its dict or values) of a `Thread`, an
/// `Event` and a `Condition`, summed; `None` unless the census counted at least `idle`
/// instances of each (threads of a subclass of `Thread` are named otherwise: left out).
pub fn objects_per_thread(classes: &[ClassDicts], idle: u64) -> Option<u64> {
    PER_THREAD_CLASSES
        .iter()
        .map(|name| {
            let (n, bytes) = classes
                .iter()
                .filter(|c| c.type_name == *name)
                .fold((0, 0), |(n, b), c| (n + c.instances, b + c.bytes));
            (n >= idle && n > 0).then(|| bytes / n)
        })
        .sum()
}

/// `thread-stacks`: many threads waiting for work; `classes`: the census's class tallies
/// (`--advice`), which give the threads' Python objects.
pub(crate) fn advise(
    pid: u32,
    t: &ThreadCosts,
    classes: Option<&[ClassDicts]>,
    sz: SizeStyle,
    out: &mut Vec<Advice>,
) {
    const METHOD: &str = "per idle thread (innermost Python frame in a standard library wait): \
the RSS of its stack mapping, its thread state's malloc'd size (glibc's chunk header), the \
resident pages of its first data-stack chunk (3.11+, pagemap) or its frame objects' allocated \
sizes (3.8-3.10), plus the mean size of a Thread, an Event and a Condition instance (census \
class tallies: the objects threading.Thread creates per thread); the idle threads' mean times \
their number beyond 8; their locks, other Python objects and glibc arenas are not counted";
    let (idle, beyond, saving) = t.saving();
    if beyond == 0 {
        return;
    }
    let objects = classes.and_then(|c| objects_per_thread(c, idle));
    let saving = saving + objects.unwrap_or(0) * beyond;
    let idle_threads = || t.threads.iter().filter(|x| x.waiting_in.is_some());
    let mean = saving / beyond;
    let part = |f: fn(&ThreadCost) -> Option<u64>| {
        let known: Vec<u64> = idle_threads().filter_map(f).collect();
        (!known.is_empty()).then(|| known.iter().sum::<u64>() / known.len() as u64)
    };
    let parts: Vec<String> = [
        ("stack", part(|x| x.stack)),
        ("thread state", part(|x| x.state)),
        ("data stack", part(|x| x.data_stack)),
        ("frames", part(|x| x.frames)),
        ("Thread, Event and Condition objects", objects),
    ]
    .iter()
    .filter_map(|(name, v)| v.map(|v| format!("{name} {}", sz.size(v))))
    .collect();
    let unread = idle_threads()
        .filter(|x| x.stack.is_none() || x.state.is_none())
        .count();
    let mut waits: Vec<&str> = idle_threads()
        .filter_map(|x| x.waiting_in.as_deref())
        .collect();
    waits.sort_unstable();
    waits.dedup();
    let shown: Vec<&str> = waits.iter().take(3).copied().collect();
    let text = format!(
        "{idle} of {} threads are idle (waiting in {}{}), each holding about {} resident \
         ({}). Running at most {IDLE_KEPT} idle threads (a pool that hands them work, e.g. \
         ThreadPoolExecutor(max_workers={IDLE_KEPT})) instead of {idle} would save about {}{}",
        t.threads.len(),
        shown.join(", "),
        if waits.len() > shown.len() {
            ", ..."
        } else {
            ""
        },
        sz.size(mean),
        parts.join(", "),
        sz.size(saving),
        if unread > 0 {
            format!(" ({unread} idle threads with a part that could not be read, left out of it)")
        } else {
            String::new()
        }
    );
    out.push(crate::advice::item(
        pid,
        "thread-stacks",
        "threads",
        saving,
        METHOD,
        text,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(idle: bool) -> ThreadCost {
        ThreadCost {
            native_thread_id: Some(1),
            waiting_in: idle.then(|| "wait (threading.py)".to_string()),
            stack: Some(8192),
            state: Some(1024),
            data_stack: Some(4096),
            frames: None,
        }
    }

    #[test]
    fn only_idle_threads_beyond_the_pool_are_saved() {
        let mut t = ThreadCosts {
            threads: (0..200).map(|i| thread(i >= 4)).collect(),
        };
        assert_eq!(t.saving(), (196, 188, 188 * 13312));
        let mut out = Vec::new();
        advise(7, &t, None, SizeStyle::Binary, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "thread-stacks");
        assert_eq!(out[0].saving_bytes, 188 * 13312);
        // the census's Thread, Event and Condition instances add their mean per thread
        let class = |name: &str, instances, bytes| ClassDicts {
            type_name: name.into(),
            instances,
            bytes,
            ..Default::default()
        };
        let classes = vec![
            class("Thread", 197, 197 * 300),
            class("Event", 198, 198 * 100),
            class("Condition", 198, 198 * 200),
        ];
        assert_eq!(objects_per_thread(&classes, 196), Some(600));
        let mut out = Vec::new();
        advise(7, &t, Some(&classes), SizeStyle::Binary, &mut out);
        assert_eq!(out[0].saving_bytes, 188 * (13312 + 600));
        // fewer Thread instances than idle threads (a subclass): no object figure
        assert_eq!(objects_per_thread(&classes[..2], 196), None);
        assert_eq!(objects_per_thread(&classes, 198), None);
        t.threads.truncate(12); // 8 idle: the pool itself
        let mut out = Vec::new();
        advise(7, &t, None, SizeStyle::Binary, &mut out);
        assert!(out.is_empty());
    }
}
