//! sc-loadgen: loopback end-to-end benchmarks B1 (audio fan-out) and B2 (video
//! fan-out) against the real `streamcore serve` process.
//!
//! ```text
//!   core 1: sc-loadgen (this process)           core 0: streamcore serve --workers 1
//!   ─────────────────────────────────           ─────────────────────────────────────
//!   publisher Rtc ── WHIP POST ───────────────► HTTP ─► Sfu
//!   N subscriber Rtcs ── WHEP POST ───────────► (ramped, ≤ join-rate/s)
//!   publisher ═══ SRTP over UDP 127.0.0.1 ════► media worker ═══ N × SRTP ═══► subscribers
//!   GET /metrics, /proc/PID/{stat,status,task/*/schedstat} around a steady window
//!
//!   B5, beside it: sc-loadgen probe (a process of its own, above the load generator's
//!   priority): one audio publisher and one subscriber in a room of their own, whose
//!   packets carry their send time: the latency the server adds, not the load
//!   generator's queueing
//!
//!   then, with the publisher paused:
//!   core 0: sc-loadgen floor  ═══ N × (SRTP protect + send_to) ═══► the same N sockets
//! ```
//!
//! For each workload and repeat it starts a fresh server (pinned with `taskset`),
//! joins one publisher, then climbs a ladder of subscriber counts; at each step it
//! warms up, measures a steady window, then measures the floor at the same packet
//! rate and size. The server is killed at the end of each ladder, and everything
//! is bounded: every wait has a deadline and the whole run has `--max-secs`.
//!
//! `sc-loadgen --help` for the options; docs/benchmarks.md for the method.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use signaling::Grants;
use std::os::fd::AsRawFd;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use streamcore::udp_batch;
use streamcore_benches::janus::{self, JanusServer, JanusSpec};
use streamcore_benches::plot::{Series, line_plot};
use streamcore_benches::procfs;
use streamcore_benches::server::{Process, Server, ServerSpec};
use streamcore_benches::shape::{self, Kind, Source};
use streamcore_benches::srtp::{
    GCM_TAG_LEN, GcmSender, RTP_HEADER_LEN, SessionKeys, SrtpSender, TAG_LEN, write_rtp_header,
};
use streamcore_benches::{Histogram, Summary, wait_until};
use tokio::net::UdpSocket;

const PINNED_ENV: &str = "SC_LOADGEN_PINNED";
const ROOM: &str = "bench";

const HELP: &str = "\
sc-loadgen: loopback fan-out benchmarks (B1 audio, B2 video) against `streamcore serve`

USAGE: sc-loadgen [OPTIONS]

  --streamcore PATH     server binary (default: target/release/streamcore next to this binary)
  --workloads LIST      audio,video (default both)
  --audio-n LIST        subscriber ladder for audio (default 1,100,1000)
  --video-n LIST        subscriber ladder for video (default 1,50,300)
  --repeats N           fresh server per workload and repeat (default 3)
  --window SECS         steady measurement window (default 8)
  --warmup SECS         after the last join of a step (default 2)
  --floor-secs SECS     floor measurement per step (default 4)
  --join-rate R         joins per second (default 20)
  --server-cpu C        core for the server and the floor (default 0)
  --load-cpu C          core for this load generator (default 1)
  --json PATH           write every measurement as JSON
  --max-secs S          abort the whole run after this long (default 1200)
  --nice N              niceness of this process, the server and the floor (default
                        -15, so other work on the shared machine does not preempt
                        them; needs root, else ignored with a warning; 0 to disable)
  --rt                  run this process, the server and the floor SCHED_RR
                        (chrt -r 10) instead of niced: on a machine shared with
                        CPU-bound work, nice alone still leaves the server waiting
                        for its core (needs root). Round-robin, not FIFO, so the
                        server's HTTP threads still get the core when the media
                        thread is saturated
  --server-log FILTER   the server's RUST_LOG (default warn); its log is copied to
                        target/bench-results/server-<pid>.log
  --no-probe            no B5 latency probe beside the load
  --fractions LIST      after the ladder's last step, also load the worker to these
                        shares of its capacity (e.g. 0.75,0.95,1.1): capacity = 1 s
                        of CPU ÷ that step's CPU per forwarded packet (the largest N
                        measured, where fixed costs weigh least), and N follows from
                        the packets each subscriber receives
  --quick               audio 1,100 / video 1,50, 1 repeat, 5 s windows
  --env K=V             a server setting (STREAMCORE_…), repeatable
  --servers LIST        streamcore,janus: the same ladders against Janus 1.1.2's
                        VideoRoom (Debian's janus package), in the same run, on
                        the same core, with the same peers (default streamcore)
  --janus PATH          the Janus binary (default: janus on PATH)
  --svg PATH            plot CPU per forwarded packet against N (each server and
                        the floors) as SVG
";

#[derive(Debug, Clone)]
struct Args {
    streamcore: PathBuf,
    workloads: Vec<Kind>,
    audio_n: Vec<usize>,
    video_n: Vec<usize>,
    repeats: usize,
    window: Duration,
    warmup: Duration,
    floor_secs: Duration,
    join_rate: f64,
    server_cpu: String,
    load_cpu: String,
    json: Option<PathBuf>,
    max_secs: u64,
    server_log: Option<String>,
    nice: i32,
    rt: bool,
    probe: bool,
    env: Vec<(String, String)>,
    fractions: Vec<f64>,
    servers: Vec<ServerKind>,
    janus: PathBuf,
    svg: Option<PathBuf>,
}

/// Which server a ladder measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Streamcore,
    Janus,
}

fn parse_list(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|v| v.trim().parse::<usize>().context("a list of numbers"))
        .collect()
}

/// The value named by each comma-separated word of `list`.
fn parse_names<T: Copy>(list: &str, what: &str, names: &[(&str, T)]) -> anyhow::Result<Vec<T>> {
    list.split(',')
        .map(|w| {
            names
                .iter()
                .find(|(n, _)| *n == w.trim())
                .map(|(_, v)| *v)
                .with_context(|| format!("unknown {what} {w}"))
        })
        .collect()
}

fn parse_args(argv: &[String]) -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let default_server = exe
        .parent()
        .map(|d| d.join("streamcore"))
        .unwrap_or_else(|| PathBuf::from("target/release/streamcore"));
    let mut a = Args {
        streamcore: default_server,
        workloads: vec![Kind::Audio, Kind::Video],
        audio_n: vec![1, 100, 1000],
        video_n: vec![1, 50, 300],
        repeats: 3,
        window: Duration::from_secs(8),
        warmup: Duration::from_secs(2),
        floor_secs: Duration::from_secs(4),
        join_rate: 20.0,
        server_cpu: "0".into(),
        load_cpu: "1".into(),
        json: None,
        max_secs: 1200,
        server_log: None,
        nice: -15,
        rt: false,
        probe: true,
        env: Vec::new(),
        fractions: Vec::new(),
        servers: vec![ServerKind::Streamcore],
        janus: PathBuf::from("janus"),
        svg: None,
    };
    let mut it = argv.iter();
    let secs = |v: Option<&String>| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(
            v.context("a value")?.parse().context("seconds")?,
        ))
    };
    while let Some(k) = it.next() {
        match k.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--streamcore" => a.streamcore = PathBuf::from(it.next().context("a path")?),
            "--workloads" => {
                a.workloads = parse_names(
                    it.next().context("a list")?,
                    "workload",
                    &[("audio", Kind::Audio), ("video", Kind::Video)],
                )?
            }
            "--audio-n" => a.audio_n = parse_list(it.next().context("a list")?)?,
            "--video-n" => a.video_n = parse_list(it.next().context("a list")?)?,
            "--repeats" => a.repeats = it.next().context("a number")?.parse()?,
            "--window" => a.window = secs(it.next())?,
            "--warmup" => a.warmup = secs(it.next())?,
            "--floor-secs" => a.floor_secs = secs(it.next())?,
            "--join-rate" => a.join_rate = it.next().context("a rate")?.parse()?,
            "--server-cpu" => a.server_cpu = it.next().context("a core")?.clone(),
            "--load-cpu" => a.load_cpu = it.next().context("a core")?.clone(),
            "--json" => a.json = Some(PathBuf::from(it.next().context("a path")?)),
            "--max-secs" => a.max_secs = it.next().context("seconds")?.parse()?,
            "--server-log" => a.server_log = Some(it.next().context("a filter")?.clone()),
            "--nice" => a.nice = it.next().context("a niceness")?.parse()?,
            "--rt" => a.rt = true,
            "--no-probe" => a.probe = false,
            "--servers" => {
                a.servers = parse_names(
                    it.next().context("a list")?,
                    "server",
                    &[
                        ("streamcore", ServerKind::Streamcore),
                        ("janus", ServerKind::Janus),
                    ],
                )?
            }
            "--janus" => a.janus = PathBuf::from(it.next().context("a path")?),
            "--svg" => a.svg = Some(PathBuf::from(it.next().context("a path")?)),
            "--fractions" => {
                a.fractions = it
                    .next()
                    .context("a list")?
                    .split(',')
                    .map(|v| v.trim().parse::<f64>().context("a list of shares"))
                    .collect::<anyhow::Result<_>>()?;
                a.fractions.sort_by(f64::total_cmp);
            }
            "--env" => {
                let kv = it.next().context("K=V")?;
                let (k, v) = kv.split_once('=').context("--env takes K=V")?;
                a.env.push((k.to_owned(), v.to_owned()));
            }
            "--quick" => {
                a.audio_n = vec![1, 100];
                a.video_n = vec![1, 50];
                a.repeats = 1;
                a.window = Duration::from_secs(5);
                a.floor_secs = Duration::from_secs(3);
            }
            o => bail!("unknown option {o}\n\n{HELP}"),
        }
    }
    if !a.streamcore.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin streamcore` or pass --streamcore",
            a.streamcore.display()
        );
    }
    a.join_rate = a.join_rate.clamp(0.5, 200.0);
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("floor") {
        return floor_main(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("probe") {
        return probe_main(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("plot") {
        return plot_main(&argv[1..]);
    }
    let args = parse_args(&argv)?;
    if std::env::var_os(PINNED_ENV).is_none() {
        // Run ourselves again on the load core (and at a higher priority, which the
        // server and the floor inherit); the child does the work.
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&args.load_cpu);
        if args.rt {
            cmd.args(["chrt", "-r", "10"]);
        } else {
            cmd.args(["nice", "-n", &args.nice.to_string()]);
        }
        let status = cmd
            .arg(std::env::current_exe()?)
            .args(&argv)
            .env(PINNED_ENV, "1")
            .status()
            .context("running taskset (util-linux)")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs(args.max_secs);
    local.block_on(&rt, async move {
        // Dropping the run (time limit, Ctrl-C, SIGTERM) drops its `Server`, which
        // kills the server process.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::time::timeout(limit, run(args)) => match r {
                Ok(r) => r,
                Err(_) => bail!("the run exceeded --max-secs; stopped"),
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

// ---- peers -------------------------------------------------------------------------

/// Shared by every task of one ladder (single-threaded runtime).
struct Shared {
    epoch: Instant,
    kind: Kind,
    stop: Cell<bool>,
    paused: Cell<bool>,
    measuring: Cell<bool>,
    latency: RefCell<Histogram>,
    sent: Cell<u64>,
    keyframes: Cell<u64>,
}

impl Shared {
    fn new(kind: Kind) -> Rc<Shared> {
        Rc::new(Shared {
            epoch: Instant::now(),
            kind,
            stop: Cell::new(false),
            paused: Cell::new(false),
            measuring: Cell::new(false),
            latency: RefCell::new(Histogram::default()),
            sent: Cell::new(0),
            keyframes: Cell::new(0),
        })
    }
}

/// A subscriber's receive record: a 1024-packet window of seen sequence numbers.
#[derive(Default)]
struct RxStats {
    connected: Cell<bool>,
    received: Cell<u64>,
    max_seq: Cell<Option<u64>>,
    seen: RefCell<[u64; 16]>,
    duplicates: Cell<u64>,
    floor_packets: Cell<u64>,
    /// Datagrams (and their bytes) from the server, RTCP included.
    datagrams: Cell<u64>,
    bytes: Cell<u64>,
}

impl RxStats {
    fn bit(seq: u64) -> (usize, u64) {
        let i = (seq % 1024) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    fn on_seq(&self, seq: u64) {
        let mut seen = self.seen.borrow_mut();
        match self.max_seq.get() {
            Some(m) if seq > m => {
                for s in (m + 1..seq).take(1024) {
                    let (w, b) = Self::bit(s);
                    seen[w] &= !b;
                }
                let (w, b) = Self::bit(seq);
                seen[w] |= b;
                self.max_seq.set(Some(seq));
                self.received.set(self.received.get() + 1);
            }
            Some(m) if m - seq < 1024 => {
                let (w, b) = Self::bit(seq);
                if seen[w] & b == 0 {
                    seen[w] |= b;
                    self.received.set(self.received.get() + 1);
                } else {
                    self.duplicates.set(self.duplicates.get() + 1);
                }
            }
            Some(_) => {}
            None => {
                let (w, b) = Self::bit(seq);
                seen[w] |= b;
                self.max_seq.set(Some(seq));
                self.received.set(self.received.get() + 1);
            }
        }
    }
}

struct Joined {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    sfu: SocketAddr,
    mid: Mid,
}

/// The server under test: StreamCore, or Janus beside it (`--servers`).
enum Sut {
    Streamcore(Server),
    Janus(JanusServer),
}

/// What the server did in a window: from StreamCore's metrics, or for Janus (which
/// has none to compare) from what the subscribers received and the publisher sent.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    forwarded: f64,
    rtp_in: f64,
    datagrams_in: f64,
    datagrams_out: f64,
    bytes_out: f64,
    send_errors: f64,
    forward_errors: f64,
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            forwarded: self.forwarded - earlier.forwarded,
            rtp_in: self.rtp_in - earlier.rtp_in,
            datagrams_in: self.datagrams_in - earlier.datagrams_in,
            datagrams_out: self.datagrams_out - earlier.datagrams_out,
            bytes_out: self.bytes_out - earlier.bytes_out,
            send_errors: self.send_errors - earlier.send_errors,
            forward_errors: self.forward_errors - earlier.forward_errors,
        }
    }
}

impl Sut {
    fn name(&self) -> &'static str {
        match self {
            Sut::Streamcore(_) => "streamcore",
            Sut::Janus(_) => "janus",
        }
    }

    async fn start(args: &Args, which: ServerKind) -> anyhow::Result<Sut> {
        Ok(match which {
            ServerKind::Streamcore => Sut::Streamcore(
                Server::start(&ServerSpec {
                    streamcore: args.streamcore.clone(),
                    cpu: args.server_cpu.clone(),
                    log: args.server_log.clone(),
                    workers: 1,
                    env: args.env.clone(),
                    dir: None,
                })
                .await?,
            ),
            ServerKind::Janus => Sut::Janus(
                JanusServer::start(&JanusSpec {
                    janus: args.janus.clone(),
                    cpu: args.server_cpu.clone(),
                })
                .await?,
            ),
        })
    }

    fn log_tail(&self) -> String {
        match self {
            Sut::Streamcore(s) => s.log_tail(),
            Sut::Janus(j) => j.log_tail(),
        }
    }

    fn process(&mut self) -> &mut Process {
        match self {
            Sut::Streamcore(s) => &mut s.process,
            Sut::Janus(j) => &mut j.process,
        }
    }

    async fn counters(
        &self,
        subs: &[(Rc<RxStats>, SocketAddr)],
        shared: &Shared,
    ) -> anyhow::Result<Counters> {
        match self {
            Sut::Streamcore(s) => {
                let m = s.metrics().await?;
                let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
                Ok(Counters {
                    forwarded: g("streamcore_rtp_packets_forwarded_total"),
                    rtp_in: g("streamcore_rtp_packets_in_total"),
                    datagrams_in: g("streamcore_udp_datagrams_in_total"),
                    datagrams_out: g("streamcore_udp_datagrams_out_total"),
                    bytes_out: g("streamcore_udp_bytes_out_total"),
                    send_errors: g("streamcore_udp_send_errors_total"),
                    forward_errors: g("streamcore_forward_errors_total"),
                })
            }
            // Janus's forwarded packets are the ones delivered: a packet it sent and
            // the kernel dropped counts as not forwarded, which favours Janus.
            Sut::Janus(_) => Ok(Counters {
                forwarded: subs.iter().map(|(r, _)| r.received.get() as f64).sum(),
                rtp_in: shared.sent.get() as f64,
                datagrams_in: f64::NAN,
                datagrams_out: subs.iter().map(|(r, _)| r.datagrams.get() as f64).sum(),
                bytes_out: subs.iter().map(|(r, _)| r.bytes.get() as f64).sum(),
                send_errors: 0.0,
                forward_errors: 0.0,
            }),
        }
    }

    /// Joins one peer: the publisher (`publish`) or a subscriber of its track.
    async fn join(&self, kind: Kind, publish: bool, identity: &str) -> anyhow::Result<Joined> {
        match self {
            Sut::Streamcore(server) => {
                let grants = Grants {
                    publish,
                    subscribe: !publish,
                    ..Grants::default()
                };
                let token = server.token(ROOM, identity, grants)?;
                join_room(&server.http, &server.base, ROOM, &token, kind, publish).await
            }
            Sut::Janus(janus) if publish => {
                join_by_offer(
                    janus::peer_ip(),
                    kind,
                    Direction::SendOnly,
                    |offer| async move { janus.publish(&offer).await },
                )
                .await
            }
            Sut::Janus(janus) => {
                let (mut rtc, sock, local) = new_peer(janus::peer_ip()).await?;
                let offer = janus
                    .subscribe(|offer| {
                        let answer = rtc
                            .sdp_api()
                            .accept_offer(SdpOffer::from_sdp_string(offer)?)?;
                        Ok(answer.to_sdp_string())
                    })
                    .await?;
                let sfu = answer_candidate(&offer).context("janus's offer has no candidate")?;
                let mid = offer
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("a=mid:"))
                    .map(Mid::from)
                    .context("janus's offer has no mid")?;
                Ok(Joined {
                    rtc,
                    sock,
                    local,
                    sfu,
                    mid,
                })
            }
        }
    }
}

/// A peer in RTP mode with one host candidate on `ip`.
async fn new_peer(ip: std::net::IpAddr) -> anyhow::Result<(Rtc, UdpSocket, SocketAddr)> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let local = sock.local_addr()?;
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    Ok((rtc, sock, local))
}

/// Offers one m-line of `kind` in `dir` from a new peer on `ip`; `exchange` takes
/// the offer to the server and brings back its answer, which is applied.
async fn join_by_offer<F, Fut>(
    ip: std::net::IpAddr,
    kind: Kind,
    dir: Direction,
    exchange: F,
) -> anyhow::Result<Joined>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let (mut rtc, sock, local) = new_peer(ip).await?;
    let mut api = rtc.sdp_api();
    let mid = api.add_media(kind.media_kind(), dir, Some("s".into()), None, None);
    let (offer, pending) = api.apply().context("no offer")?;
    let answer = exchange(offer.to_sdp_string()).await?;
    let sfu = answer_candidate(&answer).context("the answer has no host candidate")?;
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
    Ok(Joined {
        rtc,
        sock,
        local,
        sfu,
        mid,
    })
}

/// Joins the bench room over WHIP (`publish`) or WHEP.
async fn join_room(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    token: &str,
    kind: Kind,
    publish: bool,
) -> anyhow::Result<Joined> {
    let (dir, path) = if publish {
        (Direction::SendOnly, "whip")
    } else {
        (Direction::RecvOnly, "whep")
    };
    join_by_offer([127, 0, 0, 1].into(), kind, dir, |offer| async move {
        let resp = http
            .post(format!("{base}/{path}/{room}"))
            .header("Content-Type", "application/sdp")
            .header("Authorization", format!("Bearer {token}"))
            .body(offer)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        if status.as_u16() != 201 {
            bail!("{path} join refused: {status} {body}");
        }
        Ok(body)
    })
    .await
}

/// The first `a=candidate` address of an SDP.
fn answer_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let c = l.trim().strip_prefix("a=candidate:")?;
        let f: Vec<&str> = c.split_whitespace().collect();
        format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
    })
}

/// Polls `rtc` until its next timeout, sending datagrams; returns the deadline.
fn drain(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    mut on_event: impl FnMut(Event),
) -> anyhow::Result<Instant> {
    loop {
        match rtc.poll_output()? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                let _ = sock.try_send_to(&t.contents, t.destination);
            }
            Output::Event(e) => on_event(e),
        }
    }
}

fn receive(rtc: &mut Rtc, local: SocketAddr, src: SocketAddr, data: &[u8]) {
    let Ok(contents) = data.try_into() else {
        return;
    };
    let _ = rtc.handle_input(Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source: src,
            destination: local,
            contents,
        },
    ));
}

/// How long a task sleeps at most, so it notices `stop`.
const MAX_NAP: Duration = Duration::from_millis(200);

async fn subscriber_task(mut j: Joined, rx: Rc<RxStats>, shared: Rc<Shared>) {
    let mut buf = vec![0u8; 2048];
    let kind = shared.kind;
    loop {
        let next = match drain(&mut j.rtc, &j.sock, |e| match e {
            Event::Connected => rx.connected.set(true),
            Event::RtpPacket(p) => {
                rx.on_seq(*p.seq_no);
                if shared.measuring.get()
                    && let Some(sent) = shape::send_ns(kind, &p.payload)
                {
                    let now = shared.epoch.elapsed().as_nanos() as u64;
                    shared.latency.borrow_mut().record(now.saturating_sub(sent));
                }
            }
            _ => {}
        }) {
            Ok(t) => t,
            Err(_) => return,
        };
        if shared.stop.get() {
            return;
        }
        let now = Instant::now();
        if next <= now {
            let _ = j.rtc.handle_input(Input::Timeout(now));
            continue;
        }
        let nap = (next - now).min(MAX_NAP);
        tokio::select! {
            r = j.sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    if src == j.sfu {
                        rx.datagrams.set(rx.datagrams.get() + 1);
                        rx.bytes.set(rx.bytes.get() + n as u64);
                        receive(&mut j.rtc, j.local, src, &buf[..n]);
                    } else {
                        // The floor's packets: counted, not decrypted.
                        rx.floor_packets.set(rx.floor_packets.get() + 1);
                    }
                }
            }
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

async fn publisher_task(mut j: Joined, pt: Pt, connected: Rc<Cell<bool>>, shared: Rc<Shared>) {
    let mut buf = vec![0u8; 2048];
    let mut source = Source::new(shared.kind);
    let mut packets = Vec::new();
    let interval = shared.kind.interval();
    let mut next_tick = Instant::now();
    let mut seq: u64 = u64::from(rand::random::<u16>() >> 2);
    let nackable = shared.kind == Kind::Video;
    loop {
        let mut key = false;
        let next = match drain(&mut j.rtc, &j.sock, |e| match e {
            Event::Connected => connected.set(true),
            Event::KeyframeRequest(_) => key = true,
            _ => {}
        }) {
            Ok(t) => t,
            Err(_) => return,
        };
        if key {
            source.request_keyframe();
        }
        if shared.stop.get() {
            return;
        }
        let now = Instant::now();
        if next <= now {
            let _ = j.rtc.handle_input(Input::Timeout(now));
            continue;
        }
        if now >= next_tick {
            next_tick += interval;
            if now > next_tick + Duration::from_secs(1) {
                next_tick = now + interval; // fell far behind: do not burst
            }
            if connected.get() && !shared.paused.get() {
                let send_ns = shared.epoch.elapsed().as_nanos() as u64;
                source.tick(send_ns, &mut packets);
                for p in packets.drain(..) {
                    let mut api = j.rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(j.mid, None) else {
                        break;
                    };
                    tx.write_rtp(
                        RtpWrite::new(pt, seq.into(), p.rtp_time, Instant::now(), p.payload)
                            .marker(p.marker)
                            .nackable(nackable),
                    );
                    seq += 1;
                    shared.sent.set(shared.sent.get() + 1);
                    // The packet leaves on the next timeout (str0m's send queue).
                    let _ = j.rtc.handle_input(Input::Timeout(Instant::now()));
                    if drain(&mut j.rtc, &j.sock, |_| {}).is_err() {
                        return;
                    }
                }
                shared.keyframes.set(source.keyframes);
            }
            continue;
        }
        let nap = (next.min(next_tick) - now).min(MAX_NAP);
        tokio::select! {
            r = j.sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    receive(&mut j.rtc, j.local, src, &buf[..n]);
                }
            }
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

// ---- one ladder --------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Step {
    /// `streamcore` or `janus`.
    server: &'static str,
    kind: &'static str,
    repeat: usize,
    /// The ladder step; `reached` subscribers joined (fewer when joins failed).
    n: usize,
    reached: usize,
    connected: usize,
    receiving: usize,
    window_s: f64,
    forwarded: f64,
    rtp_in: f64,
    fwd_per_s: f64,
    out_bytes_avg: f64,
    cpu_stat_s: f64,
    cpu_sched_s: f64,
    us_per_pkt_stat: f64,
    us_per_pkt_sched: f64,
    server_util: f64,
    loadgen_util: f64,
    loss: f64,
    duplicates: u64,
    lat_p50_ms: f64,
    lat_p99_ms: f64,
    lat_p999_ms: f64,
    /// B5: the probe pair's latency, beside the load (`NaN` without a probe).
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    probe_packets: u64,
    /// The offered load as a share of the worker's capacity (`--fractions`).
    capacity_share: f64,
    rss_base_kb: u64,
    rss_kb: u64,
    kb_per_sub: f64,
    kb_per_sub_step: f64,
    floor_us_sched: f64,
    floor_us_stat: f64,
    floor_packets: u64,
    floor_delivered: u64,
    /// SFU / floor (AEAD_AES_256_GCM floor, the profile the peers negotiate).
    ratio: f64,
    /// The floor and ratio with AES_CM_128_HMAC_SHA1_80.
    floor_cm_us_sched: f64,
    ratio_cm: f64,
    /// The floor and ratio with AEAD_AES_256_GCM sent by `sendmmsg`, as the server sends.
    floor_mm_us_sched: f64,
    ratio_mm: f64,
    send_errors: f64,
    forward_errors: f64,
    /// Datagrams the SFU received / sent per forwarded RTP packet.
    in_per_fwd: f64,
    out_per_fwd: f64,
    /// Machine-wide UDP receive-buffer overflows and backlog drops in the window.
    udp_rcvbuf_errors: u64,
    backlog_drops: u64,
    /// WHEP POST round trips of this step's joins, ms.
    join_p50_ms: f64,
    join_max_ms: f64,
    ramp_s: f64,
}

impl Step {
    fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "server": self.server, "workload": self.kind, "repeat": self.repeat, "n": self.n, "reached": self.reached,
            "connected": self.connected, "receiving": self.receiving,
            "window_s": self.window_s, "forwarded": self.forwarded, "rtp_in": self.rtp_in,
            "forwarded_per_s": self.fwd_per_s, "sfu_out_bytes_avg": self.out_bytes_avg,
            "cpu_stat_s": self.cpu_stat_s, "cpu_sched_s": self.cpu_sched_s,
            "us_per_pkt_stat": self.us_per_pkt_stat, "us_per_pkt_sched": self.us_per_pkt_sched,
            "server_cpu_utilisation": self.server_util, "loadgen_cpu_utilisation": self.loadgen_util,
            "loss": self.loss, "duplicates": self.duplicates,
            "latency_ms": {"p50": self.lat_p50_ms, "p99": self.lat_p99_ms, "p999": self.lat_p999_ms},
            "rss_base_kb": self.rss_base_kb, "rss_kb": self.rss_kb,
            "kb_per_subscriber": self.kb_per_sub, "kb_per_subscriber_step": self.kb_per_sub_step,
            "floor_us_per_pkt_sched": self.floor_us_sched, "floor_us_per_pkt_stat": self.floor_us_stat,
            "floor_packets": self.floor_packets, "floor_delivered": self.floor_delivered,
            "ratio_to_floor": self.ratio,
            "floor_sha1_80_us_per_pkt_sched": self.floor_cm_us_sched, "ratio_to_floor_sha1_80": self.ratio_cm,
            "send_errors": self.send_errors, "forward_errors": self.forward_errors,
            "sfu_datagrams_in_per_fwd": self.in_per_fwd, "sfu_datagrams_out_per_fwd": self.out_per_fwd,
            "udp_rcvbuf_errors": self.udp_rcvbuf_errors, "backlog_drops": self.backlog_drops,
            "join_p50_ms": self.join_p50_ms, "join_max_ms": self.join_max_ms, "ramp_s": self.ramp_s,
        });
        // A second object: one `json!` this size exceeds the macro recursion limit.
        let more = json!({
            "floor_batched_us_per_pkt_sched": self.floor_mm_us_sched, "ratio_to_floor_batched": self.ratio_mm,
            "probe_latency_ms": {"p50": self.probe_p50_ms, "p99": self.probe_p99_ms, "packets": self.probe_packets},
            "capacity_share": self.capacity_share,
        });
        if let (Some(o), serde_json::Value::Object(m)) = (v.as_object_mut(), more) {
            o.extend(m);
        }
        v
    }
}

async fn ladder(
    args: &Args,
    which: ServerKind,
    kind: Kind,
    ns: &[usize],
    repeat: usize,
) -> anyhow::Result<Vec<Step>> {
    let tck = procfs::clk_tck();
    let mut server = Sut::start(args, which).await?;
    let shared = Shared::new(kind);
    let mut tasks = Vec::new();

    let p = server.join(kind, true, "publisher").await?;
    let pt = publisher_pt(&p.rtc, p.mid, kind)?;
    let pub_connected = Rc::new(Cell::new(false));
    tasks.push(tokio::task::spawn_local(publisher_task(
        p,
        pt,
        pub_connected.clone(),
        shared.clone(),
    )));
    if !wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        pub_connected.get()
    })
    .await
    {
        bail!("the publisher did not connect: {}", server.log_tail());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_base = server.process().rss_kb();

    let mut subs: Vec<(Rc<RxStats>, SocketAddr)> = Vec::new();
    let mut steps = Vec::new();
    let mut prev_rss = rss_base;
    let mut prev_n = 0usize;
    let gap = Duration::from_secs_f64(1.0 / args.join_rate);
    let mut targets: std::collections::VecDeque<usize> = ns.iter().copied().collect();
    // (CPU µs per forwarded packet, forwarded packets per second per subscriber) at
    // the ladder's last step: what a share of capacity is in subscribers.
    let mut calibration: Option<(f64, f64)> = None;
    while let Some(target) = targets.pop_front() {
        let n = target;
        // Ramp.
        let t_ramp = Instant::now();
        let mut next_join = Instant::now();
        let mut join_ms = Vec::new();
        let mut join_failed = false;
        while subs.len() < n {
            tokio::time::sleep_until(next_join.into()).await;
            next_join = (next_join + gap).max(Instant::now());
            let i = subs.len();
            let tj = Instant::now();
            let j = match server.join(kind, false, &format!("sub{i}")).await {
                Ok(j) => j,
                Err(e) => {
                    // A saturated server answers joins late or not at all: measure
                    // what was reached rather than nothing.
                    eprintln!(
                        "  join {} of {n} failed ({e:#}); measuring at N = {i}",
                        i + 1
                    );
                    join_failed = true;
                    break;
                }
            };
            join_ms.push(tj.elapsed().as_secs_f64() * 1e3);
            let rx = Rc::new(RxStats::default());
            subs.push((rx.clone(), j.local));
            tasks.push(tokio::task::spawn_local(subscriber_task(
                j,
                rx,
                shared.clone(),
            )));
        }
        // From here on, N is what was reached.
        let n = subs.len().max(1);
        let connect_deadline = Duration::from_secs(20) + Duration::from_millis(20 * n as u64);
        wait_until(connect_deadline, Duration::from_millis(50), || {
            subs.iter().all(|(r, _)| r.connected.get())
        })
        .await;
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            subs.iter().all(|(r, _)| r.received.get() > 0)
        })
        .await;
        let ramp_s = t_ramp.elapsed().as_secs_f64();
        let connected = subs.iter().filter(|(r, _)| r.connected.get()).count();
        let receiving = subs.iter().filter(|(r, _)| r.received.get() > 0).count();
        eprintln!(
            "  {} {} N={n}: ramp {:.1} s, {connected} connected, {receiving} receiving",
            server.name(),
            kind.name(),
            t_ramp.elapsed().as_secs_f64()
        );
        if !server.process().alive() {
            bail!("the server died: {}", server.log_tail());
        }
        // The probe joins StreamCore rooms; against Janus, the load generator's own
        // latency is the figure.
        let probe = match &server {
            Sut::Streamcore(s) if args.probe => Some(Probe::start(args, s)?),
            _ => None,
        };
        tokio::time::sleep(args.warmup).await;

        // Steady window.
        let m0 = server.counters(&subs, &shared).await?;
        let u0 = udp_drops();
        let c0 = server.process().cpu();
        let l0 = procfs::cpu("self").unwrap_or_default();
        let rx0: Vec<(u64, u64, u64)> = subs
            .iter()
            .map(|(r, _)| {
                (
                    r.received.get(),
                    r.max_seq.get().unwrap_or(0),
                    r.duplicates.get(),
                )
            })
            .collect();
        shared.latency.borrow_mut().clear();
        shared.measuring.set(true);
        let t0 = Instant::now();
        tokio::time::sleep(args.window).await;
        let c1 = server.process().cpu();
        let l1 = procfs::cpu("self").unwrap_or_default();
        let wall = t0.elapsed().as_secs_f64();
        shared.measuring.set(false);
        let m1 = server.counters(&subs, &shared).await?;
        let u1 = udp_drops();
        let d = m1.since(&m0);
        let forwarded = d.forwarded;
        let (cpu_stat, cpu_sched) = c1.since(&c0, tck);
        let (_, lg_sched) = l1.since(&l0, tck);
        let (mut got, mut expected, mut dups) = (0u64, 0u64, 0u64);
        for ((r, _), (g0, s0, d0)) in subs.iter().zip(&rx0) {
            got += r.received.get() - g0;
            expected += r.max_seq.get().unwrap_or(0).saturating_sub(*s0);
            dups += r.duplicates.get() - d0;
        }
        let loss = if expected > 0 {
            (1.0 - got as f64 / expected as f64).max(0.0)
        } else {
            f64::NAN
        };
        let (p50, p99, p999) = {
            let h = shared.latency.borrow();
            (
                h.quantile_ms(0.5),
                h.quantile_ms(0.99),
                h.quantile_ms(0.999),
            )
        };
        let rss = server.process().rss_kb();
        let probe = match probe {
            Some(p) => match p.finish().await {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("  the latency probe failed: {e:#}");
                    None
                }
            },
            None => None,
        };
        let out_avg = d.bytes_out / d.datagrams_out.max(1.0);
        let mut step = Step {
            server: server.name(),
            kind: kind.name(),
            repeat,
            n: target,
            reached: n,
            capacity_share: calibration.map_or(f64::NAN, |(us, pps)| n as f64 * pps * us / 1e6),
            connected,
            receiving,
            window_s: wall,
            forwarded,
            rtp_in: d.rtp_in,
            fwd_per_s: forwarded / wall,
            out_bytes_avg: out_avg,
            cpu_stat_s: cpu_stat,
            cpu_sched_s: cpu_sched,
            us_per_pkt_stat: cpu_stat * 1e6 / forwarded.max(1.0),
            us_per_pkt_sched: cpu_sched * 1e6 / forwarded.max(1.0),
            server_util: cpu_sched / wall,
            loadgen_util: lg_sched / wall,
            loss,
            duplicates: dups,
            lat_p50_ms: p50,
            lat_p99_ms: p99,
            lat_p999_ms: p999,
            rss_base_kb: rss_base,
            rss_kb: rss,
            kb_per_sub: (rss as f64 - rss_base as f64) / n as f64,
            kb_per_sub_step: (rss as f64 - prev_rss as f64) / (n - prev_n).max(1) as f64,
            send_errors: d.send_errors,
            forward_errors: d.forward_errors,
            in_per_fwd: d.datagrams_in / forwarded.max(1.0),
            out_per_fwd: d.datagrams_out / forwarded.max(1.0),
            udp_rcvbuf_errors: u1.0.saturating_sub(u0.0),
            backlog_drops: u1.1.saturating_sub(u0.1),
            probe_p50_ms: probe.as_ref().map_or(f64::NAN, |p| p.p50_ms),
            probe_p99_ms: probe.as_ref().map_or(f64::NAN, |p| p.p99_ms),
            probe_packets: probe.as_ref().map_or(0, |p| p.packets),
            join_p50_ms: Summary::of(&join_ms).median,
            join_max_ms: Summary::of(&join_ms).max,
            ramp_s,
            ..Step::default()
        };
        prev_rss = rss;
        prev_n = n;

        // Floor: same destinations, packet size and rate, no SFU.
        shared.paused.set(true);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pps_per_dest = forwarded / wall / n as f64;
        let dests: Vec<SocketAddr> = subs.iter().map(|(_, a)| *a).collect();
        let f0: u64 = subs.iter().map(|(r, _)| r.floor_packets.get()).sum();
        let size = out_avg.round() as usize;
        let floor = run_floor(args, kind, &dests, pps_per_dest, size, "gcm256").await?;
        let floor_cm = run_floor(args, kind, &dests, pps_per_dest, size, "sha1-80").await?;
        let floor_mm = run_floor(args, kind, &dests, pps_per_dest, size, "gcm256-batched").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let f1: u64 = subs.iter().map(|(r, _)| r.floor_packets.get()).sum();
        shared.paused.set(false);
        step.floor_packets = floor.packets + floor_cm.packets + floor_mm.packets;
        step.floor_delivered = f1 - f0;
        step.floor_us_sched = floor.sched_ns as f64 / 1e3 / floor.packets.max(1) as f64;
        step.floor_us_stat = floor.ticks as f64 / tck as f64 * 1e6 / floor.packets.max(1) as f64;
        step.floor_cm_us_sched = floor_cm.sched_ns as f64 / 1e3 / floor_cm.packets.max(1) as f64;
        step.ratio = step.us_per_pkt_sched / step.floor_us_sched;
        step.ratio_cm = step.us_per_pkt_sched / step.floor_cm_us_sched;
        step.floor_mm_us_sched = floor_mm.sched_ns as f64 / 1e3 / floor_mm.packets.max(1) as f64;
        step.ratio_mm = step.us_per_pkt_sched / step.floor_mm_us_sched;
        eprintln!(
            "  {} {} N={n}: {:.0} fwd/s, SFU {:.2} µs/pkt (stat {:.2}), floor {:.2} µs/pkt, ratio {:.2}, batched floor {:.2} µs/pkt, ratio {:.2}, \
             loss {:.3} %, RSS {} kB ({:+.1} kB/sub), server {:.0} % CPU, loadgen {:.0} % CPU, p50/p99 {:.2}/{:.2} ms, \
             probe p50/p99 {:.2}/{:.2} ms, in/out per fwd {:.3}/{:.3}, UDP rcvbuf errors {}, backlog drops {}, \
             join p50/max {:.1}/{:.1} ms",
            server.name(),
            kind.name(),
            step.fwd_per_s,
            step.us_per_pkt_sched,
            step.us_per_pkt_stat,
            step.floor_us_sched,
            step.ratio,
            step.floor_mm_us_sched,
            step.ratio_mm,
            step.loss * 100.0,
            rss,
            step.kb_per_sub,
            step.server_util * 100.0,
            step.loadgen_util * 100.0,
            p50,
            p99,
            step.probe_p50_ms,
            step.probe_p99_ms,
            step.in_per_fwd,
            step.out_per_fwd,
            step.udp_rcvbuf_errors,
            step.backlog_drops,
            step.join_p50_ms,
            step.join_max_ms
        );
        if calibration.is_none()
            && targets.is_empty()
            && !args.fractions.is_empty()
            && step.forwarded > 0.0
        {
            let per_sub = step.fwd_per_s / n as f64;
            let us = step.us_per_pkt_sched;
            calibration = Some((us, per_sub));
            step.capacity_share = n as f64 * per_sub * us / 1e6;
            let capacity_n = 1e6 / (us * per_sub);
            let mut all: Vec<usize> = targets
                .drain(..)
                .chain(
                    args.fractions
                        .iter()
                        .map(|f| (f * capacity_n).round() as usize),
                )
                .filter(|m| *m > n)
                .collect();
            all.sort_unstable();
            all.dedup();
            eprintln!(
                "  {}: capacity ≈ {capacity_n:.0} subscribers ({us:.2} µs per packet, {per_sub:.1} packets/s each); next N: {all:?}",
                kind.name()
            );
            targets.extend(all);
        }
        steps.push(step);
        // Let the subscribers get their stream back (video needs no keyframe: the
        // pause kept every subscriber's decoder state).
        tokio::time::sleep(Duration::from_millis(500)).await;
        if join_failed {
            break; // the server is saturated: higher steps cannot be reached
        }
    }

    shared.stop.set(true);
    drop(server); // kills the server
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    Ok(steps)
}

/// Machine-wide (UDP RcvbufErrors from /proc/net/snmp, sum of dropped packets of
/// /proc/net/softnet_stat).
fn udp_drops() -> (u64, u64) {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let rcvbuf = match (udp.next(), udp.next()) {
        (Some(h), Some(v)) => h
            .split_whitespace()
            .zip(v.split_whitespace())
            .find(|(k, _)| *k == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    let backlog = softnet
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum();
    (rcvbuf, backlog)
}

fn publisher_pt(rtc: &Rtc, mid: Mid, kind: Kind) -> anyhow::Result<Pt> {
    let codec = match kind {
        Kind::Audio => str0m::format::Codec::Opus,
        Kind::Video => str0m::format::Codec::Vp8,
    };
    let pts = rtc.media(mid).context("no m-line")?.remote_pts();
    rtc.codec_config()
        .find(|p| p.spec().codec == codec && pts.contains(&p.pt()))
        .map(|p| p.pt())
        .context("codec not negotiated")
}

// ---- B5: the latency probe ----------------------------------------------------------

/// A running `sc-loadgen probe` child.
struct Probe {
    child: std::process::Child,
    dir: PathBuf,
    deadline: Instant,
}

/// What the probe measured.
struct ProbeResult {
    p50_ms: f64,
    p99_ms: f64,
    packets: u64,
}

impl Probe {
    /// Starts the probe on the load core, above the load generator's priority: it
    /// joins during the warm-up and measures over the window.
    fn start(args: &Args, server: &Server) -> anyhow::Result<Probe> {
        // A room per probe: the last probe's peers may linger until their consent
        // times out, and a new subscriber must not pick up their silent track.
        let room = format!("probe-{:08x}", rand::random::<u32>());
        let token = |identity: &str, publish: bool| {
            let grants = Grants {
                publish,
                subscribe: !publish,
                ..Grants::default()
            };
            server.token(&room, identity, grants)
        };
        let dir = std::env::temp_dir().join(format!(
            "sc-probe-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&args.load_cpu);
        if args.rt {
            cmd.args(["chrt", "-r", "20"]);
        } else {
            cmd.args(["nice", "-n", &(args.nice - 5).max(-20).to_string()]);
        }
        let child = cmd
            .arg(std::env::current_exe()?)
            .arg("probe")
            .args([
                &server.base,
                &room,
                &token("probe-pub", true)?,
                &token("probe-sub", false)?,
            ])
            .args([
                format!("{:.3}", args.warmup.as_secs_f64()),
                format!("{:.3}", args.window.as_secs_f64()),
            ])
            .stdout(std::fs::File::create(dir.join("out"))?)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the latency probe")?;
        Ok(Probe {
            child,
            dir,
            deadline: Instant::now() + args.warmup + args.window + Duration::from_secs(20),
        })
    }

    async fn finish(mut self) -> anyhow::Result<ProbeResult> {
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the probe did not finish");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = std::fs::read_to_string(self.dir.join("out"))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        if !status.success() {
            bail!("the probe failed: {status}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).context("the probe's output")?;
        let f = |k: &str| {
            v[k].as_f64()
                .with_context(|| format!("probe output has no {k}"))
        };
        Ok(ProbeResult {
            p50_ms: f("p50_ms")?,
            p99_ms: f("p99_ms")?,
            packets: f("packets")? as u64,
        })
    }
}

/// `sc-loadgen probe BASE ROOM PUB_TOKEN SUB_TOKEN SKIP_SECS SECS`: one audio publisher
/// and one subscriber of a room of their own, in this process only; after SKIP_SECS
/// it records the one-way latency of every packet (send time in the payload, the
/// same clock at both ends) for SECS and prints it as JSON.
fn probe_main(argv: &[String]) -> anyhow::Result<()> {
    let [base, room, pub_token, sub_token, skip, secs] = argv else {
        bail!("usage: sc-loadgen probe BASE ROOM PUB_TOKEN SUB_TOKEN SKIP_SECS SECS");
    };
    let skip = Duration::from_secs_f64(skip.parse().context("SKIP_SECS")?);
    let secs = Duration::from_secs_f64(secs.parse().context("SECS")?);
    str0m::crypto::from_feature_flags().install_process_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let t0 = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let kind = Kind::Audio;
        let shared = Shared::new(kind);
        let p = join_room(&http, base, room, pub_token, kind, true).await?;
        let pt = publisher_pt(&p.rtc, p.mid, kind)?;
        let connected = Rc::new(Cell::new(false));
        let publisher =
            tokio::task::spawn_local(publisher_task(p, pt, connected.clone(), shared.clone()));
        let s = join_room(&http, base, room, sub_token, kind, false).await?;
        let rx = Rc::new(RxStats::default());
        let subscriber = tokio::task::spawn_local(subscriber_task(s, rx.clone(), shared.clone()));
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            rx.received.get() > 0
        })
        .await
        {
            bail!("the probe's subscriber received nothing in 10 s");
        }
        tokio::time::sleep_until((t0 + skip).into()).await;
        shared.measuring.set(true);
        tokio::time::sleep(secs).await;
        shared.measuring.set(false);
        shared.stop.set(true);
        let result = {
            let h = shared.latency.borrow();
            json!({
                "p50_ms": h.quantile_ms(0.5),
                "p99_ms": h.quantile_ms(0.99),
                "p999_ms": h.quantile_ms(0.999),
                "packets": h.count(),
            })
        };
        println!("{result}");
        for t in [publisher, subscriber] {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        Ok(())
    })
}

// ---- the floor -----------------------------------------------------------------

#[derive(Debug, Default)]
struct FloorResult {
    packets: u64,
    sched_ns: u64,
    ticks: u64,
}

/// Runs `sc-loadgen floor` on the server's core and waits for it without blocking
/// the subscribers' tasks (they drain its packets).
async fn run_floor(
    args: &Args,
    kind: Kind,
    dests: &[SocketAddr],
    pps: f64,
    size: usize,
    profile: &str,
) -> anyhow::Result<FloorResult> {
    let dir = std::env::temp_dir().join(format!("sc-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("dests");
    let list: Vec<String> = dests.iter().map(ToString::to_string).collect();
    std::fs::write(&file, list.join("\n"))?;
    let fps = 1.0 / kind.interval().as_secs_f64();
    let out = dir.join("out");
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(&args.server_cpu)
        .arg(std::env::current_exe()?)
        .arg("floor")
        .arg(&file)
        .args([
            format!("{pps:.3}"),
            format!("{fps:.3}"),
            size.max(RTP_HEADER_LEN + GCM_TAG_LEN + 1).to_string(),
            format!("{:.3}", args.floor_secs.as_secs_f64()),
            profile.to_owned(),
        ])
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + args.floor_secs + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the floor did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("the floor failed: {status}");
    }
    let mut r = FloorResult::default();
    for kv in text.split_whitespace() {
        match kv.split_once('=') {
            Some(("packets", v)) => r.packets = v.parse()?,
            Some(("sched_ns", v)) => r.sched_ns = v.parse()?,
            Some(("ticks", v)) => r.ticks = v.parse()?,
            _ => {}
        }
    }
    Ok(r)
}

/// `sc-loadgen floor DESTS PPS FPS SIZE SECS PROFILE`: SRTP-protect + `send_to` of
/// SIZE-byte SRTP packets, PPS per destination in FPS bursts per second, for SECS;
/// prints its own CPU time. No SFU logic: one socket, keys prepared per destination.
/// PROFILE: `gcm256` (AEAD_AES_256_GCM) or `sha1-80` (AES_CM_128_HMAC_SHA1_80).
fn floor_main(argv: &[String]) -> anyhow::Result<()> {
    let [file, pps, fps, size, secs, profile] = argv else {
        bail!("usage: sc-loadgen floor DESTS PPS FPS SIZE SECS gcm256|gcm256-batched|sha1-80");
    };
    let (gcm, batched) = match profile.as_str() {
        "gcm256" => (true, false),
        "gcm256-batched" => (true, true),
        "sha1-80" => (false, false),
        p => bail!("unknown SRTP profile {p}"),
    };
    let dests: Vec<SocketAddr> = std::fs::read_to_string(file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    let pps: f64 = pps.parse()?;
    let fps: f64 = fps.parse()?;
    let size: usize = size.parse()?;
    let secs: f64 = secs.parse()?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut streams: Vec<(Protector, SocketAddr, u64)> = dests
        .iter()
        .map(|d| {
            let ssrc = rand::random();
            let p = if gcm {
                Protector::Gcm(GcmSender::new(ssrc, true))
            } else {
                Protector::Cm(Box::new(SrtpSender::new(&SessionKeys::random(), ssrc)))
            };
            (p, *d, u64::from(rand::random::<u16>() >> 2))
        })
        .collect();
    let plain = size - if gcm { GCM_TAG_LEN } else { TAG_LEN };
    let mut buf = vec![0u8; size + 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    // The batched floor: each packet protected into a buffer of its own, sent
    // `udp_batch::BATCH` per `sendmmsg`, as the server's worker sends.
    let mut bufs: Vec<Vec<u8>> = vec![buf.clone(); udp_batch::BATCH];
    let mut filled: Vec<(SocketAddr, usize)> = Vec::with_capacity(udp_batch::BATCH);
    let tick = Duration::from_secs_f64(1.0 / fps);
    let per_tick = pps / fps;
    let mut acc = 0.0f64;
    let mut packets = 0u64;
    let mut errors = 0u64;
    let warm = Duration::from_millis(500);
    let start = Instant::now();
    let mut next = start;
    let mut measured: Option<(Instant, u64, u64, u64)> = None;
    let pid = "self";
    loop {
        let now = Instant::now();
        if measured.is_none() && now >= start + warm {
            measured = Some((
                now,
                procfs::thread_sched_ns().unwrap_or(0),
                procfs::stat_ticks(pid).unwrap_or(0),
                packets,
            ));
        }
        if let Some((t0, _, _, _)) = measured
            && now >= t0 + Duration::from_secs_f64(secs)
        {
            break;
        }
        acc += per_tick;
        let k = acc.floor() as u64;
        acc -= k as f64;
        for _ in 0..k {
            for (s, dest, seq) in streams.iter_mut() {
                let ssrc = s.ssrc();
                let b = if batched {
                    &mut bufs[filled.len()]
                } else {
                    &mut buf
                };
                write_rtp_header(b, 111, false, *seq as u16, (*seq as u32) * 960, ssrc);
                let n = s.protect_in_place(b, plain, RTP_HEADER_LEN, *seq);
                *seq += 1;
                if batched {
                    filled.push((*dest, n));
                    if filled.len() == udp_batch::BATCH {
                        send_filled(&sock, &bufs, &mut filled, &mut packets, &mut errors);
                    }
                    continue;
                }
                match sock.send_to(&buf[..n], *dest) {
                    Ok(_) => packets += 1,
                    Err(_) => errors += 1,
                }
            }
        }
        send_filled(&sock, &bufs, &mut filled, &mut packets, &mut errors);
        next += tick;
        procfs::sleep_until(next);
    }
    let (_, s0, t0, p0) = measured.unwrap_or((start, 0, 0, 0));
    let s1 = procfs::thread_sched_ns().unwrap_or(0);
    let t1 = procfs::stat_ticks(pid).unwrap_or(0);
    println!(
        "FLOOR packets={} sched_ns={} ticks={} errors={errors}",
        packets - p0,
        s1 - s0,
        t1 - t0
    );
    Ok(())
}

/// Sends the batched floor's protected packets, `sendmmsg` after `sendmmsg`.
fn send_filled(
    sock: &std::net::UdpSocket,
    bufs: &[Vec<u8>],
    filled: &mut Vec<(SocketAddr, usize)>,
    packets: &mut u64,
    errors: &mut u64,
) {
    let list: [(SocketAddr, &[u8]); udp_batch::BATCH] = std::array::from_fn(|i| {
        let (dest, n) = filled
            .get(i)
            .copied()
            .unwrap_or((SocketAddr::from(([0; 4], 0)), 0));
        (dest, &bufs[i][..n])
    });
    let mut at = 0;
    while at < filled.len() {
        match udp_batch::send_batch(sock.as_raw_fd(), &list[at..filled.len()]) {
            Ok(n) => {
                *packets += n as u64;
                at += n;
            }
            Err(_) => {
                *errors += 1;
                at += 1;
            }
        }
    }
    filled.clear();
}

/// The floor's SRTP sender for one destination.
enum Protector {
    Cm(Box<SrtpSender>),
    Gcm(GcmSender),
}

impl Protector {
    fn ssrc(&self) -> u32 {
        match self {
            Protector::Cm(s) => s.ssrc,
            Protector::Gcm(g) => g.ssrc,
        }
    }

    fn protect_in_place(&self, buf: &mut [u8], len: usize, hlen: usize, index: u64) -> usize {
        match self {
            Protector::Cm(s) => s.protect_in_place(buf, len, hlen, index),
            Protector::Gcm(g) => g.protect_in_place(buf, len, hlen, index),
        }
    }
}

// ---- the run -------------------------------------------------------------------

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sha = procfs::git_sha(&root);
    eprintln!(
        "sc-loadgen {sha}: server on CPU {} ({}), load on CPU {}; {} repeats, window {:?}",
        args.server_cpu,
        args.streamcore.display(),
        procfs::cpus_allowed("self").unwrap_or_default(),
        args.repeats,
        args.window
    );
    let mut all: Vec<Step> = Vec::new();
    let mut failed = Vec::new();
    for repeat in 0..args.repeats {
        for &kind in &args.workloads {
            let ns = match kind {
                Kind::Audio => &args.audio_n,
                Kind::Video => &args.video_n,
            };
            // Interleaved, so that both servers see the same machine state.
            for &which in &args.servers {
                eprintln!(
                    "repeat {} / {}: {} {which:?}",
                    repeat + 1,
                    args.repeats,
                    kind.name()
                );
                match ladder(&args, which, kind, ns, repeat).await {
                    Ok(s) => all.extend(s),
                    Err(e) => {
                        eprintln!("  {which:?} {} ladder failed: {e:#}", kind.name());
                        failed.push(format!("{which:?} {} (repeat {})", kind.name(), repeat + 1));
                    }
                }
            }
        }
    }
    report(&args, &sha, &all, started.elapsed());
    if let Some(path) = &args.svg {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, cpu_plot(&sha, &all))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "sc-loadgen",
            "git": sha,
            "machine": procfs::machine(),
            "server_cpu": args.server_cpu, "load_cpu": args.load_cpu,
            "window_s": args.window.as_secs_f64(), "repeats": args.repeats,
            "join_rate": args.join_rate,
            "scheduling": if args.rt { "SCHED_RR 10".to_owned() } else { format!("nice {}", args.nice) },
            "srtp_profile": "SRTP_AES128_CM_SHA1_80 floor; str0m negotiates its default profile with itself",
            "steps": all.iter().map(Step::to_json).collect::<Vec<_>>(),
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    // What did run is reported above; a ladder that could not run fails the whole run,
    // so a script or a person does not take empty tables for a result.
    if !failed.is_empty() {
        anyhow::bail!("ladders failed: {}", failed.join(", "));
    }
    Ok(())
}

fn report(args: &Args, sha: &str, all: &[Step], elapsed: Duration) {
    println!("# Loopback fan-out (B1 audio, B2 video) — {sha}");
    println!();
    println!(
        "{}; server pinned to CPU {}, load generator to CPU {}; window {:.0} s; median (min–max) of {} repeats; {:.0} s in all.",
        procfs::machine(),
        args.server_cpu,
        args.load_cpu,
        args.window.as_secs_f64(),
        args.repeats,
        elapsed.as_secs_f64()
    );
    println!();
    println!(
        "| server | workload | N | fwd pkt/s | SFU CPU-µs/pkt | floor µs/pkt (GCM-256) | SFU/floor | floor µs/pkt (SHA1-80) | SFU/floor (SHA1-80) | floor µs/pkt (GCM-256, sendmmsg) | SFU/batched floor | kB/sub (RSS) | loss % | p50 / p99 ms | B5 probe p50 / p99 ms | SFU CPU % | loadgen CPU % |"
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut keys: Vec<(&str, &str, usize)> = all.iter().map(|s| (s.kind, s.server, s.n)).collect();
    keys.sort_by_key(|(kind, server, n)| (*kind, *server != "streamcore", *n));
    keys.dedup();
    let mut diag = Vec::new();
    for (kind, server, n) in keys {
        let rows: Vec<&Step> = all
            .iter()
            .filter(|s| s.kind == kind && s.server == server && s.n == n)
            .collect();
        let col =
            |f: &dyn Fn(&Step) -> f64| Summary::of(&rows.iter().map(|s| f(s)).collect::<Vec<_>>());
        let id = if kind == "audio" { "B1" } else { "B2" };
        println!(
            "| {server} | {id} {kind} | {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            col(&|s| s.fwd_per_s).show(0),
            col(&|s| s.us_per_pkt_sched).show(2),
            col(&|s| s.floor_us_sched).show(2),
            col(&|s| s.ratio).show(2),
            col(&|s| s.floor_cm_us_sched).show(2),
            col(&|s| s.ratio_cm).show(2),
            col(&|s| s.floor_mm_us_sched).show(2),
            col(&|s| s.ratio_mm).show(2),
            if n >= 50 {
                col(&|s| s.kb_per_sub).show(1)
            } else {
                "–".into()
            },
            col(&|s| s.loss * 100.0).show(3),
            col(&|s| s.lat_p50_ms).show(2),
            col(&|s| s.lat_p99_ms).show(2),
            col(&|s| s.probe_p50_ms).show(2),
            col(&|s| s.probe_p99_ms).show(2),
            col(&|s| s.server_util * 100.0).show(0),
            col(&|s| s.loadgen_util * 100.0).show(0),
        );
        diag.push(format!(
            "| {server} | {id} {kind} | {n} | {} | {} / {} | {} | {} | {} / {} | {} | {} |",
            col(&|s| s.us_per_pkt_stat).show(2),
            col(&|s| s.in_per_fwd).show(3),
            col(&|s| s.out_per_fwd).show(3),
            col(&|s| s.out_bytes_avg).show(0),
            col(&|s| s.udp_rcvbuf_errors as f64).show(0),
            col(&|s| s.join_p50_ms).show(1),
            col(&|s| s.join_max_ms).show(0),
            col(&|s| s.ramp_s).show(1),
            rows.iter()
                .map(|s| format!("{}/{}", s.connected.min(s.receiving), s.n))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    println!();
    println!("Diagnostics:");
    println!();
    println!(
        "| server | workload | N | SFU CPU-µs/pkt (stat ticks) | SFU datagrams in / out per fwd | SFU mean datagram bytes | UDP rcvbuf errors in window | join p50 / max ms | ramp s | receiving/N per repeat |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for d in diag {
        println!("{d}");
    }
    println!();
    println!("Latency against load (every step; B5 is the probe pair beside the load):");
    println!();
    println!(
        "| server | workload | repeat | N | load (share of capacity) | SFU CPU % | loss % | kB/sub (RSS) | load generator p50 / p99 ms | B5 probe p50 / p99 ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in all {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.3} | {:.1} | {:.2} / {:.2} | {:.2} / {:.2} |",
            s.server,
            s.kind,
            s.repeat,
            s.reached,
            s.capacity_share,
            s.server_util * 100.0,
            s.loss * 100.0,
            s.kb_per_sub,
            s.lat_p50_ms,
            s.lat_p99_ms,
            s.probe_p50_ms,
            s.probe_p99_ms
        );
    }
    println!();
    compare_servers(all);
}

/// Median of one figure over the repeats of (server, workload, N).
fn median_of(all: &[Step], server: &str, kind: &str, n: usize, f: impl Fn(&Step) -> f64) -> f64 {
    let v: Vec<f64> = all
        .iter()
        .filter(|s| s.server == server && s.kind == kind && s.n == n)
        .map(f)
        .collect();
    Summary::of(&v).median
}

/// StreamCore ÷ Janus at every (workload, N) both servers reached.
fn compare_servers(all: &[Step]) {
    let mut keys: Vec<(&str, usize)> = all
        .iter()
        .filter(|s| s.server == "janus")
        .map(|s| (s.kind, s.n))
        .collect();
    keys.sort();
    keys.dedup();
    keys.retain(|(k, n)| {
        all.iter()
            .any(|s| s.server == "streamcore" && s.kind == *k && s.n == *n)
    });
    if keys.is_empty() {
        return;
    }
    println!(
        "StreamCore ÷ Janus (medians; below 1 is StreamCore cheaper; Janus ÷ StreamCore is how many times more packets one core forwards):"
    );
    println!();
    println!(
        "| workload | N | CPU-µs/pkt SC / Janus | SC ÷ Janus | Janus ÷ SC (per core) | kB/sub SC / Janus | loss % SC / Janus | p50 ms SC / Janus | p99 ms SC / Janus |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, n) in keys {
        let m = |server: &str, f: &dyn Fn(&Step) -> f64| median_of(all, server, kind, n, f);
        let (sc, ja) = (
            m("streamcore", &|s| s.us_per_pkt_sched),
            m("janus", &|s| s.us_per_pkt_sched),
        );
        println!(
            "| {kind} | {n} | {sc:.2} / {ja:.2} | {:.3} | {:.1} | {:.1} / {:.1} | {:.3} / {:.3} | {:.2} / {:.2} | {:.2} / {:.2} |",
            sc / ja,
            ja / sc,
            m("streamcore", &|s| s.kb_per_sub),
            m("janus", &|s| s.kb_per_sub),
            m("streamcore", &|s| s.loss * 100.0),
            m("janus", &|s| s.loss * 100.0),
            m("streamcore", &|s| s.lat_p50_ms),
            m("janus", &|s| s.lat_p50_ms),
            m("streamcore", &|s| s.lat_p99_ms),
            m("janus", &|s| s.lat_p99_ms),
        );
    }
    println!();
}

/// `sc-loadgen plot RUN.json OUT.svg`: the `--svg` figure again from a run's JSON.
fn plot_main(argv: &[String]) -> anyhow::Result<()> {
    let [json, svg] = argv else {
        bail!("usage: sc-loadgen plot RUN.json OUT.svg");
    };
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let interned = |v: &serde_json::Value, names: &[&'static str]| {
        names.iter().copied().find(|n| v.as_str() == Some(*n))
    };
    let mut steps = Vec::new();
    for s in doc["steps"].as_array().context("the JSON has no steps")? {
        let (Some(server), Some(kind)) = (
            interned(&s["server"], &["streamcore", "janus"]).or(Some("streamcore")),
            interned(&s["workload"], &["audio", "video"]),
        ) else {
            continue;
        };
        steps.push(Step {
            server,
            kind,
            n: s["n"].as_u64().context("a step without n")? as usize,
            us_per_pkt_sched: s["us_per_pkt_sched"].as_f64().unwrap_or(f64::NAN),
            floor_us_sched: s["floor_us_per_pkt_sched"].as_f64().unwrap_or(f64::NAN),
            ..Step::default()
        });
    }
    let sha = doc["git"].as_str().unwrap_or("?");
    std::fs::write(svg, cpu_plot(sha, &steps))?;
    eprintln!("wrote {svg}");
    Ok(())
}

/// CPU per forwarded packet against N: each server and workload, and the floors
/// measured beside StreamCore's steps.
fn cpu_plot(sha: &str, all: &[Step]) -> String {
    let mut series = Vec::new();
    let palette = [
        ("streamcore", "audio", "#1f77b4", false, "StreamCore audio"),
        ("streamcore", "video", "#2ca02c", false, "StreamCore video"),
        ("janus", "audio", "#d62728", false, "Janus 1.1.2 audio"),
        ("janus", "video", "#ff7f0e", false, "Janus 1.1.2 video"),
    ];
    let ns = |server: &str, kind: &str| {
        let mut v: Vec<usize> = all
            .iter()
            .filter(|s| s.server == server && s.kind == kind)
            .map(|s| s.n)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for (server, kind, colour, dashed, label) in palette {
        let points: Vec<(f64, f64)> = ns(server, kind)
            .into_iter()
            .map(|n| {
                (
                    n as f64,
                    median_of(all, server, kind, n, |s| s.us_per_pkt_sched),
                )
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                label: label.into(),
                colour,
                dashed,
                points,
            });
        }
    }
    for (kind, colour, label) in [
        ("audio", "#7f7f7f", "floor audio (GCM, send_to)"),
        ("video", "#bcbd22", "floor video (GCM, send_to)"),
    ] {
        let points: Vec<(f64, f64)> = ns("streamcore", kind)
            .into_iter()
            .map(|n| {
                (
                    n as f64,
                    median_of(all, "streamcore", kind, n, |s| s.floor_us_sched),
                )
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                label: label.into(),
                colour,
                dashed: true,
                points,
            });
        }
    }
    line_plot(
        &format!("CPU per forwarded packet, one core ({sha})"),
        "subscribers N (log)",
        "CPU-µs per forwarded packet (log)",
        &series,
    )
}
