//! The trace files of `memlens run --trace` imported while the program runs: each file is read
//! from where the last import stopped, only its complete lines are parsed (a line the tracer
//! is still writing waits for its newline), and what they say is written into the recording's
//! `trace_*` tables in the recording's open transaction, so the next commit makes it
//! durable. A memlens killed with SIGKILL leaves a recording holding every trace line up to
//! its last committed import, and each file's last complete peak block (a block read while the
//! tracer writes it is held back until whole); the trace files stay in their private
//! directory.
//!
//! A file is opened without following a link, and only while it is still the file first
//! read (same device and inode); one that cannot be read is said (an event and a problem of
//! the [`ImportReport`]) and not read again, and what was imported of it stays.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, Connection};

use crate::error::{Error, Result};
use crate::trace::{Delta, Header, Limits, Parser, PeakSet, Skipped};
use crate::trace_store::{monotonic_ns, ImportReport, TraceFiles};
use crate::writer::RecordingWriter;

/// The time one import during the run may take (the sampler waits meanwhile); what is left
/// waits for the next one. The last import reads everything.
pub const IMPORT_BUDGET: std::time::Duration = std::time::Duration::from_millis(40);

/// Bytes read from a file between two writes into the recording.
const BATCH: u64 = 64 * 1024;

/// The calling thread's CPU time (ns): what an import cost memlens.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// What one [`LiveImport::import`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Files with new bytes.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// `snap`/`end` lines written.
    pub snaps: usize,
    /// `site` lines written.
    pub sites: usize,
}

impl ImportStats {
    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        self.bytes > 0
    }
}

/// One file's import state.
#[derive(Debug)]
struct FileState {
    /// Bytes read (complete lines parsed; a partial last line is held by the parser).
    offset: u64,
    /// The file as first opened.
    id: Option<(u64, u64)>,
    /// `None` once the file failed (said once).
    parser: Option<Parser>,
    /// Its `traces` row, once its header was read.
    row: Option<i64>,
    /// What the row says of the end, peak and skipped lines (rewritten when it changes).
    row_state: RowState,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RowState {
    ended: bool,
    peak: Option<(u64, u64)>,
    skipped: Skipped,
}

/// The import of one run's trace files, repeated while the program runs
/// ([`LiveImport::import`]) and completed when it has ended ([`LiveImport::finish`]).
#[derive(Debug)]
pub struct LiveImport {
    files: TraceFiles,
    start_ns: u64,
    limits: Limits,
    state: BTreeMap<String, FileState>,
    problems: Vec<String>,
    /// Which file the next import starts with.
    turn: usize,
    behind: bool,
}

impl LiveImport {
    /// The files of `files`; `start_ns` is `CLOCK_MONOTONIC` at the recording's t = 0.
    pub fn new(files: TraceFiles, start_ns: u64, limits: Limits) -> LiveImport {
        LiveImport {
            files,
            start_ns,
            limits,
            state: BTreeMap::new(),
            problems: Vec::new(),
            turn: 0,
            behind: false,
        }
    }

    /// The trace files.
    pub fn files(&self) -> &TraceFiles {
        &self.files
    }

    /// Reads what the tracer appended since the last import (complete lines only, for
    /// [`IMPORT_BUDGET`] at most, the files taken in turn) and writes it into the recording's
    /// open transaction (the caller commits). `Err` is a failure of the recording (or of
    /// listing the private directory); a file that cannot be read is said and skipped from
    /// then on.
    pub fn import(&mut self, w: &mut RecordingWriter) -> Result<ImportStats> {
        self.read_all(w, Some(std::time::Instant::now() + IMPORT_BUDGET))
    }

    /// Whether the last import left bytes unread (its budget ran out).
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Per file: `(name, bytes read)`, for a progress line.
    pub fn offsets(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.state.iter().map(|(n, s)| (n.as_str(), s.offset))
    }

    fn read_all(
        &mut self,
        w: &mut RecordingWriter,
        deadline: Option<std::time::Instant>,
    ) -> Result<ImportStats> {
        let mut list = self.files.list().map_err(|source| Error::Io {
            path: self.files.dir.clone(),
            source,
        })?;
        // In turn: a file that used the whole budget goes last next time.
        if !list.is_empty() {
            let k = self.turn % list.len();
            list.rotate_left(k);
            self.turn = self.turn.wrapping_add(1);
        }
        self.behind = false;
        let mut stats = ImportStats::default();
        for path in list {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let st = self.state.entry(name.clone()).or_insert_with(|| FileState {
                offset: 0,
                id: None,
                parser: Some(Parser::new(self.limits)),
                row: None,
                row_state: RowState::default(),
            });
            if st.parser.is_none() {
                continue;
            }
            // Past the budget, stop: but only once a file was read, so that an import that
            // starts late (a busy host preempting memlens after the deadline was set) still
            // moves on, and the rotation gives every file its turn.
            if stats.files > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                self.behind = true;
                break;
            }
            let mut failure = None;
            match open_new(&path, st) {
                Ok(None) => {}
                Ok(Some(mut f)) => {
                    stats.files += 1;
                    loop {
                        let (n, fail) = read_batch(&mut f, st);
                        stats.bytes += n;
                        let last = n < BATCH
                            || fail.is_some()
                            || deadline.is_some_and(|d| std::time::Instant::now() >= d);
                        if n > 0 || last {
                            // The peak block once per import, with its last batch.
                            let (snaps, sites) = write_new(w, &name, st, self.start_ns, last)?;
                            stats.snaps += snaps;
                            stats.sites += sites;
                        }
                        failure = fail;
                        if last {
                            self.behind |= n == BATCH && failure.is_none();
                            break;
                        }
                    }
                }
                Err(why) => failure = Some(why),
            }
            if let Some(why) = failure.or_else(|| {
                st.parser
                    .as_ref()
                    .and_then(Parser::refused)
                    .map(ToString::to_string)
            }) {
                st.parser = None;
                let why = format!("trace {name} not read: {why}");
                w.event(self.now(), "trace", None, &why)?;
                self.problems.push(why);
            }
        }
        Ok(stats)
    }

    fn now(&self) -> f64 {
        secs(monotonic_ns(), self.start_ns).max(0.0)
    }

    /// The last import, once the program has ended: everything left is read, each file's
    /// parse finished (a last line without its newline is counted as torn), and what could
    /// not be read or was skipped is said (events, and the report's problems).
    pub fn finish(mut self, w: &mut RecordingWriter) -> Result<ImportReport> {
        self.read_all(w, None)?;
        debug_assert!(!self.behind);
        // The files are complete now: a peak block still open is taken, or counted as cut.
        for (name, st) in &mut self.state {
            if let Some(p) = st.parser.as_mut() {
                p.end_of_file();
                write_new(w, name, st, self.start_ns, true)?;
            }
        }
        let mut report = ImportReport {
            files: 0,
            problems: std::mem::take(&mut self.problems),
        };
        for (name, mut st) in std::mem::take(&mut self.state) {
            let Some(parser) = st.parser.take() else {
                continue;
            };
            match parser.finish() {
                Ok(t) => {
                    let id = match st.row {
                        Some(id) => id,
                        None => {
                            insert_row(&w.conn, &name, &t.header, self.start_ns).map_err(sql(w))?
                        }
                    };
                    let now = RowState {
                        ended: t.end.is_some(),
                        peak: t.peak.as_ref().map(|p| (p.t_ns, p.live_bytes)),
                        skipped: t.skipped,
                    };
                    if now != st.row_state || st.row.is_none() {
                        update_row(&w.conn, id, &now, self.start_ns).map_err(sql(w))?;
                    }
                    report.files += 1;
                    if t.skipped.total() > 0 {
                        let cut = if t.skipped.peak_cut > 0 {
                            "; its newest peak block was cut (the tracer was killed or its \
                             write failed part-way): the report's peak is the last whole block, or has no \
                             breakdown, and says so"
                        } else {
                            ""
                        };
                        let why = format!(
                            "trace {name}: {} lines or items skipped ({:?}){cut}",
                            t.skipped.total(),
                            t.skipped
                        );
                        let at = last_t(&w.conn, id).map_err(sql(w))?.unwrap_or(0.0);
                        w.event(at.max(0.0), "trace", None, &why)?;
                        report.problems.push(why);
                    }
                }
                Err(e) => {
                    let why = format!("trace {name} not read: {e}");
                    w.event(0.0, "trace", None, &why)?;
                    report.problems.push(why);
                }
            }
        }
        Ok(report)
    }
}

fn sql(w: &RecordingWriter) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: w.path().to_path_buf(),
        source,
    }
}

/// Opens a file that has grown since it was last read (`None`: nothing new), at its offset:
/// without following a link, and only while it is the file first read.
fn open_new(path: &Path, st: &FileState) -> std::result::Result<Option<std::fs::File>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Nothing new (the common case during the run): one lstat, no open.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() <= st.offset => return Ok(None),
        Ok(m) if !m.is_file() => return Err("no longer a regular file".into()),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    if st.id.is_some_and(|id| id != (m.dev(), m.ino())) {
        return Err("replaced since memlens first read it".into());
    }
    f.seek(SeekFrom::Start(st.offset))
        .map_err(|e| e.to_string())?;
    Ok(Some(f))
}

/// Reads up to [`BATCH`] bytes into the file's parser. Returns the bytes read and why the file
/// cannot be read (from then on).
fn read_batch(f: &mut std::fs::File, st: &mut FileState) -> (u64, Option<String>) {
    use std::os::unix::fs::MetadataExt;
    if st.id.is_none() {
        match f.metadata() {
            Ok(m) => st.id = Some((m.dev(), m.ino())),
            Err(e) => return (0, Some(e.to_string())),
        }
    }
    let Some(parser) = st.parser.as_mut() else {
        return (0, None);
    };
    let mut chunk = [0u8; 64 * 1024];
    let mut read = 0u64;
    while read < BATCH {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                parser.feed(&chunk[..n]);
                read += n as u64;
                st.offset += n as u64;
                if parser.refused().is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (read, Some(e.to_string())),
        }
    }
    (read, None)
}

/// Writes what a file's parser read since the last import: its `traces` row once the header
/// is read, then the new lines. Returns the snapshots and sites written.
fn write_new(
    w: &mut RecordingWriter,
    name: &str,
    st: &mut FileState,
    start_ns: u64,
    with_peak: bool,
) -> Result<(usize, usize)> {
    let Some(parser) = st.parser.as_mut() else {
        return Ok((0, 0));
    };
    let Some(header) = parser.header() else {
        return Ok((0, 0));
    };
    let e = sql(w);
    let id = match st.row {
        Some(id) => id,
        None => {
            let id = insert_row(&w.conn, name, header, start_ns).map_err(&e)?;
            st.row = Some(id);
            id
        }
    };
    let delta = if with_peak {
        parser.take()
    } else {
        parser.take_lines()
    };
    let counts = (
        delta.snaps.len() + usize::from(delta.end.is_some()),
        delta.sites.len(),
    );
    write_delta(&w.conn, id, &delta, start_ns).map_err(&e)?;
    let now = RowState {
        ended: parser.ended(),
        peak: match (&delta.peak, st.row_state.peak) {
            (Some(p), _) => Some((p.t_ns, p.live_bytes)),
            (None, old) => old,
        },
        skipped: parser.skipped(),
    };
    if now != st.row_state {
        update_row(&w.conn, id, &now, start_ns).map_err(&e)?;
        st.row_state = now;
    }
    Ok(counts)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn secs(t_ns: u64, start_ns: u64) -> f64 {
    (t_ns as f64 - start_ns as f64) / 1e9
}

/// The time of a trace's last snapshot in the recording.
fn last_t(conn: &Connection, id: i64) -> rusqlite::Result<Option<f64>> {
    conn.query_row(
        "SELECT max(t) FROM trace_snaps WHERE trace = ?1",
        params![id],
        |r| r.get(0),
    )
}

/// The `traces` row of a file whose header was read (not ended, no peak yet).
pub(crate) fn insert_row(
    conn: &Connection,
    file: &str,
    h: &Header,
    start_ns: u64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO traces (file, version, pid, ppid, mode, sample_bytes, python, temp_ns, \
         forked_from, inherited_live_bytes, start_t, ended, peak_t, peak_bytes, skipped, \
         skipped_detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, NULL, NULL, \
         0, ?12)",
    )?
    .execute(params![
        file,
        h.version,
        h.pid,
        h.ppid,
        h.mode.name(),
        i(h.sample_bytes),
        h.python,
        h.temp_ns.map(i),
        h.forked_from,
        i(h.inherited_live_bytes),
        secs(h.start_ns, start_ns),
        format!("{:?}", Skipped::default()),
    ])?;
    Ok(conn.last_insert_rowid())
}

fn update_row(conn: &Connection, id: i64, s: &RowState, start_ns: u64) -> rusqlite::Result<()> {
    let (peak_t, peak_bytes) = match s.peak {
        Some((t, b)) => (Some(secs(t, start_ns)), Some(i(b))),
        None => (None, None),
    };
    conn.prepare_cached(
        "UPDATE traces SET ended = ?2, peak_t = ?3, peak_bytes = ?4, skipped = ?5, \
         skipped_detail = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        s.ended,
        peak_t,
        peak_bytes,
        i(s.skipped.total()),
        format!("{:?}", s.skipped),
    ])?;
    Ok(())
}

/// Writes a whole parsed trace (its row, its lines, its end state): the import of a file read
/// in one go (the tests' fixtures).
#[cfg(test)]
pub(crate) fn write_trace(
    conn: &Connection,
    file: &str,
    t: &crate::trace::Trace,
    start_ns: u64,
) -> rusqlite::Result<()> {
    let id = insert_row(conn, file, &t.header, start_ns)?;
    let delta = Delta {
        codes: t.codes.iter().map(|(k, v)| (*k, v.clone())).collect(),
        stacks: t.stacks.iter().map(|(k, v)| (*k, v.clone())).collect(),
        snaps: t.snaps.clone(),
        end: t.end,
        sites: t.sites.clone(),
        peak: t.peak.clone(),
    };
    write_delta(conn, id, &delta, start_ns)?;
    update_row(
        conn,
        id,
        &RowState {
            ended: t.end.is_some(),
            peak: t.peak.as_ref().map(|p| (p.t_ns, p.live_bytes)),
            skipped: t.skipped,
        },
        start_ns,
    )
}

/// Writes the lines of a [`Delta`] for trace `id`: codes and stacks (a redefinition replaces
/// the old one), snapshots, sites, and the peak block (which replaces the previous one).
fn write_delta(conn: &Connection, id: i64, d: &Delta, start_ns: u64) -> rusqlite::Result<()> {
    for (c, code) in &d.codes {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO trace_codes (trace, id, first_line, file, name) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, c, code.first_line, code.file, code.name])?;
    }
    for (sid, st) in &d.stacks {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO trace_stacks (trace, id, domain, truncated, unreadable) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            id,
            sid,
            crate::trace_store::domain_name(st.domain),
            st.truncated,
            st.unreadable
        ])?;
        conn.prepare_cached("DELETE FROM trace_frames WHERE trace = ?1 AND stack = ?2")?
            .execute(params![id, sid])?;
        for (depth, (code, line)) in st.frames.iter().enumerate() {
            conn.prepare_cached(
                "INSERT INTO trace_frames (trace, stack, depth, code, line) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, sid, depth as i64, code, line])?;
        }
    }
    let snaps = d
        .snaps
        .iter()
        .map(|s| (s, false))
        .chain(d.end.iter().map(|s| (s, true)));
    for (s, at_end) in snaps {
        conn.prepare_cached(
            "INSERT INTO trace_snaps (trace, t, at_end, live_bytes, live_mmap_bytes, \
             live_pymalloc_bytes, live_malloc_bytes, peak_live_bytes, total_bytes, untouched_bytes, \
             alloc_samples, free_samples, live_samples, dropped_allocs, dropped_frees, table_full, \
             lost_at_fork, unreadable_stacks, stacks_lost, tracer_bytes, inherited_bytes) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
             ?20, ?21)",
        )?
        .execute(params![
            id,
            secs(s.t_ns, start_ns),
            at_end,
            i(s.live_bytes),
            i(s.live_mmap_bytes),
            i(s.live_pymalloc_bytes),
            i(s.live_malloc_bytes),
            i(s.peak_live_bytes),
            i(s.total_bytes),
            i(s.untouched_bytes),
            i(s.alloc_samples),
            i(s.free_samples),
            i(s.live_samples),
            i(s.dropped_allocs),
            i(s.dropped_frees),
            i(s.table_full),
            i(s.lost_at_fork),
            i(s.unreadable_stacks),
            i(s.stacks_lost),
            i(s.tracer_bytes),
            i(s.inherited_live_bytes),
        ])?;
    }
    for s in &d.sites {
        let f = &s.figures;
        conn.prepare_cached(
            "INSERT INTO trace_sites (trace, t, at_end, stack, live_bytes, live_count, alloc_bytes, \
             alloc_count, freed_bytes, freed_count, temp_bytes, temp_count, inherited_bytes, \
             inherited_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            id,
            secs(s.t_ns, start_ns),
            s.at_end,
            s.stack,
            i(f.live_bytes),
            i(f.live_count),
            i(f.alloc_bytes),
            i(f.alloc_count),
            i(f.freed_bytes),
            i(f.freed_count),
            i(f.temp_bytes),
            i(f.temp_count),
            i(f.inherited_bytes),
            i(f.inherited_count),
        ])?;
    }
    if let Some(p) = &d.peak {
        write_peak(conn, id, p)?;
    }
    Ok(())
}

/// Replaces the trace's peak block (a complete one: the parser holds a block back until all
/// its `peaksite` lines are read, so a memlens killed meanwhile leaves the previous block).
fn write_peak(conn: &Connection, id: i64, p: &PeakSet) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM trace_peak WHERE trace = ?1")?
        .execute(params![id])?;
    for (stack, bytes, count) in &p.sites {
        conn.prepare_cached(
            "INSERT INTO trace_peak (trace, stack, bytes, count) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, stack, i(*bytes), i(*count)])?;
    }
    Ok(())
}
