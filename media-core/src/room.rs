//! A room: the published tracks and who receives each of them.
//!
//! The subscription graph lives here. Each `TrackIn` (a publisher's m-line) holds its
//! fan-out list of (subscriber, slot); each subscriber's `TrackOut` in that slot
//! points back at the track. The two sides are changed together by `Sfu` only.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::Ssrc;

use crate::speaker::{SpeakerConfig, SpeakerDetector};
use crate::{PeerId, RoomId};

/// A publisher's m-line: `(publisher, mid)` identifies it within a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackRef {
    pub owner: PeerId,
    pub mid: Mid,
}

/// One subscriber slot fed by a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub subscriber: PeerId,
    pub slot: usize,
}

/// A published track.
#[derive(Debug)]
pub struct TrackIn {
    pub track: TrackRef,
    pub kind: MediaKind,
    /// Incoming SSRCs of this track and the simulcast layer each carries.
    pub ssrcs: Vec<(Ssrc, Option<Rid>)>,
    /// The simulcast layer forwarded to everyone (the first one seen). Layer choice
    /// per subscriber is the job of a `LayerSelector`; until then one layer is sent.
    pub active_rid: Option<Option<Rid>>,
    /// Cache of the publisher's payload parameters for the last payload type seen.
    pub params: Option<PayloadParams>,
    pub fanout: Vec<Subscription>,
    pub keyframes: KeyframeRequests,
    pub audio_level: AudioLevel,
    pub packets: u64,
    pub bytes: u64,
}

impl TrackIn {
    pub fn new(track: TrackRef, kind: MediaKind) -> Self {
        TrackIn {
            track,
            kind,
            ssrcs: Vec::with_capacity(3),
            active_rid: None,
            params: None,
            fanout: Vec::new(),
            keyframes: KeyframeRequests::default(),
            audio_level: AudioLevel::default(),
            packets: 0,
            bytes: 0,
        }
    }
}

/// Coalesces and rate-limits keyframe requests to one publisher track.
///
/// Many subscribers joining at once, or a subscriber that keeps sending PLIs, must
/// not turn into a PLI storm at the publisher: at most one request goes out per
/// `min_interval`; requests in between are remembered and sent when the interval
/// ends, unless a keyframe arrived meanwhile.
#[derive(Debug, Default, Clone)]
pub struct KeyframeRequests {
    last_sent: Option<Instant>,
    pending: bool,
}

/// What to do with a keyframe request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeDecision {
    /// Ask the publisher now.
    SendNow,
    /// Already asked recently; ask again at this time unless a keyframe arrives.
    Deferred(Instant),
}

impl KeyframeRequests {
    pub fn request(&mut self, now: Instant, min_interval: Duration) -> KeyframeDecision {
        match self.last_sent {
            Some(t) if now < t + min_interval => {
                self.pending = true;
                KeyframeDecision::Deferred(t + min_interval)
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                KeyframeDecision::SendNow
            }
        }
    }

    /// A keyframe arrived: deferred requests are satisfied.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
    }

    /// When a deferred request is due, `Some(deadline)`.
    pub fn pending_deadline(&self, min_interval: Duration) -> Option<Instant> {
        if self.pending {
            self.last_sent.map(|t| t + min_interval)
        } else {
            None
        }
    }
}

/// Smoothed audio level of a track from the RFC 6464 header extension.
///
/// Stored as -dBov (0 = loudest, 127 = silence), smoothed with a fast attack and a
/// slow release so a speaker indicator neither flickers nor lags.
#[derive(Debug, Clone, Copy)]
pub struct AudioLevel {
    level: f32,
    pub voice: bool,
}

impl Default for AudioLevel {
    fn default() -> Self {
        AudioLevel {
            level: 127.0,
            voice: false,
        }
    }
}

impl AudioLevel {
    /// `dbov` is the extension's value: 0 (loud) to -127 or 127 (silence); str0m
    /// reports it negated, so only the magnitude is used.
    pub fn update(&mut self, dbov: i8, voice: Option<bool>) {
        let x = (dbov as i16).unsigned_abs().min(127) as f32;
        let alpha = if x < self.level { 0.5 } else { 0.05 };
        self.level += alpha * (x - self.level);
        if let Some(v) = voice {
            self.voice = v;
        }
    }

    /// Level in -dBov, 0 = full scale, 127 = silence.
    pub fn dbov(&self) -> u8 {
        self.level.round() as u8
    }
}

/// Internal handle of a room inside one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomKey(pub u32);

#[derive(Debug)]
pub struct Room {
    pub id: RoomId,
    pub peers: Vec<PeerId>,
    pub tracks: Vec<TrackIn>,
    pub speaker: SpeakerDetector<TrackRef>,
    /// When the speaker was last evaluated (at most every `SPEAKER_INTERVAL`).
    pub speaker_checked: Option<Instant>,
}

/// How often a room's active speaker is re-evaluated from its audio levels.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(100);

impl Room {
    pub fn new(id: RoomId) -> Self {
        Room {
            id,
            peers: Vec::new(),
            tracks: Vec::new(),
            speaker: SpeakerDetector::new(SpeakerConfig::default()),
            speaker_checked: None,
        }
    }

    pub fn track_index(&self, track: TrackRef) -> Option<usize> {
        self.tracks.iter().position(|t| t.track == track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_coalesced() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let iv = Duration::from_millis(300);
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = KeyframeRequests::default();
        assert_eq!(k.request(ms(0), iv), KeyframeDecision::SendNow);
        assert_eq!(k.request(ms(10), iv), KeyframeDecision::Deferred(ms(300)));
        assert_eq!(k.request(ms(20), iv), KeyframeDecision::Deferred(ms(300)));
        assert_eq!(k.pending_deadline(iv), Some(ms(300)));
        k.keyframe_received();
        assert_eq!(k.pending_deadline(iv), None);
        assert_eq!(k.request(ms(301), iv), KeyframeDecision::SendNow);
    }

    #[test]
    fn audio_level_attacks_fast_and_releases_slowly() {
        let mut a = AudioLevel::default();
        assert_eq!(a.dbov(), 127);
        for _ in 0..10 {
            a.update(-20, Some(true));
        }
        assert!(a.dbov() <= 21, "{}", a.dbov());
        a.update(-127, Some(false));
        assert!(a.dbov() < 30, "release is slow: {}", a.dbov());
        assert!(!a.voice);
    }
}
