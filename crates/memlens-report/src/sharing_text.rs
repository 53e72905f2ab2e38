//! Terminal section of `snapshot --tree`: copy-on-write sharing of each worker with its
//! parent, per ledger category, and the tree's exclusive total (`memlens_model::sharing`).

use std::io::{self, Write};

use memlens_model::units::SizeStyle;
use memlens_model::TreeLedger;

/// Writes the section when the tree has sharing figures (or says why they are missing); writes
/// nothing for a snapshot without them, sizes in the report's style.
pub fn render(t: &TreeLedger, sizes: SizeStyle, mut w: impl Write) -> io::Result<()> {
    let workers: Vec<_> = t
        .processes
        .iter()
        .filter_map(|p| p.sharing.as_ref().map(|s| (p, s)))
        .collect();
    if workers.is_empty() && t.exclusive.is_none() {
        return Ok(());
    }
    writeln!(w)?;
    writeln!(
        w,
        "Copy-on-write (pages compared with the parent's, pagemap):"
    )?;
    for (p, s) in &workers {
        let Some(f) = &s.figures else {
            writeln!(
                w,
                "  pid {} (parent {}): not measured: {}",
                p.pid,
                s.parent,
                crate::escape::terminal(s.reason.as_deref().unwrap_or("unknown"))
            )?;
            continue;
        };
        write!(
            w,
            "  pid {} (parent {}): shared {}, copied {}, own {}",
            p.pid,
            s.parent,
            sizes.size(f.shared_with_parent),
            sizes.size(f.copied),
            sizes.size(f.own)
        )?;
        if f.zero_page > 0 {
            write!(
                w,
                "; {} of the kernel's zero page (read, never written: in no figure)",
                sizes.size(f.zero_page)
            )?;
        }
        if f.swapped > 0 || f.parent_swapped > 0 {
            write!(
                w,
                "; not classified: {} in swap, {} where the parent's page is in swap",
                sizes.size(f.swapped),
                sizes.size(f.parent_swapped)
            )?;
        }
        if f.failed_reads > 0 {
            write!(
                w,
                "; {} pagemap reads failed (their pages in no figure)",
                f.failed_reads
            )?;
        }
        writeln!(w)?;
        for r in f.by_category.iter().take(4) {
            writeln!(
                w,
                "    {:<18} shared {:>10}  copied {:>10}  own {:>10}",
                r.category.name(),
                sizes.size(r.shared_with_parent),
                sizes.size(r.copied),
                sizes.size(r.own)
            )?;
        }
    }
    if let Some(e) = &t.exclusive {
        match e.bytes {
            Some(b) => write!(
                w,
                "  exclusive to the tree (freed if the whole tree exits): {}",
                sizes.size(b)
            )?,
            None => write!(
                w,
                "  exclusive to the tree: not measured: {}",
                crate::escape::terminal(e.reason.as_deref().unwrap_or("unknown"))
            )?,
        }
        if e.failed_reads > 0 {
            write!(w, " ({} reads failed)", e.failed_reads)?;
        }
        writeln!(w)?;
    }
    Ok(())
}
