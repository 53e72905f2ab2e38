//! Parsers of flag values, each with a documented range (`docs/cli.md`) and one message style:
//! "not a KIND: how to write one" or "out of range: a KIND from MIN to MAX". clap prints the
//! flag and the value in front of the message.

use std::time::Duration;

/// The bounds of a duration flag.
#[derive(Debug, Clone, Copy)]
struct DurationRange {
    min: Duration,
    max: Duration,
    min_text: &'static str,
    max_text: &'static str,
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `--interval`, `--ledger-every`, `--census-every`: 1 ms to 1 h.
const PERIOD: DurationRange = DurationRange {
    min: MS,
    max: HOUR,
    min_text: "1ms",
    max_text: "1h",
};

/// `record --duration`: 1 ms to 30 days.
const RECORD_DURATION: DurationRange = DurationRange {
    min: MS,
    max: Duration::from_secs(30 * 86_400),
    min_text: "1ms",
    max_text: "30d",
};

/// `census --growth`: 1 ms to 1 day.
const GROWTH: DurationRange = DurationRange {
    min: MS,
    max: DAY,
    min_text: "1ms",
    max_text: "24h",
};

const DURATION_SYNTAX: &str =
    "not a duration: write a number with a unit, ms, s, m, h or d (e.g. 10ms, 2s, 1.5m; a bare number is seconds)";

/// Reads `10ms`, `2s`, `1.5`, `2m`, `1h`, `1d` (a bare number is seconds) within `range`.
fn duration_in(s: &str, range: DurationRange) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(DURATION_SYNTAX.into()),
    };
    let n: f64 = num.parse().map_err(|_| DURATION_SYNTAX.to_string())?;
    let secs = n * scale;
    let out_of_range = || {
        format!(
            "out of range: a duration from {} to {}",
            range.min_text, range.max_text
        )
    };
    if !secs.is_finite() || secs < range.min.as_secs_f64() || secs > range.max.as_secs_f64() {
        return Err(out_of_range());
    }
    // Rounding to the nanosecond could cross a bound by a hair; clamp to the range.
    Ok(Duration::from_secs_f64(secs).clamp(range.min, range.max))
}

/// A sampling period (`--interval`, `--ledger-every`, `--census-every`): 1 ms to 1 h.
pub fn period(s: &str) -> Result<Duration, String> {
    duration_in(s, PERIOD)
}

/// `record --duration`: 1 ms to 30 days.
pub fn record_duration(s: &str) -> Result<Duration, String> {
    duration_in(s, RECORD_DURATION)
}

/// `census --growth`: 1 ms to 24 h.
pub fn growth(s: &str) -> Result<Duration, String> {
    duration_in(s, GROWTH)
}

/// The largest size a flag takes: 8 EiB (sizes are stored as signed 64-bit integers).
pub const MAX_SIZE: u64 = 1 << 63;

const SIZE_SYNTAX: &str = "not a size: write a number with a binary unit, B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB or E/EiB (e.g. 512M, 1.5GiB; a bare number is bytes)";

/// A size (`--max-peak`): `512M`, `1.5GiB`, `1000` (bytes); units are binary (K = KiB =
/// 1024); from 1 B to 8 EiB. Computed exactly: no float rounding, no saturation.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        "e" | "eb" | "eib" => 60,
        _ => return Err(SIZE_SYNTAX.into()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(SIZE_SYNTAX.into());
    }
    let out_of_range = || "out of range: a size from 1B to 8EiB".to_string();
    // Digits beyond these cannot change whether the value is in range (or its byte count).
    let int = int.trim_start_matches('0');
    if int.len() > 20 {
        return Err(out_of_range());
    }
    let frac = &frac[..frac.len().min(18)];
    let digits = |d: &str| -> Option<u128> {
        d.bytes().try_fold(0u128, |acc, b| {
            acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
        })
    };
    let whole = digits(int).ok_or_else(out_of_range)?;
    let part = digits(frac).ok_or_else(out_of_range)?;
    let scale = 10u128.pow(frac.len() as u32);
    // whole * 2^shift + round(part / scale * 2^shift) in 128 bits: whole < 10^20 < 2^67 and
    // part < 10^18 < 2^60, each shifted by at most 60.
    let bytes = (whole << shift) + ((part << shift) + scale / 2) / scale;
    if bytes == 0 || bytes > u128::from(MAX_SIZE) {
        return Err(out_of_range());
    }
    Ok(bytes as u64)
}

/// `--cpu-budget`: a percentage of one core, `2` or `2.5%`, from 0.01 to 100; returned as a
/// share (0.025).
pub fn percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| "not a percentage: write a number, e.g. 2 or 2.5%".to_string())?;
    if !n.is_finite() || !(0.01..=100.0).contains(&n) {
        return Err("out of range: a percentage from 0.01 to 100".into());
    }
    Ok(n / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_bounded() {
        assert_eq!(period("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(period("2"), Ok(Duration::from_secs(2)));
        assert_eq!(period("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(period("1h"), Ok(HOUR));
        assert_eq!(period("1ms"), Ok(MS));
        for bad in ["0", "0.5ms", "100us", "61m", "100000h", "1e9", "inf", "nan"] {
            let e = period(bad).unwrap_err();
            assert!(
                e.starts_with("out of range") || e.starts_with("not a duration"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            period("100000h").unwrap_err(),
            "out of range: a duration from 1ms to 1h"
        );
        assert!(period("ten").unwrap_err().starts_with("not a duration"));
        assert!(period("5 parsecs")
            .unwrap_err()
            .starts_with("not a duration"));
        assert!(growth("0").is_err());
        assert_eq!(growth("24h"), Ok(DAY));
        assert!(growth("25h").is_err());
        assert_eq!(record_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(record_duration("31d").is_err());
    }

    /// The one duration syntax of every flag (`docs/cli.md`): a number, decimals allowed, with
    /// `ms`, `s`, `m`, `h` or `d`; a bare number is seconds; only the range differs by flag.
    #[test]
    fn one_duration_syntax_for_every_flag() {
        for parse in [period, record_duration, growth] {
            assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
            assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
            assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
            assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
            assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
            assert_eq!(parse(" 0.25s "), Ok(Duration::from_millis(250)));
            assert_eq!(parse("1h"), Ok(HOUR));
            assert_eq!(parse("1ms"), Ok(MS));
            for bad in ["x", "5 parsecs", "", "s", "1.2.3s", "-1s", "1e3"] {
                assert!(
                    parse(bad).unwrap_err().starts_with("not a duration"),
                    "{bad}"
                );
            }
            for zero in ["0", "0s", "0ms", "0.0001"] {
                assert!(
                    parse(zero).unwrap_err().starts_with("out of range"),
                    "{zero}"
                );
            }
        }
        assert_eq!(growth("1d"), Ok(DAY));
        assert_eq!(record_duration("2d"), Ok(2 * DAY));
        assert!(period("2h").unwrap_err().starts_with("out of range"));
    }

    #[test]
    fn sizes_are_exact_and_bounded() {
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("1.5GiB"), Ok(3 << 29));
        assert_eq!(size("1000"), Ok(1000));
        assert_eq!(size("1B"), Ok(1));
        assert_eq!(size("8EiB"), Ok(MAX_SIZE));
        assert_eq!(size("0.5k"), Ok(512));
        assert_eq!(size("9223372036854775808"), Ok(MAX_SIZE));
        let range = "out of range: a size from 1B to 8EiB";
        for bad in [
            "16EiB",
            "8.0000001EiB",
            "9223372036854775809",
            "99999999999999999999999",
            "0",
            "0.0001",
            "000000000000000000000000000000000",
        ] {
            assert_eq!(size(bad), Err(range.to_string()), "{bad}");
        }
        for bad in ["", ".", "1..2M", "-1", "12 parsecs", "1e3", "M"] {
            assert!(size(bad).unwrap_err().starts_with("not a size"), "{bad}");
        }
        assert_eq!(size("0000001K"), Ok(1024));
    }

    #[test]
    fn percents() {
        assert_eq!(percent("2.5%"), Ok(0.025));
        assert_eq!(percent("100"), Ok(1.0));
        assert!(percent("200").unwrap_err().starts_with("out of range"));
        assert!(percent("0").unwrap_err().starts_with("out of range"));
        assert!(percent("x").unwrap_err().starts_with("not a percentage"));
    }
}
