//! `ConnectionSlots`: how many stream connections the node holds open, in all and per
//! client address, so a few addresses that open many and never finish (slowloris)
//! cannot take every connection from everyone else.
//!
//! A connection takes a [`Slot`] when it is accepted and gives it back when the slot
//! drops. Addresses are counted as rate limits count them
//! ([`control_api::client_addr::bucket`]: IPv4 per address, IPv6 per /64). The
//! HTTP(S) listener and the TURN server's TCP/TLS listeners each have their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, in all and per address bucket.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `max_total` connections.
    Full,
    /// This address (bucket) holds `max_per_address`.
    AddressFull,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Full => "full",
            Refused::AddressFull => "address_full",
        }
    }
}

/// A connection's place, given back when it drops.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    bucket: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a connection from `ip`, unless the node or that address is full.
    /// `unlimited_address` (a trusted reverse proxy, which carries many clients)
    /// counts only against the total.
    pub fn take(self: &Arc<Self>, ip: IpAddr, unlimited_address: bool) -> Result<Slot, Refused> {
        let bucket = control_api::client_addr::bucket(ip);
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Refused::Full);
        }
        let mine = open.per_address.get(&bucket).copied().unwrap_or(0);
        if !unlimited_address && mine >= self.max_per_address {
            return Err(Refused::AddressFull);
        }
        open.total += 1;
        open.per_address.insert(bucket, mine + 1);
        Ok(Slot {
            slots: self.clone(),
            bucket,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent under a panic elsewhere: each change is one step.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.bucket) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all_and_gives_back_on_drop() {
        let slots = ConnectionSlots::new(5, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(a, false).unwrap();
        let _a2 = slots.take(a, false).unwrap();
        assert_eq!(slots.take(a, false).unwrap_err(), Refused::AddressFull);
        let _b1 = slots.take(b, false).unwrap();
        // A trusted proxy counts only against the total.
        let _p1 = slots.take(a, true).unwrap();
        let _p2 = slots.take(a, true).unwrap();
        assert_eq!(slots.take(b, false).unwrap_err(), Refused::Full);
        assert_eq!(slots.open(), 5);
        drop(a1);
        assert_eq!(slots.open(), 4);
        assert!(
            slots.take(b, false).is_ok(),
            "a slot given back is taken again"
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = ConnectionSlots::new(10, 1);
        let _x = slots
            .take("2001:db8:1:2::1".parse().unwrap(), false)
            .unwrap();
        assert_eq!(
            slots
                .take("2001:db8:1:2:ffff::9".parse().unwrap(), false)
                .unwrap_err(),
            Refused::AddressFull,
            "the same /64"
        );
        assert!(
            slots
                .take("2001:db8:1:3::1".parse().unwrap(), false)
                .is_ok()
        );
        let _v4 = slots.take("192.0.2.7".parse().unwrap(), false).unwrap();
        assert_eq!(
            slots
                .take("::ffff:192.0.2.7".parse().unwrap(), false)
                .unwrap_err(),
            Refused::AddressFull
        );
    }
}
