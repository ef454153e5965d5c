//! A peer: one `str0m::Rtc` and what the SFU knows about it.
//!
//! Lifecycle: `Idle` (a room participant that has joined without an offer yet) →
//! `Connecting` (answer sent, waiting for ICE/DTLS) → `Connected` →
//! optionally `Disconnected` (ICE consent lost; it may come back within the grace
//! period) → removed. A peer that never connects within the connect timeout, or stays
//! disconnected past the grace period, is reaped by its own timer.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::Pt;
use str0m::media::{Direction, MediaKind, Mid, Rid};

use crate::backlog::Backlog;
use crate::layers::{LayerConfig, LayerSelector};
use crate::munger::{Munger, PictureIdMunger};
use crate::room::{RoomKey, TrackRef};
use crate::{PeerId, PeerRole};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Joined, no offer yet: in the room's participant list, not on the network.
    Idle,
    Connecting,
    Connected,
    Disconnected {
        since: Instant,
    },
}

/// A subscriber's sending m-line and the track that feeds it.
#[derive(Debug)]
pub struct TrackOut {
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: Option<TrackRef>,
    pub munger: Munger,
    pub pictures: PictureIdMunger,
    /// Which layer of the source this subscriber receives. Video is held back until a
    /// keyframe of the chosen layer arrives (also after a change of source).
    pub layer: LayerSelector<Option<Rid>>,
    /// What this m-line has waiting in the pacer (video with the estimator on).
    pub backlog: Backlog,
    /// (incoming PT, outgoing PT) pairs already matched for this subscriber.
    pub pt_map: Vec<(Pt, Option<Pt>)>,
    /// The subscriber asked for nothing to be sent on this m-line for now.
    pub paused: bool,
    /// The m-line is negotiated as sending. A renegotiation that stops it keeps the
    /// slot (slots are indexed) but disables it.
    pub enabled: bool,
}

impl TrackOut {
    /// The next packet comes from another source or layer: numbering continues.
    pub fn switch_source(&mut self) {
        self.munger.switch_source();
        self.pictures.switch_source();
    }

    /// Forwarding starts again after a gap (resume, unmute): numbering continues
    /// without a hole the player would take for loss, and video waits for a keyframe.
    pub fn restart(&mut self) {
        self.switch_source();
        self.layer.reset();
        // A shed in progress belonged to what was sent before; the next sample of
        // the queue tells what is left of it.
        self.backlog = Backlog::default();
    }

    pub fn new(mid: Mid, kind: MediaKind) -> Self {
        TrackOut {
            mid,
            kind,
            source: None,
            munger: Munger::new(),
            pictures: PictureIdMunger::default(),
            layer: LayerSelector::new(LayerConfig::default()),
            backlog: Backlog::default(),
            pt_map: Vec::with_capacity(4),
            paused: false,
            enabled: true,
        }
    }
}

pub struct Peer {
    pub id: PeerId,
    pub room: RoomKey,
    pub identity: String,
    /// What other participants see.
    pub name: String,
    pub role: PeerRole,
    pub rtc: Rtc,
    pub ufrag: String,
    pub addrs: Vec<SocketAddr>,
    pub state: PeerState,
    pub created: Instant,
    /// The `Rtc`'s own next timeout, from the last drain.
    pub rtc_deadline: Instant,
    /// A deferred keyframe request of one of this publisher's tracks.
    pub keyframe_deadline: Option<Instant>,
    /// The deadline of this peer's live entry in the timer queue.
    pub scheduled: Option<Instant>,
    /// Subscriber m-lines; empty for publishers.
    pub tracks_out: Vec<TrackOut>,
    /// Publisher m-lines announced by this peer; the tracks themselves live in the room.
    pub published: Vec<Mid>,
    /// The send-side bandwidth estimate towards this peer (TWCC, or REMB from the
    /// client), bits per second; `None` before the first one.
    pub estimate_bps: Option<u64>,
    /// Its `Rtc` runs the estimator, whose pacer releases written packets at its own
    /// pace; without it, every written packet can leave at once.
    pub paced: bool,
    /// The (minimum, desired) last given to the estimator, so it is told only changes.
    pub bwe_steer: (u64, u64),
    /// Each m-line's direction (as this side sees it) after the last negotiation, so a
    /// renegotiation acts only on what changed.
    pub directions: Vec<(Mid, Direction)>,
    /// A WHIP/WHEP session's offer, replayed with new credentials on an ICE restart
    /// ([`crate::ice_restart`]); `None` for room participants, who re-offer.
    pub offer_sdp: Option<String>,
    /// The transport of the last packet from this peer (UDP, or ICE-TCP).
    pub last_proto: str0m::net::Protocol,
    /// Where the last packet from this peer came from (a TURN relay's address, for a
    /// relayed peer).
    pub last_source: std::net::SocketAddr,
    /// Whether this peer's offers may send audio or video (a room participant's
    /// publish grant).
    pub may_publish: bool,
    /// An import of another node's tracks ([`crate::sfu`] `relays`): no network of
    /// its own.
    pub relayed: Option<Box<crate::sfu::RelayIn>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// The earliest moment this peer needs attention.
    pub fn wake_at(&self, connect_deadline: Instant, grace_deadline: Option<Instant>) -> Instant {
        let mut t = self.rtc_deadline;
        if let Some(k) = self.keyframe_deadline {
            t = t.min(k);
        }
        match self.state {
            PeerState::Connecting => t = t.min(connect_deadline),
            PeerState::Disconnected { .. } => {
                if let Some(g) = grace_deadline {
                    t = t.min(g);
                }
            }
            _ => {}
        }
        t
    }
}
