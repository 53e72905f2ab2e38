//! Why the kernel may refuse memlens a process, as data (the CLI words it): the process is
//! already traced (a debugger, py-spy, strace: it cannot be paused), Yama restricts ptrace, or
//! it belongs to another user and memlens lacks `CAP_SYS_PTRACE`.

use memlens_procfs::bytes::{parse_hex, parse_u64, split_key_value};

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

fn status_field(pid: &str, key: &[u8]) -> Option<Vec<u8>> {
    let text = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    text.split(|b| *b == b'\n')
        .filter_map(split_key_value)
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_vec())
}

/// What may stand between memlens and process `pid`, checked now (empty when nothing known).
pub fn access_hints(pid: u32) -> Vec<AccessHint> {
    let mut out = Vec::new();
    let target = pid.to_string();
    let tracer = status_field(&target, b"TracerPid").and_then(|v| parse_u64(&v));
    if let Some(t) = tracer.filter(|t| *t != 0 && *t != u64::from(std::process::id())) {
        let name = std::fs::read_to_string(format!("/proc/{t}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        out.push(AccessHint::Traced {
            tracer: t as u32,
            name,
        });
    }
    let caps = status_field("self", b"CapEff")
        .and_then(|v| parse_hex(&v))
        .unwrap_or(0);
    let can_ptrace = caps & CAP_SYS_PTRACE != 0;
    let scope = std::fs::read("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|v| parse_u64(v.trim_ascii()))
        .unwrap_or(0) as u8;
    if scope >= 3 || (scope >= 1 && !can_ptrace) {
        out.push(AccessHint::Yama { scope });
    }
    let uid_of = |p: &str| {
        status_field(p, b"Uid").and_then(|v| {
            let mut f = v
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            let real = f.next().and_then(parse_u64)?;
            let effective = f.next().and_then(parse_u64).unwrap_or(real);
            Some((real as u32, effective as u32))
        })
    };
    if let (Some((uid, _)), Some((_, mine))) = (uid_of(&target), uid_of("self")) {
        if uid != mine && !can_ptrace {
            out.push(AccessHint::OtherUser { uid, mine });
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
