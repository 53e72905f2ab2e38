//! The allocations section's chart of live traced bytes over time by stack
//! ([`OverTime`]): stacked step areas, the largest stacks at the bottom and the rest on top,
//! drawn as static SVG like the page's other charts (no script; each area's `<title>` names
//! its stack), with a legend. Frames come from the target: every name is escaped.

use std::fmt::Write as _;

use memlens_model::allocations::{OverTime, StackSeries};
use memlens_model::units::SizeStyle;

use crate::html::{bytes_label, escape, Frame as ChartFrame, Options, PROCESS_COLORS};

/// Colour of the `other` band.
const OTHER: &str = "#bab0ac";

/// A stack's name: its innermost frame, `(no Python frame)` without one, and the domain.
pub fn stack_label(s: &StackSeries) -> String {
    let domain = crate::alloc_text::domain_name(s.domain);
    match s.frames.first() {
        Some(f) => {
            let line = if f.line == 0 {
                "?".to_string()
            } else {
                f.line.to_string()
            };
            format!("{} ({}:{line}, {domain})", f.function, f.file)
        }
        None => format!("(no Python frame, {domain})"),
    }
}

/// Appends the chart and its legend; a note when the run has no snapshot.
pub fn chart(h: &mut String, o: &OverTime, style: SizeStyle) {
    let n = o.t.len();
    let (Some(&first), Some(&last)) = (o.t.first(), o.t.last()) else {
        h.push_str("<p class=\"muted\">The tracer wrote no snapshot: no timeline.</p>");
        return;
    };
    // The last snapshot holds for one more typical interval.
    let gap = if n > 1 {
        (last - first) / (n - 1) as f64
    } else {
        1.0
    };
    let t_end = last + gap.max(1e-3);
    let y_max = o.live_bytes.iter().copied().max().unwrap_or(0) as f64 * 1.08;
    let f = ChartFrame::new(&Options::default(), t_end, y_max);
    let mut s = f.open("live traced bytes over time, by stack", &bytes_label);
    let bands: Vec<(&[u64], String, &str)> = o
        .stacks
        .iter()
        .enumerate()
        .map(|(k, st)| {
            (
                st.bytes.as_slice(),
                format!(
                    "{}: highest {} at {:.2} s",
                    stack_label(st),
                    style.size(st.max_bytes),
                    st.max_t
                ),
                PROCESS_COLORS[k % PROCESS_COLORS.len()],
            )
        })
        .chain(std::iter::once((
            o.other_bytes.as_slice(),
            "other stacks (and rounding of sampled figures)".to_string(),
            OTHER,
        )))
        .collect();
    let mut below = vec![0u64; n];
    for (values, title, color) in &bands {
        let mut top = Vec::with_capacity(2 * n);
        let mut bottom = Vec::with_capacity(2 * n);
        for (k, low) in below.iter_mut().enumerate() {
            let t0 = o.t[k];
            let t1 = o.t.get(k + 1).copied().unwrap_or(t_end);
            let v = values.get(k).copied().unwrap_or(0);
            let upto = low.saturating_add(v);
            top.push((t0, upto as f64));
            top.push((t1, upto as f64));
            bottom.push((t0, *low as f64));
            bottom.push((t1, *low as f64));
            *low = upto;
        }
        if values.iter().all(|&v| v == 0) {
            continue;
        }
        let mut d = String::new();
        for &(t, v) in top.iter().chain(bottom.iter().rev()) {
            let _ = write!(d, "{:.1},{:.1} ", f.x(t), f.y(v));
        }
        let _ = write!(
            s,
            r#"<polygon class="alloc-band" points="{}" fill="{color}" fill-opacity="0.85"><title>{}</title></polygon>"#,
            d.trim_end(),
            escape(title)
        );
    }
    s.push_str("</svg>");
    h.push_str(&s);
    h.push_str(r#"<div class="legend">"#);
    for (_, title, color) in &bands {
        let _ = write!(
            h,
            r#"<span><span class="swatch" style="background:{color}"></span>{}</span>"#,
            escape(title)
        );
    }
    h.push_str("</div>");
    let thinned = if o.snapshots > n as u64 {
        format!(
            " {n} of the {} snapshot times are drawn (in each equal run of them, the one with the most live bytes).",
            o.snapshots
        )
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<p class=\"muted\">Stacked: the {} stacks that held the most live bytes at any time (each summed over the processes with the same frames), largest at the bottom, the rest on top; each value holds until the next snapshot.{thinned}</p>",
        o.stacks.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_model::allocations::{Domain, Frame};

    #[test]
    fn bands_are_stacked_and_names_escaped() {
        let o = OverTime {
            t: vec![1.0, 2.0, 3.0],
            live_bytes: vec![100, 300, 250],
            stacks: vec![StackSeries {
                frames: vec![Frame {
                    file: "/a/<b>.py".into(),
                    function: "f\"<script>".into(),
                    line: 3,
                }],
                domain: Domain::Malloc,
                pids: vec![1],
                max_bytes: 200,
                max_t: 2.0,
                bytes: vec![0, 200, 200],
            }],
            other_bytes: vec![100, 100, 50],
            snapshots: 3,
        };
        let mut h = String::new();
        chart(&mut h, &o, SizeStyle::Binary);
        assert_eq!(h.matches("<polygon class=\"alloc-band\"").count(), 2, "{h}");
        assert!(!h.contains("<script") && !h.contains("<b>"), "{h}");
        assert!(
            h.contains("f&quot;&lt;script&gt; (/a/&lt;b&gt;.py:3, malloc)"),
            "{h}"
        );
        let mut none = String::new();
        chart(&mut none, &OverTime::default(), SizeStyle::Binary);
        assert!(none.contains("no timeline"));
    }
}
