//! The `streamcore` binary: token creation, config printing, SIGTERM drain, and
//! transcoding one file.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::offer;
use media_core::str0m::media::Direction;
use media_core::str0m::media::MediaKind::Audio;

const BIN: &str = env!("CARGO_BIN_EXE_streamcore");

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sc-cli-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn token_create_prints_a_verifiable_token() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .args(["token", "create", "--data-dir"])
        .arg(&dir)
        .args([
            "--room",
            "demo",
            "--identity",
            "phone",
            "--publish",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let signer =
        signaling::JoinTokenSigner::load_or_create(&dir.join("keys/join-token-ed25519.pem"))
            .unwrap();
    let grant = signer.verifier().verify(token.trim()).unwrap();
    assert_eq!(grant.identity, "phone");
    assert!(grant.grants.publish && !grant.grants.subscribe);

    let bad = Command::new(BIN)
        .args(["token", "create", "--data-dir"])
        .arg(&dir)
        .args(["--room", "no/slash", "--identity", "x", "--publish"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--room"));
    let none = Command::new(BIN)
        .args(["token", "create", "--data-dir"])
        .arg(&dir)
        .args(["--room", "r", "--identity", "x"])
        .output()
        .unwrap();
    assert!(!none.status.success(), "a token without grants is refused");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_print_shows_layers() {
    let dir = tempdir();
    let file = dir.join("s.toml");
    std::fs::write(&file, "[media]\nport = 41000\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "print", "--config"])
        .arg(&file)
        .args(["--workers", "3"])
        .env("STREAMCORE_HTTP", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("http = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("port = 41000"), "{text}");
    assert!(text.contains("workers = 3"), "{text}");
    let bad = Command::new(BIN)
        .args(["config", "print", "--http", "0.0.0.0:8080"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("advertise"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts `streamcore serve` on free ports in `dir` with `extra` flags, its stdout and
/// stderr piped. The caller waits for the child (`wait_exit`).
#[allow(clippy::zombie_processes)]
fn spawn_serve(dir: &std::path::Path, grace_secs: u64, extra: &[&std::ffi::OsStr]) -> Child {
    Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--media-port", "0"])
        .args(["--workers", "1", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("STREAMCORE_SHUTDOWN_GRACE_SECS", grace_secs.to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines of a child's output, as they come.
fn lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `streamcore serve` and returns it with its HTTP address (read from its log).
#[allow(clippy::zombie_processes)]
fn serve(dir: &std::path::Path, grace_secs: u64) -> (Child, String) {
    let mut child = spawn_serve(dir, grace_secs, &["--log-json".as_ref()]);
    let log = lines(child.stderr.take().unwrap());
    let _ = lines(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server logged its address");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(http) = v["fields"]["http"].as_str() {
            return (child, format!("http://{http}"));
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits() {
    let dir = tempdir();
    let (mut child, base) = serve(&dir, 2);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A session that stays open (its client never connects within the grace period).
    let signer =
        signaling::JoinTokenSigner::load_or_create(&dir.join("keys/join-token-ed25519.pem"))
            .unwrap();
    let room = media_core::RoomId::parse("d").unwrap();
    let grants = signaling::Grants {
        publish: true,
        ..Default::default()
    };
    let token = signer
        .sign(&room, "p", grants, Duration::from_secs(60))
        .unwrap();
    let post = |sdp: String| {
        http.post(format!("{base}/whip/d"))
            .header("Content-Type", "application/sdp")
            .header("Authorization", format!("Bearer {token}"))
            .body(sdp)
            .send()
    };
    assert_eq!(
        post(offer(&[Audio], Direction::SendOnly).3)
            .await
            .unwrap()
            .status(),
        201
    );

    signal(&child, "TERM");
    let t0 = Instant::now();
    wait_draining(&base).await;
    let refused = post(offer(&[Audio], Direction::SendOnly).3).await.unwrap();
    assert_eq!(refused.status(), 503);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "waited for the grace period"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Waits (5 s at most) until `/readyz` says 503: the node is draining.
async fn wait_draining(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = reqwest::get(format!("{base}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(503) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says {status:?} 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let dir = tempdir();
    let (mut child, base) = serve(&dir, 60);
    let signer =
        signaling::JoinTokenSigner::load_or_create(&dir.join("keys/join-token-ed25519.pem"))
            .unwrap();
    let room = media_core::RoomId::parse("d").unwrap();
    let grants = signaling::Grants {
        publish: true,
        ..Default::default()
    };
    let token = signer
        .sign(&room, "p", grants, Duration::from_secs(60))
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/whip/d"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {token}"))
        .body(offer(&[Audio], Direction::SendOnly).3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    signal(&child, "TERM");
    // The first signal is taken (the node drains) before the second comes.
    wait_draining(&base).await;
    let t0 = Instant::now();
    signal(&child, "INT");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "did not wait out the 60 s grace"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts `streamcore serve` with `extra` flags and hands over what it prints on stdout,
/// line by line.
#[allow(clippy::zombie_processes)]
fn serve_printing(
    dir: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = spawn_serve(dir, 0, extra);
    let printed = lines(child.stdout.take().unwrap());
    // Its log is not read here; drained so the node never blocks on a full pipe.
    let _ = lines(child.stderr.take().unwrap());
    (child, printed)
}

/// The rest of the first printed line that starts with `prefix` (10 s at most).
fn printed(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("nothing printed starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// `serve --tls self-signed` makes a certificate and a local CA for phones, serves
/// HTTPS and prints both fingerprints (what a person compares on the phone);
/// `--tls-cert/--tls-key` serve a given certificate and print its fingerprint.
#[test]
fn serve_with_the_tls_flags_prints_the_certificates_fingerprints() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let dir = tempdir();
    let (mut child, lines) = serve_printing(&dir, &["--tls".as_ref(), "self-signed".as_ref()]);
    let running = printed(&lines, "StreamCore is running: open ");
    assert!(running.starts_with("https://127.0.0.1:"), "{running}");
    let fingerprint = printed(&lines, "HTTPS certificate SHA-256 fingerprint: ");
    let cert = CertificateDer::from_pem_file(dir.join("tls/cert.pem")).unwrap();
    assert_eq!(fingerprint, streamcore::tls::fingerprint(&cert));
    let ca_line = printed(&lines, "local CA for phones to trust: ");
    let ca = CertificateDer::from_pem_file(dir.join("tls/ca.pem")).unwrap();
    assert_eq!(
        ca_line,
        format!(
            "{} (SHA-256 {})",
            dir.join("tls/ca.pem").display(),
            streamcore::tls::fingerprint(&ca)
        )
    );
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());

    // The certificate just made, given by the flags to another node.
    let other = tempdir();
    let (mut child, lines) = serve_printing(
        &other,
        &[
            "--tls-cert".as_ref(),
            dir.join("tls/cert.pem").as_os_str(),
            "--tls-key".as_ref(),
            dir.join("tls/key.pem").as_os_str(),
        ],
    );
    assert!(printed(&lines, "StreamCore is running: open ").starts_with("https://"));
    assert_eq!(
        printed(&lines, "HTTPS certificate SHA-256 fingerprint: "),
        fingerprint
    );
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(other).unwrap();
}

#[test]
fn migrate_and_admin_create() {
    let dir = tempdir();
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut c = Command::new(BIN);
        c.args(args).arg("--data-dir").arg(&dir);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&["migrate"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sqlite"));
    assert!(dir.join("streamcore.db").exists());
    let pw = ("STREAMCORE_ADMIN_PASSWORD", "a long admin password");
    let out = run(&["admin", "create", "--email", "Ops@Example.com"], Some(pw));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    let out = run(&["admin", "create", "--email", "ops@example.com"], Some(pw));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now an admin"));
    let out = run(
        &["admin", "create", "--email", "x@example.com"],
        Some(("STREAMCORE_ADMIN_PASSWORD", "short")),
    );
    assert!(!out.status.success(), "a short password is refused");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `streamcore admin mail`: an operator without SMTP reads waiting mail whole on the
/// node (the admin API shows it redacted); `--to` picks one recipient's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mail_prints_the_waiting_mail_whole() {
    use control_api::store::{Db, Mail, Store};
    let dir = tempdir();
    let db = Db::connect(&format!("sqlite://{}", dir.join("streamcore.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    for (id, to, token) in [
        ("m1", "ann@example.com", "tok-ann"),
        ("m2", "bo@example.com", "tok-bo"),
    ] {
        db.insert_mail(Mail {
            id: id.into(),
            to_addr: to.into(),
            subject: "Reset your StreamCore password".into(),
            body: format!(
                "Reset token: {token}\nLink: http://x.test/reset-password?token={token}\n"
            ),
            created_at: 1,
            sent_at: None,
        })
        .await
        .unwrap();
    }
    db.mark_mail_sent("m2", 2).await.unwrap();
    let out = Command::new(BIN)
        .args(["admin", "mail", "--to", "Ann@Example.com", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("To: ann@example.com"), "{stdout}");
    assert!(stdout.contains("reset-password?token=tok-ann"), "{stdout}");
    assert!(
        !stdout.contains("tok-bo"),
        "sent mail is scrubbed and not shown: {stdout}"
    );
    let scrubbed = db.list_mail(10).await.unwrap();
    assert_eq!(
        scrubbed
            .iter()
            .find(|m| m.id == "m2")
            .map(|m| m.body.as_str()),
        Some(""),
        "a sent mail's body is scrubbed"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_role_serves_the_control_api_alone() {
    let dir = tempdir();
    let mut child = Command::new(BIN)
        .args(["api", "--http", "127.0.0.1:0", "--log-json", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep reading the log to its end: a closed pipe would break the server's logging.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(http) = v["fields"]["http"].as_str()
            {
                let _ = tx.send(format!("http://{http}"));
            }
        }
    });
    let base = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("address logged")
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "solo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the api role takes sign-ups");
    let r = http.post(format!("{base}/whip/x")).send().await.unwrap();
    assert_eq!(r.status(), 404, "no media plane in the api role");
    signal(&child, "TERM");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn transcode_writes_normalised_opus_with_progress_and_a_waveform() {
    let py = support::python();
    let dir = tempdir();
    let src = support::make_audio(&py, "sweep", "mp3", 44_100, 4.0);
    let out = dir.join("sweep.opus");
    let wf = dir.join("sweep.json");
    let run = Command::new(BIN)
        .arg("transcode")
        .arg(&src)
        .arg(&out)
        .args(["--target-lufs", "-16", "--waveform"])
        .arg(&wf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // Not a terminal here: one progress line per stage, up to 100 %.
    for stage in ["decode", "normalise", "encode", "done"] {
        assert!(stderr.contains(stage), "no {stage} in {stderr}");
    }
    assert!(stderr.contains("100% done"), "{stderr}");
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(summary.contains("-16.0 LUFS"), "{summary}");
    let (lufs, tp) = support::ffmpeg_loudness(&py, &out);
    assert!((lufs + 16.0).abs() <= 0.5, "{lufs} LUFS");
    assert!(tp <= -1.0, "{tp} dBTP");
    let ms = support::onsets(&py, 2.0, &[&out])[0].1;
    assert!((ms - 4000.0).abs() <= 20.0, "{ms} ms");
    let peaks: serde_json::Value = serde_json::from_slice(&std::fs::read(&wf).unwrap()).unwrap();
    assert_eq!(peaks["buckets"], 1000);
    assert!(
        std::fs::read_to_string(wf.with_extension("svg"))
            .unwrap()
            .starts_with("<svg")
    );

    // A file that is not audio: a clear reason, a failing exit, no output left.
    let junk = dir.join("junk.mp3");
    std::fs::write(&junk, b"this is not an mp3 at all, only text").unwrap();
    let bad_out = dir.join("junk.opus");
    let run = Command::new(BIN)
        .arg("transcode")
        .arg(&junk)
        .arg(&bad_out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("junk.mp3"), "{err}");
    assert!(!bad_out.exists() && !dir.join("junk.opus.part").exists());
    let run = Command::new(BIN)
        .arg("transcode")
        .arg(&src)
        .arg(&bad_out)
        .args(["--target-lufs", "3"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--target-lufs"));
    let _ = std::fs::remove_dir_all(&dir);
}
