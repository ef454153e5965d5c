//! The relay between SFU nodes, without IO: what crosses a node-to-node link, and how
//! each hop repairs its own losses.
//!
//! A link joins two nodes. Over it one node *imports* rooms from the node they live on
//! (the *exporter*): the exporter announces each participant of the room
//! ([`RelayParticipant`]) and each published track ([`RelayTrack`]), then sends every
//! RTP packet of it once ([`RelayedPacket`], one QUIC datagram), however many
//! subscribers the importer fans it out to. The room's node imports back what the
//! importer's own participants publish and say ([`Control::Import`] with `back`), so a
//! room's nodes form a star around its home, and every participant sees one room.
//! Control messages ([`Control`]) travel in order on one stream: length-prefixed JSON,
//! read back by [`ControlReader`].
//!
//! ## Repair per hop
//! A datagram lost between the nodes is repaired on that hop, not by the publisher:
//! the importer's [`LossDetector`] sees the gap in a stream's sequence numbers and
//! sends a `nack`; the exporter answers from its [`RepairBuffer`] of what it sent
//! last. Subscribers' own NACKs are answered by their node's `Rtc`s as for any track.
//!
//! ## Invariants
//! - A track id is the exporter's and unique on that node for its life (each worker
//!   numbers its tracks in its own space, `SfuConfig::relay_id_space`); the importer
//!   keys everything by (link, track id). A participant id is the exporter's likewise.
//! - An exporter never sends a link what came in over that same link: with the star
//!   around the room's node, nothing loops.
//! - Datagrams start with [`DATAGRAM_VERSION`]; a reader drops what it does not know.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use str0m::media::Rid;
use str0m::rtp::Payload;

/// First byte of every relayed datagram.
pub const DATAGRAM_VERSION: u8 = 1;
/// The largest control frame a reader accepts.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// What the two ends of a link say on its control stream, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message each way: who the node is, and its proof of the cluster key
    /// (bound to this connection's TLS session).
    Hello {
        node: String,
        proof: String,
    },
    /// The importer wants a room's participants and media. `back`: the room's node
    /// imports the importer's own side of a room the importer imports from it (and
    /// does not ask back in turn).
    Import {
        room: String,
        #[serde(default)]
        back: bool,
    },
    /// … and no longer (`back`: the import back, as in `Import`).
    Stop {
        room: String,
        #[serde(default)]
        back: bool,
    },
    /// A participant is in the room (sent before its tracks, and for every
    /// participant already there when the export starts).
    Participant(RelayParticipant),
    /// … and left it, for this reason (`RemoveReason::as_str`).
    ParticipantLeft {
        room: String,
        participant: u64,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A room data message from a participant of the exporter's side, to the room's
    /// participants with these identities (`None`: all).
    Data {
        room: String,
        participant: u64,
        to: Option<Vec<String>>,
        payload: serde_json::Value,
    },
    Track(RelayTrack),
    TrackEnded {
        room: String,
        track: u32,
    },
    Muted {
        room: String,
        track: u32,
        muted: bool,
    },
    /// The importer's subscribers wait for a keyframe of a layer.
    Keyframe {
        room: String,
        track: u32,
        rid: Option<String>,
    },
    /// Datagrams the importer did not get.
    Nack {
        track: u32,
        ssrc: u32,
        seqs: Vec<u64>,
    },
    /// The exporter cannot serve an import (it drains).
    Refused {
        room: String,
        reason: String,
    },
}

/// A participant of the exporter's side of a room (WHEP players are not announced:
/// they are counted where they play).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayParticipant {
    pub room: String,
    /// The exporter's id for it, unique on that node for the participant's life.
    pub participant: u64,
    pub identity: String,
    pub name: String,
    /// `participant` (`/rtc`) or `publisher` (WHIP).
    pub role: String,
}

/// A published track, as the exporter announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayTrack {
    pub room: String,
    pub track: u32,
    /// `audio` or `video`.
    pub kind: String,
    /// Its publisher ([`RelayParticipant::participant`]).
    #[serde(default)]
    pub participant: u64,
    /// The publisher's identity and name on the exporter.
    pub identity: String,
    #[serde(default)]
    pub name: String,
    pub muted: bool,
    /// The publisher's payload types for this kind: packets carry these.
    pub codecs: Vec<RelayCodec>,
}

/// One payload type of a relayed track, with what identifies its codec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayCodec {
    pub pt: u8,
    pub codec: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub packetization_mode: Option<u8>,
    pub profile_level_id: Option<u32>,
    pub profile_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    #[error("unknown datagram version {0}")]
    Version(u8),
    #[error("bad simulcast rid")]
    Rid,
    #[error("control frame of {0} bytes is over the limit")]
    FrameTooLarge(usize),
    #[error("bad control frame: {0}")]
    BadFrame(String),
}

/// Appends one control frame (u32 length, big-endian, then JSON).
pub fn encode_control(msg: &Control, out: &mut Vec<u8>) {
    let body = serde_json::to_vec(msg).expect("Control serialises"); // plain data, no maps with non-string keys
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Reassembles control frames from stream reads of any size.
#[derive(Debug, Default)]
pub struct ControlReader {
    buf: Vec<u8>,
}

impl ControlReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is buffered. An error leaves the stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<Control>, RelayError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_CONTROL_FRAME {
            return Err(RelayError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len])
            .map_err(|e| RelayError::BadFrame(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

/// One RTP packet of a relayed track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedPacket {
    pub track: u32,
    /// The simulcast layer, as the publisher named it.
    pub rid: Option<Rid>,
    pub pt: u8,
    /// Extended sequence number (no wrap).
    pub seq: u64,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub payload: Payload,
}

const FLAG_MARKER: u8 = 1;
const FLAG_LEVEL: u8 = 2;
const FLAG_VOICE: u8 = 4;
const FLAG_VOICE_SET: u8 = 8;
const HEADER: usize = 1 + 4 + 1 + 1 + 8 + 4 + 4 + 1 + 1;

impl RelayedPacket {
    /// Appends the datagram.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.marker {
            flags |= FLAG_MARKER;
        }
        if self.audio_level.is_some() {
            flags |= FLAG_LEVEL;
        }
        if let Some(v) = self.voice_activity {
            flags |= FLAG_VOICE_SET | if v { FLAG_VOICE } else { 0 };
        }
        let rid = self.rid.as_ref().map_or(&b""[..], |r| r.as_bytes());
        out.reserve(HEADER + rid.len() + self.payload.len());
        out.push(DATAGRAM_VERSION);
        out.extend_from_slice(&self.track.to_be_bytes());
        out.push(self.pt);
        out.push(flags);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.audio_level.unwrap_or(0) as u8);
        out.push(rid.len() as u8);
        out.extend_from_slice(rid);
        out.extend_from_slice(&self.payload);
    }

    pub fn decode(d: &[u8]) -> Result<RelayedPacket, RelayError> {
        if d.len() < HEADER {
            return Err(RelayError::Short(d.len()));
        }
        if d[0] != DATAGRAM_VERSION {
            return Err(RelayError::Version(d[0]));
        }
        let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let flags = d[6];
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&d[7..15]);
        let rid_len = d[HEADER - 1] as usize;
        if d.len() < HEADER + rid_len || rid_len > 16 {
            return Err(RelayError::Rid);
        }
        let rid = match rid_len {
            0 => None,
            _ => Some(Rid::from(
                std::str::from_utf8(&d[HEADER..HEADER + rid_len]).map_err(|_| RelayError::Rid)?,
            )),
        };
        Ok(RelayedPacket {
            track: u32_at(1),
            rid,
            pt: d[5],
            seq: u64::from_be_bytes(seq),
            timestamp: u32_at(15),
            ssrc: u32_at(19),
            marker: flags & FLAG_MARKER != 0,
            audio_level: (flags & FLAG_LEVEL != 0).then_some(d[23] as i8),
            voice_activity: (flags & FLAG_VOICE_SET != 0).then_some(flags & FLAG_VOICE != 0),
            payload: d[HEADER + rid_len..].into(),
        })
    }
}

/// What an exporter sent last on one link, to answer the importer's NACKs.
#[derive(Debug)]
pub struct RepairBuffer {
    sent: VecDeque<RelayedPacket>,
    capacity: usize,
}

impl RepairBuffer {
    /// Keeps the last `capacity` packets (at 2 Mb/s of video, 512 is some 2 s: more
    /// than any round trip between nodes that should carry a room).
    pub fn new(capacity: usize) -> Self {
        RepairBuffer {
            sent: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
        }
    }

    pub fn keep(&mut self, p: &RelayedPacket) {
        if self.sent.len() == self.capacity {
            self.sent.pop_front();
        }
        self.sent.push_back(p.clone());
    }

    /// The packet, if it is still kept.
    pub fn find(&self, track: u32, ssrc: u32, seq: u64) -> Option<&RelayedPacket> {
        self.sent
            .iter()
            .rev()
            .find(|p| p.seq == seq && p.ssrc == ssrc && p.track == track)
    }
}

/// The most packets one gap may NACK: a longer gap is an outage, after which the
/// subscribers restart at a keyframe anyway.
pub const MAX_NACK_GAP: u64 = 64;

/// Finds the gaps in each relayed stream, and lets a repaired packet through once.
#[derive(Debug, Default)]
pub struct LossDetector {
    streams: Vec<StreamSeq>,
}

#[derive(Debug)]
struct StreamSeq {
    track: u32,
    ssrc: u32,
    highest: u64,
    /// Lost and asked for, not yet repaired (bounded by `MAX_NACK_GAP` per gap).
    missing: VecDeque<u64>,
}

/// What to do with an arriving packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Forward it; `nack` lists what went missing just before it.
    Forward { nack: Vec<u64> },
    /// A copy of something already forwarded, or too old: drop it.
    Drop,
}

impl LossDetector {
    pub fn on_packet(&mut self, track: u32, ssrc: u32, seq: u64) -> Arrival {
        let Some(s) = self
            .streams
            .iter_mut()
            .find(|s| s.track == track && s.ssrc == ssrc)
        else {
            self.streams.push(StreamSeq {
                track,
                ssrc,
                highest: seq,
                missing: VecDeque::new(),
            });
            return Arrival::Forward { nack: Vec::new() };
        };
        if seq > s.highest {
            let gap = seq - s.highest - 1;
            let mut nack = Vec::new();
            if gap > 0 && gap <= MAX_NACK_GAP {
                nack.extend(s.highest + 1..seq);
                s.missing.extend(s.highest + 1..seq);
                while s.missing.len() as u64 > 4 * MAX_NACK_GAP {
                    s.missing.pop_front();
                }
            }
            s.highest = seq;
            return Arrival::Forward { nack };
        }
        match s.missing.iter().position(|m| *m == seq) {
            Some(i) => {
                s.missing.remove(i);
                Arrival::Forward { nack: Vec::new() }
            }
            None => Arrival::Drop,
        }
    }

    /// Forgets a track's streams (it ended).
    pub fn forget(&mut self, track: u32) {
        self.streams.retain(|s| s.track != track);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u64) -> RelayedPacket {
        RelayedPacket {
            track: 7,
            rid: Some("h".into()),
            pt: 96,
            seq,
            timestamp: 90_000,
            ssrc: 1234,
            marker: true,
            audio_level: Some(-30),
            voice_activity: Some(true),
            payload: vec![1, 2, 3, 4].into(),
        }
    }

    #[test]
    fn a_packet_survives_the_wire() {
        let mut buf = Vec::new();
        for p in [
            packet(70_000),
            RelayedPacket {
                rid: None,
                audio_level: None,
                voice_activity: None,
                marker: false,
                ..packet(1)
            },
        ] {
            buf.clear();
            p.encode(&mut buf);
            assert_eq!(RelayedPacket::decode(&buf), Ok(p));
        }
    }

    #[test]
    fn bad_datagrams_are_refused() {
        let mut buf = Vec::new();
        packet(1).encode(&mut buf);
        assert_eq!(
            RelayedPacket::decode(&buf[..10]),
            Err(RelayError::Short(10))
        );
        let mut other = buf.clone();
        other[0] = 9;
        assert_eq!(RelayedPacket::decode(&other), Err(RelayError::Version(9)));
        let mut long_rid = buf.clone();
        long_rid[HEADER - 1] = 200;
        assert_eq!(RelayedPacket::decode(&long_rid), Err(RelayError::Rid));
    }

    #[test]
    fn control_frames_come_back_whole_from_any_split() {
        let msgs = [
            Control::Import {
                room: "r".into(),
                back: true,
            },
            Control::Participant(RelayParticipant {
                room: "r".into(),
                participant: 7,
                identity: "ada".into(),
                name: "Ada".into(),
                role: "participant".into(),
            }),
            Control::Data {
                room: "r".into(),
                participant: 7,
                to: Some(vec!["ben".into()]),
                payload: serde_json::json!({"chat": "hi"}),
            },
            Control::ParticipantLeft {
                room: "r".into(),
                participant: 7,
                reason: Some("revoked".into()),
            },
            Control::Nack {
                track: 3,
                ssrc: 9,
                seqs: vec![5, 6],
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            encode_control(m, &mut wire);
        }
        let mut r = ControlReader::default();
        let mut got = Vec::new();
        for b in wire.chunks(3) {
            r.push(b);
            while let Some(m) = r.next_frame().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_an_error() {
        let mut r = ControlReader::default();
        r.push(&(MAX_CONTROL_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(r.next_frame(), Err(RelayError::FrameTooLarge(_))));
        let mut r = ControlReader::default();
        r.push(&3u32.to_be_bytes());
        r.push(b"{x}");
        assert!(matches!(r.next_frame(), Err(RelayError::BadFrame(_))));
    }

    #[test]
    fn a_gap_is_nacked_and_its_repair_forwarded_once() {
        let mut d = LossDetector::default();
        assert_eq!(d.on_packet(7, 1, 10), Arrival::Forward { nack: vec![] });
        assert_eq!(
            d.on_packet(7, 1, 13),
            Arrival::Forward { nack: vec![11, 12] }
        );
        assert_eq!(d.on_packet(7, 1, 12), Arrival::Forward { nack: vec![] });
        assert_eq!(d.on_packet(7, 1, 12), Arrival::Drop, "a second copy");
        assert_eq!(d.on_packet(7, 1, 9), Arrival::Drop, "older than the start");
        // Another stream of the same track has its own numbers.
        assert_eq!(d.on_packet(7, 2, 500), Arrival::Forward { nack: vec![] });
        // An outage is not NACKed packet by packet.
        assert_eq!(
            d.on_packet(7, 1, 13 + MAX_NACK_GAP + 2),
            Arrival::Forward { nack: vec![] }
        );
    }

    #[test]
    fn the_repair_buffer_keeps_the_last_packets() {
        let mut b = RepairBuffer::new(3);
        for s in 1..=5 {
            b.keep(&packet(s));
        }
        assert!(b.find(7, 1234, 2).is_none());
        assert_eq!(b.find(7, 1234, 4).map(|p| p.seq), Some(4));
        assert!(b.find(8, 1234, 4).is_none(), "another track");
    }
}
