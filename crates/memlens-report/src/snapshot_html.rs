//! The self-contained HTML page of `memlens snapshot PID [--tree] --html OUT`: the tree's
//! totals and findings, each process's ledger by category with its items, the sharing with the
//! parent when measured, the Python view (GC, pymalloc, threads, modules) and, with
//! `--packages`, the census by type and the packages. The recording page's CSS is inlined; no
//! script, nothing fetched; every string from the target is escaped.

use std::fmt::Write as _;
use std::io::Write;

use memlens_model::units::SizeStyle;
use memlens_model::{Amounts, ProcessLedger, TreeLedger};

use crate::diff_html::head;
use crate::html::escape;

/// Options of the page.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Exact bytes (`--bytes`).
    pub bytes: bool,
}

/// Types of a census shown per process (the largest by bytes).
const TYPES_SHOWN: usize = 30;

/// Renders the page.
pub fn render(t: &TreeLedger, o: &Options, out: impl Write) -> std::io::Result<()> {
    render_with_advice(t, None, o, out)
}

/// Renders the page with the advice section (`advice`: the items, and whether the census
/// was taken for object-level advice).
pub fn render_with_advice(
    t: &TreeLedger,
    advice: Option<(&[memlens_model::advice::Advice], bool)>,
    o: &Options,
    mut out: impl Write,
) -> std::io::Result<()> {
    let s = SizeStyle::exact(o.bytes);
    let root_cmd = t
        .processes
        .iter()
        .find(|p| p.pid == t.root)
        .map_or("", |p| p.cmdline.as_str());
    let mut h = head(&format!("memlens: snapshot of {} {root_cmd}", t.root));
    let _ = write!(
        h,
        r#"<h1>memlens snapshot</h1><p class="cmd">PID {} · {}</p><p class="muted">{} process(es)</p>"#,
        t.root,
        escape(root_cmd),
        t.processes.len()
    );
    let _ = write!(
        h,
        r#"<div class="figures"><div class="figure peak">PSS<b>{}</b>the honest total</div><div class="figure">USS<b>{}</b>unique to single processes</div><div class="figure">RSS sum<b>{}</b>overstates by {}</div><div class="figure">swap<b>{}</b>&nbsp;</div></div>"#,
        s.size(t.totals.pss),
        s.size(t.totals.uss),
        s.size(t.totals.rss),
        s.size(t.rss_overcount),
        s.size(t.totals.swap)
    );
    h.push_str("<h2>Findings</h2><ul>");
    for f in &t.findings {
        let _ = write!(h, "<li>{}</li>", escape(&f.words(s)));
    }
    h.push_str("</ul>");
    if let Some((items, census)) = advice {
        crate::advice_text::html(&mut h, items, census, s);
    }
    tree(&mut h, t, s);
    if let Some(x) = &t.exclusive {
        let text = match (x.measured, x.bytes) {
            (true, Some(b)) => format!(
                "{} resident only in this tree (freed if it all exits)",
                s.size(b)
            ),
            _ => format!("not measured: {}", x.reason.as_deref().unwrap_or("unknown")),
        };
        let _ = write!(h, "<p>Exclusive memory: {}</p>", escape(&text));
    }
    for p in &t.processes {
        process(&mut h, p, s);
    }
    if !t.skipped.is_empty() {
        h.push_str("<h2>Left out</h2><ul>");
        for k in &t.skipped {
            let _ = write!(h, "<li>PID {}: {}</li>", k.pid, escape(&k.reason));
        }
        h.push_str("</ul>");
    }
    h.push_str("\n</body>\n</html>\n");
    out.write_all(h.as_bytes())
}

fn amounts(h: &mut String, s: SizeStyle, a: &Amounts) {
    let _ = write!(
        h,
        r#"<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>"#,
        s.size(a.pss),
        s.size(a.uss),
        s.size(a.rss),
        s.size(a.swap)
    );
}

const AMOUNT_HEADS: &str = "<th>PSS</th><th>USS</th><th>RSS</th><th>swap</th>";

fn tree(h: &mut String, t: &TreeLedger, s: SizeStyle) {
    let _ = write!(
        h,
        "<h2>Processes</h2><table><tr><th>PID</th><th>parent</th><th>name</th><th>command</th><th>threads</th>{AMOUNT_HEADS}</tr>"
    );
    for p in &t.processes {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="cmd">{}</td><td class="num">{}</td>"#,
            p.pid,
            p.ppid,
            escape(&p.name),
            escape(&p.cmdline),
            p.threads
        );
        amounts(h, s, &p.totals);
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn process(h: &mut String, p: &ProcessLedger, s: SizeStyle) {
    let _ = write!(
        h,
        r#"<section id="pid-{}"><h2>PID {} · {}</h2><p class="cmd">{}</p>"#,
        p.pid,
        p.pid,
        escape(&p.name),
        escape(&p.cmdline)
    );
    let _ = write!(
        h,
        "<h3>Ledger</h3><table><tr><th>category / item</th>{AMOUNT_HEADS}</tr>"
    );
    for r in &p.ledger {
        let _ = write!(h, "<tr><td><b>{}</b></td>", escape(r.category.name()));
        amounts(h, s, &r.amounts);
        h.push_str("</tr>");
        for i in &r.items {
            let _ = write!(
                h,
                r#"<tr class="sub"><td>&nbsp;&nbsp;{}</td>"#,
                escape(&i.name)
            );
            amounts(h, s, &i.amounts);
            h.push_str("</tr>");
        }
    }
    h.push_str("</table>");
    let ts = &p.thread_stacks;
    let _ = write!(
        h,
        "<p>Threads: {} · stacks reserved {} · resident {}</p>",
        p.threads,
        s.size(ts.reserved),
        s.size(ts.resident)
    );
    sharing(h, p, s);
    python(h, p, s);
    h.push_str("</section>");
}

fn sharing(h: &mut String, p: &ProcessLedger, s: SizeStyle) {
    let Some(sh) = &p.sharing else { return };
    let _ = write!(h, "<h3>Sharing with parent {}</h3>", sh.parent);
    let Some(f) = sh.figures.as_ref().filter(|_| sh.measured) else {
        let _ = write!(
            h,
            r#"<p class="muted">not measured: {}</p>"#,
            escape(sh.reason.as_deref().unwrap_or("unknown"))
        );
        return;
    };
    let _ = write!(
        h,
        "<table><tr><th>category</th><th>shared with parent</th><th>copied</th><th>own</th></tr><tr><td><b>all</b></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        s.size(f.shared_with_parent),
        s.size(f.copied),
        s.size(f.own)
    );
    for r in &f.by_category {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            r.category.name(),
            s.size(r.shared_with_parent),
            s.size(r.copied),
            s.size(r.own)
        );
    }
    h.push_str("</table>");
}

fn python(h: &mut String, p: &ProcessLedger, s: SizeStyle) {
    let Some(py) = &p.python else { return };
    let _ = write!(
        h,
        "<h3>Python {}</h3><p class=\"muted\">{} ({} build){}</p>",
        escape(py.version.as_deref().unwrap_or("?")),
        escape(&py.binary),
        escape(py.build),
        if py.inexact {
            " · read without stopping it: may be inexact"
        } else {
            ""
        }
    );
    if let Some(gc) = &py.gc {
        h.push_str("<table><tr><th>GC generation</th><th>count</th><th>threshold</th><th>collections</th><th>collected</th><th>uncollectable</th></tr>");
        for (i, g) in gc.generations.iter().enumerate() {
            let _ = write!(
                h,
                r#"<tr><td>{i}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                g.count, g.threshold, g.collections, g.collected, g.uncollectable
            );
        }
        let _ = write!(h, "</table><p>Frozen objects: {}</p>", gc.frozen);
    }
    if let Some(pm) = &py.pymalloc {
        let _ = write!(
            h,
            "<p>pymalloc: {} arenas, {} pools, {} in used blocks, {} free</p>",
            pm.arenas,
            pm.pools,
            s.size(pm.used_bytes),
            s.size(pm.free_bytes)
        );
    }
    if let Some(m) = &py.modules {
        let names: Vec<String> = m.names.iter().map(|n| escape(n)).collect();
        let _ = write!(
            h,
            "<details><summary>{} modules</summary><p class=\"cmd\">{}</p></details>",
            m.count,
            names.join(", ")
        );
    }
    let Some(pk) = &py.packages else { return };
    if !pk.types.is_empty() {
        let mut types: Vec<_> = pk.types.iter().collect();
        types.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.type_name.cmp(&b.type_name))
        });
        h.push_str("<h3>Census (largest types by bytes)</h3><table><tr><th>type</th><th>objects</th><th>bytes</th></tr>");
        for t in types.into_iter().take(TYPES_SHOWN) {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                escape(&t.type_name),
                t.count,
                s.size(t.bytes)
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h3>Packages</h3><p class=\"muted\">{}</p><table><tr><th>package</th><th>kind</th><th>objects</th><th>object bytes</th><th>extension PSS</th></tr>",
        escape(pk.note)
    );
    for k in &pk.packages {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{:?}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(&k.name),
            k.kind,
            k.objects,
            s.size(k.object_bytes),
            k.extension
                .map_or_else(|| "–".to_string(), |e| s.size(e.amounts.pss).to_string())
        );
    }
    h.push_str("</table>");
}
