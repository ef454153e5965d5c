//! What signaling needs from the media plane, as a trait: the HTTP layer never
//! touches sockets or `Rtc`s, and tests can run it against the real workers.

use std::fmt;
use std::future::Future;

use media_core::{PeerRole, RoomId, SfuError};

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
    pub role: PeerRole,
    pub offer_sdp: String,
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

    fn session_owner(&self, id: &SessionId) -> Option<SessionOwner>;
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
