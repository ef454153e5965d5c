//! The local spool: one directory per recording, `<spool>/<recording id>/`, holding
//! the manifest, the track files and the upload markers.
//!
//! Invariants: a file is renamed into place or fsynced before anything that depends
//! on it is written; a recording directory is removed only after the object store
//! confirmed every file of it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::RecorderError;

/// Marks a file as confirmed by the store: `<file>.uploaded`.
pub const UPLOADED_SUFFIX: &str = ".uploaded";

pub fn fsync_dir(dir: &Path) -> Result<(), RecorderError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RecorderError::io(dir, e))
}

/// Writes `name` in `dir` so that a crash leaves the old or the new content, never
/// a torn one.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), RecorderError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| RecorderError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| RecorderError::io(&tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| RecorderError::io(&dst, e))?;
    fsync_dir(dir)
}

/// The recording directories in the spool (those with a manifest), oldest name first.
pub fn recordings(spool: &Path) -> Result<Vec<PathBuf>, RecorderError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(spool) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(RecorderError::io(spool, e)),
    };
    for e in entries {
        let e = e.map_err(|e| RecorderError::io(spool, e))?;
        let p = e.path();
        if p.is_dir() && p.join(crate::manifest::MANIFEST_FILE).exists() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a file in `dir` (or `dir` itself) was modified within `within` of now: a
/// recorder is still writing it. Unreadable times count as recent.
pub fn written_within(dir: &Path, within: std::time::Duration) -> bool {
    let recent = |m: std::io::Result<std::fs::Metadata>| {
        m.and_then(|m| m.modified())
            .map(|t| t.elapsed().map_or(true, |age| age < within))
            .unwrap_or(true)
    };
    if within.is_zero() {
        return false;
    }
    if recent(std::fs::metadata(dir)) {
        return true;
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).any(|e| recent(e.metadata())),
        Err(_) => true,
    }
}

pub fn is_uploaded(dir: &Path, file: &str) -> bool {
    dir.join(format!("{file}{UPLOADED_SUFFIX}")).exists()
}

pub fn mark_uploaded(dir: &Path, file: &str) -> Result<(), RecorderError> {
    write_atomic(dir, &format!("{file}{UPLOADED_SUFFIX}"), b"")
}

/// A file name safe on every store: letters, digits, `-`, `_` and `.` only.
pub fn safe_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("alice"), "alice");
        assert_eq!(safe_name("a/../b c"), "a____b_c");
        assert_eq!(safe_name(""), "_");
    }

    #[test]
    fn atomic_write_replaces_and_markers_persist() {
        let dir = std::env::temp_dir().join(format!("sc-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir, "x.json", b"1").unwrap();
        write_atomic(&dir, "x.json", b"2").unwrap();
        assert_eq!(std::fs::read(dir.join("x.json")).unwrap(), b"2");
        assert!(!is_uploaded(&dir, "x.json"));
        mark_uploaded(&dir, "x.json").unwrap();
        assert!(is_uploaded(&dir, "x.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
