//! The terminal text of `memlens diff A B` ([`memlens_model::diff::Diff`]).

use std::io::{self, Write};

use memlens_model::diff::{Change, Diff, FiguresChange};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;

/// What each side is, as the text names it.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    /// What was compared, said once at the top (`"two snapshots"`, `"recordings' peaks"`).
    pub what: String,
    /// A's label (a file name: untrusted).
    pub a: String,
    /// B's label (untrusted).
    pub b: String,
}

/// Rendering options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Exact bytes (`--bytes`).
    pub bytes: bool,
}

/// At most this many processes, packages and types listed (the rest counted).
const MAX_ROWS: usize = 20;

/// Renders the diff.
pub fn render(d: &Diff, sides: &Sides, o: &Options, out: &mut dyn Write) -> io::Result<()> {
    let s = SizeStyle::exact(o.bytes);
    writeln!(out, "Comparing {}", terminal(&sides.what))?;
    writeln!(out, "  A: {} (root {})", terminal(&sides.a), d.roots.0)?;
    writeln!(out, "  B: {} (root {})", terminal(&sides.b), d.roots.1)?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<18} {:>12} {:>12} {:>12}",
        "Totals", "A", "B", "change"
    )?;
    for (name, c) in figures(&d.totals) {
        row(out, s, name, c)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<18} {:>12} {:>12} {:>12}",
        "Category (PSS)", "A", "B", "change"
    )?;
    for c in &d.categories {
        row(out, s, &c.category, &c.change.pss)?;
    }
    writeln!(out)?;
    processes(d, s, out)?;
    census(d, s, out)?;
    packages(d, s, out)?;
    findings(d, s, out)
}

fn figures(f: &FiguresChange) -> [(&'static str, &Change); 4] {
    [
        ("PSS", &f.pss),
        ("USS", &f.uss),
        ("RSS", &f.rss),
        ("swap", &f.swap),
    ]
}

fn row(out: &mut dyn Write, s: SizeStyle, name: &str, c: &Change) -> io::Result<()> {
    writeln!(
        out,
        "  {:<16} {:>12} {:>12} {:>12}",
        terminal(name),
        s.size(c.a),
        s.size(c.b),
        s.delta(c.delta)
    )
}

fn processes(d: &Diff, s: SizeStyle, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<18} {:>12} {:>12} {:>12}  matched by, command",
        "Process (PSS)", "A", "B", "change"
    )?;
    for p in d.processes.iter().take(MAX_ROWS) {
        let pids = if p.pid_a == p.pid_b {
            p.pid_a.to_string()
        } else {
            format!("{}->{}", p.pid_a, p.pid_b)
        };
        writeln!(
            out,
            "  {:<16} {:>12} {:>12} {:>12}  {}, {}",
            pids,
            s.size(p.totals.pss.a),
            s.size(p.totals.pss.b),
            s.delta(p.totals.pss.delta),
            match p.matched_by {
                memlens_model::diff::MatchedBy::Pid => "pid",
                memlens_model::diff::MatchedBy::Root => "root",
                memlens_model::diff::MatchedBy::Cmdline => "cmdline",
            },
            terminal(&p.cmdline)
        )?;
    }
    if d.processes.len() > MAX_ROWS {
        writeln!(out, "  ... and {} more", d.processes.len() - MAX_ROWS)?;
    }
    for (gone, list) in [(true, &d.only_in_a), (false, &d.only_in_b)] {
        for p in list.iter().take(MAX_ROWS) {
            let size = s.size(p.totals.pss).to_string();
            let pss = i64::try_from(p.totals.pss).unwrap_or(i64::MAX);
            let (a, b, change, label) = if gone {
                (size, "-".to_string(), s.delta(-pss), "gone (A only)")
            } else {
                ("-".to_string(), size, s.delta(pss), "new (B only)")
            };
            writeln!(
                out,
                "  {:<16} {a:>12} {b:>12} {change:>12}  {label}, {}",
                p.pid,
                terminal(&p.cmdline)
            )?;
        }
        if list.len() > MAX_ROWS {
            writeln!(out, "  ... and {} more", list.len() - MAX_ROWS)?;
        }
    }
    writeln!(out)
}

fn census(d: &Diff, s: SizeStyle, out: &mut dyn Write) -> io::Result<()> {
    let Some(c) = &d.census else {
        let why = d.census_absent.as_deref().unwrap_or("no census");
        writeln!(out, "Census: not compared ({})", terminal(why))?;
        return writeln!(out);
    };
    writeln!(
        out,
        "Census{}: {} objects ({}), {} ({})",
        if c.top_only {
            " (largest types only)"
        } else {
            ""
        },
        c.objects.b,
        signed(c.objects.delta),
        s.size(c.bytes.b),
        s.delta(c.bytes.delta)
    )?;
    for (label, list) in [("Grown", &c.grown), ("Shrunk", &c.shrunk)] {
        writeln!(out, "  {label:<16} {:>12} {:>12}", "count", "bytes")?;
        if list.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for t in list {
            let note = match t.absent_from {
                Some(side) => format!(
                    "  (not among {}'s largest types: taken as 0)",
                    side.to_uppercase()
                ),
                None => String::new(),
            };
            writeln!(
                out,
                "  {:<16} {:>12} {:>12}{note}",
                terminal(&t.type_name),
                signed(t.count.delta),
                s.delta(t.bytes.delta)
            )?;
        }
    }
    writeln!(out)
}

fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

fn packages(d: &Diff, s: SizeStyle, out: &mut dyn Write) -> io::Result<()> {
    let Some(list) = &d.packages else {
        writeln!(
            out,
            "Packages: not compared (a side was taken without --packages)"
        )?;
        return writeln!(out);
    };
    writeln!(
        out,
        "{:<30} {:>12} {:>10} {:>14}",
        "Package", "objects", "count", "extension PSS"
    )?;
    if list.is_empty() {
        writeln!(out, "  (no change)")?;
    }
    for p in list.iter().take(MAX_ROWS) {
        writeln!(
            out,
            "  {:<28} {:>12} {:>10} {:>14}",
            terminal(&p.name),
            s.delta(p.object_bytes.delta),
            signed(p.objects.delta),
            s.delta(p.extension_pss.delta)
        )?;
    }
    if list.len() > MAX_ROWS {
        writeln!(out, "  ... and {} more", list.len() - MAX_ROWS)?;
    }
    writeln!(out)
}

fn findings(d: &Diff, s: SizeStyle, out: &mut dyn Write) -> io::Result<()> {
    if d.findings_appeared.is_empty() && d.findings_gone.is_empty() {
        writeln!(out, "Findings: the same kinds on both sides")?;
        return advice(d, s, out);
    }
    writeln!(out, "Findings")?;
    for f in &d.findings_appeared {
        writeln!(out, "  + {}", terminal(&f.words(s)))?;
    }
    for f in &d.findings_gone {
        writeln!(out, "  - {}", terminal(&f.words(s)))?;
    }
    advice(d, s, out)
}

fn advice(d: &Diff, s: SizeStyle, out: &mut dyn Write) -> io::Result<()> {
    if d.advice_on_neither {
        return Ok(());
    }
    if let Some(why) = &d.advice_absent {
        return writeln!(out, "Advice: not compared: {why}");
    }
    if d.advice_appeared.is_empty() && d.advice_gone.is_empty() {
        return writeln!(out, "Advice: the same kinds and subjects on both sides");
    }
    writeln!(out, "Advice")?;
    for (sign, list) in [("+", &d.advice_appeared), ("-", &d.advice_gone)] {
        for a in list {
            writeln!(
                out,
                "  {sign} [{}] {}: saves ~{}",
                a.id,
                terminal(&a.subject),
                s.size(a.saving_bytes)
            )?;
        }
    }
    Ok(())
}
