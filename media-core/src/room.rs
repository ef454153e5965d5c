//! A room: the published tracks and who receives each of them.
//!
//! The subscription graph lives here. Each `TrackIn` (a publisher's m-line) holds its
//! fan-out list of (subscriber, slot); each subscriber's `TrackOut` in that slot
//! points back at the track. The two sides are changed together by `Sfu` only.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::Ssrc;

use crate::layers::LayerInfo;
use crate::speaker::{SpeakerConfig, SpeakerDetector};
use crate::tap::TrackTap;
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

/// How long a layer's bitrate is measured over, and how often subscribers' layers are
/// re-decided from it.
pub const LAYER_WINDOW: Duration = Duration::from_millis(500);
/// A layer without packets for this long is inactive (the publisher dropped it).
pub const LAYER_INACTIVE_AFTER: Duration = Duration::from_secs(1);

/// One incoming layer of a track: an SSRC and its simulcast rid (`None` without
/// simulcast), with its measured bitrate.
#[derive(Debug)]
pub struct LayerIn {
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    /// Keyframe requests are coalesced per layer: a keyframe of one layer does not
    /// answer a subscriber waiting for another.
    pub keyframes: KeyframeRequests,
    bytes: u64,
    last_packet: Option<Instant>,
    /// Its place in the low-to-high order: the bitrate of the last window it sent
    /// in. A layer the publisher paused (nobody wanted it) measures 0 bit/s but keeps
    /// its place, or the lowest layer would no longer be first.
    rank_bps: u64,
}

/// A published track.
#[derive(Debug)]
pub struct TrackIn {
    pub track: TrackRef,
    pub kind: MediaKind,
    /// The incoming layers (one without simulcast, up to three with).
    pub layers: Vec<LayerIn>,
    /// The layers ordered low to high by measured bitrate, as the `LayerSelector`s of
    /// the subscribers see them; refreshed every `LAYER_WINDOW`.
    pub layer_infos: Vec<(Option<Rid>, LayerInfo)>,
    measured_at: Option<Instant>,
    /// Subscribers' layers must be re-decided at the next packet (a new layer, a new
    /// subscriber, a changed preference).
    pub reselect: bool,
    /// Cache of the publisher's payload parameters for the last payload type seen.
    pub params: Option<PayloadParams>,
    pub fanout: Vec<Subscription>,
    /// Keyframe requests before any layer has been seen.
    pub keyframes: KeyframeRequests,
    pub audio_level: AudioLevel,
    /// The publisher muted it: nothing is forwarded until it unmutes.
    pub muted: bool,
    /// The layers last announced: every received one (rids, low to high) and how
    /// many of them, from the lowest, are wanted.
    pub wanted_layers: Option<([Option<Rid>; 3], usize)>,
    /// Whether (and which layer of) this track is recorded.
    pub tap: TrackTap,
    pub packets: u64,
    pub bytes: u64,
    /// Its id on relay links, unique in the worker ([`crate::relay`]).
    pub relay_id: u32,
    /// Its room is exported: its packets are offered to the room's relay links.
    pub exported: bool,
}

impl TrackIn {
    pub fn new(track: TrackRef, kind: MediaKind) -> Self {
        TrackIn {
            track,
            kind,
            layers: Vec::with_capacity(3),
            layer_infos: Vec::with_capacity(3),
            measured_at: None,
            reselect: false,
            params: None,
            fanout: Vec::new(),
            keyframes: KeyframeRequests::default(),
            audio_level: AudioLevel::default(),
            muted: false,
            wanted_layers: None,
            tap: TrackTap::Off,
            packets: 0,
            bytes: 0,
            relay_id: 0,
            exported: false,
        }
    }
}

impl TrackIn {
    /// The layer an incoming SSRC belongs to.
    pub fn layer_index(&self, ssrc: Ssrc) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    pub fn add_layer(&mut self, ssrc: Ssrc, rid: Option<Rid>) -> usize {
        self.layers.push(LayerIn {
            ssrc,
            rid,
            keyframes: KeyframeRequests::default(),
            bytes: 0,
            last_packet: None,
            rank_bps: 0,
        });
        self.reselect = true;
        self.layers.len() - 1
    }

    /// Counts a packet of layer `i`. True when subscribers' layers should be decided
    /// again now (a window ended, or `reselect` was asked for).
    pub fn count(&mut self, now: Instant, i: usize, bytes: usize) -> bool {
        let l = &mut self.layers[i];
        l.bytes += bytes as u64;
        l.last_packet = Some(now);
        let due = self
            .measured_at
            .is_none_or(|t| now.duration_since(t) >= LAYER_WINDOW);
        if due {
            self.measure(now);
        }
        due || std::mem::take(&mut self.reselect)
    }

    /// Bitrates over the window that ends now, activity, and the low-to-high order.
    fn measure(&mut self, now: Instant) {
        let elapsed = self
            .measured_at
            .map_or(LAYER_WINDOW, |t| now.duration_since(t))
            .max(Duration::from_millis(1));
        self.measured_at = Some(now);
        self.layer_infos.clear();
        for l in &mut self.layers {
            let bitrate_bps = (l.bytes * 8 * 1000) / elapsed.as_millis() as u64;
            l.bytes = 0;
            if bitrate_bps > 0 {
                l.rank_bps = bitrate_bps;
            }
            let active = l
                .last_packet
                .is_some_and(|t| now.duration_since(t) < LAYER_INACTIVE_AFTER);
            self.layer_infos.push((
                l.rid,
                LayerInfo {
                    bitrate_bps,
                    active,
                },
            ));
        }
        // Stable: layers not measured apart keep their first-seen order.
        let layers = &self.layers;
        self.layer_infos.sort_by_key(|(rid, _)| {
            layers
                .iter()
                .find(|l| l.rid == *rid)
                .map_or(0, |l| l.rank_bps)
        });
    }
}

/// Coalesces and rate-limits keyframe requests to one publisher track.
///
/// Many subscribers joining at once, or a subscriber that keeps sending PLIs, must
/// not turn into a PLI storm at the publisher: at most one request goes out per
/// `min_interval`; requests in between are remembered and sent when the interval
/// ends, unless a keyframe arrived meanwhile and reached every subscriber that waited.
/// While a connected subscriber still waits, the publisher is asked again every
/// `retry` (`retry_due`): encoders ignore some requests, and requests get lost.
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

    /// Someone still waits: true when the last request is `retry` old (or there was
    /// none), so it is time to ask again.
    pub fn retry_due(&self, now: Instant, retry: Duration) -> bool {
        self.last_sent.is_none_or(|t| now >= t + retry)
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
        let retry = Duration::from_secs(1);
        assert!(!k.retry_due(ms(1300), retry));
        assert!(k.retry_due(ms(1301), retry));
        assert!(KeyframeRequests::default().retry_due(ms(0), retry));
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
