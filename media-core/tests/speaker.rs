//! Active speaker: the loudest publisher (RFC 6464 levels) becomes the speaker after
//! the hold, and the change is an `SfuEvent::SpeakerChanged`.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::str0m::media::MediaKind::Audio;
use media_core::{PeerRole, SfuEvent};

fn speakers(h: &Harness) -> Vec<media_core::PeerId> {
    h.events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::SpeakerChanged { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn the_loudest_publisher_becomes_the_speaker_with_hysteresis() {
    let mut h = Harness::new();
    let a = h.join("talk", PeerRole::Publisher, &[Audio]).unwrap();
    let b = h.join("talk", PeerRole::Publisher, &[Audio]).unwrap();
    let _listener = h.join("talk", PeerRole::Subscriber, &[Audio]).unwrap();
    h.connect_all();
    let (pa, pb) = (h.clients[a].peer, h.clients[b].peer);
    // a talks, b is silent: a after the hold (and not before).
    for n in 0..15 {
        h.send_audio_with_level(a, &payload(n, 60), Some(-20));
        h.send_audio_with_level(b, &payload(n, 60), Some(-127));
        h.run(Duration::from_millis(20));
    }
    assert!(speakers(&h).is_empty(), "300 ms is inside the hold");
    for n in 15..60 {
        h.send_audio_with_level(a, &payload(n, 60), Some(-20));
        h.send_audio_with_level(b, &payload(n, 60), Some(-127));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(speakers(&h), [pa]);
    // A 200 ms interjection by b does not take over.
    for n in 60..70 {
        h.send_audio_with_level(a, &payload(n, 60), Some(-40));
        h.send_audio_with_level(b, &payload(n, 60), Some(-10));
        h.run(Duration::from_millis(20));
    }
    for n in 70..100 {
        h.send_audio_with_level(a, &payload(n, 60), Some(-20));
        h.send_audio_with_level(b, &payload(n, 60), Some(-127));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(speakers(&h), [pa]);
    // a stops, b talks: b.
    for n in 100..200 {
        h.send_audio_with_level(a, &payload(n, 60), Some(-127));
        h.send_audio_with_level(b, &payload(n, 60), Some(-25));
        h.run(Duration::from_millis(20));
    }
    assert_eq!(speakers(&h), [pa, pb]);
}
