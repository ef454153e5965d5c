//! Garbage datagrams and SDP never panic the core or leak peers.
mod common;

use std::time::Duration;

use common::{Harness, SFU_ADDR, payload};
use media_core::str0m::media::MediaKind::Audio;
use media_core::{OfferRequest, PeerRole, RoomId, SfuError};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_datagrams_are_dropped() {
    let mut h = Harness::new();
    let p = h.join("g", PeerRole::Publisher, &[Audio]).unwrap();
    let s = h.join("g", PeerRole::Subscriber, &[Audio]).unwrap();
    h.connect_all();
    let mut rng = Rng(42);
    let sfu = SFU_ADDR.parse().unwrap();
    let known = h.clients[p].addr;
    for i in 0..500 {
        let len = (rng.next() % 1400) as usize;
        let mut d = rng.bytes(len);
        // Steer some into each demux class: STUN, DTLS, RTP, RTCP.
        if let Some(b) = d.first_mut() {
            *b = [0x00, 0x01, 0x16, 0x80, 0x81, *b][i % 6];
        }
        // Half from a known peer's address, half from strangers.
        let src = if i % 2 == 0 {
            known
        } else {
            format!("127.0.0.1:{}", 1000 + i).parse().unwrap()
        };
        h.sfu.handle_datagram(h.now, src, sfu, &d);
    }
    h.shuttle();
    assert_eq!(h.sfu.peer_count(), 2);
    // The room still works.
    for n in 0..5 {
        h.send_audio(p, &payload(n, 30));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(h.clients[s].frames_of(Audio).len(), 5);
    let (_, _, addrs, ufrags) = h.sfu.table_sizes();
    assert!(addrs <= 2 && ufrags == 2, "{addrs} {ufrags}");
}

#[test]
fn random_sdp_is_rejected_without_leaking() {
    let mut h = Harness::new();
    let room = RoomId::parse("x").unwrap();
    let mut rng = Rng(7);
    let valid = {
        let mut rtc = media_core::str0m::Rtc::builder().build(h.now);
        let mut api = rtc.sdp_api();
        api.add_media(
            Audio,
            media_core::str0m::media::Direction::SendOnly,
            None,
            None,
            None,
        );
        api.apply().unwrap().0.to_sdp_string()
    };
    for i in 0..300 {
        let body = match i % 3 {
            0 => {
                let n = (rng.next() % 600) as usize;
                String::from_utf8_lossy(&rng.bytes(n)).into_owned()
            }
            1 => {
                // A valid offer with a few lines removed or corrupted.
                let mut out = Vec::new();
                for l in valid.lines() {
                    let r = rng.next();
                    if r.is_multiple_of(5) {
                        continue;
                    }
                    out.push(if r.is_multiple_of(7) {
                        l.replacen(':', "#", 1)
                    } else {
                        l.to_owned()
                    });
                }
                out.join("\r\n")
            }
            _ => {
                let mut b = valid.clone().into_bytes();
                for _ in 0..5 {
                    let k = (rng.next() as usize) % b.len();
                    b[k] = rng.next() as u8;
                }
                String::from_utf8_lossy(&b).into_owned()
            }
        };
        let role = if i % 2 == 0 {
            PeerRole::Publisher
        } else {
            PeerRole::Subscriber
        };
        let _ = h.sfu.accept_offer(
            h.now,
            OfferRequest {
                room_limit: None,
                room: &room,
                identity: "x",
                name: "x",
                role,
                offer_sdp: &body,
            },
        );
    }
    // Whatever was accepted never connects and is reaped.
    h.run(Duration::from_secs(31));
    assert_eq!(h.sfu.table_sizes(), (0, 0, 0, 0));
}

#[test]
fn offers_without_usable_media_are_refused() {
    let mut h = Harness::new();
    let room = RoomId::parse("x").unwrap();
    // A publisher that only wants to receive.
    let mut rtc = media_core::str0m::Rtc::builder().build(h.now);
    let mut api = rtc.sdp_api();
    api.add_media(
        Audio,
        media_core::str0m::media::Direction::RecvOnly,
        None,
        None,
        None,
    );
    let offer = api.apply().unwrap().0.to_sdp_string();
    let err = h
        .sfu
        .accept_offer(
            h.now,
            OfferRequest {
                room_limit: None,
                room: &room,
                identity: "x",
                name: "x",
                role: PeerRole::Publisher,
                offer_sdp: &offer,
            },
        )
        .unwrap_err();
    assert!(matches!(err, SfuError::NoUsableMedia(_)), "{err:?}");
    assert!(matches!(
        h.sfu.accept_offer(
            h.now,
            OfferRequest {
                room_limit: None,
                room: &room,
                identity: "x",
                name: "x",
                role: PeerRole::Subscriber,
                offer_sdp: "v=0\r\n"
            }
        ),
        Err(SfuError::MalformedSdp(_) | SfuError::UnusableSdp(_))
    ));
    assert_eq!(h.sfu.table_sizes(), (0, 0, 0, 0));
}

/// An offer that makes str0m assert (a payload type claimed twice across m-lines;
/// found by `fuzz/sdp_offer`) is refused like any unusable offer: the core goes on,
/// keeps nothing of the peer, and answers the next client.
#[test]
fn an_offer_that_makes_str0m_panic_is_refused_and_the_core_goes_on() {
    let offer =
        include_str!("../../fuzz/corpus/sdp_offer/regression-payload-type-claimed-twice.sdp");
    let mut h = Harness::new();
    let room = RoomId::parse("x").unwrap();
    for role in [PeerRole::Publisher, PeerRole::Subscriber] {
        let err = h
            .sfu
            .accept_offer(
                h.now,
                OfferRequest {
                    room_limit: None,
                    room: &room,
                    identity: "x",
                    name: "x",
                    role,
                    offer_sdp: offer,
                },
            )
            .unwrap_err();
        assert!(matches!(err, SfuError::UnusableSdp(_)), "{err:?}");
    }
    assert_eq!(
        h.sfu.table_sizes(),
        (0, 0, 0, 0),
        "nothing of the peers is kept"
    );
    // The next client is served as usual.
    let _publisher = h.join("x", PeerRole::Publisher, &[Audio]).unwrap();
    h.connect_all();
}
