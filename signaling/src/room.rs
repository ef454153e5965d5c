//! The multi-party room protocol: JSON messages over a WebSocket at `/rtc`.
//!
//! `docs/protocol.md` is the client's reference (message table, sequence diagram).
//! One socket carries one participant: it joins with a join token, then negotiates
//! one peer connection (the client always offers, so offers never cross), chooses its
//! subscriptions, and hears every change of the room in order.
//!
//! Invariants:
//! - A bad message gets an `error` reply on the same socket and changes nothing; it
//!   never closes the socket, nor touches anyone else's session.
//! - A socket that goes away without `leave` leaves its participant in the room for the
//!   grace period; a `join` with the participant's resume token within it takes the
//!   participant over (same peer, identity and subscriptions) without anyone seeing it
//!   leave. After the grace period the participant is removed.
//! - What a participant hears after `joined` continues the snapshot in it exactly: the
//!   media worker registers the update channel and takes the snapshot in one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use media_core::{
    ParticipantInfo, PeerId, PublishedTrack, RemoveReason, RoomId, SfuEvent, TrackRef,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use str0m::media::{MediaKind, Mid};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::backend::{
    BackendError, JoinRoom, ParticipantKey, ROOM_UPDATE_QUEUE, RoomBackend, RoomCommand, RoomReply,
    RoomUpdate,
};
use crate::error::ApiError;
use crate::liveness::{Due, Liveness};
use crate::token::{JoinGrant, JoinTokenVerifier};
use crate::whip::{backend_error, token_error};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest client message, in bytes (an SDP offer fits many times over).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Largest `data` payload, serialized, in bytes.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// The first message (`join`) must arrive this soon after the socket opens.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `move` frame may take to go out before its participant is forgotten
/// anyway (a client that stopped reading must not hold a draining node).
const MOVE_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the room protocol.
#[derive(Debug, Clone)]
pub struct RoomProtocolConfig {
    /// How long a participant whose socket went away stays in the room, resumable.
    pub resume_grace: Duration,
    /// STUN/TURN servers handed to each participant in `joined`.
    pub ice_servers: Arc<crate::IceServerConfig>,
    /// A socket silent this long (not even answering pings) is taken for gone
    /// (`crate::liveness`); the participant may still resume within `resume_grace`.
    pub idle_timeout: Duration,
    /// Asked whether a token's room is still the one it was issued for.
    pub rooms: crate::room_authority::SharedRoomAuthority,
    /// Asked which node a room lives on; a join for another node's room is served
    /// here through the relay when `cascade` can, else told to move there.
    pub placement: crate::placement::SharedPlacement,
    /// Imports another node's room for the participants joining it here.
    pub cascade: crate::placement::SharedCascade,
    /// Where a `marker` message goes: the recording running in the room.
    pub markers: Option<Arc<dyn RoomMarkers>>,
}

/// Chapter markers set from the room (a `marker` message of a participant with the
/// `record` grant): the control plane keeps them with the room's running recording.
pub trait RoomMarkers: Send + Sync + std::fmt::Debug {
    /// Marks now in `room`'s recording; the marker as the API shows it.
    fn mark<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
        title: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ApiError>> + Send + 'a>>;
}

impl Default for RoomProtocolConfig {
    fn default() -> Self {
        RoomProtocolConfig {
            resume_grace: Duration::from_secs(20),
            ice_servers: Arc::default(),
            idle_timeout: Duration::from_secs(60),
            rooms: None,
            placement: None,
            cascade: None,
            markers: None,
        }
    }
}

pub struct RoomState<B> {
    pub backend: Arc<B>,
    pub verifier: JoinTokenVerifier,
    pub config: RoomProtocolConfig,
    sessions: Arc<Mutex<HashMap<String, Resumable>>>,
    sources: Arc<TrackSources>,
    /// Rooms that moved to another node (it drains): the `/rtc` URL each went to.
    moves: Arc<tokio::sync::watch::Sender<Arc<HashMap<RoomId, Move>>>>,
}

/// What kinds of source a published m-line may say it carries.
pub const TRACK_SOURCES: [&str; 5] = ["camera", "microphone", "screen", "screen_audio", "music"];

/// What each published m-line carries (camera, microphone, screen, …), as its
/// publisher said in its offers. The media plane has no use for it; other
/// participants do (a screen share is shown apart from the camera). Keyed by the
/// participant (worker and peer), so the worker of the room it lives in is implied.
#[derive(Debug, Default)]
struct TrackSources(Mutex<HashMap<(usize, PeerId), Vec<MidSource>>>);

/// An m-line and what it carries (one of [`TRACK_SOURCES`]).
type MidSource = (Mid, &'static str);

impl TrackSources {
    /// Records what an offer said: m-lines it names get their source, m-lines it does
    /// not name keep theirs, m-lines that are not in it any more are forgotten.
    fn set(&self, key: ParticipantKey, offered: &[Mid], given: &[(Mid, &'static str)]) {
        let Ok(mut m) = self.0.lock() else { return };
        let entry = m.entry((key.worker, key.peer)).or_default();
        entry.retain(|(mid, _)| offered.contains(mid));
        for (mid, source) in given.iter().filter(|(mid, _)| offered.contains(mid)) {
            match entry.iter_mut().find(|(m, _)| m == mid) {
                Some(e) => e.1 = source,
                None => entry.push((*mid, source)),
            }
        }
    }

    fn get(&self, worker: usize, peer: PeerId, mid: Mid) -> Option<&'static str> {
        let m = self.0.lock().ok()?;
        m.get(&(worker, peer))?
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, s)| *s)
    }

    fn remove(&self, key: ParticipantKey) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(key.worker, key.peer));
        }
    }
}

/// An offer's `sources`: `{mid: "camera" | "microphone" | "screen" | …}`.
fn parse_sources(given: &HashMap<String, String>) -> Result<Vec<(Mid, &'static str)>, ApiError> {
    if given.len() > 32 {
        return Err(ApiError::invalid_field("sources", "at most 32 m-lines"));
    }
    given
        .iter()
        .map(|(mid, source)| {
            let mid = parse_mid(mid)?;
            let source = TRACK_SOURCES
                .iter()
                .find(|s| **s == source.as_str())
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "sources",
                        format!("'{source}' is not one of {}", TRACK_SOURCES.join(", ")),
                    )
                })?;
            Ok((mid, *source))
        })
        .collect()
}

impl<B> Clone for RoomState<B> {
    fn clone(&self) -> Self {
        RoomState {
            backend: self.backend.clone(),
            verifier: self.verifier.clone(),
            config: self.config.clone(),
            sessions: self.sessions.clone(),
            sources: self.sources.clone(),
            moves: self.moves.clone(),
        }
    }
}

impl<B: RoomBackend> RoomState<B> {
    pub fn new(backend: Arc<B>, verifier: JoinTokenVerifier, config: RoomProtocolConfig) -> Self {
        RoomState {
            backend,
            verifier,
            config,
            sessions: Arc::default(),
            sources: Arc::default(),
            moves: Arc::new(tokio::sync::watch::Sender::new(Arc::default())),
        }
    }

    /// Tells every participant of each room in `moves` to join again at its new
    /// node's `/rtc` URL (a `move` message), and takes it out of the room here. The
    /// map replaces the last one: a room left out of it is no longer moved.
    pub fn move_rooms(&self, moves: HashMap<RoomId, Move>) {
        if moves.is_empty() && self.moves.borrow().is_empty() {
            return;
        }
        info!(rooms = moves.len(), "room participants told to move");
        self.moves.send_replace(Arc::new(moves));
    }

    /// The rooms this node's `/rtc` participants are in (resumable ones included),
    /// with how many each has.
    pub fn participant_rooms(&self) -> Vec<(RoomId, usize)> {
        let mut rooms = std::collections::BTreeMap::<RoomId, usize>::new();
        if let Ok(s) = self.sessions.lock() {
            for r in s.values() {
                *rooms.entry(r.room.clone()).or_default() += 1;
            }
        }
        rooms.into_iter().collect()
    }

    /// How many `/rtc` participants, resumable ones included, are in a room that
    /// [`RoomState::move_rooms`] moved and have not yet been sent their `move`: a
    /// draining node waits for them as for its WHIP/WHEP sessions, so that everyone
    /// is told where the room went before it stops. A participant whose room has no
    /// new node is not waited for (nothing would tell it more).
    pub fn participants_to_move(&self) -> usize {
        let moves = self.moves.borrow().clone();
        if moves.is_empty() {
            return 0;
        }
        self.sessions
            .lock()
            .map(|s| s.values().filter(|r| moves.contains_key(&r.room)).count())
            .unwrap_or(0)
    }
}

/// A participant as the resume table knows it, keyed by its sid.
struct Resumable {
    key: ParticipantKey,
    room: RoomId,
    identity: String,
    /// Only its hash would do as well; it is random and lives in memory only.
    resume_token: String,
    /// Bumped at every attach and detach: a grace timer or an old socket acts only
    /// if the generation it saw is still current.
    generation: u64,
    /// Tells the socket holding the participant that another one took it over.
    kick: Option<oneshot::Sender<()>>,
}

/// The `/rtc` route.
pub fn router<B: RoomBackend>(state: RoomState<B>) -> axum::Router {
    axum::Router::new()
        .route("/rtc", axum::routing::get(upgrade::<B>))
        .with_state(state)
}

/// A WebSocket upgrade, or a JSON error for a plain HTTP request.
struct Upgrade(WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(Upgrade)
            .map_err(|_| {
                ApiError::bad_request(
                    "websocket_required",
                    "/rtc speaks the room protocol over a WebSocket; see docs/protocol.md",
                )
            })
    }
}

async fn upgrade<B: RoomBackend>(State(st): State<RoomState<B>>, Upgrade(ws): Upgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_socket(st, socket))
        .into_response()
}

// ---- messages ---------------------------------------------------------------------

/// A client message. Every request may carry an `id`, echoed in its reply or error.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        #[serde(default)]
        id: Option<Value>,
        token: String,
        #[serde(default)]
        version: Option<u32>,
        #[serde(default)]
        resume: Option<Resume>,
    },
    Offer {
        #[serde(default)]
        id: Option<Value>,
        sdp: String,
        /// What the sending m-lines carry: `{mid: "camera" | "screen" | …}`.
        #[serde(default)]
        sources: HashMap<String, String>,
    },
    Candidate {
        #[serde(default)]
        id: Option<Value>,
        candidate: String,
    },
    Subscribe {
        #[serde(default)]
        id: Option<Value>,
        track: String,
        mid: String,
        #[serde(default)]
        max_layer: Option<usize>,
        #[serde(default)]
        paused: Option<bool>,
    },
    UpdateSubscription {
        #[serde(default)]
        id: Option<Value>,
        mid: String,
        #[serde(default)]
        paused: Option<bool>,
        /// `null` lifts the cap; absent leaves it.
        #[serde(default, with = "double_option")]
        max_layer: Option<Option<usize>>,
    },
    Unsubscribe {
        #[serde(default)]
        id: Option<Value>,
        mid: String,
    },
    Mute {
        #[serde(default)]
        id: Option<Value>,
        mid: String,
        muted: bool,
    },
    Unpublish {
        #[serde(default)]
        id: Option<Value>,
        mid: String,
    },
    Data {
        #[serde(default)]
        id: Option<Value>,
        payload: Value,
        #[serde(default)]
        to: Option<Vec<String>>,
    },
    /// A chapter marker in the room's running recording (needs the `record` grant).
    Marker {
        #[serde(default)]
        id: Option<Value>,
        title: String,
    },
    Leave {
        #[serde(default)]
        id: Option<Value>,
    },
    Ping {
        #[serde(default)]
        id: Option<Value>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub sid: String,
    pub token: String,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// A participant in a message.
#[derive(Debug, Serialize)]
struct ParticipantView {
    sid: String,
    /// Unique in the room: the account's (or device's) id for everyone but the owner.
    identity: String,
    /// What to show: the person's display name (or the device's name).
    name: String,
    /// `participant` (this protocol), `publisher` (WHIP) or `subscriber` (WHEP).
    kind: &'static str,
    connected: bool,
    tracks: Vec<TrackView>,
}

#[derive(Debug, Serialize)]
struct TrackView {
    id: String,
    participant: String,
    kind: &'static str,
    mid: String,
    muted: bool,
    /// What it carries, as its publisher said (`camera`, `screen`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

fn sid(peer: PeerId) -> String {
    peer.to_string()
}

fn parse_sid(s: &str) -> Option<PeerId> {
    s.strip_prefix('p')?.parse().ok().map(PeerId)
}

fn track_id(owner: PeerId, mid: Mid) -> String {
    format!("{owner}/{mid}")
}

fn parse_track_id(s: &str) -> Option<TrackRef> {
    let (owner, mid) = s.split_once('/')?;
    if mid.is_empty() || mid.len() > 16 {
        return None;
    }
    Some(TrackRef {
        owner: parse_sid(owner)?,
        mid: Mid::from(mid),
    })
}

fn parse_mid(s: &str) -> Result<Mid, ApiError> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field("mid", "not an m-line id"));
    }
    Ok(Mid::from(s))
}

fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn track_view(owner: PeerId, t: &PublishedTrack, source: Option<&'static str>) -> TrackView {
    TrackView {
        id: track_id(owner, t.mid),
        participant: sid(owner),
        kind: kind_name(t.kind),
        mid: t.mid.to_string(),
        muted: t.muted,
        source,
    }
}

/// A participant of the room on `worker`.
fn participant_view(sources: &TrackSources, worker: usize, p: &ParticipantInfo) -> ParticipantView {
    ParticipantView {
        sid: sid(p.peer),
        identity: p.identity.clone(),
        name: p.name.clone(),
        kind: p.role.as_str(),
        connected: p.connected,
        tracks: p
            .tracks
            .iter()
            .map(|t| track_view(p.peer, t, sources.get(worker, p.peer, t.mid)))
            .collect(),
    }
}

fn reason_name(r: RemoveReason) -> &'static str {
    match r {
        RemoveReason::Requested => "left",
        RemoveReason::ConnectTimeout => "connect_timeout",
        RemoveReason::Disconnected => "disconnected",
        RemoveReason::ClosedByRemote => "closed",
        RemoveReason::Failed => "failed",
        RemoveReason::Replaced => "replaced",
        RemoveReason::Revoked => "revoked",
    }
}

fn error_message(e: &ApiError, request: Option<&Value>) -> Value {
    let mut m = json!({"type": "error", "code": e.code, "message": e.message});
    if let Some(id) = request {
        m["id"] = id.clone();
    }
    m
}

fn reply(kind: &str, request: Option<&Value>, mut body: Value) -> Value {
    body["type"] = json!(kind);
    if let Some(id) = request {
        body["id"] = id.clone();
    }
    body
}

/// What one room update means to participant `me` (on `me.worker`, the room's): a
/// message, and whether the participant itself is gone.
fn update_message(
    sources: &TrackSources,
    me: ParticipantKey,
    u: &RoomUpdate,
) -> (Option<Value>, Option<&'static str>) {
    let worker = me.worker;
    let me = me.peer;
    match u {
        RoomUpdate::Data {
            from,
            from_identity,
            from_name,
            payload,
        } => (
            Some(
                json!({"type": "data", "from": sid(*from), "from_identity": from_identity, "from_name": from_name, "payload": payload}),
            ),
            None,
        ),
        RoomUpdate::Sfu(ev) => match ev {
            SfuEvent::PeerJoined {
                peer,
                identity,
                name,
                role,
                relayed,
                ..
            } if *peer != me => (
                Some(
                    // Another node's participant is connected there.
                    json!({"type": "participant_joined", "participant": ParticipantView {
                        sid: sid(*peer), identity: identity.clone(), name: name.clone(), kind: role.as_str(), connected: *relayed, tracks: Vec::new(),
                    }}),
                ),
                None,
            ),
            SfuEvent::PeerConnected { peer, .. } => (
                Some(json!({"type": "participant_connected", "participant": sid(*peer)})),
                None,
            ),
            SfuEvent::PeerRemoved { peer, reason, .. } if *peer == me => {
                (None, Some(reason_name(*reason)))
            }
            SfuEvent::PeerRemoved { peer, reason, .. } => (
                Some(
                    json!({"type": "participant_left", "participant": sid(*peer), "reason": reason_name(*reason)}),
                ),
                None,
            ),
            SfuEvent::TrackPublished {
                peer, mid, kind, ..
            } => (
                Some(
                    json!({"type": "track_published", "track": track_view(*peer, &PublishedTrack { mid: *mid, kind: *kind, muted: false }, sources.get(worker, *peer, *mid))}),
                ),
                None,
            ),
            SfuEvent::TrackUnpublished { peer, mid, .. } => (
                Some(
                    json!({"type": "track_unpublished", "track": track_id(*peer, *mid), "participant": sid(*peer)}),
                ),
                None,
            ),
            SfuEvent::TrackMuted {
                peer, mid, muted, ..
            } => (
                Some(
                    json!({"type": "track_muted", "track": track_id(*peer, *mid), "participant": sid(*peer), "muted": muted}),
                ),
                None,
            ),
            SfuEvent::SpeakerChanged { peer, mid, .. } => (
                Some(
                    json!({"type": "speaker_changed", "participant": sid(*peer), "track": track_id(*peer, *mid)}),
                ),
                None,
            ),
            // Only the publisher hears which of its layers anyone wants.
            SfuEvent::LayersWanted {
                peer,
                mid,
                layers,
                unwanted,
                ..
            } if *peer == me => (
                Some(
                    json!({"type": "layers_wanted", "track": track_id(*peer, *mid), "layers": layers, "unwanted": unwanted}),
                ),
                None,
            ),
            SfuEvent::PeerJoined { .. }
            | SfuEvent::LayersWanted { .. }
            | SfuEvent::RelayKeyframeWanted { .. } => (None, None),
        },
    }
}

/// The `a=mid:` values of an SDP.
fn offered_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .filter_map(|m| parse_mid(m).ok())
        .collect()
}

// ---- one socket -------------------------------------------------------------------

/// What a participant may do, from its token.
struct Session {
    key: ParticipantKey,
    sid: String,
    grant: JoinGrant,
    generation: u64,
    kicked: oneshot::Receiver<()>,
    updates: mpsc::Receiver<RoomUpdate>,
    data_budget: DataBudget,
}

/// `data` messages one participant may send: a token bucket of [`DATA_BURST`]
/// refilled at [`DATA_PER_SECOND`]. Past it a message is refused (`rate_limited`) and
/// never reaches the others, so a flooder fills no one's update queue but its own
/// replies.
#[derive(Debug)]
struct DataBudget {
    tokens: f64,
    last: std::time::Instant,
}

pub const DATA_PER_SECOND: f64 = 50.0;
pub const DATA_BURST: f64 = 100.0;

impl DataBudget {
    fn new(now: std::time::Instant) -> DataBudget {
        DataBudget {
            tokens: DATA_BURST,
            last: now,
        }
    }

    /// Takes one message's worth; false when the budget is spent.
    fn take(&mut self, now: std::time::Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * DATA_PER_SECOND;
        self.tokens = (self.tokens + refill).min(DATA_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(v.to_string())))
        .await
        .is_ok()
}

/// The next client message; `None` when the socket is gone. Non-text frames and
/// unparsable text get an error reply and are skipped.
async fn next_message(
    socket: &mut WebSocket,
    live: &mut Liveness,
) -> Option<Result<ClientMessage, ApiError>> {
    loop {
        let frame = socket.recv().await?;
        live.heard(std::time::Instant::now());
        match frame {
            Ok(Message::Text(t)) => return Some(parse_message(&t)),
            Ok(Message::Binary(_)) => {
                return Some(Err(ApiError::bad_request(
                    "bad_message",
                    "messages are JSON text frames",
                )));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Parses one client message of the room protocol and drops it: the parser's entry for
/// fuzzing (`fuzz/fuzz_targets/rtc_message.rs`).
pub fn parse_client_message(text: &str) -> Result<(), ApiError> {
    parse_message(text).map(|_| ())
}

fn parse_message(text: &str) -> Result<ClientMessage, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        // serde names the unknown variant or field; that is what the client needs.
        ApiError::bad_request("bad_message", format!("not a room protocol message: {e}"))
    })
}

async fn run_socket<B: RoomBackend>(st: RoomState<B>, mut socket: WebSocket) {
    let Some(mut session) = handshake(&st, &mut socket).await else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    info!(room = %session.grant.room, identity = %session.grant.identity, participant = %session.sid, "room socket attached");
    let end = serve(&st, &mut socket, &mut session).await;
    match end {
        End::Left(reason) => {
            forget(&st, &session.sid);
            let _ = send(&mut socket, &json!({"type": "left", "reason": reason})).await;
        }
        End::Moved(to) => {
            // Forgotten only once told: a draining node stops when no participant is
            // left to move, and must not stop before this frame is out. A client that
            // does not read is not waited for long.
            let _ = tokio::time::timeout(
                MOVE_SEND_TIMEOUT,
                send(
                    &mut socket,
                    &json!({"type": "move", "url": to.url, "reason": to.reason}),
                ),
            )
            .await;
            forget_if_current(&st, &session);
        }
        End::Replaced => {
            let _ = send(
                &mut socket,
                &json!({"type": "error", "code": "replaced", "message": "another connection resumed this participant"}),
            )
            .await;
        }
        End::SocketGone | End::TooSlow => {
            if matches!(end, End::TooSlow) {
                // The worker dropped the update channel: it fell behind, or the node
                // is stopping.
                let msg = if st.backend.is_draining() {
                    json!({"type": "error", "code": "draining", "message": "this node is shutting down; join again (another node will take it)"})
                } else {
                    warn!(participant = %session.sid, "room updates backed up; the socket is cut off and may resume");
                    json!({"type": "error", "code": "too_slow", "message": "this connection fell behind the room; resume to get a fresh snapshot"})
                };
                let _ = send(&mut socket, &msg).await;
            }
            detach(&st, &session);
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

enum End {
    /// The participant is out of the room (it left, or the media plane removed it).
    Left(&'static str),
    /// The room moved to another node (this one drains): the participant left it here
    /// and joins again at this `/rtc` URL.
    Moved(Move),
    /// Another socket resumed the participant.
    Replaced,
    SocketGone,
    TooSlow,
}

/// Waits for `join`, joins or resumes, and sends `joined`. `None` if the socket
/// went away or never joined in time.
async fn handshake<B: RoomBackend>(st: &RoomState<B>, socket: &mut WebSocket) -> Option<Session> {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let mut live = Liveness::new(std::time::Instant::now(), st.config.idle_timeout);
        let msg = match tokio::time::timeout_at(deadline, next_message(socket, &mut live)).await {
            Err(_) => {
                let e = ApiError::bad_request("join_timeout", "send join first, within 10 s");
                send(socket, &error_message(&e, None)).await;
                return None;
            }
            Ok(None) => return None,
            Ok(Some(m)) => m,
        };
        let (id, token, version, resume) = match msg {
            Ok(ClientMessage::Join {
                id,
                token,
                version,
                resume,
            }) => (id, token, version, resume),
            Ok(_) => {
                let e = ApiError::bad_request("not_joined", "send join first");
                send(socket, &error_message(&e, None)).await;
                continue;
            }
            Err(e) => {
                send(socket, &error_message(&e, None)).await;
                continue;
            }
        };
        let routed = match resume {
            // A resumed participant is here already, and so is its room.
            Some(_) => Ok(None),
            None => elsewhere(st, &token).await,
        };
        let joined = match routed {
            Ok(None) => join(st, token, version, resume)
                .await
                .map_err(JoinRefusal::Error),
            Ok(Some(url)) => Err(JoinRefusal::Move { url }),
            Err(e) => Err(JoinRefusal::Error(e)),
        };
        match joined {
            Ok((session, participants, resumed, resume_token)) => {
                let view = |p| participant_view(&st.sources, session.key.worker, p);
                let me = participants
                    .iter()
                    .find(|p| p.peer == session.key.peer)
                    .map(view);
                let others: Vec<ParticipantView> = participants
                    .iter()
                    .filter(|p| p.peer != session.key.peer)
                    .map(view)
                    .collect();
                let msg = reply(
                    "joined",
                    id.as_ref(),
                    json!({
                        "version": PROTOCOL_VERSION,
                        "room": session.grant.room.as_str(),
                        "participant": me,
                        "participants": others,
                        "resumed": resumed,
                        "resume_token": resume_token,
                        "resume_grace_secs": st.config.resume_grace.as_secs(),
                        "ice_servers": st.config.ice_servers.servers_for(&session.grant.identity, std::time::SystemTime::now()),
                        "grants": session.grant.grants,
                    }),
                );
                if !send(socket, &msg).await {
                    detach(st, &session);
                    return None;
                }
                return Some(session);
            }
            Err(JoinRefusal::Error(e)) => {
                info!(code = e.code, message = %e.message, "room join refused");
                send(socket, &error_message(&e, id.as_ref())).await;
            }
            Err(JoinRefusal::Move { url }) => {
                // The client joins again there, with the same token.
                let msg = reply(
                    "move",
                    id.as_ref(),
                    json!({"url": url, "reason": "room_elsewhere"}),
                );
                send(socket, &msg).await;
                return None;
            }
        }
    }
}

/// Where a room's participants go, and why (the `move` message's `reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The `/rtc` of the room's node.
    pub url: String,
    /// `node_draining`: this node drains; `room_elsewhere`: the room lives on that
    /// node (it came to be served here too, and is made whole again).
    pub reason: &'static str,
}

impl Move {
    /// To the `/rtc` of the node at `base_url` (`https://host:port`).
    pub fn to_node(base_url: &str, reason: &'static str) -> Move {
        Move {
            url: format!("{}/rtc", crate::placement::websocket_base(base_url)),
            reason,
        }
    }
}

/// The `/rtc` URL of the node a join token's room lives on, when that is not this one.
async fn elsewhere<B: RoomBackend>(
    st: &RoomState<B>,
    token: &str,
) -> Result<Option<String>, ApiError> {
    if st.config.placement.is_none() {
        return Ok(None);
    }
    let grant = st.verifier.verify(token).map_err(token_error)?;
    // A revoked token learns nothing of where the room lives, and places nothing.
    crate::room_authority::check(&st.config.rooms, &grant).await?;
    let Some(remote) = crate::placement::elsewhere(&st.config.placement, &grant.room).await? else {
        return Ok(None);
    };
    if let Some(c) = &st.config.cascade
        && c.import(&grant.room, &remote.node_id)
    {
        info!(room = %grant.room, identity = %grant.identity, home = %remote.node_id, "participant served here; the room is relayed from its node");
        return Ok(None);
    }
    let to = Move::to_node(&remote.base_url, "room_elsewhere");
    info!(room = %grant.room, identity = %grant.identity, to = %to.url, "join sent to the room's node");
    Ok(Some(to.url))
}

/// Why a join did not happen here.
enum JoinRefusal {
    Error(ApiError),
    /// The room lives on another node: its `/rtc` URL.
    Move {
        url: String,
    },
}

async fn join<B: RoomBackend>(
    st: &RoomState<B>,
    token: String,
    version: Option<u32>,
    resume: Option<Resume>,
) -> Result<(Session, Vec<ParticipantInfo>, bool, String), ApiError> {
    if let Some(v) = version
        && v != PROTOCOL_VERSION
    {
        return Err(ApiError::bad_request(
            "unsupported_version",
            format!("this server speaks version {PROTOCOL_VERSION}, not {v}"),
        ));
    }
    let grant = st.verifier.verify(&token).map_err(token_error)?;
    crate::room_authority::check(&st.config.rooms, &grant).await?;
    let (tx, rx) = mpsc::channel(ROOM_UPDATE_QUEUE);
    let (kick, kicked) = oneshot::channel();
    if let Some(r) = resume {
        // Take the participant over first, then attach: a grace timer that fires in
        // between sees a newer generation and does nothing.
        let (key, generation, old_kick) = {
            let mut sessions = st
                .sessions
                .lock()
                .map_err(|_| ApiError::internal("session table poisoned"))?;
            let Some(entry) = sessions.get_mut(&r.sid) else {
                return Err(ApiError::new(
                    axum::http::StatusCode::GONE,
                    "resume_expired",
                    "no such participant to resume (its grace period is over); join anew",
                ));
            };
            if entry.resume_token != r.token
                || entry.identity != grant.identity
                || entry.room != grant.room
            {
                return Err(ApiError::forbidden(
                    "the resume token or identity does not match this participant",
                ));
            }
            entry.generation += 1;
            let old = entry.kick.replace(kick);
            (entry.key, entry.generation, old)
        };
        if let Some(k) = old_kick {
            let _ = k.send(());
        }
        let attached = st.backend.attach(key, tx).await;
        if attached.is_err() {
            // The media plane no longer has it: nothing left to resume.
            forget(st, &r.sid);
        }
        let participants = attached.map_err(|e| match e {
            BackendError::Sfu(media_core::SfuError::UnknownPeer) => ApiError::new(
                axum::http::StatusCode::GONE,
                "resume_expired",
                "the participant is gone; join anew",
            ),
            other => backend_error(other),
        })?;
        info!(room = %grant.room, identity = %grant.identity, participant = %r.sid, "participant resumed");
        return Ok((
            Session {
                key,
                sid: r.sid,
                grant,
                generation,
                kicked,
                updates: rx,
                data_budget: DataBudget::new(std::time::Instant::now()),
            },
            participants,
            true,
            r.token,
        ));
    }
    if st.backend.is_draining() {
        return Err(backend_error(BackendError::Draining));
    }
    let (key, participants) = st
        .backend
        .join_room(
            JoinRoom {
                room: grant.room.clone(),
                identity: grant.identity.clone(),
                name: grant.name.clone(),
                room_limit: grant.room_limit,
                may_publish: grant.grants.publish,
            },
            tx,
        )
        .await
        .map_err(backend_error)?;
    let sid = sid(key.peer);
    let resume_token = hex::encode(rand::random::<[u8; 16]>());
    if let Ok(mut sessions) = st.sessions.lock() {
        sessions.insert(
            sid.clone(),
            Resumable {
                key,
                room: grant.room.clone(),
                identity: grant.identity.clone(),
                resume_token: resume_token.clone(),
                generation: 0,
                kick: Some(kick),
            },
        );
    }
    Ok((
        Session {
            key,
            sid,
            grant,
            generation: 0,
            kicked,
            updates: rx,
            data_budget: DataBudget::new(std::time::Instant::now()),
        },
        participants,
        false,
        resume_token,
    ))
}

/// [`forget`], unless another socket resumed the participant meanwhile (that one's
/// own `serve` tells it where to go).
fn forget_if_current<B>(st: &RoomState<B>, session: &Session) {
    let current = st
        .sessions
        .lock()
        .ok()
        .and_then(|s| {
            s.get(&session.sid)
                .map(|e| e.generation == session.generation)
        })
        .unwrap_or(false);
    if current {
        forget(st, &session.sid);
    }
}

fn forget<B>(st: &RoomState<B>, sid: &str) {
    let gone = st.sessions.lock().ok().and_then(|mut s| s.remove(sid));
    if let Some(r) = gone {
        st.sources.remove(r.key);
    }
}

/// The socket went away without `leave`: the participant stays for the grace period.
fn detach<B: RoomBackend>(st: &RoomState<B>, session: &Session) {
    let generation = {
        let Ok(mut sessions) = st.sessions.lock() else {
            return;
        };
        let Some(entry) = sessions.get_mut(&session.sid) else {
            return;
        };
        if entry.generation != session.generation {
            return; // already taken over
        }
        entry.generation += 1;
        entry.kick = None;
        entry.generation
    };
    info!(participant = %session.sid, grace_secs = st.config.resume_grace.as_secs(), "room socket gone; resumable for the grace period");
    let st = st.clone();
    let sid = session.sid.clone();
    let key = session.key;
    tokio::spawn(async move {
        tokio::time::sleep(st.config.resume_grace).await;
        let expired = match st.sessions.lock() {
            Ok(mut sessions) => {
                if sessions
                    .get(&sid)
                    .is_some_and(|e| e.generation == generation)
                {
                    sessions.remove(&sid);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if expired {
            st.sources.remove(key);
        }
        if expired {
            info!(participant = %sid, "not resumed within the grace period; removed");
            if let Err(e) = st
                .backend
                .room_command(key, RoomCommand::Leave(RemoveReason::Disconnected))
                .await
            {
                debug!(participant = %sid, error = %e, "participant already gone");
            }
        }
    });
}

/// The participant leaves the room here, to be told where it went (`to`).
async fn moved_away<B: RoomBackend>(st: &RoomState<B>, session: &Session, to: Move) -> End {
    info!(participant = %session.sid, room = %session.grant.room, to = %to.url, reason = to.reason, "participant moved to the room's node");
    let _ = st
        .backend
        .room_command(session.key, RoomCommand::Leave(RemoveReason::Requested))
        .await;
    End::Moved(to)
}

async fn serve<B: RoomBackend>(
    st: &RoomState<B>,
    socket: &mut WebSocket,
    session: &mut Session,
) -> End {
    let mut live = Liveness::new(std::time::Instant::now(), st.config.idle_timeout);
    let mut moves = st.moves.subscribe();
    moves.mark_changed();
    loop {
        tokio::select! {
            _ = &mut session.kicked => return End::Replaced,
            Ok(()) = moves.changed() => {
                let to = moves.borrow_and_update().get(&session.grant.room).cloned();
                if let Some(to) = to {
                    return moved_away(st, session, to).await;
                }
            }
            () = tokio::time::sleep_until(live.wake_at().into()) => match live.due(std::time::Instant::now()) {
                Due::Ping => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return End::SocketGone;
                    }
                }
                Due::Idle => {
                    info!(participant = %session.sid, idle_secs = live.idle().as_secs(), "room socket silent (no pong); taken for gone, resumable");
                    return End::SocketGone;
                }
                Due::Nothing => {}
            },
            u = session.updates.recv() => {
                let Some(u) = u else {
                    // A resume elsewhere kicks this socket, then attaches its own channel
                    // in place of this one: both may be ready at once.
                    if session.kicked.try_recv().is_ok() {
                        return End::Replaced;
                    }
                    // A room that moved away: say where, rather than "join again".
                    let to = st.moves.borrow().get(&session.grant.room).cloned();
                    if let Some(to) = to {
                        return moved_away(st, session, to).await;
                    }
                    // The worker dropped this channel: it fell behind (or the node stops).
                    return End::TooSlow;
                };
                let (msg, gone) = update_message(&st.sources, session.key, &u);
                if let Some(reason) = gone {
                    return End::Left(reason);
                }
                if let Some(m) = msg && !send(socket, &m).await {
                    return End::SocketGone;
                }
            }
            m = next_message(socket, &mut live) => {
                let Some(m) = m else { return End::SocketGone };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        debug!(participant = %session.sid, code = e.code, "bad room message");
                        if !send(socket, &error_message(&e, None)).await {
                            return End::SocketGone;
                        }
                        continue;
                    }
                };
                if let ClientMessage::Leave { id } = &m {
                    let _ = st.backend.room_command(session.key, RoomCommand::Leave(RemoveReason::Requested)).await;
                    let _ = send(socket, &reply("leave_ok", id.as_ref(), json!({}))).await;
                    return End::Left("left");
                }
                if let ClientMessage::Data { id, .. } = &m
                    && !session.data_budget.take(std::time::Instant::now())
                {
                    let e = ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("more than {DATA_PER_SECOND} data messages a second; this one was not sent"),
                    )
                    .with_retry_after(Duration::from_secs(1));
                    if !send(socket, &error_message(&e, id.as_ref())).await {
                        return End::SocketGone;
                    }
                    continue;
                }
                let (id, out) = handle(st, session, m).await;
                let msg = match out {
                    Ok(v) => v,
                    Err(e) => {
                        debug!(participant = %session.sid, code = e.code, message = %e.message, "room request refused");
                        error_message(&e, id.as_ref())
                    }
                };
                if !send(socket, &msg).await {
                    return End::SocketGone;
                }
            }
        }
    }
}

/// A subscription's layer cap (`Some(None)` lifts it) and pause, where given.
async fn set_quality<B: RoomBackend>(
    st: &RoomState<B>,
    key: ParticipantKey,
    mid: Mid,
    max_layer: Option<Option<usize>>,
    paused: Option<bool>,
) -> Result<(), ApiError> {
    if let Some(max_layer) = max_layer {
        st.backend
            .room_command(key, RoomCommand::MaxLayer { mid, max_layer })
            .await
            .map_err(backend_error)?;
    }
    if let Some(paused) = paused {
        st.backend
            .room_command(key, RoomCommand::Pause { mid, paused })
            .await
            .map_err(backend_error)?;
    }
    Ok(())
}

/// One request after `join`: its id and the reply (or error) to send.
async fn handle<B: RoomBackend>(
    st: &RoomState<B>,
    session: &Session,
    m: ClientMessage,
) -> (Option<Value>, Result<Value, ApiError>) {
    let grants = session.grant.grants;
    let command = |cmd| st.backend.room_command(session.key, cmd);
    match m {
        ClientMessage::Join { id, .. } => (
            id,
            Err(ApiError::bad_request(
                "already_joined",
                "this socket has joined; open another one to join again",
            )),
        ),
        ClientMessage::Leave { id } => (id, Ok(json!({}))), // handled by the caller
        ClientMessage::Marker { id, title } => {
            let r = async {
                if !grants.record {
                    return Err(ApiError::forbidden("the token does not grant record"));
                }
                let Some(markers) = &st.config.markers else {
                    return Err(ApiError::unavailable(
                        "markers_unavailable",
                        "this node keeps no recording markers",
                    ));
                };
                let marker = markers
                    .mark(session.grant.room.as_str(), &session.grant.identity, &title)
                    .await?;
                Ok(reply("marker_ok", id.as_ref(), json!({ "marker": marker })))
            }
            .await;
            (id, r)
        }
        ClientMessage::Ping { id } => {
            let r = reply("pong", id.as_ref(), json!({}));
            (id, Ok(r))
        }
        ClientMessage::Offer { id, sdp, sources } => {
            if sdp.trim().is_empty() {
                let e = ApiError::bad_request("malformed_sdp", "the offer is empty");
                return (id, Err(e));
            }
            match parse_sources(&sources) {
                // Known before the worker announces the tracks, so the announcement
                // carries them.
                Ok(s) => st.sources.set(session.key, &offered_mids(&sdp), &s),
                Err(e) => return (id, Err(e)),
            }
            let r = command(RoomCommand::Offer(sdp)).await;
            let r = match r {
                Ok(RoomReply::Answer(a)) => Ok(reply("answer", id.as_ref(), json!({"sdp": a}))),
                Ok(_) => Err(ApiError::internal("the media worker gave no answer")),
                Err(e) => Err(backend_error(e)),
            };
            (id, r)
        }
        ClientMessage::Candidate { id, candidate } => {
            let r = command(RoomCommand::Candidates(vec![candidate]))
                .await
                .map(|_| reply("candidate_ok", id.as_ref(), json!({})))
                .map_err(backend_error);
            (id, r)
        }
        ClientMessage::Subscribe {
            id,
            track,
            mid,
            max_layer,
            paused,
        } => {
            let r = async {
                if !grants.subscribe {
                    return Err(ApiError::forbidden("the token does not grant subscribe"));
                }
                let t = parse_track_id(&track)
                    .ok_or_else(|| ApiError::invalid_field("track", "not a track id"))?;
                let mid = parse_mid(&mid)?;
                set_quality(st, session.key, mid, max_layer.map(Some), paused).await?;
                command(RoomCommand::Subscribe { mid, track: t })
                    .await
                    .map_err(backend_error)?;
                Ok(reply(
                    "subscribed",
                    id.as_ref(),
                    json!({"track": track, "mid": mid.to_string()}),
                ))
            }
            .await;
            (id, r)
        }
        ClientMessage::UpdateSubscription {
            id,
            mid,
            paused,
            max_layer,
        } => {
            let r = async {
                let mid = parse_mid(&mid)?;
                set_quality(st, session.key, mid, max_layer, paused).await?;
                Ok(reply(
                    "subscription_updated",
                    id.as_ref(),
                    json!({"mid": mid.to_string()}),
                ))
            }
            .await;
            (id, r)
        }
        ClientMessage::Unsubscribe { id, mid } => {
            let r = async {
                let mid = parse_mid(&mid)?;
                command(RoomCommand::Unsubscribe { mid })
                    .await
                    .map_err(backend_error)?;
                Ok(reply(
                    "unsubscribed",
                    id.as_ref(),
                    json!({"mid": mid.to_string()}),
                ))
            }
            .await;
            (id, r)
        }
        ClientMessage::Mute { id, mid, muted } => {
            let r = async {
                let m = parse_mid(&mid)?;
                command(RoomCommand::Mute { mid: m, muted })
                    .await
                    .map_err(backend_error)?;
                Ok(reply(
                    "mute_ok",
                    id.as_ref(),
                    json!({"track": track_id(session.key.peer, m), "muted": muted}),
                ))
            }
            .await;
            (id, r)
        }
        ClientMessage::Unpublish { id, mid } => {
            let r = async {
                let m = parse_mid(&mid)?;
                command(RoomCommand::Unpublish { mid: m })
                    .await
                    .map_err(backend_error)?;
                Ok(reply(
                    "unpublished",
                    id.as_ref(),
                    json!({"track": track_id(session.key.peer, m)}),
                ))
            }
            .await;
            (id, r)
        }
        ClientMessage::Data { id, payload, to } => {
            let r = async {
                if !grants.publish_data {
                    return Err(ApiError::forbidden("the token does not grant publish_data"));
                }
                let size = payload.to_string().len();
                if size > MAX_DATA_BYTES {
                    return Err(ApiError::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "data_too_large",
                        format!("the payload is {size} bytes; at most {MAX_DATA_BYTES}"),
                    ));
                }
                let named = to.is_some();
                let delivered = match command(RoomCommand::Data { to, payload })
                    .await
                    .map_err(backend_error)?
                {
                    RoomReply::Delivered(n) => n,
                    _ => 0,
                };
                if named && delivered == 0 {
                    return Err(ApiError::not_found(
                        "none of the named participants is in the room",
                    ));
                }
                Ok(reply(
                    "data_ok",
                    id.as_ref(),
                    json!({"delivered": delivered}),
                ))
            }
            .await;
            (id, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let t = parse_track_id(&track_id(PeerId(42), Mid::from("3"))).unwrap();
        assert_eq!(t.owner, PeerId(42));
        assert_eq!(t.mid, Mid::from("3"));
        assert!(parse_track_id("p4").is_none());
        assert!(parse_track_id("x4/1").is_none());
        assert!(parse_track_id("p4/").is_none());
        assert_eq!(parse_sid("p7"), Some(PeerId(7)));
    }

    #[test]
    fn messages_parse_strictly() {
        assert!(matches!(
            parse_message(r#"{"type":"join","token":"t","id":1}"#),
            Ok(ClientMessage::Join { .. })
        ));
        let e = parse_message(r#"{"type":"fly"}"#).unwrap_err();
        assert_eq!(e.code, "bad_message");
        assert!(parse_message(r#"{"type":"mute","mid":"0"}"#).is_err());
        assert!(parse_message(r#"{"type":"ping","extra":1}"#).is_err());
        assert!(parse_message("not json").is_err());
        match parse_message(r#"{"type":"update_subscription","mid":"1","max_layer":null}"#) {
            Ok(ClientMessage::UpdateSubscription { max_layer, .. }) => {
                assert_eq!(max_layer, Some(None))
            }
            other => panic!("{other:?}"),
        }
        match parse_message(r#"{"type":"update_subscription","mid":"1"}"#) {
            Ok(ClientMessage::UpdateSubscription { max_layer, .. }) => assert_eq!(max_layer, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_budget_allows_a_burst_then_the_rate() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = std::time::Instant::now();
        let mut b = DataBudget::new(t0);
        let burst = (0..200).filter(|_| b.take(t0)).count();
        assert_eq!(burst, DATA_BURST as usize);
        // A second later: one second's worth more, no more.
        let t1 = t0 + Duration::from_secs(1);
        let more = (0..200).filter(|_| b.take(t1)).count();
        assert_eq!(more, DATA_PER_SECOND as usize);
        // Quiet for a minute: back to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..500).filter(|_| b.take(t2)).count(), DATA_BURST as usize);
    }

    #[test]
    fn only_the_publisher_hears_which_layers_are_wanted() {
        let wanted = RoomUpdate::Sfu(SfuEvent::LayersWanted {
            room: RoomId::parse("r").unwrap(),
            peer: PeerId(3),
            mid: Mid::from("1"),
            layers: vec!["l".into(), "m".into()],
            unwanted: vec!["h".into()],
        });
        let sources = TrackSources::default();
        let (m, _) = update_message(&sources, key(3), &wanted);
        let m = m.unwrap();
        assert_eq!(m["type"], "layers_wanted");
        assert_eq!(m["track"], "p3/1");
        assert_eq!(m["layers"], json!(["l", "m"]));
        assert_eq!(m["unwanted"], json!(["h"]));
        assert!(update_message(&sources, key(4), &wanted).0.is_none());
    }

    fn key(peer: u64) -> ParticipantKey {
        ParticipantKey {
            worker: 0,
            peer: PeerId(peer),
        }
    }

    #[test]
    fn tracks_carry_the_source_their_publisher_named() {
        let sources = TrackSources::default();
        let given = parse_sources(&HashMap::from([("1".to_owned(), "screen".to_owned())])).unwrap();
        let offered = [Mid::from("0"), Mid::from("1")];
        sources.set(key(3), &offered, &given);
        let published = |mid: &str| {
            RoomUpdate::Sfu(SfuEvent::TrackPublished {
                room: RoomId::parse("r").unwrap(),
                peer: PeerId(3),
                identity: "x".into(),
                mid: Mid::from(mid),
                kind: MediaKind::Video,
            })
        };
        let (m, _) = update_message(&sources, key(4), &published("1"));
        assert_eq!(m.unwrap()["track"]["source"], "screen");
        let (m, _) = update_message(&sources, key(4), &published("0"));
        assert!(
            m.unwrap()["track"].get("source").is_none(),
            "not named: absent"
        );
        // A later offer that names other m-lines keeps this one.
        let more = parse_sources(&HashMap::from([("0".to_owned(), "camera".to_owned())])).unwrap();
        sources.set(key(3), &offered, &more);
        assert_eq!(sources.get(0, PeerId(3), Mid::from("1")), Some("screen"));
        assert_eq!(sources.get(0, PeerId(3), Mid::from("0")), Some("camera"));
        // Names of m-lines the offer lacks are not kept; m-lines gone are forgotten.
        let stray = parse_sources(&HashMap::from([("9".to_owned(), "screen".to_owned())])).unwrap();
        sources.set(key(3), &[Mid::from("0")], &stray);
        assert_eq!(sources.get(0, PeerId(3), Mid::from("9")), None);
        assert_eq!(sources.get(0, PeerId(3), Mid::from("1")), None);
        assert_eq!(sources.get(0, PeerId(3), Mid::from("0")), Some("camera"));
        assert_eq!(
            offered_mids("v=0\r\na=mid:0\r\nm=x\r\na=mid:audio\r\n"),
            [Mid::from("0"), Mid::from("audio")]
        );
        sources.remove(key(3));
        assert_eq!(sources.get(0, PeerId(3), Mid::from("1")), None);
        let bad = parse_sources(&HashMap::from([("0".to_owned(), "hologram".to_owned())]));
        assert_eq!(bad.unwrap_err().field, Some("sources"));
    }

    #[test]
    fn own_removal_ends_the_session() {
        let me = PeerId(1);
        let removed = |peer| {
            RoomUpdate::Sfu(SfuEvent::PeerRemoved {
                peer,
                room: RoomId::parse("r").unwrap(),
                identity: "x".into(),
                reason: RemoveReason::Disconnected,
            })
        };
        let sources = TrackSources::default();
        assert_eq!(
            update_message(&sources, key(1), &removed(me)).1,
            Some("disconnected")
        );
        let (m, gone) = update_message(&sources, key(1), &removed(PeerId(2)));
        assert!(gone.is_none());
        assert_eq!(m.unwrap()["type"], "participant_left");
    }
}
