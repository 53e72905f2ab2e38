//! The text exposition: OpenMetrics 1.0.0 and Prometheus text 0.0.4 from one set of families,
//! and the choice between them from the scraper's `Accept` header.
//!
//! Label values come from the targets (`comm`, the command line, type names, cgroup paths) and
//! are untrusted: they are escaped as both specifications require (`\` as `\\`, `"` as `\"`, a
//! line feed as `\n`), so no value can end a label, a sample or a line.

use std::fmt::Write;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows (samples carry the `_total` suffix).
    Counter,
}

/// What a family is: its name (without `_total` for counters), help, kind and unit.
#[derive(Debug)]
pub struct Spec {
    /// The family's name, ending with its unit when it has one.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// The unit (`bytes`, `seconds`), the name's last part.
    pub unit: Option<&'static str>,
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact count.
    Int(u64),
    /// A measurement.
    Float(f64),
}

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label names and (untrusted) values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// A family and its samples.
#[derive(Debug)]
pub struct Family {
    /// What it is.
    pub spec: &'static Spec,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`, ending with `# EOF`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Prometheus,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics when the `Accept` header accepts `application/openmetrics-text` (version 1.0.0,
/// or no version) at least as much as plain text; Prometheus text otherwise (no header, `*/*`,
/// `text/plain`, or only OpenMetrics versions this server does not write).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let (mut om, mut text) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0f64, None);
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        match media.as_str() {
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                om = om.max(q)
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Escapes a label value (both formats).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes a help text (both formats).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn write_value(out: &mut String, v: Value) {
    let _ = match v {
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(f) if f.is_nan() => write!(out, "NaN"),
        Value::Float(f) if f.is_infinite() => {
            write!(out, "{}", if f > 0.0 { "+Inf" } else { "-Inf" })
        }
        Value::Float(f) => write!(out, "{f}"),
    };
}

/// Writes the families in `format`; OpenMetrics ends with `# EOF`.
pub fn render<'a>(
    families: impl IntoIterator<Item = &'a Family>,
    format: Format,
    out: &mut String,
) {
    render_families(families, format, out);
    finish(format, out);
}

/// Ends an exposition: `# EOF` in OpenMetrics, nothing in Prometheus text.
pub fn finish(format: Format, out: &mut String) {
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
}

/// Writes the families in `format`, without the end ([`finish`]).
pub fn render_families<'a>(
    families: impl IntoIterator<Item = &'a Family>,
    format: Format,
    out: &mut String,
) {
    for f in families {
        let spec = f.spec;
        let sample_name = match spec.kind {
            Kind::Counter => format!("{}_total", spec.name),
            Kind::Gauge => spec.name.to_string(),
        };
        // OpenMetrics names the family (a counter without `_total`); Prometheus text names the
        // samples.
        let family_name = match format {
            Format::OpenMetrics => spec.name,
            Format::Prometheus => sample_name.as_str(),
        };
        let kind = match spec.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {family_name} {}", escape_help(spec.help));
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        if let (Format::OpenMetrics, Some(unit)) = (format, spec.unit) {
            let _ = writeln!(out, "# UNIT {family_name} {unit}");
        }
        for s in &f.samples {
            out.push_str(&sample_name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            write_value(out, s.value);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static G: Spec = Spec {
        name: "memlens_test_bytes",
        help: "A test \\ gauge\nwith two lines.",
        kind: Kind::Gauge,
        unit: Some("bytes"),
    };
    static C: Spec = Spec {
        name: "memlens_test_events",
        help: "A test counter.",
        kind: Kind::Counter,
        unit: None,
    };

    fn families() -> Vec<Family> {
        vec![
            Family {
                spec: &G,
                samples: vec![Sample {
                    labels: vec![
                        ("comm", "a\"b\\c\nd} x=\"1\"".to_string()),
                        ("pid", "7".into()),
                    ],
                    value: Value::Int(4096),
                }],
            },
            Family {
                spec: &C,
                samples: vec![Sample {
                    labels: vec![],
                    value: Value::Float(1.5),
                }],
            },
        ]
    }

    #[test]
    fn openmetrics_names_families_and_ends_with_eof() {
        let mut s = String::new();
        render(&families(), Format::OpenMetrics, &mut s);
        assert_eq!(
            s,
            "# HELP memlens_test_bytes A test \\\\ gauge\\nwith two lines.\n\
             # TYPE memlens_test_bytes gauge\n\
             # UNIT memlens_test_bytes bytes\n\
             memlens_test_bytes{comm=\"a\\\"b\\\\c\\nd} x=\\\"1\\\"\",pid=\"7\"} 4096\n\
             # HELP memlens_test_events A test counter.\n\
             # TYPE memlens_test_events counter\n\
             memlens_test_events_total 1.5\n\
             # EOF\n"
        );
    }

    #[test]
    fn prometheus_text_names_counter_samples_and_has_no_unit_or_eof() {
        let mut s = String::new();
        render(&families(), Format::Prometheus, &mut s);
        assert!(s.contains("# TYPE memlens_test_events_total counter\n"));
        assert!(!s.contains("# UNIT"));
        assert!(!s.contains("# EOF"));
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Prometheus);
        assert_eq!(negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text; version=0.0.1")),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn special_floats_are_spelled_as_the_specs_say() {
        let mut s = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25] {
            write_value(&mut s, Value::Float(v));
            s.push(' ');
        }
        assert_eq!(s, "NaN +Inf -Inf 0.25 ");
    }
}
