//! Hundreds of garbled SDP bodies and UDP datagrams: no crash, no 5xx, no leaked peer;
//! 100 000 random and mutated STUN messages over UDP and ICE-TCP, addressed to a live
//! session: the node and the session survive; and as many TURN messages to the
//! embedded TURN server over UDP and TCP: it survives and still allocates.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

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
    // Accepted offers never connect; they are reaped (connect timeout 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while srv.server().workers.session_count() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "unconnected sessions were not reaped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// A STUN binding request a real client sent to the node: the seed of the mutations.
fn captured_stun(peer: &mut common::Peer) -> Vec<u8> {
    use media_core::str0m::{Input, Output};
    for _ in 0..200 {
        let _ = peer
            .rtc
            .handle_input(Input::Timeout(std::time::Instant::now()));
        while let Ok(out) = peer.rtc.poll_output() {
            match out {
                Output::Transmit(t) if t.contents.len() >= 20 && t.contents[0] < 2 => {
                    return t.contents.to_vec();
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the client sent no STUN request");
}

/// One fuzzed message: random bytes under a STUN header, or the seed mutated
/// (bytes flipped, the length field or an attribute changed, cut, or extended).
fn fuzzed(rng: &mut Rng, seed: &[u8], i: usize) -> Vec<u8> {
    let mut m = seed.to_vec();
    match i % 6 {
        0 => {
            let n = (rng.next() % 600) as usize + 20;
            m = (0..n).map(|_| rng.next() as u8).collect();
            m[0] = (rng.next() % 2) as u8;
            m[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        }
        1 => {
            for _ in 0..(rng.next() % 4 + 1) {
                let k = rng.next() as usize % m.len();
                m[k] = rng.next() as u8;
            }
        }
        2 => {
            let len = rng.next() as u16;
            m[2..4].copy_from_slice(&len.to_be_bytes());
        }
        3 => {
            // An attribute's length, somewhere after the header.
            let k = (20 + (rng.next() as usize % (m.len() - 20))) & !3;
            if k + 4 <= m.len() {
                m[k + 2..k + 4].copy_from_slice(&(rng.next() as u16).to_be_bytes());
            }
        }
        4 => m.truncate(20 + rng.next() as usize % (m.len() - 19)),
        _ => m.extend((0..(rng.next() % 64)).map(|_| rng.next() as u8)),
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_malformed_stun_messages_over_udp_and_tcp() {
    use std::io::Write;
    let srv = TestServer::start().await;
    let mut p = join(
        &srv,
        "/whip/stun",
        &srv.publish_token("stun", "phone"),
        &[Audio],
    )
    .await
    .unwrap();
    let seed = captured_stun(&mut p);
    let mut s = join(
        &srv,
        "/whep/stun",
        &srv.subscribe_token("stun", "ear"),
        &[Audio],
    )
    .await
    .unwrap();
    // The seed names the publisher's session: mutations reach its ICE agent.
    let udp_node = srv.server().workers.local_addrs();
    let tcp_node = srv.server().workers.tcp_addrs();
    assert!(!tcp_node.is_empty(), "ICE-TCP is on by default");
    let mut rng = Rng(0x57_u64 << 32 | 0x4e);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut tcp: Vec<std::net::TcpStream> = tcp_node
        .iter()
        .map(|a| std::net::TcpStream::connect(a).unwrap())
        .collect();
    for i in 0..100_000 {
        let m = fuzzed(&mut rng, &seed, i);
        if i % 2 == 0 {
            let _ = sock.send_to(&m, udp_node[i / 2 % udp_node.len()]);
        } else {
            let k = i / 2 % tcp.len();
            let mut frame = Vec::new();
            media_core::framing::frame(&m, &mut frame).unwrap();
            if tcp[k].write_all(&frame).is_err() {
                // The node closed it (a frame it would not take): a new connection.
                tcp[k] = std::net::TcpStream::connect(tcp_node[k]).unwrap();
            }
        }
        if i % 5_000 == 0 {
            // Let the workers keep up; the session's own traffic goes on meanwhile.
            pump(&mut [&mut p, &mut s], Duration::from_millis(5)).await;
        }
    }
    // Bad framing closes an ICE-TCP connection and nothing else.
    let mut bad = std::net::TcpStream::connect(tcp_node[0]).unwrap();
    let _ = bad.write_all(&[0xff, 0xff, 1, 2, 3]);
    drop(tcp);

    // The node and the session still work.
    connect(&mut [&mut p, &mut s]).await;
    for n in 0..5 {
        p.send_audio(&payload(n, 30));
        pump(&mut [&mut p, &mut s], Duration::from_millis(20)).await;
    }
    // Audio keeps coming until five frames are through: on a loaded machine the
    // kernel may drop a datagram of the first five, and audio is not resent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 5;
    while s.frames_of(Audio).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no audio after the fuzzing"
        );
        p.send_audio(&payload(n, 30));
        n += 1;
        pump(&mut [&mut p, &mut s], Duration::from_millis(20)).await;
    }
    assert_eq!(srv.server().workers.session_count(), 2);
    // They were read, not lost on the way (the kernel may drop a few datagrams).
    let read = srv.metric("streamcore_udp_datagrams_in_total").await;
    assert!(read >= 90_000, "only {read} packets reached the workers");
    srv.stop().await;
}

/// A TURN client over UDP, written with the node's own STUN codec: enough to get an
/// allocation and the messages that seed the TURN fuzzing.
struct TurnClient {
    sock: std::net::UdpSocket,
    server: std::net::SocketAddr,
    auth: media_core::turn::client::ClientAuth,
    next: u8,
}

impl TurnClient {
    fn new(server: std::net::SocketAddr, secret: &str) -> TurnClient {
        use media_core::turn::credentials::{rest_password, rest_username};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let username = rest_username(expiry, "fuzzer");
        let auth =
            media_core::turn::client::ClientAuth::new(&username, &rest_password(secret, &username));
        let mut c = TurnClient {
            sock,
            server,
            auth,
            next: 0,
        };
        // The 401 challenge brings the realm and nonce.
        let (code, _) = c.ask(media_core::turn::stun::ALLOCATE, |b| {
            b.attr(media_core::turn::stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(code, 401);
        c
    }

    /// A request, authenticated once the challenge is known.
    fn request(
        &mut self,
        method: u16,
        attrs: impl Fn(media_core::turn::stun::Builder) -> media_core::turn::stun::Builder,
    ) -> Vec<u8> {
        use media_core::turn::stun::{Builder, Class};
        self.next = self.next.wrapping_add(1);
        self.auth
            .sign(attrs(Builder::new(method, Class::Request, [self.next; 12])))
            .fingerprint()
            .finish()
    }

    /// Sends a request and waits for its answer: the error code (0 for success).
    fn ask(
        &mut self,
        method: u16,
        attrs: impl Fn(media_core::turn::stun::Builder) -> media_core::turn::stun::Builder,
    ) -> (u16, Vec<u8>) {
        let req = self.request(method, attrs);
        // As a STUN client does over UDP: the request again until answered (the
        // server's receive queue may still hold the fuzzing, or have dropped it).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 2048];
        self.sock.send_to(&req, self.server).unwrap();
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the TURN server did not answer within 20 s"
            );
            // Answers to the fuzzing may come first; a quiet 500 ms means: again.
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                self.sock.send_to(&req, self.server).unwrap();
                continue;
            };
            let Ok(m) = media_core::turn::stun::parse(&buf[..n]) else {
                continue;
            };
            if m.transaction[..] != req[8..20] {
                continue;
            }
            // A challenge or a stale nonce: the next request uses what it says.
            self.auth.learn(&m);
            let code = media_core::turn::client::error_code(&m).unwrap_or(0);
            return (code, buf[..n].to_vec());
        }
    }
}

/// 100 000 random and mutated TURN messages (authenticated Allocate, ChannelBind,
/// Send indications and ChannelData from a client with an allocation, as seeds) over
/// UDP and TCP to the embedded TURN server: it survives, the client's allocation
/// still answers, and a new client still gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_malformed_turn_messages_over_udp_and_tcp() {
    use media_core::turn::stun::{self, Class};
    use std::io::Write;
    let secret = "fuzzing secret";
    let srv = TestServer::start_with(|s| {
        s.turn.embedded = true;
        s.turn.udp_port = support::free_port();
        s.turn.tcp_port = support::free_port();
        s.turn.shared_secret = Some(secret.into());
    })
    .await;
    let turn = srv.server().turn.as_ref().unwrap();
    let (udp_at, tcp_at) = (turn.udp_addr.unwrap(), turn.tcp_addr.unwrap());
    let node = srv.server().media_addrs[0];
    let fuzz = tokio::task::spawn_blocking(move || {
        let mut c = TurnClient::new(udp_at, secret);
        let transport = |b: stun::Builder| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        assert_eq!(c.ask(stun::ALLOCATE, transport).0, 0, "allocated");
        let bind = move |b: stun::Builder| {
            b.attr(stun::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
                .xor_address(stun::XOR_PEER_ADDRESS, node)
        };
        assert_eq!(c.ask(stun::CHANNEL_BIND, bind).0, 0, "bound to the node");
        let seeds = [
            c.request(stun::ALLOCATE, transport),
            c.request(stun::CHANNEL_BIND, bind),
            stun::Builder::new(stun::SEND, Class::Indication, [9; 12])
                .xor_address(stun::XOR_PEER_ADDRESS, node)
                .attr(stun::DATA_ATTR, &[0u8; 40])
                .finish(),
            stun::channel_data(0x4000, &[1u8; 40], true),
        ];
        let mut rng = Rng(0x7e_u64 << 32 | 0x11);
        let mut tcp = std::net::TcpStream::connect(tcp_at).unwrap();
        for i in 0..100_000 {
            let m = fuzzed(&mut rng, &seeds[i / 6 % seeds.len()], i);
            if i % 2 == 0 {
                let _ = c.sock.send_to(&m, udp_at);
            } else if tcp.write_all(&m).is_err() {
                // The node closed it (bytes that are neither STUN nor ChannelData).
                tcp = std::net::TcpStream::connect(tcp_at).unwrap();
            }
            if i % 200 == 199 {
                // Flow control: a round trip after every hundred datagrams, so the
                // server has read what came before (a socket's receive buffer holds a
                // couple of hundred small datagrams; on a loaded machine the kernel
                // drops what a full one cannot take).
                c.ask(stun::BINDING, |b| b);
            }
        }
        // The client's allocation is still there, and a new client gets one.
        let (code, _) = c.ask(stun::REFRESH, |b| b.u32_attr(stun::LIFETIME, 600));
        assert!(code == 0 || code == 438, "refresh after fuzzing: {code}");
        if code == 438 {
            assert_eq!(
                c.ask(stun::REFRESH, |b| b.u32_attr(stun::LIFETIME, 600)).0,
                0
            );
        }
        let mut fresh = TurnClient::new(udp_at, secret);
        assert_eq!(
            fresh.ask(stun::ALLOCATE, transport).0,
            0,
            "a new allocation"
        );
    });
    fuzz.await.expect("the TURN server survived the fuzzing");
    // They were read, not lost on the way: nearly all of the 50 000 datagrams (a
    // garbled length over TCP swallows what follows into one message).
    srv.wait_for_metric("streamcore_turn_client_messages_total", 45_000)
        .await;
    let status = reqwest::get(format!("{}/healthz", srv.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    srv.stop().await;
}
