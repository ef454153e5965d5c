//! What signaling needs from the media plane, as a trait: the HTTP layer never
//! touches sockets or `Rtc`s, and tests can run it against the real workers.

use std::fmt;
use std::future::Future;

use media_core::{
    ParticipantInfo, PeerId, PeerRole, RemoteIceCreds, RemoveReason, RoomId, SfuError, SfuEvent,
    TrackRef,
};
use str0m::media::Mid;
use tokio::sync::mpsc;

/// An unguessable session id: 128 random bits, hex. The resource URL containing it
/// is only handed to the client that created the session.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn random() -> Self {
        SessionId(hex::encode(rand::random::<[u8; 16]>()))
    }

    /// Parses a session id from a URL; anything but 32 lowercase hex digits is refused.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| SessionId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs carry a prefix only: the full id is a capability.
        f.write_str(&self.0[..8])
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

#[derive(Debug, Clone)]
pub struct OpenSession {
    pub room: RoomId,
    pub identity: String,
    /// What room participants see.
    pub name: String,
    pub role: PeerRole,
    pub offer_sdp: String,
    /// Most peers the room may hold, counting this one (from the join token).
    pub room_limit: Option<usize>,
    /// The join token's id (`jti`).
    pub token_id: String,
}

#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub id: SessionId,
    pub answer_sdp: String,
}

/// Who owns a session, for authorising changes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub room: RoomId,
    pub identity: String,
    pub role: PeerRole,
    /// The node's ICE ufrag of the session's current ICE session: the resource's
    /// `ETag`, which changes with every ICE restart.
    pub ice_ufrag: String,
    /// The id of the join token it was opened with.
    pub token_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Sfu(#[from] SfuError),
    #[error("no such session")]
    UnknownSession,
    #[error("the node is draining and accepts no new sessions")]
    Draining,
    #[error("the media worker is unavailable: {0}")]
    Unavailable(String),
    /// Admission control: the room's worker is at its load limit.
    #[error("the room's media worker is at {load_percent} % of its core")]
    Overloaded { load_percent: u8 },
}

pub trait MediaBackend: Send + Sync + 'static {
    fn open_session(
        &self,
        req: OpenSession,
    ) -> impl Future<Output = Result<OpenedSession, BackendError>> + Send;

    fn close_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn add_candidates(
        &self,
        id: &SessionId,
        candidates: Vec<String>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Restarts ICE with the client's new credentials (RFC 9725 §4.4); the answer SDP
    /// carries the node's new ones.
    fn restart_ice(
        &self,
        id: &SessionId,
        creds: RemoteIceCreds,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    fn session_owner(&self, id: &SessionId) -> Option<SessionOwner>;

    /// How many sessions opened with the join token `token_id` are live.
    fn sessions_of_token(&self, token_id: &str) -> usize;
}

/// A room participant on this node: the worker its room lives on and its peer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantKey {
    pub worker: usize,
    pub peer: PeerId,
}

/// What a room participant hears about its room, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomUpdate {
    Sfu(SfuEvent),
    /// A data message from another participant.
    Data {
        from: PeerId,
        from_identity: String,
        from_name: String,
        payload: serde_json::Value,
    },
}

/// Updates queued for one participant at most; one that falls this far behind is
/// cut off and resumes with a fresh snapshot.
pub const ROOM_UPDATE_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct JoinRoom {
    pub room: RoomId,
    /// Unique among the room's participants: a second join with it replaces the first.
    pub identity: String,
    /// What the others see.
    pub name: String,
    pub room_limit: Option<usize>,
    /// The token's publish grant, enforced by the media core.
    pub may_publish: bool,
}

/// A participant's request to its room's worker.
#[derive(Debug, Clone)]
pub enum RoomCommand {
    /// A (re-)offer; the reply carries the answer.
    Offer(String),
    Candidates(Vec<String>),
    Subscribe {
        mid: Mid,
        track: TrackRef,
    },
    Unsubscribe {
        mid: Mid,
    },
    Pause {
        mid: Mid,
        paused: bool,
    },
    /// Caps the simulcast layer (`None`: no cap).
    MaxLayer {
        mid: Mid,
        max_layer: Option<usize>,
    },
    Mute {
        mid: Mid,
        muted: bool,
    },
    Unpublish {
        mid: Mid,
    },
    /// Relays to the room's other participants, or only to those with these identities.
    Data {
        to: Option<Vec<String>>,
        payload: serde_json::Value,
    },
    Leave(RemoveReason),
}

/// What a [`RoomCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomReply {
    Done,
    Answer(String),
    /// How many participants a data message reached.
    Delivered(usize),
}

/// The media plane as the room protocol needs it.
pub trait RoomBackend: Send + Sync + 'static {
    /// Joins a room without media. `updates` hears every later change of the room;
    /// the snapshot returned and the updates never overlap or leave a gap.
    fn join_room(
        &self,
        req: JoinRoom,
        updates: mpsc::Sender<RoomUpdate>,
    ) -> impl Future<Output = Result<(ParticipantKey, Vec<ParticipantInfo>), BackendError>> + Send;

    /// A resumed participant's new update channel, and a fresh snapshot.
    fn attach(
        &self,
        key: ParticipantKey,
        updates: mpsc::Sender<RoomUpdate>,
    ) -> impl Future<Output = Result<Vec<ParticipantInfo>, BackendError>> + Send;

    fn room_command(
        &self,
        key: ParticipantKey,
        cmd: RoomCommand,
    ) -> impl Future<Output = Result<RoomReply, BackendError>> + Send;

    fn is_draining(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        let id = SessionId::random();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert!(SessionId::parse("abc").is_none());
        assert!(SessionId::parse(&"G".repeat(32)).is_none());
        assert_eq!(format!("{id}").len(), 8);
    }
}
