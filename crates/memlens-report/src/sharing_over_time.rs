//! Copy-on-write sharing over time (DESIGN §6, §7): each forked worker's bytes shared with its
//! parent and copied since the fork, as the recorder measured them (the recording's `sharing`
//! table), for the text, JSON and HTML reports.

use std::io::Write;

use memlens_recording::reader::SharingSample;
use memlens_recording::Recording;
use serde::Serialize;

use memlens_model::units::SizeStyle;

/// At most this many points per worker.
const MAX_POINTS: usize = 300;

/// Sharing over the recording: measured per worker, or why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingOverTime {
    /// Whether the recorder measured sharing; when false, `reason` says why and no workers
    /// follow.
    pub measured: bool,
    /// Why sharing was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The period asked for (s), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    /// Each process compared with its parent, in order of appearance.
    pub workers: Vec<WorkerSharing>,
}

/// One worker's measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerSharing {
    /// The worker.
    pub pid: u32,
    /// Its parent.
    pub parent_pid: u32,
    /// Its command line (untrusted).
    pub command: String,
    /// Measurements, by time (thinned to at most 300, evenly).
    pub points: Vec<SharingPoint>,
}

/// One category's share at one measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryShare {
    /// Ledger category.
    pub category: String,
    /// Shared with the parent.
    pub shared_with_parent: u64,
    /// Copied since the fork.
    pub copied: u64,
    /// Its own.
    pub own: u64,
}

/// One measurement (s since the recording started; bytes), or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingPoint {
    /// When it started.
    pub t: f64,
    /// How long it took (wall clock).
    pub duration_seconds: f64,
    /// Whether it was measured.
    pub measured: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Shared with the parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with_parent: Option<u64>,
    /// Copied since the fork.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copied: Option<u64>,
    /// Its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<u64>,
    /// Pages of the kernel's zero page (in no other figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_page: Option<u64>,
    /// Failed pagemap reads (their pages in no figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_reads: Option<u64>,
    /// The same per ledger category (measured points only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_category: Vec<CategoryShare>,
}

impl WorkerSharing {
    /// The measured points: (t, shared, copied).
    pub fn measured(&self) -> impl Iterator<Item = (f64, u64, u64)> + '_ {
        self.points
            .iter()
            .filter_map(|p| Some((p.t, p.shared_with_parent?, p.copied?)))
    }
}

fn point(t: f64, duration: f64, f: &Result<SharingSample, String>) -> SharingPoint {
    match f {
        Ok(s) => SharingPoint {
            t,
            duration_seconds: duration,
            measured: true,
            reason: None,
            shared_with_parent: Some(s.shared_with_parent),
            copied: Some(s.copied),
            own: Some(s.own),
            zero_page: Some(s.zero_page),
            failed_reads: Some(s.failed_reads),
            by_category: s
                .by_category
                .iter()
                .map(|(c, sh, k, o)| CategoryShare {
                    category: c.clone(),
                    shared_with_parent: *sh,
                    copied: *k,
                    own: *o,
                })
                .collect(),
        },
        Err(why) => SharingPoint {
            t,
            duration_seconds: duration,
            measured: false,
            reason: Some(why.clone()),
            shared_with_parent: None,
            copied: None,
            own: None,
            zero_page: None,
            failed_reads: None,
            by_category: Vec::new(),
        },
    }
}

impl SharingOverTime {
    /// Reads the recording's sharing measurements.
    pub fn of(rec: &Recording) -> SharingOverTime {
        let not = |reason: String| SharingOverTime {
            measured: false,
            reason: Some(reason),
            interval_seconds: None,
            workers: Vec::new(),
        };
        if let Some(off) = &rec.meta.sharing_off {
            return not(off.clone());
        }
        if rec.schema_version < 2 {
            return not(format!(
                "the recording predates sharing measurements (schema version {})",
                rec.schema_version
            ));
        }
        let pid_of = |id: i64| rec.processes.iter().find(|p| p.id == id);
        let mut workers = Vec::new();
        for rows in rec.sharing.chunk_by(|a, b| a.process == b.process) {
            let Some(first) = rows.first() else { continue };
            let (Some(w), Some(p)) = (pid_of(first.process), pid_of(first.parent)) else {
                continue;
            };
            let per = rows.len().div_ceil(MAX_POINTS).max(1);
            let mut points: Vec<SharingPoint> = rows
                .iter()
                .step_by(per)
                .map(|r| point(r.t, r.duration_s, &r.figures))
                .collect();
            if let Some(last) = rows.last().filter(|_| (rows.len() - 1) % per != 0) {
                points.push(point(last.t, last.duration_s, &last.figures));
            }
            workers.push(WorkerSharing {
                pid: w.pid,
                parent_pid: p.pid,
                command: if w.cmdline.is_empty() {
                    w.name.clone()
                } else {
                    w.cmdline.clone()
                },
                points,
            });
        }
        SharingOverTime {
            measured: true,
            reason: None,
            interval_seconds: rec.meta.sharing_interval_s,
            workers,
        }
    }
}

/// Share of a part in a whole, in percent.
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The text section: per worker, copied bytes from its first to its last measurement and a
/// sparkline of them; or why sharing was not measured.
pub fn render_text(
    s: &SharingOverTime,
    style: SizeStyle,
    width: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if !s.measured {
        return writeln!(
            out,
            "copy-on-write: not measured: {}",
            crate::escape::terminal(s.reason.as_deref().unwrap_or("unknown"))
        );
    }
    if s.workers.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "copy-on-write (each worker's pages against its parent's, pagemap):"
    )?;
    for w in &s.workers {
        let pts: Vec<(f64, u64, u64)> = w.measured().collect();
        let failed = w.points.iter().filter(|p| !p.measured).count();
        let (Some(a), Some(b)) = (pts.first(), pts.last()) else {
            let why = w
                .points
                .iter()
                .find_map(|p| p.reason.as_deref())
                .unwrap_or("unknown");
            writeln!(
                out,
                "  pid {} (parent {}): not measured: {}",
                w.pid,
                w.parent_pid,
                crate::escape::terminal(why)
            )?;
            continue;
        };
        let copied: Vec<u64> = pts.iter().map(|p| p.2).collect();
        write!(
            out,
            "  pid {} (parent {}): copied {} at {:.1} s -> {} at {:.1} s ({:.0} % of what it shares or copied), shared {}  {}",
            w.pid,
            w.parent_pid,
            style.size(a.2),
            a.0,
            style.size(b.2),
            b.0,
            pct(b.2, b.1 + b.2),
            style.size(b.1),
            crate::recording_text::sparkline(&copied, width.min(40))
        )?;
        if failed > 0 {
            write!(out, " ({failed} measurements failed)")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
