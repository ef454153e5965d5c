//! The owner's side of podcasts: shows (with their artwork), episodes made from a
//! finished upload or recording mixdown, publishing, scheduling and unpublishing,
//! and the markers a host sets while a room is recorded (an episode's chapters).
//! Only a signed-in user (not a paired device's credential) may; another user's show
//! is "not found". See [`crate::podcast`] for the invariants.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use signaling::ApiError;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::extract::ApiJson;
use crate::openapi::ErrorBody;
use crate::podcast::rss::FeedUrls;
use crate::podcast::{self, MAX_DESCRIPTION, MAX_TITLE, artwork};
use crate::routes::jobs::objects;
use crate::routes::recordings::RecordCaller;
use crate::state::{AppState, Caller, store_error};
use crate::store::podcasts::{Chapter, Episode, Marker, PodcastStore, Show};
use crate::store::{Job, Millis, Store};

/// The largest artwork accepted (3000 px JPEGs run to a few MiB).
pub const MAX_ARTWORK_BYTES: usize = 10 * 1024 * 1024;
/// Episodes a feed lists, newest first.
pub const FEED_LIMIT: i64 = 1000;
pub const AUDIO_TYPE: &str = "audio/ogg";

#[derive(Debug, Serialize, ToSchema)]
pub struct ShowView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub author: String,
    pub language: String,
    pub category: String,
    pub explicit: bool,
    /// Public; `null` until artwork is uploaded.
    pub artwork_url: Option<String>,
    /// The public RSS feed podcast apps subscribe to.
    pub feed_url: String,
    /// How many episodes it has (drafts included).
    pub episodes: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EpisodeView {
    pub id: String,
    pub show_id: String,
    pub guid: String,
    pub title: String,
    pub description: String,
    /// `draft`, `scheduled` (published, its time ahead) or `published`.
    pub status: String,
    pub publish_at: Option<i64>,
    pub season: Option<i64>,
    pub episode: Option<i64>,
    pub duration_ms: i64,
    /// The feed's enclosure once it is live; before, a link that opens it for a few
    /// hours (for the owner's page).
    pub audio_url: String,
    pub audio_bytes: i64,
    pub audio_type: String,
    pub chapters: Vec<Chapter>,
    pub source_job: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn show_view(st: &AppState, s: Show) -> ShowView {
    let urls = FeedUrls::new(&st.config.public_url);
    ShowView {
        artwork_url: s.artwork_key.as_ref().map(|_| urls.artwork(&s)),
        feed_url: urls.feed(&s.id),
        id: s.id,
        title: s.title,
        description: s.description,
        author: s.author,
        language: s.language,
        category: s.category,
        explicit: s.explicit,
        episodes: s.episodes,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn episode_view(st: &AppState, e: Episode, now: Millis) -> EpisodeView {
    let urls = FeedUrls::new(&st.config.public_url);
    let status = match (e.status.as_str(), e.publish_at) {
        ("published", Some(t)) if t > now => "scheduled",
        (s, _) => s,
    }
    .to_owned();
    let audio_url = if e.is_live(now) {
        urls.audio(&e.show_id, &e.id)
    } else {
        let path = FeedUrls::new("").audio(&e.show_id, &e.id);
        st.links.sign(&path, now / 1000, crate::links::LINK_TTL)
    };
    EpisodeView {
        audio_url,
        chapters: e.chapter_list(),
        status,
        id: e.id,
        show_id: e.show_id,
        guid: e.guid,
        title: e.title,
        description: e.description,
        publish_at: e.publish_at,
        season: e.season,
        episode: e.episode,
        duration_ms: e.duration_ms,
        audio_bytes: e.audio_bytes,
        audio_type: e.audio_type,
        source_job: e.source_job,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// Where a show's objects live; an episode's are under `<show prefix><episode>/`.
pub fn show_prefix(s: &Show) -> String {
    format!("podcasts/{}/{}/", s.owner_id, s.id)
}

fn storage_error(what: &str, key: &str, e: &str) -> ApiError {
    warn!(key, error = %e, "{what} failed");
    ApiError::unavailable(
        "storage_unavailable",
        "the object store is unavailable; try again",
    )
}

async fn own_show(st: &AppState, caller: &Caller, id: &str) -> Result<Show, ApiError> {
    caller.require_user()?;
    st.db
        .show(&caller.user_id, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such show"))
}

async fn own_episode(
    st: &AppState,
    caller: &Caller,
    show: &str,
    id: &str,
) -> Result<(Show, Episode), ApiError> {
    let s = own_show(st, caller, show).await?;
    let e = st
        .db
        .episode(&s.id, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such episode in this show"))?;
    Ok((s, e))
}

/// `null` in a PATCH clears a field; a field left out stays as it is.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ShowRequest {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub author: String,
    /// A language tag: `en`, `pt-BR`.
    pub language: String,
    /// One of `GET /api/v1/podcasts/categories`.
    pub category: String,
    #[serde(default)]
    pub explicit: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ShowChange {
    pub title: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub language: Option<String>,
    pub category: Option<String>,
    pub explicit: Option<bool>,
}

/// Checks and writes the asked fields into `s`.
fn apply_show(s: &mut Show, c: ShowChange) -> Result<(), ApiError> {
    if let Some(v) = c.title {
        s.title = podcast::text("title", &v, MAX_TITLE, false)?;
    }
    if let Some(v) = c.description {
        // Directories refuse a show without one.
        s.description = podcast::text("description", &v, MAX_DESCRIPTION, false)?;
    }
    if let Some(v) = c.author {
        s.author = podcast::text("author", &v, MAX_TITLE, false)?;
    }
    if let Some(v) = c.language {
        s.language = podcast::language(&v)?;
    }
    if let Some(v) = c.category {
        s.category = podcast::category(&v)?;
    }
    if let Some(v) = c.explicit {
        s.explicit = v;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/podcasts/categories", tag = "podcasts", responses((status = 200, body = Vec<String>)))]
pub async fn categories() -> Json<&'static [&'static str]> {
    Json(podcast::CATEGORIES)
}

#[utoipa::path(post, path = "/api/v1/podcasts/shows", tag = "podcasts", request_body = ShowRequest, responses((status = 201, body = ShowView), (status = 422, description = "a bad field", body = ErrorBody), (status = 403, description = "a device credential", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_show(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ShowRequest>,
) -> Result<(StatusCode, Json<ShowView>), ApiError> {
    caller.require_user()?;
    let now = now_millis();
    let mut show = Show {
        id: uuid::Uuid::new_v4().simple().to_string(),
        owner_id: caller.user_id.clone(),
        title: String::new(),
        description: String::new(),
        author: String::new(),
        language: String::new(),
        category: String::new(),
        explicit: false,
        artwork_key: None,
        artwork_type: None,
        created_at: now,
        updated_at: now,
        episodes: 0,
    };
    apply_show(
        &mut show,
        ShowChange {
            title: Some(req.title),
            description: Some(req.description),
            author: Some(req.author),
            language: Some(req.language),
            category: Some(req.category),
            explicit: Some(req.explicit),
        },
    )?;
    st.db.create_show(&show).await.map_err(store_error)?;
    info!(user = %caller.user_id, show = %show.id, "show created");
    Ok((StatusCode::CREATED, Json(show_view(&st, show))))
}

#[utoipa::path(get, path = "/api/v1/podcasts/shows", tag = "podcasts", responses((status = 200, body = Vec<ShowView>), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_shows(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ShowView>>, ApiError> {
    caller.require_user()?;
    let shows = st.db.shows(&caller.user_id).await.map_err(store_error)?;
    Ok(Json(shows.into_iter().map(|s| show_view(&st, s)).collect()))
}

#[utoipa::path(get, path = "/api/v1/podcasts/shows/{id}", tag = "podcasts", params(("id" = String, Path)), responses((status = 200, body = ShowView), (status = 404, description = "no such show", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ShowView>, ApiError> {
    Ok(Json(show_view(&st, own_show(&st, &caller, &id).await?)))
}

#[utoipa::path(patch, path = "/api/v1/podcasts/shows/{id}", tag = "podcasts", params(("id" = String, Path)), request_body = ShowChange, responses((status = 200, body = ShowView), (status = 404, description = "no such show", body = ErrorBody), (status = 422, description = "a bad field", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(change): ApiJson<ShowChange>,
) -> Result<Json<ShowView>, ApiError> {
    let mut show = own_show(&st, &caller, &id).await?;
    apply_show(&mut show, change)?;
    show.updated_at = now_millis();
    if !st.db.update_show(&show).await.map_err(store_error)? {
        return Err(ApiError::not_found("no such show"));
    }
    Ok(Json(show_view(&st, show)))
}

/// Deletes a show with its episodes: their objects first (a store that fails leaves
/// the show, to be deleted again), then the rows.
#[utoipa::path(delete, path = "/api/v1/podcasts/shows/{id}", tag = "podcasts", params(("id" = String, Path)), responses((status = 204, description = "deleted, with its episodes and files"), (status = 404, description = "no such show", body = ErrorBody), (status = 503, description = "the object store is unavailable", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let show = own_show(&st, &caller, &id).await?;
    let prefix = show_prefix(&show);
    let removed = objects(&st)?
        .delete_prefix(&prefix)
        .await
        .map_err(|e| storage_error("deleting a show's files", &prefix, &e))?;
    if !st
        .db
        .delete_show(&caller.user_id, &show.id)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("no such show"));
    }
    info!(user = %caller.user_id, show = %show.id, files = removed, "show deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads the show's artwork: the image file as the body.
#[utoipa::path(put, path = "/api/v1/podcasts/shows/{id}/artwork", tag = "podcasts", params(("id" = String, Path)), request_body(content = Vec<u8>, content_type = "image/png", description = "a square JPEG or PNG, 1400 to 3000 px a side"), responses((status = 200, body = ShowView), (status = 404, description = "no such show", body = ErrorBody), (status = 413, description = "larger than 10 MiB", body = ErrorBody), (status = 415, description = "not a JPEG or PNG", body = ErrorBody), (status = 422, description = "bad_artwork: not square, or outside 1400–3000 px", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_artwork(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<ShowView>, ApiError> {
    let mut show = own_show(&st, &caller, &id).await?;
    let bytes = axum::body::to_bytes(body, MAX_ARTWORK_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "The artwork may be at most {} MiB.",
                    MAX_ARTWORK_BYTES / (1024 * 1024)
                ),
            )
        })?;
    let art = artwork::check(&bytes).map_err(|e| match e {
        artwork::ArtworkError::NotAnImage => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            e.to_string(),
        ),
        _ => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_artwork",
            e.to_string(),
        ),
    })?;
    let ext = if art.mime == "image/png" {
        "png"
    } else {
        "jpg"
    };
    let key = format!("{}artwork.{ext}", show_prefix(&show));
    let store = objects(&st)?;
    store
        .put_bytes(&key, bytes.to_vec())
        .await
        .map_err(|e| storage_error("storing artwork", &key, &e))?;
    let now = now_millis();
    let Some(old) = st
        .db
        .set_artwork(&show, &key, art.mime, now)
        .await
        .map_err(store_error)?
    else {
        return Err(ApiError::not_found("no such show"));
    };
    // The other type's file, if the artwork changed type.
    if let Some(old) = old
        && old != key
        && let Err(e) = store.delete(&old).await
    {
        warn!(key = %old, error = %e, "the old artwork stays in the store");
    }
    show.artwork_key = Some(key);
    show.artwork_type = Some(art.mime.to_owned());
    show.updated_at = now;
    info!(show = %show.id, side = art.side, mime = art.mime, "show artwork stored");
    Ok(Json(show_view(&st, show)))
}

/// A finished upload or mixdown of the user's, as an episode's source.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub job_id: String,
    /// `upload` or `mixdown`.
    pub kind: String,
    /// The upload's file name, or the recorded room's name.
    pub title: String,
    pub duration_ms: i64,
    pub created_at: i64,
    /// A mixdown's chapters from the markers set while recording.
    pub chapters: Vec<Chapter>,
}

/// What an episode is made of: its audio's key, length and default chapters.
struct Source {
    view: SourceView,
    audio_key: String,
}

async fn source(st: &AppState, owner: &str, job: Job) -> Result<Option<Source>, ApiError> {
    if job.owner_id.as_deref() != Some(owner) || job.status != "completed" {
        return Ok(None);
    }
    let result: Value = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
    let duration_ms = result["duration_ms"].as_f64().unwrap_or(0.0).round() as i64;
    let (kind, file) = match job.kind.as_str() {
        "transcode" => ("upload", "audio.opus"),
        "mixdown" => ("mixdown", "episode.opus"),
        _ => return Ok(None),
    };
    let Some(audio_key) = result["files"][file].as_str() else {
        return Ok(None);
    };
    let mut chapters = Vec::new();
    let title = if kind == "upload" {
        spec["source"]["name"]
            .as_str()
            .unwrap_or("Uploaded audio")
            .to_owned()
    } else {
        let mut title = "Recording".to_owned();
        if let Some(rec_id) = job.recording_id.as_deref()
            && let Some(rec) = st.db.recording(rec_id).await.map_err(store_error)?
        {
            if let Some(room) = st.db.room_by_id(&rec.room_id).await.map_err(store_error)? {
                title = format!("Recording of {}", room.name);
            }
            let markers = st.db.markers(rec_id).await.map_err(store_error)?;
            let starts = result["starts_at_ms"]
                .as_f64()
                .unwrap_or(rec.started_at as f64);
            chapters = podcast::chapters_from_markers(&markers, starts, duration_ms);
        }
        title
    };
    Ok(Some(Source {
        view: SourceView {
            job_id: job.id,
            kind: kind.to_owned(),
            title,
            duration_ms,
            created_at: job.created_at,
            chapters,
        },
        audio_key: audio_key.to_owned(),
    }))
}

/// The user's finished uploads and mixdowns, newest first.
#[utoipa::path(get, path = "/api/v1/podcasts/sources", tag = "podcasts", responses((status = 200, body = Vec<SourceView>), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn sources(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SourceView>>, ApiError> {
    caller.require_user()?;
    let mut jobs = st
        .db
        .owner_jobs(&caller.user_id, "transcode", 200)
        .await
        .map_err(store_error)?;
    jobs.extend(
        st.db
            .owner_jobs(&caller.user_id, "mixdown", 200)
            .await
            .map_err(store_error)?,
    );
    jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
    let mut out = Vec::new();
    for j in jobs {
        if let Some(s) = source(&st, &caller.user_id, j).await? {
            out.push(s.view);
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EpisodeRequest {
    /// A finished upload or mixdown of the user's (`GET /api/v1/podcasts/sources`).
    pub source_job: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub season: Option<i64>,
    pub episode: Option<i64>,
    /// Default: the source's (a mixdown's markers).
    pub chapters: Option<Vec<Chapter>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EpisodeChange {
    pub title: Option<String>,
    pub description: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub season: Option<Option<i64>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub episode: Option<Option<i64>>,
    pub chapters: Option<Vec<Chapter>>,
}

fn apply_episode(e: &mut Episode, c: EpisodeChange) -> Result<(), ApiError> {
    if let Some(v) = c.title {
        e.title = podcast::text("title", &v, MAX_TITLE, false)?;
    }
    if let Some(v) = c.description {
        e.description = podcast::text("description", &v, MAX_DESCRIPTION, true)?;
    }
    if let Some(v) = c.season {
        e.season = podcast::number("season", v)?;
    }
    if let Some(v) = c.episode {
        e.episode = podcast::number("episode", v)?;
    }
    if let Some(v) = c.chapters {
        let list = podcast::chapters(v, e.duration_ms)?;
        e.chapters = serde_json::to_string(&list).expect("chapters serialize");
    }
    Ok(())
}

/// Makes a draft episode: its audio is copied from the source under the show's prefix.
#[utoipa::path(post, path = "/api/v1/podcasts/shows/{id}/episodes", tag = "podcasts", params(("id" = String, Path)), request_body = EpisodeRequest, responses((status = 201, body = EpisodeView), (status = 404, description = "no such show", body = ErrorBody), (status = 422, description = "a bad field, or a source that is not a finished upload or mixdown of yours", body = ErrorBody), (status = 503, description = "the object store is unavailable", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_episode(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EpisodeRequest>,
) -> Result<(StatusCode, Json<EpisodeView>), ApiError> {
    let show = own_show(&st, &caller, &id).await?;
    let job = st.db.job(&req.source_job).await.map_err(store_error)?;
    let src = match job {
        Some(j) if !j.is_deleted() => source(&st, &caller.user_id, j).await?,
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid_field(
            "source_job",
            "must be one of your finished uploads or recording mixdowns",
        )
    })?;
    let now = now_millis();
    let mut ep = Episode {
        id: uuid::Uuid::new_v4().simple().to_string(),
        show_id: show.id.clone(),
        guid: uuid::Uuid::new_v4().hyphenated().to_string(),
        title: String::new(),
        description: String::new(),
        status: "draft".into(),
        publish_at: None,
        season: None,
        episode: None,
        source_job: src.view.job_id.clone(),
        audio_key: String::new(),
        audio_bytes: 0,
        audio_type: AUDIO_TYPE.into(),
        duration_ms: src.view.duration_ms,
        chapters: "[]".into(),
        created_at: now,
        updated_at: now,
    };
    apply_episode(
        &mut ep,
        EpisodeChange {
            title: Some(req.title),
            description: Some(req.description),
            season: Some(req.season),
            episode: Some(req.episode),
            chapters: Some(req.chapters.unwrap_or_else(|| {
                let mut c = src.view.chapters;
                c.truncate(podcast::MAX_CHAPTERS);
                c
            })),
        },
    )?;
    ep.audio_key = format!("{}{}/audio.opus", show_prefix(&show), ep.id);
    let bytes = objects(&st)?
        .copy(&src.audio_key, &ep.audio_key)
        .await
        .map_err(|e| storage_error("copying an episode's audio", &src.audio_key, &e))?;
    ep.audio_bytes = bytes as i64;
    if let Err(e) = st.db.create_episode(&ep).await {
        // The copy would be nobody's.
        if let Err(del) = objects(&st)?.delete(&ep.audio_key).await {
            warn!(key = %ep.audio_key, error = %del, "an episode's audio copy stays in the store");
        }
        return Err(store_error(e));
    }
    info!(show = %show.id, episode = %ep.id, source = %ep.source_job, bytes, "episode created");
    Ok((StatusCode::CREATED, Json(episode_view(&st, ep, now))))
}

#[utoipa::path(get, path = "/api/v1/podcasts/shows/{id}/episodes", tag = "podcasts", params(("id" = String, Path)), responses((status = 200, body = Vec<EpisodeView>), (status = 404, description = "no such show", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_episodes(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<EpisodeView>>, ApiError> {
    let show = own_show(&st, &caller, &id).await?;
    let now = now_millis();
    let eps = st.db.episodes(&show.id).await.map_err(store_error)?;
    Ok(Json(
        eps.into_iter().map(|e| episode_view(&st, e, now)).collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/podcasts/shows/{id}/episodes/{episode}", tag = "podcasts", params(("id" = String, Path), ("episode" = String, Path)), responses((status = 200, body = EpisodeView), (status = 404, description = "no such show or episode", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_episode(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, episode)): Path<(String, String)>,
) -> Result<Json<EpisodeView>, ApiError> {
    let (_, e) = own_episode(&st, &caller, &id, &episode).await?;
    Ok(Json(episode_view(&st, e, now_millis())))
}

async fn save_episode(st: &AppState, mut e: Episode) -> Result<Json<EpisodeView>, ApiError> {
    let now = now_millis();
    e.updated_at = now;
    if !st.db.update_episode(&e).await.map_err(store_error)? {
        return Err(ApiError::not_found("no such episode in this show"));
    }
    Ok(Json(episode_view(st, e, now)))
}

#[utoipa::path(patch, path = "/api/v1/podcasts/shows/{id}/episodes/{episode}", tag = "podcasts", params(("id" = String, Path), ("episode" = String, Path)), request_body = EpisodeChange, responses((status = 200, body = EpisodeView), (status = 404, description = "no such show or episode", body = ErrorBody), (status = 422, description = "a bad field", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update_episode(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, episode)): Path<(String, String)>,
    ApiJson(change): ApiJson<EpisodeChange>,
) -> Result<Json<EpisodeView>, ApiError> {
    let (_, mut e) = own_episode(&st, &caller, &id, &episode).await?;
    apply_episode(&mut e, change)?;
    save_episode(&st, e).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PublishRequest {
    /// When it shows in the feed (ms since the epoch); absent: now. Ahead: scheduled.
    pub publish_at: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/podcasts/shows/{id}/episodes/{episode}/publish", tag = "podcasts", params(("id" = String, Path), ("episode" = String, Path)), request_body(content = PublishRequest, description = "optional"), responses((status = 200, body = EpisodeView), (status = 404, description = "no such show or episode", body = ErrorBody), (status = 422, description = "a bad time", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn publish(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, episode)): Path<(String, String)>,
    crate::extract::OptionalJson(req): crate::extract::OptionalJson<PublishRequest>,
) -> Result<Json<EpisodeView>, ApiError> {
    let (_, mut e) = own_episode(&st, &caller, &id, &episode).await?;
    let at = req.publish_at.unwrap_or_else(now_millis);
    // Year 1970 to 9999: what an RSS date can say.
    if !(0..=253_402_300_799_000).contains(&at) {
        return Err(ApiError::invalid_field(
            "publish_at",
            "must be a time in milliseconds since 1970",
        ));
    }
    e.status = "published".into();
    e.publish_at = Some(at);
    info!(show = %e.show_id, episode = %e.id, publish_at = at, "episode published");
    save_episode(&st, e).await
}

#[utoipa::path(post, path = "/api/v1/podcasts/shows/{id}/episodes/{episode}/unpublish", tag = "podcasts", params(("id" = String, Path), ("episode" = String, Path)), responses((status = 200, body = EpisodeView), (status = 404, description = "no such show or episode", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn unpublish(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, episode)): Path<(String, String)>,
) -> Result<Json<EpisodeView>, ApiError> {
    let (_, mut e) = own_episode(&st, &caller, &id, &episode).await?;
    e.status = "draft".into();
    e.publish_at = None;
    info!(show = %e.show_id, episode = %e.id, "episode unpublished");
    save_episode(&st, e).await
}

#[utoipa::path(delete, path = "/api/v1/podcasts/shows/{id}/episodes/{episode}", tag = "podcasts", params(("id" = String, Path), ("episode" = String, Path)), responses((status = 204, description = "deleted, with its audio"), (status = 404, description = "no such show or episode", body = ErrorBody), (status = 503, description = "the object store is unavailable", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_episode(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, episode)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (show, e) = own_episode(&st, &caller, &id, &episode).await?;
    let prefix = format!("{}{}/", show_prefix(&show), e.id);
    objects(&st)?
        .delete_prefix(&prefix)
        .await
        .map_err(|err| storage_error("deleting an episode's files", &prefix, &err))?;
    if !st
        .db
        .delete_episode(&show.id, &e.id)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("no such episode in this show"));
    }
    info!(show = %show.id, episode = %e.id, "episode deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MarkerRequest {
    pub title: String,
    /// When (ms since the epoch); absent: now. Within the recording.
    pub at_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkerView {
    pub id: String,
    pub at_ms: i64,
    pub title: String,
    pub created_by: String,
}

impl From<Marker> for MarkerView {
    fn from(m: Marker) -> Self {
        MarkerView {
            id: m.id,
            at_ms: m.at_ms,
            title: m.title,
            created_by: m.created_by,
        }
    }
}

/// Sets a chapter marker in a recording (while it records, or afterwards at a time
/// within it): a mixdown's episode starts its chapters there.
pub async fn add_marker(
    st: &AppState,
    rec: &crate::store::Recording,
    who: &str,
    title: &str,
    at_ms: Option<i64>,
) -> Result<Marker, ApiError> {
    let now = now_millis();
    let title = podcast::text("title", title, MAX_TITLE, false)?;
    let at = at_ms.unwrap_or(now);
    let end = rec.stopped_at.unwrap_or(now);
    if at_ms.is_none() && rec.status != "recording" {
        return Err(ApiError::conflict(
            "not_recording",
            "the recording has stopped; give the marker's time (at_ms)",
        ));
    }
    if at < rec.started_at || at > end {
        return Err(ApiError::invalid_field(
            "at_ms",
            "must be within the recording",
        ));
    }
    if st.db.markers(&rec.id).await.map_err(store_error)?.len() >= podcast::MAX_CHAPTERS {
        return Err(ApiError::conflict(
            "too_many_markers",
            format!(
                "a recording holds at most {} markers",
                podcast::MAX_CHAPTERS
            ),
        ));
    }
    let m = Marker {
        id: uuid::Uuid::new_v4().simple().to_string(),
        recording_id: rec.id.clone(),
        at_ms: at,
        title,
        created_by: who.to_owned(),
        created_at: now,
    };
    st.db.add_marker(&m).await.map_err(store_error)?;
    info!(recording = %rec.id, at, by = %who, "marker set");
    Ok(m)
}

#[utoipa::path(post, path = "/api/v1/rooms/{name}/recordings/{id}/markers", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), request_body = MarkerRequest, responses((status = 201, body = MarkerView), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 409, description = "stopped, and no time given", body = ErrorBody), (status = 422, description = "a bad title or time", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_marker(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<MarkerRequest>,
) -> Result<(StatusCode, Json<MarkerView>), ApiError> {
    let who = match &caller {
        RecordCaller::User(c) => c.user_id.clone(),
        RecordCaller::Token { identity, .. } => identity.clone(),
    };
    let rec = crate::routes::recordings::room_recording(&st, &caller, &name, &id).await?;
    let m = add_marker(&st, &rec, &who, &req.title, req.at_ms).await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/recordings/{id}/markers", tag = "recordings", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("id" = String, Path)), responses((status = 200, body = Vec<MarkerView>), (status = 404, description = "no such room or recording", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_markers(
    State(st): State<AppState>,
    caller: RecordCaller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Vec<MarkerView>>, ApiError> {
    let rec = crate::routes::recordings::room_recording(&st, &caller, &name, &id).await?;
    let ms = st.db.markers(&rec.id).await.map_err(store_error)?;
    Ok(Json(ms.into_iter().map(MarkerView::from).collect()))
}

/// The room protocol's `marker` message: a marker now in the room's running recording.
#[derive(Clone)]
pub struct RoomMarkerSink(pub AppState);

impl std::fmt::Debug for RoomMarkerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomMarkerSink")
    }
}

impl signaling::room::RoomMarkers for RoomMarkerSink {
    fn mark<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
        title: &'a str,
    ) -> crate::routes::recordings::BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let st = &self.0;
            // The room's id; its recording may be written on another node.
            let rec = st
                .db
                .room_recordings(room)
                .await
                .map_err(store_error)?
                .into_iter()
                .find(|r| r.status == "recording")
                .ok_or_else(|| {
                    ApiError::conflict("not_recording", "the room is not being recorded")
                })?;
            let m = add_marker(st, &rec, identity, title, None).await?;
            Ok(serde_json::to_value(MarkerView::from(m)).expect("a marker serializes"))
        })
    }
}
