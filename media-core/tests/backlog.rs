//! The pacer queue towards a subscriber whose link cannot carry the stream: bounded
//! by `SfuConfig::video_queue_limit`, with the video restarting on keyframes, while
//! a subscriber with room receives every frame.
mod common;

use std::time::Duration;

use common::{Harness, Link, payload};
use media_core::str0m::bwe::Bitrate;
use media_core::str0m::media::MediaKind::Video;
use media_core::{DEFAULT_VIDEO_QUEUE_LIMIT, PeerRole, SfuStats};

/// 4 kB frames at 30 fps: about 1 Mb/s.
const FRAME_BYTES: usize = 4_000;
/// A keyframe every 2 s.
const GOP: u32 = 60;

/// Frame `n`: its second to fifth bytes carry its number.
fn body(n: u32) -> Vec<u8> {
    let mut b = payload(n, FRAME_BYTES);
    b[1..5].copy_from_slice(&n.to_be_bytes());
    b
}

/// A received frame's number, and whether it is a keyframe.
type Received = (u32, bool);

struct Run {
    /// The largest pacer queue towards the slow subscriber, sampled after each frame.
    peak: usize,
    stats: SfuStats,
    /// What each subscriber received: (fast, slow).
    received: (Vec<Received>, Vec<Received>),
}

/// A publisher and two subscribers; the slow one's link carries 250 kb/s of the
/// stream's 1 Mb/s for 15 s, queueing the rest (it never drops).
fn run(limit: usize) -> Run {
    let mut h = Harness::with_config(|c| {
        c.video_queue_limit = limit;
        // The estimate starts under the link's rate, so the link itself never
        // builds a queue: the pacer's queue is what grows.
        c.initial_bitrate = Some(Bitrate::kbps(200));
    });
    let p = h.join("q", PeerRole::Publisher, &[Video]).unwrap();
    let fast = h.join("q", PeerRole::Subscriber, &[Video]).unwrap();
    let slow = h.join("q", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    // A bottleneck that delays but never drops: every frame missing at the slow
    // subscriber was left out by the SFU.
    let mut link = Link::new(250_000);
    link.max_delay = Duration::from_secs(60);
    h.clients[slow].downlink = Some(link);
    let slow_peer = h.clients[slow].peer;
    let mut peak = 0;
    for n in 0..450 {
        h.send_video(p, n % GOP == 0, &body(n));
        h.run(Duration::from_millis(33));
        peak = peak.max(h.sfu.send_queue_bytes(slow_peer));
    }
    // What is still queued (in the pacer, on the link) arrives.
    h.run(Duration::from_secs(10));
    let frames = |c: usize| -> Vec<Received> {
        h.clients[c]
            .frames_of(Video)
            .iter()
            .map(|f| {
                assert_eq!(f.len(), FRAME_BYTES, "a frame arrives whole");
                let n = u32::from_be_bytes(f[1..5].try_into().unwrap());
                assert_eq!(f[5..], body(n)[5..], "frame {n} intact");
                (n, f[0] & 1 == 0)
            })
            .collect()
    };
    let received = (frames(fast), frames(slow));
    Run {
        peak,
        stats: h.sfu.stats(),
        received,
    }
}

#[test]
fn a_slow_subscribers_queue_stays_bounded_and_its_video_restarts_on_keyframes() {
    // The scenario does overfill an unbounded queue, so the bound below is what holds.
    let unbounded = run(usize::MAX);
    assert!(
        unbounded.peak > DEFAULT_VIDEO_QUEUE_LIMIT,
        "without a bound the queue reaches {} bytes",
        unbounded.peak
    );
    assert_eq!(unbounded.stats.backlog_sheds, 0);

    let r = run(DEFAULT_VIDEO_QUEUE_LIMIT);
    assert!(
        r.peak <= DEFAULT_VIDEO_QUEUE_LIMIT,
        "queue peaked at {} bytes",
        r.peak
    );
    assert!(r.stats.backlog_sheds > 0, "{:?}", r.stats);

    // The subscriber with room is untouched: every frame, in order.
    let fast: Vec<u32> = r.received.0.iter().map(|(n, _)| *n).collect();
    assert_eq!(fast, (0..450).collect::<Vec<_>>());

    // The slow one keeps receiving, and after every frame it missed the picture
    // starts again on a keyframe: nothing it gets is undecodable.
    let slow = &r.received.1;
    assert!(
        slow.iter().any(|(n, _)| *n >= 300),
        "still receiving in the last 5 s: {slow:?}"
    );
    assert!(slow.first().is_some_and(|(_, key)| *key));
    for pair in slow.windows(2) {
        let ((a, _), (b, key)) = (pair[0], pair[1]);
        assert!(b > a, "in order: {a} then {b}");
        assert!(b == a + 1 || key, "frame {b} after {a} is a keyframe");
    }
    assert!(slow.len() < 450, "the link could not carry it all");
}
