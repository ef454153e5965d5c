//! Transports (docs/benchmarks.md "Transports"): what the path a subscriber reaches
//! the node by costs. A fresh `streamcore serve --workers 1` pinned to one core; one
//! publisher over UDP; N subscribers all over UDP, all over ICE-TCP (RFC 6544: the
//! only candidate they offer is TCP), or all through TURN (their only candidate is a
//! relayed one): the node's embedded TURN server over UDP, TCP or TLS, or Debian's
//! coturn the same three ways (pinned to the same core) as the reference. Per transport,
//! alternating, in the same run:
//!
//! - **server CPU per forwarded packet**: Δ scheduler run time of the server's threads
//!   (`/proc/PID/task/*/schedstat`, plus coturn's for the coturn rows) / Δ
//!   `streamcore_rtp_packets_forwarded_total`;
//! - **added latency**: the publisher stamps its send time into every payload; each
//!   subscriber takes receive time − stamp (both this process's clock), p50 / p99.
//!
//! The ratios to UDP are the result.
//!
//! `taskset -c 1 sc-transportbench [--subscribers N] [--seconds S] [--rounds R]
//! [--streamcore PATH]`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use media_core::framing::{self, Deframer};
use media_core::str0m::change::SdpAnswer;
use media_core::str0m::format::Codec;
use media_core::str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use media_core::str0m::net::{Protocol, Receive, TcpType};
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use media_core::turn::client::{self as turn_client, ClientAuth};
use media_core::turn::credentials::{rest_password, rest_username};
use media_core::turn::{StreamDeframer, stun};
use signaling::Grants;
use streamcore_benches::server::{Server, ServerSpec, free_tcp_port};
use streamcore_benches::{Histogram, Summary};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
    /// Through the node's embedded TURN server, over UDP or TCP to it.
    TurnUdp,
    TurnTcp,
    TurnTls,
    /// Through coturn, over UDP, TCP or TLS to it.
    CoturnUdp,
    CoturnTcp,
    CoturnTls,
}

impl Transport {
    const ALL: [Transport; 8] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::TurnUdp,
        Transport::TurnTcp,
        Transport::TurnTls,
        Transport::CoturnUdp,
        Transport::CoturnTcp,
        Transport::CoturnTls,
    ];

    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "ICE-TCP",
            Transport::TurnUdp => "embedded TURN, UDP",
            Transport::TurnTcp => "embedded TURN, TCP",
            Transport::TurnTls => "embedded TURN, TLS",
            Transport::CoturnUdp => "coturn, UDP",
            Transport::CoturnTcp => "coturn, TCP",
            Transport::CoturnTls => "coturn, TLS",
        }
    }

    /// How a subscriber reaches its TURN server, for the TURN rows.
    fn turn_link(self) -> Option<LinkKind> {
        match self {
            Transport::TurnUdp | Transport::CoturnUdp => Some(LinkKind::Udp),
            Transport::TurnTcp | Transport::CoturnTcp => Some(LinkKind::Tcp),
            Transport::TurnTls | Transport::CoturnTls => Some(LinkKind::Tls),
            _ => None,
        }
    }

    fn embedded(self) -> bool {
        matches!(
            self,
            Transport::TurnUdp | Transport::TurnTcp | Transport::TurnTls
        )
    }

    fn coturn(self) -> bool {
        matches!(
            self,
            Transport::CoturnUdp | Transport::CoturnTcp | Transport::CoturnTls
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LinkKind {
    Udp,
    Tcp,
    Tls,
}

/// A self-signed certificate for the TURN servers' TLS listeners (the load generator
/// does not check it: it measures cost, not trust).
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    fn make() -> anyhow::Result<TestCert> {
        let dir = std::env::temp_dir().join(format!("sc-bench-cert-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem())?;
        std::fs::write(&key, ck.signing_key.serialize_pem())?;
        Ok(TestCert { dir, cert, key })
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts any server certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_client() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    ))
}

/// A TURN server's listeners and the secret of its REST credentials.
struct TurnServer {
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    secret: String,
}

/// Debian's coturn, pinned like the node, as the reference TURN server.
struct Coturn {
    child: std::process::Child,
    pid: String,
    dir: PathBuf,
    server: TurnServer,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Coturn {
    /// `turnserver` (scripts/ensure-coturn.sh installs it) relaying to loopback
    /// peers only, checking REST credentials, on `cpu`.
    fn start(cpu: &str, cert: &TestCert) -> anyhow::Result<Coturn> {
        let port = free_tcp_port()?;
        let tls_port = free_tcp_port()?;
        let relay_min = 50_000 + (rand::random::<u16>() % 100) * 100;
        let secret = format!("bench-{}", rand::random::<u64>());
        let dir = std::env::temp_dir().join(format!("sc-bench-coturn-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("taskset")
            .args(["-c", cpu, "turnserver", "-n", "--no-cli", "--no-dtls"])
            .arg(format!("--tls-listening-port={tls_port}"))
            .arg(format!("--cert={}", cert.cert.display()))
            .arg(format!("--pkey={}", cert.key.display()))
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_min}"))
            .arg(format!("--max-port={}", relay_min + 99))
            .args(["--use-auth-secret", "--realm", "streamcore.bench"])
            .arg(format!("--static-auth-secret={secret}"))
            .args([
                "--allow-loopback-peers",
                "--denied-peer-ip=0.0.0.0-255.255.255.255",
            ])
            .arg("--allowed-peer-ip=127.0.0.1")
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting turnserver (scripts/ensure-coturn.sh installs it)")?;
        let at: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let c = Coturn {
            pid: child.id().to_string(),
            child,
            dir,
            server: TurnServer {
                udp: at,
                tcp: at,
                tls: format!("127.0.0.1:{tls_port}").parse()?,
                secret,
            },
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(at).is_err() || TcpStream::connect(c.server.tls).is_err() {
            if Instant::now() > deadline {
                bail!("turnserver did not listen on {at} and {}", c.server.tls);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(c)
    }
}

/// How a subscriber reaches its TURN server.
enum TurnLink {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, StreamDeframer),
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        StreamDeframer,
    ),
}

/// A TURN allocation and its one channel, to the node.
struct TurnPath {
    link: TurnLink,
    auth: ClientAuth,
    relay: SocketAddr,
    local: SocketAddr,
    node: SocketAddr,
    next: u8,
}

const CHANNEL: u16 = 0x4000;

impl TurnPath {
    /// Allocates a relay on `server` (blocking, a few round trips).
    fn allocate(
        server: SocketAddr,
        kind: LinkKind,
        secret: &str,
        identity: &str,
    ) -> anyhow::Result<TurnPath> {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let username = rest_username(expiry, identity);
        let auth = ClientAuth::new(&username, &rest_password(secret, &username));
        let (link, local) = match kind {
            LinkKind::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                let local = s.local_addr()?;
                (TurnLink::Udp(s, server), local)
            }
            LinkKind::Tcp | LinkKind::Tls => {
                let s = TcpStream::connect(server)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                let local = s.local_addr()?;
                if kind == LinkKind::Tcp {
                    (TurnLink::Tcp(s, StreamDeframer::default()), local)
                } else {
                    let name = rustls::pki_types::ServerName::from(server.ip());
                    let conn = rustls::ClientConnection::new(tls_client()?, name)?;
                    let stream = rustls::StreamOwned::new(conn, s);
                    (
                        TurnLink::Tls(Box::new(stream), StreamDeframer::default()),
                        local,
                    )
                }
            }
        };
        let mut p = TurnPath {
            link,
            auth,
            relay: local,
            local,
            node: local,
            next: 0,
        };
        let transport = |b: stun::Builder| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        let mut answer = p.ask(stun::ALLOCATE, transport)?;
        if matches!(turn_client::error_code(&stun::parse(&answer)?), Some(401)) {
            answer = p.ask(stun::ALLOCATE, transport)?;
        }
        let m = stun::parse(&answer)?;
        if let Some(code) = turn_client::error_code(&m) {
            bail!("TURN Allocate refused: {code}");
        }
        p.relay = m
            .xor_address(stun::XOR_RELAYED_ADDRESS)
            .context("no XOR-RELAYED-ADDRESS")?;
        Ok(p)
    }

    fn send_raw(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match &mut self.link {
            TurnLink::Udp(s, server) => s.send_to(msg, *server).map(|_| ()),
            TurnLink::Tcp(s, _) => s.write_all(msg),
            TurnLink::Tls(s, _) => s.write_all(msg).and_then(|()| s.flush()),
        }
    }

    /// The next message (setup only: blocks up to the read timeout).
    fn receive_one(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        match &mut self.link {
            TurnLink::Udp(s, _) => s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec()),
            TurnLink::Tcp(s, deframer) => read_one(s, deframer, &mut buf),
            TurnLink::Tls(s, deframer) => read_one(s.as_mut(), deframer, &mut buf),
        }
    }

    /// Messages that have arrived (the link is non-blocking by then).
    fn receive(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut buf = [0u8; 4096];
        match &mut self.link {
            TurnLink::Udp(s, _) => {
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    out.push(buf[..n].to_vec());
                    if out.len() > 64 {
                        break;
                    }
                }
            }
            TurnLink::Tcp(s, deframer) => read_available(s, deframer, &mut buf, out),
            TurnLink::Tls(s, deframer) => read_available(s.as_mut(), deframer, &mut buf, out),
        }
    }

    /// A signed request and its answer (setup only: the sockets block here).
    fn ask(
        &mut self,
        method: u16,
        attrs: impl Fn(stun::Builder) -> stun::Builder,
    ) -> anyhow::Result<Vec<u8>> {
        self.next += 1;
        let tid = [self.next; 12];
        let req = self
            .auth
            .sign(attrs(stun::Builder::new(method, stun::Class::Request, tid)))
            .fingerprint()
            .finish();
        self.send_raw(&req)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(m) = self.receive_one()
                && let Ok(msg) = stun::parse(&m)
                && msg.transaction == tid
            {
                self.auth.learn(&msg);
                return Ok(m);
            }
        }
        bail!("no answer from the TURN server")
    }

    /// Binds the channel to the node and turns the link non-blocking.
    fn bind(&mut self, node: SocketAddr) -> anyhow::Result<()> {
        self.node = node;
        let answer = self.ask(stun::CHANNEL_BIND, |b| {
            b.attr(stun::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                .xor_address(stun::XOR_PEER_ADDRESS, node)
        })?;
        if let Some(code) = turn_client::error_code(&stun::parse(&answer)?) {
            bail!("TURN ChannelBind refused: {code}");
        }
        match &self.link {
            TurnLink::Udp(s, _) => s.set_nonblocking(true)?,
            TurnLink::Tcp(s, _) => s.set_nonblocking(true)?,
            TurnLink::Tls(s, _) => s.sock.set_nonblocking(true)?,
        }
        Ok(())
    }

    fn send(&mut self, data: &[u8]) {
        let stream = !matches!(self.link, TurnLink::Udp(..));
        let _ = self.send_raw(&stun::channel_data(CHANNEL, data, stream));
    }
}

/// The next message off a stream (blocking up to its read timeout).
fn read_one(s: &mut dyn Read, deframer: &mut StreamDeframer, buf: &mut [u8]) -> Option<Vec<u8>> {
    loop {
        if let Ok(Some(m)) = deframer.next_message() {
            return Some(m);
        }
        match s.read(buf) {
            Ok(n @ 1..) => deframer.push(&buf[..n]),
            _ => return None,
        }
    }
}

/// Every whole message a non-blocking stream holds now.
fn read_available(
    s: &mut dyn Read,
    deframer: &mut StreamDeframer,
    buf: &mut [u8],
    out: &mut Vec<Vec<u8>>,
) {
    while let Ok(n @ 1..) = s.read(buf) {
        deframer.push(&buf[..n]);
    }
    while let Ok(Some(m)) = deframer.next_message() {
        out.push(m);
    }
}

/// A client: str0m over one UDP socket, or over one ICE-TCP connection.
struct Client {
    rtc: Rtc,
    udp: UdpSocket,
    addr: SocketAddr,
    tcp: Option<(TcpStream, Deframer, SocketAddr)>,
    turn: Option<TurnPath>,
    mid: Mid,
    connected: bool,
    time: u64,
}

impl Client {
    async fn join(
        srv: &Server,
        path: &str,
        token: &str,
        identity: &str,
        transport: Transport,
        turn: Option<&TurnServer>,
    ) -> anyhow::Result<Client> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_nonblocking(true)?;
        let mut addr = udp.local_addr()?;
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut relayed = None;
        match transport {
            Transport::Udp => {
                rtc.add_local_candidate(Candidate::host(addr, "udp")?);
            }
            Transport::Tcp => {
                addr = "127.0.0.1:9".parse()?;
                rtc.add_local_candidate(
                    Candidate::builder()
                        .tcp()
                        .host(addr)
                        .tcptype(TcpType::Active)
                        .build()?,
                );
            }
            t => {
                let server = turn.context("a TURN server")?;
                let kind = t.turn_link().context("a TURN row")?;
                let at = match kind {
                    LinkKind::Udp => server.udp,
                    LinkKind::Tcp => server.tcp,
                    LinkKind::Tls => server.tls,
                };
                let p = TurnPath::allocate(at, kind, &server.secret, identity)?;
                addr = p.relay;
                rtc.add_local_candidate(Candidate::relayed(p.relay, p.local, "udp")?);
                relayed = Some(p);
            }
        }
        let dir = if path.starts_with("/whip") {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, dir, Some("s".into()), None, None);
        let (offer, pending) = api.apply().context("an offer")?;
        let resp = srv
            .http
            .post(format!("{}{path}", srv.base))
            .header("content-type", "application/sdp")
            .bearer_auth(token)
            .body(offer.to_sdp_string())
            .send()
            .await?;
        if resp.status() != 201 {
            bail!("{path}: {} {}", resp.status(), resp.text().await?);
        }
        let answer = resp.text().await?;
        if let Some(p) = &mut relayed {
            let line = answer
                .lines()
                .find(|l| l.starts_with("a=candidate") && l.contains(" udp "))
                .context("no UDP candidate in the answer")?;
            let f: Vec<&str> = line.split_whitespace().collect();
            p.bind(format!("{}:{}", f[4], f[5]).parse()?)?;
        }
        let tcp = if transport == Transport::Tcp {
            let line = answer
                .lines()
                .find(|l| l.contains(" tcp ") && l.contains("tcptype passive"))
                .context("no passive ICE-TCP candidate in the answer")?;
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote: SocketAddr = format!("{}:{}", f[4], f[5]).parse()?;
            let s = TcpStream::connect(remote)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Some((s, Deframer::default(), remote))
        } else {
            None
        };
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        Ok(Client {
            rtc,
            udp,
            addr,
            tcp,
            turn: relayed,
            mid,
            connected: false,
            time: 0,
        })
    }

    /// Moves packets both ways; received frames' latencies go to `latency`.
    fn step(&mut self, latency: &mut Histogram, epoch: Instant) {
        let mut buf = [0u8; 2048];
        let now = Instant::now();
        while let Ok((n, src)) = self.udp.recv_from(&mut buf) {
            self.input(now, Protocol::Udp, src, &buf[..n]);
        }
        if let Some((s, deframer, remote)) = &mut self.tcp {
            let remote = *remote;
            while let Ok(n @ 1..) = s.read(&mut buf) {
                deframer.push(&buf[..n]);
            }
            let frames: Vec<Vec<u8>> = std::iter::from_fn(|| deframer.next_packet()).collect();
            for f in frames {
                self.input(now, Protocol::Tcp, remote, &f);
            }
        }
        if let Some(p) = &mut self.turn {
            let node = p.node;
            let mut got = Vec::new();
            p.receive(&mut got);
            for m in got {
                if let Some(cd) = stun::parse_channel_data(&m) {
                    let data = cd.data.to_vec();
                    self.input(now, Protocol::Udp, node, &data);
                }
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain(latency, epoch);
    }

    fn input(&mut self, now: Instant, proto: Protocol, source: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let _ = self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination: self.addr,
                contents,
            },
        ));
    }

    fn drain(&mut self, latency: &mut Histogram, epoch: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => match (&mut self.tcp, t.proto) {
                    _ if self.turn.is_some() => {
                        if let Some(p) = &mut self.turn {
                            p.send(&t.contents);
                        }
                    }
                    (Some((s, _, _)), Protocol::Tcp) => {
                        let mut frame = Vec::new();
                        if framing::frame(&t.contents, &mut frame).is_some() {
                            let _ = s.write_all(&frame);
                        }
                    }
                    _ => {
                        let _ = self.udp.send_to(&t.contents, t.destination);
                    }
                },
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::MediaData(d))) if d.data.len() >= 8 => {
                    let sent = u64::from_be_bytes(d.data[..8].try_into().expect("8 bytes"));
                    let now = epoch.elapsed().as_nanos() as u64;
                    latency.record(now.saturating_sub(sent));
                }
                Ok(_) => {}
            }
        }
    }

    /// One Opus-labelled frame of `len` bytes, stamped with its send time.
    fn send(&mut self, len: usize, epoch: Instant, latency: &mut Histogram) {
        let mut data = vec![0x5a; len.max(8)];
        data[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        let Some(w) = self.rtc.writer(self.mid) else {
            return;
        };
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let _ = w.write(
            pt,
            Instant::now(),
            MediaTime::new(self.time, Frequency::FORTY_EIGHT_KHZ),
            data,
        );
        self.time += 960;
        self.drain(latency, epoch);
    }
}

/// The publisher's schedule: one frame per `interval`.
struct Pace {
    next: Instant,
    interval: Duration,
    sent: u64,
}

/// The clients of one measurement.
struct Run {
    publisher: Client,
    subs: Vec<Client>,
    lat: Histogram,
    size: usize,
    epoch: Instant,
}

impl Run {
    /// Sends on schedule and moves every client's packets for `secs`.
    async fn drive(&mut self, secs: f64, pace: &mut Pace) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            if Instant::now() >= pace.next {
                self.publisher.send(self.size, self.epoch, &mut self.lat);
                pace.sent += 1;
                pace.next += pace.interval;
            }
            self.publisher.step(&mut self.lat, self.epoch);
            for s in &mut self.subs {
                s.step(&mut self.lat, self.epoch);
            }
            tokio::task::yield_now().await;
        }
    }
}

struct Args {
    streamcore: PathBuf,
    subscribers: usize,
    seconds: u64,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        streamcore: exe
            .parent()
            .map(|d| d.join("streamcore"))
            .unwrap_or_else(|| PathBuf::from("target/release/streamcore")),
        subscribers: 20,
        seconds: 6,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--subscribers" => a.subscribers = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--rounds" => a.rounds = v.parse()?,
            "--streamcore" => a.streamcore = PathBuf::from(v),
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

/// One measurement: (server µs per forwarded packet, latency p50 ms, p99 ms, loss).
async fn measure(
    args: &Args,
    cert: &TestCert,
    transport: Transport,
    rate: u32,
    size: usize,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    // The embedded TURN server listens on one port number for UDP and TCP.
    let (turn_port, tls_port) = (free_tcp_port()?, free_tcp_port()?);
    let embedded = transport.embedded();
    let secret = format!("bench-{}", rand::random::<u64>());
    let env = if embedded {
        vec![
            ("STREAMCORE_TURN__EMBEDDED".to_owned(), "true".to_owned()),
            (
                "STREAMCORE_TURN__UDP_PORT".to_owned(),
                turn_port.to_string(),
            ),
            (
                "STREAMCORE_TURN__TCP_PORT".to_owned(),
                turn_port.to_string(),
            ),
            ("STREAMCORE_TURN__SHARED_SECRET".to_owned(), secret.clone()),
            ("STREAMCORE_TURN__TLS_PORT".to_owned(), tls_port.to_string()),
            (
                "STREAMCORE_TURN__TLS_CERT".to_owned(),
                cert.cert.display().to_string(),
            ),
            (
                "STREAMCORE_TURN__TLS_KEY".to_owned(),
                cert.key.display().to_string(),
            ),
        ]
    } else {
        Vec::new()
    };
    let srv = Server::start(&ServerSpec {
        streamcore: args.streamcore.clone(),
        cpu: "0".into(),
        log: None,
        workers: 1,
        env,
        dir: None,
    })
    .await?;
    let coturn = if transport.coturn() {
        Some(Coturn::start("0", cert)?)
    } else {
        None
    };
    let at: SocketAddr = format!("127.0.0.1:{turn_port}").parse()?;
    let turn = coturn.as_ref().map(|c| &c.server);
    let own = TurnServer {
        udp: at,
        tcp: at,
        tls: format!("127.0.0.1:{tls_port}").parse()?,
        secret,
    };
    let turn = turn.or(embedded.then_some(&own));
    let grants = |publish| Grants {
        publish,
        subscribe: !publish,
        ..Grants::default()
    };
    let epoch = Instant::now();
    let mut lat = Histogram::default();
    let mut publisher = Client::join(
        &srv,
        "/whip/t",
        &srv.token("t", "pub", grants(true))?,
        "pub",
        Transport::Udp,
        None,
    )
    .await?;
    let mut subs = Vec::new();
    for i in 0..args.subscribers {
        let identity = format!("s{i}");
        let token = srv.token("t", &identity, grants(false))?;
        subs.push(Client::join(&srv, "/whep/t", &token, &identity, transport, turn).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(publisher.connected && subs.iter().all(|s| s.connected)) {
        if Instant::now() > deadline {
            bail!("{transport:?}: clients did not connect");
        }
        publisher.step(&mut lat, epoch);
        for s in &mut subs {
            s.step(&mut lat, epoch);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut pace = Pace {
        next: Instant::now(),
        interval: Duration::from_secs_f64(1.0 / f64::from(rate)),
        sent: 0,
    };
    let mut run = Run {
        publisher,
        subs,
        lat,
        size,
        epoch,
    };
    run.drive(2.0, &mut pace).await;
    run.lat.clear();
    let coturn_cpu = || {
        coturn
            .as_ref()
            .and_then(|c| streamcore_benches::procfs::cpu(&c.pid))
            .unwrap_or_default()
    };
    let (c0, k0, m0) = (srv.cpu(), coturn_cpu(), srv.metrics().await?);
    let sent0 = pace.sent;
    run.drive(args.seconds as f64, &mut pace).await;
    let sent = pace.sent;
    let lat = run.lat;
    let (c1, k1, m1) = (srv.cpu(), coturn_cpu(), srv.metrics().await?);
    let fwd =
        m1["streamcore_rtp_packets_forwarded_total"] - m0["streamcore_rtp_packets_forwarded_total"];
    let tck = streamcore_benches::procfs::clk_tck();
    let cpu_s = c1.since(&c0, tck).1 + k1.since(&k0, tck).1;
    let expected = ((sent - sent0) * args.subscribers as u64) as f64;
    let loss = 1.0 - lat.count() as f64 / expected.max(1.0);
    Ok((
        cpu_s * 1e6 / fwd.max(1.0),
        lat.quantile_ms(0.5),
        lat.quantile_ms(0.99),
        loss,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    media_core::str0m::crypto::from_feature_flags().install_process_default();
    println!(
        "sc-transportbench  git {}  {}  subscribers {}  {} rounds of {} s",
        streamcore_benches::procfs::git_sha(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
        streamcore_benches::procfs::machine(),
        args.subscribers,
        args.rounds,
        args.seconds
    );
    let cert = TestCert::make()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "\n| load | transport | server µs per forwarded packet | ÷ UDP | latency p50 ms | p99 ms | loss |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, rate, size) in [
        ("audio 50 pps × 100 B", 50, 100),
        ("300 pps × 1100 B", 300, 1100),
    ] {
        const N: usize = Transport::ALL.len();
        let mut by: [Vec<f64>; N] = Default::default();
        let mut p50: [Vec<f64>; N] = Default::default();
        let mut p99: [Vec<f64>; N] = Default::default();
        let mut loss = [0.0f64; N];
        for _ in 0..args.rounds {
            // Alternating, so drift on the shared machine hits all alike.
            for (i, t) in Transport::ALL.into_iter().enumerate() {
                let (us, a, b, l) = rt.block_on(measure(&args, &cert, t, rate, size))?;
                by[i].push(us);
                p50[i].push(a);
                p99[i].push(b);
                loss[i] = loss[i].max(l);
            }
        }
        let udp = Summary::of(&by[0]).median;
        for (i, t) in Transport::ALL.into_iter().enumerate() {
            let s = Summary::of(&by[i]);
            println!(
                "| {label} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} % |",
                t.name(),
                s.show(2),
                s.median / udp,
                Summary::of(&p50[i]).median,
                Summary::of(&p99[i]).median,
                100.0 * loss[i].max(0.0)
            );
        }
    }
    Ok(())
}
