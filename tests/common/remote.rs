//! Remote-control clients for end-to-end tests: a user, phones paired through the
//! real pairing endpoints, and WebSocket clients for the device and browser sockets.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A user account with an access token.
pub struct User {
    pub id: String,
    pub access: String,
}

/// GET with a bearer token: status and JSON body (`null` when there is none).
pub async fn get(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

/// PATCH with a bearer token and a JSON body: status and JSON body.
pub async fn patch(http: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let r = http
        .patch(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Signs up as a person does: asks for an account, takes the link from the mail
/// waiting in the node's outbox (the test node has no SMTP), and chooses the password
/// there.
pub async fn register(srv: &super::TestServer, email: &str) -> User {
    sign_up(srv, email, json!({"email": email})).await
}

/// [`register`] with the sign-up request's body (a display name, say).
pub async fn sign_up(srv: &super::TestServer, email: &str, body: Value) -> User {
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/auth/register", srv.base),
        None,
        body,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let token = srv
        .mailed_token(email, "/sign-up")
        .await
        .expect("a sign-up link in the outbox");
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/auth/register/complete", srv.base),
        None,
        json!({"token": token, "password": "a long enough password"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    User {
        id: v["user"]["id"].as_str().unwrap().to_owned(),
        access: v["session"]["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Pairs a phone with the user: returns (device id, device access token).
pub async fn pair_phone(
    http: &reqwest::Client,
    base: &str,
    user: &User,
    name: &str,
) -> (String, String) {
    let (s, p) = post(
        http,
        format!("{base}/api/v1/pairings"),
        Some(&user.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let (s, v) = post(
        http,
        format!("{base}/api/v1/pairings/claim"),
        None,
        json!({"code": p["code"], "device": {"name": name, "kind": "phone"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    (
        v["device"]["id"].as_str().unwrap().to_owned(),
        v["session"]["access_token"].as_str().unwrap().to_owned(),
    )
}

/// Opens a socket with the token in the Authorization header.
pub async fn socket(base: &str, path: &str, token: &str) -> Ws {
    let url = format!("{}{}", base.replacen("http://", "ws://", 1), path);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("socket opens");
    ws
}

/// Opens a socket and authenticates with a first `auth` message, as browsers do.
pub async fn socket_first_message(base: &str, path: &str, token: &str) -> Ws {
    let url = format!("{}{}", base.replacen("http://", "ws://", 1), path);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("socket opens");
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub async fn send_raw(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// The next JSON message, or `None` when the socket closed or `within` passed.
pub async fn recv(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match m.ok()? {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Reads until a message satisfies `want`; panics with what it saw after `within`.
pub async fn wait_for(ws: &mut Ws, within: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < within {
        match recv(ws, within.saturating_sub(start.elapsed())).await {
            Some(v) if want(&v) => return v,
            Some(v) => seen.push(v),
            None => break,
        }
    }
    panic!("no matching message within {within:?}; saw {seen:?}");
}

/// `POST /api/v1/devices/{device}/commands` as `token`.
pub async fn command(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    device: &str,
    body: Value,
) -> (u16, Value) {
    post(
        http,
        format!("{base}/api/v1/devices/{device}/commands"),
        Some(token),
        body,
    )
    .await
}

/// `POST /api/v1/devices/{device}/heartbeat` with a device credential; the status.
pub async fn heartbeat(
    http: &reqwest::Client,
    base: &str,
    device_token: &str,
    device: &str,
) -> u16 {
    post(
        http,
        format!("{base}/api/v1/devices/{device}/heartbeat"),
        Some(device_token),
        json!({}),
    )
    .await
    .0
}
