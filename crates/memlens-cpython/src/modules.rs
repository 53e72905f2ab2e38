//! `sys.modules`: count and names.

use memlens_remote::ProcessMemory;

use crate::dicts::read_dict;
use crate::error::Result;
use crate::objects::{read_str, MAX_NAME};
use crate::process::Interpreter;

pub use memlens_model::python::Modules;

/// Reads `sys.modules`.
pub fn read<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Modules> {
    it.layout.require_tables("sys.modules")?;
    let l = it.layout;
    let dict = mem.read_u64(it.interp.wrapping_add(l.interp_modules))?;
    if dict == 0 {
        return Ok(Modules {
            count: 0,
            names: Vec::new(),
        });
    }
    let count = mem.read_i64(dict.wrapping_add(l.dict_used))?.max(0) as u64;
    let contents = read_dict(mem, l, dict)?;
    let mut names: Vec<String> = contents
        .items
        .iter()
        .filter_map(|(k, _)| read_str(mem, l, *k, MAX_NAME).ok())
        .collect();
    names.sort();
    Ok(Modules { count, names })
}
