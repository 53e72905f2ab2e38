//! The text of `memlens census`: a header that says how the census was read, then the types by
//! count, or (with `--growth`) the types that grew by bytes and by count.

use std::io::{Result, Write};
use std::time::Duration;

use memlens_model::census::{CensusReport, Consistency, Grown, Growth, Method, TypeCount};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;

/// Options of the census text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Exact bytes instead of binary units.
    pub bytes: bool,
}

impl Options {
    fn size(&self, b: u64) -> String {
        SizeStyle::exact(self.bytes).size(b).to_string()
    }

    fn signed(&self, b: i64) -> String {
        SizeStyle::exact(self.bytes).delta(b).to_string()
    }
}

/// Writes the census of process `pid`, read in `elapsed` (the second census's, with growth).
pub fn render(
    report: &CensusReport,
    pid: u32,
    elapsed: Duration,
    opts: &Options,
    w: &mut dyn Write,
) -> Result<()> {
    writeln!(
        w,
        "Process {pid} (Python {}): {} objects, {} ({})",
        report.python.version,
        report.objects,
        opts.size(report.bytes),
        how(&report.consistency, elapsed)
    )?;
    if report.unreadable.objects > 0 {
        writeln!(
            w,
            "{} objects could not be read ({} of reads failed) and are not counted",
            report.unreadable.objects,
            opts.size(report.unreadable.bytes)
        )?;
    }
    match &report.growth {
        Some(g) => render_growth(g, opts, w),
        None => render_types(&report.types, opts, w),
    }
}

/// How the census was read, for the header.
fn how(c: &Consistency, elapsed: Duration) -> String {
    let ms = |us: u64| us as f64 / 1e3;
    let total = elapsed.as_secs_f64() * 1e3;
    let walks = |n: u32| {
        if n == 1 {
            "1 walk".to_string()
        } else {
            format!("{n} walks")
        }
    };
    match c.method {
        Method::Verified => format!(
            "consistent as of a {:.1} ms pause after {} of the running target, {total:.0} ms in all",
            ms(c.pause_us),
            walks(c.attempts)
        ),
        Method::Paused => format!(
            "walked while stopped: the heap kept changing under {}; target paused {:.1} ms, {total:.0} ms in all",
            walks(c.attempts),
            ms(c.pause_us)
        ),
        Method::Nonblocking => "read without stopping the target: figures may be inexact".into(),
    }
}

/// The types that grew, by bytes then by count.
fn render_growth(g: &Grown, opts: &Options, w: &mut dyn Write) -> Result<()> {
    writeln!(
        w,
        "\ngrown by bytes:\n{:<32} {:>12} {:>12} {:>12} {:>10}",
        "type", "bytes", "growth", "count", "growth"
    )?;
    if g.by_bytes.is_empty() {
        writeln!(w, "(no type grew in bytes)")?;
    }
    for r in &g.by_bytes {
        writeln!(
            w,
            "{:<32} {:>12} {:>12} {:>12} {:>+10}",
            terminal(&r.type_name),
            opts.size(r.bytes),
            opts.signed(r.bytes_delta),
            r.count,
            r.delta
        )?;
    }
    writeln!(
        w,
        "\ngrown by count:\n{:<32} {:>12} {:>10} {:>12} {:>12}",
        "type", "count", "growth", "bytes", "growth"
    )?;
    if g.by_count.is_empty() {
        writeln!(w, "(no type grew in count)")?;
    }
    for r in &g.by_count {
        render_count_growth(r, opts, w)?;
    }
    Ok(())
}

fn render_count_growth(r: &Growth, opts: &Options, w: &mut dyn Write) -> Result<()> {
    writeln!(
        w,
        "{:<32} {:>12} {:>+10} {:>12} {:>12}",
        terminal(&r.type_name),
        r.count,
        r.delta,
        opts.size(r.bytes),
        opts.signed(r.bytes_delta)
    )
}

/// The types shown, with their data buffers and the note on estimates.
fn render_types(types: &[TypeCount], opts: &Options, w: &mut dyn Write) -> Result<()> {
    writeln!(w, "\n{:<32} {:>12} {:>12}", "type", "count", "bytes")?;
    for t in types {
        writeln!(
            w,
            "{:<32} {:>12} {:>12}{}",
            terminal(&t.type_name),
            t.count,
            opts.size(t.bytes),
            if t.estimated > 0 { " ~" } else { "" }
        )?;
    }
    for t in types
        .iter()
        .filter(|t| t.data_owned > 0 || t.data_viewed > 0)
    {
        writeln!(
            w,
            "{}: data buffers {} owned (inside its bytes), {} viewed (another object's)",
            terminal(&t.type_name),
            opts.size(t.data_owned),
            opts.size(t.data_viewed)
        )?;
    }
    if types.iter().any(|t| t.estimated > 0) {
        writeln!(
            w,
            "~ estimated: the type defines a __sizeof__ memlens does not model; its \
             bytes are tp_basicsize + items * tp_itemsize"
        )?;
    }
    Ok(())
}
