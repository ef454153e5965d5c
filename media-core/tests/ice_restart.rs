//! ICE restart on WHIP and WHEP sessions (RFC 9725 §4.4): a client whose network
//! changed sends new credentials only, and keeps its session, tracks and subscribers.

mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::str0m::media::MediaKind;
use media_core::{PeerRole, RemoteIceCreds, SfuError, SfuEvent};

fn frames(h: &Harness, client: usize, kind: MediaKind) -> usize {
    h.clients[client].frames_of(kind).len()
}

/// 10 video frames (a keyframe first) and 10 audio frames from `client`.
fn send_media(h: &mut Harness, client: usize, from: u32) {
    for i in 0..10 {
        h.send_video(client, i == 0, &payload(from + i, 300));
        h.send_audio(client, &payload(from + i, 60));
        h.run(Duration::from_millis(20));
    }
}

/// `client` loses its network for long enough that the node sees ICE disconnect.
fn go_offline(h: &mut Harness, client: usize, sender: usize) {
    h.clients[client].offline = true;
    for i in 0..40 {
        h.send_video(sender, i % 10 == 0, &payload(500 + i, 300));
        h.run(Duration::from_millis(250));
    }
}

/// Runs until `client` has received `audio` and `video` frames in all, for at most
/// 3 s of virtual time.
fn media_within(h: &mut Harness, client: usize, audio: usize, video: usize) {
    for _ in 0..300 {
        if frames(h, client, MediaKind::Audio) >= audio
            && frames(h, client, MediaKind::Video) >= video
        {
            return;
        }
        h.run(Duration::from_millis(10));
    }
    panic!(
        "media did not come back: audio {}/{audio}, video {}/{video}",
        frames(h, client, MediaKind::Audio),
        frames(h, client, MediaKind::Video)
    );
}

fn joins(h: &Harness) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, SfuEvent::PeerJoined { .. }))
        .count()
}

#[test]
fn a_player_and_a_publisher_on_a_new_network_keep_their_sessions() {
    let mut h = Harness::new();
    let publisher = h
        .join(
            "r",
            PeerRole::Publisher,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap();
    let player = h
        .join(
            "r",
            PeerRole::Subscriber,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap();
    h.connect_all();
    send_media(&mut h, publisher, 0);
    let (audio, video) = (
        frames(&h, player, MediaKind::Audio),
        frames(&h, player, MediaKind::Video),
    );
    assert!(audio >= 9 && video >= 9, "{audio} {video}");
    let joined = joins(&h);

    // The player moves: its old address is gone, it restarts ICE from the new one.
    go_offline(&mut h, player, publisher);
    let player_peer = h.clients[player].peer;
    assert!(h.sfu.has_peer(player_peer), "within the grace period");
    h.move_and_restart_session_ice(player).unwrap();
    h.run(Duration::from_millis(500));
    send_media(&mut h, publisher, 100);
    assert!(frames(&h, player, MediaKind::Audio) >= audio + 9);
    // Video waits behind what the pacer queued while the player was away.
    media_within(&mut h, player, audio + 9, video + 9);

    // Then the publisher: its tracks stay published and the player keeps them.
    let (audio, video) = (
        frames(&h, player, MediaKind::Audio),
        frames(&h, player, MediaKind::Video),
    );
    h.clients[publisher].offline = true;
    h.run(Duration::from_secs(10));
    h.move_and_restart_session_ice(publisher).unwrap();
    h.run(Duration::from_millis(500));
    send_media(&mut h, publisher, 200);
    media_within(&mut h, player, audio + 9, video + 9);

    // Nobody left or joined on the way.
    assert_eq!(joins(&h), joined);
    assert!(!h.removed(player_peer));
    assert!(!h.removed(h.clients[publisher].peer));
    assert!(!h.events.iter().any(|e| matches!(
        e,
        SfuEvent::TrackUnpublished { .. } | SfuEvent::PeerRemoved { .. }
    )));
}

#[test]
fn only_sessions_without_renegotiation_restart_this_way() {
    let mut h = Harness::new();
    let alice = h.join_participant("r", "alice", None).unwrap();
    let creds = RemoteIceCreds::new("abcd", "0123456789012345678901").unwrap();
    let now = h.now;
    let peer = h.clients[alice].peer;
    assert!(matches!(
        h.sfu.restart_ice(now, peer, &creds),
        Err(SfuError::NotAllowed(_))
    ));
    h.sfu.remove_peer(now, peer).unwrap();
    assert_eq!(
        h.sfu.restart_ice(now, peer, &creds),
        Err(SfuError::UnknownPeer)
    );
}
