//! Every line memlens itself writes on stderr: `memlens: error: ...`, `memlens: hint: ...`,
//! the logger's `memlens: warn: ...` / `info` / `debug`, plain notes (`memlens: wrote FILE`)
//! and clap's usage errors. One place builds them, so that each is escaped the same way (control characters
//! and escape sequences shown as `\u{..}`: messages quote paths, commands and names that may
//! come from anyone) and none panics on a closed stderr (the line is lost, nothing more).

use std::io::Write;

use memlens_report::escape::terminal;

/// Writes one line, `memlens: ` then `text` (escaped), to stderr; a closed stderr is ignored.
fn line(kind: Option<&str>, text: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(format_line(kind, text).as_bytes());
}

fn format_line(kind: Option<&str>, text: &str) -> String {
    match kind {
        Some(kind) => format!("memlens: {kind}: {}\n", terminal(text)),
        None => format!("memlens: {}\n", terminal(text)),
    }
}

/// `memlens: error: TEXT`.
pub fn error(text: &str) {
    line(Some("error"), text);
}

/// `memlens: hint: TEXT`: what to do about the error before it.
pub fn hint(text: &str) {
    line(Some("hint"), text);
}

/// `memlens: TEXT`: what memlens is doing (`recording pid ...`, `wrote FILE`).
pub fn note(text: &str) {
    line(None, text);
}

/// `memlens: KIND: TEXT` for a kind of its own (the logger's levels: `warn`, `info`, ...).
pub fn message(kind: &str, text: &str) {
    line(Some(kind), text);
}

/// clap's own usage error (`error: unexpected argument ...`, usage, tip), escaped line by line:
/// it quotes the user's values.
pub fn usage(text: &str) {
    let escaped: Vec<String> = text.lines().map(terminal).collect();
    let _ = writeln!(std::io::stderr().lock(), "{}", escaped.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_escaped() {
        assert_eq!(
            format_line(Some("error"), "cannot write /tmp/\x1b[31mx\n"),
            "memlens: error: cannot write /tmp/\\u{1b}[31mx\\u{a}\n"
        );
        assert_eq!(format_line(None, "wrote a.db"), "memlens: wrote a.db\n");
    }
}
