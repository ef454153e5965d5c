//! A room's retention of raw recorded tracks, as its owner sets it: how many days
//! after a recording's first finished mixdown its track files are deleted
//! ([`crate::retention`] does it), or `null` to keep them.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use signaling::ApiError;
use tracing::info;
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::extract::ApiJson;
use crate::openapi::ErrorBody;
use crate::state::{AppState, Caller, store_error};
use crate::store::retention::RetentionStore;

/// The longest retention one may set (ten years); longer is "keep".
pub const MAX_DAYS: i64 = 3650;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Retention {
    /// Days the raw tracks stay after a recording's first finished mixdown (0: right
    /// after it); `null`: kept until the recording is deleted.
    pub tracks_days: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/retention", tag = "recordings", params(("name" = String, Path, description = "the room's name or id")), responses((status = 200, body = Retention), (status = 404, description = "no such room", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Retention>, ApiError> {
    caller.require_user()?;
    let room = crate::routes::rooms::own_room(&st, &caller, &name).await?;
    let tracks_days = st.db.track_retention(&room.id).await.map_err(store_error)?;
    Ok(Json(Retention { tracks_days }))
}

#[utoipa::path(put, path = "/api/v1/rooms/{name}/retention", tag = "recordings", params(("name" = String, Path, description = "the room's name or id")), request_body = Retention, responses((status = 200, body = Retention), (status = 404, description = "no such room", body = ErrorBody), (status = 422, description = "tracks_days out of range", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Retention>,
) -> Result<Json<Retention>, ApiError> {
    caller.require_user()?;
    let room = crate::routes::rooms::own_room(&st, &caller, &name).await?;
    if let Some(d) = req.tracks_days
        && !(0..=MAX_DAYS).contains(&d)
    {
        return Err(ApiError::invalid_field(
            "tracks_days",
            format!("must be from 0 to {MAX_DAYS} days, or null to keep the tracks"),
        ));
    }
    st.db
        .set_track_retention(&room.id, req.tracks_days, now_millis())
        .await
        .map_err(store_error)?;
    info!(room = %room.id, days = ?req.tracks_days, "raw track retention set");
    Ok(Json(req))
}
