//! `memlens census PID --referrers TYPE`: the shortest chains of references from a root (a
//! module global or a thread's frame local) to the instances of a type, grouped by the path
//! they take, with how many instances and bytes each path holds. `memlens-cpython` walks;
//! `memlens` renders.

use serde::Serialize;

pub use crate::census::Unreadable;
pub use crate::python::Method;

/// Where a chain starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Root {
    /// A global of a module in `sys.modules`: `module.name`.
    Global {
        /// The module's name in `sys.modules` (untrusted).
        module: String,
        /// The global's name (untrusted).
        name: String,
    },
    /// A local variable (or cell) of a frame on a thread's stack.
    Local {
        /// `threading.get_ident()` of the thread.
        thread_id: u64,
        /// The kernel thread id, when known.
        native_thread_id: Option<u32>,
        /// The frame's function (`co_qualname`, or `co_name` before 3.11; untrusted).
        function: String,
        /// The variable's name (untrusted).
        name: String,
    },
}

/// One object on a chain and the reference leaving it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Step {
    /// `type(o).__name__` of the object; `class NAME` for a class (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The reference to the next object: `[*]` for any position of a list, tuple, set or deque
    /// (and a dict value under a key that is not a `str`), `['key']` for a dict value under a
    /// `str` key, `.name` for an attribute (instance dict, inline values, `__slots__`, class
    /// dict, a function's `__defaults__`/`__closure__`...), `{key}` for a dict key (untrusted).
    pub via: String,
}

/// The instances reached along one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Where it starts.
    pub root: Root,
    /// The objects between the root and the instances (empty when the root names an instance
    /// itself).
    pub path: Vec<Step>,
    /// The path was longer than [`MAX_DEPTH`] steps: the rest is left out (the instances of
    /// every longer path sharing these first steps are counted together).
    pub truncated: bool,
    /// Instances of the type whose shortest chain takes this path.
    pub instances: u64,
    /// Their `sys.getsizeof`, summed: shallow (what each instance references is not in it).
    pub bytes: u64,
}

/// Steps of a chain kept, at most.
pub const MAX_DEPTH: usize = 32;

/// What `--referrers` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Referrers {
    /// The type asked for: `__name__`, or `module.qualname`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether a type of that name was seen at all (the type of an object reached, or a
    /// class reached): when not, the name is likely misspelt.
    #[serde(skip)]
    pub type_known: bool,
    /// Chains, by bytes then instances (at most `--top`; `chains_total` says how many).
    pub chains: Vec<Chain>,
    /// Chains found in all.
    pub chains_total: u64,
    /// Instances reached from the roots (all chains).
    pub instances: u64,
    /// Their `sys.getsizeof`, summed (shallow).
    pub bytes: u64,
    /// Objects reached from the roots, instances or not.
    pub objects_reached: u64,
    /// Roots walked from: module globals and frame locals.
    pub roots: u64,
    /// Objects reached but not read; what they reference is not followed, so instances behind
    /// them are missing from the counts.
    pub unreadable: Unreadable,
    /// Frames whose locals could not be read (their locals are not roots).
    pub frames_unread: u64,
    /// How the walk was read: `paused` (the target stopped for the whole walk: exact) or
    /// `nonblocking` (the target ran: the chains and counts may be inexact).
    pub method: Method,
    /// Microseconds the target was stopped.
    pub pause_us: u64,
}

impl Chain {
    /// `module leaky . global CACHE -> list[*] -> Item`.
    pub fn render(&self, target: &str) -> String {
        let mut s = match &self.root {
            Root::Global { module, name } => format!("module {module} . global {name}"),
            Root::Local {
                thread_id,
                function,
                name,
                ..
            } => format!("thread {thread_id:#x} . {function}() . local {name}"),
        };
        for step in &self.path {
            s.push_str(" -> ");
            s.push_str(&step.type_name);
            s.push_str(&step.via);
        }
        if self.truncated {
            s.push_str(" -> ...");
        }
        s.push_str(" -> ");
        s.push_str(target);
        s
    }
}
