//! The recorder against a real S3-compatible server (moto, from the project's venv):
//! an outage during a recording, and recorder processes killed mid-upload and
//! mid-recording. Each time the recording arrives complete, and nothing twice.
//!
//! The "recorder process" of the kill tests is this test binary run again as a child
//! (`SC_RECORDER_CHILD` says what it does), so a real SIGKILL hits real IO.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use media_core::str0m::format::Codec;
use media_core::str0m::media::{MediaKind, Mid};
use media_core::{PeerId, TapItem, TapPacket, TapTrack, TrackRef};
use recorder::{
    Backoff, Manifest, OggOpusReader, Recorder, RecorderConfig, RecorderEvent, RecorderEventKind,
    SessionConfig, Store, object_key,
};
use support::{Moto, python};
use tokio::sync::mpsc;

fn track(peer: u64, name: &str) -> TapTrack {
    TapTrack {
        track: TrackRef {
            owner: PeerId(peer),
            mid: Mid::from("0"),
        },
        identity: name.into(),
        kind: MediaKind::Audio,
        codec: Codec::Opus,
        clock_rate: 48_000,
        channels: 2,
        rid: None,
    }
}

/// A 20 ms Opus packet (CELT fullband, code 0) of `len` bytes.
fn packet(t: &TapTrack, seq: u64, len: usize) -> TapItem {
    let mut payload = vec![0xfcu8; len];
    payload[0] = 0xfc;
    TapItem::Packet(TapPacket {
        track: t.track,
        seq,
        rtp_time: seq as i64 * 960,
        marker: false,
        payload: payload.into(),
        arrival: Instant::now(),
        sender_clock: None,
    })
}

fn config(spool: &Path) -> RecorderConfig {
    RecorderConfig {
        spool: spool.to_owned(),
        queue: 1 << 16,
        session: SessionConfig::default(),
        backoff: Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(500),
        },
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sc-rec-{name}-{}", support::rand_u64()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<RecorderEvent>,
    within: Duration,
    want: impl Fn(&RecorderEventKind) -> bool,
) -> RecorderEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the recorder reported in time")
            .expect("the recorder is running");
        if want(&ev.kind) {
            return ev;
        }
    }
}

/// Feeds `packets` packets of each track into a recording and closes it.
fn record(rec: &Recorder, id: &str, tracks: &[(TapTrack, usize)], packets: u64) {
    let (mut tap, handle) = rec.begin(id, "podcast").unwrap();
    use media_core::MediaTap;
    for (t, _) in tracks {
        assert!(tap.offer(TapItem::Track(t.clone())));
    }
    for seq in 0..packets {
        for (t, len) in tracks {
            while !tap.offer(packet(t, seq, *len)) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    drop(tap);
    let rt = tokio::runtime::Handle::current();
    let m = tokio::task::block_in_place(|| rt.block_on(handle.stop("requested"))).unwrap();
    assert_eq!(m.tracks.len(), tracks.len());
}

/// Every object of the recording is in the store, byte for byte as `expect`, and
/// nothing else is under its prefix.
async fn assert_stored(store: &Store, room: &str, id: &str, expect: &[(String, Vec<u8>)]) {
    let prefix = format!("{room}/{id}");
    let keys = store.list(&prefix).await.unwrap();
    let mut want: Vec<String> = expect
        .iter()
        .map(|(f, _)| object_key(room, id, f))
        .collect();
    want.push(object_key(room, id, "manifest.json"));
    want.sort();
    assert_eq!(keys, want, "exactly the recording's objects, each once");
    for (file, data) in expect {
        let got = store.get(&object_key(room, id, file)).await.unwrap();
        assert_eq!(got.len(), data.len(), "{file}");
        assert!(got.as_ref() == data.as_slice(), "{file} differs");
    }
    let m: Manifest = serde_json::from_slice(
        &store
            .get(&object_key(room, id, "manifest.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.recording_id, id);
}

fn spool_files(spool: &Path, id: &str) -> Vec<(String, Vec<u8>)> {
    let m = Manifest::read(&spool.join(id)).unwrap();
    m.tracks
        .iter()
        .map(|t| {
            (
                t.file.clone(),
                std::fs::read(spool.join(id).join(&t.file)).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_during_a_recording_delays_the_upload_and_loses_nothing() {
    let py = python();
    let mut moto = Moto::start(&py);
    let spool = temp("outage");
    let store = Store::open(&moto.store_config()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (rec, _task) = Recorder::start(config(&spool), store.clone(), tx).unwrap();
    // The store goes away while the room is being recorded.
    moto.stop();
    let (a, b) = (track(1, "alice"), track(2, "bob"));
    record(&rec, "rec-outage", &[(a, 120), (b, 80)], 250);
    let files = spool_files(&spool, "rec-outage");
    next_event(&mut rx, Duration::from_secs(10), |k| {
        matches!(k, RecorderEventKind::Stopped(_))
    })
    .await;
    // Uploads fail and are retried while it is down; the files stay.
    next_event(&mut rx, Duration::from_secs(10), |k| {
        matches!(k, RecorderEventKind::UploadRetrying(_))
    })
    .await;
    assert!(rec.has_pending_uploads());
    assert!(spool.join("rec-outage").join(&files[0].0).exists());
    moto.restart();
    let up = next_event(&mut rx, Duration::from_secs(30), |k| {
        matches!(k, RecorderEventKind::Uploaded { .. })
    })
    .await;
    let RecorderEventKind::Uploaded { objects, .. } = up.kind else {
        unreachable!()
    };
    assert_eq!(objects.len(), 3);
    assert_stored(&store, "podcast", "rec-outage", &files).await;
    // Local files go only after the store confirmed them.
    assert!(!spool.join("rec-outage").exists());
    for (_, data) in &files {
        let r = OggOpusReader::parse(data).unwrap();
        assert_eq!(r.samples().unwrap(), 250 * 960);
    }
    let _ = std::fs::remove_dir_all(&spool);
}

/// What a child process does, from `SC_RECORDER_CHILD`: `upload` (start a recorder
/// on the spool and let it upload) or `record` (record packets until killed).
#[test]
fn child_process() {
    let Ok(role) = std::env::var("SC_RECORDER_CHILD") else {
        return;
    };
    let spool = PathBuf::from(std::env::var("SC_SPOOL").unwrap());
    let endpoint = std::env::var("SC_S3").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Store::open(&recorder::StoreConfig::S3 {
            bucket: support::BUCKET.into(),
            endpoint,
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        })
        .unwrap()
        .with_part_size(5 * 1024 * 1024);
        let (tx, _rx) = mpsc::unbounded_channel();
        let (rec, _task) = Recorder::start(config(&spool), store, tx).unwrap();
        if role == "record" {
            let (mut tap, _handle) = rec.begin("rec-killed", "podcast").unwrap();
            use media_core::MediaTap;
            let t = track(1, "host");
            tap.offer(TapItem::Track(t.clone()));
            let mut seq = 0;
            loop {
                // Faster than real time, so a few seconds of audio exist quickly.
                for _ in 0..50 {
                    tap.offer(packet(&t, seq, 60));
                    seq += 1;
                }
                std::fs::write(spool.join("progress"), seq.to_string()).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

fn spawn_child(role: &str, spool: &Path, moto: &Moto) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SC_RECORDER_CHILD", role)
        .env("SC_SPOOL", spool)
        .env("SC_S3", moto.endpoint())
        .spawn()
        .unwrap()
}

/// Waits (60 s at most) until the recording child in `spool` wrote `packets`.
fn wait_recorded(spool: &Path, packets: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(spool.join("progress"))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        < packets
    {
        assert!(Instant::now() < deadline, "the child did not record");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A recording found unfinished is closed `interrupted`, then uploaded: its manifest.
async fn finished_interrupted_and_uploaded(
    rx: &mut mpsc::UnboundedReceiver<RecorderEvent>,
) -> Manifest {
    let stopped = next_event(rx, Duration::from_secs(10), |k| {
        matches!(k, RecorderEventKind::Stopped(_))
    })
    .await;
    let RecorderEventKind::Stopped(m) = stopped.kind else {
        unreachable!()
    };
    assert_eq!(m.stop_reason.as_deref(), Some("interrupted"));
    next_event(rx, Duration::from_secs(30), |k| {
        matches!(k, RecorderEventKind::Uploaded { .. })
    })
    .await;
    m
}

fn kill(mut c: Child) {
    // SIGKILL: no destructor, no flush, no cleanup runs.
    c.kill().unwrap();
    c.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_killed_mid_upload_finishes_after_restart_without_duplicates() {
    let py = python();
    let moto = Moto::start(&py);
    let spool = temp("killed-upload");
    {
        // A closed recording in the spool: a small track and one of ~40 MiB, which
        // goes up in 5 MiB parts.
        let store = Store::open(&recorder::StoreConfig::Local {
            dir: spool.join("unused-store"),
        })
        .unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (rec, task) = Recorder::start(config(&spool), store, tx).unwrap();
        task.abort(); // nothing uploads here
        let _ = task.await;
        record(
            &rec,
            "rec-big",
            &[(track(1, "guest"), 50), (track(2, "host"), 1200)],
            35_000,
        );
    }
    let files = spool_files(&spool, "rec-big");
    assert!(files[1].1.len() > 30 * 1024 * 1024);
    let dir = spool.join("rec-big");
    let child = spawn_child("upload", &spool, &moto);
    // Killed once the first file is confirmed: the second is in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !recorder::spool::is_uploaded(&dir, &files[0].0) {
        assert!(
            Instant::now() < deadline,
            "the child never uploaded the first file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(child);
    assert!(
        !recorder::spool::is_uploaded(&dir, &files[1].0),
        "the kill came after the big file was confirmed; not mid-upload"
    );
    assert!(dir.exists(), "the spool keeps what is not confirmed");
    // A new recorder process takes over.
    let store = Store::open(&moto.store_config())
        .unwrap()
        .with_part_size(5 * 1024 * 1024);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_rec, _task) = Recorder::start(config(&spool), store.clone(), tx).unwrap();
    next_event(&mut rx, Duration::from_secs(60), |k| {
        matches!(k, RecorderEventKind::Uploaded { .. })
    })
    .await;
    assert_stored(&store, "podcast", "rec-big", &files).await;
    assert!(!dir.exists());
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_killed_while_recording_is_finished_from_its_spool() {
    let py = python();
    let moto = Moto::start(&py);
    let spool = temp("killed-recording");
    let child = spawn_child("record", &spool, &moto);
    // At least 4 s of audio written.
    wait_recorded(&spool, 200);
    kill(child);
    let written: u64 = std::fs::read_to_string(spool.join("progress"))
        .unwrap()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(spool.join("progress"));
    let store = Store::open(&moto.store_config()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_rec, _task) = Recorder::start(config(&spool), store.clone(), tx).unwrap();
    let m = finished_interrupted_and_uploaded(&mut rx).await;
    let key = object_key("podcast", "rec-killed", &m.tracks[0].file);
    let data = store.get(&key).await.unwrap();
    // Cut back to whole pages: it parses (every CRC checks) and holds what was
    // written up to the last page flushed before the kill (pages are 1 s).
    let r = OggOpusReader::parse(&data).unwrap();
    let samples = r.samples().unwrap();
    let written_samples = written * 960;
    assert!(samples > 0 && samples <= written_samples + 50 * 960);
    assert!(
        written_samples.saturating_sub(samples) <= 3 * 48_000,
        "lost more than the unflushed tail: {samples} of {written_samples}"
    );
    assert!(
        (m.tracks[0].duration_ms - (samples - 312) as f64 / 48.0).abs() < 0.01,
        "the manifest says what the file holds"
    );
    let path = spool.join("check.ogg");
    std::fs::write(&path, &data).unwrap();
    let s = support::decode(&py, &path);
    assert_eq!(s[0]["samples"].as_u64().unwrap(), samples - 312);
    let _ = SystemTime::now();
    let _ = std::fs::remove_dir_all(&spool);
}

/// A recorder process killed while recording, its spool on storage another recorder
/// shares (a node that died, in a cluster): the other one adopts the recording,
/// finishes it as `interrupted` with what reached the disk, and uploads it; the dead
/// one's spool is left without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_recorders_recording_is_adopted_finished_and_uploaded_by_another() {
    let py = python();
    let moto = Moto::start(&py);
    let shared = temp("adopted");
    let (dead, alive) = (shared.join("node-a"), shared.join("node-b"));
    std::fs::create_dir_all(&dead).unwrap();
    let child = spawn_child("record", &dead, &moto);
    wait_recorded(&dead, 200);
    kill(child);
    let store = Store::open(&moto.store_config()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (rec, _task) = Recorder::start(config(&alive), store.clone(), tx).unwrap();
    // Written a moment ago: its recorder may be alive, so it is not taken yet.
    assert!(rec.adopt(&dead, Duration::from_secs(600)).is_empty());
    let taken = rec.adopt(&dead, Duration::ZERO);
    assert_eq!(taken, ["rec-killed"]);
    assert!(
        recorder::spool::recordings(&dead).unwrap().is_empty(),
        "moved out of the dead one's spool"
    );
    // Adopting again finds nothing: each recording goes to one recorder.
    assert!(rec.adopt(&dead, Duration::ZERO).is_empty());
    let m = finished_interrupted_and_uploaded(&mut rx).await;
    let data = store
        .get(&object_key("podcast", "rec-killed", &m.tracks[0].file))
        .await
        .unwrap();
    let samples = OggOpusReader::parse(&data).unwrap().samples().unwrap();
    assert!(samples > 0, "what was spooled is uploaded");
    let _ = std::fs::remove_dir_all(&shared);
}
