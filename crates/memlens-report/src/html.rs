//! The self-contained HTML report: hand-written SVG charts (ledger categories stacked over
//! time, a line per process, the peak marked, the Python view), CSS inlined from `assets/`,
//! nothing fetched when the page is viewed. Every target string is HTML-escaped. No script,
//! except with traced allocations: the flame graph's own ([`crate::alloc_html`]), the one
//! script the page's Content-Security-Policy then allows (by its hash).

use std::fmt::Write as _;
use std::io::Write;

use memlens_model::units::SizeStyle;

use crate::model::Model;

const CSS: &str = include_str!("assets/report.css");

/// Options of the HTML renderer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chart width in SVG units.
    pub width: f64,
    /// Chart height in SVG units.
    pub height: f64,
    /// Exact byte counts instead of binary units, in the tables, findings and notes (the
    /// charts' axes keep binary units: nine-digit labels do not fit them).
    pub bytes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            width: 960.0,
            height: 320.0,
            bytes: false,
        }
    }
}

impl Options {
    /// How sizes are printed.
    pub fn sizes(&self) -> SizeStyle {
        SizeStyle::exact(self.bytes)
    }
}

/// Escapes text for HTML element content and attribute values; other control characters
/// and the Unicode bidi controls (which would reorder the text around them) become U+FFFD.
pub fn escape(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n' && c != '\t') || bidi {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    crate::escape::html(&cleaned)
}

/// Colour of a ledger category.
fn category_color(name: &str) -> &'static str {
    match name {
        "python-heap" => "#4e79a7",
        "native-heap" => "#f28e2b",
        "thread-stacks" => "#e15759",
        "interpreter" => "#76b7b2",
        "extensions" => "#59a14f",
        "system-libraries" => "#edc948",
        "mapped-files" => "#b07aa1",
        "shared-memory" => "#ff9da7",
        "gpu-driver" => "#9c755f",
        _ => "#bab0ac",
    }
}

pub(crate) const PROCESS_COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Plot area and scales of one chart.
pub(crate) struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    t_max: f64,
    y_max: f64,
}

impl Frame {
    pub(crate) fn new(o: &Options, t_max: f64, y_max: f64) -> Frame {
        Frame {
            w: o.width,
            h: o.height,
            left: 72.0,
            right: 16.0,
            top: 14.0,
            bottom: 28.0,
            t_max: t_max.max(1e-3),
            y_max: y_max.max(1.0),
        }
    }

    pub(crate) fn x(&self, t: f64) -> f64 {
        self.left + (t / self.t_max).clamp(0.0, 1.0) * (self.w - self.left - self.right)
    }

    pub(crate) fn y(&self, v: f64) -> f64 {
        self.h - self.bottom - (v / self.y_max).clamp(0.0, 1.0) * (self.h - self.top - self.bottom)
    }

    /// Opens the SVG with grid lines and axis labels; `fmt` formats a y value.
    pub(crate) fn open(&self, label: &str, fmt: &dyn Fn(f64) -> String) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">"#,
            w = self.w,
            h = self.h,
            label = escape(label)
        );
        for k in 0..=4 {
            let v = self.y_max * k as f64 / 4.0;
            let y = self.y(v);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                self.left,
                self.w - self.right,
                self.left - 6.0,
                y + 4.0,
                escape(&fmt(v))
            );
        }
        // one decimal, more when the ticks are closer than 0.1 s (labels stay distinct)
        let step = self.t_max / 6.0;
        let decimals = if step >= 0.1 || step <= 0.0 {
            1
        } else {
            ((-step.log10()).ceil() as usize).clamp(1, 4)
        };
        for k in 0..=6 {
            let t = self.t_max * k as f64 / 6.0;
            let x = self.x(t);
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t:.decimals$} s</text>"#,
                self.h - 8.0
            );
        }
        let _ = write!(
            s,
            r#"<line class="axis" x1="{l:.1}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}"/>"#,
            l = self.left,
            r = self.w - self.right,
            b = self.h - self.bottom
        );
        s
    }

    fn polyline(&self, class: &str, style: &str, pts: impl Iterator<Item = (f64, f64)>) -> String {
        let mut d = String::new();
        for (t, v) in pts {
            let _ = write!(d, "{:.1},{:.1} ", self.x(t), self.y(v));
        }
        format!(
            r#"<polyline class="{class}" style="{style}" points="{}"/>"#,
            d.trim_end()
        )
    }
}

/// An axis label: always binary units (see [`Options::bytes`]).
pub(crate) fn bytes_label(v: f64) -> String {
    SizeStyle::Binary.size(v as u64).to_string()
}

/// The stacked ledger categories, the tree totals, and the peak marker.
fn memory_chart(m: &Model, o: &Options) -> String {
    let stack_max = m
        .ledger_series
        .iter()
        .map(|p| p.pss.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let tree_max = m
        .tree
        .iter()
        .map(|t| t.1.max(t.2).max(t.3.unwrap_or(0)))
        .max()
        .unwrap_or(0);
    let y_max = stack_max.max(tree_max).max(m.peak.bytes).max(m.peak.rss) as f64 * 1.08;
    let f = Frame::new(o, m.duration_seconds, y_max);
    let mut s = f.open("memory of the tree over time", &bytes_label);
    // Each ledger holds until the next one (or the end): step areas, stacked.
    let n = m.ledger_series.len();
    for (ci, cat) in m.categories.iter().enumerate().rev() {
        let mut top = Vec::new();
        let mut bottom = Vec::new();
        for (k, p) in m.ledger_series.iter().enumerate() {
            let t1 = if k + 1 < n {
                m.ledger_series[k + 1].t
            } else {
                m.duration_seconds.max(p.t)
            };
            let below: u64 = p.pss[..ci].iter().sum();
            let upto = below + p.pss[ci];
            top.push((p.t, upto as f64));
            top.push((t1, upto as f64));
            bottom.push((p.t, below as f64));
            bottom.push((t1, below as f64));
        }
        if top.is_empty() {
            continue;
        }
        let mut d = String::new();
        for &(t, v) in top.iter().chain(bottom.iter().rev()) {
            let _ = write!(d, "{:.1},{:.1} ", f.x(t), f.y(v));
        }
        let _ = write!(
            s,
            r#"<polygon points="{}" fill="{}" fill-opacity="0.85"><title>{}</title></polygon>"#,
            d.trim_end(),
            category_color(cat),
            escape(cat)
        );
    }
    if !m.tree.is_empty() {
        s.push_str(&f.polyline("tree-rss", "", m.tree.iter().map(|t| (t.0, t.1 as f64))));
        s.push_str(&f.polyline("tree-pss", "", m.tree.iter().map(|t| (t.0, t.2 as f64))));
        if m.tree.iter().any(|t| t.3.is_some()) {
            s.push_str(&f.polyline(
                "cgroup",
                "",
                m.tree.iter().filter_map(|t| Some((t.0, t.3? as f64))),
            ));
        }
    }
    let px = f.x(m.peak.at_seconds);
    let py = f.y(m.peak.bytes as f64);
    let anchor = if px > f.w * 0.7 { "end" } else { "start" };
    let dx = if anchor == "end" { -8.0 } else { 8.0 };
    let _ = write!(
        s,
        r#"<g class="peak"><line class="peak-line" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}"/><circle class="peak-dot" cx="{px:.1}" cy="{py:.1}" r="4"><title>peak {}</title></circle><text class="peak-label" x="{:.1}" y="{:.1}" text-anchor="{anchor}">peak {} at {:.2} s</text></g>"#,
        f.top,
        f.h - f.bottom,
        o.sizes().size(m.peak.bytes),
        px + dx,
        (py - 6.0).max(f.top + 10.0),
        o.sizes().size(m.peak.bytes),
        m.peak.at_seconds
    );
    s.push_str("</svg>");
    s
}

/// A line per process (RSS).
fn process_chart(m: &Model, o: &Options) -> String {
    let y_max = m
        .process_series
        .iter()
        .flat_map(|p| p.points.iter().map(|x| x.1))
        .max()
        .unwrap_or(0) as f64
        * 1.08;
    let f = Frame::new(o, m.duration_seconds, y_max);
    let mut s = f.open("RSS of each process over time", &bytes_label);
    for (k, p) in m.process_series.iter().enumerate() {
        if p.points.is_empty() {
            continue;
        }
        let color = PROCESS_COLORS[k % PROCESS_COLORS.len()];
        let line = f.polyline(
            "proc",
            &format!("stroke:{color}"),
            p.points.iter().map(|x| (x.0, x.1 as f64)),
        );
        let _ = write!(
            s,
            "<g><title>pid {} {}</title>{line}</g>",
            p.pid,
            escape(&p.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// The Python view: pymalloc's bytes in used blocks (solid) and in free blocks (dashed) per
/// process.
fn python_chart(m: &Model, o: &Options) -> String {
    let y_max = m
        .python
        .iter()
        .map(|p| {
            p.pymalloc_used
                .unwrap_or(0)
                .max(p.pymalloc_free.unwrap_or(0))
        })
        .max()
        .unwrap_or(0) as f64
        * 1.08;
    let f = Frame::new(o, m.duration_seconds, y_max);
    let mut s = f.open("pymalloc bytes per process over time", &bytes_label);
    let mut pids: Vec<u32> = m.python.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    for (k, pid) in pids.iter().enumerate() {
        let color = PROCESS_COLORS[k % PROCESS_COLORS.len()];
        let of = |p: &&crate::model::PythonPoint| p.pid == *pid;
        let used = f.polyline(
            "proc",
            &format!("stroke:{color}"),
            m.python
                .iter()
                .filter(of)
                .filter_map(|p| Some((p.t, p.pymalloc_used? as f64))),
        );
        let free = f.polyline(
            "proc",
            &format!("stroke:{color};stroke-dasharray:4 3"),
            m.python
                .iter()
                .filter(of)
                .filter_map(|p| Some((p.t, p.pymalloc_free? as f64))),
        );
        let _ = write!(s, "<g><title>pid {pid}</title>{used}{free}</g>");
    }
    s.push_str("</svg>");
    s
}

/// Copy-on-write per worker: a chart of shared (solid) and copied (dashed) bytes over time
/// per worker, and a table of each worker's first and last measurement; or why not measured.
fn sharing_section(h: &mut String, m: &Model, o: &Options) {
    let s = &m.sharing;
    h.push_str("<h2>Copy-on-write per worker</h2>");
    if !s.measured {
        let _ = write!(
            h,
            r#"<p class="muted">Not measured: {}</p>"#,
            escape(s.reason.as_deref().unwrap_or("unknown"))
        );
        return;
    }
    if s.workers.is_empty() {
        h.push_str(r#"<p class="muted">No process of the tree had its parent in the tree when sharing was measured.</p>"#);
        return;
    }
    let y_max = s
        .workers
        .iter()
        .flat_map(|w| w.measured())
        .map(|(_, sh, c)| sh.max(c))
        .max()
        .unwrap_or(0) as f64
        * 1.08;
    let f = Frame::new(o, m.duration_seconds, y_max);
    let mut svg = f.open(
        "bytes shared with the parent and copied, per worker",
        &bytes_label,
    );
    for (k, w) in s.workers.iter().enumerate() {
        let color = PROCESS_COLORS[k % PROCESS_COLORS.len()];
        let shared = f.polyline(
            "proc",
            &format!("stroke:{color}"),
            w.measured().map(|(t, sh, _)| (t, sh as f64)),
        );
        let copied = f.polyline(
            "proc",
            &format!("stroke:{color};stroke-dasharray:4 3"),
            w.measured().map(|(t, _, c)| (t, c as f64)),
        );
        let _ = write!(svg, "<g><title>pid {}</title>{shared}{copied}</g>", w.pid);
    }
    svg.push_str("</svg>");
    h.push_str(&svg);
    h.push_str(r#"<p class="muted">Solid: shared with the parent (the same physical page); dashed: copied since the fork (pagemap).</p>"#);
    h.push_str("<table><tr><th>pid</th><th>parent</th><th>first copied</th><th>last copied</th><th>last shared</th><th>measurements</th><th>command</th></tr>");
    for w in &s.workers {
        let pts: Vec<(f64, u64, u64)> = w.measured().collect();
        let cell = |p: Option<&(f64, u64, u64)>, pick: fn(&(f64, u64, u64)) -> u64| {
            p.map_or_else(
                || "–".to_string(),
                |p| format!("{} at {:.1} s", o.sizes().size(pick(p)), p.0),
            )
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({} failed)</td><td><code>{}</code></td></tr>",
            w.pid,
            w.parent_pid,
            escape(&cell(pts.first(), |p| p.2)),
            escape(&cell(pts.last(), |p| p.2)),
            escape(&cell(pts.last(), |p| p.1)),
            w.points.len(),
            w.points.len() - pts.len(),
            escape(&w.command)
        );
    }
    h.push_str("</table>");
}

/// A line per process, their table, and the growth phases.
fn processes_section(h: &mut String, m: &Model, o: &Options) {
    let style = o.sizes();
    h.push_str("<h2>Processes</h2>");
    h.push_str(&process_chart(m, o));
    h.push_str(r#"<table><tr><th></th><th class="num">PID</th><th class="num">PPID</th><th class="num">VmHWM</th><th class="num">peak PSS</th><th class="num">alive (s)</th><th>command</th></tr>"#);
    for (k, p) in m.processes.iter().enumerate() {
        let cmd = if p.cmdline.is_empty() {
            &p.name
        } else {
            &p.cmdline
        };
        let _ = write!(
            h,
            r#"<tr><td><span class="swatch" style="background:{}"></span></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{:.2}–{:.2}</td><td class="cmdline">{}</td></tr>"#,
            PROCESS_COLORS[k % PROCESS_COLORS.len()],
            p.pid,
            p.ppid,
            style.size(p.vm_hwm),
            style.size(p.peak_pss),
            p.first_seconds,
            p.exit_seconds.unwrap_or(p.last_seconds),
            escape(cmd)
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Growth phases</h2>");
    if m.growth.is_empty() {
        h.push_str("<p class=\"muted\">No steady growth phase.</p>");
    } else {
        h.push_str(r#"<table><tr><th class="num">from (s)</th><th class="num">to (s)</th><th class="num">grew</th><th class="num">rate</th></tr>"#);
        for g in &m.growth {
            let _ = write!(
                h,
                r#"<tr><td class="num">{:.2}</td><td class="num">{:.2}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                g.start_seconds,
                g.end_seconds,
                style.size(g.bytes),
                style.rate(g.rate_bytes_per_second)
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<p>{}</p>",
        crate::escape::html(&crate::leak::words(&m.leak, style))
    );
}

/// The ledger chosen to show the peak, said to be at the peak only when it is.
fn breakdown_section(h: &mut String, l: &crate::model::LedgerAtPeak, style: SizeStyle) {
    if l.breakdown.at_peak {
        let _ = write!(h, "<h2>Breakdown at the peak (ledger at {:.2} s)</h2>", l.t);
    } else {
        let _ = write!(
            h,
            "<h2>No breakdown at the peak</h2><p class=\"warning\">{}</p>",
            escape(&l.breakdown.words(style))
        );
    }
    h.push_str(r#"<table><tr><th>category</th><th class="num">PSS</th><th class="num">USS</th><th class="num">RSS</th><th class="num">swap</th></tr>"#);
    for (c, a) in &l.categories {
        let _ = write!(
            h,
            r#"<tr><td><span class="swatch" style="background:{}"></span>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            category_color(c),
            escape(c),
            style.size(a.pss),
            style.size(a.uss),
            style.size(a.rss),
            style.size(a.swap)
        );
    }
    h.push_str("</table>");
    if !l.findings.is_empty() {
        h.push_str("<ul>");
        for f in &l.findings {
            let _ = write!(h, "<li>{}</li>", escape(&f.words(style)));
        }
        h.push_str("</ul>");
    }
}

/// The pymalloc chart and each process's last census.
fn python_section(h: &mut String, m: &Model, o: &Options) {
    h.push_str("<h2>Python view</h2>");
    if m.python.is_empty() {
        h.push_str("<p class=\"muted\">Not recorded: this recording holds the OS view only.</p>");
    } else {
        h.push_str(&python_chart(m, o));
        h.push_str("<p class=\"muted\">pymalloc per process: bytes in used blocks (solid), in free blocks of its arenas (dashed).</p>");
    }
    for c in &m.census {
        let _ = write!(
            h,
            r#"<h3>Objects of pid {} at {:.2} s (census, largest first)</h3><table><tr><th>type</th><th class="num">objects</th><th class="num">bytes</th></tr>"#,
            c.pid, c.t
        );
        for t in &c.types {
            let _ = write!(
                h,
                r#"<tr><td class="cmdline">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                escape(&t.type_name),
                t.count,
                o.sizes().size(t.bytes)
            );
        }
        h.push_str("</table>");
    }
}

/// Writes the page.
pub fn render(m: &Model, o: &Options, out: impl Write) -> std::io::Result<()> {
    render_with(m, None, o, out)
}

/// Writes the page, with the section on traced allocations when `allocations` is given
/// (`memlens run --trace`); `None` draws the page [`render`] draws.
pub fn render_with(
    m: &Model,
    allocations: Option<&memlens_model::allocations::Allocations>,
    o: &Options,
    mut out: impl Write,
) -> std::io::Result<()> {
    let mut h = String::with_capacity(64 * 1024);
    let cmd = escape(&m.command);
    let (script_src, alloc_css) = match allocations {
        Some(_) => (
            format!("; script-src {}", crate::alloc_html::csp_script_source()),
            crate::alloc_html::CSS,
        ),
        None => (String::new(), ""),
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'{script_src}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>memlens: {cmd}</title>
<style>
{CSS}{alloc_css}</style>
</head>
<body>
<h1>memlens report</h1>
<p class="cmd">{cmd}</p>
"#
    );
    let status = match (m.exit_code, m.exit_signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(c), None) => format!("exited with status {c}"),
        (None, None) if !m.complete => "recording cut off (memlens was killed?)".into(),
        (None, None) => "recorded".into(),
    };
    let _ = write!(
        h,
        r#"<p class="muted">{} · {:.2} s · {} samples every {:.0} ms · {} process(es) · {}</p>"#,
        escape(&status),
        m.duration_seconds,
        m.samples,
        m.interval_seconds * 1000.0,
        m.processes.len(),
        escape(&m.file)
    );
    for w in &m.warnings {
        let _ = write!(
            h,
            r#"<p class="warning">warning: {}</p>"#,
            escape(&w.words(o.sizes()))
        );
    }
    let pss = match (m.peak.pss, m.peak.pss_at_seconds) {
        (Some(v), Some(t)) => format!(
            r#"<div class="figure">tree PSS peak<b>{}</b>read at {t:.2} s</div>"#,
            o.sizes().size(v)
        ),
        _ => r#"<div class="figure">tree PSS peak<b>–</b>never read</div>"#.to_string(),
    };
    let cgroup = match m.peak.cgroup {
        Some(c) => format!(
            r#"<div class="figure">cgroup charge peak<b>{}</b>page cache included; not the peak</div>"#,
            o.sizes().size(c)
        ),
        None => String::new(),
    };
    let _ = write!(
        h,
        r#"<div class="figures"><div class="figure peak">peak<b>{}</b>{} at {:.2} s</div>{pss}<div class="figure">tree RSS peak<b>{}</b>shared pages counted per process</div>{cgroup}</div>"#,
        o.sizes().size(m.peak.bytes),
        escape(m.peak.source.describe()),
        m.peak.at_seconds,
        o.sizes().size(m.peak.rss),
    );
    if let (Some(pid), Some(c)) = (m.peak.pid, &m.peak.cmdline) {
        let _ = write!(
            h,
            r#"<p>At the peak most memory was in pid {pid}: <code>{}</code></p>"#,
            escape(c)
        );
    }

    h.push_str("<h2>Memory over time</h2>");
    h.push_str(&memory_chart(m, o));
    h.push_str(r#"<div class="legend">"#);
    for c in &m.categories {
        let _ = write!(
            h,
            r#"<span><span class="swatch" style="background:{}"></span>{}</span>"#,
            category_color(c),
            escape(c)
        );
    }
    h.push_str(r#"<span>── tree PSS (estimated between reads)</span><span>- - tree RSS</span>"#);
    if m.tree.iter().any(|t| t.3.is_some()) {
        h.push_str(r#"<span>··· cgroup charge</span>"#);
    }
    h.push_str("</div><p class=\"muted\">Areas: ledger categories (PSS) at each full ledger; lines: tree totals at every sample (RSS exact, PSS estimated from RSS between reads).</p>");

    processes_section(&mut h, m, o);

    if let Some(l) = &m.ledger_at_peak {
        breakdown_section(&mut h, l, o.sizes());
    }
    crate::alloc_html::section(&mut h, allocations, o.sizes());
    python_section(&mut h, m, o);
    sharing_section(&mut h, m, o);
    if let Some(a) = &m.advice {
        crate::recording_advice::html(&mut h, a, o.sizes());
    }

    h.push_str("<h2>Notes</h2><ul class=\"notes\">");
    for s in &m.peak.sampled {
        let _ = write!(h, "<li>{}</li>", escape(&s.words(o.sizes())));
    }
    h.push_str("</ul></body></html>\n");
    out.write_all(h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::growth::Phase;
    use crate::model::{
        LedgerPoint, Note, Peak, PeakSource, ProcessSeries, ProcessSummary, PythonPoint, Warning,
    };

    fn model() -> Model {
        let evil = r#"python "<script>alert(1)</script>".py"#.to_string();
        Model {
            file: "r.db".into(),
            mode: "run".into(),
            command: evil.clone(),
            complete: true,
            exit_code: Some(0),
            exit_signal: None,
            duration_seconds: 2.0,
            interval_seconds: 0.01,
            samples: 200,
            peak: Peak {
                bytes: 100 << 20,
                source: PeakSource::VmHwm,
                pss: Some(90 << 20),
                pss_at_seconds: Some(1.4),
                pss_reads: 3,
                pss_estimated: 95 << 20,
                rss: 110 << 20,
                at_seconds: 1.5,
                pid: Some(7),
                cmdline: Some(evil.clone()),
                cgroup: Some(100 << 20),
                sampled: vec![Note::RssSampled],
            },
            processes: vec![ProcessSummary {
                pid: 7,
                ppid: 1,
                name: "python".into(),
                cmdline: evil.clone(),
                vm_hwm: 110 << 20,
                peak_pss: 90 << 20,
                first_seconds: 0.0,
                last_seconds: 2.0,
                exit_seconds: Some(2.0),
            }],
            growth: vec![Phase {
                start_seconds: 0.5,
                end_seconds: 1.5,
                rate_bytes_per_second: 80.0 * 1048576.0,
                bytes: 80 << 20,
            }],
            growth_series: "pss",
            leak: crate::leak::of_recording_points("pss", &[]),
            tree: (0..200)
                .map(|k| (k as f64 * 0.01, (k as u64) << 19, (k as u64) << 19, None))
                .collect(),
            categories: vec!["native-heap".into(), "interpreter".into()],
            ledger_series: vec![
                LedgerPoint {
                    t: 0.0,
                    pss: vec![1 << 20, 5 << 20],
                },
                LedgerPoint {
                    t: 1.0,
                    pss: vec![60 << 20, 5 << 20],
                },
            ],
            ledger_at_peak: None,
            process_series: vec![ProcessSeries {
                pid: 7,
                label: evil,
                points: vec![(0.0, 1 << 20), (2.0, 100 << 20)],
            }],
            python: vec![
                PythonPoint {
                    t: 0.0,
                    pid: 7,
                    gc_counts: vec![100, 1, 0],
                    gc_collections: vec![3, 0, 0],
                    gc_frozen: None,
                    pymalloc_arenas: Some(2),
                    pymalloc_used: Some(1 << 20),
                    pymalloc_free: Some(1 << 18),
                },
                PythonPoint {
                    t: 1.0,
                    pid: 7,
                    gc_counts: vec![500, 2, 0],
                    gc_collections: vec![9, 1, 0],
                    gc_frozen: None,
                    pymalloc_arenas: Some(4),
                    pymalloc_used: Some(3 << 20),
                    pymalloc_free: Some(1 << 18),
                },
            ],
            census: vec![crate::model::CensusSnapshot {
                pid: 7,
                t: 1.0,
                types: vec![memlens_recording::CensusEntry {
                    type_name: "<script>\"T".into(),
                    count: 5000,
                    bytes: 280_000,
                }],
            }],
            cgroup_note: None,
            max_vm_hwm: 110 << 20,
            memlens_cpu_seconds: Some(0.01),
            warnings: vec![Warning::Unreadable("pid 7 <b>unreadable</b>".into())],
            sharing: crate::sharing_over_time::SharingOverTime {
                measured: true,
                reason: None,
                interval_seconds: Some(0.5),
                workers: vec![crate::sharing_over_time::WorkerSharing {
                    pid: 8,
                    parent_pid: 7,
                    command: "worker <img src=x>".into(),
                    points: [(0.5, 0u64), (1.5, 24 << 20)]
                        .iter()
                        .map(|&(t, c)| crate::sharing_over_time::SharingPoint {
                            t,
                            duration_seconds: 0.01,
                            measured: true,
                            reason: None,
                            shared_with_parent: Some((96 << 20) - c),
                            copied: Some(c),
                            own: Some(0),
                            zero_page: Some(0),
                            failed_reads: Some(0),
                            by_category: Vec::new(),
                        })
                        .collect(),
                }],
            },
            advice: Some(crate::recording_advice::RecordingAdvice {
                at_seconds: 1.5,
                items: vec![memlens_model::advice::Advice {
                    id: "fragmentation".into(),
                    subject: "pymalloc <i>arenas".into(),
                    pid: 7,
                    saving_bytes: 12 << 20,
                    estimated: true,
                    method: "free bytes".into(),
                    text: "allocate <u>long-lived".into(),
                    text_bytes: "allocate <u>long-lived (bytes)".into(),
                }],
                skipped: Vec::new(),
                note: crate::recording_advice::NOTE,
            }),
            allocations: None,
        }
    }

    #[test]
    fn page_escapes_target_strings_and_draws_every_chart() {
        let mut out = Vec::new();
        render(&model(), &Options::default(), &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(!html.to_lowercase().contains("<script"));
        assert!(html.contains("&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;.py"));
        assert!(html.contains(
            "<td class=\"cmdline\">&lt;script&gt;&quot;T</td><td class=\"num\">5000</td>"
        ));
        // Memory, processes, the Python view and copy-on-write.
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 4);
        assert!(html.contains("<code>worker &lt;img src=x&gt;</code>"));
        assert!(html.contains("<td>24.0 MiB at 1.5 s</td>"), "{html}");
        assert_eq!(html.matches("<polygon").count(), 2);
        assert!(html.contains("peak 100 MiB at 1.50 s"));
        assert!(html.contains("warning: pid 7 &lt;b&gt;unreadable&lt;/b&gt;"));
        assert!(html.contains("<h2>Advice at 1.50 s</h2>"));
        assert!(html.contains("<td>pymalloc &lt;i&gt;arenas</td><td class=\"num\">12.0 MiB</td><td>allocate &lt;u&gt;long-lived</td>"), "{html}");
        assert!(!html.contains("http:") && !html.contains("https:"));
    }

    /// A run of a third of a second: the seven time labels are distinct (one decimal gave
    /// 0.1 s twice, 0.2 s twice...).
    #[test]
    fn short_recordings_get_distinct_time_labels() {
        for t_max in [0.34, 0.05, 2.0, 600.0] {
            let f = Frame::new(&Options::default(), t_max, 1.0);
            let svg = f.open("x", &|v| format!("{v}"));
            let labels: Vec<&str> = svg
                .split("text-anchor=\"middle\">")
                .skip(1)
                .map(|x| x.split('<').next().unwrap_or_default())
                .collect();
            assert_eq!(labels.len(), 7, "{t_max}: {svg}");
            let mut uniq = labels.clone();
            uniq.dedup();
            assert_eq!(uniq, labels, "{t_max}: repeated time labels");
        }
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(escape("a\u{1b}b"), "a\u{fffd}b");
        assert_eq!(escape("x\u{202e}y\u{2066}"), "x\u{fffd}y\u{fffd}");
    }
}
