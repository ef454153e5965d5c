//! The public side of podcasts, for podcast apps and directories (no account): a
//! show's RSS feed, its artwork, and its live episodes' audio and chapters. An
//! episode that is a draft or scheduled is "not found" here, unless the request is a
//! signed link (the owner's page plays drafts with one).

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use signaling::ApiError;

use crate::auth::now_millis;
use crate::podcast::rss::{self, FeedUrls};
use crate::routes::jobs::objects;
use crate::routes::podcasts::FEED_LIMIT;
use crate::state::{AppState, store_error};
use crate::store::podcasts::{Episode, PodcastStore, Show};

async fn show(st: &AppState, id: &str) -> Result<Show, ApiError> {
    st.db
        .public_show(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such show"))
}

/// A live episode, or any episode of the show for a signed link to this path; whether
/// it is live.
async fn episode(
    st: &AppState,
    uri: &OriginalUri,
    show_id: &str,
    id: &str,
) -> Result<(Episode, bool), ApiError> {
    let e = st
        .db
        .episode(show_id, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such episode"))?;
    let linked = || {
        axum::extract::Query::<crate::links::LinkQuery>::try_from_uri(&uri.0)
            .is_ok_and(|q| st.links.verify(uri.0.path(), &q, now_millis() / 1000))
    };
    let live = e.is_live(now_millis());
    if live || linked() {
        Ok((e, live))
    } else {
        Err(ApiError::not_found("no such episode"))
    }
}

/// `GET /feeds/{show}.xml`: the show's RSS feed.
#[utoipa::path(get, path = "/feeds/{file}", tag = "podcasts", params(("file" = String, Path, description = "`<show id>.xml`")), responses((status = 200, description = "RSS 2.0", content_type = "application/rss+xml"), (status = 404, description = "no such show", body = crate::openapi::ErrorBody)))]
pub async fn feed(
    State(st): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let id = file
        .strip_suffix(".xml")
        .ok_or_else(|| ApiError::not_found("no such feed"))?;
    let s = show(&st, id).await?;
    let now = now_millis();
    let episodes = st
        .db
        .feed_episodes(&s.id, now, FEED_LIMIT)
        .await
        .map_err(store_error)?;
    let xml = rss::feed(&s, &episodes, &FeedUrls::new(&st.config.public_url), now);
    let mut r = (StatusCode::OK, xml).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/rss+xml; charset=utf-8"),
    );
    // Web players and directories read it from their own origins.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // Apps poll; a scheduled episode shows within a minute of its time.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(r)
}

#[utoipa::path(get, path = "/feeds/{show}/artwork", tag = "podcasts", params(("show" = String, Path)), responses((status = 200, description = "the image (JPEG or PNG)"), (status = 404, description = "no such show, or no artwork", body = crate::openapi::ErrorBody)))]
pub async fn artwork(
    State(st): State<AppState>,
    method: Method,
    Path(show_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = show(&st, &show_id).await?;
    let key = s
        .artwork_key
        .ok_or_else(|| ApiError::not_found("the show has no artwork"))?;
    let name = key.rsplit('/').next().unwrap_or("artwork");
    crate::routes::files::serve_public_object(&*objects(&st)?, &key, name, &method, &headers).await
}

#[utoipa::path(get, path = "/feeds/{show}/{episode}/audio.opus", tag = "podcasts", params(("show" = String, Path), ("episode" = String, Path)), responses((status = 200, description = "the episode's audio (Opus in Ogg)"), (status = 206, description = "the asked range"), (status = 307, description = "to the object store (S3)"), (status = 404, description = "no such live episode", body = crate::openapi::ErrorBody)))]
pub async fn audio(
    State(st): State<AppState>,
    method: Method,
    uri: OriginalUri,
    Path((show_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (e, live) = episode(&st, &uri, &show_id, &id).await?;
    let store = objects(&st)?;
    if live {
        crate::routes::files::serve_public_object(
            &*store,
            &e.audio_key,
            "audio.opus",
            &method,
            &headers,
        )
        .await
    } else {
        // The owner's page plays a draft: through the node (its policy admits no
        // other origin).
        crate::routes::files::serve_object(&*store, &e.audio_key, "audio.opus", &headers).await
    }
}

#[utoipa::path(get, path = "/feeds/{show}/{episode}/chapters.json", tag = "podcasts", params(("show" = String, Path), ("episode" = String, Path)), responses((status = 200, description = "Podcasting 2.0 JSON chapters", content_type = "application/json+chapters"), (status = 404, description = "no such live episode", body = crate::openapi::ErrorBody)))]
pub async fn chapters(
    State(st): State<AppState>,
    uri: OriginalUri,
    Path((show_id, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (e, _) = episode(&st, &uri, &show_id, &id).await?;
    let mut r = axum::Json(rss::chapters_json(&e)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json+chapters"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(r)
}
