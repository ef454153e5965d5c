//! The room protocol end to end: the real node, `/rtc` WebSockets and str0m peer
//! connections over loopback UDP.

mod common;

use std::time::Duration;

use common::room::{RoomClient, open_socket, poll_all, recv_json, send_json};
use common::{TestServer, join, payload, pump};
use futures_util::SinkExt;
use media_core::RoomId;
use media_core::str0m::media::{Direction, MediaKind, Mid};
use serde_json::{Value, json};
use signaling::Grants;
use tokio_tungstenite::tungstenite::Message;

fn all_grants() -> Grants {
    Grants {
        publish: true,
        subscribe: true,
        publish_data: true,
        record: false,
    }
}

fn track_of(msg: &Value) -> (String, String) {
    (
        msg["track"]["id"].as_str().unwrap().to_owned(),
        msg["track"]["kind"].as_str().unwrap().to_owned(),
    )
}

/// Sends `n` frames of video (keyframe every 10th) and audio from `c`, polling `others`.
async fn send_media(c: &mut RoomClient, others: &mut [&mut RoomClient], n: u32) {
    for i in 0..n {
        c.peer.send_video(i % 10 == 0, &payload(i, 400));
        if c.peer.mids.iter().any(|(_, k)| *k == MediaKind::Audio) {
            c.peer.send_audio(&payload(i, 80));
        }
        c.poll(Duration::from_millis(2)).await;
        poll_all(others, Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_subscribe_mute_data_and_leave() {
    let srv = TestServer::start().await;
    let mut alice = RoomClient::join(&srv, &srv.token("room1", "alice", all_grants())).await;
    assert_eq!(alice.joined["version"], 1);
    assert_eq!(alice.joined["room"], "room1");
    assert_eq!(alice.joined["participant"]["identity"], "alice");
    assert_eq!(alice.joined["participants"], json!([]));
    assert_eq!(alice.joined["resume_grace_secs"], 20);

    let mut bob = RoomClient::join(&srv, &srv.token("room1", "bob", all_grants())).await;
    let others = bob.joined["participants"].as_array().unwrap().clone();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["identity"], "alice");
    assert_eq!(others[0]["kind"], "participant");
    let joined = alice.wait_for("participant_joined", |_| true).await;
    assert_eq!(joined["participant"]["identity"], "bob");
    assert_eq!(joined["participant"]["sid"], bob.sid.as_str());

    // Alice publishes; Bob hears of both tracks.
    alice
        .add_media(&[MediaKind::Audio, MediaKind::Video], Direction::SendOnly)
        .await
        .unwrap();
    let t1 = track_of(&bob.wait_for("track_published", |_| true).await);
    let t2 = track_of(&bob.wait_for("track_published", |_| true).await);
    assert_eq!((t1.1.as_str(), t2.1.as_str()), ("audio", "video"));
    assert!(t1.0.starts_with(&format!("{}/", alice.sid)));

    // Bob opens two receiving m-lines and subscribes them.
    let mids = bob
        .add_media(&[MediaKind::Audio, MediaKind::Video], Direction::RecvOnly)
        .await
        .unwrap();
    let r = bob.subscribe(&t1.0, mids[0]).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let r = bob.subscribe(&t2.0, mids[1]).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    alice.connect().await;
    bob.connect().await;
    send_media(&mut alice, &mut [&mut bob], 40).await;
    let (audio, video) = (bob.frames_on(mids[0]), bob.frames_on(mids[1]));
    assert!(audio >= 30 && video >= 30, "audio {audio}, video {video}");

    // A new subscriber late in the room gets the current state in its snapshot.
    let mut carol = RoomClient::join(&srv, &srv.token("room1", "carol", all_grants())).await;
    let list = carol.joined["participants"].as_array().unwrap();
    let a = list.iter().find(|p| p["identity"] == "alice").unwrap();
    assert_eq!(a["tracks"].as_array().unwrap().len(), 2);
    assert_eq!(a["connected"], true);

    // Mute: the others hear of it and nothing is forwarded meanwhile.
    let audio_mid = alice.peer.mid(MediaKind::Audio).to_string();
    let r = alice
        .request(json!({"type": "mute", "mid": audio_mid, "muted": true}))
        .await;
    assert_eq!(r["type"], "mute_ok", "{r}");
    let m = bob.wait_for("track_muted", |_| true).await;
    assert_eq!(m["track"], t1.0.as_str());
    assert_eq!(m["muted"], true);
    let before = bob.frames_on(mids[0]);
    send_media(&mut alice, &mut [&mut bob, &mut carol], 10).await;
    assert!(bob.frames_on(mids[0]) <= before + 1, "muted audio stops");

    // Data: to everyone, and to one named participant.
    let r = bob
        .request(json!({"type": "data", "payload": {"chat": "hi all"}}))
        .await;
    assert_eq!(r["type"], "data_ok");
    assert_eq!(r["delivered"], 2);
    let d = alice.wait_for("data", |_| true).await;
    assert_eq!(d["payload"]["chat"], "hi all");
    assert_eq!(d["from_identity"], "bob");
    assert_eq!(d["from"], bob.sid.as_str());
    carol.wait_for("data", |_| true).await;
    let r = bob
        .request(json!({"type": "data", "payload": "psst", "to": ["carol"]}))
        .await;
    assert_eq!(r["delivered"], 1);
    assert_eq!(carol.wait_for("data", |_| true).await["payload"], "psst");
    alice.poll(Duration::from_millis(200)).await;
    assert!(
        !alice.saw("data", |m| m["payload"] == "psst"),
        "named data goes to the named only"
    );
    let r = bob
        .request(json!({"type": "data", "payload": 1, "to": ["nobody"]}))
        .await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "not_found");

    // Unpublish: subscribers hear the track end.
    let video_mid = alice.peer.mid(MediaKind::Video).to_string();
    let r = alice
        .request(json!({"type": "unpublish", "mid": video_mid}))
        .await;
    assert_eq!(r["type"], "unpublished", "{r}");
    let u = bob.wait_for("track_unpublished", |_| true).await;
    assert_eq!(u["track"], t2.0.as_str());

    // Alice leaves: the others see her go, with the reason.
    let r = alice.request(json!({"type": "leave"})).await;
    assert_eq!(r["type"], "leave_ok");
    let left = bob.wait_for("participant_left", |_| true).await;
    assert_eq!(left["participant"], alice.sid.as_str());
    assert_eq!(left["reason"], "left");
    carol.wait_for("participant_left", |_| true).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_sessions_are_participants_too() {
    let srv = TestServer::start().await;
    let mut whip = join(
        &srv,
        "/whip/mixed",
        &srv.publish_token("mixed", "camera"),
        &[MediaKind::Video],
    )
    .await
    .unwrap();
    let mut alice = RoomClient::join(&srv, &srv.token("mixed", "alice", all_grants())).await;
    let list = alice.joined["participants"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["identity"], "camera");
    assert_eq!(list[0]["kind"], "publisher");
    let track = list[0]["tracks"][0]["id"].as_str().unwrap().to_owned();

    let mut whep = join(
        &srv,
        "/whep/mixed",
        &srv.subscribe_token("mixed", "viewer"),
        &[MediaKind::Audio],
    )
    .await
    .unwrap();
    let j = alice.wait_for("participant_joined", |_| true).await;
    assert_eq!(j["participant"]["kind"], "subscriber");
    assert_eq!(j["participant"]["identity"], "viewer");

    // Alice receives the WHIP camera; the WHEP viewer receives Alice's audio.
    let mids = alice
        .add_media(&[MediaKind::Video], Direction::RecvOnly)
        .await
        .unwrap();
    alice
        .add_media(&[MediaKind::Audio], Direction::SendOnly)
        .await
        .unwrap();
    let r = alice.subscribe(&track, mids[0]).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    for i in 0..60 {
        whip.step();
        whep.step();
        whip.send_video(i % 10 == 0, &payload(i, 400));
        alice.peer.send_audio(&payload(i, 80));
        alice.poll(Duration::from_millis(5)).await;
        pump(&mut [&mut whip, &mut whep], Duration::from_millis(10)).await;
    }
    assert!(
        alice.frames_on(mids[0]) >= 30,
        "{}",
        alice.frames_on(mids[0])
    );
    assert!(whep.frames_of(MediaKind::Audio).len() >= 30);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_break_nothing() {
    let srv = TestServer::start().await;

    // Not a WebSocket: a JSON error.
    let r = srv
        .http
        .get(format!("{}/rtc", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_required");

    // Before join: errors, and the socket stays usable.
    let mut ws = open_socket(&srv).await;
    send_json(&mut ws, &json!({"type": "ping"})).await;
    let e = recv_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["code"], "not_joined");
    send_json(&mut ws, &json!({"type": "join", "token": "garbage"})).await;
    let e = recv_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["code"], "unauthorized");
    send_json(
        &mut ws,
        &json!({"type": "join", "token": srv.token("r", "x", all_grants()), "version": 7}),
    )
    .await;
    let e = recv_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["code"], "unsupported_version");
    send_json(
        &mut ws,
        &json!({"type": "join", "token": srv.token("r", "x", all_grants())}),
    )
    .await;
    let ok = recv_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ok["type"], "joined");
    drop(ws);

    let mut alice = RoomClient::join(&srv, &srv.token("r", "alice", all_grants())).await;
    alice
        .add_media(&[MediaKind::Audio], Direction::SendOnly)
        .await
        .unwrap();
    let mut bob = RoomClient::join(&srv, &srv.token("r", "bob", all_grants())).await;
    let mids = bob
        .add_media(&[MediaKind::Audio], Direction::RecvOnly)
        .await
        .unwrap();
    let track = format!("{}/{}", alice.sid, alice.peer.mid(MediaKind::Audio));
    assert_eq!(bob.subscribe(&track, mids[0]).await["type"], "subscribed");

    // A barrage of bad messages from Bob.
    let ws = bob.ws.as_mut().unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    send_json(ws, &json!({"type": "fly"})).await;
    send_json(ws, &json!({"type": "mute", "mid": "0"})).await;
    for _ in 0..4 {
        let e = bob.wait_for("error", |_| true).await;
        assert_eq!(e["code"], "bad_message", "{e}");
    }
    let cases = [
        (
            json!({"type": "subscribe", "track": "nonsense", "mid": "0"}),
            "invalid_field",
        ),
        (
            json!({"type": "subscribe", "track": "p999/0", "mid": mids[0].to_string()}),
            "unknown_track",
        ),
        (
            json!({"type": "subscribe", "track": track, "mid": "77"}),
            "unknown_mid",
        ),
        (json!({"type": "unsubscribe", "mid": ""}), "invalid_field"),
        (
            json!({"type": "mute", "mid": "9", "muted": true}),
            "unknown_track",
        ),
        (json!({"type": "unpublish", "mid": "9"}), "unknown_track"),
        (
            json!({"type": "offer", "sdp": "v=0 garbage"}),
            "malformed_sdp",
        ),
        (json!({"type": "offer", "sdp": ""}), "malformed_sdp"),
        (
            json!({"type": "candidate", "candidate": "nope"}),
            "malformed_sdpfrag",
        ),
        (json!({"type": "join", "token": "t"}), "already_joined"),
        (
            json!({"type": "data", "payload": "x".repeat(20_000)}),
            "data_too_large",
        ),
    ];
    for (msg, code) in cases {
        let r = bob.request(msg.clone()).await;
        assert_eq!(r["type"], "error", "{msg} → {r}");
        assert_eq!(r["code"], code, "{msg} → {r}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still joined, still subscribed, Alice untouched.
    assert_eq!(bob.request(json!({"type": "ping"})).await["type"], "pong");
    alice.connect().await;
    bob.connect().await;
    for i in 0..30 {
        alice.peer.send_audio(&payload(i, 80));
        alice.poll(Duration::from_millis(5)).await;
        bob.poll(Duration::from_millis(15)).await;
    }
    assert!(bob.frames_on(mids[0]) >= 20);
    assert!(!alice.saw("participant_left", |_| true));

    // Grants: without publish, without subscribe, without publish_data.
    let listen_only = Grants {
        subscribe: true,
        ..Grants::default()
    };
    let mut eve = RoomClient::join(&srv, &srv.token("r", "eve", listen_only)).await;
    let e = eve
        .add_media(&[MediaKind::Audio], Direction::SendOnly)
        .await
        .unwrap_err();
    assert_eq!(e["code"], "forbidden", "{e}");
    let r = eve.request(json!({"type": "data", "payload": 1})).await;
    assert_eq!(r["code"], "forbidden");
    let data_only = Grants {
        publish_data: true,
        ..Grants::default()
    };
    let mut dan = RoomClient::join(&srv, &srv.token("r", "dan", data_only)).await;
    let r = dan.subscribe(&track, Mid::from("0")).await;
    assert_eq!(r["code"], "forbidden");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_limit_from_the_token() {
    let srv = TestServer::start().await;
    let signer = &srv.server().signer;
    let room = RoomId::parse("small").unwrap();
    let token = |who: &str| {
        signer
            .sign_limited(&room, who, all_grants(), Duration::from_secs(60), Some(2))
            .unwrap()
    };
    let _a = RoomClient::join(&srv, &token("a")).await;
    let _b = RoomClient::join(&srv, &token("b")).await;
    let e = RoomClient::try_join(&srv, &token("c")).await.err().unwrap();
    assert_eq!(e["code"], "room_full", "{e}");
    // WHIP counts against the same limit.
    let whip = join(&srv, "/whip/small", &token("cam"), &[MediaKind::Audio]).await;
    let refused = whip.err().expect("refused");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["error"]["code"], "room_full");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_within_the_grace_period_resumes_unseen() {
    let srv = TestServer::start().await;
    let mut alice = RoomClient::join(&srv, &srv.token("r", "alice", all_grants())).await;
    alice
        .add_media(&[MediaKind::Video], Direction::SendOnly)
        .await
        .unwrap();
    let bob_token = srv.token("r", "bob", all_grants());
    let mut bob = RoomClient::join(&srv, &bob_token).await;
    let mids = bob
        .add_media(&[MediaKind::Video], Direction::RecvOnly)
        .await
        .unwrap();
    let track = format!("{}/{}", alice.sid, alice.peer.mid(MediaKind::Video));
    assert_eq!(bob.subscribe(&track, mids[0]).await["type"], "subscribed");
    alice.connect().await;
    bob.connect().await;
    send_media(&mut alice, &mut [&mut bob], 20).await;
    let before = bob.frames_on(mids[0]);
    assert!(before >= 15);

    // Bob's network goes: socket and UDP both. Alice keeps sending for 2 s.
    bob.drop_socket().await;
    for i in 0..100 {
        alice.peer.send_video(i % 10 == 0, &payload(i, 400));
        alice.poll(Duration::from_millis(20)).await;
    }
    // Back on a new network: resume, then restart ICE from a new socket.
    let r = bob.resume(&srv, &bob_token).await;
    assert_eq!(r["type"], "joined", "{r}");
    assert_eq!(r["resumed"], true);
    assert_eq!(r["participant"]["sid"], bob.sid.as_str());
    assert!(
        r["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["identity"] == "alice")
    );
    bob.restart_ice_on_new_socket().await.unwrap();
    send_media(&mut alice, &mut [&mut bob], 40).await;
    let after = bob.frames_on(mids[0]);
    assert!(after >= before + 30, "video resumes: {before} -> {after}");
    assert!(
        !alice.saw("participant_left", |_| true),
        "nobody saw Bob leave"
    );

    // A second resume takes the participant over; the first socket is told.
    let mut bob2_ws = open_socket(&srv).await;
    send_json(
        &mut bob2_ws,
        &json!({"type": "join", "token": bob_token, "resume": {"sid": bob.sid, "token": bob.resume_token}}),
    )
    .await;
    let r = recv_json(&mut bob2_ws, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r["type"], "joined");
    let e = bob.wait_for("error", |_| true).await;
    assert_eq!(e["code"], "replaced");
    // A wrong resume token is refused.
    let mut mallory = open_socket(&srv).await;
    send_json(
        &mut mallory,
        &json!({"type": "join", "token": bob_token, "resume": {"sid": bob.sid, "token": "0"}}),
    )
    .await;
    let e = recv_json(&mut mallory, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(e["code"], "forbidden");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_participant_is_gone() {
    let srv = TestServer::start_with(|s| s.media.disconnect_grace_secs = 2).await;
    let mut alice = RoomClient::join(&srv, &srv.token("r", "alice", all_grants())).await;
    assert_eq!(alice.joined["resume_grace_secs"], 2);
    let bob_token = srv.token("r", "bob", all_grants());
    let mut bob = RoomClient::join(&srv, &bob_token).await;
    alice.wait_for("participant_joined", |_| true).await;
    bob.drop_socket().await;
    alice.poll(Duration::from_millis(1000)).await;
    assert!(
        !alice.saw("participant_left", |_| true),
        "not before the grace ends"
    );
    let left = alice.wait_for("participant_left", |_| true).await;
    assert_eq!(left["participant"], bob.sid.as_str());
    assert_eq!(left["reason"], "disconnected");
    let r = bob.resume(&srv, &bob_token).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "resume_expired");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_twenty() {
    let srv = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let c = RoomClient::join(&srv, &srv.token("big", &format!("user{i}"), all_grants())).await;
        assert_eq!(c.joined["participants"].as_array().unwrap().len(), i);
        clients.push(c);
    }
    // Everyone hears of everyone who came later.
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in i + 1..20 {
            c.wait_for("participant_joined", |_| true).await;
        }
    }
    // Two speakers publish audio and video; the other 18 subscribe to all four tracks.
    let (speakers, listeners) = clients.split_at_mut(2);
    let mut tracks = Vec::new();
    for s in speakers.iter_mut() {
        let mids = s
            .add_media(&[MediaKind::Audio, MediaKind::Video], Direction::SendOnly)
            .await
            .unwrap();
        tracks.extend(mids.iter().map(|m| format!("{}/{m}", s.sid)));
    }
    let mut recv_mids = Vec::new();
    for l in listeners.iter_mut() {
        let mids = l
            .add_media(
                &[
                    MediaKind::Audio,
                    MediaKind::Video,
                    MediaKind::Audio,
                    MediaKind::Video,
                ],
                Direction::RecvOnly,
            )
            .await
            .unwrap();
        for (t, m) in tracks.iter().zip(&mids) {
            let r = l.subscribe(t, *m).await;
            assert_eq!(r["type"], "subscribed", "{r}");
        }
        recv_mids.push(mids);
    }
    {
        let mut all: Vec<&mut RoomClient> =
            speakers.iter_mut().chain(listeners.iter_mut()).collect();
        let end = std::time::Instant::now() + Duration::from_secs(15);
        while !all.iter().all(|c| c.peer.connected) {
            assert!(std::time::Instant::now() < end, "20 peers did not connect");
            poll_all(&mut all, Duration::from_millis(10)).await;
        }
    }
    for i in 0..30 {
        for s in speakers.iter_mut() {
            s.peer.send_video(i % 10 == 0, &payload(i, 400));
            s.peer.send_audio(&payload(i, 80));
            s.peer.step();
        }
        let mut ls: Vec<&mut RoomClient> = listeners.iter_mut().collect();
        poll_all(&mut ls, Duration::from_millis(20)).await;
    }
    {
        let mut ls: Vec<&mut RoomClient> = listeners.iter_mut().collect();
        poll_all(&mut ls, Duration::from_millis(300)).await;
    }
    for (l, mids) in listeners.iter().zip(&recv_mids) {
        for m in mids {
            let n = l.frames_on(*m);
            assert!(n >= 20, "{} got {n} frames on {m}", l.sid);
        }
    }
    // One data message reaches the 19 others.
    let r = listeners[0]
        .request(json!({"type": "data", "payload": "all hands"}))
        .await;
    assert_eq!(r["delivered"], 19);
    srv.stop().await;
}

/// A participant flooding `data` is held to its budget (a burst of 100, then 50 a
/// second): the rest is refused to it (`rate_limited`) and never sent on, so a
/// listener that reads nothing meanwhile is not cut off. Before, every message went
/// to everyone: the listener's socket backed up, its 1024-update queue overflowed,
/// and it was the one cut off (`too_slow`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_flood_is_refused_to_the_flooder_and_cuts_off_no_one_else() {
    let srv = TestServer::start().await;
    let mut flooder = RoomClient::join(&srv, &srv.token("flood", "flooder", all_grants())).await;
    let mut listener = RoomClient::join(&srv, &srv.token("flood", "listener", all_grants())).await;
    let chunk = "x".repeat(8 * 1024);
    const N: u64 = 3000;
    for i in 0..N {
        send_json(
            flooder.ws.as_mut().unwrap(),
            &json!({"type": "data", "id": format!("f{i}"), "payload": chunk}),
        )
        .await;
    }
    let (mut ok, mut limited) = (0u64, 0u64);
    while ok + limited < N {
        let m = flooder
            .take(
                |m| {
                    m["id"].as_str().is_some_and(|id| id.starts_with('f'))
                        && (m["type"] == "data_ok" || m["type"] == "error")
                },
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|| panic!("{ok} sent and {limited} refused of {N}"));
        match (m["type"].as_str(), m["code"].as_str()) {
            (Some("data_ok"), _) => ok += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("unexpected answer to the flood: {m}"),
        }
    }
    assert!(limited >= N / 2, "only {limited} of {N} refused");
    assert!((100..N / 2).contains(&ok), "{ok} sent");
    // The listener reads now: it is still in the room, heard what was sent, no more.
    let r = listener.request(json!({"type": "ping"})).await;
    assert_eq!(r["type"], "pong", "{r}");
    listener.poll(Duration::from_millis(500)).await;
    assert!(
        !listener.saw("error", |_| true),
        "the listener got an error: {:?}",
        listener.inbox.iter().find(|m| m["type"] == "error")
    );
    let heard = listener
        .inbox
        .iter()
        .filter(|m| m["type"] == "data")
        .count() as u64;
    assert_eq!(heard, ok);
    srv.stop().await;
}

/// One identity, one participant: a second join with a participant's identity (another
/// tab, a phone that lost its old connection) replaces it. The old socket hears
/// `left` (`replaced`), the others see it leave and the new one join, under the name
/// its token carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_with_the_same_identity_replaces_the_participant() {
    let srv = TestServer::start().await;
    let signer = &srv.server().signer;
    let room = RoomId::parse("r").unwrap();
    let named = |identity: &str, name: &str| {
        signer
            .sign_scoped(
                &room,
                identity,
                all_grants(),
                Duration::from_secs(60),
                signaling::token::TokenScope {
                    name: Some(name.into()),
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let mut watcher = RoomClient::join(&srv, &named("u-w", "Walt")).await;
    let mut first = RoomClient::join(&srv, &named("u-ann", "Ann Lee")).await;
    assert_eq!(first.joined["participant"]["name"], "Ann Lee");
    let joined = watcher
        .wait_for("participant_joined", |m| {
            m["participant"]["sid"] == first.sid.as_str()
        })
        .await;
    assert_eq!(
        (
            &joined["participant"]["identity"],
            &joined["participant"]["name"]
        ),
        (&json!("u-ann"), &json!("Ann Lee"))
    );
    let second = RoomClient::join(&srv, &named("u-ann", "Ann Lee")).await;
    assert_ne!(second.sid, first.sid);
    let gone = first.wait_for("left", |_| true).await;
    assert_eq!(gone["reason"], "replaced");
    let left = watcher
        .wait_for("participant_left", |m| {
            m["participant"] == first.sid.as_str()
        })
        .await;
    assert_eq!(left["reason"], "replaced");
    watcher
        .wait_for("participant_joined", |m| {
            m["participant"]["sid"] == second.sid.as_str()
        })
        .await;
    // The chat line says who wrote it by name.
    let mut second = second;
    second
        .request(json!({"type": "data", "payload": {"chat": "hi"}}))
        .await;
    let d = watcher.wait_for("data", |_| true).await;
    assert_eq!(
        (&d["from_identity"], &d["from_name"]),
        (&json!("u-ann"), &json!("Ann Lee"))
    );
    // The replaced participant cannot come back by resuming: it is gone.
    let r = first.resume(&srv, &named("u-ann", "Ann Lee")).await;
    assert_eq!(r["code"], "resume_expired", "{r}");
    srv.stop().await;
}
