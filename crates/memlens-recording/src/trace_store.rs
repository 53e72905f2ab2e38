
#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{End, Meta};
    use crate::trace::parse;

    const ROOT: &str = "memlens-trace 2 pid=10 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000000000 python=3.12 temp_ns=1000000\n\
code id=1 first_line=1 file=%2Fw%2Fapp.py name=%3Cmodule%3E\n\
code id=2 first_line=5 file=%2Fw%2Fapp.py name=build\n\
stack id=1 domain=malloc frames=2:7,1:20\n\
stack id=2 domain=pymalloc frames=1:21\n\
stack id=3 domain=malloc frames=\n\
snap t_ns=2000000000 live_bytes=1300 live_mmap_bytes=0 live_pymalloc_bytes=300 live_malloc_bytes=1000 peak_live_bytes=1300 total_bytes=1300 untouched_bytes=0\n\
site stack=1 live_bytes=1000 live_count=1 alloc_bytes=1000 alloc_count=1\n\
site stack=2 live_bytes=300 live_count=3 alloc_bytes=300 alloc_count=3\n\
peak t_ns=2000000000 live_bytes=1300\n\
peaksite stack=1 bytes=1000 count=1\n\
peaksite stack=2 bytes=300 count=3\n\
snap t_ns=3000000000 live_bytes=350 live_mmap_bytes=0 live_pymalloc_bytes=300 live_malloc_bytes=50 peak_live_bytes=1300 total_bytes=1350\n\
site stack=1 live_bytes=0 live_count=0 alloc_bytes=1000 alloc_count=1 freed_bytes=1000 freed_count=1\n\
site stack=3 live_bytes=50 live_count=1 alloc_bytes=80 alloc_count=2 freed_bytes=30 freed_count=1 temp_bytes=30 temp_count=1\n\
end t_ns=4000000000 live_bytes=350 live_mmap_bytes=0 peak_live_bytes=1300 total_bytes=1350 dropped_frees=2\n";

    const CHILD: &str = "memlens-trace 2 pid=11 ppid=10 mode=all sample_bytes=1 clock=monotonic start_ns=2500000000 python=3.12 forked_from=10 inherited_live_bytes=0\n\
code id=1 first_line=1 file=%2Fw%2Fworker.py name=work\n\
stack id=1 domain=mmap frames=1:3\n\
snap t_ns=2600000000 live_bytes=5000 live_mmap_bytes=5000\n\
site stack=1 live_bytes=5000 live_count=1 alloc_bytes=5000 alloc_count=1\n\
peak t_ns=2600000000 live_bytes=5000\n\
peaksite stack=1 bytes=5000 count=1\n";

    fn recording(name: &str, traces: &[&str]) -> Recording {
        let p = std::env::temp_dir().join(format!("memlens-trace-store-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let mut w = RecordingWriter::create(&p, &Meta::default()).unwrap();
        for (k, t) in traces.iter().enumerate() {
            let t = parse(t.as_bytes(), Limits::default()).unwrap();
            write_trace(&mut w, &format!("trace{k}"), &t, 1_000_000_000).unwrap();
        }
        w.finish(&End::default()).unwrap();
        let r = Recording::open(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        r
    }

    #[test]
    fn one_process_peak_block_lines_leaks_and_temporaries() {
        let r = recording("one", &[ROOT]);
        let a = r.allocations().unwrap().unwrap();
        assert_eq!(a.mode, "all");
        assert_eq!((a.at_peak.t, a.at_peak.bytes), (1.0, 1300));
        assert_eq!(a.at_peak.stacks.len(), 2);
        let top = &a.at_peak.stacks[0];
        assert_eq!((top.bytes, top.domain, top.pid), (1000, Domain::Malloc, 10));
        assert_eq!(top.frames[0].function, "build");
        assert_eq!(top.frames[0].line, 7);
        assert_eq!(top.frames[1].function, "<module>");
        assert_eq!(a.at_peak.by_line[0].file, "/w/app.py");
        assert_eq!(a.at_peak.by_line[0].line, 7);
        // Alive at exit: the pymalloc site and the native one (no Python frame).
        assert_eq!(a.leaked.bytes, 350);
        let native = a.leaked.by_line.iter().find(|l| l.file == NATIVE).unwrap();
        assert_eq!(native.bytes, 50);
        assert_eq!(a.temporary.bytes, 30);
        assert_eq!(a.temporary.by_line[0].file, NATIVE);
        let t7 = a.totals_by_line.iter().find(|l| l.line == 7).unwrap();
        assert_eq!((t7.allocated_bytes, t7.freed_bytes), (1000, 1000));
        assert_eq!(a.lost.dropped_frees, 2);
        assert_eq!(a.lost.unfinished_traces, 0);
        assert!(a.reconciliation.is_empty(), "no ledger, nothing to reconcile");
    }

    #[test]
    fn a_tree_peak_is_the_highest_sum() {
        let r = recording("tree", &[ROOT, CHILD]);
        let a = r.allocations().unwrap().unwrap();
        // The child's peak at 1.6 s (5000) with the root then (its 1.0 s snapshot: 1300)
        // beats the root's own peak (1300, the child not started).
        assert_eq!(a.at_peak.bytes, 6300);
        assert!((a.at_peak.t - 1.6).abs() < 1e-9, "{}", a.at_peak.t);
        let pids: Vec<u32> = a.at_peak.stacks.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [11, 10, 10]);
        assert_eq!(a.lost.unfinished_traces, 1, "the child wrote no end line");
        assert_eq!(a.leaked.bytes, 350, "only processes that ended leak");
    }

    #[test]
    fn trace_names_in_the_directory() {
        let f = TraceFiles {
            dir: PathBuf::from("/x"),
            name: "trace".into(),
        };
        for ok in ["trace", "trace.12", "trace.12.1"] {
            assert!(f.is_trace_name(ok), "{ok}");
        }
        for no in ["trace.", "trace.a", "trace.1.2.3", "tracex", "other", "trace.1..2"] {
            assert!(!f.is_trace_name(no), "{no}");
        }
    }

    #[test]
    fn the_private_directory_is_fresh_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let parent = std::env::temp_dir().join(format!("memlens-tracedir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir_all(&parent).unwrap();
        let d = TraceDir::create(&parent).unwrap();
        let m = std::fs::metadata(&d.files().dir).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        std::fs::write(d.files().out(), b"x").unwrap();
        std::fs::write(d.files().dir.join("trace.5"), b"x").unwrap();
        let dir = d.files().dir.clone();
        d.remove().unwrap();
        assert!(!dir.exists());
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
