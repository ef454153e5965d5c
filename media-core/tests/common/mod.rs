//! A virtual-time harness: str0m client peers wired to one `Sfu` in memory.
//!
//! Time only moves when a test calls `run`; datagrams are delivered immediately,
//! and the SFU→client and client→SFU links can drop packets with a seeded RNG, so
//! every run of a test sees exactly the same packets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media_core::str0m::change::{SdpAnswer, SdpApi};
use media_core::str0m::format::Codec;
use media_core::str0m::format::CodecExtra;
use media_core::str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use media_core::str0m::net::{Protocol, Receive, Transmit};
use media_core::str0m::rtp::RtpWrite;
use media_core::str0m::{Candidate, Event, Input, Output, Rtc};
use media_core::{
    JoinRequest, OfferRequest, PeerId, PeerRole, RemoteIceCreds, RoomId, Sfu, SfuConfig, SfuError,
    SfuEvent,
};

pub const SFU_ADDR: &str = "127.0.0.1:40000";

/// A received frame: (mid, payload, keyframe per str0m's depacketiser).
#[derive(Debug, Clone)]
pub struct Frame {
    pub mid: Mid,
    pub data: Vec<u8>,
    /// The VP8 picture id the depacketizer saw (extended), if the sender wrote one.
    pub picture_id: Option<u64>,
}

pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub peer: PeerId,
    pub role: PeerRole,
    pub mids: Vec<(Mid, MediaKind)>,
    pub frames: Vec<Frame>,
    pub keyframe_requests: usize,
    pub connected: bool,
    /// RTP payloads received, for clients in RTP mode.
    pub rtp: Vec<Vec<u8>>,
    /// The rid of each keyframe request received (`None` without simulcast).
    pub keyframe_rids: Vec<Option<Rid>>,
    /// When each keyframe request arrived (virtual time).
    pub keyframe_request_times: Vec<Instant>,
    /// While true the client neither sends nor receives (a dead network).
    pub offline: bool,
    /// A bottleneck on the SFU→client path; `None`: unlimited and instant.
    pub downlink: Option<Link>,
    /// The SFU's answer to this client's first offer (WHIP/WHEP clients).
    pub answer_sdp: String,
    audio_time: u64,
    video_time: u64,
}

/// A rate-limited link with a drop-tail queue: a datagram leaves when the ones before
/// it have been serialised at `bps`, and is dropped if it would wait over `max_delay`.
#[derive(Debug)]
pub struct Link {
    pub bps: u64,
    pub max_delay: Duration,
    busy_until: Option<Instant>,
    queue: std::collections::VecDeque<(Instant, Transmit)>,
    pub dropped: u64,
}

impl Link {
    pub fn new(bps: u64) -> Self {
        Link {
            bps,
            max_delay: Duration::from_millis(200),
            busy_until: None,
            queue: Default::default(),
            dropped: 0,
        }
    }

    fn push(&mut self, now: Instant, t: Transmit) {
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let bits = (t.contents.len() as u64 + 28) * 8; // + IP/UDP headers
        let done = start + Duration::from_micros(bits * 1_000_000 / self.bps.max(1));
        if done.duration_since(now) > self.max_delay {
            self.dropped += 1;
            return;
        }
        self.busy_until = Some(done);
        self.queue.push_back((done, t));
    }

    fn pop_due(&mut self, now: Instant) -> Option<Transmit> {
        if self.queue.front().is_some_and(|(at, _)| *at <= now) {
            return self.queue.pop_front().map(|(_, t)| t);
        }
        None
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }
}

impl Client {
    fn new(
        rtc: Rtc,
        addr: SocketAddr,
        peer: PeerId,
        role: PeerRole,
        mids: Vec<(Mid, MediaKind)>,
    ) -> Self {
        Client {
            rtc,
            addr,
            peer,
            role,
            mids,
            frames: Vec::new(),
            keyframe_requests: 0,
            connected: false,
            rtp: Vec::new(),
            keyframe_rids: Vec::new(),
            keyframe_request_times: Vec::new(),
            offline: false,
            downlink: None,
            answer_sdp: String::new(),
            audio_time: 0,
            video_time: 0,
        }
    }

    pub fn mid(&self, kind: MediaKind) -> Mid {
        self.mids
            .iter()
            .find(|(_, k)| *k == kind)
            .expect("client has this kind")
            .0
    }

    pub fn frames_of(&self, kind: MediaKind) -> Vec<Vec<u8>> {
        let mid = self.mid(kind);
        self.frames
            .iter()
            .filter(|f| f.mid == mid)
            .map(|f| f.data.clone())
            .collect()
    }
}

pub struct Harness {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    pub events: Vec<SfuEvent>,
    /// Probability (0..1) that a datagram from the SFU to a client is lost.
    pub loss_down: f64,
    /// Probability that a datagram from a client to the SFU is lost.
    pub loss_up: f64,
    rng: u64,
    next_port: u16,
    /// The next client joins in RTP mode.
    rtp_mode_next: bool,
    /// The next client offers only this video codec (and Opus).
    codec_next: Option<Codec>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(f: impl FnOnce(&mut SfuConfig)) -> Self {
        let mut config = SfuConfig::new(SFU_ADDR.parse().unwrap());
        f(&mut config);
        Harness {
            // The harness owns virtual time; it only needs some starting instant.
            #[allow(clippy::disallowed_methods)]
            now: Instant::now(),
            sfu: Sfu::new(config),
            clients: Vec::new(),
            events: Vec::new(),
            loss_down: 0.0,
            loss_up: 0.0,
            rng: 0x9e37_79b9_7f4a_7c15,
            next_port: 50_000,
            rtp_mode_next: false,
            codec_next: None,
        }
    }

    /// A client that offers `kinds` in the direction its role implies.
    pub fn join(
        &mut self,
        room: &str,
        role: PeerRole,
        kinds: &[MediaKind],
    ) -> Result<usize, SfuError> {
        self.join_with(room, role, kinds, &[])
    }

    /// A publisher of one video track sent as simulcast layers `rids`.
    pub fn join_simulcast(&mut self, room: &str, rids: &[&str]) -> Result<usize, SfuError> {
        self.join_with(room, PeerRole::Publisher, &[MediaKind::Video], rids)
    }

    /// A client that offers only `codec` for video (and Opus), in frame mode.
    pub fn join_codec(
        &mut self,
        room: &str,
        role: PeerRole,
        codec: Codec,
        rids: &[&str],
    ) -> Result<usize, SfuError> {
        self.codec_next = Some(codec);
        let r = self.join_with(room, role, &[MediaKind::Video], rids);
        self.codec_next = None;
        r
    }

    /// One H264 access unit (Annex B) on each of the given simulcast layers at the
    /// same media time: an IDR slice for keyframes, a non-IDR slice otherwise.
    /// `(rid, keyframe, body)`; the body follows the one-byte NAL header.
    pub fn send_h264_simulcast_frame(&mut self, client: usize, layers: &[(&str, bool, &[u8])]) {
        let now = self.now;
        for (rid, keyframe, body) in layers {
            let mut data = vec![0, 0, 0, 1, if *keyframe { 0x65 } else { 0x41 }];
            data.extend_from_slice(body);
            let c = &mut self.clients[client];
            let mid = c.mid(MediaKind::Video);
            let w = c
                .rtc
                .writer(mid)
                .expect("video writer")
                .rid(Rid::from(*rid));
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::H264)
                .expect("h264 negotiated")
                .pt();
            w.write(pt, now, MediaTime::from_90khz(c.video_time), data)
                .unwrap();
        }
        self.clients[client].video_time += 3000;
        self.shuttle();
    }

    /// Like [`Harness::join_simulcast`], but the client writes RTP itself
    /// ([`Harness::send_vp8_rtp`]), so the test chooses the payload descriptors.
    pub fn join_simulcast_rtp(&mut self, room: &str, rids: &[&str]) -> Result<usize, SfuError> {
        self.rtp_mode_next = true;
        let r = self.join_with(room, PeerRole::Publisher, &[MediaKind::Video], rids);
        self.rtp_mode_next = false;
        r
    }

    /// A video client in RTP mode that negotiates only `codec`: it writes payloads
    /// with [`Harness::send_rtp`] and records what it receives in `Client::rtp`.
    pub fn join_codec_rtp(
        &mut self,
        room: &str,
        role: PeerRole,
        codec: Codec,
    ) -> Result<usize, SfuError> {
        self.rtp_mode_next = true;
        self.codec_next = Some(codec);
        let r = self.join_with(room, role, &[MediaKind::Video], &[]);
        self.rtp_mode_next = false;
        self.codec_next = None;
        r
    }

    /// One RTP packet of the client's video codec, sent as given.
    pub fn send_rtp(&mut self, client: usize, seq: u64, ts: u32, marker: bool, payload: Vec<u8>) {
        let now = self.now;
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Video);
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec.is_video())
            .expect("a video codec")
            .pt();
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(marker)
                .nackable(true),
        );
        self.shuttle();
    }

    /// One single-packet VP8 picture on layer `rid`, with a descriptor carrying a
    /// 15-bit PictureID and a TL0PICIDX; `n` is its sequence number (and sets its
    /// timestamp). Layer "h" pictures are ten times the size of the others.
    pub fn send_vp8_rtp(
        &mut self,
        client: usize,
        rid: &str,
        n: u64,
        pid: u16,
        tl0: u8,
        keyframe: bool,
    ) {
        let now = self.now;
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Video);
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8 configured")
            .pt();
        // X; I, L, T; 15-bit PictureID; TL0PICIDX; TID 0 with Y set.
        let mut payload = vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8 & 0x7f,
            pid as u8,
            tl0,
            0x20,
        ];
        // VP8 frame tag (P bit clear on keyframes), start code, 320x240, then filler.
        payload.extend_from_slice(&[if keyframe { 0x00 } else { 0x01 }, 0x00, 0x00]);
        payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
        payload.extend_from_slice(&[rid.as_bytes()[0], (n & 0xff) as u8]);
        payload.extend(std::iter::repeat_n(0x55, if rid == "h" { 400 } else { 40 }));
        let mut api = c.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, Some(Rid::from(rid)))
            .expect("a send stream per rid");
        tx.write_rtp(
            RtpWrite::new(pt, n.into(), (n * 3000) as u32, now, payload)
                .marker(true)
                .nackable(true),
        );
        self.shuttle();
    }

    fn join_with(
        &mut self,
        room: &str,
        role: PeerRole,
        kinds: &[MediaKind],
        rids: &[&str],
    ) -> Result<usize, SfuError> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.next_port).parse().unwrap();
        self.next_port += 1;
        let mut builder = Rtc::builder().set_rtp_mode(self.rtp_mode_next);
        if let Some(codec) = self.codec_next {
            builder = builder.clear_codecs().enable_opus(true, false);
            builder = match codec {
                Codec::Vp9 => builder.enable_vp9(true),
                Codec::Av1 => builder.enable_av1(true),
                Codec::H264 => builder.enable_h264(true),
                _ => builder.enable_vp8(true),
            };
        }
        let mut rtc = builder.build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let dir = match role {
            PeerRole::Publisher => Direction::SendOnly,
            PeerRole::Subscriber => Direction::RecvOnly,
            PeerRole::Participant => Direction::SendRecv,
        };
        let mut api = rtc.sdp_api();
        let simulcast = |k: &MediaKind| {
            (*k == MediaKind::Video && !rids.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for r in rids {
                    s.add_send_layer(SimulcastLayer::new(r));
                }
                s
            })
        };
        let mids: Vec<(Mid, MediaKind)> = kinds
            .iter()
            .map(|k| {
                (
                    api.add_media(*k, dir, Some("s".into()), None, simulcast(k)),
                    *k,
                )
            })
            .collect();
        let (offer, pending) = api.apply().expect("offer");
        let room = RoomId::parse(room).unwrap();
        let accepted = self.sfu.accept_offer(
            self.now,
            OfferRequest {
                room_limit: None,
                room: &room,
                identity: "tester",
                name: "tester",
                role,
                offer_sdp: &offer.to_sdp_string(),
            },
        )?;
        let answer = SdpAnswer::from_sdp_string(&accepted.answer_sdp).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let mut client = Client::new(rtc, addr, accepted.peer, role, mids);
        client.answer_sdp = accepted.answer_sdp;
        self.clients.push(client);
        self.shuttle();
        Ok(self.clients.len() - 1)
    }

    /// A room participant that joins without media ([`Sfu::join`]); it negotiates
    /// with [`Harness::negotiate`].
    pub fn join_participant(
        &mut self,
        room: &str,
        identity: &str,
        room_limit: Option<usize>,
    ) -> Result<usize, SfuError> {
        self.join_participant_with(room, identity, room_limit, true)
    }

    /// [`Harness::join_participant`] with the token's publish grant.
    pub fn join_participant_with(
        &mut self,
        room: &str,
        identity: &str,
        room_limit: Option<usize>,
        may_publish: bool,
    ) -> Result<usize, SfuError> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.next_port).parse().unwrap();
        self.next_port += 1;
        let room = RoomId::parse(room).unwrap();
        let peer = self.sfu.join(
            self.now,
            JoinRequest {
                room: &room,
                identity,
                name: identity,
                room_limit,
                may_publish,
            },
        )?;
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.clients.push(Client::new(
            rtc,
            addr,
            peer,
            PeerRole::Participant,
            Vec::new(),
        ));
        self.shuttle();
        Ok(self.clients.len() - 1)
    }

    /// A participant's (re-)offer: `change` edits the client's session and returns the
    /// m-lines it added (recorded as the client's); the SFU answers.
    pub fn negotiate(
        &mut self,
        client: usize,
        change: impl FnOnce(&mut SdpApi<'_>) -> Vec<(Mid, MediaKind)>,
    ) -> Result<(), SfuError> {
        let now = self.now;
        let c = &mut self.clients[client];
        let mut api = c.rtc.sdp_api();
        let added = change(&mut api);
        let (offer, pending) = api.apply().expect("the change makes an offer");
        let answer = self.sfu.negotiate(now, c.peer, &offer.to_sdp_string())?;
        c.rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
            )
            .expect("answer accepted");
        c.mids.extend(added);
        self.shuttle();
        Ok(())
    }

    /// The client's network changes: it is on a new address from now on and restarts
    /// ICE there.
    pub fn move_and_restart_ice(&mut self, client: usize) -> Result<(), SfuError> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.next_port).parse().unwrap();
        self.next_port += 1;
        self.clients[client].addr = addr;
        self.clients[client].offline = false;
        self.negotiate(client, |api| {
            api.ice_restart(false);
            Vec::new()
        })?;
        let c = &mut self.clients[client];
        c.rtc
            .add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.shuttle();
        Ok(())
    }

    /// A WHIP/WHEP client's network changes: it restarts ICE on its new address the
    /// RFC 9725 way, sending only new credentials ([`Sfu::restart_ice`]).
    pub fn move_and_restart_session_ice(&mut self, client: usize) -> Result<(), SfuError> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.next_port).parse().unwrap();
        self.next_port += 1;
        let now = self.now;
        let c = &mut self.clients[client];
        c.addr = addr;
        c.offline = false;
        let mut api = c.rtc.sdp_api();
        api.ice_restart(false);
        let (offer, pending) = api.apply().expect("an ICE restart makes an offer");
        let offer = offer.to_sdp_string();
        let value = |key: &str| {
            offer
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .expect("the offer has ICE credentials")
                .trim()
                .to_owned()
        };
        let creds = RemoteIceCreds::new(&value("a=ice-ufrag:"), &value("a=ice-pwd:"))
            .expect("str0m makes valid credentials");
        let answer = self.sfu.restart_ice(now, c.peer, &creds)?;
        c.rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
            )
            .expect("answer accepted");
        c.rtc
            .add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.shuttle();
        Ok(())
    }

    /// Advances virtual time by `d` in 5 ms steps, delivering everything on the way.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = self.now + Duration::from_millis(5);
            // The SFU's own deadlines come first (a pacer sends one packet per
            // timeout); time moves at least 100 µs per wake-up, as it would for real.
            let links = self
                .clients
                .iter()
                .filter_map(|c| c.downlink.as_ref()?.next_due());
            let at = match self.sfu.poll_timeout().into_iter().chain(links).min() {
                Some(t) if t < step => t.max(self.now + Duration::from_micros(100)),
                _ => step,
            };
            self.now = at.min(end.max(self.now + Duration::from_micros(100)));
            self.tick();
        }
    }

    /// Runs until every client is connected (or panics after 5 virtual seconds).
    pub fn connect_all(&mut self) {
        for _ in 0..1000 {
            if self.clients.iter().all(|c| c.connected || c.offline) {
                return;
            }
            self.run(Duration::from_millis(5));
        }
        panic!("clients did not connect");
    }

    pub fn tick(&mut self) {
        let now = self.now;
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        for c in &mut self.clients {
            if !c.offline {
                c.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
        }
        self.shuttle();
    }

    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // xorshift64*: deterministic loss pattern.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Moves datagrams both ways until nothing is in flight.
    pub fn shuttle(&mut self) {
        let now = self.now;
        let mut up: Vec<Transmit> = Vec::new();
        loop {
            let mut moved = false;
            for c in &mut self.clients {
                while let Some(t) = c.downlink.as_mut().and_then(|l| l.pop_due(now)) {
                    moved = true;
                    deliver(&mut c.rtc, now, &t);
                    poll_client(c, now, &mut up);
                }
            }
            for c in &mut self.clients {
                poll_client(c, now, &mut up);
            }
            for t in std::mem::take(&mut up) {
                if self.chance(self.loss_up) {
                    continue;
                }
                self.sfu
                    .handle_datagram(now, t.source, t.destination, &t.contents);
                moved = true;
            }
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                if self.chance(self.loss_down) {
                    continue;
                }
                let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination) else {
                    continue;
                };
                if c.offline {
                    continue;
                }
                if let Some(link) = c.downlink.as_mut() {
                    link.push(now, t);
                    continue;
                }
                deliver(&mut c.rtc, now, &t);
                poll_client(c, now, &mut up);
            }
            while let Some(e) = self.sfu.poll_event() {
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// One 20 ms Opus frame from a publisher.
    pub fn send_audio(&mut self, client: usize, payload: &[u8]) {
        self.send_audio_with_level(client, payload, None);
    }

    /// Audio with the RFC 6464 level extension (`level` in -dBov, as str0m takes it).
    pub fn send_audio_with_level(&mut self, client: usize, payload: &[u8], level: Option<i8>) {
        let now = self.now;
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Audio);
        let mut w = c.rtc.writer(mid).expect("audio writer");
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("opus negotiated")
            .pt();
        if let Some(l) = level {
            w = w.audio_level(l, l > -60);
        }
        w.write(
            pt,
            now,
            MediaTime::new(c.audio_time, Frequency::FORTY_EIGHT_KHZ),
            payload.to_vec(),
        )
        .unwrap();
        c.audio_time += 960;
        self.shuttle();
    }

    /// One VP8 frame: `keyframe` sets the VP8 payload header's P bit accordingly.
    pub fn send_video(&mut self, client: usize, keyframe: bool, body: &[u8]) -> Vec<u8> {
        let data = self.write_vp8(client, None, keyframe, body);
        self.clients[client].video_time += 3000;
        self.shuttle();
        data
    }

    /// One VP8 frame on each of the given simulcast layers, at the same media time:
    /// `(rid, keyframe, body)`. Returns what each layer carried.
    pub fn send_simulcast_frame(
        &mut self,
        client: usize,
        layers: &[(&str, bool, &[u8])],
    ) -> Vec<Vec<u8>> {
        let sent = layers
            .iter()
            .map(|(rid, keyframe, body)| self.write_vp8(client, Some(rid), *keyframe, body))
            .collect();
        self.clients[client].video_time += 3000;
        self.shuttle();
        sent
    }

    /// Writes one VP8 frame at the client's current video time (on layer `rid`).
    fn write_vp8(
        &mut self,
        client: usize,
        rid: Option<&str>,
        keyframe: bool,
        body: &[u8],
    ) -> Vec<u8> {
        let now = self.now;
        let mut data = body.to_vec();
        data[0] = if keyframe { data[0] & !1 } else { data[0] | 1 };
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Video);
        let mut w = c.rtc.writer(mid).expect("video writer");
        if let Some(r) = rid {
            w = w.rid(Rid::from(r));
        }
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8 negotiated")
            .pt();
        w.write(pt, now, MediaTime::from_90khz(c.video_time), data.clone())
            .unwrap();
        data
    }

    /// A subscriber client sends a PLI for its video.
    pub fn request_keyframe_from_client(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Video);
        if let Some(rx) = c.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        self.shuttle();
    }

    pub fn removed(&self, peer: PeerId) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, SfuEvent::PeerRemoved { peer: p, .. } if *p == peer))
    }
}

/// Hands a datagram from the SFU to a client.
/// Polls a client until its next timeout (str0m's drain invariant: every input is
/// followed by polling before the next): events are recorded, datagrams go to `up`.
fn poll_client(c: &mut Client, now: Instant, up: &mut Vec<Transmit>) {
    loop {
        match c.rtc.poll_output().unwrap() {
            Output::Timeout(_) => break,
            Output::Transmit(t) => {
                if !c.offline {
                    up.push(t)
                }
            }
            Output::Event(e) => match e {
                Event::Connected => c.connected = true,
                Event::MediaData(d) => c.frames.push(Frame {
                    mid: d.mid,
                    data: d.data.to_vec(),
                    picture_id: match d.codec_extra {
                        CodecExtra::Vp8(v) => v.picture_id,
                        _ => None,
                    },
                }),
                Event::KeyframeRequest(r) => {
                    c.keyframe_requests += 1;
                    c.keyframe_rids.push(r.rid);
                    c.keyframe_request_times.push(now);
                }
                // Padding (probing) carries no payload.
                Event::RtpPacket(p) if !p.payload.is_empty() => c.rtp.push(p.payload.to_vec()),
                _ => {}
            },
        }
    }
}

fn deliver(rtc: &mut Rtc, now: Instant, t: &Transmit) {
    let input = Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: t.source,
            destination: t.destination,
            contents: (&*t.contents).try_into().unwrap(),
        },
    );
    rtc.handle_input(input).unwrap();
}

/// Deterministic payload bytes for frame `n` of `len` bytes.
pub fn payload(n: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i * 7) as u8).collect()
}
