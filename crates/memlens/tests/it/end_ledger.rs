//! A recording stopped while the program holds its peak: the peak has its breakdown (a last
//! ledger at the end), whatever the CPU budget afforded before.
#![allow(clippy::unwrap_used)]

use crate::support::{kill, pythons, report_json, start_recording, stderr, Target, TempDir};

/// Waits for a line, grows by 256 MiB of touched bytes when told, says GREW, then waits.
const GROWS_WHEN_TOLD: &str = r#"
import sys
print("READY", flush=True)
sys.stdin.readline()
held = bytearray(256 << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
print("GREW", flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_recording_stopped_at_the_peak_has_the_peak_s_breakdown() {
    let dir = TempDir::new("end-ledger");
    let all = pythons();
    for py in all.iter().take(1).chain(all.iter().rev().take(1)) {
        for launch in 0..3 {
            let what = format!("{} launch {launch}", py.label);
            let mut t = Target::python(&py.path, GROWS_WHEN_TOLD);
            let db = dir.join(&format!("end-{}-{launch}.db", py.label));
            // A low budget: the program's growth is not ledgered before the stop.
            let pid = t.pid().to_string();
            let args = ["--cpu-budget", "0.5", pid.as_str(), "-o"].map(std::ffi::OsStr::new);
            let rec = start_recording(&[&args[..], &[db.as_os_str()]].concat());
            t.send("grow");
            assert_eq!(t.read_line().as_deref(), Some("GREW"), "{what}");
            kill(rec.id(), "-INT");
            let out = rec.wait_with_output().unwrap();
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            t.send("done");
            let j = report_json(&db);
            let b = &j["breakdown"];
            assert_eq!(b["at_peak"], true, "{what}: {b}");
            // By construction: the 256 MiB the program holds at the end are in the breakdown, up
            // to what "at the peak" allows (a ledger holding 90% of the peak's RSS: one taken
            // late in the growth, nearer the peak's tick than the last one, may be chosen).
            let native: u64 = j["ledger_at_peak"]["processes"][0]["ledger"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["category"] == "native-heap")
                .map(|r| r["rss"].as_u64().unwrap())
                .sum();
            assert!(
                native >= (256 << 20) * 8 / 10,
                "{what}: native-heap {native}; {b}"
            );
        }
    }
}
