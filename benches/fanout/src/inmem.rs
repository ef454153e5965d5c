//! B0's harness: one publisher and N subscribers (str0m client `Rtc`s in RTP mode)
//! wired to one `media_core::Sfu` in memory, in virtual time — the approach of
//! `media-core/tests/common/mod.rs`, with O(1) delivery and every call into the
//! SFU timed and its heap operations counted apart from the clients' work.
//!
//! Datagrams are delivered at once and never lost. The source writes a tick of
//! packets every 20 ms (audio) or 33.3 ms (video); between ticks time moves from
//! deadline to deadline (the SFU's and the clients'), at least [`MIN_WAKE`] apart as a
//! real worker's timer would, and a timeout is served only when due. (Stepping
//! whole ticks instead starved paced subscribers: a pacer releases a packet per
//! timeout, so a video subscriber got a quarter of what was forwarded to it.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use media_core::{OfferRequest, PeerRole, RoomId, Sfu, SfuConfig, SfuStats};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Mid, Pt};
use str0m::net::{DatagramSend, Protocol, Receive, Transmit};
use str0m::rtp::{Extension, ExtensionMap, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::alloc::{self, AllocSnapshot};
use crate::shape::{Kind, Packet, Source};

pub const SFU_ADDR: &str = "127.0.0.1:40000";

/// The finest step of virtual time: the resolution of the worker's timer (tokio's).
pub const MIN_WAKE: Duration = Duration::from_millis(1);

/// When set, allocations made inside SFU calls are traced (see [`alloc::reset_traces`]).
pub static TRACE_SFU: AtomicBool = AtomicBool::new(false);

/// When set, SFU calls run inside [`counted_sfu_call`], the function whose
/// instructions `valgrind --tool=callgrind --toggle-collect=*counted_sfu_call*`
/// counts: the measured window's SFU work and nothing else.
pub static COUNT_SFU: AtomicBool = AtomicBool::new(false);

/// Runs one SFU call; callgrind collects only inside this function (never inlined,
/// so its name survives).
#[inline(never)]
pub fn counted_sfu_call<R>(sfu: &mut Sfu, f: impl FnOnce(&mut Sfu) -> R) -> R {
    f(sfu)
}

/// Time and heap operations spent inside one kind of SFU call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cost {
    pub ns: u64,
    pub calls: u64,
    pub alloc: AllocSnapshot,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.ns += o.ns;
        self.calls += o.calls;
        self.alloc.add(&o.alloc);
    }
}

/// The SFU's calls, by what drove them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Costs {
    /// `handle_datagram` of the publisher's datagrams: receive, route, write to
    /// every subscriber `Rtc`, drain them (SRTP protect happens here).
    pub from_publisher: Cost,
    /// `handle_datagram` of subscribers' datagrams (RTCP receiver reports, NACK, STUN).
    pub from_subscribers: Cost,
    /// `handle_timeout` (RTCP sender reports, ICE keepalive, stats).
    pub timeouts: Cost,
    /// `poll_transmit` and `recycle` (datagrams out of the queue, sent buffers back).
    pub transmit: Cost,
}

impl Costs {
    pub fn total(&self) -> Cost {
        let mut t = Cost::default();
        for c in [
            &self.from_publisher,
            &self.from_subscribers,
            &self.timeouts,
            &self.transmit,
        ] {
            t.add(c);
        }
        t
    }
}

pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub mid: Mid,
    pub connected: bool,
    pub rx_packets: u64,
    pub keyframe_requests: u64,
    next_timeout: Option<Instant>,
}

/// What one measured window saw.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub subscribers: usize,
    pub virtual_time: Duration,
    /// Publisher packets sent.
    pub sent: u64,
    /// `SfuStats` growth over the window.
    pub stats: SfuStats,
    /// Packets the subscribers' `Rtc`s delivered as `Event::RtpPacket`.
    pub received: u64,
    pub costs: Costs,
    /// Wall time of the whole window: publisher, SFU, subscribers.
    pub wall_ns: u64,
    /// Heap operations of the whole window (every peer).
    pub alloc_all: AllocSnapshot,
}

impl Window {
    pub fn forwarded(&self) -> u64 {
        self.stats.rtp_forwarded
    }

    /// SFU-side ns per forwarded packet (all SFU calls).
    pub fn sfu_ns_per_fwd(&self) -> f64 {
        self.costs.total().ns as f64 / self.forwarded().max(1) as f64
    }

    /// SFU-side heap operations per forwarded packet.
    pub fn sfu_allocs_per_fwd(&self) -> f64 {
        self.costs.total().alloc.ops() as f64 / self.forwarded().max(1) as f64
    }

    pub fn whole_ns_per_fwd(&self) -> f64 {
        self.wall_ns as f64 / self.forwarded().max(1) as f64
    }
}

pub struct InMem {
    pub now: Instant,
    pub sfu: Sfu,
    pub kind: Kind,
    pub publisher: Client,
    pub subs: Vec<Client>,
    /// Client index by address: 0 is the publisher, i + 1 subscriber i.
    by_addr: HashMap<SocketAddr, usize>,
    sfu_addr: SocketAddr,
    pt: Pt,
    seq: u64,
    pub source: Source,
    pub costs: Costs,
    up: Vec<Transmit>,
    down: Vec<Transmit>,
    /// Delivered datagrams' buffers, to go back to the SFU.
    returned: Vec<DatagramSend>,
    packets: Vec<Packet>,
    next_port: u16,
    epoch: Instant,
    sent: u64,
    /// Whether subscriber clients offer the transport-wide-cc header extension (as
    /// browsers do). Without it the SFU's answer leaves it out and the subscribers
    /// send no TWCC feedback: a what-if for an SFU that negotiates no transport-cc
    /// on subscriber m-lines while it runs no bandwidth estimation for them.
    pub subscriber_twcc: bool,
}

impl InMem {
    /// A room with one publisher of `kind` and `subscribers` players, all connected.
    pub fn new(kind: Kind, subscribers: usize) -> anyhow::Result<InMem> {
        let now = Instant::now();
        let sfu_addr: SocketAddr = SFU_ADDR.parse()?;
        let mut sfu = Sfu::new(SfuConfig::new(sfu_addr));
        let room = RoomId::parse("bench")?;
        let mut next_port = 20_000u16;
        let publisher = join(
            &mut sfu,
            now,
            &room,
            PeerRole::Publisher,
            kind,
            next_port,
            true,
        )?;
        next_port += 1;
        let mut h = InMem {
            now,
            sfu,
            kind,
            by_addr: HashMap::from([(publisher.addr, 0)]),
            publisher,
            subs: Vec::with_capacity(subscribers),
            sfu_addr,
            pt: Pt::from(0),
            // Fixed, so a run repeats exactly (the instruction count); not zero.
            seq: 0x2a5c,
            source: Source::new(kind),
            costs: Costs::default(),
            up: Vec::with_capacity(256),
            down: Vec::with_capacity(4 * subscribers + 256),
            returned: Vec::with_capacity(4 * subscribers + 256),
            packets: Vec::with_capacity(64),
            next_port,
            epoch: now,
            sent: 0,
            subscriber_twcc: true,
        };
        h.drain(0);
        h.shuttle();
        for _ in 0..subscribers {
            h.add_subscriber()?;
        }
        h.connect_all()?;
        h.pt = publisher_pt(&h.publisher, kind)?;
        Ok(h)
    }

    pub fn add_subscriber(&mut self) -> anyhow::Result<()> {
        let room = RoomId::parse("bench")?;
        let c = join(
            &mut self.sfu,
            self.now,
            &room,
            PeerRole::Subscriber,
            self.kind,
            self.next_port,
            self.subscriber_twcc,
        )?;
        self.next_port = self.next_port.wrapping_add(1);
        self.by_addr.insert(c.addr, self.subs.len() + 1);
        self.subs.push(c);
        let i = self.subs.len();
        self.drain(i);
        self.shuttle();
        Ok(())
    }

    /// Adds `n` subscribers and runs until they are connected.
    pub fn add_subscribers(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.add_subscriber()?;
        }
        self.connect_all()
    }

    /// Forgets the subscribers' client `Rtc`s (the SFU keeps its side of them), so
    /// that the heap left is the SFU's. Datagrams to them are dropped from now on.
    pub fn drop_subscriber_clients(&mut self) {
        self.subs = Vec::new();
        self.by_addr.retain(|_, i| *i == 0);
        self.by_addr.shrink_to_fit();
        // The harness's own buffers are sized by N; they are not the SFU's.
        self.up = Vec::new();
        self.down = Vec::new();
    }

    fn connect_all(&mut self) -> anyhow::Result<()> {
        for _ in 0..4000 {
            if self.publisher.connected && self.subs.iter().all(|c| c.connected) {
                return Ok(());
            }
            self.advance(Duration::from_millis(5));
        }
        anyhow::bail!("clients did not connect within 20 virtual seconds")
    }

    fn client(&mut self, i: usize) -> &mut Client {
        if i == 0 {
            &mut self.publisher
        } else {
            &mut self.subs[i - 1]
        }
    }

    /// Polls client `i` until it returns a timeout; its datagrams go to `up`.
    fn drain(&mut self, i: usize) {
        let mut up = std::mem::take(&mut self.up);
        let mut keyframe = false;
        let c = self.client(i);
        loop {
            match c.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    c.next_timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => up.push(t),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => c.connected = true,
                    Event::RtpPacket(_) => c.rx_packets += 1,
                    Event::KeyframeRequest(_) => {
                        c.keyframe_requests += 1;
                        keyframe = true;
                    }
                    _ => {}
                },
                Err(e) => panic!("client {i} failed: {e}"),
            }
        }
        self.up = up;
        if keyframe && i == 0 {
            self.source.request_keyframe();
        }
    }

    /// Runs `f` on the SFU, adding its time and heap operations to `cost`. While
    /// [`TRACE_SFU`] is set, allocations inside the call are traced.
    #[inline]
    fn timed<R>(sfu: &mut Sfu, cost: &mut Cost, f: impl FnOnce(&mut Sfu) -> R) -> R {
        let trace = TRACE_SFU.load(Relaxed);
        if trace {
            alloc::set_tracing(true);
        }
        let a0 = alloc::snapshot();
        let t0 = Instant::now();
        let r = if COUNT_SFU.load(Relaxed) {
            counted_sfu_call(sfu, f)
        } else {
            f(sfu)
        };
        let dt = t0.elapsed();
        let a1 = alloc::snapshot();
        if trace {
            alloc::set_tracing(false);
        }
        cost.ns += dt.as_nanos() as u64;
        cost.calls += 1;
        cost.alloc.add(&a1.since(&a0));
        r
    }

    /// Moves datagrams both ways until nothing is in flight.
    fn shuttle(&mut self) {
        let now = self.now;
        let publisher = self.publisher.addr;
        let mut pending = Vec::new();
        loop {
            if self.up.is_empty() {
                break;
            }
            std::mem::swap(&mut pending, &mut self.up);
            for t in pending.drain(..) {
                let cost = if t.source == publisher {
                    &mut self.costs.from_publisher
                } else {
                    &mut self.costs.from_subscribers
                };
                Self::timed(&mut self.sfu, cost, |sfu| {
                    sfu.handle_datagram(now, t.source, t.destination, &t.contents)
                });
                self.collect_transmits();
                self.deliver();
            }
        }
        self.up = pending;
        self.up.clear();
        while self.sfu.poll_event().is_some() {}
    }

    /// Gives the delivered datagrams' buffers back to the SFU, as the server's driver
    /// does after sending them.
    fn recycle(&mut self) {
        let returned = &mut self.returned;
        Self::timed(&mut self.sfu, &mut self.costs.transmit, |sfu| {
            for contents in returned.drain(..) {
                sfu.recycle(contents);
            }
        });
    }

    fn collect_transmits(&mut self) {
        let down = &mut self.down;
        down.reserve(4 * self.subs.len() + 64);
        Self::timed(&mut self.sfu, &mut self.costs.transmit, |sfu| {
            while let Some(t) = sfu.poll_transmit() {
                down.push(t);
            }
        });
    }

    /// Hands the SFU's datagrams to their clients.
    fn deliver(&mut self) {
        let mut down = std::mem::take(&mut self.down);
        for t in down.drain(..) {
            let Some(&i) = self.by_addr.get(&t.destination) else {
                continue;
            };
            let now = self.now;
            let c = self.client(i);
            let Ok(contents) = (&*t.contents).try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: t.source,
                    destination: t.destination,
                    contents,
                },
            );
            if c.rtc.handle_input(input).is_ok() {
                self.drain(i);
            }
            self.returned.push(t.contents);
        }
        self.down = down;
        self.recycle();
    }

    /// Advances virtual time by `d`, waking at every deadline of the SFU and the
    /// clients on the way (at least [`MIN_WAKE`] apart) and serving what is due.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let clients = std::iter::once(&self.publisher)
                .chain(&self.subs)
                .filter_map(|c| c.next_timeout);
            let next = self.sfu.poll_timeout().into_iter().chain(clients).min();
            self.now = match next {
                Some(t) if t < end => t.max(self.now + MIN_WAKE).min(end),
                _ => end,
            };
            self.wake();
        }
    }

    /// Serves the due timeouts of the SFU and the clients at `self.now`.
    fn wake(&mut self) {
        let now = self.now;
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            Self::timed(&mut self.sfu, &mut self.costs.timeouts, |sfu| {
                sfu.handle_timeout(now)
            });
            self.collect_transmits();
            self.deliver();
        }
        for i in 0..=self.subs.len() {
            let c = self.client(i);
            if c.next_timeout.is_some_and(|t| t <= now) {
                c.next_timeout = None;
                if c.rtc.handle_input(Input::Timeout(now)).is_ok() {
                    self.drain(i);
                }
            }
        }
        self.shuttle();
    }

    /// One source tick: the publisher writes the tick's packets.
    pub fn send_tick(&mut self) {
        let send_ns = (self.now - self.epoch).as_nanos() as u64;
        let mut packets = std::mem::take(&mut self.packets);
        self.source.tick(send_ns, &mut packets);
        let nackable = self.kind == Kind::Video;
        for p in packets.drain(..) {
            let mid = self.publisher.mid;
            let seq = self.seq;
            self.seq += 1;
            let now = self.now;
            let pt = self.pt;
            if let Some(tx) = self.publisher.rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.write_rtp(
                    RtpWrite::new(pt, seq.into(), p.rtp_time, now, p.payload)
                        .marker(p.marker)
                        .nackable(nackable),
                );
                self.sent += 1;
            }
            self.drain(0);
            self.shuttle();
        }
        self.packets = packets;
    }

    /// Sends media for `d` of virtual time, one tick at a time.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let step = self.kind.interval();
        while self.now < end {
            self.advance(step);
            self.send_tick();
        }
    }

    /// Sends for `d` and reports what the SFU spent.
    pub fn measure(&mut self, d: Duration) -> Window {
        self.costs = Costs::default();
        let s0 = self.sfu.stats();
        let rx0: u64 = self.subs.iter().map(|c| c.rx_packets).sum();
        let sent0 = self.sent;
        let a0 = alloc::snapshot();
        let t0 = Instant::now();
        self.run(d);
        let wall_ns = t0.elapsed().as_nanos() as u64;
        let alloc_all = alloc::snapshot().since(&a0);
        let s1 = self.sfu.stats();
        let rx1: u64 = self.subs.iter().map(|c| c.rx_packets).sum();
        Window {
            subscribers: self.subs.len(),
            virtual_time: d,
            sent: self.sent - sent0,
            stats: s1.since(&s0),
            received: rx1 - rx0,
            costs: self.costs,
            wall_ns,
            alloc_all,
        }
    }

    pub fn sfu_addr(&self) -> SocketAddr {
        self.sfu_addr
    }
}

/// A client offering one m-line of `kind` in the direction its role implies.
fn join(
    sfu: &mut Sfu,
    now: Instant,
    room: &RoomId,
    role: PeerRole,
    kind: Kind,
    port: u16,
    twcc: bool,
) -> anyhow::Result<Client> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut builder = Rtc::builder().set_rtp_mode(true);
    if !twcc {
        // `ExtensionMap::standard()` without TransportSequenceNumber (id 3).
        let mut exts = ExtensionMap::empty();
        exts.set(1, Extension::AudioLevel);
        exts.set(2, Extension::AbsoluteSendTime);
        exts.set(4, Extension::RtpMid);
        exts.set(10, Extension::RtpStreamId);
        exts.set(11, Extension::RepairedRtpStreamId);
        exts.set(13, Extension::VideoOrientation);
        builder = builder.set_extension_map(exts);
    }
    let mut rtc = builder.build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp")?);
    let dir = match role {
        PeerRole::Publisher => Direction::SendOnly,
        PeerRole::Subscriber => Direction::RecvOnly,
        PeerRole::Participant => Direction::SendRecv,
    };
    let mut api = rtc.sdp_api();
    let mid = api.add_media(kind.media_kind(), dir, Some("s".into()), None, None);
    let (offer, pending) = api.apply().ok_or_else(|| anyhow::anyhow!("no offer"))?;
    let offer_sdp = offer.to_sdp_string();
    let trace = TRACE_SFU.load(Relaxed);
    alloc::set_tracing(trace);
    let accepted = sfu.accept_offer(
        now,
        OfferRequest {
            room,
            identity: "bench",
            name: "bench",
            role,
            offer_sdp: &offer_sdp,
            room_limit: None,
        },
    );
    alloc::set_tracing(false);
    let accepted = accepted?;
    let answer = SdpAnswer::from_sdp_string(&accepted.answer_sdp)?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    Ok(Client {
        rtc,
        addr,
        mid,
        connected: false,
        rx_packets: 0,
        keyframe_requests: 0,
        next_timeout: Some(now),
    })
}

/// The payload type the SFU accepted for the publisher's Opus or VP8.
pub fn publisher_pt(c: &Client, kind: Kind) -> anyhow::Result<Pt> {
    let codec = match kind {
        Kind::Audio => Codec::Opus,
        Kind::Video => Codec::Vp8,
    };
    let media = c
        .rtc
        .media(c.mid)
        .ok_or_else(|| anyhow::anyhow!("publisher has no m-line {}", c.mid))?;
    let pts = media.remote_pts();
    c.rtc
        .codec_config()
        .find(|p| p.spec().codec == codec && pts.contains(&p.pt()))
        .map(|p| p.pt())
        .ok_or_else(|| anyhow::anyhow!("{codec:?} was not negotiated"))
}
