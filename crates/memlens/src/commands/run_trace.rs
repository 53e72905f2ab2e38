//! `memlens run --trace`: the allocation tracer (`memlens-preload`, loaded with `LD_PRELOAD`)
//! set up for the program, and its private directory of trace files (docs/trace-format.md).
//!
//! The library is `$MEMLENS_PRELOAD`, else `libmemlens_preload.so` beside the memlens
//! executable (where cargo builds it), else `../lib/memlens/libmemlens_preload.so` from it (an
//! installed layout). Missing: exit 5 before the program starts. The trace files go to a
//! directory memlens creates (mode 0700, a fresh name under the temporary directory, named
//! under `-v`); they are imported into the recording while the program runs (twice a second,
//! complete lines only, committed, so a memlens killed then leaves a recording holding the
//! trace up to its last import) and finally when it has ended, and memlens then deletes them
//! and the directory (nothing else).

use std::ffi::OsString;
use std::path::PathBuf;

use memlens_recording::trace_store::TraceDir;

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::messages;

/// The library's file name.
pub const LIBRARY: &str = "libmemlens_preload.so";

/// `--trace` options of `run`.
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
}

/// Where the library is, or the places looked at.
pub fn find_library() -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = std::env::var_os("MEMLENS_PRELOAD").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(vec![p]) };
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        for p in [dir.join(LIBRARY), dir.join("../lib/memlens").join(LIBRARY)] {
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    Err(tried)
}

/// Finds the library and creates the private directory (`None` without `--trace`).
pub fn prepare(args: &TraceArgs) -> CliResult<Option<Prepared>> {
    let Some(mode) = args.trace.as_deref() else {
        return Ok(None);
    };
    if mode == "all" && args.sample_bytes.is_some() {
        return Err(CliError::new(
            Code::Usage,
            "--sample-bytes applies to --trace=sampled only (--trace=all records every allocation)",
        ));
    }
    let lib = find_library().map_err(|tried| {
        let places: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        CliError::new(
            Code::Unsupported,
            format!(
                "--trace needs memlens's tracer library, {LIBRARY}: not found (looked at {})",
                places.join(", ")
            ),
        )
        .with_hint("build it with `cargo build -p memlens-preload` (it lands beside memlens), or name it with MEMLENS_PRELOAD=PATH")
    })?;
    let dir = TraceDir::create(&std::env::temp_dir()).map_err(|e| {
        CliError::new(
            Code::Output,
            format!(
                "--trace: cannot create a private directory in {}: {e}",
                std::env::temp_dir().display()
            ),
        )
        .with_hint("set TMPDIR to a writable directory")
    })?;
    log::info!(
        "--trace: the tracer writes into {} (removed once imported; kept, and named, if not)",
        dir.files().dir.display()
    );
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
    if mode == "all" {
        env.push(("MEMLENS_TRACE".into(), "all".into()));
    } else {
        // Set even when absent from memlens's environment: a value inherited there must not
        // change the mode asked for.
        env.push(("MEMLENS_TRACE".into(), "sampled".into()));
        env.push((
            "MEMLENS_SAMPLE_BYTES".into(),
            args.sample_bytes.unwrap_or(512 * 1024).to_string().into(),
        ));
    }
    Ok(Some(Prepared { dir, env }))
}

/// Removes the private directory and the tracer's files in it; a failure is said.
pub fn clean_up(p: Option<Prepared>) {
    if let Some(p) = p {
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
