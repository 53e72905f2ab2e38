//! Terminal output of `snapshot` and `ps`: totals first, then the ledger ranked, then findings.

use std::io::{self, Write};

use memlens_model::host::PsReport;
use memlens_model::sharing::{Exclusive, Sharing};
use memlens_model::tree::by_category;
use memlens_model::units::{Size, SizeStyle};
use memlens_model::{Amounts, TreeLedger};

use crate::escape::terminal;

/// Rendering options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exact bytes instead of binary units.
    pub bytes: bool,
    /// Items shown under each ledger row.
    pub items_per_row: usize,
    /// Longest command line shown (characters).
    pub cmdline_width: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bytes: false,
            items_per_row: 3,
            cmdline_width: 60,
        }
    }
}

impl Options {
    /// How sizes are printed.
    pub fn sizes(&self) -> SizeStyle {
        SizeStyle::exact(self.bytes)
    }

    fn size(&self, v: u64) -> Size {
        self.sizes().size(v)
    }
}

fn clip(s: &str, width: usize) -> String {
    let s = terminal(s);
    if s.chars().count() <= width {
        return s;
    }
    let mut c: String = s.chars().take(width.saturating_sub(1)).collect();
    c.push('…');
    c
}

fn amounts_line(o: &Options, a: &Amounts) -> String {
    format!(
        "PSS {}   (USS {}, RSS {}, swap {})",
        o.size(a.pss),
        o.size(a.uss),
        o.size(a.rss),
        o.size(a.swap)
    )
}

/// The `shared` and `copied` cells of a `ps` row: `-` without a parent in the tree, `n/m`
/// (its reason kept for a note under the table) where not measured.
fn sharing_cells(s: Option<&Sharing>, o: &Options, reasons: &mut Vec<String>) -> String {
    match s {
        None => format!(" {:>10} {:>10}", "-", "-"),
        Some(s) => match &s.figures {
            Some(f) => format!(
                " {:>10} {:>10}",
                o.size(f.shared_with_parent),
                o.size(f.copied)
            ),
            None => {
                note_reason(s.reason.as_deref(), reasons);
                format!(" {:>10} {:>10}", "n/m", "n/m")
            }
        },
    }
}

/// `; exclusive to the tree: X` of a `ps` tree line, or its reason kept for a note.
fn exclusive_words(e: Option<&Exclusive>, o: &Options, reasons: &mut Vec<String>) -> String {
    match e {
        None => String::new(),
        Some(Exclusive { bytes: Some(b), .. }) => {
            format!("; exclusive to the tree: {}", o.size(*b))
        }
        Some(e) => {
            note_reason(e.reason.as_deref(), reasons);
            "; exclusive to the tree: n/m".into()
        }
    }
}

fn note_reason(reason: Option<&str>, reasons: &mut Vec<String>) {
    let r = reason.unwrap_or("unknown").to_string();
    if !reasons.contains(&r) {
        reasons.push(r);
    }
}

/// Renders a snapshot ledger.
pub fn render_snapshot(t: &TreeLedger, o: &Options, mut w: impl Write) -> io::Result<()> {
    write_head(t, o, &mut w)?;
    write_categories(t, o, &mut w)?;
    let root = t.processes.iter().find(|p| p.pid == t.root);
    if t.processes.len() > 1 || root.is_some_and(|p| p.thread_stacks.count > 1) {
        write_processes(t, o, &mut w)?;
    }
    write_cgroup(t, o, &mut w)?;
    crate::sharing_text::render(t, o.sizes(), &mut w)?;
    if !t.findings.is_empty() {
        writeln!(w)?;
        for f in &t.findings {
            writeln!(w, "- {}", terminal(&f.words(o.sizes())))?;
        }
    }
    Ok(())
}

/// Whose memory, the totals, and the root's Python and peak.
fn write_head(t: &TreeLedger, o: &Options, w: &mut impl Write) -> io::Result<()> {
    let root = t.processes.iter().find(|p| p.pid == t.root);
    let who = root
        .map(|p| clip(&p.cmdline, o.cmdline_width))
        .unwrap_or_default();
    let n = t.processes.len();
    if n > 1 {
        writeln!(
            w,
            "Memory of PID {} ({who}) and {} descendant(s)",
            t.root,
            n - 1
        )?;
    } else {
        writeln!(w, "Memory of PID {} ({who})", t.root)?;
    }
    writeln!(w, "Total: {}", amounts_line(o, &t.totals))?;
    if let Some(p) = root {
        let py = match &p.python {
            Some(py) => format!(
                "Python {}",
                py.version.as_deref().unwrap_or("(version unknown)")
            ),
            None => "not a Python process".into(),
        };
        writeln!(
            w,
            "Root: {py}, {} threads, peak RSS (VmHWM) {}",
            p.threads,
            o.size(p.vm_hwm)
        )?;
    }
    writeln!(w)
}

/// The ledger by category, largest first, each with its largest items.
fn write_categories(t: &TreeLedger, o: &Options, w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "category", "PSS", "USS", "RSS", "swap", "maps"
    )?;
    for (cat, a) in &by_category(&t.processes) {
        let maps: u64 = t
            .processes
            .iter()
            .filter_map(|p| p.row(*cat))
            .map(|r| r.mappings)
            .sum();
        writeln!(
            w,
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>6}",
            cat.name(),
            o.size(a.pss),
            o.size(a.uss),
            o.size(a.rss),
            o.size(a.swap),
            maps
        )?;
        // Items merged across processes by name.
        let mut items: Vec<(String, Amounts)> = Vec::new();
        for r in t.processes.iter().filter_map(|p| p.row(*cat)) {
            for it in &r.items {
                match items.iter_mut().find(|(n, _)| *n == it.name) {
                    Some((_, a)) => a.add(&it.amounts),
                    None => items.push((it.name.clone(), it.amounts)),
                }
            }
        }
        items.sort_by_key(|(_, a)| std::cmp::Reverse(a.pss));
        let shown = items.len().min(o.items_per_row);
        for (name, a) in items.iter().take(shown) {
            writeln!(
                w,
                "{:<18} {:>10} {:>10} {:>10} {:>10} {:>6}  · {}",
                "",
                o.size(a.pss),
                o.size(a.uss),
                o.size(a.rss),
                o.size(a.swap),
                "",
                clip(name, o.cmdline_width)
            )?;
        }
        if items.len() > shown {
            writeln!(w, "{:<18} {:>53}  · … {} more", "", "", items.len() - shown)?;
        }
    }
    Ok(())
}

/// One line per process.
fn write_processes(t: &TreeLedger, o: &Options, w: &mut impl Write) -> io::Result<()> {
    writeln!(w)?;
    writeln!(
        w,
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>7}  command",
        "PID", "PPID", "PSS", "USS", "RSS", "peak RSS", "threads"
    )?;
    for p in &t.processes {
        writeln!(
            w,
            "{:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>7}  {}",
            p.pid,
            p.ppid,
            o.size(p.totals.pss),
            o.size(p.totals.uss),
            o.size(p.totals.rss),
            o.size(p.vm_hwm),
            p.threads,
            clip(&p.cmdline, o.cmdline_width)
        )?;
    }
    Ok(())
}

/// The memory cgroup's figures, when there is one.
fn write_cgroup(t: &TreeLedger, o: &Options, w: &mut impl Write) -> io::Result<()> {
    let Some(cg) = &t.cgroup else {
        return Ok(());
    };
    writeln!(w)?;
    let limit = cg
        .limit
        .map(|l| o.size(l).to_string())
        .unwrap_or_else(|| "none".into());
    write!(
        w,
        "cgroup v{} {}: charged {}, limit {limit}",
        cg.version,
        terminal(&String::from_utf8_lossy(&cg.path)),
        o.size(cg.usage)
    )?;
    if let Some(h) = cg.headroom() {
        write!(w, ", headroom {}", o.size(h))?;
    }
    if let Some(p) = cg.peak {
        write!(w, ", peak {}", o.size(p))?;
    }
    writeln!(
        w,
        ", OOM kills {}",
        cg.oom_kills
            .map(|k| k.to_string())
            .unwrap_or_else(|| "n/a".into())
    )
}

/// Renders `ps`.
pub fn render_ps(r: &PsReport, o: &Options, mut w: impl Write) -> io::Result<()> {
    if r.trees.is_empty() && r.unreadable > 0 {
        writeln!(
            w,
            "No Python processes found among the processes memlens could read."
        )?;
    } else if r.trees.is_empty() {
        writeln!(
            w,
            "No Python processes found (memlens ps --all lists every process)."
        )?;
    } else {
        let sharing = r
            .trees
            .iter()
            .flat_map(|t| &t.processes)
            .any(|p| p.sharing.is_some());
        let mut reasons: Vec<String> = Vec::new();
        let cols = if sharing {
            format!(" {:>10} {:>10}", "shared", "copied")
        } else {
            String::new()
        };
        writeln!(
            w,
            "{:>8} {:>10} {:>10} {:>10} {:>10}{cols} {:>7} {:>8}  command",
            "PID", "PSS", "USS", "RSS", "swap", "threads", "python"
        )?;
        for t in &r.trees {
            for p in &t.processes {
                let indent = "  ".repeat(p.depth.min(8) as usize);
                let py = p
                    .python
                    .as_ref()
                    .and_then(|py| py.version.clone())
                    .unwrap_or_else(|| "-".into());
                let cells = if sharing {
                    sharing_cells(p.sharing.as_ref(), o, &mut reasons)
                } else {
                    String::new()
                };
                writeln!(
                    w,
                    "{:>8} {:>10} {:>10} {:>10} {:>10}{cells} {:>7} {:>8}  {indent}{}",
                    p.pid,
                    o.size(p.totals.pss),
                    o.size(p.totals.uss),
                    o.size(p.totals.rss),
                    o.size(p.totals.swap),
                    p.threads,
                    clip(&py, 8),
                    clip(
                        if p.cmdline.is_empty() {
                            &p.name
                        } else {
                            &p.cmdline
                        },
                        o.cmdline_width
                    )
                )?;
            }
            if t.processes.len() > 1 {
                writeln!(
                    w,
                    "{:>8} {:>10} {:>10} {:>10} {:>10}  tree of {} processes; summing RSS would overstate it by {}{}",
                    "=",
                    o.size(t.totals.pss),
                    o.size(t.totals.uss),
                    o.size(t.totals.rss),
                    o.size(t.totals.swap),
                    t.processes.len(),
                    o.size(t.rss_overcount),
                    exclusive_words(t.exclusive.as_ref(), o, &mut reasons)
                )?;
            }
        }
        writeln!(w)?;
        writeln!(w, "All listed: {}", amounts_line(o, &r.totals))?;
        if sharing {
            writeln!(
                w,
                "shared: pages still shared with the parent; copied: pages the parent also maps, copied since the fork (pagemap)"
            )?;
        }
        for reason in &reasons {
            writeln!(
                w,
                "sharing not measured (n/m): {}",
                crate::escape::terminal(reason)
            )?;
        }
    }
    if r.unreadable > 0 {
        writeln!(
            w,
            "{} process(es) could not be read (permission denied) and are not listed, Python or not; run as their user or root to include them",
            r.unreadable
        )?;
    }
    Ok(())
}
