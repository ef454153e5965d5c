//! Peers coming and going: WHIP/WHEP offers, room participants joining and
//! renegotiating, ICE restarts and trickled candidates, removal, and the str0m events
//! that move a peer through its states.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, IceConnectionState, Output, Rtc};
use tracing::{debug, info, warn};

use super::io::schedule;
use super::sdp::{
    answer_mids, offer_preferred_video_codec, offer_receives_video, offer_sends_media, parse_offer,
};
use super::{
    Accepted, Deferred, JoinRequest, KeyframeAsk, OfferRequest, RemoveReason, Sfu, SfuError,
    SfuEvent,
};
use crate::ice_restart::{RemoteIceCreds, restart_offer};
use crate::peer::{Peer, PeerState};
use crate::room::{Room, RoomKey, TrackRef};
use crate::{PeerId, PeerRole, RoomId};

/// Sent packets whose transport-wide sequence numbers an estimating subscriber's `Rtc`
/// remembers, to match the player's feedback against (str0m's default is 1000: some
/// 90 kB per video subscriber). 512 is 2.7 s of a 190-packet/s stream and 2 s at
/// 250/s: a report arrives within a round trip, and egress loss is counted over 1 s.
const TWCC_SEND_HISTORY: usize = 512;

/// Paced packets one timeout of a subscriber's `Rtc` may release (str0m: 1, then a
/// timeout a microsecond later per packet, each a whole `handle_timeout`). The worker's
/// timers are a millisecond coarse anyway. 16 bounds the datagrams one subscriber puts in
/// flight per timeout, as the worker's service loop did before str0m patch 29; a larger
/// burst (the pacer allows some 40 ms of its rate) goes on at the next timeout.
const PACED_RELEASES_PER_TIMEOUT: usize = 16;

impl Sfu {
    /// Answers a client's offer and adds the peer to the room. The peer is registered
    /// for demultiplexing before this returns, so the client's first STUN request
    /// finds it even if it arrives before the answer is read.
    pub fn accept_offer(
        &mut self,
        now: Instant,
        req: OfferRequest<'_>,
    ) -> Result<Accepted, SfuError> {
        let offer = parse_offer(req.offer_sdp)?;
        // Estimation picks video layers and costs pacing on every packet: a player
        // that receives no video does without it.
        let bwe = req.role == PeerRole::Subscriber && offer_receives_video(req.offer_sdp);
        let id = self.add_peer(
            now,
            NewPeer {
                room: req.room,
                identity: req.identity,
                name: req.name,
                role: req.role,
                room_limit: req.room_limit,
                shadow: false,
            },
            PeerMedia {
                bwe,
                preferred_video: offer_preferred_video_codec(req.offer_sdp),
            },
        )?;
        // The join is announced before the tracks the offer publishes, once the offer
        // turned out usable.
        let announce_at = self.events.len();
        let answer_sdp = match self.apply_offer(now, id, offer) {
            Ok(a) => a,
            Err(e) => {
                self.remove_now(id, None);
                self.events.truncate(announce_at);
                return Err(e);
            }
        };
        self.process(now);
        let Some(peer) = self.peers.get(&id) else {
            return Err(SfuError::UnusableSdp(
                "the peer failed while answering".into(),
            ));
        };
        let usable = match req.role {
            PeerRole::Publisher => !peer.published.is_empty(),
            PeerRole::Subscriber => !peer.tracks_out.is_empty(),
            PeerRole::Participant => true,
        };
        if !usable {
            self.remove_now(id, None);
            self.events
                .retain(|e| !matches!(e, SfuEvent::TrackPublished { peer, .. } if *peer == id));
            return Err(SfuError::NoUsableMedia(match req.role {
                PeerRole::Subscriber => {
                    "the offer has no audio or video m-line the server can send to (recvonly or sendrecv)"
                }
                _ => {
                    "the offer has no audio or video m-line the server can receive (sendonly or sendrecv)"
                }
            }));
        }
        if let Some(joined) = self.join_event(id) {
            self.events
                .insert(announce_at.min(self.events.len()), joined);
        }
        self.export_joined(id);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.offer_sdp = Some(req.offer_sdp.to_owned());
        }
        info!(peer = %id, room = %req.room, identity = req.identity, role = ?req.role, "peer accepted");
        Ok(Accepted {
            peer: id,
            answer_sdp,
        })
    }

    /// A room participant joins without media: it is in the participant list at once
    /// and negotiates ([`Sfu::negotiate`]) when it has something to send or receive.
    pub fn join(&mut self, now: Instant, req: JoinRequest<'_>) -> Result<PeerId, SfuError> {
        // One identity, one participant: the newer session is the one its person is
        // at (another tab, a phone that lost the old connection without a goodbye).
        let same = self.room_peers_where(req.room, |p| {
            p.role == PeerRole::Participant && p.identity == req.identity && p.relayed.is_none()
        });
        for old in same {
            self.remove_peer_because(now, old, RemoveReason::Replaced)?;
        }
        // A participant may subscribe to video at any later offer; its estimator
        // must exist from the start.
        let id = self.add_peer(
            now,
            NewPeer {
                room: req.room,
                identity: req.identity,
                name: req.name,
                role: PeerRole::Participant,
                room_limit: req.room_limit,
                shadow: false,
            },
            PeerMedia {
                bwe: true,
                preferred_video: None,
            },
        )?;
        if let Some(p) = self.peers.get_mut(&id) {
            p.may_publish = req.may_publish;
        }
        if let Some(joined) = self.join_event(id) {
            self.events.push_back(joined);
        }
        self.export_joined(id);
        info!(peer = %id, room = %req.room, identity = req.identity, "participant joined");
        Ok(id)
    }

    /// A participant's (re-)offer: new m-lines publish or open subscription slots,
    /// m-lines whose direction changed publish, unpublish or close accordingly, and
    /// new ICE credentials restart ICE (a client whose network changed). The client is
    /// always the offerer, so offers never cross.
    pub fn negotiate(
        &mut self,
        now: Instant,
        peer: PeerId,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        let offer = parse_offer(offer_sdp)?;
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        if p.role != PeerRole::Participant {
            return Err(SfuError::NotAllowed(
                "WHIP and WHEP sessions do not renegotiate",
            ));
        }
        if !p.may_publish && offer_sends_media(offer_sdp) {
            return Err(SfuError::NotAllowed(
                "the token does not grant publish; offer recvonly m-lines only",
            ));
        }
        let answer = self.apply_offer(now, peer, offer);
        self.process(now);
        answer
    }

    /// Restarts ICE on a WHIP/WHEP session whose client changed network (RFC 9725
    /// §4.4): the session's offer is replayed with the client's new credentials, and
    /// the answer carries the node's new ones. Media, tracks and subscriptions are
    /// untouched; packets flow again once the client's checks reach the new
    /// credentials.
    pub fn restart_ice(
        &mut self,
        now: Instant,
        peer: PeerId,
        creds: &RemoteIceCreds,
    ) -> Result<String, SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        let offer = p.offer_sdp.as_deref().ok_or(SfuError::NotAllowed(
            "a room participant restarts ICE with a new offer",
        ))?;
        let offer = parse_offer(&restart_offer(offer, creds))?;
        let answer = self.apply_offer(now, peer, offer);
        self.process(now);
        answer
    }

    pub(super) fn join_event(&self, id: PeerId) -> Option<SfuEvent> {
        let peer = self.peers.get(&id)?;
        let room = self.rooms.get(&peer.room)?;
        Some(SfuEvent::PeerJoined {
            peer: id,
            room: room.id.clone(),
            identity: peer.identity.clone(),
            name: peer.name.clone(),
            role: peer.role,
            relayed: peer.relayed.is_some(),
        })
    }

    /// A new peer with its `Rtc`, in the demux tables and the room, not yet announced.
    pub(super) fn add_peer(
        &mut self,
        now: Instant,
        new: NewPeer<'_>,
        media: PeerMedia,
    ) -> Result<PeerId, SfuError> {
        let NewPeer {
            room,
            identity,
            name,
            role,
            room_limit,
            shadow,
        } = new;
        let PeerMedia {
            bwe,
            preferred_video,
        } = media;
        // Another node's participant is bounded by its own node.
        if !shadow && self.peers.len().saturating_sub(self.shadows) >= self.config.max_peers {
            return Err(SfuError::Full(self.config.max_peers));
        }
        if let Some(limit) = room_limit {
            let present = self
                .room_keys
                .get(room)
                .and_then(|k| self.rooms.get(k))
                .map_or(0, |r| r.peers.len());
            if present >= limit {
                return Err(SfuError::RoomFull(limit));
            }
        }
        let mut builder = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .enable_vp9(true)
            .enable_av1(true)
            .set_stats_interval(self.config.stats_interval);
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        builder = builder
            .set_send_buffer_video(self.config.send_buffer_video.max(1))
            .set_twcc_send_history(TWCC_SEND_HISTORY)
            .set_paced_releases_per_timeout(PACED_RELEASES_PER_TIMEOUT);
        if bwe {
            builder = builder.enable_bwe(self.config.initial_bitrate);
        } else if role == PeerRole::Subscriber {
            // Transport-wide sequence numbers serve only the estimator: without one,
            // the player's feedback (a datagram per few packets) would be parsed and
            // dropped.
            builder = builder.set_extension_map(extensions_without_transport_cc());
        }
        if let Some(first) = preferred_video {
            // str0m answers in its own codec order, so the offerer's first choice (a
            // phone's hardware H.264, say) would lose to VP8. Re-enabling a codec
            // moves it to the end: every other video codec goes behind the first.
            let cc = builder.codec_config();
            for c in [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1] {
                if c == first || !cc.params().iter().any(|p| p.spec().codec == c) {
                    continue;
                }
                match c {
                    Codec::Vp8 => cc.enable_vp8(true),
                    Codec::H264 => cc.enable_h264(true),
                    Codec::Vp9 => cc.enable_vp9(true),
                    _ => cc.enable_av1(true),
                }
            }
        }
        let mut rtc = builder.build(now);
        for addr in &self.config.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "unusable local candidate"),
            }
        }
        for addr in &self.config.tcp_candidates {
            match Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
            {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "unusable local ICE-TCP candidate"),
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        let key = self.room_key(room);
        self.demux.insert_ufrag(ufrag.clone(), id);
        self.rooms
            .get_mut(&key)
            .expect("room_key creates the room") // room_key() inserted it just above
            .peers
            .push(id);
        self.peers.insert(
            id,
            Box::new(Peer {
                id,
                room: key,
                identity: identity.to_owned(),
                name: name.to_owned(),
                role,
                rtc,
                ufrag,
                addrs: Vec::new(),
                state: PeerState::Idle,
                created: now,
                rtc_deadline: now,
                keyframe_deadline: None,
                scheduled: None,
                tracks_out: Vec::new(),
                published: Vec::new(),
                estimate_bps: None,
                paced: bwe,
                bwe_steer: (0, 0),
                directions: Vec::new(),
                offer_sdp: None,
                last_proto: Protocol::Udp,
                last_source: self.config.local_addr,
                // WHIP/WHEP sessions are held to their role; participants to their grant.
                may_publish: true,
                relayed: None,
            }),
        );
        Ok(id)
    }

    /// Answers an offer on an existing peer and brings the room in line with it.
    fn apply_offer(
        &mut self,
        now: Instant,
        id: PeerId,
        offer: SdpOffer,
    ) -> Result<String, SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer)?;
        // str0m asserts on some malformed offers (a payload type claimed twice, found
        // by fuzz/sdp_offer): one client's offer must not take the worker down. After
        // a panic the peer's state is unknown, so the peer goes with the offer.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peer.rtc.sdp_api().accept_offer(offer)
        }));
        let Ok(answer) = answer else {
            warn!(peer = %id, "the offer made str0m panic; the peer is removed");
            self.remove_now(id, Some(RemoveReason::Failed));
            return Err(SfuError::UnusableSdp(
                "the offer could not be used (its payload types conflict)".into(),
            ));
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // str0m may have taken part of the offer in; drain so the peer stays
                // consistent with what it did take.
                self.drain(now, id);
                return Err(SfuError::UnusableSdp(e.to_string()));
            }
        };
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != peer.ufrag {
            // The remote restarted ICE (new network): STUN with the new credentials
            // must find this peer; the old ones are void.
            info!(peer = %id, "ICE restart");
            self.demux.forget(id, &peer.ufrag, &[]);
            self.demux.insert_ufrag(ufrag.clone(), id);
            peer.ufrag = ufrag;
        }
        if peer.state == PeerState::Idle {
            peer.state = PeerState::Connecting;
            peer.created = now;
        }
        // str0m announces `MediaAdded` only once media can flow; the room needs the
        // m-lines now, so read them from the answer.
        let answer_sdp = answer.to_sdp_string();
        for mid in answer_mids(&answer_sdp) {
            let media = self.peers[&id]
                .rtc
                .media(mid)
                .map(|m| (m.kind(), m.direction()));
            if let Some((kind, direction)) = media {
                self.reconcile_media(id, mid, kind, direction);
            }
        }
        self.drain(now, id);
        Ok(answer_sdp)
    }

    /// Adds trickled remote candidates (`a=candidate:` values or full lines).
    pub fn add_remote_candidates(
        &mut self,
        now: Instant,
        peer: PeerId,
        candidates: &[&str],
    ) -> Result<usize, SfuError> {
        let mut parsed = Vec::with_capacity(candidates.len());
        for c in candidates {
            let c = c.trim().trim_start_matches("a=");
            parsed.push(
                Candidate::from_sdp_string(c)
                    .map_err(|e| SfuError::BadCandidate(format!("{c}: {e}")))?,
            );
        }
        if !self.peers.contains_key(&peer) {
            return Err(SfuError::UnknownPeer);
        }
        let n = parsed.len();
        for c in parsed {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.rtc.add_remote_candidate(c);
            }
            self.drain(now, peer);
        }
        self.process(now);
        Ok(n)
    }

    /// Ends a peer gracefully: its tracks end for every subscriber at once, and a
    /// goodbye (RTCP BYE, DTLS close_notify) is queued for transmission.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) -> Result<(), SfuError> {
        self.remove_peer_because(now, peer, RemoveReason::Requested)
    }

    /// Removes every peer of `room` whose identity is in `identities` (their passes
    /// were revoked), as [`Sfu::remove_peer_because`] does; how many.
    pub fn remove_identities(
        &mut self,
        now: Instant,
        room: &RoomId,
        identities: &[String],
        reason: RemoveReason,
    ) -> usize {
        // A shadow is removed by its own node, which tells this one.
        let leaving = self.room_peers_where(room, |p| {
            p.relayed.is_none() && identities.contains(&p.identity)
        });
        for id in &leaving {
            let _ = self.remove_peer_because(now, *id, reason);
        }
        leaving.len()
    }

    /// The peers of `room` that `pred` picks, in join order.
    fn room_peers_where(&self, room: &RoomId, pred: impl Fn(&Peer) -> bool) -> Vec<PeerId> {
        self.room_keys
            .get(room)
            .and_then(|k| self.rooms.get(k))
            .into_iter()
            .flat_map(|r| &r.peers)
            .filter(|id| self.peers.get(id).is_some_and(|p| pred(p)))
            .copied()
            .collect()
    }

    /// Like [`Sfu::remove_peer`], for a reason the application knows (a participant
    /// whose signaling did not come back within the grace period is `Disconnected`).
    pub fn remove_peer_because(
        &mut self,
        now: Instant,
        peer: PeerId,
        reason: RemoveReason,
    ) -> Result<(), SfuError> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(SfuError::UnknownPeer);
        };
        if p.rtc.close().is_ok() {
            // Drain the goodbye into the transmit queue; nothing else reads this Rtc again.
            while let Ok(out) = p.rtc.poll_output() {
                match out {
                    Output::Transmit(t) => {
                        self.stats.datagrams_out += 1;
                        self.stats.bytes_out += t.contents.len() as u64;
                        self.outbox.push(t);
                    }
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
                if !p.rtc.is_alive() {
                    break;
                }
            }
        }
        self.remove_now(peer, Some(reason));
        self.process(now);
        Ok(())
    }

    /// Removes a peer from every table. Its tracks end for their subscribers, whose
    /// slots are re-fed from another publisher of the room if there is one.
    /// `reason: None` removes silently (a peer that was never announced).
    pub(super) fn remove_now(&mut self, id: PeerId, reason: Option<RemoveReason>) {
        // Told to the other nodes once its tracks ended.
        let leaving = self.leave_announcement(id, reason);
        let origin = self.origin_link(id);
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if peer.relayed.is_some() {
            self.shadows -= 1;
        }
        peer.rtc.disconnect();
        self.demux.forget(id, &peer.ufrag, &peer.addrs);
        let key = peer.room;
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        if let Some(relay) = &peer.relayed {
            let room_id = room.id.clone();
            self.forget_shadow(&room_id, relay);
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        room.peers.retain(|p| *p != id);
        let room_id = room.id.clone();
        // Subscriptions of this subscriber.
        for out in &peer.tracks_out {
            if let Some(src) = out.source
                && let Some(t) = room.tracks.iter_mut().find(|t| t.track == src)
            {
                t.fanout.retain(|s| s.subscriber != id);
            }
        }
        // Tracks of this publisher.
        let ended: Vec<TrackRef> = room
            .tracks
            .iter()
            .filter(|t| t.track.owner == id)
            .map(|t| t.track)
            .collect();
        for t in &ended {
            self.end_track_from(key, *t, reason.is_some(), origin);
        }
        if let Some((room, left, origin)) = leaving {
            self.offer_export(&room, None, left, origin);
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let empty = room.peers.is_empty();
        if empty {
            self.rooms.remove(&key);
            self.room_keys.remove(&room_id);
        }
        if let Some(reason) = reason {
            info!(peer = %id, room = %room_id, identity = %peer.identity, ?reason, "peer removed");
            self.events.push_back(SfuEvent::PeerRemoved {
                peer: id,
                room: room_id,
                identity: peer.identity.clone(),
                reason,
            });
        }
        if !ended.is_empty() && !empty {
            self.bind_room(key);
        }
    }

    fn room_key(&mut self, id: &RoomId) -> RoomKey {
        if let Some(k) = self.room_keys.get(id) {
            return *k;
        }
        let k = RoomKey(self.next_room);
        self.next_room = self.next_room.wrapping_add(1);
        self.room_keys.insert(id.clone(), k);
        self.rooms.insert(k, Room::new(id.clone()));
        k
    }

    pub(super) fn on_event(&mut self, now: Instant, id: PeerId, ev: Event) {
        match ev {
            Event::RtpPacket(pkt) => self.forward(now, id, pkt),
            Event::Connected => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                peer.state = PeerState::Connected;
                let room = self.rooms[&peer.room].id.clone();
                let relayed = self
                    .config
                    .relays
                    .as_ref()
                    .and_then(|r| r.transport_of(peer.last_source));
                let transport = match (peer.last_proto, relayed) {
                    (Protocol::Tcp, _) => {
                        self.stats.connected_tcp += 1;
                        "tcp"
                    }
                    (_, Some(t)) => {
                        self.stats.connected_turn[t as usize] += 1;
                        t.label()
                    }
                    _ => {
                        self.stats.connected_udp += 1;
                        "udp"
                    }
                };
                info!(peer = %id, %room, transport, "peer connected");
                self.events.push_back(SfuEvent::PeerConnected {
                    peer: id,
                    room,
                    identity: peer.identity.clone(),
                    role: peer.role,
                });
                // Subscribers bound before they connected get a fresh keyframe now.
                self.request_keyframes_for(id);
            }
            Event::IceConnectionStateChange(state) => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                match (state, peer.state) {
                    (IceConnectionState::Disconnected, PeerState::Connected)
                    | (IceConnectionState::Disconnected, PeerState::Connecting) => {
                        debug!(peer = %id, "ICE disconnected; grace period starts");
                        peer.state = PeerState::Disconnected { since: now };
                        schedule(&mut self.timers, &self.config, peer, now);
                    }
                    (
                        IceConnectionState::Connected | IceConnectionState::Completed,
                        PeerState::Disconnected { .. },
                    ) => {
                        debug!(peer = %id, "ICE back");
                        peer.state = PeerState::Connected;
                    }
                    _ => {}
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let estimate = match kind {
                    BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. } => estimate,
                    _ => return,
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                peer.estimate_bps = Some(estimate.as_u64());
                // Decided again at each video source's next packet.
                let Some(room) = self.rooms.get_mut(&peer.room) else {
                    return;
                };
                for out in peer
                    .tracks_out
                    .iter()
                    .filter(|o| o.kind == MediaKind::Video)
                {
                    if let Some(t) = out
                        .source
                        .and_then(|s| room.tracks.iter_mut().find(|t| t.track == s))
                    {
                        t.reselect = true;
                    }
                }
            }
            Event::KeyframeRequest(r) => {
                let Some(peer) = self.peers.get(&id) else {
                    return;
                };
                if let Some(source) = peer
                    .tracks_out
                    .iter()
                    .find(|t| t.mid == r.mid)
                    .and_then(|t| t.source)
                {
                    self.deferred.push_back(Deferred::Keyframe(
                        peer.room,
                        source,
                        KeyframeAsk::Targets,
                    ));
                }
            }
            Event::Closed => {
                self.deferred
                    .push_back(Deferred::Remove(id, RemoveReason::ClosedByRemote));
            }
            _ => {}
        }
    }

    /// Brings the room in line with one negotiated m-line: a receiving m-line of a peer
    /// that publishes is a track, a sending m-line of a peer that subscribes is a slot.
    /// Only a change from the last negotiation acts, so a track the client unpublished
    /// stays unpublished until its m-line stops and starts sending again.
    fn reconcile_media(&mut self, id: PeerId, mid: Mid, kind: MediaKind, direction: Direction) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let before = match peer.directions.iter_mut().find(|(m, _)| *m == mid) {
            Some((_, d)) => std::mem::replace(d, direction),
            None => {
                peer.directions.push((mid, direction));
                Direction::Inactive
            }
        };
        if !matches!(kind, MediaKind::Audio | MediaKind::Video) {
            return;
        }
        let role = peer.role;
        let room_key = peer.room;
        if role.publishes() {
            match (before.is_receiving(), direction.is_receiving()) {
                (false, true) => self.publish_track(id, mid, kind),
                (true, false) => self.end_track(room_key, TrackRef { owner: id, mid }, true),
                _ => {}
            }
        }
        if role.subscribes() {
            match (before.is_sending(), direction.is_sending()) {
                (false, true) => self.open_slot(id, mid, kind),
                (true, false) => self.close_slot(id, mid),
                _ => {}
            }
        }
        if role == PeerRole::Subscriber || role.publishes() {
            self.bind_room(room_key);
        }
    }
}

/// Who a new peer is and where it goes.
pub(super) struct NewPeer<'a> {
    pub(super) room: &'a RoomId,
    pub(super) identity: &'a str,
    pub(super) name: &'a str,
    pub(super) role: PeerRole,
    pub(super) room_limit: Option<usize>,
    /// Another node's participant (`relays`).
    pub(super) shadow: bool,
}

/// How a new peer's `Rtc` is set up.
pub(super) struct PeerMedia {
    /// Run the bandwidth estimator (subscribers of video).
    pub(super) bwe: bool,
    /// The video codec to put first in answers (the offerer's first choice).
    pub(super) preferred_video: Option<Codec>,
}

/// str0m's standard header extensions less transport-wide congestion control.
fn extensions_without_transport_cc() -> ExtensionMap {
    let mut map = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if *ext != Extension::TransportSequenceNumber {
            map.set(id, ext.clone());
        }
    }
    map
}
