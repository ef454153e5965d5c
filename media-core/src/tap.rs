//! Recording taps: a copy of a room's incoming media, handed to a recorder.
//!
//! A room with a tap offers every packet of its recorded tracks to a [`MediaTap`]
//! as it is forwarded. The payload is shared (str0m's `Payload`), not copied.
//!
//! Invariants:
//! - A tap never delays forwarding: [`MediaTap::offer`] must not block. When it
//!   refuses an item (the recorder is behind), the SFU counts it and goes on; the
//!   recorder sees the gap in the sequence numbers.
//! - One layer per track is recorded: the only one, or for simulcast the highest
//!   measured when recording of the track begins (pinned, so a file never changes
//!   resolution). A video track's recording starts with a keyframe request.
//! - Every track announced with [`TapItem::Track`] is later ended with
//!   [`TapItem::TrackEnded`], unless the tap itself is removed first (removal ends
//!   them all).

use std::time::{Instant, SystemTime};

use str0m::format::Codec;
use str0m::media::{MediaKind, Rid};
use str0m::rtp::Payload;

use crate::room::TrackRef;

/// A recorded track, announced before its first packet.
#[derive(Debug, Clone, PartialEq)]
pub struct TapTrack {
    pub track: TrackRef,
    /// The publisher's identity.
    pub identity: String,
    pub kind: MediaKind,
    pub codec: Codec,
    pub clock_rate: u32,
    pub channels: u8,
    /// The simulcast layer recorded (`None` without simulcast).
    pub rid: Option<Rid>,
}

/// The publisher's mapping of RTP time to wall-clock time, from its last RTCP sender
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// NTP time of the report.
    pub ntp_time: SystemTime,
    /// The report's RTP time, extended onto the packets' timeline (see
    /// [`TapPacket::rtp_time`]).
    pub rtp_time: i64,
}

/// One RTP packet of a recorded track.
#[derive(Debug, Clone)]
pub struct TapPacket {
    pub track: TrackRef,
    /// Extended sequence number (no wrap).
    pub seq: u64,
    /// Extended RTP timestamp (no wrap), in the track's clock rate.
    pub rtp_time: i64,
    pub marker: bool,
    pub payload: Payload,
    /// When the SFU received it.
    pub arrival: Instant,
    pub sender_clock: Option<SenderClock>,
}

#[derive(Debug, Clone)]
pub enum TapItem {
    Track(TapTrack),
    Packet(TapPacket),
    /// The track was unpublished or its publisher left.
    TrackEnded(TrackRef),
}

/// Where a tapped room's media goes. Implementations queue and return at once.
pub trait MediaTap: Send {
    /// Queues an item; `false` when it was refused (the queue is full).
    fn offer(&mut self, item: TapItem) -> bool;
}

/// A room's tap and its counters.
pub(crate) struct Tap {
    pub sink: Box<dyn MediaTap>,
    pub stats: TapStats,
}

impl Tap {
    pub fn new(sink: Box<dyn MediaTap>) -> Self {
        Tap {
            sink,
            stats: TapStats::default(),
        }
    }

    pub fn offer(&mut self, item: TapItem, stats: &mut crate::SfuStats) {
        self.stats.offered += 1;
        if !self.sink.offer(item) {
            stats.tap_refused += 1;
            if self.stats.refused == 0 {
                tracing::warn!("recorder is behind: tapped media is being dropped");
            }
            self.stats.refused += 1;
        }
    }
}

/// What a tap did, returned when it is removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    pub offered: u64,
    pub refused: u64,
}

/// Recording state of one published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrackTap {
    /// The room has no tap.
    #[default]
    Off,
    /// Recorded once its layer is known (simulcast layers are measured first).
    Waiting,
    /// Announced; packets of this layer are offered.
    On(Option<Rid>),
}

/// The recorded layer of a track once it can be chosen: the only layer, or the highest
/// measured one. `None` while a simulcast track's layers are not measured yet.
pub(crate) fn choose_layer(
    layers: &[Option<Rid>],
    measured_low_to_high: &[Option<Rid>],
) -> Option<Option<Rid>> {
    match layers {
        [] => None,
        [only] if only.is_none() => Some(None),
        _ => measured_low_to_high.last().copied(),
    }
}

/// The extended RTP time of a sender report, placed on the timeline of a packet whose
/// 32-bit timestamp is `pkt_ts` and extended time `pkt_ext`.
pub(crate) fn extend_report_time(pkt_ext: i64, pkt_ts: u32, report_ts: u32) -> i64 {
    pkt_ext - i64::from(pkt_ts.wrapping_sub(report_ts) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_layer_is_chosen_at_once_simulcast_waits_for_measurement() {
        assert_eq!(choose_layer(&[], &[]), None);
        assert_eq!(choose_layer(&[None], &[]), Some(None));
        let h = Some(Rid::from("h"));
        let l = Some(Rid::from("l"));
        assert_eq!(choose_layer(&[l, h], &[]), None);
        assert_eq!(choose_layer(&[l, h], &[l, h]), Some(h));
    }

    #[test]
    fn report_time_follows_the_packet_across_a_wrap() {
        // Packet just after a wrap, report just before it.
        let pkt_ext = (1i64 << 32) + 100;
        assert_eq!(
            extend_report_time(pkt_ext, 100, u32::MAX - 99),
            (1i64 << 32) - 100
        );
        // Report after the packet (reordered).
        assert_eq!(extend_report_time(5000, 5000, 5960), 5960);
    }
}
