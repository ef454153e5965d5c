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
    /// Why it stopped: `requested`, `room_ended`, `shutdown`, `handed_over` (its node
    /// drained; a recording on the room's new node continues it), `interrupted` (the
    /// recorder died and the recording was finished from its spool).
    pub stop_reason: Option<String>,
    /// Packets (and track notices) the SFU could not queue for this recording because
    /// the recorder was behind; they are missing from its files.
    #[serde(default)]
    pub refused_by_queue: u64,
    pub tracks: Vec<TrackEntry>,
    /// Spans in which no track was written, at least [`MIN_GAP_MS`] long: before the
    /// first publisher, after the last, and while the room was empty (a publisher that
    /// dropped off and came back within the room's grace goes on in a new track). The
    /// mixdown is silent there, and there is no picture.
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// A span of a recording without media, in milliseconds from `started_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub from_ms: f64,
    pub to_ms: f64,
}

/// Shorter pauses between tracks are not gaps (a track's own start-up, a renegotiation).
pub const MIN_GAP_MS: f64 = 500.0;

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
    /// The spans between `started_at` and `stopped_at` that no track covers.
    pub fn find_gaps(&self) -> Vec<Gap> {
        let Some(stopped) = self.stopped_at else {
            return Vec::new();
        };
        let start = self.started_at as f64;
        let end = (stopped - self.started_at).max(0) as f64;
        let mut spans: Vec<(f64, f64)> = self
            .tracks
            .iter()
            .filter_map(|t| {
                let from = t.first_sample_at? - start;
                Some((from, from + t.duration_ms))
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut gaps = Vec::new();
        let mut covered = 0.0_f64;
        for (from, to) in spans.into_iter().chain([(end, end)]) {
            let from = from.min(end);
            if from - covered >= MIN_GAP_MS {
                gaps.push(Gap {
                    from_ms: covered,
                    to_ms: from,
                });
            }
            covered = covered.max(to.min(end));
        }
        gaps
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn track(first_sample_at: f64, duration_ms: f64) -> TrackEntry {
        TrackEntry {
            file: "t.ogg".into(),
            participant: "phone".into(),
            mid: "0".into(),
            kind: "audio".into(),
            codec: "opus".into(),
            clock_rate: 48_000,
            rid: None,
            first_sample_at: Some(first_sample_at),
            clock_source: Some(ClockSource::Arrival),
            duration_ms,
            packets: 1,
            lost_packets: 0,
            bytes: 1,
            error: None,
        }
    }

    #[test]
    fn gaps_are_the_spans_no_track_covers() {
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            recording_id: "r".into(),
            room: "podcast".into(),
            state: SpoolState::Closed,
            started_at: 1_000_000,
            stopped_at: Some(1_060_000),
            stop_reason: Some("room_ended".into()),
            refused_by_queue: 0,
            // Before the gap: two overlapping tracks 0.2–20 s; a new session's track
            // after it, 22.5–40 s; then the room's grace until 60 s.
            tracks: vec![
                track(1_000_200.0, 19_800.0),
                track(1_001_000.0, 10_000.0),
                track(1_022_500.0, 17_500.0),
            ],
            gaps: Vec::new(),
        };
        assert_eq!(
            m.find_gaps(),
            [
                Gap {
                    from_ms: 20_000.0,
                    to_ms: 22_500.0
                },
                Gap {
                    from_ms: 40_000.0,
                    to_ms: 60_000.0
                },
            ]
        );
        // A track that starts 200 ms in is no gap; a recording still running has none.
        m.stopped_at = None;
        assert!(m.find_gaps().is_empty());
    }
}
