//! The phone's music library metadata: incremental, idempotent sync from a device,
//! and listing/search for the user's browsers.

use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use signaling::ApiError;
use utoipa::ToSchema;

use crate::openapi::ErrorBody;

use crate::auth::now_millis;
use crate::state::{AppState, Caller, store_error};
use crate::store::{LibraryQuery, Store, SyncCounts, TrackMeta};

pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
pub struct SyncRequest {
    /// The device whose library this is; implied by a device credential.
    pub device_id: Option<String>,
    #[serde(default)]
    pub upsert: Vec<TrackMeta>,
    /// Client ids of tracks no longer on the device.
    #[serde(default)]
    pub delete: Vec<String>,
}

fn check_track(i: usize, t: &TrackMeta) -> Result<(), ApiError> {
    let bad = |what: &str| ApiError::invalid_field("upsert", format!("track {i}: {what}"));
    if t.client_id.is_empty() || t.client_id.len() > 200 {
        return Err(bad("client_id must be 1–200 bytes"));
    }
    if t.title.trim().is_empty() || t.title.len() > 500 {
        return Err(bad("title must be 1–500 bytes"));
    }
    if t.artist.len() > 500 || t.album.len() > 500 || t.codec.len() > 50 {
        return Err(bad("artist/album must be at most 500 bytes, codec 50"));
    }
    if t.duration_ms < 0 || t.size_bytes < 0 {
        return Err(bad("duration_ms and size_bytes cannot be negative"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/library/sync", tag = "library", request_body = SyncRequest, responses((status = 200, body = SyncCounts), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn sync(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SyncRequest>,
) -> Result<Json<SyncCounts>, ApiError> {
    let device_id = match (&caller.device, req.device_id) {
        (Some(own), Some(asked)) if *own != asked => {
            return Err(ApiError::forbidden(
                "a device credential may only sync its own library",
            ));
        }
        (Some(own), _) => own.clone(),
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(ApiError::invalid_field(
                "device_id",
                "is required with a user credential",
            ));
        }
    };
    if req.upsert.len() + req.delete.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "upsert",
            format!("at most {MAX_BATCH} changes per request"),
        ));
    }
    for (i, t) in req.upsert.iter().enumerate() {
        check_track(i, t)?;
    }
    if st
        .db
        .device(&caller.user_id, &device_id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(ApiError::not_found("no such device"));
    }
    let mut counts = st
        .db
        .upsert_tracks(&caller.user_id, &device_id, &req.upsert, now_millis())
        .await
        .map_err(store_error)?;
    if !req.delete.is_empty() {
        counts.deleted = st
            .db
            .delete_tracks(&caller.user_id, &device_id, &req.delete)
            .await
            .map_err(store_error)?;
    }
    Ok(Json(counts))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    pub q: Option<String>,
    pub device_id: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackView {
    pub device_id: String,
    #[serde(flatten)]
    pub meta: TrackMeta,
    pub updated_at: i64,
}

#[utoipa::path(get, path = "/api/v1/library/tracks", tag = "library", params(ListParams), responses((status = 200, body = Vec<TrackView>), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Vec<TrackView>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1–1000"));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid_field("offset", "cannot be negative"));
    }
    if p.q.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::invalid_field("q", "must be at most 200 bytes"));
    }
    let q = LibraryQuery {
        q: p.q.filter(|q| !q.trim().is_empty()),
        device_id: p.device_id,
        limit,
        offset,
    };
    let tracks = st
        .db
        .list_tracks(&caller.user_id, &q)
        .await
        .map_err(store_error)?;
    Ok(Json(
        tracks
            .into_iter()
            .map(|t| TrackView {
                device_id: t.device_id,
                meta: t.meta,
                updated_at: t.updated_at,
            })
            .collect(),
    ))
}
