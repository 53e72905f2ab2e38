//! The self-contained HTML page of `memlens diff A B --html OUT`: the recording page's CSS
//! inlined, no script, nothing fetched; every string from a target or a file name escaped.

use std::fmt::Write as _;
use std::io::Write;

use memlens_model::diff::{Change, Diff, MatchedBy};
use memlens_model::units::SizeStyle;

use crate::diff_text::Sides;
use crate::html::escape;

const CSS: &str = include_str!("assets/report.css");

/// Options of the page.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Exact bytes (`--bytes`).
    pub bytes: bool,
}

/// The page's head and title, up to `<body>` (shared with `snapshot_html`).
pub(crate) fn head(title: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>
<style>
{CSS}</style>
</head>
<body>
"#,
        escape(title)
    )
}

/// A change as a table row: name, A, B, change.
fn change_row(h: &mut String, s: SizeStyle, name: &str, c: &Change) {
    let cls = match c.delta.signum() {
        1 => "up",
        -1 => "down",
        _ => "same",
    };
    let _ = write!(
        h,
        r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num {cls}">{}</td></tr>"#,
        escape(name),
        s.size(c.a),
        s.size(c.b),
        s.delta(c.delta)
    );
}

fn table_head(h: &mut String, first: &str) {
    let _ = write!(
        h,
        r#"<table><tr><th>{}</th><th>A</th><th>B</th><th>change</th></tr>"#,
        escape(first)
    );
}

/// Renders the page: one section per compared point (a snapshot pair, or a recording pair's
/// peak and end).
pub fn render(points: &[(Sides, &Diff)], o: &Options, mut out: impl Write) -> std::io::Result<()> {
    let s = SizeStyle::exact(o.bytes);
    let title = points.first().map_or_else(String::new, |(sd, _)| {
        format!("memlens: diff {} vs {}", sd.a, sd.b)
    });
    let mut h = head(&title);
    h.push_str("<h1>memlens diff</h1>");
    for (sides, d) in points {
        section(&mut h, sides, d, s);
    }
    h.push_str("\n</body>\n</html>\n");
    out.write_all(h.as_bytes())
}

fn section(h: &mut String, sides: &Sides, d: &Diff, s: SizeStyle) {
    let _ = write!(
        h,
        r#"<section><h2>{}</h2><p class="cmd">A: {} (root {})<br>B: {} (root {})</p>"#,
        escape(&sides.what),
        escape(&sides.a),
        d.roots.0,
        escape(&sides.b),
        d.roots.1
    );
    h.push_str("<h3>Totals</h3>");
    table_head(h, "figure");
    for (n, c) in [
        ("PSS", &d.totals.pss),
        ("USS", &d.totals.uss),
        ("RSS", &d.totals.rss),
        ("swap", &d.totals.swap),
    ] {
        change_row(h, s, n, c);
    }
    h.push_str("</table><h3>By category (PSS)</h3>");
    table_head(h, "category");
    for c in &d.categories {
        change_row(h, s, &c.category, &c.change.pss);
    }
    h.push_str("</table><h3>Processes (PSS)</h3>");
    processes(h, d, s);
    census(h, d, s);
    packages(h, d, s);
    h.push_str("<h3>Findings</h3><ul>");
    for (sign, list) in [
        ("appeared", &d.findings_appeared),
        ("went away", &d.findings_gone),
    ] {
        for f in list {
            let _ = write!(h, "<li>{sign}: {}</li>", escape(&f.words(s)));
        }
    }
    if d.findings_appeared.is_empty() && d.findings_gone.is_empty() {
        h.push_str("<li>the same kinds on both sides</li>");
    }
    h.push_str("</ul>");
    if d.advice_on_neither {
        h.push_str("</section>");
        return;
    }
    h.push_str("<h3>Advice</h3><ul>");
    if let Some(why) = &d.advice_absent {
        let _ = write!(h, "<li>not compared: {}</li>", escape(why));
    } else if d.advice_appeared.is_empty() && d.advice_gone.is_empty() {
        h.push_str("<li>the same kinds and subjects on both sides</li>");
    }
    for (sign, list) in [
        ("appeared", &d.advice_appeared),
        ("went away", &d.advice_gone),
    ] {
        for a in list {
            let _ = write!(
                h,
                "<li>{sign}: [{}] {}: saves ~{}</li>",
                escape(&a.id),
                escape(&a.subject),
                s.size(a.saving_bytes)
            );
        }
    }
    h.push_str("</ul></section>");
}

fn processes(h: &mut String, d: &Diff, s: SizeStyle) {
    h.push_str(
        "<table><tr><th>PID (A → B)</th><th>matched by</th><th>command</th><th>A</th><th>B</th><th>change</th></tr>",
    );
    for p in &d.processes {
        let by = match p.matched_by {
            MatchedBy::Pid => "pid",
            MatchedBy::Root => "root",
            MatchedBy::Cmdline => "cmdline",
        };
        let _ = write!(
            h,
            r#"<tr><td>{} → {}</td><td>{by}</td><td class="cmd">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            p.pid_a,
            p.pid_b,
            escape(&p.cmdline),
            s.size(p.totals.pss.a),
            s.size(p.totals.pss.b),
            s.delta(p.totals.pss.delta)
        );
    }
    for (label, list) in [
        ("gone (A only)", &d.only_in_a),
        ("new (B only)", &d.only_in_b),
    ] {
        for p in list {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{label}</td><td class="cmd">{}</td><td class="num" colspan="3">{}</td></tr>"#,
                p.pid,
                escape(&p.cmdline),
                s.size(p.totals.pss)
            );
        }
    }
    h.push_str("</table>");
}

fn census(h: &mut String, d: &Diff, s: SizeStyle) {
    h.push_str("<h3>Census by type</h3>");
    let Some(c) = &d.census else {
        let _ = write!(
            h,
            r#"<p class="muted">not compared: {}</p>"#,
            escape(d.census_absent.as_deref().unwrap_or("no census"))
        );
        return;
    };
    let _ = write!(
        h,
        "<p>{} objects ({:+}), {} ({})</p>",
        c.objects.b,
        c.objects.delta,
        s.size(c.bytes.b),
        s.delta(c.bytes.delta)
    );
    for (label, list) in [("grown", &c.grown), ("shrunk", &c.shrunk)] {
        let _ = write!(
            h,
            "<h4>{label}</h4><table><tr><th>type</th><th>count change</th><th>bytes change</th></tr>"
        );
        for t in list {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="num">{:+}</td><td class="num">{}</td></tr>"#,
                escape(&t.type_name),
                t.count.delta,
                s.delta(t.bytes.delta)
            );
        }
        h.push_str("</table>");
    }
}

fn packages(h: &mut String, d: &Diff, s: SizeStyle) {
    h.push_str("<h3>Packages</h3>");
    let Some(list) = &d.packages else {
        h.push_str(r#"<p class="muted">not compared: a side was taken without --packages</p>"#);
        return;
    };
    h.push_str("<table><tr><th>package</th><th>object bytes</th><th>objects</th><th>extension PSS</th></tr>");
    for p in list {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{:+}</td><td class="num">{}</td></tr>"#,
            escape(&p.name),
            s.delta(p.object_bytes.delta),
            p.objects.delta,
            s.delta(p.extension_pss.delta)
        );
    }
    h.push_str("</table>");
}
