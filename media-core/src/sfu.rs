//! `Sfu`: the peers and rooms of one worker, and the packet routing between them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor, Vp8Patch, Vp8PatchError};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info, warn};

use crate::demux::Demux;
use crate::ice_restart::{RemoteIceCreds, restart_offer};
use crate::keyframe::is_keyframe;
use crate::peer::{Peer, PeerState, TrackOut};
use crate::room::{
    KeyframeDecision, Room, RoomKey, SPEAKER_INTERVAL, Subscription, TrackIn, TrackRef,
};
use crate::tap::{MediaTap, SenderClock, Tap, TapItem, TapPacket, TapStats, TapTrack, TrackTap};
use crate::timers::TimerQueue;
use crate::turn::RelayDirectory;
use crate::{PeerId, PeerRole, RoomId};

/// Settings of one worker's core.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates offered to every peer: the worker's UDP socket as clients reach
    /// it (the public address behind NAT). At least one.
    pub candidates: Vec<SocketAddr>,
    /// The worker socket's own address. Datagrams arrive here; when it differs from the
    /// advertised candidates (NAT), they are presented to str0m as arriving on the
    /// first candidate.
    pub local_addr: SocketAddr,
    /// Passive ICE-TCP host candidates (RFC 6544): the worker's TCP listener as clients
    /// reach it, for networks that drop UDP. Their lower type preference keeps UDP
    /// first wherever it works. Empty: no ICE-TCP.
    pub tcp_candidates: Vec<SocketAddr>,
    /// At most one keyframe request per publisher track per interval. A little over
    /// the 300 ms within which Chromium ignores a second request: a deferred request
    /// sent exactly 300 ms after the first can arrive a hair sooner and be ignored.
    pub keyframe_min_interval: Duration,
    /// While a connected subscriber waits for a keyframe of a layer, the publisher is
    /// asked again this often: an encoder may ignore a request (Chromium drops one that
    /// comes within 300 ms of the last it acted on) or the request may be lost.
    pub keyframe_retry_interval: Duration,
    /// A peer that has not connected this long after its answer is reaped.
    pub connect_timeout: Duration,
    /// A connected peer whose ICE consent is lost is reaped after this long.
    pub disconnect_grace: Duration,
    /// Peers this worker accepts at most.
    pub max_peers: usize,
    /// How often str0m reports stats events (also the audio-level refresh).
    pub stats_interval: Option<Duration>,
    /// Where a subscriber's send-side bandwidth estimate starts; `None` turns the
    /// estimator off (layers are then chosen by preference alone).
    pub initial_bitrate: Option<Bitrate>,
    /// The embedded TURN server's relay addresses, so a relayed peer is counted by the
    /// transport its client used to reach the relay.
    pub relays: Option<Arc<dyn RelayDirectory>>,
}

impl SfuConfig {
    pub fn new(local_addr: SocketAddr) -> Self {
        SfuConfig {
            candidates: vec![local_addr],
            local_addr,
            tcp_candidates: Vec::new(),
            keyframe_min_interval: Duration::from_millis(350),
            keyframe_retry_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(20),
            max_peers: 10_000,
            stats_interval: None,
            initial_bitrate: Some(Bitrate::kbps(1_000)),
            relays: None,
        }
    }
}

/// An offer from a client that wants to join a room.
#[derive(Debug, Clone, Copy)]
pub struct OfferRequest<'a> {
    pub room: &'a RoomId,
    pub identity: &'a str,
    /// What other participants see.
    pub name: &'a str,
    pub role: PeerRole,
    pub offer_sdp: &'a str,
    /// Most peers the room may hold, counting this one (from the join token).
    pub room_limit: Option<usize>,
}

/// A room participant joining before it has media ([`Sfu::join`]).
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    pub room: &'a RoomId,
    /// Unique among the room's participants: joining with the identity of one
    /// replaces it ([`RemoveReason::Replaced`]).
    pub identity: &'a str,
    /// What other participants see.
    pub name: &'a str,
    /// Most peers the room may hold, counting this one.
    pub room_limit: Option<usize>,
    /// The participant's token grants publishing: without it, offers that send
    /// audio or video are refused here, whatever signaling let through.
    pub may_publish: bool,
}

/// One peer of a room, as the room's participant list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub peer: PeerId,
    pub identity: String,
    pub name: String,
    pub role: PeerRole,
    /// ICE and DTLS are up (and not in a disconnect grace period).
    pub connected: bool,
    pub tracks: Vec<PublishedTrack>,
}

/// A track of a [`ParticipantInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub mid: Mid,
    pub kind: MediaKind,
    pub muted: bool,
}

/// A peer accepted into a room, with the SDP answer to send back.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub peer: PeerId,
    pub answer_sdp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("the SDP offer could not be parsed: {0}")]
    MalformedSdp(String),
    #[error("the SDP offer cannot be answered: {0}")]
    UnusableSdp(String),
    #[error("{0}")]
    NoUsableMedia(&'static str),
    #[error("no such peer")]
    UnknownPeer,
    #[error("this worker is at its limit of {0} peers")]
    Full(usize),
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("the room is full ({0} participants)")]
    RoomFull(usize),
    #[error("no such track in this room")]
    UnknownTrack,
    #[error("no m-line {0} that can carry this")]
    UnknownMid(String),
    #[error("the m-line carries {slot:?}, the track is {track:?}")]
    WrongKind { slot: MediaKind, track: MediaKind },
    #[error("{0}")]
    NotAllowed(&'static str),
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The application asked (WHIP/WHEP `DELETE`).
    Requested,
    /// ICE/DTLS never completed.
    ConnectTimeout,
    /// Connectivity was lost and did not come back within the grace period.
    Disconnected,
    /// The remote closed the connection.
    ClosedByRemote,
    /// str0m reported an error for this peer.
    Failed,
    /// A participant with the same identity joined the room.
    Replaced,
    /// The room's owner revoked the peer's pass (reset or deleted the room, removed
    /// the person, changed who may join).
    Revoked,
}

/// What the core tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A peer entered the room's participant list (before it connects).
    PeerJoined {
        peer: PeerId,
        room: RoomId,
        identity: String,
        name: String,
        role: PeerRole,
    },
    PeerConnected {
        peer: PeerId,
        room: RoomId,
        identity: String,
        role: PeerRole,
    },
    PeerRemoved {
        peer: PeerId,
        room: RoomId,
        identity: String,
        reason: RemoveReason,
    },
    TrackPublished {
        room: RoomId,
        peer: PeerId,
        identity: String,
        mid: Mid,
        kind: MediaKind,
    },
    TrackUnpublished {
        room: RoomId,
        peer: PeerId,
        mid: Mid,
    },
    /// The publisher muted or unmuted a track; muted tracks are not forwarded.
    TrackMuted {
        room: RoomId,
        peer: PeerId,
        mid: Mid,
        muted: bool,
    },
    /// The simulcast layers (rids, low to high) anyone may receive of a publisher's
    /// track changed. `unwanted` are the layers received so far that nobody may
    /// receive: the publisher may stop sending those. A layer never received (the
    /// browser has not sent it yet, for bandwidth or resolution) is in neither list and
    /// must stay on, or it could never appear.
    LayersWanted {
        room: RoomId,
        peer: PeerId,
        mid: Mid,
        layers: Vec<String>,
        unwanted: Vec<String>,
    },
    /// The room's active speaker changed to this audio track
    /// ([`crate::speaker`]: levels from the RFC 6464 extension, with hysteresis).
    SpeakerChanged {
        room: RoomId,
        peer: PeerId,
        identity: String,
        mid: Mid,
    },
}

/// Monotonic counters; the driver exports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Datagrams that are not STUN/DTLS/RTP/RTCP, or from an unknown source that is
    /// not a STUN request for a known peer.
    pub datagrams_dropped: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub forward_errors: u64,
    pub dropped_waiting_keyframe: u64,
    pub keyframe_requests: u64,
    /// Items a recording tap refused (the recorder was behind).
    pub tap_refused: u64,
    /// Peers that connected over UDP and over ICE-TCP (by the transport of the packet
    /// that completed the connection).
    pub connected_udp: u64,
    pub connected_tcp: u64,
    /// Peers that connected through the embedded TURN server, by the transport its
    /// client used ([`crate::turn::ClientTransport`] order: UDP, TCP, TLS); not in `connected_udp`.
    pub connected_turn: [u64; 3],
}

/// One published track, as seen from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    pub peer: PeerId,
    pub mid: Mid,
    pub kind: MediaKind,
    pub subscribers: usize,
    pub packets: u64,
    /// Smoothed audio level in -dBov (0 loud, 127 silent); `None` for video.
    pub audio_level: Option<u8>,
}

/// Work that must wait until the current drain is finished.
#[derive(Debug)]
enum Deferred {
    Keyframe(RoomKey, TrackRef, KeyframeAsk),
    Remove(PeerId, RemoveReason),
}

/// Which layers of a track a keyframe request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyframeAsk {
    /// Every layer some subscriber (or the recording) targets.
    Targets,
    /// The layers whose deferred request is pending (its timer came due); nothing
    /// when a keyframe arrived meanwhile.
    Pending,
    /// One layer a connected subscriber still waits for.
    Layer(Option<Rid>),
}

/// The SFU core of one worker. See the crate docs for the run loop.
pub struct Sfu {
    config: SfuConfig,
    dtls_cert: Option<DtlsCert>,
    next_peer: u64,
    next_room: u32,
    peers: HashMap<PeerId, Peer>,
    rooms: HashMap<RoomKey, Room>,
    room_keys: HashMap<RoomId, RoomKey>,
    demux: Demux,
    timers: TimerQueue,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    /// Events drained from `Rtc`s, handled after the drain that produced them.
    pending: VecDeque<(PeerId, Event)>,
    deferred: VecDeque<Deferred>,
    /// Scratch list of the timer entries due in one `handle_timeout`.
    due: Vec<(Instant, PeerId)>,
    /// Recorded rooms. Keyed by id, not key: a tap outlives its room emptying.
    taps: HashMap<RoomId, Tap>,
    stats: SfuStats,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("peers", &self.peers.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        // Idempotent: the first call in a process wins.
        str0m::crypto::from_feature_flags().install_process_default();
        // One certificate per worker: generating one per peer costs a key generation
        // on every join.
        let dtls_cert =
            CryptoProvider::get_default().and_then(|p| p.dtls_provider.generate_certificate());
        Sfu {
            config,
            dtls_cert,
            next_peer: 1,
            next_room: 1,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            demux: Demux::default(),
            timers: TimerQueue::default(),
            transmits: VecDeque::with_capacity(256),
            events: VecDeque::new(),
            pending: VecDeque::with_capacity(64),
            deferred: VecDeque::new(),
            due: Vec::with_capacity(64),
            taps: HashMap::new(),
            stats: SfuStats::default(),
        }
    }

    // ---- getters ------------------------------------------------------------------

    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn track_count(&self) -> usize {
        self.rooms.values().map(|r| r.tracks.len()).sum()
    }

    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Every peer of this worker.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// A peer's room and identity.
    pub fn peer_room(&self, peer: PeerId) -> Option<(&RoomId, &str)> {
        let p = self.peers.get(&peer)?;
        let room = self.rooms.get(&p.room)?;
        Some((&room.id, &p.identity))
    }

    /// The name a peer's participants see.
    pub fn peer_name(&self, peer: PeerId) -> Option<&str> {
        self.peers.get(&peer).map(|p| p.name.as_str())
    }

    /// The tracks published in a room, in publish order.
    pub fn room_tracks(&self, room: &RoomId) -> Vec<TrackInfo> {
        let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get(k)) else {
            return Vec::new();
        };
        r.tracks
            .iter()
            .map(|t| TrackInfo {
                peer: t.track.owner,
                mid: t.track.mid,
                kind: t.kind,
                subscribers: t.fanout.len(),
                packets: t.packets,
                audio_level: (t.kind == MediaKind::Audio).then(|| t.audio_level.dbov()),
            })
            .collect()
    }

    /// Entries in the timer heap, live and stale.
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Table sizes, for leak checks: (peers, rooms, demux addresses, demux ufrags).
    pub fn table_sizes(&self) -> (usize, usize, usize, usize) {
        let (a, u) = self.demux.len();
        (self.peers.len(), self.rooms.len(), a, u)
    }

    // ---- commands -----------------------------------------------------------------

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
            p.role == PeerRole::Participant && p.identity == req.identity
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

    fn join_event(&self, id: PeerId) -> Option<SfuEvent> {
        let peer = self.peers.get(&id)?;
        let room = self.rooms.get(&peer.room)?;
        Some(SfuEvent::PeerJoined {
            peer: id,
            room: room.id.clone(),
            identity: peer.identity.clone(),
            name: peer.name.clone(),
            role: peer.role,
        })
    }

    /// A new peer with its `Rtc`, in the demux tables and the room, not yet announced.
    fn add_peer(
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
        } = new;
        let PeerMedia {
            bwe,
            preferred_video,
        } = media;
        if self.peers.len() >= self.config.max_peers {
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
        if bwe {
            builder = builder.enable_bwe(self.config.initial_bitrate);
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
            Peer {
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
                bwe_steer: (0, 0),
                directions: Vec::new(),
                offer_sdp: None,
                last_proto: Protocol::Udp,
                last_source: self.config.local_addr,
                // WHIP/WHEP sessions are held to their role; participants to their grant.
                may_publish: true,
            },
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
        let leaving = self.room_peers_where(room, |p| identities.contains(&p.identity));
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
            .filter(|id| self.peers.get(id).is_some_and(&pred))
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
                        self.transmits.push_back(t);
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
        self.events.push_back(SfuEvent::TrackMuted {
            room: room.id.clone(),
            peer,
            mid,
            muted,
        });
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

    fn reselect(&mut self, key: RoomKey, track: TrackRef) {
        if let Some(t) = self
            .rooms
            .get_mut(&key)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.track == track))
        {
            t.reselect = true;
        }
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

    // ---- inputs -------------------------------------------------------------------

    /// One UDP datagram from `source` that arrived on the worker socket `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.handle_packet(now, Protocol::Udp, source, destination, data);
    }

    /// One packet from `source` that arrived on the worker's `destination`: a UDP
    /// datagram, or one RFC 4571 frame of an ICE-TCP connection (whose remote address
    /// is `source`).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let advertised = match proto {
            Protocol::Tcp => &self.config.tcp_candidates,
            _ => &self.config.candidates,
        };
        let destination = if advertised.contains(&destination) {
            destination
        } else {
            advertised.first().copied().unwrap_or(destination)
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let id = match self.demux.lookup_addr(&source) {
            Some(id) => id,
            None => {
                let Some(id) = self.demux.lookup_stun(data) else {
                    self.stats.datagrams_dropped += 1;
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    self.stats.datagrams_dropped += 1;
                    return;
                };
                if !peer.rtc.accepts(&input) {
                    self.stats.datagrams_dropped += 1;
                    return;
                }
                self.demux.learn(source, id, &mut peer.addrs);
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        peer.last_proto = proto;
        peer.last_source = source;
        if let Err(e) = peer.rtc.handle_input(input) {
            // Bad input for this peer only; str0m rejects it and stays consistent.
            debug!(peer = %id, error = %e, "datagram rejected");
            self.stats.datagrams_dropped += 1;
        }
        self.drain(now, id);
        self.process(now);
    }

    /// Advances time: services every peer whose deadline has passed.
    /// Each due peer is serviced once per call: a paced `Rtc` asks for another timeout
    /// at the same instant after every packet it sends, and is served again at the next
    /// call, after the socket has been read.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(entry) = self.timers.pop_due(now) {
            due.push(entry);
        }
        for (at, id) in due.drain(..) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue; // stale entry; the live one is elsewhere in the heap
            }
            peer.scheduled = None;
            self.service(now, id);
        }
        self.due = due;
        self.process(now);
    }

    // ---- outputs ------------------------------------------------------------------

    /// The next datagram to send. `source` is the candidate it leaves from.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should be called next. May be early, never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    // ---- internals ----------------------------------------------------------------

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

    /// Lifecycle checks, due keyframe requests and the `Rtc`'s own timeout.
    fn service(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.state {
            PeerState::Connecting if now >= peer.created + self.config.connect_timeout => {
                self.deferred
                    .push_back(Deferred::Remove(id, RemoveReason::ConnectTimeout));
                return;
            }
            PeerState::Disconnected { since } if now >= since + self.config.disconnect_grace => {
                self.deferred
                    .push_back(Deferred::Remove(id, RemoveReason::Disconnected));
                return;
            }
            _ => {}
        }
        if peer.keyframe_deadline.is_some_and(|t| t <= now) {
            peer.keyframe_deadline = None;
            let room = peer.room;
            for mid in peer.published.clone() {
                self.deferred.push_back(Deferred::Keyframe(
                    room,
                    TrackRef { owner: id, mid },
                    KeyframeAsk::Pending,
                ));
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if now >= peer.rtc_deadline
            && let Err(e) = peer.rtc.handle_input(Input::Timeout(now))
        {
            warn!(peer = %id, error = %e, "peer failed on timeout");
            self.deferred
                .push_back(Deferred::Remove(id, RemoveReason::Failed));
            return;
        }
        self.drain(now, id);
    }

    /// Drains one `Rtc` until it reports its next timeout (str0m's single-mutation
    /// invariant), then reschedules the peer.
    fn drain(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        drain_rtc(
            peer,
            &mut self.transmits,
            &mut self.pending,
            &mut self.deferred,
            &mut self.stats,
        );
        schedule(&mut self.timers, &self.config, peer, now);
    }

    /// Handles drained events and deferred work until nothing is left.
    fn process(&mut self, now: Instant) {
        loop {
            if let Some((id, ev)) = self.pending.pop_front() {
                self.on_event(now, id, ev);
            } else if let Some(d) = self.deferred.pop_front() {
                match d {
                    Deferred::Keyframe(room, track, ask) => {
                        self.request_keyframe(now, room, track, ask)
                    }
                    Deferred::Remove(id, reason) => self.remove_now(id, Some(reason)),
                }
            } else {
                break;
            }
        }
    }

    fn on_event(&mut self, now: Instant, id: PeerId, ev: Event) {
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

    fn publish_track(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.published.contains(&mid) {
            return;
        }
        peer.published.push(mid);
        let room = self.rooms.get_mut(&peer.room).expect("peer's room exists"); // a room lives while it has peers
        let mut track = TrackIn::new(TrackRef { owner: id, mid }, kind);
        if self.taps.contains_key(&room.id) {
            track.tap = TrackTap::Waiting;
        }
        room.tracks.push(track);
        info!(peer = %id, room = %room.id, %mid, ?kind, "track published");
        self.events.push_back(SfuEvent::TrackPublished {
            room: room.id.clone(),
            peer: id,
            identity: peer.identity.clone(),
            mid,
            kind,
        });
    }

    /// Starts offering a room's media to `sink` (the room need not exist yet: tracks
    /// published later are recorded too). Each track is announced at its first
    /// packet once its layer is chosen, and a video track's recording starts with a
    /// keyframe request.
    pub fn start_tap(&mut self, room: RoomId, sink: Box<dyn MediaTap>) -> Result<(), SfuError> {
        if self.taps.contains_key(&room) {
            return Err(SfuError::NotAllowed("the room is already being recorded"));
        }
        if let Some(r) = self
            .room_keys
            .get(&room)
            .and_then(|k| self.rooms.get_mut(k))
        {
            for t in &mut r.tracks {
                t.tap = TrackTap::Waiting;
            }
        }
        info!(%room, "recording tap started");
        self.taps.insert(room, Tap::new(sink));
        Ok(())
    }

    /// Removes a room's tap and returns it; nothing more is offered to it.
    pub fn stop_tap(&mut self, room: &RoomId) -> Option<(Box<dyn MediaTap>, TapStats)> {
        let tap = self.taps.remove(room)?;
        if let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get_mut(k)) {
            for t in &mut r.tracks {
                t.tap = TrackTap::Off;
            }
        }
        let stats = tap.stats;
        info!(%room, offered = stats.offered, refused = stats.refused, "recording tap stopped");
        Some((tap.sink, stats))
    }

    pub fn tap_stats(&self, room: &RoomId) -> Option<TapStats> {
        self.taps.get(room).map(|t| t.stats)
    }

    /// Ends a published track: its subscribers' slots fall empty (WHEP players are
    /// re-fed from another track of the room).
    fn end_track(&mut self, key: RoomKey, track: TrackRef, announce: bool) {
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

    fn open_slot(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.tracks_out.iter_mut().find(|o| o.mid == mid) {
            Some(out) => out.enabled = true,
            None => peer.tracks_out.push(TrackOut::new(mid, kind)),
        }
    }

    fn close_slot(&mut self, id: PeerId, mid: Mid) {
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
    fn bind_room(&mut self, key: RoomKey) {
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

    /// Asks for keyframes of every video source feeding `sub`.
    fn request_keyframes_for(&mut self, sub: PeerId) {
        let Some(peer) = self.peers.get(&sub) else {
            return;
        };
        for out in &peer.tracks_out {
            if let (Some(src), MediaKind::Video) = (out.source, out.kind) {
                self.deferred
                    .push_back(Deferred::Keyframe(peer.room, src, KeyframeAsk::Targets));
            }
        }
    }

    /// Asks a publisher for a keyframe of `track` (the layers `ask` names), subject to
    /// coalescing.
    fn request_keyframe(&mut self, now: Instant, key: RoomKey, track: TrackRef, ask: KeyframeAsk) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(t) = room.tracks.iter_mut().find(|t| t.track == track) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        // The layers asked for (at most three): one, or every layer some subscriber
        // or the recording targets. Subscribers without a target yet get theirs at the
        // next packet, which asks again.
        let mut rids: [Option<Rid>; 3] = [None; 3];
        let mut n = 0;
        let mut add = |r: Option<Rid>| {
            if n < rids.len() && !rids[..n].contains(&r) {
                rids[n] = r;
                n += 1;
            }
        };
        match ask {
            KeyframeAsk::Layer(r) => add(r),
            KeyframeAsk::Targets | KeyframeAsk::Pending => {
                for sub in &t.fanout {
                    if let Some(r) = self
                        .peers
                        .get(&sub.subscriber)
                        .and_then(|p| p.tracks_out.get(sub.slot))
                        .and_then(|o| o.layer.target())
                    {
                        add(r);
                    }
                }
                if let TrackTap::On(r) = t.tap {
                    add(r);
                }
            }
        }
        let only_if_pending = ask == KeyframeAsk::Pending;
        let interval = self.config.keyframe_min_interval;
        // Per layer: (rid, what to do). Before the first packet there are no layers:
        // the track's only stream is asked, under the track's own limiter.
        let mut asks: [(Option<Rid>, Option<KeyframeDecision>); 3] = [(None, None); 3];
        let mut m = 0;
        if t.layers.is_empty() {
            let pending = t.keyframes.pending_deadline(interval).is_some();
            if !only_if_pending || pending {
                asks[0] = (None, Some(t.keyframes.request(now, interval)));
                m = 1;
            }
        } else {
            for rid in &rids[..n] {
                let Some(layer) = t.layers.iter_mut().find(|l| l.rid == *rid) else {
                    continue;
                };
                let pending = layer.keyframes.pending_deadline(interval).is_some();
                if only_if_pending && !pending {
                    continue;
                }
                asks[m] = (*rid, Some(layer.keyframes.request(now, interval)));
                m += 1;
            }
        }
        let Some(publisher) = self.peers.get_mut(&track.owner) else {
            return;
        };
        let mut sent = false;
        let mut missing = false;
        for (rid, decision) in &asks[..m] {
            match decision {
                Some(KeyframeDecision::SendNow) => {
                    let ok = publisher
                        .rtc
                        .direct_api()
                        .stream_rx_by_mid(track.mid, *rid)
                        .map(|rx| rx.request_keyframe(KeyframeRequestKind::Pli))
                        .is_some();
                    sent |= ok;
                    missing |= !ok;
                }
                Some(KeyframeDecision::Deferred(at)) => {
                    publisher.keyframe_deadline =
                        Some(publisher.keyframe_deadline.map_or(*at, |k| k.min(*at)));
                }
                None => {}
            }
        }
        if missing {
            // No incoming stream yet: ask again once the interval has passed.
            let at = now + interval;
            publisher.keyframe_deadline =
                Some(publisher.keyframe_deadline.map_or(at, |k| k.min(at)));
        }
        if sent {
            self.stats.keyframe_requests += 1;
            debug!(publisher = %track.owner, mid = %track.mid, rids = ?&rids[..n], "keyframe requested");
            self.drain(now, track.owner);
        } else if let Some(publisher) = self.peers.get_mut(&track.owner) {
            schedule(&mut self.timers, &self.config, publisher, now);
        }
    }

    /// The hot path: one RTP packet from a publisher to every subscriber of its track.
    fn forward(&mut self, now: Instant, from: PeerId, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(publisher) = self.peers.get_mut(&from) else {
            return;
        };
        if !publisher.role.publishes() {
            return;
        }
        let room_key = publisher.room;
        let Some(room) = self.rooms.get_mut(&room_key) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let found = room
            .tracks
            .iter()
            .position(|t| t.track.owner == from && t.layer_index(ssrc).is_some());
        let (ti, li) = match found {
            Some(i) => (i, room.tracks[i].layer_index(ssrc).unwrap_or(0)),
            None => {
                let lookup = publisher
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|rx| (rx.mid(), rx.rid()));
                drain_rtc(
                    publisher,
                    &mut self.transmits,
                    &mut self.pending,
                    &mut self.deferred,
                    &mut self.stats,
                );
                schedule(&mut self.timers, &self.config, publisher, now);
                let Some((mid, rid)) = lookup else {
                    self.stats.forward_errors += 1;
                    return;
                };
                let Some(i) = room.track_index(TrackRef { owner: from, mid }) else {
                    return;
                };
                let li = room.tracks[i].add_layer(ssrc, rid);
                (i, li)
            }
        };
        let rid = room.tracks[ti].layers[li].rid;
        if room.tracks[ti].count(now, li, pkt.payload.len()) {
            // Before this packet goes out, so a subscriber whose first target is this
            // layer can start on this very keyframe.
            self.select_layers(now, room_key, ti);
        }
        let (Some(publisher), Some(room)) =
            (self.peers.get_mut(&from), self.rooms.get_mut(&room_key))
        else {
            return;
        };
        let track = &mut room.tracks[ti];
        let pt = pkt.header.payload_type;
        if track.params.is_none_or(|p| p.pt() != pt) {
            track.params = publisher.rtc.codec_config().find(|p| p.pt() == pt).copied();
        }
        let Some(params) = track.params else {
            self.stats.forward_errors += 1;
            return;
        };
        let spec = params.spec();
        let keyframe = track.kind == MediaKind::Video && is_keyframe(spec.codec, &pkt.payload);
        if keyframe {
            track.keyframes.keyframe_received();
        }
        let ext = &pkt.header.ext_vals;
        if let Some(level) = ext.audio_level {
            track.audio_level.update(level, ext.voice_activity);
        }
        track.packets += 1;
        track.bytes += pkt.payload.len() as u64;
        if track.muted {
            return;
        }
        if track.tap != TrackTap::Off
            && let Some(tap) = self.taps.get_mut(&room.id)
            && tap_packet(
                tap,
                track,
                &publisher.identity,
                rid,
                &pkt,
                &spec,
                &mut self.stats,
            )
        {
            self.deferred.push_back(Deferred::Keyframe(
                room_key,
                track.track,
                KeyframeAsk::Targets,
            ));
        }
        let out_ext = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..ExtensionValues::default()
        };
        let nackable = track.kind == MediaKind::Video;
        let is_audio = track.kind == MediaKind::Audio && ext.audio_level.is_some();
        let clock_rate = spec.clock_rate.get();
        // VP8 picture ids are rewritten with the sequence numbers (layer and source
        // changes); a descriptor without them is left alone.
        let vp8 = (spec.codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
            .flatten()
            .and_then(|d| Some((d, d.picture_id()?, d.tl0_pic_idx())));

        // A connected subscriber still waits for a keyframe of this layer.
        let mut waiting = false;
        for sub in &track.fanout {
            let Some(peer) = self.peers.get_mut(&sub.subscriber) else {
                continue;
            };
            if peer.state != PeerState::Connected {
                continue;
            }
            let Some(out) = peer.tracks_out.get_mut(sub.slot) else {
                continue;
            };
            if out.paused {
                continue;
            }
            if nackable && !out.layer.forwards(rid) {
                // Video starts, and changes layer, only on a keyframe of the chosen
                // layer; the munger makes the change invisible to the player.
                if !(keyframe && out.layer.on_keyframe(rid)) {
                    self.stats.dropped_waiting_keyframe += 1;
                    waiting |= out.layer.target() == Some(rid);
                    continue;
                }
                out.switch_source();
            }
            let out_pt = match out.pt_map.iter().find(|(i, _)| *i == pt) {
                Some((_, o)) => *o,
                None => {
                    let negotiated = peer.rtc.media(out.mid).map(|m| m.remote_pts());
                    let o = peer
                        .rtc
                        .codec_config()
                        .match_params(params)
                        .map(|p| p.pt())
                        .filter(|p| negotiated.is_some_and(|n| n.contains(p)));
                    if o.is_none() {
                        warn!(subscriber = %sub.subscriber, codec = ?spec.codec, "subscriber did not negotiate the publisher's codec");
                    }
                    out.pt_map.push((pt, o));
                    o
                }
            };
            let Some(out_pt) = out_pt else {
                self.stats.forward_errors += 1;
                continue;
            };
            let Some((seq, ts)) =
                out.munger
                    .rewrite(now, *pkt.seq_no, pkt.header.timestamp, clock_rate)
            else {
                continue;
            };
            let patch = vp8.and_then(|(d, pid, tl0)| {
                let (out_pid, out_tl0) = out.pictures.rewrite(pid, tl0);
                ((out_pid, out_tl0) != (pid, tl0)).then(|| vp8_patch(d, out_pid, out_tl0))?
            });
            let mid = out.mid;
            let mut api = peer.rtc.direct_api();
            match api.stream_tx_by_mid(mid, None) {
                Some(tx) => {
                    let mut w =
                        RtpWrite::new(out_pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
                            .marker(pkt.header.marker)
                            .ext_vals(out_ext.clone())
                            .nackable(nackable);
                    if let Some(p) = patch {
                        w = w.vp8_patch(p);
                    }
                    tx.write_rtp(w);
                    self.stats.rtp_forwarded += 1;
                }
                None => self.stats.forward_errors += 1,
            }
            drain_rtc(
                peer,
                &mut self.transmits,
                &mut self.pending,
                &mut self.deferred,
                &mut self.stats,
            );
            schedule(&mut self.timers, &self.config, peer, now);
        }
        let requests = &mut track.layers[li].keyframes;
        if keyframe && !waiting {
            // Only once it reached everyone who waited: a keyframe one subscriber
            // took must not cancel the request made for another.
            requests.keyframe_received();
        }
        if waiting && requests.retry_due(now, self.config.keyframe_retry_interval) {
            self.deferred.push_back(Deferred::Keyframe(
                room_key,
                track.track,
                KeyframeAsk::Layer(rid),
            ));
        }
        if is_audio {
            self.check_speaker(now, room_key);
        }
    }

    /// Re-decides the layer of every subscriber of a video track from its preference,
    /// its bandwidth estimate and the measured layers; asks the publisher for a keyframe
    /// when someone's target changed.
    fn select_layers(&mut self, now: Instant, key: RoomKey, ti: usize) {
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
    fn announce_wanted(&mut self, key: RoomKey, ti: usize) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(track) = room.tracks.get_mut(ti) else {
            return;
        };
        if track.kind != MediaKind::Video || track.layer_infos.len() < 2 {
            return;
        }
        let cap = track
            .fanout
            .iter()
            .filter_map(|s| self.peers.get(&s.subscriber)?.tracks_out.get(s.slot))
            .filter(|o| !o.paused)
            .map(|o| o.layer.preference().unwrap_or(usize::MAX))
            .max();
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
    fn check_speaker(&mut self, now: Instant, key: RoomKey) {
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

    /// Removes a peer from every table. Its tracks end for their subscribers, whose
    /// slots are re-fed from another publisher of the room if there is one.
    /// `reason: None` removes silently (a peer that was never announced).
    fn remove_now(&mut self, id: PeerId, reason: Option<RemoveReason>) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        peer.rtc.disconnect();
        self.demux.forget(id, &peer.ufrag, &peer.addrs);
        let key = peer.room;
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
            self.end_track(key, *t, reason.is_some());
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

/// Who a new peer is and where it goes.
struct NewPeer<'a> {
    room: &'a RoomId,
    identity: &'a str,
    name: &'a str,
    role: PeerRole,
    room_limit: Option<usize>,
}

/// How a new peer's `Rtc` is set up.
struct PeerMedia {
    /// Run the bandwidth estimator (subscribers of video).
    bwe: bool,
    /// The video codec to put first in answers (the offerer's first choice).
    preferred_video: Option<Codec>,
}

/// The codec an offer lists first in its first video m-line (the offerer's
/// preference), when it is one the node forwards.
fn offer_preferred_video_codec(sdp: &str) -> Option<Codec> {
    let mut first_pt: Option<&str> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if first_pt.is_some() {
                return None;
            }
            if m.starts_with("video ") {
                first_pt = m.split(' ').nth(3);
            }
        } else if let (Some(pt), Some(map)) = (first_pt, line.strip_prefix("a=rtpmap:")) {
            let (map_pt, rest) = map.split_once(' ')?;
            if map_pt == pt {
                return match rest.split('/').next()?.to_ascii_uppercase().as_str() {
                    "VP8" => Some(Codec::Vp8),
                    "H264" => Some(Codec::H264),
                    "VP9" => Some(Codec::Vp9),
                    "AV1" => Some(Codec::Av1),
                    _ => None,
                };
            }
        }
    }
    None
}

/// True if an offer has an audio or video m-line the client sends on (`sendonly` or
/// `sendrecv`, the default; not refused with port 0).
fn offer_sends_media(sdp: &str) -> bool {
    let mut in_media = false;
    let mut sends = false;
    let mut any = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_media && sends {
                any = true;
            }
            in_media = (m.starts_with("audio ") || m.starts_with("video "))
                && m.split(' ').nth(1) != Some("0");
            sends = true;
        } else if in_media && matches!(line, "a=recvonly" | "a=inactive") {
            sends = false;
        }
    }
    any || (in_media && sends)
}

/// True if an offer has a video m-line the client receives on (`recvonly` or
/// `sendrecv`, not refused with port 0).
fn offer_receives_video(sdp: &str) -> bool {
    let mut video = false;
    let mut receives = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if video && receives {
                return true;
            }
            video = m.starts_with("video ") && m.split(' ').nth(1) != Some("0");
            receives = true; // sendrecv unless the section says otherwise
        } else if video && matches!(line, "a=sendonly" | "a=inactive") {
            receives = false;
        }
    }
    video && receives
}

fn parse_offer(sdp: &str) -> Result<SdpOffer, SfuError> {
    SdpOffer::from_sdp_string(sdp)
        .map_err(|e| SfuError::MalformedSdp(clean_parse_error(&e.to_string())))
}

/// The descriptor patch that sets a VP8 packet's picture id and TL0PICIDX. A 7-bit
/// picture id keeps its width (the low bits continue just the same).
fn vp8_patch(d: Vp8Descriptor, pid: u16, tl0: Option<u8>) -> Option<Vp8Patch> {
    let build = |pid: u16| {
        let mut b = d.patch().picture_id(pid);
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        b.build()
    };
    match build(pid) {
        Ok(p) => Some(p),
        Err(Vp8PatchError::PictureIdTooLarge) => build(pid & 0x7f).ok(),
        Err(_) => None,
    }
}

/// Polls one `Rtc` until it returns a timeout. Events are queued for `Sfu::process`;
/// an error schedules the peer's removal.
fn drain_rtc(
    peer: &mut Peer,
    transmits: &mut VecDeque<Transmit>,
    pending: &mut VecDeque<(PeerId, Event)>,
    deferred: &mut VecDeque<Deferred>,
    stats: &mut SfuStats,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                peer.rtc_deadline = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                stats.datagrams_out += 1;
                stats.bytes_out += t.contents.len() as u64;
                transmits.push_back(t);
            }
            Ok(Output::Event(e)) => pending.push_back((peer.id, e)),
            Err(e) => {
                warn!(peer = %peer.id, error = %e, "peer failed");
                deferred.push_back(Deferred::Remove(peer.id, RemoveReason::Failed));
                // An inert Rtc produces nothing more; a far deadline keeps it off the heap.
                peer.rtc.disconnect();
                peer.rtc_deadline = far_future(peer.created);
                return;
            }
        }
        if !peer.rtc.is_alive() {
            peer.rtc_deadline = far_future(peer.created);
            return;
        }
    }
}

fn far_future(from: Instant) -> Instant {
    from + Duration::from_secs(365 * 24 * 3600)
}

fn schedule(timers: &mut TimerQueue, config: &SfuConfig, peer: &mut Peer, _now: Instant) {
    let connect_deadline = peer.created + config.connect_timeout;
    let grace = match peer.state {
        PeerState::Disconnected { since } => Some(since + config.disconnect_grace),
        _ => None,
    };
    let at = peer.wake_at(connect_deadline, grace);
    timers.schedule(peer.id, at, &mut peer.scheduled);
}

/// The `a=mid:` values of an SDP, in m-line order.
fn answer_mids(sdp: &str) -> impl Iterator<Item = Mid> + '_ {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
}

/// The SDP parser's message names a memory address ("at PointerOffset(0x…)"); that
/// says nothing to a client and leaks process layout, so it is cut out.
fn clean_parse_error(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at PointerOffset(") {
        out.push_str(&rest[..i]);
        rest = match rest[i..].find(')') {
            Some(j) => &rest[i + j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Offers a packet of a tapped track, first announcing the track once its recorded
/// layer can be chosen. True when the track was just announced and is video (the
/// caller asks for a keyframe).
fn tap_packet(
    tap: &mut Tap,
    track: &mut TrackIn,
    identity: &str,
    rid: Option<Rid>,
    pkt: &RtpPacket,
    spec: &str0m::format::CodecSpec,
    stats: &mut SfuStats,
) -> bool {
    let mut announced = false;
    if track.tap == TrackTap::Waiting {
        let mut layers = [None; 3];
        let mut measured = [None; 3];
        let nl = track.layers.len().min(3);
        let nm = track.layer_infos.len().min(3);
        for (d, l) in layers.iter_mut().zip(&track.layers) {
            *d = l.rid;
        }
        for (d, (r, _)) in measured.iter_mut().zip(&track.layer_infos) {
            *d = *r;
        }
        let Some(chosen) = crate::tap::choose_layer(&layers[..nl], &measured[..nm]) else {
            return false;
        };
        track.tap = TrackTap::On(chosen);
        tap.offer(
            TapItem::Track(TapTrack {
                track: track.track,
                identity: identity.to_owned(),
                kind: track.kind,
                codec: spec.codec,
                clock_rate: spec.clock_rate.get(),
                channels: spec.channels.unwrap_or(1),
                rid: chosen,
            }),
            stats,
        );
        announced = track.kind == MediaKind::Video;
    }
    if track.tap != TrackTap::On(rid) {
        return announced;
    }
    let rtp_time = pkt.time.numer() as i64;
    let sender_clock = pkt.last_sender_info.map(|si| SenderClock {
        ntp_time: si.ntp_time,
        rtp_time: crate::tap::extend_report_time(
            rtp_time,
            pkt.header.timestamp,
            si.rtp_time.numer() as u32,
        ),
    });
    tap.offer(
        TapItem::Packet(TapPacket {
            track: track.track,
            seq: *pkt.seq_no,
            rtp_time,
            marker: pkt.header.marker,
            payload: pkt.payload.clone(),
            arrival: pkt.timestamp,
            sender_clock,
        }),
        stats,
    );
    announced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_that_send() {
        let recv = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(!offer_sends_media(recv));
        let send = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert!(offer_sends_media(send));
        let implicit = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(offer_sends_media(implicit));
        let stopped = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n";
        assert!(!offer_sends_media(stopped));
        let data = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert!(!offer_sends_media(data));
    }

    #[test]
    fn offers_that_receive_video() {
        let v = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(offer_receives_video(v));
        let a = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";
        assert!(!offer_receives_video(a));
        let send = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(!offer_receives_video(send));
        let implicit = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 X 1\r\na=sendonly\r\n";
        assert!(offer_receives_video(implicit));
        let refused = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(!offer_receives_video(refused));
    }

    #[test]
    fn the_offers_first_video_codec_is_its_preference() {
        let h264_first = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n\
                          m=video 9 X 102 96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(offer_preferred_video_codec(h264_first), Some(Codec::H264));
        let vp8_first =
            "v=0\r\nm=video 9 X 96 102\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 vp8/90000\r\n";
        assert_eq!(offer_preferred_video_codec(vp8_first), Some(Codec::Vp8));
        let audio_only = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(offer_preferred_video_codec(audio_only), None);
        // The first video m-line names no rtpmap for its first payload type.
        let unnamed = "v=0\r\nm=video 9 X 97\r\nm=video 9 X 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(offer_preferred_video_codec(unnamed), None);
    }

    #[test]
    fn parse_errors_lose_pointers() {
        assert_eq!(
            clean_parse_error(
                "SDP parse: Parse error at PointerOffset(0x7fb0f8001ff3)\nUnexpected end of input\nExpected `o`\n"
            ),
            "SDP parse: Parse error; Unexpected end of input; Expected `o`"
        );
        assert_eq!(clean_parse_error("plain"), "plain");
    }
}
