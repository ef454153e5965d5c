//! Recording through the real node: publishers over WHIP (str0m peers sending media
//! from FFmpeg's encoders), the control API starting and stopping, the files in the
//! object store decoded by our reader and by FFmpeg, the manifest's alignment, and
//! `recording.events` on the bus.

mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::remote::{User, post, register};
use common::{Peer, TestServer, connect, join};
use events::{Envelope, Topic};
use media_core::str0m::format::Codec;
use media_core::str0m::media::{
    Frequency, MediaKind, MediaKind::Audio, MediaKind::Video, MediaTime,
};
use recorder::OggOpusReader;
use serde_json::{Value, json};
use support::{Encoded, encode, python};

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

async fn owner_with_room(srv: &TestServer, room: &str, auto_record: bool) -> User {
    let owner = register(&srv.http, &srv.base, &format!("owner-{room}@example.test")).await;
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms", srv.base),
        Some(&owner.access),
        json!({"name": room, "auto_record": auto_record}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    owner
}

async fn get(srv: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let r = srv
        .http
        .get(format!("{}{path}", srv.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
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
    let owner = owner_with_room(&srv, "podcast", false).await;
    let mut sub = srv
        .server()
        .api
        .bus
        .subscribe("test-rec", &[Topic::RecordingEvents])
        .unwrap();
    let mut alice = join(
        &srv,
        "/whip/podcast",
        &srv.publish_token("podcast", "alice"),
        &[Audio, Video],
    )
    .await
    .unwrap();
    let mut bob = join(
        &srv,
        "/whip/podcast",
        &srv.publish_token("podcast", "bob"),
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
    assert_eq!(v["status"], "stopped");
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
        let path = stored_file(&srv, "podcast", &id, t);
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
    let path = stored_file(&srv, "podcast", &id, v);
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
