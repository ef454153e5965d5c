//! The listening history (`crate::history`) for the user's pages and apps:
//! `GET /api/v1/me/plays` lists plays, newest first; `GET /api/v1/me/stats` sums a
//! period's plays into the most played tracks, artists and albums.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use signaling::ApiError;
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::extract::ApiQuery;
use crate::openapi::ErrorBody;
use crate::state::{AppState, Caller, store_error};
use crate::store::{Millis, PlayCount, PlayRow, Store};

const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// A period ending now: the last 7, 30 or 365 days, or everything.
fn period_start(period: &str, now: Millis) -> Result<Option<Millis>, ApiError> {
    let days = match period {
        "week" => 7,
        "month" => 30,
        "year" => 365,
        "all" => return Ok(None),
        _ => {
            return Err(ApiError::invalid_field(
                "period",
                "must be week, month, year or all",
            ));
        }
    };
    Ok(Some(now - days * DAY_MS))
}

fn check_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid_field("limit", format!("must be 1–{max}")));
    }
    Ok(limit)
}

/// Listening time in minutes, to a tenth.
fn minutes(ms: i64) -> f64 {
    (ms as f64 / 6_000.0).round() / 10.0
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsParams {
    /// `week`, `month`, `year` (the last 7, 30 or 365 days) or `all`; default `month`.
    pub period: Option<String>,
    /// Entries in each list, 1–100; default 10.
    pub limit: Option<i64>,
}

/// One entry of a top list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopEntry {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    pub artist: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub album: String,
    /// One of the track's ids in the library (tracks only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub track_id: String,
    pub plays: i64,
    pub minutes: f64,
    pub listened_ms: i64,
}

impl From<PlayCount> for TopEntry {
    fn from(c: PlayCount) -> TopEntry {
        TopEntry {
            title: c.title,
            artist: c.artist,
            album: c.album,
            track_id: c.track_id,
            plays: c.plays,
            minutes: minutes(c.listened_ms),
            listened_ms: c.listened_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub period: String,
    /// Plays that started at or after this time count (Unix ms); null for `all`.
    pub since: Option<Millis>,
    pub plays: i64,
    pub minutes: f64,
    pub listened_ms: i64,
    pub top_tracks: Vec<TopEntry>,
    pub top_artists: Vec<TopEntry>,
    pub top_albums: Vec<TopEntry>,
}

#[utoipa::path(get, path = "/api/v1/me/stats", tag = "history", params(StatsParams), responses((status = 200, body = Stats), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn stats(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<StatsParams>,
) -> Result<Json<Stats>, ApiError> {
    let period = p.period.unwrap_or_else(|| "month".into());
    let since = period_start(&period, now_millis())?;
    let limit = check_limit(p.limit, 10, 100)?;
    let s = st
        .db
        .listening_stats(&caller.user_id, since.unwrap_or(Millis::MIN), limit)
        .await
        .map_err(store_error)?;
    Ok(Json(Stats {
        period,
        since,
        plays: s.plays,
        minutes: minutes(s.listened_ms),
        listened_ms: s.listened_ms,
        top_tracks: s.tracks.into_iter().map(TopEntry::from).collect(),
        top_artists: s.artists.into_iter().map(TopEntry::from).collect(),
        top_albums: s.albums.into_iter().map(TopEntry::from).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PlaysParams {
    /// The next page: plays that started before this time (Unix ms)…
    pub before: Option<Millis>,
    /// …or at it, with an id before this one: the last play's `started_at` and `id`.
    pub before_id: Option<String>,
    /// 1–200; default 50.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/me/plays", tag = "history", params(PlaysParams), responses((status = 200, body = Vec<PlayRow>), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn plays(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<PlaysParams>,
) -> Result<Json<Vec<PlayRow>>, ApiError> {
    let limit = check_limit(p.limit, 50, 200)?;
    if p.before_id.is_some() && p.before.is_none() {
        return Err(ApiError::invalid_field(
            "before_id",
            "goes with before (the last play's started_at)",
        ));
    }
    let before = (
        p.before.unwrap_or(Millis::MAX),
        p.before_id.as_deref().unwrap_or(""),
    );
    let rows = st
        .db
        .recent_plays(&caller.user_id, before, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_end_now() {
        assert_eq!(period_start("week", 10 * DAY_MS).unwrap(), Some(3 * DAY_MS));
        assert_eq!(period_start("year", 0).unwrap(), Some(-365 * DAY_MS));
        assert_eq!(period_start("all", 5).unwrap(), None);
        assert!(period_start("decade", 5).is_err());
        assert_eq!(minutes(90_000), 1.5);
        assert_eq!(minutes(0), 0.0);
        assert!(check_limit(Some(0), 10, 100).is_err());
        assert_eq!(check_limit(None, 10, 100).unwrap(), 10);
    }
}
