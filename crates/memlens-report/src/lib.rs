//! memlens-report.
