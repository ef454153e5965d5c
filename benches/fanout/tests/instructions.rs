//! The SFU's instructions per forwarded packet, counted by callgrind, must not grow
//! more than 10 % over the committed baseline (`instructions-baseline.json`).
//!
//! Instructions, not time: the count repeats to within 0.1 % on a loaded machine,
//! so a 10 % budget catches a real regression without flaking. The baseline is per
//! build profile (this test binary's); after a change that makes the hot path
//! cheaper, lower it with the figure the test prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

/// How much the count may grow over the baseline before this test fails.
const BUDGET: f64 = 1.10;

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// Runs `sc-instructions kind n` under callgrind; (instructions per forwarded
/// packet, the run's own report).
fn count(kind: &str, n: usize) -> (f64, Value) {
    let version = Command::new("valgrind").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "valgrind is needed (Debian package `valgrind`; scripts/test installs it): {version:?}"
    );
    let dir = std::env::temp_dir().join(format!("sc-instr-{}-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("callgrind.out");
    let out_arg = format!("--callgrind-out-file={}", out_file.display());
    let report = common::report(
        "valgrind",
        &[
            "--tool=callgrind",
            "--toggle-collect=*counted_sfu_call*",
            &out_arg,
            env!("CARGO_BIN_EXE_sc-instructions"),
            kind,
            &n.to_string(),
        ],
    );
    let total = summary(&out_file);
    let _ = std::fs::remove_dir_all(&dir);
    let forwarded = report["forwarded"].as_u64().unwrap();
    assert!(forwarded > 0, "{report}");
    (total as f64 / forwarded as f64, report)
}

/// The `summary:` line of a callgrind output file: instructions collected.
fn summary(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("callgrind wrote its output");
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in {}", file.display()))
}

fn baseline(key: &str) -> f64 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("instructions-baseline.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc[profile()][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {}.{key} in {}", profile(), path.display()))
}

fn check(kind: &str, n: usize) {
    let (per_packet, report) = count(kind, n);
    let key = format!("{kind}_{n}");
    let base = baseline(&key);
    eprintln!(
        "{key} ({}): {per_packet:.0} instructions per forwarded packet; baseline {base:.0} ({:+.1} %); {report}",
        profile(),
        (per_packet / base - 1.0) * 100.0
    );
    // Every packet the SFU received went to every subscriber, and arrived.
    assert_eq!(report["forwarded"], report["delivered"], "{report}");
    assert_eq!(
        report["forwarded"].as_u64(),
        report["rtp_in"].as_u64().map(|r| r * n as u64),
        "{report}"
    );
    assert!(
        per_packet <= base * BUDGET,
        "{key}: {per_packet:.0} instructions per forwarded packet, over the baseline {base:.0} by more than {:.0} %",
        (BUDGET - 1.0) * 100.0
    );
}

#[test]
fn audio_fan_out_instructions_per_packet_stay_within_budget() {
    check("audio", 10);
}

#[test]
fn video_fan_out_instructions_per_packet_stay_within_budget() {
    check("video", 10);
}
