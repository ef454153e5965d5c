//! Hundreds of garbled SDP bodies and UDP datagrams: no crash, no 5xx, no leaked peer.
mod common;

use std::time::Duration;

use common::{TestServer, connect, join, offer, payload, pump};
use media_core::str0m::media::Direction;
use media_core::str0m::media::MediaKind::Audio;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_sdp_and_datagrams() {
    let srv = TestServer::start_with(|s| s.media.connect_timeout_secs = 2).await;
    let token = srv.publish_token("g", "fuzzer");
    let (_, _, _, valid, _) = offer(&[Audio], Direction::SendOnly);
    let mut rng = Rng(0x5eed);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let mut b = valid.clone().into_bytes();
        match i % 3 {
            0 => {
                let n = (rng.next() % 800) as usize;
                b = (0..n).map(|_| rng.next() as u8).collect();
            }
            1 => {
                for _ in 0..4 {
                    let k = rng.next() as usize % b.len();
                    b[k] = rng.next() as u8;
                }
            }
            _ => {
                let cut = rng.next() as usize % b.len();
                b.truncate(cut);
            }
        }
        let resp = srv
            .http
            .post(format!("{}/whip/g", srv.base))
            .header("Content-Type", "application/sdp")
            .header("Authorization", format!("Bearer {token}"))
            .body(b)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        *statuses.entry(s).or_insert(0) += 1;
        assert!(s < 500, "server error {s} for case {i}");
        if s != 201 {
            let j: serde_json::Value = resp.json().await.unwrap();
            assert!(j["error"]["code"].is_string(), "{j}");
        }
    }
    eprintln!("statuses: {statuses:?}");

    // Random datagrams at every media port, from a socket no peer owns.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for &port in &srv.server().media_addrs {
        for i in 0..300 {
            let n = (rng.next() % 1400) as usize + 1;
            let mut d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            d[0] = [0x00, 0x01, 0x16, 0x80, 0x81, d[0]][i % 6];
            sock.send_to(&d, port).unwrap();
        }
    }
    // Accepted offers never connect; they are reaped.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(srv.server().workers.session_count(), 0);
    assert!(srv.metric("streamcore_udp_datagrams_dropped_total").await >= 300);

    // The node still works.
    let mut p = join(&srv, "/whip/g", &token, &[Audio]).await.unwrap();
    let mut s = join(&srv, "/whep/g", &srv.subscribe_token("g", "ear"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut p, &mut s]).await;
    for n in 0..5 {
        p.send_audio(&payload(n, 30));
        pump(&mut [&mut p, &mut s], Duration::from_millis(20)).await;
    }
    pump(&mut [&mut s], Duration::from_millis(100)).await;
    assert_eq!(s.frames_of(Audio).len(), 5);
    srv.stop().await;
}
