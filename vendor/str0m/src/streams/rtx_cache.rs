use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::rtp_::{MidRid, SeqNo};

use super::RtpPacket;
use super::compact_packet::CompactPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<CompactPacket>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    seq_no_by_quantized_size: [SeqNo; RTX_CACHE_QUANTIZE_SLOTS],
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS],
        }
    }

    pub fn cache_sent_packet(&mut self, packet: &RtpPacket, now: Instant, midrid: MidRid) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        self.packet_by_seq_no
            .push(*seq_no, now, CompactPacket::new(packet, midrid));
        self.seq_no_by_quantized_size[quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    pub fn get_cached_packet_by_seq_no(&self, seq_no: SeqNo) -> Option<&CompactPacket> {
        self.packet_by_seq_no.get(*seq_no)
    }

    pub fn get_cached_packet_smaller_than(&self, max_size: usize) -> Option<&CompactPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = self.seq_no_by_quantized_size[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(*seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS];
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::{
        AbsCaptureTime, ExtensionValues, MediaTime, Mid, Rid, RtpHeader, VideoOrientation,
    };

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn midrid() -> MidRid {
        MidRid(Mid::from("v"), Some(Rid::from("h")))
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    /// The cached packet as a resend sees it (seq_no and payload identify it here).
    fn cached(c: Option<&CompactPacket>) -> Option<(u64, Vec<u8>)> {
        c.map(|c| (*c.seq_no, c.payload.to_vec()))
    }

    fn sent(seq_no: u64, millis: u64) -> Option<(u64, Vec<u8>)> {
        Some((seq_no, millis.to_be_bytes().to_vec()))
    }

    fn restored(rtx_cache: &RtxCache, seq_no: u64) -> RtpPacket {
        let mut out = RtpPacket::blank();
        rtx_cache
            .get_cached_packet_by_seq_no(seq_no.into())
            .expect("cached")
            .restore_into(&mut out, midrid());
        out
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(&packet(now, 1, 10), after(now, 10), midrid());
        assert_eq!(
            sent(1, 10),
            cached(rtx_cache.get_cached_packet_by_seq_no(1.into()))
        );
        assert_eq!(
            sent(1, 10),
            cached(rtx_cache.get_cached_packet_smaller_than(1000))
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(&packet(now, 1, 10), after(now, 10), midrid());
        assert_eq!(
            None,
            cached(rtx_cache.get_cached_packet_by_seq_no(1.into()))
        );
        assert_eq!(None, cached(rtx_cache.get_cached_packet_smaller_than(1000)));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(&packet(now, 1, 10), after(now, 10), midrid());
        assert_eq!(
            sent(1, 10),
            cached(rtx_cache.get_cached_packet_by_seq_no(1.into()))
        );
        assert_eq!(
            sent(1, 10),
            cached(rtx_cache.get_cached_packet_smaller_than(1000))
        );
        assert_eq!(
            sent(1, 10),
            cached(rtx_cache.get_cached_packet_smaller_than(25))
        );
        assert_eq!(None, cached(rtx_cache.get_cached_packet_smaller_than(24)));
        rtx_cache.cache_sent_packet(&packet(now, 2, 20), after(now, 20), midrid());
        assert_eq!(
            sent(2, 20),
            cached(rtx_cache.get_cached_packet_by_seq_no(2.into()))
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(&pkt, now, midrid());
        }

        assert_eq!(
            sent(200, 2000),
            cached(rtx_cache.get_cached_packet_by_seq_no(200.into()))
        );
        assert_eq!(
            None,
            cached(rtx_cache.get_cached_packet_by_seq_no(100.into()))
        );
        assert_eq!(
            None,
            cached(rtx_cache.get_cached_packet_by_seq_no(101.into()))
        );
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(&pkt, now, midrid());
        }

        assert_eq!(
            None,
            cached(rtx_cache.get_cached_packet_by_seq_no(99.into()))
        );

        assert_eq!(
            sent(100, 1000),
            cached(rtx_cache.get_cached_packet_by_seq_no(100.into()))
        );
        assert_eq!(
            sent(200, 2000),
            cached(rtx_cache.get_cached_packet_by_seq_no(200.into()))
        );
    }

    /// What `write_rtp` makes for a forwarded video packet, after the send path
    /// attached mid and rid.
    fn written(seq_no: u64, with_mid_rid: bool) -> RtpPacket {
        let mut pkt = packet(Instant::now(), seq_no, 7);
        pkt.time = MediaTime::from_90khz(123_456);
        pkt.header = RtpHeader {
            sequence_number: seq_no as u16,
            marker: true,
            payload_type: 96.into(),
            timestamp: 123_456,
            ssrc: 42.into(),
            ext_vals: ExtensionValues {
                video_orientation: Some(VideoOrientation::Deg90),
                mid: with_mid_rid.then(|| midrid().mid()),
                rid: if with_mid_rid { midrid().rid() } else { None },
                ..ExtensionValues::default()
            },
            ..RtpHeader::default()
        };
        pkt
    }

    #[test]
    fn a_plain_header_is_kept_compact_and_restored_exactly() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(3));
        for (seq_no, with_mid_rid) in [(5, true), (6, false)] {
            let pkt = written(seq_no, with_mid_rid);
            let expected = pkt.header.clone();
            rtx_cache.cache_sent_packet(&pkt, now, midrid());
            let cached = rtx_cache
                .get_cached_packet_by_seq_no(seq_no.into())
                .unwrap();
            assert!(cached.is_compact());
            let out = restored(&rtx_cache, seq_no);
            assert_eq!(out.header, expected);
            assert_eq!(out.time, MediaTime::from_90khz(123_456));
            assert!(out.nackable);
        }
    }

    #[test]
    fn any_other_header_is_kept_whole() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(3));

        let mut with_csrc = written(5, false);
        with_csrc.header.csrc_count = 1;
        with_csrc.header.csrc[0] = 7;
        let mut with_capture_time = written(6, false);
        with_capture_time.header.ext_vals.abs_capture_time = Some(AbsCaptureTime {
            capture_time: std::time::SystemTime::UNIX_EPOCH,
            clock_offset: None,
        });
        // mid/rid of another stream cannot be restored from this one's.
        let mut foreign_mid = written(7, false);
        foreign_mid.header.ext_vals.mid = Some(Mid::from("a"));

        for pkt in [with_csrc, with_capture_time, foreign_mid] {
            let seq_no = *pkt.seq_no;
            let expected = pkt.header.clone();
            rtx_cache.cache_sent_packet(&pkt, now, midrid());
            let cached = rtx_cache
                .get_cached_packet_by_seq_no(seq_no.into())
                .unwrap();
            assert!(!cached.is_compact());
            assert_eq!(restored(&rtx_cache, seq_no).header, expected);
        }
    }

    #[test]
    fn a_cached_packet_is_a_fraction_of_a_packet() {
        let entry = std::mem::size_of::<CompactPacket>();
        assert!(entry <= 96, "{entry} bytes");
        assert!(std::mem::size_of::<RtpPacket>() >= 4 * entry);
    }
}
