//! Rooms across nodes: a room exported by one `Sfu` and imported by another reaches
//! the importer's subscribers once per packet, keyframe requests go back to the
//! exporter, and the import's end empties the subscribers' slots. Each participant of
//! the other side is a shadow here: it joins, publishes, mutes, speaks and leaves as
//! the local participants see anyone do, and its data messages cross; the room's node
//! passes one node's participants on to the others, never back.

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{Harness, payload};
use media_core::relay::RelayedPacket;
use media_core::str0m::media::{Direction, MediaKind};
use media_core::{PeerId, PeerRole, RelayOut, RelaySink, RemoveReason, RoomId, SfuEvent};

const LINK: u64 = 7;

struct Queue(Sender<RelayOut>);

impl RelaySink for Queue {
    fn offer(&mut self, item: RelayOut) -> bool {
        self.0.send(item).is_ok()
    }
}

fn room() -> RoomId {
    RoomId::parse("relayed").unwrap()
}

/// Node A (a publisher), node B (subscribers), and what crossed from A to B.
struct TwoNodes {
    a: Harness,
    b: Harness,
    link: Receiver<RelayOut>,
    packets: usize,
    /// Data messages that reached B, with their sender's shadow.
    data: Vec<(PeerId, serde_json::Value)>,
    /// Where B's events were read up to.
    read_b: usize,
}

/// Hands what one side offered to the other, as the relay's driver does; packets
/// cross the wire format. The data messages that arrived, with their sender's shadow.
fn deliver(
    to: &mut Harness,
    link: u64,
    items: impl IntoIterator<Item = RelayOut>,
    packets: &mut usize,
) -> Vec<(PeerId, serde_json::Value)> {
    let now = to.now;
    let mut data = Vec::new();
    for item in items {
        match item {
            RelayOut::Participant(p) => {
                to.sfu.import_participant(now, link, &p).unwrap();
            }
            RelayOut::ParticipantLeft {
                participant,
                reason,
                ..
            } => {
                let reason = reason.unwrap_or(RemoveReason::Requested);
                to.sfu.import_left(now, &room(), link, participant, reason);
            }
            RelayOut::Data {
                participant,
                payload,
                to: _,
                ..
            } => {
                let from = to.sfu.import_sender(&room(), link, participant).unwrap();
                to.sfu.export_data(from, None, payload.clone());
                data.push((from, payload));
            }
            RelayOut::Track(t) => to.sfu.import_track(now, link, &t).unwrap(),
            RelayOut::TrackEnded { track, .. } => {
                to.sfu.import_track_ended(now, &room(), link, track);
            }
            RelayOut::Muted { track, muted, .. } => {
                to.sfu.import_muted(now, &room(), link, track, muted);
            }
            RelayOut::Packet(p) => {
                *packets += 1;
                let mut wire = Vec::new();
                p.encode(&mut wire);
                let p = RelayedPacket::decode(&wire).unwrap();
                to.sfu.import_packet(now, &room(), link, p);
            }
        }
    }
    to.shuttle();
    data
}

impl TwoNodes {
    /// Hands everything A offered to B, as the relay's driver does.
    fn carry(&mut self) {
        let items: Vec<RelayOut> = self.link.try_iter().collect();
        let data = deliver(&mut self.b, LINK, items, &mut self.packets);
        self.data.extend(data);
        // Keyframe requests of B's subscribers go back to A.
        let wanted: Vec<_> = self.b.events[self.read_b..]
            .iter()
            .filter_map(|e| match e {
                SfuEvent::RelayKeyframeWanted {
                    link, track, rid, ..
                } => Some((*link, *track, rid.clone())),
                _ => None,
            })
            .collect();
        self.read_b = self.b.events.len();
        for (link, track, rid) in wanted {
            assert_eq!(link, LINK);
            let rid = rid.as_deref().map(Into::into);
            self.a
                .sfu
                .export_keyframe(self.a.now, &room(), track, rid)
                .unwrap();
            self.a.shuttle();
        }
    }

    fn run(&mut self, d: Duration) {
        self.a.run(d);
        self.b.run(d);
        self.carry();
    }
}

fn two_nodes() -> (TwoNodes, usize, [usize; 2]) {
    let mut a = Harness::new();
    let (tx, rx) = channel();
    let p = a
        .join(
            "relayed",
            PeerRole::Publisher,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap();
    a.connect_all();
    a.sfu.start_export(&room(), LINK, Box::new(Queue(tx)), true);
    let mut b = Harness::new();
    let subs = [0, 1].map(|_| {
        b.join(
            "relayed",
            PeerRole::Subscriber,
            &[MediaKind::Audio, MediaKind::Video],
        )
        .unwrap()
    });
    b.connect_all();
    let nodes = TwoNodes {
        a,
        b,
        link: rx,
        packets: 0,
        data: Vec::new(),
        read_b: 0,
    };
    (nodes, p, subs)
}

#[test]
fn an_exported_room_reaches_the_importers_subscribers_once_per_packet() {
    let (mut n, p, subs) = two_nodes();
    n.carry();
    assert_eq!(n.b.sfu.room_tracks(&room()).len(), 2);
    let before = n.a.clients[p].keyframe_requests;
    for i in 0..30 {
        n.a.send_audio(p, &payload(i, 80));
        n.a.send_video(p, i % 10 == 0, &payload(i, 400));
        n.run(Duration::from_millis(20));
    }
    // Two subscribers on B; one copy of each packet crossed.
    assert_eq!(n.packets, 60, "one relayed copy per packet");
    for s in subs {
        let audio = n.b.clients[s].frames_of(MediaKind::Audio);
        let video = n.b.clients[s].frames_of(MediaKind::Video);
        // The player holds the newest frame until the next packet: up to 28 here.
        assert!(audio.len() >= 25, "audio frames: {}", audio.len());
        assert!(audio.contains(&payload(28, 80)));
        assert!(
            video.contains(&payload(20, 400)),
            "video from a keyframe on"
        );
        assert!(video.len() >= 5, "video frames: {}", video.len());
    }
    // The subscribers' wait for a keyframe reached the publisher on A.
    assert!(n.a.clients[p].keyframe_requests > before);
}

#[test]
fn a_subscribers_keyframe_request_goes_back_to_the_exporting_publisher() {
    let (mut n, p, subs) = two_nodes();
    n.carry();
    for i in 0..5 {
        n.a.send_video(p, i == 0, &payload(i, 400));
        n.run(Duration::from_millis(40));
    }
    n.run(Duration::from_secs(2));
    let before = n.a.clients[p].keyframe_requests;
    n.b.request_keyframe_from_client(subs[0]);
    // The PLI reaches B, B asks A over the link, A asks the publisher.
    n.run(Duration::from_millis(500));
    n.run(Duration::from_millis(100));
    assert!(
        n.a.clients[p].keyframe_requests > before,
        "the PLI crossed the relay"
    );
}

#[test]
fn a_track_ending_or_muted_on_the_exporter_ends_or_mutes_it_on_the_importer() {
    let (mut n, p, subs) = two_nodes();
    n.carry();
    for i in 0..5 {
        n.a.send_audio(p, &payload(i, 80));
        n.run(Duration::from_millis(20));
    }
    let audio_mid = n.a.clients[p].mid(MediaKind::Audio);
    let publisher = n.a.clients[p].peer;
    n.a.sfu
        .set_track_muted(n.a.now, publisher, audio_mid, true)
        .unwrap();
    n.carry();
    let heard = n.b.clients[subs[0]].frames_of(MediaKind::Audio).len();
    for i in 5..10 {
        n.a.send_audio(p, &payload(i, 80));
        n.run(Duration::from_millis(20));
    }
    // One frame held by the player before the mute may still come out.
    let after = n.b.clients[subs[0]].frames_of(MediaKind::Audio).len();
    assert!(
        after <= heard + 1,
        "muted: nothing crosses ({heard} → {after})"
    );
    n.a.sfu.unpublish(n.a.now, publisher, audio_mid).unwrap();
    n.carry();
    assert_eq!(
        n.b.sfu.room_tracks(&room()).len(),
        1,
        "the audio track ended on B"
    );
}

#[test]
fn closing_the_import_empties_the_room_of_its_tracks_but_keeps_the_subscribers() {
    let (mut n, p, subs) = two_nodes();
    n.carry();
    n.a.send_audio(p, &payload(0, 80));
    n.run(Duration::from_millis(20));
    let shadow = shadow_of(&n.b, "tester");
    n.b.sfu.close_import(n.b.now, &room(), LINK);
    n.b.shuttle();
    assert!(n.b.sfu.room_tracks(&room()).is_empty());
    assert!(n.b.sfu.has_peer(n.b.clients[subs[0]].peer));
    assert!(
        n.b.events.iter().any(|e| matches!(
            e,
            SfuEvent::PeerRemoved { peer, reason: RemoveReason::Disconnected, .. } if *peer == shadow
        )),
        "the other node's participant is gone from here: {:?}",
        n.b.events
    );
    // A new import of the room feeds the same subscribers again.
    assert!(n.a.sfu.stop_export(&room(), LINK));
    let (tx, rx) = channel();
    n.link = rx;
    n.a.sfu
        .start_export(&room(), LINK, Box::new(Queue(tx)), true);
    n.carry();
    for i in 1..10 {
        n.a.send_audio(p, &payload(i, 80));
        n.run(Duration::from_millis(20));
    }
    assert!(
        n.b.clients[subs[0]]
            .frames_of(MediaKind::Audio)
            .contains(&payload(8, 80))
    );
}

#[test]
fn a_full_link_costs_packets_not_the_call() {
    struct Refuses;
    impl RelaySink for Refuses {
        fn offer(&mut self, _: RelayOut) -> bool {
            false
        }
    }
    let mut a = Harness::new();
    let p = a
        .join("relayed", PeerRole::Publisher, &[MediaKind::Audio])
        .unwrap();
    let s = a
        .join("relayed", PeerRole::Subscriber, &[MediaKind::Audio])
        .unwrap();
    a.connect_all();
    a.sfu.start_export(&room(), LINK, Box::new(Refuses), true);
    for i in 0..5 {
        a.send_audio(p, &payload(i, 80));
        a.run(Duration::from_millis(20));
    }
    assert_eq!(a.clients[s].frames_of(MediaKind::Audio).len(), 5);
    assert!(a.sfu.stats().relay_refused >= 5);
}

#[test]
fn each_worker_numbers_its_tracks_in_its_own_space() {
    let mut a = Harness::with_config(|c| c.relay_id_space = 3);
    let (tx, rx) = channel();
    a.join("relayed", PeerRole::Publisher, &[MediaKind::Audio])
        .unwrap();
    a.connect_all();
    a.sfu.start_export(&room(), LINK, Box::new(Queue(tx)), true);
    let ids: Vec<u32> = rx
        .try_iter()
        .filter_map(|i| match i {
            RelayOut::Track(t) => Some(t.track),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0] >> 24, 3, "{:#x}", ids[0]);
}

/// The shadow of the other side's participant `identity`.
fn shadow_of(h: &Harness, identity: &str) -> PeerId {
    h.sfu
        .room_participants(&room())
        .into_iter()
        .find(|p| p.identity == identity && h.sfu.is_import(p.peer))
        .unwrap_or_else(|| panic!("no shadow of {identity}"))
        .peer
}

#[test]
fn an_imported_room_is_passed_on_to_other_links_but_never_back() {
    let (mut n, p, _subs) = two_nodes();
    n.carry();
    // B passes the room on: to another worker of its node (tracks only), to another
    // node (participants too), and to A, whence it came (nothing of A's goes back).
    let (to_worker, from_b) = channel();
    let (to_node, to_c) = channel();
    let (back, to_a) = channel();
    n.b.sfu
        .start_export(&room(), 8, Box::new(Queue(to_worker)), false);
    n.b.sfu
        .start_export(&room(), 9, Box::new(Queue(to_node)), true);
    n.b.sfu
        .start_export(&room(), LINK, Box::new(Queue(back)), true);
    for i in 0..5 {
        n.a.send_audio(p, &payload(i, 80));
        n.run(Duration::from_millis(20));
    }
    let passed: Vec<RelayOut> = from_b.try_iter().collect();
    let count =
        |items: &[RelayOut], f: fn(&RelayOut) -> bool| items.iter().filter(|i| f(i)).count();
    assert_eq!(
        count(&passed, |i| matches!(i, RelayOut::Track(_))),
        2,
        "both imported tracks announced to the other worker"
    );
    assert_eq!(count(&passed, |i| matches!(i, RelayOut::Participant(_))), 0);
    assert!(count(&passed, |i| matches!(i, RelayOut::Packet(_))) >= 5);
    let first: Vec<RelayOut> = to_c.try_iter().collect();
    assert_eq!(
        count(&first, |i| matches!(i, RelayOut::Participant(_))),
        1,
        "{first:?}"
    );
    assert_eq!(count(&first, |i| matches!(i, RelayOut::Track(_))), 2);
    assert!(count(&first, |i| matches!(i, RelayOut::Packet(_))) >= 5);
    // B's own participant goes to A; nothing of A's goes back whence it came, nor
    // the end of its tracks and its leaving.
    n.b.join_participant("relayed", "ben", None).unwrap();
    let publisher = n.a.clients[p].peer;
    n.a.sfu
        .remove_peer_because(n.a.now, publisher, RemoveReason::Requested)
        .unwrap();
    n.a.shuttle();
    n.carry();
    let to_a: Vec<RelayOut> = to_a.try_iter().collect();
    assert!(
        matches!(&to_a[..], [RelayOut::Participant(p)] if p.identity == "ben"),
        "{to_a:?}"
    );
    let to_c: Vec<RelayOut> = to_c.try_iter().collect();
    assert_eq!(
        count(&to_c, |i| matches!(i, RelayOut::TrackEnded { .. })),
        2,
        "{to_c:?}"
    );
    assert!(
        to_c.iter().any(|i| matches!(
            i,
            RelayOut::ParticipantLeft {
                reason: Some(RemoveReason::Requested),
                ..
            }
        )),
        "{to_c:?}"
    );
}

/// A's room exported to B with its participants; B's side exported back to A.
struct BothWays {
    n: TwoNodes,
    /// What B offers A.
    back: Receiver<RelayOut>,
    back_packets: usize,
    /// Data messages that reached A.
    data_a: Vec<(PeerId, serde_json::Value)>,
}

impl BothWays {
    fn carry(&mut self) {
        self.n.carry();
        let items: Vec<RelayOut> = self.back.try_iter().collect();
        let data = deliver(&mut self.n.a, LINK, items, &mut self.back_packets);
        self.data_a.extend(data);
    }
}

fn both_ways() -> (BothWays, usize) {
    let (mut n, p, _) = two_nodes();
    let (tx, back) = channel();
    n.b.sfu
        .start_export(&room(), LINK, Box::new(Queue(tx)), true);
    n.carry();
    let ways = BothWays {
        n,
        back,
        back_packets: 0,
        data_a: Vec::new(),
    };
    (ways, p)
}

#[test]
fn each_sides_participants_are_shadows_on_the_other_that_join_publish_speak_and_leave() {
    let (mut w, p) = both_ways();
    // A participant joins on A without media; one joins on B and publishes audio.
    let ada = w.n.a.join_participant("relayed", "ada", None).unwrap();
    let ben = w.n.b.join_participant("relayed", "ben", None).unwrap();
    w.carry();
    let joined = |h: &Harness, who: &str| {
        h.events.iter().any(|e| {
            matches!(e, SfuEvent::PeerJoined { identity, relayed: true, .. } if identity == who)
        })
    };
    assert!(joined(&w.n.b, "ada"), "B's participants hear Ada join");
    assert!(joined(&w.n.b, "tester"), "… and A's WHIP publisher");
    assert!(joined(&w.n.a, "ben"), "A's participants hear Ben join");
    assert!(
        !joined(&w.n.a, "ada") && !joined(&w.n.b, "ben"),
        "nobody is shadowed at home"
    );
    // The subscribers of B are not announced to A (WHEP players count where they play).
    let on_a: Vec<String> =
        w.n.a
            .sfu
            .room_participants(&room())
            .into_iter()
            .map(|p| p.identity)
            .collect();
    assert_eq!(on_a.iter().filter(|i| *i == "ben").count(), 1, "{on_a:?}");
    assert_eq!(
        on_a.len(),
        3,
        "A: its publisher, Ada and Ben's shadow: {on_a:?}"
    );

    // Ben publishes audio on B: A hears the track published by Ben's shadow, and its
    // packets cross; A's speaker detection picks Ben.
    w.n.b
        .negotiate(ben, |s| {
            let mid = s.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some("s".into()),
                None,
                None,
            );
            vec![(mid, MediaKind::Audio)]
        })
        .unwrap();
    w.n.b.connect_all();
    w.carry();
    let ben_on_a = shadow_of(&w.n.a, "ben");
    assert!(w.n.a.events.iter().any(|e| matches!(
        e,
        SfuEvent::TrackPublished { peer, kind: MediaKind::Audio, .. } if *peer == ben_on_a
    )));
    for i in 0..40 {
        w.n.b.send_audio_with_level(ben, &payload(i, 80), Some(-20));
        w.n.a.send_audio_with_level(p, &payload(i, 80), Some(-127));
        w.n.a.run(Duration::from_millis(20));
        w.n.b.run(Duration::from_millis(20));
        w.carry();
    }
    assert!(
        w.back_packets >= 30,
        "Ben's packets crossed: {}",
        w.back_packets
    );
    assert!(
        w.n.a.events.iter().any(|e| matches!(
            e,
            SfuEvent::SpeakerChanged { peer, identity, .. } if *peer == ben_on_a && identity == "ben"
        )),
        "A's participants see Ben speak"
    );
    // Ben mutes: A's participants see it.
    let mid = w.n.b.clients[ben].mid(MediaKind::Audio);
    let ben_peer = w.n.b.clients[ben].peer;
    w.n.b
        .sfu
        .set_track_muted(w.n.b.now, ben_peer, mid, true)
        .unwrap();
    w.carry();
    assert!(w.n.a.events.iter().any(|e| matches!(
        e,
        SfuEvent::TrackMuted { peer, muted: true, .. } if *peer == ben_on_a
    )));

    // Data: Ada's message reaches B, Ben's reaches A, each from the sender's shadow.
    let ada_peer = w.n.a.clients[ada].peer;
    w.n.a
        .sfu
        .export_data(ada_peer, None, serde_json::json!({"chat": "hi Ben"}));
    w.n.b
        .sfu
        .export_data(ben_peer, None, serde_json::json!({"chat": "hi Ada"}));
    w.carry();
    let ada_on_b = shadow_of(&w.n.b, "ada");
    assert_eq!(
        w.n.data,
        vec![(ada_on_b, serde_json::json!({"chat": "hi Ben"}))]
    );
    assert_eq!(
        w.data_a,
        vec![(ben_on_a, serde_json::json!({"chat": "hi Ada"}))]
    );

    // Ben leaves B: his shadow leaves A, his track ends there first.
    w.n.b
        .sfu
        .remove_peer_because(w.n.b.now, ben_peer, RemoveReason::Requested)
        .unwrap();
    w.n.b.shuttle();
    w.carry();
    let ended = w.n.a.events.iter().position(|e| {
        matches!(
            e,
            SfuEvent::TrackUnpublished { peer, .. } if *peer == ben_on_a
        )
    });
    let left = w.n.a.events.iter().position(|e| {
        matches!(
            e,
            SfuEvent::PeerRemoved { peer, reason: RemoveReason::Requested, .. } if *peer == ben_on_a
        )
    });
    assert!(
        ended.is_some() && left.is_some() && ended < left,
        "{:?}",
        w.n.a.events
    );
    assert!(!w.n.a.sfu.is_import(ben_on_a) && !w.n.a.sfu.has_peer(ben_on_a));
}

#[test]
fn a_local_participant_replaces_its_own_identity_but_never_a_shadow() {
    let (mut w, _) = both_ways();
    let on_a = w.n.a.join_participant("relayed", "ada", None).unwrap();
    w.carry();
    let shadow = shadow_of(&w.n.b, "ada");
    // The same person joins on B too (another tab near another node): both stay.
    let on_b = w.n.b.join_participant("relayed", "ada", None).unwrap();
    let own = w.n.b.clients[on_b].peer;
    assert!(w.n.b.sfu.has_peer(shadow) && w.n.b.sfu.has_peer(own));
    // Evicting the identity on B removes B's own participant, not A's shadow.
    let ada = ["ada".to_owned()];
    let n =
        w.n.b
            .sfu
            .remove_identities(w.n.b.now, &room(), &ada, RemoveReason::Revoked);
    assert_eq!(n, 1);
    assert!(w.n.b.sfu.has_peer(shadow) && !w.n.b.sfu.has_peer(own));
    // A evicts its own: the shadow leaves B for the same reason.
    let peer = w.n.a.clients[on_a].peer;
    w.n.a
        .sfu
        .remove_identities(w.n.a.now, &room(), &ada, RemoveReason::Revoked);
    w.n.a.shuttle();
    w.carry();
    assert!(!w.n.a.sfu.has_peer(peer));
    assert!(w.n.b.events.iter().any(|e| matches!(
        e,
        SfuEvent::PeerRemoved { peer, reason: RemoveReason::Revoked, .. } if *peer == shadow
    )));
}
