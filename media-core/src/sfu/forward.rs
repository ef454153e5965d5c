//! The hot path: one RTP packet from a publisher to every subscriber of its track.
//!
//! [`Sfu::forward`] reads on one screen: find the packet's track and layer, account
//! for it (`ingest`: codec, keyframe, audio level, recording), then write one copy per
//! subscriber (`send_to`) and release it at once. Nothing here allocates in steady
//! state; payloads are shared, never copied. A video copy towards a paced subscriber
//! first passes its m-line's [`Backlog`](crate::backlog::Backlog): pressure steps the
//! layer down, and a queue at its bound is shed.

use std::time::Instant;

use str0m::Input;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, Rid};
use str0m::rtp::{
    ExtensionValues, RtpPacket, RtpWrite, StreamTx, Vp8Descriptor, Vp8Patch, Vp8PatchError,
};
use tracing::warn;

use super::io::{drain_rtc, schedule};
use super::taps::tap_packet;
use super::{Deferred, KeyframeAsk, RelayOut, RemoveReason, Sfu, SfuStats};
use crate::PeerId;
use crate::backlog::{Admit, BacklogLimits};
use crate::keyframe::is_keyframe;
use crate::peer::{Peer, PeerState, TrackOut};
use crate::relay::RelayedPacket;
use crate::room::{RoomKey, TrackRef};
use crate::tap::TrackTap;

/// What every subscriber's copy of one packet shares.
struct Outgoing<'a> {
    pkt: &'a RtpPacket,
    params: PayloadParams,
    clock_rate: u32,
    /// The simulcast layer the packet belongs to.
    rid: Option<Rid>,
    keyframe: bool,
    /// Video: kept for retransmission, and held back until a keyframe of the layer.
    video: bool,
    ext: ExtensionValues,
    /// The VP8 descriptor with its picture id and TL0PICIDX, to be renumbered.
    vp8: Option<(Vp8Descriptor, u16, Option<u8>)>,
    /// The bound of a paced subscriber's video queue.
    backlog: BacklogLimits,
}

/// What became of one subscriber's copy.
enum Sent {
    /// Written; `stepped_down` when its queue's pressure lowered the layer.
    Yes {
        stepped_down: bool,
    },
    No,
    /// Not written: the subscriber's queue reached its bound and is being shed.
    Shed,
    /// Held back for a keyframe; `target` if the subscriber waits for this very layer.
    WaitingKeyframe {
        target: bool,
    },
}

impl Sfu {
    pub(super) fn forward(&mut self, now: Instant, from: PeerId, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some((key, ti, li)) = self.locate(now, from, &pkt) else {
            return;
        };
        self.fan_out(now, from, key, ti, li, &pkt);
    }

    /// One located packet of track `ti` (layer `li`) of a publisher, to every
    /// subscriber of the track.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        from: PeerId,
        key: RoomKey,
        ti: usize,
        li: usize,
        pkt: &RtpPacket,
    ) {
        let Some(out) = self.ingest(now, from, key, ti, li, pkt) else {
            return;
        };
        let Some(track) = self.rooms.get(&key).and_then(|r| r.tracks.get(ti)) else {
            return;
        };
        let mut waiting = false;
        let mut steer = false;
        for sub in &track.fanout {
            let Some(peer) = self.peers.get_mut(&sub.subscriber) else {
                continue;
            };
            match send_to(now, peer, sub.slot, &out, &mut self.stats) {
                Sent::Yes { stepped_down } => steer |= stepped_down,
                Sent::No => continue,
                Sent::Shed => {
                    steer = true;
                    continue;
                }
                Sent::WaitingKeyframe { target } => {
                    waiting |= target;
                    continue;
                }
            }
            // An unpaced packet leaves in this drain, not at the subscriber's next
            // timeout (str0m holds a written packet until then): no round trip
            // through the timer heap per packet. A paced one leaves when the pacer
            // says; releasing it at arrival would only reshape what the estimator
            // measures.
            if !peer.paced
                && let Err(e) = peer.rtc.handle_input(Input::Timeout(now))
            {
                warn!(peer = %peer.id, error = %e, "subscriber failed while sending");
                self.deferred
                    .push_back(Deferred::Remove(peer.id, RemoveReason::Failed));
            }
            let q = (&mut self.outbox, &mut self.pending, &mut self.deferred);
            drain_rtc(peer, q.0, q.1, q.2, &mut self.stats);
            schedule(&mut self.timers, &self.config, peer, now);
        }
        let is_audio = !out.video && out.ext.audio_level.is_some();
        if steer {
            // A queue under pressure took its layer down a step: the new target
            // needs its keyframe now.
            self.select_layers(now, key, ti);
        }
        self.after_fan_out(now, key, ti, li, out.keyframe, waiting);
        if is_audio {
            self.check_speaker(now, key);
        }
    }

    /// The packet's room, track index and layer index; learns a new layer (SSRC) from
    /// the publisher's `Rtc`.
    fn locate(
        &mut self,
        now: Instant,
        from: PeerId,
        pkt: &RtpPacket,
    ) -> Option<(RoomKey, usize, usize)> {
        let publisher = self.peers.get_mut(&from)?;
        if !publisher.role.publishes() {
            return None;
        }
        let key = publisher.room;
        let room = self.rooms.get_mut(&key)?;
        let ssrc = pkt.header.ssrc;
        for (i, t) in room.tracks.iter().enumerate() {
            if t.track.owner == from
                && let Some(li) = t.layer_index(ssrc)
            {
                return Some((key, i, li));
            }
        }
        let lookup = publisher
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|rx| (rx.mid(), rx.rid()));
        let q = (&mut self.outbox, &mut self.pending, &mut self.deferred);
        drain_rtc(publisher, q.0, q.1, q.2, &mut self.stats);
        schedule(&mut self.timers, &self.config, publisher, now);
        let Some((mid, rid)) = lookup else {
            self.stats.forward_errors += 1;
            return None;
        };
        let i = room.track_index(TrackRef { owner: from, mid })?;
        Some((key, i, room.tracks[i].add_layer(ssrc, rid)))
    }

    /// Accounts for the packet on its track (layer rates, codec, keyframes, audio
    /// level, recording) and says what its copies share; `None` when nothing is sent
    /// (muted, or a payload type the publisher did not negotiate).
    fn ingest<'a>(
        &mut self,
        now: Instant,
        from: PeerId,
        key: RoomKey,
        ti: usize,
        li: usize,
        pkt: &'a RtpPacket,
    ) -> Option<Outgoing<'a>> {
        let track = &mut self.rooms.get_mut(&key)?.tracks[ti];
        let rid = track.layers[li].rid;
        if track.count(now, li, pkt.payload.len()) {
            // Before this packet goes out, so a subscriber whose first target is this
            // layer can start on this very keyframe.
            self.select_layers(now, key, ti);
        }
        let publisher = self.peers.get_mut(&from)?;
        let room = self.rooms.get_mut(&key)?;
        let track = &mut room.tracks[ti];
        let pt = pkt.header.payload_type;
        if track.params.is_none_or(|p| p.pt() != pt) {
            track.params = publisher.rtc.codec_config().find(|p| p.pt() == pt).copied();
        }
        let Some(params) = track.params else {
            self.stats.forward_errors += 1;
            return None;
        };
        let spec = params.spec();
        let video = track.kind == MediaKind::Video;
        let keyframe = video && is_keyframe(spec.codec, &pkt.payload);
        if keyframe {
            track.keyframes.keyframe_received();
        }
        let ext = &pkt.header.ext_vals;
        if let Some(level) = ext.audio_level {
            track.audio_level.update(level, ext.voice_activity);
        }
        track.packets += 1;
        track.bytes += pkt.payload.len() as u64;
        if track.muted {
            return None;
        }
        if track.tap != TrackTap::Off
            && let Some(tap) = self.taps.get_mut(&room.id)
            && tap_packet(
                tap,
                track,
                &publisher.identity,
                rid,
                pkt,
                &spec,
                &mut self.stats,
            )
        {
            let ask = Deferred::Keyframe(key, track.track, KeyframeAsk::Targets);
            self.deferred.push_back(ask);
        }
        let origin = publisher.relayed.as_ref().map(|r| r.link);
        if track.exported
            && let Some(exports) = self.exports.get_mut(&room.id)
            // A shadow's packets go on only if some link is not the one they came by.
            && exports.iter().any(|e| e.takes(origin))
        {
            let relayed = RelayedPacket {
                track: track.relay_id,
                rid,
                pt: *pt,
                seq: *pkt.seq_no,
                timestamp: pkt.header.timestamp,
                ssrc: *pkt.header.ssrc,
                marker: pkt.header.marker,
                audio_level: ext.audio_level,
                voice_activity: ext.voice_activity,
                payload: pkt.payload.clone(),
            };
            for e in exports.iter_mut() {
                match e.offer(RelayOut::Packet(relayed.clone()), origin) {
                    Some(true) => self.stats.relayed_out += 1,
                    Some(false) => self.stats.relay_refused += 1,
                    None => {}
                }
            }
        }
        // VP8 picture ids are rewritten with the sequence numbers (layer and source
        // changes); a descriptor without them is left alone.
        let vp8 = (spec.codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
            .flatten()
            .and_then(|d| Some((d, d.picture_id()?, d.tl0_pic_idx())));
        Some(Outgoing {
            pkt,
            params,
            clock_rate: spec.clock_rate.get(),
            rid,
            keyframe,
            video,
            ext: ExtensionValues {
                audio_level: ext.audio_level,
                voice_activity: ext.voice_activity,
                video_orientation: ext.video_orientation,
                ..ExtensionValues::default()
            },
            vp8,
            backlog: BacklogLimits::new(self.config.video_queue_limit),
        })
    }

    /// Keyframe bookkeeping once every subscriber had its copy.
    fn after_fan_out(
        &mut self,
        now: Instant,
        key: RoomKey,
        ti: usize,
        li: usize,
        keyframe: bool,
        waiting: bool,
    ) {
        let Some(track) = self.rooms.get_mut(&key).and_then(|r| r.tracks.get_mut(ti)) else {
            return;
        };
        let rid = track.layers[li].rid;
        let requests = &mut track.layers[li].keyframes;
        if keyframe && !waiting {
            // Only once it reached everyone who waited: a keyframe one subscriber
            // took must not cancel the request made for another.
            requests.keyframe_received();
        }
        if waiting && requests.retry_due(now, self.config.keyframe_retry_interval) {
            let ask = Deferred::Keyframe(key, track.track, KeyframeAsk::Layer(rid));
            self.deferred.push_back(ask);
        }
    }
}

/// Writes one subscriber's copy of a packet into its `Rtc`: layer gate, payload type
/// mapping, sequence/timestamp and VP8 picture id rewriting.
fn send_to(
    now: Instant,
    peer: &mut Peer,
    slot: usize,
    p: &Outgoing<'_>,
    stats: &mut SfuStats,
) -> Sent {
    if peer.state != PeerState::Connected {
        return Sent::No;
    }
    let Some(out) = peer.tracks_out.get_mut(slot) else {
        return Sent::No;
    };
    if out.paused {
        return Sent::No;
    }
    let switching = p.video && !out.layer.forwards(p.rid);
    // Video starts, and changes layer, only on a keyframe of the chosen layer; the
    // munger makes the change invisible to the player.
    if switching && !(p.keyframe && out.layer.target() == Some(p.rid)) {
        stats.dropped_waiting_keyframe += 1;
        return Sent::WaitingKeyframe {
            target: out.layer.target() == Some(p.rid),
        };
    }
    let pt = p.pkt.header.payload_type;
    let out_pt = match out.pt_map.iter().find(|(i, _)| *i == pt) {
        Some((_, o)) => *o,
        None => {
            let negotiated = peer.rtc.media(out.mid).map(|m| m.remote_pts());
            let o = peer
                .rtc
                .codec_config()
                .match_params(p.params)
                .map(|p| p.pt())
                .filter(|p| negotiated.is_some_and(|n| n.contains(p)));
            if o.is_none() {
                let codec = p.params.spec().codec;
                warn!(subscriber = %peer.id, ?codec, "subscriber did not negotiate the publisher's codec");
            }
            out.pt_map.push((pt, o));
            o
        }
    };
    let Some(out_pt) = out_pt else {
        stats.forward_errors += 1;
        return Sent::No;
    };
    let paced = peer.paced;
    let mut api = peer.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(out.mid, None) else {
        stats.forward_errors += 1;
        return Sent::No;
    };
    let stepped_down = if p.video && paced {
        match admit_to_queue(now, tx, out, p, stats) {
            Ok(stepped_down) => stepped_down,
            Err(not_sent) => return not_sent,
        }
    } else {
        false
    };
    if switching {
        out.layer.on_keyframe(p.rid);
        out.switch_source();
    }
    let pkt = p.pkt;
    let Some((seq, ts)) = out
        .munger
        .rewrite(now, *pkt.seq_no, pkt.header.timestamp, p.clock_rate)
    else {
        return Sent::No;
    };
    let patch = p.vp8.and_then(|(d, pid, tl0)| {
        let (out_pid, out_tl0) = out.pictures.rewrite(pid, tl0);
        ((out_pid, out_tl0) != (pid, tl0)).then(|| vp8_patch(d, out_pid, out_tl0))?
    });
    let mut w = RtpWrite::new(out_pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
        .marker(pkt.header.marker)
        .ext_vals(p.ext.clone())
        .nackable(p.video);
    if let Some(patch) = patch {
        w = w.vp8_patch(patch);
    }
    tx.write_rtp(w);
    stats.rtp_forwarded += 1;
    Sent::Yes { stepped_down }
}

/// A paced video copy passes its m-line's [`Backlog`](crate::backlog::Backlog) before
/// it is written: `Ok` (with whether the queue's pressure stepped the layer down) or
/// what became of it.
fn admit_to_queue(
    now: Instant,
    tx: &StreamTx,
    out: &mut TrackOut,
    p: &Outgoing<'_>,
    stats: &mut SfuStats,
) -> Result<bool, Sent> {
    if let Some(q) = tx.queue_info() {
        out.backlog
            .sample(q.created_at(), q.byte_size(), q.first_unsent());
    }
    let limits = &p.backlog;
    let admit = out
        .backlog
        .admit(now, limits, p.pkt.header.timestamp, p.pkt.payload.len());
    let stepped_down = out.backlog.step_down(now, limits);
    if stepped_down {
        out.layer.step_down(now + limits.pressure_hold);
        stats.backlog_steps_down += 1;
    }
    match admit {
        Admit::Send => Ok(stepped_down),
        Admit::Drop => {
            stats.backlog_dropped += 1;
            Err(Sent::No)
        }
        Admit::Shed => {
            stats.backlog_sheds += 1;
            stats.backlog_dropped += 1;
            out.layer.interrupt();
            Err(Sent::Shed)
        }
    }
}

/// The descriptor patch that sets a VP8 packet's picture id and TL0PICIDX. A 7-bit
/// picture id keeps its width (the low bits continue just the same).
fn vp8_patch(d: Vp8Descriptor, pid: u16, tl0: Option<u8>) -> Option<Vp8Patch> {
    let build = |pid: u16| {
        let mut b = d.patch().picture_id(pid);
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        b.build()
    };
    match build(pid) {
        Ok(p) => Some(p),
        Err(Vp8PatchError::PictureIdTooLarge) => build(pid & 0x7f).ok(),
        Err(_) => None,
    }
}
