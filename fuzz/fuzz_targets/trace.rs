//! The trace file parser (`memlens_recording::trace`), as `memlens run --trace` uses it on the
//! files the traced program wrote: any bytes, fed whole and in chunks of the sizes the first
//! byte picks, with small limits so every limit is reached. Properties: it never panics, the
//! chunked parse equals the whole one, and nothing kept is over a limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memlens_recording::trace::{parse, Limits, Parser};

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("trace"), |data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        line_bytes: 512,
        codes: 8,
        stacks: 8,
        frames: 4,
        snaps: 16,
        sites: 32,
        peak_sites: 8,
    };
    let whole = parse(rest, limits);
    let mut p = Parser::new(limits);
    for c in rest.chunks(usize::from(chunk).max(1)) {
        p.feed(c);
    }
    let chunked = p.finish();
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunked parse differs"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunked parse differs: {whole:?} vs {chunked:?}"),
    }
    if let Ok(t) = whole {
        assert!(t.codes.len() <= limits.codes);
        assert!(t.stacks.len() <= limits.stacks);
        assert!(t.stacks.values().all(|s| s.frames.len() <= limits.frames));
        assert!(t.snaps.len() <= limits.snaps);
        assert!(t.sites.len() <= limits.sites);
        assert!(t.peak.map_or(0, |p| p.sites.len()) <= limits.peak_sites);
    }
});
