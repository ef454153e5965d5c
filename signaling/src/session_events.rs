//! Server-sent events of WHIP/WHEP sessions, in the shape of the WHEP draft's
//! server-sent events extension: a session's `201` links its events
//! (`Link: <…/events>; rel="urn:ietf:params:whep:ext:core:server-sent-events"`); the
//! client `POST`s the JSON list of events it wants there (with its join token) and
//! gets a `Location` it reads as `text/event-stream` (an `EventSource` sends no token,
//! so that URL is the capability).
//!
//! One event so far, `reconnect`: the node drains, and the session's room is served
//! from another node now; its data, `{"url": "<endpoint>", "reason": "node_draining"}`,
//! is where to open the session again (the same `POST` with the same token). The old
//! session goes on until the client ends it, so the media does not stop while the
//! client moves.
//!
//! Invariants: a stream reads only the moves of its own session's room; it ends when
//! its session does; a stream opened after its room moved gets the move at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use media_core::RoomId;
use tokio::sync::watch;

use crate::backend::SessionId;

/// The link relation of a session's events (the WHEP draft's).
pub const EVENTS_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
/// The events a client may ask for.
pub const EVENTS: [&str; 1] = ["reconnect"];

/// Where each moved room's sessions go: the base URL of its new node.
type Moves = Arc<HashMap<RoomId, String>>;

/// The moves of this node's rooms and the event streams its sessions opened.
#[derive(Debug)]
pub struct SessionEvents {
    moves: watch::Sender<Moves>,
    /// The key of each session's event stream (one per session; asking again
    /// replaces it).
    keys: Mutex<HashMap<SessionId, String>>,
}

impl Default for SessionEvents {
    fn default() -> Self {
        SessionEvents {
            moves: watch::Sender::new(Arc::default()),
            keys: Mutex::default(),
        }
    }
}

/// What a session's stream is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The new node's base URL (`https://node-b.example`).
    pub base_url: String,
}

impl SessionEvents {
    /// Tells the sessions of each room in `moves` to open again on the node given
    /// (its base URL). The map replaces the last one.
    pub fn move_rooms(&self, moves: HashMap<RoomId, String>) {
        if moves.is_empty() && self.moves.borrow().is_empty() {
            return;
        }
        tracing::info!(rooms = moves.len(), "WHIP/WHEP sessions told to reconnect");
        self.moves.send_replace(Arc::new(moves));
    }

    /// A new stream key for `session` (replacing any earlier one); `live` says which
    /// sessions still exist, so keys of sessions gone without a `DELETE` go too.
    pub fn open(&self, session: &SessionId, live: impl Fn(&SessionId) -> bool) -> String {
        let key = hex::encode(rand::random::<[u8; 16]>());
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.retain(|s, _| live(s));
        keys.insert(session.clone(), key.clone());
        key
    }

    /// Whether `key` is the current stream key of `session`.
    pub fn check(&self, session: &SessionId, key: &str) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        // Constant time: the key is a capability.
        keys.get(session).is_some_and(|k| {
            aws_lc_rs::constant_time::verify_slices_are_equal(k.as_bytes(), key.as_bytes()).is_ok()
        })
    }

    /// Forgets `session`'s stream key (the session ended).
    pub fn forget(&self, session: &SessionId) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(session);
    }

    /// Follows the moves of `room`.
    pub fn watch(&self, room: RoomId) -> RoomMoves {
        let mut rx = self.moves.subscribe();
        // A move made before the stream opened counts as new.
        rx.mark_changed();
        RoomMoves {
            rx,
            room,
            told: None,
        }
    }
}

/// The moves of one room, each told once.
#[derive(Debug)]
pub struct RoomMoves {
    rx: watch::Receiver<Moves>,
    room: RoomId,
    told: Option<String>,
}

impl RoomMoves {
    /// The room's next move; pending forever once the node stops sending moves.
    pub async fn next(&mut self) -> Reconnect {
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let to = self.rx.borrow_and_update().get(&self.room).cloned();
            if let Some(base_url) = to
                && self.told.as_ref() != Some(&base_url)
            {
                self.told = Some(base_url.clone());
                return Reconnect { base_url };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    async fn soon(m: &mut RoomMoves) -> Option<Reconnect> {
        tokio::time::timeout(Duration::from_millis(50), m.next())
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_room_hears_its_own_moves_once_and_late_streams_hear_them_too() {
        let ev = SessionEvents::default();
        let mut a = ev.watch(room("a"));
        let mut b = ev.watch(room("b"));
        assert_eq!(soon(&mut a).await, None);
        ev.move_rooms(HashMap::from([(room("a"), "http://n2".to_owned())]));
        assert_eq!(
            soon(&mut a).await,
            Some(Reconnect {
                base_url: "http://n2".into()
            })
        );
        assert_eq!(soon(&mut b).await, None, "another room's move");
        // The same move again is not news; another node is.
        ev.move_rooms(HashMap::from([
            (room("a"), "http://n2".to_owned()),
            (room("b"), "http://n3".to_owned()),
        ]));
        assert_eq!(soon(&mut a).await, None);
        assert_eq!(soon(&mut b).await.unwrap().base_url, "http://n3");
        // Opened after the move: told at once.
        let mut late = ev.watch(room("a"));
        assert_eq!(soon(&mut late).await.unwrap().base_url, "http://n2");
    }

    #[test]
    fn a_stream_key_is_its_sessions_own_and_goes_with_it() {
        let ev = SessionEvents::default();
        let s1 = SessionId::random();
        let s2 = SessionId::random();
        let k1 = ev.open(&s1, |_| true);
        let k2 = ev.open(&s2, |_| true);
        assert!(ev.check(&s1, &k1));
        assert!(!ev.check(&s1, &k2), "another session's key");
        assert!(!ev.check(&s1, ""));
        // Asking again replaces the key.
        let k1b = ev.open(&s1, |_| true);
        assert!(!ev.check(&s1, &k1) && ev.check(&s1, &k1b));
        ev.forget(&s1);
        assert!(!ev.check(&s1, &k1b));
        // A session gone without a DELETE loses its key at the next open.
        let s3 = SessionId::random();
        let _ = ev.open(&s3, |s| s != &s2);
        assert!(!ev.check(&s2, &k2));
    }
}
