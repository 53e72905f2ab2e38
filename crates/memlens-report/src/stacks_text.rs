//! The text of `memlens stacks`: each thread with its Python frames, innermost first.

use std::io::{Result, Write};
use std::time::Duration;

use memlens_model::stacks::{StacksReport, Thread};

use crate::escape::terminal;

/// Writes the stacks of process `pid`; `paused` is how long it was stopped (`None`: read
/// without stopping it).
pub fn render(
    report: &StacksReport,
    pid: u32,
    paused: Option<Duration>,
    w: &mut dyn Write,
) -> Result<()> {
    let pause = match paused {
        Some(p) => format!("target paused {:.1} ms", p.as_secs_f64() * 1e3),
        None => "read without stopping the target: stacks may be inexact".into(),
    };
    writeln!(
        w,
        "Process {pid} (Python {}): {} threads ({pause})",
        report.python.version,
        report.threads.len()
    )?;
    for t in &report.threads {
        render_thread(t, w)?;
    }
    Ok(())
}

fn render_thread(t: &Thread, w: &mut dyn Write) -> Result<()> {
    let native = t
        .native_thread_id
        .map_or_else(|| "?".to_string(), |n| n.to_string());
    let name = t
        .name
        .as_ref()
        .map_or_else(String::new, |n| format!(" \"{}\"", terminal(n)));
    writeln!(w, "\nThread {:#x}{name} (native {native})", t.thread_id)?;
    if t.frames.is_empty() {
        writeln!(w, "    (no Python frames)")?;
    }
    for f in &t.frames {
        let line = f.line.map_or_else(|| "?".to_string(), |n| n.to_string());
        writeln!(
            w,
            "    {} ({}:{line})",
            terminal(&f.function),
            terminal(&f.file)
        )?;
    }
    if t.frames_omitted > 0 {
        writeln!(
            w,
            "    ... {} more frames left out (the outermost; {} shown)",
            t.frames_omitted,
            t.frames.len()
        )?;
    }
    Ok(())
}
