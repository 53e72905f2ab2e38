//! Finding CPython in a process from what it maps: ELF files (`ElfFile::parse` on arbitrary
//! bytes), `sys.version` strings, file names (`python3.11`, `libpython3.13t.so.1.0`), which
//! mapped file is Python (`binary::find` over a maps text), and the ledger's path parsers. The
//! first byte picks one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memlens_cpython::binary::{self, check_name_version, is_libpython, version_in_name};
use memlens_cpython::process::Version;
use memlens_procfs::maps;
use memlens_remote::elf::ElfFile;

const OPS: u8 = 5;

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("discovery"), |data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    match op % OPS {
        0 => elf(rest),
        1 => version_string(rest),
        2 => file_name(rest),
        3 => python_file(rest),
        _ => ledger_paths(rest),
    }
});

fn elf(bytes: &[u8]) {
    let Ok(f) = ElfFile::parse(std::path::Path::new("fuzz"), bytes) else {
        return;
    };
    for name in ["_PyRuntime", "Py_Version", "version", "arenas", ".bss"] {
        let _ = f.symbol(name);
        for s in f.symbols_named(name) {
            let _ = s.address.wrapping_add(f.load_bias(0x7f00_0000_0000));
        }
    }
    let _ = f.section(".bss");
    let _ = f.load_bias(0);
}

fn version_string(s: &[u8]) {
    let Some(v) = Version::from_version_string(s) else {
        return;
    };
    // What Display writes reads back as the same version (the serial of a final release is
    // not written).
    let text = v.to_string();
    let again = Version::from_version_string(text.as_bytes());
    let again = again.unwrap_or_else(|| panic!("{text:?} does not parse back"));
    assert_eq!(
        (again.major, again.minor, again.micro),
        (v.major, v.minor, v.micro),
        "{text}"
    );
    if matches!(v.level, 0xa..=0xc) {
        assert_eq!((again.level, again.serial), (v.level, v.serial), "{text}");
    }
}

fn file_name(name: &[u8]) {
    if let Some(v) = version_in_name(name) {
        assert!(v.flags.chars().all(|c| c.is_ascii_lowercase()));
        let _ = check_name_version(&v);
    }
    let _ = is_libpython(name);
    let _ = maps::is_shared_object(name);
}

/// A maps text (the one parser, memlens-procfs's) and the first line as the executable: which
/// mapped file is Python.
fn python_file(text: &[u8]) {
    let (exe, text) = match text.iter().position(|b| *b == b'\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[][..]),
    };
    let Ok(entries) = maps::parse(text) else {
        return;
    };
    for m in &entries {
        assert!(m.start <= m.end, "a mapping ending before it starts: {m:?}");
        assert!(m.path.len() <= text.len());
    }
    let _ = binary::find(exe, entries.iter().map(|m| m.path.as_slice()));
}

fn ledger_paths(path: &[u8]) {
    let _ = maps::file_name(path);
    let _ = memlens_ledger::distribution::locate(path);
}
