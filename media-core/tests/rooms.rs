//! Room participants: one connection each, renegotiated by client offers, with
//! explicit subscriptions, pause, mute, unpublish, ICE restart and room limits.

mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::str0m::media::{Direction, MediaKind, Mid};
use media_core::{PeerRole, RemoveReason, RoomId, SfuError, SfuEvent, TrackRef};

fn room() -> RoomId {
    RoomId::parse("r").unwrap()
}

/// Adds a `dir` m-line of `kind` to a participant; returns its mid.
fn add(h: &mut Harness, client: usize, kind: MediaKind, dir: Direction) -> Mid {
    let before = h.clients[client].mids.len();
    h.negotiate(client, |api| {
        vec![(api.add_media(kind, dir, Some("s".into()), None, None), kind)]
    })
    .expect("renegotiation");
    h.clients[client].mids[before].0
}

fn frames_on(h: &Harness, client: usize, mid: Mid) -> usize {
    h.clients[client]
        .frames
        .iter()
        .filter(|f| f.mid == mid)
        .count()
}

/// 10 video frames (a keyframe first) and 10 audio frames from `client`.
fn send_media(h: &mut Harness, client: usize, from: u32) {
    for i in 0..10 {
        h.send_video(client, i == 0, &payload(from + i, 300));
        h.send_audio(client, &payload(from + i, 60));
        h.run(Duration::from_millis(20));
    }
}

struct Pair {
    h: Harness,
    alice: usize,
    bob: usize,
    alice_audio: Mid,
    alice_video: Mid,
    bob_audio: Mid,
    bob_video: Mid,
}

/// Alice publishes audio and video; Bob has two receiving m-lines, not yet fed.
fn pair() -> Pair {
    let mut h = Harness::new();
    let alice = h.join_participant("r", "alice", None).unwrap();
    let bob = h.join_participant("r", "bob", None).unwrap();
    let alice_audio = add(&mut h, alice, MediaKind::Audio, Direction::SendOnly);
    let alice_video = add(&mut h, alice, MediaKind::Video, Direction::SendOnly);
    let bob_audio = add(&mut h, bob, MediaKind::Audio, Direction::RecvOnly);
    let bob_video = add(&mut h, bob, MediaKind::Video, Direction::RecvOnly);
    h.connect_all();
    Pair {
        h,
        alice,
        bob,
        alice_audio,
        alice_video,
        bob_audio,
        bob_video,
    }
}

impl Pair {
    fn track(&self, mid: Mid) -> TrackRef {
        TrackRef {
            owner: self.h.clients[self.alice].peer,
            mid,
        }
    }

    fn subscribe(&mut self, slot: Mid, track: Mid) -> Result<(), SfuError> {
        let bob = self.h.clients[self.bob].peer;
        let t = self.track(track);
        let now = self.h.now;
        self.h.sfu.subscribe(now, bob, slot, t)
    }
}

#[test]
fn participants_join_before_media_and_see_each_other() {
    let mut h = Harness::new();
    let a = h.join_participant("r", "alice", None).unwrap();
    let b = h.join_participant("r", "bob", None).unwrap();
    let joined: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::PeerJoined { identity, role, .. } => Some((identity.clone(), *role)),
            _ => None,
        })
        .collect();
    assert_eq!(
        joined,
        vec![
            ("alice".to_owned(), PeerRole::Participant),
            ("bob".to_owned(), PeerRole::Participant)
        ]
    );
    let list = h.sfu.room_participants(&room());
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].peer, h.clients[a].peer);
    assert_eq!(list[1].peer, h.clients[b].peer);
    assert!(list.iter().all(|p| !p.connected && p.tracks.is_empty()));
    // Without an offer nobody is reaped, however long they wait.
    h.run(Duration::from_secs(40));
    assert_eq!(h.sfu.room_participants(&room()).len(), 2);
}

#[test]
fn subscriptions_are_explicit_and_follow_renegotiation() {
    let mut p = pair();
    let published: Vec<Mid> =
        p.h.events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::TrackPublished { mid, .. } => Some(*mid),
                _ => None,
            })
            .collect();
    assert_eq!(published, vec![p.alice_audio, p.alice_video]);
    let tracks = &p.h.sfu.room_participants(&room())[0].tracks;
    assert_eq!(tracks.len(), 2);

    // Nothing is bound until Bob asks.
    send_media(&mut p.h, p.alice, 0);
    assert_eq!(frames_on(&p.h, p.bob, p.bob_video), 0);
    assert_eq!(frames_on(&p.h, p.bob, p.bob_audio), 0);

    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 100);
    let video = frames_on(&p.h, p.bob, p.bob_video);
    assert!(video >= 9, "video after subscribing: {video}");
    assert_eq!(
        frames_on(&p.h, p.bob, p.bob_audio),
        0,
        "audio was not subscribed"
    );

    p.subscribe(p.bob_audio, p.alice_audio).unwrap();
    send_media(&mut p.h, p.alice, 200);
    assert!(frames_on(&p.h, p.bob, p.bob_audio) >= 9);

    // Bob drops the video subscription: nothing more on that m-line.
    let bob = p.h.clients[p.bob].peer;
    let now = p.h.now;
    p.h.sfu.unsubscribe(now, bob, p.bob_video).unwrap();
    let before = frames_on(&p.h, p.bob, p.bob_video);
    send_media(&mut p.h, p.alice, 300);
    assert_eq!(frames_on(&p.h, p.bob, p.bob_video), before);

    // A later m-line added by renegotiation carries a new subscription.
    let bob_video2 = add(&mut p.h, p.bob, MediaKind::Video, Direction::RecvOnly);
    p.subscribe(bob_video2, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 400);
    assert!(frames_on(&p.h, p.bob, bob_video2) >= 9);
}

#[test]
fn bad_subscriptions_are_refused() {
    let mut p = pair();
    assert!(matches!(
        p.subscribe(p.bob_audio, p.alice_video),
        Err(SfuError::WrongKind { .. })
    ));
    assert!(matches!(
        p.subscribe(Mid::from("zz"), p.alice_video),
        Err(SfuError::UnknownMid(_))
    ));
    assert!(matches!(
        p.subscribe(p.bob_video, Mid::from("zz")),
        Err(SfuError::UnknownTrack)
    ));
    // A WHEP player's slots are bound by the room, not by request.
    let whep =
        p.h.join("r", PeerRole::Subscriber, &[MediaKind::Video])
            .unwrap();
    let (peer, mid) = (
        p.h.clients[whep].peer,
        p.h.clients[whep].mid(MediaKind::Video),
    );
    let t = p.track(p.alice_video);
    let now = p.h.now;
    assert!(matches!(
        p.h.sfu.subscribe(now, peer, mid, t),
        Err(SfuError::NotAllowed(_))
    ));
    // And WHEP sessions do not renegotiate.
    assert!(matches!(
        p.h.sfu.negotiate(now, peer, "v=0"),
        Err(SfuError::MalformedSdp(_))
    ));
}

#[test]
fn pause_and_mute_stop_forwarding_and_resume_on_a_keyframe() {
    let mut p = pair();
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    p.subscribe(p.bob_audio, p.alice_audio).unwrap();
    send_media(&mut p.h, p.alice, 0);
    let bob = p.h.clients[p.bob].peer;

    let now = p.h.now;
    p.h.sfu.set_paused(now, bob, p.bob_video, true).unwrap();
    let v = frames_on(&p.h, p.bob, p.bob_video);
    let a = frames_on(&p.h, p.bob, p.bob_audio);
    send_media(&mut p.h, p.alice, 100);
    assert_eq!(frames_on(&p.h, p.bob, p.bob_video), v, "paused video");
    assert!(
        frames_on(&p.h, p.bob, p.bob_audio) >= a + 9,
        "audio goes on"
    );

    let now = p.h.now;
    let kf = p.h.clients[p.alice].keyframe_requests;
    p.h.sfu.set_paused(now, bob, p.bob_video, false).unwrap();
    // The next (delta) frame re-decides Bob's layer and asks for its keyframe.
    p.h.send_video(p.alice, false, &payload(150, 300));
    p.h.run(Duration::from_millis(50));
    assert!(
        p.h.clients[p.alice].keyframe_requests > kf,
        "resuming asks the publisher for a keyframe"
    );
    send_media(&mut p.h, p.alice, 200);
    assert!(frames_on(&p.h, p.bob, p.bob_video) >= v + 9);

    // Alice mutes her audio: Bob gets nothing from it, everyone hears of it.
    let alice = p.h.clients[p.alice].peer;
    let now = p.h.now;
    p.h.sfu
        .set_track_muted(now, alice, p.alice_audio, true)
        .unwrap();
    p.h.shuttle();
    assert!(p.h.events.iter().any(|e| matches!(e,
        SfuEvent::TrackMuted { mid, muted: true, .. } if *mid == p.alice_audio)));
    assert!(p.h.sfu.room_participants(&room())[0].tracks[0].muted);
    let a = frames_on(&p.h, p.bob, p.bob_audio);
    send_media(&mut p.h, p.alice, 300);
    assert_eq!(frames_on(&p.h, p.bob, p.bob_audio), a);
    let now = p.h.now;
    p.h.sfu
        .set_track_muted(now, alice, p.alice_audio, false)
        .unwrap();
    send_media(&mut p.h, p.alice, 400);
    assert!(frames_on(&p.h, p.bob, p.bob_audio) >= a + 9);
}

#[test]
fn unpublish_ends_the_track_and_a_renegotiation_can_bring_it_back() {
    let mut p = pair();
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 0);
    let alice = p.h.clients[p.alice].peer;
    let now = p.h.now;
    p.h.sfu.unpublish(now, alice, p.alice_video).unwrap();
    p.h.shuttle();
    assert!(p.h.events.iter().any(|e| matches!(e,
        SfuEvent::TrackUnpublished { mid, .. } if *mid == p.alice_video)));
    assert_eq!(p.h.sfu.room_participants(&room())[0].tracks.len(), 1);
    let v = frames_on(&p.h, p.bob, p.bob_video);
    send_media(&mut p.h, p.alice, 100);
    assert_eq!(
        frames_on(&p.h, p.bob, p.bob_video),
        v,
        "unpublished video is not forwarded"
    );
    assert!(matches!(
        p.h.sfu.unpublish(now, alice, p.alice_video),
        Err(SfuError::UnknownTrack)
    ));

    // Alice renegotiates the m-line away, then sends again on it: published anew.
    let video = p.alice_video;
    p.h.negotiate(p.alice, |api| {
        api.set_direction(video, Direction::Inactive);
        Vec::new()
    })
    .unwrap();
    assert_eq!(p.h.sfu.room_participants(&room())[0].tracks.len(), 1);
    p.h.negotiate(p.alice, |api| {
        api.set_direction(video, Direction::SendOnly);
        Vec::new()
    })
    .unwrap();
    let republished =
        p.h.events
            .iter()
            .filter(|e| matches!(e, SfuEvent::TrackPublished { mid, .. } if *mid == video))
            .count();
    assert_eq!(republished, 2);
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 200);
    assert!(frames_on(&p.h, p.bob, p.bob_video) >= v + 9);

    // Stopping the m-line from the client side unpublishes it too.
    p.h.negotiate(p.alice, |api| {
        api.set_direction(video, Direction::Inactive);
        Vec::new()
    })
    .unwrap();
    let ended =
        p.h.events
            .iter()
            .filter(|e| matches!(e, SfuEvent::TrackUnpublished { mid, .. } if *mid == video))
            .count();
    assert_eq!(ended, 2);
}

#[test]
fn ice_restart_on_a_new_network_keeps_the_session() {
    let mut p = pair();
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 0);
    let v = frames_on(&p.h, p.bob, p.bob_video);
    assert!(v >= 9);

    // Bob's network goes away; the SFU sees ICE disconnect and starts the grace.
    p.h.clients[p.bob].offline = true;
    for i in 0..40 {
        p.h.send_video(p.alice, i % 10 == 0, &payload(100 + i, 300));
        p.h.run(Duration::from_millis(250));
    }
    let bob = p.h.clients[p.bob].peer;
    assert!(p.h.sfu.has_peer(bob), "within the grace period");

    // Bob is back on another address and restarts ICE.
    p.h.move_and_restart_ice(p.bob).unwrap();
    for _ in 0..200 {
        p.h.run(Duration::from_millis(10));
    }
    send_media(&mut p.h, p.alice, 200);
    let after = frames_on(&p.h, p.bob, p.bob_video);
    assert!(
        after >= v + 9,
        "media flows to the new address: {v} -> {after}"
    );
    assert!(!p.h.removed(bob));
    let list = p.h.sfu.room_participants(&room());
    assert!(list.iter().find(|x| x.peer == bob).unwrap().connected);
}

#[test]
fn room_limits_count_every_peer() {
    let mut h = Harness::new();
    h.join_participant("r", "a", Some(2)).unwrap();
    h.join("r", PeerRole::Publisher, &[MediaKind::Audio])
        .unwrap();
    assert_eq!(
        h.join_participant("r", "c", Some(2)).unwrap_err(),
        SfuError::RoomFull(2)
    );
    // Another room is not affected.
    h.join_participant("other", "c", Some(2)).unwrap();
}

#[test]
fn whip_tracks_feed_participants_and_participant_tracks_feed_whep() {
    let mut h = Harness::new();
    let whip = h
        .join("r", PeerRole::Publisher, &[MediaKind::Video])
        .unwrap();
    let carol = h.join_participant("r", "carol", None).unwrap();
    let carol_in = add(&mut h, carol, MediaKind::Video, Direction::RecvOnly);
    let carol_out = add(&mut h, carol, MediaKind::Audio, Direction::SendOnly);
    let whep = h
        .join("r", PeerRole::Subscriber, &[MediaKind::Audio])
        .unwrap();
    h.connect_all();
    let t = TrackRef {
        owner: h.clients[whip].peer,
        mid: h.clients[whip].mid(MediaKind::Video),
    };
    let now = h.now;
    let peer = h.clients[carol].peer;
    h.sfu.subscribe(now, peer, carol_in, t).unwrap();
    for i in 0..10 {
        h.send_video(whip, i == 0, &payload(i, 300));
        h.send_audio(carol, &payload(i, 60));
        h.run(Duration::from_millis(20));
    }
    assert!(frames_on(&h, carol, carol_in) >= 9);
    let whep_mid = h.clients[whep].mid(MediaKind::Audio);
    assert!(frames_on(&h, whep, whep_mid) >= 9);
    let _ = carol_out;
    // Leaving by request is announced with its reason.
    h.sfu.remove_peer(now, peer).unwrap();
    h.shuttle();
    assert!(h.events.iter().any(|e| matches!(e,
        SfuEvent::PeerRemoved { peer: p, reason: RemoveReason::Requested, .. } if *p == peer)));
}

#[test]
fn resubscribing_the_same_m_line_resumes_at_once() {
    let mut p = pair();
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 0);
    let bob = p.h.clients[p.bob].peer;
    let now = p.h.now;
    p.h.sfu.unsubscribe(now, bob, p.bob_video).unwrap();
    send_media(&mut p.h, p.alice, 100);
    let before = frames_on(&p.h, p.bob, p.bob_video);
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    // Alice answers the keyframe request with her next frame.
    for i in 0..10 {
        let key = i == 0 || p.h.clients[p.alice].keyframe_requests > 0;
        p.h.clients[p.alice].keyframe_requests = 0;
        p.h.send_video(p.alice, key, &payload(200 + i, 300));
        p.h.run(Duration::from_millis(33));
    }
    let after = frames_on(&p.h, p.bob, p.bob_video);
    assert!(after >= before + 9, "{before} -> {after}");
}

/// A participant whose token does not grant publishing may receive, but an offer
/// that sends audio or video is refused by the media core itself, and nothing of it
/// is published.
#[test]
fn a_participant_without_the_publish_grant_cannot_send() {
    let mut h = Harness::new();
    let viewer = h.join_participant_with("r", "viewer", None, false).unwrap();
    let refused = h.negotiate(viewer, |api| {
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        vec![(mid, MediaKind::Audio)]
    });
    assert!(
        matches!(refused, Err(SfuError::NotAllowed(m)) if m.contains("publish")),
        "{refused:?}"
    );
    let peer = h.clients[viewer].peer;
    let room = RoomId::parse("r").unwrap();
    let me = h
        .sfu
        .room_participants(&room)
        .into_iter()
        .find(|p| p.peer == peer)
        .expect("still in the room");
    assert!(me.tracks.is_empty(), "nothing published: {me:?}");
    assert!(h.sfu.room_tracks(&room).is_empty());
    // Receiving is fine.
    let mut h2 = Harness::new();
    let viewer2 = h2
        .join_participant_with("r", "viewer", None, false)
        .unwrap();
    add(&mut h2, viewer2, MediaKind::Audio, Direction::RecvOnly);
}

/// One identity, one participant: joining again (another tab, a phone whose old
/// connection never said goodbye) replaces the old participant, whose tracks end. A
/// WHIP/WHEP session with that identity, and the identity in another room, stay.
#[test]
fn a_second_participant_with_the_same_identity_replaces_the_first() {
    let mut p = pair();
    p.subscribe(p.bob_video, p.alice_video).unwrap();
    send_media(&mut p.h, p.alice, 0);
    let old = p.h.clients[p.alice].peer;
    let whip =
        p.h.join("r", PeerRole::Publisher, &[MediaKind::Audio])
            .unwrap();
    let elsewhere = p.h.join_participant("other", "alice", None).unwrap();
    p.h.events.clear();
    let again = p.h.join_participant("r", "alice", None).unwrap();
    let new = p.h.clients[again].peer;
    let order: Vec<_> = p
        .h
        .events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::PeerRemoved { peer, reason, .. } => Some(("removed", *peer, Some(*reason))),
            SfuEvent::PeerJoined { peer, .. } => Some(("joined", *peer, None)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("removed", old, Some(RemoveReason::Replaced)),
            ("joined", new, None)
        ],
        "the old one leaves before the new one is announced"
    );
    assert!(p.h.events.iter().any(|e| matches!(e,
        SfuEvent::TrackUnpublished { peer, mid, .. } if *peer == old && *mid == p.alice_video)));
    let list: Vec<_> =
        p.h.sfu
            .room_participants(&room())
            .into_iter()
            .map(|x| (x.peer, x.identity))
            .collect();
    assert_eq!(
        list,
        vec![
            (p.h.clients[p.bob].peer, "bob".to_owned()),
            (p.h.clients[whip].peer, "tester".to_owned()),
            (new, "alice".to_owned())
        ]
    );
    // A WHIP session is not a participant to replace; another room is another room.
    p.h.join_participant("r", "tester", None).unwrap();
    assert!(p.h.sfu.has_peer(p.h.clients[whip].peer));
    assert!(p.h.sfu.has_peer(p.h.clients[elsewhere].peer));
}

/// Revoking passes removes exactly the peers with those identities, WHIP/WHEP sessions
/// included, each announced with the reason.
#[test]
fn revoked_identities_leave_the_room() {
    let mut p = pair();
    let whip =
        p.h.join("r", PeerRole::Publisher, &[MediaKind::Audio])
            .unwrap();
    let elsewhere = p.h.join_participant("other", "bob", None).unwrap();
    let now = p.h.now;
    p.h.events.clear();
    let n = p.h.sfu.remove_identities(
        now,
        &room(),
        &["bob".into(), "tester".into()],
        RemoveReason::Revoked,
    );
    assert_eq!(n, 2);
    p.h.shuttle();
    let gone: Vec<_> =
        p.h.events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::PeerRemoved { peer, reason, .. } => Some((*peer, *reason)),
                _ => None,
            })
            .collect();
    assert_eq!(
        gone,
        vec![
            (p.h.clients[p.bob].peer, RemoveReason::Revoked),
            (p.h.clients[whip].peer, RemoveReason::Revoked)
        ]
    );
    let left: Vec<_> =
        p.h.sfu
            .room_participants(&room())
            .into_iter()
            .map(|x| x.identity)
            .collect();
    assert_eq!(left, ["alice"]);
    assert!(p.h.sfu.has_peer(p.h.clients[elsewhere].peer));
}
