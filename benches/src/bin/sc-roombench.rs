//! sc-roombench: the room protocol against the real `streamcore serve` process.
//!
//! ```text
//!   core 1: sc-roombench (this process)        core 0: streamcore serve --workers 1
//!   str0m peers (frame mode), one UDP socket each; /rtc WebSockets; WHIP/WHEP POSTs
//! ```
//!
//! Three workloads, each against a baseline measured in the same run:
//!
//! - `join`: join-to-first-media. A WHIP camera streams video (keyframe on request);
//!   20 times in turn a room participant opens `/rtc`, joins, offers one `recvonly`
//!   video m-line, subscribes it to the camera, and waits for the first frame.
//!   Baseline: 20 WHEP players doing the same by `POST /whep` (one round trip less).
//! - `switch`: the cost of a layer switch. A simulcast publisher (l/m/h, keyframe on
//!   request per layer); a participant capped to the lowest layer asks for the top
//!   one and back (`update_subscription`), 8 times each way; time from the request
//!   to the first frame of the new layer. Baseline: a fresh `subscribe` of the same
//!   track.
//! - `load`: 10 rooms × 10 participants, each publishing Opus-sized audio (50 pps) and
//!   subscribed to the other nine over one peer connection: SFU CPU-µs per forwarded
//!   packet, delivery and RSS over a steady window. Baseline: the same packets through
//!   WHIP/WHEP (per room 10 WHIP publishers and 10 WHEP players with nine audio
//!   m-lines each), on a fresh server, alternating, 3 repeats.
//!
//! Run it pinned: `taskset -c 1 target/release/sc-roombench` (the server is pinned to
//! core 0 by `--server-cpu`). Everything is bounded: each wait has a deadline and the
//! whole run has `--max-secs`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signaling::Grants;
use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use streamcore_benches::server::{Server, ServerSpec};
use streamcore_benches::{Summary, procfs, wait_until};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

const HELP: &str = "\
sc-roombench: the room protocol (/rtc) against `streamcore serve`

USAGE: taskset -c 1 sc-roombench [OPTIONS]

  --streamcore PATH   server binary (default: streamcore next to this binary)
  --workloads LIST    join,switch,load (default all)
  --server-cpu C      core for the server (default 0)
  --repeats N         repeats of the load workload per variant (default 3)
  --window SECS       steady window of the load workload (default 8)
  --max-secs S        abort after this long (default 900)
  --server-log FILTER the server's RUST_LOG; its log is kept in target/bench-results
";

struct Args {
    streamcore: PathBuf,
    workloads: Vec<String>,
    server_cpu: String,
    repeats: usize,
    window: Duration,
    max_secs: u64,
    server_log: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        streamcore: std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("streamcore"),
        workloads: vec!["join".into(), "switch".into(), "load".into()],
        server_cpu: "0".into(),
        repeats: 3,
        window: Duration::from_secs(8),
        max_secs: 900,
        server_log: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().context("a value after the option");
        match k.as_str() {
            "--streamcore" => a.streamcore = v()?.into(),
            "--workloads" => a.workloads = v()?.split(',').map(str::to_owned).collect(),
            "--server-cpu" => a.server_cpu = v()?.clone(),
            "--repeats" => a.repeats = v()?.parse()?,
            "--window" => a.window = Duration::from_secs(v()?.parse()?),
            "--max-secs" => a.max_secs = v()?.parse()?,
            "--server-log" => a.server_log = Some(v()?.clone()),
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}\n{HELP}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    str0m::crypto::from_feature_flags().install_process_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs(args.max_secs);
    local.block_on(&rt, async move {
        match tokio::time::timeout(limit, run(args)).await {
            Ok(r) => r,
            Err(_) => bail!("the run exceeded --max-secs; stopped"),
        }
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "sc-roombench  git {}  {}",
        procfs::git_sha(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
        procfs::machine()
    );
    let spec = ServerSpec {
        streamcore: args.streamcore.clone(),
        cpu: args.server_cpu.clone(),
        log: args.server_log.clone(),
        workers: 1,
        env: Vec::new(),
        dir: None,
    };
    for w in &args.workloads {
        match w.as_str() {
            "join" => join_workload(&spec).await?,
            "switch" => switch_workload(&spec).await?,
            "load" => load_workload(&spec, &args).await?,
            other => bail!("unknown workload {other}"),
        }
    }
    Ok(())
}

fn all_grants() -> Grants {
    Grants {
        publish: true,
        subscribe: true,
        publish_data: true,
        record: false,
    }
}

// ---- a peer connection on its own socket --------------------------------------------

/// A str0m peer (frame mode) driven by its own task.
struct Peer {
    rtc: RefCell<Rtc>,
    sock: UdpSocket,
    local: SocketAddr,
    wake: Notify,
    stop: Cell<bool>,
    connected: Cell<bool>,
    /// Frames received, and the first one's time.
    frames: Cell<u64>,
    first_frame: Cell<Option<Instant>>,
    /// The tag byte (data[1]) of the last frame, and when a frame with each tag first
    /// arrived since `reset_tags`.
    tag_seen: RefCell<Vec<(u8, Instant)>>,
    /// Keyframe requests received, by rid (`None` without simulcast).
    keyframe_wanted: RefCell<Vec<Option<Rid>>>,
}

impl Peer {
    async fn new() -> anyhow::Result<Rc<Peer>> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let local = sock.local_addr()?;
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let p = Rc::new(Peer {
            rtc: RefCell::new(rtc),
            sock,
            local,
            wake: Notify::new(),
            stop: Cell::new(false),
            connected: Cell::new(false),
            frames: Cell::new(0),
            first_frame: Cell::new(None),
            tag_seen: RefCell::new(Vec::new()),
            keyframe_wanted: RefCell::new(Vec::new()),
        });
        tokio::task::spawn_local(drive(p.clone()));
        Ok(p)
    }

    /// Edits the session and makes an offer.
    fn offer(
        &self,
        change: impl FnOnce(&mut SdpApi<'_>) -> Vec<Mid>,
    ) -> anyhow::Result<(SdpOffer, SdpPendingOffer, Vec<Mid>)> {
        let mut rtc = self.rtc.borrow_mut();
        let mut api = rtc.sdp_api();
        let mids = change(&mut api);
        let (o, p) = api.apply().context("no offer")?;
        Ok((o, p, mids))
    }

    fn accept(&self, pending: SdpPendingOffer, answer: &str) -> anyhow::Result<()> {
        self.rtc
            .borrow_mut()
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Writes one frame on `mid` (layer `rid`); the driver sends it.
    fn write(&self, mid: Mid, rid: Option<&str>, codec: Codec, time: MediaTime, data: Vec<u8>) {
        let mut rtc = self.rtc.borrow_mut();
        let Some(mut w) = rtc.writer(mid) else {
            return;
        };
        if let Some(r) = rid {
            w = w.rid(Rid::from(r));
        }
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        let _ = w.write(pt, Instant::now(), time, data);
        drop(rtc);
        self.wake.notify_one();
    }

    fn reset_tags(&self) {
        self.tag_seen.borrow_mut().clear();
    }

    fn tag_time(&self, tag: u8) -> Option<Instant> {
        self.tag_seen
            .borrow()
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, at)| *at)
    }

    fn take_keyframe_requests(&self) -> Vec<Option<Rid>> {
        std::mem::take(&mut *self.keyframe_wanted.borrow_mut())
    }
}

async fn drive(p: Rc<Peer>) {
    let mut buf = vec![0u8; 2048];
    loop {
        if p.stop.get() {
            return;
        }
        let next = {
            let mut rtc = p.rtc.borrow_mut();
            loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = p.sock.try_send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::Connected => p.connected.set(true),
                        Event::MediaData(d) => {
                            let now = Instant::now();
                            p.frames.set(p.frames.get() + 1);
                            if p.first_frame.get().is_none() {
                                p.first_frame.set(Some(now));
                            }
                            if let Some(&tag) = d.data.get(1) {
                                let mut seen = p.tag_seen.borrow_mut();
                                if !seen.iter().any(|(t, _)| *t == tag) {
                                    seen.push((tag, now));
                                }
                            }
                        }
                        Event::KeyframeRequest(r) => p.keyframe_wanted.borrow_mut().push(r.rid),
                        _ => {}
                    },
                    Err(_) => return,
                }
            }
        };
        let now = Instant::now();
        if next <= now {
            let _ = p.rtc.borrow_mut().handle_input(Input::Timeout(now));
            continue;
        }
        tokio::select! {
            r = p.sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r
                    && let Ok(contents) = (&buf[..n]).try_into()
                {
                    let _ = p.rtc.borrow_mut().handle_input(Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source: src, destination: p.local, contents },
                    ));
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                let _ = p.rtc.borrow_mut().handle_input(Input::Timeout(Instant::now()));
            }
            _ = p.wake.notified() => {}
        }
    }
}

// ---- a room socket -------------------------------------------------------------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `/rtc` socket: replies are routed by id; updates are counted and dropped.
struct RoomSocket {
    tx: futures_util::stream::SplitSink<Ws, Message>,
    replies: mpsc::UnboundedReceiver<Value>,
    next_id: u64,
}

impl RoomSocket {
    async fn join(
        server: &Server,
        room: &str,
        identity: &str,
    ) -> anyhow::Result<(RoomSocket, Value)> {
        let url = format!("{}/rtc", server.base.replace("http://", "ws://"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (tx, mut rx) = ws.split();
        let (reply_tx, replies) = mpsc::unbounded_channel();
        tokio::task::spawn_local(async move {
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Text(t) = m
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && v.get("id").is_some()
                {
                    let _ = reply_tx.send(v);
                }
            }
        });
        let mut s = RoomSocket {
            tx,
            replies,
            next_id: 1,
        };
        let token = server.token(room, identity, all_grants())?;
        let joined = s.request(json!({"type": "join", "token": token})).await?;
        if joined["type"] != "joined" {
            bail!("join refused: {joined}");
        }
        Ok((s, joined))
    }

    async fn request(&mut self, mut msg: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = json!(id);
        self.tx.send(Message::Text(msg.to_string().into())).await?;
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), self.replies.recv())
                .await
                .context("no reply within 10 s")?
                .context("socket closed")?;
            if r["id"] == json!(id) {
                return Ok(r);
            }
        }
    }

    /// Offers `change` for `peer` and applies the answer; the m-lines it added.
    async fn negotiate(
        &mut self,
        peer: &Peer,
        change: impl FnOnce(&mut SdpApi<'_>) -> Vec<Mid>,
    ) -> anyhow::Result<Vec<Mid>> {
        let (offer, pending, mids) = peer.offer(change)?;
        let r = self
            .request(json!({"type": "offer", "sdp": offer.to_sdp_string()}))
            .await?;
        let sdp = r["sdp"]
            .as_str()
            .with_context(|| format!("no answer: {r}"))?;
        peer.accept(pending, sdp)?;
        Ok(mids)
    }

    async fn expect(&mut self, msg: Value, want: &str) -> anyhow::Result<Value> {
        let r = self.request(msg.clone()).await?;
        if r["type"] != want {
            bail!("{msg} → {r}");
        }
        Ok(r)
    }
}

/// WHIP/WHEP: POSTs an offer, applies the answer; returns the resource URL.
async fn http_session(
    server: &Server,
    path: &str,
    identity: &str,
    peer: &Peer,
    change: impl FnOnce(&mut SdpApi<'_>) -> Vec<Mid>,
) -> anyhow::Result<(String, Vec<Mid>)> {
    let (offer, pending, mids) = peer.offer(change)?;
    let grants = if path.starts_with("whip") {
        Grants {
            publish: true,
            ..Grants::default()
        }
    } else {
        Grants {
            subscribe: true,
            ..Grants::default()
        }
    };
    let room = path.rsplit('/').next().unwrap_or(path);
    let token = server.token(room, identity, grants)?;
    let resp = server
        .http
        .post(format!("{}/{path}", server.base))
        .header("Content-Type", "application/sdp")
        .bearer_auth(token)
        .body(offer.to_sdp_string())
        .send()
        .await?;
    if resp.status() != 201 {
        bail!(
            "{path}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    peer.accept(pending, &resp.text().await?)?;
    Ok((format!("{}{location}", server.base), mids))
}

async fn http_delete(server: &Server, url: &str, room: &str, identity: &str) {
    let grants = Grants {
        subscribe: true,
        ..Grants::default()
    };
    if let Ok(token) = server.token(room, identity, grants) {
        let _ = server.http.delete(url).bearer_auth(token).send().await;
    }
}

fn add(kind: MediaKind, dir: Direction, n: usize) -> impl FnOnce(&mut SdpApi<'_>) -> Vec<Mid> {
    move |api| {
        (0..n)
            .map(|_| api.add_media(kind, dir, Some("s".into()), None, None))
            .collect()
    }
}

// ---- publishers -------------------------------------------------------------------------

/// A video publisher at 30 fps on `layers` (rid, tag byte, frame bytes); each layer
/// sends a keyframe every 3 s and at once when asked for one.
fn spawn_video(peer: Rc<Peer>, mid: Mid, layers: Vec<(Option<&'static str>, u8, usize)>) {
    tokio::task::spawn_local(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let mut wanted: Vec<bool> = vec![true; layers.len()];
        while !peer.stop.get() {
            tick.tick().await;
            if !peer.connected.get() {
                continue;
            }
            for r in peer.take_keyframe_requests() {
                for (i, (rid, _, _)) in layers.iter().enumerate() {
                    if r.is_none() || r.map(|x| x.to_string()) == rid.map(str::to_owned) {
                        wanted[i] = true;
                    }
                }
            }
            let periodic = n.is_multiple_of(90);
            for (i, (rid, tag, size)) in layers.iter().enumerate() {
                let key = periodic || std::mem::take(&mut wanted[i]);
                let mut data = vec![0x42u8; *size];
                data[0] = if key { 0x00 } else { 0x01 };
                data[1] = *tag;
                peer.write(mid, *rid, Codec::Vp8, MediaTime::from_90khz(n * 3000), data);
            }
            n += 1;
        }
    });
}

/// An audio publisher: a 100-byte frame every 20 ms.
fn spawn_audio(peer: Rc<Peer>, mid: Mid, sent: Rc<Cell<u64>>) {
    tokio::task::spawn_local(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !peer.stop.get() {
            tick.tick().await;
            if !peer.connected.get() {
                continue;
            }
            peer.write(
                mid,
                None,
                Codec::Opus,
                MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ),
                vec![0x55; 100],
            );
            sent.set(sent.get() + 1);
            n += 1;
        }
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

// ---- join ---------------------------------------------------------------------------------

async fn join_workload(spec: &ServerSpec) -> anyhow::Result<()> {
    const JOINS: usize = 20;
    let server = Server::start(spec).await?;
    let camera = Peer::new().await?;
    let (_, mids) = http_session(
        &server,
        "whip/join",
        "camera",
        &camera,
        add(MediaKind::Video, Direction::SendOnly, 1),
    )
    .await?;
    spawn_video(camera.clone(), mids[0], vec![(None, b'v', 1000)]);
    if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
        camera.connected.get()
    })
    .await
    {
        bail!("camera did not connect");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut room_ms = Vec::new();
    let mut whep_ms = Vec::new();
    for i in 0..JOINS {
        // Alternate, so drift on the shared machine hits both alike.
        {
            let t0 = Instant::now();
            let peer = Peer::new().await?;
            let (mut s, joined) = RoomSocket::join(&server, "join", &format!("r{i}")).await?;
            let track = joined["participants"][0]["tracks"][0]["id"]
                .as_str()
                .context("the camera's track in the snapshot")?
                .to_owned();
            let mids = s
                .negotiate(&peer, add(MediaKind::Video, Direction::RecvOnly, 1))
                .await?;
            s.expect(
                json!({"type": "subscribe", "track": track, "mid": mids[0].to_string()}),
                "subscribed",
            )
            .await?;
            if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
                peer.first_frame.get().is_some()
            })
            .await
            {
                bail!("room participant {i}: no media within 10 s");
            }
            room_ms.push(ms(peer.first_frame.get().unwrap_or(t0) - t0));
            let _ = s.request(json!({"type": "leave"})).await;
            peer.stop.set(true);
        }
        // Past the keyframe-request interval (350 ms), so neither path waits for the
        // other's request.
        tokio::time::sleep(Duration::from_millis(400)).await;
        {
            let t0 = Instant::now();
            let peer = Peer::new().await?;
            let (url, _) = http_session(
                &server,
                "whep/join",
                &format!("w{i}"),
                &peer,
                add(MediaKind::Video, Direction::RecvOnly, 1),
            )
            .await?;
            if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
                peer.first_frame.get().is_some()
            })
            .await
            {
                bail!("WHEP player {i}: no media within 10 s");
            }
            whep_ms.push(ms(peer.first_frame.get().unwrap_or(t0) - t0));
            http_delete(&server, &url, "join", &format!("w{i}")).await;
            peer.stop.set(true);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    camera.stop.set(true);
    let (r50, r95) = (percentile(&room_ms, 0.5), percentile(&room_ms, 0.95));
    let (w50, w95) = (percentile(&whep_ms, 0.5), percentile(&whep_ms, 0.95));
    println!("\n## join-to-first-media ({JOINS} joins each, alternating)");
    println!("| path | p50 ms | p95 ms | min–max ms |");
    println!("|---|---|---|---|");
    let s = Summary::of(&room_ms);
    println!(
        "| /rtc: join, offer, subscribe, first frame | {r50:.1} | {r95:.1} | {:.1}–{:.1} |",
        s.min, s.max
    );
    let s = Summary::of(&whep_ms);
    println!(
        "| WHEP: POST, first frame (baseline) | {w50:.1} | {w95:.1} | {:.1}–{:.1} |",
        s.min, s.max
    );
    println!("ratio /rtc ÷ WHEP at p50: {:.2}", r50 / w50);
    Ok(())
}

// ---- switch ---------------------------------------------------------------------------------

async fn switch_workload(spec: &ServerSpec) -> anyhow::Result<()> {
    const SWITCHES: usize = 8;
    let server = Server::start(spec).await?;
    let camera = Peer::new().await?;
    let (_, mids) = http_session(&server, "whip/switch", "camera", &camera, |api| {
        let mut s = Simulcast::new();
        for r in ["l", "m", "h"] {
            s.add_send_layer(SimulcastLayer::new(r));
        }
        vec![api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("s".into()),
            None,
            Some(s),
        )]
    })
    .await?;
    spawn_video(
        camera.clone(),
        mids[0],
        vec![
            (Some("l"), b'l', 150),
            (Some("m"), b'm', 500),
            (Some("h"), b'h', 1100),
        ],
    );
    if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
        camera.connected.get()
    })
    .await
    {
        bail!("camera did not connect");
    }
    let peer = Peer::new().await?;
    let (mut s, joined) = RoomSocket::join(&server, "switch", "viewer").await?;
    let track = joined["participants"][0]["tracks"][0]["id"]
        .as_str()
        .context("the camera's track")?
        .to_owned();
    let mids = s
        .negotiate(&peer, add(MediaKind::Video, Direction::RecvOnly, 1))
        .await?;
    let mid = mids[0].to_string();

    let mut fresh = Vec::new();
    let mut down = Vec::new();
    let mut up = Vec::new();
    for i in 0..SWITCHES {
        // Baseline: a fresh subscription capped to the lowest layer.
        if i > 0 {
            s.expect(json!({"type": "unsubscribe", "mid": mid}), "unsubscribed")
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        peer.reset_tags();
        let t0 = Instant::now();
        s.expect(
            json!({"type": "subscribe", "track": track, "mid": mid, "max_layer": 0}),
            "subscribed",
        )
        .await?;
        if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            peer.tag_time(b'l').is_some()
        })
        .await
        {
            bail!("no lowest layer after subscribing");
        }
        fresh.push(ms(peer.tag_time(b'l').unwrap_or(t0) - t0));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Up: the cap is lifted; the selector climbs once the estimate has held.
        peer.reset_tags();
        let t0 = Instant::now();
        s.expect(
            json!({"type": "update_subscription", "mid": mid, "max_layer": null}),
            "subscription_updated",
        )
        .await?;
        if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            peer.tag_time(b'h').is_some()
        })
        .await
        {
            bail!("switch {i}: no top layer within 10 s");
        }
        up.push(ms(peer.tag_time(b'h').unwrap_or(t0) - t0));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Down: at the next keyframe of the lowest layer.
        peer.reset_tags();
        let t0 = Instant::now();
        s.expect(
            json!({"type": "update_subscription", "mid": mid, "max_layer": 0}),
            "subscription_updated",
        )
        .await?;
        if !wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            peer.tag_time(b'l').is_some()
        })
        .await
        {
            bail!("switch {i}: no lowest layer within 10 s");
        }
        down.push(ms(peer.tag_time(b'l').unwrap_or(t0) - t0));
    }
    let dropped = server
        .metrics()
        .await?
        .get("streamcore_keyframe_requests_total")
        .copied()
        .unwrap_or(f64::NAN);
    camera.stop.set(true);
    peer.stop.set(true);
    println!("\n## layer switch ({SWITCHES} each)");
    println!("| what | p50 ms | min–max ms |");
    println!("|---|---|---|");
    for (name, v) in [
        ("fresh subscribe → first frame (baseline)", &fresh),
        ("switch down (cap to lowest) → first frame of l", &down),
        ("switch up (cap lifted) → first frame of h", &up),
    ] {
        let s = Summary::of(v);
        println!("| {name} | {:.1} | {:.1}–{:.1} |", s.median, s.min, s.max);
    }
    println!(
        "ratio down ÷ fresh at p50: {:.2}; up ÷ fresh: {:.2}; keyframe requests to the publisher in all: {dropped}",
        percentile(&down, 0.5) / percentile(&fresh, 0.5),
        percentile(&up, 0.5) / percentile(&fresh, 0.5)
    );
    Ok(())
}

// ---- load -------------------------------------------------------------------------------------

const ROOMS: usize = 10;
const PER_ROOM: usize = 10;

struct LoadResult {
    us_per_pkt: f64,
    delivered: f64,
    rss_kb: u64,
    peers: usize,
}

async fn load_workload(spec: &ServerSpec, args: &Args) -> anyhow::Result<()> {
    let mut rooms = Vec::new();
    let mut http = Vec::new();
    for _ in 0..args.repeats {
        rooms.push(load_run(spec, args, true).await?);
        http.push(load_run(spec, args, false).await?);
    }
    println!(
        "\n## {ROOMS} rooms × {PER_ROOM} participants, audio, everyone hears everyone ({} repeats, {} s windows)",
        args.repeats,
        args.window.as_secs()
    );
    println!("| topology | peers | SFU µs/packet | delivered | RSS MB |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        (
            "/rtc: one peer connection each (1 send + 9 receive m-lines)",
            &rooms,
        ),
        (
            "WHIP + WHEP (baseline): 10 publishers + 10 players with 9 m-lines per room",
            &http,
        ),
    ] {
        let us = Summary::of(&v.iter().map(|r| r.us_per_pkt).collect::<Vec<_>>());
        let d = Summary::of(&v.iter().map(|r| r.delivered * 100.0).collect::<Vec<_>>());
        let rss = Summary::of(
            &v.iter()
                .map(|r| r.rss_kb as f64 / 1024.0)
                .collect::<Vec<_>>(),
        );
        println!(
            "| {name} | {} | {} | {} % | {} |",
            v[0].peers,
            us.show(2),
            d.show(1),
            rss.show(1)
        );
    }
    let r = Summary::of(&rooms.iter().map(|r| r.us_per_pkt).collect::<Vec<_>>()).median;
    let h = Summary::of(&http.iter().map(|r| r.us_per_pkt).collect::<Vec<_>>()).median;
    println!(
        "ratio /rtc ÷ WHIP+WHEP, µs per packet (medians): {:.2}",
        r / h
    );
    Ok(())
}

async fn load_run(spec: &ServerSpec, args: &Args, rtc: bool) -> anyhow::Result<LoadResult> {
    let server = Server::start(spec).await?;
    let sent = Rc::new(Cell::new(0u64));
    let mut receivers: Vec<Rc<Peer>> = Vec::new();
    let mut all: Vec<Rc<Peer>> = Vec::new();
    let mut sockets = Vec::new();
    // Joins ramp at ≤ 10 per second.
    let ramp = Duration::from_millis(100);
    for r in 0..ROOMS {
        let room = format!("load{r}");
        if rtc {
            let mut members = Vec::new();
            for i in 0..PER_ROOM {
                let peer = Peer::new().await?;
                let (mut s, joined) = RoomSocket::join(&server, &room, &format!("u{i}")).await?;
                let sid = joined["participant"]["sid"]
                    .as_str()
                    .context("sid")?
                    .to_owned();
                let mids = s
                    .negotiate(&peer, |api| {
                        let mut m = vec![api.add_media(
                            MediaKind::Audio,
                            Direction::SendOnly,
                            Some("s".into()),
                            None,
                            None,
                        )];
                        m.extend((0..PER_ROOM - 1).map(|_| {
                            api.add_media(
                                MediaKind::Audio,
                                Direction::RecvOnly,
                                Some("s".into()),
                                None,
                                None,
                            )
                        }));
                        m
                    })
                    .await?;
                spawn_audio(peer.clone(), mids[0], sent.clone());
                members.push((peer, s, sid, mids));
                tokio::time::sleep(ramp).await;
            }
            let tracks: Vec<String> = members
                .iter()
                .map(|(_, _, sid, mids)| format!("{sid}/{}", mids[0]))
                .collect();
            for (i, (peer, s, _, mids)) in members.iter_mut().enumerate() {
                let others = tracks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, t)| t);
                for (t, m) in others.zip(&mids[1..]) {
                    s.expect(
                        json!({"type": "subscribe", "track": t, "mid": m.to_string()}),
                        "subscribed",
                    )
                    .await?;
                }
                receivers.push(peer.clone());
                all.push(peer.clone());
            }
            sockets.extend(members.into_iter().map(|(_, s, _, _)| s));
        } else {
            for i in 0..PER_ROOM {
                let peer = Peer::new().await?;
                let (_, mids) = http_session(
                    &server,
                    &format!("whip/{room}"),
                    &format!("pub{i}"),
                    &peer,
                    add(MediaKind::Audio, Direction::SendOnly, 1),
                )
                .await?;
                spawn_audio(peer.clone(), mids[0], sent.clone());
                all.push(peer);
                tokio::time::sleep(ramp).await;
            }
            for i in 0..PER_ROOM {
                let peer = Peer::new().await?;
                http_session(
                    &server,
                    &format!("whep/{room}"),
                    &format!("play{i}"),
                    &peer,
                    add(MediaKind::Audio, Direction::RecvOnly, PER_ROOM - 1),
                )
                .await?;
                receivers.push(peer.clone());
                all.push(peer);
                tokio::time::sleep(ramp).await;
            }
        }
    }
    if !wait_until(Duration::from_secs(20), Duration::from_millis(2), || {
        all.iter().all(|p| p.connected.get())
    })
    .await
    {
        bail!("not every peer connected");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let fwd = |m: &std::collections::HashMap<String, f64>| {
        m.get("streamcore_rtp_packets_forwarded_total")
            .copied()
            .unwrap_or(0.0)
    };
    let m0 = server.metrics().await?;
    let c0 = server.cpu();
    let r0: u64 = receivers.iter().map(|p| p.frames.get()).sum();
    let s0 = sent.get();
    tokio::time::sleep(args.window).await;
    let c1 = server.cpu();
    let m1 = server.metrics().await?;
    let r1: u64 = receivers.iter().map(|p| p.frames.get()).sum();
    let s1 = sent.get();
    let rss_kb = server.rss_kb();
    let forwarded = fwd(&m1) - fwd(&m0);
    let (_, sched_s) = c1.since(&c0, procfs::clk_tck());
    // Each frame sent reaches nine subscribers in both topologies.
    let expected = (s1 - s0) as f64 * (PER_ROOM - 1) as f64;
    let res = LoadResult {
        us_per_pkt: sched_s * 1e6 / forwarded.max(1.0),
        delivered: (r1 - r0) as f64 / expected.max(1.0),
        rss_kb,
        peers: all.len(),
    };
    println!(
        "  {}: {} peers, {:.0} packets/s forwarded, {:.2} µs/packet, delivered {:.1} %",
        if rtc { "/rtc" } else { "WHIP+WHEP" },
        res.peers,
        forwarded / args.window.as_secs_f64(),
        res.us_per_pkt,
        res.delivered * 100.0
    );
    for p in &all {
        p.stop.set(true);
        p.wake.notify_one();
    }
    drop(sockets);
    Ok(res)
}
