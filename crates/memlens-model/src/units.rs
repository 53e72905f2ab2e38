//! Sizes as every memlens output prints them: binary units (`1.50 KiB`) or, with `--bytes`,
//! exact byte counts. [`SizeStyle`] is the one place a byte amount becomes text; every text and
//! HTML renderer formats sizes, signed changes and rates through it.

use std::fmt;

/// How sizes are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SizeStyle {
    /// Binary units with three significant digits: `0 B`, `1.50 KiB`, `256 MiB`.
    #[default]
    Binary,
    /// Exact byte counts: `1536` (`--bytes`).
    Bytes,
}

impl SizeStyle {
    /// The style of a `--bytes` flag.
    pub fn exact(bytes: bool) -> SizeStyle {
        if bytes {
            SizeStyle::Bytes
        } else {
            SizeStyle::Binary
        }
    }

    /// A size in this style.
    pub fn size(self, bytes: u64) -> Size {
        Size { bytes, style: self }
    }

    /// A change of size, always signed: `+1.50 KiB`, `-1536`.
    pub fn delta(self, bytes: i64) -> Delta {
        Delta { bytes, style: self }
    }

    /// A rate of growth: `75.38 MiB/s` (two decimals of MiB, so phases compare at a glance),
    /// or `79043919 bytes/s`.
    pub fn rate(self, bytes_per_second: f64) -> Rate {
        Rate {
            bytes_per_second,
            style: self,
        }
    }
}

/// A size to print ([`SizeStyle::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    bytes: u64,
    style: SizeStyle,
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.style {
            SizeStyle::Bytes => self.bytes.to_string(),
            SizeStyle::Binary => binary(self.bytes),
        };
        // `pad` honours width and alignment (`{:>10}`) in tables.
        f.pad(&text)
    }
}

/// A signed change of size ([`SizeStyle::delta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    bytes: i64,
    style: SizeStyle,
}

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.bytes < 0 { '-' } else { '+' };
        let text = format!("{sign}{}", self.style.size(self.bytes.unsigned_abs()));
        f.pad(&text)
    }
}

/// A rate in bytes per second ([`SizeStyle::rate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    bytes_per_second: f64,
    style: SizeStyle,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.style {
            SizeStyle::Binary => format!("{:.2} MiB/s", self.bytes_per_second / 1048576.0),
            SizeStyle::Bytes => format!("{:.0} bytes/s", self.bytes_per_second),
        };
        f.pad(&text)
    }
}

/// `1536` -> `1.50 KiB`; `0` -> `0 B`. Three significant digits.
fn binary(v: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if v < 1024 {
        return format!("{v} B");
    }
    let mut f = v as f64;
    let mut u = 0;
    while f >= 1024.0 && u < UNITS.len() - 1 {
        f /= 1024.0;
        u += 1;
    }
    if f >= 100.0 {
        format!("{f:.0} {}", UNITS[u])
    } else if f >= 10.0 {
        format!("{f:.1} {}", UNITS[u])
    } else {
        format!("{f:.2} {}", UNITS[u])
    }
}

/// `1536` -> `1.50 KiB`: [`SizeStyle::Binary`] as a string, for callers without a style.
pub fn format_bytes(v: u64) -> String {
    SizeStyle::Binary.size(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(21 << 29), "10.5 GiB");
    }

    #[test]
    fn styles_print_sizes_deltas_and_rates() {
        let (bin, exact) = (SizeStyle::Binary, SizeStyle::Bytes);
        assert_eq!(SizeStyle::exact(true), exact);
        assert_eq!(SizeStyle::default(), bin);
        assert_eq!(bin.size(1023).to_string(), "1023 B");
        assert_eq!(bin.size(1024).to_string(), "1.00 KiB");
        assert_eq!(bin.size(u64::MAX).to_string(), "16384 PiB");
        assert_eq!(exact.size(1536).to_string(), "1536");
        assert_eq!(exact.size(u64::MAX).to_string(), u64::MAX.to_string());
        assert_eq!(format!("{:>10}|", bin.size(1536)), "  1.50 KiB|");
        assert_eq!(format!("{:<6}|", exact.size(12)), "12    |");
        assert_eq!(bin.delta(-1536).to_string(), "-1.50 KiB");
        assert_eq!(bin.delta(0).to_string(), "+0 B");
        assert_eq!(exact.delta(-1536).to_string(), "-1536");
        assert_eq!(exact.delta(i64::MIN).to_string(), "-9223372036854775808");
        assert_eq!(format!("{:>8}", exact.delta(7)), "      +7");
        assert_eq!(bin.rate(20.0 * 1048576.0).to_string(), "20.00 MiB/s");
        assert_eq!(exact.rate(1048576.4).to_string(), "1048576 bytes/s");
        assert_eq!(exact.rate(-2.0).to_string(), "-2 bytes/s");
        for v in [0, 1, 1023, 1 << 20, 3 << 29, u64::MAX] {
            let b = exact.size(v).to_string();
            assert!(b.bytes().all(|c| c.is_ascii_digit()), "{b}");
            assert_eq!(b.parse::<u64>().ok(), Some(v));
        }
    }
}
