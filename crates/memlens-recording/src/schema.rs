//! The recording's SQLite schema (documented in `docs/recording.md`; keep both in step).

/// The schema version written into `meta.schema_version`. Readers accept 1..=this. Version 2
/// added the `sharing` table (a version 1 file has none: its readers say sharing was not
/// recorded); version 3 the `traces` and `trace_*` tables of `run --trace` (empty without it;
/// a version 1 or 2 file has none: no allocations); version 4 `trace_snaps.tracer_bytes` (a
/// version 3 file reads it as 0: not measured); version 5 `trace_snaps.inherited_bytes` and
/// `trace_sites.inherited_bytes`/`inherited_count` (a forked child's blocks inherited at fork,
/// apart from its own; read as 0 from older files, whose children counted them as their own).
pub const SCHEMA_VERSION: i64 = 5;

/// The `application_id` pragma of memlens recordings ("MLns"), so `file(1)`-style tools and
/// readers can tell a recording from another SQLite database.
pub const APPLICATION_ID: i32 = 0x4d4c_6e73;

/// Tables of schema version 4 (version 1's, `sharing`, and the trace tables). Times are seconds since the recording started (`REAL`); sizes are
/// bytes (`INTEGER`).
pub const CREATE: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE processes (
    id          INTEGER PRIMARY KEY,
    pid         INTEGER NOT NULL,
    ppid        INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    name        TEXT NOT NULL,
    cmdline     TEXT NOT NULL,
    first_t     REAL NOT NULL,
    last_t      REAL NOT NULL,
    exit_t      REAL,
    vm_hwm      INTEGER NOT NULL DEFAULT 0,
    peak_pss    INTEGER NOT NULL DEFAULT 0,
    ru_maxrss   INTEGER
);
CREATE TABLE samples (
    t       REAL NOT NULL,
    process INTEGER NOT NULL REFERENCES processes(id),
    rss     INTEGER NOT NULL,
    anon    INTEGER NOT NULL,
    file    INTEGER NOT NULL,
    shmem   INTEGER NOT NULL,
    swap    INTEGER NOT NULL,
    vm_hwm  INTEGER NOT NULL,
    threads INTEGER NOT NULL,
    PRIMARY KEY (process, t)
) WITHOUT ROWID;
CREATE TABLE pss (
    t       REAL NOT NULL,
    process INTEGER NOT NULL REFERENCES processes(id),
    pss     INTEGER NOT NULL,
    uss     INTEGER NOT NULL,
    rss     INTEGER NOT NULL,
    swap    INTEGER NOT NULL,
    cost_us INTEGER NOT NULL,
    PRIMARY KEY (process, t)
) WITHOUT ROWID;
CREATE TABLE ticks (
    t            REAL PRIMARY KEY,
    rss          INTEGER NOT NULL,
    pss          INTEGER NOT NULL,
    processes    INTEGER NOT NULL,
    cgroup_usage INTEGER
);
CREATE TABLE ledgers (
    id     INTEGER PRIMARY KEY,
    t      REAL NOT NULL,
    reason TEXT NOT NULL,
    rss    INTEGER NOT NULL,
    pss    INTEGER NOT NULL,
    uss    INTEGER NOT NULL,
    swap   INTEGER NOT NULL,
    json   TEXT
);
CREATE TABLE ledger_rows (
    ledger   INTEGER NOT NULL REFERENCES ledgers(id),
    category TEXT NOT NULL,
    rss      INTEGER NOT NULL,
    pss      INTEGER NOT NULL,
    uss      INTEGER NOT NULL,
    swap     INTEGER NOT NULL,
    mappings INTEGER NOT NULL,
    PRIMARY KEY (ledger, category)
) WITHOUT ROWID;
CREATE TABLE python (
    t       REAL NOT NULL,
    process INTEGER NOT NULL REFERENCES processes(id),
    json    TEXT NOT NULL
);
CREATE TABLE census (
    t       REAL NOT NULL,
    process INTEGER NOT NULL REFERENCES processes(id),
    type    TEXT NOT NULL,
    count   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
CREATE TABLE sharing (
    t                  REAL NOT NULL,
    process            INTEGER NOT NULL REFERENCES processes(id),
    parent             INTEGER NOT NULL REFERENCES processes(id),
    duration_s         REAL NOT NULL,
    measured           INTEGER NOT NULL,
    reason             TEXT,
    shared_with_parent INTEGER,
    copied             INTEGER,
    own                INTEGER,
    zero_page          INTEGER,
    swapped            INTEGER,
    failed_reads       INTEGER,
    by_category        TEXT,
    PRIMARY KEY (process, t)
) WITHOUT ROWID;
CREATE TABLE traces (
    id                   INTEGER PRIMARY KEY,
    file                 TEXT NOT NULL,
    version              INTEGER NOT NULL,
    pid                  INTEGER NOT NULL,
    ppid                 INTEGER NOT NULL,
    mode                 TEXT NOT NULL,
    sample_bytes         INTEGER NOT NULL,
    python               TEXT,
    temp_ns              INTEGER,
    forked_from          INTEGER,
    inherited_live_bytes INTEGER NOT NULL,
    start_t              REAL NOT NULL,
    ended                INTEGER NOT NULL,
    peak_t               REAL,
    peak_bytes           INTEGER,
    skipped              INTEGER NOT NULL,
    skipped_detail       TEXT NOT NULL
);
CREATE TABLE trace_codes (
    trace      INTEGER NOT NULL REFERENCES traces(id),
    id         INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    file       TEXT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (trace, id)
) WITHOUT ROWID;
CREATE TABLE trace_stacks (
    trace      INTEGER NOT NULL REFERENCES traces(id),
    id         INTEGER NOT NULL,
    domain     TEXT NOT NULL,
    truncated  INTEGER NOT NULL,
    unreadable INTEGER NOT NULL,
    PRIMARY KEY (trace, id)
) WITHOUT ROWID;
CREATE TABLE trace_frames (
    trace INTEGER NOT NULL REFERENCES traces(id),
    stack INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    code  INTEGER NOT NULL,
    line  INTEGER NOT NULL,
    PRIMARY KEY (trace, stack, depth)
) WITHOUT ROWID;
CREATE TABLE trace_snaps (
    trace               INTEGER NOT NULL REFERENCES traces(id),
    t                   REAL NOT NULL,
    at_end              INTEGER NOT NULL,
    live_bytes          INTEGER NOT NULL,
    live_mmap_bytes     INTEGER NOT NULL,
    live_pymalloc_bytes INTEGER NOT NULL,
    live_malloc_bytes   INTEGER NOT NULL,
    peak_live_bytes     INTEGER NOT NULL,
    total_bytes         INTEGER NOT NULL,
    untouched_bytes     INTEGER NOT NULL,
    alloc_samples       INTEGER NOT NULL,
    free_samples        INTEGER NOT NULL,
    live_samples        INTEGER NOT NULL,
    dropped_allocs      INTEGER NOT NULL,
    dropped_frees       INTEGER NOT NULL,
    table_full          INTEGER NOT NULL,
    lost_at_fork        INTEGER NOT NULL,
    unreadable_stacks   INTEGER NOT NULL,
    stacks_lost         INTEGER NOT NULL,
    tracer_bytes        INTEGER NOT NULL,
    inherited_bytes     INTEGER NOT NULL
);
CREATE TABLE trace_sites (
    trace       INTEGER NOT NULL REFERENCES traces(id),
    t           REAL NOT NULL,
    at_end      INTEGER NOT NULL,
    stack       INTEGER NOT NULL,
    live_bytes  INTEGER NOT NULL,
    live_count  INTEGER NOT NULL,
    alloc_bytes INTEGER NOT NULL,
    alloc_count INTEGER NOT NULL,
    freed_bytes INTEGER NOT NULL,
    freed_count INTEGER NOT NULL,
    temp_bytes  INTEGER NOT NULL,
    temp_count  INTEGER NOT NULL,
    inherited_bytes INTEGER NOT NULL,
    inherited_count INTEGER NOT NULL
);
CREATE TABLE trace_peak (
    trace INTEGER NOT NULL REFERENCES traces(id),
    stack INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE events (
    t       REAL NOT NULL,
    kind    TEXT NOT NULL,
    process INTEGER,
    detail  TEXT NOT NULL
);
"#;
