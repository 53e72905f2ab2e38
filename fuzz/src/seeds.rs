//! Seed corpora, written by each target itself when `MEMLENS_FUZZ_SEEDS=DIR` is set (the
//! target writes its seeds into DIR and exits): the captured files of
//! `crates/memlens-procfs/tests/fixtures`, small ELF files, heaps built with every layout
//! ([`crate::heap`]) and recordings written with the real schema.

use std::path::{Path, PathBuf};

use crate::heap;
use crate::image::{Header, BASE};

/// Seeds of one target: (file name, bytes).
pub type Seeds = Vec<(String, Vec<u8>)>;

/// The environment variable that asks a target for its seeds.
pub const ENV: &str = "MEMLENS_FUZZ_SEEDS";

/// The environment variable that asks a target for the reproducers of its known findings
/// ([`crate::known`]), one file per finding named by its id.
pub const KNOWN_ENV: &str = "MEMLENS_FUZZ_KNOWN";

fn write_known(target: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let open = |id: &str| crate::known::FINDINGS.iter().any(|f| f.id == id);
    for (id, t, bytes) in crate::known::reproducers() {
        if t == target && open(id) {
            let p = dir.join(id);
            std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    std::process::exit(0);
}

/// Called from each target's `init`: when [`ENV`] names a directory, writes the target's seeds
/// there and exits the process.
pub fn write_if_asked(target: &str) {
    if let Some(dir) = std::env::var_os(KNOWN_ENV) {
        write_known(target, Path::new(&dir));
    }
    let Some(dir) = std::env::var_os(ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut seeds = match target {
        "procfs" => procfs(),
        "discovery" => discovery(),
        "objects" => objects(),
        "interpreter" => interpreter(),
        "recording" => recording(),
        "trace" => trace(),
        other => panic!("no seeds for {other}"),
    };
    // the inputs of fixed findings: every run replays them
    for (id, t, bytes) in crate::known::reproducers() {
        if t == target && !crate::known::FINDINGS.iter().any(|f| f.id == id) {
            seeds.push((format!("regression-{id}"), bytes));
        }
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let n = seeds.len();
    for (name, bytes) in seeds {
        let p = dir.join(format!("seed-{name}"));
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    eprintln!("{target}: {n} seeds written to {}", dir.display());
    std::process::exit(0);
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/memlens-procfs/tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// The first whole lines of `text` within `max` bytes.
fn head(text: &[u8], max: usize) -> Vec<u8> {
    if text.len() <= max {
        return text.to_vec();
    }
    let cut = text[..max]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(max, |i| i + 1);
    text[..cut].to_vec()
}

fn with_op(op: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![op];
    v.extend_from_slice(bytes);
    v
}

/// Seeds of the `procfs` target: each fixture behind its parser's op byte (files cut to 8 KiB
/// at a line end).
pub fn procfs() -> Seeds {
    let mut out = Seeds::new();
    let mut add = |op: u8, name: &str, bytes: &[u8]| {
        out.push((format!("{op:02}-{name}"), with_op(op, &head(bytes, 8192))));
    };
    let smaps = fixture("python_threads.smaps");
    add(0, "smaps", &smaps);
    // the last mappings too: [stack], [vvar], [vsyscall]
    let tail_at = smaps.len().saturating_sub(6000);
    let tail_at = smaps[tail_at..]
        .windows(2)
        .position(|w| w[0] == b'\n' && w[1].is_ascii_hexdigit())
        .map_or(0, |i| tail_at + i + 1);
    add(0, "smaps-tail", &smaps[tail_at..]);
    add(1, "smaps_rollup", &fixture("python_threads.smaps_rollup"));
    add(2, "status", &fixture("python_threads.status"));
    add(3, "stat", &fixture("python_threads.stat"));
    let mut statm = 4096u16.to_le_bytes().to_vec();
    statm.extend(fixture("python_threads.statm"));
    add(4, "statm", &statm);
    add(5, "maps", &fixture("python_threads.maps"));
    for (i, line) in fixture("python_threads.task_syscall")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        add(6, &format!("syscall-{i}"), line);
    }
    add(6, "syscall-running", b"running\n");
    let stat = fixture("python_threads.stat");
    let mut table = stat.clone();
    for (pid, ppid) in [(7433, 7432), (7434, 7433), (7435, 7432)] {
        table.push(0);
        let line = String::from_utf8_lossy(&stat).replacen(
            "7432 (python3) S 7427",
            &format!("{pid} (worker) S {ppid}"),
            1,
        );
        table.extend_from_slice(line.as_bytes());
    }
    add(7, "tree", &table);
    add(8, "cgroup", &fixture("python_threads.cgroup"));
    add(
        8,
        "cgroup-v2",
        b"0::/user.slice/user-1000.slice/session-2.scope\n",
    );
    add(9, "mountinfo", &fixture("python_threads.mountinfo"));
    for dir in ["cgroup_v1", "cgroup_v2"] {
        let Ok(rd) = std::fs::read_dir(fixtures().join(dir)) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("memory."))
            .collect();
        names.sort();
        for name in names {
            let bytes = fixture(&format!("{dir}/{name}"));
            let op = if bytes.iter().filter(|b| **b == b'\n').count() > 1 {
                10
            } else {
                11
            };
            add(op, &format!("{dir}-{name}"), &bytes);
        }
    }
    add(11, "pressure", b"some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=5\n");
    out
}

/// Seeds of the `discovery` target: small ELF files, version strings, names, maps.
pub fn discovery() -> Seeds {
    let mut out = Seeds::new();
    let elf = crate::elf::write(
        (0x4000, 0x400),
        &[
            ("_PyRuntime", 0x4000, 0x100),
            ("Py_Version", 0x4100, 4),
            ("version", 0x4108, 250),
        ],
    );
    out.push(("elf-mini".into(), with_op(0, &elf)));
    out.push((
        "elf-stripped".into(),
        with_op(0, &crate::elf::write((0x2000, 0x10), &[])),
    ));
    if let Ok(exe) = std::fs::read("/usr/bin/true") {
        if exe.len() <= 64 << 10 {
            out.push(("elf-true".into(), with_op(0, &exe)));
        }
    }
    for (i, v) in [
        "3.9.18 (main, Nov 1 2026) [GCC]",
        "3.12.0rc2 (x)",
        "3.13.0a3+",
        "3.14.0b1",
    ]
    .iter()
    .enumerate()
    {
        out.push((format!("version-{i}"), with_op(1, v.as_bytes())));
    }
    for (i, n) in [
        "libpython3.13t.so.1.0",
        "python3.11",
        "/usr/lib/x86_64-linux-gnu/libpython3.12d.so",
        "python2.7",
    ]
    .iter()
    .enumerate()
    {
        out.push((format!("name-{i}"), with_op(2, n.as_bytes())));
    }
    out.push((
        "maps".into(),
        with_op(3, &head(&fixture("python_threads.maps"), 4096)),
    ));
    for (i, p) in [
        "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
        "/srv/venv/lib/python3.12/site-packages/pandas/_libs/lib.cpython-312-x86_64-linux-gnu.so",
    ]
    .iter()
    .enumerate()
    {
        out.push((format!("path-{i}"), with_op(4, p.as_bytes())));
    }
    out
}

fn objects_input(op: u8, minor: u8, addr: u64, param: u8, image: &[u8]) -> Vec<u8> {
    let mut v = vec![op, crate::selector_of(minor)];
    v.extend_from_slice(&u16::try_from(addr - BASE).unwrap_or(0).to_le_bytes());
    v.push(param);
    v.extend_from_slice(image);
    v
}

/// Seeds of the `objects` target: each decoder on a heap of each layout, and line tables.
pub fn objects() -> Seeds {
    let mut out = Seeds::new();
    for l in crate::layouts() {
        let minor = l.version.1;
        let (b, image) = heap::build(l, true);
        for (op, name, addr, param) in [
            (0, "str", b.strs[0], 16),
            (1, "bytes", b.bytes_obj, 16),
            (2, "type_name", b.point_type, 0),
            (3, "dict", b.dict, 0),
            (5, "gc", b.gen2, 0),
        ] {
            out.push((
                format!("3.{minor}-{name}"),
                objects_input(op, minor, addr, param, &image),
            ));
        }
        // cached keys: the dict's key table
        let keys_at = b.dict + l.dict_keys - BASE;
        let keys = u64::from_ne_bytes(
            image[keys_at as usize..keys_at as usize + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        out.push((
            format!("3.{minor}-keys"),
            objects_input(4, minor, keys, 0, &image),
        ));
    }
    let line = |op: u8, first: i32, at: i64, table: &[u8]| {
        let mut image = first.to_le_bytes().to_vec();
        image.extend_from_slice(&at.to_le_bytes());
        image.extend_from_slice(table);
        objects_input(op, 12, BASE, 0, &image)
    };
    out.push(("lnotab".into(), line(6, 10, 6, &[6, 2, 6, 0xff])));
    out.push((
        "linetable310".into(),
        line(7, 5, 12, &[4, 0, 6, 0x80, 4, 3]),
    ));
    out.push((
        "locations".into(),
        line(
            8,
            100,
            4,
            &[0xe8, 4, 0xd9, 0, 5, 0xf8, 0xf2, 7, 0, 1, 1, 0x82, 0x10],
        ),
    ));
    out
}

/// Seeds of the `interpreter` target: every operation on a heap of every layout (3.8-3.11 with
/// and without pymalloc's symbols).
pub fn interpreter() -> Seeds {
    let mut out = Seeds::new();
    for l in crate::layouts() {
        let minor = l.version.1;
        for symbols in [true, false] {
            if !symbols && l.interp_obmalloc.is_some() {
                continue;
            }
            let (b, image) = heap::build(l, symbols);
            for op in 0..5u8 {
                if !symbols && op != 3 {
                    continue;
                }
                let h = Header {
                    op,
                    ..b.header.clone()
                };
                let mut v = h.encode();
                v.extend_from_slice(&image);
                let strip = if symbols { "" } else { "-stripped" };
                out.push((format!("3.{minor}{strip}-op{op}"), v));
            }
        }
    }
    out
}

/// A row program for the `recording` target: (table index, values), each value a type tag and
/// its bytes as `recording::value` reads them.
fn program(rows: &[(u8, Vec<Vec<u8>>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (table, values) in rows {
        v.push(*table);
        for val in values {
            v.extend_from_slice(val);
        }
    }
    v
}

fn int(i: i64) -> Vec<u8> {
    let mut v = vec![2];
    v.extend_from_slice(&i.to_le_bytes());
    v
}
fn real(x: f64) -> Vec<u8> {
    let mut v = vec![3];
    v.extend_from_slice(&x.to_bits().to_le_bytes());
    v
}
fn text(s: &str) -> Vec<u8> {
    let mut v = vec![5, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}
fn null() -> Vec<u8> {
    vec![0]
}

/// Seeds of the `recording` target: a small recording as rows, and the same file as bytes.
pub fn recording() -> Seeds {
    let mib = 1i64 << 20;
    let rows = vec![
        (0, vec![text("interval_s"), text("0.01")]),
        (0, vec![text("command"), text("python3 -c pass")]),
        (0, vec![text("complete"), text("1")]),
        (
            1,
            vec![
                int(1),
                int(4242),
                int(1),
                int(100),
                text("python3"),
                text("python3 -c pass"),
                real(0.0),
                real(0.5),
                real(0.5),
                int(12 * mib),
                int(9 * mib),
                int(12 * mib),
            ],
        ),
        (
            2,
            vec![
                real(0.01),
                int(1),
                int(10 * mib),
                int(6 * mib),
                int(4 * mib),
                int(0),
                int(0),
                int(11 * mib),
                int(1),
            ],
        ),
        (
            2,
            vec![
                real(0.02),
                int(1),
                int(12 * mib),
                int(8 * mib),
                int(4 * mib),
                int(0),
                int(0),
                int(12 * mib),
                int(1),
            ],
        ),
        (
            3,
            vec![
                real(0.02),
                int(1),
                int(9 * mib),
                int(7 * mib),
                int(12 * mib),
                int(0),
                int(300),
            ],
        ),
        (
            4,
            vec![real(0.01), int(10 * mib), int(8 * mib), int(1), null()],
        ),
        (
            4,
            vec![
                real(0.02),
                int(12 * mib),
                int(9 * mib),
                int(1),
                int(14 * mib),
            ],
        ),
        (
            5,
            vec![
                int(1),
                real(0.02),
                text("peak"),
                int(12 * mib),
                int(9 * mib),
                int(7 * mib),
                int(0),
                null(),
            ],
        ),
        (
            6,
            vec![
                int(1),
                text("python-heap"),
                int(8 * mib),
                int(6 * mib),
                int(5 * mib),
                int(0),
                int(3),
            ],
        ),
        (
            6,
            vec![
                int(1),
                text("native-heap"),
                int(4 * mib),
                int(3 * mib),
                int(2 * mib),
                int(0),
                int(2),
            ],
        ),
        (
            8,
            vec![real(0.02), int(1), text("dict"), int(300), int(100_000)],
        ),
        (9, vec![real(0.0), text("start"), int(1), text("python3")]),
        (9, vec![real(0.5), text("exit"), int(1), text("status 0")]),
    ];
    let prog = program(&rows);
    let mut out = vec![("rows".to_string(), with_op(1, &prog))];
    let dir = std::env::temp_dir().join(format!("memlens-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("seed.db");
    let _ = std::fs::remove_file(&file);
    if crate::recording::write_rows(&file, &prog).is_ok() {
        if let Ok(bytes) = std::fs::read(&file) {
            out.push(("file".to_string(), with_op(0, &bytes)));
        }
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir(&dir);
    out
}

/// Trace files of every version (docs/trace-format.md): every record kind, percent-encoded
/// names, a torn last line; version 3: a forked child's inherited figures and a peak block
/// with its `sites=K`, cut short by the next record.
fn trace() -> Seeds {
    let v1 = "memlens-trace 1 pid=7 ppid=1 mode=sampled sample_bytes=524288 clock=monotonic start_ns=5\n\
snap t_ns=10 live_bytes=1048576 live_mmap_bytes=0 peak_live_bytes=2097152 total_bytes=3145728 alloc_samples=3 free_samples=1 live_samples=2 dropped_allocs=0 dropped_frees=0 table_full=0 lost_at_fork=0\n\
end t_ns=20 live_bytes=0 live_mmap_bytes=0 peak_live_bytes=2097152 total_bytes=3145728\n";
    let v2 = "memlens-trace 2 pid=42 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000 python=3.12 temp_ns=1000000\n\
code id=1 first_line=3 file=%2Ftmp%2Fa%20b.py name=main\n\
code id=2 first_line=10 file=%2Ftmp%2Fa.py name=Thing.make\n\
stack id=1 domain=malloc frames=2:12,1:5\n\
stack id=2 domain=pymalloc frames=1:6 truncated=1\n\
stack id=3 domain=mmap frames= unreadable=1\n\
snap t_ns=2000 live_bytes=300 live_mmap_bytes=0 live_pymalloc_bytes=100 live_malloc_bytes=200 peak_live_bytes=300 total_bytes=300 untouched_bytes=0 alloc_samples=3 free_samples=0 live_samples=3 dropped_allocs=0 dropped_frees=0 table_full=0 lost_at_fork=0 unreadable_stacks=0\n\
site stack=1 live_bytes=200 live_count=2 alloc_bytes=200 alloc_count=2 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
peak t_ns=2000 live_bytes=300\n\
peaksite stack=1 bytes=200 count=2\n\
end t_ns=4000 live_bytes=100 live_mmap_bytes=0 peak_live_bytes=300 total_bytes=400\n\
site stack=2 live_bytes=100 live_count=1 alloc_bytes=100 alloc_count=1 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
snap t_ns=5000 live_by";
    let v3 = "memlens-trace 3 pid=43 ppid=42 mode=sampled sample_bytes=65536 clock=monotonic start_ns=3000 python=3.12 temp_ns=1000000 forked_from=42 inherited_live_bytes=300\n\
code id=1 first_line=3 file=%2Ftmp%2Fa.py name=main\n\
stack id=1 domain=malloc frames=1:5\n\
stack id=2 domain=pymalloc frames=1:6\n\
snap t_ns=4000 live_bytes=65536 live_mmap_bytes=0 live_pymalloc_bytes=65536 live_malloc_bytes=0 peak_live_bytes=65536 total_bytes=65536 untouched_bytes=0 alloc_samples=1 free_samples=0 live_samples=1 dropped_allocs=0 dropped_frees=0 table_full=0 lost_at_fork=0 unreadable_stacks=0 stacks_lost=0 tracer_bytes=4096 inherited_live_bytes=200\n\
site stack=1 live_bytes=0 live_count=0 alloc_bytes=0 alloc_count=0 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0 inherited_bytes=300 inherited_count=3\n\
site stack=2 live_bytes=65536 live_count=1 alloc_bytes=65536 alloc_count=1 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
peak t_ns=4000 live_bytes=65536 sites=1\n\
peaksite stack=2 bytes=65536 count=1\n\
peak t_ns=4500 live_bytes=131072 sites=2\n\
peaksite stack=2 bytes=65536 count=1\n\
snap t_ns=5000 live_bytes=0 live_mmap_bytes=0 live_pymalloc_bytes=0 live_malloc_bytes=0 peak_live_bytes=131072 total_bytes=131072 untouched_bytes=0 alloc_samples=2 free_samples=2 live_samples=0 dropped_allocs=0 dropped_frees=0 table_full=0 lost_at_fork=0 unreadable_stacks=0 stacks_lost=0 tracer_bytes=4096 inherited_live_bytes=100\n";
    vec![
        ("v1".into(), [&[7u8][..], v1.as_bytes()].concat()),
        ("v2".into(), [&[13u8][..], v2.as_bytes()].concat()),
        ("v3".into(), [&[29u8][..], v3.as_bytes()].concat()),
    ]
}

#[cfg(test)]
mod tests {
    use memlens_recording::trace::{parse, Limits};

    #[test]
    fn trace_seeds_parse_as_written() {
        let seeds = super::trace();
        let text = |name: &str| {
            let (_, bytes) = seeds.iter().find(|(n, _)| n == name).unwrap();
            bytes[1..].to_vec()
        };
        // Version 3: the second peak block is cut by the next snap (one line of two), so it
        // is counted and the first stands; the child's inherited figures are read.
        let t = parse(&text("v3"), Limits::default()).unwrap();
        assert_eq!(t.header.inherited_live_bytes, 300);
        let p = t.peak.unwrap();
        assert_eq!(
            (p.t_ns, p.live_bytes, p.sites),
            (4000, 65536, vec![(2, 65536, 1)])
        );
        assert_eq!(t.skipped.peak_cut, 1);
        assert_eq!(t.snaps.len(), 2);
        assert_eq!(t.snaps[1].inherited_live_bytes, 100);
        assert_eq!(t.sites[0].figures.inherited_bytes, 300);
        assert_eq!(t.skipped.total(), 1);
        // Version 2: its torn last line is counted.
        let t = parse(&text("v2"), Limits::default()).unwrap();
        assert_eq!(t.skipped.torn, 1);
    }
}
