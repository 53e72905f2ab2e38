//! memlens's integration tests, one binary: each module was a test binary of its own, all of
//! them compiling `support` again. Run one module with `cargo test -p memlens --test it MODULE::`.

mod advice;
mod advice_more;
mod advice_threads;
mod advice_tstack;
mod bytes_everywhere;
mod census_trust;
mod debug_offsets;
mod diff;
mod end_ledger;
mod fixed_clock;
mod golden;
mod launch;
mod leaks;
mod ledger;
mod no_harm;
mod package_import;
mod package_memory;
mod preload;
mod python_view;
mod python_view_path;
mod reads_itself;
mod recorder_truth;
mod referrers;
mod render_golden;
mod report_advice;
mod run_record;
mod serve;
mod sharing;
mod sharing_over_time;
mod sizes;
mod support;
mod top;
mod trace_report;
