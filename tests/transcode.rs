//! Transcode jobs through the real node: uploads over the control API, the in-process
//! worker, requests produced to `transcode.jobs` from outside (in-process bus and
//! Kafka), retries, the dead-letter topic, and a restart with jobs queued. Outputs
//! are measured by FFmpeg (PyAV): loudness, true peak, duration.

mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use common::kafka::Tansu;
use common::remote::{User, register};
use control_api::store::Store;
use events::{Bus, Envelope, EventType, KafkaBus, KafkaConfig, Record, Topic};
use serde_json::{Value, json};
use support::{ffmpeg_loudness, make_audio, python};

const WAIT: Duration = Duration::from_secs(60);

async fn upload(srv: &TestServer, token: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let r = srv
        .http
        .post(format!("{}/api/v1/uploads{query}", srv.base))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn get(srv: &TestServer, path: &str, token: &str) -> (u16, Value) {
    common::remote::get(&srv.http, format!("{}{path}", srv.base), token).await
}

/// Polls an upload until it is completed or failed; returns it and every distinct
/// (stage, percent) seen on the way.
async fn wait_upload(srv: &TestServer, token: &str, id: &str) -> (Value, Vec<(String, i64)>) {
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<(String, i64)> = Vec::new();
    loop {
        let (s, v) = get(srv, &format!("/api/v1/uploads/{id}"), token).await;
        assert_eq!(s, 200, "{v}");
        let step = (
            v["stage"].as_str().unwrap_or("").to_owned(),
            v["percent"].as_i64().unwrap(),
        );
        if seen.last() != Some(&step) {
            seen.push(step);
        }
        if v["status"] == "completed" || v["status"] == "failed" {
            return (v, seen);
        }
        assert!(Instant::now() < deadline, "the upload never finished: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a job row (jobs from the bus have no owner to ask the API with).
async fn wait_job(
    srv: &TestServer,
    id: &str,
    done: impl Fn(&control_api::store::Job) -> bool,
) -> control_api::store::Job {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(j) = srv.server().api.db.job(id).await.unwrap()
            && done(&j)
        {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} never got there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Envelopes from `sub` until one of type `until` about `job` arrives.
async fn events_until(sub: &mut events::Subscription, job: &str, until: &str) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out: Vec<Envelope> = Vec::new();
    while !out.iter().any(|e| e.kind == until) {
        let d = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => continue,
            Err(_) => panic!(
                "no {until} for {job}; got {:?}",
                out.iter().map(|e| &e.kind).collect::<Vec<_>>()
            ),
        };
        let e = Envelope::from_slice(&d.payload).unwrap();
        if e.data["job_id"] == job && !out.iter().any(|o| o.id == e.id) {
            out.push(e);
        }
    }
    out
}

/// The Opus file a completed upload wrote, through the API.
async fn download(srv: &TestServer, token: &str, id: &str, name: &str) -> (u16, String, Vec<u8>) {
    let r = srv
        .http
        .get(format!("{}/api/v1/uploads/{id}/files/{name}", srv.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (s, ct, r.bytes().await.unwrap().to_vec())
}

fn temp_file(bytes: &[u8], ext: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sc-tc-{}.{ext}", support::rand_u64()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// FFmpeg's duration of an audio file, in ms.
fn ffmpeg_ms(py: &str, path: &Path) -> f64 {
    support::onsets(py, 2.0, &[path])[0].1
}

async fn user(srv: &TestServer, name: &str) -> User {
    register(srv, &format!("{name}@example.test")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_normalised_to_opus_with_progress_and_a_waveform() {
    let py = python();
    let srv = TestServer::start().await;
    let u = user(&srv, "uploader").await;
    let mut sub = srv
        .server()
        .api
        .bus
        .subscribe("test-upload", &[Topic::TranscodeJobs])
        .unwrap();
    // The user's browser socket hears the job as it goes.
    let mut browser = common::remote::socket(&srv.base, "/api/v1/events/socket", &u.access).await;
    // Speech-like noise at 44.1 kHz in FLAC; the name says MP3 and is not believed.
    let src = make_audio(&py, "speech", "flac", 44_100, 6.0);
    let (s, job) = upload(
        &srv,
        &u.access,
        "?name=talk.mp3&target_lufs=-16",
        std::fs::read(&src).unwrap(),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["spec"]["source"]["type"], "flac");
    assert_eq!(job["spec"]["source"]["name"], "talk.mp3");
    let id = job["id"].as_str().unwrap().to_owned();
    let (done, seen) = wait_upload(&srv, &u.access, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["percent"], 100);
    let r = &done["result"];
    assert_eq!(r["input"]["codec"], "flac");
    assert_eq!(r["input"]["rate"], 44_100);
    assert!(
        (r["duration_ms"].as_f64().unwrap() - 6000.0).abs() <= 20.0,
        "{r}"
    );
    assert!(
        (r["loudness"]["output_lufs"].as_f64().unwrap() + 16.0).abs() <= 0.5,
        "{r}"
    );

    // The file, measured by FFmpeg: −16 LUFS ±0.5, under −1 dBTP, 6 s within 20 ms.
    let (s, ct, opus) = download(&srv, &u.access, &id, "audio.opus").await;
    assert_eq!((s, ct.as_str()), (200, "audio/ogg"));
    let out = temp_file(&opus, "opus");
    let (lufs, tp) = ffmpeg_loudness(&py, &out);
    assert!((lufs + 16.0).abs() <= 0.5, "{lufs} LUFS");
    assert!(tp <= -1.0, "true peak {tp} dBTP");
    let ms = ffmpeg_ms(&py, &out);
    assert!((ms - 6000.0).abs() <= 20.0, "{ms} ms");
    let (s, ct, wf) = download(&srv, &u.access, &id, "waveform.json").await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    let wf: Value = serde_json::from_slice(&wf).unwrap();
    assert_eq!(wf["buckets"], 1000);
    assert_eq!(wf["max"].as_array().unwrap().len(), 1000);
    let (s, ct, svg) = download(&srv, &u.access, &id, "waveform.svg").await;
    assert_eq!((s, ct.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().starts_with("<svg"));
    assert_eq!(download(&srv, &u.access, &id, "other.bin").await.0, 404);

    // Progress: the events go up in stages to completion; polling saw some of it.
    let evs = events_until(&mut sub, &id, "transcode.completed").await;
    assert_eq!(evs[0].kind, "transcode.requested");
    assert!(evs.iter().all(|e| e.data["user_id"] == u.id.as_str()));
    let steps: Vec<(String, i64)> = evs
        .iter()
        .filter(|e| e.kind == "transcode.progress")
        .map(|e| {
            (
                e.data["stage"].as_str().unwrap().to_owned(),
                e.data["percent"].as_i64().unwrap(),
            )
        })
        .collect();
    let stages: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    for want in ["fetch", "decode", "normalise", "encode", "upload"] {
        assert!(stages.contains(&want), "{want} missing from {steps:?}");
    }
    assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1), "{steps:?}");
    assert!(seen.len() >= 2, "polling saw {seen:?}");

    let pushed = common::remote::wait_for(&mut browser, Duration::from_secs(10), |m| {
        m["type"] == "transcode_job" && m["event"] == "transcode.completed"
    })
    .await;
    assert_eq!(pushed["data"]["job_id"], id.as_str());
    assert_eq!(
        pushed["data"]["result"]["files"]["audio.opus"],
        r["files"]["audio.opus"]
    );

    // Listed, and nobody else's.
    let (s, list) = get(&srv, "/api/v1/uploads", &u.access).await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["id"], id.as_str());
    let other = user(&srv, "someone-else").await;
    assert_eq!(
        get(&srv, &format!("/api/v1/uploads/{id}"), &other.access)
            .await
            .0,
        404
    );
    assert_eq!(
        get(&srv, "/api/v1/uploads", &other.access).await.1,
        json!([])
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors() {
    let srv = TestServer::start_with(|s| s.worker.max_upload_mib = 1).await;
    let u = user(&srv, "bad").await;
    let r = srv
        .http
        .post(format!("{}/api/v1/uploads", srv.base))
        .body(b"fLaC".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, v) = upload(
        &srv,
        &u.access,
        "?name=song.mp3",
        b"<html><body>not audio</body></html>".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_type")),
        "{v}"
    );
    let (s, v) = upload(&srv, &u.access, "", Vec::new()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("empty")),
        "{v}"
    );
    let mut big = b"fLaC".to_vec();
    big.resize(2 * 1024 * 1024, 0);
    let (s, v) = upload(&srv, &u.access, "", big).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    let (s, v) = upload(&srv, &u.access, "?target_lufs=3", b"fLaC".to_vec()).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("target_lufs")),
        "{v}"
    );
    let (s, v) = upload(&srv, &u.access, "?bitrate=1", b"fLaC".to_vec()).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("bitrate")),
        "{v}"
    );
    assert_eq!(get(&srv, "/api/v1/uploads/nope", &u.access).await.0, 404);
    // Nothing refused was kept: no job, no spooled part.
    assert_eq!(get(&srv, "/api/v1/uploads", &u.access).await.1, json!([]));
    let parts = std::fs::read_dir(srv.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(parts, 0, "spooled uploads are removed");
    srv.stop().await;
}

/// An upload sent chunked (no `Content-Length`), over a raw connection: the status
/// and the body of the answer.
async fn upload_chunked(srv: &TestServer, token: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = srv.base.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        // The node may answer (and close) before the last chunk: that is the point.
        if c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || c.write_all(chunk).await.is_err()
            || c.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = c.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The bytes a user keeps in uploads are bounded (`limits.upload_mib_per_user`): an
/// upload that would pass it is refused with `403 quota_exceeded`, whether its size is
/// announced or only seen as it streams, and nothing of it is kept; others' uploads
/// are not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_uploads_are_bounded_in_bytes() {
    let srv = TestServer::start_with(|s| s.limits.upload_mib_per_user = 1).await;
    let u = user(&srv, "quota").await;
    let file = |kib: usize| {
        let mut f = b"fLaC".to_vec();
        f.resize(kib * 1024, 1);
        f
    };
    let (s, v) = upload(&srv, &u.access, "", file(700)).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = upload(&srv, &u.access, "", file(400)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{v}"
    );
    let (s, text) = upload_chunked(&srv, &u.access, &file(400)).await;
    assert!(s == 403 && text.contains("quota_exceeded"), "{text}");
    let (s, v) = upload(&srv, &u.access, "", file(300)).await;
    assert_eq!(s, 202, "what still fits is taken: {v}");
    let other = user(&srv, "quota-other").await;
    let (s, v) = upload(&srv, &other.access, "", file(700)).await;
    assert_eq!(s, 202, "{v}");
    let (_, mine) = get(&srv, "/api/v1/uploads", &u.access).await;
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    let parts = std::fs::read_dir(srv.data_dir.join("uploads"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".part"))
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(parts, 0, "refused uploads leave no spooled part");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_upload_fails_for_good_with_its_reason_and_the_worker_keeps_going() {
    let py = python();
    let srv = TestServer::start().await;
    let u = user(&srv, "corrupt").await;
    let mut dead = srv
        .server()
        .api
        .bus
        .subscribe("test-dead", &[Topic::TranscodeDeadLetter])
        .unwrap();
    // FLAC's magic, then garbage: it passes the sniffing and fails in the decoder.
    let mut junk = b"fLaC".to_vec();
    junk.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (s, bad) = upload(&srv, &u.access, "", junk).await;
    assert_eq!(s, 202, "{bad}");
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let (s, good) = upload(
        &srv,
        &u.access,
        "",
        std::fs::read(make_audio(&py, "sweep", "wav", 48_000, 2.0)).unwrap(),
    )
    .await;
    assert_eq!(s, 202, "{good}");
    let (failed, _) = wait_upload(&srv, &u.access, &bad_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 1, "a corrupt file is not retried");
    let reason = failed["last_error"].as_str().unwrap();
    assert!(
        reason.contains("bad audio") || reason.contains("unsupported"),
        "{reason}"
    );
    let evs = events_until(&mut dead, &bad_id, "transcode.dead_lettered").await;
    assert_eq!(evs[0].data["reason"], reason);
    assert_eq!(evs[0].data["permanent"], true);
    assert_eq!(evs[0].data["attempts"], 1);
    assert_eq!(evs[0].data["spec"]["kind"], "transcode");
    assert_eq!(
        download(&srv, &u.access, &bad_id, "audio.opus").await.0,
        409
    );
    // The next job runs.
    let (ok, _) = wait_upload(&srv, &u.access, good["id"].as_str().unwrap()).await;
    assert_eq!(ok["status"], "completed", "{ok}");
    assert_eq!(
        srv.metric("streamcore_transcode_jobs_dead_lettered_total")
            .await,
        1
    );
    assert_eq!(
        srv.metric("streamcore_transcode_jobs_completed_total")
            .await,
        1
    );
    srv.stop().await;
}

/// A `transcode.requested` as a producer holding the node's event key writes it to
/// the topic.
fn request(srv: &TestServer, job: &str, spec: Value) -> Record {
    let env = Envelope::new(
        EventType::TranscodeRequested,
        control_api::auth::now_millis(),
        "outside/test",
        format!("job/{job}"),
        json!({ "job_id": job, "spec": spec }),
    );
    let payload = env.to_json();
    Record {
        topic: Topic::TranscodeJobs,
        key: job.to_owned(),
        signature: Some(srv.server().api.event_key.sign(payload.as_bytes())),
        payload,
    }
}

fn transcode_spec(input: &str, out: &str) -> Value {
    json!({ "kind": "transcode", "input": input, "output_prefix": out })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_the_bus_is_retried_until_its_input_appears_or_dead_lettered() {
    let py = python();
    let wav = make_audio(&py, "sweep", "wav", 48_000, 2.0);
    let srv = TestServer::start_with(|s| {
        s.worker.backoff_base_ms = 1_000;
        s.worker.max_attempts = 3;
    })
    .await;
    let bus = srv.server().api.bus.clone();
    let mut sub = bus
        .subscribe(
            "test-retry",
            &[Topic::TranscodeJobs, Topic::TranscodeDeadLetter],
        )
        .unwrap();
    bus.publish(&[
        request(
            &srv,
            "late-input",
            transcode_spec("inbox/late.wav", "out/late/"),
        ),
        request(
            &srv,
            "no-input",
            transcode_spec("inbox/never.wav", "out/never/"),
        ),
    ])
    .await
    .unwrap();
    // The first attempt finds no input and is retried after the backoff...
    let first = wait_job(&srv, "late-input", |j| j.status == "retrying").await;
    assert_eq!(first.attempts, 1);
    assert!(
        first
            .last_error
            .as_deref()
            .unwrap()
            .contains("inbox/late.wav"),
        "{first:?}"
    );
    // ...by when the input is there.
    let store = srv.data_dir.join("recordings").join("inbox");
    std::fs::create_dir_all(&store).unwrap();
    // Whole or not at all, as an object store would show it: a retry that read a
    // half-copied file would fail for good and miscount the attempts.
    std::fs::copy(&wav, store.join(".late.wav.part")).unwrap();
    std::fs::rename(store.join(".late.wav.part"), store.join("late.wav")).unwrap();
    let done = wait_job(&srv, "late-input", |j| j.is_final()).await;
    assert_eq!(
        (done.status.as_str(), done.attempts),
        ("completed", 2),
        "{done:?}"
    );
    let out = srv.data_dir.join("recordings/out/late/audio.opus");
    let (lufs, tp) = ffmpeg_loudness(&py, &out);
    assert!(
        (lufs + 14.0).abs() <= 0.5 && tp <= -1.0,
        "{lufs} LUFS, {tp} dBTP"
    );

    let never = wait_job(&srv, "no-input", |j| j.is_final()).await;
    assert_eq!(
        (never.status.as_str(), never.attempts),
        ("failed", 3),
        "{never:?}"
    );
    let evs = events_until(&mut sub, "no-input", "transcode.dead_lettered").await;
    let failed: Vec<&Envelope> = evs
        .iter()
        .filter(|e| e.kind == "transcode.failed")
        .collect();
    assert_eq!(failed.len(), 3, "one failure event per attempt");
    let delays: Vec<u64> = failed
        .iter()
        .filter_map(|e| e.data["retry_in_ms"].as_u64())
        .collect();
    assert_eq!(delays, [1_000, 2_000], "exponential backoff");
    assert_eq!(failed[2].data["final"], true);
    let dl = evs.last().unwrap();
    assert_eq!(dl.data["attempts"], 3);
    assert_eq!(dl.data["permanent"], false);
    assert!(
        dl.data["reason"]
            .as_str()
            .unwrap()
            .contains("inbox/never.wav")
    );
    // A request with no job id, or a bad spec, is dead-lettered too, with the reason.
    bus.publish(&[request(
        &srv,
        "bad-spec",
        json!({ "kind": "transcode", "input": "../etc/passwd", "output_prefix": "x/" }),
    )])
    .await
    .unwrap();
    // A key that climbs out of its prefix is refused before any job exists.
    let evs = events_until(&mut sub, "bad-spec", "transcode.dead_lettered").await;
    let dl = evs.last().unwrap();
    assert!(
        dl.data["reason"]
            .as_str()
            .unwrap()
            .contains("plain object keys"),
        "{dl:?}"
    );
    assert!(srv.server().api.db.job("bad-spec").await.unwrap().is_none());
    srv.stop().await;
}

/// A job queued while no worker runs is done once one does; meanwhile the user's
/// jobs-in-flight quota (1 here) refuses another upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_while_no_worker_runs_are_done_after_a_restart() {
    let py = python();
    let dir = std::env::temp_dir().join(format!("sc-tc-restart-{}", support::rand_u64()));
    let d1 = dir.clone();
    let srv = TestServer::start_with(move |s| {
        s.data_dir = d1;
        s.worker.in_process = false;
        s.limits.jobs_in_flight_per_user = 1;
    })
    .await;
    let u = user(&srv, "restart").await;
    let sweep = std::fs::read(make_audio(&py, "sweep", "mp3", 44_100, 3.0)).unwrap();
    let (s, job) = upload(&srv, &u.access, "", sweep.clone()).await;
    assert_eq!(s, 202, "{job}");
    // One job in flight is this user's quota here: a second upload waits its turn.
    let (s, refused) = upload(&srv, &u.access, "", sweep).await;
    assert_eq!(
        (s, refused["error"]["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{refused}"
    );
    let id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&srv, &format!("/api/v1/uploads/{id}"), &u.access)
            .await
            .1["status"],
        "queued"
    );
    let mut srv = srv;
    srv.server
        .take()
        .unwrap()
        .shutdown(Duration::from_millis(100), std::future::pending())
        .await;
    // The same node again, now with its worker: the job was kept in the database.
    let d2 = dir.clone();
    let srv = TestServer::start_with(move |s| s.data_dir = d2).await;
    let (done, _) = wait_upload(&srv, &u.access, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_an_outside_request_is_done_and_a_bad_one_reaches_the_dead_letter_topic() {
    let py = python();
    let t = Tansu::start();
    let brokers = t.brokers();
    let srv = TestServer::start_with(move |s| {
        s.events.kafka_brokers = Some(brokers);
        s.events.kafka_message_timeout_secs = 5;
    })
    .await;
    let inbox = srv.data_dir.join("recordings").join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(
        make_audio(&py, "speech", "ogg", 48_000, 3.0),
        inbox.join("talk.ogg"),
    )
    .unwrap();
    let mut junk = b"OggS".to_vec();
    junk.resize(4096, 7);
    std::fs::write(inbox.join("junk.ogg"), junk).unwrap();
    // Our Kafka client as an outside producer, straight to the topic. Without the
    // node's event key a request is ignored; with it, a job that claims an owner may
    // only read and write that owner's uploads.
    let owner = user(&srv, "kafka-owner").await;
    let unsigned = Record {
        signature: None,
        ..request(
            &srv,
            "k-unsigned",
            transcode_spec("inbox/talk.ogg", "out/k-unsigned/"),
        )
    };
    let mut foreign = request(
        &srv,
        "k-foreign",
        transcode_spec(
            "uploads/someone-else/x/source.ogg",
            "uploads/someone-else/x/",
        ),
    );
    {
        let mut env = Envelope::from_slice(foreign.payload.as_bytes()).unwrap();
        env.data["owner_id"] = json!(owner.id);
        foreign.payload = env.to_json();
        foreign.signature = Some(srv.server().api.event_key.sign(foreign.payload.as_bytes()));
    }
    let producer = Bus::Kafka(KafkaBus::new(KafkaConfig::new(&t.brokers())).unwrap());
    producer
        .publish(&[
            unsigned,
            foreign,
            request(
                &srv,
                "k-good",
                transcode_spec("inbox/talk.ogg", "out/k-good/"),
            ),
            request(
                &srv,
                "k-junk",
                transcode_spec("inbox/junk.ogg", "out/k-junk/"),
            ),
        ])
        .await
        .unwrap();
    let good = wait_job(&srv, "k-good", |j| j.is_final()).await;
    assert_eq!(good.status, "completed", "{good:?}");
    let junk = wait_job(&srv, "k-junk", |j| j.is_final()).await;
    assert_eq!(junk.status, "failed", "{junk:?}");
    let db = &srv.server().api.db;
    assert!(
        db.job("k-unsigned").await.unwrap().is_none(),
        "an unsigned request makes no job"
    );
    assert!(
        db.job("k-foreign").await.unwrap().is_none(),
        "a request on another's files makes no job"
    );
    assert!(!srv.data_dir.join("recordings/out/k-unsigned").exists());
    // confluent-kafka, outside the node, reads the dead letters: the refused request
    // (with why) and the junk.
    let dead = t.outside_consume(&py, "transcode.dead_letter", 2).await;
    let refused = dead
        .iter()
        .find(|l| l["key"] == "k-foreign")
        .expect("k-foreign dead-lettered");
    assert!(
        refused["value"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("only under uploads/{}/", owner.id)),
        "{refused}"
    );
    let line = dead
        .iter()
        .find(|l| l["key"] == "k-junk")
        .expect("k-junk dead-lettered");
    assert_eq!(line["key"], "k-junk");
    assert_eq!(line["value"]["type"], "transcode.dead_lettered");
    assert_eq!(
        line["value"]["data"]["reason"],
        junk.last_error.unwrap().as_str()
    );
    let out = srv.data_dir.join("recordings/out/k-good/audio.opus");
    let (lufs, tp) = ffmpeg_loudness(&py, &out);
    assert!(
        (lufs + 14.0).abs() <= 0.5 && tp <= -1.0,
        "{lufs} LUFS, {tp} dBTP"
    );
    srv.stop().await;
}
