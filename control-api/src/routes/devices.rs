//! Devices (register, list, rename, remove, heartbeat) and phone pairing.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{ApiJson, OptionalJson};
use crate::openapi::ErrorBody;
use crate::routes::accounts::Session;
use signaling::ApiError;
use tracing::info;

use crate::auth::now_millis;
use crate::events::presence_events;
use crate::routes::accounts::new_session;
use crate::state::{AppState, Caller, ClientAddr, Quota, store_error, too_many, within_quota};
use crate::store::{Capabilities, Device, NewDevice, Pairing, Presence, Store};

pub const DEVICE_KINDS: [&str; 3] = ["phone", "browser", "other"];

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub capabilities: Capabilities,
    pub online: bool,
    pub last_seen: Option<i64>,
    pub created_at: i64,
}

pub fn view(st: &AppState, d: Device) -> DeviceView {
    let window = st.config.online_window.as_millis() as i64;
    DeviceView {
        // The flag flips with events; the window covers a node that died before it
        // could flip it (until the sweeper does).
        online: d.online && d.last_seen.is_some_and(|t| now_millis() - t <= window),
        id: d.id,
        name: d.name,
        kind: d.kind,
        capabilities: d.capabilities,
        last_seen: d.last_seen,
        created_at: d.created_at,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceInfo {
    pub name: String,
    /// `phone`, `browser` or `other`.
    #[schema(pattern = "^(phone|browser|other)$")]
    pub kind: String,
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl DeviceInfo {
    fn validate(self, field: &'static str) -> Result<DeviceInfo, ApiError> {
        let name = parse_name(field, &self.name)?;
        if !DEVICE_KINDS.contains(&self.kind.as_str()) {
            return Err(ApiError::invalid_field(
                "kind",
                "must be one of phone, browser, other",
            ));
        }
        Ok(DeviceInfo { name, ..self })
    }
}

fn parse_name(field: &'static str, s: &str) -> Result<String, ApiError> {
    let n = s.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must be 1–100 printable characters",
        ));
    }
    Ok(n.to_owned())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Rename {
    pub name: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Heartbeat {
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = DeviceInfo, responses((status = 201, body = DeviceView), (status = 403, description = "not allowed", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DeviceInfo>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_user()?;
    let req = req.validate("name")?;
    within_quota(&st, &caller.user_id, Quota::Devices).await?;
    let d = st
        .db
        .create_device(
            NewDevice {
                user_id: caller.user_id.clone(),
                name: req.name,
                kind: req.kind,
                capabilities: req.capabilities,
            },
            now_millis(),
        )
        .await
        .map_err(store_error)?;
    info!(user = %caller.user_id, device = %d.id, "device registered");
    Ok((StatusCode::CREATED, Json(view(&st, d))))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", responses((status = 200, body = Vec<DeviceView>), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let ds = st
        .db
        .list_devices(&caller.user_id)
        .await
        .map_err(store_error)?;
    Ok(Json(ds.into_iter().map(|d| view(&st, d)).collect()))
}

fn not_found() -> ApiError {
    ApiError::not_found("no such device")
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 200, body = DeviceView), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = st
        .db
        .device(&caller.user_id, &id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(Json(view(&st, d)))
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", request_body = Rename, params(("id" = String, Path)), responses((status = 200, body = DeviceView), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn rename(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Rename>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require_user()?;
    let name = parse_name("name", &req.name)?;
    if !st
        .db
        .rename_device(&caller.user_id, &id, &name)
        .await
        .map_err(store_error)?
    {
        return Err(not_found());
    }
    get(State(st), caller, Path(id)).await
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 204, description = "removed; its credentials and library are gone"), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_user()?;
    if !st
        .db
        .delete_device(&caller.user_id, &id)
        .await
        .map_err(store_error)?
    {
        return Err(not_found());
    }
    let now = now_millis();
    st.db
        .revoke_device_tokens(&id, now)
        .await
        .map_err(store_error)?;
    // Every node closes the device's socket at once.
    let event = crate::events::device_removed_event(&st.event_source(), &caller.user_id, &id, now);
    st.db.insert_events(&[event]).await.map_err(store_error)?;
    st.events_written();
    info!(user = %caller.user_id, device = %id, "device removed; its credentials revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A device reports it is alive (and, optionally, what it can do now). A device
/// credential may only report for itself.
#[utoipa::path(post, path = "/api/v1/devices/{id}/heartbeat", tag = "devices", request_body = Option<Heartbeat>, params(("id" = String, Path)), responses((status = 204, description = "last_seen updated"), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn heartbeat(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    if caller.device.as_deref().is_some_and(|d| d != id) {
        return Err(ApiError::forbidden(
            "a device credential may only report for its own device",
        ));
    }
    let now = now_millis();
    let source = st.event_source();
    let p = Presence::Heartbeat {
        capabilities: body.capabilities,
    };
    st.db
        .update_presence(Some(&caller.user_id), &id, &p, now, |c| {
            presence_events(&source, c, now)
        })
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    st.events_written();
    Ok(StatusCode::NO_CONTENT)
}

// ---- pairing ----------------------------------------------------------------------

/// Code alphabet: no 0/O, 1/I/L, 2/Z, 5/S, 8/B to survive reading aloud and typing.
const CODE_ALPHABET: &[u8] = b"ACDEFGHJKMNPQRTUVWXY34679";
pub const CODE_LEN: usize = 8;

pub fn new_code() -> String {
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// Normalises what a person typed: case, spaces and dashes do not matter.
pub fn normalise_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PairingView {
    pub id: String,
    pub code: String,
    pub expires_at: i64,
    /// The link the QR code encodes: the phone page with the code.
    pub url: String,
    /// The QR code of `url`, as SVG.
    pub qr_svg: String,
}

#[utoipa::path(post, path = "/api/v1/pairings", tag = "pairing", responses((status = 201, body = PairingView), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn start_pairing(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_user()?;
    within_quota(&st, &caller.user_id, Quota::OpenPairings).await?;
    let now = now_millis();
    let mut attempt = 0;
    let p = loop {
        let p = Pairing {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: caller.user_id.clone(),
            code: new_code(),
            created_at: now,
            expires_at: now + st.config.pairing_ttl.as_millis() as i64,
            attempts: 0,
            claimed_at: None,
            device_id: None,
        };
        match st.db.create_pairing(p.clone()).await {
            Ok(()) => break p,
            Err(crate::store::StoreError::Conflict(_)) if attempt < 5 => attempt += 1,
            Err(e) => return Err(store_error(e)),
        }
    };
    let url = format!(
        "{}/phone?code={}",
        st.config.public_url.trim_end_matches('/'),
        p.code
    );
    let qr_svg = qrcode::QrCode::new(url.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .build()
        })
        .map_err(|e| ApiError::internal(format!("QR code: {e}")))?;
    info!(user = %caller.user_id, pairing = %p.id, "pairing started");
    Ok((
        StatusCode::CREATED,
        Json(PairingView {
            id: p.id,
            code: p.code,
            expires_at: p.expires_at,
            url,
            qr_svg,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/pairings/{id}", tag = "pairing", params(("id" = String, Path)), responses((status = 200, body = PairingStatus), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn pairing_status(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PairingStatus>, ApiError> {
    let p = st
        .db
        .pairing(&caller.user_id, &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such pairing"))?;
    let status = if p.claimed_at.is_some() {
        "claimed"
    } else if p.expires_at <= now_millis() {
        "expired"
    } else if p.attempts >= i64::from(st.config.pairing_wrong_guesses_per_code) {
        "void"
    } else {
        "pending"
    };
    let device = match &p.device_id {
        Some(d) => st
            .db
            .device(&caller.user_id, d)
            .await
            .map_err(store_error)?
            .map(|d| view(&st, d)),
        None => None,
    };
    Ok(Json(PairingStatus {
        id: p.id,
        status,
        expires_at: p.expires_at,
        device,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PairingStatus {
    pub id: String,
    /// `pending`, `claimed`, `expired` or `void` (too many wrong codes were tried
    /// while it was open; start a new one).
    pub status: &'static str,
    pub expires_at: i64,
    /// The paired device, once claimed.
    pub device: Option<DeviceView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Paired {
    pub device: DeviceView,
    /// A device-scoped session for the phone.
    pub session: Session,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Claim {
    pub code: String,
    pub device: DeviceInfo,
    /// The phone page: keep the device's refresh token in an HttpOnly cookie.
    #[serde(default)]
    pub cookie: bool,
}

/// The phone claims a code (no login): it becomes a device of the code's user and
/// gets a device-scoped session.
#[utoipa::path(post, path = "/api/v1/pairings/claim", tag = "pairing", request_body = Claim, responses((status = 201, body = Paired), (status = 400, description = "unknown, used or expired code", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 429, description = "too many attempts", body = ErrorBody)))]
pub async fn claim(
    State(st): State<AppState>,
    addr: ClientAddr,
    ApiJson(req): ApiJson<Claim>,
) -> Result<impl IntoResponse, ApiError> {
    st.limits
        .pairing_addr
        .check(&addr.key(), Instant::now())
        .map_err(too_many)?;
    let info = req.device.validate("device.name")?;
    let code = normalise_code(&req.code);
    let invalid = || {
        ApiError::bad_request(
            "invalid_pairing_code",
            "the code is unknown, used or expired",
        )
    };
    if code.len() != CODE_LEN {
        return Err(invalid());
    }
    let now = now_millis();
    let Some(p) = st.db.pairing_by_code(&code).await.map_err(store_error)? else {
        let open = st
            .db
            .count_wrong_pairing_guess(now)
            .await
            .map_err(store_error)?;
        info!(client = %addr.key(), open_pairings = open, "wrong pairing code");
        return Err(invalid());
    };
    if p.claimed_at.is_some() || p.expires_at <= now {
        return Err(invalid());
    }
    if p.attempts >= i64::from(st.config.pairing_wrong_guesses_per_code) {
        info!(pairing = %p.id, wrong_guesses = p.attempts, "pairing code void after wrong guesses");
        return Err(ApiError::bad_request(
            "pairing_code_void",
            "too many wrong codes were tried while this one was open; start a new pairing",
        ));
    }
    let user = st
        .db
        .user_by_id(&p.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(invalid)?;
    within_quota(&st, &user.id, Quota::Devices).await?;
    let device = st
        .db
        .create_device(
            NewDevice {
                user_id: user.id.clone(),
                name: info.name,
                kind: info.kind,
                capabilities: info.capabilities,
            },
            now,
        )
        .await
        .map_err(store_error)?;
    if !st
        .db
        .claim_pairing(&p.id, &device.id, now)
        .await
        .map_err(store_error)?
    {
        // Lost a race with another claim of the same code.
        st.db
            .delete_device(&user.id, &device.id)
            .await
            .map_err(store_error)?;
        return Err(invalid());
    }
    let session = new_session(&st, &user, Some(&device.id)).await?;
    info!(user = %user.id, device = %device.id, "phone paired");
    let device = view(&st, device);
    Ok(crate::routes::accounts::session_response(
        &st,
        StatusCode::CREATED,
        session,
        req.cookie.then_some(crate::cookies::CookieKind::Device),
        |session| Paired { device, session },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c = new_code();
        assert_eq!(c.len(), CODE_LEN);
        assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(normalise_code("ac-df gh j k"), "ACDFGHJK");
        for ambiguous in ["0", "O", "1", "I", "L", "2", "Z", "5", "S", "8", "B"] {
            assert!(
                !CODE_ALPHABET.contains(&ambiguous.as_bytes()[0]),
                "{ambiguous}"
            );
        }
    }
}
