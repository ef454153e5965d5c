//! The node's `[smtp]` settings, end to end: a node started from `Settings` and the
//! `streamcore api` binary configured through `STREAMCORE_SMTP__*` deliver reset mail
//! to a real SMTP server (aiosmtpd on 127.0.0.1, see
//! `control-api/tests/smtp_sink/mod.rs`), and `config print` hides the SMTP password.
mod common;
#[path = "../control-api/tests/smtp_sink/mod.rs"]
mod smtp_sink;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};
use smtp_sink::{Sink, free_port, reset_token};

/// The reset mail among the messages the sink received.
fn reset_mail(got: &[Value]) -> &Value {
    got.iter()
        .find(|m| {
            m["body"]
                .as_str()
                .is_some_and(|b| b.contains("Reset token: "))
        })
        .unwrap_or_else(|| panic!("no reset mail in {got:?}"))
}
use streamcore::config::{SmtpSettings, SmtpTlsMode};

const BIN: &str = env!("CARGO_BIN_EXE_streamcore");

/// Signs up through the mail (the sign-up link arrives at the sink), then asks for a
/// password reset.
async fn register_and_forget(http: &reqwest::Client, base: &str, email: &str, sink: &Sink) {
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = sink.wait_messages(1, Duration::from_secs(10)).await;
    let body = got[0]["body"].as_str().unwrap();
    let token = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("Sign-up code: "))
        .unwrap_or_else(|| panic!("no sign-up code in:\n{body}"))
        .trim();
    let r = http
        .post(format!("{base}/api/v1/auth/register/complete"))
        .json(&json!({"token": token, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/api/v1/auth/password/forgot"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sends_reset_mail_over_smtp() {
    let sink = Sink::start(free_port(), &["--auth", "relay:s3cret-pw"]).await;
    let port = sink.port;
    let srv = TestServer::start_with(|s| {
        s.smtp = Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            from: "StreamCore <noreply@example.com>".into(),
            username: Some("relay".into()),
            password: Some("s3cret-pw".into()),
            tls: SmtpTlsMode::None,
            ca_file: None,
        });
    })
    .await;
    register_and_forget(&srv.http, &srv.base, "ann@example.com", &sink).await;
    // The sign-up mail, then the reset mail.
    let got = sink.wait_messages(2, Duration::from_secs(10)).await;
    for m in &got {
        assert_eq!(m["rcpt_tos"], json!(["ann@example.com"]));
        assert_eq!(m["auth_user"], "relay");
    }
    let reset = reset_mail(&got);
    let token = reset_token(reset["body"].as_str().unwrap());
    let outbox = srv.server().api.db.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mails: Vec<_> = control_api::store::Store::list_mail(&outbox, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.subject.contains("Reset"))
            .collect();
        assert_eq!(mails.len(), 1);
        if mails[0].sent_at.is_some() {
            assert_eq!(mails[0].body, "", "scrubbed once sent");
            break;
        }
        assert!(
            mails[0].body.contains(&token),
            "the outbox holds it until then"
        );
        assert!(Instant::now() < deadline, "not marked sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shutdown stops the relay too.
    tokio::time::timeout(Duration::from_secs(15), srv.stop())
        .await
        .expect("shutdown within 15 s");
    assert_eq!(sink.messages().len(), 2, "each mail sent once");
}

fn smtp_env(cmd: &mut Command, port: u16) {
    cmd.env("STREAMCORE_SMTP__HOST", "127.0.0.1")
        .env("STREAMCORE_SMTP__PORT", port.to_string())
        .env("STREAMCORE_SMTP__FROM", "noreply@example.com")
        .env("STREAMCORE_SMTP__TLS", "none")
        .env("STREAMCORE_SMTP__USERNAME", "007")
        // Looks like a number; must stay this exact text.
        .env("STREAMCORE_SMTP__PASSWORD", "0123456");
}

#[test]
fn config_print_hides_the_smtp_password() {
    let dir = std::env::temp_dir().join(format!("sc-smtp-{}", rand::random::<u64>()));
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "print", "--data-dir"]).arg(&dir);
    smtp_env(&mut cmd, 2525);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[smtp]"), "{text}");
    assert!(text.contains("port = 2525"), "{text}");
    assert!(text.contains("username = \"007\""), "{text}");
    assert!(text.contains("password = \"***\""), "{text}");
    assert!(!text.contains("0123456"), "{text}");
}

/// `streamcore api` with SMTP from the environment; SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_role_takes_smtp_from_the_environment() {
    let sink = Sink::start(free_port(), &["--auth", "007:0123456"]).await;
    let dir = std::env::temp_dir().join(format!("sc-smtp-{}", rand::random::<u64>()));
    let mut cmd = Command::new(BIN);
    cmd.args(["api", "--http", "127.0.0.1:0", "--log-json", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    smtp_env(&mut cmd, sink.port);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(http) = v["fields"]["http"].as_str()
            {
                let _ = tx.send(format!("http://{http}"));
            }
            all.push(line);
        }
        all
    });
    let base = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(b) => b,
        Err(_) => {
            let _ = child.kill();
            panic!("no address logged: {:?}", logs.join().unwrap());
        }
    };
    let http = reqwest::Client::new();
    register_and_forget(&http, &base, "bo@example.com", &sink).await;
    let got = sink.wait_messages(2, Duration::from_secs(10)).await;
    for m in &got {
        assert_eq!(m["rcpt_tos"], json!(["bo@example.com"]));
        assert_eq!(m["auth_user"], "007", "the numeric-looking login works");
    }

    let ok = Command::new("kill")
        .args(["-s", "TERM"])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("streamcore api did not exit within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let logs = logs.join().unwrap().join("\n");
    assert!(logs.contains("mail sent"), "{logs}");
    assert!(logs.contains("mail relay stopped"), "{logs}");
    let token = reset_token(reset_mail(&got)["body"].as_str().unwrap());
    assert!(!logs.contains(&token), "the reset token is never logged");
    assert!(!logs.contains("0123456"), "nor the SMTP password");
    let _ = std::fs::remove_dir_all(dir);
}
