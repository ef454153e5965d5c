//! Synthetic media shaped like Opus audio and VP8 video, packet by packet.
//!
//! - Audio: one 100-byte packet every 20 ms (50 pps, 40 kb/s of payload), RTP clock
//!   48 kHz.
//! - Video: 30 frames/s, 1.5 Mb/s of payload on average, a keyframe every 3 s (or
//!   sooner when asked), keyframes 30 kB and delta frames sized to keep the average;
//!   each frame is split evenly into packets of at most 1180 payload bytes, with an
//!   RFC 7741 payload descriptor (S bit on the first packet) and the VP8 payload
//!   header's P bit (0 on keyframes), marker on the last packet. RTP clock 90 kHz.
//!
//! Every payload carries the send time (ns since the sender's epoch, little endian)
//! and a frame counter, for latency measurement: at [`TIME_OFFSET_AUDIO`] for audio,
//! [`TIME_OFFSET_VIDEO`] for video.

use std::time::Duration;

pub const AUDIO_PAYLOAD: usize = 100;
pub const VIDEO_BITRATE: usize = 1_500_000;
pub const VIDEO_FPS: u32 = 30;
pub const KEYFRAME_EVERY: u32 = 90;
pub const KEYFRAME_BYTES: usize = 30_000;
pub const MAX_VIDEO_PAYLOAD: usize = 1180;
pub const TIME_OFFSET_AUDIO: usize = 0;
pub const TIME_OFFSET_VIDEO: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }

    pub fn media_kind(self) -> str0m::media::MediaKind {
        match self {
            Kind::Audio => str0m::media::MediaKind::Audio,
            Kind::Video => str0m::media::MediaKind::Video,
        }
    }

    /// Time between two ticks of the source (one audio packet or one video frame).
    pub fn interval(self) -> Duration {
        match self {
            Kind::Audio => Duration::from_millis(20),
            Kind::Video => Duration::from_nanos(1_000_000_000 / VIDEO_FPS as u64),
        }
    }

    pub fn time_offset(self) -> usize {
        match self {
            Kind::Audio => TIME_OFFSET_AUDIO,
            Kind::Video => TIME_OFFSET_VIDEO,
        }
    }
}

/// One RTP payload to send.
#[derive(Debug, Clone)]
pub struct Packet {
    pub payload: Vec<u8>,
    pub marker: bool,
    pub rtp_time: u32,
    pub keyframe: bool,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub kind: Kind,
    frame: u32,
    rtp_time: u32,
    since_key: u32,
    force_key: bool,
    pub keyframes: u64,
}

impl Source {
    pub fn new(kind: Kind) -> Self {
        Source {
            kind,
            frame: 0,
            // An arbitrary start (not zero, as RFC 3550 wants), fixed so runs repeat.
            rtp_time: 0x3c6e_f372,
            since_key: 0,
            force_key: true,
            keyframes: 0,
        }
    }

    /// The next keyframe comes at the next tick.
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Payload bytes of a delta frame that keep the average bitrate.
    fn delta_bytes() -> usize {
        let per_period = VIDEO_BITRATE / 8 * KEYFRAME_EVERY as usize / VIDEO_FPS as usize;
        (per_period - KEYFRAME_BYTES) / (KEYFRAME_EVERY as usize - 1)
    }

    /// The packets of the next tick, stamped with `send_ns`.
    pub fn tick(&mut self, send_ns: u64, out: &mut Vec<Packet>) {
        out.clear();
        let frame = self.frame;
        self.frame = self.frame.wrapping_add(1);
        match self.kind {
            Kind::Audio => {
                let mut p = filler(AUDIO_PAYLOAD, frame);
                stamp(&mut p, TIME_OFFSET_AUDIO, send_ns, frame);
                out.push(Packet {
                    payload: p,
                    marker: false,
                    rtp_time: self.rtp_time,
                    keyframe: true,
                });
                self.rtp_time = self.rtp_time.wrapping_add(960);
            }
            Kind::Video => {
                let key = self.force_key || self.since_key + 1 >= KEYFRAME_EVERY;
                if key {
                    self.force_key = false;
                    self.since_key = 0;
                    self.keyframes += 1;
                } else {
                    self.since_key += 1;
                }
                let bytes = if key {
                    KEYFRAME_BYTES
                } else {
                    Self::delta_bytes()
                };
                let n = bytes.div_ceil(MAX_VIDEO_PAYLOAD);
                for i in 0..n {
                    let part = bytes / n + usize::from(i < bytes % n);
                    // 1 byte payload descriptor + the partition bytes.
                    let mut p = filler(1 + part, frame);
                    p[0] = if i == 0 { 0x10 } else { 0x00 };
                    // VP8 payload header, first byte: P bit (bit 0) clear on keyframes.
                    p[1] = if i == 0 && key { 0x00 } else { 0x01 };
                    stamp(&mut p, TIME_OFFSET_VIDEO, send_ns, frame);
                    out.push(Packet {
                        payload: p,
                        marker: i + 1 == n,
                        rtp_time: self.rtp_time,
                        keyframe: key && i == 0,
                    });
                }
                self.rtp_time = self.rtp_time.wrapping_add(90_000 / VIDEO_FPS);
            }
        }
    }
}

fn filler(len: usize, frame: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (frame as usize * 31 + i * 7) as u8)
        .collect()
}

fn stamp(p: &mut [u8], at: usize, send_ns: u64, frame: u32) {
    p[at..at + 8].copy_from_slice(&send_ns.to_le_bytes());
    p[at + 8..at + 12].copy_from_slice(&frame.to_le_bytes());
}

/// The send time stamped into a payload by [`Source::tick`].
pub fn send_ns(kind: Kind, payload: &[u8]) -> Option<u64> {
    let at = kind.time_offset();
    let b = payload.get(at..at + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_averages_its_bitrate() {
        let mut s = Source::new(Kind::Video);
        let mut out = Vec::new();
        let (mut bytes, mut packets, mut keys) = (0usize, 0usize, 0);
        for _ in 0..KEYFRAME_EVERY * 2 {
            s.tick(0, &mut out);
            assert!(out.last().unwrap().marker);
            keys += usize::from(out[0].keyframe);
            packets += out.len();
            bytes += out.iter().map(|p| p.payload.len() - 1).sum::<usize>();
            assert!(out.iter().all(|p| p.payload.len() <= MAX_VIDEO_PAYLOAD + 1));
        }
        assert_eq!(keys, 2);
        let bps = bytes as f64 * 8.0 / 6.0;
        assert!(
            (bps - VIDEO_BITRATE as f64).abs() / (VIDEO_BITRATE as f64) < 0.01,
            "{bps}"
        );
        assert!(packets > 6 * 150 && packets < 6 * 200, "{packets}");
        assert!(media_core::keyframe::is_keyframe(
            str0m::format::Codec::Vp8,
            &{
                let mut s = Source::new(Kind::Video);
                s.tick(0, &mut out);
                out[0].payload.clone()
            }
        ));
    }

    #[test]
    fn send_time_round_trips() {
        for kind in [Kind::Audio, Kind::Video] {
            let mut s = Source::new(kind);
            let mut out = Vec::new();
            s.tick(123_456_789, &mut out);
            for p in &out {
                assert_eq!(send_ns(kind, &p.payload), Some(123_456_789));
            }
        }
    }
}
