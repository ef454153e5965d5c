//! Rooms across nodes: a room exported by one `Sfu` and imported by another reaches
//! the importer's subscribers once per packet, keyframe requests go back to the
//! exporter, and the import's end empties the subscribers' slots.

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{Harness, payload};
use media_core::relay::RelayedPacket;
use media_core::str0m::media::MediaKind;
use media_core::{PeerId, PeerRole, RelayOut, RelaySink, RoomId, SfuEvent};

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
    import: Option<PeerId>,
    packets: usize,
    /// Where B's events were read up to.
    read_b: usize,
}

impl TwoNodes {
    /// Hands everything A offered to B, as the relay's driver does.
    fn carry(&mut self) {
        let now = self.b.now;
        while let Ok(item) = self.link.try_recv() {
            match item {
                RelayOut::Track(t) => {
                    let peer = self
                        .b
                        .sfu
                        .open_import(now, &room(), LINK, "node-a")
                        .unwrap();
                    self.import = Some(peer);
                    self.b.sfu.import_track(now, peer, &t).unwrap();
                }
                RelayOut::TrackEnded { track, .. } => {
                    let peer = self.import.unwrap();
                    self.b.sfu.import_track_ended(now, peer, track);
                }
                RelayOut::Muted { track, muted, .. } => {
                    let peer = self.import.unwrap();
                    self.b.sfu.import_muted(now, peer, track, muted);
                }
                RelayOut::Packet(p) => {
                    self.packets += 1;
                    let mut wire = Vec::new();
                    p.encode(&mut wire);
                    let p = RelayedPacket::decode(&wire).unwrap();
                    let peer = self.import.unwrap();
                    self.b.sfu.import_packet(now, peer, p);
                }
            }
        }
        self.b.shuttle();
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
    a.sfu
        .start_export(&room(), LINK, Box::new(Queue(tx)), false);
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
        import: None,
        packets: 0,
        read_b: 0,
    };
    (nodes, p, subs)
}

#[test]
fn an_exported_room_reaches_the_importers_subscribers_once_per_packet() {
    let (mut n, p, subs) = two_nodes();
    n.carry();
    let import = n.import.expect("the tracks were announced");
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
    // The import is a publisher of B's room without a network of its own: no event
    // announced it to B's participants.
    assert!(!n.b.events.iter().any(|e| matches!(
        e,
        SfuEvent::TrackPublished { peer, .. } | SfuEvent::PeerJoined { peer, .. } if *peer == import
    )));
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
    let import = n.import.unwrap();
    n.b.sfu.close_import(n.b.now, import);
    n.b.shuttle();
    assert!(n.b.sfu.room_tracks(&room()).is_empty());
    assert!(n.b.sfu.has_peer(n.b.clients[subs[0]].peer));
    assert!(
        !n.b.events
            .iter()
            .any(|e| matches!(e, SfuEvent::PeerRemoved { peer, .. } if *peer == import)),
        "an import leaves silently"
    );
    // A new import of the room feeds the same subscribers again.
    assert!(n.a.sfu.stop_export(&room(), LINK));
    let (tx, rx) = channel();
    n.link = rx;
    n.a.sfu
        .start_export(&room(), LINK, Box::new(Queue(tx)), false);
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
    a.sfu.start_export(&room(), LINK, Box::new(Refuses), false);
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
    a.sfu
        .start_export(&room(), LINK, Box::new(Queue(tx)), false);
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

#[test]
fn an_imported_room_is_passed_on_to_another_worker_only_when_asked() {
    let (mut n, p, _subs) = two_nodes();
    n.carry();
    // B passes the room on: to another worker of its node (imports too), and to
    // another node (its own publishers only: it has none).
    let (to_worker, from_b) = channel();
    let (to_node, nothing) = channel();
    n.b.sfu
        .start_export(&room(), 8, Box::new(Queue(to_worker)), true);
    n.b.sfu
        .start_export(&room(), 9, Box::new(Queue(to_node)), false);
    for i in 0..5 {
        n.a.send_audio(p, &payload(i, 80));
        n.run(Duration::from_millis(20));
    }
    let passed: Vec<RelayOut> = from_b.try_iter().collect();
    assert_eq!(
        passed
            .iter()
            .filter(|i| matches!(i, RelayOut::Track(_)))
            .count(),
        2,
        "both imported tracks announced to the other worker"
    );
    assert!(
        passed
            .iter()
            .filter(|i| matches!(i, RelayOut::Packet(_)))
            .count()
            >= 5
    );
    assert_eq!(
        nothing.try_iter().count(),
        0,
        "nothing imported goes to another node"
    );
}
