//! `memlens census PID --referrers TYPE`: who holds the instances of a type.

use std::io::Write;
use std::process::ExitCode;

use memlens_cpython::{ReadMode, Session};
use memlens_model::referrers::Referrers;
use serde::Serialize;

use crate::exit::{CliError, CliResult, Code};
use crate::output::{print_json, write_error, Global};
use crate::python_view::cli_error;

/// `--json`: the process, its Python and what the walk found.
#[derive(Serialize)]
struct Report<'a> {
    pid: u32,
    python: Python,
    referrers: &'a Referrers,
    /// Only when the target ran during the walk.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inexact: bool,
}

#[derive(Serialize)]
struct Python {
    version: String,
}

/// Runs `census --referrers NAME`.
pub fn run(
    session: &Session,
    args: &super::census::Args,
    name: &str,
    mode: ReadMode,
    global: &Global,
) -> CliResult<ExitCode> {
    let pid = args.pid;
    if name.is_empty()
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains(char::is_whitespace)
    {
        return Err(CliError::new(
            Code::Usage,
            format!(
                "`{}` is not a type name (`Item`, or `module.Item`)",
                name.escape_debug()
            ),
        ));
    }
    let r = session
        .referrers(mode, args.max_memory, name, args.top)
        .map_err(|e| {
            let memory = e.is_memory_cap();
            let err = cli_error(pid, e);
            if memory {
                err.with_hint(
                    "the walk needs more memory than --max-memory allows; raise it (e.g. --max-memory 1GiB)",
                )
            } else {
                err
            }
        })?;
    if !r.type_known {
        return Err(CliError::new(
            Code::Usage,
            format!(
                "no type named `{}` in process {pid}: neither a class reachable from its modules nor the type of an object reachable from them",
                memlens_report::escape::terminal(name)
            ),
        )
        .with_hint("the name is type(o).__name__ (e.g. `Item`) or module.qualname (e.g. `leaky.Item`), case-sensitive; `memlens census PID --top 0` lists every type name"));
    }
    let version = session.interpreter.version.to_string();
    if args.json {
        print_json(&Report {
            pid,
            python: Python { version },
            referrers: &r,
            inexact: matches!(mode, ReadMode::Nonblocking),
        })?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        memlens_report::referrers_text::render(&r, pid, &version, global.bytes, &mut out)
            .and_then(|()| out.flush())
            .map_err(write_error)?;
    }
    Ok(ExitCode::SUCCESS)
}
