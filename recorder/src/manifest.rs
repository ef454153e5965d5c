//! The manifest: what a recording holds and how its tracks line up in time.
//!
//! It is written when the recording starts and rewritten (atomically, fsynced) as
//! tracks are added and when the recording closes, so a recorder that is killed
//! leaves a manifest naming every file it was writing. It is uploaded last: an object
//! store holding a recording's manifest holds all of its files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RecorderError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolState {
    /// Tracks are being written.
    Recording,
    /// Every file is complete and fsynced; it waits for (or is in) upload.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub recording_id: String,
    pub room: String,
    pub state: SpoolState,
    /// Unix milliseconds.
    pub started_at: i64,
    pub stopped_at: Option<i64>,
    /// Why it stopped: `requested`, `room_ended`, `shutdown`, `interrupted` (the
    /// recorder died and the recording was finished from its spool at restart).
    pub stop_reason: Option<String>,
    /// Packets (and track notices) the SFU could not queue for this recording because
    /// the recorder was behind; they are missing from its files.
    #[serde(default)]
    pub refused_by_queue: u64,
    pub tracks: Vec<TrackEntry>,
}

/// How a track's first sample was placed on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// From the publisher's RTCP sender report (its NTP clock ↔ RTP time), moved onto
    /// the node's clock by the publisher's least delayed packet: its tracks keep the
    /// sender's capture-time sync, and a publisher whose clock is wrong still lines up.
    SenderReport,
    /// From when the node received the packets (no sender report was seen): the
    /// earliest start any packet's arrival implies, so first-packet jitter does not
    /// move it.
    Arrival,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackEntry {
    /// File name within the recording (and its object-store prefix).
    pub file: String,
    pub participant: String,
    /// The publisher's m-line.
    pub mid: String,
    pub kind: String,
    pub codec: String,
    pub clock_rate: u32,
    /// Simulcast layer recorded, if any.
    pub rid: Option<String>,
    /// Unix milliseconds (fractional) of the first sample written, on the node's clock
    /// (the same for every track of the recording).
    pub first_sample_at: Option<f64>,
    pub clock_source: Option<ClockSource>,
    /// Media time written, gaps included.
    pub duration_ms: f64,
    pub packets: u64,
    /// Packets never received (sequence gaps), or refused by a full queue.
    pub lost_packets: u64,
    pub bytes: u64,
    /// Why nothing (more) was written, if so (unsupported codec, a writer error).
    pub error: Option<String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, RecorderError> {
        let path = dir.join(MANIFEST_FILE);
        let data = std::fs::read(&path).map_err(|e| RecorderError::io(&path, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| RecorderError::Manifest(format!("{}: {e}", path.display())))
    }

    /// Replaces the manifest in `dir` atomically (temp file, fsync, rename, fsync dir).
    pub fn write(&self, dir: &Path) -> Result<(), RecorderError> {
        let data =
            serde_json::to_vec_pretty(self).map_err(|e| RecorderError::Manifest(e.to_string()))?;
        crate::spool::write_atomic(dir, MANIFEST_FILE, &data)
    }
}
