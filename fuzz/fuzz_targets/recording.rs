//! The recording reader, as `memlens report FILE` uses it on a file someone handed over:
//! `Recording::open`, then the report model and the text, JSON and HTML renderers.
//!
//! First byte even: the rest is the file, byte for byte. Odd: the rest is a program of rows
//! written with the real schema (any SQLite value in any column: NULL, huge and negative
//! integers, NaN and infinite reals, text that is not UTF-8, blobs), so the reader sees a
//! well-formed database with hostile contents.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use memlens_fuzz::recording::write_rows;
use memlens_recording::Recording;
use memlens_report::{html, recording_json, recording_text, Model};

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("recording"), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = workdir().join("recording.db");
    clean(&file);
    let written = if mode % 2 == 0 {
        std::fs::write(&file, rest).is_ok()
    } else {
        write_rows(&file, rest).is_ok()
    };
    if written {
        read_and_render(&file);
    }
    clean(&file);
});

fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memlens-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Removes the file and what SQLite may have made beside it (only names this target made).
fn clean(file: &Path) {
    for suffix in std::iter::once("").chain(memlens_recording::destination::COMPANIONS) {
        let mut p = file.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn read_and_render(file: &Path) {
    let Ok(rec) = Recording::open(file) else {
        return;
    };
    let _ = rec.complete();
    for l in &rec.ledgers {
        let _ = rec.ledger_json(l.id);
    }
    let Ok(model) = Model::from_recording(&rec) else {
        return;
    };
    let sink = std::io::sink();
    recording_text::render(&model, &recording_text::Options::default(), sink)
        .unwrap_or_else(|e| panic!("text: {e}"));
    recording_json::render(&model, &recording_json::Options::default(), std::io::sink())
        .unwrap_or_else(|e| panic!("json: {e}"));
    html::render(&model, &html::Options::default(), std::io::sink())
        .unwrap_or_else(|e| panic!("html: {e}"));
}
