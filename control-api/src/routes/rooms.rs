//! Rooms, their settings, and join tokens for the SFU.
//!
//! Who may join a room is its `access`: `private` (the owner and the owner's devices;
//! the default), `members` (users the owner invited by email, once they accept; see
//! `routes::members`) or `link` (anyone signed in who holds the share link). A room
//! the caller may not join answers exactly as a room that does not exist.
//!
//! A room's name is unique among its owner's rooms only; the SFU, join tokens, share
//! links and guests know a room by its id (a UUID, a shape no name may take). Routes
//! under `/rooms/{room}` take either: the id, or for the room's owner its name.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use media_core::RoomId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::extract::{ApiJson, OptionalJson};
use crate::openapi::ErrorBody;
use signaling::{ApiError, Grants};
use tracing::{info, warn};

use crate::auth::now_millis;
use crate::live_rooms::{Revocation, end_revoked_sessions, revoke};
use crate::state::{AppState, Caller, Quota, store_error, within_quota};
use crate::store::{Room, RoomSettings, Store};

pub const POLICIES: [&str; 2] = ["owner", "anyone"];
pub const ACCESS: [&str; 3] = ["private", "members", "link"];
pub const MAX_PARTICIPANTS: i64 = 1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    /// What the SFU, join tokens and guests know the room by.
    pub id: String,
    /// Unique among the owner's rooms.
    pub name: String,
    pub owner_id: String,
    pub max_participants: i64,
    pub auto_record: bool,
    pub publish_policy: String,
    /// `private`, `members` or `link`.
    pub access: String,
    /// The share link (only while `access` is `link`): whoever opens it signed in
    /// may join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_url: Option<String>,
    pub created_at: i64,
}

impl RoomView {
    /// The room as its owner sees it.
    pub fn new(st: &AppState, r: Room) -> Self {
        let share_url = (r.access == "link").then(|| share_url(st, &r));
        RoomView {
            id: r.id,
            name: r.name,
            owner_id: r.owner_id,
            max_participants: r.max_participants,
            auto_record: r.auto_record,
            publish_policy: r.publish_policy,
            access: r.access,
            share_url,
            created_at: r.created_at,
        }
    }
}

/// The room page with the share key: opening it signed in joins the room.
fn share_url(st: &AppState, r: &Room) -> String {
    format!(
        "{}/room?id={}&key={}",
        st.config.public_url.trim_end_matches('/'),
        r.id,
        r.share_key
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRoom {
    /// 1–64 letters, digits, `_`, `.` or `-`, not only dots; not starting `device-` (the
    /// devices' live rooms) nor shaped like a room id (a UUID).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    #[serde(flatten)]
    pub settings: SettingsInput,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SettingsInput {
    pub max_participants: Option<i64>,
    pub auto_record: Option<bool>,
    pub publish_policy: Option<String>,
    /// `private` (default), `members` or `link`. Switching to `link` makes a new
    /// share link; earlier links stop working.
    pub access: Option<String>,
}

impl SettingsInput {
    fn apply(self, base: RoomSettings) -> Result<RoomSettings, ApiError> {
        let max = self.max_participants.unwrap_or(base.max_participants);
        if !(1..=MAX_PARTICIPANTS).contains(&max) {
            return Err(ApiError::invalid_field(
                "max_participants",
                format!("must be 1–{MAX_PARTICIPANTS}"),
            ));
        }
        let policy = self.publish_policy.unwrap_or(base.publish_policy);
        if !POLICIES.contains(&policy.as_str()) {
            return Err(ApiError::invalid_field(
                "publish_policy",
                "must be owner or anyone",
            ));
        }
        let access = self.access.unwrap_or_else(|| base.access.clone());
        if !ACCESS.contains(&access.as_str()) {
            return Err(ApiError::invalid_field(
                "access",
                "must be private, members or link",
            ));
        }
        let share_key = if access == "link" && base.access != "link" {
            crate::auth::new_secret()
        } else {
            base.share_key
        };
        Ok(RoomSettings {
            max_participants: max,
            auto_record: self.auto_record.unwrap_or(base.auto_record),
            publish_policy: policy,
            access,
            share_key,
        })
    }
}

fn defaults() -> RoomSettings {
    RoomSettings {
        max_participants: 50,
        auto_record: false,
        publish_policy: "owner".into(),
        access: "private".into(),
        share_key: crate::auth::new_secret(),
    }
}

fn settings_of(room: &Room) -> RoomSettings {
    RoomSettings {
        max_participants: room.max_participants,
        auto_record: room.auto_record,
        publish_policy: room.publish_policy.clone(),
        access: room.access.clone(),
        share_key: room.share_key.clone(),
    }
}

fn parse_room(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s).map_err(|e| ApiError::invalid_field("name", e.to_string()))
}

fn not_found() -> ApiError {
    ApiError::not_found("no such room")
}

/// Whether `s` has the shape of a room id (a hyphenated UUID, as the store makes
/// them) rather than of a name; no room may be named so.
pub fn is_room_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// The room a path names: by id whoever's it is, or by name among `owner_id`'s rooms.
/// The caller still decides whether its caller may see it.
pub(crate) async fn find_room(
    st: &AppState,
    owner_id: &str,
    room: &str,
) -> Result<Option<Room>, ApiError> {
    if is_room_id(room)
        && let Some(r) = st.db.room_by_id(room).await.map_err(store_error)?
    {
        return Ok(Some(r));
    }
    // A name (or, made before names of that shape were refused, a UUID-shaped one).
    st.db
        .room_by_owner_name(owner_id, room)
        .await
        .map_err(store_error)
}

#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms", request_body = CreateRoom, responses((status = 201, body = RoomView), (status = 403, description = "not allowed", body = ErrorBody), (status = 409, description = "already exists", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRoom>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_user()?;
    let name = parse_room(&req.name)?;
    if name.as_str().starts_with(DEVICE_ROOM_PREFIX) {
        return Err(ApiError::invalid_field(
            "name",
            "names starting with 'device-' belong to devices' live rooms",
        ));
    }
    if is_room_id(name.as_str()) {
        return Err(ApiError::invalid_field(
            "name",
            "a name may not look like a room id (a UUID)",
        ));
    }
    let settings = req.settings.apply(defaults())?;
    within_quota(&st, &caller.user_id, Quota::Rooms).await?;
    let room = st
        .db
        .create_room(&caller.user_id, name.as_str(), settings, now_millis())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ApiError::conflict("room_exists", "you have a room with this name already")
            }
            other => store_error(other),
        })?;
    info!(user = %caller.user_id, room = %room.name, "room created");
    Ok((StatusCode::CREATED, Json(RoomView::new(&st, room))))
}

#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", responses((status = 200, body = Vec<RoomView>), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<RoomView>>, ApiError> {
    caller.require_user()?;
    let rooms = st
        .db
        .list_rooms(&caller.user_id)
        .await
        .map_err(store_error)?;
    Ok(Json(
        rooms.into_iter().map(|r| RoomView::new(&st, r)).collect(),
    ))
}

/// The caller's own room, by id or name (another user's room is "not found", not
/// "forbidden").
pub(crate) async fn own_room(st: &AppState, caller: &Caller, room: &str) -> Result<Room, ApiError> {
    match find_room(st, &caller.user_id, room).await? {
        Some(r) if r.owner_id == caller.user_id => Ok(r),
        _ => Err(not_found()),
    }
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = RoomView), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    caller.require_user()?;
    Ok(Json(RoomView::new(
        &st,
        own_room(&st, &caller, &name).await?,
    )))
}

#[utoipa::path(patch, path = "/api/v1/rooms/{name}", tag = "rooms", request_body = SettingsInput, params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = RoomView), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SettingsInput>,
) -> Result<Json<RoomView>, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    let settings = req.apply(settings_of(&room))?;
    let r = st
        .db
        .update_room(&caller.user_id, &room.name, settings)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let r = if r.access != room.access {
        // Tokens issued under the old access stop joining.
        info!(user = %caller.user_id, room = %name, access = %r.access, "room access changed; its join tokens revoked");
        revoke(&st, &r, Revocation::WhoMayJoinChanged)
            .await
            .map_err(store_error)?
    } else {
        r
    };
    Ok(Json(RoomView::new(&st, r)))
}

/// Revokes every join token of the room (its epoch moves on): nobody joins or resumes
/// with a token issued before, and everyone in the room but the owner's own sessions
/// is removed.
#[utoipa::path(post, path = "/api/v1/rooms/{name}/reset", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = RoomView), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn reset(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    let room = revoke(&st, &room, Revocation::Reset)
        .await
        .map_err(store_error)?;
    info!(user = %caller.user_id, room = %room.id, epoch = room.epoch, "room reset: its join tokens revoked");
    Ok(Json(RoomView::new(&st, room)))
}

/// Whether a token bound to `binding` was issued for `room` as it is now: the same
/// room (not one deleted and made again) in the same epoch.
pub(crate) fn binding_is_current(room: &Room, binding: &signaling::token::RoomBinding) -> bool {
    room.id == binding.room_id && room.epoch == binding.epoch
}

/// The control plane's answer to "is this token's room still the one it was issued
/// for" (`signaling::room_authority`), from the database.
#[derive(Debug, Clone)]
pub struct DbRoomAuthority {
    pub db: crate::store::Db,
    /// A room's epoch is marked seen as a session is let in with it: a revocation
    /// after that is acted on however soon it follows (`live_rooms::check_revocations`).
    pub seen: crate::live_rooms::SeenEpochs,
}

impl signaling::room_authority::RoomAuthority for DbRoomAuthority {
    fn is_current<'a>(
        &'a self,
        room: &'a RoomId,
        binding: &'a signaling::token::RoomBinding,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let r = self
                .db
                .room_by_id(room.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let current = r.filter(|r| binding_is_current(r, binding));
            if let Some(r) = &current {
                crate::live_rooms::mark_admitted(&self.seen, &r.id, r.epoch);
            }
            Ok(current.is_some())
        })
    }
}

/// A new share link for a room open to link holders; the old one stops working.
#[utoipa::path(post, path = "/api/v1/rooms/{name}/share-link", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = RoomView), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 409, description = "the room is not open to link holders", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn new_share_link(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    if room.access != "link" {
        return Err(ApiError::conflict(
            "not_shared_by_link",
            "set the room's access to link first",
        ));
    }
    let settings = RoomSettings {
        share_key: crate::auth::new_secret(),
        ..settings_of(&room)
    };
    let r = st
        .db
        .update_room(&caller.user_id, &room.name, settings)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    info!(user = %caller.user_id, room = %name, "room share link replaced; its join tokens revoked");
    let r = revoke(&st, &r, Revocation::WhoMayJoinChanged)
        .await
        .map_err(store_error)?;
    Ok(Json(RoomView::new(&st, r)))
}

#[utoipa::path(delete, path = "/api/v1/rooms/{name}", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 204, description = "deleted"), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    // Its recordings stay under its id (archived: no room of this name made later
    // sees them); one still running is stopped first, so nothing goes on recording a
    // room that no longer exists.
    for rec in st.db.room_recordings(&room.id).await.map_err(store_error)? {
        if rec.status == "recording"
            && let Err(e) =
                crate::routes::recordings::stop_recording(&st, &rec, "room_deleted").await
        {
            warn!(recording = %rec.id, room = %name, error = %e.message, "recording of a deleted room did not stop");
        }
    }
    if !st
        .db
        .delete_room(&caller.user_id, &room.name)
        .await
        .map_err(store_error)?
    {
        return Err(not_found());
    }
    info!(user = %caller.user_id, room = %name, "room deleted");
    end_revoked_sessions(&st, &room, Revocation::Deleted).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenView {
    /// The join token (EdDSA JWT) to send as `Authorization: Bearer` to WHIP/WHEP.
    pub token: String,
    /// The room's id: the SFU room the token is for.
    pub room: String,
    /// The room's name.
    pub room_name: String,
    /// Unique among the room's participants: a second one joining with it replaces
    /// the first.
    pub identity: String,
    /// The name other participants see.
    pub name: String,
    pub publish: bool,
    pub subscribe: bool,
    pub publish_data: bool,
    pub record: bool,
    pub expires_in: u64,
    /// Where to publish with WHIP (absolute).
    pub whip_url: String,
    /// Where to play with WHEP (absolute). For a token that only subscribes, a node
    /// of the caller's region when the room lives in another (or its node is full),
    /// fed from the room's node over the relay; its `ice_servers` are then that node's,
    /// and `local` is false.
    pub whep_url: String,
    /// The room protocol's WebSocket (absolute).
    pub rtc_url: String,
    /// The room lives on the server that answered: its URLs may be used on whatever
    /// name the page reached that server by. Else they name another node of the
    /// cluster.
    pub local: bool,
    /// STUN/TURN servers for `RTCConfiguration.iceServers`, TURN with credentials for
    /// this identity (empty when none are configured).
    pub ice_servers: Vec<IceServerView>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IceServerView {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Participant identity, for the room's owner to choose (an operator's test
    /// client, a second camera); anyone else is who they are: their user id (or
    /// device id), the default.
    pub identity: Option<String>,
    /// The name others see, for the owner to choose; anyone else is shown with
    /// their display name (or their device's name), the default.
    pub name: Option<String>,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub publish_data: bool,
    #[serde(default)]
    pub record: bool,
    /// Lifetime in seconds (default 3600, at most the configured maximum).
    pub ttl_secs: Option<u64>,
    /// The share link's key, for a room open to link holders.
    pub key: Option<String>,
    /// The region the caller is nearest (a node's `region` label): a room not yet
    /// live is placed on a node there when one is up. Default: this server's region.
    pub region: Option<String>,
}

/// Why the caller may join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Owner,
    Member,
    LinkHolder,
}

/// Whether (and why) the caller may join `room`; `None` means "as if it did not exist".
pub async fn standing(
    st: &AppState,
    caller: &Caller,
    room: &Room,
    key: Option<&str>,
) -> Result<Option<Standing>, ApiError> {
    if room.owner_id == caller.user_id {
        return Ok(Some(Standing::Owner));
    }
    Ok(match room.access.as_str() {
        "members" => st
            .db
            .is_member(&room.id, &caller.user_id)
            .await
            .map_err(store_error)?
            .then_some(Standing::Member),
        // The people invited stay welcome when the owner opens the room wider.
        "link"
            if key
                .is_some_and(|k| !room.share_key.is_empty() && same_secret(k, &room.share_key)) =>
        {
            Some(Standing::LinkHolder)
        }
        "link" => st
            .db
            .is_member(&room.id, &caller.user_id)
            .await
            .map_err(store_error)?
            .then_some(Standing::Member),
        _ => None,
    })
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Issues a join token for a room. The owner (and the owner's devices) may have any
/// grant. Members and share-link holders (see the room's `access`) may subscribe and
/// send data, and publish when the room's policy is `anyone`; only the owner may
/// record. Anyone else gets the 404 of a room that does not exist.
#[utoipa::path(post, path = "/api/v1/rooms/{name}/token", tag = "rooms", request_body = Option<TokenRequest>, params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = JoinTokenView), (status = 403, description = "not allowed", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn join_token(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalJson(req): OptionalJson<TokenRequest>,
) -> Result<Json<JoinTokenView>, ApiError> {
    let room = find_room(&st, &caller.user_id, &name)
        .await?
        .ok_or_else(not_found)?;
    let Some(standing) = standing(&st, &caller, &room, req.key.as_deref()).await? else {
        info!(user = %caller.user_id, room = %name, access = %room.access, "join token refused: not the owner, a member or a link holder");
        return Err(not_found());
    };
    let owner = standing == Standing::Owner;
    if !(req.publish || req.subscribe || req.publish_data || req.record) {
        return Err(ApiError::invalid_field(
            "publish",
            "ask for at least one of publish, subscribe, publish_data, record",
        ));
    }
    if req.publish && !owner && room.publish_policy != "anyone" {
        return Err(ApiError::forbidden(
            "only the room's owner may publish in this room",
        ));
    }
    if req.record && !owner {
        return Err(ApiError::forbidden("only the room's owner may record"));
    }
    let own = as_themselves(&st, &caller).await?;
    let identity = match req.identity {
        Some(i) if owner => {
            let i = i.trim().to_owned();
            if i.is_empty()
                || i.len() > signaling::token::MAX_IDENTITY_LEN
                || i.chars().any(char::is_control)
            {
                return Err(ApiError::invalid_field(
                    "identity",
                    "must be 1–128 bytes of printable text",
                ));
            }
            i
        }
        Some(i) if i != own.identity => {
            info!(user = %caller.user_id, room = %name, "join token refused: a guest chose an identity");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_not_allowed",
                "only the room's owner chooses identities; leave identity out to join as yourself",
            ));
        }
        _ => own.identity.clone(),
    };
    let shown = match req.name {
        Some(n) if owner => {
            let n = n.trim().to_owned();
            if !signaling::token::valid_name(&n) {
                return Err(ApiError::invalid_field(
                    "name",
                    "must be 1–128 bytes of printable text",
                ));
            }
            n
        }
        Some(n) if n.trim() != own.name => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_not_allowed",
                "only the room's owner chooses names; others are shown with their display name",
            ));
        }
        _ => own.name,
    };
    let ttl = req.ttl_secs.unwrap_or(3600);
    if ttl == 0 || ttl > st.config.max_join_ttl.as_secs() {
        return Err(ApiError::invalid_field(
            "ttl_secs",
            format!("must be 1–{}", st.config.max_join_ttl.as_secs()),
        ));
    }
    let grants = Grants {
        publish: req.publish,
        subscribe: req.subscribe,
        publish_data: req.publish_data,
        record: req.record,
    };
    if let Some(r) = &req.region
        && (r.len() > 64
            || !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(ApiError::invalid_field(
            "region",
            "must be at most 64 letters, digits, '-' or '_'",
        ));
    }
    let who = Who {
        identity,
        name: shown,
    };
    Ok(Json(
        issue(&st, &room, who, grants, ttl, req.region.as_deref()).await?,
    ))
}

/// Who a join token is for: the identity the room knows them by, the name it shows.
#[derive(Debug, Clone)]
pub struct Who {
    pub identity: String,
    pub name: String,
}

/// Who the caller is in a room: their user id and display name, or (with a device's
/// credential) the device's id and name.
async fn as_themselves(st: &AppState, caller: &Caller) -> Result<Who, ApiError> {
    if let Some(id) = &caller.device {
        let device = st
            .db
            .device(&caller.user_id, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::unauthorized("the device no longer exists"))?;
        return Ok(Who {
            identity: device.id,
            name: shown_name(&device.name, "device"),
        });
    }
    let account = caller.account(st).await?;
    let fallback = account.email.split('@').next().unwrap_or("guest");
    Ok(Who {
        identity: account.id,
        name: shown_name(&account.display_name, fallback),
    })
}

/// A name others may see: printable, at most 128 bytes; `fallback` when none is left.
fn shown_name(name: &str, fallback: &str) -> String {
    let clean = |s: &str| {
        let mut out = String::new();
        for c in s.trim().chars().filter(|c| !c.is_control()) {
            if out.len() + c.len_utf8() > signaling::token::MAX_NAME_LEN {
                break;
            }
            out.push(c);
        }
        out
    };
    let n = clean(name);
    if signaling::token::valid_name(&n) {
        return n;
    }
    let f = clean(fallback);
    if signaling::token::valid_name(&f) {
        f
    } else {
        "guest".to_owned()
    }
}

/// Signs a join token for `room` and says where to use it: on the node the room lives
/// on (placing it in `region`, default this server's, when it is not live) in a
/// cluster, else on this server.
async fn issue(
    st: &AppState,
    room: &Room,
    who: Who,
    grants: Grants,
    ttl: u64,
    region: Option<&str>,
) -> Result<JoinTokenView, ApiError> {
    let room_id = RoomId::parse(&room.id).map_err(|e| ApiError::internal(e.to_string()))?;
    let Who { identity, name } = who;
    let token = st
        .join_signer
        .sign_scoped(
            &room_id,
            &identity,
            grants,
            Duration::from_secs(ttl),
            signaling::token::TokenScope {
                // The SFU enforces the room's size at join time from the token.
                max_participants: u32::try_from(room.max_participants).ok().filter(|n| *n > 0),
                binding: Some(signaling::token::RoomBinding {
                    room_id: room.id.clone(),
                    epoch: room.epoch,
                }),
                name: Some(name.clone()),
            },
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let listener = grants.subscribe && !grants.publish && !grants.publish_data;
    let mut play_base = None;
    let mut rtc_base = None;
    let (base, local, elsewhere_ice) = if st.config.placement {
        let region = region.unwrap_or(&st.config.region);
        let home = crate::cluster::place(&st.db, &room.id, region, &st.node_id).await?;
        // The node whose media the client meets: a listener's may be another than the
        // room's (and then the URLs name two nodes: none is "here" for the page). A
        // `/rtc` participant, listening or not, joins on that node too: the relay
        // carries its room both ways.
        let mut media = (home.node_id.clone(), home.turn_urls.clone());
        let nodes = st.db.nodes().await.map_err(crate::state::store_error)?;
        let now = crate::auth::now_millis();
        if let Some(n) = crate::cluster::listen_node(&nodes, &home.node_id, region, now) {
            let near = n.public_url.trim_end_matches('/').to_owned();
            rtc_base = Some(signaling::placement::websocket_base(&near));
            if listener {
                play_base = Some(near);
                media = (n.id.clone(), n.turn_urls.clone());
            }
        }
        let local = home.node_id == *st.node_id && play_base.is_none() && rtc_base.is_none();
        // Another node's clients use its TURN server, not this one's: a listener's,
        // the TURN server of the node it plays from.
        let ice = (media.0 != *st.node_id).then(|| {
            st.config.ice_servers.on_other_node(
                &st.config.embedded_turn_urls,
                &media.1,
                st.config.turn_secret_shared,
            )
        });
        (home.base_url, local, ice)
    } else {
        (st.config.public_url.clone(), true, None)
    };
    let base = base.trim_end_matches('/');
    let ws_base = rtc_base.unwrap_or_else(|| signaling::placement::websocket_base(base));
    let play_base = play_base.as_deref().unwrap_or(base);
    Ok(JoinTokenView {
        token,
        whip_url: format!("{base}/whip/{}", room.id),
        whep_url: format!("{play_base}/whep/{}", room.id),
        rtc_url: format!("{ws_base}/rtc"),
        local,
        ice_servers: elsewhere_ice
            .as_ref()
            .unwrap_or(&st.config.ice_servers)
            .servers_for(&identity, std::time::SystemTime::now())
            .into_iter()
            .map(|s| IceServerView {
                urls: s.urls,
                username: s.username,
                credential: s.credential,
            })
            .collect(),
        room: room.id.clone(),
        room_name: room.name.clone(),
        identity,
        name,
        publish: grants.publish,
        subscribe: grants.subscribe,
        publish_data: grants.publish_data,
        record: grants.record,
        expires_in: ttl,
    })
}

/// The room a device goes live in: `device-<device id>`, owned by the device's user.
/// Nobody else may create a room of that prefix.
pub fn device_room_name(device_id: &str) -> String {
    format!("{DEVICE_ROOM_PREFIX}{device_id}")
}

const DEVICE_ROOM_PREFIX: &str = "device-";

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamRequest {
    /// `publish` (the device itself goes live) or `listen` (its user hears it).
    pub role: String,
}

/// A join token for a device's live stream: the device (with its own credential)
/// publishes, its user (or the user's other devices) listen. The device's room is
/// made on first use.
#[utoipa::path(post, path = "/api/v1/devices/{id}/stream", tag = "devices", request_body = StreamRequest, params(("id" = String, Path)), responses((status = 200, body = JoinTokenView), (status = 403, description = "only the device itself publishes", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn device_stream(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<StreamRequest>,
) -> Result<Json<JoinTokenView>, ApiError> {
    let device = st
        .db
        .device(&caller.user_id, &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such device"))?;
    let (grants, who) = match req.role.as_str() {
        "publish" if caller.device.as_deref() == Some(device.id.as_str()) => (
            Grants {
                publish: true,
                publish_data: true,
                ..Grants::default()
            },
            Who {
                identity: device.id.clone(),
                name: shown_name(&device.name, "device"),
            },
        ),
        "publish" => {
            return Err(ApiError::forbidden(
                "only the device itself goes live (with its own credential)",
            ));
        }
        "listen" => (
            Grants {
                subscribe: true,
                ..Grants::default()
            },
            as_themselves(&st, &caller).await?,
        ),
        _ => return Err(ApiError::invalid_field("role", "must be publish or listen")),
    };
    let name = device_room_name(&device.id);
    let room = match st
        .db
        .room_by_owner_name(&device.user_id, &name)
        .await
        .map_err(store_error)?
    {
        Some(r) => r,
        None => match st
            .db
            .create_room(&device.user_id, &name, defaults(), now_millis())
            .await
        {
            Ok(r) => r,
            // Made by a request racing this one.
            Err(crate::store::StoreError::Conflict(_)) => st
                .db
                .room_by_owner_name(&device.user_id, &name)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::internal("the device's room vanished while made"))?,
            Err(e) => return Err(store_error(e)),
        },
    };
    let ttl = 3600.min(st.config.max_join_ttl.as_secs());
    Ok(Json(issue(&st, &room, who, grants, ttl, None).await?))
}

/// The public keys SFU nodes verify join tokens with.
#[utoipa::path(get, path = "/api/v1/jwks.json", tag = "rooms", responses((status = 200, description = "a JWK Set (RFC 7517) of Ed25519 keys", body = Object)))]
pub async fn jwks(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "keys": [st.join_signer.public_jwk()] }))
}
