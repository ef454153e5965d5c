//! SDP offers through `Sfu::accept_offer` (WHIP publishers and WHEP players) and
//! `Sfu::negotiate` (a room participant's first offer and a re-offer). One node per
//! process (making one makes a DTLS certificate, which would dominate); each input gets
//! a room of its own, and its peers leave after it.
#![no_main]
use std::sync::{Mutex, Once};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use media_core::{JoinRequest, OfferRequest, PeerRole, RoomId, Sfu, SfuConfig};

static NODE: Mutex<Option<(Sfu, u64)>> = Mutex::new(None);
static DEFAULT_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts in its panic hook, before anything unwinds; the core
    // catches str0m's panics on malformed offers (and refuses them), so the default
    // hook goes back: a panic the core does not catch still fails the run (libfuzzer-sys
    // aborts when one reaches it).
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let mut guard = NODE.lock().unwrap();
    let (sfu, n) = guard.get_or_insert_with(|| {
        (
            Sfu::new(SfuConfig::new("127.0.0.1:5000".parse().unwrap())),
            0,
        )
    });
    *n += 1;
    let now = Instant::now();
    let room = RoomId::parse(&format!("fuzz-{n}")).unwrap();
    let mut peers = Vec::new();
    for role in [PeerRole::Publisher, PeerRole::Subscriber] {
        if let Ok(a) = sfu.accept_offer(
            now,
            OfferRequest {
                room: &room,
                identity: "f",
                name: "f",
                role,
                offer_sdp: sdp,
                room_limit: None,
            },
        ) {
            peers.push(a.peer);
        }
    }
    let join = JoinRequest {
        room: &room,
        identity: "p",
        name: "p",
        room_limit: None,
        may_publish: true,
    };
    if let Ok(peer) = sfu.join(now, join) {
        peers.push(peer);
        let _ = sfu.negotiate(now, peer, sdp);
        let _ = sfu.negotiate(now, peer, sdp);
    }
    sfu.handle_timeout(now);
    for p in peers {
        let _ = sfu.remove_peer(now, p);
    }
    while sfu.poll_transmit().is_some() {}
    while sfu.poll_event().is_some() {}
});
