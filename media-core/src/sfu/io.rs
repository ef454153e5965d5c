//! The sans-IO surface: datagrams and timeouts in, transmits and events out, and the
//! discipline behind it: every `Rtc` is drained after each mutation (str0m's invariant)
//! and woken through one timer heap.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::{DatagramRecv, DatagramSend, Protocol, Receive, Transmit};
use str0m::{Event, Input, Output};
use tracing::{debug, warn};

use super::{Deferred, KeyframeAsk, Outbox, RemoveReason, Sfu, SfuConfig, SfuEvent, SfuStats};
use crate::PeerId;
use crate::peer::{Peer, PeerState};
use crate::room::TrackRef;
use crate::timers::TimerQueue;

impl Sfu {
    /// One UDP datagram from `source` that arrived on the worker socket `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.handle_packet(now, Protocol::Udp, source, destination, data);
    }

    /// One packet from `source` that arrived on the worker's `destination`: a UDP
    /// datagram, or one RFC 4571 frame of an ICE-TCP connection (whose remote address
    /// is `source`).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let advertised = match proto {
            Protocol::Tcp => &self.config.tcp_candidates,
            _ => &self.config.candidates,
        };
        let destination = if advertised.contains(&destination) {
            destination
        } else {
            advertised.first().copied().unwrap_or(destination)
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let id = match self.demux.lookup_addr(&source) {
            Some(id) => id,
            None => {
                let Some(id) = self.demux.lookup_stun(data) else {
                    self.stats.datagrams_dropped += 1;
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    self.stats.datagrams_dropped += 1;
                    return;
                };
                if !peer.rtc.accepts(&input) {
                    self.stats.datagrams_dropped += 1;
                    return;
                }
                self.demux.learn(source, id, &mut peer.addrs);
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        peer.last_proto = proto;
        peer.last_source = source;
        if let Err(e) = peer.rtc.handle_input(input) {
            // Bad input for this peer only; str0m rejects it and stays consistent.
            debug!(peer = %id, error = %e, "datagram rejected");
            self.stats.datagrams_dropped += 1;
        }
        self.drain(now, id);
        self.process(now);
    }

    /// Advances time: services every peer whose deadline has passed.
    /// Each due peer is serviced once per call: a paced `Rtc` releases what its pacer
    /// allows now, and is served again at the next call, after the socket has been read.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(entry) = self.timers.pop_due(now) {
            due.push(entry);
        }
        for (at, id) in due.drain(..) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue; // stale entry; the live one is elsewhere in the heap
            }
            peer.scheduled = None;
            self.service(now, id);
        }
        self.due = due;
        self.process(now);
        self.outbox.trim(now);
    }

    /// The next datagram to send. `source` is the candidate it leaves from.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.transmits.pop_front()
    }

    /// Takes back the buffer of a datagram from [`Sfu::poll_transmit`] once it is
    /// sent: a later SRTP datagram of any peer is written into it. A driver that
    /// hands every sent buffer back forwards without allocating.
    pub fn recycle(&mut self, contents: DatagramSend) {
        self.outbox.recycle(contents);
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should be called next. May be early, never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Lifecycle checks, due keyframe requests and the `Rtc`'s own timeout.
    fn service(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.state {
            PeerState::Connecting if now >= peer.created + self.config.connect_timeout => {
                self.deferred
                    .push_back(Deferred::Remove(id, RemoveReason::ConnectTimeout));
                return;
            }
            PeerState::Disconnected { since } if now >= since + self.config.disconnect_grace => {
                self.deferred
                    .push_back(Deferred::Remove(id, RemoveReason::Disconnected));
                return;
            }
            _ => {}
        }
        if peer.keyframe_deadline.is_some_and(|t| t <= now) {
            peer.keyframe_deadline = None;
            let room = peer.room;
            for mid in peer.published.clone() {
                self.deferred.push_back(Deferred::Keyframe(
                    room,
                    TrackRef { owner: id, mid },
                    KeyframeAsk::Pending,
                ));
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if now < peer.rtc_deadline {
            schedule(&mut self.timers, &self.config, peer, now);
            return;
        }
        // A paced `Rtc` releases in this one drain what its pacer allows now, up to
        // `PACED_RELEASES_PER_TIMEOUT` packets: a burst (a keyframe, a fan-out) costs
        // one timeout, not one per packet.
        if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
            warn!(peer = %id, error = %e, "peer failed on timeout");
            self.deferred
                .push_back(Deferred::Remove(id, RemoveReason::Failed));
            return;
        }
        let q = (&mut self.outbox, &mut self.pending, &mut self.deferred);
        drain_rtc(peer, q.0, q.1, q.2, &mut self.stats);
        schedule(&mut self.timers, &self.config, peer, now);
    }

    /// Drains one `Rtc` until it reports its next timeout (str0m's single-mutation
    /// invariant), then reschedules the peer.
    pub(super) fn drain(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        drain_rtc(
            peer,
            &mut self.outbox,
            &mut self.pending,
            &mut self.deferred,
            &mut self.stats,
        );
        schedule(&mut self.timers, &self.config, peer, now);
    }
}

/// Polls one `Rtc` until it returns a timeout. Events are queued for `Sfu::process`;
/// an error schedules the peer's removal.
pub(super) fn drain_rtc(
    peer: &mut Peer,
    outbox: &mut Outbox,
    pending: &mut VecDeque<(PeerId, Event)>,
    deferred: &mut VecDeque<Deferred>,
    stats: &mut SfuStats,
) {
    // Only a transmitted datagram can use up the armed buffer: arm before the first
    // poll and after each transmit, not before every poll.
    outbox.arm(&mut peer.rtc);
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                peer.rtc_deadline = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                stats.datagrams_out += 1;
                stats.bytes_out += t.contents.len() as u64;
                outbox.push(t);
                outbox.arm(&mut peer.rtc);
            }
            Ok(Output::Event(e)) => pending.push_back((peer.id, e)),
            Err(e) => {
                warn!(peer = %peer.id, error = %e, "peer failed");
                deferred.push_back(Deferred::Remove(peer.id, RemoveReason::Failed));
                // An inert Rtc produces nothing more; a far deadline keeps it off the heap.
                peer.rtc.disconnect();
                peer.rtc_deadline = far_future(peer.created);
                return;
            }
        }
        if !peer.rtc.is_alive() {
            peer.rtc_deadline = far_future(peer.created);
            return;
        }
    }
}

pub(super) fn far_future(from: Instant) -> Instant {
    from + Duration::from_secs(365 * 24 * 3600)
}

pub(super) fn schedule(
    timers: &mut TimerQueue,
    config: &SfuConfig,
    peer: &mut Peer,
    _now: Instant,
) {
    let connect_deadline = peer.created + config.connect_timeout;
    let grace = match peer.state {
        PeerState::Disconnected { since } => Some(since + config.disconnect_grace),
        _ => None,
    };
    let at = peer.wake_at(connect_deadline, grace);
    timers.schedule(peer.id, at, &mut peer.scheduled);
}
