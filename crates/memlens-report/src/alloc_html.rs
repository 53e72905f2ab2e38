//! The recording page's section on traced allocations: an interactive flame graph of live
//! memory at the peak (search by regular expression, zoom by click), the tables by line (at
//! the peak, leaked, temporary) and the reconciliation with the ledger.
//!
//! The flame graph's frames are inferno's (`crate::alloc_flame`), without inferno's script:
//! that one is written for a standalone SVG document (it takes the document's first `<svg>`,
//! global ids, `prompt()` for search, rewrites the page's URL, and starts from an `onload`
//! attribute, which a Content-Security-Policy without `'unsafe-inline'` refuses). The page's
//! own small script ([`SCRIPT`]) drives the frames instead; the page's CSP allows that one
//! script by its SHA-256 ([`csp_script_source`]) and nothing else, so the page stays
//! self-contained: nothing fetched, no other script.

use std::fmt::Write as _;

use memlens_model::allocations::{Allocations, ByLine};
use memlens_model::units::SizeStyle;

use crate::alloc_text::{breakdown_words, higher_seen_words, is_sampled, lost_words, mode_words};
use crate::html::escape;

/// The section's style (added to the page's `<style>` when the section is drawn).
pub const CSS: &str = "\
.flamegraph { margin: 8px 0; }
.fg-bar { display: flex; gap: 12px; align-items: center; font-size: 13px; margin: 4px 0; }
.fg-bar input { font: inherit; padding: 2px 6px; width: 260px; }
svg.fg { width: 100%; height: auto; display: block; background: #f8f8f4; }
svg.fg text { font: 12px ui-monospace, Menlo, Consolas, monospace; fill: #000; pointer-events: none; }
svg.fg g { cursor: pointer; }
svg.fg g:hover rect { stroke: #000; stroke-width: 0.5; }
svg.fg .fg-hide { display: none; }
svg.fg .fg-parent { opacity: 0.5; }
svg.fg .fg-match rect { fill: rgb(230, 0, 230); }
.fg-details { min-height: 1.4em; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; overflow-wrap: anywhere; }
";

/// The flame graph's script: hover shows a frame's figures, a click zooms to the frame (a
/// click on a dimmed parent zooms out to it), the search box highlights the frames whose name
/// matches a regular expression and says what share of the bytes they hold (nested matches
/// counted once).
pub const SCRIPT: &str = r#"(function () {
"use strict";
var root = document.getElementById("fg");
if (!root) { return; }
var frames = document.getElementById("fg-frames");
var total = parseFloat(frames.getAttribute("total_samples"));
var width = parseFloat(frames.getAttribute("width"));
var groups = Array.prototype.slice.call(frames.querySelectorAll("g"));
var details = root.querySelector(".fg-details");
var input = root.querySelector(".fg-search");
var matched = root.querySelector(".fg-matched");
var reset = root.querySelector(".fg-reset");
var charWidth = 12 * 0.59;
function num(e, a) { return parseFloat(e.getAttribute(a)); }
function info(g) { return g.querySelector("title").textContent; }
function label(g) { return info(g).replace(/ \([^()]*\)$/, ""); }
function fit(g) {
  var r = g.querySelector("rect"), t = g.querySelector("text");
  var x = num(r, "x"), w = num(r, "width") * width / 100 - 3;
  t.setAttribute("x", (x + 300 / width).toFixed(4) + "%");
  var s = label(g), n = Math.floor(w / charWidth);
  t.textContent = n < 3 ? "" : (s.length <= n ? s : s.substring(0, n - 2) + "..");
}
function place(g, x0, span) {
  var r = g.querySelector("rect");
  r.setAttribute("x", (100 * (num(r, "fg:x") - x0) / span).toFixed(4) + "%");
  r.setAttribute("width", (100 * num(r, "fg:w") / span).toFixed(4) + "%");
}
function zoom(g) {
  var r = g.querySelector("rect");
  var x0 = num(r, "fg:x"), span = num(r, "fg:w"), y0 = num(r, "y");
  groups.forEach(function (e) {
    var a = e.querySelector("rect");
    var ex = num(a, "fg:x"), ew = num(a, "fg:w"), ey = num(a, "y");
    e.classList.remove("fg-hide", "fg-parent");
    if (ey > y0) {
      if (ex <= x0 && ex + ew >= x0 + span) {
        e.classList.add("fg-parent");
        a.setAttribute("x", "0%");
        a.setAttribute("width", "100%");
      } else {
        e.classList.add("fg-hide");
      }
    } else if (ex < x0 || ex >= x0 + span) {
      e.classList.add("fg-hide");
    } else {
      place(e, x0, span);
    }
    fit(e);
  });
  reset.hidden = false;
}
function unzoom() {
  groups.forEach(function (e) {
    e.classList.remove("fg-hide", "fg-parent");
    place(e, 0, total);
    fit(e);
  });
  reset.hidden = true;
}
function search(term) {
  groups.forEach(function (e) { e.classList.remove("fg-match"); });
  if (!term) { matched.textContent = ""; return; }
  var re;
  try { re = new RegExp(term); } catch (err) {
    matched.textContent = "not a regular expression";
    return;
  }
  var hits = [];
  groups.forEach(function (e) {
    if (re.test(label(e))) {
      e.classList.add("fg-match");
      var a = e.querySelector("rect");
      hits.push([num(a, "fg:x"), num(a, "fg:w")]);
    }
  });
  hits.sort(function (p, q) { return p[0] - q[0] || q[1] - p[1]; });
  var sum = 0, end = -1;
  hits.forEach(function (h) { if (h[0] >= end) { sum += h[1]; end = h[0] + h[1]; } });
  matched.textContent = hits.length + " frame" + (hits.length === 1 ? "" : "s") +
    " matched, " + (100 * sum / total).toFixed(1) + "% of the bytes";
}
frames.addEventListener("click", function (ev) {
  var g = ev.target.closest("g");
  if (!g) { return; }
  if (g.classList.contains("fg-parent")) { unzoom(); }
  zoom(g);
});
frames.addEventListener("mouseover", function (ev) {
  var g = ev.target.closest("g");
  if (g) { details.textContent = info(g); }
});
frames.addEventListener("mouseout", function () { details.textContent = "\u00a0"; });
input.addEventListener("input", function () { search(input.value); });
reset.addEventListener("click", unzoom);
})();"#;

/// The CSP source that lets [`SCRIPT`] run: `'sha256-…'`.
pub fn csp_script_source() -> String {
    crate::sha256::csp_source(SCRIPT)
}

/// The frames of inferno's flame graph, as a nested `<svg id="fg-frames">` element, and the
/// vertical extent `(top, height)` of its rectangles; `None` when no stack holds a byte.
pub fn frames_element(
    a: &Allocations,
    style: SizeStyle,
) -> std::io::Result<Option<(String, f64, f64)>> {
    let lines = crate::alloc_flame::folded(a);
    if lines.is_empty() {
        return Ok(None);
    }
    let (title, subtitle) = crate::alloc_flame::titles(a, style);
    let svg = crate::alloc_flame::inferno_svg(&lines, title, subtitle, 1200, false)?;
    let svg = String::from_utf8(svg).map_err(std::io::Error::other)?;
    let bad =
        || std::io::Error::other("inferno's SVG has no frames element where memlens expects it");
    let start = svg.find("<svg id=\"frames\"").ok_or_else(bad)?;
    let end = svg.trim_end().strip_suffix("</svg>").ok_or_else(bad)?.len();
    if end <= start {
        return Err(bad());
    }
    let inner = svg[start..end].replacen("<svg id=\"frames\"", "<svg id=\"fg-frames\"", 1);
    // The rectangles' extent (inferno leaves room for its own title and buttons, drawn here
    // in HTML instead).
    let (mut top, mut bottom) = (f64::MAX, 0.0f64);
    for part in inner.split("<rect ").skip(1) {
        let attr = |name: &str| -> Option<f64> {
            let i = part.find(&format!(" {name}=\""))? + name.len() + 3;
            part[i..].split('"').next()?.parse().ok()
        };
        if let (Some(y), Some(h)) = (attr("y"), attr("height")) {
            top = top.min(y);
            bottom = bottom.max(y + h);
        }
    }
    if top > bottom {
        return Err(bad());
    }
    // A nested <svg> without a height is as tall as the outer viewBox and clips what lies
    // below that: it is given the frames' full height.
    let inner = inner.replacen(
        "<svg id=\"fg-frames\"",
        &format!(
            "<svg id=\"fg-frames\" y=\"0\" height=\"{:.0}\"",
            bottom + 4.0
        ),
        1,
    );
    Ok(Some((inner, top, bottom - top)))
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A table of lines (largest first, at most `top`).
fn lines_table(h: &mut String, rows: &[ByLine], whole: u64, style: SizeStyle, top: usize) {
    if rows.is_empty() {
        h.push_str("<p class=\"muted\">None traced.</p>");
        return;
    }
    h.push_str(r#"<table><tr><th>file:line</th><th>function</th><th class="num">bytes</th><th class="num">share</th><th class="num">allocations</th></tr>"#);
    for r in rows.iter().take(top) {
        let line = if r.line == 0 {
            "?".to_string()
        } else {
            r.line.to_string()
        };
        let place = if r.file.is_empty() && r.line == 0 {
            "(no Python frame)".to_string()
        } else {
            format!("{}:{line}", escape(&r.file))
        };
        let _ = write!(
            h,
            r#"<tr><td class="cmdline">{place}</td><td class="cmdline">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(&r.function),
            style.size(r.bytes),
            share(r.bytes, whole),
            r.count
        );
    }
    if rows.len() > top {
        let rest: u64 = rows[top..].iter().map(|r| r.bytes).sum();
        let _ = write!(
            h,
            r#"<tr><td colspan="2" class="muted">… {} more lines</td><td class="num">{}</td><td class="num">{}</td><td></td></tr>"#,
            rows.len() - top,
            style.size(rest),
            share(rest, whole)
        );
    }
    h.push_str("</table>");
}

/// Most rows of each table by line.
const TOP_LINES: usize = 50;

/// Appends the section to the page; nothing when `a` is `None` (a recording made without
/// `--trace`).
pub fn section(h: &mut String, a: Option<&Allocations>, style: SizeStyle) {
    let Some(a) = a else { return };
    let est = if is_sampled(a) { " (estimated)" } else { "" };
    h.push_str("<h2>Allocations at the peak (run --trace)</h2>");
    let _ = write!(
        h,
        "<p class=\"muted\">{}.</p>",
        escape(&mode_words(a, style))
    );
    let lost = lost_words(&a.lost);
    if !lost.is_empty() {
        let _ = write!(
            h,
            "<p class=\"warning\">warning: the tracer lost records, figures are incomplete: {}</p>",
            escape(&lost.join("; "))
        );
    }
    let _ = write!(
        h,
        r#"<div class="figures"><div class="figure peak">traced live at the peak{est}<b>{}</b>at {:.2} s</div><div class="figure">leaked (alive at exit){est}<b>{}</b>{} line{}</div><div class="figure">temporary{est}<b>{}</b>freed soon after allocation</div></div>"#,
        style.size(a.at_peak.bytes),
        a.at_peak.t,
        style.size(a.leaked.bytes),
        a.leaked.by_line.len(),
        if a.leaked.by_line.len() == 1 { "" } else { "s" },
        style.size(a.temporary.bytes),
    );
    if let Some(w) = higher_seen_words(a, style) {
        let _ = write!(h, "<p class=\"warning\">warning: {}.</p>", escape(&w));
    }
    let breakdown = breakdown_words(a, style);
    if let Some(w) = &breakdown {
        let _ = write!(h, "<p class=\"warning\">At the peak, {}.</p>", escape(w));
    }
    match frames_element(a, style) {
        Ok(Some((frames, top, height))) => {
            let (_, subtitle) = crate::alloc_flame::titles(a, style);
            let _ = write!(
                h,
                r#"<div class="flamegraph" id="fg"><div class="fg-bar"><label>Search <input class="fg-search" type="search" placeholder="regular expression" aria-label="search the frames"></label><button class="fg-reset" type="button" hidden>Reset zoom</button><span class="fg-matched"></span></div><svg class="fg" viewBox="0 {:.1} 1200 {:.1}" role="img" aria-label="flame graph of live memory at the peak">{frames}</svg><p class="fg-details">&#160;</p><p class="muted">Flame graph: callers below, the allocating frame on top; widths are live bytes at the peak. {}. Click a frame to zoom; hover for its figures.</p></div><script>{SCRIPT}</script>"#,
                top - 2.0,
                height + 4.0,
                escape(&subtitle)
            );
        }
        Ok(None) if breakdown.is_some() => {
            h.push_str("<p class=\"muted\">No flame graph: no stacks at the peak (above).</p>")
        }
        Ok(None) => h.push_str(
            "<p class=\"muted\">No traced allocation was live at the peak: no flame graph.</p>",
        ),
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"warning\">The flame graph could not be drawn: {}</p>",
                escape(&e.to_string())
            );
        }
    }
    let _ = write!(h, "<h3>Live traced bytes over time, by stack{est}</h3>");
    crate::alloc_series_html::chart(h, &a.over_time, style);
    let _ = write!(h, "<h3>Live at the peak by line{est}</h3>");
    if a.at_peak.by_line.is_empty() && breakdown.is_some() {
        h.push_str("<p class=\"muted\">Not known: no stacks at the peak (above).</p>");
    } else {
        lines_table(h, &a.at_peak.by_line, a.at_peak.bytes, style, TOP_LINES);
    }
    if let Some(w) = crate::alloc_text::inherited_words(a, style) {
        let _ = write!(
            h,
            "<h3>Inherited at fork, still live in forked children, by line{est}</h3><p class=\"muted\">{}.</p>",
            escape(&w)
        );
        lines_table(
            h,
            &a.at_peak.inherited_by_line,
            a.at_peak.inherited_bytes,
            style,
            TOP_LINES,
        );
    }
    let _ = write!(h, "<h3>Leaked: alive at exit, by line{est}</h3>");
    lines_table(h, &a.leaked.by_line, a.leaked.bytes, style, TOP_LINES);
    let _ = write!(h, "<h3>Temporary allocations by line{est}</h3>");
    lines_table(h, &a.temporary.by_line, a.temporary.bytes, style, TOP_LINES);
    h.push_str("<h3>Traced against the ledger at the peak</h3>");
    if a.reconciliation.is_empty() {
        h.push_str("<p class=\"muted\">No ledger near the peak to compare with.</p>");
        return;
    }
    h.push_str(r#"<table><tr><th>category</th><th class="num">traced</th><th class="num">untouched</th><th class="num">touched</th><th class="num">PSS</th><th class="num">tracer</th></tr>"#);
    for r in &a.reconciliation {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(&r.category),
            style.size(r.traced_bytes),
            style.size(r.untouched_bytes),
            style.size(r.traced_bytes.saturating_sub(r.untouched_bytes)),
            style.size(r.pss),
            style.size(r.tracer_bytes)
        );
    }
    h.push_str("</table><p class=\"muted\">Traced: live bytes the allocators handed out. Untouched: of those, allocated but never touched (no resident page: calloc'd zero pages, arrays not written). Touched: traced less untouched. PSS: what the kernel charged the category (allocator overhead, free lists, untraced memory and the tracer's own memory included). Tracer: the tracer's own resident tables and queue, inside that PSS.</p>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_draws_nothing_and_some_draws_escaped_frames() {
        let mut h = String::new();
        section(&mut h, None, SizeStyle::Binary);
        assert!(h.is_empty());
        let mut a = crate::alloc_text::fixture();
        a.at_peak.stacks[0].frames[0].function = "<img src=x>".into();
        section(&mut h, Some(&a), SizeStyle::Binary);
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;img src=x&gt; (/app/main.py:12)"), "{h}");
        assert_eq!(h.matches("<script>").count(), 1);
        assert!(h.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(h.contains("<svg id=\"fg-frames\""), "{h}");
        assert!(!h.contains("onload") && !h.contains("ecmascript"), "{h}");
        assert!(!h.contains("http:") && !h.contains("https:"), "{h}");
        assert!(h.contains("/app/\u{fffd}[31mevil.py:?"), "{h}");
    }

    /// Forked children's inherited blocks: their own heading and table, names escaped; none
    /// without them.
    #[test]
    fn inherited_blocks_have_their_own_table() {
        let mut h = String::new();
        section(
            &mut h,
            Some(&crate::alloc_text::fixture()),
            SizeStyle::Binary,
        );
        assert!(!h.contains("Inherited at fork"), "{h}");
        let mut a = crate::alloc_text::fixture();
        a.at_peak.inherited_bytes = 300 << 20;
        let mut l = a.at_peak.by_line[0].clone();
        l.function = "<b>".into(); // the figures use <b>: the escaped form is what counts
        a.at_peak.inherited_by_line = vec![l];
        let mut h = String::new();
        section(&mut h, Some(&a), SizeStyle::Binary);
        assert!(
            h.contains("<h3>Inherited at fork, still live in forked children, by line"),
            "{h}"
        );
        assert!(
            h.contains("300 MiB estimated (summed over the children"),
            "{h}"
        );
        assert!(h.contains("&lt;b&gt;"), "{h}");
    }

    /// A cut breakdown and a higher peak seen are said, not shown as "none traced".
    #[test]
    fn a_cut_breakdown_and_a_higher_peak_are_said() {
        let mut a = crate::alloc_text::fixture();
        a.at_peak.highest_seen_bytes = a.at_peak.bytes;
        let mut h = String::new();
        section(&mut h, Some(&a), SizeStyle::Binary);
        assert!(!h.contains("not completely imported"), "{h}");
        a.at_peak.stacks.clear();
        a.at_peak.by_line.clear();
        a.at_peak.breakdown = memlens_model::allocations::Breakdown::Cut;
        a.at_peak.highest_seen_bytes = 300 << 20;
        a.at_peak.highest_seen_t = 4.0;
        a.lost.unfinished_traces = 1;
        let mut h = String::new();
        section(&mut h, Some(&a), SizeStyle::Binary);
        assert!(
            h.contains("At the peak, no breakdown by line or stack: its block of stacks was not completely imported"),
            "{h}"
        );
        assert!(
            h.contains("traced live bytes reached at least 300 MiB estimated by 4.00 s"),
            "{h}"
        );
        assert!(
            h.contains("a lower bound of the run&#39;s traced peak"),
            "{h}"
        );
        assert!(!h.contains("None traced.</p><h3>Inherited"), "{h}");
        assert!(!h.contains("No traced allocation was live"), "{h}");
        assert!(h.contains("Not known: no stacks at the peak"), "{h}");
    }

    #[test]
    fn script_hash_is_a_csp_source() {
        let s = csp_script_source();
        assert!(
            s.starts_with("'sha256-") && s.ends_with("='") && s.len() == 53,
            "{s}"
        );
    }
}
