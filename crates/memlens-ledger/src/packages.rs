//! Memory per Python package (issue 7 item 4): the code objects, functions, classes and
//! modules, and the objects they hold, as the package-memory walk charged them to module names
//! and files ([`ModuleObjects`]; `memlens-cpython`'s `census/reach.rs`), attributed to the
//! package they come from, shown beside the package's extension modules (its item of the
//! `extensions` row). The `package-import` advice is computed from these.
//!
//! These are bytes of Python objects as `sys.getsizeof` counts them. They already lie in the
//! `python-heap` row (pymalloc's arenas) or, for objects over 512 bytes, in `native-heap`
//! (malloc): an attribution of memory the ledger already counts, never added to a total.
//!
//! Rules (the test target `package_memory.py` computes the same):
//! - a file (`co_filename`) is `stdlib` when it starts with `<frozen `, lies in `lib-dynload`
//!   or under the standard library's folder (that of `os.__file__`, else the parent of
//!   `encodings`'s); it belongs to a distribution when it lies under `site-packages` or
//!   `dist-packages` (its top-level folder, mapped to the distribution as extension modules
//!   are: [`DistributionResolver`]); anything else is the program;
//! - a module name is the program when it is `__main__` (or under it); otherwise the first of
//!   its prefixes (`a`, `a.b`, ... the name itself) that `sys.modules` holds with a `__file__`
//!   gives the file; a name whose prefixes have none borrows the `__file__` of a submodule in
//!   `sys.modules` (namespace packages); a name in `sys.modules` without any such file is
//!   `stdlib` (built-in modules, frozen ones before 3.11); a name not in `sys.modules` is
//!   `stdlib` when its top-level name is a module of the standard library's folder
//!   (`<folder>/<top>.py` or `<folder>/<top>/`: `_ast`'s classes name `ast`, which may not be
//!   imported); any other name (deleted from `sys.modules`, made up) and an object whose name
//!   is not a `str` are `unknown`.

use std::collections::HashMap;
use std::path::Path;

use memlens_cpython::census::{ModuleObjects, ObjectKinds, Origin};

use crate::category::Category;
use crate::distribution::{locate, DistributionResolver, PythonPath};
use crate::process::ProcessLedger;

pub use memlens_model::packages::{
    ExtensionModules, Package, PackageKind, PythonPackages, NOTE, PROGRAM, STDLIB, UNKNOWN,
};

/// Maps module names and files to packages.
struct Resolver<'a> {
    files: HashMap<&'a str, Option<&'a str>>,
    stdlib_dir: Option<String>,
    dists: &'a mut DistributionResolver,
    by_name: HashMap<String, (String, PackageKind)>,
    sys_modules: &'a [(String, Option<String>)],
    /// Where the target's files are seen (`/proc/PID/root`).
    root: &'a Path,
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
}

impl<'a> Resolver<'a> {
    fn new(m: &'a ModuleObjects, dists: &'a mut DistributionResolver, root: &'a Path) -> Self {
        let files: HashMap<&str, Option<&str>> = m
            .sys_modules
            .iter()
            .map(|(n, f)| (n.as_str(), f.as_deref()))
            .collect();
        let stdlib_dir = match (files.get("os"), files.get("encodings")) {
            (Some(Some(os)), _) => parent(os).map(str::to_string),
            (_, Some(Some(enc))) => parent(enc).and_then(parent).map(str::to_string),
            _ => None,
        };
        Resolver {
            files,
            stdlib_dir,
            dists,
            by_name: HashMap::new(),
            sys_modules: &m.sys_modules,
            root,
        }
    }

    fn file(&mut self, path: &str) -> (String, PackageKind) {
        if path.starts_with("<frozen ") {
            return (STDLIB.into(), PackageKind::Stdlib);
        }
        match locate(path.as_bytes()) {
            Some(PythonPath::LibDynload) => return (STDLIB.into(), PackageKind::Stdlib),
            Some(PythonPath::SitePackages { .. }) => {
                if let Some(d) = self.dists.item_for(path.as_bytes()) {
                    return (d, PackageKind::Distribution);
                }
            }
            None => {}
        }
        let in_stdlib = self.stdlib_dir.as_deref().is_some_and(|d| {
            path.strip_prefix(d)
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if in_stdlib {
            (STDLIB.into(), PackageKind::Stdlib)
        } else {
            (PROGRAM.into(), PackageKind::Program)
        }
    }

    /// Whether the standard library's folder holds a module `top` (`top.py` or `top/`).
    fn stdlib_has(&self, top: &str) -> bool {
        let Some(dir) = &self.stdlib_dir else {
            return false;
        };
        if top.is_empty() || top.contains('/') || top.starts_with('.') {
            return false;
        }
        let base = self.root.join(dir.trim_start_matches('/'));
        base.join(format!("{top}.py")).is_file() || base.join(top).is_dir()
    }

    fn module(&mut self, name: &str) -> (String, PackageKind) {
        if let Some(p) = self.by_name.get(name) {
            return p.clone();
        }
        let p = self.module_uncached(name);
        self.by_name.insert(name.to_string(), p.clone());
        p
    }

    fn module_uncached(&mut self, name: &str) -> (String, PackageKind) {
        if name == "__main__" || name.starts_with("__main__.") {
            return (PROGRAM.into(), PackageKind::Program);
        }
        let mut ends: Vec<usize> = name.match_indices('.').map(|(i, _)| i).collect();
        ends.push(name.len());
        for end in ends {
            if let Some(Some(file)) = self.files.get(&name[..end]) {
                return self.file(file);
            }
        }
        if !self.files.contains_key(name) {
            let top = name.split('.').next().unwrap_or(name);
            return if self.stdlib_has(top) {
                (STDLIB.into(), PackageKind::Stdlib)
            } else {
                (UNKNOWN.into(), PackageKind::Unknown)
            };
        }
        // a namespace package: the file of a submodule
        let below = format!("{name}.");
        let sub = self
            .sys_modules
            .iter()
            .filter(|(n, f)| n.starts_with(&below) && f.is_some())
            .min_by(|a, b| a.0.cmp(&b.0))
            .and_then(|(_, f)| f.as_deref());
        match sub {
            Some(file) => self.file(file),
            None => (STDLIB.into(), PackageKind::Stdlib),
        }
    }
}

/// The packages of `m`, most object bytes first, each with its extension modules from the
/// `extensions` row of `ledger` (by distribution name; `stdlib (lib-dynload)` for `stdlib`).
/// Files of the target are read through `root` (`/proc/PID/root`).
pub fn attribute(
    m: &ModuleObjects,
    ledger: &ProcessLedger,
    dists: &mut DistributionResolver,
    root: &Path,
) -> Vec<Package> {
    let mut r = Resolver::new(m, dists, root);
    let mut by: HashMap<(String, PackageKind), ObjectKinds> = HashMap::new();
    for (origin, kinds) in &m.origins {
        let key = match origin {
            Origin::File(f) => r.file(f),
            Origin::Module(n) => r.module(n),
            Origin::Unnamed => (UNKNOWN.into(), PackageKind::Unknown),
        };
        by.entry(key).or_default().merge(kinds);
    }
    if m.overflow.count() > 0 {
        by.entry((UNKNOWN.into(), PackageKind::Unknown))
            .or_default()
            .merge(&m.overflow);
    }
    let extensions = ledger.row(Category::Extensions);
    let mut out: Vec<Package> = by
        .into_iter()
        .map(|((name, kind), by_kind)| {
            let item = match kind {
                PackageKind::Stdlib => "stdlib (lib-dynload)",
                PackageKind::Distribution => name.as_str(),
                _ => "",
            };
            let extension = extensions
                .and_then(|row| {
                    row.items
                        .iter()
                        .find(|i| !item.is_empty() && i.name == item)
                })
                .map(|i| ExtensionModules {
                    amounts: i.amounts,
                    size: i.size,
                    mappings: i.mappings,
                });
            Package {
                object_bytes: by_kind.bytes(),
                objects: by_kind.count(),
                name,
                kind,
                by_kind,
                extension,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.object_bytes
            .cmp(&a.object_bytes)
            .then(a.name.cmp(&b.name))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Amounts;
    use memlens_cpython::census::Tally;

    fn kinds(code: u64, functions: u64) -> ObjectKinds {
        ObjectKinds {
            code: Tally {
                count: 1,
                bytes: code,
            },
            functions: Tally {
                count: 1,
                bytes: functions,
            },
            ..Default::default()
        }
    }

    fn ledger() -> ProcessLedger {
        ProcessLedger {
            pid: 1,
            ppid: 0,
            name: "python3".into(),
            cmdline: String::new(),
            python: None,
            threads: 1,
            vm_hwm: 0,
            totals: Amounts::default(),
            size: 0,
            ledger: Vec::new(),
            thread_stacks: Default::default(),
            sharing: None,
        }
    }

    #[test]
    fn names_and_files_map_to_packages() {
        let sp = "/v/lib/python3.11/site-packages";
        let m = ModuleObjects {
            origins: vec![
                (Origin::File(format!("{sp}/pkg/a.py")), kinds(100, 0)),
                (Origin::Module("pkg.sub".into()), kinds(0, 10)),
                (Origin::Module("ns.inner".into()), kinds(0, 1)),
                (Origin::Module("ns".into()), kinds(0, 2)),
                (Origin::File("<frozen os>".into()), kinds(5, 0)),
                (
                    Origin::File("/p/lib/python3.11/json/x.py".into()),
                    kinds(7, 0),
                ),
                (Origin::Module("sys".into()), kinds(0, 3)),
                (Origin::Module("__main__".into()), kinds(0, 4)),
                (Origin::File("/home/me/app.py".into()), kinds(8, 0)),
                (Origin::Module("gone".into()), kinds(0, 6)),
                (Origin::Unnamed, kinds(0, 9)),
            ],
            sys_modules: vec![
                ("os".into(), Some("/p/lib/python3.11/os.py".into())),
                ("sys".into(), None),
                ("pkg".into(), Some(format!("{sp}/pkg/__init__.py"))),
                ("pkg.sub".into(), Some(format!("{sp}/pkg/sub.py"))),
                ("ns".into(), None),
                ("ns.inner".into(), Some(format!("{sp}/ns/inner.py"))),
            ],
            ..Default::default()
        };
        let mut d = DistributionResolver::new("/nonexistent");
        let got: Vec<(String, PackageKind, u64)> =
            attribute(&m, &ledger(), &mut d, Path::new("/nonexistent"))
                .into_iter()
                .map(|p| (p.name, p.kind, p.object_bytes))
                .collect();
        assert_eq!(
            got,
            vec![
                ("pkg".into(), PackageKind::Distribution, 110),
                (UNKNOWN.into(), PackageKind::Unknown, 15),
                (STDLIB.into(), PackageKind::Stdlib, 15),
                (PROGRAM.into(), PackageKind::Program, 12),
                ("ns".into(), PackageKind::Distribution, 3),
            ]
        );
    }
}
