//! End-to-end harness: the real node in-process (HTTP + UDP workers on 127.0.0.1)
//! and str0m client peers on their own loopback UDP sockets, joined through the real
//! WHIP/WHEP endpoints.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use media_core::RoomId;
use media_core::str0m::change::{SdpAnswer, SdpPendingOffer};
use media_core::str0m::format::Codec;
use media_core::str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use media_core::str0m::net::{Protocol, Receive};
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use signaling::Grants;
use streamcore::config::Settings;
use streamcore::server::RunningServer;

pub mod coturn;
pub mod kafka;
pub mod netns;
pub mod oidc;
/// Fresh PostgreSQL databases, shared with control-api's tests.
#[path = "../../control-api/tests/common/mod.rs"]
pub mod pg;
pub mod remote;
pub mod room;

/// The path of `command`, installing Debian's `package` first when it is missing
/// (`scripts/ensure-debian-command.sh`).
pub fn ensure_debian_command(command: &str, package: &str) -> String {
    last_line_of_script("ensure-debian-command.sh", &[command, package])
}

/// Debian's Chromium (installed by `scripts/ensure-chromium.sh`, which `scripts/test`
/// runs first).
pub fn chromium() -> String {
    last_line_of_script("ensure-chromium.sh", &[])
}

/// Runs `scripts/<script>` with `args` (its progress on stderr) and returns the last
/// line it printed: the path of what it made sure of.
fn last_line_of_script(script: &str, args: &[&str]) -> String {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(repo.join("scripts").join(script))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(out.status.success(), "scripts/{script} {args:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("a path")
        .trim()
        .to_owned()
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = std::env::temp_dir().join(format!("sc-e2e-{}", rand::random::<u64>()));
        let mut s = Settings {
            http: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            ..Settings::default()
        };
        s.media.port = 0;
        s.media.workers = 2;
        f(&mut s);
        let server = streamcore::server::start(&s).await.expect("server starts");
        let base = format!("http://{}", server.http_addr);
        TestServer {
            server: Some(server),
            base,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    /// The token of the newest link to `path` (`/sign-up`, `/reset-password`,
    /// `/verify-email`) mailed to `to` and waiting in the outbox.
    pub async fn mailed_token(&self, to: &str, path: &str) -> Option<String> {
        use control_api::store::Store;
        let mails = self.server().api.db.list_mail(200).await.ok()?;
        mails
            .iter()
            .filter(|m| m.to_addr == to)
            .find_map(|m| control_api::mail::link_token(&m.body, path).map(str::to_owned))
    }

    pub fn token(&self, room: &str, identity: &str, grants: Grants) -> String {
        self.server()
            .signer
            .sign(
                &RoomId::parse(room).unwrap(),
                identity,
                grants,
                Duration::from_secs(600),
            )
            .unwrap()
    }

    pub fn publish_token(&self, room: &str, identity: &str) -> String {
        self.token(
            room,
            identity,
            Grants {
                publish: true,
                ..Grants::default()
            },
        )
    }

    pub fn subscribe_token(&self, room: &str, identity: &str) -> String {
        self.token(
            room,
            identity,
            Grants {
                subscribe: true,
                ..Grants::default()
            },
        )
    }

    /// A metric's value (summed over its labels when `name` leaves them open), from
    /// the metrics listener when there is one, else from the HTTP listener.
    pub async fn metric(&self, name: &str) -> u64 {
        let at = match self.server().metrics_addr {
            Some(a) => format!("http://{a}"),
            None => self.base.clone(),
        };
        let text = self
            .http
            .get(format!("{at}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Every series of `name` on `/metrics`, by the value of its one label `label`.
    pub async fn series_by(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        series_by_label(&text, name, label)
    }

    /// Waits until `name` reaches `at_least` (metrics are updated every second or
    /// so); its value then. Panics after 10 s, naming the metric and its last value.
    pub async fn wait_for_metric(&self, name: &str, at_least: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name).await;
            if v >= at_least {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {v}, not at least {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `name` is exactly `value`; panics after 10 s with its last value.
    pub async fn wait_for_metric_to_be(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name).await;
            if v == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {v}, not {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_millis(100), std::future::pending())
                .await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A WebRTC client on its own UDP socket.
pub struct Peer {
    pub rtc: Rtc,
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub mids: Vec<(Mid, MediaKind)>,
    pub frames: Vec<(Mid, Vec<u8>)>,
    pub connected: bool,
    pub keyframe_requests: usize,
    pub location: String,
    pub token: String,
    /// The WHIP/WHEP resource's `ETag` (its ICE session).
    pub etag: String,
    /// The node's answer, kept for ICE restarts (which send only new credentials).
    pub answer: String,
    /// An ICE-TCP connection to the node, when this client has no UDP.
    pub tcp: Option<TcpLink>,
    audio_time: u64,
    video_time: u64,
}

/// What a WHIP/WHEP POST answered when it was not 201.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: serde_json::Value,
}

pub fn offer(
    kinds: &[MediaKind],
    dir: Direction,
) -> (
    Rtc,
    UdpSocket,
    Vec<(Mid, MediaKind)>,
    String,
    SdpPendingOffer,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    let (rtc, mids, sdp, pending) = offer_from(Candidate::host(addr, "udp").unwrap(), kinds, dir);
    (rtc, sock, mids, sdp, pending)
}

/// A client whose only candidate is `candidate`, and its offer of `kinds`.
fn offer_from(
    candidate: Candidate,
    kinds: &[MediaKind],
    dir: Direction,
) -> (Rtc, Vec<(Mid, MediaKind)>, String, SdpPendingOffer) {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let mids = kinds
        .iter()
        .map(|k| (api.add_media(*k, dir, Some("s".into()), None, None), *k))
        .collect();
    let (offer, pending) = api.apply().unwrap();
    (rtc, mids, offer.to_sdp_string(), pending)
}

/// How a test client reaches the node's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// No UDP at all: the offer's only candidate is an active ICE-TCP one, and the
    /// client connects to the node's passive candidate from the answer.
    Tcp,
}

pub async fn join(
    srv: &TestServer,
    path: &str,
    token: &str,
    kinds: &[MediaKind],
) -> Result<Peer, Refused> {
    join_via(srv, path, token, kinds, Transport::Udp).await
}

/// Joins like [`join`] with no UDP at all (ICE-TCP).
pub async fn join_over_tcp(srv: &TestServer, path: &str, token: &str, kinds: &[MediaKind]) -> Peer {
    join_via(srv, path, token, kinds, Transport::Tcp)
        .await
        .expect("the node answers")
}

pub async fn join_via(
    srv: &TestServer,
    path: &str,
    token: &str,
    kinds: &[MediaKind],
    transport: Transport,
) -> Result<Peer, Refused> {
    let dir = if path.starts_with("/whip") {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    // A UDP socket even for an ICE-TCP client: nobody sends to it then.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let candidate = match transport {
        Transport::Udp => Candidate::host(sock.local_addr().unwrap(), "udp").unwrap(),
        Transport::Tcp => Candidate::builder()
            .tcp()
            .host(TCP_ACTIVE.parse().unwrap())
            .tcptype(media_core::str0m::net::TcpType::Active)
            .build()
            .unwrap(),
    };
    let (mut rtc, mids, sdp, pending) = offer_from(candidate, kinds, dir);
    let resp = srv
        .http
        .post(format!("{}{}", srv.base, path))
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {token}"))
        .body(sdp)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 201 {
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        return Err(Refused { status, body });
    }
    assert_eq!(resp.headers()["content-type"], "application/sdp");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let answer = resp.text().await.unwrap();
    let tcp = (transport == Transport::Tcp).then(|| TcpLink::connect(&answer));
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    Ok(Peer {
        location,
        token: token.to_owned(),
        etag,
        answer,
        tcp,
        ..Peer::from_parts(rtc, sock, mids)
    })
}

impl Peer {
    /// A peer from a session the caller set up itself.
    pub fn from_parts(rtc: Rtc, sock: UdpSocket, mids: Vec<(Mid, MediaKind)>) -> Peer {
        let addr = sock.local_addr().unwrap();
        Peer {
            rtc,
            sock,
            addr,
            mids,
            frames: Vec::new(),
            connected: false,
            keyframe_requests: 0,
            location: String::new(),
            token: String::new(),
            etag: String::new(),
            answer: String::new(),
            tcp: None,
            audio_time: 0,
            video_time: 0,
        }
    }

    pub fn mid(&self, kind: MediaKind) -> Mid {
        self.mids.iter().find(|(_, k)| *k == kind).unwrap().0
    }

    pub fn frames_of(&self, kind: MediaKind) -> Vec<Vec<u8>> {
        let mid = self.mid(kind);
        self.frames
            .iter()
            .filter(|(m, _)| *m == mid)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Moves this peer's packets both ways; never blocks.
    pub fn step(&mut self) {
        let mut buf = [0u8; 2000];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            let Ok(contents) = (&buf[..n]).try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source: src,
                    destination: self.addr,
                    contents,
                },
            );
            let _ = self.rtc.handle_input(input);
        }
        let frames = self
            .tcp
            .as_mut()
            .map(TcpLink::read_frames)
            .unwrap_or_default();
        for frame in frames {
            let link = self.tcp.as_ref().expect("frames came from it");
            let Ok(contents) = frame.as_slice().try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Tcp,
                    source: link.remote,
                    destination: link.local,
                    contents,
                },
            );
            let _ = self.rtc.handle_input(input);
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => match (&mut self.tcp, t.proto) {
                    (Some(link), Protocol::Tcp) => link.write_frame(&t.contents),
                    _ => {
                        let _ = self.sock.send_to(&t.contents, t.destination);
                    }
                },
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaData(d) => self.frames.push((d.mid, d.data.to_vec())),
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    _ => {}
                },
            }
        }
    }

    pub fn send_audio(&mut self, payload: &[u8]) {
        let mid = self.mid(MediaKind::Audio);
        let w = self.rtc.writer(mid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        w.write(
            pt,
            Instant::now(),
            MediaTime::new(self.audio_time, Frequency::FORTY_EIGHT_KHZ),
            payload.to_vec(),
        )
        .unwrap();
        self.audio_time += 960;
        self.drain();
    }

    pub fn send_video(&mut self, keyframe: bool, body: &[u8]) -> Vec<u8> {
        let mut data = body.to_vec();
        data[0] = if keyframe { data[0] & !1 } else { data[0] | 1 };
        let mid = self.mid(MediaKind::Video);
        let w = self.rtc.writer(mid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        w.write(
            pt,
            Instant::now(),
            MediaTime::from_90khz(self.video_time),
            data.clone(),
        )
        .unwrap();
        self.video_time += 3000;
        self.drain();
        data
    }
}

impl Peer {
    /// Writes one encoded frame of `codec` on the m-line of `kind` (str0m packetises
    /// it), stamped with the wall clock now.
    pub fn send_frame(&mut self, kind: MediaKind, codec: Codec, time: MediaTime, data: &[u8]) {
        let mid = self.mid(kind);
        let w = self.rtc.writer(mid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .expect("the codec was negotiated")
            .pt();
        w.write(pt, Instant::now(), time, data.to_vec()).unwrap();
        self.drain();
    }
}

/// A client's ICE-TCP connection (RFC 6544 active side, RFC 4571 framing).
pub struct TcpLink {
    stream: std::net::TcpStream,
    deframer: media_core::framing::Deframer,
    /// The client's candidate ([`TCP_ACTIVE`]).
    pub local: SocketAddr,
    /// The node's passive candidate this connection goes to.
    pub remote: SocketAddr,
}

/// An ICE-TCP client's candidate (`tcptype active`, port 9, as browsers offer it).
const TCP_ACTIVE: &str = "127.0.0.1:9";

impl TcpLink {
    /// Connects to the node's passive ICE-TCP candidate in `answer`
    /// (`a=candidate:<f> 1 tcp <prio> <ip> <port> typ host tcptype passive`).
    fn connect(answer: &str) -> TcpLink {
        let passive = answer
            .lines()
            .find(|l| {
                l.starts_with("a=candidate:")
                    && l.contains(" tcp ")
                    && l.contains("tcptype passive")
            })
            .unwrap_or_else(|| panic!("no passive ICE-TCP candidate in the answer:\n{answer}"));
        let f: Vec<&str> = passive.split_whitespace().collect();
        let remote: SocketAddr = format!("{}:{}", f[4], f[5]).parse().unwrap();
        let stream = std::net::TcpStream::connect(remote).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        TcpLink {
            stream,
            deframer: Default::default(),
            local: TCP_ACTIVE.parse().unwrap(),
            remote,
        }
    }

    /// Every whole frame that has arrived; waits at most a millisecond.
    fn read_frames(&mut self) -> Vec<Vec<u8>> {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = self.stream.read(&mut buf) {
            self.deframer.push(&buf[..n]);
        }
        std::iter::from_fn(|| self.deframer.next_packet()).collect()
    }

    fn write_frame(&mut self, packet: &[u8]) {
        use std::io::Write;
        let mut frame = Vec::new();
        if media_core::framing::frame(packet, &mut frame).is_some() {
            let _ = self.stream.write_all(&frame);
        }
    }
}

/// A client's network change: it moves to a new socket on `ip` and restarts ICE with
/// a WHIP/WHEP PATCH (RFC 9725 §4.4), sending its new credentials and candidate.
/// Returns the PATCH's status and the resource's new `ETag`.
pub async fn move_and_restart_ice(srv: &TestServer, peer: &mut Peer, ip: &str) -> (u16, String) {
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    peer.sock = sock;
    peer.addr = addr;
    let mut api = peer.rtc.sdp_api();
    api.ice_restart(false);
    let (offer, pending) = api.apply().expect("an ICE restart makes an offer");
    let offer = offer.to_sdp_string();
    let value = |sdp: &str, key: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let candidate = Candidate::host(addr, "udp").unwrap();
    let frag = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na={}\r\n",
        value(&offer, "a=ice-ufrag:").unwrap(),
        value(&offer, "a=ice-pwd:").unwrap(),
        candidate.to_sdp_string(),
    );
    let resp = srv
        .http
        .patch(format!("{}{}", srv.base, peer.location))
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .header("Authorization", format!("Bearer {}", peer.token))
        .header("If-Match", "*")
        .body(frag)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, String::new());
    }
    assert_eq!(
        resp.headers()["content-type"],
        "application/trickle-ice-sdpfrag"
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let reply = resp.text().await.unwrap();
    // The answer as before, with the node's new credentials and candidates.
    let mut answer = String::new();
    let mut candidates_placed = false;
    for line in peer.answer.lines() {
        if line.starts_with("a=candidate:") || line.starts_with("a=end-of-candidates") {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            answer += &format!("a=ice-ufrag:{}\r\n", value(&reply, "a=ice-ufrag:").unwrap());
        } else if line.starts_with("a=ice-pwd:") {
            answer += &format!("a=ice-pwd:{}\r\n", value(&reply, "a=ice-pwd:").unwrap());
        } else {
            answer += line;
            answer += "\r\n";
        }
        if line.starts_with("a=mid:") && !candidates_placed {
            candidates_placed = true;
            for c in reply.lines().filter(|l| l.starts_with("a=candidate:")) {
                answer += c;
                answer += "\r\n";
            }
        }
    }
    peer.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    peer.rtc.add_local_candidate(candidate);
    peer.answer = answer;
    peer.etag = etag.clone();
    (status, etag)
}

/// Steps every peer for `d` of real time.
pub async fn pump(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.step();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Steps until all peers are connected (at most 10 s).
pub async fn connect(peers: &mut [&mut Peer]) {
    let end = Instant::now() + Duration::from_secs(10);
    while !peers.iter().all(|p| p.connected) {
        assert!(Instant::now() < end, "peers did not connect");
        pump(peers, Duration::from_millis(5)).await;
    }
}

pub fn payload(n: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i * 7) as u8).collect()
}

/// Every series of `name` in a `/metrics` text, by the value of its one label `label`.
pub fn series_by_label(text: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|l| {
            let (value_of_label, value) = l.strip_prefix(&prefix)?.split_once("\"}")?;
            Some((value_of_label.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}
