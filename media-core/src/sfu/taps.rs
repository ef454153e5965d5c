//! Recording taps: a recorded room's tracks are offered to its sink, which never
//! blocks the worker.

use str0m::media::{MediaKind, Rid};
use str0m::rtp::RtpPacket;
use tracing::info;

use super::{Sfu, SfuError, SfuStats};
use crate::RoomId;
use crate::room::TrackIn;
use crate::tap::{MediaTap, SenderClock, Tap, TapItem, TapPacket, TapStats, TapTrack, TrackTap};

impl Sfu {
    /// Starts offering a room's media to `sink` (the room need not exist yet: tracks
    /// published later are recorded too). Each track is announced at its first
    /// packet once its layer is chosen, and a video track's recording starts with a
    /// keyframe request.
    pub fn start_tap(&mut self, room: RoomId, sink: Box<dyn MediaTap>) -> Result<(), SfuError> {
        if self.taps.contains_key(&room) {
            return Err(SfuError::NotAllowed("the room is already being recorded"));
        }
        if let Some(r) = self
            .room_keys
            .get(&room)
            .and_then(|k| self.rooms.get_mut(k))
        {
            for t in &mut r.tracks {
                t.tap = TrackTap::Waiting;
            }
        }
        info!(%room, "recording tap started");
        self.taps.insert(room, Tap::new(sink));
        Ok(())
    }

    /// Removes a room's tap and returns it; nothing more is offered to it.
    pub fn stop_tap(&mut self, room: &RoomId) -> Option<(Box<dyn MediaTap>, TapStats)> {
        let tap = self.taps.remove(room)?;
        if let Some(r) = self.room_keys.get(room).and_then(|k| self.rooms.get_mut(k)) {
            for t in &mut r.tracks {
                t.tap = TrackTap::Off;
            }
        }
        let stats = tap.stats;
        info!(%room, offered = stats.offered, refused = stats.refused, "recording tap stopped");
        Some((tap.sink, stats))
    }

    pub fn tap_stats(&self, room: &RoomId) -> Option<TapStats> {
        self.taps.get(room).map(|t| t.stats)
    }
}

/// Offers a packet of a tapped track, first announcing the track once its recorded
/// layer can be chosen. True when the track was just announced and is video (the
/// caller asks for a keyframe).
pub(super) fn tap_packet(
    tap: &mut Tap,
    track: &mut TrackIn,
    identity: &str,
    rid: Option<Rid>,
    pkt: &RtpPacket,
    spec: &str0m::format::CodecSpec,
    stats: &mut SfuStats,
) -> bool {
    let mut announced = false;
    if track.tap == TrackTap::Waiting {
        let mut layers = [None; 3];
        let mut measured = [None; 3];
        let nl = track.layers.len().min(3);
        let nm = track.layer_infos.len().min(3);
        for (d, l) in layers.iter_mut().zip(&track.layers) {
            *d = l.rid;
        }
        for (d, (r, _)) in measured.iter_mut().zip(&track.layer_infos) {
            *d = *r;
        }
        let Some(chosen) = crate::tap::choose_layer(&layers[..nl], &measured[..nm]) else {
            return false;
        };
        track.tap = TrackTap::On(chosen);
        tap.offer(
            TapItem::Track(TapTrack {
                track: track.track,
                identity: identity.to_owned(),
                kind: track.kind,
                codec: spec.codec,
                clock_rate: spec.clock_rate.get(),
                channels: spec.channels.unwrap_or(1),
                rid: chosen,
            }),
            stats,
        );
        announced = track.kind == MediaKind::Video;
    }
    if track.tap != TrackTap::On(rid) {
        return announced;
    }
    let rtp_time = pkt.time.numer() as i64;
    let sender_clock = pkt.last_sender_info.map(|si| SenderClock {
        ntp_time: si.ntp_time,
        rtp_time: crate::tap::extend_report_time(
            rtp_time,
            pkt.header.timestamp,
            si.rtp_time.numer() as u32,
        ),
    });
    tap.offer(
        TapItem::Packet(TapPacket {
            track: track.track,
            seq: *pkt.seq_no,
            rtp_time,
            marker: pkt.header.marker,
            payload: pkt.payload.clone(),
            arrival: pkt.timestamp,
            sender_clock,
        }),
        stats,
    );
    announced
}
