//! Loss on either side of the SFU is repaired by NACK and retransmission.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::PeerRole;
use media_core::str0m::media::MediaKind::Video;

fn lossy_run(loss_up: f64, loss_down: f64) {
    let mut h = Harness::new();
    let p = h.join("n", PeerRole::Publisher, &[Video]).unwrap();
    let s = h.join("n", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    h.loss_up = loss_up;
    h.loss_down = loss_down;
    let mut sent = Vec::new();
    for n in 0..60 {
        sent.push(h.send_video(p, n == 0, &payload(n, 3000)));
        h.run(Duration::from_millis(33));
    }
    h.loss_up = 0.0;
    h.loss_down = 0.0;
    h.run(Duration::from_secs(1));
    let got = h.clients[s].frames_of(Video);
    assert_eq!(
        got, sent,
        "every frame repaired (up {loss_up}, down {loss_down})"
    );
}

#[test]
fn loss_between_sfu_and_subscriber_is_repaired() {
    lossy_run(0.0, 0.05);
}

#[test]
fn loss_between_publisher_and_sfu_is_repaired() {
    lossy_run(0.05, 0.0);
}
