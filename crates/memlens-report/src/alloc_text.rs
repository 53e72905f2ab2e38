//! The terminal report of `memlens run --trace`'s allocation attribution
//! ([`Allocations`]): what was live at the traced peak (by line, by stack), what was still
//! alive at exit, temporary allocations, the traced bytes against the ledger per category, and
//! what the tracer lost. Sampled figures are said to be estimates, with the sample interval.
//!
//! File and function names come from the target (`co_filename`, `co_qualname`): every one is
//! escaped for the terminal ([`crate::escape::terminal`]).

use std::io::Write;

use memlens_model::allocations::{Allocations, Breakdown, ByLine, Frame, Lost, Stack};
use memlens_model::units::SizeStyle;

/// Options of the allocations report.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exact byte counts instead of binary units (`--bytes`).
    pub bytes: bool,
    /// Most lines listed in each table.
    pub top_lines: usize,
    /// Most stacks listed at the peak.
    pub top_stacks: usize,
    /// Most frames printed of one stack (innermost first).
    pub max_frames: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bytes: false,
            top_lines: 10,
            top_stacks: 5,
            max_frames: 8,
        }
    }
}

impl Options {
    /// How sizes are printed.
    pub fn sizes(&self) -> SizeStyle {
        SizeStyle::exact(self.bytes)
    }
}

/// Whether the figures are sums of sample weights (estimates) rather than exact.
pub fn is_sampled(a: &Allocations) -> bool {
    a.mode != "all"
}

/// What the figures are, in one sentence: exact, or estimates from samples (with the mean
/// interval).
pub fn mode_words(a: &Allocations, style: SizeStyle) -> String {
    if is_sampled(a) {
        format!(
            "sampled: one allocation per {} allocated on average, each weighted by the interval, so every byte and allocation figure is an estimate",
            style.size(a.sample_interval_bytes)
        )
    } else {
        "every allocation traced (--trace=all): byte and allocation figures are exact".into()
    }
}

/// The counters of [`Lost`] that are not zero, each with what it does to the figures; empty
/// when the tracer lost nothing.
pub fn lost_words(l: &Lost) -> Vec<String> {
    let items: [(u64, &str, &str); 7] = [
        (
            l.dropped_allocs,
            "sampled allocation",
            "refused by a full event queue: missing from every figure",
        ),
        (
            l.dropped_frees,
            "free",
            "refused by a full event queue: their bytes stay counted as live",
        ),
        (
            l.table_full,
            "sampled allocation",
            "with no free slot in the pointer table: missing",
        ),
        (
            l.lost_at_fork,
            "event",
            "queued in a parent at fork and discarded in the child",
        ),
        (
            l.unreadable_stacks,
            "sampled allocation",
            "whose Python stack could not be read (kept with the frames that were read)",
        ),
        (
            l.stacks_lost,
            "sampled allocation",
            "whose stack did not fit in the tracer's tables (kept with no frames)",
        ),
        (
            l.unfinished_traces,
            "trace file",
            "ended without an end line (killed, or replaced by exec): its last figures stand, its leaks are not known",
        ),
    ];
    items
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, what, why)| format!("{n} {what}{} {why}", if *n == 1 { "" } else { "s" }))
        .collect()
}

/// `s` escaped for the terminal and cut to `n` characters, keeping its end (a path's file
/// name is its informative part).
pub fn cut_left(s: &str, n: usize) -> String {
    let e = crate::escape::terminal(s);
    let len = e.chars().count();
    if len <= n {
        e
    } else {
        let tail: String = e.chars().skip(len - n.saturating_sub(1)).collect();
        format!("…{tail}")
    }
}

/// `s` escaped for the terminal and cut to `n` characters, keeping its start.
pub fn cut_right(s: &str, n: usize) -> String {
    let e = crate::escape::terminal(s);
    if e.chars().count() <= n {
        e
    } else {
        let mut t: String = e.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `file:line` (`file:?` when the line is unknown), escaped, the path cut from the left;
/// `(no Python frame)` for the line of allocations made without one.
pub fn place(file: &str, line: u32, width: usize) -> String {
    if file.is_empty() && line == 0 {
        return "(no Python frame)".into();
    }
    let line = if line == 0 {
        "?".to_string()
    } else {
        line.to_string()
    };
    let file = cut_left(file, width.saturating_sub(line.len() + 1).max(8));
    format!("{file}:{line}")
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// What forked children inherited and still held at the peak, said apart from the peak's
/// figure (which counts each allocation once, in the process that made it); `None` when no
/// child held any.
pub fn inherited_words(a: &Allocations, style: SizeStyle) -> Option<String> {
    let p = &a.at_peak;
    (p.inherited_bytes > 0).then(|| {
        format!(
            "inherited at fork, still live in forked children: {} {}(summed over the children; \
             not in the peak's figure, which counts each allocation once, where it was made: \
             the kernel shares these pages with the parent's copy until either writes to one; \
             pages a child wrote, as Python's reference counts do, are its own copies and show \
             in the ledger's PSS)",
            style.size(p.inherited_bytes),
            if is_sampled(a) { "estimated " } else { "" }
        )
    })
}

/// Why the peak's lines and stacks do not hold all of its bytes; `None` when they do.
pub fn breakdown_words(a: &Allocations, style: SizeStyle) -> Option<String> {
    let p = &a.at_peak;
    match p.breakdown {
        Breakdown::Complete => None,
        Breakdown::None => Some(
            "no breakdown by line or stack: the trace (format version 1) has none at the peak"
                .into(),
        ),
        Breakdown::Cut => {
            let why = "block of stacks was not completely imported (memlens stopped while the \
                       tracer wrote it, or the tracer was killed or its write failed part-way)";
            let held: u64 = p.stacks.iter().map(|s| s.bytes).sum();
            Some(if held == 0 {
                format!("no breakdown by line or stack: its {why}")
            } else {
                format!(
                    "the breakdown below holds {} of these bytes: the rest, {}, is a process's \
                     own peak, whose {why}",
                    style.size(held),
                    style.size(p.bytes.saturating_sub(held))
                )
            })
        }
    }
}

/// The highest traced live bytes the snapshots saw, when above the peak shown (a newer peak's
/// block of stacks was cut), with which figure is exact and which a bound; `None` otherwise.
pub fn higher_seen_words(a: &Allocations, style: SizeStyle) -> Option<String> {
    let p = &a.at_peak;
    (p.highest_seen_bytes > p.bytes).then(|| {
        let est = if is_sampled(a) { "estimated " } else { "" };
        let (bound, what) = if a.lost.unfinished_traces > 0 {
            (
                "at least ",
                "a lower bound of the run's traced peak: a trace has no end line, so later \
                 snapshots are missing",
            )
        } else {
            ("", "the run's traced peak")
        };
        format!(
            "traced live bytes reached {bound}{} {est}by {:.2} s (the highest the recorded \
             snapshots saw: {what}), above this peak: the newer peak's block of stacks was not \
             completely imported (memlens stopped while the tracer wrote it, or the tracer was \
             killed or its write failed part-way), so the peak shown and broken down here is the last one \
             whose block was: {} at {:.2} s, {}, but lower than the run's",
            style.size(p.highest_seen_bytes),
            p.highest_seen_t,
            style.size(p.bytes),
            p.t,
            if is_sampled(a) {
                "an estimate of what was live then"
            } else {
                "exactly what was live then"
            },
        )
    })
}

/// A table of lines, largest first.
fn write_lines(
    out: &mut impl Write,
    rows: &[ByLine],
    whole: u64,
    opts: &Options,
) -> std::io::Result<()> {
    let style = opts.sizes();
    if rows.is_empty() {
        return writeln!(out, "  none traced");
    }
    writeln!(
        out,
        "  {:>12} {:>6} {:>10}  line",
        "bytes", "share", "allocs"
    )?;
    for r in rows.iter().take(opts.top_lines) {
        writeln!(
            out,
            "  {:>12} {:>6} {:>10}  {}  {}",
            style.size(r.bytes).to_string(),
            share(r.bytes, whole),
            r.count,
            place(&r.file, r.line, 60),
            cut_right(&r.function, 40)
        )?;
    }
    if rows.len() > opts.top_lines {
        let rest: u64 = rows[opts.top_lines..].iter().map(|r| r.bytes).sum();
        writeln!(
            out,
            "  {:>12} {:>6} {:>10}  … {} more line{}",
            style.size(rest).to_string(),
            share(rest, whole),
            "",
            rows.len() - opts.top_lines,
            if rows.len() - opts.top_lines == 1 {
                ""
            } else {
                "s"
            }
        )?;
    }
    Ok(())
}

/// One frame as a stack line: `file:line function`.
fn frame_words(f: &Frame) -> String {
    format!(
        "{}  {}",
        place(&f.file, f.line, 60),
        cut_right(&f.function, 40)
    )
}

/// The domain's name as the trace format spells it.
pub fn domain_name(d: memlens_model::allocations::Domain) -> &'static str {
    use memlens_model::allocations::Domain;
    match d {
        Domain::Pymalloc => "pymalloc",
        Domain::Malloc => "malloc",
        Domain::Mmap => "mmap",
    }
}

fn write_stacks(
    out: &mut impl Write,
    stacks: &[Stack],
    whole: u64,
    opts: &Options,
) -> std::io::Result<()> {
    let style = opts.sizes();
    if stacks.is_empty() {
        return writeln!(out, "  none traced");
    }
    for s in stacks.iter().take(opts.top_stacks) {
        writeln!(
            out,
            "  {} ({}, {} alloc{}) from {}, pid {}:",
            style.size(s.bytes),
            share(s.bytes, whole),
            s.count,
            if s.count == 1 { "" } else { "s" },
            domain_name(s.domain),
            s.pid
        )?;
        if s.frames.is_empty() {
            writeln!(
                out,
                "      (no Python frame: native code or the interpreter's start-up)"
            )?;
        }
        for f in s.frames.iter().take(opts.max_frames) {
            writeln!(out, "      {}", frame_words(f))?;
        }
        if s.frames.len() > opts.max_frames {
            writeln!(
                out,
                "      … {} outer frames",
                s.frames.len() - opts.max_frames
            )?;
        }
    }
    if stacks.len() > opts.top_stacks {
        writeln!(out, "  … {} more stacks", stacks.len() - opts.top_stacks)?;
    }
    Ok(())
}

/// Writes the allocations report.
pub fn render(a: &Allocations, opts: &Options, mut out: impl Write) -> std::io::Result<()> {
    let style = opts.sizes();
    let fb = |v: u64| style.size(v);
    writeln!(out, "allocations (run --trace): {}", mode_words(a, style))?;
    let lost = lost_words(&a.lost);
    if !lost.is_empty() {
        writeln!(
            out,
            "warning: the tracer lost records, figures are incomplete: {}",
            lost.join("; ")
        )?;
    }
    let est = if is_sampled(a) { "estimated " } else { "" };
    let p = &a.at_peak;
    writeln!(
        out,
        "allocations at the peak: {} {est}traced live at {:.2} s",
        fb(p.bytes),
        p.t
    )?;
    if let Some(w) = higher_seen_words(a, style) {
        writeln!(out, "warning: {w}")?;
    }
    let shown = breakdown_words(a, style);
    if let Some(w) = &shown {
        writeln!(out, " {w}")?;
    }
    if p.stacks.is_empty() && shown.is_some() {
        // Not "none traced": the breakdown of these bytes is not known (said above).
    } else {
        writeln!(out, " by line (the allocating line, innermost frame):")?;
        write_lines(&mut out, &p.by_line, p.bytes, opts)?;
        writeln!(out, " by stack (innermost frame first):")?;
        write_stacks(&mut out, &p.stacks, p.bytes, opts)?;
    }
    if let Some(w) = inherited_words(a, style) {
        writeln!(out, "{w}")?;
        writeln!(out, " by line (allocated in the parent):")?;
        write_lines(&mut out, &p.inherited_by_line, p.inherited_bytes, opts)?;
    }
    write_over_time(&mut out, a, opts)?;
    writeln!(
        out,
        "leaked (alive at exit): {} {est}in {} line{}",
        fb(a.leaked.bytes),
        a.leaked.by_line.len(),
        if a.leaked.by_line.len() == 1 { "" } else { "s" }
    )?;
    write_lines(&mut out, &a.leaked.by_line, a.leaked.bytes, opts)?;
    writeln!(
        out,
        "temporary allocations (freed soon after they were made): {} {est}over the run",
        fb(a.temporary.bytes)
    )?;
    write_lines(&mut out, &a.temporary.by_line, a.temporary.bytes, opts)?;
    write_reconciliation(&mut out, a, style)?;
    Ok(())
}

/// One line on the stacks that held the most over time (the HTML draws them, the JSON has
/// them as `over_time`); none without snapshots.
fn write_over_time(out: &mut impl Write, a: &Allocations, opts: &Options) -> std::io::Result<()> {
    let o = &a.over_time;
    if o.stacks.is_empty() {
        return Ok(());
    }
    let style = opts.sizes();
    let tops: Vec<String> = o
        .stacks
        .iter()
        .take(3)
        .map(|s| {
            let at = match s.frames.first() {
                Some(f) => place(&f.file, f.line, 40),
                None => "(no Python frame)".into(),
            };
            format!("{at} {} at {:.2} s", style.size(s.max_bytes), s.max_t)
        })
        .collect();
    writeln!(
        out,
        " over time ({} snapshots; the HTML report draws them): highest live by stack: {}",
        o.snapshots,
        tops.join(", ")
    )
}

/// The traced bytes against the ledger at the peak, per category.
fn write_reconciliation(
    out: &mut impl Write,
    a: &Allocations,
    style: SizeStyle,
) -> std::io::Result<()> {
    let fb = |v: u64| style.size(v).to_string();
    writeln!(out, "traced against the ledger at the peak:")?;
    if a.reconciliation.is_empty() {
        return writeln!(out, "  no ledger near the peak to compare with");
    }
    writeln!(
        out,
        "  {:<18} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "category", "traced", "untouched", "touched", "PSS", "tracer"
    )?;
    for r in &a.reconciliation {
        writeln!(
            out,
            "  {:<18} {:>12} {:>12} {:>12} {:>12} {:>12}",
            cut_right(&r.category, 18),
            fb(r.traced_bytes),
            fb(r.untouched_bytes),
            fb(r.traced_bytes.saturating_sub(r.untouched_bytes)),
            fb(r.pss),
            fb(r.tracer_bytes)
        )?;
    }
    let tracer: u64 = a.reconciliation.iter().map(|r| r.tracer_bytes).sum();
    if tracer > 0 {
        writeln!(
            out,
            "  the tracer itself held {} resident at the peak: the ledger and the peak figures \
             above include it (native-heap)",
            fb(tracer)
        )?;
    }
    writeln!(
        out,
        "  traced: live bytes the allocators handed out; untouched: of those, allocated but never \
         touched (no resident page: calloc'd zero pages, arrays not written), measured on large \
         {}allocations; touched: traced less untouched; PSS: what the kernel charged the category \
         (allocator overhead, free lists, untraced memory and the tracer's own memory included); \
         tracer: the tracer's own resident tables and queue, inside that PSS",
        if is_sampled(a) { "sampled " } else { "" }
    )
}

#[cfg(test)]
pub(crate) use fixture_data::fixture;

#[cfg(test)]
mod fixture_data {
    use memlens_model::allocations::{
        Allocations, AtPeak, Breakdown, ByLine, Domain, Frame, Lines, Lost, Reconciliation, Stack,
    };

    pub(super) fn line(file: &str, line: u32, function: &str, bytes: u64, count: u64) -> ByLine {
        ByLine {
            file: file.into(),
            line,
            function: function.into(),
            bytes,
            count,
        }
    }

    /// Hand-built allocations (hostile names included) for the renderers' unit tests.
    pub(crate) fn fixture() -> Allocations {
        Allocations {
            mode: "sampled".into(),
            sample_interval_bytes: 512 << 10,
            at_peak: AtPeak {
                t: 1.5,
                bytes: 100 << 20,
                by_line: vec![
                    line("/app/main.py", 12, "build", 75 << 20, 300),
                    line("/app/\x1b[31mevil.py", 0, "<mod\u{202e}ule>", 25 << 20, 2),
                ],
                inherited_bytes: 0,
                inherited_by_line: Vec::new(),
                breakdown: Breakdown::Complete,
                highest_seen_bytes: 100 << 20,
                highest_seen_t: 1.5,
                stacks: vec![Stack {
                    frames: vec![
                        Frame {
                            file: "/app/main.py".into(),
                            function: "build".into(),
                            line: 12,
                        },
                        Frame {
                            file: "/app/main.py".into(),
                            function: "<module>".into(),
                            line: 30,
                        },
                    ],
                    domain: Domain::Pymalloc,
                    bytes: 75 << 20,
                    count: 300,
                    pid: 7,
                }],
            },
            leaked: Lines {
                bytes: 0,
                by_line: vec![],
            },
            temporary: Lines {
                bytes: 1 << 30,
                by_line: vec![line("/app/main.py", 20, "spike", 1 << 30, 4)],
            },
            reconciliation: vec![Reconciliation {
                category: "native-heap".into(),
                traced_bytes: 80 << 20,
                pss: 40 << 20,
                untouched_bytes: 40 << 20,
                tracer_bytes: 3 << 20,
            }],
            totals_by_line: vec![],
            lost: Lost::default(),
            over_time: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Allocations, opts: &Options) -> String {
        let mut out = Vec::new();
        render(a, opts, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sampled_figures_are_estimates_with_their_interval() {
        let t = text(&fixture(), &Options::default());
        assert!(
            t.contains("one allocation per 512 KiB allocated on average"),
            "{t}"
        );
        assert!(t.contains("100 MiB estimated traced live at 1.50 s"), "{t}");
        assert!(t.contains("75.0%"), "{t}");
        assert!(!t.contains("warning"), "{t}");
        let mut all = fixture();
        all.mode = "all".into();
        all.sample_interval_bytes = 1;
        let t = text(&all, &Options::default());
        assert!(t.contains("exact") && !t.contains("estimate"), "{t}");
    }

    /// Forked children's inherited blocks: a line of their own, with their lines, only when
    /// there are some; the peak's figure is unchanged.
    #[test]
    fn inherited_blocks_are_said_apart() {
        let t = text(&fixture(), &Options::default());
        assert!(!t.contains("inherited"), "{t}");
        let mut a = fixture();
        a.at_peak.inherited_bytes = 300 << 20;
        a.at_peak.inherited_by_line = vec![fixture_data::line(
            "/app/main.py",
            12,
            "build",
            300 << 20,
            1200,
        )];
        let t = text(&a, &Options::default());
        assert!(t.contains("100 MiB estimated traced live at 1.50 s"), "{t}");
        assert!(
            t.contains("inherited at fork, still live in forked children: 300 MiB estimated"),
            "{t}"
        );
        assert!(t.contains("ledger's PSS"), "{t}");
        assert!(t.contains(" by line (allocated in the parent):\n"), "{t}");
    }

    /// A peak with no whole block: said, never "none traced"; part of a tree's: the share
    /// held said; a higher peak seen: which figure is exact, which a lower bound.
    #[test]
    fn cut_breakdowns_and_a_higher_peak_are_said() {
        let mut a = fixture();
        a.mode = "all".into();
        let t = text(&a, &Options::default());
        assert!(!t.contains("not completely imported"), "{t}");
        a.at_peak.breakdown = Breakdown::Cut;
        let t = text(&a, &Options::default());
        assert!(
            t.contains(" the breakdown below holds 75.0 MiB of these bytes: the rest, 25.0 MiB, is a process's own peak, whose block of stacks was not completely imported"),
            "{t}"
        );
        assert!(t.contains(" by stack (innermost frame first):"), "{t}");
        a.at_peak.stacks.clear();
        a.at_peak.by_line.clear();
        a.at_peak.highest_seen_bytes = 300 << 20;
        a.at_peak.highest_seen_t = 4.0;
        let t = text(&a, &Options::default());
        assert!(
            t.contains("\n no breakdown by line or stack: its block of stacks was not completely imported (memlens stopped while the tracer wrote it, or the tracer was killed or its write failed part-way)\n"),
            "{t}"
        );
        assert!(!t.contains(" by line (the allocating line"), "{t}");
        let w = t
            .lines()
            .find(|l| l.starts_with("warning: traced live bytes reached"))
            .unwrap_or_else(|| panic!("{t}"));
        assert!(w.contains("reached 300 MiB by 4.00 s"), "{w}");
        assert!(w.contains("the run's traced peak"), "{w}");
        assert!(
            w.contains("100 MiB at 1.50 s, exactly what was live then"),
            "{w}"
        );
        a.lost.unfinished_traces = 1;
        a.mode = "sampled".into();
        let t = text(&a, &Options::default());
        assert!(
            t.contains("reached at least 300 MiB estimated by 4.00 s (the highest the recorded snapshots saw: a lower bound of the run's traced peak"),
            "{t}"
        );
        assert!(t.contains("an estimate of what was live then"), "{t}");
        a.at_peak.breakdown = Breakdown::None;
        let t = text(&a, &Options::default());
        assert!(
            t.contains(" no breakdown by line or stack: the trace (format version 1)"),
            "{t}"
        );
    }

    #[test]
    fn target_names_are_escaped() {
        let t = text(&fixture(), &Options::default());
        assert!(!t.contains('\x1b') && !t.contains('\u{202e}'), "{t}");
        assert!(t.contains("/app/\\u{1b}[31mevil.py:?"), "{t}");
    }

    #[test]
    fn untouched_is_its_own_figure_and_losses_warn() {
        let mut a = fixture();
        a.lost.dropped_frees = 3;
        a.lost.unfinished_traces = 1;
        let t = text(&a, &Options::default());
        let row = t.lines().find(|l| l.contains("native-heap")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "native-heap",
                "80.0",
                "MiB",
                "40.0",
                "MiB",
                "40.0",
                "MiB",
                "40.0",
                "MiB",
                "3.00",
                "MiB"
            ]
        );
        assert!(
            t.contains("the tracer itself held 3.00 MiB resident at the peak"),
            "{t}"
        );
        let w = t.lines().find(|l| l.starts_with("warning:")).unwrap();
        assert!(
            w.contains("3 frees refused") && w.contains("1 trace file ended"),
            "{w}"
        );
        let t = text(
            &a,
            &Options {
                bytes: true,
                ..Options::default()
            },
        );
        assert!(t.contains(&(80u64 << 20).to_string()), "{t}");
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(cut_left("/a/very/long/path/to/mod.py", 10), "…to/mod.py");
        assert_eq!(place("x.py", 0, 60), "x.py:?");
    }
}
