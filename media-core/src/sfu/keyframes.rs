//! Keyframe requests to publishers: per layer, coalesced over subscribers and
//! rate-limited ([`crate::room::KeyframeRequests`]), deferred when too soon.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use tracing::debug;

use super::io::schedule;
use super::{Deferred, KeyframeAsk, Sfu};
use crate::PeerId;
use crate::room::{KeyframeDecision, RoomKey, TrackRef};
use crate::tap::TrackTap;

impl Sfu {
    /// Asks for keyframes of every video source feeding `sub`.
    pub(super) fn request_keyframes_for(&mut self, sub: PeerId) {
        let Some(peer) = self.peers.get(&sub) else {
            return;
        };
        for out in &peer.tracks_out {
            if let (Some(src), MediaKind::Video) = (out.source, out.kind) {
                self.deferred
                    .push_back(Deferred::Keyframe(peer.room, src, KeyframeAsk::Targets));
            }
        }
    }

    /// Asks a publisher for a keyframe of `track` (the layers `ask` names), subject to
    /// coalescing.
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        key: RoomKey,
        track: TrackRef,
        ask: KeyframeAsk,
    ) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(t) = room.tracks.iter_mut().find(|t| t.track == track) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        // The layers asked for (at most three): one, or every layer some subscriber
        // or the recording targets. Subscribers without a target yet get theirs at the
        // next packet, which asks again.
        let mut rids: [Option<Rid>; 3] = [None; 3];
        let mut n = 0;
        let mut add = |r: Option<Rid>| {
            if n < rids.len() && !rids[..n].contains(&r) {
                rids[n] = r;
                n += 1;
            }
        };
        match ask {
            KeyframeAsk::Layer(r) => add(r),
            KeyframeAsk::Targets | KeyframeAsk::Pending => {
                for sub in &t.fanout {
                    if let Some(r) = self
                        .peers
                        .get(&sub.subscriber)
                        .and_then(|p| p.tracks_out.get(sub.slot))
                        .and_then(|o| o.layer.target())
                    {
                        add(r);
                    }
                }
                if let TrackTap::On(r) = t.tap {
                    add(r);
                }
            }
        }
        let only_if_pending = ask == KeyframeAsk::Pending;
        let interval = self.config.keyframe_min_interval;
        // Per layer: (rid, what to do). Before the first packet there are no layers:
        // the track's only stream is asked, under the track's own limiter.
        let mut asks: [(Option<Rid>, Option<KeyframeDecision>); 3] = [(None, None); 3];
        let mut m = 0;
        if t.layers.is_empty() {
            let pending = t.keyframes.pending_deadline(interval).is_some();
            if !only_if_pending || pending {
                asks[0] = (None, Some(t.keyframes.request(now, interval)));
                m = 1;
            }
        } else {
            for rid in &rids[..n] {
                let Some(layer) = t.layers.iter_mut().find(|l| l.rid == *rid) else {
                    continue;
                };
                let pending = layer.keyframes.pending_deadline(interval).is_some();
                if only_if_pending && !pending {
                    continue;
                }
                asks[m] = (*rid, Some(layer.keyframes.request(now, interval)));
                m += 1;
            }
        }
        if self
            .peers
            .get(&track.owner)
            .is_some_and(|p| p.relayed.is_some())
        {
            // An import: the exporting node's publisher is asked, over the link.
            let mut sent = false;
            for (rid, decision) in &asks[..m] {
                match decision {
                    Some(KeyframeDecision::SendNow) => {
                        sent |= self.ask_exporter(track.owner, track.mid, *rid);
                    }
                    Some(KeyframeDecision::Deferred(at)) => {
                        if let Some(p) = self.peers.get_mut(&track.owner) {
                            p.keyframe_deadline =
                                Some(p.keyframe_deadline.map_or(*at, |k| k.min(*at)));
                        }
                    }
                    None => {}
                }
            }
            if sent {
                self.stats.keyframe_requests += 1;
            }
            if let Some(p) = self.peers.get_mut(&track.owner) {
                schedule(&mut self.timers, &self.config, p, now);
            }
            return;
        }
        let Some(publisher) = self.peers.get_mut(&track.owner) else {
            return;
        };
        let mut sent = false;
        let mut missing = false;
        for (rid, decision) in &asks[..m] {
            match decision {
                Some(KeyframeDecision::SendNow) => {
                    let ok = publisher
                        .rtc
                        .direct_api()
                        .stream_rx_by_mid(track.mid, *rid)
                        .map(|rx| rx.request_keyframe(KeyframeRequestKind::Pli))
                        .is_some();
                    sent |= ok;
                    missing |= !ok;
                }
                Some(KeyframeDecision::Deferred(at)) => {
                    publisher.keyframe_deadline =
                        Some(publisher.keyframe_deadline.map_or(*at, |k| k.min(*at)));
                }
                None => {}
            }
        }
        if missing {
            // No incoming stream yet: ask again once the interval has passed.
            let at = now + interval;
            publisher.keyframe_deadline =
                Some(publisher.keyframe_deadline.map_or(at, |k| k.min(at)));
        }
        if sent {
            self.stats.keyframe_requests += 1;
            debug!(publisher = %track.owner, mid = %track.mid, rids = ?&rids[..n], "keyframe requested");
            self.drain(now, track.owner);
        } else if let Some(publisher) = self.peers.get_mut(&track.owner) {
            schedule(&mut self.timers, &self.config, publisher, now);
        }
    }
}
