//! Puts a track's RTP packets back in sequence order before they are written.
//!
//! Packets are held until the next expected one arrives, the buffer holds
//! `max_packets`, or the oldest has waited `max_wait` (measured by arrival times, so
//! the buffer is deterministic under a fake clock). A sequence number that is skipped
//! when packets are released is counted as lost; one that arrives after its place was
//! passed is dropped as late.

use std::collections::BTreeMap;
use std::time::Duration;

use media_core::TapPacket;

#[derive(Debug)]
pub struct Reorder {
    buf: BTreeMap<u64, TapPacket>,
    next: Option<u64>,
    max_packets: usize,
    max_wait: Duration,
    pub lost: u64,
    pub late: u64,
}

impl Reorder {
    pub fn new(max_packets: usize, max_wait: Duration) -> Self {
        Reorder {
            buf: BTreeMap::new(),
            next: None,
            max_packets: max_packets.max(1),
            max_wait,
            lost: 0,
            late: 0,
        }
    }

    /// Adds a packet; appends the packets that are ready to `out`, in order.
    pub fn push(&mut self, p: TapPacket, out: &mut Vec<TapPacket>) {
        if self.next.is_some_and(|n| p.seq < n) || self.buf.contains_key(&p.seq) {
            self.late += 1;
            return;
        }
        let now = p.arrival;
        self.buf.insert(p.seq, p);
        while let Some((&seq, first)) = self.buf.first_key_value() {
            let ready = self.next.is_none_or(|n| seq == n)
                || self.buf.len() > self.max_packets
                || now.saturating_duration_since(first.arrival) >= self.max_wait;
            if !ready {
                break;
            }
            self.release(out);
        }
    }

    /// Releases everything held, in order.
    pub fn flush(&mut self, out: &mut Vec<TapPacket>) {
        while !self.buf.is_empty() {
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut Vec<TapPacket>) {
        let Some((seq, p)) = self.buf.pop_first() else {
            return;
        };
        if let Some(n) = self.next
            && seq > n
        {
            self.lost += seq - n;
        }
        self.next = Some(seq + 1);
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::str0m::media::Mid;
    use media_core::{PeerId, TrackRef};
    use std::time::Instant;

    fn pkt(seq: u64, at: Instant) -> TapPacket {
        TapPacket {
            track: TrackRef {
                owner: PeerId(1),
                mid: Mid::from("0"),
            },
            seq,
            rtp_time: seq as i64 * 960,
            marker: false,
            payload: vec![0u8].into(),
            arrival: at,
            sender_clock: None,
        }
    }

    fn seqs(v: &[TapPacket]) -> Vec<u64> {
        v.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn reorders_counts_loss_and_drops_late() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Reorder::new(8, Duration::from_millis(100));
        let mut out = Vec::new();
        r.push(pkt(1, ms(0)), &mut out);
        r.push(pkt(3, ms(20)), &mut out);
        r.push(pkt(2, ms(25)), &mut out);
        assert_eq!(seqs(&out), [1, 2, 3]);
        out.clear();
        // 4 never comes: 5 waits until the oldest held packet is 100 ms old.
        r.push(pkt(5, ms(40)), &mut out);
        r.push(pkt(6, ms(60)), &mut out);
        assert!(out.is_empty());
        r.push(pkt(7, ms(140)), &mut out);
        assert_eq!(seqs(&out), [5, 6, 7]);
        assert_eq!(r.lost, 1);
        r.push(pkt(4, ms(150)), &mut out);
        assert_eq!(r.late, 1);
    }

    #[test]
    fn a_full_buffer_releases_its_oldest() {
        let t0 = Instant::now();
        let mut r = Reorder::new(2, Duration::from_secs(10));
        let mut out = Vec::new();
        r.push(pkt(10, t0), &mut out);
        out.clear();
        for s in [12, 13, 14] {
            r.push(pkt(s, t0), &mut out);
        }
        // Over the limit the oldest goes (11 is given up); the rest follow in order.
        assert_eq!(seqs(&out), [12, 13, 14]);
        r.push(pkt(16, t0), &mut out);
        r.flush(&mut out);
        assert_eq!(seqs(&out), [12, 13, 14, 16]);
        assert_eq!(r.lost, 2);
    }
}
