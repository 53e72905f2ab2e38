//! What a census finds: objects by type, what could not be read, how it was made consistent.

use crate::error::{Error, Result};

pub use memlens_model::census::{Census, Consistency, Method, TypeCount, Unreadable};

/// The census fails when more than 1 object in this many could not be read (0.1%).
pub const MAX_UNREADABLE_PER: u64 = 1000;

/// Fails with [`Error::Incomplete`] when more than 0.1% of the objects `census` reached could
/// not be read.
pub fn check_complete(census: &Census, pid: u32) -> Result<()> {
    let reached = census.objects + census.unreadable.objects;
    if census.unreadable.objects * MAX_UNREADABLE_PER > reached {
        return Err(Error::Incomplete {
            pid,
            unreadable: census.unreadable.objects,
            reached,
            bytes: census.unreadable.bytes,
            limit: "0.1%",
        });
    }
    Ok(())
}
