//! Why the kernel may refuse memlens a process, as data (the CLI words it): the process is
//! already traced (a debugger, py-spy, strace: it cannot be paused), Yama restricts ptrace, or
//! it belongs to another user and memlens lacks `CAP_SYS_PTRACE`.

use memlens_procfs::bytes::{parse_hex, parse_u64, split_key_value};
use memlens_procfs::Process;

/// `CAP_SYS_PTRACE`'s bit in the capability sets.
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// One reason access to a process may be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessHint {
    /// Another process traces it; a process has one tracer at most, so it cannot be paused.
    Traced {
        /// The tracer's pid.
        tracer: u32,
        /// The tracer's name (untrusted).
        name: String,
    },
    /// Yama's `kernel.yama.ptrace_scope` forbids it (1: only a process's own descendants,
    /// 2: only with `CAP_SYS_PTRACE`, 3: never).
    Yama {
        /// The setting.
        scope: u8,
    },
    /// It runs as another user and memlens has no `CAP_SYS_PTRACE`.
    OtherUser {
        /// The process's user id.
        uid: u32,
        /// memlens's effective user id.
        mine: u32,
    },
}

fn cap_eff() -> u64 {
    let text = std::fs::read("/proc/self/status").unwrap_or_default();
    text.split(|b| *b == b'\n')
        .filter_map(split_key_value)
        .find(|(k, _)| *k == b"CapEff")
        .and_then(|(_, v)| parse_hex(v))
        .unwrap_or(0)
}

/// What may stand between memlens and process `pid`, checked now (empty when nothing known).
pub fn access_hints(pid: u32) -> Vec<AccessHint> {
    let mut out = Vec::new();
    let status = |p: u32| Process::new(p).and_then(|p| p.status()).ok();
    let target = status(pid);
    let me = std::process::id();
    if let Some(t) = target
        .as_ref()
        .map(|s| s.tracer_pid)
        .filter(|t| *t != 0 && *t != me)
    {
        let name = status(t)
            .map(|s| String::from_utf8_lossy(&s.name).into_owned())
            .unwrap_or_default();
        out.push(AccessHint::Traced { tracer: t, name });
    }
    let can_ptrace = cap_eff() & CAP_SYS_PTRACE != 0;
    let scope = std::fs::read("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|v| parse_u64(v.trim_ascii()))
        .unwrap_or(0) as u8;
    if scope >= 3 || (scope >= 1 && !can_ptrace) {
        out.push(AccessHint::Yama { scope });
    }
    if let (Some(t), Some(mine)) = (target, status(me)) {
        if t.uid != mine.euid && !can_ptrace {
            out.push(AccessHint::OtherUser {
                uid: t.uid,
                mine: mine.euid,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_of_ours_is_not_traced_and_missing_processes_give_nothing() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let hints = access_hints(child.id());
        assert!(
            !hints.iter().any(|h| matches!(h, AccessHint::Traced { .. })),
            "{hints:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(access_hints(u32::MAX)
            .iter()
            .all(|h| matches!(h, AccessHint::Yama { .. })));
    }
}
