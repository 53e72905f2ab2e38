//! Renderers: turn ledgers and recordings into terminal text, JSON and HTML.
//!
//! Every renderer is a library function taking a model, options and a writer; none reads
//! `/proc` or a target. Strings from targets are escaped here ([`escape`]).

pub mod escape;
pub mod ledger_text;
