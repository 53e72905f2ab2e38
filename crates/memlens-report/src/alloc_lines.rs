//! `report --lines PATH[:FUNCTION]`: memory_profiler-style figures for one source file (or one
//! function of it), line by line, from the trace alone ([`Allocations::totals_by_line`]):
//! bytes allocated, freed and their difference over the whole run, per line.
//!
//! A line's figures are those of the allocations made while it was the innermost Python frame
//! (the line itself allocated); a call to another Python function is credited to the lines of
//! that function. The source is shown when the command could read it (escaped: it is a file
//! the target ran), else the line numbers only.

use std::io::Write;

use memlens_model::allocations::{Allocations, LineTotals};
use memlens_model::units::SizeStyle;

use crate::alloc_text::{is_sampled, mode_words};

/// The traced file and, optionally, function that `PATH[:FUNCTION]` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The traced file name (`co_filename`, as the target held it).
    pub file: String,
    /// The function (`co_qualname` or `co_name`) and its line range, when one was named.
    pub function: Option<Function>,
}

/// A function named with `PATH:FUNCTION`, and the lines it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The function's name as traced.
    pub name: String,
    /// The lowest line an allocation of the function was traced at.
    pub first: u32,
    /// The highest such line.
    pub last: u32,
}

/// Why `PATH[:FUNCTION]` selects nothing (`report` exits 2 with these words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// No traced file is PATH; the largest traced files, for the hint.
    NoFile {
        /// What was asked for.
        asked: String,
        /// Traced files, the most allocating first (at most 10).
        traced: Vec<String>,
    },
    /// PATH ends several traced paths.
    Ambiguous {
        /// What was asked for.
        asked: String,
        /// The traced files it matches.
        files: Vec<String>,
    },
    /// The file was traced but no allocation of FUNCTION was.
    NoFunction {
        /// The traced file.
        file: String,
        /// What was asked for.
        asked: String,
        /// The file's traced functions.
        functions: Vec<String>,
    },
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| crate::escape::terminal(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            SelectError::NoFile { asked, traced } if traced.is_empty() => write!(
                f,
                "{} matches no traced file: the trace attributes no allocation to any Python line",
                crate::escape::terminal(asked)
            ),
            SelectError::NoFile { asked, traced } => write!(
                f,
                "{} matches no traced file; traced files (most allocating first): {}",
                crate::escape::terminal(asked),
                list(traced)
            ),
            SelectError::Ambiguous { asked, files } => write!(
                f,
                "{} matches several traced files: {}; name more of the path",
                crate::escape::terminal(asked),
                list(files)
            ),
            SelectError::NoFunction {
                file,
                asked,
                functions,
            } => write!(
                f,
                "no allocation of a function {} was traced in {}; its traced functions: {}",
                crate::escape::terminal(asked),
                crate::escape::terminal(file),
                list(functions)
            ),
        }
    }
}

/// Whether the traced name `traced` is the path `asked`: the same string, or one ends the
/// other at a `/` (`app.py` is `/srv/app.py`; the target may have run it by a relative name).
fn same_path(traced: &str, asked: &str) -> bool {
    let asked = asked.strip_prefix("./").unwrap_or(asked);
    let traced_s = traced.strip_prefix("./").unwrap_or(traced);
    if traced_s == asked {
        return true;
    }
    let ends = |long: &str, short: &str| {
        !short.is_empty()
            && long.len() > short.len()
            && long.ends_with(short)
            && long.as_bytes()[long.len() - short.len() - 1] == b'/'
    };
    ends(traced_s, asked) || ends(asked, traced_s)
}

/// The traced files matching `path`, each once, in the order of `totals_by_line`.
fn files_matching<'a>(a: &'a Allocations, path: &str) -> Vec<&'a str> {
    let mut files: Vec<&str> = Vec::new();
    for t in &a.totals_by_line {
        if same_path(&t.file, path) && !files.contains(&t.file.as_str()) {
            files.push(&t.file);
        }
    }
    // The exact name wins over names it ends.
    if let Some(exact) = files.iter().find(|f| **f == path) {
        return vec![*exact];
    }
    files
}

/// Traced files, the most allocating first.
fn traced_files(a: &Allocations) -> Vec<String> {
    let mut by: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for t in &a.totals_by_line {
        *by.entry(&t.file).or_default() += t.allocated_bytes;
    }
    let mut v: Vec<(&str, u64)> = by.into_iter().collect();
    v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    v.into_iter().take(10).map(|(f, _)| f.to_string()).collect()
}

/// Resolves `PATH[:FUNCTION]` against the traced lines. The whole argument is tried as a path
/// first (paths may hold `:`); else it is split at its last `:`. FUNCTION is a traced
/// `co_qualname` (`Class.method`) or, when only one traced function ends so, its last part.
pub fn select(a: &Allocations, spec: &str) -> Result<Selection, SelectError> {
    let whole = files_matching(a, spec);
    let (files, function) = match (whole.is_empty(), spec.rsplit_once(':')) {
        (true, Some((p, f))) if !p.is_empty() && !f.is_empty() => (files_matching(a, p), Some(f)),
        _ => (whole, None),
    };
    let asked_path = match function {
        Some(_) => spec.rsplit_once(':').map_or(spec, |(p, _)| p),
        None => spec,
    };
    let file = match files.as_slice() {
        [] => {
            return Err(SelectError::NoFile {
                asked: spec.to_string(),
                traced: traced_files(a),
            })
        }
        [one] => one.to_string(),
        many => {
            return Err(SelectError::Ambiguous {
                asked: asked_path.to_string(),
                files: many.iter().map(|s| s.to_string()).collect(),
            })
        }
    };
    let Some(asked) = function else {
        return Ok(Selection {
            file,
            function: None,
        });
    };
    let in_file: Vec<&LineTotals> = a.totals_by_line.iter().filter(|t| t.file == file).collect();
    let mut names: Vec<&str> = in_file.iter().map(|t| t.function.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let name = if names.contains(&asked) {
        Some(asked.to_string())
    } else {
        let ends: Vec<&&str> = names
            .iter()
            .filter(|n| n.rsplit('.').next() == Some(asked))
            .collect();
        match ends.as_slice() {
            [one] => Some(one.to_string()),
            _ => None,
        }
    };
    let lines: Vec<u32> = match &name {
        Some(n) => in_file
            .iter()
            .filter(|t| &t.function == n && t.line > 0)
            .map(|t| t.line)
            .collect(),
        None => Vec::new(),
    };
    match (name, lines.iter().min(), lines.iter().max()) {
        (Some(name), Some(&first), Some(&last)) => Ok(Selection {
            file,
            function: Some(Function { name, first, last }),
        }),
        _ => Err(SelectError::NoFunction {
            file,
            asked: asked.to_string(),
            functions: names.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// The source the command read for the selected file, if any.
#[derive(Debug, Clone)]
pub enum Source {
    /// The file's text, read by the command (lossily decoded), and where it was read.
    Read {
        /// The path read.
        path: String,
        /// Its text.
        text: String,
    },
    /// Not shown, and why (not found, not readable, too large).
    Unavailable(String),
}

/// Tabs expanded to 8-column stops, then escaped for the terminal.
fn source_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut col = 0;
    for c in s.trim_end_matches(['\r', '\n']).chars() {
        if c == '\t' {
            let n = 8 - col % 8;
            out.extend(std::iter::repeat_n(' ', n));
            col += n;
        } else {
            out.push(c);
            col += 1;
        }
    }
    crate::escape::terminal(&out)
}

/// Leading spaces and tabs of a source line (a tab counted as one: only compared with lines
/// of the same function).
fn indent(l: &str) -> usize {
    l.len() - l.trim_start_matches([' ', '\t']).len()
}

/// The lines of `f`'s `def` and body in `text`: the nearest `def NAME(` (or `async def`) above
/// its first traced line and less indented than it, to the last line of the body (the lines
/// after it indented deeper, blank lines and comments between them); `None` when no such
/// `def` holds every traced line (a lambda, a comprehension, a module, or another source).
pub fn def_range(text: &[&str], f: &Function) -> Option<(u32, u32)> {
    let name = f.name.rsplit('.').next()?;
    if name.starts_with('<') || f.first == 0 || f.last as usize > text.len() {
        return None;
    }
    let at = text.get(f.first as usize - 1)?;
    let (mut def, mut def_indent) = (None, 0);
    for k in (0..f.first as usize).rev() {
        let l = text[k];
        let t = l.trim_start_matches([' ', '\t']);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("def ") else {
            continue;
        };
        let rest = rest.trim_start();
        if rest
            .strip_prefix(name)
            .is_some_and(|r| r.trim_start().starts_with('('))
            && (k + 1 == f.first as usize || indent(l) < indent(at))
        {
            def = Some(k);
            def_indent = indent(l);
            break;
        }
    }
    let def = def?;
    let mut end = def;
    for (k, l) in text.iter().enumerate().skip(def + 1) {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(l) <= def_indent {
            break;
        }
        end = k;
    }
    ((end + 1) as u32 >= f.last).then_some((def as u32 + 1, end as u32 + 1))
}

/// Writes the line-by-line table of `sel`.
pub fn render(
    a: &Allocations,
    sel: &Selection,
    source: &Source,
    bytes: bool,
    mut out: impl Write,
) -> std::io::Result<()> {
    let style = SizeStyle::exact(bytes);
    // One row per line: the traced rows of the file (of its function when one was named).
    let mut rows: std::collections::BTreeMap<u32, (u64, u64, u64, u64)> =
        std::collections::BTreeMap::new();
    for t in a.totals_by_line.iter().filter(|t| {
        t.file == sel.file && sel.function.as_ref().is_none_or(|f| f.name == t.function)
    }) {
        let r = rows.entry(t.line).or_default();
        r.0 += t.allocated_bytes;
        r.1 += t.allocated_count;
        r.2 += t.freed_bytes;
        r.3 += t.freed_count;
    }
    let text_lines: Option<Vec<&str>> = match source {
        Source::Read { text, .. } => Some(text.lines().collect()),
        Source::Unavailable(_) => None,
    };
    let last_traced = rows.keys().copied().max().unwrap_or(0);
    // A function's lines: its `def` and body in the source when the source shows them around
    // its traced lines, else the traced lines' range.
    let from_source = match (&sel.function, &text_lines) {
        (Some(f), Some(t)) => def_range(t, f),
        _ => None,
    };
    let (first, last) = match (&sel.function, &text_lines) {
        (Some(_), _) if from_source.is_some() => from_source.unwrap_or((1, 1)),
        (Some(f), _) => (f.first, f.last),
        (None, Some(t)) => (1, (t.len() as u32).max(last_traced)),
        (None, None) => (1, last_traced),
    };
    let what = match &sel.function {
        Some(f) => format!(
            "function {} of {}, lines {first}–{last}",
            crate::escape::terminal(&f.name),
            crate::escape::terminal(&sel.file),
        ),
        None => crate::escape::terminal(&sel.file),
    };
    writeln!(out, "allocations line by line: {what}")?;
    writeln!(out, "  {}", mode_words(a, style))?;
    match (&sel.function, from_source) {
        (Some(f), Some(_)) => writeln!(
            out,
            "  the function's lines: its `def` line and body in the source, found around the lines it allocated at ({}–{})",
            f.first, f.last
        )?,
        (Some(f), None) => writeln!(
            out,
            "  the function's range ({}–{}) is the lowest to the highest line at which it allocated (from its traced lines{}): its other lines allocated nothing traced",
            f.first,
            f.last,
            if text_lines.is_some() {
                "; its `def` was not found around them in the source"
            } else {
                ""
            }
        )?,
        (None, _) => {}
    }
    writeln!(
        out,
        "  a line's figures are what it allocated itself (its innermost frame) over the whole run; the Python functions it calls are credited to their own lines"
    )?;
    match source {
        Source::Read { path, .. } => writeln!(
            out,
            "  source read now from {} (it may have changed since the run)",
            crate::escape::terminal(path)
        )?,
        Source::Unavailable(why) => writeln!(
            out,
            "  source not shown ({}): line numbers only",
            crate::escape::terminal(why)
        )?,
    }
    if let (Some(t), true) = (&text_lines, last_traced as usize > 0) {
        if last_traced as usize > t.len() {
            writeln!(
                out,
                "  warning: allocations were traced at line {last_traced} but the source read has {} lines: it is not the file that ran",
                t.len()
            )?;
        }
    }
    let est = if is_sampled(a) { " (estimated)" } else { "" };
    writeln!(out)?;
    writeln!(
        out,
        "{:>7} {:>12} {:>10} {:>12} {:>10} {:>12}  Line Contents{est}",
        "Line #", "allocated", "allocs", "freed", "frees", "net"
    )?;
    writeln!(out, "{}", "=".repeat(84))?;
    let figures = |r: Option<&(u64, u64, u64, u64)>| match r {
        Some(&(ab, ac, fb, fc)) => format!(
            "{:>12} {:>10} {:>12} {:>10} {:>12}",
            style.size(ab).to_string(),
            ac,
            style.size(fb).to_string(),
            fc,
            style.delta(ab as i64 - fb as i64).to_string()
        ),
        None => " ".repeat(60),
    };
    if let Some(r) = rows.get(&0) {
        writeln!(out, "{:>7} {}  (line unknown)", "?", figures(Some(r)))?;
    }
    for n in first.max(1)..=last {
        let contents = text_lines
            .as_ref()
            .and_then(|t| t.get(n as usize - 1))
            .map(|l| source_line(l))
            .unwrap_or_default();
        let line = format!("{n:>7} {}  {contents}", figures(rows.get(&n)));
        writeln!(out, "{}", line.trim_end())?;
    }
    let (ab, fb) = rows
        .values()
        .fold((0u64, 0u64), |(a, f), r| (a + r.0, f + r.2));
    writeln!(out, "{}", "=".repeat(84))?;
    writeln!(
        out,
        "{:>7} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "total",
        style.size(ab).to_string(),
        "",
        style.size(fb).to_string(),
        "",
        style.delta(ab as i64 - fb as i64).to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(file: &str, line: u32, function: &str, a: u64, f: u64) -> LineTotals {
        LineTotals {
            file: file.into(),
            line,
            function: function.into(),
            allocated_bytes: a,
            allocated_count: 1,
            freed_bytes: f,
            freed_count: u64::from(f > 0),
        }
    }

    fn allocs(rows: Vec<LineTotals>) -> Allocations {
        let mut a = crate::alloc_text::fixture();
        a.totals_by_line = rows;
        a
    }

    #[test]
    fn paths_match_whole_components() {
        assert!(same_path("/srv/app/main.py", "main.py"));
        assert!(same_path("/srv/app/main.py", "app/main.py"));
        assert!(same_path("main.py", "/home/u/main.py"));
        assert!(same_path("./main.py", "main.py"));
        assert!(!same_path("/srv/app/domain.py", "main.py"));
        assert!(!same_path("/srv/app/main.py", ""));
    }

    #[test]
    fn selects_a_file_and_a_function_by_its_lines() {
        let a = allocs(vec![
            t("/srv/main.py", 12, "Loader.build", 100, 0),
            t("/srv/main.py", 15, "Loader.build", 50, 50),
            t("/srv/main.py", 30, "<module>", 10, 0),
            t("/srv/lib/main.py", 3, "f", 1, 0),
            t("/srv/a:b.py", 3, "g", 1, 0),
        ]);
        let s = select(&a, "/srv/main.py:build").unwrap();
        assert_eq!(
            s.function,
            Some(Function {
                name: "Loader.build".into(),
                first: 12,
                last: 15
            })
        );
        assert_eq!(select(&a, "/srv/main.py").unwrap().function, None);
        // A path holding `:` is a path first.
        assert_eq!(select(&a, "/srv/a:b.py").unwrap().file, "/srv/a:b.py");
        assert!(matches!(
            select(&a, "main.py"),
            Err(SelectError::Ambiguous { .. })
        ));
        assert!(matches!(
            select(&a, "nothere.py"),
            Err(SelectError::NoFile { .. })
        ));
        let e = select(&a, "/srv/main.py:nope").unwrap_err();
        assert!(e.to_string().contains("<module>, Loader.build"), "{e}");
    }

    #[test]
    fn a_function_spans_its_def_and_body_when_the_source_shows_them() {
        let src = [
            "class T:",
            "    def build(self):",
            "        x = []",
            "",
            "        # fill",
            "        x.append(1)",
            "        return x",
            "",
            "    async def build2(self): pass",
            "t = T().build()",
        ];
        let f = |name: &str, first, last| Function {
            name: name.into(),
            first,
            last,
        };
        assert_eq!(def_range(&src, &f("T.build", 3, 6)), Some((2, 7)));
        assert_eq!(def_range(&src, &f("T.build2", 9, 9)), Some((9, 9)));
        assert_eq!(def_range(&src, &f("<module>", 10, 10)), None);
        // Traced lines the body does not hold: another source.
        assert_eq!(def_range(&src, &f("T.build", 3, 10)), None);
        assert_eq!(def_range(&src, &f("build", 30, 30)), None);
    }

    #[test]
    fn blank_lines_without_figures_and_net_signed() {
        let a = allocs(vec![
            t("/srv/main.py", 2, "f", 3000, 1000),
            t("/srv/main.py", 4, "f", 10, 0),
        ]);
        let sel = select(&a, "main.py").unwrap();
        let mut out = Vec::new();
        let src = Source::Read {
            path: "main.py".into(),
            text: "def f():\n\tx = [0] * 300\n\n    y = b'\x1b[2J'\n".into(),
        };
        render(&a, &sel, &src, true, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        let l: Vec<&str> = s.lines().collect();
        let row = |n: &str| *l.iter().find(|x| x.trim_start().starts_with(n)).unwrap();
        // A line that allocated nothing: its figures blank, its source after them.
        assert_eq!(row("1 "), format!("      1 {}  def f():", " ".repeat(60)));
        assert!(
            row("2 ").contains("3000") && row("2 ").contains("+2000"),
            "{s}"
        );
        assert!(row("2 ").ends_with("          x = [0] * 300"), "{s}");
        assert_eq!(row("3").trim(), "3");
        assert!(
            row("4 ").contains("\\u{1b}[2J") && !s.contains('\x1b'),
            "{s}"
        );
        assert!(s.contains("(estimated)"), "{s}");
    }
}
