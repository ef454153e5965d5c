//! # signaling: how clients reach the media plane
//!
//! WHIP/WHEP resources over HTTP ([`whip`], their events: [`session_events`]), the multi-party room protocol over a
//! WebSocket ([`room`], `/rtc`), join-token verification ([`token`]),
//! and the one error-to-HTTP mapping ([`error`]). The media plane is behind the
//! [`backend::MediaBackend`] trait, so this crate holds no sockets and no `Rtc`s.
//!
//! Invariants:
//! - Signaling holds no user accounts: a join token is the whole authority of a request.
//! - SFU nodes verify tokens with a public key; signing keys stay with the control plane
//!   and the operator's CLI.
//! - The protocol types here are the only client-facing serialized types of the SFU.

pub mod backend;
pub mod error;
pub mod ice_servers;
pub mod liveness;
pub mod placement;
pub mod room;
pub mod room_authority;
pub mod sdpfrag;
pub mod session_events;
pub mod token;
pub mod whip;

pub use backend::{
    BackendError, JoinRoom, MediaBackend, OpenSession, OpenedSession, ParticipantKey,
    ROOM_UPDATE_QUEUE, RoomBackend, RoomCommand, RoomReply, RoomUpdate, SessionId, SessionOwner,
};
pub use error::ApiError;
pub use ice_servers::{IceServer, IceServerConfig};
pub use token::{Ed25519Key, Grants, JoinGrant, JoinTokenSigner, JoinTokenVerifier, TokenError};
pub use whip::{SignalingState, router};
