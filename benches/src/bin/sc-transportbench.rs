//! Transports (docs/benchmarks.md "Transports"): what the path a subscriber reaches
//! the node by costs. A fresh `streamcore serve --workers 1` pinned to one core; one
//! publisher over UDP; N subscribers all over UDP, or all over ICE-TCP (RFC 6544: the
//! only candidate they offer is TCP). Per transport, alternating, in the same run:
//!
//! - **server CPU per forwarded packet**: Δ scheduler run time of the server's threads
//!   (`/proc/PID/task/*/schedstat`) / Δ `streamcore_rtp_packets_forwarded_total`;
//! - **added latency**: the publisher stamps its send time into every payload; each
//!   subscriber takes receive time − stamp (both this process's clock), p50 / p99.
//!
//! The ratio ICE-TCP ÷ UDP is the result. TURN is not measured here: the node has no
//! embedded TURN server yet, and driving coturn needs a TURN client in this load
//! generator.
//!
//! `taskset -c 1 sc-transportbench [--subscribers N] [--seconds S] [--rounds R]
//! [--streamcore PATH]`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use media_core::framing::{self, Deframer};
use media_core::str0m::change::SdpAnswer;
use media_core::str0m::format::Codec;
use media_core::str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use media_core::str0m::net::{Protocol, Receive, TcpType};
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use signaling::Grants;
use streamcore_benches::server::{Server, ServerSpec};
use streamcore_benches::{Histogram, Summary};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

/// A client: str0m over one UDP socket, or over one ICE-TCP connection.
struct Client {
    rtc: Rtc,
    udp: UdpSocket,
    addr: SocketAddr,
    tcp: Option<(TcpStream, Deframer, SocketAddr)>,
    mid: Mid,
    connected: bool,
    time: u64,
}

impl Client {
    async fn join(
        srv: &Server,
        path: &str,
        token: &str,
        transport: Transport,
    ) -> anyhow::Result<Client> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_nonblocking(true)?;
        let mut addr = udp.local_addr()?;
        let mut rtc = Rtc::builder().build(Instant::now());
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
    transport: Transport,
    rate: u32,
    size: usize,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let srv = Server::start(&ServerSpec {
        streamcore: args.streamcore.clone(),
        cpu: "0".into(),
        log: None,
        workers: 1,
    })
    .await?;
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
        Transport::Udp,
    )
    .await?;
    let mut subs = Vec::new();
    for i in 0..args.subscribers {
        let token = srv.token("t", &format!("s{i}"), grants(false))?;
        subs.push(Client::join(&srv, "/whep/t", &token, transport).await?);
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
    let (c0, m0) = (srv.cpu(), srv.metrics().await?);
    let sent0 = pace.sent;
    run.drive(args.seconds as f64, &mut pace).await;
    let sent = pace.sent;
    let lat = run.lat;
    let (c1, m1) = (srv.cpu(), srv.metrics().await?);
    let fwd =
        m1["streamcore_rtp_packets_forwarded_total"] - m0["streamcore_rtp_packets_forwarded_total"];
    let cpu_s = c1.since(&c0, streamcore_benches::procfs::clk_tck()).1;
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
        let mut by = [Vec::new(), Vec::new()];
        let mut lat = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut loss = [0.0f64; 2];
        for _ in 0..args.rounds {
            // Alternating, so drift on the shared machine hits both alike.
            for (i, t) in [Transport::Udp, Transport::Tcp].into_iter().enumerate() {
                let (us, p50, p99, l) = rt.block_on(measure(&args, t, rate, size))?;
                by[i].push(us);
                lat[i * 2].push(p50);
                lat[i * 2 + 1].push(p99);
                loss[i] = loss[i].max(l);
            }
        }
        let udp = Summary::of(&by[0]).median;
        for (i, name) in ["UDP", "ICE-TCP"].into_iter().enumerate() {
            let s = Summary::of(&by[i]);
            println!(
                "| {label} | {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} % |",
                s.show(2),
                s.median / udp,
                Summary::of(&lat[i * 2]).median,
                Summary::of(&lat[i * 2 + 1]).median,
                100.0 * loss[i].max(0.0)
            );
        }
    }
    Ok(())
}
