//! 1 publisher → N subscribers: every payload arrives byte-identical and in order.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::PeerRole;
use media_core::str0m::Input;
use media_core::str0m::media::MediaKind::{Audio, Video};

#[test]
fn one_publisher_to_five_subscribers_audio_and_video() {
    let mut h = Harness::new();
    let publisher = h.join("r1", PeerRole::Publisher, &[Audio, Video]).unwrap();
    let subs: Vec<usize> = (0..5)
        .map(|_| h.join("r1", PeerRole::Subscriber, &[Audio, Video]).unwrap())
        .collect();
    h.connect_all();

    let mut sent_audio = Vec::new();
    let mut sent_video = Vec::new();
    for n in 0..100u32 {
        let a = payload(n, 120);
        h.send_audio(publisher, &a);
        sent_audio.push(a);
        if n % 2 == 0 {
            // A keyframe first, then deltas; ~2.5 packets per frame.
            let v = h.send_video(publisher, n == 0, &payload(n, 2500));
            sent_video.push(v);
        }
        h.run(Duration::from_millis(20));
    }
    h.run(Duration::from_millis(200));

    for &s in &subs {
        let c = &h.clients[s];
        assert_eq!(c.frames_of(Audio), sent_audio, "audio at subscriber {s}");
        assert_eq!(c.frames_of(Video), sent_video, "video at subscriber {s}");
    }
    let stats = h.sfu.stats();
    assert_eq!(stats.forward_errors, 0);
    assert!(stats.rtp_forwarded >= 5 * (100 + 50 * 2), "{stats:?}");
}

#[test]
fn player_that_arrives_first_gets_the_tracks_when_published() {
    let mut h = Harness::new();
    let sub = h
        .join("early", PeerRole::Subscriber, &[Audio, Video])
        .unwrap();
    h.connect_all();
    h.run(Duration::from_millis(500));
    let publisher = h
        .join("early", PeerRole::Publisher, &[Audio, Video])
        .unwrap();
    h.connect_all();
    let mut sent = Vec::new();
    for n in 0..20u32 {
        h.send_audio(publisher, &payload(n, 80));
        sent.push(h.send_video(publisher, n == 0, &payload(n, 900)));
        h.run(Duration::from_millis(33));
    }
    h.run(Duration::from_millis(1000));
    let got = h.clients[sub].frames_of(Video);
    assert_eq!(got.len(), sent.len(), "video frames");
    assert_eq!(got, sent);
    assert_eq!(h.clients[sub].frames_of(Audio).len(), 20);
}

#[test]
fn rooms_are_isolated() {
    let mut h = Harness::new();
    let p1 = h.join("a", PeerRole::Publisher, &[Audio]).unwrap();
    let s1 = h.join("a", PeerRole::Subscriber, &[Audio]).unwrap();
    let s2 = h.join("b", PeerRole::Subscriber, &[Audio]).unwrap();
    h.connect_all();
    for n in 0..10 {
        h.send_audio(p1, &payload(n, 50));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(h.clients[s1].frames_of(Audio).len(), 10);
    assert!(h.clients[s2].frames_of(Audio).is_empty());
    assert_eq!(h.sfu.room_count(), 2);
}

/// A player that receives no video runs no estimator, so its answer leaves out
/// transport-wide congestion control: it would only send feedback for the node to
/// parse and drop. Video players (whose estimator picks layers) and publishers (whose
/// own estimator needs the node's feedback) keep it, and audio still flows to all.
#[test]
fn transport_cc_only_where_an_estimator_uses_it() {
    const TWCC: &str = "transport-wide-cc";
    let mut h = Harness::new();
    let publisher = h.join("tcc", PeerRole::Publisher, &[Audio, Video]).unwrap();
    let audio_only = h.join("tcc", PeerRole::Subscriber, &[Audio]).unwrap();
    let with_video = h
        .join("tcc", PeerRole::Subscriber, &[Audio, Video])
        .unwrap();
    assert!(h.clients[publisher].answer_sdp.contains(TWCC));
    assert!(h.clients[with_video].answer_sdp.contains(TWCC));
    assert!(
        !h.clients[audio_only].answer_sdp.contains(TWCC),
        "{}",
        h.clients[audio_only].answer_sdp
    );
    h.connect_all();
    let mut sent = Vec::new();
    for n in 0..50u32 {
        let a = payload(n, 120);
        h.send_audio(publisher, &a);
        sent.push(a);
        h.run(Duration::from_millis(20));
    }
    h.run(Duration::from_millis(100));
    assert_eq!(h.clients[audio_only].frames_of(Audio), sent);
    assert_eq!(h.clients[with_video].frames_of(Audio), sent);
}

#[test]
fn a_keyframe_leaves_a_paced_subscriber_in_one_service() {
    let mut h = Harness::new();
    let publisher = h.join("paced", PeerRole::Publisher, &[Video]).unwrap();
    let sub = h.join("paced", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    // A second of deltas after the first keyframe: the subscriber's estimator and
    // pacer are past their start-up probes.
    for n in 0..30u32 {
        h.send_video(publisher, n == 0, &payload(n, 900));
        h.run(Duration::from_millis(33));
    }
    h.run(Duration::from_millis(500));
    let before = h.clients[sub].frames_of(Video).len();

    // Two packets, under the pacer's burst at its rate here. The publisher's
    // `Rtc` sends them at its timeout; they then wait in the subscriber's for its next
    // one: a single service of the SFU must send them all.
    let keyframe = h.send_video(publisher, true, &payload(99, 2_000));
    let now = h.now;
    h.clients[publisher]
        .rtc
        .handle_input(Input::Timeout(now))
        .unwrap();
    h.shuttle();
    assert!(h.sfu.poll_timeout().is_some_and(|t| t <= h.now));
    h.sfu.handle_timeout(now);
    h.shuttle();
    // The subscriber's `Rtc` hands a frame over at its own timeout.
    h.clients[sub]
        .rtc
        .handle_input(Input::Timeout(now))
        .unwrap();
    h.shuttle();

    let got = h.clients[sub].frames_of(Video);
    assert_eq!(got.len(), before + 1, "the keyframe arrived whole");
    assert_eq!(got.last(), Some(&keyframe));
}
