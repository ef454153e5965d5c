//! Idle and vanished peers are reaped by their own timers; tables end up empty.
mod common;

use std::time::Duration;

use common::Harness;
use media_core::PeerRole;
use media_core::str0m::media::MediaKind::Audio;

#[test]
fn peer_that_never_connects_is_reaped() {
    let mut h = Harness::with_config(|c| c.connect_timeout = Duration::from_secs(5));
    let c = h.join("idle", PeerRole::Subscriber, &[Audio]).unwrap();
    h.clients[c].offline = true;
    h.run(Duration::from_secs(4));
    assert!(h.sfu.has_peer(h.clients[c].peer));
    h.run(Duration::from_secs(2));
    assert!(!h.sfu.has_peer(h.clients[c].peer));
    assert!(h.removed(h.clients[c].peer));
    assert_eq!(h.sfu.table_sizes(), (0, 0, 0, 0));
}

#[test]
fn peer_whose_network_dies_is_reaped_after_the_grace_period() {
    let mut h = Harness::with_config(|c| c.disconnect_grace = Duration::from_secs(3));
    let p = h.join("gone", PeerRole::Publisher, &[Audio]).unwrap();
    let s = h.join("gone", PeerRole::Subscriber, &[Audio]).unwrap();
    h.connect_all();
    h.run(Duration::from_secs(1));
    h.clients[s].offline = true;
    // Consent freshness fails after ~30 s in str0m's ICE agent, then the grace period.
    h.run(Duration::from_secs(60));
    assert!(!h.sfu.has_peer(h.clients[s].peer), "dead subscriber reaped");
    assert!(h.sfu.has_peer(h.clients[p].peer), "live publisher kept");
    assert_eq!(h.sfu.peer_count(), 1);
}

#[test]
fn timer_heap_stays_bounded() {
    let mut h = Harness::new();
    let p = h.join("t", PeerRole::Publisher, &[Audio]).unwrap();
    for _ in 0..5 {
        h.join("t", PeerRole::Subscriber, &[Audio]).unwrap();
    }
    h.connect_all();
    for n in 0..500 {
        h.send_audio(p, &common::payload(n, 40));
        h.run(Duration::from_millis(20));
    }
    // One live entry per peer plus a few stale ones, not one per packet.
    let (peers, ..) = h.sfu.table_sizes();
    assert_eq!(peers, 6);
    // 500 packets × 5 subscribers drained 2500+ times; the heap holds a handful.
    assert!(
        h.sfu.timer_entries() <= 4 * peers,
        "{} entries",
        h.sfu.timer_entries()
    );
}
