//! A room-protocol client for end-to-end tests: a WebSocket to `/rtc` and one str0m
//! peer connection on its own loopback socket, renegotiated through the socket.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use media_core::str0m::change::{SdpAnswer, SdpApi, SdpPendingOffer};
use media_core::str0m::media::{Direction, MediaKind, Mid};
use media_core::str0m::{Candidate, Rtc};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::remote::Ws;
use super::{Peer, TestServer};

pub struct RoomClient {
    pub ws: Option<Ws>,
    pub peer: Peer,
    /// Every server message not yet taken by `request` or `wait_for`.
    pub inbox: Vec<Value>,
    pub joined: Value,
    pub sid: String,
    pub resume_token: String,
    next_id: u64,
    url: String,
}

pub async fn open_socket(srv: &TestServer) -> Ws {
    let url = format!("{}/rtc", srv.base.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    ws
}

pub async fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message within `d`, parsed; `None` on timeout or close.
pub async fn recv_json(ws: &mut Ws, d: Duration) -> Option<Value> {
    let end = tokio::time::Instant::now() + d;
    loop {
        let m = tokio::time::timeout_at(end, ws.next()).await.ok()??;
        match m.ok()? {
            Message::Text(t) => return serde_json::from_str(&t).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

fn new_peer() -> Peer {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    Peer::from_parts(rtc, sock, Vec::new())
}

impl RoomClient {
    /// Opens a socket and joins with `token`; panics unless `joined` comes back.
    pub async fn join(srv: &TestServer, token: &str) -> RoomClient {
        Self::try_join(srv, token).await.expect("joined")
    }

    /// Joins, or returns the error message the server sent.
    pub async fn try_join(srv: &TestServer, token: &str) -> Result<RoomClient, Value> {
        let mut ws = open_socket(srv).await;
        send_json(
            &mut ws,
            &json!({"type": "join", "id": 0, "token": token, "version": 1}),
        )
        .await;
        let reply = recv_json(&mut ws, Duration::from_secs(10))
            .await
            .expect("a reply to join");
        if reply["type"] != "joined" {
            return Err(reply);
        }
        Ok(RoomClient {
            ws: Some(ws),
            peer: new_peer(),
            sid: reply["participant"]["sid"].as_str().unwrap().to_owned(),
            resume_token: reply["resume_token"].as_str().unwrap().to_owned(),
            joined: reply,
            inbox: Vec::new(),
            next_id: 1,
            url: srv.base.clone(),
        })
    }

    fn ws(&mut self) -> &mut Ws {
        self.ws.as_mut().expect("socket open")
    }

    /// Reads what the socket has for at most `d`, stepping the peer connection.
    pub async fn poll(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.peer.step();
            if let Some(ws) = self.ws.as_mut()
                && let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_millis(2), ws.next()).await
                && let Ok(v) = serde_json::from_str::<Value>(&t)
            {
                self.inbox.push(v);
                continue;
            }
            if Instant::now() >= end {
                return;
            }
            if self.ws.is_none() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Sends `msg` with a fresh id and waits (≤ 10 s) for the reply or error with it.
    pub async fn request(&mut self, mut msg: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = json!(id);
        send_json(self.ws(), &msg).await;
        self.take(|m| m["id"] == json!(id), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no reply to {msg}"))
    }

    /// The first message (already received or arriving within `d`) that matches.
    pub async fn take(&mut self, pred: impl Fn(&Value) -> bool, d: Duration) -> Option<Value> {
        let end = Instant::now() + d;
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return Some(self.inbox.remove(i));
            }
            if Instant::now() >= end {
                return None;
            }
            self.poll(Duration::from_millis(5)).await;
        }
    }

    /// Waits for a message of `kind` (and matching `pred`).
    pub async fn wait_for(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let k = kind.to_owned();
        self.take(
            |m| m["type"] == json!(k) && pred(m),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|| panic!("no {kind} message; inbox: {:?}", self.inbox))
    }

    /// Whether any message of `kind` matching `pred` arrived (without waiting).
    pub fn saw(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> bool {
        self.inbox.iter().any(|m| m["type"] == kind && pred(m))
    }

    /// Renegotiates: `change` edits the session; the offer goes over the socket and the
    /// answer is applied. Returns the m-lines added, or the server's error.
    pub async fn negotiate(
        &mut self,
        change: impl FnOnce(&mut SdpApi<'_>) -> Vec<(Mid, MediaKind)>,
    ) -> Result<Vec<(Mid, MediaKind)>, Value> {
        let mut api = self.peer.rtc.sdp_api();
        let added = change(&mut api);
        let (offer, pending): (_, SdpPendingOffer) = api.apply().expect("an offer");
        let reply = self
            .request(json!({"type": "offer", "sdp": offer.to_sdp_string()}))
            .await;
        if reply["type"] != "answer" {
            return Err(reply);
        }
        let answer = SdpAnswer::from_sdp_string(reply["sdp"].as_str().unwrap()).unwrap();
        self.peer
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap();
        self.peer.mids.extend(added.iter().copied());
        Ok(added)
    }

    /// Adds m-lines of `kinds` in direction `dir`.
    pub async fn add_media(
        &mut self,
        kinds: &[MediaKind],
        dir: Direction,
    ) -> Result<Vec<Mid>, Value> {
        let kinds = kinds.to_vec();
        self.negotiate(move |api| {
            kinds
                .iter()
                .map(|k| (api.add_media(*k, dir, Some("s".into()), None, None), *k))
                .collect()
        })
        .await
        .map(|v| v.into_iter().map(|(m, _)| m).collect())
    }

    /// Steps until the peer connection is up (≤ 10 s).
    pub async fn connect(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.peer.connected {
            assert!(Instant::now() < end, "{} did not connect", self.sid);
            self.poll(Duration::from_millis(5)).await;
        }
    }

    pub async fn subscribe(&mut self, track: &str, mid: Mid) -> Value {
        self.request(json!({"type": "subscribe", "track": track, "mid": mid.to_string()}))
            .await
    }

    pub fn frames_on(&self, mid: Mid) -> usize {
        self.peer.frames.iter().filter(|(m, _)| *m == mid).count()
    }

    /// The socket drops without `leave` (the network went away).
    pub async fn drop_socket(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// A new socket that resumes this participant. Returns the server's reply.
    pub async fn resume(&mut self, srv: &TestServer, token: &str) -> Value {
        let mut ws = open_socket(srv).await;
        send_json(
            &mut ws,
            &json!({"type": "join", "token": token, "resume": {"sid": self.sid, "token": self.resume_token}}),
        )
        .await;
        let reply = recv_json(&mut ws, Duration::from_secs(10))
            .await
            .expect("a reply to resume");
        if reply["type"] == "joined" {
            self.ws = Some(ws);
            self.inbox.clear();
        }
        reply
    }

    /// The network changed: a new local socket and an ICE restart offered through
    /// the (new) room socket.
    pub async fn restart_ice_on_new_socket(&mut self) -> Result<(), Value> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        self.peer.sock = sock;
        self.peer.addr = addr;
        self.negotiate(|api| {
            api.ice_restart(false);
            Vec::new()
        })
        .await?;
        self.peer
            .rtc
            .add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Ok(())
    }
}

/// Polls every client for `d`.
pub async fn poll_all(clients: &mut [&mut RoomClient], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for c in clients.iter_mut() {
            c.poll(Duration::from_millis(1)).await;
        }
    }
}
