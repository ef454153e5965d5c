//! An embedded TURN server (RFC 8656), without IO, for clients that can reach the
//! node only through a relay: a network that lets nothing but TCP (or TLS on 443)
//! out. It relays to the node's own media ports and nowhere else, so it is no open
//! relay; credentials are the REST-style ones the signaling hands out.
//!
//! - [`stun`]: the STUN and ChannelData wire formats;
//! - [`credentials`]: REST credentials, long-term keys, stateless nonces;
//! - [`client`]: the client's side of the credentials (tests, load generators);
//! - [`server`]: allocations, permissions, channels, quota and allow-list;
//! - [`StreamDeframer`]: STUN and ChannelData out of a TCP or TLS byte stream;
//! - [`RelayDirectory`]: which relay addresses are TURN allocations, so the SFU can
//!   say a peer connected through TURN (and over which client transport).
//!
//! The async driver (sockets, TLS, relay ports) is the binary's `turn` module.

pub mod client;
pub mod credentials;
pub mod server;
pub mod stun;

use std::net::SocketAddr;

pub use server::{ClientTransport, FiveTuple, FromClient, Now, PeerRule, TurnConfig, TurnServer};

/// Splits a TURN client's TCP/TLS byte stream into STUN messages and ChannelData.
/// Consumed bytes are dropped once per [`StreamDeframer::push`], not per message, so
/// a read full of tiny messages costs linear time.
#[derive(Debug, Default)]
pub struct StreamDeframer {
    buf: Vec<u8>,
    /// Where the next message starts in `buf`.
    at: usize,
}

impl StreamDeframer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message; `Err` when the stream holds something that is neither
    /// (the connection is to be closed).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, stun::StunError> {
        let rest = &self.buf[self.at..];
        let Some(len) = stun::stream_frame_len(rest) else {
            return Ok(None);
        };
        let len = len?;
        if rest.len() < len {
            return Ok(None);
        }
        let msg = rest[..len].to_vec();
        self.at += len;
        Ok(Some(msg))
    }
}

/// Which relay addresses belong to open allocations, and their clients'
/// transports: the TURN driver keeps the table, media workers ask it when a peer
/// connects (so a relayed peer is counted as such). A trait, so this crate holds no
/// lock.
pub trait RelayDirectory: Send + Sync + std::fmt::Debug {
    fn transport_of(&self, relay: SocketAddr) -> Option<ClientTransport>;
}

#[cfg(test)]
mod tests;
