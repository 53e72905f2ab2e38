//! The trace files of `memlens-preload` (`memlens run --trace`), versions 1 to 3, as
//! docs/trace-format.md defines them: a parser that never panics and bounds its memory.
//!
//! Lines are read one at a time ([`Parser::feed`] takes any chunks): a line longer than
//! [`Limits::line_bytes`] is skipped and counted, never held. Codes, stacks, frames per stack,
//! snapshots, site lines and peak sites each have a limit; what goes over one is counted in
//! [`Skipped`] (a frame list over its limit is cut and the stack marked truncated). Unknown
//! record kinds and unknown keys are ignored, as the format asks. A last line without its
//! newline (the process was writing it when the file was read, or was killed) is not parsed
//! (its numbers may be cut) and is counted as torn.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use memlens_model::allocations::Domain;

/// The newest trace file version this parser reads.
pub const TRACE_VERSION: u32 = 3;

/// Limits of what one trace file may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line kept (bytes, newline excluded).
    pub line_bytes: usize,
    /// Code objects.
    pub codes: usize,
    /// Interned stacks.
    pub stacks: usize,
    /// Frames kept per stack.
    pub frames: usize,
    /// `snap` lines.
    pub snaps: usize,
    /// `site` lines.
    pub sites: usize,
    /// `peaksite` lines of one peak block.
    pub peak_sites: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line_bytes: 64 * 1024,
            codes: 100_000,
            stacks: 200_000,
            frames: 256,
            snaps: 200_000,
            sites: 500_000,
            peak_sites: 200_000,
        }
    }
}

/// Why a file is not read at all.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The first line is not a trace header.
    #[error("not a memlens trace file ({0})")]
    NotATrace(String),
    /// Written by a newer tracer.
    #[error("trace file version {0} is not supported (this memlens reads 1 to {TRACE_VERSION})")]
    Version(u64),
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `mode=` of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// Every allocation recorded, with its size.
    All,
    /// Sampled by bytes.
    Sampled,
}

impl TraceMode {
    /// The name in the file and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            TraceMode::All => "all",
            TraceMode::Sampled => "sampled",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<TraceMode> {
        match s {
            "all" => Some(TraceMode::All),
            "sampled" => Some(TraceMode::Sampled),
            _ => None,
        }
    }
}

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version (1 to 3).
    pub version: u32,
    /// The traced process.
    pub pid: u32,
    /// Its parent.
    pub ppid: u32,
    /// `all` or `sampled`.
    pub mode: TraceMode,
    /// Mean sample interval (1 in `all` mode).
    pub sample_bytes: u64,
    /// `CLOCK_MONOTONIC` at the tracer's start (ns).
    pub start_ns: u64,
    /// `3.M` the tracer found (`None`: not Python, or not a version it knows; version 1
    /// files do not say).
    pub python: Option<String>,
    /// The window of temporary allocations (ns); absent in version 1.
    pub temp_ns: Option<u64>,
    /// The parent it was forked from.
    pub forked_from: Option<u32>,
    /// Live bytes inherited at fork.
    pub inherited_live_bytes: u64,
}

/// A code object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// `co_firstlineno`.
    pub first_line: u32,
    /// `co_filename` (decoded; untrusted).
    pub file: String,
    /// `co_qualname` or `co_name` (decoded; untrusted).
    pub name: String,
}

/// An interned stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDef {
    /// The allocator.
    pub domain: Domain,
    /// `(code id, line)`, innermost first.
    pub frames: Vec<(u32, u32)>,
    /// Deeper frames were left out (by the tracer, or over [`Limits::frames`]).
    pub truncated: bool,
    /// The walk stopped on a frame it could not read.
    pub unreadable: bool,
}

/// The figures of a `snap` or `end` line (version 1 lacks the per-domain ones: 0 there,
/// `live_malloc_bytes` then is `live - live_mmap`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snap {
    /// `CLOCK_MONOTONIC` (ns).
    pub t_ns: u64,
    /// Live bytes, all domains.
    pub live_bytes: u64,
    /// Live from anonymous mmap.
    pub live_mmap_bytes: u64,
    /// Live through the pymalloc domains.
    pub live_pymalloc_bytes: u64,
    /// Live through the malloc family.
    pub live_malloc_bytes: u64,
    /// The highest live so far.
    pub peak_live_bytes: u64,
    /// Allocated in all.
    pub total_bytes: u64,
    /// Live and never touched (estimate).
    pub untouched_bytes: u64,
    /// Sampled allocations.
    pub alloc_samples: u64,
    /// Frees of sampled allocations.
    pub free_samples: u64,
    /// Sampled allocations live.
    pub live_samples: u64,
    /// Samples refused by a full queue.
    pub dropped_allocs: u64,
    /// Frees refused by a full queue.
    pub dropped_frees: u64,
    /// Samples with no table slot.
    pub table_full: u64,
    /// Events lost at fork.
    pub lost_at_fork: u64,
    /// Samples whose stack walk stopped early.
    pub unreadable_stacks: u64,
    /// Samples whose stack did not fit in the tracer's tables (given a `lost=1` stack).
    pub stacks_lost: u64,
    /// The tracer's own resident memory (0 before it was reported).
    pub tracer_bytes: u64,
    /// A forked child's blocks inherited at fork and not freed since (version 3; the other
    /// figures count only its own allocations then). 0 before version 3, where a child's
    /// figures included them.
    pub inherited_live_bytes: u64,
}

/// The cumulative figures of one stack (`site` line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteFigures {
    /// Live bytes.
    pub live_bytes: u64,
    /// Live allocations.
    pub live_count: u64,
    /// Allocated bytes.
    pub alloc_bytes: u64,
    /// Allocations.
    pub alloc_count: u64,
    /// Freed bytes.
    pub freed_bytes: u64,
    /// Frees.
    pub freed_count: u64,
    /// Bytes freed within `temp_ns`.
    pub temp_bytes: u64,
    /// Allocations freed within `temp_ns`.
    pub temp_count: u64,
    /// A forked child's bytes of this stack inherited at fork and not freed since (version 3).
    pub inherited_bytes: u64,
    /// Those blocks.
    pub inherited_count: u64,
}

/// A `site` line and the snapshot it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The `t_ns` of the `snap` or `end` it follows.
    pub t_ns: u64,
    /// Whether it follows the `end` line.
    pub at_end: bool,
    /// The stack id.
    pub stack: u32,
    /// Its figures.
    pub figures: SiteFigures,
}

/// The last `peak` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeakSet {
    /// When (ns, monotonic).
    pub t_ns: u64,
    /// Live bytes then.
    pub live_bytes: u64,
    /// `(stack, bytes, count)` live then.
    pub sites: Vec<(u32, u64, u64)>,
}

/// What was skipped, and why: every line not taken is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Lines over [`Limits::line_bytes`].
    pub long_lines: u64,
    /// Lines of a known kind that do not parse (a missing or bad field).
    pub malformed: u64,
    /// Lines of a kind this reader does not know (ignored, as the format asks).
    pub unknown: u64,
    /// `code` lines over [`Limits::codes`].
    pub codes: u64,
    /// `stack` lines over [`Limits::stacks`].
    pub stacks: u64,
    /// Frames cut from stacks over [`Limits::frames`].
    pub frames: u64,
    /// `snap` lines over [`Limits::snaps`].
    pub snaps: u64,
    /// `site` lines over [`Limits::sites`].
    pub sites: u64,
    /// `peaksite` lines over [`Limits::peak_sites`].
    pub peak_sites: u64,
    /// `site`/`peaksite` lines naming a stack not defined before, or with no snapshot
    /// before them; frames naming an undefined code (kept, shown as unknown).
    pub undefined: u64,
    /// Lines after `end` that only a live process writes (`snap`, a second `end`).
    pub after_end: u64,
    /// A last line without its newline (not parsed).
    pub torn: u64,
    /// `peak` blocks cut short: fewer `peaksite` lines than their `sites=` before the next
    /// record or the end of the file (the earlier complete block stands).
    pub peak_cut: u64,
}

impl Skipped {
    /// Lines or items not taken, over all causes except unknown kinds (which the format says
    /// to ignore).
    pub fn total(&self) -> u64 {
        self.long_lines
            + self.malformed
            + self.codes
            + self.stacks
            + self.frames
            + self.snaps
            + self.sites
            + self.peak_sites
            + self.undefined
            + self.after_end
            + self.torn
            + self.peak_cut
    }
}

/// One trace file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The header.
    pub header: Header,
    /// Code objects by id.
    pub codes: BTreeMap<u32, Code>,
    /// Stacks by id.
    pub stacks: BTreeMap<u32, StackDef>,
    /// `snap` lines in file order.
    pub snaps: Vec<Snap>,
    /// The `end` line, if the process exited normally.
    pub end: Option<Snap>,
    /// `site` lines in file order.
    pub sites: Vec<Site>,
    /// The last complete `peak` block.
    pub peak: Option<PeakSet>,
    /// What was skipped.
    pub skipped: Skipped,
}

/// What a [`Parser`] read since the last [`Parser::take`]: the pieces of a file read while
/// the tracer still writes it (`memlens run --trace` imports during the run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Code objects defined (or redefined) since.
    pub codes: Vec<(u32, Code)>,
    /// Stacks defined (or redefined) since.
    pub stacks: Vec<(u32, StackDef)>,
    /// `snap` lines since, in file order.
    pub snaps: Vec<Snap>,
    /// The `end` line, the first time it is taken.
    pub end: Option<Snap>,
    /// `site` lines since, in file order.
    pub sites: Vec<Site>,
    /// The last complete `peak` block, when it changed since: it replaces the one taken
    /// before. A block is complete once its `sites=K` `peaksite` lines are read, or (a
    /// tracer that does not write `sites=`) once another record follows it or the file has
    /// ended ([`Parser::end_of_file`]); a block still being written is never taken.
    pub peak: Option<PeakSet>,
}

impl Delta {
    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
            && self.stacks.is_empty()
            && self.snaps.is_empty()
            && self.end.is_none()
            && self.sites.is_empty()
            && self.peak.is_none()
    }
}

impl Trace {
    /// The last figures: `end`, else the last `snap`.
    pub fn last(&self) -> Option<&Snap> {
        self.end.as_ref().or(self.snaps.last())
    }

    /// Each stack's last figures (at `end` when there is one: what is alive at exit).
    pub fn last_sites(&self) -> BTreeMap<u32, SiteFigures> {
        let mut m = BTreeMap::new();
        for s in &self.sites {
            m.insert(s.stack, s.figures);
        }
        m
    }
}

/// A `peak` block being read.
#[derive(Debug)]
struct OpenPeak {
    set: PeakSet,
    /// Its `sites=` (none from a tracer that does not write it).
    want: Option<u64>,
    /// `peaksite` lines read after it.
    seen: u64,
}

/// A line parser fed with chunks of a file.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// The partial line (never over `limits.line_bytes`).
    buf: Vec<u8>,
    /// The current line is over the limit: dropped up to its newline.
    overlong: bool,
    header: Option<Header>,
    /// Why the first line was refused.
    refused: Option<TraceError>,
    codes: BTreeMap<u32, Code>,
    stacks: BTreeMap<u32, StackDef>,
    snaps: Vec<Snap>,
    end: Option<Snap>,
    sites: Vec<Site>,
    /// The last complete peak block.
    peak: Option<PeakSet>,
    /// The block being read (its `peak` line read, not all its `peaksite` lines yet).
    open_peak: Option<OpenPeak>,
    /// The snapshot the next `site` lines follow: (t_ns, at_end).
    current: Option<(u64, bool)>,
    skipped: Skipped,
    /// `snap` and `site` lines taken so far (by [`Parser::take`] or kept): the limits count
    /// them all.
    n_snaps: usize,
    n_sites: usize,
    /// Ids of codes and stacks defined since the last take.
    new_codes: Vec<u32>,
    new_stacks: Vec<u32>,
    end_taken: bool,
    peak_changed: bool,
}

impl Parser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            buf: Vec::new(),
            overlong: false,
            header: None,
            refused: None,
            codes: BTreeMap::new(),
            stacks: BTreeMap::new(),
            snaps: Vec::new(),
            end: None,
            sites: Vec::new(),
            peak: None,
            open_peak: None,
            current: None,
            skipped: Skipped::default(),
            n_snaps: 0,
            n_sites: 0,
            new_codes: Vec::new(),
            new_stacks: Vec::new(),
            end_taken: false,
            peak_changed: false,
        }
    }

    /// The header, once its line is complete.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Why the file is not read (its first line is not a trace header, or a newer version).
    pub fn refused(&self) -> Option<&TraceError> {
        self.refused.as_ref()
    }

    /// What was skipped so far (a partial last line is not counted until
    /// [`Parser::finish`]).
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Whether the `end` line was read.
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// Takes what was read since the last take; the snapshots and sites taken are no longer
    /// held (the limits still count them), so [`Parser::finish`] then holds only what came
    /// after. Codes and stacks stay known (later lines name them).
    pub fn take(&mut self) -> Delta {
        self.take_with(true)
    }

    /// As [`Parser::take`], but a changed peak block stays pending until a later take that
    /// includes it (a block read in several pieces is then written once).
    pub fn take_lines(&mut self) -> Delta {
        self.take_with(false)
    }

    fn take_with(&mut self, with_peak: bool) -> Delta {
        let mut ids = std::mem::take(&mut self.new_codes);
        ids.sort_unstable();
        ids.dedup();
        let codes = ids
            .into_iter()
            .filter_map(|id| self.codes.get(&id).map(|c| (id, c.clone())))
            .collect();
        let mut ids = std::mem::take(&mut self.new_stacks);
        ids.sort_unstable();
        ids.dedup();
        let stacks = ids
            .into_iter()
            .filter_map(|id| self.stacks.get(&id).map(|s| (id, s.clone())))
            .collect();
        let end = match (self.end, self.end_taken) {
            (Some(e), false) => {
                self.end_taken = true;
                Some(e)
            }
            _ => None,
        };
        let peak = if with_peak && std::mem::take(&mut self.peak_changed) {
            self.peak.clone()
        } else {
            None
        };
        Delta {
            codes,
            stacks,
            snaps: std::mem::take(&mut self.snaps),
            end,
            sites: std::mem::take(&mut self.sites),
            peak,
        }
    }

    /// Takes the next bytes of the file.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.refused.is_some() {
                return;
            }
            let nl = chunk.iter().position(|&b| b == b'\n');
            let (part, rest, complete) = match nl {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if !self.overlong {
                if self.buf.len() + part.len() > self.limits.line_bytes {
                    self.overlong = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if complete {
                if self.overlong {
                    self.overlong = false;
                    self.skipped.long_lines += 1;
                    if self.header.is_none() {
                        self.refused =
                            Some(TraceError::NotATrace("the first line is too long".into()));
                    }
                } else {
                    let line = std::mem::take(&mut self.buf);
                    self.line(&line);
                    self.buf = line;
                    self.buf.clear();
                }
            }
        }
    }

    /// The file has ended (its writer is gone): a peak block still open is complete if it
    /// says no `sites=` (a tracer that does not write it), else cut if it has fewer
    /// `peaksite` lines ([`Skipped::peak_cut`]).
    pub fn end_of_file(&mut self) {
        self.close_peak();
    }

    /// The trace read so far (a partial last line is counted as torn; see
    /// [`Parser::end_of_file`] for an open peak block).
    pub fn finish(mut self) -> Result<Trace, TraceError> {
        self.end_of_file();
        if !self.buf.is_empty() || self.overlong {
            self.skipped.torn += 1;
        }
        if let Some(e) = self.refused {
            return Err(e);
        }
        let header = self
            .header
            .ok_or_else(|| TraceError::NotATrace("no complete header line".into()))?;
        Ok(Trace {
            header,
            codes: self.codes,
            stacks: self.stacks,
            snaps: self.snaps,
            end: self.end,
            sites: self.sites,
            peak: self.peak,
            skipped: self.skipped,
        })
    }

    fn line(&mut self, line: &[u8]) {
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        let kind = tokens.next().unwrap_or_default();
        let fields = Fields::new(tokens);
        if self.header.is_none() {
            match header(kind, &fields) {
                Ok(h) => self.header = Some(h),
                Err(e) => self.refused = Some(e),
            }
            return;
        }
        // Any other known record closes the peak block before it (an unknown kind is
        // ignored, as the format asks).
        if matches!(
            kind,
            b"code" | b"stack" | b"snap" | b"end" | b"site" | b"peak"
        ) {
            self.close_peak();
        }
        let ok = match kind {
            b"code" => self.code(&fields),
            b"stack" => self.stack(&fields),
            b"snap" | b"end" => self.snap(kind == b"end", &fields),
            b"site" => self.site(&fields),
            b"peak" => self.peak(&fields),
            b"peaksite" => self.peaksite(&fields),
            _ => {
                self.skipped.unknown += 1;
                Some(())
            }
        };
        if ok.is_none() {
            self.skipped.malformed += 1;
        }
    }

    fn code(&mut self, f: &Fields<'_>) -> Option<()> {
        let id = f.id("id")?;
        let code = Code {
            first_line: f.u32("first_line").unwrap_or(0),
            file: f.text("file")?,
            name: f.text("name")?,
        };
        if self.codes.len() >= self.limits.codes && !self.codes.contains_key(&id) {
            self.skipped.codes += 1;
            return Some(());
        }
        self.codes.insert(id, code);
        self.new_codes.push(id);
        Some(())
    }

    fn stack(&mut self, f: &Fields<'_>) -> Option<()> {
        let id = f.id("id")?;
        let domain = match f.get("domain")? {
            b"pymalloc" => Domain::Pymalloc,
            b"malloc" => Domain::Malloc,
            b"mmap" => Domain::Mmap,
            _ => return None,
        };
        let mut frames = Vec::new();
        let mut truncated = f.flag("truncated");
        for fr in f.get("frames").unwrap_or_default().split(|&b| b == b',') {
            if fr.is_empty() {
                continue;
            }
            let (c, l) = split_once(fr, b':')?;
            let (c, l) = (num(c).and_then(to_u32)?, num(l).and_then(to_u32)?);
            if frames.len() >= self.limits.frames {
                self.skipped.frames += 1;
                truncated = true;
                continue;
            }
            if !self.codes.contains_key(&c) {
                self.skipped.undefined += 1;
            }
            frames.push((c, l));
        }
        if self.stacks.len() >= self.limits.stacks && !self.stacks.contains_key(&id) {
            self.skipped.stacks += 1;
            return Some(());
        }
        self.stacks.insert(
            id,
            StackDef {
                domain,
                frames,
                truncated,
                unreadable: f.flag("unreadable"),
            },
        );
        self.new_stacks.push(id);
        Some(())
    }

    fn snap(&mut self, is_end: bool, f: &Fields<'_>) -> Option<()> {
        let n = |k| f.u64(k).unwrap_or(0);
        let live = f.u64("live_bytes")?;
        let mmap = n("live_mmap_bytes");
        let s = Snap {
            t_ns: f.u64("t_ns")?,
            live_bytes: live,
            live_mmap_bytes: mmap,
            live_pymalloc_bytes: n("live_pymalloc_bytes"),
            live_malloc_bytes: f
                .u64("live_malloc_bytes")
                .unwrap_or_else(|| live.saturating_sub(mmap)),
            peak_live_bytes: n("peak_live_bytes"),
            total_bytes: n("total_bytes"),
            untouched_bytes: n("untouched_bytes"),
            alloc_samples: n("alloc_samples"),
            free_samples: n("free_samples"),
            live_samples: n("live_samples"),
            dropped_allocs: n("dropped_allocs"),
            dropped_frees: n("dropped_frees"),
            table_full: n("table_full"),
            lost_at_fork: n("lost_at_fork"),
            unreadable_stacks: n("unreadable_stacks"),
            stacks_lost: n("stacks_lost"),
            tracer_bytes: n("tracer_bytes"),
            inherited_live_bytes: n("inherited_live_bytes"),
        };
        if self.end.is_some() {
            self.skipped.after_end += 1;
            self.current = None;
            return Some(());
        }
        if is_end {
            self.end = Some(s);
        } else if self.n_snaps >= self.limits.snaps {
            self.skipped.snaps += 1;
            // Its sites still update the stacks' state, at this time.
        } else {
            self.n_snaps += 1;
            self.snaps.push(s);
        }
        self.current = Some((s.t_ns, is_end));
        Some(())
    }

    fn site(&mut self, f: &Fields<'_>) -> Option<()> {
        let stack = f.id("stack")?;
        let n = |k| f.u64(k).unwrap_or(0);
        let figures = SiteFigures {
            live_bytes: f.u64("live_bytes")?,
            live_count: n("live_count"),
            alloc_bytes: n("alloc_bytes"),
            alloc_count: n("alloc_count"),
            freed_bytes: n("freed_bytes"),
            freed_count: n("freed_count"),
            temp_bytes: n("temp_bytes"),
            temp_count: n("temp_count"),
            inherited_bytes: n("inherited_bytes"),
            inherited_count: n("inherited_count"),
        };
        let Some((t_ns, at_end)) = self.current else {
            self.skipped.undefined += 1;
            return Some(());
        };
        if !self.stacks.contains_key(&stack) {
            self.skipped.undefined += 1;
            return Some(());
        }
        if self.n_sites >= self.limits.sites {
            self.skipped.sites += 1;
            return Some(());
        }
        self.n_sites += 1;
        self.sites.push(Site {
            t_ns,
            at_end,
            stack,
            figures,
        });
        Some(())
    }

    fn peak(&mut self, f: &Fields<'_>) -> Option<()> {
        let p = PeakSet {
            t_ns: f.u64("t_ns")?,
            live_bytes: f.u64("live_bytes")?,
            sites: Vec::new(),
        };
        // A new block replaces the previous one entirely, once complete.
        self.open_peak = Some(OpenPeak {
            set: p,
            want: f.u64("sites"),
            seen: 0,
        });
        self.peak_if_complete();
        Some(())
    }

    fn peaksite(&mut self, f: &Fields<'_>) -> Option<()> {
        let Some(open) = self.open_peak.as_mut() else {
            self.skipped.undefined += 1;
            return Some(());
        };
        // Counted toward `sites=` whatever becomes of it (malformed, undefined, over the
        // limit: each counted in `skipped`).
        open.seen += 1;
        let r = self.peaksite_fields(f);
        self.peak_if_complete();
        r
    }

    fn peaksite_fields(&mut self, f: &Fields<'_>) -> Option<()> {
        let stack = f.id("stack")?;
        let bytes = f.u64("bytes")?;
        let count = f.u64("count").unwrap_or(0);
        let Some(open) = self.open_peak.as_mut() else {
            return Some(());
        };
        if !self.stacks.contains_key(&stack) {
            self.skipped.undefined += 1;
        } else if open.set.sites.len() >= self.limits.peak_sites {
            self.skipped.peak_sites += 1;
        } else {
            open.set.sites.push((stack, bytes, count));
        }
        Some(())
    }

    /// Takes the open block as the peak once it has all the `peaksite` lines it says.
    fn peak_if_complete(&mut self) {
        if self
            .open_peak
            .as_ref()
            .is_some_and(|o| o.want.is_some_and(|k| o.seen >= k))
        {
            self.close_peak();
        }
    }

    /// Ends the open block (another record follows, or the file ended): complete unless it
    /// says it has more `peaksite` lines.
    fn close_peak(&mut self) {
        let Some(open) = self.open_peak.take() else {
            return;
        };
        if open.want.is_some_and(|k| open.seen < k) {
            self.skipped.peak_cut += 1;
            return;
        }
        self.peak = Some(open.set);
        self.peak_changed = true;
    }
}

fn header(kind: &[u8], f: &Fields<'_>) -> Result<Header, TraceError> {
    if kind != b"memlens-trace" {
        return Err(TraceError::NotATrace(
            "the first line is not `memlens-trace VERSION ...`".into(),
        ));
    }
    let version = f
        .bare
        .and_then(num)
        .ok_or_else(|| TraceError::NotATrace("no version on the header line".into()))?;
    if !(1..=u64::from(TRACE_VERSION)).contains(&version) {
        return Err(TraceError::Version(version));
    }
    let bad = |k: &str| TraceError::NotATrace(format!("the header has no valid `{k}=`"));
    let mode = f
        .get("mode")
        .and_then(|m| std::str::from_utf8(m).ok())
        .and_then(TraceMode::from_name)
        .ok_or_else(|| bad("mode"))?;
    Ok(Header {
        version: version as u32,
        pid: f.u32("pid").ok_or_else(|| bad("pid"))?,
        ppid: f.u32("ppid").unwrap_or(0),
        mode,
        sample_bytes: f.u64("sample_bytes").unwrap_or(1).max(1),
        start_ns: f.u64("start_ns").unwrap_or(0),
        python: f.text("python").filter(|p| p != "none"),
        temp_ns: f.u64("temp_ns"),
        forked_from: f.u32("forked_from"),
        inherited_live_bytes: f.u64("inherited_live_bytes").unwrap_or(0),
    })
}

/// The `key=value` fields of a line (and the first bare token, the header's version).
struct Fields<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
    bare: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn new(tokens: impl Iterator<Item = &'a [u8]>) -> Fields<'a> {
        let mut pairs = Vec::new();
        let mut bare = None;
        for t in tokens {
            match split_once(t, b'=') {
                Some(kv) => pairs.push(kv),
                None => bare = bare.or(Some(t)),
            }
        }
        Fields { pairs, bare }
    }

    /// The last value of a key.
    fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| *v)
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(num)
    }

    fn u32(&self, key: &str) -> Option<u32> {
        self.u64(key).and_then(to_u32)
    }

    fn id(&self, key: &str) -> Option<u32> {
        self.u32(key)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some(b"1")
    }

    fn text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(percent_decode)
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// A decimal `u64` (digits only, no sign, no overflow).
fn num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn to_u32(v: u64) -> Option<u32> {
    u32::try_from(v).ok()
}

/// Decodes `%XX` escapes; bytes that are not UTF-8 become U+FFFD. `None` for a `%` not
/// followed by two hex digits.
pub fn percent_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            if !h.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Parses a whole trace held in memory.
pub fn parse(bytes: &[u8], limits: Limits) -> Result<Trace, TraceError> {
    let mut p = Parser::new(limits);
    p.feed(bytes);
    p.finish()
}

/// Reads and parses a trace file (opened without following a link), in chunks.
pub fn read_file(path: &Path, limits: Limits) -> Result<Trace, TraceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let mut p = Parser::new(limits);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => p.feed(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "memlens-trace 2 pid=42 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000 python=3.12 temp_ns=1000000 future=x\n\
code id=1 first_line=3 file=%2Ftmp%2Fa%20b.py name=main\n\
code id=2 first_line=10 file=%2Ftmp%2Fa%20b.py name=Thing.make%3D\n\
stack id=1 domain=malloc frames=2:12,1:5\n\
stack id=2 domain=pymalloc frames=1:6 truncated=1\n\
stack id=3 domain=mmap frames=\n\
snap t_ns=2000 live_bytes=300 live_mmap_bytes=0 live_pymalloc_bytes=100 live_malloc_bytes=200 peak_live_bytes=300 total_bytes=300 untouched_bytes=0 alloc_samples=3 free_samples=0 live_samples=3 dropped_allocs=0 dropped_frees=0 table_full=0 lost_at_fork=0 unreadable_stacks=0\n\
site stack=1 live_bytes=200 live_count=2 alloc_bytes=200 alloc_count=2 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
site stack=2 live_bytes=100 live_count=1 alloc_bytes=100 alloc_count=1 freed_bytes=0 freed_count=0 temp_bytes=0 temp_count=0\n\
peak t_ns=2000 live_bytes=300\n\
peaksite stack=1 bytes=200 count=2\n\
peaksite stack=2 bytes=100 count=1\n\
gizmo a=b\n\
snap t_ns=3000 live_bytes=100 live_mmap_bytes=0 peak_live_bytes=300 total_bytes=400 newkey=7\n\
site stack=1 live_bytes=0 live_count=0 alloc_bytes=300 alloc_count=3 freed_bytes=300 freed_count=3 temp_bytes=100 temp_count=1\n\
end t_ns=4000 live_bytes=100 live_mmap_bytes=0 peak_live_bytes=300 total_bytes=400\n";

    #[test]
    fn version_2_records() {
        let t = parse(V2.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.header.version, 2);
        assert_eq!(t.header.pid, 42);
        assert_eq!(t.header.mode, TraceMode::All);
        assert_eq!(t.header.python.as_deref(), Some("3.12"));
        assert_eq!(t.header.temp_ns, Some(1_000_000));
        assert_eq!(t.codes[&1].file, "/tmp/a b.py");
        assert_eq!(t.codes[&2].name, "Thing.make=");
        assert_eq!(t.stacks[&1].frames, vec![(2, 12), (1, 5)]);
        assert_eq!(t.stacks[&2].domain, Domain::Pymalloc);
        assert!(t.stacks[&2].truncated);
        assert!(t.stacks[&3].frames.is_empty());
        assert_eq!(t.snaps.len(), 2);
        assert_eq!(t.snaps[1].live_malloc_bytes, 100, "absent: live - mmap");
        assert_eq!(t.end.unwrap().t_ns, 4000);
        assert_eq!(t.sites.len(), 3);
        assert_eq!(t.sites[2].t_ns, 3000);
        let p = t.peak.as_ref().unwrap();
        assert_eq!((p.t_ns, p.live_bytes), (2000, 300));
        assert_eq!(p.sites, vec![(1, 200, 2), (2, 100, 1)]);
        let last = t.last_sites();
        assert_eq!(last[&1].live_bytes, 0);
        assert_eq!(last[&1].temp_bytes, 100);
        assert_eq!(last[&2].live_bytes, 100);
        assert_eq!(t.skipped.unknown, 1);
        assert_eq!(t.skipped.total(), 0);
    }

    #[test]
    fn version_1_and_a_torn_last_line() {
        let text = "memlens-trace 1 pid=7 ppid=1 mode=sampled sample_bytes=524288 clock=monotonic start_ns=5\n\
snap t_ns=10 live_bytes=1048576 live_mmap_bytes=0 peak_live_bytes=2097152 total_bytes=3145728\n\
snap t_ns=20 live_bytes=99";
        let t = parse(text.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.header.version, 1);
        assert_eq!(t.header.python, None);
        assert_eq!(t.snaps.len(), 1, "the torn line is not parsed");
        assert_eq!(t.skipped.torn, 1);
        assert!(t.end.is_none());
        assert_eq!(t.last().unwrap().peak_live_bytes, 2_097_152);
    }

    #[test]
    fn a_new_peak_block_replaces_the_old_one() {
        let text = format!(
            "{}peak t_ns=9000 live_bytes=500\npeaksite stack=3 bytes=500 count=1\n",
            V2
        );
        let t = parse(text.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.peak.unwrap().sites, vec![(3, 500, 1)]);
    }

    /// A block read while the tracer writes it is taken only once complete: with `sites=K`
    /// when its K lines are read; without, when another record follows or the file ends. A
    /// block cut short is counted, and the earlier complete one stands.
    #[test]
    fn a_peak_block_is_taken_only_when_complete() {
        let block = "peak t_ns=9000 live_bytes=700 sites=2\npeaksite stack=1 bytes=200 count=2\n";
        let last = "peaksite stack=3 bytes=500 count=1\n";
        let mut p = Parser::new(Limits::default());
        p.feed(V2.as_bytes());
        let first = p
            .take()
            .peak
            .expect("V2's block, closed by the snap after it");
        p.feed(block.as_bytes());
        assert_eq!(p.take().peak, None, "1 of 2 lines: not taken");
        p.feed(last.as_bytes());
        let got = p.take().peak.expect("2 of 2: taken at once");
        assert_eq!(got.sites, vec![(1, 200, 2), (3, 500, 1)]);
        assert_eq!(got.live_bytes, 700);
        assert_ne!(got, first);

        // Without `sites=` (an older tracer): taken once another record follows.
        let mut p = Parser::new(Limits::default());
        p.feed(V2.as_bytes());
        p.take();
        p.feed(b"peak t_ns=9000 live_bytes=500\npeaksite stack=3 bytes=500 count=1\n");
        assert_eq!(p.take().peak, None, "may have more lines");
        p.end_of_file();
        assert_eq!(p.take().peak.unwrap().sites, vec![(3, 500, 1)]);

        // Cut: the next record comes first, or the file ends; counted, the earlier stands.
        for tail in ["snap t_ns=9500 live_bytes=1\n", ""] {
            let text = format!("{V2}{block}{tail}");
            let t = parse(text.as_bytes(), Limits::default()).unwrap();
            assert_eq!(t.skipped.peak_cut, 1, "{tail:?}");
            assert_eq!(t.peak, Some(first.clone()), "{tail:?}");
        }
        // Lines skipped inside a block (undefined stack, malformed) still count toward it.
        let text = format!(
            "{V2}peak t_ns=9000 live_bytes=7 sites=2\npeaksite stack=99 bytes=7 count=1\npeaksite stack=1\n"
        );
        let t = parse(text.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.skipped.peak_cut, 0);
        assert_eq!((t.skipped.undefined, t.skipped.malformed), (1, 1));
        assert_eq!(t.peak.unwrap().live_bytes, 7);
    }

    #[test]
    fn bad_lines_are_counted_not_taken() {
        let text = "memlens-trace 2 pid=1 mode=all\n\
code id=1 file=%zz name=a\n\
stack id=1 domain=gpu frames=\n\
stack id=2 domain=malloc frames=9:1\n\
site stack=2 live_bytes=5\n\
snap t_ns=1 live_bytes=-3\n\
snap t_ns=1 live_bytes=99999999999999999999999\n\
snap t_ns=2 live_bytes=5\n\
site stack=77 live_bytes=5\n\
peaksite stack=2 bytes=1\n";
        let t = parse(text.as_bytes(), Limits::default()).unwrap();
        assert!(t.codes.is_empty());
        assert_eq!(t.stacks.len(), 1);
        assert_eq!(t.skipped.malformed, 4, "{:?}", t.skipped);
        // A frame of an undefined code, a site before any snap, a site of an unknown stack,
        // a peaksite with no peak.
        assert_eq!(t.skipped.undefined, 4, "{:?}", t.skipped);
        assert_eq!(t.snaps.len(), 1);
    }

    #[test]
    fn limits_are_counted() {
        let limits = Limits {
            line_bytes: 80,
            codes: 1,
            stacks: 1,
            frames: 2,
            snaps: 1,
            sites: 1,
            peak_sites: 1,
        };
        let long = "x".repeat(200);
        let text = format!(
            "memlens-trace 2 pid=1 mode=all\n\
code id=1 file=a name=a\ncode id=2 file=b name=b\n\
stack id=1 domain=malloc frames=1:1,1:2,1:3\nstack id=2 domain=malloc frames=\n\
snap t_ns=1 live_bytes=1\nsite stack=1 live_bytes=1\nsite stack=1 live_bytes=2\n\
snap t_ns=2 live_bytes=1\n{long}\n\
peak t_ns=1 live_bytes=1\npeaksite stack=1 bytes=1\npeaksite stack=1 bytes=1\n"
        );
        let t = parse(text.as_bytes(), limits).unwrap();
        let s = t.skipped;
        assert_eq!(
            (
                s.codes,
                s.stacks,
                s.frames,
                s.snaps,
                s.sites,
                s.peak_sites,
                s.long_lines
            ),
            (1, 1, 1, 1, 1, 1, 1)
        );
        assert!(t.stacks[&1].truncated);
        assert_eq!(t.stacks[&1].frames.len(), 2);
    }

    /// Version 3: a forked child's inherited figures, per snapshot and per stack (absent: 0).
    #[test]
    fn version_3_inherited_figures() {
        let v3 = V2
            .replacen("memlens-trace 2 ", "memlens-trace 3 ", 1)
            .replacen(
                "unreadable_stacks=0\n",
                "unreadable_stacks=0 inherited_live_bytes=4096\n",
                1,
            )
            .replacen(
                "temp_bytes=0 temp_count=0\nsite stack=2",
                "temp_bytes=0 temp_count=0 inherited_bytes=4096 inherited_count=2\nsite stack=2",
                1,
            );
        let t = parse(v3.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.header.version, 3);
        assert_eq!(t.snaps[0].inherited_live_bytes, 4096);
        assert_eq!(t.snaps[1].inherited_live_bytes, 0);
        let f = t.sites[0].figures;
        assert_eq!((f.inherited_bytes, f.inherited_count), (4096, 2));
        assert_eq!(t.sites[1].figures.inherited_bytes, 0);
    }

    #[test]
    fn not_a_trace_or_a_newer_version() {
        assert!(matches!(
            parse(b"hello\n", Limits::default()),
            Err(TraceError::NotATrace(_))
        ));
        assert!(matches!(
            parse(b"memlens-trace 4 pid=1 mode=all\n", Limits::default()),
            Err(TraceError::Version(4))
        ));
        assert!(matches!(
            parse(b"memlens-trace 2 pid=1 mode=al", Limits::default()),
            Err(TraceError::NotATrace(_))
        ));
        assert!(parse(b"", Limits::default()).is_err());
    }

    #[test]
    fn fed_in_any_chunks_reads_the_same() {
        let whole = parse(V2.as_bytes(), Limits::default()).unwrap();
        for size in [1, 2, 7, 64] {
            let mut p = Parser::new(Limits::default());
            for c in V2.as_bytes().chunks(size) {
                p.feed(c);
            }
            assert_eq!(p.finish().unwrap(), whole, "chunks of {size}");
        }
    }

    /// Taken piece by piece while fed (as the import during the run does), the deltas hold
    /// what the whole parse holds, each line once; the last peak block is the whole one.
    #[test]
    fn taken_while_fed_equals_the_whole() {
        let whole = parse(V2.as_bytes(), Limits::default()).unwrap();
        for size in [1, 5, 33, 200] {
            let mut p = Parser::new(Limits::default());
            let mut got = Delta::default();
            let mut last_peak = None;
            for c in V2.as_bytes().chunks(size) {
                p.feed(c);
                let d = p.take();
                got.codes.extend(d.codes);
                got.stacks.extend(d.stacks);
                got.snaps.extend(d.snaps);
                got.sites.extend(d.sites);
                assert!(got.end.is_none() || d.end.is_none(), "end taken twice");
                got.end = got.end.or(d.end);
                last_peak = d.peak.or(last_peak);
            }
            let codes: BTreeMap<u32, Code> = got.codes.into_iter().collect();
            let stacks: BTreeMap<u32, StackDef> = got.stacks.into_iter().collect();
            assert_eq!(codes, whole.codes, "chunks of {size}");
            assert_eq!(stacks, whole.stacks, "chunks of {size}");
            assert_eq!(got.snaps, whole.snaps, "chunks of {size}");
            assert_eq!(got.sites, whole.sites, "chunks of {size}");
            assert_eq!(got.end, whole.end, "chunks of {size}");
            assert_eq!(last_peak, whole.peak, "chunks of {size}");
            let rest = p.finish().unwrap();
            assert!(rest.snaps.is_empty() && rest.sites.is_empty());
            assert_eq!(rest.skipped, whole.skipped);
        }
    }

    /// Mutated files (bytes replaced, cut, repeated; a fixed pseudo-random sequence) parse
    /// without a panic, the same whole and in chunks, within small limits.
    #[test]
    fn mutations_never_panic() {
        let limits = Limits {
            line_bytes: 100,
            codes: 2,
            stacks: 2,
            frames: 1,
            snaps: 2,
            sites: 2,
            peak_sites: 1,
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b" =:,%\n0123456789abzF-";
        for _ in 0..3000 {
            let mut b = V2.as_bytes().to_vec();
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[i] = alphabet[(next() as usize) % alphabet.len()],
                    1 => b.truncate(i.max(1)),
                    _ => {
                        let piece = b[i..].iter().take(40).copied().collect::<Vec<_>>();
                        b.splice(i..i, piece);
                    }
                }
            }
            let whole = parse(&b, limits);
            let mut p = Parser::new(limits);
            for c in b.chunks(1 + (next() as usize) % 9) {
                p.feed(c);
            }
            let chunked = p.finish();
            assert_eq!(format!("{whole:?}"), format!("{chunked:?}"));
            if let Ok(t) = whole {
                assert!(t.codes.len() <= 2 && t.stacks.len() <= 2 && t.snaps.len() <= 2);
                assert!(t.stacks.values().all(|s| s.frames.len() <= 1));
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%25").as_deref(), Some("a b%"));
        assert_eq!(percent_decode(b"%ff").as_deref(), Some("\u{fffd}"));
        assert_eq!(percent_decode(b"%2"), None);
        assert_eq!(percent_decode(b"%+1"), None);
    }
}
