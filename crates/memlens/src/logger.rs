//! A minimal `log` backend: silent by default, `-v` for info, `-vv` for debug, all on stderr.

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // Messages quote paths and names: escaped like every message. `warning`, as the
            // reports word their warnings (log's own name for the level is `WARN`).
            let kind = match r.level() {
                log::Level::Warn => "warning".to_string(),
                l => l.as_str().to_lowercase(),
            };
            crate::messages::message(&kind, &r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger at the verbosity given by the number of `-v` flags.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
