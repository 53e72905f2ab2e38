//! What a recording says about itself: [`Meta`], written when it is created (and completed while
//! it starts), and [`End`], written when it finishes. Both are typed here and stored as the
//! `meta` table's `key`/`value` text rows `docs/recording.md` lists: the key strings and the
//! number formats are the file format, and are written and parsed in this file only.

use std::collections::BTreeMap;

/// How the recording was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `memlens run`: memlens started the program.
    Run,
    /// `memlens record`: memlens followed a running process.
    Record,
}

impl Mode {
    /// The word stored in `meta.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Record => "record",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "run" => Some(Mode::Run),
            "record" => Some(Mode::Record),
            _ => None,
        }
    }
}

/// The recording's metadata from its start. Every field is optional when read back: a
/// recording from an older memlens, or one cut off early, may lack any of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// `run` or `record`.
    pub mode: Option<Mode>,
    /// The command line (untrusted: the program's arguments).
    pub command: Option<String>,
    /// The PID of the tree's root (0 until `run` has started the program).
    pub root_pid: Option<u32>,
    /// The wall-clock time of t = 0, in seconds since the Unix epoch.
    pub started_unix: Option<f64>,
    /// The counters' period (s).
    pub interval_s: Option<f64>,
    /// The CPU budget (percent of one core).
    pub cpu_budget: Option<f64>,
    /// The ledgers' period (s).
    pub ledger_interval_s: Option<f64>,
    /// The memlens that wrote it.
    pub memlens_version: Option<String>,
    /// The system's page size (bytes).
    pub page_size: Option<u64>,
    /// The version of the memory cgroup memlens made for the run (1 or 2).
    pub cgroup_version: Option<u8>,
    /// That cgroup's path in its hierarchy.
    pub cgroup_path: Option<String>,
    /// Why the run has no memory cgroup of memlens's own (in words).
    pub cgroup_error: Option<String>,
    /// The period of copy-on-write sharing measurements (s), when they were asked for.
    pub sharing_interval_s: Option<f64>,
    /// Why sharing was not measured at all (`--no-sharing`), in words.
    pub sharing_off: Option<String>,
}

/// What the recording's writer adds when it finishes cleanly (a recording cut off has none of
/// it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct End {
    /// The last time anything was recorded (s).
    pub end_t: Option<f64>,
    /// Ticks taken.
    pub ticks: Option<u64>,
    /// The longest tick interval the CPU budget imposed (s), when it spaced the ticks out.
    pub budget_interval_s: Option<f64>,
    /// memlens's own CPU seconds, start-up included.
    pub memlens_cpu_s: Option<f64>,
    /// The program's exit code (shell style).
    pub exit_code: Option<i32>,
    /// The signal that ended the program.
    pub exit_signal: Option<i32>,
    /// The peak charge of the run's memory cgroup (bytes).
    pub cgroup_peak: Option<u64>,
}

/// `meta.schema_version`.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
/// `meta.complete` (`1` once the writer finished cleanly).
pub(crate) const COMPLETE_KEY: &str = "complete";

fn text(v: &Option<String>) -> Option<String> {
    v.clone()
}

fn shown<T: std::fmt::Display>(v: Option<T>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn parsed<T: std::str::FromStr>(m: &BTreeMap<String, String>, key: &str) -> Option<T> {
    m.get(key)?.parse().ok()
}

impl Meta {
    /// The `meta` rows, in the file's key names and formats (`None`: no row).
    pub(crate) fn rows(&self) -> [(&'static str, Option<String>); 14] {
        [
            ("mode", self.mode.map(|m| m.as_str().to_string())),
            ("command", text(&self.command)),
            ("root_pid", shown(self.root_pid)),
            ("started_unix", self.started_unix.map(|v| format!("{v:.6}"))),
            ("interval_s", shown(self.interval_s)),
            ("cpu_budget", shown(self.cpu_budget)),
            ("ledger_interval_s", shown(self.ledger_interval_s)),
            ("memlens_version", text(&self.memlens_version)),
            ("page_size", shown(self.page_size)),
            ("cgroup_version", shown(self.cgroup_version)),
            ("cgroup_path", text(&self.cgroup_path)),
            ("cgroup_error", text(&self.cgroup_error)),
            ("sharing_interval_s", shown(self.sharing_interval_s)),
            ("sharing_off", text(&self.sharing_off)),
        ]
    }

    /// Reads the rows back; a value that does not parse is left out.
    pub(crate) fn from_rows(m: &BTreeMap<String, String>) -> Meta {
        Meta {
            mode: m.get("mode").and_then(|v| Mode::parse(v)),
            command: m.get("command").cloned(),
            root_pid: parsed(m, "root_pid"),
            started_unix: parsed(m, "started_unix"),
            interval_s: parsed(m, "interval_s"),
            cpu_budget: parsed(m, "cpu_budget"),
            ledger_interval_s: parsed(m, "ledger_interval_s"),
            memlens_version: m.get("memlens_version").cloned(),
            page_size: parsed(m, "page_size"),
            cgroup_version: parsed(m, "cgroup_version"),
            cgroup_path: m.get("cgroup_path").cloned(),
            cgroup_error: m.get("cgroup_error").cloned(),
            sharing_interval_s: parsed(m, "sharing_interval_s"),
            sharing_off: m.get("sharing_off").cloned(),
        }
    }
}

impl End {
    /// The `meta` rows, in the file's key names and formats (`None`: no row).
    pub(crate) fn rows(&self) -> [(&'static str, Option<String>); 7] {
        [
            ("end_t", self.end_t.map(|v| format!("{v:.6}"))),
            ("ticks", shown(self.ticks)),
            (
                "budget_interval_s",
                self.budget_interval_s.map(|v| format!("{v:.6}")),
            ),
            (
                "memlens_cpu_s",
                self.memlens_cpu_s.map(|v| format!("{v:.3}")),
            ),
            ("exit_code", shown(self.exit_code)),
            ("exit_signal", shown(self.exit_signal)),
            ("cgroup_peak", shown(self.cgroup_peak)),
        ]
    }

    /// Reads the rows back; a value that does not parse is left out.
    pub(crate) fn from_rows(m: &BTreeMap<String, String>) -> End {
        End {
            end_t: parsed(m, "end_t"),
            ticks: parsed(m, "ticks"),
            budget_interval_s: parsed(m, "budget_interval_s"),
            memlens_cpu_s: parsed(m, "memlens_cpu_s"),
            exit_code: parsed(m, "exit_code"),
            exit_signal: parsed(m, "exit_signal"),
            cgroup_peak: parsed(m, "cgroup_peak"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&'static str, Option<String>)]) -> BTreeMap<String, String> {
        rows.iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
            .collect()
    }

    #[test]
    fn rows_round_trip_in_the_file_formats() {
        let meta = Meta {
            mode: Some(Mode::Run),
            command: Some("python3 -c 'x'".into()),
            root_pid: Some(42),
            started_unix: Some(1_700_000_000.25),
            interval_s: Some(0.01),
            cpu_budget: Some(2.0),
            ledger_interval_s: Some(1.0),
            memlens_version: Some("0.1.0".into()),
            page_size: Some(4096),
            cgroup_version: Some(2),
            cgroup_path: Some("/memlens-1".into()),
            cgroup_error: None,
            sharing_interval_s: Some(2.0),
            sharing_off: None,
        };
        let rows = map(&meta.rows());
        // The strings older readers and `sqlite3` users see.
        assert_eq!(rows["started_unix"], "1700000000.250000");
        assert_eq!(rows["interval_s"], "0.01");
        assert_eq!(rows["cpu_budget"], "2");
        assert!(!rows.contains_key("cgroup_error"));
        assert_eq!(Meta::from_rows(&rows), meta);
        let end = End {
            end_t: Some(1.5),
            ticks: Some(150),
            budget_interval_s: None,
            memlens_cpu_s: Some(0.125),
            exit_code: Some(3),
            exit_signal: None,
            cgroup_peak: Some(1 << 20),
        };
        let rows = map(&end.rows());
        assert_eq!(rows["end_t"], "1.500000");
        assert_eq!(rows["memlens_cpu_s"], "0.125");
        assert_eq!(End::from_rows(&rows), end);
    }

    #[test]
    fn unknown_or_bad_values_are_left_out() {
        let mut m = BTreeMap::new();
        m.insert("mode".to_string(), "replay".to_string());
        m.insert("root_pid".to_string(), "-1".to_string());
        m.insert("exit_code".to_string(), "x".to_string());
        assert_eq!(Meta::from_rows(&m), Meta::default());
        assert_eq!(End::from_rows(&m), End::default());
    }
}
