//! Datagrams into `Sfu::handle_datagram`: from a publisher and a player that completed
//! ICE and DTLS with the node (so SRTP and SRTCP are parsed, not only STUN), and from
//! a stranger. The first byte picks the sender; the rest is the datagram. The pair is
//! set up once per process and kept across inputs (its state grows, as a live node's).
#![no_main]
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use media_core::str0m::change::SdpAnswer;
use media_core::str0m::media::{Direction, MediaKind};
use media_core::str0m::net::{Protocol, Receive};
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use media_core::{OfferRequest, PeerRole, RoomId, Sfu, SfuConfig};

struct Node {
    sfu: Sfu,
    server: SocketAddr,
    clients: [SocketAddr; 2],
    now: Instant,
}

static NODE: Mutex<Option<Node>> = Mutex::new(None);

/// A client of `role` connected to `sfu` through ICE and DTLS in virtual time.
fn connect(sfu: &mut Sfu, server: SocketAddr, me: SocketAddr, role: PeerRole, now: &mut Instant) {
    let room = RoomId::parse("fuzz").unwrap();
    let mut rtc = Rtc::builder().build(*now);
    rtc.add_local_candidate(Candidate::host(me, "udp").unwrap());
    let dir = if role == PeerRole::Publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let accepted = sfu
        .accept_offer(
            *now,
            OfferRequest {
                room: &room,
                identity: if role == PeerRole::Publisher {
                    "pub"
                } else {
                    "sub"
                },
                name: "fuzz",
                role,
                offer_sdp: &offer.to_sdp_string(),
                room_limit: None,
            },
        )
        .expect("the node answers");
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&accepted.answer_sdp).unwrap(),
        )
        .expect("the answer applies");
    let mut connected = false;
    for _ in 0..2000 {
        loop {
            match rtc.poll_output().expect("client output") {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    sfu.handle_datagram(*now, t.source, t.destination, &t.contents)
                }
                Output::Event(Event::Connected) => connected = true,
                Output::Event(_) => {}
            }
        }
        while let Some(t) = sfu.poll_transmit() {
            if t.destination == me {
                let input = Input::Receive(
                    *now,
                    Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents: (&*t.contents).try_into().unwrap(),
                    },
                );
                let _ = rtc.handle_input(input);
            }
        }
        while sfu.poll_event().is_some() {}
        if connected {
            return;
        }
        *now += Duration::from_millis(5);
        rtc.handle_input(Input::Timeout(*now)).unwrap();
        sfu.handle_timeout(*now);
    }
    panic!("the {role:?} did not connect to {server}");
}

fuzz_target!(|data: &[u8]| {
    let mut guard = NODE.lock().unwrap();
    let node = guard.get_or_insert_with(|| {
        let server: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let clients = [
            "127.0.0.1:6000".parse().unwrap(),
            "127.0.0.1:6001".parse().unwrap(),
        ];
        let mut sfu = Sfu::new(SfuConfig::new(server));
        let mut now = Instant::now();
        connect(&mut sfu, server, clients[0], PeerRole::Publisher, &mut now);
        connect(&mut sfu, server, clients[1], PeerRole::Subscriber, &mut now);
        Node {
            sfu,
            server,
            clients,
            now,
        }
    });
    let Some((&who, datagram)) = data.split_first() else {
        return;
    };
    let source = match who % 3 {
        0 => node.clients[0],
        1 => node.clients[1],
        _ => "127.0.0.1:7000".parse().unwrap(),
    };
    node.now += Duration::from_millis(1);
    node.sfu
        .handle_datagram(node.now, source, node.server, datagram);
    node.sfu.handle_timeout(node.now);
    while node.sfu.poll_transmit().is_some() {}
    while node.sfu.poll_event().is_some() {}
});
