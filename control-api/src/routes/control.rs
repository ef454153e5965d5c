//! Remote control and live sockets.
//!
//! - `POST /api/v1/devices/{id}/commands`: a browser tells a phone to play, pause, …
//!   The command becomes a `playback.events` event (outbox, then bus); the phone's
//!   node delivers it on the phone's device socket. A device without a live socket
//!   refuses at once with 409 `device_offline`: commands are never queued silently.
//! - `GET /api/v1/devices/socket`: the phone's device socket (device credential).
//!   It receives commands and sends heartbeats and its playback state; the state
//!   becomes `now.playing` and reaches every browser socket of the user.
//! - `GET /api/v1/events/socket`: a browser's socket (user credential): a snapshot,
//!   then every `now.playing` and `device.status` event of the user; it may send
//!   commands too.
//!
//! Both sockets authenticate with `Authorization: Bearer` or, for browsers that cannot
//! set headers on a WebSocket, with a first message `{"type":"auth","token":…}`.
//! A bad message gets an `error` message; the socket stays open.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use events::EventType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use signaling::ApiError;
use signaling::liveness::{Due, Liveness};
use tracing::{debug, info, warn};
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::events::{outbox_event, presence_events};
use crate::extract::ApiJson;
use crate::openapi::ErrorBody;
use crate::routes::devices::view;
use crate::state::{AppState, Caller, store_error};
use crate::store::{Capabilities, Presence, Store};

/// How long a socket may take to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a socket accepts.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CommandRequest {
    /// `play`, `pause`, `resume`, `seek`, `next`, `previous` or `volume`.
    pub action: String,
    /// For `seek` (required) and `play` (optional start position).
    #[serde(default)]
    pub position_ms: Option<i64>,
    /// For `volume`: 0–100.
    #[serde(default)]
    pub volume: Option<i64>,
    /// For `play`: the library track (its `client_id`) to play.
    #[serde(default)]
    pub track_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandAccepted {
    pub command_id: String,
    /// The `playback.events` envelope id.
    pub event_id: String,
    pub device_id: String,
    pub action: String,
}

fn parse_action(req: &CommandRequest) -> Result<EventType, ApiError> {
    let t = match req.action.as_str() {
        "play" => EventType::PlaybackPlay,
        "pause" => EventType::PlaybackPause,
        "resume" => EventType::PlaybackResume,
        "seek" => EventType::PlaybackSeek,
        "next" => EventType::PlaybackNext,
        "previous" => EventType::PlaybackPrevious,
        "volume" => EventType::PlaybackVolume,
        _ => {
            return Err(ApiError::invalid_field(
                "action",
                "must be one of play, pause, resume, seek, next, previous, volume",
            ));
        }
    };
    if let Some(p) = req.position_ms
        && p < 0
    {
        return Err(ApiError::invalid_field("position_ms", "must be 0 or more"));
    }
    if t == EventType::PlaybackSeek && req.position_ms.is_none() {
        return Err(ApiError::invalid_field(
            "position_ms",
            "seek needs a position",
        ));
    }
    match (t, req.volume) {
        (EventType::PlaybackVolume, None) => {
            return Err(ApiError::invalid_field(
                "volume",
                "volume needs a level 0–100",
            ));
        }
        (_, Some(v)) if !(0..=100).contains(&v) => {
            return Err(ApiError::invalid_field("volume", "must be 0–100"));
        }
        _ => {}
    }
    if let Some(id) = &req.track_id
        && (id.is_empty() || id.len() > 200)
    {
        return Err(ApiError::invalid_field(
            "track_id",
            "must be 1–200 characters",
        ));
    }
    Ok(t)
}

fn device_offline() -> ApiError {
    ApiError::conflict(
        "device_offline",
        "the device is offline (no live device socket); commands are not queued",
    )
}

/// Checks and writes one command; shared by the HTTP route and the browser socket.
pub async fn issue_command(
    st: &AppState,
    caller: &Caller,
    device_id: &str,
    req: &CommandRequest,
) -> Result<CommandAccepted, ApiError> {
    caller.require_user()?;
    let kind = parse_action(req)?;
    let d = st
        .db
        .device(&caller.user_id, device_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such device"))?;
    let now = now_millis();
    let window = st.config.online_window.as_millis() as i64;
    let live =
        d.online && d.control_conn.is_some() && d.last_seen.is_some_and(|t| now - t <= window);
    if !live {
        return Err(device_offline());
    }
    let command_id = uuid::Uuid::new_v4().to_string();
    let mut data = json!({
        "command_id": command_id,
        "device_id": d.id,
        "user_id": d.user_id,
        "action": req.action,
        "issued_by": format!("user/{}", caller.user_id),
    });
    if let Some(p) = req.position_ms {
        data["position_ms"] = json!(p);
    }
    if let Some(v) = req.volume {
        data["volume"] = json!(v);
    }
    if let Some(t) = &req.track_id {
        data["track_id"] = json!(t);
    }
    let ev = outbox_event(
        &st.event_source(),
        kind,
        &d.id,
        format!("device/{}", d.id),
        data,
        now,
    );
    let event_id = ev.id.clone();
    st.db.insert_events(&[ev]).await.map_err(store_error)?;
    st.events_written();
    info!(user = %caller.user_id, device = %d.id, action = %req.action, command = %command_id, "remote command issued");
    Ok(CommandAccepted {
        command_id,
        event_id,
        device_id: d.id,
        action: req.action.clone(),
    })
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "remote control", request_body = CommandRequest, params(("id" = String, Path)), responses((status = 202, body = CommandAccepted, description = "on its way to the device; its new state arrives as now_playing"), (status = 403, description = "a device credential cannot command", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 409, description = "device_offline: no live device socket", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn command(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let accepted = issue_command(&st, &caller, &id, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NowPlaying {
    pub device_id: String,
    /// The state as the device last reported it.
    #[schema(value_type = Object)]
    pub state: Value,
    pub updated_at: i64,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/now-playing", tag = "remote control", params(("id" = String, Path)), responses((status = 200, body = NowPlaying), (status = 404, description = "no such device, or it never reported a state", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn now_playing(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<NowPlaying>, ApiError> {
    let all = st
        .db
        .now_playing(&caller.user_id)
        .await
        .map_err(store_error)?;
    all.into_iter()
        .find(|(d, _, _)| *d == id)
        .map(|(device_id, state, updated_at)| {
            Json(NowPlaying {
                device_id,
                state: serde_json::from_str(&state).unwrap_or(Value::Null),
                updated_at,
            })
        })
        .ok_or_else(|| ApiError::not_found("no such device, or it has not reported a state"))
}

// ---- sockets --------------------------------------------------------------------

pub(crate) fn error_msg(code: &str, message: &str, request_id: Option<&Value>) -> String {
    let mut m = json!({"type": "error", "error": {"code": code, "message": message}});
    if let Some(r) = request_id {
        m["request_id"] = r.clone();
    }
    m.to_string()
}

/// The caller from the upgrade request's header, if it has one.
fn header_caller(st: &AppState, headers: &HeaderMap) -> Option<Result<Caller, ApiError>> {
    let v = headers.get(AUTHORIZATION)?;
    let token = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    Some(Caller::from_token(st, token))
}

/// The first message must be `{"type":"auth","token":…}`.
async fn first_message_caller(st: &AppState, socket: &mut WebSocket) -> Option<Caller> {
    let msg = tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await;
    let text = match msg {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(_) => return None,
        Err(_) => {
            let _ = socket
                .send(Message::text(error_msg(
                    "unauthorized",
                    "no auth message in time",
                    None,
                )))
                .await;
            return None;
        }
    };
    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
    let token = (v["type"] == "auth").then(|| v["token"].as_str()).flatten();
    let result = match token {
        Some(t) => Caller::from_token(st, t),
        None => Err(ApiError::unauthorized(
            "the first message must be {\"type\":\"auth\",\"token\":…}",
        )),
    };
    match result {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = socket
                .send(Message::text(error_msg(e.code, &e.message, None)))
                .await;
            None
        }
    }
}

/// Resolves the caller before or just after the upgrade.
enum Auth {
    Known(Caller),
    FirstMessage,
}

fn socket_auth(st: &AppState, headers: &HeaderMap) -> Result<Auth, ApiError> {
    match header_caller(st, headers) {
        Some(Ok(c)) => Ok(Auth::Known(c)),
        Some(Err(e)) => Err(e),
        None => Ok(Auth::FirstMessage),
    }
}

async fn authenticate(st: &AppState, auth: Auth, socket: &mut WebSocket) -> Option<Caller> {
    let caller = match auth {
        Auth::Known(c) => c,
        Auth::FirstMessage => first_message_caller(st, socket).await?,
    };
    let open = st.hub.sockets_of(&caller.user_id);
    if open >= st.config.quotas.sockets {
        info!(user = %caller.user_id, open, "socket refused: quota reached");
        let _ = socket
            .send(Message::text(error_msg(
                "quota_exceeded",
                &format!(
                    "You have {open} connections open, the most this server allows: close a tab or an app first."
                ),
                None,
            )))
            .await;
        return None;
    }
    if sessions_ended_since(st, &caller).await {
        let _ = socket
            .send(Message::text(error_msg(
                "session_ended",
                "your sessions were ended; sign in again",
                None,
            )))
            .await;
        return None;
    }
    Some(caller)
}

/// The user's sessions were ended after this access token was issued (it still
/// verifies for the rest of its short life, but opens no socket).
async fn sessions_ended_since(st: &AppState, caller: &Caller) -> bool {
    match st.db.sessions_ended_at(&caller.user_id).await {
        Ok(Some(at)) => caller.issued_at < at,
        Ok(None) => false,
        Err(e) => {
            warn!(user = %caller.user_id, error = %e, "sessions check failed; socket allowed");
            false
        }
    }
}

/// When a socket opened with `caller`'s token must close (its token's end).
fn socket_deadline(caller: &Caller) -> tokio::time::Instant {
    let left = (caller.expires_at - now_millis()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_millis(left)
}

/// An in-band `{"type":"auth","token":…}` on an open socket: a fresh access token of
/// the same user (and device) moves the socket's end to the new token's.
fn reauth(st: &AppState, caller: &Caller, v: &Value) -> Result<Caller, ApiError> {
    let token = v["token"]
        .as_str()
        .ok_or_else(|| ApiError::unauthorized("auth needs a token"))?;
    let fresh = Caller::from_token(st, token)?;
    if fresh.user_id != caller.user_id || fresh.device != caller.device {
        return Err(ApiError::forbidden(
            "the token is another user's or device's",
        ));
    }
    Ok(fresh)
}

/// A message that is an in-band `auth`, parsed; `None` for every other message.
fn auth_message(text: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    (v["type"] == "auth").then_some(v)
}

/// Handles an in-band `auth`: the answer to send, and whether the socket stays open.
fn on_auth(st: &AppState, caller: &mut Caller, v: &Value) -> (String, bool) {
    let rid = v.get("request_id");
    match reauth(st, caller, v) {
        Ok(fresh) => {
            *caller = fresh;
            let mut ok = json!({"type": "auth_ok", "expires_at": caller.expires_at});
            if let Some(r) = rid {
                ok["request_id"] = r.clone();
            }
            (ok.to_string(), true)
        }
        Err(e) => (error_msg(e.code, &e.message, rid), false),
    }
}

#[utoipa::path(get, path = "/api/v1/devices/socket", tag = "remote control", responses((status = 101, description = "WebSocket for a paired device: commands down, heartbeats and state up (see docs/events.md)"), (status = 401, description = "bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn device_socket(
    State(st): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let auth = socket_auth(&st, &headers)?;
    if let Auth::Known(c) = &auth
        && c.device.is_none()
    {
        return Err(ApiError::forbidden(
            "the device socket needs a device credential (from pairing)",
        ));
    }
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            let Some(caller) = authenticate(&st, auth, &mut socket).await else {
                return;
            };
            let Some(device_id) = caller.device.clone() else {
                let _ = socket
                    .send(Message::text(error_msg(
                        "forbidden",
                        "the device socket needs a device credential (from pairing)",
                        None,
                    )))
                    .await;
                return;
            };
            run_device_socket(st, caller, device_id, socket).await;
        }))
}

async fn presence(st: &AppState, caller: &Caller, device_id: &str, p: Presence) -> bool {
    let now = now_millis();
    let source = st.event_source();
    match st
        .db
        .update_presence(Some(&caller.user_id), device_id, &p, now, |c| {
            presence_events(&source, c, now)
        })
        .await
    {
        Ok(Some(_)) => {
            st.events_written();
            true
        }
        Ok(None) => false,
        Err(e) => {
            warn!(device = %device_id, error = %e, "presence update failed");
            true
        }
    }
}

async fn run_device_socket(
    st: AppState,
    mut caller: Caller,
    device_id: String,
    mut socket: WebSocket,
) {
    let conn = uuid::Uuid::new_v4().to_string();
    let mut rx = st.hub.register_device(&device_id, &conn, &caller.user_id);
    let connect = Presence::Connect {
        conn: conn.clone(),
        capabilities: None,
    };
    if !presence(&st, &caller, &device_id, connect).await {
        // The device was removed while its credential still verified.
        let _ = socket
            .send(Message::text(error_msg(
                "not_found",
                "no such device",
                None,
            )))
            .await;
        st.hub.unregister_device(&device_id, &conn);
        return;
    }
    info!(user = %caller.user_id, device = %device_id, "device socket open");
    let window = st.config.online_window;
    let welcome = json!({
        "type": "welcome",
        "device_id": device_id,
        "heartbeat_interval_ms": (window.as_millis() / 3) as u64,
    });
    let mut open = socket
        .send(Message::text(welcome.to_string()))
        .await
        .is_ok();
    let mut last_heard = tokio::time::Instant::now();
    let mut deadline = socket_deadline(&caller);
    while open {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    last_heard = tokio::time::Instant::now();
                    if let Some(v) = auth_message(t.as_str()) {
                        let (reply, keep) = on_auth(&st, &mut caller, &v);
                        deadline = socket_deadline(&caller);
                        open = socket.send(Message::text(reply)).await.is_ok() && keep;
                    } else if let Some(reply) = on_device_message(&st, &caller, &device_id, t.as_str()).await {
                        open = socket.send(Message::text(reply)).await.is_ok();
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_heard = tokio::time::Instant::now(),
                Some(Ok(Message::Binary(_))) => {
                    open = socket.send(Message::text(error_msg("bad_message", "messages are JSON text", None))).await.is_ok();
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => open = false,
            },
            out = rx.recv() => match out {
                Some(text) => open = socket.send(Message::text(text)).await.is_ok(),
                // Replaced by a newer socket of the same device.
                None => open = false,
            },
            _ = tokio::time::sleep_until(last_heard + window) => {
                info!(device = %device_id, "device socket silent for the online window; closing");
                open = false;
            }
            () = tokio::time::sleep_until(deadline) => {
                info!(device = %device_id, "device socket's token expired without a fresh one; closing");
                let _ = socket.send(Message::text(error_msg("token_expired", "the access token has expired; reconnect with a fresh one", None))).await;
                open = false;
            }
        }
    }
    st.hub.unregister_device(&device_id, &conn);
    presence(&st, &caller, &device_id, Presence::Disconnect { conn }).await;
    info!(user = %caller.user_id, device = %device_id, "device socket closed");
}

#[derive(Debug, Deserialize)]
struct PlaybackState {
    status: String,
    #[serde(default)]
    position_ms: Option<i64>,
    #[serde(default)]
    volume: Option<i64>,
    #[serde(default)]
    track: Option<Value>,
    /// The device is publishing its live stream (`POST /devices/{id}/stream`).
    #[serde(default)]
    live: Option<bool>,
}

fn parse_state(v: &Value) -> Result<PlaybackState, &'static str> {
    let s: PlaybackState =
        serde_json::from_value(v.clone()).map_err(|_| "state must be an object with a status")?;
    if !["playing", "paused", "stopped"].contains(&s.status.as_str()) {
        return Err("state.status must be playing, paused or stopped");
    }
    if s.position_ms.is_some_and(|p| p < 0) {
        return Err("state.position_ms must be 0 or more");
    }
    if s.volume.is_some_and(|v| !(0..=100).contains(&v)) {
        return Err("state.volume must be 0–100");
    }
    if s.track
        .as_ref()
        .is_some_and(|t| !t.is_object() && !t.is_null())
    {
        return Err("state.track must be an object");
    }
    Ok(s)
}

/// Handles one message from a phone; returns the reply, if any.
async fn on_device_message(
    st: &AppState,
    caller: &Caller,
    device_id: &str,
    text: &str,
) -> Option<String> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return Some(error_msg("malformed_json", "the message is not JSON", None)),
    };
    let rid = v.get("request_id");
    match v["type"].as_str() {
        Some("heartbeat") => {
            let capabilities = match v.get("capabilities") {
                None | Some(Value::Null) => None,
                Some(c) => match serde_json::from_value::<Capabilities>(c.clone()) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        return Some(error_msg(
                            "invalid_message",
                            "capabilities must be {mic, camera, screen}",
                            rid,
                        ));
                    }
                },
            };
            presence(st, caller, device_id, Presence::Heartbeat { capabilities }).await;
            None
        }
        Some("state") => {
            let state = match parse_state(&v["state"]) {
                Ok(s) => s,
                Err(m) => return Some(error_msg("invalid_message", m, rid)),
            };
            let now = now_millis();
            let state_json = json!({
                "status": state.status,
                "position_ms": state.position_ms,
                "volume": state.volume,
                "track": state.track,
                "live": state.live.unwrap_or(false),
            });
            let mut data = json!({
                "device_id": device_id,
                "user_id": caller.user_id,
                "state": state_json,
            });
            if let Some(c) = v.get("command_id").and_then(Value::as_str) {
                data["command_id"] = json!(c);
            }
            let source = st.event_source();
            // The state's number is the store's to give (the history orders by it).
            let event = move |seq: i64| {
                data["seq"] = json!(seq);
                outbox_event(
                    &source,
                    EventType::NowPlayingUpdated,
                    device_id,
                    format!("device/{device_id}"),
                    data,
                    now,
                )
            };
            match st
                .db
                .record_now_playing(
                    &caller.user_id,
                    device_id,
                    &state_json.to_string(),
                    now,
                    event,
                )
                .await
            {
                Ok(true) => {
                    st.events_written();
                    debug!(device = %device_id, "playback state recorded");
                    None
                }
                Ok(false) => Some(error_msg("not_found", "no such device", rid)),
                Err(e) => {
                    warn!(device = %device_id, error = %e, "recording playback state failed");
                    Some(error_msg(
                        "internal",
                        "storage is unavailable; send the state again",
                        rid,
                    ))
                }
            }
        }
        Some("track_ended") => {
            let now = now_millis();
            let data = json!({
                "device_id": device_id,
                "user_id": caller.user_id,
                "track": v.get("track").cloned().unwrap_or(Value::Null),
            });
            let ev = outbox_event(
                &st.event_source(),
                EventType::PlaybackTrackEnded,
                device_id,
                format!("device/{device_id}"),
                data,
                now,
            );
            match st.db.insert_events(&[ev]).await {
                Ok(()) => {
                    st.events_written();
                    None
                }
                Err(e) => {
                    warn!(device = %device_id, error = %e, "recording track end failed");
                    Some(error_msg(
                        "internal",
                        "storage is unavailable; send it again",
                        rid,
                    ))
                }
            }
        }
        Some("ping") => Some(json!({"type": "pong"}).to_string()),
        _ => Some(error_msg(
            "unknown_message",
            "type must be heartbeat, state, track_ended or ping",
            rid,
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/events/socket", tag = "remote control", responses((status = 101, description = "WebSocket for a user's browser: snapshot, then now_playing and device_status pushes; commands up (see docs/events.md)"), (status = 401, description = "bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn browser_socket(
    State(st): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let auth = socket_auth(&st, &headers)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            let Some(caller) = authenticate(&st, auth, &mut socket).await else {
                return;
            };
            run_browser_socket(st, caller, socket).await;
        }))
}

async fn snapshot(st: &AppState, caller: &Caller) -> Result<String, String> {
    let devices = st
        .db
        .list_devices(&caller.user_id)
        .await
        .map_err(|e| e.to_string())?;
    let playing = st
        .db
        .now_playing(&caller.user_id)
        .await
        .map_err(|e| e.to_string())?;
    let devices: Vec<_> = devices.into_iter().map(|d| view(st, d)).collect();
    let playing: Vec<Value> = playing
        .into_iter()
        .map(|(device_id, state, updated_at)| {
            json!({
                "device_id": device_id,
                "state": serde_json::from_str::<Value>(&state).unwrap_or(Value::Null),
                "updated_at": updated_at,
            })
        })
        .collect();
    Ok(json!({"type": "snapshot", "devices": devices, "now_playing": playing}).to_string())
}

async fn run_browser_socket(st: AppState, mut caller: Caller, mut socket: WebSocket) {
    // Registered before the snapshot is read, so nothing falls between the two.
    let (id, mut rx) = st.hub.register_user(&caller.user_id);
    let first = match snapshot(&st, &caller).await {
        Ok(s) => s,
        Err(e) => {
            warn!(user = %caller.user_id, error = %e, "snapshot failed");
            error_msg("internal", "storage is unavailable; reconnect", None)
        }
    };
    let mut open = socket.send(Message::text(first)).await.is_ok();
    debug!(user = %caller.user_id, "browser socket open");
    let mut deadline = socket_deadline(&caller);
    let mut live = Liveness::new(std::time::Instant::now(), st.config.websocket_idle);
    while open {
        tokio::select! {
            m = socket.recv() => {
                if matches!(m, Some(Ok(_))) {
                    live.heard(std::time::Instant::now());
                }
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(v) = auth_message(t.as_str()) {
                            let (reply, keep) = on_auth(&st, &mut caller, &v);
                            deadline = socket_deadline(&caller);
                            open = socket.send(Message::text(reply)).await.is_ok() && keep;
                        } else {
                            let reply = on_browser_message(&st, &caller, t.as_str()).await;
                            open = socket.send(Message::text(reply)).await.is_ok();
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        open = socket.send(Message::text(error_msg("bad_message", "messages are JSON text", None))).await.is_ok();
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => open = false,
                }
            }
            out = rx.recv() => match out {
                Some(text) => open = socket.send(Message::text(text)).await.is_ok(),
                // Dropped by the hub: this socket fell too far behind, or its
                // sessions were ended.
                None => open = false,
            },
            () = tokio::time::sleep_until(live.wake_at().into()) => match live.due(std::time::Instant::now()) {
                Due::Ping => open = socket.send(Message::Ping(Default::default())).await.is_ok(),
                Due::Idle => {
                    info!(user = %caller.user_id, idle_secs = live.idle().as_secs(), "browser socket silent (no pong); closing");
                    open = false;
                }
                Due::Nothing => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                debug!(user = %caller.user_id, "browser socket's token expired without a fresh one; closing");
                let _ = socket.send(Message::text(error_msg("token_expired", "the access token has expired; reconnect with a fresh one", None))).await;
                open = false;
            }
        }
    }
    st.hub.unregister_user(&caller.user_id, id);
    debug!(user = %caller.user_id, "browser socket closed");
}

async fn on_browser_message(st: &AppState, caller: &Caller, text: &str) -> String {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return error_msg("malformed_json", "the message is not JSON", None),
    };
    let rid = v.get("request_id");
    match v["type"].as_str() {
        Some("command") => {
            let Some(device) = v["device_id"].as_str() else {
                return error_msg("invalid_message", "command needs device_id", rid);
            };
            let req: CommandRequest = match serde_json::from_value(v.clone()) {
                Ok(r) => r,
                Err(e) => return error_msg("invalid_message", &e.to_string(), rid),
            };
            match issue_command(st, caller, device, &req).await {
                Ok(a) => {
                    let mut m = json!({"type": "command_accepted", "command_id": a.command_id, "event_id": a.event_id, "device_id": a.device_id, "action": a.action});
                    if let Some(r) = rid {
                        m["request_id"] = r.clone();
                    }
                    m.to_string()
                }
                Err(e) => error_msg(e.code, &e.message, rid),
            }
        }
        Some("ping") => json!({"type": "pong"}).to_string(),
        _ => error_msg("unknown_message", "type must be command or ping", rid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: &str, position_ms: Option<i64>, volume: Option<i64>) -> CommandRequest {
        CommandRequest {
            action: action.into(),
            position_ms,
            volume,
            track_id: None,
        }
    }

    #[test]
    fn commands_are_validated() {
        assert_eq!(
            parse_action(&req("pause", None, None)).unwrap(),
            EventType::PlaybackPause
        );
        assert_eq!(
            parse_action(&req("seek", Some(5), None)).unwrap(),
            EventType::PlaybackSeek
        );
        assert_eq!(
            parse_action(&req("volume", None, Some(100))).unwrap(),
            EventType::PlaybackVolume
        );
        for (bad, field) in [
            (req("rewind", None, None), "action"),
            (req("seek", None, None), "position_ms"),
            (req("seek", Some(-1), None), "position_ms"),
            (req("volume", None, None), "volume"),
            (req("volume", None, Some(101)), "volume"),
        ] {
            assert_eq!(parse_action(&bad).unwrap_err().field, Some(field));
        }
    }

    #[test]
    fn states_are_validated() {
        assert!(parse_state(&json!({"status": "playing", "position_ms": 3, "volume": 50})).is_ok());
        assert!(parse_state(&json!({"status": "dancing"})).is_err());
        assert!(parse_state(&json!({"status": "paused", "position_ms": -4})).is_err());
        assert!(parse_state(&json!({"status": "paused", "volume": 120})).is_err());
        assert!(parse_state(&json!({"status": "paused", "track": 3})).is_err());
        assert!(parse_state(&json!("playing")).is_err());
    }
}
