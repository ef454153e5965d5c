//! Packets kept compact while they wait in a send queue or an RTX cache.

use super::Payload;

use crate::packet::Vp8Patch;
use crate::rtp_::{
    ExtensionValues, MediaTime, MidRid, Pt, RtpHeader, SeqNo, Ssrc, VideoOrientation,
};

use super::RtpPacket;

/// A packet as a stream keeps it while it waits to be sent and, once sent, for
/// resends: a fraction of an [`RtpPacket`] (about 430 bytes, most of it the header's
/// room for every extension and 15 CSRCs). A video stream keeps a few hundred of these
/// in its RTX cache and a keyframe's worth in its send queue, per receiver.
#[derive(Debug)]
pub(crate) struct CompactPacket {
    pub seq_no: SeqNo,
    time: MediaTime,
    pub payload: Payload,
    vp8_patch: Option<Vp8Patch>,
    header: CompactHeader,
}

#[derive(Debug)]
enum CompactHeader {
    /// The header `write_rtp` makes of a packet with no CSRCs and no extension values
    /// other than these (and the stream's mid/rid, attached until the receiver binds
    /// the SSRC). Restoring it gives back the very header that was sent.
    Compact {
        payload_type: Pt,
        marker: bool,
        timestamp: u32,
        ssrc: Ssrc,
        audio_level: Option<i8>,
        voice_activity: Option<bool>,
        video_orientation: Option<VideoOrientation>,
        with_mid_rid: bool,
    },
    /// Any other header, kept whole.
    Full(Box<RtpHeader>),
}

impl CompactHeader {
    fn compact(header: &RtpHeader, seq_no: SeqNo, midrid: MidRid) -> Option<Self> {
        let ext = &header.ext_vals;
        let compact = CompactHeader::Compact {
            payload_type: header.payload_type,
            marker: header.marker,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            with_mid_rid: ext.mid.is_some(),
        };
        // Exact by construction: compact only when the restored header is equal.
        (compact.restore(seq_no, midrid) == *header).then_some(compact)
    }

    fn restore(&self, seq_no: SeqNo, midrid: MidRid) -> RtpHeader {
        match self {
            CompactHeader::Compact {
                payload_type,
                marker,
                timestamp,
                ssrc,
                audio_level,
                voice_activity,
                video_orientation,
                with_mid_rid,
            } => RtpHeader {
                marker: *marker,
                payload_type: *payload_type,
                sequence_number: *seq_no as u16,
                timestamp: *timestamp,
                ssrc: *ssrc,
                ext_vals: ExtensionValues {
                    audio_level: *audio_level,
                    voice_activity: *voice_activity,
                    video_orientation: *video_orientation,
                    mid: with_mid_rid.then(|| midrid.mid()),
                    rid: if *with_mid_rid { midrid.rid() } else { None },
                    ..ExtensionValues::default()
                },
                ..RtpHeader::default()
            },
            CompactHeader::Full(header) => (**header).clone(),
        }
    }
}

impl CompactPacket {
    /// `midrid` is the sending stream's: a cached header refers to it rather than
    /// holding a copy.
    pub fn new(packet: &RtpPacket, midrid: MidRid) -> Self {
        let header = CompactHeader::compact(&packet.header, packet.seq_no, midrid)
            .unwrap_or_else(|| CompactHeader::Full(Box::new(packet.header.clone())));
        CompactPacket {
            seq_no: packet.seq_no,
            time: packet.time,
            payload: packet.payload.clone(),
            vp8_patch: packet.vp8_patch,
            header,
        }
    }

    /// Whether the header is kept in its compact form (not boxed whole).
    #[cfg(test)]
    pub fn is_compact(&self) -> bool {
        matches!(self.header, CompactHeader::Compact { .. })
    }

    /// Writes the packet as it was sent into the stream's kept packet, made at the
    /// first resend (a stream without RTX never needs one), and returns it.
    pub fn restore_into_kept<'a>(
        &self,
        kept: &'a mut Option<Box<RtpPacket>>,
        midrid: MidRid,
    ) -> &'a mut RtpPacket {
        let out = kept.get_or_insert_with(|| Box::new(RtpPacket::blank()));
        self.restore_into(out, midrid);
        out
    }

    /// Moves the packet into `out`, as [`CompactPacket::restore_into`] writes it but
    /// without copying: the send queue's head is written once and the entry gone.
    pub fn move_into(self, out: &mut RtpPacket, midrid: MidRid) {
        let CompactPacket {
            seq_no,
            time,
            payload,
            vp8_patch,
            header,
        } = self;
        out.header = match header {
            CompactHeader::Full(header) => *header,
            compact => compact.restore(seq_no, midrid),
        };
        out.seq_no = seq_no;
        out.time = time;
        out.payload = payload;
        out.vp8_patch = vp8_patch;
        out.last_sender_info = None;
    }

    /// Writes the packet as it was sent into `out` (no allocation unless the header
    /// had to be kept whole). `timestamp` (when the packet was queued) is not kept:
    /// nothing reads it on a resend, and the send queue keeps its own.
    pub fn restore_into(&self, out: &mut RtpPacket, midrid: MidRid) {
        out.seq_no = self.seq_no;
        out.time = self.time;
        out.header = self.header.restore(self.seq_no, midrid);
        out.payload = self.payload.clone();
        out.vp8_patch = self.vp8_patch;
        out.last_sender_info = None;
        out.nackable = true;
    }
}
