//! Password-reset mail over SMTP, against a real SMTP server (aiosmtpd, see
//! `smtp_sink/mod.rs`) on 127.0.0.1: delivery, a server outage, refusals, rejections,
//! STARTTLS and implicit TLS with a login, and certificate checking.
//!
//! Run: `cargo test -p control-api --test smtp`. Needs Python 3 and PyPI for the
//! cached virtualenv (`scripts/ensure-venv.sh`); the `postgres` test needs PostgreSQL
//! (see `common/mod.rs`).
mod common;
mod smtp_sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_api::mail::{MailRelay, RelayTiming, SmtpConfig, SmtpTls};
use control_api::store::{Mail, Role, Store};
use control_api::{ApiConfig, AppState};
use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp_sink::{Sink, free_port, reset_token};

const PASSWORD: &str = "correct horse battery";
const FROM: &str = "StreamCore <noreply@example.com>";

struct Api {
    base: String,
    http: reqwest::Client,
    state: AppState,
    relay: Option<MailRelay>,
    _guards: (Option<common::PgTestDb>, Option<common::TempDir>),
    _keys: common::TempDir,
}

/// Quick retries, and a poll so slow that only the wake-up explains a prompt delivery.
fn timing() -> RelayTiming {
    RelayTiming {
        poll: Duration::from_secs(120),
        retry_min: Duration::from_millis(250),
        retry_max: Duration::from_secs(2),
    }
}

fn smtp(port: u16) -> SmtpConfig {
    let mut c = SmtpConfig::new("127.0.0.1", port, FROM);
    c.tls = SmtpTls::None;
    c.timeout = Duration::from_secs(10);
    c
}

impl Api {
    async fn start(pg: bool, smtp: SmtpConfig) -> Api {
        let (url, guards) = if pg {
            let (u, g) = common::fresh_pg_url().await;
            (u, (Some(g), None))
        } else {
            let (p, d) = common::fresh_sqlite_path();
            (p, (None, Some(d)))
        };
        let keys = common::TempDir::new();
        let signer = Arc::new(signaling::JoinTokenSigner::generate().unwrap());
        let state = control_api::build_state(&url, keys.path(), signer, ApiConfig::default())
            .await
            .unwrap();
        let relay = MailRelay::start_with(&state, smtp, timing()).expect("relay starts");
        let app =
            control_api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Api {
            base,
            http: reqwest::Client::new(),
            state,
            relay: Some(relay),
            _guards: guards,
            _keys: keys,
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An account (made in the store, its email verified: these tests are about the
    /// reset mail, and a sign-up would queue a verification mail too); returns an
    /// access token from signing in.
    async fn user(&self, email: &str) -> String {
        self.state
            .db
            .create_user(control_api::store::NewUser {
                email: email.to_owned(),
                display_name: String::new(),
                password_hash: control_api::auth::hash_password(PASSWORD).unwrap(),
                role: control_api::store::Role::User,
                email_verified: true,
            })
            .await
            .unwrap();
        let (s, v) = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    async fn forgot(&self, email: &str) {
        let (s, v) = self
            .post(
                "/api/v1/auth/password/forgot",
                None,
                json!({"email": email}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }

    async fn outbox(&self) -> Vec<Mail> {
        self.state.db.list_mail(100).await.unwrap()
    }

    async fn outbox_for(&self, to: &str) -> Mail {
        let mails: Vec<Mail> = self
            .outbox()
            .await
            .into_iter()
            .filter(|m| m.to_addr == to)
            .collect();
        assert_eq!(mails.len(), 1, "one mail to {to} in the outbox");
        mails.into_iter().next().unwrap()
    }

    /// Waits until the outbox marks the mail to `to` sent.
    async fn wait_sent(&self, to: &str, limit: Duration) -> Mail {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.outbox_for(to).await;
            if m.sent_at.is_some() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "the mail to {to} was not marked sent within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// The mail arrived once, as sent, with a token that resets the password.
async fn delivers(pg: bool) {
    let sink = Sink::start(free_port(), &[]).await;
    let api = Api::start(pg, smtp(sink.port)).await;
    api.user("ann@example.com").await;
    api.forgot("Ann@Example.com").await;
    api.forgot("nobody@example.com").await; // no account: no mail

    // The poll is two minutes away: only the wake-up explains a prompt delivery.
    let got = sink.wait_messages(1, Duration::from_secs(10)).await;
    let m = &got[0];
    let queued = api
        .wait_sent("ann@example.com", Duration::from_secs(5))
        .await;
    assert_eq!(m["rcpt_tos"], json!(["ann@example.com"]));
    assert_eq!(m["mail_from"], "noreply@example.com");
    assert_eq!(m["from"], FROM);
    assert_eq!(m["to"], "ann@example.com");
    assert_eq!(m["subject"], "Reset your StreamCore password");
    assert_eq!(
        m["message_id"],
        format!("<{}@example.com>", queued.id),
        "Message-ID from the outbox id"
    );
    // Lines end in CRLF on the wire.
    let body = m["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        body.starts_with("Someone asked to reset the password"),
        "{body}"
    );
    assert_eq!(queued.body, "", "the outbox keeps no copy once it is sent");
    let token = reset_token(&body);
    assert!(
        body.contains(&format!("reset-password?token={token}")),
        "{body}"
    );
    assert!(queued.sent_at.unwrap() >= queued.created_at);

    // The mailed token works.
    let (s, v) = api
        .post(
            "/api/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1, "one mail, sent once");
    assert_eq!(api.outbox().await.len(), 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_reset_mail_sqlite() {
    delivers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_reset_mail_postgres() {
    delivers(true).await;
}

/// No server at first: the mail waits in the outbox; once a server answers it is
/// delivered within seconds, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_mail_server_outage() {
    let port = free_port();
    let api = Api::start(false, smtp(port)).await;
    let admin = api.user("ops@example.com").await;
    let ops = api
        .state
        .db
        .user_by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap();
    api.state.db.set_role(&ops.id, Role::Admin).await.unwrap();
    // The role is in the access token: log in again.
    let (s, v) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ops@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let admin_token = v["access_token"].as_str().unwrap().to_owned();
    assert_ne!(admin, admin_token);
    api.user("bea@example.com").await;
    api.forgot("bea@example.com").await;

    // Several attempts fail meanwhile (retries from 250 ms, doubling up to 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = api.outbox_for("bea@example.com").await;
    assert_eq!(waiting.sent_at, None, "unsent while no server answers");
    let r = api
        .http
        .get(format!("{}/api/v1/admin/mail", api.base))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed[0]["to"], "bea@example.com");
    let token = reset_token(&waiting.body);
    let shown = listed[0]["body"].as_str().unwrap();
    assert!(
        !shown.contains(&token) && shown.contains("Reset token: [redacted]"),
        "the admin API lists it with its token redacted: {shown}"
    );

    let started = Instant::now();
    let sink = Sink::start(port, &[]).await;
    let got = sink.wait_messages(1, Duration::from_secs(10)).await;
    let after = started.elapsed();
    assert!(
        after < Duration::from_secs(10),
        "delivered {after:?} after the server came up"
    );
    assert_eq!(got[0]["rcpt_tos"], json!(["bea@example.com"]));
    assert_eq!(reset_token(got[0]["body"].as_str().unwrap()), token);
    let sent = api
        .wait_sent("bea@example.com", Duration::from_secs(5))
        .await;
    assert_eq!(sent.body, "", "the body is scrubbed once the server has it");

    // Exactly once: another wake-up and a few retry periods later, still one.
    api.state.mail_queued.notify_one();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    api.stop().await;
}

/// A 451 ("try again later") keeps the mail unsent; it goes out on a later try, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_temporary_refusals() {
    let sink = Sink::start(free_port(), &["--fail-first", "2"]).await;
    let api = Api::start(false, smtp(sink.port)).await;
    api.user("cid@example.com").await;
    api.forgot("cid@example.com").await;
    let got = sink.wait_messages(1, Duration::from_secs(15)).await;
    assert_eq!(sink.count("refused"), 2, "refused twice first");
    assert_eq!(got[0]["rcpt_tos"], json!(["cid@example.com"]));
    api.wait_sent("cid@example.com", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), 1);
    api.stop().await;
}

/// A 550 for one recipient leaves that mail unsent and does not hold up the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_holds_up_nothing() {
    let sink = Sink::start(free_port(), &["--reject", "bad@example.com"]).await;
    let api = Api::start(false, smtp(sink.port)).await;
    api.user("bad@example.com").await;
    api.user("good@example.com").await;
    api.forgot("bad@example.com").await;
    api.forgot("good@example.com").await;
    let got = sink.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(got[0]["rcpt_tos"], json!(["good@example.com"]));
    api.wait_sent("good@example.com", Duration::from_secs(5))
        .await;
    // The rejected one is retried on its own schedule and stays unsent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sink.count("rejected") >= 2, "retried");
    assert_eq!(api.outbox_for("bad@example.com").await.sent_at, None);
    assert_eq!(sink.messages().len(), 1);
    api.stop().await;
}

async fn tls_with_login(mode: SmtpTls, sink_mode: &str) {
    let sink = Sink::start(
        free_port(),
        &["--tls", sink_mode, "--auth", "relay:0123456"],
    )
    .await;
    let mut c = smtp(sink.port);
    c.tls = mode;
    c.ca_file = Some(sink.ca_file.clone());
    c.username = Some("relay".into());
    c.password = Some("0123456".into());
    let api = Api::start(false, c).await;
    api.user("dee@example.com").await;
    api.forgot("dee@example.com").await;
    let got = sink.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(got[0]["tls"], true, "over TLS");
    assert_eq!(got[0]["auth_user"], "relay", "logged in");
    assert_eq!(got[0]["rcpt_tos"], json!(["dee@example.com"]));
    api.wait_sent("dee@example.com", Duration::from_secs(5))
        .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_login() {
    tls_with_login(SmtpTls::Starttls, "starttls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_login() {
    tls_with_login(SmtpTls::Tls, "tls").await;
}

/// The relay tries (the sink sees `attempt`: a TLS hello, or an EHLO), sends
/// nothing, and the mail stays queued.
async fn refuses_to_send(api: &Api, sink: &Sink, to: &str, attempt: &str) {
    api.user(to).await;
    api.forgot(to).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sink.count(attempt) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never tried the mail server (no {attempt}); sink: {}",
            sink.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sink.messages().is_empty());
    assert_eq!(api.outbox_for(to).await.sent_at, None, "still queued");
}

/// A certificate from a CA the relay does not trust: nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_sends_nothing() {
    let sink = Sink::start(free_port(), &["--tls", "tls"]).await;
    let mut c = smtp(sink.port);
    c.tls = SmtpTls::Tls;
    let api = Api::start(false, c).await;
    refuses_to_send(&api, &sink, "eve@example.com", "tls_hello").await;
    api.stop().await;
}

/// `starttls` is required: a server without STARTTLS gets nothing, not plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required() {
    let sink = Sink::start(free_port(), &[]).await;
    let mut c = smtp(sink.port);
    c.tls = SmtpTls::Starttls;
    let api = Api::start(false, c).await;
    refuses_to_send(&api, &sink, "fay@example.com", "ehlo").await;
    api.stop().await;
}
