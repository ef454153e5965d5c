//! Runs one of this crate's measuring tools and reads the JSON report it prints.

use std::process::Command;

use serde_json::Value;

/// `exe ARGS…` must exit 0 and print one JSON object on stdout.
pub fn report(exe: &str, args: &[&str]) -> Value {
    let out = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{exe} does not start: {e}"));
    assert!(
        out.status.success(),
        "{exe} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{exe} {args:?} printed no JSON report: {e}"))
}
