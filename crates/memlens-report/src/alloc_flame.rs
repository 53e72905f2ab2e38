//! The flame graph of live memory at the traced peak (`report --flamegraph OUT.svg`, and the
//! HTML report's interactive one), drawn by the `inferno` crate from the stacks of
//! [`AtPeak::stacks`](memlens_model::allocations::AtPeak): frames root to leaf as
//! `function (file:line)`, each stack's live bytes as its sample value.
//!
//! Names come from the target. inferno writes them with quick-xml, which escapes `&`, `<`,
//! `>`, `"` and `'` in text and attributes; what XML cannot hold at all (control characters)
//! and what would move text about (bidi controls) becomes U+FFFD here first, and `;` (inferno's
//! frame separator) is written `%3B`, so a name can neither break the SVG nor split a frame.

use std::io::Write;

use memlens_model::allocations::{Allocations, Frame, Stack};
use memlens_model::units::SizeStyle;

use crate::alloc_text::{is_sampled, lost_words};

/// The comment memlens puts after the XML declaration of its flame graphs: how an existing
/// file is recognised as one memlens wrote (`--force` replaces only those).
pub const MARKER: &str = "<!-- memlens flame graph -->";

/// Options of the flame graph.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exact byte counts in the subtitle instead of binary units.
    pub bytes: bool,
    /// Width of the image in pixels.
    pub width: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bytes: false,
            width: 1200,
        }
    }
}

/// A name made safe for inferno's folded lines and for XML (see the module docs).
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        match c {
            ';' => out.push_str("%3B"),
            '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c if c.is_control() || bidi => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One frame as the flame graph names it: `function (file:line)` (`file:?` when the line is
/// unknown).
pub fn frame_name(f: &Frame) -> String {
    let line = if f.line == 0 {
        "?".to_string()
    } else {
        f.line.to_string()
    };
    format!("{} ({}:{line})", clean(&f.function), clean(&f.file))
}

/// The name of the one frame of a stack that had no Python frame.
pub const NO_PYTHON_FRAME: &str = "[no Python frame: native code or start-up]";

/// The frames of a stack root to leaf, with `pid N` at the root when the peak spans several
/// processes.
fn path(s: &Stack, with_pid: bool) -> Vec<String> {
    let mut v = Vec::with_capacity(s.frames.len() + 1);
    if with_pid {
        v.push(format!("pid {}", s.pid));
    }
    if s.frames.is_empty() {
        v.push(NO_PYTHON_FRAME.to_string());
    }
    v.extend(s.frames.iter().rev().map(frame_name));
    v
}

/// The stacks at the peak as inferno's folded lines (`root;…;leaf BYTES`), stacks of no byte
/// left out.
pub fn folded(a: &Allocations) -> Vec<String> {
    let stacks = &a.at_peak.stacks;
    let with_pid = stacks.iter().any(|s| s.pid != stacks[0].pid);
    stacks
        .iter()
        .filter(|s| s.bytes > 0)
        .map(|s| format!("{} {}", path(s, with_pid).join(";"), s.bytes))
        .collect()
}

/// The title and subtitle: what is drawn, how exact it is.
pub fn titles(a: &Allocations, style: SizeStyle) -> (String, String) {
    let drawn: u64 = a.at_peak.stacks.iter().map(|s| s.bytes).sum();
    let mut sub = format!(
        "{} traced live at {:.2} s",
        style.size(a.at_peak.bytes),
        a.at_peak.t
    );
    if drawn < a.at_peak.bytes {
        sub.push_str(&format!(" ({} in the stacks drawn)", style.size(drawn)));
    }
    if a.at_peak.highest_seen_bytes > a.at_peak.bytes {
        sub.push_str(&format!(
            " · not the run's highest: traced live reached {}{} by {:.2} s, whose stacks were not imported",
            if a.lost.unfinished_traces > 0 { "at least " } else { "" },
            style.size(a.at_peak.highest_seen_bytes),
            a.at_peak.highest_seen_t
        ));
    }
    if is_sampled(a) {
        sub.push_str(&format!(
            " · sampled: estimates, one sample per {} allocated",
            style.size(a.sample_interval_bytes)
        ));
    } else {
        sub.push_str(" · every allocation traced: exact");
    }
    if !lost_words(&a.lost).is_empty() {
        sub.push_str(" · incomplete: the tracer lost records");
    }
    // inferno leaves out frames narrower than 0.1% of the width (their bytes stay in their
    // callers' widths): said when a stack is that narrow.
    if a.at_peak
        .stacks
        .iter()
        .any(|s| s.bytes > 0 && s.bytes.saturating_mul(1000) < drawn)
    {
        sub.push_str(" · frames under 0.1% of the width not drawn");
    }
    (
        "Live memory at the peak (traced allocations, widths are bytes)".into(),
        sub,
    )
}

/// inferno's SVG of `lines`, with its own script (search, zoom) when `script` is set.
pub(crate) fn inferno_svg(
    lines: &[String],
    title: String,
    subtitle: String,
    width: usize,
    script: bool,
) -> std::io::Result<Vec<u8>> {
    let mut o = inferno::flamegraph::Options::default();
    // Titles are memlens's words and figures (no target string): quick-xml escapes them.
    o.title = title;
    o.subtitle = Some(subtitle);
    o.count_name = "bytes".into();
    o.name_type = "".into();
    o.colors = inferno::flamegraph::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    // Colours from a hash of the name: the same picture for the same data, no random state.
    o.hash = true;
    o.image_width = Some(width);
    o.no_javascript = !script;
    o.notes = "memlens: live traced memory at the peak".into();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), &mut out)?;
    Ok(out)
}

/// Writes the flame graph of live memory at the peak as a standalone SVG (inferno's, with its
/// search and zoom script). An error of kind `InvalidData` when no stack holds a byte.
pub fn render(a: &Allocations, opts: &Options, mut out: impl Write) -> std::io::Result<()> {
    let lines = folded(a);
    if lines.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no traced allocation was live at the peak: there is no flame graph to draw",
        ));
    }
    let (title, subtitle) = titles(a, SizeStyle::exact(opts.bytes));
    let svg = inferno_svg(&lines, title, subtitle, opts.width, true)?;
    // The marker after the XML declaration (a comment is allowed in the prolog).
    let decl_end = svg
        .windows(2)
        .position(|w| w == b"?>")
        .map(|i| i + 2)
        .filter(|_| svg.starts_with(b"<?xml"))
        .ok_or_else(|| {
            std::io::Error::other("inferno's SVG does not start with an XML declaration")
        })?;
    out.write_all(&svg[..decl_end])?;
    out.write_all(b"\n")?;
    out.write_all(MARKER.as_bytes())?;
    out.write_all(b"\n")?;
    out.write_all(&svg[decl_end..])?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_split_frames_or_break_xml() {
        assert_eq!(clean("a;b\x1b[2J\u{202e}x"), "a%3Bb\u{fffd}[2J\u{fffd}x");
        let mut a = crate::alloc_text::fixture();
        a.at_peak.stacks[0].frames[0].function = "evil;<script>".into();
        let f = folded(&a);
        assert_eq!(
            f,
            [format!(
                "<module> (/app/main.py:30);evil%3B<script> (/app/main.py:12) {}",
                75u64 << 20
            )]
        );
        let mut svg = Vec::new();
        render(&a, &Options::default(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains(MARKER), "{svg}");
        assert!(svg.contains("evil%3B&lt;script&gt;"), "{svg}");
        assert!(!svg.contains("<script>\""));
    }

    #[test]
    fn several_processes_get_a_pid_root_and_empty_stacks_a_frame() {
        let mut a = crate::alloc_text::fixture();
        let mut s = a.at_peak.stacks[0].clone();
        s.pid = 8;
        s.frames.clear();
        s.bytes = 5;
        a.at_peak.stacks.push(s);
        let f = folded(&a);
        assert!(f[0].starts_with("pid 7;<module>"), "{f:?}");
        assert_eq!(f[1], format!("pid 8;{NO_PYTHON_FRAME} 5"));
        let (_, sub) = titles(&a, SizeStyle::Binary);
        assert!(sub.contains("under 0.1%"), "{sub}");
        a.at_peak.stacks.clear();
        let e = render(&a, &Options::default(), Vec::new()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
