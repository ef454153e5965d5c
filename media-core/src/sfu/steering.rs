//! Steering what each subscriber receives: the simulcast layer of every video slot
//! (preference, estimate, measured layers), what the subscriber's estimator aims for,
//! which layers the publisher must keep sending, and the room's active speaker.

use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Rid};
use tracing::debug;

use super::{Deferred, KeyframeAsk, Sfu, SfuEvent};
use crate::PeerId;
use crate::peer::Peer;
use crate::room::{RoomKey, SPEAKER_INTERVAL};

impl Sfu {
    /// Re-decides the layer of every subscriber of a video track from its preference,
    /// its bandwidth estimate and the measured layers; asks the publisher for a keyframe
    /// when someone's target changed.
    pub(super) fn select_layers(&mut self, now: Instant, key: RoomKey, ti: usize) {
        let Some(track) = self.rooms.get(&key).and_then(|r| r.tracks.get(ti)) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let mut changed = false;
        for sub in &track.fanout {
            let Some(peer) = self.peers.get_mut(&sub.subscriber) else {
                continue;
            };
            let budget = slot_budget(peer);
            if let Some(out) = peer.tracks_out.get_mut(sub.slot)
                && out.layer.update(now, &track.layer_infos, budget)
                && out.layer.target() != out.layer.current()
            {
                debug!(subscriber = %sub.subscriber, target = ?out.layer.target(), ?budget, "layer target changed");
                changed = true;
            }
        }
        let track_ref = track.track;
        let n = track.fanout.len();
        if changed {
            self.deferred
                .push_back(Deferred::Keyframe(key, track_ref, KeyframeAsk::Targets));
        }
        // By index: steering changes no fan-out, and the hot path allocates nothing.
        for i in 0..n {
            let Some(sub) = self
                .rooms
                .get(&key)
                .and_then(|r| r.tracks.get(ti))
                .and_then(|t| t.fanout.get(i))
                .map(|s| s.subscriber)
            else {
                break;
            };
            self.steer_bwe(now, key, sub);
        }
        self.announce_wanted(key, ti);
    }

    /// Tells the publisher of a simulcast track which layers anyone may receive (up to
    /// the highest preference among its subscribers), when that changes, so it can
    /// stop encoding the others. Bandwidth does not narrow it: a layer the estimate
    /// rules out now may fit later, and a paused encoding is never measured active.
    pub(super) fn announce_wanted(&mut self, key: RoomKey, ti: usize) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(track) = room.tracks.get_mut(ti) else {
            return;
        };
        if track.kind != MediaKind::Video || track.layer_infos.len() < 2 {
            return;
        }
        // A node importing the track chooses layers for its own subscribers.
        let exported = track.exported.then_some(usize::MAX);
        let cap = track
            .fanout
            .iter()
            .filter_map(|s| self.peers.get(&s.subscriber)?.tracks_out.get(s.slot))
            .filter(|o| !o.paused)
            .map(|o| o.layer.preference().unwrap_or(usize::MAX))
            .max()
            .max(exported);
        let count = cap.map_or(0, |c| c.saturating_add(1).min(track.layer_infos.len()));
        let mut rids = [None; 3];
        for (slot, (rid, _)) in rids.iter_mut().zip(&track.layer_infos) {
            *slot = *rid;
        }
        if track.wanted_layers == Some((rids, count)) {
            return;
        }
        track.wanted_layers = Some((rids, count));
        let rids = |infos: &[(Option<Rid>, crate::layers::LayerInfo)]| -> Vec<String> {
            infos
                .iter()
                .filter_map(|(rid, _)| rid.map(|r| r.to_string()))
                .collect()
        };
        self.events.push_back(SfuEvent::LayersWanted {
            room: room.id.clone(),
            peer: track.track.owner,
            mid: track.track.mid,
            layers: rids(&track.layer_infos[..count]),
            unwanted: rids(&track.layer_infos[count..]),
        });
    }

    /// Tells a subscriber's estimator what to aim for. `desired` is what its slots
    /// would carry at their preferred layers, with headroom: the pacer sends at
    /// little more than the estimate, and an estimate held at the bare media rate
    /// would delay every keyframe burst. `minimum` asks for padding only while a slot
    /// is held below the layer it wants: up to the next layer's rate, so the estimate
    /// can grow into it.
    fn steer_bwe(&mut self, now: Instant, key: RoomKey, sub: PeerId) {
        let (Some(room), Some(peer)) = (self.rooms.get(&key), self.peers.get_mut(&sub)) else {
            return;
        };
        if peer.estimate_bps.is_none() {
            return;
        }
        let (mut current_total, mut probe_total, mut wanted_total) = (0u64, 0u64, 0u64);
        let mut held_below = false;
        for out in peer.tracks_out.iter().filter(|o| !o.paused) {
            let Some(src) = out.source else { continue };
            if out.kind == MediaKind::Audio {
                current_total += AUDIO_BUDGET_BPS;
                probe_total += AUDIO_BUDGET_BPS;
                wanted_total += AUDIO_BUDGET_BPS;
                continue;
            }
            let Some(t) = room.tracks.iter().find(|t| t.track == src) else {
                continue;
            };
            let cap = out.layer.preference().unwrap_or(usize::MAX);
            let active = || {
                t.layer_infos
                    .iter()
                    .enumerate()
                    .filter(move |(i, (_, l))| l.active && *i <= cap)
                    .map(|(i, (_, l))| (i, l.bitrate_bps))
            };
            let Some((top_index, top)) = active().next_back() else {
                continue;
            };
            wanted_total += top;
            let current = out
                .layer
                .current()
                .and_then(|c| t.layer_infos.iter().position(|(r, _)| *r == c));
            let (now_rate, next_rate) = match current {
                Some(c) => {
                    let here = active().find(|(i, _)| *i == c).map_or(0, |(_, b)| b);
                    let next = active().find(|(i, _)| *i > c).map_or(here, |(_, b)| b);
                    held_below |= c < top_index;
                    (here, next)
                }
                None => {
                    let low = active().next().map_or(0, |(_, b)| b);
                    (low, low)
                }
            };
            current_total += now_rate;
            probe_total += next_rate;
        }
        let desired = wanted_total.saturating_mul(2).max(MIN_DESIRED_BPS);
        let minimum = if held_below {
            probe_total.max(current_total)
        } else {
            0
        };
        if (minimum, desired) == peer.bwe_steer {
            return;
        }
        peer.bwe_steer = (minimum, desired);
        peer.rtc
            .bwe()
            .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired.max(minimum)));
        self.drain(now, sub);
    }

    /// Re-evaluates a room's active speaker, at most every `SPEAKER_INTERVAL`.
    pub(super) fn check_speaker(&mut self, now: Instant, key: RoomKey) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        if room
            .speaker_checked
            .is_some_and(|t| now.duration_since(t) < SPEAKER_INTERVAL)
        {
            return;
        }
        room.speaker_checked = Some(now);
        let levels = room
            .tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Audio && t.packets > 0)
            .map(|t| (t.track, t.audio_level.dbov()));
        let Some(track) = room.speaker.update(now, levels) else {
            return;
        };
        let identity = self
            .peers
            .get(&track.owner)
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        debug!(room = %room.id, peer = %track.owner, mid = %track.mid, "active speaker");
        self.events.push_back(SfuEvent::SpeakerChanged {
            room: room.id.clone(),
            peer: track.owner,
            identity,
            mid: track.mid,
        });
    }
}

/// What a subscriber's audio is assumed to need of its estimate.
const AUDIO_BUDGET_BPS: u64 = 64_000;

/// The estimator is never asked for less than this: below it, probing stalls.
const MIN_DESIRED_BPS: u64 = 300_000;

/// The share of a subscriber's bandwidth estimate one of its video slots may use:
/// the estimate less its audio, split evenly over the video it receives.
fn slot_budget(peer: &Peer) -> Option<u64> {
    let estimate = peer.estimate_bps?;
    let fed = || {
        peer.tracks_out
            .iter()
            .filter(|o| o.source.is_some() && !o.paused)
    };
    let audio = fed().filter(|o| o.kind == MediaKind::Audio).count() as u64;
    let video = fed().filter(|o| o.kind == MediaKind::Video).count().max(1) as u64;
    Some(estimate.saturating_sub(audio * AUDIO_BUDGET_BPS) / video)
}
