//! # control-api: who may do what
//!
//! Users and sessions (Argon2id passwords, short-lived access JWTs, rotating refresh
//! tokens with reuse detection), password reset through a mail outbox (delivered over
//! SMTP by [`mail::MailRelay`] when the node has SMTP configured), devices and
//! phone pairing, rooms and join tokens for the SFU, and the phone's music-library
//! metadata. JSON over `/api/v1`, stored through [`store::Store`] in SQLite (embedded
//! default) or PostgreSQL.
//!
//! Invariants:
//! - control-api never touches media packets; it signs join tokens the SFU verifies, and
//!   asks the media plane to end the sessions whose pass it revoked ([`live_rooms`]).
//! - Every read of user-owned data is filtered by the caller's user id in the store query
//!   itself: another user's device, room or track is "not found", never "forbidden".
//! - Secrets (refresh tokens, reset tokens) are stored only as SHA-256 digests; passwords
//!   only as Argon2id hashes; none of them is ever logged.
//! - Every error is `{"error": {"code", "message"[, "field"]}}`.

pub mod admin;
pub mod auth;
pub mod body_pace;
pub mod client_addr;
pub mod cluster;
pub mod cookies;
pub mod events;
pub mod extract;
pub mod history;
pub mod hub;
pub mod keyfile;
pub mod links;
pub mod live_rooms;
pub mod mail;
pub mod oidc;
pub mod openapi;
pub mod podcast;
pub mod ratelimit;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod state;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use signaling::{ApiError, JoinTokenSigner};

pub use state::{ApiConfig, AppState, Caller};
use store::{Db, Store, StoreError};

use routes::{
    accounts, control, devices, feeds, jobs, library, members, podcasts, recordings, rooms,
};

/// Connects to the database (`postgres://…`, or a SQLite path/URL), applies the
/// migrations, and loads or creates the access-token key in `keys_dir`.
pub async fn build_state(
    database_url: &str,
    keys_dir: &Path,
    join_signer: Arc<JoinTokenSigner>,
    config: ApiConfig,
) -> Result<AppState, BuildError> {
    let db = Db::connect(database_url).await?;
    db.migrate().await?;
    let config_oidc = config.oidc.clone();
    let tokens = auth::AccessTokens::load_or_create(&keys_dir.join("access-token-ed25519.pem"))?;
    let links = links::FileLinks::load_or_create(&keys_dir.join("file-links.key"))
        .map_err(BuildError::LinkKey)?;
    let event_key = keyfile::load_or_create(&keys_dir.join(EVENT_KEY_FILE))
        .map_err(|e| e.to_string())
        .and_then(|k| ::events::EventKey::new(&k))
        .map_err(BuildError::EventKey)?;
    Ok(AppState {
        db,
        tokens: Arc::new(tokens),
        links: Arc::new(links),
        event_key: Arc::new(event_key),
        join_signer,
        limits: Arc::new(state::Limits::new(&config)),
        config: Arc::new(config),
        mail_queued: Arc::new(tokio::sync::Notify::new()),
        bus: ::events::Bus::in_process(),
        events_queued: Arc::new(tokio::sync::Notify::new()),
        hub: Arc::new(hub::Hub::default()),
        node_id: Arc::from(uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
        recordings: None,
        live_rooms: None,
        revocations_seen: Default::default(),
        objects: None,
        oidc: oidc::Providers::new(config_oidc),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] signaling::TokenError),
    #[error("the file-link key: {0}")]
    LinkKey(std::io::Error),
    #[error("the event key ({EVENT_KEY_FILE} in the keys directory): {0}")]
    EventKey(String),
}

/// The cluster's event key in the keys directory: nodes sharing a bus share it.
pub const EVENT_KEY_FILE: &str = "event-signing.key";

/// All routes of the API, under `/api/v1`, plus the JWKS document.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/auth/register", post(accounts::register))
        .route("/auth/register/complete", post(accounts::complete_signup))
        .route("/auth/login", post(accounts::login))
        .route("/auth/refresh", post(accounts::refresh))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/password/forgot", post(accounts::forgot_password))
        .route("/auth/password/reset", post(accounts::reset_password))
        .route("/auth/email/verify", post(accounts::verify_email))
        .route("/auth/email/resend", post(accounts::resend_verification))
        .route("/auth/oidc/providers", get(routes::oidc::providers))
        .route("/auth/oidc/link", post(routes::oidc::link))
        .route("/auth/oidc/link/{token}", get(routes::oidc::pending))
        .route("/me/providers", get(routes::oidc::mine))
        .route(
            "/me/providers/{provider}",
            post(routes::oidc::link_start).delete(routes::oidc::unlink),
        )
        .route("/me", get(accounts::me))
        .route("/me/password", post(accounts::change_password))
        .route("/me/plays", get(routes::history::plays))
        .route("/me/stats", get(routes::history::stats))
        .route("/admin/users", get(accounts::admin_list_users))
        .route(
            "/admin/users/{id}/sessions",
            axum::routing::delete(accounts::admin_end_sessions),
        )
        .route("/admin/mail", get(accounts::admin_mail))
        .route("/admin/nodes", get(cluster::list_nodes))
        .route("/admin/nodes/{id}/drain", post(cluster::drain_node))
        .route(
            "/admin/nodes/{id}",
            axum::routing::delete(cluster::remove_node),
        )
        .route("/devices", post(devices::create).get(devices::list))
        .route(
            "/devices/{id}",
            get(devices::get)
                .patch(devices::rename)
                .delete(devices::remove),
        )
        .route("/devices/{id}/heartbeat", post(devices::heartbeat))
        .route("/devices/{id}/stream", post(rooms::device_stream))
        .route("/devices/{id}/commands", post(control::command))
        .route("/devices/{id}/now-playing", get(control::now_playing))
        .route("/devices/socket", get(control::device_socket))
        .route("/events/socket", get(control::browser_socket))
        .route("/pairings", post(devices::start_pairing))
        .route("/pairings/claim", post(devices::claim))
        .route("/pairings/{id}", get(devices::pairing_status))
        .route("/rooms", post(rooms::create).get(rooms::list))
        .route(
            "/rooms/{name}",
            get(rooms::get).patch(rooms::update).delete(rooms::delete),
        )
        .route("/rooms/{name}/token", post(rooms::join_token))
        .route("/rooms/{name}/share-link", post(rooms::new_share_link))
        .route("/rooms/{name}/reset", post(rooms::reset))
        .route(
            "/rooms/{name}/members",
            get(members::list).post(members::invite),
        )
        .route("/rooms/{name}/members/{email}", delete(members::remove))
        .route("/invitations", get(members::invitations))
        .route("/invitations/{id}/accept", post(members::accept))
        .route("/invitations/{id}/decline", post(members::decline))
        .route(
            "/rooms/{name}/recordings",
            post(recordings::start).get(recordings::list),
        )
        .route(
            "/rooms/{name}/recordings/{id}",
            get(recordings::get).delete(recordings::delete),
        )
        .route("/rooms/{name}/recordings/{id}/stop", post(recordings::stop))
        .route(
            "/rooms/{name}/recordings/{id}/files/{file}",
            get(recordings::file),
        )
        .route("/rooms/{name}/recordings/{id}/mixdown", post(jobs::mixdown))
        .route(
            "/rooms/{name}/recordings/{id}/mixdown/{job}/files/{file}",
            get(jobs::mixdown_file),
        )
        .route(
            "/uploads",
            post(jobs::upload)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_refused_upload))
                .get(jobs::list),
        )
        .route("/uploads/{id}", get(jobs::get).delete(jobs::delete))
        .route("/uploads/{id}/files/{name}", get(jobs::file))
        .route("/podcasts/categories", get(podcasts::categories))
        .route("/podcasts/sources", get(podcasts::sources))
        .route(
            "/podcasts/shows",
            post(podcasts::create_show).get(podcasts::list_shows),
        )
        .route(
            "/podcasts/shows/{id}",
            get(podcasts::get_show)
                .patch(podcasts::update_show)
                .delete(podcasts::delete_show),
        )
        .route(
            "/podcasts/shows/{id}/artwork",
            axum::routing::put(podcasts::put_artwork).layer(axum::extract::DefaultBodyLimit::max(
                podcasts::MAX_ARTWORK_BYTES,
            )),
        )
        .route(
            "/podcasts/shows/{id}/episodes",
            post(podcasts::create_episode).get(podcasts::list_episodes),
        )
        .route(
            "/podcasts/shows/{id}/episodes/{episode}",
            get(podcasts::get_episode)
                .patch(podcasts::update_episode)
                .delete(podcasts::delete_episode),
        )
        .route(
            "/podcasts/shows/{id}/episodes/{episode}/publish",
            post(podcasts::publish),
        )
        .route(
            "/podcasts/shows/{id}/episodes/{episode}/unpublish",
            post(podcasts::unpublish),
        )
        .route(
            "/rooms/{name}/retention",
            get(routes::retention::get).put(routes::retention::put),
        )
        .route(
            "/rooms/{name}/recordings/{id}/markers",
            post(podcasts::create_marker).get(podcasts::list_markers),
        )
        .route("/library/sync", post(library::sync))
        .route("/library/tracks", get(library::list))
        .route("/jwks.json", get(rooms::jwks));
    Router::new()
        .nest("/api/v1", v1)
        .route("/.well-known/jwks.json", get(rooms::jwks))
        .route("/auth/oidc/{provider}/start", get(routes::oidc::start))
        .route("/auth/oidc/callback", get(routes::oidc::callback))
        .route("/feeds/{file}", get(feeds::feed))
        .route("/feeds/{show}/artwork", get(feeds::artwork))
        .route("/feeds/{show}/{episode}/audio.opus", get(feeds::audio))
        .route(
            "/feeds/{show}/{episode}/chapters.json",
            get(feeds::chapters),
        )
        .merge(openapi::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(state)
}

/// A refused upload may leave most of its body unread, and the server then closes the
/// connection: saying so (`Connection: close`) keeps a client from sending its next
/// request on a connection that is going away.
async fn close_after_refused_upload(mut r: axum::response::Response) -> axum::response::Response {
    if !r.status().is_success() {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}
