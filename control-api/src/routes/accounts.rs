//! Accounts and sessions: register, login, refresh, logout, me, passwords, admin.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::openapi::ErrorBody;
use signaling::ApiError;
use tracing::{info, warn};

use crate::auth::{self, now_millis, secret_hash};
use crate::cookies::{self, CookieKind};
use crate::state::{AppState, Caller, ClientAddr, store_error, too_many};
use crate::store::{NewUser, Role, Signup, Store, User};

pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 256;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub created_at: i64,
    /// Whether the account proved it holds `email` (the link of its verification
    /// mail). Unverified accounts have lower quotas and send no invitations.
    pub email_verified: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            created_at: u.created_at,
            email_verified: u.email_verified_at.is_some(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub access_token: String,
    /// Absent when it was put in the page's HttpOnly cookie instead (`"cookie"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    pub user: UserView,
    pub session: Session,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Refresh tokens revoked.
    pub revoked: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Refused (422): the password is chosen on the page the sign-up mail links to.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompleteSignupRequest {
    /// The token of the sign-up mail's link.
    pub token: String,
    /// The new account's password (at least 10 characters).
    pub password: String,
    /// A browser page: keep the refresh token in an HttpOnly cookie, not in the body.
    #[serde(default)]
    pub cookie: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// A browser page: keep the refresh token in an HttpOnly cookie, not in the body.
    #[serde(default)]
    pub cookie: bool,
}

/// The refresh token itself, or which of the page's cookies holds it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// `user` or `device`: take the token from that HttpOnly cookie.
    #[serde(default)]
    pub cookie: Option<CookieKind>,
}

/// The refresh token a request presents, and the cookie it came from.
fn presented(
    req: &RefreshRequest,
    headers: &HeaderMap,
) -> Result<(String, Option<CookieKind>), ApiError> {
    match (&req.refresh_token, req.cookie) {
        (Some(t), None) => Ok((t.trim().to_owned(), None)),
        (None, Some(kind)) => cookies::read(headers, kind)
            .map(|t| (t, Some(kind)))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "no_session",
                    "this browser holds no session; sign in",
                )
            }),
        _ => Err(ApiError::invalid_field(
            "refresh_token",
            "give either refresh_token or cookie",
        )),
    }
}

/// The answer carrying a new session (`wrap` puts it in its body): its refresh token
/// in the body, or in the page's cookie (and then not in the body).
pub fn session_response<T: Serialize>(
    st: &AppState,
    status: StatusCode,
    mut session: Session,
    cookie: Option<CookieKind>,
    wrap: impl FnOnce(Session) -> T,
) -> Response {
    let set = cookie.and_then(|kind| {
        let token = session.refresh_token.take()?;
        Some(cookies::set(
            kind,
            &token,
            st.tokens.refresh_ttl,
            st.config.secure_cookies,
        ))
    });
    let mut resp = (status, Json(wrap(session))).into_response();
    if let Some(v) = set {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotRequest {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The token of the verification mail.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    pub token: String,
    pub new_password: String,
}

pub fn parse_email(s: &str) -> Result<String, ApiError> {
    let e = s.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(ApiError::invalid_field(
            "email",
            "must be an email address like name@example.com",
        ))
    }
}

pub fn check_password(field: &'static str, p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if n < MIN_PASSWORD {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    if n > MAX_PASSWORD {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// Runs Argon2 work (hash or verify) on a blocking thread, holding one of the
/// bounded hashing slots: each costs 19 MiB, so a flood of sign-ups waits (up to
/// `password_hash_wait`, then 503 with `Retry-After`) instead of taking the node's
/// memory.
pub(crate) async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let wait = st.config.password_hash_wait;
    let permit = tokio::time::timeout(wait, st.limits.password_hashes.clone().acquire_owned())
        .await
        .map_err(|_| {
            tracing::warn!(
                wait_ms = wait.as_millis() as u64,
                "every password-hashing slot busy: request refused"
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy checking passwords; try again in a few seconds",
            )
            .with_retry_after(Duration::from_secs(2))
        })?
        .map_err(|_| ApiError::internal("password hashing is shut down"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|_| ApiError::internal("password hashing failed"))
}

async fn hash(st: &AppState, password: String) -> Result<String, ApiError> {
    blocking(st, move || auth::hash_password(&password))
        .await?
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Starts a new session (refresh-token family) for a user or one of their devices.
pub async fn new_session(
    st: &AppState,
    user: &User,
    device: Option<&str>,
) -> Result<Session, ApiError> {
    let access = st
        .tokens
        .issue(&user.id, user.role, device)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (refresh, rec) = st.tokens.new_refresh(&user.id, None, device);
    st.db.insert_refresh(rec).await.map_err(store_error)?;
    Ok(Session {
        access_token: access,
        refresh_token: Some(refresh),
        token_type: "Bearer",
        expires_in: st.tokens.access_ttl.as_secs(),
    })
}

/// Sign-up is mail first, and answers alike whoever asks: an address without an account
/// gets a link to finish signing up (the account is made there, with the password chosen
/// there); an address that has one gets a mail telling its owner. Both cost the same
/// store work, and no password is hashed here.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "accounts", request_body = RegisterRequest, responses((status = 202, description = "a mail is on its way to the address: a sign-up link, or (when it has an account) a note to its owner"), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 429, description = "too many sign-ups from this address or in all (Retry-After)", body = ErrorBody)))]
pub async fn register(
    State(st): State<AppState>,
    addr: ClientAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<StatusCode, ApiError> {
    // Before anything costs: sign-ups per client address, and in all.
    let now = Instant::now();
    st.limits
        .register_addr
        .check(&addr.key(), now)
        .map_err(too_many)?;
    st.limits.register_all.check("all", now).map_err(too_many)?;
    let email = parse_email(&req.email)?;
    if req.password.is_some() {
        return Err(ApiError::invalid_field(
            "password",
            "the password is chosen on the page the sign-up mail links to; send only email and display_name",
        ));
    }
    let display_name = req.display_name.unwrap_or_default().trim().to_owned();
    if display_name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "display_name",
            "must be at most 100 characters",
        ));
    }
    if st.limits.signup_mails.check(&email, now).is_err() {
        // Quietly: a 429 here would say something about the address.
        return Ok(StatusCode::ACCEPTED);
    }
    let existing = st.db.user_by_email(&email).await.map_err(store_error)?;
    // A link is stored either way (one for a taken address can never make an account),
    // so both answers cost the same.
    let token = auth::new_secret();
    let created_at = now_millis();
    st.db
        .insert_signup(Signup {
            token_hash: secret_hash(&token),
            email: email.clone(),
            display_name,
            created_at,
            expires_at: created_at + SIGNUP_TTL_MS,
        })
        .await
        .map_err(store_error)?;
    let base = st.config.public_url.trim_end_matches('/');
    let (subject, body) = match &existing {
        Some(_) => (
            "You already have a StreamCore account",
            format!(
                "Someone (perhaps you) asked to make a StreamCore account with this address, which has one already.\n\nSign in: {base}/\nForgot the password? Ask for a new one there, under \"Forgot password\".\n\nIf it was not you, ignore this mail: nothing changed.\n"
            ),
        ),
        None => (
            "Finish signing up to StreamCore",
            format!(
                "Open this link to choose your password and finish making your StreamCore account:\n\nLink: {base}/sign-up?token={token}\nSign-up code: {token}\n\nIt works once, for 48 hours. If you did not ask for an account, ignore this mail.\n"
            ),
        ),
    };
    crate::mail::queue(&st, &email, subject, body)
        .await
        .map_err(store_error)?;
    match existing {
        Some(u) => {
            info!(user = %u.id, "sign-up asked for an address with an account; its owner is told")
        }
        None => info!("sign-up link queued in the outbox"),
    }
    Ok(StatusCode::ACCEPTED)
}

/// How long a sign-up link works.
const SIGNUP_TTL_MS: i64 = 48 * 3600 * 1000;

/// The link of a sign-up mail, opened: makes the account with the password chosen
/// there (its email verified: the link proves it) and signs in. The address's other
/// sign-up links are spent with it.
#[utoipa::path(post, path = "/api/v1/auth/register/complete", tag = "accounts", request_body = CompleteSignupRequest, responses((status = 201, body = Registered), (status = 400, description = "unknown, used or expired sign-up link", body = ErrorBody), (status = 409, description = "the address has an account already", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 503, description = "every password-hashing slot busy (Retry-After)", body = ErrorBody)))]
pub async fn complete_signup(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CompleteSignupRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_password("password", &req.password)?;
    let signup = st
        .db
        .signup_by_token(&secret_hash(req.token.trim()), now_millis())
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_signup_token",
                "this sign-up link is unknown, used or expired; sign up again",
            )
        })?;
    let password_hash = hash(&st, req.password).await?;
    // Admins are made by the operator (`streamcore admin create`), never by signing up.
    let role = Role::User;
    let made = st
        .db
        .create_user(NewUser {
            email: signup.email.clone(),
            display_name: signup.display_name.clone(),
            password_hash,
            role,
            email_verified: true,
        })
        .await;
    let account_exists = matches!(made, Ok(_) | Err(crate::store::StoreError::Conflict(_)));
    if account_exists {
        // Made now or before: every link of the address is spent.
        st.db
            .delete_signups(&signup.email)
            .await
            .map_err(store_error)?;
    }
    let user = made.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => ApiError::conflict(
            "email_taken",
            "this address has an account already: sign in, or ask for a new password",
        ),
        other => store_error(other),
    })?;
    info!(user = %user.id, role = role.as_str(), "account made from its sign-up link");
    let session = new_session(&st, &user, None).await?;
    Ok(session_response(
        &st,
        StatusCode::CREATED,
        session,
        req.cookie.then_some(CookieKind::User),
        |session| Registered {
            user: UserView::from(&user),
            session,
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest, responses((status = 200, body = Session), (status = 401, description = "email or password is wrong", body = ErrorBody), (status = 429, description = "too many attempts", body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    addr: ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    let email = req.email.trim().to_lowercase();
    st.limits
        .login_addr
        .check(&addr.key(), now)
        .map_err(too_many)?;
    st.limits
        .login_account
        .check(&email, now)
        .map_err(too_many)?;
    let user = st.db.user_by_email(&email).await.map_err(store_error)?;
    let hash = user.as_ref().map_or_else(
        || auth::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = req.password;
    // Always verify, so an unknown email costs the same time as a wrong password.
    let ok = blocking(&st, move || auth::verify_password(&password, &hash)).await?;
    match user {
        Some(u) if ok => {
            info!(user = %u.id, "login");
            let session = new_session(&st, &u, None).await?;
            Ok(session_response(
                &st,
                StatusCode::OK,
                session,
                req.cookie.then_some(CookieKind::User),
                |s| s,
            ))
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "email or password is wrong",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest, responses((status = 200, body = Session), (status = 401, description = "invalid, expired or reused (the family is revoked)", body = ErrorBody)))]
pub async fn refresh(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Response, Response> {
    let (token, cookie) = presented(&req, &headers).map_err(IntoResponse::into_response)?;
    // A cookie that did not work is removed, so the page stops presenting it.
    let refuse = |e: ApiError| {
        let mut r = e.into_response();
        if let Some(kind) = cookie {
            r.headers_mut().append(
                header::SET_COOKIE,
                cookies::clear(kind, st.config.secure_cookies),
            );
        }
        r
    };
    match rotate(&st, &token, cookie).await {
        Ok(session) => Ok(session_response(
            &st,
            StatusCode::OK,
            session,
            cookie,
            |s| s,
        )),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(refuse(e)),
        Err(e) => Err(e.into_response()),
    }
}

/// Spends a refresh token and makes the next one of its family.
async fn rotate(
    st: &AppState,
    token: &str,
    cookie: Option<CookieKind>,
) -> Result<Session, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "the refresh token is not valid; log in again",
        )
    };
    let rec = st
        .db
        .refresh_by_hash(&secret_hash(token))
        .await
        .map_err(store_error)?
        .ok_or_else(invalid)?;
    let now = now_millis();
    if rec.revoked_at.is_some() {
        return Err(invalid());
    }
    if rec.expires_at <= now {
        // Said apart from an ended one: the person sees "expired", not "ended".
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_expired",
            "the session has expired; log in again",
        ));
    }
    // A device's cookie holds a device login, a user's cookie a user's.
    if cookie.is_some_and(|k| (k == CookieKind::Device) != rec.device_id.is_some()) {
        return Err(invalid());
    }
    let first_use = st
        .db
        .mark_refresh_used(&rec.id, now)
        .await
        .map_err(store_error)?;
    // Used moments ago (or being used by a request racing this one): a browser that
    // never received the answer to its last refresh (a navigation cancelled it, the
    // network dropped), or two tabs refreshing at once where the browser has no
    // locks. It gets a new token of the same login instead of losing it.
    let leeway = st.config.refresh_reuse_leeway.as_millis() as i64;
    let recent = rec.used_at.is_none_or(|t| now - t < leeway);
    if !first_use && recent {
        info!(user = %rec.user_id, family = %rec.family_id, "refresh token presented again within the leeway");
    }
    if !first_use && !recent {
        // Used before: someone holds a copy. End the whole login.
        let n = st
            .db
            .revoke_family(&rec.family_id, now)
            .await
            .map_err(store_error)?;
        warn!(user = %rec.user_id, family = %rec.family_id, revoked = n, "refresh token reused; family revoked");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_reused",
            "this refresh token was already used; every session of this login was ended",
        ));
    }
    let user = st
        .db
        .user_by_id(&rec.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(invalid)?;
    let access = st
        .tokens
        .issue(&user.id, user.role, rec.device_id.as_deref())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (secret, next) =
        st.tokens
            .new_refresh(&user.id, Some(&rec.family_id), rec.device_id.as_deref());
    st.db.insert_refresh(next).await.map_err(store_error)?;
    Ok(Session {
        access_token: access,
        refresh_token: Some(secret),
        token_type: "Bearer",
        expires_in: st.tokens.access_ttl.as_secs(),
    })
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts", request_body = RefreshRequest, responses((status = 204, description = "the login (refresh family) is ended")))]
pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = match presented(&req, &headers) {
        Ok(p) => Some(p),
        // Logging out a browser that holds no session is not an error.
        Err(e) if e.status == StatusCode::UNAUTHORIZED => None,
        Err(e) => return Err(e),
    };
    if let Some((token, _)) = &presented
        && let Some(rec) = st
            .db
            .refresh_by_hash(&secret_hash(token))
            .await
            .map_err(store_error)?
    {
        st.db
            .revoke_family(&rec.family_id, now_millis())
            .await
            .map_err(store_error)?;
    }
    // Logging out an unknown or already-ended session is not an error.
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(kind) = req.cookie {
        resp.headers_mut().append(
            header::SET_COOKIE,
            cookies::clear(kind, st.config.secure_cookies),
        );
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", responses((status = 200, body = UserView), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn me(State(st): State<AppState>, caller: Caller) -> Result<Json<UserView>, ApiError> {
    let u = caller.account(&st).await?;
    Ok(Json(UserView::from(&u)))
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "accounts", request_body = ChangePassword, responses((status = 204, description = "changed; every session ended"), (status = 403, description = "not allowed", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn change_password(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    caller.require_user()?;
    check_password("new_password", &req.new_password)?;
    let u = caller.account(&st).await?;
    let (cur, h) = (req.current_password, u.password_hash.clone());
    if !blocking(&st, move || auth::verify_password(&cur, &h)).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "current_password is wrong",
        ));
    }
    let new_hash = hash(&st, req.new_password).await?;
    st.db
        .set_password(&u.id, &new_hash)
        .await
        .map_err(store_error)?;
    end_sessions(&st, &u.id, "password_changed").await?;
    info!(user = %u.id, "password changed; sessions ended");
    Ok(StatusCode::NO_CONTENT)
}

/// Always 202, whether or not the email has an account.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "accounts", request_body = ForgotRequest, responses((status = 202, description = "a reset mail is queued if the account exists"), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 429, description = "too many attempts", body = ErrorBody)))]
pub async fn forgot_password(
    State(st): State<AppState>,
    addr: ClientAddr,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<StatusCode, ApiError> {
    let now = Instant::now();
    st.limits
        .login_addr
        .check(&addr.key(), now)
        .map_err(too_many)?;
    let email = parse_email(&req.email)?;
    if st.limits.reset_account.check(&email, now).is_err() {
        // Quietly: a 429 here would tell an attacker the address is being reset.
        return Ok(StatusCode::ACCEPTED);
    }
    if let Some(u) = st.db.user_by_email(&email).await.map_err(store_error)? {
        let token = auth::new_secret();
        let expires = now_millis() + st.config.reset_ttl.as_millis() as i64;
        st.db
            .insert_password_reset(&u.id, &secret_hash(&token), expires)
            .await
            .map_err(store_error)?;
        let link = format!(
            "{}/reset-password?token={token}",
            st.config.public_url.trim_end_matches('/')
        );
        let body = format!(
            "Someone asked to reset the password of this account.\n\nReset token: {token}\nLink: {link}\n\nThe token works once and expires in {} minutes. If it was not you, ignore this mail.\n",
            st.config.reset_ttl.as_secs() / 60
        );
        crate::mail::queue(&st, &u.email, "Reset your StreamCore password", body)
            .await
            .map_err(store_error)?;
        info!(user = %u.id, "password reset mail queued in the outbox");
    }
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "accounts", request_body = ResetRequest, responses((status = 204, description = "password set; every session ended"), (status = 400, description = "unknown, used or expired token", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody)))]
pub async fn reset_password(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    check_password("new_password", &req.new_password)?;
    let user_id = st
        .db
        .take_password_reset(&secret_hash(req.token.trim()), now_millis())
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_reset_token",
                "the reset token is unknown, used or expired",
            )
        })?;
    let h = hash(&st, req.new_password).await?;
    st.db
        .set_password(&user_id, &h)
        .await
        .map_err(store_error)?;
    end_sessions(&st, &user_id, "password_reset").await?;
    info!(user = %user_id, "password reset; sessions ended");
    Ok(StatusCode::NO_CONTENT)
}

/// How long a verification link works.
const VERIFY_TTL_MS: i64 = 48 * 3600 * 1000;

/// Queues a mail with a link that proves the account holds its address.
async fn mail_verification(st: &AppState, user: &User) -> Result<(), ApiError> {
    let token = auth::new_secret();
    st.db
        .insert_email_verification(
            &user.id,
            &user.email,
            &secret_hash(&token),
            now_millis() + VERIFY_TTL_MS,
        )
        .await
        .map_err(store_error)?;
    let link = format!(
        "{}/verify-email?token={token}",
        st.config.public_url.trim_end_matches('/')
    );
    let body = format!(
        "Open this link to confirm that this address is yours:\n\nLink: {link}\nVerification token: {token}\n\nIt works once, for 48 hours. If you did not make a StreamCore account, ignore this mail.\n"
    );
    crate::mail::queue(
        st,
        &user.email,
        "Confirm your StreamCore email address",
        body,
    )
    .await
    .map_err(store_error)?;
    info!(user = %user.id, "verification mail queued in the outbox");
    Ok(())
}

/// Confirms the account's email with the token of its verification mail.
#[utoipa::path(post, path = "/api/v1/auth/email/verify", tag = "accounts", request_body = VerifyRequest, responses((status = 204, description = "the email is verified"), (status = 400, description = "unknown, used or expired token", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody)))]
pub async fn verify_email(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    let user_id = st
        .db
        .take_email_verification(&secret_hash(req.token.trim()), now_millis())
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_verification_token",
                "this verification link is unknown, used or expired; ask for a new one",
            )
        })?;
    info!(user = %user_id, "email verified");
    Ok(StatusCode::NO_CONTENT)
}

/// Sends the caller a new verification mail (3 an hour).
#[utoipa::path(post, path = "/api/v1/auth/email/resend", tag = "accounts", responses((status = 202, description = "a verification mail is queued"), (status = 409, description = "the email is verified already", body = ErrorBody), (status = 429, description = "too many mails lately", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn resend_verification(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    caller.require_user()?;
    let user = caller.account(&st).await?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::conflict(
            "already_verified",
            "this email address is verified already",
        ));
    }
    st.limits
        .verify_mails
        .check(&user.id, Instant::now())
        .map_err(too_many)?;
    mail_verification(&st, &user).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", responses((status = 200, body = Vec<UserView>), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn admin_list_users(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    caller.require_admin()?;
    let users = st.db.list_users().await.map_err(store_error)?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/sessions", tag = "admin", params(("id" = String, Path, description = "user id")), responses((status = 200, body = Revoked), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn admin_end_sessions(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    caller.require_admin()?;
    if st.db.user_by_id(&id).await.map_err(store_error)?.is_none() {
        return Err(ApiError::not_found("no such user"));
    }
    let n = end_sessions(&st, &id, "admin").await?;
    info!(admin = %caller.user_id, user = %id, revoked = n, "sessions ended by admin");
    Ok(Json(Revoked { revoked: n }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailView {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
}

/// The mail outbox, with its secrets redacted: an admin sees what was sent to whom,
/// but cannot take over the account a reset mail is for. An operator without SMTP reads
/// a waiting mail whole with `streamcore admin mail` (on the node, from the database).
#[utoipa::path(get, path = "/api/v1/admin/mail", tag = "admin", responses((status = 200, body = Vec<MailView>), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn admin_mail(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<MailView>>, ApiError> {
    caller.require_admin()?;
    let mails = st.db.list_mail(100).await.map_err(store_error)?;
    Ok(Json(
        mails
            .into_iter()
            .map(|m| MailView {
                id: m.id,
                to: m.to_addr,
                subject: m.subject,
                body: redact_secrets(&m.body),
                created_at: m.created_at,
            })
            .collect(),
    ))
}

/// Ends every session of a user: its refresh tokens are revoked, and every node closes
/// the user's sockets (browsers' and devices') through `user.sessions_ended`. Returns
/// how many refresh tokens were live.
async fn end_sessions(st: &AppState, user_id: &str, reason: &str) -> Result<u64, ApiError> {
    let now = now_millis();
    let n = st
        .db
        .revoke_user_tokens(user_id, now)
        .await
        .map_err(store_error)?;
    let event = crate::events::sessions_ended_event(&st.event_source(), user_id, reason, now);
    st.db.insert_events(&[event]).await.map_err(store_error)?;
    st.events_written();
    Ok(n)
}

/// A mail body with its reset token (the `Reset token:` line and any `token=` in a
/// link) replaced by `[redacted]`.
pub fn redact_secrets(body: &str) -> String {
    body.lines()
        .map(|line| {
            for label in ["Reset token: ", "Verification token: ", "Sign-up code: "] {
                if line.starts_with(label) {
                    return format!("{label}[redacted]");
                }
            }
            match line.find("token=") {
                Some(i) => {
                    let value_end = line[i + 6..]
                        .find(|c: char| c.is_whitespace() || c == '&')
                        .map_or(line.len(), |e| i + 6 + e);
                    format!("{}token=[redacted]{}", &line[..i], &line[value_end..])
                }
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::redact_secrets;

    #[test]
    fn reset_tokens_are_redacted() {
        let body = "Hello.\n\nReset token: abc123\nLink: https://x.test/reset-password?token=abc123&x=1\n\nBye.";
        let r = redact_secrets(body);
        assert!(!r.contains("abc123"), "{r}");
        assert!(r.contains("Reset token: [redacted]"), "{r}");
        assert!(r.contains("reset-password?token=[redacted]&x=1"), "{r}");
        assert!(r.starts_with("Hello.\n\n") && r.ends_with("Bye."), "{r}");
    }
}
