//! Sign-in with OpenID Connect, as accounts see it ([`crate::oidc`] proves the
//! identity). A browser goes to `/auth/oidc/{provider}/start`, signs in at the
//! provider, and comes back to `/auth/oidc/callback`; the account is then:
//! - the one the identity (provider, subject) is linked to;
//! - for a signed-in user who asked to link: theirs;
//! - for a verified email that an account has: that account, **only after** its
//!   password is given on the page `/link-account` (never linked silently);
//! - otherwise a new account with the verified email. An unverified email makes none
//!   and links none.
//!
//! The callback answers a browser, so its outcomes are redirects: to where the sign-in
//! began (with the session's refresh cookie), to `/link-account?token=…`, or to
//! `/?sign_in_error=<code>` (the page says what went wrong).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use signaling::ApiError;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::auth::now_millis;
use crate::cookies::{self, CookieKind};
use crate::extract::{ApiJson, ApiQuery};
use crate::oidc::{self, ProviderConfig};
use crate::openapi::ErrorBody;
use crate::routes::accounts::{Session, UserView, blocking, new_session, session_response};
use crate::state::{AppState, Caller, store_error, too_many};
use crate::store::oidc::{OidcIdentity, OidcLogin, OidcStore, PendingLink};
use crate::store::{NewUser, Role, Store, StoreError, User};

/// How long a login may take at the provider.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a pending link waits for the password.
const LINK_TTL_MS: i64 = 15 * 60 * 1000;
/// The cookie that binds a login to the browser that began it: a callback in another
/// browser (a link an attacker sends, to sign the victim into the attacker's account or
/// to link the attacker's provider account to the victim's) finds no login.
const STATE_COOKIE: &str = "sc_oidc_state";

/// An HttpOnly cookie that binds a login or link to this browser. Lax: the provider
/// sends the browser back with a cross-site navigation.
fn binding_cookie(
    st: &AppState,
    name: &str,
    path: &str,
    value: &str,
    max_age_secs: i64,
) -> HeaderValue {
    let secure = if st.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("a base64url value")
}

fn state_cookie(st: &AppState, state: &str, max_age_secs: i64) -> HeaderValue {
    binding_cookie(st, STATE_COOKIE, "/auth/oidc", state, max_age_secs)
}

/// The same for a pending link: its page's requests carry it, so a link page sent to
/// someone else (to phish their password into linking another's provider account)
/// finds nothing.
const LINK_COOKIE: &str = "sc_oidc_link";

fn link_cookie(st: &AppState, token: &str, max_age_secs: i64) -> HeaderValue {
    binding_cookie(st, LINK_COOKIE, "/api/v1/auth/oidc", token, max_age_secs)
}

fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn cookie_state(headers: &axum::http::HeaderMap) -> Option<String> {
    cookie_value(headers, STATE_COOKIE)
}

/// The pending link `token` names, if this browser holds it.
async fn pending_of(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    token: &str,
) -> Result<PendingLink, ApiError> {
    let expired = || {
        ApiError::not_found(
            "this link has expired, or was opened in another browser; sign in with the provider again",
        )
    };
    if cookie_value(headers, LINK_COOKIE).as_deref() != Some(token) {
        return Err(expired());
    }
    st.db
        .pending_link(&digest(token), now_millis())
        .await
        .map_err(store_error)?
        .ok_or_else(expired)
}

/// The password hash of an account made by a provider: no password opens it (a
/// password can be set with the reset mail).
pub const NO_PASSWORD: &str = "!oidc";

fn digest(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

fn redirect_uri(st: &AppState) -> String {
    format!(
        "{}/auth/oidc/callback",
        st.config.public_url.trim_end_matches('/')
    )
}

/// A path on this site to go back to; anything else is `/`.
fn local_path(p: Option<&str>) -> String {
    match p {
        // Browsers drop tabs and newlines from a URL (`/\t/evil` is `//evil`): only
        // visible ASCII.
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn provider<'a>(st: &'a AppState, id: &str) -> Result<&'a ProviderConfig, ApiError> {
    st.oidc
        .get(id)
        .ok_or_else(|| ApiError::not_found("no such sign-in provider"))
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let v = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    r.headers_mut().insert(header::LOCATION, v);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Back to the sign-in page, which says what `code` means.
fn failed(code: &str) -> Response {
    see_other(&format!("/?sign_in_error={code}"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/auth/oidc/providers", tag = "accounts", responses((status = 200, body = Vec<ProviderView>)))]
pub async fn providers(State(st): State<AppState>) -> Json<Vec<ProviderView>> {
    Json(
        st.oidc
            .list()
            .iter()
            .map(|p| ProviderView {
                id: p.id.clone(),
                name: p.name.clone(),
            })
            .collect(),
    )
}

/// A login at the provider: its row; the URL that begins it and the cookie that binds
/// it to this browser.
async fn begin(
    st: &AppState,
    p: &ProviderConfig,
    link_user_id: Option<String>,
    return_to: String,
) -> Result<(String, HeaderValue), ApiError> {
    let d = st.oidc.discovery(p).await.map_err(|e| {
        warn!(provider = %p.id, error = %e, "sign-in provider unavailable");
        ApiError::unavailable(
            "provider_unavailable",
            format!("{} cannot be reached; try again later", p.name),
        )
    })?;
    let (state, nonce, verifier) = (
        oidc::random_token(),
        oidc::random_token(),
        oidc::new_verifier(),
    );
    st.db
        .insert_oidc_login(&OidcLogin {
            state_hash: digest(&state),
            provider: p.id.clone(),
            nonce: nonce.clone(),
            verifier: verifier.clone(),
            link_user_id,
            return_to,
            expires_at: now_millis() + LOGIN_TTL_MS,
        })
        .await
        .map_err(store_error)?;
    let mut url = reqwest::Url::parse(&d.authorization_endpoint).map_err(|e| {
        warn!(provider = %p.id, error = %e, "the provider's authorization endpoint is not a URL");
        ApiError::unavailable(
            "provider_unavailable",
            format!("{} is misconfigured", p.name),
        )
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &redirect_uri(st))
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &oidc::challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    Ok((
        url.to_string(),
        state_cookie(st, &state, LOGIN_TTL_MS / 1000),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StartQuery {
    /// A path of this site to come back to once signed in.
    pub return_to: Option<String>,
}

/// Begins signing in with a provider (a browser navigation: redirects to it).
#[utoipa::path(get, path = "/auth/oidc/{provider}/start", tag = "accounts", params(("provider" = String, Path), StartQuery), responses((status = 303, description = "to the provider; or, when it is unknown or cannot be reached or too many sign-ins began from this address, to `/?sign_in_error=provider_unavailable|try_again`")))]
pub async fn start(
    State(st): State<AppState>,
    addr: crate::state::ClientAddr,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StartQuery>,
) -> Response {
    // A browser navigated here: what goes wrong goes back to the sign-in page in words.
    // Each start stores a login: as many as password logins from one address.
    if st
        .limits
        .login_addr
        .check(&addr.key(), std::time::Instant::now())
        .is_err()
    {
        info!(provider = %id, "sign-in starts rate-limited");
        return failed("try_again");
    }
    let Some(p) = st.oidc.get(&id) else {
        return failed("provider_unavailable");
    };
    match begin(&st, p, None, local_path(q.return_to.as_deref())).await {
        Ok((url, cookie)) => {
            let mut r = see_other(&url);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(_) => failed("provider_unavailable"),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStart {
    /// Where the browser goes to sign in at the provider.
    pub url: String,
}

/// Begins linking a provider to the signed-in account.
#[utoipa::path(post, path = "/api/v1/me/providers/{provider}", tag = "accounts", params(("provider" = String, Path)), responses((status = 200, body = LinkStart, description = "and a cookie that binds the login to this browser"), (status = 404, description = "no such provider", body = ErrorBody), (status = 403, description = "a device credential", body = ErrorBody), (status = 429, description = "too many sign-ins begun", body = ErrorBody), (status = 503, description = "the provider cannot be reached", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn link_start(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_user()?;
    // Each stores a login, as a start does.
    st.limits
        .login_account
        .check(&caller.user_id, std::time::Instant::now())
        .map_err(too_many)?;
    let p = provider(&st, &id)?;
    let (url, cookie) = begin(&st, p, Some(caller.user_id.clone()), "/?linked=1".into()).await?;
    let mut r = Json(LinkStart { url }).into_response();
    r.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(r)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// A browser back from the provider: signs in, links, or says why not.
#[utoipa::path(get, path = "/auth/oidc/callback", tag = "accounts", params(CallbackQuery), responses((status = 303, description = "signed in (with the refresh cookie), to the link page, or to the sign-in page with `sign_in_error`")))]
pub async fn callback(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Response {
    let bound = cookie_state(&headers);
    let mut r = match complete(&st, q, bound).await {
        Ok(r) => r,
        Err(Outcome::Failed(code, why)) => {
            info!(code, %why, "sign-in with a provider refused");
            failed(code)
        }
        Err(Outcome::Internal(e)) => {
            warn!(error = %e, "sign-in with a provider failed");
            failed("server_error")
        }
    };
    // The login is over either way.
    r.headers_mut()
        .append(header::SET_COOKIE, state_cookie(&st, "", 0));
    r
}

enum Outcome {
    Failed(&'static str, String),
    Internal(String),
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Outcome::Internal(e.to_string())
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        Outcome::Internal(format!("{e:?}"))
    }
}

async fn complete(
    st: &AppState,
    q: CallbackQuery,
    bound: Option<String>,
) -> Result<Response, Outcome> {
    if let Some(e) = q.error {
        return Err(Outcome::Failed(
            "provider_refused",
            e.chars().take(100).collect(),
        ));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(Outcome::Failed("invalid_state", "no code or state".into()));
    };
    if bound.as_deref() != Some(state.as_str()) {
        return Err(Outcome::Failed(
            "invalid_state",
            "the sign-in began in another browser (or its cookie is gone)".into(),
        ));
    }
    let now = now_millis();
    let login = st
        .db
        .take_oidc_login(&digest(&state), now)
        .await?
        .ok_or_else(|| Outcome::Failed("invalid_state", "unknown, used or expired state".into()))?;
    if login.expires_at < now {
        return Err(Outcome::Failed(
            "invalid_state",
            "the sign-in took too long".into(),
        ));
    }
    let p = st.oidc.get(&login.provider).ok_or_else(|| {
        Outcome::Failed(
            "invalid_state",
            "the provider is no longer configured".into(),
        )
    })?;
    let id = st
        .oidc
        .redeem(p, &code, &login.verifier, &redirect_uri(st), &login.nonce)
        .await
        .map_err(|e| match e {
            oidc::OidcError::InvalidToken(m) => Outcome::Failed("invalid_token", m),
            oidc::OidcError::Refused(m) => Outcome::Failed("provider_refused", m),
            other => Outcome::Failed("provider_unavailable", other.to_string()),
        })?;
    let identity = OidcIdentity {
        provider: p.key(),
        subject: id.sub.clone(),
        user_id: String::new(),
        email: id.email.clone(),
        linked_at: now,
    };
    let known = st.db.oidc_identity(&p.key(), &id.sub).await?;

    // A signed-in user linking this provider.
    if let Some(uid) = login.link_user_id {
        match known {
            Some(k) if k.user_id == uid => {}
            Some(_) => {
                return Err(Outcome::Failed(
                    "identity_taken",
                    "linked to another account".into(),
                ));
            }
            None => {
                st.db
                    .link_identity(&OidcIdentity {
                        user_id: uid.clone(),
                        ..identity
                    })
                    .await
                    .map_err(|e| match e {
                        StoreError::Conflict(_) => Outcome::Failed(
                            "already_linked",
                            "the account has an identity of this provider".into(),
                        ),
                        other => other.into(),
                    })?;
                info!(user = %uid, provider = %p.id, "provider linked");
            }
        }
        return Ok(see_other(&login.return_to));
    }

    if let Some(k) = known {
        let user =
            st.db.user_by_id(&k.user_id).await?.ok_or_else(|| {
                Outcome::Internal(format!("identity of a gone user {}", k.user_id))
            })?;
        info!(user = %user.id, provider = %p.id, "login with a provider");
        return signed_in(st, &user, &login.return_to).await;
    }

    let Some(email) = id
        .verified_email()
        .and_then(|e| crate::routes::accounts::parse_email(&e).ok())
    else {
        return Err(Outcome::Failed(
            "email_unverified",
            format!("{} does not vouch for the email {:?}", p.name, id.email),
        ));
    };
    if let Some(existing) = st.db.user_by_email(&email).await? {
        // Never linked on the provider's word alone: the user proves the account.
        let token = oidc::random_token();
        st.db
            .insert_pending_link(&PendingLink {
                token_hash: digest(&token),
                provider: p.id.clone(),
                subject: id.sub.clone(),
                email: email.clone(),
                user_id: existing.id.clone(),
                return_to: login.return_to.clone(),
                expires_at: now + LINK_TTL_MS,
            })
            .await?;
        info!(user = %existing.id, provider = %p.id, "provider identity waits for the account's password");
        let mut r = see_other(&format!(
            "/link-account?token={token}&provider={}",
            percent_encoding::utf8_percent_encode(&p.name, percent_encoding::NON_ALPHANUMERIC)
        ));
        r.headers_mut().append(
            header::SET_COOKIE,
            link_cookie(st, &token, LINK_TTL_MS / 1000),
        );
        return Ok(r);
    }
    let name = id
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_owned());
    let user = st
        .db
        .create_user(NewUser {
            email: email.clone(),
            display_name: name.chars().take(100).collect(),
            password_hash: NO_PASSWORD.into(),
            role: Role::User,
            email_verified: true,
        })
        .await
        .map_err(|e| match e {
            // Made meanwhile by another sign-in or sign-up: try again links it.
            StoreError::Conflict(_) => {
                Outcome::Failed("try_again", "the account was just made".into())
            }
            other => other.into(),
        })?;
    st.db
        .link_identity(&OidcIdentity {
            user_id: user.id.clone(),
            ..identity
        })
        .await?;
    info!(user = %user.id, provider = %p.id, "account made by a provider");
    signed_in(st, &user, &login.return_to).await
}

/// A new session in the page's refresh cookie, and on to `return_to`.
async fn signed_in(st: &AppState, user: &User, return_to: &str) -> Result<Response, Outcome> {
    let mut session = new_session(st, user, None).await?;
    let token = session.refresh_token.take().unwrap_or_default();
    let mut r = see_other(return_to);
    r.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(
            CookieKind::User,
            &token,
            st.tokens.refresh_ttl,
            st.config.secure_cookies,
        ),
    );
    Ok(r)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkRequest {
    /// From `/link-account?token=…`.
    pub token: String,
    /// The existing account's password.
    pub password: String,
    /// Put the refresh token in the page's HttpOnly cookie.
    #[serde(default)]
    pub cookie: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub email: String,
    pub provider: String,
}

/// What a pending link is about (for its page).
#[utoipa::path(get, path = "/api/v1/auth/oidc/link/{token}", tag = "accounts", params(("token" = String, Path)), responses((status = 200, body = LinkView), (status = 404, description = "unknown or expired", body = ErrorBody)))]
pub async fn pending(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<LinkView>, ApiError> {
    let l = pending_of(&st, &headers, &token).await?;
    let provider = st
        .oidc
        .get(&l.provider)
        .map_or(l.provider.clone(), |p| p.name.clone());
    Ok(Json(LinkView {
        email: l.email,
        provider,
    }))
}

/// Links a provider identity to the existing account with its email, once its
/// password is given; signs in.
#[utoipa::path(post, path = "/api/v1/auth/oidc/link", tag = "accounts", request_body = LinkRequest, responses((status = 200, body = Session), (status = 401, description = "wrong password", body = ErrorBody), (status = 404, description = "unknown or expired link, or opened in another browser", body = ErrorBody), (status = 409, description = "already_linked: the identity or the provider is linked already; no_password: the account has no password to prove it with", body = ErrorBody), (status = 429, description = "too many tries", body = ErrorBody)))]
pub async fn link(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<Response, ApiError> {
    let hash = digest(&req.token);
    let l = pending_of(&st, &headers, &req.token).await?;
    st.limits
        .login_account
        .check(&l.email, std::time::Instant::now())
        .map_err(too_many)?;
    let user = st
        .db
        .user_by_id(&l.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("the account is gone"))?;
    if user.password_hash == NO_PASSWORD {
        return Err(ApiError::conflict(
            "no_password",
            "that account has no password yet: set one with Forgot password (a mail link), then link again",
        ));
    }
    let (password, stored) = (req.password, user.password_hash.clone());
    if !blocking(&st, move || {
        crate::auth::verify_password(&password, &stored)
    })
    .await?
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the password is wrong",
        ));
    }
    st.db
        .link_identity(&OidcIdentity {
            provider: st
                .oidc
                .get(&l.provider)
                .ok_or_else(|| {
                    ApiError::not_found("this sign-in provider is no longer configured")
                })?
                .key(),
            subject: l.subject.clone(),
            user_id: user.id.clone(),
            email: Some(l.email.clone()),
            linked_at: now_millis(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "already_linked",
                "this provider identity, or one of this provider, is linked already",
            ),
            other => store_error(other),
        })?;
    st.db
        .delete_pending_link(&hash)
        .await
        .map_err(store_error)?;
    info!(user = %user.id, provider = %l.provider, "provider linked after the password");
    let session = new_session(&st, &user, None).await?;
    Ok(session_response(
        &st,
        StatusCode::OK,
        session,
        req.cookie.then_some(CookieKind::User),
        |s| s,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedView {
    pub provider: String,
    pub name: String,
    pub email: Option<String>,
    pub linked_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyProviders {
    /// Every configured provider.
    pub available: Vec<ProviderView>,
    /// The account's.
    pub linked: Vec<LinkedView>,
    /// Whether a password opens the account too (else its last provider stays).
    pub has_password: bool,
    pub user: UserView,
}

/// The signed-in user's account (not a device's credential).
async fn account(st: &AppState, caller: &Caller) -> Result<User, ApiError> {
    caller.require_user()?;
    st.db
        .user_by_id(&caller.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such account"))
}

#[utoipa::path(get, path = "/api/v1/me/providers", tag = "accounts", responses((status = 200, body = MyProviders), (status = 403, description = "a device credential", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn mine(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<MyProviders>, ApiError> {
    let user = account(&st, &caller).await?;
    let linked = st
        .db
        .user_identities(&caller.user_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|i| {
            // A provider no longer configured shows by its issuer.
            let (provider, name) = st
                .oidc
                .by_key(&i.provider)
                .map_or((i.provider.clone(), i.provider.clone()), |p| {
                    (p.id.clone(), p.name.clone())
                });
            LinkedView {
                provider,
                name,
                email: i.email,
                linked_at: i.linked_at,
            }
        })
        .collect();
    Ok(Json(MyProviders {
        available: providers(State(st.clone())).await.0,
        linked,
        has_password: user.password_hash != NO_PASSWORD,
        user: UserView::from(&user),
    }))
}

#[utoipa::path(delete, path = "/api/v1/me/providers/{provider}", tag = "accounts", params(("provider" = String, Path)), responses((status = 204, description = "unlinked"), (status = 404, description = "not linked", body = ErrorBody), (status = 409, description = "the account's only way in (set a password first)", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn unlink(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = account(&st, &caller).await?;
    let linked = st.db.user_identities(&user.id).await.map_err(store_error)?;
    // By its configured id, or by its issuer when it is no longer configured.
    let key = st.oidc.get(&id).map_or(id.clone(), |p| p.key());
    if !linked.iter().any(|i| i.provider == key) {
        return Err(ApiError::not_found("this provider is not linked"));
    }
    if user.password_hash == NO_PASSWORD && linked.len() == 1 {
        return Err(ApiError::conflict(
            "last_sign_in",
            "this is the only way into the account: set a password first (Forgot password sends a link)",
        ));
    }
    st.db
        .unlink_identity(&user.id, &key)
        .await
        .map_err(store_error)?;
    info!(user = %user.id, provider = %id, "provider unlinked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/podcasts?show=1")), "/podcasts?show=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/caf\u{e9}")), "/");
        assert_eq!(local_path(None), "/");
    }
}
