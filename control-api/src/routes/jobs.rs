//! Transcode jobs as the API sees them: uploads (an audio file in, Opus at a target
//! loudness and a waveform out) and podcast mixdowns of recordings.
//!
//! This module owns the rows and their `transcode.requested` events; the worker
//! (the node's `worker` module) moves them on. An upload is streamed to a local file
//! (never held in memory), refused past the size limit, typed by its first bytes (the
//! name and `Content-Type` are not trusted), put into the object store, and only then
//! becomes a job — so a job never names an input that is not there.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use events::EventType;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use signaling::ApiError;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::auth::now_millis;
use crate::events::outbox_event;
use crate::extract::{ApiQuery, OptionalJson};
use crate::openapi::ErrorBody;
use crate::routes::recordings::{BoxFuture, RecordCaller};
use crate::state::{AppState, Caller, Quota, store_error, within_quota};
use crate::store::{Job, OutboxEvent, Store};

/// The object store uploads go into and results come out of (the recorder's store on
/// a media node).
pub trait Objects: Send + Sync {
    /// Puts the file at `path` under `key`; resolves with its size once stored.
    fn put_file<'a>(&'a self, key: &'a str, path: &'a FsPath)
    -> BoxFuture<'a, Result<u64, String>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
    /// An object's size in bytes and its version (changes whenever its bytes do);
    /// `None` when there is no such object.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(u64, String)>, String>>;
    /// A byte range of an object.
    fn get_range<'a>(
        &'a self,
        key: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<axum::body::Bytes, String>>;
    /// Deletes every object under `prefix`; how many there were (gone ones count).
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, String>>;
    /// An object as it streams from the store, with its size.
    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(u64, ByteStream), String>>;
    /// Deletes one object (gone already: deleted).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Stores `data` under `key`.
    fn put_bytes<'a>(&'a self, key: &'a str, data: Vec<u8>) -> BoxFuture<'a, Result<(), String>>;
    /// Copies an object within the store; the copy's size.
    fn copy<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<u64, String>>;
    /// A short-lived URL that reads `key` from the store itself, when the store makes
    /// them (S3); `None` otherwise.
    fn presigned_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// Bytes as they come from the object store.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<axum::body::Bytes, String>>;

pub type ObjectsRef = Option<Arc<dyn Objects>>;

/// A job: its state, progress and, once completed, its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// `transcode` or `mixdown`.
    pub kind: String,
    /// `queued`, `running`, `retrying`, `completed` or `failed`.
    pub status: String,
    pub stage: Option<String>,
    pub percent: i64,
    pub attempts: i64,
    /// Why the last attempt failed (a failed job: why it failed for good).
    pub last_error: Option<String>,
    pub recording_id: Option<String>,
    /// The job as requested.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Outputs (object keys), loudness, duration — once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Once completed: each output file with a link that opens it for a few hours.
    pub files: Vec<crate::routes::recordings::FileLink>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl JobView {
    /// Links to the job's output files, served under the API path `dir`.
    pub fn with_links(mut self, st: &AppState, dir: &str) -> JobView {
        if let Some(files) = self.result.as_ref().and_then(|r| r["files"].as_object()) {
            self.files = files
                .keys()
                .map(|name| crate::routes::recordings::link(st, dir, name))
                .collect();
        }
        self
    }
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        JobView {
            id: j.id,
            kind: j.kind,
            status: j.status,
            stage: j.stage,
            percent: j.percent,
            attempts: j.attempts,
            last_error: j.last_error,
            recording_id: j.recording_id,
            spec: serde_json::from_str(&j.spec).unwrap_or(Value::Null),
            result: j.result.and_then(|r| serde_json::from_str(&r).ok()),
            files: Vec::new(),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// A `transcode.jobs` event about job `job_id`. `owner` (a user id) makes the hub
/// push it to that user's browser sockets.
pub fn job_event(
    st: &AppState,
    kind: EventType,
    job_id: &str,
    owner: Option<&str>,
    data: Value,
) -> OutboxEvent {
    let mut data = data;
    if let Value::Object(m) = &mut data {
        m.insert("job_id".into(), json!(job_id));
        if let Some(u) = owner {
            m.insert("user_id".into(), json!(u));
        }
    }
    outbox_event(
        &st.event_source(),
        kind,
        job_id,
        format!("job/{job_id}"),
        data,
        now_millis(),
    )
}

/// Inserts a queued job with its `transcode.requested` event (one transaction).
pub async fn request_job(
    st: &AppState,
    kind: &str,
    owner: Option<&str>,
    recording_id: Option<&str>,
    spec: Value,
) -> Result<Job, ApiError> {
    let job = Job::queued(
        uuid::Uuid::new_v4().simple().to_string(),
        kind,
        owner.map(str::to_owned),
        recording_id.map(str::to_owned),
        spec.to_string(),
        now_millis(),
    );
    let ev = job_event(
        st,
        EventType::TranscodeRequested,
        &job.id,
        owner,
        json!({ "kind": kind, "spec": spec, "owner_id": owner, "recording_id": recording_id }),
    );
    st.db
        .create_job(&job, vec![ev])
        .await
        .map_err(store_error)?;
    st.events_written();
    info!(job = %job.id, kind, "transcode job queued");
    Ok(job)
}

pub(crate) fn objects(st: &AppState) -> Result<Arc<dyn Objects>, ApiError> {
    st.objects.clone().ok_or_else(|| {
        ApiError::unavailable(
            "storage_unavailable",
            "this node has no object store (it runs the API only)",
        )
    })
}

/// What an upload is, from its first bytes: the file extension the decoder is
/// hinted with. `None`: not an audio container we decode.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |i: usize, m: &[u8]| head.len() >= i + m.len() && &head[i..i + m.len()] == m;
    if at(0, b"fLaC") {
        Some("flac")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("wav")
    } else if at(0, b"OggS") {
        Some("ogg")
    } else if at(0, b"ID3") {
        Some("mp3")
    } else if at(4, b"ftyp") {
        Some("m4a")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("webm")
    } else if head.len() >= 2 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0 {
        // ADTS: 12 sync bits, then layer 00
        Some("aac")
    } else if head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0 && head[1] & 0x06 != 0 {
        // MPEG audio frame sync with a layer set
        Some("mp3")
    } else {
        None
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UploadQuery {
    /// The file's name, kept for display only.
    pub name: Option<String>,
    /// Target loudness in LUFS (default −14).
    pub target_lufs: Option<f64>,
    /// Opus bitrate in b/s (default 96000 stereo, 64000 mono).
    pub bitrate: Option<i32>,
}

fn check_options(target_lufs: Option<f64>, bitrate: Option<i32>) -> Result<(), ApiError> {
    if let Some(l) = target_lufs
        && !(-40.0..=-5.0).contains(&l)
    {
        return Err(ApiError::invalid_field(
            "target_lufs",
            "target_lufs must be between -40 and -5",
        ));
    }
    if let Some(b) = bitrate
        && !(6_000..=510_000).contains(&b)
    {
        return Err(ApiError::invalid_field(
            "bitrate",
            "bitrate must be between 6000 and 510000 b/s",
        ));
    }
    Ok(())
}

/// Removes the spooled upload whatever happens to the request.
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Uploads an audio file (the raw bytes as the body) and queues its transcode.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads", params(UploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the audio file"), responses((status = 202, body = JobView), (status = 403, description = "the user's uploads would pass their quota (or jobs in flight)", body = ErrorBody), (status = 413, description = "larger than the upload limit", body = ErrorBody), (status = 415, description = "not an audio file StreamCore decodes", body = ErrorBody), (status = 422, description = "bad option", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn upload(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    caller.require_user()?;
    check_options(q.target_lufs, q.bitrate)?;
    within_quota(&st, &caller.user_id, Quota::JobsInFlight).await?;
    let store = objects(&st)?;
    let limit = st.config.max_upload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("uploads are limited to {limit} bytes"),
        )
    };
    // What the user may still keep: a larger upload is refused before it is read,
    // or as soon as it passes this.
    let kept = st
        .db
        .owned_counts(&caller.user_id, now_millis())
        .await
        .map_err(store_error)?
        .upload_bytes;
    let (quotas, _) = crate::state::quotas_of(&st, &caller.user_id).await?;
    let room_left = quotas.upload_bytes.saturating_sub(kept.max(0) as u64);
    let over_quota = || {
        info!(user = %caller.user_id, kept, quota = quotas.upload_bytes, "upload quota reached");
        ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            format!(
                "Your uploads take {} MiB, and this one would pass the {} MiB this server keeps for you.",
                kept / (1024 * 1024),
                quotas.upload_bytes / (1024 * 1024)
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
        if len > room_left {
            return Err(over_quota());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::create_dir_all(&st.config.upload_dir).map_err(|e| {
        warn!(dir = %st.config.upload_dir.display(), error = %e, "upload spool unavailable");
        ApiError::internal("the upload could not be stored; try again")
    })?;
    let spool = SpoolFile(st.config.upload_dir.join(format!("{id}.part")));
    let io_err = |e: std::io::Error| {
        warn!(error = %e, "writing an upload failed");
        ApiError::internal("the upload could not be stored; try again")
    };
    let mut file = tokio::fs::File::create(&spool.0).await.map_err(io_err)?;
    let mut head = Vec::with_capacity(64);
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match crate::body_pace::stalled(&e) {
            Some(s) => {
                info!(user = %caller.user_id, received = size, reason = %s, "upload cut off");
                crate::body_pace::stalled_error(s)
            }
            None => ApiError::bad_request("upload_interrupted", format!("reading the upload: {e}")),
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large());
        }
        if size > room_left {
            return Err(over_quota());
        }
        if head.len() < 64 {
            let take = (64 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    file.flush().await.map_err(io_err)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::bad_request("empty", "the upload is empty"));
    }
    let Some(kind) = sniff(&head) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            "not an audio file StreamCore decodes (FLAC, WAV, MP3, AAC/M4A, Ogg, WebM)",
        ));
    };
    // Under its owner's prefix: the worker runs a job from the bus only on keys of
    // whom it names (see `src/worker.rs`, `outside_request_refusal`).
    let prefix = format!("uploads/{}/{id}/", caller.user_id);
    let input = format!("{prefix}source.{kind}");
    store.put_file(&input, &spool.0).await.map_err(|e| {
        warn!(key = %input, error = %e, "storing an upload failed");
        ApiError::unavailable(
            "storage_unavailable",
            "the object store is unavailable; try again",
        )
    })?;
    let spec = json!({
        "kind": "transcode",
        "input": input,
        "output_prefix": prefix,
        "target_lufs": q.target_lufs,
        "bitrate": q.bitrate,
        "source": { "name": q.name, "type": kind, "bytes": size },
    });
    let job = request_job(&st, "transcode", Some(&caller.user_id), None, spec).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

async fn own_upload(st: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    match st.db.job(id).await.map_err(store_error)? {
        Some(j)
            if j.kind == "transcode"
                && !j.is_deleted()
                && j.owner_id.as_deref() == Some(&caller.user_id) =>
        {
            Ok(j)
        }
        _ => Err(ApiError::not_found("no such upload")),
    }
}

/// An upload's view with links to its outputs.
fn upload_view(st: &AppState, j: Job) -> JobView {
    let dir = format!(
        "/api/v1/uploads/{}/files",
        crate::routes::recordings::encode_segment(&j.id)
    );
    JobView::from(j).with_links(st, &dir)
}

/// The caller's uploads, newest first.
#[utoipa::path(get, path = "/api/v1/uploads", tag = "uploads", responses((status = 200, body = [JobView]), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let jobs = st
        .db
        .owner_jobs(&caller.user_id, "transcode", 200)
        .await
        .map_err(store_error)?;
    Ok(Json(
        jobs.into_iter().map(|j| upload_view(&st, j)).collect(),
    ))
}

/// An upload's job: progress while it runs, the result when done.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)), responses((status = 200, body = JobView), (status = 404, description = "no such upload", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(upload_view(&st, own_upload(&st, &caller, &id).await?)))
}

/// The store's failure to read `key`, as the caller sees it (and logged).
pub(crate) fn storage_unavailable(key: &str, e: &str) -> ApiError {
    warn!(key = %key, error = %e, "reading a stored file failed");
    ApiError::unavailable(
        "storage_unavailable",
        "the object store is unavailable; try again",
    )
}

/// A file a completed job wrote (`audio.opus`, `waveform.json`, `waveform.svg`, …).
async fn output_file(
    st: &AppState,
    job: &Job,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let result: Value = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| ApiError::conflict("not_completed", format!("the job is {}", job.status)))?;
    let key = result["files"][name]
        .as_str()
        .ok_or_else(|| ApiError::not_found("the job wrote no such file"))?
        .to_owned();
    crate::routes::files::serve_object(&*objects(st)?, &key, name, headers).await
}

/// Deletes a finished upload: its stored files (the source and every output) first,
/// then the job is marked deleted (its row stays, so that a redelivered request for
/// it is not taken for a new one). A store that fails leaves the upload listed, to be
/// deleted again.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)), responses((status = 204, description = "deleted, with its files"), (status = 404, description = "no such upload", body = ErrorBody), (status = 403, description = "a device credential cannot delete", body = ErrorBody), (status = 409, description = "job_in_progress: it is still being worked on; not_deletable: its files are not under its own prefix", body = ErrorBody), (status = 503, description = "the object store is unavailable", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // A paired device may upload nothing, and deletes nothing either.
    caller.require_user()?;
    let job = own_upload(&st, &caller, &id).await?;
    if !matches!(job.status.as_str(), "completed" | "failed") {
        return Err(ApiError::conflict(
            "job_in_progress",
            format!("the upload is {}; delete it once it is done", job.status),
        ));
    }
    // Everything of an upload is under its own prefix (see `upload`), in its owner's.
    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
    let prefix = match spec["output_prefix"].as_str() {
        Some(p)
            if p.strip_prefix(&format!("uploads/{}/", caller.user_id))
                .and_then(|rest| rest.strip_suffix('/'))
                .is_some_and(|dir| {
                    !dir.is_empty() && !dir.contains('/') && dir != "." && dir != ".."
                }) =>
        {
            p.to_owned()
        }
        _ => {
            warn!(job = %job.id, "an upload without its own prefix; its files are left alone");
            return Err(ApiError::conflict(
                "not_deletable",
                "this upload's files cannot be told apart; ask the operator",
            ));
        }
    };
    let removed = objects(&st)?.delete_prefix(&prefix).await.map_err(|e| {
        warn!(prefix = %prefix, error = %e, "deleting an upload's files failed");
        ApiError::unavailable(
            "storage_unavailable",
            "the object store is unavailable; try again",
        )
    })?;
    if !st
        .db
        .delete_finished_job(&caller.user_id, &job.id)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("no such upload"));
    }
    info!(user = %caller.user_id, job = %job.id, files = removed, "upload deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/uploads/{id}/files/{name}", tag = "uploads", params(("id" = String, Path), ("name" = String, Path)), responses((status = 200, description = "the file"), (status = 404, description = "no such upload or file", body = ErrorBody), (status = 409, description = "not completed", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn file(
    State(st): State<AppState>,
    access: crate::links::FileAccess<Caller>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = match access {
        crate::links::FileAccess::Caller(caller) => own_upload(&st, &caller, &id).await?,
        // The link was signed for this upload's file.
        crate::links::FileAccess::Link => match st.db.job(&id).await.map_err(store_error)? {
            Some(j) if j.kind == "transcode" && !j.is_deleted() => j,
            _ => return Err(ApiError::not_found("no such upload")),
        },
    };
    output_file(&st, &job, &name, &headers).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct MixdownRequest {
    /// Target loudness of the episode and each stem (default −16 LUFS).
    pub target_lufs: Option<f64>,
    pub bitrate: Option<i32>,
}

/// Queues a podcast mixdown of an uploaded recording: one episode, one stem per
/// speaker, waveforms; the results show on the recording (`mixdowns`).
#[utoipa::path(post, path = "/api/v1/rooms/{name}/recordings/{id}/mixdown", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), request_body(content = MixdownRequest, description = "optional"), responses((status = 202, body = JobView), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 409, description = "not uploaded yet", body = ErrorBody), (status = 422, description = "bad option", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn mixdown(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<MixdownRequest>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    check_options(req.target_lufs, req.bitrate)?;
    let rec = crate::routes::recordings::room_recording(&st, &caller, &name, &id).await?;
    within_quota(&st, &rec.owner_id, Quota::JobsInFlight).await?;
    if rec.status != "uploaded" {
        return Err(ApiError::conflict(
            "not_uploaded",
            format!(
                "the recording is {}; a mixdown needs it uploaded",
                rec.status
            ),
        ));
    }
    if crate::store::retention::RetentionStore::tracks_deleted_at(&st.db, &rec.id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(ApiError::conflict(
            "tracks_deleted",
            "the recording's raw tracks were deleted (the room's retention); its earlier mixdowns stay",
        ));
    }
    let job_prefix = uuid::Uuid::new_v4().simple().to_string();
    let spec = json!({
        "kind": "mixdown",
        "recording_prefix": format!("{}/{}/", rec.sfu_room, rec.id),
        "output_prefix": format!("{}/{}/mixdown/{job_prefix}/", rec.sfu_room, rec.id),
        "target_lufs": req.target_lufs,
        "bitrate": req.bitrate,
    });
    let job = request_job(&st, "mixdown", Some(&rec.owner_id), Some(&rec.id), spec).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/recordings/{id}/mixdown/{job}/files/{file}", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path), ("job" = String, Path), ("file" = String, Path)), responses((status = 200, description = "the file"), (status = 404, description = "no such recording, job or file", body = ErrorBody), (status = 409, description = "not completed", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn mixdown_file(
    State(st): State<AppState>,
    access: crate::links::FileAccess<RecordCaller>,
    Path((name, id, job, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = crate::routes::recordings::file_recording(&st, &access, &name, &id).await?;
    let job = match st.db.job(&job).await.map_err(store_error)? {
        Some(j) if j.recording_id.as_deref() == Some(&rec.id) => j,
        _ => return Err(ApiError::not_found("no such mixdown of this recording")),
    };
    output_file(&st, &job, &file, &headers).await
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn types_come_from_the_first_bytes() {
        assert_eq!(sniff(b"fLaC\0\0\0\x22"), Some("flac"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt "), Some("wav"));
        assert_eq!(sniff(b"OggS\0\x02"), Some("ogg"));
        assert_eq!(sniff(b"ID3\x04\0"), Some("mp3"));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90, 0x64]), Some("mp3"));
        assert_eq!(sniff(&[0xFF, 0xF1, 0x50, 0x80]), Some("aac"));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some("m4a"));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]), Some("webm"));
        assert_eq!(sniff(b"<html><body>"), None);
        assert_eq!(sniff(b"%PDF-1.7"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(&[0xFF, 0x00]), None);
    }
}
