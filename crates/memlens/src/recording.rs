//! What `run`, `record` and `report` share: sampling options, the default recording name, the
//! mapping of recording errors to exit codes, and printing a recording's report.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memlens_record::Recording;
use memlens_report::{html, recording_json, recording_text, Model};

use crate::exit::{CliError, CliResult, Code};
use crate::output::{write_error, Global};

/// Sampling options of `run` and `record`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Period of the cheap counters (statm/status of every process), e.g. `10ms`, `0.5s`
    /// (at least 1 ms).
    #[arg(long, default_value = "10ms", value_name = "D", value_parser = parse_interval)]
    pub interval: Duration,
    /// Share of one core the sampler may use, in percent (`2` or `2%`); PSS reads and full
    /// ledgers are scheduled within it.
    #[arg(long, default_value = "2", value_name = "PCT", value_parser = parse_percent)]
    pub cpu_budget: f64,
    /// Period of full ledgers (also taken near each new peak), stretched to fit the budget.
    #[arg(long, default_value = "1s", value_name = "D", value_parser = parse_duration)]
    pub ledger_every: Duration,
    /// Take an object census of every Python process this often (e.g. `30s`); it stops each
    /// process briefly while its memory is copied, and counts against the CPU budget.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub census_every: Option<Duration>,
    /// Do not read the Python view (GC, pymalloc) of the processes: the OS view only.
    #[arg(long)]
    pub no_python: bool,
    /// The recording file (default: `memlens-<name>-<UTC time>.db` in the current directory).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the self-contained HTML report here.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

impl SamplingArgs {
    /// The sampler configuration.
    pub fn config(&self) -> memlens_record::Config {
        memlens_record::Config {
            interval: self.interval,
            cpu_budget: self.cpu_budget,
            ledger_interval: self.ledger_every,
            census_interval: self.census_every,
            ..memlens_record::Config::default()
        }
    }

    /// Attaches the Python view to a sampler unless `--no-python`.
    pub fn attach_python(&self, sampler: &mut memlens_record::Sampler) {
        if !self.no_python {
            sampler.set_python_view(Box::new(memlens_record::LiveView::default()));
        }
    }

    /// Metadata every recording carries.
    pub fn meta(&self, mode: &str, command: &str, root: u32) -> Vec<(&'static str, String)> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        vec![
            ("mode", mode.to_string()),
            ("command", command.to_string()),
            ("root_pid", root.to_string()),
            ("started_unix", format!("{started:.6}")),
            ("interval_s", format!("{}", self.interval.as_secs_f64())),
            ("cpu_budget", format!("{}", self.cpu_budget)),
            (
                "ledger_interval_s",
                format!("{}", self.ledger_every.as_secs_f64()),
            ),
            ("memlens_version", env!("CARGO_PKG_VERSION").to_string()),
            ("page_size", memlens_procfs::page_size().to_string()),
        ]
    }

    /// The recording path: `-o`, or a fresh name in the current directory.
    pub fn output_path(&self, name: &str) -> PathBuf {
        match &self.output {
            Some(p) => p.clone(),
            None => PathBuf::from(default_name(name, std::time::SystemTime::now())),
        }
    }
}

/// Parses `10ms`, `1s`, `1.5`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10ms, 2s, 1m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit `{u}` in `{s}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A sampling interval: a duration of at least 1 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("`{s}` is shorter than the shortest interval, 1ms"));
    }
    Ok(d)
}

/// Parses `2.5` or `2.5%` into a share of one core (0.025).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage (e.g. 2.5 or 2.5%)"))?;
    if !n.is_finite() || n <= 0.0 || n > 100.0 {
        return Err(format!("`{s}` must be between 0 and 100 percent"));
    }
    Ok(n / 100.0)
}

/// `memlens-<name>-<YYYYmmdd-HHMMSS>.db`, the name reduced to safe characters.
pub fn default_name(name: &str, when: std::time::SystemTime) -> String {
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
    let secs = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "memlens-{safe}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}.db",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
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

/// Maps a recording error to the user's message and exit code.
pub fn recording_error(e: memlens_record::Error) -> CliError {
    use memlens_record::Error as E;
    match e {
        E::NotFound { .. }
        | E::NotARecording { .. }
        | E::Truncated { .. }
        | E::Corrupt { .. }
        | E::UnsupportedVersion { .. } => CliError::new(Code::BadRecording, e.to_string())
            .with_hint("memlens reads the .db files written by `memlens run` and `memlens record`; a recording cut off by a crash is readable, one damaged after that is not"),
        E::Procfs(p) => p.into(),
        E::Sqlite { .. } | E::Io { .. } => CliError::new(Code::Failure, e.to_string()),
    }
}

/// Opens a recording for a report (every failure is exit 6).
pub fn open(path: &Path) -> CliResult<(Recording, Model)> {
    let rec = Recording::open(path).map_err(|e| match e {
        memlens_record::Error::Sqlite { .. } | memlens_record::Error::Io { .. } => {
            CliError::new(Code::BadRecording, e.to_string())
        }
        e => recording_error(e),
    })?;
    let model = Model::from_recording(&rec)
        .map_err(|e| CliError::new(Code::BadRecording, e.to_string()))?;
    Ok((rec, model))
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

/// Prints a model as asked: JSON on stdout, the text summary where `summary` says, and HTML to
/// a file.
pub fn emit(
    model: &Model,
    global: &Global,
    json: bool,
    summary: Summary,
    html_out: Option<&Path>,
) -> CliResult<()> {
    if let Some(out) = html_out {
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(out)?;
            let mut w = std::io::BufWriter::new(f);
            html::render(model, &html::Options::default(), &mut w)?;
            w.flush()
        };
        write().map_err(|e| {
            CliError::new(
                Code::Failure,
                format!("cannot write {}: {e}", out.display()),
            )
        })?;
    }
    if json {
        let stdout = std::io::stdout();
        recording_json::render(
            model,
            &recording_json::Options { pretty: true },
            stdout.lock(),
        )
        .map_err(write_error)?;
    }
    let opts = recording_text::Options {
        bytes: global.bytes,
        ..recording_text::Options::default()
    };
    match summary {
        Summary::Stdout => {
            recording_text::render(model, &opts, std::io::stdout().lock()).map_err(write_error)?
        }
        Summary::Stderr => {
            recording_text::render(model, &opts, std::io::stderr().lock()).map_err(write_error)?
        }
        Summary::Off => {}
    }
    if let Some(out) = html_out {
        eprintln!("memlens: wrote {}", out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percent() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_interval("100us").is_err());
        assert_eq!(parse_interval("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_percent("2.5%"), Ok(0.025));
        assert!(parse_percent("200").is_err());
    }

    #[test]
    fn default_names_are_safe_and_dated() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            default_name("py/../th<o>n", t),
            "memlens-py..thon-20261118-110640.db"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
