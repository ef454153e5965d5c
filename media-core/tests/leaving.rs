//! Peers leaving: a subscriber disturbs no one, a publisher ends its tracks and
//! another publisher's tracks take the same slots.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::str0m::media::MediaKind::{Audio, Video};
use media_core::{PeerRole, RemoveReason, SfuEvent};

#[test]
fn subscriber_leaving_disturbs_no_one() {
    let mut h = Harness::new();
    let p = h.join("l", PeerRole::Publisher, &[Audio]).unwrap();
    let a = h.join("l", PeerRole::Subscriber, &[Audio]).unwrap();
    let b = h.join("l", PeerRole::Subscriber, &[Audio]).unwrap();
    h.connect_all();
    let mut sent = Vec::new();
    for n in 0..50 {
        if n == 20 {
            let peer = h.clients[b].peer;
            h.sfu.remove_peer(h.now, peer).unwrap();
            h.shuttle();
        }
        let x = payload(n, 60);
        h.send_audio(p, &x);
        sent.push(x);
        h.run(Duration::from_millis(20));
    }
    assert_eq!(h.clients[a].frames_of(Audio), sent);
    assert_eq!(h.clients[b].frames_of(Audio).len(), 20);
    assert!(h.events.contains(&SfuEvent::PeerRemoved {
        peer: h.clients[b].peer,
        room: media_core::RoomId::parse("l").unwrap(),
        identity: "tester".into(),
        reason: RemoveReason::Requested
    }));
    assert_eq!(
        h.sfu.remove_peer(h.now, h.clients[b].peer),
        Err(media_core::SfuError::UnknownPeer)
    );
}

#[test]
fn publisher_leaving_ends_tracks_and_next_publisher_takes_over() {
    let mut h = Harness::new();
    let p1 = h.join("l", PeerRole::Publisher, &[Audio, Video]).unwrap();
    let s = h.join("l", PeerRole::Subscriber, &[Audio, Video]).unwrap();
    h.connect_all();
    for n in 0..10 {
        h.send_audio(p1, &payload(n, 60));
        h.send_video(p1, n == 0, &payload(n, 700));
        h.run(Duration::from_millis(20));
    }
    let peer1 = h.clients[p1].peer;
    h.sfu.remove_peer(h.now, peer1).unwrap();
    h.shuttle();
    let unpublished = h
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::TrackUnpublished { peer, .. } if *peer == peer1))
        .count();
    assert_eq!(unpublished, 2);
    assert!(
        h.sfu
            .room_tracks(&media_core::RoomId::parse("l").unwrap())
            .is_empty()
    );

    h.run(Duration::from_millis(500));
    let p2 = h.join("l", PeerRole::Publisher, &[Audio, Video]).unwrap();
    h.connect_all();
    let mut sent_v = Vec::new();
    for n in 100..110 {
        h.send_audio(p2, &payload(n, 60));
        sent_v.push(h.send_video(p2, n == 100, &payload(n, 700)));
        h.run(Duration::from_millis(20));
    }
    // The player's same m-lines now carry the second publisher, with continuous
    // sequence numbers (str0m's receiver would otherwise see a jump or a duplicate).
    let v = h.clients[s].frames_of(Video);
    assert_eq!(v.len(), 20);
    assert_eq!(&v[10..], &sent_v[..]);
    assert_eq!(h.clients[s].frames_of(Audio).len(), 20);
}

#[test]
fn last_peer_leaving_removes_the_room() {
    let mut h = Harness::new();
    let p = h.join("gone", PeerRole::Publisher, &[Audio]).unwrap();
    h.connect_all();
    assert_eq!(h.sfu.room_count(), 1);
    h.sfu.remove_peer(h.now, h.clients[p].peer).unwrap();
    assert_eq!(h.sfu.table_sizes(), (0, 0, 0, 0));
}
