//! Renderers: turn ledgers and recordings into terminal text, JSON and HTML.
//!
//! Every renderer is a library function taking a model, options and a writer; none reads
//! `/proc` or a target. Strings from targets are escaped here ([`escape`]). For recordings it
//! also computes the report model ([`Model`]: peak and its source, growth phases, series).

pub mod advice_text;
pub mod alloc_flame;
pub mod alloc_html;
pub mod alloc_lines;
pub mod alloc_series_html;
pub mod alloc_text;
pub mod census_text;
pub mod diff_html;
pub mod diff_text;
pub mod escape;
pub mod growth;
pub mod html;
pub mod leak;
pub mod ledger_text;
pub mod model;
pub mod peak;
pub mod python_text;
pub mod recording_advice;
pub mod recording_json;
pub mod recording_text;
pub mod referrers_text;
pub mod sha256;
pub mod sharing_over_time;
pub mod sharing_text;
pub mod snapshot_html;
pub mod stacks_text;
mod stored;

pub use model::Model;
