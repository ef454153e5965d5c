//! Rooms that span nodes: exporting a room's participants and tracks over relay links,
//! and importing another node's as participants of the local room ([`crate::relay`]
//! is the wire).
//!
//! An export is a sink per (room, link) that is offered every participant, every
//! track announcement, data message and packet of the room, as a recording tap is; it
//! never blocks. What came in over a link is never offered back to it: the room's
//! node passes one node's participants on to the others, and nothing loops.
//!
//! An import is one *shadow* peer per participant of the other side, with no network
//! of its own: its tracks are announced by the exporter, its packets enter the
//! forwarding path as if its `Rtc` had received them, and keyframe requests for them
//! come out as [`SfuEvent::RelayKeyframeWanted`] for the driver to send back over the
//! link. The local participants hear shadows join, publish, mute and leave like anyone
//! ([`SfuEvent::PeerJoined`] says `relayed`, so the node that hosts the person is the
//! one that reports it to the bus).

use std::collections::HashMap;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpHeader, RtpPacket, SeqNo};
use tracing::{debug, info, warn};

use super::lifecycle::{NewPeer, PeerMedia};
use super::{Deferred, KeyframeAsk, RemoveReason, Sfu, SfuError, SfuEvent};
use crate::peer::PeerState;
use crate::relay::{RelayCodec, RelayParticipant, RelayTrack, RelayedPacket};
use crate::room::{RoomKey, TrackRef};
use crate::{PeerId, PeerRole, RoomId};

/// What an export offers its link.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayOut {
    Participant(RelayParticipant),
    ParticipantLeft {
        room: String,
        participant: u64,
        reason: Option<RemoveReason>,
    },
    Data {
        room: String,
        participant: u64,
        to: Option<Vec<String>>,
        payload: serde_json::Value,
    },
    Track(RelayTrack),
    TrackEnded {
        room: String,
        track: u32,
    },
    Muted {
        room: String,
        track: u32,
        muted: bool,
    },
    Packet(RelayedPacket),
}

/// Where an exported room goes: a link's queue. Never blocks.
pub trait RelaySink: Send {
    /// False when the link is behind: the item is dropped (and counted).
    fn offer(&mut self, item: RelayOut) -> bool;
}

pub(super) struct Export {
    link: u64,
    sink: Box<dyn RelaySink>,
    /// Participants, and their data messages, go too (a link to another node); a link
    /// to another worker of this node feeds its players and gets tracks only.
    participants: bool,
}

impl Export {
    /// Whether what came in over the link `origin` (`None`: this node's own) goes
    /// to this export's link: everything but what came from there.
    pub(super) fn takes(&self, origin: Option<u64>) -> bool {
        origin != Some(self.link)
    }

    /// Offers an item that came in over the link `origin`; `None` if not taken.
    pub(super) fn offer(&mut self, item: RelayOut, origin: Option<u64>) -> Option<bool> {
        if !self.takes(origin) {
            return None;
        }
        Some(self.sink.offer(item))
    }
}

/// What makes a peer a shadow: the link it came over, and its tracks.
#[derive(Debug)]
pub struct RelayIn {
    pub link: u64,
    /// The exporter's id for the participant.
    participant: u64,
    tracks: Vec<InTrack>,
}

#[derive(Debug)]
struct InTrack {
    id: u32,
    mid: Mid,
    /// (the exporter's PT, ours, clock rate).
    pts: Vec<(u8, Pt, u32)>,
}

/// The shadows of one (room, link): by the exporter's participant and track ids.
#[derive(Debug, Default)]
pub(super) struct Imported {
    by_participant: HashMap<u64, PeerId>,
    by_track: HashMap<u32, PeerId>,
}

fn relay_mid(track: u32) -> Mid {
    Mid::from(format!("r{track}").as_str())
}

fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Publisher => "publisher",
        PeerRole::Subscriber => "subscriber",
        PeerRole::Participant => "participant",
    }
}

impl Sfu {
    /// Starts offering a room to `sink` (the link `link` imports it); with
    /// `participants`, its participants and data messages too. The room need not exist
    /// yet. Participants and tracks already there are announced at once.
    pub fn start_export(
        &mut self,
        room: &RoomId,
        link: u64,
        sink: Box<dyn RelaySink>,
        participants: bool,
    ) {
        let exports = self.exports.entry(room.clone()).or_default();
        exports.retain(|e| e.link != link);
        exports.push(Export {
            link,
            sink,
            participants,
        });
        info!(%room, link, participants, "room exported");
        let Some(&key) = self.room_keys.get(room) else {
            return;
        };
        if participants {
            let peers = self
                .rooms
                .get(&key)
                .map(|r| r.peers.clone())
                .unwrap_or_default();
            for id in peers {
                if let Some((_, p, origin)) = self.participant_announcement(id) {
                    self.offer_export(room, Some(link), RelayOut::Participant(p), origin);
                }
            }
        }
        let n = self.rooms.get(&key).map_or(0, |r| r.tracks.len());
        for ti in 0..n {
            if let Some((t, origin)) = self.announcement(key, ti) {
                self.offer_export(room, Some(link), RelayOut::Track(t), origin);
            }
            // The importer's players choose their own layers: every layer is wanted.
            self.announce_wanted(key, ti);
        }
    }

    /// Stops one link's export of a room. True if there was one.
    pub fn stop_export(&mut self, room: &RoomId, link: u64) -> bool {
        let Some(exports) = self.exports.get_mut(room) else {
            return false;
        };
        let before = exports.len();
        exports.retain(|e| e.link != link);
        let stopped = exports.len() < before;
        if exports.is_empty() {
            self.exports.remove(room);
            if let Some(&key) = self.room_keys.get(room)
                && let Some(r) = self.rooms.get_mut(&key)
            {
                for t in &mut r.tracks {
                    t.exported = false;
                }
                // Layers only the importer wanted may be paused again.
                for ti in 0..r.tracks.len() {
                    self.announce_wanted(key, ti);
                }
            }
        }
        if stopped {
            info!(%room, link, "room export stopped");
        }
        stopped
    }

    /// Stops every export over a link (it closed).
    pub fn stop_link_exports(&mut self, link: u64) {
        let rooms: Vec<RoomId> = self.exports.keys().cloned().collect();
        for room in rooms {
            self.stop_export(&room, link);
        }
    }

    /// The rooms exported, with their links.
    pub fn exports(&self) -> Vec<(RoomId, Vec<u64>)> {
        self.exports
            .iter()
            .map(|(r, e)| (r.clone(), e.iter().map(|e| e.link).collect()))
            .collect()
    }

    /// An importer's subscribers wait for a keyframe of `rid` of an exported track.
    pub fn export_keyframe(
        &mut self,
        now: Instant,
        room: &RoomId,
        track: u32,
        rid: Option<Rid>,
    ) -> Result<(), SfuError> {
        let key = *self.room_keys.get(room).ok_or(SfuError::UnknownTrack)?;
        let t = self
            .rooms
            .get(&key)
            .and_then(|r| r.tracks.iter().find(|t| t.relay_id == track))
            .ok_or(SfuError::UnknownTrack)?;
        let ask = Deferred::Keyframe(key, t.track, KeyframeAsk::Layer(rid));
        self.deferred.push_back(ask);
        self.process(now);
        Ok(())
    }

    /// How an exported track is announced: its publisher's payload types of its kind;
    /// and the link the track came in over, if it did.
    fn announcement(&mut self, key: RoomKey, ti: usize) -> Option<(RelayTrack, Option<u64>)> {
        let participant =
            self.relay_participant_id(self.rooms.get(&key)?.tracks.get(ti)?.track.owner);
        let room = self.rooms.get_mut(&key)?;
        let t = room.tracks.get_mut(ti)?;
        let publisher = self.peers.get(&t.track.owner)?;
        let origin = publisher.relayed.as_ref().map(|r| r.link);
        t.exported = true;
        let audio = t.kind == MediaKind::Audio;
        let codecs = publisher
            .rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| p.spec().codec.is_audio() == audio)
            .map(|p| {
                let s = p.spec();
                RelayCodec {
                    pt: *p.pt(),
                    codec: s.codec.to_string(),
                    clock_rate: s.clock_rate.get(),
                    channels: s.channels,
                    packetization_mode: s.format.packetization_mode,
                    profile_level_id: s.format.profile_level_id,
                    profile_id: s.format.profile_id,
                }
            })
            .collect();
        let track = RelayTrack {
            room: room.id.as_str().to_owned(),
            track: t.relay_id,
            kind: if audio { "audio" } else { "video" }.to_owned(),
            participant,
            identity: publisher.identity.clone(),
            name: publisher.name.clone(),
            muted: t.muted,
            codecs,
        };
        Some((track, origin))
    }

    /// This worker's relay id of a peer: unique on the node (each worker has its
    /// own space, as for tracks).
    fn relay_participant_id(&self, peer: PeerId) -> u64 {
        (u64::from(self.config.relay_id_space) << 56) | (peer.0 & ((1 << 56) - 1))
    }

    /// How a peer is announced to other nodes, with its room and the link it came in
    /// over, if it did. WHEP players are not announced; nor is anyone of a room that is
    /// not exported.
    fn participant_announcement(
        &self,
        id: PeerId,
    ) -> Option<(RoomId, RelayParticipant, Option<u64>)> {
        let p = self.peers.get(&id)?;
        if p.role == PeerRole::Subscriber {
            return None;
        }
        let room = self.rooms.get(&p.room)?;
        if !self.exports.contains_key(&room.id) {
            return None;
        }
        Some((
            room.id.clone(),
            RelayParticipant {
                room: room.id.as_str().to_owned(),
                participant: self.relay_participant_id(id),
                identity: p.identity.clone(),
                name: p.name.clone(),
                role: role_name(p.role).to_owned(),
            },
            p.relayed.as_ref().map(|r| r.link),
        ))
    }

    /// Offers `item` (which came in over `origin`, if it did) to a room's exports
    /// (only to `link`'s when given).
    pub(super) fn offer_export(
        &mut self,
        room: &RoomId,
        link: Option<u64>,
        item: RelayOut,
        origin: Option<u64>,
    ) {
        let Some(exports) = self.exports.get_mut(room) else {
            return;
        };
        let presence = matches!(
            item,
            RelayOut::Participant(_) | RelayOut::ParticipantLeft { .. } | RelayOut::Data { .. }
        );
        for e in exports.iter_mut() {
            if link.is_some_and(|l| l != e.link) || (presence && !e.participants) {
                continue;
            }
            if e.offer(item.clone(), origin) == Some(false) {
                self.stats.relay_refused += 1;
            }
        }
    }

    /// Announces a peer that joined to the room's exports.
    pub(super) fn export_joined(&mut self, id: PeerId) {
        if let Some((room, p, origin)) = self.participant_announcement(id) {
            self.offer_export(&room, None, RelayOut::Participant(p), origin);
        }
    }

    /// What tells the room's exports that a peer left (taken before it is removed).
    pub(super) fn leave_announcement(
        &self,
        id: PeerId,
        reason: Option<RemoveReason>,
    ) -> Option<(RoomId, RelayOut, Option<u64>)> {
        let (room, p, origin) = self.participant_announcement(id)?;
        let left = RelayOut::ParticipantLeft {
            room: p.room,
            participant: p.participant,
            reason,
        };
        Some((room, left, origin))
    }

    /// A participant's data message goes to the other nodes of its room too (they
    /// deliver it to their own participants that `to` names).
    pub fn export_data(
        &mut self,
        from: PeerId,
        to: Option<Vec<String>>,
        payload: serde_json::Value,
    ) {
        if let Some((room, p, origin)) = self.participant_announcement(from) {
            let data = RelayOut::Data {
                room: p.room,
                participant: p.participant,
                to,
                payload,
            };
            self.offer_export(&room, None, data, origin);
        }
    }

    /// The link a shadow came in over (`None`: not a shadow).
    pub(super) fn origin_link(&self, peer: PeerId) -> Option<u64> {
        self.peers.get(&peer)?.relayed.as_ref().map(|r| r.link)
    }

    /// Whether `peer` is a shadow (it stands for another node's or worker's
    /// participant).
    pub fn is_import(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.relayed.is_some())
    }

    /// Announces a newly published track to the room's exports.
    pub(super) fn export_new_track(&mut self, key: RoomKey, track: TrackRef) {
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if !self.exports.contains_key(&room.id) {
            return;
        }
        let room_id = room.id.clone();
        let Some(ti) = room.track_index(track) else {
            return;
        };
        if let Some((t, origin)) = self.announcement(key, ti) {
            self.offer_export(&room_id, None, RelayOut::Track(t), origin);
        }
    }

    /// A participant of the other side of a room, over `link`: its shadow here, made
    /// (and announced to the room) the first time.
    pub fn import_participant(
        &mut self,
        now: Instant,
        link: u64,
        p: &RelayParticipant,
    ) -> Result<PeerId, SfuError> {
        let room = RoomId::parse(&p.room).map_err(|_| SfuError::NotAllowed("bad room"))?;
        let role = match p.role.as_str() {
            "participant" => PeerRole::Participant,
            _ => PeerRole::Publisher,
        };
        self.shadow(now, &room, link, p.participant, &p.identity, &p.name, role)
    }

    /// The shadow of (room, link, participant), made if it is new.
    #[allow(clippy::too_many_arguments)]
    fn shadow(
        &mut self,
        now: Instant,
        room: &RoomId,
        link: u64,
        participant: u64,
        identity: &str,
        name: &str,
        role: PeerRole,
    ) -> Result<PeerId, SfuError> {
        if let Some(id) = self
            .imports
            .get(&(room.clone(), link))
            .and_then(|i| i.by_participant.get(&participant))
        {
            return Ok(*id);
        }
        let name = if name.is_empty() { identity } else { name };
        let id = self.add_peer(
            now,
            NewPeer {
                room,
                identity,
                name,
                role,
                room_limit: None,
                shadow: true,
            },
            PeerMedia {
                bwe: false,
                preferred_video: None,
            },
        )?;
        self.shadows += 1;
        let peer = self.peers.get_mut(&id).expect("just added"); // add_peer inserted it
        peer.state = PeerState::Connected;
        // Its `Rtc` never meets the network: it is never given a timeout.
        peer.rtc_deadline = super::io::far_future(now);
        peer.relayed = Some(Box::new(RelayIn {
            link,
            participant,
            tracks: Vec::new(),
        }));
        self.imports
            .entry((room.clone(), link))
            .or_default()
            .by_participant
            .insert(participant, id);
        if let Some(joined) = self.join_event(id) {
            self.events.push_back(joined);
        }
        // The room's node passes it on to the room's other nodes.
        self.export_joined(id);
        info!(%room, link, participant, peer = %id, identity, "participant imported");
        Ok(id)
    }

    /// The shadow that published a track imported over `link`.
    fn shadow_of_track(&self, room: &RoomId, link: u64, track: u32) -> Option<PeerId> {
        self.imports
            .get(&(room.clone(), link))
            .and_then(|i| i.by_track.get(&track))
            .copied()
    }

    /// The shadow of the exporter's participant `participant` over `link`.
    pub fn import_sender(&self, room: &RoomId, link: u64, participant: u64) -> Option<PeerId> {
        self.imports
            .get(&(room.clone(), link))
            .and_then(|i| i.by_participant.get(&participant))
            .copied()
    }

    /// The links whose shadows are all that is left of a room (nobody here needs them).
    pub fn lone_imports(&self, room: &RoomId) -> Vec<u64> {
        let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get(k)) else {
            return Vec::new();
        };
        let mut links = Vec::new();
        for id in &r.peers {
            match self.peers.get(id).and_then(|p| p.relayed.as_ref()) {
                Some(relay) => {
                    if !links.contains(&relay.link) {
                        links.push(relay.link);
                    }
                }
                None => return Vec::new(),
            }
        }
        links
    }

    /// Ends a room's import over a link (the link closed, or nobody here needs it):
    /// its participants leave, disconnected, and their tracks end.
    pub fn close_import(&mut self, now: Instant, room: &RoomId, link: u64) {
        let Some(imported) = self.imports.remove(&(room.clone(), link)) else {
            return;
        };
        let mut shadows: Vec<PeerId> = imported.by_participant.into_values().collect();
        shadows.sort_unstable();
        for id in shadows {
            self.remove_now(id, Some(RemoveReason::Disconnected));
        }
        info!(%room, link, "room import closed");
        self.process(now);
    }

    /// The other side's participant left (for `reason`, as its node said).
    pub fn import_left(
        &mut self,
        now: Instant,
        room: &RoomId,
        link: u64,
        participant: u64,
        reason: RemoveReason,
    ) {
        if let Some(id) = self.import_sender(room, link, participant) {
            self.remove_now(id, Some(reason));
            self.process(now);
        }
    }

    /// Forgets a removed shadow's entries.
    pub(super) fn forget_shadow(&mut self, room: &RoomId, relay: &RelayIn) {
        let key = (room.clone(), relay.link);
        let Some(imported) = self.imports.get_mut(&key) else {
            return;
        };
        imported.by_participant.remove(&relay.participant);
        for t in &relay.tracks {
            imported.by_track.remove(&t.id);
        }
        if imported.by_participant.is_empty() {
            self.imports.remove(&key);
        }
    }

    /// An exporter announced a track of an imported room.
    pub fn import_track(
        &mut self,
        now: Instant,
        link: u64,
        t: &RelayTrack,
    ) -> Result<(), SfuError> {
        let kind = match t.kind.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => return Err(SfuError::NotAllowed("a relayed track is audio or video")),
        };
        let room = RoomId::parse(&t.room).map_err(|_| SfuError::NotAllowed("bad room"))?;
        let peer = self.shadow(
            now,
            &room,
            link,
            t.participant,
            &t.identity,
            &t.name,
            PeerRole::Publisher,
        )?;
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let ours = p.rtc.codec_config().params().to_vec();
        let relay = p.relayed.as_mut().ok_or(SfuError::UnknownPeer)?;
        let pts: Vec<(u8, Pt, u32)> = t
            .codecs
            .iter()
            .filter_map(|c| {
                let p = ours.iter().filter(|p| same_codec(p, c)).max_by_key(|p| {
                    let f = p.spec().format;
                    (f.packetization_mode == c.packetization_mode) as u8
                        + (f.profile_level_id == c.profile_level_id) as u8
                        + (f.profile_id == c.profile_id) as u8
                })?;
                Some((c.pt, p.pt(), c.clock_rate))
            })
            .collect();
        if pts.is_empty() {
            warn!(peer = %peer, track = t.track, codecs = ?t.codecs, "relayed track has no codec this node knows");
            return Err(SfuError::NotAllowed(
                "no codec of the relayed track is known here",
            ));
        }
        let mid = relay_mid(t.track);
        relay.tracks.retain(|x| x.id != t.track);
        relay.tracks.push(InTrack {
            id: t.track,
            mid,
            pts,
        });
        if let Some(i) = self.imports.get_mut(&(room.clone(), link)) {
            i.by_track.insert(t.track, peer);
        }
        // Announced to the room and passed on, as any new track.
        self.publish_track(peer, mid, kind);
        if t.muted {
            self.set_track_muted(now, peer, mid, true)?;
        }
        if let Some(key) = self.room_keys.get(&room).copied() {
            self.bind_room(key);
        }
        self.process(now);
        Ok(())
    }

    /// An exporter's track ended.
    pub fn import_track_ended(&mut self, now: Instant, room: &RoomId, link: u64, track: u32) {
        let Some(peer) = self.shadow_of_track(room, link, track) else {
            return;
        };
        if let Some(i) = self.imports.get_mut(&(room.clone(), link)) {
            i.by_track.remove(&track);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(relay) = p.relayed.as_mut() {
            relay.tracks.retain(|t| t.id != track);
        }
        let key = p.room;
        self.end_track(
            key,
            TrackRef {
                owner: peer,
                mid: relay_mid(track),
            },
            true,
        );
        self.bind_room(key);
        self.process(now);
    }

    /// An exporter's track was muted or unmuted.
    pub fn import_muted(
        &mut self,
        now: Instant,
        room: &RoomId,
        link: u64,
        track: u32,
        muted: bool,
    ) {
        let Some(peer) = self.shadow_of_track(room, link, track) else {
            return;
        };
        if let Err(e) = self.set_track_muted(now, peer, relay_mid(track), muted) {
            debug!(%peer, track, error = %e, "mute of an unknown relayed track");
        }
    }

    /// A relayed packet: forwarded to the local subscribers as one its shadow's
    /// publisher sent.
    pub fn import_packet(&mut self, now: Instant, room: &RoomId, link: u64, p: RelayedPacket) {
        self.stats.relayed_in += 1;
        let Some(peer) = self.shadow_of_track(room, link, p.track) else {
            self.stats.forward_errors += 1;
            return;
        };
        let Some(publisher) = self.peers.get(&peer) else {
            return;
        };
        let Some(relay) = publisher.relayed.as_ref() else {
            return;
        };
        let Some(t) = relay.tracks.iter().find(|t| t.id == p.track) else {
            self.stats.forward_errors += 1;
            return;
        };
        let Some(&(_, pt, clock_rate)) = t.pts.iter().find(|(theirs, _, _)| *theirs == p.pt) else {
            self.stats.forward_errors += 1;
            return;
        };
        let track = TrackRef {
            owner: peer,
            mid: t.mid,
        };
        let key = publisher.room;
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(ti) = room.track_index(track) else {
            return;
        };
        let ssrc = p.ssrc.into();
        let li = match room.tracks[ti].layer_index(ssrc) {
            Some(li) => li,
            None => room.tracks[ti].add_layer(ssrc, p.rid),
        };
        let header = RtpHeader {
            payload_type: pt,
            sequence_number: p.seq as u16,
            timestamp: p.timestamp,
            ssrc,
            marker: p.marker,
            ext_vals: ExtensionValues {
                audio_level: p.audio_level,
                voice_activity: p.voice_activity,
                ..ExtensionValues::default()
            },
            ..RtpHeader::default()
        };
        let Some(freq) = str0m::media::Frequency::new(clock_rate) else {
            return;
        };
        let pkt = RtpPacket::relayed(
            SeqNo::from(p.seq),
            MediaTime::new(u64::from(p.timestamp), freq),
            header,
            p.payload,
            now,
        );
        self.stats.rtp_in += 1;
        self.fan_out(now, peer, key, ti, li, &pkt);
    }

    /// A keyframe request for an imported track: the exporter is asked, over the link.
    /// True if `publisher` is an import (the request is handled).
    pub(super) fn ask_exporter(&mut self, publisher: PeerId, mid: Mid, rid: Option<Rid>) -> bool {
        let Some(p) = self.peers.get(&publisher) else {
            return false;
        };
        let Some(relay) = p.relayed.as_ref() else {
            return false;
        };
        let Some(t) = relay.tracks.iter().find(|t| t.mid == mid) else {
            return true;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return true;
        };
        self.events.push_back(SfuEvent::RelayKeyframeWanted {
            room: room.id.clone(),
            link: relay.link,
            track: t.id,
            rid: rid.map(|r| r.to_string()),
        });
        true
    }
}

fn same_codec(ours: &str0m::format::PayloadParams, c: &RelayCodec) -> bool {
    let s = ours.spec();
    s.codec == Codec::from(c.codec.as_str())
        && s.clock_rate.get() == c.clock_rate
        && s.channels == c.channels
}
