//! # media-core: the StreamCore selective forwarding unit, without IO
//!
//! One [`Sfu`] owns the peers and rooms of one worker (one UDP socket). It is a
//! plain, synchronous, deterministic state machine in the shape of `str0m` itself:
//!
//! ```text
//!   driver                               Sfu
//!   ──────                               ───
//!   datagram  ──handle_datagram(now,…)──► demux → Rtc.handle_input → drain → route
//!   deadline  ──handle_timeout(now)─────► due peers only (one timer heap)
//!   command   ──accept_offer / remove_peer / add_remote_candidates
//!             ◄──poll_transmit()────────  datagrams to send
//!   sent      ──recycle(buffer)─────────► kept for a later SRTP output (any peer's)
//!             ◄──poll_event()───────────  peer connected/removed, track (un)published
//!             ◄──poll_timeout()─────────  when to call handle_timeout next
//! ```
//!
//! ## Who owns time
//! The caller. Every input carries `now`; nothing in this crate reads a clock, so
//! tests drive it faster than real time.
//!
//! ## The drain invariant
//! After every mutation of an `Rtc` (input, RTP write, keyframe request, SDP or
//! direct-API call) the core polls it until it returns a timeout before touching it
//! again. Events found while draining are queued and handled after the drain; effects
//! on other peers (forwarding, keyframe requests) therefore never nest more than one
//! level deep.
//!
//! ## Forwarding
//! Publishers and subscribers run in str0m's RTP mode: packets are not depacketised.
//! Each published track (`TrackIn`) keeps its fan-out list; each subscriber m-line
//! (`TrackOut`) keeps a [`munger::Munger`] that rewrites sequence numbers and
//! timestamps so a change of source is invisible to the player, and a
//! [`layers::LayerSelector`] that picks one simulcast layer of the source and holds
//! video back until a keyframe of it ([`keyframe`]). What a video m-line may have
//! waiting in str0m's pacer is bounded ([`backlog`]): pressure steps its layer down,
//! and a queue that still does not drain is shed and restarts on a keyframe. Keyframe requests to publishers
//! are coalesced and rate-limited per track. The room's active speaker comes from the
//! tracks' audio levels ([`speaker`]). A recorded room's tracks are also offered to
//! its [`tap`], which never blocks. Payloads are shared (`str0m::rtp::Payload`), never copied, and the
//! forwarding loop allocates nothing of its own in steady state; with the sent
//! buffers handed back ([`Sfu::recycle`]) str0m's SRTP output allocates nothing
//! either (a patch of the vendored str0m, `docs/str0m-patches.md`).
//!
//! ## Panic policy
//! Errors come from bad input; panics are bugs. Nothing reachable from network input
//! panics; every `expect` names who guarantees it.
//!
//! ## Invariants
//! - media-core does no IO and knows nothing of HTTP, tokens or databases.
//! - A peer is in the demux tables from the moment its answer exists until it is
//!   removed, and in no table after.
//! - Each subscriber slot is fed by at most one track; each track feeds a subscriber
//!   at most once.

pub mod backlog;
pub mod demux;
pub mod framing;
pub mod ice_restart;
mod ids;
pub mod keyframe;
pub mod layers;
pub mod munger;
mod peer;
pub mod relay;
mod room;
mod sfu;
pub mod speaker;
pub mod tap;
pub mod timers;
pub mod turn;

pub use ice_restart::RemoteIceCreds;
pub use ids::{PeerId, PeerRole, RoomId, RoomIdError};
pub use room::TrackRef;
pub use room::{AudioLevel, KeyframeDecision, KeyframeRequests};
pub use sfu::{
    Accepted, DEFAULT_SEND_BUFFER_VIDEO, DEFAULT_VIDEO_QUEUE_LIMIT, JoinRequest, OfferRequest,
    ParticipantInfo, PublishedTrack, RelayOut, RelaySink, RemoveReason, Sfu, SfuConfig, SfuError,
    SfuEvent, SfuStats, TrackInfo,
};
pub use tap::{MediaTap, SenderClock, TapItem, TapPacket, TapStats, TapTrack};

/// str0m types that appear in this crate's API.
pub use str0m;
