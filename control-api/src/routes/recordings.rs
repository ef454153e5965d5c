//! Recordings of rooms: start, stop, list, get, and their files.
//!
//! Who may: the room's owner (an access token), or a join token for the room with
//! the `record` grant; a file also opens with the signed link its recording's view
//! carries (`files[].url`). The media node does the recording behind [`RecordingControl`];
//! this module owns the rows and their `recording.events` (each status change and its
//! event are one transaction, and only a real change writes one).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use events::EventType;
use serde::Serialize;
use serde_json::{Value, json};
use signaling::ApiError;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::events::outbox_event;
use crate::openapi::ErrorBody;
use crate::state::{AppState, Caller, bearer, store_error};
use crate::store::podcasts::PodcastStore;
use crate::store::retention::RetentionStore;
use crate::store::{OutboxEvent, Recording, RecordingChange, Room, Store, StoreError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The media node's side of recordings.
pub trait RecordingControl: Send + Sync {
    /// Starts writing recording `id` of `room` on this node.
    fn start<'a>(&'a self, id: &'a str, room: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Stops it; resolves with the closed manifest (JSON) once its files are closed,
    /// `None` when it is not running on this node.
    fn stop<'a>(
        &'a self,
        id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>>;
    /// The recording running for a room on this node, if any.
    fn recording_of_room(&self, room: &str) -> Option<String>;
}

pub type Recordings = Option<Arc<dyn RecordingControl>>;

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingView {
    pub id: String,
    /// The id of the room it was made in.
    pub room: String,
    /// `recording`, `stopped`, `uploaded` or `failed`.
    pub status: String,
    pub started_by: String,
    pub started_at: i64,
    pub stopped_at: Option<i64>,
    pub uploaded_at: Option<i64>,
    /// Why it stopped: `stopped` (asked), `handed_over` (its node drained; the
    /// recording that `continues` it goes on), `interrupted` (its node died), ….
    pub stop_reason: Option<String>,
    pub failure: Option<String>,
    /// The recording this one continues (its node drained while recording).
    pub continues: Option<String>,
    /// The last failed upload attempt (uploads are retried until they succeed).
    pub last_error: Option<String>,
    /// The recorder's manifest: one entry per track file.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
    /// Object-store keys of the files and the manifest, once uploaded.
    pub objects: Option<Vec<String>>,
    /// Podcast mixdowns of this recording, newest first (their results: the episode,
    /// one stem per speaker, waveforms).
    pub mixdowns: Vec<crate::routes::jobs::JobView>,
    /// The uploaded files with links that open them for a few hours (for players and
    /// downloads, which cannot send a token).
    pub files: Vec<FileLink>,
    /// Chapter markers set while recording, by time.
    pub markers: Vec<crate::routes::podcasts::MarkerView>,
    /// When its raw tracks were deleted, past the room's retention (the manifest and
    /// mixdowns stay).
    pub tracks_deleted_at: Option<i64>,
}

/// A stored file and a signed link to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileLink {
    pub name: String,
    pub url: String,
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One path segment, percent-encoded (a stem's name holds a `/`).
pub(crate) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A link to a file under `dir` (an API path), valid for [`crate::links::LINK_TTL`].
pub(crate) fn link(st: &AppState, dir: &str, name: &str) -> FileLink {
    let path = format!("{dir}/{}", encode_segment(name));
    FileLink {
        name: name.to_owned(),
        url: st
            .links
            .sign(&path, now_millis() / 1000, crate::links::LINK_TTL),
    }
}

impl From<Recording> for RecordingView {
    fn from(r: Recording) -> Self {
        RecordingView {
            id: r.id,
            room: r.room_id,
            status: r.status,
            started_by: r.started_by,
            started_at: r.started_at,
            stopped_at: r.stopped_at,
            uploaded_at: r.uploaded_at,
            stop_reason: r.stop_reason,
            failure: r.failure,
            continues: r.continues,
            last_error: r.last_error,
            manifest: r.manifest.and_then(|m| serde_json::from_str(&m).ok()),
            objects: r.objects.and_then(|o| serde_json::from_str(&o).ok()),
            mixdowns: Vec::new(),
            files: Vec::new(),
            markers: Vec::new(),
            tracks_deleted_at: None,
        }
    }
}

/// A recording with its mixdown jobs and links to its files.
async fn view(st: &AppState, r: Recording) -> Result<RecordingView, ApiError> {
    let jobs = st.db.recording_jobs(&r.id).await.map_err(store_error)?;
    let markers = st.db.markers(&r.id).await.map_err(store_error)?;
    let tracks_deleted_at = st.db.tracks_deleted_at(&r.id).await.map_err(store_error)?;
    // The row may have been read just before the sweeper's transaction (which marks the
    // recording and drops the tracks from its objects together): read it again then.
    let r = match tracks_deleted_at {
        Some(_) => st
            .db
            .recording(&r.id)
            .await
            .map_err(store_error)?
            .unwrap_or(r),
        None => r,
    };
    let dir = format!(
        "/api/v1/rooms/{}/recordings/{}",
        encode_segment(&r.room_id),
        encode_segment(&r.id)
    );
    let prefix = format!("{}/{}/", r.sfu_room, r.id);
    let mut v = RecordingView::from(r);
    v.markers = markers.into_iter().map(Into::into).collect();
    v.tracks_deleted_at = tracks_deleted_at;
    v.files = v
        .objects
        .iter()
        .flatten()
        .filter_map(|key| key.strip_prefix(&prefix))
        .map(|name| link(st, &format!("{dir}/files"), name))
        .collect();
    v.mixdowns = jobs
        .into_iter()
        .map(|j| {
            let files = format!("{dir}/mixdown/{}/files", encode_segment(&j.id));
            crate::routes::jobs::JobView::from(j).with_links(st, &files)
        })
        .collect();
    Ok(v)
}

/// Who asks: the owner's access token, or a join token (its room and grants).
#[derive(Debug)]
pub enum RecordCaller {
    User(Caller),
    Token {
        room: String,
        identity: String,
        record: bool,
        binding: Option<signaling::token::RoomBinding>,
    },
}

impl FromRequestParts<AppState> for RecordCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <access or join token>")
        })?;
        if let Ok(c) = Caller::from_token(st, token) {
            return Ok(RecordCaller::User(c));
        }
        match st.join_signer.verifier().verify(token) {
            Ok(g) => Ok(RecordCaller::Token {
                room: g.room.as_str().to_owned(),
                identity: g.identity,
                record: g.grants.record,
                binding: g.binding,
            }),
            Err(_) => Err(ApiError::unauthorized(
                "the token is neither a valid access token nor a valid join token",
            )),
        }
    }
}

impl RecordCaller {
    /// The room, if this caller may record it; who they are.
    /// `room` is the path's: the room's id, or its name (the owner's name for it).
    async fn authorize(&self, st: &AppState, room: &str) -> Result<(Room, String), ApiError> {
        match self {
            RecordCaller::User(c) => {
                c.require_user()?;
                let r = crate::routes::rooms::own_room(st, c, room).await?;
                Ok((r, c.user_id.clone()))
            }
            RecordCaller::Token {
                room: granted,
                identity,
                record,
                binding,
            } => {
                // The token names the SFU room: the room's id.
                let Some(r) = st
                    .db
                    .room_by_id(granted)
                    .await
                    .map_err(store_error)?
                    .filter(|r| room == r.id || room == r.name)
                else {
                    return Err(ApiError::forbidden("the join token is for another room"));
                };
                if binding
                    .as_ref()
                    .is_some_and(|b| !crate::routes::rooms::binding_is_current(&r, b))
                {
                    return Err(ApiError::unauthorized(
                        "the join token was revoked: the room was reset or its access changed",
                    ));
                }
                if !record {
                    return Err(ApiError::forbidden("the join token has no record grant"));
                }
                Ok((r, identity.clone()))
            }
        }
    }
}

fn control(st: &AppState) -> Result<Arc<dyn RecordingControl>, ApiError> {
    st.recordings.clone().ok_or_else(|| {
        ApiError::unavailable(
            "recording_unavailable",
            "this node does not record (it runs the API only)",
        )
    })
}

/// A `recording.events` row for a recording.
pub fn recording_event(
    st: &AppState,
    kind: EventType,
    rec_id: &str,
    room: &str,
    data: Value,
) -> OutboxEvent {
    let mut data = data;
    if let Value::Object(m) = &mut data {
        m.insert("recording_id".into(), json!(rec_id));
        m.insert("room".into(), json!(room));
    }
    outbox_event(
        &st.event_source(),
        kind,
        room,
        format!("recording/{rec_id}"),
        data,
        now_millis(),
    )
}

/// A new row, `recording` from now on `node_id`: of the room `room_id` (owned by
/// `owner_id`), recording its SFU room `sfu_room`.
fn new_recording(
    (room_id, sfu_room, owner_id): (&str, &str, &str),
    started_by: &str,
    node_id: &str,
    continues: Option<String>,
) -> Recording {
    Recording {
        id: uuid::Uuid::new_v4().simple().to_string(),
        room_id: room_id.to_owned(),
        sfu_room: sfu_room.to_owned(),
        owner_id: owner_id.to_owned(),
        started_by: started_by.to_owned(),
        node_id: node_id.to_owned(),
        status: "recording".into(),
        started_at: now_millis(),
        stopped_at: None,
        uploaded_at: None,
        stop_reason: None,
        failure: None,
        last_error: None,
        manifest: None,
        objects: None,
        continues,
    }
}

/// Starts a recording of a room on this node (also auto-record). `Conflict` when the
/// room is being recorded.
pub async fn start_recording(
    st: &AppState,
    room: &Room,
    started_by: &str,
) -> Result<Recording, ApiError> {
    let ctl = control(st)?;
    let rec = new_recording(
        (&room.id, &room.id, &room.owner_id),
        started_by,
        &st.node_id,
        None,
    );
    let ev = recording_event(
        st,
        EventType::RecordingStarted,
        &rec.id,
        &rec.sfu_room,
        json!({ "started_by": started_by, "node_id": rec.node_id }),
    );
    st.db
        .create_recording(&rec, ev)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::conflict("already_recording", "the room is already being recorded")
            }
            other => store_error(other),
        })?;
    if let Err(reason) = ctl.start(&rec.id, &rec.sfu_room).await {
        warn!(recording = %rec.id, room = %rec.sfu_room, %reason, "recording could not start");
        mark_failed(st, &rec.id, &rec.sfu_room, &reason)
            .await
            .map_err(store_error)?;
        return Err(ApiError::unavailable(
            "recording_failed",
            format!("the recording could not start: {reason}"),
        ));
    }
    st.events_written();
    info!(recording = %rec.id, room = %rec.sfu_room, by = %started_by, "recording started");
    Ok(rec)
}

/// A recording of `old`'s room on `node_id`, continuing `old` (its node drains and the
/// room moved there): the row and its `recording.started` event. The node named
/// starts it when it sees the row (its recorder is there, not here).
pub async fn continue_recording(
    st: &AppState,
    old: &Recording,
    node_id: &str,
) -> Result<Recording, StoreError> {
    let rec = new_recording(
        (&old.room_id, &old.sfu_room, &old.owner_id),
        &old.started_by,
        node_id,
        Some(old.id.clone()),
    );
    let ev = recording_event(
        st,
        EventType::RecordingStarted,
        &rec.id,
        &rec.sfu_room,
        json!({ "started_by": rec.started_by, "node_id": rec.node_id, "continues": old.id }),
    );
    st.db.create_recording(&rec, ev).await?;
    st.events_written();
    info!(recording = %rec.id, continues = %old.id, room = %rec.sfu_room, node = %node_id, "recording handed over");
    Ok(rec)
}

/// Marks a recording that is still `recording` failed, with its reason and its
/// `recording.failed` event (idempotent, like every status change).
pub async fn mark_failed(
    st: &AppState,
    id: &str,
    room: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let ev = recording_event(
        st,
        EventType::RecordingFailed,
        id,
        room,
        json!({ "reason": reason }),
    );
    let change = RecordingChange {
        status: "failed".into(),
        stopped_at: Some(now_millis()),
        failure: Some(reason.to_owned()),
        ..RecordingChange::default()
    };
    let changed = st
        .db
        .change_recording(id, &["recording"], change, vec![ev])
        .await?;
    if changed {
        st.events_written();
    }
    Ok(changed)
}

/// Marks a recording stopped with its manifest (idempotent: only the first call
/// writes `recording.stopped`).
pub async fn mark_stopped(
    st: &AppState,
    id: &str,
    room: &str,
    manifest: &Value,
) -> Result<bool, StoreError> {
    let reason = manifest["stop_reason"]
        .as_str()
        .unwrap_or("requested")
        .to_owned();
    let tracks = manifest["tracks"].as_array().map_or(0, Vec::len);
    let ev = recording_event(
        st,
        EventType::RecordingStopped,
        id,
        room,
        json!({ "reason": reason, "tracks": tracks }),
    );
    let changed = st
        .db
        .change_recording(
            id,
            &["recording"],
            RecordingChange {
                status: "stopped".into(),
                stopped_at: Some(manifest["stopped_at"].as_i64().unwrap_or_else(now_millis)),
                stop_reason: Some(reason),
                manifest: Some(manifest.to_string()),
                ..RecordingChange::default()
            },
            vec![ev],
        )
        .await?;
    if changed {
        st.events_written();
    }
    Ok(changed)
}

#[utoipa::path(post, path = "/api/v1/rooms/{name}/recordings", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 201, body = RecordingView), (status = 403, description = "no record grant", body = ErrorBody), (status = 404, description = "no such room", body = ErrorBody), (status = 409, description = "already recording", body = ErrorBody), (status = 503, description = "this node does not record", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn start(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (room, who) = caller.authorize(&st, &name).await?;
    // The recorder is on the room's media server: the request goes there.
    if let Some(base) = crate::cluster::media_node_for(&st, &headers, &room.id, None).await? {
        let url = format!("{base}/api/v1/rooms/{}/recordings", room.id);
        return crate::cluster::forward(&st, &headers, reqwest::Method::POST, url).await;
    }
    let rec = start_recording(&st, &room, &who).await?;
    Ok((StatusCode::CREATED, Json(view(&st, rec).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/recordings", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = Vec<RecordingView>), (status = 403, description = "no record grant", body = ErrorBody), (status = 404, description = "no such room", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<RecordingView>>, ApiError> {
    let (room, _) = caller.authorize(&st, &name).await?;
    let recs = st.db.room_recordings(&room.id).await.map_err(store_error)?;
    let mut out = Vec::with_capacity(recs.len());
    for r in recs {
        out.push(view(&st, r).await?);
    }
    Ok(Json(out))
}

pub(crate) async fn room_recording(
    st: &AppState,
    caller: &RecordCaller,
    name: &str,
    id: &str,
) -> Result<Recording, ApiError> {
    let (room, _) = caller.authorize(st, name).await?;
    recording_in(st, &room, id).await
}

/// Recording `id` of `room`, for whoever may read it (checked by the caller). Made in
/// this room, not merely in one of the same name: a room deleted and made again is
/// another room.
async fn recording_in(st: &AppState, room: &Room, id: &str) -> Result<Recording, ApiError> {
    match st.db.recording(id).await.map_err(store_error)? {
        Some(r) if r.room_id == room.id => Ok(r),
        _ => Err(ApiError::not_found("no such recording in this room")),
    }
}

/// The recording a file route names, for its caller or its signed link (made for this
/// path by someone who could read it).
pub(crate) async fn file_recording(
    st: &AppState,
    access: &crate::links::FileAccess<RecordCaller>,
    name: &str,
    id: &str,
) -> Result<Recording, ApiError> {
    match access {
        crate::links::FileAccess::Caller(c) => room_recording(st, c, name, id).await,
        // Links are made for the room's id (see `view`).
        crate::links::FileAccess::Link => {
            let room = st
                .db
                .room_by_id(name)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found("no such room"))?;
            recording_in(st, &room, id).await
        }
    }
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/recordings/{id}", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), responses((status = 200, body = RecordingView), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<RecordingView>, ApiError> {
    let r = room_recording(&st, &caller, &name, &id).await?;
    Ok(Json(view(&st, r).await?))
}

/// One uploaded file of a recording (a track, or the manifest), ranges allowed.
#[utoipa::path(get, path = "/api/v1/rooms/{name}/recordings/{id}/files/{file}", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path), ("file" = String, Path)), responses((status = 200, description = "the file"), (status = 206, description = "the asked range"), (status = 404, description = "no such room, recording or file (or not uploaded yet)", body = ErrorBody), (status = 401, description = "no or bad token or link", body = ErrorBody)), security(("bearer" = [])))]
pub async fn file(
    State(st): State<AppState>,
    access: crate::links::FileAccess<RecordCaller>,
    Path((name, id, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = file_recording(&st, &access, &name, &id).await?;
    let key = format!("{}/{}/{file}", rec.sfu_room, rec.id);
    let stored: Vec<String> = rec
        .objects
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    if !stored.contains(&key) {
        return Err(ApiError::not_found(
            "no such file in this recording (or it is not uploaded yet)",
        ));
    }
    let store = crate::routes::jobs::objects(&st)?;
    crate::routes::files::serve_object(&*store, &key, &file, &headers).await
}

/// Stops a recording: its files are closed (fsynced) before this returns; the upload
/// follows (status `uploaded` when the store has confirmed every file).
#[utoipa::path(post, path = "/api/v1/rooms/{name}/recordings/{id}/stop", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), responses((status = 200, body = RecordingView), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 409, description = "not recording (stopped already)", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn stop(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = room_recording(&st, &caller, &name, &id).await?;
    if rec.status != "recording" {
        return Err(ApiError::conflict(
            "not_recording",
            format!("the recording is {}, not recording", rec.status),
        ));
    }
    // Its recorder is on the node that holds it.
    if let Some(base) =
        crate::cluster::media_node_for(&st, &headers, &rec.sfu_room, Some(&rec.node_id)).await?
    {
        let url = format!(
            "{base}/api/v1/rooms/{}/recordings/{}/stop",
            rec.room_id, rec.id
        );
        return crate::cluster::forward(&st, &headers, reqwest::Method::POST, url).await;
    }
    stop_recording(&st, &rec, "requested").await?;
    info!(recording = %rec.id, room = %rec.sfu_room, "recording stopped");
    let now = st
        .db
        .recording(&rec.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such recording"))?;
    Ok(Json(view(&st, now).await?).into_response())
}

/// Stops a running recording (`reason` goes into its manifest): closed and marked
/// stopped, or failed when nobody writes it any more.
pub(crate) async fn stop_recording(
    st: &AppState,
    rec: &Recording,
    reason: &str,
) -> Result<(), ApiError> {
    let ctl = control(st)?;
    match ctl.stop(&rec.id, reason).await {
        Err(reason) => {
            // The session's own Failed report records why; say it here too.
            return Err(ApiError::internal(format!(
                "the recording failed to close: {reason}"
            )));
        }
        Ok(Some(manifest)) => {
            mark_stopped(st, &rec.id, &rec.sfu_room, &manifest)
                .await
                .map_err(store_error)?;
        }
        Ok(None) => {
            // Nobody writes it: its node died without a spool to recover from, or it
            // is another node's.
            if rec.node_id != *st.node_id {
                return Err(ApiError::conflict(
                    "other_node",
                    format!("the recording is written by node {}", rec.node_id),
                ));
            }
            mark_failed(st, &rec.id, &rec.sfu_room, "lost: not running on its node")
                .await
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// Deletes a finished recording of the owner's room: its files in the store first (its
/// tracks, manifest and every mixdown's outputs, all under its prefix), then its row,
/// markers and mixdowns. Episodes made from it keep their own copy of the audio.
#[utoipa::path(delete, path = "/api/v1/rooms/{name}/recordings/{id}", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), responses((status = 204, description = "deleted, with its files"), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 403, description = "a join token or device credential cannot delete", body = ErrorBody), (status = 409, description = "still recording, storing, or being mixed down", body = ErrorBody), (status = 503, description = "the object store is unavailable", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    let RecordCaller::User(user) = &caller else {
        return Err(ApiError::forbidden(
            "only the room's owner deletes its recordings",
        ));
    };
    user.require_user()?;
    let rec = room_recording(&st, &caller, &name, &id).await?;
    if !matches!(rec.status.as_str(), "uploaded" | "failed") {
        return Err(ApiError::conflict(
            "recording_in_progress",
            format!(
                "the recording is {}; delete it once it is stored",
                rec.status
            ),
        ));
    }
    let jobs = st.db.recording_jobs(&rec.id).await.map_err(store_error)?;
    if jobs.iter().any(|j| !j.is_final()) {
        return Err(ApiError::conflict(
            "job_in_progress",
            "a mixdown of this recording is running; delete it once it is done",
        ));
    }
    let prefix = format!("{}/{}/", rec.sfu_room, rec.id);
    let store = crate::routes::jobs::objects(&st)?;
    let removed = store.delete_prefix(&prefix).await.map_err(|e| {
        warn!(prefix = %prefix, error = %e, "deleting a recording's files failed");
        ApiError::unavailable(
            "storage_unavailable",
            "the object store is unavailable; try again",
        )
    })?;
    if !st
        .db
        .delete_recording(&rec.owner_id, &rec.id, now_millis())
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("no such recording in this room"));
    }
    info!(recording = %rec.id, room = %rec.sfu_room, files = removed, "recording deleted");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
