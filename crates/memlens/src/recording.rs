//! What `run`, `record` and `report` share: sampling options, the recording file and the report
//! files (created before anything runs, never over what memlens did not write), the mapping
//! of recording errors to exit codes, and printing a recording's report.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memlens_recording::destination::{Kind, PendingFile};
use memlens_recording::{Meta, Mode, Recording, RecordingWriter};
use memlens_report::{html, recording_json, recording_text, Model};

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::{self, Global};

/// Sampling and output options of `run` and `record`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Period of the cheap counters (statm/status of every process), from 1ms to 1h, e.g.
    /// `10ms`, `0.5s`.
    #[arg(long, default_value = "10ms", value_name = "D", value_parser = flags::period)]
    pub interval: Duration,
    /// Share of one core the sampler may use, in percent from 0.01 to 100 (`2` or `2%`); PSS
    /// reads and full ledgers are scheduled within it.
    #[arg(long, default_value = "2", value_name = "PCT", value_parser = flags::percent)]
    pub cpu_budget: f64,
    /// Period of full ledgers (also taken near each new peak), from 1ms to 1h, stretched to
    /// fit the budget.
    #[arg(long, default_value = "1s", value_name = "D", value_parser = flags::period)]
    pub ledger_every: Duration,
    /// Take an object census of every Python process this often (1ms to 1h, e.g. `30s`); it
    /// stops each process briefly while its memory is copied, and counts against the CPU budget.
    #[arg(long, value_name = "D", value_parser = flags::period)]
    pub census_every: Option<Duration>,
    /// Do not read the Python view (GC, pymalloc) of the processes: the OS view only.
    #[arg(long)]
    pub no_python: bool,
    /// Compare each forked worker's pages with its parent's (copy-on-write sharing, from
    /// pagemap) this often, from 1ms to 1h, within the CPU budget.
    #[arg(long, default_value = "2s", value_name = "D", value_parser = flags::period)]
    pub sharing_every: Duration,
    /// Do not measure copy-on-write sharing; the report says it was not measured.
    #[arg(long)]
    pub no_sharing: bool,
    /// The recording file, which must not exist (default:
    /// `memlens-<name>-<UTC time>-<memlens pid>.db` in the current directory).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the self-contained HTML report here.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Also write the JSON report to this file (apart from the program's own stdout).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Replace output files that memlens itself wrote (a recording, an HTML or JSON report);
    /// other files are never replaced.
    #[arg(long)]
    pub force: bool,
}

impl SamplingArgs {
    /// The sampler configuration.
    pub fn config(&self) -> memlens_record::Config {
        memlens_record::Config {
            interval: self.interval,
            cpu_budget: self.cpu_budget,
            ledger_interval: self.ledger_every,
            census_interval: self.census_every,
            sharing_interval: (!self.no_sharing).then_some(self.sharing_every),
            ..memlens_record::Config::default()
        }
    }

    /// Metadata every recording carries.
    pub fn meta(&self, mode: Mode, command: &str, root: u32) -> Meta {
        let started = memlens_model::clock::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Meta {
            mode: Some(mode),
            command: Some(command.to_string()),
            root_pid: Some(root),
            started_unix: Some(started),
            interval_s: Some(self.interval.as_secs_f64()),
            cpu_budget: Some(self.cpu_budget),
            ledger_interval_s: Some(self.ledger_every.as_secs_f64()),
            memlens_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            page_size: Some(memlens_record::page_size()),
            sharing_interval_s: (!self.no_sharing).then_some(self.sharing_every.as_secs_f64()),
            sharing_off: self
                .no_sharing
                .then(|| crate::commands::snapshot::NO_SHARING.to_string()),
            ..Meta::default()
        }
    }

    /// Creates the recording: at `-o` (which must not exist, or be a recording memlens wrote
    /// with `--force`), or under a fresh name in the current directory.
    pub fn create_recording(&self, name: &str, meta: &Meta) -> CliResult<RecordingWriter> {
        if let Some(path) = &self.output {
            let made = if self.force {
                RecordingWriter::create_replacing(path, meta)
            } else {
                RecordingWriter::create(path, meta)
            };
            return made.map_err(output_error);
        }
        let base = default_name(name, memlens_model::clock::now(), std::process::id());
        let mut last = None;
        // The name holds the time to the millisecond and memlens's PID: taken only by a
        // leftover of a recycled PID, in which case a counter is added.
        for n in 1..=20u32 {
            let candidate = if n == 1 {
                PathBuf::from(&base)
            } else {
                PathBuf::from(base.replace(".db", &format!("-{n}.db")))
            };
            match RecordingWriter::create(&candidate, meta) {
                Ok(w) => return Ok(w),
                Err(e @ memlens_recording::Error::Refused { .. }) => last = Some(e),
                Err(e) => return Err(output_error(e)),
            }
        }
        Err(output_error(last.unwrap_or_else(|| {
            memlens_recording::Error::Refused {
                path: PathBuf::from(base),
                why: "no free name".into(),
                force_helps: false,
            }
        })))
    }

    /// Checks and reserves the report files (`--html`, `--json-out`).
    pub fn reserve_outputs(&self) -> CliResult<Outputs> {
        Outputs::reserve(self.html.as_deref(), self.json_out.as_deref(), self.force)
    }
}

/// `memlens-<name>-<YYYYmmdd-HHMMSS.mmm>-<pid>.db` (UTC), the name reduced to safe characters.
pub fn default_name(name: &str, when: std::time::SystemTime, pid: u32) -> String {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(32)
        .collect();
    let safe = if safe.is_empty() {
        "program".into()
    } else {
        safe
    };
    let since = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "memlens-{safe}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}.{:03}-{pid}.db",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The base name of a program, for the default file name.
pub fn program_name(program: &OsStr) -> String {
    Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Maps an error writing a file (the recording, a report) to exit 8.
pub fn output_error(e: memlens_recording::Error) -> CliError {
    use memlens_recording::Error as E;
    match &e {
        E::Refused {
            force_helps: true, ..
        } => CliError::new(Code::Output, e.to_string())
            .with_hint("`--force` replaces files memlens wrote; or choose another name"),
        E::Refused { .. } => CliError::new(Code::Output, e.to_string())
            .with_hint("memlens writes only new files (or, with `--force`, replaces its own); choose another name"),
        _ if e.is_disk_full() => CliError::new(Code::Output, format!("{e} (the disk is full)")),
        E::Io { .. } | E::Sqlite { .. } => CliError::new(Code::Output, e.to_string())
            .with_hint("check that the directory exists and is writable"),
        _ => recording_error(e),
    }
}

/// Maps a recording error to the user's message and exit code.
pub fn recording_error(e: memlens_recording::Error) -> CliError {
    use memlens_recording::Error as E;
    match e {
        E::NotFound { .. }
        | E::NotARecording { .. }
        | E::Truncated { .. }
        | E::Corrupt { .. }
        | E::UnsupportedVersion { .. } => CliError::new(Code::BadRecording, e.to_string())
            .with_hint("memlens reads the .db files written by `memlens run` and `memlens record`; a recording cut off by a crash or a full disk is readable, one damaged after that is not"),
        e @ E::Refused { .. } => output_error(e),
        e if e.is_disk_full() => output_error(e),
        E::Sqlite { .. } | E::Io { .. } => CliError::new(Code::Failure, e.to_string()),
    }
}

/// Maps an error that stopped the recorder: the recording's, or `/proc`'s.
pub fn recorder_error(e: memlens_record::Error) -> CliError {
    match e {
        memlens_record::Error::Recording(e) => recording_error(e),
        memlens_record::Error::Procfs(p) => p.into(),
    }
}

/// Opens a recording for a report (every failure is exit 6).
pub fn open(path: &Path) -> CliResult<(Recording, Model)> {
    let rec = Recording::open(path).map_err(|e| match e {
        memlens_recording::Error::Sqlite { .. } | memlens_recording::Error::Io { .. } => {
            CliError::new(Code::BadRecording, e.to_string())
        }
        e => recording_error(e),
    })?;
    let model = Model::from_recording(&rec)
        .map_err(|e| CliError::new(Code::BadRecording, e.to_string()))?;
    Ok((rec, model))
}

/// The report files of a command, reserved when it starts: a destination that memlens may not
/// write (exists and is not memlens's, a link, a device, a missing or read-only directory) is
/// an error before anything runs.
#[derive(Debug, Default)]
pub struct Outputs {
    html: Option<PendingFile>,
    json: Option<PendingFile>,
}

impl Outputs {
    /// Reserves the HTML and JSON destinations asked for.
    pub fn reserve(html: Option<&Path>, json: Option<&Path>, force: bool) -> CliResult<Outputs> {
        if let (Some(h), Some(j)) = (html, json) {
            if h == j {
                return Err(CliError::new(
                    Code::Usage,
                    format!("--html and --json-out both name {}", h.display()),
                ));
            }
        }
        let html = html
            .map(|p| PendingFile::reserve(p, Kind::Html, force))
            .transpose()
            .map_err(output_error)?;
        let json = json
            .map(|p| PendingFile::reserve(p, Kind::Json, force))
            .transpose()
            .map_err(output_error)?;
        Ok(Outputs { html, json })
    }

    /// Whether any report file was asked for.
    pub fn any(&self) -> bool {
        self.html.is_some() || self.json.is_some()
    }

    /// Writes the reports (sizes in exact bytes with `bytes`, as `--bytes` asks) and moves them
    /// into place; each file is tried, the first failure is returned.
    fn write(&mut self, model: &Model, bytes: bool) -> CliResult<()> {
        let mut first_error = None;
        if let Some(p) = self.html.take() {
            let opts = html::Options {
                bytes,
                ..html::Options::default()
            };
            let r = commit(p, |w| {
                html::render_with(model, model.allocations.as_ref(), &opts, w)
            });
            first_error = first_error.or(r.err());
        }
        if let Some(p) = self.json.take() {
            let r = commit(p, |w| {
                recording_json::render(model, &recording_json::Options { pretty: true }, w)
            });
            first_error = first_error.or(r.err());
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Renders into a reserved file and moves it into place.
fn commit(
    mut p: PendingFile,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> CliResult<()> {
    let dest = p.path().to_path_buf();
    let written = match p.file() {
        Some(f) => {
            let mut w = std::io::BufWriter::new(f);
            render(&mut w).and_then(|()| w.flush())
        }
        None => Ok(()),
    };
    let fail = |why: String| {
        CliError::new(
            Code::Output,
            format!("cannot write {}: {why}", dest.display()),
        )
    };
    match written {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            return Err(fail(format!("{e} (the disk is full)")))
        }
        Err(e) => return Err(fail(e.to_string())),
        Ok(()) => {}
    }
    let placed = p.commit().map_err(output_error)?;
    crate::messages::note(&format!("wrote {}", placed.display()));
    Ok(())
}

/// Where the text summary goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// stdout (`record`, `report`).
    Stdout,
    /// stderr (`run`: stdout belongs to the program).
    Stderr,
    /// Nowhere.
    Off,
}

/// Prints a model as asked: the report files, JSON on stdout, the text summary where
/// `summary` says. A closed stdout ends the output quietly ([`output::write_error`]); a
/// failure on stderr is ignored (there is nowhere left to say it).
pub fn emit(
    model: &Model,
    global: &Global,
    json_stdout: bool,
    summary: Summary,
    outputs: &mut Outputs,
) -> CliResult<()> {
    let files = outputs.write(model, global.bytes);
    if json_stdout {
        let stdout = std::io::stdout();
        recording_json::render(
            model,
            &recording_json::Options { pretty: true },
            stdout.lock(),
        )
        .map_err(output::write_error)?;
    }
    let opts = recording_text::Options {
        bytes: global.bytes,
        ..recording_text::Options::default()
    };
    let alloc_opts = memlens_report::alloc_text::Options {
        bytes: global.bytes,
        ..memlens_report::alloc_text::Options::default()
    };
    // the summary, then what --trace attributed (when the recording has a trace)
    let text = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        recording_text::render(model, &opts, &mut *out)?;
        if let Some(a) = &model.allocations {
            writeln!(out)?;
            memlens_report::alloc_text::render(a, &alloc_opts, &mut *out)?;
        }
        Ok(())
    };
    match summary {
        Summary::Stdout => text(&mut std::io::stdout().lock()).map_err(output::write_error)?,
        Summary::Stderr => {
            let _ = text(&mut std::io::stderr().lock());
        }
        Summary::Off => {}
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_safe_dated_and_unique_per_process() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_042);
        assert_eq!(
            default_name("py/../th<o>n", t, 4242),
            "memlens-py..thon-20261118-110640.042-4242.db"
        );
        assert_ne!(default_name("x", t, 1), default_name("x", t, 2));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
