//! glibc's malloc arenas other than the main one, as walked from outside (docs/advice.md,
//! `malloc-arenas`), and the advice computed from them.

use crate::advice::Advice;
use crate::units::SizeStyle;

/// The non-main arenas of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MallocArenas {
    /// Each arena whose heaps were all walked.
    pub arenas: Vec<ArenaFigures>,
    /// Heaps that looked like glibc heaps but could not be walked (a failed read, or a shape
    /// that is not glibc's); their arenas are left out of `arenas`.
    pub unread_heaps: u64,
}

/// One arena's heaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaFigures {
    /// Heaps (mmaps of at most 64 MiB).
    pub heaps: u64,
    /// Bytes in allocated chunks.
    pub used: u64,
    /// Bytes in free chunks (the top chunk included).
    pub free: u64,
    /// Free bytes that are resident: at most the heaps' RSS less `used`.
    pub free_resident: u64,
}

impl MallocArenas {
    /// The resident free bytes of all arenas but the two with the most: what two arenas
    /// shared by the threads (`MALLOC_ARENA_MAX=2`: the main arena and one other) would not
    /// keep, each thread reusing what the others freed. The main arena's own free bytes are
    /// not known (not walked): they are not counted.
    pub fn saving(&self) -> u64 {
        let mut free: Vec<u64> = self.arenas.iter().map(|a| a.free_resident).collect();
        free.sort_unstable_by(|a, b| b.cmp(a));
        free.iter().skip(2).sum()
    }
}

/// `malloc-arenas`: free memory spread over several arenas.
pub(crate) fn advise(pid: u32, a: &MallocArenas, sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "a walk of every chunk of the glibc heaps of the arenas other than \
the main one: per arena, the free chunks' bytes (the top chunk included), at most the heaps' \
RSS less the allocated chunks' bytes; summed over the arenas less the two arenas with the most \
free (what the two arenas of MALLOC_ARENA_MAX=2 would keep); chunks in fast bins and thread \
caches count as allocated";
    if a.arenas.len() < 3 {
        return;
    }
    let saving = a.saving();
    let free: u64 = a.arenas.iter().map(|x| x.free_resident).sum();
    let used: u64 = a.arenas.iter().map(|x| x.used).sum();
    let text = format!(
        "{} glibc malloc arenas besides the main one (a thread's first malloc gives it an \
         arena of its own, up to 8 per core) hold {} allocated and {} free but resident: memory \
         one thread freed that threads of other arenas cannot reuse. Setting \
         MALLOC_ARENA_MAX=2 in the program's environment before it starts would return about \
         {}{}",
        a.arenas.len(),
        sz.size(used),
        sz.size(free),
        sz.size(saving),
        if a.unread_heaps > 0 {
            format!(
                " ({} heaps that could not be walked left out)",
                a.unread_heaps
            )
        } else {
            String::new()
        }
    );
    out.push(crate::advice::item(
        pid,
        "malloc-arenas",
        "glibc malloc arenas",
        saving,
        METHOD,
        text,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(free_resident: u64) -> ArenaFigures {
        ArenaFigures {
            heaps: 1,
            used: 1 << 20,
            free: free_resident,
            free_resident,
        }
    }

    #[test]
    fn the_saving_leaves_the_two_arenas_with_the_most_free() {
        let a = MallocArenas {
            arenas: vec![
                arena(15 << 20),
                arena(16 << 20),
                arena(14 << 20),
                arena(13 << 20),
            ],
            unread_heaps: 0,
        };
        assert_eq!(a.saving(), 27 << 20);
        let mut out = Vec::new();
        advise(7, &a, SizeStyle::Binary, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "malloc-arenas");
        assert_eq!(out[0].saving_bytes, 27 << 20);
        // two arenas: MALLOC_ARENA_MAX=2 keeps as many
        let one = MallocArenas {
            arenas: vec![arena(15 << 20), arena(15 << 20)],
            unread_heaps: 0,
        };
        let mut out = Vec::new();
        advise(7, &one, SizeStyle::Binary, &mut out);
        assert!(out.is_empty());
        assert_eq!(MallocArenas::default().saving(), 0);
    }
}
