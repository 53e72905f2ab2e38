//! `memlens report FILE --flamegraph OUT.svg` and `--lines PATH[:FUNCTION]`: the views of a
//! recording's traced allocations (`memlens run --trace`): a flame graph of live memory at the
//! peak, and memory_profiler-style figures line by line for one source file or function.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use memlens_model::allocations::Allocations;
use memlens_recording::destination::{Kind, PendingFile};
use memlens_report::{alloc_flame, alloc_lines};

use crate::exit::{CliError, CliResult, Code};
use crate::output::{write_error, Global};
use crate::recording::output_error;

/// The flags of `report` for traced allocations.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Write a flame graph of live memory at the traced peak to this SVG file (a new file,
    /// or one memlens wrote with `--force`); needs a recording of `memlens run --trace`.
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Print bytes allocated, freed and net per line of one traced source file, or of one
    /// function of it (`PATH:FUNCTION`), instead of the summary; needs a recording of
    /// `memlens run --trace`.
    #[arg(long, value_name = "PATH[:FUNCTION]", conflicts_with = "json")]
    pub lines: Option<String>,
}

impl TraceArgs {
    /// Whether a view of traced allocations was asked for.
    pub fn any(&self) -> bool {
        self.flamegraph.is_some() || self.lines.is_some()
    }

    /// Reserves the flame graph's destination (before anything is read: a refused destination
    /// is exit 8 at once). `others` are the other files the command writes: naming one of them
    /// is a usage error.
    pub fn reserve(&self, others: &[Option<&Path>], force: bool) -> CliResult<Option<PendingFile>> {
        let Some(p) = &self.flamegraph else {
            return Ok(None);
        };
        if others.iter().flatten().any(|o| *o == p.as_path()) {
            return Err(CliError::new(
                Code::Usage,
                format!(
                    "--flamegraph names {}, which another output flag names too",
                    p.display()
                ),
            ));
        }
        PendingFile::reserve(p, Kind::Svg, force)
            .map(Some)
            .map_err(output_error)
    }
}

/// The error when a view of traced allocations is asked of a recording that holds none.
pub fn no_trace(file: &Path) -> CliError {
    CliError::new(
        Code::BadRecording,
        format!(
            "{} holds no traced allocations: --flamegraph and --lines need a recording made with `memlens run --trace`",
            file.display()
        ),
    )
    .with_hint("record with `memlens run --trace -- PROGRAM ARGS...`")
}

/// Writes the flame graph into its reserved file and moves it into place.
pub fn write_flamegraph(
    page: Option<PendingFile>,
    a: &Allocations,
    file: &Path,
    global: &Global,
) -> CliResult<()> {
    if page.is_none() {
        return Ok(());
    }
    if alloc_flame::folded(a).is_empty() {
        let why = memlens_report::alloc_text::breakdown_words(
            a,
            memlens_model::units::SizeStyle::exact(global.bytes),
        )
        .unwrap_or_else(|| "no traced allocation was live at the peak".into());
        return Err(CliError::new(
            Code::BadRecording,
            format!(
                "{}: {why}, so there is no flame graph to draw",
                file.display()
            ),
        ));
    }
    let opts = alloc_flame::Options {
        bytes: global.bytes,
        ..alloc_flame::Options::default()
    };
    crate::commands::diff::write_page(page, |w| alloc_flame::render(a, &opts, w))
}

/// Source files larger than this are not shown (line numbers only).
const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Reads the source of a traced file for `--lines`: the path the user named if it is a
/// regular file, else the traced name if it is one (a FIFO or device is not opened).
fn read_source(asked: &str, traced: &str) -> alloc_lines::Source {
    let mut why = String::new();
    for p in [asked, traced] {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() <= MAX_SOURCE_BYTES => {
                let read = std::fs::File::open(path).and_then(|f| {
                    let mut buf = Vec::new();
                    f.take(MAX_SOURCE_BYTES).read_to_end(&mut buf)?;
                    Ok(buf)
                });
                match read {
                    Ok(buf) => {
                        return alloc_lines::Source::Read {
                            path: p.to_string(),
                            text: String::from_utf8_lossy(&buf).into_owned(),
                        }
                    }
                    Err(e) => why = format!("{p}: {e}"),
                }
            }
            Ok(m) if m.is_file() => {
                why = format!("{p} is larger than {} MiB", MAX_SOURCE_BYTES >> 20)
            }
            Ok(_) => why = format!("{p} is not a regular file"),
            Err(e) if why.is_empty() => why = format!("{p}: {e}"),
            Err(_) => {}
        }
    }
    alloc_lines::Source::Unavailable(why)
}

/// Resolves `--lines PATH[:FUNCTION]` against the traced lines: a PATH (or FUNCTION) that
/// matches nothing traced is exit 2, with the traced names in the message.
pub fn select_lines(spec: &str, a: &Allocations) -> CliResult<alloc_lines::Selection> {
    alloc_lines::select(a, spec).map_err(|e| {
        CliError::new(Code::Usage, format!("--lines {e}")).with_hint(
            "--lines takes a traced file's path (or its end: `app.py`), optionally `:FUNCTION`",
        )
    })
}

/// Prints the figures line by line of `sel` (from `select_lines(spec, a)`).
pub fn print_lines(
    spec: &str,
    sel: &alloc_lines::Selection,
    a: &Allocations,
    global: &Global,
) -> CliResult<()> {
    let asked = match &sel.function {
        Some(_) => spec.rsplit_once(':').map_or(spec, |(p, _)| p),
        None => spec,
    };
    let source = read_source(asked, &sel.file);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    alloc_lines::render(a, sel, &source, global.bytes, &mut out).map_err(write_error)?;
    out.flush().map_err(write_error)
}
