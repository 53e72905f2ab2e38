//! The Python view in the text of `memlens snapshot`: a few lines per process that has one
//! (GC, pymalloc, modules) and, with `--packages`, its Python objects by package.

use std::io::{Result, Write};

use memlens_model::packages::PythonPackages;
use memlens_model::units::SizeStyle;
use memlens_model::TreeLedger;

use crate::escape::terminal;

/// Options of the Python-view text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Exact bytes instead of binary units.
    pub bytes: bool,
}

impl Options {
    fn size(&self, b: u64) -> String {
        SizeStyle::exact(self.bytes).size(b).to_string()
    }
}

/// Packages shown in the text of `snapshot --packages` (all are in the JSON).
const PACKAGES_SHOWN: usize = 20;

/// A few lines per process with a Python view (after the ledger in `snapshot`'s text).
pub fn render_views(ledger: &TreeLedger, opts: &Options, w: &mut dyn Write) -> Result<()> {
    for p in &ledger.processes {
        let Some(py) = &p.python else { continue };
        if py.gc.is_none() && py.pymalloc.is_none() && py.modules.is_none() && py.packages.is_none()
        {
            continue;
        }
        writeln!(
            w,
            "\nPython view of PID {} (Python {}){}",
            p.pid,
            py.version.as_deref().unwrap_or("?"),
            if py.inexact {
                ", read without stopping it: figures may be inexact"
            } else {
                ""
            }
        )?;
        if let Some(gc) = &py.gc {
            let gens: Vec<String> = gc
                .generations
                .iter()
                .map(|g| format!("{}/{}", g.count, g.threshold))
                .collect();
            let collections: Vec<String> = gc
                .generations
                .iter()
                .map(|g| g.collections.to_string())
                .collect();
            writeln!(
                w,
                "  gc: count/threshold {}, collections {}, frozen {}{}",
                gens.join(" "),
                collections.join(" "),
                gc.frozen,
                if gc.collecting {
                    ", collecting now"
                } else {
                    ""
                }
            )?;
        }
        if let Some(pm) = &py.pymalloc {
            writeln!(
                w,
                "  pymalloc: {} arenas, {} pools, {} in used blocks, {} free",
                pm.arenas,
                pm.pools,
                opts.size(pm.used_bytes),
                opts.size(pm.free_bytes)
            )?;
        }
        if let Some(m) = &py.modules {
            writeln!(w, "  modules: {} in sys.modules", m.count)?;
        }
        if let Some(pk) = &py.packages {
            render_packages(pk, opts, w)?;
        }
    }
    Ok(())
}

/// The `--packages` table: each package's Python objects beside its extension modules.
fn render_packages(pk: &PythonPackages, opts: &Options, w: &mut dyn Write) -> Result<()> {
    let size = |b: u64| opts.size(b);
    writeln!(
        w,
        "  Python objects by package: {} in {} packages (sys.getsizeof of code objects, \
         functions, classes, modules and their dicts, and of what they hold: each object once, \
         to the first module in import order that holds it)",
        size(pk.object_bytes),
        pk.packages.len()
    )?;
    writeln!(
        w,
        "  these bytes are already inside the python-heap and native-heap rows: an \
         attribution, not added to any total"
    )?;
    if pk.unreadable_objects > 0 || pk.unreadable_names > 0 {
        writeln!(
            w,
            "  {} objects could not be read (in no package), {} names could not be read (in (unknown))",
            pk.unreadable_objects, pk.unreadable_names
        )?;
    }
    writeln!(
        w,
        "    {:<28} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {:>10}",
        "package", "objects", "count", "code", "functions", "classes", "modules", "held", ".so PSS"
    )?;
    for p in pk.packages.iter().take(PACKAGES_SHOWN) {
        let mut name = terminal(&p.name);
        if name.chars().count() > 28 {
            name = name.chars().take(27).chain(['…']).collect();
        }
        writeln!(
            w,
            "    {:<28} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {:>10}",
            name,
            size(p.object_bytes),
            p.objects,
            size(p.by_kind.code.bytes),
            size(p.by_kind.functions.bytes),
            size(p.by_kind.classes.bytes),
            size(p.by_kind.modules.bytes),
            size(p.by_kind.held.bytes),
            p.extension
                .map_or_else(|| "-".to_string(), |e| size(e.amounts.pss))
        )?;
    }
    if pk.packages.len() > PACKAGES_SHOWN {
        writeln!(
            w,
            "    … {} more (all in --json)",
            pk.packages.len() - PACKAGES_SHOWN
        )?;
    }
    Ok(())
}
