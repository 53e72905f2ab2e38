//! The numpy the test command installs ([`numpy_pythons`]) is imported from bytecode made for
//! the interpreter that imports it, never compiled from source at each import.
//!
//! Why it matters: `scripts/test-pythons.sh` fills the static Debian 3.11's and sid's 3.14/3.15
//! virtualenvs with pyenv 3.12's pip, which compiles with its own interpreter: only
//! `cpython-312` files were left, and the tests run with `PYTHONDONTWRITEBYTECODE=1`, so every
//! `import numpy` there compiled the ~90 modules of numpy it loads. That is 5.3 times the
//! allocations of an import from bytecode (numpy 1.26 on the static 3.11, `--trace=all`'s
//! `alloc_samples`: 1.22 M against 0.23 M, 243 MB against 75 MB allocated) and was why
//! `--trace=all` of trace_truth with numpy took minutes of the target's CPU on the
//! static 3.11 and on 3.15. The truth is the interpreter's own account: under `-v` its import
//! system says, per module, `code object from '<...>.pyc'` (bytecode) or `code object from
//! <...>.py` (compiled from source).

use std::process::Command;

use crate::support::{numpy_pythons, stderr};

/// (modules of numpy loaded from bytecode, those compiled from source) in one `import numpy`.
fn numpy_loads(py: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let out = Command::new(py)
        .args(["-v", "-c", "import numpy"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}: import numpy failed: {}",
        py.display(),
        stderr(&out)
    );
    let (mut pyc, mut source) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let Some(what) = line.strip_prefix("# code object from ") else {
            continue;
        };
        let path = what.trim_matches('\'');
        if !path.contains("/site-packages/numpy/") {
            continue;
        }
        if path.ends_with(".pyc") {
            pyc.push(path.to_string());
        } else {
            source.push(path.to_string());
        }
    }
    (pyc, source)
}

#[test]
fn numpy_is_imported_from_its_interpreters_bytecode() {
    let pys = numpy_pythons();
    for py in &pys {
        let (pyc, source) = numpy_loads(&py.path);
        assert!(
            source.is_empty(),
            "{}: {} of numpy's modules compiled from source at import (no bytecode for this \
             interpreter: run scripts/test-pythons.sh), e.g. {:?}",
            py.label,
            source.len(),
            &source[..source.len().min(3)]
        );
        // an import that loads numpy at all loads dozens of its modules (81 for 1.24 on 3.8)
        assert!(
            pyc.len() >= 50,
            "{}: only {} of numpy's modules loaded from bytecode",
            py.label,
            pyc.len()
        );
        let tag = format!(".cpython-{}{}.pyc", py.version.0, py.version.1);
        assert!(
            pyc.iter().all(|p| p.ends_with(&tag)),
            "{}: bytecode not of this interpreter ({tag})",
            py.label
        );
    }
}
