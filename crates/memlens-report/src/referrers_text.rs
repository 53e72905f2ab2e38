//! The text of `memlens census PID --referrers TYPE`: how the walk was read, then one line per
//! chain (the path from a root to the instances it holds, positions grouped), by bytes.

use std::io::{Result, Write};

use memlens_model::referrers::{Method, Referrers};
use memlens_model::units::SizeStyle;

use crate::escape::terminal;

/// Writes the chains found in process `pid`; `bytes`: exact bytes instead of binary units.
pub fn render(
    r: &Referrers,
    pid: u32,
    version: &str,
    bytes: bool,
    w: &mut dyn Write,
) -> Result<()> {
    let size = |b: u64| SizeStyle::exact(bytes).size(b).to_string();
    let how = match r.method {
        Method::Nonblocking => {
            "read while it ran: INEXACT (objects may move while they are read)".to_string()
        }
        _ => format!(
            "read while stopped, target paused {:.1} ms",
            r.pause_us as f64 / 1e3
        ),
    };
    let name = terminal(&r.type_name);
    writeln!(
        w,
        "Process {pid} (Python {version}): who holds {name} ({how})"
    )?;
    writeln!(
        w,
        "{} instances, {} shallow (sum of sys.getsizeof; what they reference is not included), reached from {} roots through {} objects",
        r.instances,
        size(r.bytes),
        r.roots,
        r.objects_reached
    )?;
    if r.unreadable.objects > 0 {
        writeln!(
            w,
            "Unreadable: {} objects ({} of reads failed); instances behind them are not counted",
            r.unreadable.objects,
            size(r.unreadable.bytes)
        )?;
    }
    if r.frames_unread > 0 {
        writeln!(
            w,
            "{} frames' locals could not be read and are not roots",
            r.frames_unread
        )?;
    }
    if r.chains.is_empty() {
        writeln!(
            w,
            "No instance of {name} is reachable from a module global or a thread's local variable."
        )?;
        return Ok(());
    }
    writeln!(w)?;
    writeln!(w, "{:>10} {:>10}  shortest chain", "instances", "bytes")?;
    for c in &r.chains {
        writeln!(
            w,
            "{:>10} {:>10}  {}",
            c.instances,
            size(c.bytes),
            terminal(&c.render(&r.type_name))
        )?;
    }
    if r.chains_total > r.chains.len() as u64 {
        writeln!(
            w,
            "({} more chains; --top 0 shows all)",
            r.chains_total - r.chains.len() as u64
        )?;
    }
    Ok(())
}
