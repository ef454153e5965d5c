//! Every endpoint of the control API over real HTTP, on SQLite and on PostgreSQL.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use control_api::store::{Db, Role, Store};
use control_api::{ApiConfig, AppState};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    state: AppState,
    _guards: (Option<common::PgTestDb>, Option<common::TempDir>),
    _keys: common::TempDir,
}

impl Api {
    /// The reset token of the newest mail in the outbox, read from the store.
    async fn newest_reset_token(&self) -> String {
        let mails = self.state.db.list_mail(1).await.unwrap();
        mails[0]
            .body
            .lines()
            .find_map(|l| l.strip_prefix("Reset token: "))
            .expect("a reset mail")
            .to_owned()
    }

    /// The token of the newest verification mail to `email`, read from the store.
    async fn verification_token(&self, email: &str) -> String {
        self.state
            .db
            .list_mail(1000)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.to_addr == email)
            .find_map(|m| {
                m.body
                    .lines()
                    .find_map(|l| l.strip_prefix("Verification token: "))
                    .map(str::to_owned)
            })
            .expect("a verification mail")
    }

    async fn start(pg: bool, config: ApiConfig) -> Api {
        let (url, guards) = if pg {
            let (u, g) = common::fresh_pg_url().await;
            (u, (Some(g), None))
        } else {
            let (p, d) = common::fresh_sqlite_path();
            (p, (None, Some(d)))
        };
        let keys = common::TempDir::new();
        let signer = Arc::new(signaling::JoinTokenSigner::generate().unwrap());
        let state = control_api::build_state(&url, keys.path(), signer, config)
            .await
            .unwrap();
        let app =
            control_api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Api {
            base,
            http: reqwest::Client::new(),
            state,
            _guards: guards,
            _keys: keys,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// The token of the newest sign-up link mailed to `email` (in the outbox).
    async fn signup_token(&self, email: &str) -> Option<String> {
        let mails = self.state.db.list_mail(200).await.unwrap();
        mails
            .iter()
            .filter(|m| m.to_addr == email)
            .find_map(|m| control_api::mail::link_token(&m.body, "/sign-up").map(str::to_owned))
    }

    /// Signs up through the mail and returns (user id, access token, refresh token).
    async fn user(&self, email: &str) -> (String, String, String) {
        let (s, v) = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "display_name": "Tester"}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let token = self
            .signup_token(&email.trim().to_lowercase())
            .await
            .expect("a sign-up link");
        let (s, v) = self
            .post(
                "/api/v1/auth/register/complete",
                None,
                json!({"token": token, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["user"]["id"].as_str().unwrap().to_owned(),
            v["session"]["access_token"].as_str().unwrap().to_owned(),
            v["session"]["refresh_token"].as_str().unwrap().to_owned(),
        )
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Api::start(false, super::config()).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Api::start(true, super::config()).await).await
            }
        }
    };
}

fn config() -> ApiConfig {
    ApiConfig {
        pairing_ttl: Duration::from_secs(2),
        reset_ttl: Duration::from_secs(2),
        // Every reuse counts, however soon (the leeway has a test of its own).
        refresh_reuse_leeway: Duration::ZERO,
        ..ApiConfig::default()
    }
}

async fn accounts(api: Api) {
    let (id, access, _) = api.user("Ann@Example.com").await;
    let (s, me) = api.get("/api/v1/me", &access).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["id"], id);
    assert_eq!(
        me["email"], "ann@example.com",
        "emails are stored lower-cased"
    );
    assert_eq!(me["role"], "user");
    assert!(me.get("password_hash").is_none());
    // A taken address is answered as a new one; invalid email; a password at sign-up;
    // a short password on the link.
    let (s, v) = api
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "ann@example.com"}),
        )
        .await;
    assert_eq!(
        (s, &v),
        (StatusCode::ACCEPTED, &Value::String(String::new()))
    );
    let (s, v) = api
        .post("/api/v1/auth/register", None, json!({"email": "nope"}))
        .await;
    assert_eq!(
        (s, code(&v), v["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("email")
        )
    );
    let (s, v) = api
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "b@example.com", "password": "another long one"}),
        )
        .await;
    assert_eq!(v["error"]["field"], "password", "{s} {v}");
    let (s, _) = api
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "b@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let b_token = api.signup_token("b@example.com").await.unwrap();
    let (s, v) = api
        .post(
            "/api/v1/auth/register/complete",
            None,
            json!({"token": b_token, "password": "short"}),
        )
        .await;
    assert_eq!(v["error"]["field"], "password", "{s} {v}");
    let (s, v) = api
        .post(
            "/api/v1/auth/register/complete",
            None,
            json!({"token": b_token}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
    // Login: wrong password and unknown email look the same.
    let (s1, v1) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "wrong password!"}),
        )
        .await;
    let (s2, v2) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ghost@example.com", "password": "wrong password!"}),
        )
        .await;
    assert_eq!(
        (s1, code(&v1)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    assert_eq!(
        (s1, v1),
        (s2, v2),
        "no difference between unknown email and wrong password"
    );
    let (s, v) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ANN@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Bad access tokens.
    let (s, v) = api.get("/api/v1/me", "garbage").await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = api.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Change password: wrong current, then right; old sessions end.
    let (_, login) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "correct horse battery"}),
        )
        .await;
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) = api
        .post(
            "/api/v1/me/password",
            Some(&access),
            json!({"current_password": "nope nope nope", "new_password": "new password 123"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.post("/api/v1/me/password", Some(&access), json!({"current_password": "correct horse battery", "new_password": "new password 123"})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "sessions ended by the password change"
    );
    let (s, _) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "new password 123"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Unknown routes and methods are JSON errors too.
    let (s, v) = api.get("/api/v1/nothing", &access).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = api
        .call(Method::PUT, "/api/v1/me", Some(&access), None)
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}
both!(accounts);

async fn refresh_rotation_and_reuse(api: Api) {
    let (_, _, r0) = api.user("rot@example.com").await;
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r0}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r1 = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r0, "rotated");
    let a1 = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/api/v1/me", &a1).await.0, StatusCode::OK);
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r2 = v["refresh_token"].as_str().unwrap().to_owned();
    // r1 presented again: reuse. The whole family is revoked, r2 included.
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r2}))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
    );
    // Another login is a separate family and unaffected; logout ends it.
    let (_, v) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "rot@example.com", "password": "correct horse battery"}),
        )
        .await;
    let other = v["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) = api
        .post("/api/v1/auth/logout", None, json!({"refresh_token": other}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": other}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
both!(refresh_rotation_and_reuse);

/// A refresh whose answer was lost (the browser navigated away, the network dropped)
/// leaves the browser with the token it already spent; presented again within the
/// leeway it still works, into the same login, which nothing revokes.
async fn refresh_reuse_leeway(api: Api) {
    let (_, _, r0) = api.user("leeway@example.com").await;
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r0}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lost = v["refresh_token"].as_str().unwrap().to_owned();
    let (s, v) = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r0}))
        .await;
    assert_eq!(s, StatusCode::OK, "within the leeway: {v}");
    let again = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(again, lost);
    for token in [lost, again] {
        let (s, v) = api
            .post(
                "/api/v1/auth/refresh",
                None,
                json!({"refresh_token": token}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "the login goes on: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_leeway_sqlite() {
    let api = Api::start(
        false,
        ApiConfig {
            refresh_reuse_leeway: Duration::from_secs(30),
            ..config()
        },
    )
    .await;
    refresh_reuse_leeway(api).await;
}

async fn password_reset(api: Api) {
    let (uid, _, _) = api.user("reset@example.com").await;
    let admin = make_admin(&api, "admin@example.com").await;
    let (s, _) = api
        .post(
            "/api/v1/auth/password/forgot",
            None,
            json!({"email": "reset@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = api
        .post(
            "/api/v1/auth/password/forgot",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "unknown emails look the same");
    let (_, mail) = api.get("/api/v1/admin/mail", &admin).await;
    let mails: Vec<&Value> = mail
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"].as_str().unwrap_or_default().contains("Reset"))
        .collect();
    assert_eq!(
        mails.len(),
        1,
        "one reset mail, to the existing account only: {mail}"
    );
    assert_eq!(mails[0]["to"], "reset@example.com");
    // The token itself, as the operator reads it on the node (`streamcore admin mail`);
    // the admin API shows the mail with it redacted.
    let token = api.newest_reset_token().await;
    let shown = mails[0]["body"].as_str().unwrap();
    assert!(
        !shown.contains(&token),
        "the admin view redacts it: {shown}"
    );
    assert!(shown.contains("Reset token: [redacted]"), "{shown}");
    let (s, _) = api
        .post(
            "/api/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": "brand new secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api
        .post(
            "/api/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": "brand new secret 2"}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_reset_token"),
        "single use"
    );
    let (s, _) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "reset@example.com", "password": "brand new secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Expiry (2 s in this configuration).
    api.post(
        "/api/v1/auth/password/forgot",
        None,
        json!({"email": "reset@example.com"}),
    )
    .await;
    let token = api.newest_reset_token().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _) = api
        .post(
            "/api/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": "too late secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "expired");
    let _ = uid;
}
both!(password_reset);

async fn make_admin(api: &Api, email: &str) -> String {
    let (id, _, _) = api.user(email).await;
    assert!(api.state.db.set_role(&id, Role::Admin).await.unwrap());
    let (_, v) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": "correct horse battery"}),
        )
        .await;
    v["access_token"].as_str().unwrap().to_owned()
}

async fn admin(api: Api) {
    let (uid, user_access, user_refresh) = api.user("plain@example.com").await;
    let (s, v) = api.get("/api/v1/admin/users", &user_access).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, v) = api.get("/api/v1/admin/nodes", &user_access).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let admin = make_admin(&api, "boss@example.com").await;
    let (s, v) = api.get("/api/v1/admin/nodes", &admin).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])), "no media node here");
    let (s, v) = api
        .post(
            "/api/v1/admin/nodes/nope/drain",
            Some(&user_access),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, v) = api
        .post("/api/v1/admin/nodes/nope/drain", Some(&admin), json!({}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    // Draining needs another node up to take the rooms; removing, a dead node.
    let now = control_api::auth::now_millis();
    let node = |id: &str, beat: i64| control_api::store::NodeRow {
        id: id.into(),
        region: String::new(),
        zone: String::new(),
        public_url: format!("http://{id}.example"),
        media_addrs: vec![],
        turn_urls: vec![],
        relay_addr: String::new(),
        capacity: 10,
        workers: 1,
        cpu_percent: 0.0,
        peers: 0,
        forwarded_bps: 0,
        state: "active".into(),
        started_at: beat,
        heartbeat_at: beat,
    };
    api.state.db.beat_node(&node("solo", now)).await.unwrap();
    let (s, v) = api
        .post("/api/v1/admin/nodes/solo/drain", Some(&admin), json!({}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "no_other_node"));
    let (s, v) = api
        .call(
            Method::DELETE,
            "/api/v1/admin/nodes/solo",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "node_alive"));
    api.state
        .db
        .beat_node(&node("gone", now - 10_000))
        .await
        .unwrap();
    api.state.db.beat_node(&node("other", now)).await.unwrap();
    let (s, v) = api
        .post("/api/v1/admin/nodes/solo/drain", Some(&admin), json!({}))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("draining")),
        "{v}"
    );
    let (s, _) = api
        .call(
            Method::DELETE,
            "/api/v1/admin/nodes/gone",
            Some(&user_access),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .call(
            Method::DELETE,
            "/api/v1/admin/nodes/gone",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = api.get("/api/v1/admin/nodes", &admin).await;
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["other", "solo"]);
    // A draining node's rooms are spread: each room's people count against the node
    // it went to before the next room is placed.
    let mut busy = node("y", now);
    busy.cpu_percent = 10.0;
    busy.peers = 2;
    let mut idle = node("z", now);
    idle.cpu_percent = 10.0;
    idle.peers = 2;
    for n in [&busy, &idle] {
        api.state.db.beat_node(n).await.unwrap();
    }
    for room in ["r1", "r2"] {
        api.state
            .db
            .place_room(room, "solo", now, now - 3000)
            .await
            .unwrap();
    }
    api.state.db.remove_node("other").await.unwrap();
    let people = std::collections::HashMap::from([("r1".to_owned(), 5)]);
    let moved = control_api::cluster::move_rooms_away(&api.state.db, "solo", "", &people)
        .await
        .unwrap();
    let to: Vec<(&str, &str)> = moved
        .iter()
        .map(|(room, p)| (room.as_str(), p.node_id.as_str()))
        .collect();
    assert_eq!(to, [("r1", "y"), ("r2", "z")]);
    let (s, v) = api.get("/api/v1/admin/users", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (s, v) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/users/{uid}/sessions"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["revoked"], 1);
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": user_refresh}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the admin ended the user's sessions"
    );
    let (s, _) = api
        .call(
            Method::DELETE,
            "/api/v1/admin/users/nope/sessions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
both!(admin);

/// Email verification: an account made by signing up proved its address (the link
/// made it). One that never did (made before sign-up went mail first) asks for a mail
/// with a single-use link; until it is opened the account has lower quotas, sends no
/// invitations and is never made admin (`streamcore admin create` on someone else's
/// unverified registration refuses).
async fn email_verification_and_what_it_opens(api: Api) {
    let (_, signed_up, _) = api.user("signed-up@example.com").await;
    let (_, me) = api.get("/api/v1/me", &signed_up).await;
    assert_eq!(me["email_verified"], true, "{me}");
    api.state
        .db
        .create_user(control_api::store::NewUser {
            email: "fresh@example.com".into(),
            display_name: String::new(),
            password_hash: control_api::auth::hash_password("correct horse battery").unwrap(),
            role: Role::User,
            email_verified: false,
        })
        .await
        .unwrap();
    let (s, login) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "fresh@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{login}");
    let a = login["access_token"].as_str().unwrap().to_owned();
    let (_, me) = api.get("/api/v1/me", &a).await;
    assert_eq!(me["email_verified"], false, "{me}");
    let (s, _) = api
        .call(Method::POST, "/api/v1/auth/email/resend", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mail = api
        .state
        .db
        .list_mail(10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.to_addr == "fresh@example.com")
        .expect("a verification mail");
    assert!(
        mail.body.contains(&format!(
            "{}/verify-email?token=",
            api.state.config.public_url.trim_end_matches('/')
        )),
        "{}",
        mail.body
    );
    // Lower quotas until verified: 10 rooms, not 100.
    for i in 0..10 {
        let (s, v) = api
            .post(
                "/api/v1/rooms",
                Some(&a),
                json!({"name": format!("fresh-{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "fresh-10"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "quota_exceeded"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("confirm your email"),
        "{v}"
    );
    // No invitations in the name of an address nobody proved.
    let (s, v) = api
        .post(
            "/api/v1/rooms/fresh-0/members",
            Some(&a),
            json!({"email": "stranger@example.com"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "email_unverified"));
    // Never made admin by the operator's command: anyone may have registered it.
    let refused = control_api::admin::create_admin(&api.state.db, "fresh@example.com", "x", "")
        .await
        .expect_err("an unverified account is not promoted");
    assert!(refused.to_string().contains("never verified"), "{refused}");
    let (_, me) = api.get("/api/v1/me", &a).await;
    assert_eq!(me["role"], "user");
    // A new mail on request (3 an hour), a bad token refused, the right one once.
    let (s, _) = api
        .call(Method::POST, "/api/v1/auth/email/resend", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = api
        .post("/api/v1/auth/email/verify", None, json!({"token": "guess"}))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_verification_token")
    );
    let token = api.verification_token("fresh@example.com").await;
    let (s, _) = api
        .post("/api/v1/auth/email/verify", None, json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api
        .post("/api/v1/auth/email/verify", None, json!({"token": token}))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_verification_token"),
        "single use"
    );
    let (_, me) = api.get("/api/v1/me", &a).await;
    assert_eq!(me["email_verified"], true);
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "fresh-10"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "the full quota once verified: {v}");
    let (s, v) = api
        .call(Method::POST, "/api/v1/auth/email/resend", Some(&a), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_verified"));
    // Verified, the owner of the address may be made admin; a new admin account is
    // verified from the start.
    let promoted = control_api::admin::create_admin(&api.state.db, "fresh@example.com", "x", "")
        .await
        .unwrap();
    assert!(promoted.contains("now an admin"), "{promoted}");
    control_api::admin::create_admin(
        &api.state.db,
        "root@example.com",
        "a long admin password",
        "Root",
    )
    .await
    .unwrap();
    let root = api
        .state
        .db
        .user_by_email("root@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(root.email_verified_at.is_some() && root.role == Role::Admin);
}
both!(email_verification_and_what_it_opens);

async fn devices_and_isolation(api: Api) {
    let (_, a, _) = api.user("a@example.com").await;
    let (_, b, _) = api.user("b@example.com").await;
    let (s, d) = api.post("/api/v1/devices", Some(&a), json!({"name": "Pixel", "kind": "phone", "capabilities": {"mic": true, "camera": true}})).await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["online"], false);
    assert_eq!(
        d["capabilities"],
        json!({"mic": true, "camera": true, "screen": false})
    );
    let (s, v) = api
        .post(
            "/api/v1/devices",
            Some(&a),
            json!({"name": "", "kind": "phone"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    let (s, v) = api
        .post(
            "/api/v1/devices",
            Some(&a),
            json!({"name": "x", "kind": "toaster"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("kind"))
    );
    // Heartbeat makes it online, with new capabilities.
    let (s, _) = api
        .post(
            &format!("/api/v1/devices/{id}/heartbeat"),
            Some(&a),
            json!({"capabilities": {"mic": true, "camera": false, "screen": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/devices/{id}/heartbeat"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "an empty heartbeat body is fine");
    let (_, d) = api.get(&format!("/api/v1/devices/{id}"), &a).await;
    assert_eq!(d["online"], true);
    assert_eq!(d["capabilities"]["screen"], true);
    assert!(d["last_seen"].as_i64().is_some());
    // Rename.
    let (s, d) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            Some(&a),
            Some(json!({"name": "Kitchen phone"})),
        )
        .await;
    assert_eq!(
        (s, d["name"].as_str()),
        (StatusCode::OK, Some("Kitchen phone"))
    );
    // B sees nothing of A's.
    let (_, list) = api.get("/api/v1/devices", &b).await;
    assert_eq!(list, json!([]));
    for (m, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "mine"}))),
        (Method::DELETE, None),
    ] {
        let (s, _) = api
            .call(m.clone(), &format!("/api/v1/devices/{id}"), Some(&b), body)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} on another user's device");
    }
    let (s, _) = api
        .post(
            &format!("/api/v1/devices/{id}/heartbeat"),
            Some(&b),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = api.get("/api/v1/devices", &a).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Remove.
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{id}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get(&format!("/api/v1/devices/{id}"), &a).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
both!(devices_and_isolation);

async fn pairing(api: Api) {
    let (_, a, _) = api.user("pair@example.com").await;
    let (s, p) = api
        .call(Method::POST, "/api/v1/pairings", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let code = p["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    assert!(
        p["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/phone?code={code}"))
    );
    assert!(p["qr_svg"].as_str().unwrap().contains("<svg"));
    let pid = p["id"].as_str().unwrap().to_owned();
    let (_, st) = api.get(&format!("/api/v1/pairings/{pid}"), &a).await;
    assert_eq!(st["status"], "pending");
    // The phone claims it, typing it in lower case with a dash.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let device = json!({"name": "Phone", "kind": "phone", "capabilities": {"mic": true}});
    let (s, claim) = api
        .post(
            "/api/v1/pairings/claim",
            None,
            json!({"code": typed, "device": device}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{claim}");
    let phone_access = claim["session"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone_refresh = claim["session"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dev_id = claim["device"]["id"].as_str().unwrap().to_owned();
    let (_, st) = api.get(&format!("/api/v1/pairings/{pid}"), &a).await;
    assert_eq!(
        (st["status"].as_str(), st["device"]["id"].as_str()),
        (Some("claimed"), Some(dev_id.as_str()))
    );
    // Single use.
    let (s, v) = api
        .post(
            "/api/v1/pairings/claim",
            None,
            json!({"code": code, "device": device}),
        )
        .await;
    assert_eq!(
        (s, code_of(&v)),
        (StatusCode::BAD_REQUEST, "invalid_pairing_code")
    );
    // The device credential: its own heartbeat yes, user-only actions no.
    let (s, _) = api
        .post(
            &format!("/api/v1/devices/{dev_id}/heartbeat"),
            Some(&phone_access),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call(Method::POST, "/api/v1/pairings", Some(&phone_access), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .post(
            "/api/v1/devices",
            Some(&phone_access),
            json!({"name": "x", "kind": "phone"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Device tokens refresh too, and die with the device.
    let (s, v) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": phone_refresh}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let phone_refresh = v["refresh_token"].as_str().unwrap().to_owned();
    api.call(
        Method::DELETE,
        &format!("/api/v1/devices/{dev_id}"),
        Some(&a),
        None,
    )
    .await;
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": phone_refresh}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "removing a device revokes its credentials"
    );
    // Expiry (2 s here).
    let (_, p) = api
        .call(Method::POST, "/api/v1/pairings", Some(&a), None)
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _) = api
        .post(
            "/api/v1/pairings/claim",
            None,
            json!({"code": p["code"], "device": device}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "expired");
    let (_, st) = api
        .get(
            &format!("/api/v1/pairings/{}", p["id"].as_str().unwrap()),
            &a,
        )
        .await;
    assert_eq!(st["status"], "expired");
    // Guessing is rate-limited per address (10 per minute).
    let mut limited = false;
    for i in 0..12 {
        let (s, v) = api
            .post(
                "/api/v1/pairings/claim",
                None,
                json!({"code": format!("AAAAAA{:02}", i), "device": device}),
            )
            .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code_of(&v), "rate_limited");
            limited = true;
        }
    }
    assert!(limited, "claims are rate-limited");
    // Another user cannot see the pairing.
    let (_, b, _) = api.user("other@example.com").await;
    let (s, _) = api.get(&format!("/api/v1/pairings/{pid}"), &b).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
both!(pairing);

/// A wrong code names no pairing, so it counts against every open one; a code that
/// lived through too many wrong tries is void, and the codes that come after are not.
async fn pairing_codes_void_after_wrong_guesses(api: Api) {
    let (_, a, _) = api.user("guessed@example.com").await;
    let device = json!({"name": "Phone", "kind": "phone"});
    let start = || async {
        let (s, p) = api
            .call(Method::POST, "/api/v1/pairings", Some(&a), None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        (
            p["id"].as_str().unwrap().to_owned(),
            p["code"].as_str().unwrap().to_owned(),
        )
    };
    let claim = |code: String| {
        let device = device.clone();
        let api = &api;
        async move {
            let (s, v) = api
                .post(
                    "/api/v1/pairings/claim",
                    None,
                    json!({"code": code, "device": device}),
                )
                .await;
            (s, code_of(&v).to_owned())
        }
    };
    let (open_id, open_code) = start().await;
    let wrong = |i: usize| {
        // Same alphabet and length as a real code, but not this one.
        let c = if open_code.starts_with('A') { 'C' } else { 'A' };
        format!("{c}{c}{c}{c}{c}{c}{c}{}", ["3", "4", "6"][i % 3])
    };
    // Two wrong tries leave the open code usable.
    for i in 0..2 {
        assert_eq!(
            claim(wrong(i)).await,
            (StatusCode::BAD_REQUEST, "invalid_pairing_code".into())
        );
    }
    let (_, st) = api.get(&format!("/api/v1/pairings/{open_id}"), &a).await;
    assert_eq!(st["status"], "pending", "under the budget (3 here)");
    // The third wrong try uses up the budget: the right code no longer pairs.
    assert_eq!(
        claim(wrong(2)).await,
        (StatusCode::BAD_REQUEST, "invalid_pairing_code".into())
    );
    assert_eq!(
        claim(open_code.clone()).await,
        (StatusCode::BAD_REQUEST, "pairing_code_void".into()),
        "a code that lived through 3 wrong tries is void"
    );
    let (_, st) = api.get(&format!("/api/v1/pairings/{open_id}"), &a).await;
    assert_eq!(st["status"], "void", "the devices page can tell the owner");
    // A new code starts with a clean count and pairs.
    let (fresh_id, fresh_code) = start().await;
    assert_eq!(claim(fresh_code).await.0, StatusCode::CREATED);
    let (_, st) = api.get(&format!("/api/v1/pairings/{fresh_id}"), &a).await;
    assert_eq!(st["status"], "claimed");
}

fn guess_budget_config() -> ApiConfig {
    ApiConfig {
        pairing_ttl: Duration::from_secs(600),
        pairing_wrong_guesses_per_code: 3,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_codes_void_after_wrong_guesses_sqlite() {
    pairing_codes_void_after_wrong_guesses(Api::start(false, guess_budget_config()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_codes_void_after_wrong_guesses_postgres() {
    pairing_codes_void_after_wrong_guesses(Api::start(true, guess_budget_config()).await).await;
}

fn code_of(v: &Value) -> &str {
    code(v)
}

async fn login_rate_limit(api: Api) {
    api.user("limited@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (s, _) = api
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": "limited@example.com", "password": "wrong wrong wrong"}),
            )
            .await;
        statuses.push(s.as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert_eq!(&statuses[5..], &[429; 2], "{statuses:?}");
    // Even the right password is refused while limited.
    let (s, v) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "limited@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // Unknown accounts are limited the same way.
    for _ in 0..5 {
        api.post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ghost2@example.com", "password": "x"}),
        )
        .await;
    }
    let (s, _) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ghost2@example.com", "password": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}
both!(login_rate_limit);

async fn rooms_and_join_tokens(api: Api) {
    let (owner_id, a, _) = api.user("host@example.com").await;
    let (guest_id, b, _) = api.user("guest@example.com").await;
    let (s, r) = api
        .post(
            "/api/v1/rooms",
            Some(&a),
            json!({"name": "party", "max_participants": 10}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(
        (r["max_participants"].as_i64(), r["publish_policy"].as_str()),
        (Some(10), Some("owner"))
    );
    let party_id = r["id"].as_str().unwrap().to_owned();
    let party = format!("/api/v1/rooms/{party_id}");
    let party_token = format!("{party}/token");
    // Names are each owner's own: another user's "party" tells nobody that this one
    // exists, and is another room.
    let (s, v) = api
        .post("/api/v1/rooms", Some(&b), json!({"name": "party"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_ne!(v["id"], json!(party_id));
    let (s, _) = api
        .call(Method::DELETE, "/api/v1/rooms/party", Some(&b), None)
        .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "the guest deleted their own party"
    );
    let (s, _) = api.get(&party, &a).await;
    assert_eq!(s, StatusCode::OK, "the host's party is still there");
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "party"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "room_exists"));
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": party_id}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name")),
        "a name may not pass for a room id"
    );
    // A room named so before that was refused stays its owner's by name.
    let legacy = uuid::Uuid::new_v4().to_string();
    api.state
        .db
        .create_room(
            &owner_id,
            &legacy,
            control_api::store::RoomSettings {
                max_participants: 5,
                auto_record: false,
                publish_policy: "owner".into(),
                access: "private".into(),
                share_key: "k".into(),
            },
            0,
        )
        .await
        .unwrap();
    let (s, v) = api.get(&format!("/api/v1/rooms/{legacy}"), &a).await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::OK, Some(legacy.as_str()))
    );
    let (s, _) = api.get(&format!("/api/v1/rooms/{legacy}"), &b).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "and nobody else's");
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/rooms/{legacy}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "no/slash"}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    let (s, v) = api
        .post(
            "/api/v1/rooms",
            Some(&a),
            json!({"name": "big", "max_participants": 0}),
        )
        .await;
    assert_eq!(v["error"]["field"], "max_participants", "{s}");
    let (_, list) = api.get("/api/v1/rooms", &a).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = api.get("/api/v1/rooms", &b).await;
    assert_eq!(list, json!([]), "rooms are listed for their owner only");
    let (s, _) = api.get(&party, &b).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, r) = api
        .call(
            Method::PATCH,
            "/api/v1/rooms/party",
            Some(&a),
            Some(json!({"auto_record": true, "publish_policy": "anyone"})),
        )
        .await;
    assert_eq!(
        (
            s,
            r["auto_record"].as_bool(),
            r["max_participants"].as_i64()
        ),
        (StatusCode::OK, Some(true), Some(10))
    );
    let (s, _) = api
        .call(
            Method::PATCH,
            &party,
            Some(&b),
            Some(json!({"auto_record": false})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api
        .call(
            Method::PATCH,
            "/api/v1/rooms/party",
            Some(&a),
            Some(json!({"publish_policy": "everyone"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("publish_policy"))
    );

    // Join tokens verify with the published JWKS key (what an SFU node does).
    let (s, t) = api
        .post(
            "/api/v1/rooms/party/token",
            Some(&a),
            json!({"publish": true, "subscribe": true, "record": true, "ttl_secs": 600}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (_, jwks) = api
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    use base64::Engine;
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .unwrap();
    let verifier = signaling::JoinTokenVerifier::from_public_key(&public);
    let grant = verifier.verify(t["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (grant.identity.as_str(), grant.room.as_str()),
        (owner_id.as_str(), party_id.as_str()),
        "the SFU knows the room by its id"
    );
    assert_eq!(
        (t["room"].as_str(), t["room_name"].as_str()),
        (Some(party_id.as_str()), Some("party"))
    );
    assert!(
        t["whip_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/whip/{party_id}")),
        "{t}"
    );
    let row = api.state.db.room_by_id(&party_id).await.unwrap().unwrap();
    assert_eq!(
        grant.binding,
        Some(signaling::token::RoomBinding {
            room_id: row.id.clone(),
            epoch: row.epoch
        }),
        "bound to the room as it is"
    );
    assert!(grant.grants.publish && grant.grants.subscribe && grant.grants.record);
    // A join token with `record` reads the room's recordings, by id or by name, until
    // the room is reset.
    let recorder = t["token"].as_str().unwrap().to_owned();
    for path in [
        format!("{party}/recordings"),
        "/api/v1/rooms/party/recordings".into(),
    ] {
        let (s, v) = api.get(&path, &recorder).await;
        assert_eq!((s, v), (StatusCode::OK, json!([])), "{path}");
    }
    let (s, _) = api
        .call(Method::POST, &format!("{party}/reset"), Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.get(&format!("{party}/recordings"), &recorder).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a revoked token reads nothing: {v}"
    );
    // The room is private (the default): a stranger is answered as for a room that
    // does not exist.
    let (s, v) = api
        .post(&party_token, Some(&b), json!({"subscribe": true}))
        .await;
    let (_, v_none) = api
        .post(
            "/api/v1/rooms/nope/token",
            Some(&b),
            json!({"subscribe": true}),
        )
        .await;
    assert_eq!((s, &v), (StatusCode::NOT_FOUND, &v_none));
    // Invited and accepted, he is a member.
    api.call(
        Method::PATCH,
        "/api/v1/rooms/party",
        Some(&a),
        Some(json!({"access": "members"})),
    )
    .await;
    let (s, _) = api
        .post(
            "/api/v1/rooms/party/members",
            Some(&a),
            json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, inv) = api.get("/api/v1/invitations", &b).await;
    let (s, _) = api
        .call(
            Method::POST,
            &format!(
                "/api/v1/invitations/{}/accept",
                inv[0]["id"].as_str().unwrap()
            ),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A guest is who they are: their user id, shown with their display name. They
    // may not choose an identity (they could pose as someone, or push someone out of
    // the room, see tests/rooms.rs) nor a name.
    for chosen in [
        json!({"subscribe": true, "identity": "guest-1"}),
        json!({"subscribe": true, "identity": owner_id}),
        json!({"subscribe": true, "name": "Host"}),
    ] {
        let (s, v) = api.post(&party_token, Some(&b), chosen.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "identity_not_allowed"),
            "{chosen}"
        );
    }
    // A guest: subscribe yes, publish yes (policy anyone), record no.
    let (s, t) = api
        .post(&party_token, Some(&b), json!({"subscribe": true}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let g = verifier.verify(t["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (g.identity.as_str(), g.name.as_str()),
        (guest_id.as_str(), "Tester")
    );
    assert_eq!(
        (&t["identity"], &t["name"]),
        (&json!(guest_id), &json!("Tester"))
    );
    // Their own identity, said out loud, is fine.
    let (s, _) = api
        .post(
            &party_token,
            Some(&b),
            json!({"subscribe": true, "identity": guest_id, "name": "Tester"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // The owner may choose both (a test client, a second camera).
    let (s, t) = api
        .post(
            "/api/v1/rooms/party/token",
            Some(&a),
            json!({"subscribe": true, "identity": "cam-2", "name": "Stage camera"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let g = verifier.verify(t["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (g.identity.as_str(), g.name.as_str()),
        ("cam-2", "Stage camera")
    );
    let (s, _) = api
        .post(&party_token, Some(&b), json!({"publish": true}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(&party_token, Some(&b), json!({"record": true}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    api.call(
        Method::PATCH,
        "/api/v1/rooms/party",
        Some(&a),
        Some(json!({"publish_policy": "owner"})),
    )
    .await;
    let (s, _) = api
        .post(&party_token, Some(&b), json!({"publish": true}))
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "only the owner publishes under policy owner"
    );
    let (s, v) = api
        .post("/api/v1/rooms/party/token", Some(&a), json!({}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/rooms/party/token",
            Some(&a),
            json!({"subscribe": true, "ttl_secs": 999999999}),
        )
        .await;
    assert_eq!(v["error"]["field"], "ttl_secs", "{s}");
    let (s, _) = api
        .post(
            "/api/v1/rooms/nope/token",
            Some(&a),
            json!({"subscribe": true}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Delete.
    let (s, _) = api.call(Method::DELETE, &party, Some(&b), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .call(Method::DELETE, "/api/v1/rooms/party", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get("/api/v1/rooms/party", &a).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.get(&party, &a).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
both!(rooms_and_join_tokens);

/// `access`: private rooms are the owner's (and the owner's devices'), `members` rooms
/// let in who accepted an invitation, `link` rooms whoever holds the current link; a
/// room the caller may not join looks like no room at all.
async fn room_access_policies(api: Api) {
    let (_, host, _) = api.user("host@example.com").await;
    let (_, ann, _) = api.user("ann@example.com").await;
    let (_, bob, _) = api.user("bob@example.com").await;
    let (s, r) = api
        .post("/api/v1/rooms", Some(&host), json!({"name": "den"}))
        .await;
    assert_eq!(
        (s, r["access"].as_str(), r.get("share_url")),
        (StatusCode::CREATED, Some("private"), None)
    );
    // Guests know the room by its id (its name is the host's own).
    let den_id = r["id"].as_str().unwrap().to_owned();
    let den_id = den_id.as_str();
    let token = |who: &str, key: Option<&str>| {
        let mut body = json!({"subscribe": true});
        if let Some(k) = key {
            body["key"] = json!(k);
        }
        let who = who.to_owned();
        let api = &api;
        async move {
            api.post(&format!("/api/v1/rooms/{den_id}/token"), Some(&who), body)
                .await
        }
    };
    let (_, nothing) = api
        .post(
            "/api/v1/rooms/no-such-room/token",
            Some(&ann),
            json!({"subscribe": true}),
        )
        .await;
    let refused = |(s, v): (StatusCode, Value)| {
        assert_eq!(
            (s, &v),
            (StatusCode::NOT_FOUND, &nothing),
            "a room one may not join answers as no room does"
        )
    };
    refused(token(&ann, None).await);
    // The owner's paired phone joins the private room.
    let (_, p) = api
        .call(Method::POST, "/api/v1/pairings", Some(&host), None)
        .await;
    let (_, claim) = api
        .post(
            "/api/v1/pairings/claim",
            None,
            json!({"code": p["code"], "device": {"name": "Phone", "kind": "phone"}}),
        )
        .await;
    let phone = claim["session"]["access_token"].as_str().unwrap();
    assert_eq!(token(phone, None).await.0, StatusCode::OK);

    // members: an invitation alone does not open the room, accepting does; only the
    // invited address can answer; removing closes it again.
    let (s, v) = api
        .call(
            Method::PATCH,
            "/api/v1/rooms/den",
            Some(&host),
            Some(json!({"access": "everyone"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("access"))
    );
    api.call(
        Method::PATCH,
        "/api/v1/rooms/den",
        Some(&host),
        Some(json!({"access": "members"})),
    )
    .await;
    let (s, m) = api
        .post(
            "/api/v1/rooms/den/members",
            Some(&host),
            json!({"email": " Ann@Example.com "}),
        )
        .await;
    assert_eq!(
        (s, m["email"].as_str(), m["status"].as_str()),
        (
            StatusCode::CREATED,
            Some("ann@example.com"),
            Some("invited")
        )
    );
    let mail = &api.state.db.list_mail(1).await.unwrap()[0];
    assert_eq!(mail.to_addr, "ann@example.com");
    assert!(mail.subject.contains("den"), "{}", mail.subject);
    let (s, v) = api
        .post(
            &format!("/api/v1/rooms/{den_id}/members"),
            Some(&ann),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "only the owner invites: {v}");
    let (s, v) = api
        .post(
            "/api/v1/rooms/den/members",
            Some(&host),
            json!({"email": "not-an-email"}),
        )
        .await;
    assert_eq!(v["error"]["field"], "email", "{s}");
    refused(token(&ann, None).await);
    let (_, inv) = api.get("/api/v1/invitations", &ann).await;
    assert_eq!(
        (
            inv[0]["room_id"].as_str(),
            inv[0]["room_name"].as_str(),
            inv[0]["owner_name"].as_str(),
            inv[0]["status"].as_str()
        ),
        (Some(den_id), Some("den"), Some("Tester"), Some("invited"))
    );
    let id = inv[0]["id"].as_str().unwrap().to_owned();
    let (_, none) = api.get("/api/v1/invitations", &bob).await;
    assert_eq!(none, json!([]));
    let (s, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/invitations/{id}/accept"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "Bob cannot take Ann's invitation");
    refused(token(&bob, None).await);
    let (s, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/invitations/{id}/accept"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    let (s, t) = token(&ann, None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, _) = api
        .post(
            &format!("/api/v1/rooms/{den_id}/token"),
            Some(&ann),
            json!({"record": true}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a member does not record");
    let (_, members) = api.get("/api/v1/rooms/den/members", &host).await;
    assert_eq!(members[0]["status"], "accepted");
    let (s, _) = api
        .get(&format!("/api/v1/rooms/{den_id}/members"), &ann)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Private again: membership no longer opens it.
    api.call(
        Method::PATCH,
        "/api/v1/rooms/den",
        Some(&host),
        Some(json!({"access": "private"})),
    )
    .await;
    refused(token(&ann, None).await);
    api.call(
        Method::PATCH,
        "/api/v1/rooms/den",
        Some(&host),
        Some(json!({"access": "members"})),
    )
    .await;
    assert_eq!(token(&ann, None).await.0, StatusCode::OK);
    let epoch = |api: &Api| {
        let db = api.state.db.clone();
        let den_id = den_id.to_owned();
        async move { db.room_by_id(&den_id).await.unwrap().unwrap().epoch }
    };
    let before = epoch(&api).await;
    let (s, _) = api
        .call(
            Method::DELETE,
            "/api/v1/rooms/den/members/ann@example.com",
            Some(&host),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        epoch(&api).await,
        before + 1,
        "removing a member revokes the room's tokens"
    );
    refused(token(&ann, None).await);
    // Declining: the invitation stays listed as declined, the room stays closed.
    api.post(
        "/api/v1/rooms/den/members",
        Some(&host),
        json!({"email": "bob@example.com"}),
    )
    .await;
    let (_, inv) = api.get("/api/v1/invitations", &bob).await;
    let (s, v) = api
        .call(
            Method::POST,
            &format!(
                "/api/v1/invitations/{}/decline",
                inv[0]["id"].as_str().unwrap()
            ),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("declined"))
    );
    refused(token(&bob, None).await);

    // link: whoever holds the current link's key; a new link voids the old one, and
    // so does closing the room and opening it again.
    let (_, r) = api
        .call(
            Method::PATCH,
            "/api/v1/rooms/den",
            Some(&host),
            Some(json!({"access": "link"})),
        )
        .await;
    let url = r["share_url"].as_str().expect("a share link").to_owned();
    let key = url.split("key=").nth(1).unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{}/room?id={den_id}&key=",
            api.state.config.public_url.trim_end_matches('/')
        )),
        "{url}"
    );
    assert!(key.len() >= 43, "256 bits: {key}");
    refused(token(&bob, None).await);
    refused(token(&bob, Some("guess")).await);
    refused(token(&bob, Some(&format!("{}x", &key[..key.len() - 1]))).await);
    let (s, t) = token(&bob, Some(&key)).await;
    assert_eq!((s, t["subscribe"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, r2) = api
        .call(
            Method::POST,
            "/api/v1/rooms/den/share-link",
            Some(&host),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let key2 = r2["share_url"]
        .as_str()
        .unwrap()
        .split("key=")
        .nth(1)
        .unwrap()
        .to_owned();
    assert_ne!(key2, key);
    refused(token(&bob, Some(&key)).await);
    assert_eq!(token(&bob, Some(&key2)).await.0, StatusCode::OK);
    let (s, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{den_id}/share-link"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for access in ["private", "link"] {
        api.call(
            Method::PATCH,
            "/api/v1/rooms/den",
            Some(&host),
            Some(json!({"access": access})),
        )
        .await;
    }
    refused(token(&bob, Some(&key2)).await);
    let (s, v) = api
        .call(
            Method::PATCH,
            "/api/v1/rooms/den",
            Some(&host),
            Some(json!({"access": "private"})),
        )
        .await;
    assert_eq!((s, v.get("share_url")), (StatusCode::OK, None));
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/rooms/den/share-link",
            Some(&host),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "not_shared_by_link"));
}
both!(room_access_policies);

async fn library(api: Api) {
    let (_, a, _) = api.user("music@example.com").await;
    let (_, b, _) = api.user("other@example.com").await;
    let (_, p) = api
        .call(Method::POST, "/api/v1/pairings", Some(&a), None)
        .await;
    let (_, claim) = api
        .post(
            "/api/v1/pairings/claim",
            None,
            json!({"code": p["code"], "device": {"name": "Phone", "kind": "phone"}}),
        )
        .await;
    let phone = claim["session"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dev = claim["device"]["id"].as_str().unwrap().to_owned();
    let track = |i: u32, title: &str, artist: &str| json!({"client_id": format!("c{i}"), "title": title, "artist": artist, "album": "LP", "duration_ms": 180000 + i, "codec": "mp3", "size_bytes": 4000000});
    let batch = json!({"upsert": [track(1, "Blue in Green", "Miles Davis"), track(2, "So What", "Miles Davis"), track(3, "100% Pure", "Various")]});
    let (s, c) = api
        .post("/api/v1/library/sync", Some(&phone), batch.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        c,
        json!({"inserted": 3, "updated": 0, "unchanged": 0, "deleted": 0})
    );
    let (_, c) = api.post("/api/v1/library/sync", Some(&phone), batch).await;
    assert_eq!(
        c,
        json!({"inserted": 0, "updated": 0, "unchanged": 3, "deleted": 0}),
        "idempotent"
    );
    let (_, c) = api
        .post(
            "/api/v1/library/sync",
            Some(&phone),
            json!({"upsert": [track(2, "So What (live)", "Miles Davis")], "delete": ["c1"]}),
        )
        .await;
    assert_eq!(
        c,
        json!({"inserted": 0, "updated": 1, "unchanged": 0, "deleted": 1})
    );
    // The user's browser lists and searches.
    let (s, all) = api.get("/api/v1/library/tracks", &a).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["device_id"], dev);
    let (_, hits) = api.get("/api/v1/library/tracks?q=MILES", &a).await;
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_eq!(hits[0]["title"], "So What (live)");
    let (_, hits) = api.get("/api/v1/library/tracks?q=100%25", &a).await;
    assert_eq!(hits.as_array().unwrap().len(), 1, "% is literal: {hits}");
    let (_, page) = api.get("/api/v1/library/tracks?limit=1&offset=1", &a).await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    let (s, v) = api.get("/api/v1/library/tracks?limit=0", &a).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
    let (s, v) = api.get("/api/v1/library/tracks?limit=abc", &a).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query")
    );
    // Isolation.
    let (_, none) = api.get("/api/v1/library/tracks", &b).await;
    assert_eq!(none, json!([]));
    let (s, _) = api
        .post(
            "/api/v1/library/sync",
            Some(&b),
            json!({"device_id": dev, "upsert": [track(9, "x", "y")]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another user's device");
    // Validation.
    let (s, v) = api
        .post(
            "/api/v1/library/sync",
            Some(&phone),
            json!({"upsert": [{"client_id": "", "title": "t", "duration_ms": 1}]}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("upsert"))
    );
    let (s, v) = api
        .post("/api/v1/library/sync", Some(&a), json!({"upsert": []}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("device_id"))
    );
    // Removing the device removes its library.
    api.call(
        Method::DELETE,
        &format!("/api/v1/devices/{dev}"),
        Some(&a),
        None,
    )
    .await;
    let (_, none) = api.get("/api/v1/library/tracks", &a).await;
    assert_eq!(none, json!([]));
}
both!(library);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let api = Api::start(false, config()).await;
    let (s, doc) = api.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/auth/register",
        "/api/v1/auth/refresh",
        "/api/v1/devices/{id}/heartbeat",
        "/api/v1/pairings/claim",
        "/api/v1/rooms/{name}/token",
        "/api/v1/library/sync",
        "/api/v1/library/tracks",
        "/api/v1/admin/mail",
        "/api/v1/admin/nodes",
        "/api/v1/admin/nodes/{id}/drain",
        "/api/v1/admin/nodes/{id}",
        "/api/v1/devices/{id}/commands",
        "/api/v1/devices/{id}/now-playing",
        "/api/v1/devices/socket",
        "/api/v1/events/socket",
        "/api/v1/rooms/{name}/recordings",
        "/api/v1/rooms/{name}/recordings/{id}",
        "/api/v1/rooms/{name}/recordings/{id}/stop",
        "/api/v1/rooms/{name}/recordings/{id}/mixdown",
        "/api/v1/rooms/{name}/recordings/{id}/mixdown/{job}/files/{file}",
        "/api/v1/uploads",
        "/api/v1/uploads/{id}",
        "/api/v1/uploads/{id}/files/{name}",
        "/api/v1/devices/{id}/stream",
        "/api/v1/rooms/{name}/recordings/{id}/files/{file}",
        "/api/v1/rooms/{name}/share-link",
        "/api/v1/rooms/{name}/members",
        "/api/v1/rooms/{name}/members/{email}",
        "/api/v1/invitations",
        "/api/v1/invitations/{id}/accept",
        "/api/v1/invitations/{id}/decline",
        "/api/v1/auth/email/verify",
        "/api/v1/auth/email/resend",
        "/api/v1/rooms/{name}/reset",
        "/api/v1/auth/register/complete",
        "/api/v1/me/plays",
        "/api/v1/me/stats",
        "/api/v1/podcasts/categories",
        "/api/v1/podcasts/sources",
        "/api/v1/podcasts/shows",
        "/api/v1/podcasts/shows/{id}",
        "/api/v1/podcasts/shows/{id}/artwork",
        "/api/v1/podcasts/shows/{id}/episodes",
        "/api/v1/podcasts/shows/{id}/episodes/{episode}",
        "/api/v1/podcasts/shows/{id}/episodes/{episode}/publish",
        "/api/v1/podcasts/shows/{id}/episodes/{episode}/unpublish",
        "/api/v1/rooms/{name}/recordings/{id}/markers",
        "/api/v1/rooms/{name}/retention",
        "/feeds/{file}",
        "/feeds/{show}/artwork",
        "/feeds/{show}/{episode}/audio.opus",
        "/feeds/{show}/{episode}/chapters.json",
        "/api/v1/auth/oidc/providers",
        "/auth/oidc/{provider}/start",
        "/auth/oidc/callback",
        "/api/v1/auth/oidc/link",
        "/api/v1/auth/oidc/link/{token}",
        "/api/v1/me/providers",
        "/api/v1/me/providers/{provider}",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert_eq!(paths.len(), 74);
    let page = api
        .http
        .get(format!("{}/api/docs/", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("swagger"));
    let _ = Db::backend;
}

/// Per-user quotas: rooms, devices (made by hand or by pairing), and open pairing codes
/// stop at the configured counts with `403 quota_exceeded` and a message a person can
/// act on; giving one back makes room for the next; another user is not affected.
async fn quotas_stop_at_the_configured_counts(api: Api) {
    let (_, a, _) = api.user("quota@example.com").await;
    let refused = |s: StatusCode, v: &Value| {
        assert_eq!(
            (s, code(v)),
            (StatusCode::FORBIDDEN, "quota_exceeded"),
            "{v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the most this server allows"),
            "{v}"
        );
    };
    // Rooms: 2.
    for name in ["q-one", "q-two"] {
        let (s, v) = api
            .post("/api/v1/rooms", Some(&a), json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "q-three"}))
        .await;
    refused(s, &v);
    let (s, _) = api
        .call(Method::DELETE, "/api/v1/rooms/q-one", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api
        .post("/api/v1/rooms", Some(&a), json!({"name": "q-three"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "a room given back makes room: {v}");
    // Open pairing codes: 2.
    let mut codes = Vec::new();
    for _ in 0..2 {
        let (s, p) = api
            .call(Method::POST, "/api/v1/pairings", Some(&a), None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        codes.push(p["code"].as_str().unwrap().to_owned());
    }
    let (s, v) = api
        .call(Method::POST, "/api/v1/pairings", Some(&a), None)
        .await;
    refused(s, &v);
    // Devices: 2 — one by hand, one by pairing; the second code cannot pair a third.
    let (s, v) = api
        .post(
            "/api/v1/devices",
            Some(&a),
            json!({"name": "Laptop", "kind": "browser"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let claim = |code: String| {
        let api = &api;
        async move {
            api.post(
                "/api/v1/pairings/claim",
                None,
                json!({"code": code, "device": {"name": "Phone", "kind": "phone"}}),
            )
            .await
        }
    };
    let (s, v) = claim(codes[0].clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = claim(codes[1].clone()).await;
    refused(s, &v);
    let (s, v) = api
        .post(
            "/api/v1/devices",
            Some(&a),
            json!({"name": "Tablet", "kind": "browser"}),
        )
        .await;
    refused(s, &v);
    // A claimed code no longer counts as open: another can be made.
    let (s, v) = api
        .call(Method::POST, "/api/v1/pairings", Some(&a), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Another user starts from nothing.
    let (_, b, _) = api.user("other-quota@example.com").await;
    let (s, v) = api
        .post("/api/v1/rooms", Some(&b), json!({"name": "b-room"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

fn small_quotas() -> ApiConfig {
    ApiConfig {
        pairing_ttl: Duration::from_secs(600),
        quotas: control_api::state::Quotas {
            rooms: 2,
            devices: 2,
            open_pairings: 2,
            ..Default::default()
        },
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_stop_at_the_configured_counts_sqlite() {
    quotas_stop_at_the_configured_counts(Api::start(false, small_quotas()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_stop_at_the_configured_counts_postgres() {
    quotas_stop_at_the_configured_counts(Api::start(true, small_quotas()).await).await;
}
