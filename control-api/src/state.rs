//! Shared state of the API and the extractors every route uses.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use signaling::{ApiError, JoinTokenSigner, TokenError};

use crate::auth::AccessTokens;
use crate::ratelimit::RateLimiter;
use crate::store::{Db, Role, Store, StoreError};

/// Settings of the control API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base URL browsers and phones use (for pairing links and QR codes).
    pub public_url: String,
    /// Join tokens place their rooms on the cluster's nodes and carry that node's
    /// URLs (`crate::cluster`); off, they carry `public_url`.
    pub placement: bool,
    /// This server's region label: where a join token's room is placed unless the
    /// request names another.
    pub region: String,
    /// This server's embedded TURN URLs (in `ice_servers`): a token for a room on
    /// another node hands out that node's instead.
    pub embedded_turn_urls: Vec<String>,
    /// The cluster shares one `turn.shared_secret`, so this server can make
    /// credentials for another node's embedded TURN server.
    pub turn_secret_shared: bool,
    /// How long a pairing code lives.
    pub pairing_ttl: Duration,
    /// How long a password-reset token lives.
    pub reset_ttl: Duration,
    /// A device is online when its last heartbeat is newer than this.
    pub online_window: Duration,
    /// Longest join token the API issues.
    pub max_join_ttl: Duration,
    /// A remote-control command older than this when it reaches the device's node
    /// is dropped instead of delivered (the user has moved on).
    pub command_ttl: Duration,
    /// Largest upload `POST /api/v1/uploads` takes.
    pub max_upload_bytes: u64,
    /// Where uploads are spooled while they stream in.
    pub upload_dir: std::path::PathBuf,
    /// Session cookies carry `Secure` (the node is reached over HTTPS).
    pub secure_cookies: bool,
    /// A refresh token presented again this soon after its first use still works, into
    /// the same login (its answer may have been lost); later, reuse ends the login.
    pub refresh_reuse_leeway: Duration,
    /// STUN/TURN servers handed out with join tokens.
    pub ice_servers: Arc<signaling::IceServerConfig>,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` name the client ([`ClientAddr`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-ups allowed per client address per minute, and in all per minute.
    pub register_per_address_per_minute: u32,
    pub register_per_minute: u32,
    /// Password hashes (and checks) run at once; more wait up to
    /// `password_hash_wait`, then get 503 with `Retry-After`.
    pub concurrent_password_hashes: usize,
    pub password_hash_wait: Duration,
    /// An open pairing code is void once this many wrong codes were tried in its life
    /// (a wrong code names no pairing, so every open one counts it): with 25^8 codes,
    /// 10 000 guesses find a given code with odds below 10^-7, however many addresses
    /// the guesses come from.
    pub pairing_wrong_guesses_per_code: u32,
    /// The most a user may hold at once.
    pub quotas: Quotas,
    /// A browser socket silent this long (not even answering pings) is closed.
    pub websocket_idle: Duration,
    /// The listening history's consumer group on the bus (`crate::history`). Every
    /// node of a cluster uses the same one; a new name reads the topic again from its
    /// start, which counts nothing twice.
    pub history_group: String,
    /// How often raw tracks past their room's retention are looked for.
    pub retention_sweep: Duration,
    /// OpenID Connect providers for sign-in.
    pub oidc: Vec<crate::oidc::ProviderConfig>,
}

/// The most a user may hold at once; beyond, `403 quota_exceeded` (checked before each
/// new one, so requests racing each other may pass it by a few).
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Rooms they made (their devices' live rooms do not count).
    pub rooms: i64,
    pub devices: i64,
    /// Pairing codes waiting for a phone.
    pub open_pairings: i64,
    /// Uploads and mixdowns queued or in progress.
    pub jobs_in_flight: i64,
    /// Browser and device sockets open on one node.
    pub sockets: usize,
    /// Bytes of uploaded files kept in the store.
    pub upload_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            rooms: 100,
            devices: 50,
            open_pairings: 5,
            jobs_in_flight: 4,
            sockets: 20,
            upload_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl Quotas {
    /// What an account that has not verified its email may hold: enough to try
    /// everything, too little to host for others on an address it may not own.
    pub fn unverified(&self) -> Quotas {
        Quotas {
            rooms: self.rooms.min(10),
            devices: self.devices.min(10),
            open_pairings: self.open_pairings.min(3),
            jobs_in_flight: self.jobs_in_flight.min(2),
            sockets: self.sockets,
            upload_bytes: self.upload_bytes.min(1024 * 1024 * 1024),
        }
    }
}

/// The quotas of `user_id`: lower until the account verified its email.
pub async fn quotas_of(st: &AppState, user_id: &str) -> Result<(Quotas, bool), ApiError> {
    let verified = st
        .db
        .user_by_id(user_id)
        .await
        .map_err(store_error)?
        .is_some_and(|u| u.email_verified_at.is_some());
    let q = st.config.quotas;
    Ok(if verified {
        (q, true)
    } else {
        (q.unverified(), false)
    })
}

/// What a quota counts.
#[derive(Debug, Clone, Copy)]
pub enum Quota {
    Rooms,
    Devices,
    OpenPairings,
    JobsInFlight,
}

/// Refuses one more of `what` when the user holds the most their quota allows.
pub async fn within_quota(st: &AppState, user_id: &str, what: Quota) -> Result<(), ApiError> {
    let c = st
        .db
        .owned_counts(user_id, crate::auth::now_millis())
        .await
        .map_err(store_error)?;
    let (q, verified) = quotas_of(st, user_id).await?;
    let (have, max, noun, advice) = match what {
        Quota::Rooms => (c.rooms, q.rooms, "rooms", "delete one to make another"),
        Quota::Devices => (c.devices, q.devices, "devices", "remove one to add another"),
        Quota::OpenPairings => (
            c.open_pairings,
            q.open_pairings,
            "pairing codes waiting for a phone",
            "use one, or wait a few minutes for them to expire",
        ),
        Quota::JobsInFlight => (
            c.jobs_in_flight,
            q.jobs_in_flight,
            "uploads and episodes in progress",
            "wait for one to finish",
        ),
    };
    if have >= max {
        tracing::info!(user = %user_id, have, max, noun, "quota reached");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            if verified {
                format!("You have {have} {noun}, the most this server allows: {advice}.")
            } else {
                format!(
                    "You have {have} {noun}, the most until you confirm your email address (open the link in the mail we sent): {advice}."
                )
            },
        ));
    }
    Ok(())
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: "http://127.0.0.1:8080".into(),
            placement: false,
            region: String::new(),
            embedded_turn_urls: Vec::new(),
            turn_secret_shared: false,
            pairing_ttl: Duration::from_secs(5 * 60),
            reset_ttl: Duration::from_secs(30 * 60),
            online_window: Duration::from_secs(60),
            max_join_ttl: Duration::from_secs(3600),
            command_ttl: Duration::from_secs(10),
            max_upload_bytes: 512 * 1024 * 1024,
            upload_dir: std::env::temp_dir().join("streamcore-uploads"),
            secure_cookies: false,
            refresh_reuse_leeway: Duration::from_secs(30),
            ice_servers: Arc::default(),
            trusted_proxies: Vec::new(),
            register_per_address_per_minute: 10,
            register_per_minute: 300,
            // Two per core: the cores stay busy, and 19 MiB each stays bounded.
            concurrent_password_hashes: 2 * std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get),
            password_hash_wait: Duration::from_secs(5),
            pairing_wrong_guesses_per_code: 10_000,
            quotas: Quotas::default(),
            websocket_idle: Duration::from_secs(60),
            history_group: "streamcore-history".into(),
            retention_sweep: Duration::from_secs(600),
            oidc: Vec::new(),
        }
    }
}

pub struct Limits {
    /// Login attempts per account.
    pub login_account: RateLimiter,
    /// Login and reset attempts per client address.
    pub login_addr: RateLimiter,
    /// Reset mails per account.
    pub reset_account: RateLimiter,
    /// Pairing claims per client address.
    pub pairing_addr: RateLimiter,
    /// Sign-ups per client address, and in all.
    pub register_addr: RateLimiter,
    pub register_all: RateLimiter,
    /// Room invitation mails per inviting user.
    pub invite_mails: RateLimiter,
    /// Verification mails asked for again, per account.
    pub verify_mails: RateLimiter,
    /// Sign-up mails per address (beyond it, sign-ups for it are answered alike and
    /// mail nothing).
    pub signup_mails: RateLimiter,
    /// Argon2 runs at once (hash or verify; 19 MiB each).
    pub password_hashes: Arc<tokio::sync::Semaphore>,
}

impl Limits {
    pub fn new(config: &ApiConfig) -> Self {
        let min = Duration::from_secs(60);
        Limits {
            login_account: RateLimiter::new(5, min),
            login_addr: RateLimiter::new(20, min),
            reset_account: RateLimiter::new(3, Duration::from_secs(3600)),
            pairing_addr: RateLimiter::new(10, min),
            register_addr: RateLimiter::new(config.register_per_address_per_minute, min),
            register_all: RateLimiter::new(config.register_per_minute, min),
            invite_mails: RateLimiter::new(30, Duration::from_secs(3600)),
            verify_mails: RateLimiter::new(3, Duration::from_secs(3600)),
            signup_mails: RateLimiter::new(3, Duration::from_secs(3600)),
            password_hashes: Arc::new(tokio::sync::Semaphore::new(
                config.concurrent_password_hashes.max(1),
            )),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(&ApiConfig::default())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub tokens: Arc<AccessTokens>,
    /// Signs the short-lived links pages put in `<audio src>` and downloads.
    pub links: Arc<crate::links::FileLinks>,
    /// Signs every record the relay publishes; the hub and the worker act only on
    /// records it verifies (`events::EventKey`).
    pub event_key: Arc<::events::EventKey>,
    pub join_signer: Arc<JoinTokenSigner>,
    pub config: Arc<ApiConfig>,
    pub limits: Arc<Limits>,
    /// Signalled when a mail is queued in the outbox, so a running
    /// [`MailRelay`](crate::mail::MailRelay) sends it at once instead of at its next poll.
    pub mail_queued: Arc<tokio::sync::Notify>,
    /// Where the event relay publishes and the hub consumes.
    pub bus: events::Bus,
    /// Signalled when events are written to the outbox, so the
    /// [`EventRelay`](crate::relay::EventRelay) publishes them at once.
    pub events_queued: Arc<tokio::sync::Notify>,
    /// This node's live device and browser sockets.
    pub hub: Arc<crate::hub::Hub>,
    /// Names this node in event sources, consumer groups and the relay lease.
    pub node_id: Arc<str>,
    /// The media node's recorder (`None` on an API-only node).
    pub recordings: crate::routes::recordings::Recordings,
    /// Who is in a room on this node, to end revoked passes (`None`: API only).
    pub live_rooms: crate::live_rooms::LiveRoomsRef,
    /// The room epochs this node has acted on (`crate::live_rooms::check_revocations`).
    pub revocations_seen: crate::live_rooms::SeenEpochs,
    /// The object store uploads go to (`None` on an API-only node).
    pub objects: crate::routes::jobs::ObjectsRef,
    /// The OpenID Connect providers people may sign in with.
    pub oidc: Arc<crate::oidc::Providers>,
}

impl AppState {
    /// `streamcore/<node id>`, the `source` of every event this node emits.
    pub fn event_source(&self) -> String {
        format!("streamcore/{}", self.node_id)
    }
}

/// Who is calling, from a verified access token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub role: Role,
    /// Set when the credential belongs to one paired device.
    pub device: Option<String>,
    /// When the access token ends (Unix milliseconds): a socket opened with it is
    /// closed then, unless the client sends a fresh one in-band.
    pub expires_at: crate::store::Millis,
    /// When the access token was issued (Unix milliseconds).
    pub issued_at: crate::store::Millis,
}

impl Caller {
    /// The caller's account as stored now (401 when it was removed since the token
    /// was issued).
    pub async fn account(&self, st: &AppState) -> Result<crate::store::User, ApiError> {
        st.db
            .user_by_id(&self.user_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))
    }

    /// Refuses device-scoped credentials: only a user's own session may do this.
    pub fn require_user(&self) -> Result<(), ApiError> {
        match self.device {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "a device credential cannot do this; log in as the user",
            )),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require_user()?;
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <access token>")
        })?;
        Caller::from_token(st, token)
    }
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl Caller {
    /// Verifies an access token (from a header, or a WebSocket's first message).
    pub fn from_token(st: &AppState, token: &str) -> Result<Caller, ApiError> {
        let claims = st.tokens.verify(token.trim()).map_err(|e| match e {
            TokenError::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the access token has expired; refresh it",
            ),
            _ => ApiError::unauthorized("the access token is not valid"),
        })?;
        Ok(Caller {
            user_id: claims.sub,
            role: claims.role,
            device: claims.device,
            expires_at: (claims.exp as crate::store::Millis).saturating_mul(1000),
            issued_at: claims
                .iat_ms
                .unwrap_or((claims.iat as crate::store::Millis).saturating_mul(1000)),
        })
    }
}

pub use crate::client_addr::ClientAddr;

/// Maps storage failures: conflicts are the caller's, anything else is ours.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => {
            ApiError::conflict("conflict", format!("{what} already exists"))
        }
        other => {
            tracing::error!(error = %other, "storage failed");
            ApiError::internal("storage is unavailable; try again")
        }
    }
}

pub fn too_many(retry: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many attempts; try again in {} s",
            retry.as_secs().max(1)
        ),
    )
    .with_retry_after(retry)
}
