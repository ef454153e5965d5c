use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pacer::{QueuePriority, QueueSnapshot};
use crate::rtp_::MidRid;
use crate::util::not_happening;

use super::RtpPacket;
use super::compact_packet::CompactPacket;

/// Packets written and not yet sent, kept compact: a keyframe's burst queues a few
/// dozen per receiver, and the queue's allocation stays at its largest burst. Only
/// the front is a whole [`RtpPacket`], in `head` (kept for the next front), since
/// sending it amends its header in place before it goes to the RTX cache. A packet
/// written to an empty queue, as most audio is, goes straight into the head and is
/// never compacted; one behind it moves into the head once it reaches the front.
#[derive(Debug)]
pub(crate) struct SendQueue {
    queue: VecDeque<QueuedPacket>,
    /// The front of `queue` as a whole packet, once the front's `packet` is `None`.
    head: Option<Box<RtpPacket>>,
    total: TotalQueue,
    last_emitted: Option<Instant>,
}

#[derive(Debug)]
struct QueuedPacket {
    /// `None` once the packet is in `head`: only ever so at the front.
    packet: Option<CompactPacket>,
    /// When it was queued; [`not_happening`] until the next `handle_timeout`.
    timestamp: Instant,
    nackable: bool,
}

impl SendQueue {
    pub fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            head: None,
            total: TotalQueue::default(),
            last_emitted: None,
        }
    }

    /// `midrid` is the sending stream's (see [`CompactPacket::new`]); the same is
    /// given to `peek` and `pop`.
    pub fn push(&mut self, packet: RtpPacket, midrid: MidRid) {
        let nackable = packet.nackable;
        let compact = if self.queue.is_empty() {
            match &mut self.head {
                Some(head) => **head = packet,
                None => self.head = Some(Box::new(packet)),
            }
            None
        } else {
            Some(CompactPacket::new(&packet, midrid))
        };
        self.queue.push_back(QueuedPacket {
            packet: compact,
            // Every incoming packet must be timestamped withe a handle_timeout.
            // This sentinel value indicates it is needed.
            timestamp: not_happening(),
            nackable,
        });
    }

    /// The payload of a queued packet, wherever it is kept.
    fn payload<'a>(head: &'a Option<Box<RtpPacket>>, queued: &'a QueuedPacket) -> &'a [u8] {
        match &queued.packet {
            Some(packet) => &packet.payload,
            None => &head.as_ref().expect("head of a queue").payload,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for pkt in self.queue.iter_mut().rev() {
            if pkt.timestamp != not_happening() {
                // all enqueued packets are timestamped.
                break;
            } else {
                pkt.timestamp = now;
                let len = Self::payload(&self.head, pkt).len();
                self.total.increase(now, len);
            }
        }
    }

    pub fn need_timeout(&self) -> bool {
        // Packets are timestamped contiguously from the front,
        // so checking the tail summarizes the entire queue's state.
        self.queue
            .back()
            .map(|p| p.timestamp == not_happening())
            .unwrap_or_default()
    }

    /// The head, if it is timestamped. Changes made to it stay until it is popped.
    pub fn peek(&mut self, midrid: MidRid) -> Option<&mut RtpPacket> {
        let front = self.queue.front_mut()?;
        if front.timestamp == not_happening() {
            return None;
        }
        let head = self
            .head
            .get_or_insert_with(|| Box::new(RtpPacket::blank()));
        if let Some(packet) = front.packet.take() {
            packet.move_into(head, midrid);
            head.nackable = front.nackable;
        }
        head.timestamp = front.timestamp;
        Some(head)
    }

    /// Removes the head and returns it as `peek` last gave it.
    pub fn pop(&mut self, now: Instant, midrid: MidRid) -> Option<&RtpPacket> {
        // Don't release packets without a timestamp.
        self.peek(midrid)?;

        // Unwrap is OK, because peek() above must have returned a value
        // for us to be here.
        let packet = self.queue.pop_front().unwrap();

        // Must be timestamped
        assert!(packet.timestamp != not_happening());

        let queue_time = now - packet.timestamp;
        let len = Self::payload(&self.head, &packet).len();
        self.total.decrease(now, len, queue_time);
        self.last_emitted = Some(now);

        self.head.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn last_payload(&self) -> Option<&[u8]> {
        self.queue.back().map(|q| Self::payload(&self.head, q))
    }

    pub(crate) fn snapshot(&mut self, now: Instant) -> QueueSnapshot {
        self.total.move_time_forward(now);

        QueueSnapshot {
            created_at: now,
            byte_size: self.total.unsent_size,
            packet_count: self.total.unsent_count as u32,
            total_queue_time_origin: self.total.queue_time,
            last_emitted: self.last_emitted,
            first_unsent: self
                .queue
                .iter()
                .find(|p| p.timestamp != not_happening())
                .map(|p| p.timestamp),
            priority: if self.total.unsent_count > 0 {
                QueuePriority::Media
            } else {
                QueuePriority::Empty
            },
        }
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.total.clear();
        self.last_emitted = None;
    }
}

// Total queue time in buffer. This lovely drawing explains how to add more time.
//
// -time--------------------------------------------------------->
//
// +--------------+
// |              |
// +--------------+
//      +---------+                          Already
//      |         |                           queued
//      +---------+                         durations
//          +-----+
//          |     |
//          +-----+
//                       +-+
//                       | |         <-----  Add next
//                       +-+                  packet
//
//
//
// +--------------+--------+
// |              |@@@@@@@@|
// +--------------+--------+
//      +---------+--------+                 The @ is
//      |         |@@@@@@@@|                  what's
//      +---------+--------+                  added
//          +-----+--------+
//          |     |@@@@@@@@|
//          +-----+--------+
//                       +-+
//                       |@|
//                       +-+
#[derive(Debug, Default)]
struct TotalQueue {
    /// Number of unsent packets.
    unsent_count: usize,
    /// The data size (bytes) of the unsent packets.
    unsent_size: usize,
    // /// When we last added some value to `queue_time`.
    // last: Option<Instant>,
    /// The total queue time of all the unsent packets.
    queue_time: Duration,
    // Timestamp of the last added packet.
    last: Option<Instant>,
}

impl TotalQueue {
    fn move_time_forward(&mut self, now: Instant) {
        if let Some(last) = self.last {
            assert!(self.unsent_count > 0);
            let from_last = now - last;
            self.queue_time += from_last * (self.unsent_count as u32);
            self.last = Some(now);
        } else {
            assert!(self.unsent_count == 0);
            assert!(self.unsent_size == 0);
            assert!(self.queue_time == Duration::ZERO);
        }
    }

    fn increase(&mut self, now: Instant, size: usize) {
        self.move_time_forward(now);
        self.unsent_count += 1;
        self.unsent_size += size;
        self.last = Some(now);
    }

    fn decrease(&mut self, now: Instant, size: usize, queue_time: Duration) {
        self.move_time_forward(now);

        self.unsent_count -= 1;
        self.unsent_size -= size;

        self.queue_time -= queue_time;

        if self.unsent_count == 0 {
            assert!(self.unsent_size == 0);
            self.queue_time = Duration::ZERO;
            self.last = None;
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::{ExtensionValues, MediaTime, Mid, RtpHeader, VideoOrientation};

    use super::*;

    fn midrid() -> MidRid {
        MidRid(Mid::from("v"), None)
    }

    #[test]
    fn peek_pop_no_timestamp() {
        let mut queue = SendQueue::new();

        queue.push(
            RtpPacket {
                seq_no: 0.into(),
                time: MediaTime::from_90khz(10),
                header: RtpHeader::default(),
                payload: [].into(),
                vp8_patch: None,
                timestamp: Instant::now(),
                last_sender_info: None,
                nackable: true,
            },
            midrid(),
        );

        assert!(queue.peek(midrid()).is_none());
        assert!(queue.pop(Instant::now(), midrid()).is_none());
        assert!(queue.need_timeout());

        let snapshot_at = Instant::now() + Duration::from_secs(3);
        assert_eq!(
            queue.snapshot(snapshot_at),
            QueueSnapshot {
                created_at: snapshot_at,
                packet_count: 0,
                byte_size: 0,
                total_queue_time_origin: Duration::ZERO,
                first_unsent: None,
                priority: QueuePriority::Empty,
                ..Default::default()
            }
        );
    }

    #[test]
    fn peek_pop_after_timestamp() {
        let mut queue = SendQueue::new();

        let start = Instant::now();

        queue.push(
            RtpPacket {
                seq_no: 0.into(),
                time: MediaTime::from_90khz(10),
                header: RtpHeader::default(),
                payload: [42, 42].into(),
                vp8_patch: None,
                timestamp: start,
                last_sender_info: None,
                nackable: true,
            },
            midrid(),
        );

        queue.handle_timeout(start);

        assert!(queue.peek(midrid()).is_some());
        assert!(!queue.need_timeout());

        let snapshot_at = start + Duration::from_secs(3);
        assert_eq!(
            queue.snapshot(snapshot_at),
            QueueSnapshot {
                created_at: snapshot_at,
                packet_count: 1,
                byte_size: 2,
                total_queue_time_origin: Duration::from_secs(3),
                first_unsent: Some(start),
                priority: QueuePriority::Media,
                ..Default::default()
            }
        );

        assert!(queue.pop(Instant::now(), midrid()).is_some());
    }

    #[test]
    fn untimed_packets_are_contiguous_at_tail() {
        let mut queue = SendQueue::new();
        let start = Instant::now();

        queue.push(
            RtpPacket {
                seq_no: 0.into(),
                time: MediaTime::from_90khz(10),
                header: RtpHeader::default(),
                payload: [0; 10].into(),
                vp8_patch: None,
                timestamp: start,
                last_sender_info: None,
                nackable: true,
            },
            midrid(),
        );
        queue.push(
            RtpPacket {
                seq_no: 1.into(),
                time: MediaTime::from_90khz(20),
                header: RtpHeader::default(),
                payload: [1; 10].into(),
                vp8_patch: None,
                timestamp: start,
                last_sender_info: None,
                nackable: true,
            },
            midrid(),
        );
        queue.push(
            RtpPacket {
                seq_no: 2.into(),
                time: MediaTime::from_90khz(20),
                header: RtpHeader::default(),
                payload: [1; 10].into(),
                vp8_patch: None,
                timestamp: start,
                last_sender_info: None,
                nackable: true,
            },
            midrid(),
        );

        assert!(
            queue.queue.iter().all(|q| q.timestamp == not_happening()),
            "expect every new packet's timestamp to start with the sentinel value"
        );
        assert!(queue.need_timeout());

        let now = start + Duration::from_millis(10);
        queue.handle_timeout(now);

        assert!(
            queue.queue.iter().all(|q| q.timestamp != not_happening()),
            "expect handle_timeout to have timestamped every packet"
        );
        assert!(!queue.need_timeout());
    }

    #[test]
    fn total_queue() {
        let mut total_queue = TotalQueue::default();
        let now = Instant::now();
        total_queue.increase(now, 0);
        total_queue.increase(now, 1);
        total_queue.decrease(now, 1, Duration::ZERO);
        // Doesn't panic
        total_queue.move_time_forward(now + Duration::from_millis(1));
    }

    /// What `write_rtp` queues for a forwarded video packet.
    fn written(seq_no: u64, csrc_count: usize) -> RtpPacket {
        let mut header = RtpHeader {
            sequence_number: seq_no as u16,
            marker: seq_no % 2 == 0,
            payload_type: 96.into(),
            timestamp: 9000 * seq_no as u32,
            ssrc: 42.into(),
            csrc_count,
            ext_vals: ExtensionValues {
                video_orientation: Some(VideoOrientation::Deg90),
                ..ExtensionValues::default()
            },
            ..RtpHeader::default()
        };
        if csrc_count > 0 {
            header.csrc[0] = 7;
        }
        RtpPacket {
            seq_no: seq_no.into(),
            time: MediaTime::from_secs(seq_no),
            header,
            payload: vec![seq_no as u8; 100 + seq_no as usize].into(),
            vp8_patch: None,
            timestamp: not_happening(),
            last_sender_info: None,
            nackable: seq_no != 3,
        }
    }

    #[test]
    fn queued_packets_come_out_as_they_went_in() {
        let mut queue = SendQueue::new();
        let start = Instant::now();
        // 2 and 3 compact, 4 with a CSRC (kept whole).
        let cases = [(2, 0), (3, 0), (4, 1)];
        for (seq_no, csrc) in cases {
            queue.push(written(seq_no, csrc), midrid());
        }
        let expected: Vec<_> = cases
            .into_iter()
            .map(|(seq_no, csrc)| written(seq_no, csrc))
            .collect();
        // The first went into the head, the others behind it.
        let compact: Vec<_> = queue
            .queue
            .iter()
            .map(|q| q.packet.as_ref().map(|p| p.is_compact()))
            .collect();
        assert_eq!(compact, [None, Some(true), Some(false)]);
        queue.handle_timeout(start);

        for expected in &expected {
            let head = queue.peek(midrid()).expect("head");
            assert_eq!(head.seq_no, expected.seq_no);
            assert_eq!(head.time, expected.time);
            assert_eq!(head.header, expected.header);
            assert_eq!(head.payload, expected.payload);
            assert_eq!(head.nackable, expected.nackable);
            assert_eq!(head.timestamp, start);

            // Sending amends the head; peeking again and popping see the amendment.
            head.header.ext_vals.mid = Some(midrid().mid());
            let peeked_again = queue.peek(midrid()).unwrap();
            assert_eq!(peeked_again.header.ext_vals.mid, Some(midrid().mid()));
            let popped = queue.pop(start, midrid()).expect("popped");
            assert_eq!(popped.seq_no, expected.seq_no);
            assert_eq!(popped.header.ext_vals.mid, Some(midrid().mid()));
            assert_eq!(popped.payload, expected.payload);
        }
        assert!(queue.peek(midrid()).is_none());
        assert!(queue.is_empty());

        // An empty queue takes the next packet into the head again.
        queue.push(written(5, 0), midrid());
        assert_eq!(queue.last_payload(), Some(&written(5, 0).payload[..]));
        queue.handle_timeout(start);
        let head = queue.peek(midrid()).expect("head");
        assert_eq!(head.header, written(5, 0).header);
        assert_eq!(head.timestamp, start);
        assert_eq!(queue.snapshot(start).byte_size, 105);
        assert_eq!(queue.pop(start, midrid()).unwrap().seq_no, 5.into());
        assert_eq!(queue.snapshot(start).byte_size, 0);
    }

    #[test]
    fn a_queued_packet_is_a_fraction_of_a_packet() {
        let entry = std::mem::size_of::<QueuedPacket>();
        assert!(entry <= 120, "{entry} bytes");
        assert!(std::mem::size_of::<RtpPacket>() >= 3 * entry);
    }
}
