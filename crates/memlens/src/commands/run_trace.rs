//! `memlens run --trace`: the allocation tracer (`memlens-preload`, loaded with `LD_PRELOAD`)
//! set up for the program, and its private directory of trace files (docs/trace-format.md).
//!
//! The library is `$MEMLENS_PRELOAD` (missing: exit 5 before the program starts), else the one
//! carried inside the memlens binary ([`super::preload_lib`]), written into the private
//! directory. The trace files go to that directory, which memlens creates (mode 0700, a fresh
//! name under the temporary directory, named under `-v`); they are imported into the recording
//! while the program runs (twice a second, complete lines only, committed, so a memlens killed
//! then leaves a recording holding the trace up to its last import) and finally when it has
//! ended, and memlens then deletes them, its copy of the library and the directory (nothing
//! else).

use std::ffi::OsString;
use std::path::PathBuf;

use memlens_recording::trace_store::TraceDir;

use super::preload_lib::{self, LIBRARY};
use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::messages;

/// `--trace` options of `run` and of `record` (which gives `--trace` its own help,
/// [`super::record_trace::TRACE_HELP`]).
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Attribute allocations to Python lines with memlens's tracer (LD_PRELOAD): `sampled`
    /// (the default: by bytes, every --sample-bytes on average, weighted so totals are
    /// unbiased estimates) or `all` (every allocation, exact, slower). The report gains
    /// `allocations`.
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "sampled",
        value_parser = ["sampled", "all"]
    )]
    pub trace: Option<String>,
    /// Mean bytes between samples of `--trace=sampled`, from 1B to 8EiB (e.g. `64KiB`;
    /// default 512KiB).
    #[arg(long, value_name = "SIZE", value_parser = flags::size, requires = "trace")]
    pub sample_bytes: Option<u64>,
}

/// The tracer set up for one run.
#[derive(Debug)]
pub struct Prepared {
    /// The private directory.
    pub dir: TraceDir,
    /// The program's environment additions.
    pub env: Vec<(OsString, OsString)>,
    /// The copy of the embedded library in `dir` (none with `MEMLENS_PRELOAD`).
    pub lib: Option<preload_lib::Written>,
}

/// The library named by `MEMLENS_PRELOAD` (`None` when unset or empty: the embedded one is
/// used), or the path that is not a file.
pub fn user_library() -> Option<Result<PathBuf, PathBuf>> {
    let p = PathBuf::from(std::env::var_os("MEMLENS_PRELOAD").filter(|p| !p.is_empty())?);
    Some(if p.is_file() { Ok(p) } else { Err(p) })
}

/// The mean sample interval `--trace=MODE [--sample-bytes]` asks for: 1 (every allocation) for
/// `all`, else `--sample-bytes` or 512 KiB; `--sample-bytes` with `all` is a usage error.
/// Shared by `run --trace` and `record --trace`.
pub fn sample_interval(mode: &str, sample_bytes: Option<u64>) -> CliResult<u64> {
    match (mode, sample_bytes) {
        ("all", Some(_)) => Err(CliError::new(
            Code::Usage,
            "--sample-bytes applies to --trace=sampled only (--trace=all records every allocation)",
        )),
        ("all", None) => Ok(1),
        (_, b) => Ok(b.unwrap_or(512 * 1024)),
    }
}

/// Creates the private directory of trace files under the temporary directory (exit 8,
/// [`Code::Output`], when it cannot). Shared by `run --trace` and `record --trace`.
pub fn private_dir() -> CliResult<TraceDir> {
    TraceDir::create(&std::env::temp_dir()).map_err(|e| {
        CliError::new(
            Code::Output,
            format!(
                "--trace: cannot create a private directory in {}: {e}",
                std::env::temp_dir().display()
            ),
        )
        .with_hint("set TMPDIR to a writable directory")
    })
}

/// Finds the library and creates the private directory (`None` without `--trace`).
pub fn prepare(args: &TraceArgs) -> CliResult<Option<Prepared>> {
    let Some(mode) = args.trace.as_deref() else {
        return Ok(None);
    };
    let sample = sample_interval(mode, args.sample_bytes)?;
    let user = user_library()
        .transpose()
        .map_err(|p| {
            CliError::new(
                Code::Unsupported,
                format!(
                    "--trace: MEMLENS_PRELOAD names {}, which is not a file",
                    p.display()
                ),
            )
            .with_hint(format!("unset MEMLENS_PRELOAD to use the tracer built into memlens, or name a {LIBRARY} built with `cargo build -p memlens-preload`"))
        })?;
    let dir = private_dir()?;
    log::info!(
        "--trace: the tracer writes into {} (removed once imported; kept, and named, if not)",
        dir.files().dir.display()
    );
    let (lib, written) = match user {
        Some(p) => (p, None),
        None => match preload_lib::write_into(&dir.files().dir) {
            Ok(w) => (w.path().to_path_buf(), Some(w)),
            Err(e) => {
                clean_up(Some(Prepared {
                    dir,
                    env: Vec::new(),
                    lib: None,
                }));
                return Err(CliError::new(
                    Code::Output,
                    format!("--trace: cannot write the tracer library: {e}"),
                )
                .with_hint("set TMPDIR to a writable directory on a filesystem that allows executables (not mounted noexec)"));
            }
        },
    };
    // The dynamic loader splits LD_PRELOAD at spaces and colons: such a path would load
    // nothing (the program would run untraced).
    if lib
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| matches!(b, b' ' | b':'))
    {
        let (code, hint) = match written {
            Some(_) => (
                Code::Output,
                "set TMPDIR to a directory whose path has no space or colon",
            ),
            None => (
                Code::Unsupported,
                "name the library by a path without spaces or colons",
            ),
        };
        clean_up(Some(Prepared {
            dir,
            env: Vec::new(),
            lib: written,
        }));
        return Err(CliError::new(
            code,
            format!(
                "--trace: the tracer library's path {} has a space or colon, which LD_PRELOAD cannot carry",
                lib.display()
            ),
        )
        .with_hint(hint));
    }
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut env = vec![
        (OsString::from("LD_PRELOAD"), preload),
        (
            OsString::from("MEMLENS_TRACE_OUT"),
            dir.files().out().into_os_string(),
        ),
    ];
    if sample == 1 {
        env.push(("MEMLENS_TRACE".into(), "all".into()));
    } else {
        // Set even when absent from memlens's environment: a value inherited there must not
        // change the mode asked for.
        env.push(("MEMLENS_TRACE".into(), "sampled".into()));
        env.push(("MEMLENS_SAMPLE_BYTES".into(), sample.to_string().into()));
    }
    Ok(Some(Prepared {
        dir,
        env,
        lib: written,
    }))
}

/// Removes the private directory, memlens's copy of the library and the tracer's files in it;
/// a failure is said.
pub fn clean_up(p: Option<Prepared>) {
    if let Some(p) = p {
        if let Some(Err(e)) = p.lib.map(preload_lib::Written::remove) {
            messages::error(&format!("--trace: {e}"));
        }
        if let Err(e) = p.dir.remove() {
            messages::error(&format!("--trace: {e}"));
        }
    }
}

/// After the run: says what the import of the trace files could not do, and removes the
/// private directory once they are in the recording. When they are not (the recording stopped
/// early, or the import failed), the directory is kept and named, so nothing is lost.
pub fn finish(
    p: Option<Prepared>,
    r: Option<&Result<memlens_recording::trace_store::ImportReport, memlens_record::Error>>,
) {
    let Some(p) = p else {
        return;
    };
    let why = match r {
        Some(Ok(rep)) => {
            if rep.files == 0 {
                messages::error("--trace: the tracer wrote no trace file (a statically linked program ignores LD_PRELOAD)");
            }
            for w in &rep.problems {
                messages::message("warn", w);
            }
            return clean_up(Some(p));
        }
        Some(Err(e)) => format!("the trace files could not be imported: {e}"),
        None => "the recording stopped before the program ended; the trace files were not imported"
            .to_string(),
    };
    messages::error(&format!(
        "--trace: {why}; they are kept in {}",
        p.dir.files().dir.display()
    ));
}
