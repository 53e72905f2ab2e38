//! Builds the allocation tracer, `memlens-preload` (a cdylib), so the memlens binary carries
//! it (`include_bytes!` in src/commands/preload_lib.rs): `memlens run --trace` then needs no
//! file beside the binary, and the wheel, which ships only the binary, traces.
//!
//! The tracer is built by a second cargo (the one running this script, `$CARGO`), offline and
//! `--locked` against the workspace's Cargo.lock, in the release profile without debug
//! information, for this build's target (`$TARGET`: a cross build embeds a tracer for the
//! machine the binary runs on; `MEMLENS_PRELOAD_TARGET` overrides it, below), into its own
//! target directory under `OUT_DIR`, so it never waits on the lock of the outer build's
//! directory. It joins the outer build's jobserver (cargo passes it to build scripts in
//! `CARGO_MAKEFLAGS`), so it takes no more jobs than the outer build was given. The outer
//! build's rustflags (`CARGO_ENCODED_RUSTFLAGS`) and `RUSTC` pass through; a workspace wrapper
//! (clippy's driver under `cargo clippy`) does not, so a lint run and a build embed the same
//! library and do not rebuild it each other's way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set for the inner cargo: this script never runs under it (memlens-preload does not depend
/// on memlens), and if it ever did, it stops rather than recursing.
const GUARD: &str = "MEMLENS_BUILDING_EMBEDDED_PRELOAD";

fn main() {
    if std::env::var_os(GUARD).is_some() {
        panic!("memlens's build script ran inside its own tracer build ({GUARD} is set)");
    }
    let var = |k: &str| std::env::var_os(k).unwrap_or_else(|| panic!("cargo sets {k}"));
    let manifest = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let preload = manifest.join("../memlens-preload");
    let cpython = manifest.join("../memlens-cpython/src");
    // What the tracer is built from: its crate (cargo scans a directory's files), the two
    // files it includes by `#[path]` from memlens-cpython, and the workspace's manifest
    // (profiles) and lock file.
    for p in [
        preload.join("Cargo.toml"),
        preload.join("src"),
        cpython.join("layouts/generated.rs"),
        cpython.join("linetable.rs"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let out = PathBuf::from(var("OUT_DIR"));
    // The tracer is loaded into the traced program, so it must match that program's C library,
    // not memlens's: a memlens built for `*-linux-musl` (a static binary) traces glibc
    // programs with `MEMLENS_PRELOAD_TARGET=<arch>-unknown-linux-gnu` (that target installed).
    println!("cargo:rerun-if-env-changed=MEMLENS_PRELOAD_TARGET");
    let other = std::env::var("MEMLENS_PRELOAD_TARGET")
        .ok()
        .filter(|t| !t.is_empty());
    let target = other
        .clone()
        .unwrap_or_else(|| var("TARGET").into_string().expect("TARGET is UTF-8"));
    let target_dir = out.join("preload-target");
    let mut c = Command::new(var("CARGO"));
    c.current_dir(&root)
        .args(["build", "--release", "--locked", "--offline", "--lib"])
        .args([
            "-p",
            "memlens-preload",
            "--target",
            &target,
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Its stdout would be read as this script's `cargo:` directives.
        .stdout(std::io::stderr())
        .env(GUARD, "1")
        // Embedded bytes: no debug information, symbol table stripped (the dynamic symbols,
        // the interposed malloc family, stay).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    if other.is_some() {
        // The outer build's rustflags are for its own target.
        c.env_remove("CARGO_ENCODED_RUSTFLAGS");
    }
    let st = c
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build memlens-preload: {e}"));
    assert!(
        st.success(),
        "building memlens-preload (the tracer memlens embeds) failed: {st}"
    );
    let so = target_dir
        .join(&target)
        .join("release")
        .join("libmemlens_preload.so");
    copy(&so, &out.join("libmemlens_preload.so"));
}

/// Copies the built library to where `include_bytes!` reads it (a stable path in `OUT_DIR`).
fn copy(from: &Path, to: &Path) {
    let bytes = std::fs::read(from)
        .unwrap_or_else(|e| panic!("the tracer library {}: {e}", from.display()));
    assert!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        from.display()
    );
    std::fs::write(to, bytes).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
}
