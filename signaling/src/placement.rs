//! Which node of the cluster a room lives on. The control plane places every room on
//! one node (`control_api::cluster`). A WHEP player or a `/rtc` participant that
//! reaches another node is served there, the room relayed from its node ([`Cascade`]);
//! when that cannot be, and for WHIP, the request is sent to the room's node
//! (`307 Temporary Redirect`, RFC 9725 §4.5; a `move` message for `/rtc`). A room
//! nobody placed yet (a token made on the command line, or its node died) is placed on
//! the node the request reached.
//!
//! Invariant: a node serves a room only while the room's home is this node or it
//! imports the room from that home, so a room's nodes form one star around its home.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use media_core::RoomId;

use crate::error::ApiError;

/// Where a room lives, seen from the node asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    Here,
    /// On another live node, reached at this base URL (`https://host:port`).
    Elsewhere {
        node_id: String,
        base_url: String,
    },
}

/// A room's other node, as [`elsewhere`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub node_id: String,
    pub base_url: String,
}

/// Serves a WHEP player or a `/rtc` participant on this node in a room that lives on
/// another, over the relay between nodes, instead of sending it there.
pub trait Cascade: std::fmt::Debug + Send + Sync + 'static {
    /// Starts importing `room` from the node `home` (returns at once). False when this
    /// node cannot (it drains, or runs no relay): the client is sent there.
    fn import(&self, room: &RoomId, home: &str) -> bool;
}

pub type SharedCascade = Option<Arc<dyn Cascade>>;

pub trait RoomPlacement: std::fmt::Debug + Send + Sync + 'static {
    /// The room's home, placing it here when it has none (or its node is dead); an
    /// error when that cannot be known (the database is away).
    fn home<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> Pin<Box<dyn Future<Output = Result<Home, String>> + Send + 'a>>;
}

/// A node outside a cluster (`None`) serves every room itself.
pub type SharedPlacement = Option<Arc<dyn RoomPlacement>>;

/// The node `room` lives on when that is not this one.
pub async fn elsewhere(
    placement: &SharedPlacement,
    room: &RoomId,
) -> Result<Option<Remote>, ApiError> {
    let Some(p) = placement else {
        return Ok(None);
    };
    match p.home(room).await {
        Ok(Home::Here) => Ok(None),
        Ok(Home::Elsewhere { node_id, base_url }) => Ok(Some(Remote { node_id, base_url })),
        Err(e) => {
            tracing::warn!(%room, error = %e, "the room's node could not be looked up");
            Err(ApiError::unavailable(
                "placement_unavailable",
                "where this room lives could not be looked up right now; try again",
            ))
        }
    }
}

/// `base_url` (`http(s)://host:port`) as the WebSocket base (`ws(s)://host:port`).
pub fn websocket_base(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if let Some(h) = base.strip_prefix("https://") {
        format!("wss://{h}")
    } else if let Some(h) = base.strip_prefix("http://") {
        format!("ws://{h}")
    } else {
        base.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_base_follows_the_scheme() {
        assert_eq!(
            websocket_base("https://a.example:8443/"),
            "wss://a.example:8443"
        );
        assert_eq!(
            websocket_base("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080"
        );
    }
}
