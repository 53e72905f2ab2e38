//! The terminal summary of a recording: the peak and where it came from, a sparkline of the
//! tree total, growth phases, each process, and the ledger at the peak.

use std::io::Write;

use memlens_model::units::{Size, SizeStyle};

use crate::model::Model;

/// Options of the terminal renderer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exact byte counts instead of binary units.
    pub bytes: bool,
    /// Width of the sparkline in cells.
    pub sparkline_width: usize,
    /// Most processes listed (the largest by VmHWM).
    pub max_processes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bytes: false,
            sparkline_width: 60,
            max_processes: 12,
        }
    }
}

impl Options {
    /// How sizes are printed.
    pub fn sizes(&self) -> SizeStyle {
        SizeStyle::exact(self.bytes)
    }
}

/// Neutralises control characters in target strings (see [`crate::escape::terminal`]).
pub fn escape_terminal(s: &str) -> String {
    crate::escape::terminal(s)
}

/// A row of block characters, one per cell, scaled to the series' maximum.
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let cells = width.min(values.len());
    (0..cells)
        .map(|c| {
            let a = c * values.len() / cells;
            let b = ((c + 1) * values.len() / cells).max(a + 1);
            let v = values[a..b].iter().copied().max().unwrap_or(0);
            BARS[((v as f64 / max as f64) * 7.0).round() as usize % 8]
        })
        .collect()
}

fn cut(s: &str, n: usize) -> String {
    let e = escape_terminal(s);
    if e.chars().count() <= n {
        e
    } else {
        let mut t: String = e.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Writes the summary.
pub fn render(m: &Model, opts: &Options, mut out: impl Write) -> std::io::Result<()> {
    let style = opts.sizes();
    let fb = |v: u64| style.size(v);
    let status = match (m.exit_code, m.exit_signal) {
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exit {c}"),
        (None, None) if !m.complete => "recording cut off (memlens was killed?)".to_string(),
        (None, None) => "recorded".to_string(),
    };
    writeln!(
        out,
        "memlens: {} — {status} after {:.2} s, {} samples every {:.0} ms, {} process{}",
        cut(&m.command, 80),
        m.duration_seconds,
        m.samples,
        m.interval_seconds * 1000.0,
        m.processes.len(),
        if m.processes.len() == 1 { "" } else { "es" }
    )?;
    let p = &m.peak;
    for w in &m.warnings {
        writeln!(out, "warning: {}", escape_terminal(&w.words(style)))?;
    }
    write!(
        out,
        "peak:    {} ({}) at {:.2} s",
        fb(p.bytes),
        p.source.describe(),
        p.at_seconds
    )?;
    if let (Some(pid), Some(c)) = (p.pid, &p.cmdline) {
        write!(out, ", mostly pid {pid} {}", cut(c, 50))?;
    }
    writeln!(out)?;
    let shared = if m.processes.len() > 1 {
        " (a sum over processes: shared pages counted in each)"
    } else {
        ""
    };
    let pss = match (p.pss, p.pss_at_seconds) {
        (Some(v), Some(t)) => format!("tree PSS {} (read at {t:.2} s)", fb(v)),
        _ => "tree PSS never read".to_string(),
    };
    writeln!(out, "         {pss}, tree RSS {}{shared}", fb(p.rss))?;
    if let Some(c) = p.cgroup {
        writeln!(
            out,
            "         cgroup charge {} (page cache and kernel memory included; not the peak)",
            fb(c)
        )?;
    }
    if let Some(note) = &m.cgroup_note {
        writeln!(out, "         no memory cgroup: {}", escape_terminal(note))?;
    }
    let (series, what): (Vec<u64>, &str) = if m.growth_series == "cgroup" {
        (
            m.tree.iter().map(|t| t.3.unwrap_or(0)).collect(),
            "tree memory (its cgroup's charge)",
        )
    } else {
        (m.tree.iter().map(|t| t.2).collect(), "tree PSS (estimated)")
    };
    if !series.is_empty() {
        writeln!(
            out,
            "memory:  {}  {what} over {:.2} s, max {}",
            sparkline(&series, opts.sparkline_width),
            m.duration_seconds,
            fb(series.iter().copied().max().unwrap_or(0))
        )?;
    }
    if m.growth.is_empty() {
        writeln!(out, "growth:  no steady growth phase")?;
    }
    for (k, g) in m.growth.iter().enumerate() {
        writeln!(
            out,
            "{}{:>7.2} s – {:>7.2} s  +{:<10} at {}",
            if k == 0 { "growth: " } else { "        " },
            g.start_seconds,
            g.end_seconds,
            fb(g.bytes),
            style.rate(g.rate_bytes_per_second)
        )?;
    }
    writeln!(out, "{}", crate::leak::words(&m.leak, style))?;
    write_processes(&mut out, m, opts)?;
    if let Some(l) = &m.ledger_at_peak {
        write_breakdown(&mut out, l, style)?;
    }
    write_python(&mut out, m, style)?;
    crate::sharing_over_time::render_text(&m.sharing, style, opts.sparkline_width, &mut out)?;
    if let Some(a) = &m.advice {
        crate::recording_advice::render_text(a, style, &mut out)?;
    }
    for s in &p.sampled {
        writeln!(out, "note: {}", escape_terminal(&s.words(style)))?;
    }
    match m.memlens_cpu_seconds {
        Some(cpu) if m.duration_seconds > 0.0 => writeln!(
            out,
            "recording: {} (memlens used {:.1} % of a core)",
            escape_terminal(&m.file),
            cpu / m.duration_seconds * 100.0
        ),
        _ => writeln!(out, "recording: {}", escape_terminal(&m.file)),
    }
}

/// Each process (the largest by VmHWM first): its peaks and when it was alive.
fn write_processes(out: &mut impl Write, m: &Model, opts: &Options) -> std::io::Result<()> {
    let fb = |v: u64| opts.sizes().size(v);
    writeln!(out, "processes:")?;
    writeln!(
        out,
        "  {:>8}  {:>10}  {:>10}  {:>17}  command",
        "PID", "VmHWM", "peak PSS", "alive (s)"
    )?;
    let mut procs: Vec<_> = m.processes.iter().collect();
    procs.sort_by_key(|p| std::cmp::Reverse(p.vm_hwm));
    for pr in procs.iter().take(opts.max_processes) {
        let alive = format!(
            "{:.2}–{:.2}",
            pr.first_seconds,
            pr.exit_seconds.unwrap_or(pr.last_seconds)
        );
        let cmd = if pr.cmdline.is_empty() {
            &pr.name
        } else {
            &pr.cmdline
        };
        // Zero: a process that came and went between two reads.
        let or_dash = |v: u64| {
            if v == 0 {
                "–".to_string()
            } else {
                fb(v).to_string()
            }
        };
        writeln!(
            out,
            "  {:>8}  {:>10}  {:>10}  {:>17}  {}",
            pr.pid,
            or_dash(pr.vm_hwm),
            or_dash(pr.peak_pss),
            alive,
            cut(cmd, 60)
        )?;
    }
    if procs.len() > opts.max_processes {
        writeln!(out, "  … and {} more", procs.len() - opts.max_processes)?;
    }
    Ok(())
}

/// The ledger chosen to show the peak: whether it is at the peak, its categories, findings.
fn write_breakdown(
    out: &mut impl Write,
    l: &crate::model::LedgerAtPeak,
    style: SizeStyle,
) -> std::io::Result<()> {
    let fb = |v: u64| style.size(v);
    let head = if l.breakdown.at_peak {
        format!(
            "breakdown at the peak (ledger at {:.2} s, {:.2} s {} it)",
            l.t,
            l.breakdown.from_peak_seconds.abs(),
            if l.breakdown.from_peak_seconds < 0.0 {
                "before"
            } else {
                "after"
            }
        )
    } else {
        l.breakdown.words(style)
    };
    writeln!(
        out,
        "{head}: PSS {}, USS {}, RSS {}",
        fb(l.totals.pss),
        fb(l.totals.uss),
        fb(l.totals.rss)
    )?;
    writeln!(
        out,
        "  {:<18} {:>10} {:>10} {:>10}",
        "category", "PSS", "USS", "RSS"
    )?;
    for (c, a) in l.categories.iter().filter(|(_, a)| a.rss > 0) {
        writeln!(
            out,
            "  {:<18} {:>10} {:>10} {:>10}",
            cut(c, 18),
            fb(a.pss),
            fb(a.uss),
            fb(a.rss)
        )?;
    }
    for f in &l.findings {
        writeln!(out, "  - {}", escape_terminal(&f.words(style)))?;
    }
    Ok(())
}

/// The Python view: the last sample of each process, and its last census.
fn write_python(out: &mut impl Write, m: &Model, style: SizeStyle) -> std::io::Result<()> {
    let fb = |v: u64| -> Size { style.size(v) };
    let mut pids: Vec<u32> = m.python.iter().map(|x| x.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let Some(last) = m.python.iter().rev().find(|x| x.pid == pid) else {
            continue;
        };
        write!(out, "python:  pid {pid} at {:.2} s:", last.t)?;
        if let (Some(used), Some(free)) = (last.pymalloc_used, last.pymalloc_free) {
            write!(
                out,
                " pymalloc {} in used blocks, {} free in {} arenas;",
                fb(used),
                fb(free),
                last.pymalloc_arenas.unwrap_or(0)
            )?;
        }
        let gens: Vec<String> = last.gc_collections.iter().map(u64::to_string).collect();
        writeln!(out, " GC collections per generation {}", gens.join("/"))?;
        if let Some(c) = m.census.iter().find(|c| c.pid == pid) {
            let top: Vec<String> = c
                .types
                .iter()
                .take(5)
                .map(|t| {
                    format!(
                        "{} {} ({})",
                        escape_terminal(&t.type_name),
                        t.count,
                        fb(t.bytes)
                    )
                })
                .collect();
            writeln!(out, "         census at {:.2} s: {}", c.t, top.join(", "))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales() {
        assert_eq!(sparkline(&[0, 6, 14], 3), "▁▄█");
        assert_eq!(sparkline(&[], 10), "");
        assert_eq!(sparkline(&[5; 100], 4).chars().count(), 4);
    }
}
