//! memlens-record.
