//! Identifiers parsed at the boundary: a `RoomId` is always a valid room name.

use std::fmt;
use std::sync::Arc;

/// A room name: 1–64 characters of `[A-Za-z0-9_.-]`, not only dots.
///
/// Room names appear in URLs, metric-free logs and object-store keys, so the
/// alphabet is deliberately narrow.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomIdError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than 64 characters")]
    TooLong,
    #[error("room name may only contain letters, digits, '_', '-' and '.'")]
    BadCharacter,
    #[error("room name cannot be only dots")]
    OnlyDots,
}

impl RoomId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, RoomIdError> {
        if s.is_empty() {
            return Err(RoomIdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(RoomIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(RoomIdError::BadCharacter);
        }
        // `.` and `..` are path segments URLs resolve away.
        if s.bytes().all(|b| b == b'.') {
            return Err(RoomIdError::OnlyDots);
        }
        Ok(RoomId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", self.0)
    }
}

/// A peer (one `str0m::Rtc`) inside one [`crate::Sfu`]. Never reused within an `Sfu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// What a peer does in its room. A peer never changes role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Sends media into the room (a WHIP client).
    Publisher,
    /// Receives the room's media (a WHEP player): every track of the room, bound in
    /// publish order to the m-lines it offered.
    Subscriber,
    /// Publishes and subscribes over one connection, choosing what it receives track
    /// by track (a `/rtc` client). Renegotiates as tracks come and go; may join before
    /// it has media.
    Participant,
}

impl PeerRole {
    /// Its name in logs, events and the room protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Publisher => "publisher",
            PeerRole::Subscriber => "subscriber",
            PeerRole::Participant => "participant",
        }
    }

    /// May send media into the room.
    pub fn publishes(self) -> bool {
        matches!(self, PeerRole::Publisher | PeerRole::Participant)
    }

    /// May receive media from the room.
    pub fn subscribes(self) -> bool {
        matches!(self, PeerRole::Subscriber | PeerRole::Participant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomId::parse("lobby").is_ok());
        assert!(RoomId::parse("a.b-c_9").is_ok());
        assert_eq!(RoomId::parse(""), Err(RoomIdError::Empty));
        assert_eq!(RoomId::parse("a/b"), Err(RoomIdError::BadCharacter));
        assert_eq!(RoomId::parse("ü"), Err(RoomIdError::BadCharacter));
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(RoomIdError::TooLong));
        assert!(RoomId::parse(&"x".repeat(64)).is_ok());
    }
}
