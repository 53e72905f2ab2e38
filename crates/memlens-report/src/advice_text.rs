//! Advice with figures (`memlens snapshot`, docs/advice.md) as text and as an HTML section.

use std::fmt::Write as _;
use std::io::{Result, Write};

use memlens_model::advice::{Advice, MIN_PERCENT, MIN_SAVING};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;
use crate::html::escape;

/// What the threshold line says.
pub(crate) fn threshold(style: SizeStyle) -> String {
    format!(
        "savings of at least {} and {MIN_PERCENT}% of the process's PSS",
        style.size(MIN_SAVING)
    )
}

/// An item's words, its sizes in `style`.
pub(crate) fn worded(a: &Advice, style: SizeStyle) -> &str {
    match style {
        SizeStyle::Bytes if !a.text_bytes.is_empty() => &a.text_bytes,
        _ => &a.text,
    }
}

/// The advice after the ledger and Python views; `census` says whether object-level advice
/// was computed (`--advice`).
pub fn render(advice: &[Advice], census: bool, bytes: bool, w: &mut dyn Write) -> Result<()> {
    let s = SizeStyle::exact(bytes);
    writeln!(
        w,
        "\nAdvice (estimated savings, largest first; docs/advice.md)"
    )?;
    if advice.is_empty() {
        writeln!(w, "  none: no change found with {}", threshold(s))?;
    }
    for (i, a) in advice.iter().enumerate() {
        writeln!(
            w,
            "  {}. [{}] PID {} {}: saves ~{}",
            i + 1,
            a.id,
            a.pid,
            terminal(&a.subject),
            s.size(a.saving_bytes)
        )?;
        writeln!(w, "     {}", terminal(worded(a, s)))?;
    }
    if !census {
        writeln!(
            w,
            "  (object-level advice, slots, scalar-list and duplicate-values, needs --advice: \
             it takes a census of each Python process)"
        )?;
    }
    Ok(())
}

/// The advice section of the snapshot page.
pub fn html(h: &mut String, advice: &[Advice], census: bool, s: SizeStyle) {
    h.push_str("<h2>Advice</h2>");
    html_items(h, advice, s);
    if !census {
        h.push_str("<p class=\"muted\">Object-level advice (slots, scalar-list, duplicate-values) needs <code>--advice</code>.</p>");
    }
}

/// The table of advice items (or the line saying there is none).
pub fn html_items(h: &mut String, advice: &[Advice], s: SizeStyle) {
    if advice.is_empty() {
        let _ = write!(
            h,
            "<p>None: no change found with {}.</p>",
            escape(&threshold(s))
        );
    } else {
        h.push_str("<table><tr><th>kind</th><th>PID</th><th>subject</th><th class=\"num\">saving (estimated)</th><th>advice</th><th>how it was estimated</th></tr>");
        for a in advice {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
                escape(&a.id),
                a.pid,
                escape(&a.subject),
                s.size(a.saving_bytes),
                escape(worded(a, s)),
                escape(&a.method)
            );
        }
        h.push_str("</table>");
    }
}
