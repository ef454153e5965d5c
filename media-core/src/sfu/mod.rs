//! `Sfu`: the peers and rooms of one worker, and the packet routing between them.
//!
//! One struct, split by concept in str0m's manner, each part an `impl Sfu` block of
//! its own module:
//! - `api`: settings, requests, events, errors and counters;
//! - `io`: datagrams and timeouts in, transmits out; the drain and timer discipline;
//! - `lifecycle`: peers joining, negotiating, restarting ICE and leaving;
//! - `subscriptions`: published tracks and the subscriber slots they feed;
//! - `forward`: the hot path, one RTP packet to every subscriber of its track;
//! - `steering`: simulcast layers, the subscribers' estimators, the active speaker;
//! - `keyframes`: keyframe requests to publishers;
//! - `taps`: recording;
//! - `relays`: rooms exported to and imported from other nodes;
//! - `sdp`: what the core reads from an offer itself.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::{MediaKind, Rid};
use str0m::net::{DatagramSend, Transmit};
use str0m::{Event, Rtc};

use crate::demux::Demux;
use crate::peer::Peer;
use crate::room::{Room, RoomKey, TrackRef};
use crate::tap::Tap;
use crate::timers::TimerQueue;
use crate::{PeerId, RoomId};

mod api;
mod forward;
mod io;
mod keyframes;
mod lifecycle;
mod relays;
mod sdp;
mod steering;
mod subscriptions;
mod taps;

pub use api::{
    Accepted, DEFAULT_SEND_BUFFER_VIDEO, DEFAULT_VIDEO_QUEUE_LIMIT, JoinRequest, OfferRequest,
    ParticipantInfo, PublishedTrack, RemoveReason, SfuConfig, SfuError, SfuEvent, SfuStats,
    TrackInfo,
};
pub use relays::{RelayIn, RelayOut, RelaySink};

/// Work that must wait until the current drain is finished.
#[derive(Debug)]
enum Deferred {
    Keyframe(RoomKey, TrackRef, KeyframeAsk),
    Remove(PeerId, RemoveReason),
}

/// Which layers of a track a keyframe request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyframeAsk {
    /// Every layer some subscriber (or the recording) targets.
    Targets,
    /// The layers whose deferred request is pending (its timer came due); nothing
    /// when a keyframe arrived meanwhile.
    Pending,
    /// One layer a connected subscriber still waits for.
    Layer(Option<Rid>),
}

/// The SFU core of one worker. See the crate docs for the run loop.
pub struct Sfu {
    config: SfuConfig,
    dtls_cert: Option<DtlsCert>,
    next_peer: u64,
    next_room: u32,
    /// Boxed: a `Peer` holds its `Rtc` inline (some 10 kB), which the table would
    /// otherwise hold per slot, with its slack, and move on every growth.
    /// Keyed by ids this `Sfu` assigns: a fast hash, as no one else picks the keys.
    peers: FxHashMap<PeerId, Box<Peer>>,
    rooms: FxHashMap<RoomKey, Room>,
    room_keys: HashMap<RoomId, RoomKey>,
    demux: Demux,
    timers: TimerQueue,
    outbox: Outbox,
    events: VecDeque<SfuEvent>,
    /// Events drained from `Rtc`s, handled after the drain that produced them.
    pending: VecDeque<(PeerId, Event)>,
    deferred: VecDeque<Deferred>,
    /// Scratch list of the timer entries due in one `handle_timeout`.
    due: Vec<(Instant, PeerId)>,
    /// Recorded rooms. Keyed by id, not key: a tap outlives its room emptying.
    taps: HashMap<RoomId, Tap>,
    /// Exported rooms ([`relays`]). Keyed by id: an export outlives its room emptying.
    exports: HashMap<RoomId, Vec<relays::Export>>,
    next_relay_track: u32,
    /// The shadows of each (room, link), and how many there are.
    imports: HashMap<(RoomId, u64), relays::Imported>,
    shadows: usize,
    stats: SfuStats,
}

/// Datagrams on their way out, and the buffers of sent ones on their way back.
#[derive(Default)]
pub(super) struct Outbox {
    transmits: VecDeque<Transmit>,
    /// Buffers of sent datagrams ([`Sfu::recycle`]), used last in, first out. Each
    /// `Rtc` is handed one before it is polled, so its SRTP output reuses them
    /// instead of allocating.
    spare: Vec<DatagramSend>,
    /// The fewest buffers `spare` held since the last trim: that many at its bottom
    /// went unused in this interval.
    low_water: usize,
    /// The same for each of the last [`SPARE_KEPT_INTERVALS`] intervals, oldest first:
    /// the buffers at `spare`'s bottom below all of them went unused for that long, and
    /// a trim frees them, so a burst's buffers (a wave of joins) do not stay for the
    /// worker's life, while a keyframe's fan-out finds the buffers of the largest one
    /// in that time.
    lows: [usize; SPARE_KEPT_INTERVALS],
    next_trim: Option<Instant>,
}

/// The most sent-datagram buffers a worker keeps between trims: above one flush of a
/// fan-out to a thousand subscribers (about 5 MB at most, kept for a minute after the
/// burst that made them).
const SPARE_BUFFERS: usize = 4096;

/// How often the spare buffers that went unused are freed. Longer than the keyframe
/// interval of most encoders (2–5 s): at 2 s, an interval between two keyframes freed
/// the buffers of a keyframe's fan-out, and the next keyframe allocated them again.
const SPARE_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// How many intervals a buffer must go unused to be freed (a minute). With one
/// interval, each trim freed what the last keyframes had not needed, and the next
/// larger keyframe allocated buffers again (0.0017 heap operations per forwarded
/// packet at video N = 10); now that happens only for the largest of a minute.
const SPARE_KEPT_INTERVALS: usize = 6;

impl Outbox {
    pub(super) fn push(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    /// Hands `rtc` a spare buffer for its next datagram (str0m holds one per `Rtc`
    /// and gives back the one it already held).
    pub(super) fn arm(&mut self, rtc: &mut Rtc) {
        let Some(buf) = self.spare.pop() else {
            return;
        };
        match rtc.recycle_datagram(buf) {
            Some(unused) => self.spare.push(unused),
            None => self.low_water = self.low_water.min(self.spare.len()),
        }
    }

    fn recycle(&mut self, buf: DatagramSend) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    /// Frees the buffers that sat unused through the last [`SPARE_KEPT_INTERVALS`]
    /// intervals.
    pub(super) fn trim(&mut self, now: Instant) {
        let Some(due) = self.next_trim else {
            self.low_water = self.spare.len();
            self.next_trim = Some(now + SPARE_TRIM_INTERVAL);
            return;
        };
        if now < due {
            return;
        }
        // Every interval since the last trim saw no fewer buffers than `low_water` (a
        // worker with nothing due for long trims late: its burst still goes a minute on).
        let elapsed = 1 + (now - due).as_nanos() / SPARE_TRIM_INTERVAL.as_nanos();
        let elapsed = (elapsed as usize).min(SPARE_KEPT_INTERVALS);
        self.lows.rotate_left(elapsed);
        self.lows[SPARE_KEPT_INTERVALS - elapsed..].fill(self.low_water);
        let unused = self.lows.iter().copied().min().unwrap_or(0);
        self.spare.drain(..unused);
        for low in &mut self.lows {
            *low -= unused;
        }
        self.low_water = self.spare.len();
        self.next_trim = Some(now + SPARE_TRIM_INTERVAL);
    }
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("peers", &self.peers.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        // Idempotent: the first call in a process wins.
        str0m::crypto::from_feature_flags().install_process_default();
        // One certificate per worker: generating one per peer costs a key generation
        // on every join.
        let dtls_cert =
            CryptoProvider::get_default().and_then(|p| p.dtls_provider.generate_certificate());
        Sfu {
            config,
            dtls_cert,
            next_peer: 1,
            next_room: 1,
            peers: FxHashMap::default(),
            rooms: FxHashMap::default(),
            room_keys: HashMap::new(),
            demux: Demux::default(),
            timers: TimerQueue::default(),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            pending: VecDeque::with_capacity(64),
            deferred: VecDeque::new(),
            due: Vec::with_capacity(64),
            taps: HashMap::new(),
            exports: HashMap::new(),
            next_relay_track: 1,
            imports: HashMap::new(),
            shadows: 0,
            stats: SfuStats::default(),
        }
    }

    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    /// The peers this worker serves (shadows of other nodes' participants are not
    /// counted: their own node counts them).
    pub fn peer_count(&self) -> usize {
        self.peers.len().saturating_sub(self.shadows)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn track_count(&self) -> usize {
        self.rooms.values().map(|r| r.tracks.len()).sum()
    }

    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Every peer of this worker.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// A peer's room and identity.
    pub fn peer_room(&self, peer: PeerId) -> Option<(&RoomId, &str)> {
        let p = self.peers.get(&peer)?;
        let room = self.rooms.get(&p.room)?;
        Some((&room.id, &p.identity))
    }

    /// The name a peer's participants see.
    pub fn peer_name(&self, peer: PeerId) -> Option<&str> {
        self.peers.get(&peer).map(|p| p.name.as_str())
    }

    /// The tracks published in a room, in publish order.
    pub fn room_tracks(&self, room: &RoomId) -> Vec<TrackInfo> {
        let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get(k)) else {
            return Vec::new();
        };
        r.tracks
            .iter()
            .map(|t| TrackInfo {
                peer: t.track.owner,
                mid: t.track.mid,
                kind: t.kind,
                subscribers: t.fanout.len(),
                packets: t.packets,
                audio_level: (t.kind == MediaKind::Audio).then(|| t.audio_level.dbov()),
            })
            .collect()
    }

    /// What a peer's video m-lines have waiting in its pacer, by str0m's last sample
    /// of each queue (bytes).
    pub fn send_queue_bytes(&mut self, peer: PeerId) -> usize {
        let Some(p) = self.peers.get_mut(&peer) else {
            return 0;
        };
        let mids: Vec<_> = p
            .tracks_out
            .iter()
            .filter(|o| o.kind == MediaKind::Video)
            .map(|o| o.mid)
            .collect();
        let mut api = p.rtc.direct_api();
        mids.into_iter()
            .filter_map(|mid| Some(api.stream_tx_by_mid(mid, None)?.queue_info()?.byte_size()))
            .sum()
    }

    /// Entries in the timer heap, live and stale.
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Table sizes, for leak checks: (peers, rooms, demux addresses, demux ufrags).
    pub fn table_sizes(&self) -> (usize, usize, usize, usize) {
        let (a, u) = self.demux.len();
        (self.peers.len(), self.rooms.len(), a, u)
    }

    /// Handles drained events and deferred work until nothing is left.
    fn process(&mut self, now: Instant) {
        loop {
            if let Some((id, ev)) = self.pending.pop_front() {
                self.on_event(now, id, ev);
            } else if let Some(d) = self.deferred.pop_front() {
                match d {
                    Deferred::Keyframe(room, track, ask) => {
                        self.request_keyframe(now, room, track, ask)
                    }
                    Deferred::Remove(id, reason) => self.remove_now(id, Some(reason)),
                }
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::RtcConfig;

    fn buffer(len: usize) -> DatagramSend {
        vec![0u8; len].into()
    }

    /// A fixed origin for virtual time and a pool of `n` spare buffers of `len` bytes.
    fn pool_of(n: usize, len: usize) -> (Instant, Outbox) {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut out = Outbox::default();
        for _ in 0..n {
            out.recycle(buffer(len));
        }
        (t0, out)
    }

    #[test]
    fn an_armed_rtc_holds_one_buffer_and_the_pool_keeps_the_rest() {
        let (t0, mut out) = pool_of(3, 1200);
        let mut rtc = RtcConfig::new().build(t0);
        out.arm(&mut rtc);
        assert_eq!(out.spare.len(), 2, "one buffer went to the Rtc");
        out.arm(&mut rtc);
        assert_eq!(
            out.spare.len(),
            2,
            "an Rtc holds one: the one it had came back"
        );
    }

    #[test]
    fn buffers_unused_for_a_minute_are_freed_and_used_ones_stay() {
        let (t0, mut out) = pool_of(10, 100);
        out.trim(t0); // starts the first interval
        assert_eq!(out.spare.len(), 10);
        // During the interval a burst takes four and gives them back.
        let mut rtcs: Vec<_> = (0..4).map(|_| RtcConfig::new().build(t0)).collect();
        for rtc in &mut rtcs {
            out.arm(rtc);
        }
        for _ in 0..4 {
            out.recycle(buffer(100));
        }
        out.trim(t0 + SPARE_TRIM_INTERVAL / 2);
        assert_eq!(out.spare.len(), 10, "no trim before the interval ends");
        let interval = |k: u32| t0 + k * SPARE_TRIM_INTERVAL;
        for k in 1..SPARE_KEPT_INTERVALS as u32 {
            out.trim(interval(k));
            assert_eq!(out.spare.len(), 10, "not unused for long enough at {k}");
        }
        out.trim(interval(SPARE_KEPT_INTERVALS as u32));
        assert_eq!(out.spare.len(), 4, "the six never taken are freed");
        // The burst's four went unused since its interval: freed one interval later.
        out.trim(interval(SPARE_KEPT_INTERVALS as u32 + 1));
        assert!(out.spare.is_empty());
    }

    #[test]
    fn a_late_trim_counts_every_interval_that_passed() {
        let (t0, mut out) = pool_of(5, 100);
        out.trim(t0);
        // Nothing due for over a minute: the five went unused all that time.
        out.trim(t0 + SPARE_TRIM_INTERVAL * (SPARE_KEPT_INTERVALS as u32 + 1));
        assert!(out.spare.is_empty());
    }

    #[test]
    fn a_burst_within_the_kept_intervals_keeps_its_buffers() {
        let (t0, mut out) = pool_of(8, 1200);
        out.trim(t0);
        // A keyframe's fan-out every third interval takes all eight: none is ever
        // freed, so no keyframe allocates.
        for k in 1..=4 * SPARE_KEPT_INTERVALS as u32 {
            if k % 3 == 0 {
                let mut rtcs: Vec<_> = (0..8).map(|_| RtcConfig::new().build(t0)).collect();
                for rtc in &mut rtcs {
                    out.arm(rtc);
                }
                assert!(out.spare.is_empty());
                for _ in 0..8 {
                    out.recycle(buffer(1200));
                }
            }
            out.trim(t0 + k * SPARE_TRIM_INTERVAL);
            assert_eq!(out.spare.len(), 8, "trim {k}");
        }
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut out = Outbox::default();
        for _ in 0..SPARE_BUFFERS + 10 {
            out.recycle(buffer(1));
        }
        assert_eq!(out.spare.len(), SPARE_BUFFERS);
    }
}
