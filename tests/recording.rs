//! Recording through the real node: publishers over WHIP (str0m peers sending media
//! from FFmpeg's encoders), the control API starting and stopping, the files in the
//! object store decoded by our reader and by FFmpeg, the manifest's alignment, and
//! `recording.events` on the bus.

mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::remote::{User, patch, post, register};
use common::{Peer, TestServer, connect, join};
use events::{Envelope, Topic};
use media_core::str0m::format::Codec;
use media_core::str0m::media::{
    Frequency, MediaKind, MediaKind::Audio, MediaKind::Video, MediaTime,
};
use recorder::OggOpusReader;
use serde_json::{Value, json};
use support::{Encoded, Moto, encode, python};

const WAIT: Duration = Duration::from_secs(20);

/// One track a test plays: frames sent on their timestamps from `start` on.
struct Play {
    peer: usize,
    kind: MediaKind,
    codec: Codec,
    frames: Vec<Encoded>,
    start: Duration,
    next: usize,
    first_sent: Option<Instant>,
}

impl Play {
    fn new(
        peer: usize,
        kind: MediaKind,
        codec: Codec,
        frames: Vec<Encoded>,
        start_ms: u64,
    ) -> Play {
        Play {
            peer,
            kind,
            codec,
            frames,
            start: Duration::from_millis(start_ms),
            next: 0,
            first_sent: None,
        }
    }

    fn clock(&self) -> u64 {
        if self.kind == Audio { 48_000 } else { 90_000 }
    }

    /// Media time of the frames sent.
    fn sent_ms(&self) -> f64 {
        self.next as f64
            * if self.kind == Audio {
                20.0
            } else {
                1000.0 / 30.0
            }
    }
}

/// Sends every track's frames in real time, stepping the peers in between.
async fn play(peers: &mut [&mut Peer], tracks: &mut [Play]) {
    let t0 = Instant::now();
    while tracks.iter().any(|t| t.next < t.frames.len()) {
        let now = t0.elapsed();
        assert!(now < Duration::from_secs(30), "playing took too long");
        for t in tracks.iter_mut() {
            while let Some(f) = t.frames.get(t.next) {
                let due = t.start + Duration::from_micros(u64::from(f.pts) * 1_000_000 / t.clock());
                if due > now {
                    break;
                }
                let time = if t.kind == Audio {
                    MediaTime::new(u64::from(f.pts), Frequency::FORTY_EIGHT_KHZ)
                } else {
                    MediaTime::from_90khz(u64::from(f.pts))
                };
                let data = f.data.clone();
                peers[t.peer].send_frame(t.kind, t.codec, time, &data);
                t.first_sent.get_or_insert_with(Instant::now);
                t.next += 1;
            }
        }
        for p in peers.iter_mut() {
            p.step();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Let the last packets arrive.
    common::pump(peers, Duration::from_millis(300)).await;
}

/// A user and their new room; the room's id is the SFU room media goes to.
async fn owner_with_room(srv: &TestServer, room: &str, auto_record: bool) -> (User, String) {
    let owner = register(srv, &format!("owner-{room}@example.test")).await;
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms", srv.base),
        Some(&owner.access),
        json!({"name": room, "auto_record": auto_record}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    (owner, v["id"].as_str().unwrap().to_owned())
}

async fn get(srv: &TestServer, path: &str, token: &str) -> (u16, Value) {
    common::remote::get(&srv.http, format!("{}{path}", srv.base), token).await
}

async fn start(srv: &TestServer, room: &str, token: &str) -> (u16, Value) {
    post(
        &srv.http,
        format!("{}/api/v1/rooms/{room}/recordings", srv.base),
        Some(token),
        json!({}),
    )
    .await
}

async fn stop(srv: &TestServer, room: &str, id: &str, token: &str) -> (u16, Value) {
    post(
        &srv.http,
        format!("{}/api/v1/rooms/{room}/recordings/{id}/stop", srv.base),
        Some(token),
        json!({}),
    )
    .await
}

/// Polls the recording until `done` holds.
async fn wait_recording(
    srv: &TestServer,
    room: &str,
    id: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, v) = get(srv, &format!("/api/v1/rooms/{room}/recordings/{id}"), token).await;
        assert_eq!(s, 200, "{v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "recording never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn collect_events(sub: &mut events::Subscription, until: &str) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out: Vec<Envelope> = Vec::new();
    while !out.iter().any(|e| e.kind == until) {
        let d = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {until}; got {:?}",
                    out.iter().map(|e| &e.kind).collect::<Vec<_>>()
                )
            })
            .unwrap();
        out.push(Envelope::from_slice(&d.payload).unwrap());
    }
    out
}

fn track<'a>(manifest: &'a Value, participant: &str, kind: &str) -> &'a Value {
    manifest["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["participant"] == participant && t["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} track of {participant} in {manifest}"))
}

fn stored_file(srv: &TestServer, room: &str, id: &str, t: &Value) -> std::path::PathBuf {
    srv.data_dir
        .join("recordings")
        .join(room)
        .join(id)
        .join(t["file"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_two_publishers_is_recorded_aligned_and_uploaded() {
    let py = python();
    let srv = TestServer::start().await;
    let (owner, podcast) = owner_with_room(&srv, "podcast", false).await;
    let mut sub = srv
        .server()
        .api
        .bus
        .subscribe("test-rec", &[Topic::RecordingEvents])
        .unwrap();
    let mut alice = join(
        &srv,
        &format!("/whip/{podcast}"),
        &srv.publish_token(&podcast, "alice"),
        &[Audio, Video],
    )
    .await
    .unwrap();
    let mut bob = join(
        &srv,
        &format!("/whip/{podcast}"),
        &srv.publish_token(&podcast, "bob"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut alice, &mut bob]).await;
    let (s, rec) = start(&srv, "podcast", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    assert_eq!(rec["status"], "recording");
    let id = rec["id"].as_str().unwrap().to_owned();

    // Alice speaks and shows video for 3 s; Bob joins in 500 ms later for 2.5 s.
    let mut tracks = [
        Play::new(0, Audio, Codec::Opus, encode(&py, "opus", 150), 0),
        Play::new(0, Video, Codec::Vp8, encode(&py, "vp8", 90), 0),
        Play::new(1, Audio, Codec::Opus, encode(&py, "opus", 125), 500),
    ];
    play(&mut [&mut alice, &mut bob], &mut tracks).await;

    let (s, v) = stop(&srv, "podcast", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    // Stopped, or already uploaded too (a local store can finish before the answer).
    assert!(v["status"] == "stopped" || v["status"] == "uploaded", "{v}");
    // Stopping twice is the caller's mistake.
    let (s, again) = stop(&srv, "podcast", &id, &owner.access).await;
    assert_eq!(s, 409, "{again}");
    assert_eq!(again["error"]["code"], "not_recording");

    let done = wait_recording(&srv, "podcast", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    let m = &done["manifest"];
    assert_eq!(m["tracks"].as_array().unwrap().len(), 3, "{m}");
    assert_eq!(done["objects"].as_array().unwrap().len(), 4);

    // Durations: what was sent, within 100 ms, by our reader and by FFmpeg.
    for (who, play) in [("alice", &tracks[0]), ("bob", &tracks[2])] {
        let t = track(m, who, "audio");
        let path = stored_file(&srv, &podcast, &id, t);
        let ogg = OggOpusReader::parse(&std::fs::read(&path).unwrap()).unwrap();
        let ours = (ogg.samples().unwrap() - 312) as f64 / 48.0;
        let sent = play.sent_ms();
        assert!(
            (ours - sent).abs() <= 100.0,
            "{who}: file {ours} ms, sent {sent} ms"
        );
        assert!((t["duration_ms"].as_f64().unwrap() - ours).abs() < 1.0);
        let ff = &support::decode(&py, &path)[0];
        let ff_ms = ff["samples"].as_f64().unwrap() / 48.0;
        assert!(
            (ff_ms - sent).abs() <= 100.0,
            "{who}: FFmpeg decodes {ff_ms} ms, sent {sent} ms"
        );
    }
    let v = track(m, "alice", "video");
    assert_eq!(v["codec"], "vp8");
    let path = stored_file(&srv, &podcast, &id, v);
    assert!(path.extension().unwrap() == "webm");
    let ff = &support::decode(&py, &path)[0];
    assert_eq!(ff["codec"], "vp8");
    assert_eq!(
        (ff["width"].as_u64(), ff["height"].as_u64()),
        (Some(320), Some(240))
    );
    let frames = ff["frames"].as_u64().unwrap();
    assert!(frames >= 85, "FFmpeg decodes {frames} of 90 frames");
    let video_ms = v["duration_ms"].as_f64().unwrap();
    assert!(
        (video_ms - tracks[1].sent_ms()).abs() <= 100.0,
        "video {video_ms} ms"
    );

    // Alignment: the manifest puts Bob's first sample where it was sent relative to
    // Alice's, within a few milliseconds.
    let at = |t: &Value| t["first_sample_at"].as_f64().unwrap();
    let (a, b) = (track(m, "alice", "audio"), track(m, "bob", "audio"));
    let sent_offset = tracks[2].first_sent.unwrap() - tracks[0].first_sent.unwrap();
    let offset = at(b) - at(a);
    assert!(
        (offset - sent_offset.as_secs_f64() * 1000.0).abs() <= 10.0,
        "manifest offset {offset} ms, sent {} ms; clocks {} / {}",
        sent_offset.as_secs_f64() * 1000.0,
        a["clock_source"],
        b["clock_source"]
    );
    assert!(
        (at(v) - at(a)).abs() <= 10.0,
        "alice's video and audio start together"
    );

    let evs = collect_events(&mut sub, "recording.uploaded").await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "recording.started",
            "recording.track_added",
            "recording.track_added",
            "recording.track_added",
            "recording.stopped",
            "recording.uploaded"
        ]
    );
    assert!(evs.iter().all(|e| e.data["recording_id"] == id.as_str()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_h264_and_av1_tracks_are_recorded_from_a_keyframe_and_decode() {
    let py = python();
    let srv = TestServer::start().await;
    let (owner, room) = owner_with_room(&srv, "codecs", false).await;
    let mut peers = Vec::new();
    for who in ["vp9", "h264", "av1"] {
        peers.push(
            join(
                &srv,
                &format!("/whip/{room}"),
                &srv.publish_token(&room, who),
                &[Video],
            )
            .await
            .unwrap(),
        );
    }
    {
        let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
        connect(&mut refs).await;
    }
    let (s, rec) = start(&srv, "codecs", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let codecs = [
        (Codec::Vp9, "vp9"),
        (Codec::H264, "h264"),
        (Codec::Av1, "av1"),
    ];
    let mut tracks: Vec<Play> = codecs
        .iter()
        .enumerate()
        .map(|(i, (c, name))| Play::new(i, Video, *c, encode(&py, name, 45), 0))
        .collect();
    {
        let mut refs: Vec<&mut Peer> = peers.iter_mut().collect();
        play(&mut refs, &mut tracks).await;
    }
    let (s, v) = stop(&srv, "codecs", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    let done = wait_recording(&srv, "codecs", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    for (_, name) in codecs {
        let t = track(&done["manifest"], name, "video");
        assert_eq!(t["codec"], name);
        let path = stored_file(&srv, &room, &id, t);
        let want_ext = if name == "h264" { "mkv" } else { "webm" };
        assert_eq!(path.extension().unwrap(), want_ext);
        let ff = &support::decode(&py, &path)[0];
        let ff_codec = ff["codec"].as_str().unwrap();
        assert!(
            ff_codec.contains(name) || (name == "av1" && ff_codec.contains("dav1d")),
            "{name}: {ff}"
        );
        assert_eq!(
            (ff["width"].as_u64(), ff["height"].as_u64()),
            (Some(320), Some(240)),
            "{name}"
        );
        let frames = ff["frames"].as_u64().unwrap();
        assert!(frames >= 40, "{name}: FFmpeg decodes {frames} of 45 frames");
    }
    srv.stop().await;
}

/// A recording belongs to the room it was made in, not to its name: delete the room,
/// let someone else make one under the same name, and they see none of the old
/// recordings, not even through a link made before; a recording running when the room
/// was deleted was stopped with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_made_again_under_the_same_name_sees_none_of_the_old_recordings() {
    let srv = TestServer::start().await;
    let (first, reborn) = owner_with_room(&srv, "reborn", false).await;
    let (s, v) = start(&srv, "reborn", &first.access).await;
    assert_eq!(s, 201, "{v}");
    let done_id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = stop(&srv, "reborn", &done_id, &first.access).await;
    assert_eq!(s, 200, "{v}");
    let done = wait_recording(&srv, "reborn", &done_id, &first.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    let old_link = done["files"][0]["url"].as_str().unwrap().to_owned();
    let fetch = |url: String| {
        let http = srv.http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(fetch(format!("{}{old_link}", srv.base)).await, 200);
    // Deleted while a second recording runs.
    let (s, v) = start(&srv, "reborn", &first.access).await;
    assert_eq!(s, 201, "{v}");
    let running_id = v["id"].as_str().unwrap().to_owned();
    let s = srv
        .http
        .delete(format!("{}/api/v1/rooms/reborn", srv.base))
        .bearer_auth(&first.access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(s, 204);

    let second = register(&srv, "second-owner@example.test").await;
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms", srv.base),
        Some(&second.access),
        json!({"name": "reborn"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = get(
        &srv,
        &format!("/api/v1/rooms/{reborn}/recordings"),
        &second.access,
    )
    .await;
    assert_eq!(s, 404, "the deleted room is gone, for everyone: {v}");
    let (s, v) = get(&srv, "/api/v1/rooms/reborn/recordings", &second.access).await;
    assert_eq!(
        (s, v.clone()),
        (200, json!([])),
        "the new owner lists none: {v}"
    );
    for id in [&done_id, &running_id] {
        let (s, v) = get(
            &srv,
            &format!("/api/v1/rooms/reborn/recordings/{id}"),
            &second.access,
        )
        .await;
        assert_eq!(s, 404, "{v}");
        let (s, v) = post(
            &srv.http,
            format!("{}/api/v1/rooms/reborn/recordings/{id}/mixdown", srv.base),
            Some(&second.access),
            json!({}),
        )
        .await;
        assert_eq!(s, 404, "no mixdown of another room's recording: {v}");
    }
    assert_eq!(
        fetch(format!("{}{old_link}", srv.base)).await,
        404,
        "a link made for the old room opens nothing in the new one"
    );
    let file = done["files"][0]["name"].as_str().unwrap();
    let s = srv
        .http
        .get(format!(
            "{}/api/v1/rooms/reborn/recordings/{done_id}/files/{file}",
            srv.base
        ))
        .bearer_auth(&second.access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(s, 404);
    // The recording running at the deletion was stopped: the new room records at once.
    let (s, v) = start(&srv, "reborn", &second.access).await;
    assert_eq!(
        s, 201,
        "the deleted room's recording still held the name: {v}"
    );
    let (s, v) = get(
        &srv,
        &format!("/api/v1/rooms/{reborn}/recordings"),
        &second.access,
    )
    .await;
    assert_eq!(s, 404, "the deleted room is gone, for everyone: {v}");
    let (s, v) = get(&srv, "/api/v1/rooms/reborn/recordings", &second.access).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "only its own: {v}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_recording_requests_get_clear_errors() {
    let srv = TestServer::start().await;
    let (owner, studio) = owner_with_room(&srv, "studio", false).await;
    let stranger = register(&srv, "stranger@example.test").await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();

    let (s, v) = start(&srv, "nowhere", &owner.access).await;
    assert_eq!((s, code(&v)), (404, "not_found".into()), "{v}");
    // Another user's room is "not found", never "forbidden".
    let (s, v) = start(&srv, "studio", &stranger.access).await;
    assert_eq!((s, code(&v)), (404, "not_found".into()), "{v}");
    // A join token without the record grant.
    let (s, v) = start(&srv, "studio", &srv.publish_token(&studio, "guest")).await;
    assert_eq!((s, code(&v)), (403, "forbidden".into()), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("record"));
    // A record grant for another room.
    let other = srv.token(
        "elsewhere",
        "guest",
        signaling::Grants {
            record: true,
            ..Default::default()
        },
    );
    let (s, v) = start(&srv, "studio", &other).await;
    assert_eq!((s, code(&v)), (403, "forbidden".into()), "{v}");
    let (s, v) = start(&srv, "studio", "not-a-token").await;
    assert_eq!(s, 401, "{v}");

    // A join token with the record grant may; a second start conflicts.
    let recorder = srv.token(
        &studio,
        "producer",
        signaling::Grants {
            record: true,
            ..Default::default()
        },
    );
    let (s, v) = start(&srv, "studio", &recorder).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["started_by"], "producer");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = start(&srv, "studio", &owner.access).await;
    assert_eq!((s, code(&v)), (409, "already_recording".into()), "{v}");
    let (s, v) = get(&srv, "/api/v1/rooms/studio/recordings", &recorder).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = get(&srv, "/api/v1/rooms/studio/recordings/nope", &owner.access).await;
    assert_eq!((s, code(&v)), (404, "not_found".into()), "{v}");
    let (s, v) = stop(&srv, "studio", &id, &recorder).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = stop(&srv, "studio", &id, &owner.access).await;
    assert_eq!((s, code(&v)), (409, "not_recording".into()), "{v}");
    // Nothing was published: an empty recording still completes.
    let done = wait_recording(&srv, "studio", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    assert_eq!(done["manifest"]["tracks"].as_array().unwrap().len(), 0);
    srv.stop().await;
}

/// Auto-record starts with the room and ends with it; a room outlives a short absence:
/// the only publisher drops off and comes back within the room's grace, and the
/// recording goes on through the gap (a new track after it, the gap in the manifest),
/// ending only when the room has stayed empty for the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_record_starts_with_the_room_and_outlives_a_short_absence() {
    let py = python();
    let grace = Duration::from_secs(2);
    let srv = TestServer::start_with(|s| s.media.empty_room_grace_secs = grace.as_secs()).await;
    let (owner, radio) = owner_with_room(&srv, "radio", true).await;
    let mut host = join(
        &srv,
        &format!("/whip/{radio}"),
        &srv.publish_token(&radio, "host"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut host]).await;
    let deadline = Instant::now() + WAIT;
    let id = loop {
        let (_, v) = get(&srv, "/api/v1/rooms/radio/recordings", &owner.access).await;
        if let Some(r) = v.as_array().and_then(|a| a.first()) {
            assert_eq!(r["started_by"], "auto");
            break r["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "auto-record did not start");
        common::pump(&mut [&mut host], Duration::from_millis(50)).await;
    };
    let mut tracks = [Play::new(0, Audio, Codec::Opus, encode(&py, "opus", 50), 0)];
    play(&mut [&mut host], &mut tracks).await;
    let leave = |host: &Peer| {
        srv.http
            .delete(format!("{}{}", srv.base, host.location))
            .bearer_auth(&host.token)
            .send()
    };
    // The host's phone drops off; a second later it is back, in a new session.
    assert!(leave(&host).await.unwrap().status().is_success());
    let gone = Instant::now();
    // The scenario's absence, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut host = join(
        &srv,
        &format!("/whip/{radio}"),
        &srv.publish_token(&radio, "host"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut host]).await;
    assert!(
        gone.elapsed() < grace,
        "the host came back within the grace"
    );
    let mut tracks = [Play::new(0, Audio, Codec::Opus, encode(&py, "opus", 50), 0)];
    play(&mut [&mut host], &mut tracks).await;
    let (_, v) = get(
        &srv,
        &format!("/api/v1/rooms/radio/recordings/{id}"),
        &owner.access,
    )
    .await;
    assert_eq!(v["status"], "recording", "the same recording goes on: {v}");
    // The host leaves for good: the room ends after the grace, its recording with it.
    assert!(leave(&host).await.unwrap().status().is_success());
    let done = wait_recording(&srv, "radio", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    assert_eq!(done["stop_reason"], "room_ended");
    let manifest = &done["manifest"];
    let host_tracks: Vec<&Value> = manifest["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["participant"] == "host" && t["kind"] == "audio")
        .collect();
    assert_eq!(host_tracks.len(), 2, "{manifest}");
    for t in &host_tracks {
        assert!(
            (t["duration_ms"].as_f64().unwrap() - 1000.0).abs() <= 100.0,
            "{t}"
        );
    }
    // The absence is in the manifest, between the two tracks, and so is the grace.
    let started = manifest["started_at"].as_f64().unwrap();
    let first_end = host_tracks[0]["first_sample_at"].as_f64().unwrap() - started
        + host_tracks[0]["duration_ms"].as_f64().unwrap();
    let second_start = host_tracks[1]["first_sample_at"].as_f64().unwrap() - started;
    let gaps = manifest["gaps"].as_array().unwrap();
    let absence = gaps
        .iter()
        .find(|g| (g["from_ms"].as_f64().unwrap() - first_end).abs() < 1.0)
        .unwrap_or_else(|| panic!("no gap after the first track: {manifest}"));
    assert!(
        (absence["to_ms"].as_f64().unwrap() - second_start).abs() < 1.0,
        "{manifest}"
    );
    assert!(second_start - first_end >= 1000.0, "{manifest}");
    let last = gaps.last().unwrap();
    let recorded =
        (manifest["stopped_at"].as_f64().unwrap() - started) - last["from_ms"].as_f64().unwrap();
    assert!(
        recorded >= grace.as_millis() as f64 - 200.0,
        "the grace is recorded as a gap: {manifest}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_an_outage_during_the_recording_delays_the_upload_and_loses_nothing() {
    let py = python();
    let mut moto = Moto::start(&py);
    let endpoint = moto.endpoint();
    let srv = TestServer::start_with(|s| {
        s.recording.s3_bucket = Some(support::BUCKET.into());
        s.recording.s3_endpoint = Some(endpoint.clone());
        s.recording.s3_access_key_id = Some("test".into());
        s.recording.s3_secret_access_key = Some("test".into());
    })
    .await;
    let (owner, show) = owner_with_room(&srv, "show", false).await;
    let mut host = join(
        &srv,
        &format!("/whip/{show}"),
        &srv.publish_token(&show, "host"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut host]).await;
    let (s, rec) = start(&srv, "show", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let mut tracks = [Play::new(
        0,
        Audio,
        Codec::Opus,
        encode(&py, "opus", 100),
        0,
    )];
    // The store goes down mid-recording.
    moto.stop();
    play(&mut [&mut host], &mut tracks).await;
    let (s, v) = stop(&srv, "show", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    // Uploads fail and say so, and are retried.
    let v = wait_recording(&srv, "show", &id, &owner.access, |v| {
        !v["last_error"].is_null()
    })
    .await;
    // Stopped, or already uploaded too (a local store can finish before the answer).
    assert!(v["status"] == "stopped" || v["status"] == "uploaded", "{v}");
    moto.restart();
    let done = wait_recording(&srv, "show", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    let store = recorder::Store::open(&moto.store_config()).unwrap();
    let objects: Vec<String> = done["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    let mut listed = store.list(&format!("{show}/{id}")).await.unwrap();
    listed.sort();
    let mut want = objects.clone();
    want.sort();
    assert_eq!(listed, want);
    let t = track(&done["manifest"], "host", "audio");
    let key = recorder::object_key(&show, &id, t["file"].as_str().unwrap());
    let data = store.get(&key).await.unwrap();
    let ogg = OggOpusReader::parse(&data).unwrap();
    let ms = (ogg.samples().unwrap() - 312) as f64 / 48.0;
    assert!((ms - 2000.0).abs() <= 100.0, "{ms} ms in the store");
    srv.stop().await;
}

/// Polls a recording until its newest mixdown is finished.
async fn wait_mixdown(srv: &TestServer, room: &str, id: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = get(srv, &format!("/api/v1/rooms/{room}/recordings/{id}"), token).await;
        assert_eq!(s, 200, "{v}");
        let m = &v["mixdowns"][0];
        if m["status"] == "completed" || m["status"] == "failed" {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "the mixdown never finished: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_speaker_recording_is_mixed_down_with_its_stems_aligned() {
    let py = python();
    let srv = TestServer::start().await;
    let (owner, episode) = owner_with_room(&srv, "episode", false).await;
    let mut sub = srv
        .server()
        .api
        .bus
        .subscribe("test-mix", &[Topic::TranscodeJobs])
        .unwrap();
    let mut alice = join(
        &srv,
        &format!("/whip/{episode}"),
        &srv.publish_token(&episode, "alice"),
        &[Audio],
    )
    .await
    .unwrap();
    let mut bob = join(
        &srv,
        &format!("/whip/{episode}"),
        &srv.publish_token(&episode, "bob"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut alice, &mut bob]).await;
    let (s, rec) = start(&srv, "episode", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    // A mixdown needs the recording in the store.
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms/episode/recordings/{id}/mixdown", srv.base),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("not_uploaded")),
        "{v}"
    );

    // Alice speaks for 3 s; Bob starts 700 ms later and speaks for 2 s.
    let mut tracks = [
        Play::new(0, Audio, Codec::Opus, encode(&py, "opus", 150), 0),
        Play::new(1, Audio, Codec::Opus, encode(&py, "opus", 100), 700),
    ];
    play(&mut [&mut alice, &mut bob], &mut tracks).await;
    let (s, v) = stop(&srv, "episode", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    wait_recording(&srv, "episode", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;

    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms/episode/recordings/{id}/mixdown", srv.base),
        Some(&owner.access),
        json!({"target_lufs": 99}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("target_lufs")),
        "{v}"
    );
    let (s, job) = post(
        &srv.http,
        format!("{}/api/v1/rooms/episode/recordings/{id}/mixdown", srv.base),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["kind"], "mixdown");
    let done = wait_mixdown(&srv, "episode", &id, &owner.access).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["id"], job["id"]);
    let result = &done["result"];
    let files = result["files"].as_object().unwrap();
    for name in [
        "episode.opus",
        "episode.waveform.json",
        "episode.waveform.svg",
        "stems/alice.opus",
        "stems/bob.opus",
        "stems/alice.waveform.json",
        "stems/bob.waveform.svg",
    ] {
        assert!(files.contains_key(name), "{name} missing from {result}");
    }
    let path = |name: &str| {
        srv.data_dir
            .join("recordings")
            .join(files[name].as_str().unwrap())
    };

    // FFmpeg decodes the episode and both stems: each stem spans the episode, Alice's
    // starts with it, Bob's where he started relative to her (within 10 ms).
    let (ep, a, b) = (
        path("episode.opus"),
        path("stems/alice.opus"),
        path("stems/bob.opus"),
    );
    let on = support::onsets(&py, 0.02, &[&ep, &a, &b]);
    let sent =
        (tracks[1].first_sent.unwrap() - tracks[0].first_sent.unwrap()).as_secs_f64() * 1000.0;
    let (ep_on, a_on, b_on) = (on[0].0, on[1].0, on[2].0);
    assert!(
        (ep_on - a_on).abs() <= 2.0,
        "episode starts at {ep_on} ms, alice at {a_on} ms"
    );
    assert!(
        ((b_on - a_on) - sent).abs() <= 10.0,
        "bob's stem starts {} ms after alice's; he was sent {sent} ms after her",
        b_on - a_on
    );
    // From Alice's first sample to whoever ends last.
    let length = tracks[0].sent_ms().max(sent + tracks[1].sent_ms());
    for (name, (_, ms)) in ["episode", "alice", "bob"].iter().zip(&on) {
        assert!(
            (ms - on[0].1).abs() <= 1.0,
            "{name} is {ms} ms, the episode {} ms",
            on[0].1
        );
        assert!(
            (ms - length).abs() <= 100.0,
            "{name} is {ms} ms; the talk was {length} ms"
        );
    }
    // Podcast loudness by FFmpeg's meter, episode and stems.
    for p in [&ep, &a, &b] {
        let (lufs, tp) = support::ffmpeg_loudness(&py, p);
        assert!((lufs + 16.0).abs() <= 0.5, "{}: {lufs} LUFS", p.display());
        assert!(tp <= -1.0, "{}: true peak {tp} dBTP", p.display());
    }
    let stems = result["stems"].as_array().unwrap();
    assert_eq!(stems.len(), 2);
    let bob_offset = stems[1]["offset_ms"].as_f64().unwrap();
    assert!((bob_offset - sent).abs() <= 10.0, "{result}");

    // The files come through the API too.
    let url = format!(
        "{}/api/v1/rooms/episode/recordings/{id}/mixdown/{}/files/episode.opus",
        srv.base,
        job["id"].as_str().unwrap()
    );
    let r = srv
        .http
        .get(&url)
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/ogg");
    assert_eq!(r.bytes().await.unwrap(), std::fs::read(&ep).unwrap());
    let r = srv
        .http
        .get(url.replace("episode.opus", "nope.opus"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let evs = collect_events(&mut sub, "transcode.completed").await;
    assert_eq!(evs[0].kind, "transcode.requested");
    let progress: Vec<i64> = evs
        .iter()
        .filter(|e| e.kind == "transcode.progress")
        .map(|e| e.data["percent"].as_i64().unwrap())
        .collect();
    assert!(progress.len() >= 3, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(evs.iter().all(|e| e.data["job_id"] == job["id"]));
    srv.stop().await;
}

/// A PNG of `side` × `side` pixels made by Python's zlib (a real image, as a podcast
/// directory would fetch it).
fn png(py: &str, side: u32) -> Vec<u8> {
    let script = r#"
import struct, sys, zlib
w = int(sys.argv[1])
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
raw = b"".join(b"\x00" + bytes([30, 90, 160]) * w for _ in range(w))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, w, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
"#;
    let out = std::process::Command::new(py)
        .args(["-c", script, &side.to_string()])
        .output()
        .expect("python makes a PNG");
    assert!(out.status.success());
    out.stdout
}

/// The podcast feed validator (`scripts/interop/podcast_feed.py`: `feedparser`, an
/// independent namespace and element check, and every enclosure, chapter file and the
/// artwork fetched): its summary, or the reason it refused the feed.
fn validate_feed(py: &str, url: &str) -> Result<Value, String> {
    let out = std::process::Command::new(py)
        .arg(support::repo().join("scripts/interop/podcast_feed.py"))
        .arg(url)
        .output()
        .expect("running podcast_feed.py");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// A host marks chapters while recording (a `marker` message on the room socket, and
/// the API afterwards with a time), the recording is mixed down, and its episode is
/// published in a show on S3: the feed passes two parsers with its chapters, its
/// enclosure and artwork are presigned redirects to the store with the right type and
/// exact length, a scheduled or unpublished episode is not in it, and deleting the
/// episode and the show removes their objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_with_markers_becomes_a_podcast_episode_served_from_s3() {
    let py = python();
    let moto = Moto::start(&py);
    // The servers reach the store at one address; podcast apps and pages at another
    // (the same service): presigned URLs name the public one.
    let internal = moto.endpoint();
    let endpoint = internal.replace("127.0.0.1", "localhost");
    let srv = TestServer::start_with(|s| {
        s.recording.s3_bucket = Some(support::BUCKET.into());
        s.recording.s3_endpoint = Some(internal.clone());
        s.recording.s3_public_endpoint = Some(endpoint.clone());
        s.recording.s3_access_key_id = Some("test".into());
        s.recording.s3_secret_access_key = Some("test".into());
    })
    .await;
    let store = recorder::Store::open(&moto.store_config()).unwrap();
    // The pages may show and play what redirects to the store (live episodes, artwork).
    let page = srv
        .http
        .get(format!("{}/podcasts", srv.base))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let origin = endpoint.trim_end_matches('/');
    assert!(
        policy.contains(&format!("media-src 'self' blob: {origin};"))
            && policy.contains(&format!("img-src 'self' data: blob: {origin};")),
        "{policy}"
    );
    let (owner, room) = owner_with_room(&srv, "pod", false).await;
    let api = |p: &str| format!("{}/api/v1{p}", srv.base);
    let mut host = join(
        &srv,
        &format!("/whip/{room}"),
        &srv.publish_token(&room, "host"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut host]).await;
    let grants = signaling::Grants {
        publish: false,
        subscribe: true,
        publish_data: false,
        record: true,
    };
    let mut producer =
        common::room::RoomClient::join(&srv, &srv.token(&room, "producer", grants)).await;
    let mut listener =
        common::room::RoomClient::join(&srv, &srv.subscribe_token(&room, "listener")).await;
    let r = producer
        .request(json!({"type": "marker", "title": "Intro"}))
        .await;
    assert_eq!(r["code"], "not_recording", "{r}");

    let (s, rec) = start(&srv, "pod", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let r = producer
        .request(json!({"type": "marker", "title": "Intro"}))
        .await;
    assert_eq!(r["type"], "marker_ok", "{r}");
    assert_eq!(r["marker"]["created_by"], "producer", "{r}");
    let r = listener
        .request(json!({"type": "marker", "title": "Nope"}))
        .await;
    assert_eq!(r["code"], "forbidden", "no record grant: {r}");
    let mut tracks = [Play::new(
        0,
        Audio,
        Codec::Opus,
        encode(&py, "opus", 150),
        0,
    )];
    play(&mut [&mut host], &mut tracks).await;
    let (s, v) = stop(&srv, "pod", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    let started = v["started_at"].as_i64().unwrap();
    let first_sound = v["manifest"]["tracks"][0]["first_sample_at"]
        .as_f64()
        .expect("the track's first sample time") as i64;
    // Afterwards, a chapter with its time; outside the recording is refused.
    let markers = api(&format!("/rooms/pod/recordings/{id}/markers"));
    let (s, e) = post(
        &srv.http,
        markers.clone(),
        Some(&owner.access),
        json!({"title": "Late"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("not_recording")),
        "{e}"
    );
    let (s, e) = post(
        &srv.http,
        markers.clone(),
        Some(&owner.access),
        json!({"title": "x", "at_ms": started - 1}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("at_ms")),
        "{e}"
    );
    let (s, m) = post(
        &srv.http,
        markers.clone(),
        Some(&owner.access),
        json!({"title": "Talk", "at_ms": first_sound + 1500}),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    wait_recording(&srv, "pod", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    let (_, v) = get(
        &srv,
        &format!("/api/v1/rooms/pod/recordings/{id}"),
        &owner.access,
    )
    .await;
    let titles: Vec<&str> = v["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Intro", "Talk"], "{v}");
    let (s, job) = post(
        &srv.http,
        api(&format!("/rooms/pod/recordings/{id}/mixdown")),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let mix = wait_mixdown(&srv, "pod", &id, &owner.access).await;
    assert_eq!(mix["status"], "completed", "{mix}");
    let job_id = mix["id"].as_str().unwrap().to_owned();

    // The sources name the mixdown with its chapters from the markers.
    let (s, sources) = get(&srv, "/api/v1/podcasts/sources", &owner.access).await;
    assert_eq!(s, 200, "{sources}");
    let src = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["job_id"] == job_id.as_str())
        .expect("the mixdown is a source")
        .clone();
    assert_eq!(
        (src["kind"].as_str(), src["title"].as_str()),
        (Some("mixdown"), Some("Recording of pod")),
        "{src}"
    );
    let chapters = src["chapters"].as_array().unwrap();
    assert_eq!(chapters.len(), 2, "{src}");
    assert_eq!(
        (
            chapters[0]["start_ms"].as_i64(),
            chapters[0]["title"].as_str()
        ),
        (Some(0), Some("Intro"))
    );
    let talk = chapters[1]["start_ms"].as_i64().unwrap();
    assert!(
        (1000..=2000).contains(&talk),
        "Talk starts at {talk} ms: {src}"
    );

    // A show: fields checked, artwork checked.
    let (s, e) = post(
        &srv.http,
        api("/podcasts/shows"),
        Some(&owner.access),
        json!({"title": "Pod", "description": "d", "author": "Ann", "language": "en", "category": "Musik"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("category")),
        "{e}"
    );
    let (s, show) = post(&srv.http, api("/podcasts/shows"), Some(&owner.access), json!({"title": "Pod & Friends", "description": "Talk <b>about</b> things", "author": "Ann", "language": "en", "category": "Technology", "explicit": false})).await;
    assert_eq!(s, 201, "{show}");
    let show_id = show["id"].as_str().unwrap().to_owned();
    let artwork = api(&format!("/podcasts/shows/{show_id}/artwork"));
    let put = |body: Vec<u8>| {
        srv.http
            .put(artwork.clone())
            .bearer_auth(&owner.access)
            .body(body)
            .send()
    };
    let r = put(png(&py, 800)).await.unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "bad_artwork", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("800 × 800 px"),
        "{e}"
    );
    assert_eq!(
        put(b"GIF89a not an image".to_vec()).await.unwrap().status(),
        415
    );
    let r = put(png(&py, 1400)).await.unwrap();
    assert_eq!(r.status(), 200);
    let show: Value = r.json().await.unwrap();
    assert!(
        show["artwork_url"]
            .as_str()
            .unwrap()
            .contains(&format!("/feeds/{show_id}/artwork?v=")),
        "{show}"
    );

    // Another user sees no show and cannot use the mixdown.
    let stranger = register(&srv, "stranger-pod@example.test").await;
    let (s, _) = get(
        &srv,
        &format!("/api/v1/podcasts/shows/{show_id}"),
        &stranger.access,
    )
    .await;
    assert_eq!(s, 404);
    let (s, theirs) = post(
        &srv.http,
        api("/podcasts/shows"),
        Some(&stranger.access),
        json!({"title": "Theirs", "description": "Theirs", "author": "S", "language": "en", "category": "Music"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, e) = post(
        &srv.http,
        api(&format!(
            "/podcasts/shows/{}/episodes",
            theirs["id"].as_str().unwrap()
        )),
        Some(&stranger.access),
        json!({"source_job": job_id, "title": "Stolen"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("source_job")),
        "{e}"
    );

    // A draft from the mixdown: its own copy of the audio, its chapters from the markers.
    let episodes = api(&format!("/podcasts/shows/{show_id}/episodes"));
    let (s, e) = post(&srv.http, episodes.clone(), Some(&owner.access), json!({"source_job": job_id, "title": "One", "chapters": [{"start_ms": 999_999_999, "title": "Past the end"}]})).await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("chapters")),
        "{e}"
    );
    let (s, ep) = post(&srv.http, episodes.clone(), Some(&owner.access), json!({"source_job": job_id, "title": "One", "description": "Show notes", "season": 1, "episode": 1})).await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!(ep["status"], "draft");
    assert_eq!(ep["chapters"].as_array().unwrap().len(), 2, "{ep}");
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let key = format!("podcasts/{}/{show_id}/{ep_id}/audio.opus", owner.id);
    assert_eq!(
        ep["audio_bytes"].as_u64(),
        Some(store.size(&key).await.unwrap()),
        "{ep}"
    );
    let feed_url = show["feed_url"].as_str().unwrap().to_owned();
    let public_audio = format!("{}/feeds/{show_id}/{ep_id}/audio.opus", srv.base);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(
        no_redirects
            .get(&public_audio)
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "a draft is not public"
    );
    // The owner's page plays the draft through its signed link, through the node (the
    // page admits media from its own origin only).
    let link = format!("{}{}", srv.base, ep["audio_url"].as_str().unwrap());
    let r = no_redirects.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/ogg");
    assert_eq!(
        r.bytes().await.unwrap().len() as u64,
        ep["audio_bytes"].as_u64().unwrap()
    );
    let summary = validate_feed(&py, &feed_url).unwrap();
    assert_eq!(
        summary["episodes"].as_array().map(Vec::len),
        Some(0),
        "a draft is not in the feed: {summary}"
    );

    // Published: in the feed, which two parsers accept, with everything it names fetched.
    let (s, ep) = post(
        &srv.http,
        api(&format!(
            "/podcasts/shows/{show_id}/episodes/{ep_id}/publish"
        )),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!((s, ep["status"].as_str()), (200, Some("published")), "{ep}");
    let (s, later) = post(
        &srv.http,
        episodes.clone(),
        Some(&owner.access),
        json!({"source_job": job_id, "title": "Two", "chapters": []}),
    )
    .await;
    assert_eq!(s, 201, "{later}");
    let later_id = later["id"].as_str().unwrap().to_owned();
    let in_an_hour = chrono_free_now() + 3_600_000;
    let (s, later) = post(
        &srv.http,
        api(&format!(
            "/podcasts/shows/{show_id}/episodes/{later_id}/publish"
        )),
        Some(&owner.access),
        json!({"publish_at": in_an_hour}),
    )
    .await;
    assert_eq!(
        (s, later["status"].as_str()),
        (200, Some("scheduled")),
        "{later}"
    );
    let summary =
        validate_feed(&py, &feed_url).unwrap_or_else(|e| panic!("the feed was refused: {e}"));
    let items = summary["episodes"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the published one: {summary}");
    assert_eq!(items[0]["guid"], ep["guid"], "{summary}");
    assert_eq!(items[0]["chapters"], 2, "{summary}");
    assert_eq!(
        items[0]["length"].as_u64(),
        ep["audio_bytes"].as_u64(),
        "{summary}"
    );
    // A live episode's audio is public: a presigned redirect to S3 (an hour long),
    // read with its type and every byte; `HEAD` (which a URL signed for `GET` would
    // not answer) is answered by the node.
    let r = no_redirects.get(&public_audio).send().await.unwrap();
    assert_eq!(r.status(), 307, "a live episode's audio is public");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&endpoint)
            && location.contains("X-Amz-Signature=")
            && location.contains("X-Amz-Expires=3600"),
        "{location}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r = srv.http.get(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/ogg");
    assert_eq!(
        r.bytes().await.unwrap().len() as u64,
        ep["audio_bytes"].as_u64().unwrap()
    );
    let r = no_redirects.head(&public_audio).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        ep["audio_bytes"].to_string()
    );
    let art = srv
        .http
        .get(format!("{}/feeds/{show_id}/artwork", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            art.status().as_u16(),
            art.headers()["content-type"].to_str().unwrap()
        ),
        (200, "image/png")
    );

    // Edited, the guid stays; unpublished, it leaves the feed.
    let (s, edited) = srv
        .http
        .patch(api(&format!("/podcasts/shows/{show_id}/episodes/{ep_id}")))
        .bearer_auth(&owner.access)
        .json(&json!({"title": "One, edited", "season": null}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(
        (
            edited["guid"].clone(),
            edited["season"].clone(),
            edited["episode"].clone()
        ),
        (ep["guid"].clone(), Value::Null, json!(1)),
        "{edited}"
    );
    let (s, _) = post(
        &srv.http,
        api(&format!(
            "/podcasts/shows/{show_id}/episodes/{ep_id}/unpublish"
        )),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let summary = validate_feed(&py, &feed_url).unwrap();
    assert_eq!(
        summary["episodes"].as_array().map(Vec::len),
        Some(0),
        "{summary}"
    );

    // The show edited: the feed follows; a category Apple does not list is refused and
    // changes nothing.
    let show_url = api(&format!("/podcasts/shows/{show_id}"));
    let (s, renamed) = patch(
        &srv.http,
        show_url.clone(),
        &owner.access,
        json!({"title": "Pod & Friends, renamed", "explicit": true}),
    )
    .await;
    assert_eq!(s, 200, "{renamed}");
    assert_eq!(
        (
            renamed["title"].clone(),
            renamed["explicit"].clone(),
            renamed["author"].clone()
        ),
        (json!("Pod & Friends, renamed"), json!(true), json!("Ann")),
        "{renamed}"
    );
    let (s, refused) = patch(
        &srv.http,
        show_url,
        &owner.access,
        json!({"title": "Not this", "category": "Nope"}),
    )
    .await;
    assert_eq!(s, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("category"),
        "{refused}"
    );
    let summary = validate_feed(&py, &feed_url).unwrap();
    assert_eq!(summary["title"], "Pod & Friends, renamed", "{summary}");
    let xml = srv
        .http
        .get(&feed_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("<itunes:explicit>true</itunes:explicit>"),
        "{xml}"
    );
    assert_eq!(
        no_redirects
            .get(&public_audio)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Deleting removes the objects: the episode's, then the show's with its artwork.
    let r = srv
        .http
        .delete(api(&format!("/podcasts/shows/{show_id}/episodes/{ep_id}")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(store.head(&key).await.unwrap(), None);
    let r = srv
        .http
        .delete(api(&format!("/podcasts/shows/{show_id}")))
        .bearer_auth(&stranger.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another's show");
    let r = srv
        .http
        .delete(api(&format!("/podcasts/shows/{show_id}")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        store
            .list(&format!("podcasts/{}/{show_id}", owner.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(srv.http.get(&feed_url).send().await.unwrap().status(), 404);
    // The mixdown it came from is untouched; deleting the recording removes its tracks
    // and its mixdowns' files, and only its owner may.
    let mixed = mix["result"]["files"]["episode.opus"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(store.head(&mixed).await.unwrap().is_some());
    let recording = api(&format!("/rooms/pod/recordings/{id}"));
    let r = srv
        .http
        .delete(api(&format!("/rooms/{room}/recordings/{id}")))
        .bearer_auth(&stranger.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another's recording");
    let r = srv
        .http
        .delete(&recording)
        .bearer_auth(srv.publish_token(&room, "host"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a join token cannot delete");
    assert!(
        !store
            .list(&format!("{room}/{id}"))
            .await
            .unwrap()
            .is_empty()
    );
    let r = srv
        .http
        .delete(&recording)
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        store
            .list(&format!("{room}/{id}"))
            .await
            .unwrap()
            .is_empty(),
        "the recording's files are gone"
    );
    assert_eq!(store.head(&mixed).await.unwrap(), None);
    let (s, _) = get(
        &srv,
        &format!("/api/v1/rooms/pod/recordings/{id}"),
        &owner.access,
    )
    .await;
    assert_eq!(s, 404);
    let (_, sources) = get(&srv, "/api/v1/podcasts/sources", &owner.access).await;
    assert!(
        sources
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["job_id"] != job_id.as_str()),
        "{sources}"
    );
    srv.stop().await;
}

fn chrono_free_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A room that keeps raw tracks 0 days after a mixdown: once the mixdown is done the
/// sweeper deletes the track files (the manifest and the mixdown stay), the recording
/// says when, and it cannot be mixed down again; a room without retention keeps its.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tracks_go_after_the_rooms_retention_and_the_mixdown_stays() {
    let py = python();
    let srv = TestServer::start_with(|s| s.recording.retention_sweep_secs = 1).await;
    let (owner, room) = owner_with_room(&srv, "kept", false).await;
    let retention = format!("{}/api/v1/rooms/kept/retention", srv.base);
    let (s, v) = get(&srv, "/api/v1/rooms/kept/retention", &owner.access).await;
    assert_eq!((s, v["tracks_days"].clone()), (200, Value::Null), "{v}");
    let set = |days: Value| {
        srv.http
            .put(&retention)
            .bearer_auth(&owner.access)
            .json(&json!({ "tracks_days": days }))
            .send()
    };
    let r = set(json!(-1)).await.unwrap();
    assert_eq!(r.status(), 422);
    let stranger = register(&srv, "stranger-kept@example.test").await;
    let r = srv
        .http
        .put(format!("{}/api/v1/rooms/{room}/retention", srv.base))
        .bearer_auth(&stranger.access)
        .json(&json!({"tracks_days": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another's room");
    let r = set(json!(0)).await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get(&srv, "/api/v1/rooms/kept/retention", &owner.access).await;
    assert_eq!(v["tracks_days"], 0, "{v}");

    let mut host = join(
        &srv,
        &format!("/whip/{room}"),
        &srv.publish_token(&room, "host"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut host]).await;
    let (s, rec) = start(&srv, "kept", &owner.access).await;
    assert_eq!(s, 201, "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let mut tracks = [Play::new(0, Audio, Codec::Opus, encode(&py, "opus", 50), 0)];
    play(&mut [&mut host], &mut tracks).await;
    let (s, v) = stop(&srv, "kept", &id, &owner.access).await;
    assert_eq!(s, 200, "{v}");
    let stored = wait_recording(&srv, "kept", &id, &owner.access, |v| {
        v["status"] == "uploaded"
    })
    .await;
    let dir = srv.data_dir.join("recordings").join(&room).join(&id);
    let track_file = dir.join(
        track(&stored["manifest"], "host", "audio")["file"]
            .as_str()
            .unwrap(),
    );
    assert!(track_file.exists());
    // Uploaded but never mixed down: a sweep (even a day later) leaves the tracks.
    let a_day_later = chrono_free_now() + 86_400_000;
    assert_eq!(
        control_api::retention::sweep(&srv.server().api, a_day_later).await,
        Ok(0)
    );
    assert!(track_file.exists(), "no mixdown yet: the tracks stay");
    let (s, job) = post(
        &srv.http,
        format!("{}/api/v1/rooms/kept/recordings/{id}/mixdown", srv.base),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let mix = wait_mixdown(&srv, "kept", &id, &owner.access).await;
    assert_eq!(mix["status"], "completed", "{mix}");
    let deadline = Instant::now() + WAIT;
    let swept = loop {
        let (_, v) = get(
            &srv,
            &format!("/api/v1/rooms/kept/recordings/{id}"),
            &owner.access,
        )
        .await;
        if !v["tracks_deleted_at"].is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the tracks were never swept: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!track_file.exists(), "the raw track is gone");
    assert!(dir.join("manifest.json").exists(), "the manifest stays");
    let episode = srv
        .data_dir
        .join("recordings")
        .join(mix["result"]["files"]["episode.opus"].as_str().unwrap());
    assert!(episode.exists(), "the mixdown stays");
    let objects: Vec<&str> = swept["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(objects, [format!("{room}/{id}/manifest.json")], "{swept}");
    assert!(
        swept["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != track_file.file_name().unwrap().to_str().unwrap()),
        "{swept}"
    );
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms/kept/recordings/{id}/mixdown", srv.base),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("tracks_deleted")),
        "{v}"
    );
    srv.stop().await;
}
