//! Recordings with hostile contents: the real schema, any SQLite value in any column.

use std::path::Path;

use memlens_recording::schema;
use rusqlite::types::Value;

use crate::Cursor;

/// The tables of the schema, in the order a row program's table byte picks them.
pub const TABLES: [&str; 17] = [
    "meta",
    "processes",
    "samples",
    "pss",
    "ticks",
    "ledgers",
    "ledger_rows",
    "python",
    "census",
    "events",
    "traces",
    "trace_codes",
    "trace_stacks",
    "trace_frames",
    "trace_snaps",
    "trace_sites",
    "trace_peak",
];

/// One value: a type tag, then its bytes. NULL, small and full-width integers, any real (NaN
/// and infinities included), short text (lossily UTF-8), blobs, and numbers spelt as text.
pub fn value(c: &mut Cursor<'_>) -> Value {
    match c.u8() % 8 {
        0 => Value::Null,
        1 => Value::Integer(i64::from(c.u8())),
        2 => Value::Integer(c.u64() as i64),
        3 => Value::Real(f64::from_bits(c.u64())),
        4 => Value::Real(f64::from(c.u16()) / 100.0),
        5 => {
            let n = usize::from(c.u8() % 64);
            Value::Text(String::from_utf8_lossy(c.take(n)).into_owned())
        }
        6 => {
            let n = usize::from(c.u8() % 64);
            Value::Blob(c.take(n).to_vec())
        }
        _ => Value::Text(
            [
                "1",
                "0",
                "-1",
                "nan",
                "inf",
                "1e308",
                "18446744073709551616",
                "{}",
                "[]",
            ][usize::from(c.u8() % 9)]
            .to_string(),
        ),
    }
}

/// Creates a recording at `file` with the schema, `schema_version` 1 and the rows of the
/// program (at most 64): a table byte, then one [`value`] per column. Rows that break a
/// constraint are skipped.
pub fn write_rows(file: &Path, program: &[u8]) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(file)?;
    // small pages: a small file for the byte-level half of the target to mutate
    conn.execute_batch(
        "PRAGMA page_size = 512; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;",
    )?;
    conn.execute_batch(schema::CREATE)?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
        [schema::SCHEMA_VERSION.to_string()],
    )?;
    let mut c = Cursor::new(program);
    let mut rows = 0;
    while !c.is_empty() && rows < 64 {
        rows += 1;
        let table = TABLES[usize::from(c.u8()) % TABLES.len()];
        let columns: i64 = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{table}')"),
            [],
            |r| r.get(0),
        )?;
        let columns = usize::try_from(columns).unwrap_or(0);
        let values: Vec<Value> = (0..columns).map(|_| value(&mut c)).collect();
        let marks = vec!["?"; columns].join(", ");
        let verb = if table == "meta" {
            "INSERT OR REPLACE"
        } else {
            "INSERT"
        };
        let _ = conn.execute(
            &format!("{verb} INTO {table} VALUES ({marks})"),
            rusqlite::params_from_iter(values),
        );
    }
    Ok(())
}
