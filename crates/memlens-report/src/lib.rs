//! memlens-report: renderers of memlens's models, each `render(&Model, &Options, impl Write)`:
//! terminal text, JSON and self-contained HTML. It computes the report model of a recording
//! (peak, growth phases, series) and never reads `/proc` itself.

pub mod growth;
pub mod html;
pub mod model;
pub mod recording_json;
pub mod recording_text;

pub use model::Model;
