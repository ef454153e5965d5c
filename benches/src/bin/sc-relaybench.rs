//! Relay (docs/benchmarks.md "Relay"): what spreading a room over nodes, and over the
//! workers of one node, costs. In one run, alternating:
//!
//! - **Nodes**: one publisher (UDP, 300 pps × 1100 B) on the room's node and N
//!   subscribers on each of three nodes (`streamcore serve --workers 1` each, one
//!   shared data directory: one SQLite database and one set of keys; the two other
//!   nodes import the room over the QUIC relay), against the same 3N subscribers on
//!   one node. Per node: CPU µs per forwarded packet (Δ scheduler run time of its
//!   threads / Δ `streamcore_rtp_packets_forwarded_total`); latency of the room's
//!   node's subscribers and of the relayed ones (the publisher stamps its send time
//!   into every payload): the difference is what a relay hop adds.
//! - **Workers**: the same room on one node of two workers, all 2N players on the
//!   room's worker, then split over both (`media.room_players_per_worker`): the
//!   busiest worker's load (`streamcore_worker_load`) and loss.
//! - **Link**: the relay's per-packet code (`streamcore::relay::send_packet` and
//!   `receive_packet`: encode, datagram, repair buffer; decode, loss detector) over an
//!   in-process QUIC connection, against sending and reading the same bytes as plain
//!   QUIC datagrams: CPU µs per packet of this (single) thread.
//!
//! `taskset -c 1 sc-relaybench [--subscribers N] [--seconds S] [--rounds R]
//! [--rate PPS] [--size BYTES] [--streamcore PATH]`; the nodes are pinned to CPU 0.
//! The publisher sends 300 packets/s of 1100 bytes unless `--rate`/`--size` say
//! otherwise (50 × 160 is an Opus voice, for many players per node).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use media_core::relay::{LossDetector, RelayedPacket, RepairBuffer};
use media_core::str0m::change::SdpAnswer;
use media_core::str0m::format::Codec;
use media_core::str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use media_core::str0m::net::{Protocol, Receive};
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use signaling::Grants;
use streamcore_benches::server::{Server, ServerSpec};
use streamcore_benches::{Histogram, Summary};

/// What the publisher sends, and the link part's packets.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Packets per second.
    rate: u32,
    /// Bytes per packet.
    size: usize,
}

/// A str0m client over one UDP socket (a WHIP publisher or a WHEP player).
struct Client {
    rtc: Rtc,
    udp: UdpSocket,
    addr: SocketAddr,
    mid: Mid,
    connected: bool,
    time: u64,
    /// Latencies of what it received.
    lat: Histogram,
    /// It received media at least once.
    got: bool,
}

impl Client {
    async fn join(srv: &Server, path: &str, token: &str) -> anyhow::Result<Client> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_nonblocking(true)?;
        let addr = udp.local_addr()?;
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
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
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        Ok(Client {
            rtc,
            udp,
            addr,
            mid,
            connected: false,
            time: 0,
            lat: Histogram::default(),
            got: false,
        })
    }

    fn step(&mut self, epoch: Instant) {
        let mut buf = [0u8; 2048];
        let now = Instant::now();
        while let Ok((n, source)) = self.udp.recv_from(&mut buf) {
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let _ = self.rtc.handle_input(Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                },
            ));
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain(epoch);
    }

    fn drain(&mut self, epoch: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    let _ = self.udp.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::MediaData(d))) if d.data.len() >= 8 => {
                    let sent = u64::from_be_bytes(d.data[..8].try_into().expect("8 bytes"));
                    let now = epoch.elapsed().as_nanos() as u64;
                    self.lat.record(now.saturating_sub(sent));
                    self.got = true;
                }
                Ok(_) => {}
            }
        }
    }

    /// One Opus-labelled frame of `size` bytes, stamped with its send time.
    fn send(&mut self, epoch: Instant, size: usize) {
        let mut data = vec![0x5a; size.max(8)];
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
        self.drain(epoch);
    }
}

/// A publisher and its players, each player with the index of its node.
struct Run {
    publisher: Client,
    players: Vec<(usize, Client)>,
    epoch: Instant,
    next: Instant,
    sent: u64,
    stream: Stream,
}

impl Run {
    async fn drive(&mut self, secs: f64) {
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.stream.rate));
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            if Instant::now() >= self.next {
                self.publisher.send(self.epoch, self.stream.size);
                self.sent += 1;
                self.next += interval;
            }
            self.publisher.step(self.epoch);
            for (_, p) in &mut self.players {
                p.step(self.epoch);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Runs until every client is connected and every player has media.
    async fn settle(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(self.publisher.connected && self.players.iter().all(|(_, p)| p.got)) {
            if Instant::now() > deadline {
                let waiting = self.players.iter().filter(|(_, p)| !p.got).count();
                bail!("{waiting} players never received media");
            }
            self.drive(0.05).await;
        }
        Ok(())
    }

    fn clear(&mut self) {
        for (_, p) in &mut self.players {
            p.lat.clear();
        }
    }

    /// The latencies of the players on `node`, merged.
    fn latency(&self, node: usize) -> Histogram {
        let mut h = Histogram::default();
        for (_, p) in self.players.iter().filter(|(n, _)| *n == node) {
            h.merge(&p.lat);
        }
        h
    }
}

struct Args {
    streamcore: PathBuf,
    subscribers: usize,
    seconds: u64,
    rounds: usize,
    stream: Stream,
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
        stream: Stream {
            rate: 300,
            size: 1100,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--subscribers" => a.subscribers = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--rounds" => a.rounds = v.parse()?,
            "--rate" => a.stream.rate = v.parse()?,
            "--size" => a.stream.size = v.parse()?,
            "--streamcore" => a.streamcore = PathBuf::from(v),
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

/// `n` nodes sharing one data directory; the first is the room's.
async fn start_nodes(
    args: &Args,
    n: usize,
    workers: usize,
    env: &[(String, String)],
) -> anyhow::Result<(Vec<Server>, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("sc-relaybench-{:08x}", rand::random::<u32>()));
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut env = env.to_vec();
        env.push(("STREAMCORE_NODE_ID".into(), format!("n{i}")));
        nodes.push(
            Server::start(&ServerSpec {
                streamcore: args.streamcore.clone(),
                cpu: "0".into(),
                log: None,
                workers,
                env,
                dir: Some(dir.clone()),
            })
            .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = nodes[n - 1].metrics().await?;
        if m.get("streamcore_cluster_nodes").copied().unwrap_or(0.0) >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the nodes never saw each other");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((nodes, dir))
}

/// Publisher on node 0, `per_node[i]` players on node i.
async fn clients(nodes: &[Server], per_node: &[usize], stream: Stream) -> anyhow::Result<Run> {
    let grants = |publish| Grants {
        publish,
        subscribe: !publish,
        ..Grants::default()
    };
    let publisher = Client::join(
        &nodes[0],
        "/whip/r",
        &nodes[0].token("r", "pub", grants(true))?,
    )
    .await?;
    let mut players = Vec::new();
    for (i, n) in per_node.iter().enumerate() {
        for j in 0..*n {
            let t = nodes[i].token("r", &format!("s{i}-{j}"), grants(false))?;
            players.push((i, Client::join(&nodes[i], "/whep/r", &t).await?));
        }
    }
    let now = Instant::now();
    let mut run = Run {
        publisher,
        players,
        epoch: now,
        next: now,
        sent: 0,
        stream,
    };
    run.settle().await?;
    Ok(run)
}

/// One node's share of a measurement.
struct NodeCost {
    us_per_packet: f64,
    forwarded: f64,
    relayed: f64,
    p50: f64,
    p99: f64,
}

/// Runs a measured window; per node its cost and its players' latency.
async fn window(args: &Args, nodes: &[Server], run: &mut Run) -> anyhow::Result<Vec<NodeCost>> {
    run.drive(2.0).await;
    run.clear();
    let mut before = Vec::new();
    for n in nodes {
        before.push((n.cpu(), n.metrics().await?));
    }
    run.drive(args.seconds as f64).await;
    let tck = streamcore_benches::procfs::clk_tck();
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (c0, m0) = &before[i];
        let m1 = n.metrics().await?;
        let d = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
        let fwd = d("streamcore_rtp_packets_forwarded_total");
        let cpu = n.cpu().since(c0, tck).1;
        let lat = run.latency(i);
        out.push(NodeCost {
            us_per_packet: cpu * 1e6 / fwd.max(1.0),
            forwarded: fwd,
            relayed: d("streamcore_relay_packets_sent_total"),
            p50: lat.quantile_ms(0.5),
            p99: lat.quantile_ms(0.99),
        });
    }
    Ok(out)
}

/// (one node, three nodes) costs of one round.
async fn nodes_round(args: &Args) -> anyhow::Result<(NodeCost, Vec<NodeCost>)> {
    let n = args.subscribers;
    let one = {
        let (nodes, dir) = start_nodes(args, 1, 1, &[]).await?;
        let mut run = clients(&nodes, &[3 * n], args.stream).await?;
        let c = window(args, &nodes, &mut run).await?;
        drop(nodes);
        let _ = std::fs::remove_dir_all(dir);
        c.into_iter().next().context("one node")?
    };
    let (nodes, dir) = start_nodes(args, 3, 1, &[]).await?;
    let mut run = clients(&nodes, &[n, n, n], args.stream).await?;
    let three = window(args, &nodes, &mut run).await?;
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
    Ok((one, three))
}

/// The busiest worker's load and the players' loss, with the room's 2N players on one
/// worker (`split` false) or over both.
async fn workers_round(args: &Args, split: bool) -> anyhow::Result<(f64, f64)> {
    let n = args.subscribers;
    let env = vec![(
        "STREAMCORE_MEDIA__ROOM_PLAYERS_PER_WORKER".to_owned(),
        if split { n.to_string() } else { "0".into() },
    )];
    let (nodes, dir) = start_nodes(args, 1, 2, &env).await?;
    let mut run = clients(&nodes, &[2 * n], args.stream).await?;
    run.drive(2.0).await;
    run.clear();
    let sent0 = run.sent;
    let mut busiest: f64 = 0.0;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        run.drive(1.0).await;
        let text = nodes[0]
            .http
            .get(format!("{}/metrics", nodes[0].base))
            .send()
            .await?
            .text()
            .await?;
        for l in text
            .lines()
            .filter(|l| l.starts_with("streamcore_worker_load{"))
        {
            if let Some(v) = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()) {
                busiest = busiest.max(v);
            }
        }
    }
    let expected = ((run.sent - sent0) * 2 * n as u64) as f64;
    let got: u64 = run.players.iter().map(|(_, p)| p.lat.count()).sum();
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
    Ok((busiest, 1.0 - got as f64 / expected.max(1.0)))
}

/// CPU µs per packet of this thread: plain QUIC datagrams, then the relay's code.
async fn link_round(packets: u64, size: usize) -> anyhow::Result<(f64, f64)> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let (a, b) = (
        streamcore::relay::endpoint(any)?,
        streamcore::relay::endpoint(any)?,
    );
    let to = b.local_addr()?;
    // The handshake needs both ends at once.
    let accept = tokio::spawn(async move {
        let incoming = b.accept().await.context("no connection")?;
        anyhow::Ok((incoming.await?, b))
    });
    let conn = a.connect(to, streamcore::relay::SERVER_NAME)?.await?;
    let (peer, _b) = accept.await??;
    let payload: str0m::rtp::Payload = vec![0x5a; size].into();
    let thread_ns = || streamcore_benches::procfs::thread_sched_ns().unwrap_or(0);
    let mut results = [0.0f64; 2];
    for (i, relay) in [false, true].into_iter().enumerate() {
        let repair = Mutex::new(RepairBuffer::new(1024));
        let loss = Mutex::new(LossDetector::default());
        let mut buf = Vec::with_capacity(1500);
        let t0 = thread_ns();
        let mut received = 0u64;
        for seq in 0..packets {
            let p = RelayedPacket {
                track: 1,
                rid: None,
                pt: 111,
                seq,
                timestamp: (seq * 960) as u32,
                ssrc: 7,
                marker: false,
                audio_level: None,
                voice_activity: None,
                payload: payload.clone(),
            };
            if relay {
                streamcore::relay::send_packet(&conn, &p, &mut buf, &repair);
            } else {
                let _ = conn.send_datagram(bytes::Bytes::copy_from_slice(&payload));
            }
            // Read what has arrived; every 64 packets, wait for the pipe to drain.
            loop {
                let next = if seq % 64 == 63 {
                    tokio::time::timeout(Duration::from_millis(5), peer.read_datagram())
                        .await
                        .ok()
                } else {
                    futures_util::FutureExt::now_or_never(peer.read_datagram())
                };
                let Some(Ok(d)) = next else {
                    break;
                };
                received += 1;
                if relay {
                    let _ = streamcore::relay::receive_packet(&d, &loss);
                }
            }
        }
        let ns = thread_ns() - t0;
        results[i] = ns as f64 / 1e3 / received.max(1) as f64;
    }
    Ok((results[0], results[1]))
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    media_core::str0m::crypto::from_feature_flags().install_process_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    println!(
        "sc-relaybench  git {}  {}  {} subscribers per node  {} rounds of {} s  {} pps × {} B",
        streamcore_benches::procfs::git_sha(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
        streamcore_benches::procfs::machine(),
        args.subscribers,
        args.rounds,
        args.seconds,
        args.stream.rate,
        args.stream.size
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let n = args.subscribers;

    let mut one = Vec::new();
    let mut three: [Vec<f64>; 3] = Default::default();
    let mut total3 = Vec::new();
    let mut lat: [Vec<(f64, f64)>; 3] = Default::default();
    let mut relayed = Vec::new();
    let mut workers: [Vec<(f64, f64)>; 2] = Default::default();
    let mut link: [Vec<f64>; 2] = Default::default();
    for _ in 0..args.rounds {
        let (o, t) = rt.block_on(nodes_round(&args)).context("nodes")?;
        one.push(o.us_per_packet);
        let (cpu, fwd): (f64, f64) = t
            .iter()
            .map(|c| (c.us_per_packet * c.forwarded, c.forwarded))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        total3.push(cpu / fwd.max(1.0));
        for (i, c) in t.iter().enumerate() {
            three[i].push(c.us_per_packet);
            lat[i].push((c.p50, c.p99));
        }
        relayed.push(t[0].relayed);
        for (i, split) in [false, true].into_iter().enumerate() {
            workers[i].push(
                rt.block_on(workers_round(&args, split))
                    .context("workers")?,
            );
        }
        let (plain, relay) = rt
            .block_on(link_round(20_000, args.stream.size))
            .context("link")?;
        link[0].push(plain);
        link[1].push(relay);
    }

    let base = Summary::of(&one).median;
    println!(
        "\n### Nodes: one publisher, {n} subscribers on each of 3 nodes vs {} on one",
        3 * n
    );
    println!(
        "\n| layout | node | subscribers | µs per forwarded packet | ÷ one node | latency p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| one node | the room's | {} | {} | 1.00 | | |",
        3 * n,
        Summary::of(&one).show(2)
    );
    for (i, name) in ["the room's", "relayed 1", "relayed 2"].iter().enumerate() {
        let s = Summary::of(&three[i]);
        let p50: Vec<f64> = lat[i].iter().map(|l| l.0).collect();
        let p99: Vec<f64> = lat[i].iter().map(|l| l.1).collect();
        println!(
            "| three nodes | {name} | {n} | {} | {:.2} | {:.2} | {:.2} |",
            s.show(2),
            s.median / base,
            Summary::of(&p50).median,
            Summary::of(&p99).median
        );
    }
    let t = Summary::of(&total3);
    println!(
        "| three nodes | all | {} | {} | {:.2} | | |",
        3 * n,
        t.show(2),
        t.median / base
    );
    let secs = args.seconds as f64;
    let per_pair = Summary::of(&relayed).median / 2.0 / secs;
    println!(
        "\nRelayed by the room's node: {per_pair:.0} packets/s per other node ({} pps published).",
        args.stream.rate
    );
    let hop: Vec<f64> = (0..args.rounds)
        .map(|r| (lat[1][r].0 + lat[2][r].0) / 2.0 - lat[0][r].0)
        .collect();
    let hop99: Vec<f64> = (0..args.rounds)
        .map(|r| (lat[1][r].1 + lat[2][r].1) / 2.0 - lat[0][r].1)
        .collect();
    println!(
        "Added by one relay hop: p50 {} ms, p99 {} ms.",
        Summary::of(&hop).show(2),
        Summary::of(&hop99).show(2)
    );

    println!(
        "\n### Workers: one room, {} players on one node of two workers",
        2 * n
    );
    println!("\n| players | busiest worker's load | loss |");
    println!("|---|---|---|");
    for (i, name) in ["all on the room's worker", "spread over both"]
        .iter()
        .enumerate()
    {
        let load: Vec<f64> = workers[i].iter().map(|w| w.0).collect();
        let loss = workers[i].iter().map(|w| w.1).fold(0.0f64, f64::max);
        println!(
            "| {name} | {} | {:.2} % |",
            Summary::of(&load).show(3),
            100.0 * loss.max(0.0)
        );
    }

    let plain = Summary::of(&link[0]);
    let relay = Summary::of(&link[1]);
    println!(
        "\n### Link: {}-byte packets over one in-process QUIC connection",
        args.stream.size
    );
    println!("\n| path | µs per packet (send + receive) | ÷ plain |");
    println!("|---|---|---|");
    println!("| plain QUIC datagram | {} | 1.00 |", plain.show(2));
    println!(
        "| relay (encode, datagram, repair buffer; decode, loss detector) | {} | {:.2} |",
        relay.show(2),
        relay.median / plain.median
    );
    Ok(())
}
