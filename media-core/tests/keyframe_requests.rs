//! Late joiners get a keyframe quickly; requests to the publisher are coalesced.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::PeerRole;
use media_core::str0m::media::MediaKind::Video;

/// Publishes deltas forever, answering keyframe requests like an encoder would.
fn publish_for(h: &mut Harness, publisher: usize, frames: u32, start: u32) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for n in start..start + frames {
        let key = h.clients[publisher].keyframe_requests > 0;
        h.clients[publisher].keyframe_requests = 0;
        sent.push(h.send_video(publisher, key || n == 0, &payload(n, 1500)));
        h.run(Duration::from_millis(33));
    }
    sent
}

#[test]
fn late_subscriber_starts_on_a_keyframe() {
    let mut h = Harness::new();
    let publisher = h.join("k", PeerRole::Publisher, &[Video]).unwrap();
    let early = h.join("k", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    publish_for(&mut h, publisher, 30, 0);

    let requests_before = h.sfu.stats().keyframe_requests;
    let late = h.join("k", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    let sent = publish_for(&mut h, publisher, 10, 30);

    assert!(
        h.sfu.stats().keyframe_requests > requests_before,
        "SFU asked the publisher"
    );
    let got = h.clients[late].frames_of(Video);
    assert!(!got.is_empty(), "late subscriber got video");
    assert_eq!(got[0][0] & 1, 0, "first frame is a keyframe");
    // Within a couple of frames of joining: the request round trip is immediate here.
    assert!(
        got.len() >= sent.len() - 2,
        "got {} of {}",
        got.len(),
        sent.len()
    );
    // The early subscriber saw every frame, keyframes included.
    assert_eq!(h.clients[early].frames_of(Video).len(), 40);
}

#[test]
fn many_joins_at_once_make_few_keyframe_requests() {
    let mut h = Harness::new();
    let publisher = h.join("k", PeerRole::Publisher, &[Video]).unwrap();
    h.connect_all();
    publish_for(&mut h, publisher, 5, 0);
    let before = h.sfu.stats().keyframe_requests;
    for _ in 0..10 {
        h.join("k", PeerRole::Subscriber, &[Video]).unwrap();
    }
    h.connect_all();
    // No keyframe is sent in this window, so the requests stay pending.
    for n in 0..6 {
        h.send_video(publisher, false, &payload(100 + n, 500));
        h.run(Duration::from_millis(33));
    }
    let made = h.sfu.stats().keyframe_requests - before;
    // 200 ms of 300 ms minimum spacing: at most one now and one deferred.
    assert!((1..=2).contains(&made), "{made} requests for 10 joins");
}

#[test]
fn subscriber_pli_reaches_the_publisher() {
    let mut h = Harness::new();
    let publisher = h.join("k", PeerRole::Publisher, &[Video]).unwrap();
    let sub = h.join("k", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    publish_for(&mut h, publisher, 3, 0);
    h.run(Duration::from_millis(400));
    h.clients[publisher].keyframe_requests = 0;
    h.request_keyframe_from_client(sub);
    // At most one coalescing interval (300 ms) later.
    h.run(Duration::from_millis(350));
    assert_eq!(h.clients[publisher].keyframe_requests, 1);
}
