//! Which peer a datagram belongs to, in O(1).
//!
//! Known source addresses map straight to a peer. A datagram from an unknown address
//! can only be a STUN binding request; its USERNAME carries our local ufrag, which
//! maps to the peer, and the address is learned once the peer's `Rtc` accepts it.

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::ice::StunMessage;

use crate::PeerId;

/// At most this many source addresses are remembered per peer, so a flood of
/// spoofed STUN cannot grow the table without bound.
pub const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
}

impl Demux {
    pub fn insert_ufrag(&mut self, ufrag: String, peer: PeerId) {
        self.by_ufrag.insert(ufrag, peer);
    }

    pub fn lookup_addr(&self, addr: &SocketAddr) -> Option<PeerId> {
        self.by_addr.get(addr).copied()
    }

    /// The peer a STUN message is addressed to, by our local ufrag.
    pub fn lookup_stun(&self, datagram: &[u8]) -> Option<PeerId> {
        let stun = StunMessage::parse(datagram).ok()?;
        let (local, _remote) = stun.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// Remembers `addr` for `peer`; `addrs` is the peer's own list of learned addresses.
    pub fn learn(&mut self, addr: SocketAddr, peer: PeerId, addrs: &mut Vec<SocketAddr>) {
        if addrs.contains(&addr) {
            return;
        }
        if addrs.len() >= MAX_ADDRS_PER_PEER {
            let old = addrs.remove(0);
            self.by_addr.remove(&old);
        }
        if let Some(prev) = self.by_addr.insert(addr, peer) {
            // The address moved to another peer (a client reusing a port):
            // the previous owner no longer receives from it.
            debug_assert!(prev != peer);
        }
        addrs.push(addr);
    }

    pub fn forget(&mut self, peer: PeerId, ufrag: &str, addrs: &[SocketAddr]) {
        if self.by_ufrag.get(ufrag) == Some(&peer) {
            self.by_ufrag.remove(ufrag);
        }
        for a in addrs {
            if self.by_addr.get(a) == Some(&peer) {
                self.by_addr.remove(a);
            }
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (self.by_addr.len(), self.by_ufrag.len())
    }
}
