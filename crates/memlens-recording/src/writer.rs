//! Writing a recording: one SQLite file in WAL mode, committed at least twice a second so a
//! SIGKILL of memlens or of the program loses at most the last half second; turned back into a
//! single self-contained file (rollback journal) when the recording finishes cleanly.

use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use rusqlite::{params, Connection, OpenFlags};

use memlens_model::sharing::{Sharing, SharingFigures};
use memlens_model::tree::by_category;
use memlens_model::{Amounts, TreeLedger};

use crate::destination::{self, Kind, Plan};
use crate::error::{Error, Result};
use crate::meta::{End, Meta, COMPLETE_KEY, SCHEMA_VERSION_KEY};
use crate::python::PythonSample;
use crate::schema;

/// The cheap counters of one process at one tick (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Resident set.
    pub rss: u64,
    /// Anonymous resident.
    pub anon: u64,
    /// File-backed resident.
    pub file: u64,
    /// Shared-memory resident.
    pub shmem: u64,
    /// Swapped out.
    pub swap: u64,
    /// The kernel's peak RSS of the process.
    pub vm_hwm: u64,
    /// Threads.
    pub threads: u32,
}

/// Identity of a process as first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// Start time in clock ticks after boot (tells a reused PID apart).
    pub start_ticks: u64,
    /// comm.
    pub name: String,
    /// Command line, arguments joined by spaces.
    pub cmdline: String,
}

/// An open recording being written.
pub struct RecordingWriter {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// The file as created (its inode tells it apart from anything put in its place).
    file: std::fs::File,
    /// The metadata as written.
    meta: Meta,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("path", &self.path)
            .finish()
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RecordingWriter {
    /// Creates a recording at `path` with the given metadata. Nothing memlens did not write is
    /// touched: `path` and its SQLite companions (`-wal`, `-shm`, `-journal`) must not exist
    /// (see [`crate::destination`]). The file is created with `O_EXCL|O_NOFOLLOW`, and SQLite
    /// opens every file with `O_NOFOLLOW`.
    pub fn create(path: &Path, meta: &Meta) -> Result<Self> {
        Self::create_at(path, meta, false)
    }

    /// As [`RecordingWriter::create`], but a recording memlens wrote at `path` (and its own
    /// companions) is replaced (`--force`); anything else there is still refused.
    pub fn create_replacing(path: &Path, meta: &Meta) -> Result<Self> {
        Self::create_at(path, meta, true)
    }

    fn create_at(path: &Path, meta: &Meta, replace: bool) -> Result<Self> {
        let plan = destination::check(path, Kind::Recording, replace)?;
        let companions = destination::check_companions(path, plan)?;
        if let Plan::Replace { dev, ino } = plan {
            for (p, dev, ino) in &companions {
                destination::remove_if_same(p, *dev, *ino)?;
            }
            destination::remove_if_same(path, dev, ino)?;
        }
        let file = destination::create_exclusive(path)?;
        let created = file.metadata().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (dev, ino) = (created.dev(), created.ino());
        Self::fill(path, file, dev, ino, meta).inspect_err(|_| {
            // The file is memlens's own: a recording that could not be set up is not left
            // (SQLite removed its `-wal` and `-shm` when the connection closed).
            let _ = destination::remove_if_same(path, dev, ino);
        })
    }

    /// Opens the file just created with SQLite and writes the schema and metadata.
    fn fill(path: &Path, file: std::fs::File, dev: u64, ino: u64, meta: &Meta) -> Result<Self> {
        let e = sql(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(&e)?;
        // SQLite opened the file by name: make sure it is the one just created.
        let opened = std::fs::symlink_metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if (opened.dev(), opened.ino()) != (dev, ino) {
            return Err(Error::Refused {
                path: path.to_path_buf(),
                why: "was replaced while memlens created it; nothing more was written".into(),
                force_helps: false,
            });
        }
        // An empty file turns into WAL mode through an in-memory journal (no `-journal` file,
        // no sync: nothing is worth syncing yet), and the schema is written without syncs.
        conn.pragma_update(None, "synchronous", "OFF").map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "MEMORY")
            .map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&e)?;
        conn.execute_batch("BEGIN").map_err(&e)?;
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .map_err(&e)?;
        conn.execute_batch(schema::CREATE).map_err(&e)?;
        let mut w = RecordingWriter {
            conn,
            path: path.to_path_buf(),
            file,
            meta: meta.clone(),
        };
        w.set_meta(
            SCHEMA_VERSION_KEY,
            Some(&schema::SCHEMA_VERSION.to_string()),
        )?;
        for (k, v) in meta.rows() {
            w.set_meta(k, v.as_deref())?;
        }
        // The schema and metadata are committed at once, so a crash at any later moment
        // leaves a recording that opens. From here on, NORMAL: a commit survives the death of
        // this process (the WAL is in the page cache); only a power loss can take back the
        // last commits.
        w.conn
            .execute_batch("COMMIT; PRAGMA synchronous = NORMAL; BEGIN")
            .map_err(&e)?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sql(&self.path)
    }

    /// The metadata as written so far.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Changes the metadata (what the recorder learns after the file was created: the root's
    /// PID, the exact start, why there is no cgroup) and writes the rows that changed.
    pub fn update_meta(&mut self, change: impl FnOnce(&mut Meta)) -> Result<()> {
        let mut meta = self.meta.clone();
        change(&mut meta);
        let old = self.meta.rows();
        for (k, v) in meta.rows() {
            if old.iter().any(|(ok, ov)| *ok == k && *ov == v) {
                continue;
            }
            self.set_meta(k, v.as_deref())?;
        }
        self.meta = meta;
        Ok(())
    }

    /// Writes a `meta` row (`None`: removes it). The keys are [`Meta`]'s and [`End`]'s only.
    fn set_meta(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(value) => self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![key, value])),
            None => self
                .conn
                .prepare_cached("DELETE FROM meta WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key])),
        }
        .map_err(self.err())?;
        Ok(())
    }

    /// Adds a process; returns its id in the recording.
    pub fn add_process(&mut self, p: &ProcessInfo, t: f64) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO processes (pid, ppid, start_ticks, name, cmdline, first_t, last_t) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    p.pid,
                    p.ppid,
                    to_i64(p.start_ticks),
                    p.name,
                    p.cmdline,
                    t
                ])
            })
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Updates what a process is (after an exec).
    pub fn rename_process(&mut self, id: i64, name: &str, cmdline: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE processes SET name = ?2, cmdline = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, name, cmdline]))
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a process's last figures: last time seen, peak RSS and PSS, exit time.
    pub fn close_process(
        &mut self,
        id: i64,
        last_t: f64,
        exit_t: Option<f64>,
        vm_hwm: u64,
        peak_pss: u64,
        ru_maxrss: Option<u64>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE processes SET last_t = ?2, exit_t = ?3, vm_hwm = ?4, peak_pss = ?5, \
                 ru_maxrss = ?6 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    last_t,
                    exit_t,
                    to_i64(vm_hwm),
                    to_i64(peak_pss),
                    ru_maxrss.map(to_i64)
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// One row of cheap counters.
    pub fn sample(&mut self, t: f64, id: i64, c: &Counters) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO samples (t, process, rss, anon, file, shmem, swap, vm_hwm, threads) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t,
                    id,
                    to_i64(c.rss),
                    to_i64(c.anon),
                    to_i64(c.file),
                    to_i64(c.shmem),
                    to_i64(c.swap),
                    to_i64(c.vm_hwm),
                    c.threads
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// One `smaps_rollup` read.
    pub fn pss(&mut self, t: f64, id: i64, a: &Amounts, cost_us: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO pss (t, process, pss, uss, rss, swap, cost_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t,
                    id,
                    to_i64(a.pss),
                    to_i64(a.uss),
                    to_i64(a.rss),
                    to_i64(a.swap),
                    to_i64(cost_us)
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// The tree at one tick.
    pub fn tick(
        &mut self,
        t: f64,
        rss: u64,
        pss: u64,
        processes: u32,
        cgroup_usage: Option<u64>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO ticks (t, rss, pss, processes, cgroup_usage) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t,
                    to_i64(rss),
                    to_i64(pss),
                    processes,
                    cgroup_usage.map(to_i64)
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// A full ledger of the tree, with its sums by category; its whole JSON only when
    /// `keep_json` (the JSON of a large tree is tens of KiB: kept for ledgers near the peak and
    /// once a minute, the category sums for every ledger).
    pub fn ledger(
        &mut self,
        t: f64,
        reason: &str,
        ledger: &TreeLedger,
        keep_json: bool,
    ) -> Result<i64> {
        let json =
            keep_json.then(|| serde_json::to_string(ledger).unwrap_or_else(|_| "null".into()));
        let tot = ledger.totals;
        self.conn
            .prepare_cached(
                "INSERT INTO ledgers (t, reason, rss, pss, uss, swap, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t,
                    reason,
                    to_i64(tot.rss),
                    to_i64(tot.pss),
                    to_i64(tot.uss),
                    to_i64(tot.swap),
                    json
                ])
            })
            .map_err(self.err())?;
        let id = self.conn.last_insert_rowid();
        let mappings = |c| {
            ledger
                .processes
                .iter()
                .filter_map(|p| p.row(c))
                .map(|r| r.mappings)
                .sum::<u64>()
        };
        for (cat, a) in by_category(&ledger.processes) {
            self.conn
                .prepare_cached(
                    "INSERT INTO ledger_rows (ledger, category, rss, pss, uss, swap, mappings) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        cat.name(),
                        to_i64(a.rss),
                        to_i64(a.pss),
                        to_i64(a.uss),
                        to_i64(a.swap),
                        to_i64(mappings(cat))
                    ])
                })
                .map_err(self.err())?;
        }
        Ok(id)
    }

    /// A Python view sample (and its census rows).
    pub fn python(&mut self, t: f64, id: i64, s: &PythonSample) -> Result<()> {
        let json = serde_json::to_string(s).unwrap_or_else(|_| "null".into());
        self.conn
            .prepare_cached("INSERT INTO python (t, process, json) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![t, id, json]))
            .map_err(self.err())?;
        for c in &s.census {
            self.conn
                .prepare_cached(
                    "INSERT INTO census (t, process, type, count, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| {
                    st.execute(params![t, id, c.type_name, to_i64(c.count), to_i64(c.bytes)])
                })
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// One measurement of a process's copy-on-write sharing with its parent (`id` and `parent`
    /// are rows of `processes`), taken from `t` for `duration_s`. A measurement that failed
    /// is written too, with its reason and no figures.
    pub fn sharing(
        &mut self,
        t: f64,
        id: i64,
        parent: i64,
        duration_s: f64,
        s: &Sharing,
    ) -> Result<()> {
        let f = s.figures.as_ref();
        let rows = f.map(|f| {
            let rows: Vec<serde_json::Value> = f
                .by_category
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "category": r.category.name(),
                        "shared_with_parent": r.shared_with_parent,
                        "copied": r.copied,
                        "own": r.own,
                    })
                })
                .collect();
            serde_json::Value::Array(rows).to_string()
        });
        let n = |g: fn(&SharingFigures) -> u64| f.map(|f| to_i64(g(f)));
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sharing (t, process, parent, duration_s, measured, reason, \
                 shared_with_parent, copied, own, zero_page, swapped, failed_reads, by_category) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    t,
                    id,
                    parent,
                    duration_s,
                    i64::from(s.measured && f.is_some()),
                    s.reason,
                    n(|f| f.shared_with_parent),
                    n(|f| f.copied),
                    n(|f| f.own),
                    n(|f| f.zero_page),
                    n(|f| f.swapped + f.parent_swapped),
                    n(|f| f.failed_reads),
                    rows
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// An event (process start/exit, signal forwarded, new peak, ...).
    pub fn event(&mut self, t: f64, kind: &str, process: Option<i64>, detail: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO events (t, kind, process, detail) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![t, kind, process, detail]))
            .map_err(self.err())?;
        Ok(())
    }

    /// Commits what was written since the last commit and opens the next transaction.
    pub fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT; BEGIN").map_err(self.err())
    }

    /// Closes and removes the recording this writer created, which should not exist after all
    /// (`run`: the program could not be started). Only that file is removed, and only while it
    /// is still the very file created (same device and inode: a file put in its place
    /// meanwhile is left alone); SQLite removes its own `-wal` and `-shm` when it closes.
    pub fn discard(self) {
        let (path, file) = (self.path, self.file);
        let _ = self.conn.close();
        if let Ok(m) = file.metadata() {
            let _ = destination::remove_if_same(&path, m.dev(), m.ino());
        }
    }

    /// Writes the [`End`] record, commits, marks the recording complete and leaves one self-contained file (rollback
    /// journal mode, no `-wal` beside it). SQLite's syncs are off for this last step, and the
    /// file is not synced at the end either: a sync costs milliseconds to tens of
    /// milliseconds on a busy disk, paid by every `run`. A crash of memlens at any point still
    /// leaves a file that opens (the page cache holds every write); a power loss before the
    /// kernel writes the file back (seconds) can lose or damage it, as for any unsynced file.
    pub fn finish(mut self, end: &End) -> Result<PathBuf> {
        for (k, v) in end.rows() {
            if v.is_some() {
                self.set_meta(k, v.as_deref())?;
            }
        }
        self.set_meta(COMPLETE_KEY, Some("1"))?;
        self.conn.execute_batch("COMMIT").map_err(self.err())?;
        self.conn
            .pragma_update(None, "synchronous", "OFF")
            .map_err(self.err())?;
        // Out of WAL mode without a rollback journal: the header change is the only write.
        self.conn
            .pragma_update(None, "journal_mode", "OFF")
            .map_err(self.err())?;
        let path = self.path.clone();
        self.conn.close().map_err(|(_, source)| Error::Sqlite {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memlens-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn discard_removes_only_the_file_it_created() {
        let d = dir("discard");
        let path = d.join("r.db");
        RecordingWriter::create(&path, &Meta::default())
            .unwrap()
            .discard();
        assert!(!path.exists(), "its own recording is removed");
        // A file put in the recording's place meanwhile is not memlens's: left alone.
        let w = RecordingWriter::create(&path, &Meta::default()).unwrap();
        let other = d.join("other");
        std::fs::write(&other, b"someone's data").unwrap();
        std::fs::rename(&other, &path).unwrap();
        w.discard();
        assert_eq!(std::fs::read(&path).unwrap(), b"someone's data");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
