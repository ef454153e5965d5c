//! Published tracks and the subscriber slots they feed: binding, pausing, muting,
//! layer caps, and re-feeding slots when a track ends.

use std::time::Instant;

use str0m::media::{MediaKind, Mid};
use tracing::{debug, info};

use super::{
    Deferred, KeyframeAsk, ParticipantInfo, PublishedTrack, RelayOut, Sfu, SfuError, SfuEvent,
};
use crate::peer::{PeerState, TrackOut};
use crate::room::{RoomKey, Subscription, TrackIn, TrackRef};
use crate::tap::{TapItem, TrackTap};
use crate::{PeerId, PeerRole, RoomId};

impl Sfu {
    /// Feeds a participant's sending m-line `mid` from `track` (any published track of
    /// its room, of the same kind). Replaces what the m-line carried before; the
    /// player sees one continuous stream.
    pub fn subscribe(
        &mut self,
        now: Instant,
        peer: PeerId,
        mid: Mid,
        track: TrackRef,
    ) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        if p.role != PeerRole::Participant {
            return Err(SfuError::NotAllowed(
                "only room participants choose their subscriptions",
            ));
        }
        let key = p.room;
        let slot = p
            .tracks_out
            .iter()
            .position(|o| o.mid == mid && o.enabled)
            .ok_or_else(|| SfuError::UnknownMid(mid.to_string()))?;
        let slot_kind = p.tracks_out[slot].kind;
        let current = p.tracks_out[slot].source;
        let room = self.rooms.get(&key).ok_or(SfuError::UnknownTrack)?;
        let ti = room.track_index(track).ok_or(SfuError::UnknownTrack)?;
        let track_kind = room.tracks[ti].kind;
        if track_kind != slot_kind {
            return Err(SfuError::WrongKind {
                slot: slot_kind,
                track: track_kind,
            });
        }
        if current == Some(track) {
            return Ok(());
        }
        self.unbind_slot(peer, slot);
        let (Some(room), Some(p)) = (self.rooms.get_mut(&key), self.peers.get_mut(&peer)) else {
            return Err(SfuError::UnknownPeer);
        };
        if bind(&mut room.tracks[ti], &mut p.tracks_out[slot], peer, slot) {
            self.deferred
                .push_back(Deferred::Keyframe(key, track, KeyframeAsk::Targets));
        }
        // A publisher that paused its layers hears at once that they are wanted again.
        self.announce_wanted(key, ti);
        self.process(now);
        Ok(())
    }

    /// Stops feeding a participant's m-line `mid`. The m-line stays negotiated and can
    /// be fed again.
    pub fn unsubscribe(&mut self, now: Instant, peer: PeerId, mid: Mid) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        let slot = p
            .tracks_out
            .iter()
            .position(|o| o.mid == mid)
            .ok_or_else(|| SfuError::UnknownMid(mid.to_string()))?;
        self.unbind_slot(peer, slot);
        self.process(now);
        Ok(())
    }

    /// Pauses or resumes what a subscriber's m-line `mid` receives, keeping the
    /// subscription. Video resumes at a keyframe.
    pub fn set_paused(
        &mut self,
        now: Instant,
        peer: PeerId,
        mid: Mid,
        paused: bool,
    ) -> Result<(), SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let key = p.room;
        let out = p
            .tracks_out
            .iter_mut()
            .find(|o| o.mid == mid)
            .ok_or_else(|| SfuError::UnknownMid(mid.to_string()))?;
        if out.paused == paused {
            return Ok(());
        }
        out.paused = paused;
        if !paused {
            out.restart();
            if let Some(src) = out.source {
                self.reselect(key, src);
                self.deferred
                    .push_back(Deferred::Keyframe(key, src, KeyframeAsk::Targets));
            }
        }
        self.process(now);
        Ok(())
    }

    /// Caps the simulcast layer a subscriber receives on its m-line `mid`: `Some(0)` the
    /// lowest, `None` no cap. Takes effect at the next keyframe of the chosen layer.
    pub fn set_layer_preference(
        &mut self,
        peer: PeerId,
        mid: Mid,
        max_layer: Option<usize>,
    ) -> Result<(), SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let room = p.room;
        let out = p
            .tracks_out
            .iter_mut()
            .find(|o| o.mid == mid)
            .ok_or_else(|| SfuError::UnknownMid(mid.to_string()))?;
        out.layer.set_preference(max_layer);
        if let Some(src) = out.source {
            self.reselect(room, src);
        }
        Ok(())
    }

    fn reselect(&mut self, key: RoomKey, track: TrackRef) {
        if let Some(t) = self
            .rooms
            .get_mut(&key)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.track == track))
        {
            t.reselect = true;
        }
    }

    /// The publisher ends one of its tracks without renegotiating (it may renegotiate
    /// the m-line away afterwards).
    pub fn unpublish(&mut self, now: Instant, peer: PeerId, mid: Mid) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        if !p.published.contains(&mid) {
            return Err(SfuError::UnknownTrack);
        }
        let key = p.room;
        self.end_track(key, TrackRef { owner: peer, mid }, true);
        self.bind_room(key);
        self.process(now);
        Ok(())
    }

    /// The publisher muted or unmuted a track. Muted tracks are not forwarded; at
    /// unmute, video subscribers restart at a keyframe.
    pub fn set_track_muted(
        &mut self,
        now: Instant,
        peer: PeerId,
        mid: Mid,
        muted: bool,
    ) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        let key = p.room;
        let track = TrackRef { owner: peer, mid };
        let room = self.rooms.get_mut(&key).ok_or(SfuError::UnknownTrack)?;
        let ti = room.track_index(track).ok_or(SfuError::UnknownTrack)?;
        let t = &mut room.tracks[ti];
        if t.muted == muted {
            return Ok(());
        }
        t.muted = muted;
        if !muted {
            t.reselect = true;
            for sub in &t.fanout {
                if let Some(out) = self
                    .peers
                    .get_mut(&sub.subscriber)
                    .and_then(|p| p.tracks_out.get_mut(sub.slot))
                {
                    out.restart();
                }
            }
            self.deferred
                .push_back(Deferred::Keyframe(key, track, KeyframeAsk::Targets));
        }
        let (exported, relay_id, room_id) = (t.exported, t.relay_id, room.id.clone());
        self.events.push_back(SfuEvent::TrackMuted {
            room: room_id.clone(),
            peer,
            mid,
            muted,
        });
        if exported {
            let item = RelayOut::Muted {
                room: room_id.as_str().to_owned(),
                track: relay_id,
                muted,
            };
            let origin = self.origin_link(peer);
            self.offer_export(&room_id, None, item, origin);
        }
        self.process(now);
        Ok(())
    }

    /// The room's peers and their tracks, in join order.
    pub fn room_participants(&self, room: &RoomId) -> Vec<ParticipantInfo> {
        let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get(k)) else {
            return Vec::new();
        };
        r.peers
            .iter()
            .filter_map(|id| self.peers.get(id))
            .map(|p| ParticipantInfo {
                peer: p.id,
                identity: p.identity.clone(),
                name: p.name.clone(),
                role: p.role,
                connected: p.state == PeerState::Connected,
                tracks: r
                    .tracks
                    .iter()
                    .filter(|t| t.track.owner == p.id)
                    .map(|t| PublishedTrack {
                        mid: t.track.mid,
                        kind: t.kind,
                        muted: t.muted,
                    })
                    .collect(),
            })
            .collect()
    }

    pub(super) fn publish_track(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        if !self.add_track(id, mid, kind) {
            return;
        }
        let (Some(peer), Some(room)) = (
            self.peers.get(&id),
            self.peers.get(&id).and_then(|p| self.rooms.get(&p.room)),
        ) else {
            return;
        };
        self.events.push_back(SfuEvent::TrackPublished {
            room: room.id.clone(),
            peer: id,
            identity: peer.identity.clone(),
            mid,
            kind,
        });
        let key = peer.room;
        self.export_new_track(key, TrackRef { owner: id, mid });
    }

    /// Adds a publisher's track to its room, unannounced. False if it already was.
    pub(super) fn add_track(&mut self, id: PeerId, mid: Mid, kind: MediaKind) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if peer.published.contains(&mid) {
            return false;
        }
        peer.published.push(mid);
        let room = self.rooms.get_mut(&peer.room).expect("peer's room exists"); // a room lives while it has peers
        let mut track = TrackIn::new(TrackRef { owner: id, mid }, kind);
        if self.taps.contains_key(&room.id) {
            track.tap = TrackTap::Waiting;
        }
        track.relay_id = (u32::from(self.config.relay_id_space) << 24) | self.next_relay_track;
        self.next_relay_track = (self.next_relay_track + 1) & 0x00ff_ffff;
        room.tracks.push(track);
        info!(peer = %id, room = %room.id, %mid, ?kind, "track published");
        true
    }

    /// Ends a published track: its subscribers' slots fall empty (WHEP players are
    /// re-fed from another track of the room).
    pub(super) fn end_track(&mut self, key: RoomKey, track: TrackRef, announce: bool) {
        let origin = self.origin_link(track.owner);
        self.end_track_from(key, track, announce, origin);
    }

    /// [`Self::end_track`] of a track that came in over `origin` (its publisher may be
    /// gone from the peer table already).
    pub(super) fn end_track_from(
        &mut self,
        key: RoomKey,
        track: TrackRef,
        announce: bool,
        origin: Option<u64>,
    ) {
        if let Some(p) = self.peers.get_mut(&track.owner) {
            p.published.retain(|m| *m != track.mid);
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(i) = room.track_index(track) else {
            return;
        };
        let t = room.tracks.remove(i);
        room.speaker.remove(track);
        if let (TrackTap::On(_), Some(tap)) = (t.tap, self.taps.get_mut(&room.id)) {
            tap.offer(TapItem::TrackEnded(track), &mut self.stats);
        }
        if t.exported {
            let (id, ended) = (
                room.id.clone(),
                RelayOut::TrackEnded {
                    room: room.id.as_str().to_owned(),
                    track: t.relay_id,
                },
            );
            self.offer_export(&id, None, ended, origin);
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        for s in &t.fanout {
            if let Some(out) = self
                .peers
                .get_mut(&s.subscriber)
                .and_then(|p| p.tracks_out.get_mut(s.slot))
            {
                out.source = None;
            }
        }
        info!(peer = %track.owner, room = %room.id, mid = %track.mid, "track unpublished");
        if announce {
            self.events.push_back(SfuEvent::TrackUnpublished {
                room: room.id.clone(),
                peer: track.owner,
                mid: track.mid,
            });
        }
    }

    pub(super) fn open_slot(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.tracks_out.iter_mut().find(|o| o.mid == mid) {
            Some(out) => out.enabled = true,
            None => peer.tracks_out.push(TrackOut::new(mid, kind)),
        }
    }

    pub(super) fn close_slot(&mut self, id: PeerId, mid: Mid) {
        let Some(slot) = self
            .peers
            .get(&id)
            .and_then(|p| p.tracks_out.iter().position(|o| o.mid == mid))
        else {
            return;
        };
        self.unbind_slot(id, slot);
        if let Some(out) = self
            .peers
            .get_mut(&id)
            .and_then(|p| p.tracks_out.get_mut(slot))
        {
            out.enabled = false;
        }
    }

    /// Empties a subscriber slot.
    fn unbind_slot(&mut self, id: PeerId, slot: usize) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(out) = peer.tracks_out.get_mut(slot) else {
            return;
        };
        let Some(src) = out.source.take() else {
            return;
        };
        if let Some(t) = self
            .rooms
            .get_mut(&peer.room)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.track == src))
        {
            t.fanout.retain(|s| !(s.subscriber == id && s.slot == slot));
        }
    }

    /// Feeds every unfed subscriber slot of a room from a published track of the same
    /// kind, in publish order, one track per slot and at most one slot per track.
    pub(super) fn bind_room(&mut self, key: RoomKey) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        for &sub in &room.peers {
            let Some(peer) = self.peers.get_mut(&sub) else {
                continue;
            };
            if peer.role != PeerRole::Subscriber {
                continue;
            }
            for (slot, out) in peer.tracks_out.iter_mut().enumerate() {
                if out.source.is_some() || !out.enabled {
                    continue;
                }
                let Some(track) = room
                    .tracks
                    .iter_mut()
                    .find(|t| t.kind == out.kind && !t.fanout.iter().any(|s| s.subscriber == sub))
                else {
                    continue;
                };
                if bind(track, out, sub, slot) {
                    self.deferred.push_back(Deferred::Keyframe(
                        key,
                        track.track,
                        KeyframeAsk::Targets,
                    ));
                }
            }
        }
        let n = self.rooms.get(&key).map_or(0, |r| r.tracks.len());
        for ti in 0..n {
            self.announce_wanted(key, ti);
        }
    }
}

/// Feeds subscriber slot `slot` of `sub` from `track`. True if the subscriber needs a
/// keyframe of it.
fn bind(track: &mut TrackIn, out: &mut TrackOut, sub: PeerId, slot: usize) -> bool {
    track.fanout.push(Subscription {
        subscriber: sub,
        slot,
    });
    out.source = Some(track.track);
    out.restart();
    track.reselect = true;
    out.pt_map.clear();
    debug!(subscriber = %sub, track = %track.track.mid, "subscription bound");
    out.kind == MediaKind::Video && !track.muted
}
