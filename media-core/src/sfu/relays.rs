//! Rooms that span nodes: exporting a room's tracks over relay links, and importing
//! another node's tracks as a publisher of the local room ([`crate::relay`] is the wire).
//!
//! An export is a sink per (room, link) that is offered every track announcement and
//! every packet of the room's own publishers, as a recording tap is; it never blocks.
//! An import is one publisher peer per (room, link) with no network of its own: its
//! tracks are announced by the exporter, its packets enter the forwarding path as if
//! its `Rtc` had received them, and keyframe requests for them come out as
//! [`SfuEvent::RelayKeyframeWanted`] for the driver to send back over the link.
//! Imported tracks are exported again only to another worker of the same node (a room
//! spread over workers): a room's home node feeds every other node directly.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpHeader, RtpPacket, SeqNo};
use tracing::{debug, info, warn};

use super::lifecycle::{NewPeer, PeerMedia};
use super::{Deferred, KeyframeAsk, Sfu, SfuError, SfuEvent};
use crate::peer::PeerState;
use crate::relay::{RelayCodec, RelayTrack, RelayedPacket};
use crate::room::{RoomKey, TrackRef};
use crate::{PeerId, PeerRole, RoomId};

/// What an export offers its link.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayOut {
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
    /// Imported tracks go too (a link to another worker of this node); a link to
    /// another node gets only the room's own publishers.
    imports_too: bool,
}

impl Export {
    /// Offers an item of a track that is imported (`imported`) or not.
    pub(super) fn offer(&mut self, item: RelayOut, imported: bool) -> Option<bool> {
        if imported && !self.imports_too {
            return None;
        }
        Some(self.sink.offer(item))
    }
}

/// What makes a peer an import.
#[derive(Debug)]
pub struct RelayIn {
    pub link: u64,
    tracks: Vec<InTrack>,
}

#[derive(Debug)]
struct InTrack {
    id: u32,
    mid: Mid,
    /// (the exporter's PT, ours, clock rate).
    pts: Vec<(u8, Pt, u32)>,
}

fn relay_mid(track: u32) -> Mid {
    Mid::from(format!("r{track}").as_str())
}

impl Sfu {
    /// Starts offering a room's tracks to `sink` (the link `link` imports it); with
    /// `imports_too`, the tracks this worker imports as well. The room need not exist
    /// yet. Tracks already published are announced at once.
    pub fn start_export(
        &mut self,
        room: &RoomId,
        link: u64,
        sink: Box<dyn RelaySink>,
        imports_too: bool,
    ) {
        let exports = self.exports.entry(room.clone()).or_default();
        exports.retain(|e| e.link != link);
        exports.push(Export {
            link,
            sink,
            imports_too,
        });
        info!(%room, link, imports_too, "room exported");
        let Some(&key) = self.room_keys.get(room) else {
            return;
        };
        let n = self.rooms.get(&key).map_or(0, |r| r.tracks.len());
        for ti in 0..n {
            if let Some((t, imported)) = self.announcement(key, ti) {
                self.offer_export(room, Some(link), RelayOut::Track(t), imported);
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
    /// and whether the track is itself imported.
    fn announcement(&mut self, key: RoomKey, ti: usize) -> Option<(RelayTrack, bool)> {
        let room = self.rooms.get_mut(&key)?;
        let t = room.tracks.get_mut(ti)?;
        let publisher = self.peers.get(&t.track.owner)?;
        let imported = publisher.relayed.is_some();
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
            identity: publisher.identity.clone(),
            muted: t.muted,
            codecs,
        };
        Some((track, imported))
    }

    /// Offers `item` (of an `imported` track or not) to a room's exports (only to
    /// `link`'s when given).
    pub(super) fn offer_export(
        &mut self,
        room: &RoomId,
        link: Option<u64>,
        item: RelayOut,
        imported: bool,
    ) {
        let Some(exports) = self.exports.get_mut(room) else {
            return;
        };
        for e in exports.iter_mut() {
            if link.is_some_and(|l| l != e.link) {
                continue;
            }
            if e.offer(item.clone(), imported) == Some(false) {
                self.stats.relay_refused += 1;
            }
        }
    }

    /// Whether `peer` is an import (a publisher standing for another node's or
    /// worker's tracks).
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
        if let Some((t, imported)) = self.announcement(key, ti) {
            self.offer_export(&room_id, None, RelayOut::Track(t), imported);
        }
    }

    /// Opens the import of a room over a link: a publisher peer of the local room whose
    /// tracks come from `node`. One per (room, link); asking again returns it.
    pub fn open_import(
        &mut self,
        now: Instant,
        room: &RoomId,
        link: u64,
        node: &str,
    ) -> Result<PeerId, SfuError> {
        if let Some(id) = self.import_peer(room, link) {
            return Ok(id);
        }
        let identity = format!("relay:{node}");
        let id = self.add_peer(
            now,
            NewPeer {
                room,
                identity: &identity,
                name: node,
                role: PeerRole::Publisher,
                room_limit: None,
            },
            PeerMedia {
                bwe: false,
                preferred_video: None,
            },
        )?;
        let peer = self.peers.get_mut(&id).expect("just added"); // add_peer inserted it
        peer.state = PeerState::Connected;
        // Its `Rtc` never meets the network: it is never given a timeout.
        peer.rtc_deadline = super::io::far_future(now);
        peer.relayed = Some(Box::new(RelayIn {
            link,
            tracks: Vec::new(),
        }));
        self.imports.insert((room.clone(), link), id);
        info!(%room, link, node, peer = %id, "room imported");
        Ok(id)
    }

    /// The import peer of a room over a link.
    pub fn import_peer(&self, room: &RoomId, link: u64) -> Option<PeerId> {
        self.imports.get(&(room.clone(), link)).copied()
    }

    /// The imports of a room with no other peer left in it (nobody here needs them).
    pub fn lone_imports(&self, room: &RoomId) -> Vec<(PeerId, u64)> {
        let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get(k)) else {
            return Vec::new();
        };
        let mut imports = Vec::new();
        for id in &r.peers {
            match self.peers.get(id).and_then(|p| p.relayed.as_ref()) {
                Some(relay) => imports.push((*id, relay.link)),
                None => return Vec::new(),
            }
        }
        imports
    }

    /// Closes an import: its tracks end for the local subscribers, silently (the
    /// publishers did not leave; the link did).
    pub fn close_import(&mut self, now: Instant, peer: PeerId) {
        if self.peers.get(&peer).is_some_and(|p| p.relayed.is_some()) {
            self.remove_now(peer, None);
            self.process(now);
        }
    }

    /// An exporter announced a track of an imported room.
    pub fn import_track(
        &mut self,
        now: Instant,
        peer: PeerId,
        t: &RelayTrack,
    ) -> Result<(), SfuError> {
        let kind = match t.kind.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => return Err(SfuError::NotAllowed("a relayed track is audio or video")),
        };
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
        let key = p.room;
        if !self.add_track(peer, mid, kind) {
            return Ok(()); // announced again (a re-import): the track stands
        }
        if t.muted {
            self.set_track_muted(now, peer, mid, true)?;
        }
        // Another worker of this node may take the room from here.
        self.export_new_track(key, TrackRef { owner: peer, mid });
        self.bind_room(key);
        self.process(now);
        Ok(())
    }

    /// An exporter's track ended.
    pub fn import_track_ended(&mut self, now: Instant, peer: PeerId, track: u32) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(relay) = p.relayed.as_mut() else {
            return;
        };
        relay.tracks.retain(|t| t.id != track);
        let key = p.room;
        self.end_track(
            key,
            TrackRef {
                owner: peer,
                mid: relay_mid(track),
            },
            false,
        );
        self.bind_room(key);
        self.process(now);
    }

    /// An exporter's track was muted or unmuted.
    pub fn import_muted(&mut self, now: Instant, peer: PeerId, track: u32, muted: bool) {
        if let Err(e) = self.set_track_muted(now, peer, relay_mid(track), muted) {
            debug!(%peer, track, error = %e, "mute of an unknown relayed track");
        }
    }

    /// A relayed packet for an import: forwarded to the local subscribers as one the
    /// import's publisher sent.
    pub fn import_packet(&mut self, now: Instant, peer: PeerId, p: RelayedPacket) {
        self.stats.relayed_in += 1;
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
