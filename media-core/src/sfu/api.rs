//! What the core is given and gives back: its settings, the requests that add peers,
//! the events it reports, its errors and its counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Mid};

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
    /// Video packets each subscriber keeps for retransmission (NACK): the RTT over
    /// which a lost packet can still be repaired, and most of a video subscriber's
    /// memory (str0m's default is 1000, about 5 s of a 1.5 Mb/s stream).
    pub send_buffer_video: usize,
    /// Bytes each video m-line of a subscriber may have waiting in the pacer (with
    /// the estimator on) before its layer is lowered and its queue shed
    /// ([`crate::backlog`]).
    pub video_queue_limit: usize,
    /// The embedded TURN server's relay addresses, so a relayed peer is counted by the
    /// transport its client used to reach the relay.
    pub relays: Option<Arc<dyn RelayDirectory>>,
    /// The top 8 bits of this worker's track ids on relay links: one link carries every
    /// worker's rooms, so each worker of a node numbers its tracks apart.
    pub relay_id_space: u8,
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
            send_buffer_video: DEFAULT_SEND_BUFFER_VIDEO,
            video_queue_limit: DEFAULT_VIDEO_QUEUE_LIMIT,
            relays: None,
            relay_id_space: 0,
        }
    }
}

/// 256 packets: about 2 s of a 1.5 Mb/s stream, ten times the RTT of a poor
/// mobile link, which is as long as a retransmission is still of use.
pub const DEFAULT_SEND_BUFFER_VIDEO: usize = 256;

/// 160 kB: two keyframes of a 720p stream, some 0.9 s of a 1.5 Mb/s layer; a
/// queue that holds more no longer smooths bursts, it only adds delay.
pub const DEFAULT_VIDEO_QUEUE_LIMIT: usize = 160_000;

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

impl RemoveReason {
    /// Its name between nodes (`crate::relay::Control::ParticipantLeft`).
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Requested => "requested",
            RemoveReason::ConnectTimeout => "connect_timeout",
            RemoveReason::Disconnected => "disconnected",
            RemoveReason::ClosedByRemote => "closed_by_remote",
            RemoveReason::Failed => "failed",
            RemoveReason::Replaced => "replaced",
            RemoveReason::Revoked => "revoked",
        }
    }

    /// A name from another node; one this node does not know reads as `Requested`.
    pub fn parse(s: &str) -> RemoveReason {
        match s {
            "connect_timeout" => RemoveReason::ConnectTimeout,
            "disconnected" => RemoveReason::Disconnected,
            "closed_by_remote" => RemoveReason::ClosedByRemote,
            "failed" => RemoveReason::Failed,
            "replaced" => RemoveReason::Replaced,
            "revoked" => RemoveReason::Revoked,
            _ => RemoveReason::Requested,
        }
    }
}

/// What the core tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A peer entered the room's participant list (before it connects). `relayed`: a
    /// shadow of another node's participant (`Sfu::import_participant`), which that
    /// node reports.
    PeerJoined {
        peer: PeerId,
        room: RoomId,
        identity: String,
        name: String,
        role: PeerRole,
        relayed: bool,
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
    /// Subscribers of an imported track wait for a keyframe: the driver asks the
    /// exporting node over the link (coalesced here as for any publisher).
    RelayKeyframeWanted {
        room: RoomId,
        link: u64,
        track: u32,
        rid: Option<String>,
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
    /// Video m-lines whose pacer queue reached its bound and was shed
    /// ([`crate::backlog`]), and the packets not written while shedding.
    pub backlog_sheds: u64,
    pub backlog_dropped: u64,
    /// Layer steps down because a subscriber's pacer queue did not drain.
    pub backlog_steps_down: u64,
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
    /// Packets offered to relay links, packets a link refused (it was behind), and
    /// packets that arrived over links.
    pub relayed_out: u64,
    pub relay_refused: u64,
    pub relayed_in: u64,
}

impl SfuStats {
    /// What the counters grew by since `earlier`.
    pub fn since(&self, earlier: &SfuStats) -> SfuStats {
        let (a, b) = (self, earlier);
        SfuStats {
            datagrams_in: a.datagrams_in - b.datagrams_in,
            bytes_in: a.bytes_in - b.bytes_in,
            datagrams_out: a.datagrams_out - b.datagrams_out,
            bytes_out: a.bytes_out - b.bytes_out,
            datagrams_dropped: a.datagrams_dropped - b.datagrams_dropped,
            rtp_in: a.rtp_in - b.rtp_in,
            rtp_forwarded: a.rtp_forwarded - b.rtp_forwarded,
            forward_errors: a.forward_errors - b.forward_errors,
            dropped_waiting_keyframe: a.dropped_waiting_keyframe - b.dropped_waiting_keyframe,
            backlog_sheds: a.backlog_sheds - b.backlog_sheds,
            backlog_dropped: a.backlog_dropped - b.backlog_dropped,
            backlog_steps_down: a.backlog_steps_down - b.backlog_steps_down,
            keyframe_requests: a.keyframe_requests - b.keyframe_requests,
            tap_refused: a.tap_refused - b.tap_refused,
            connected_udp: a.connected_udp - b.connected_udp,
            connected_tcp: a.connected_tcp - b.connected_tcp,
            connected_turn: std::array::from_fn(|i| a.connected_turn[i] - b.connected_turn[i]),
            relayed_out: a.relayed_out - b.relayed_out,
            relay_refused: a.relay_refused - b.relay_refused,
            relayed_in: a.relayed_in - b.relayed_in,
        }
    }
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
