//! Reading a recording back, with a clear error for files that are missing, not recordings,
//! truncated or corrupt. Never panics on a bad file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use memlens_model::Amounts;

use crate::error::{Error, Result};
use crate::meta::{End, Meta, COMPLETE_KEY, SCHEMA_VERSION_KEY};
use crate::python::PythonSample;
use crate::schema::SCHEMA_VERSION;

/// A process as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    /// Id in the recording.
    pub id: i64,
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// comm (untrusted).
    pub name: String,
    /// Command line (untrusted).
    pub cmdline: String,
    /// First seen (s).
    pub first_t: f64,
    /// Last seen alive (s).
    pub last_t: f64,
    /// When it was seen gone, if it exited during the recording.
    pub exit_t: Option<f64>,
    /// The kernel's peak RSS (VmHWM), last read or from the reaper.
    pub vm_hwm: u64,
    /// Highest PSS read.
    pub peak_pss: u64,
    /// `ru_maxrss` from `wait4` when memlens reaped it.
    pub ru_maxrss: Option<u64>,
}

/// The tree at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRow {
    /// Time (s).
    pub t: f64,
    /// Sum of RSS.
    pub rss: u64,
    /// Sum of PSS (each process's PSS scaled by its RSS since its last `smaps_rollup` read).
    pub pss: u64,
    /// Live processes.
    pub processes: u32,
    /// Charge of the tree's memory cgroup, when memlens made one.
    pub cgroup_usage: Option<u64>,
}

/// One process's cheap counters at one tick (rows are only written when a figure changed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRow {
    /// Time (s).
    pub t: f64,
    /// Process id in the recording.
    pub process: i64,
    /// The counters, as the sampler wrote them.
    pub counters: crate::writer::Counters,
}

/// One `smaps_rollup` read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PssRow {
    /// Time (s).
    pub t: f64,
    /// Process id in the recording.
    pub process: i64,
    /// Amounts read.
    pub amounts: Amounts,
    /// What the read cost (µs of CPU).
    pub cost_us: u64,
}

/// A full ledger taken during the recording (its JSON is read on demand).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// Id.
    pub id: i64,
    /// Time (s).
    pub t: f64,
    /// Why it was taken (`interval`, `peak`, `first`).
    pub reason: String,
    /// Tree totals.
    pub totals: Amounts,
    /// Sums by category name, largest PSS first.
    pub categories: Vec<(String, Amounts)>,
    /// Whether its whole JSON was kept.
    pub has_json: bool,
}

/// A Python view sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonRow {
    /// Time (s).
    pub t: f64,
    /// Process id in the recording.
    pub process: i64,
    /// The sample.
    pub sample: PythonSample,
}

/// One measurement of a process's copy-on-write sharing with its parent (schema version 2).
#[derive(Debug, Clone, PartialEq)]
pub struct SharingRow {
    /// When the measurement started (s).
    pub t: f64,
    /// How long it took (s, wall clock).
    pub duration_s: f64,
    /// Process id in the recording.
    pub process: i64,
    /// Its parent's process id in the recording.
    pub parent: i64,
    /// The figures, or why there are none.
    pub figures: std::result::Result<SharingSample, String>,
}

/// The figures of one sharing measurement (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharingSample {
    /// Still shared with the parent.
    pub shared_with_parent: u64,
    /// Copied since the fork.
    pub copied: u64,
    /// Its own.
    pub own: u64,
    /// Mapping the kernel's zero page (in no other figure).
    pub zero_page: u64,
    /// In swap (its own or its parent's page): not classified.
    pub swapped: u64,
    /// Failed pagemap reads.
    pub failed_reads: u64,
    /// Per category: (name, shared, copied, own).
    pub by_category: Vec<(String, u64, u64, u64)>,
}

/// An event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Time (s).
    pub t: f64,
    /// Kind (`start`, `exit`, `signal`, ...).
    pub kind: String,
    /// Process id in the recording.
    pub process: Option<i64>,
    /// Detail (untrusted when it quotes the target).
    pub detail: String,
}

/// A recording read back.
pub struct Recording {
    /// The file.
    pub path: PathBuf,
    /// The metadata from the recording's start.
    pub meta: Meta,
    /// What the writer added when it finished (empty when it was cut off).
    pub end: End,
    /// Whether the writer finished cleanly.
    complete: bool,
    /// Processes in order of appearance.
    pub processes: Vec<ProcessRow>,
    /// The tree per tick, by time.
    pub ticks: Vec<TickRow>,
    /// Per-process counters, by process then time.
    pub samples: Vec<SampleRow>,
    /// PSS reads, by process then time.
    pub pss: Vec<PssRow>,
    /// Full ledgers, by time.
    pub ledgers: Vec<LedgerRow>,
    /// Python view samples, by time.
    pub python: Vec<PythonRow>,
    /// Events, by time.
    pub events: Vec<EventRow>,
    /// Copy-on-write sharing measurements, by process then time (none in a version 1 file).
    pub sharing: Vec<SharingRow>,
    /// The file's schema version.
    pub schema_version: i64,
    pub(crate) conn: Connection,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("processes", &self.processes.len())
            .field("ticks", &self.ticks.len())
            .finish()
    }
}

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A main file shorter than its header says, whose write-ahead log may hold the rest.
#[derive(Debug, Clone, Copy)]
struct ShortFile {
    actual: u64,
    expected: u64,
}

/// Checks the file before SQLite sees it: exists, is SQLite, is not shorter than its header
/// says. A recording cut off by a full disk or a crash keeps its data in `FILE-wal` while the
/// main file may be empty or shorter than its header says (a checkpoint that could not finish):
/// when a non-empty `-wal` lies beside it, SQLite decides, and `Ok(Some(..))` remembers the
/// shortfall for the error if SQLite cannot read it either.
fn check_header(path: &Path) -> Result<Option<ShortFile>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(Error::NotARecording {
            path: path.to_path_buf(),
            why: "not a regular file".into(),
        });
    }
    let has_wal = std::fs::symlink_metadata(crate::destination::with_suffix(
        path,
        crate::destination::WAL,
    ))
    .is_ok_and(|m| m.file_type().is_file() && m.len() > 0);
    let mut head = [0u8; 100];
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(io(e)),
        }
    }
    if n == 0 && has_wal {
        return Ok(Some(ShortFile {
            actual: 0,
            expected: 0,
        }));
    }
    if n == 0 {
        return Err(Error::NotARecording {
            path: path.to_path_buf(),
            why: "the file is empty".into(),
        });
    }
    if n < head.len() || &head[..16] != MAGIC {
        return Err(Error::NotARecording {
            path: path.to_path_buf(),
            why: "not an SQLite database".into(),
        });
    }
    let be32 = |o: usize| u32::from_be_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        p => u64::from(p),
    };
    // The in-header page count is valid only when "version-valid-for" matches the change counter.
    if be32(92) == be32(24) {
        let expected = u64::from(be32(28)) * page_size;
        if expected > meta.len() {
            let short = ShortFile {
                actual: meta.len(),
                expected,
            };
            if has_wal {
                return Ok(Some(short));
            }
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                actual: short.actual,
                expected: short.expected,
            });
        }
    }
    Ok(None)
}

fn classify(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
        Some(ErrorCode::NotADatabase) => Error::NotARecording {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
        _ => Error::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

impl Recording {
    /// Opens and reads a recording. A recording whose writer was killed is recovered from its
    /// write-ahead log (which needs write access to its directory; read-only otherwise).
    pub fn open(path: &Path) -> Result<Recording> {
        let short = check_header(path)?;
        Self::read(path).map_err(|err| match (short, err) {
            // SQLite could not make up the shortfall from the log either.
            (Some(s), Error::Corrupt { .. } | Error::NotARecording { .. }) if s.expected > 0 => {
                Error::Truncated {
                    path: path.to_path_buf(),
                    actual: s.actual,
                    expected: s.expected,
                }
            }
            (_, err) => err,
        })
    }

    fn read(path: &Path) -> Result<Recording> {
        let (conn, rows) = connect(path)?;
        let processes = query(&conn, path,
            "SELECT id, pid, ppid, name, cmdline, first_t, last_t, exit_t, vm_hwm, peak_pss, ru_maxrss FROM processes ORDER BY id",
            |r| Ok(ProcessRow {
                id: r.get(0)?,
                pid: r.get(1)?,
                ppid: r.get(2)?,
                name: r.get(3)?,
                cmdline: r.get(4)?,
                first_t: r.get(5)?,
                last_t: r.get(6)?,
                exit_t: r.get(7)?,
                vm_hwm: u(r.get(8)?),
                peak_pss: u(r.get(9)?),
                ru_maxrss: r.get::<_, Option<i64>>(10)?.map(u),
            }))?;
        let ticks = query(
            &conn,
            path,
            "SELECT t, rss, pss, processes, cgroup_usage FROM ticks ORDER BY t",
            |r| {
                Ok(TickRow {
                    t: r.get(0)?,
                    rss: u(r.get(1)?),
                    pss: u(r.get(2)?),
                    processes: r.get(3)?,
                    cgroup_usage: r.get::<_, Option<i64>>(4)?.map(u),
                })
            },
        )?;
        let samples = query(&conn, path,
            "SELECT t, process, rss, anon, file, shmem, swap, vm_hwm, threads FROM samples ORDER BY process, t",
            |r| Ok(SampleRow {
                t: r.get(0)?,
                process: r.get(1)?,
                counters: crate::writer::Counters {
                    rss: u(r.get(2)?),
                    anon: u(r.get(3)?),
                    file: u(r.get(4)?),
                    shmem: u(r.get(5)?),
                    swap: u(r.get(6)?),
                    vm_hwm: u(r.get(7)?),
                    threads: r.get(8)?,
                },
            }))?;
        let pss = query(
            &conn,
            path,
            "SELECT t, process, pss, uss, rss, swap, cost_us FROM pss ORDER BY process, t",
            |r| {
                Ok(PssRow {
                    t: r.get(0)?,
                    process: r.get(1)?,
                    amounts: Amounts {
                        pss: u(r.get(2)?),
                        uss: u(r.get(3)?),
                        rss: u(r.get(4)?),
                        swap: u(r.get(5)?),
                    },
                    cost_us: u(r.get(6)?),
                })
            },
        )?;
        let ledgers = read_ledgers(&conn, path)?;
        let (python, events) = read_python_and_events(&conn, path)?;
        let schema_version = rows
            .get(SCHEMA_VERSION_KEY)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(1);
        let sharing = if schema_version >= 2 {
            read_sharing(&conn, path)?
        } else {
            Vec::new()
        };
        Ok(Recording {
            path: path.to_path_buf(),
            meta: Meta::from_rows(&rows),
            end: End::from_rows(&rows),
            complete: rows.get(COMPLETE_KEY).is_some_and(|v| v == "1"),
            processes,
            ticks,
            samples,
            pss,
            ledgers,
            python,
            events,
            sharing,
            schema_version,
            conn,
        })
    }

    /// The JSON of a ledger (the `TreeLedger` as `memlens snapshot --json` prints it).
    pub fn ledger_json(&self, id: i64) -> Result<serde_json::Value> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT json FROM ledgers WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        let Some(text) = text else {
            return Ok(serde_json::Value::Null);
        };
        serde_json::from_str(&text).map_err(|err| Error::Corrupt {
            path: self.path.clone(),
            why: format!("ledger {id} is not valid JSON: {err}"),
        })
    }

    /// Whether the writer finished cleanly (`false` when memlens was killed mid-recording).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The last time anything was recorded (s).
    pub fn last_t(&self) -> f64 {
        self.end
            .end_t
            .or_else(|| self.ticks.last().map(|t| t.t))
            .unwrap_or(0.0)
    }

    /// The counters of one process, by time.
    pub fn samples_of(&self, process: i64) -> &[SampleRow] {
        let start = self.samples.partition_point(|s| s.process < process);
        let end = self.samples.partition_point(|s| s.process <= process);
        &self.samples[start..end]
    }

    /// The PSS reads of one process, by time.
    pub fn pss_of(&self, process: i64) -> &[PssRow] {
        let start = self.pss.partition_point(|s| s.process < process);
        let end = self.pss.partition_point(|s| s.process <= process);
        &self.pss[start..end]
    }
}

/// Opens a recording with SQLite (read-write, so a cut-off recording's log is replayed; else
/// read-only), checks it and reads its `meta` table and schema version.
fn connect(path: &Path) -> Result<(Connection, BTreeMap<String, String>)> {
    let e = |err| classify(path, err);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    })
    .map_err(e)?;
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(e)?;
    if check != "ok" {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            why: check,
        });
    }
    let has_meta: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    if has_meta == 0 {
        return Err(Error::NotARecording {
            path: path.to_path_buf(),
            why: "an SQLite database without a memlens `meta` table".into(),
        });
    }
    let meta: BTreeMap<String, String> = {
        let mut st = conn.prepare("SELECT key, value FROM meta").map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(e)?;
        rows.collect::<std::result::Result<_, _>>().map_err(e)?
    };
    let version = meta
        .get(SCHEMA_VERSION_KEY)
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| Error::NotARecording {
            path: path.to_path_buf(),
            why: "no schema_version in meta".into(),
        })?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok((conn, meta))
}

/// Full ledgers with their sums by category, by time.
fn read_ledgers(conn: &Connection, path: &Path) -> Result<Vec<LedgerRow>> {
    let mut ledgers = query(
        conn,
        path,
        "SELECT id, t, reason, rss, pss, uss, swap, json IS NOT NULL FROM ledgers ORDER BY t",
        |r| {
            Ok(LedgerRow {
                id: r.get(0)?,
                t: r.get(1)?,
                reason: r.get(2)?,
                totals: Amounts {
                    rss: u(r.get(3)?),
                    pss: u(r.get(4)?),
                    uss: u(r.get(5)?),
                    swap: u(r.get(6)?),
                },
                categories: Vec::new(),
                has_json: r.get(7)?,
            })
        },
    )?;
    let rows = query(
        conn,
        path,
        "SELECT ledger, category, rss, pss, uss, swap FROM ledger_rows ORDER BY ledger, pss DESC",
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                Amounts {
                    rss: u(r.get(2)?),
                    pss: u(r.get(3)?),
                    uss: u(r.get(4)?),
                    swap: u(r.get(5)?),
                },
            ))
        },
    )?;
    let index: std::collections::HashMap<i64, usize> =
        ledgers.iter().enumerate().map(|(k, l)| (l.id, k)).collect();
    for (lid, cat, a) in rows {
        if let Some(&k) = index.get(&lid) {
            ledgers[k].categories.push((cat, a));
        }
    }
    Ok(ledgers)
}

/// Python view samples and events, by time.
fn read_python_and_events(
    conn: &Connection,
    path: &Path,
) -> Result<(Vec<PythonRow>, Vec<EventRow>)> {
    let python: Vec<PythonRow> = query(
        conn,
        path,
        "SELECT t, process, json FROM python ORDER BY t",
        |r| {
            Ok((
                r.get::<_, f64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    )?
    .into_iter()
    .filter_map(|(t, process, json)| {
        serde_json::from_str(&json)
            .ok()
            .map(|sample| PythonRow { t, process, sample })
    })
    .collect();
    let events = query(
        conn,
        path,
        "SELECT t, kind, process, detail FROM events ORDER BY t",
        |r| {
            Ok(EventRow {
                t: r.get(0)?,
                kind: r.get(1)?,
                process: r.get(2)?,
                detail: r.get(3)?,
            })
        },
    )?;
    Ok((python, events))
}

fn read_sharing(conn: &Connection, path: &Path) -> Result<Vec<SharingRow>> {
    query(
        conn,
        path,
        "SELECT t, process, parent, duration_s, measured, reason, shared_with_parent, copied, own, \
         zero_page, swapped, failed_reads, by_category FROM sharing ORDER BY process, t",
        |r| {
            let measured: i64 = r.get(4)?;
            let n = |k: usize| -> rusqlite::Result<u64> {
                Ok(r.get::<_, Option<i64>>(k)?.map_or(0, u))
            };
            let figures = if measured != 0 {
                let rows: Option<String> = r.get(12)?;
                Ok(SharingSample {
                    shared_with_parent: n(6)?,
                    copied: n(7)?,
                    own: n(8)?,
                    zero_page: n(9)?,
                    swapped: n(10)?,
                    failed_reads: n(11)?,
                    by_category: rows.as_deref().map(category_rows).unwrap_or_default(),
                })
            } else {
                Err(r
                    .get::<_, Option<String>>(5)?
                    .unwrap_or_else(|| "not measured".into()))
            };
            Ok(SharingRow {
                t: r.get(0)?,
                process: r.get(1)?,
                parent: r.get(2)?,
                duration_s: r.get(3)?,
                figures,
            })
        },
    )
}

/// The `by_category` JSON of a sharing row; a row that does not parse is left out.
fn category_rows(text: &str) -> Vec<(String, u64, u64, u64)> {
    let Ok(serde_json::Value::Array(rows)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            Some((
                r.get("category")?.as_str()?.to_string(),
                r.get("shared_with_parent")?.as_u64()?,
                r.get("copied")?.as_u64()?,
                r.get("own")?.as_u64()?,
            ))
        })
        .collect()
}

fn query<T>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let e = |err| classify(path, err);
    let mut st = conn.prepare(sql).map_err(e)?;
    let rows = st.query_map([], f).map_err(e)?;
    rows.collect::<std::result::Result<Vec<T>, _>>().map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{Counters, ProcessInfo, RecordingWriter};

    fn tmp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("memlens-reader-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn written_rows_read_back() {
        let path = tmp("roundtrip");
        let meta = Meta {
            mode: Some(crate::Mode::Run),
            command: Some("py <x>".into()),
            ..Meta::default()
        };
        let mut w = RecordingWriter::create(&path, &meta).unwrap();
        let info = ProcessInfo {
            pid: 42,
            ppid: 1,
            start_ticks: 7,
            name: "py".into(),
            cmdline: "py <x>".into(),
        };
        let id = w.add_process(&info, 0.0).unwrap();
        let c = Counters {
            rss: 10 << 20,
            vm_hwm: 12 << 20,
            ..Counters::default()
        };
        w.sample(0.01, id, &c).unwrap();
        w.tick(0.01, 10 << 20, 9 << 20, 1, None).unwrap();
        w.commit().unwrap();
        w.close_process(id, 0.02, Some(0.03), 12 << 20, 9 << 20, None)
            .unwrap();
        w.update_meta(|m| m.root_pid = Some(42)).unwrap();
        let end = End {
            end_t: Some(0.03),
            exit_code: Some(0),
            ..End::default()
        };
        w.finish(&end).unwrap();
        let r = Recording::open(&path).unwrap();
        assert!(r.complete());
        assert_eq!(
            r.meta,
            Meta {
                root_pid: Some(42),
                ..meta
            }
        );
        assert_eq!(r.end, end);
        assert_eq!(r.processes.len(), 1);
        assert_eq!(r.processes[0].cmdline, "py <x>");
        assert_eq!(r.processes[0].vm_hwm, 12 << 20);
        assert_eq!(r.samples_of(id).len(), 1);
        assert_eq!(r.ticks[0].pss, 9 << 20);
        assert_eq!(r.last_t(), 0.03);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let path = tmp("bad");
        assert!(matches!(
            Recording::open(&path),
            Err(Error::NotFound { .. })
        ));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            Recording::open(&path),
            Err(Error::NotARecording { .. })
        ));
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        assert!(matches!(
            Recording::open(&path),
            Err(Error::NotARecording { .. })
        ));
        // A valid header announcing more pages than the file has.
        let mut head = vec![0u8; 4096];
        head[..16].copy_from_slice(MAGIC);
        head[16..18].copy_from_slice(&4096u16.to_be_bytes());
        head[28..32].copy_from_slice(&10u32.to_be_bytes());
        head[24..28].copy_from_slice(&3u32.to_be_bytes());
        head[92..96].copy_from_slice(&3u32.to_be_bytes());
        std::fs::write(&path, &head).unwrap();
        assert!(matches!(
            Recording::open(&path),
            Err(Error::Truncated {
                expected: 40960,
                ..
            })
        ));
        let _ = std::fs::remove_file(&path);
    }
}
