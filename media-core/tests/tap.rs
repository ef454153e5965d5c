//! Recording taps: what a recorded room offers, and that a recorder that falls behind
//! costs the recording, never the call.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{Harness, payload};
use media_core::str0m::format::Codec;
use media_core::str0m::media::MediaKind;
use media_core::{MediaTap, PeerRole, RoomId, TapItem};

/// Passes what it is offered to the test; refuses everything while `full`.
struct Recorder {
    items: Sender<TapItem>,
    full: Arc<AtomicBool>,
}

impl MediaTap for Recorder {
    fn offer(&mut self, item: TapItem) -> bool {
        if self.full.load(Ordering::SeqCst) {
            return false;
        }
        self.items.send(item).is_ok()
    }
}

/// A recorder and what the test keeps of it: everything offered so far.
struct Recorded {
    rx: Receiver<TapItem>,
    items: Vec<TapItem>,
    full: Arc<AtomicBool>,
}

fn recorder() -> (Box<Recorder>, Recorded) {
    let (tx, rx) = channel();
    let full = Arc::new(AtomicBool::new(false));
    (
        Box::new(Recorder {
            items: tx,
            full: full.clone(),
        }),
        Recorded {
            rx,
            items: Vec::new(),
            full,
        },
    )
}

impl Recorded {
    fn items(&mut self) -> &[TapItem] {
        self.items.extend(self.rx.try_iter());
        &self.items
    }

    fn packets(&mut self) -> usize {
        self.items()
            .iter()
            .filter(|i| matches!(i, TapItem::Packet(_)))
            .count()
    }
}

fn room() -> RoomId {
    RoomId::parse("tap").unwrap()
}

#[test]
fn a_tapped_room_offers_each_track_once_announced_then_its_packets_then_its_end() {
    let mut h = Harness::new();
    let (tap, mut rec) = recorder();
    // The tap may come before the room exists.
    h.sfu.start_tap(room(), tap).unwrap();
    assert!(
        h.sfu.start_tap(room(), recorder().0).is_err(),
        "one tap per room"
    );
    let p = h
        .join(
            "tap",
            PeerRole::Publisher,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap();
    let s = h
        .join(
            "tap",
            PeerRole::Subscriber,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap();
    h.connect_all();
    let before = h.clients[p].keyframe_requests;
    for i in 0..20 {
        h.send_audio(p, &payload(i, 60));
        h.send_video(p, i == 0, &payload(i, 300));
        h.run(Duration::from_millis(20));
    }
    // Recording a video track starts with a keyframe request.
    assert!(h.clients[p].keyframe_requests > before);
    {
        let audio_mid = h.clients[p].mid(MediaKind::Audio);
        let items = rec.items();
        let tracks: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                TapItem::Track(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(tracks.len(), 2);
        assert!(
            tracks
                .iter()
                .any(|t| t.codec == Codec::Opus && t.clock_rate == 48_000)
        );
        assert!(
            tracks
                .iter()
                .any(|t| t.codec == Codec::Vp8 && t.clock_rate == 90_000)
        );
        // Each track is announced before its first packet.
        for t in &tracks {
            let announced = items
                .iter()
                .position(|i| matches!(i, TapItem::Track(x) if x.track == t.track))
                .unwrap();
            let first = items
                .iter()
                .position(|i| matches!(i, TapItem::Packet(x) if x.track == t.track))
                .unwrap();
            assert!(announced < first);
        }
        // Sequence numbers and RTP times run on, as the publisher sent them.
        let audio: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                TapItem::Packet(x) if x.track.mid == audio_mid => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(audio.len(), 20);
        assert!(
            audio
                .windows(2)
                .all(|w| w[1].seq == w[0].seq + 1 && w[1].rtp_time == w[0].rtp_time + 960)
        );
    }
    // The subscriber got everything too.
    assert_eq!(h.clients[s].frames_of(MediaKind::Audio).len(), 20);
    // Unpublishing ends the track in the recording.
    let peer = h.clients[p].peer;
    let mid = h.clients[p].mid(MediaKind::Audio);
    h.sfu.unpublish(h.now, peer, mid).unwrap();
    h.run(Duration::from_millis(20));
    assert!(
        rec.items()
            .iter()
            .any(|i| matches!(i, TapItem::TrackEnded(t) if t.mid == mid))
    );
    let (_, stats) = h.sfu.stop_tap(&room()).unwrap();
    assert_eq!(stats.refused, 0);
    let n = rec.items().len();
    h.send_video(p, false, &payload(99, 300));
    h.run(Duration::from_millis(20));
    assert_eq!(rec.items().len(), n, "nothing after the tap is removed");
}

#[test]
fn a_recorder_that_falls_behind_is_counted_and_the_call_goes_on() {
    let mut h = Harness::new();
    let (tap, mut rec) = recorder();
    let p = h
        .join("tap", PeerRole::Publisher, &[MediaKind::Audio])
        .unwrap();
    let s = h
        .join("tap", PeerRole::Subscriber, &[MediaKind::Audio])
        .unwrap();
    h.connect_all();
    h.sfu.start_tap(room(), tap).unwrap();
    for i in 0..10 {
        h.send_audio(p, &payload(i, 60));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(rec.packets(), 10);
    rec.full.store(true, Ordering::SeqCst);
    for i in 10..60 {
        h.send_audio(p, &payload(i, 60));
        h.run(Duration::from_millis(20));
    }
    // Every packet still reached the subscriber; the recording lost 50, counted.
    assert_eq!(h.clients[s].frames_of(MediaKind::Audio).len(), 60);
    assert_eq!(h.sfu.stats().tap_refused, 50);
    assert_eq!(h.sfu.tap_stats(&room()).unwrap().refused, 50);
    rec.full.store(false, Ordering::SeqCst);
    h.send_audio(p, &payload(60, 60));
    h.run(Duration::from_millis(20));
    assert_eq!(rec.packets(), 11, "it resumes when there is room again");
}
