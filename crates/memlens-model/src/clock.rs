//! The clock of the times memlens reports: the wall-clock stamps it writes (a recording's start,
//! the default name of a recording file) and the durations it measures and prints (how long a
//! target was paused, how long a read took). Deadlines, schedules and a recording's sample
//! times are not reported times and keep reading `Instant` directly.
//!
//! `MEMLENS_FIXED_CLOCK=<unix seconds>` (for tests, `docs/cli.md`) fixes this clock: every wall
//! -clock stamp is that time and every reported duration is zero, so outputs do not depend on
//! when or how fast they were made. A value that is not a number of seconds (`1700000000`,
//! `1700000000.25`) fixes the clock at 0, the Unix epoch: set at all, the clock is fixed.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the clock.
pub const FIXED_CLOCK_VAR: &str = "MEMLENS_FIXED_CLOCK";

/// A clock: the system's, or fixed at a time since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    fixed: Option<Duration>,
}

impl Clock {
    /// The system's clock.
    pub const SYSTEM: Clock = Clock { fixed: None };

    /// A clock fixed at `since_epoch`.
    pub fn fixed_at(since_epoch: Duration) -> Clock {
        Clock {
            fixed: Some(since_epoch),
        }
    }

    /// The clock `MEMLENS_FIXED_CLOCK` asks for (`value` is its value, `None` when unset).
    pub fn from_setting(value: Option<&[u8]>) -> Clock {
        Clock {
            fixed: value.map(|v| parse_seconds(v).unwrap_or(Duration::ZERO)),
        }
    }

    /// Whether the clock is fixed.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// The wall-clock time now.
    pub fn now(&self) -> SystemTime {
        match self.fixed {
            Some(t) => UNIX_EPOCH + t,
            None => SystemTime::now(),
        }
    }

    /// The wall-clock time at `then`, an instant in the past (the fixed time when fixed).
    pub fn wall_time_at(&self, then: Instant) -> SystemTime {
        let now = self.now();
        if self.is_fixed() {
            return now;
        }
        now.checked_sub(then.elapsed()).unwrap_or(now)
    }

    /// A measured duration as memlens reports it: zero when the clock is fixed.
    pub fn reported(&self, measured: Duration) -> Duration {
        if self.is_fixed() {
            Duration::ZERO
        } else {
            measured
        }
    }
}

/// `SECONDS[.FRACTION]` (digits only, at most nine of fraction) as a duration.
fn parse_seconds(v: &[u8]) -> Option<Duration> {
    let (whole, fraction) = match v.iter().position(|b| *b == b'.') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(whole) || fraction.is_some_and(|f| !digits(f) || f.len() > 9) {
        return None;
    }
    let fraction = fraction.unwrap_or_default();
    let secs: u64 = std::str::from_utf8(whole).ok()?.parse().ok()?;
    let nanos = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    Some(Duration::new(secs, nanos))
}

/// The clock of this process: fixed by `MEMLENS_FIXED_CLOCK`, read once.
pub fn clock() -> Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    *CLOCK.get_or_init(|| {
        use std::os::unix::ffi::OsStrExt;
        let value = std::env::var_os(FIXED_CLOCK_VAR);
        Clock::from_setting(value.as_ref().map(|v| v.as_bytes()))
    })
}

/// The wall-clock time now ([`Clock::now`] of [`clock`]).
pub fn now() -> SystemTime {
    clock().now()
}

/// The wall-clock time at `then` ([`Clock::wall_time_at`] of [`clock`]).
pub fn wall_time_at(then: Instant) -> SystemTime {
    clock().wall_time_at(then)
}

/// A measured duration as reported ([`Clock::reported`] of [`clock`]).
pub fn reported(measured: Duration) -> Duration {
    clock().reported(measured)
}

/// Measures a duration memlens reports: [`Stopwatch::elapsed`] is zero when the clock is fixed.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: Instant,
}

impl Stopwatch {
    /// Starts measuring now.
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
        }
    }

    /// The time since the start, as reported.
    pub fn elapsed(&self) -> Duration {
        reported(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fixed_clock_gives_its_time_and_zero_durations() {
        let c = Clock::from_setting(Some(b"1700000000"));
        assert!(c.is_fixed());
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(c.now(), t);
        let then = Instant::now() - Duration::from_secs(5);
        assert_eq!(c.wall_time_at(then), t);
        assert_eq!(c.reported(Duration::from_millis(37)), Duration::ZERO);
    }

    #[test]
    fn the_system_clock_is_read() {
        let c = Clock::from_setting(None);
        assert_eq!(c, Clock::SYSTEM);
        let before = SystemTime::now();
        let now = c.now();
        assert!(now >= before && now <= SystemTime::now());
        assert_eq!(
            c.reported(Duration::from_millis(37)),
            Duration::from_millis(37)
        );
        let then = Instant::now() - Duration::from_secs(5);
        let at = c.wall_time_at(then);
        let ago = SystemTime::now().duration_since(at).unwrap();
        assert!(ago >= Duration::from_secs(5) && ago < Duration::from_secs(600));
    }

    #[test]
    fn settings_are_seconds_or_the_epoch() {
        let at = |v: &[u8]| Clock::from_setting(Some(v)).now();
        assert_eq!(
            at(b"1700000000.25"),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(at(b"0.000000001"), UNIX_EPOCH + Duration::from_nanos(1));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"1.",
            b".5",
            b"1e9",
            b"1.0000000001",
            b" 1",
        ] {
            assert_eq!(at(bad), UNIX_EPOCH, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
