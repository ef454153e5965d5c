//! Room members: the owner of a room whose access is `members` invites people by
//! email; each invitee accepts or declines from their own account, and the owner can
//! remove anyone. Only accepted members of a `members` room get join tokens (see
//! `routes::rooms::standing`).
//!
//! Invariants: an invitation is bound to an email, and only the account with that
//! email can answer it; an invitation mail goes out once per invite (a repeat invite
//! of someone who has not answered mails nothing), bounded per inviter by a rate
//! limit; the invitee's list never names a room they were not invited to.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use signaling::ApiError;
use tracing::info;
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::extract::ApiJson;
use crate::openapi::ErrorBody;
use crate::routes::accounts::parse_email;
use crate::routes::rooms::own_room;
use crate::state::{AppState, Caller, store_error, too_many};
use crate::store::{Invitation, Membership, Store};

/// The most people one room's list holds (invited, accepted or declined).
pub const MAX_MEMBERS: usize = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub email: String,
    /// `invited`, `accepted` or `declined`.
    pub status: String,
    pub invited_at: i64,
    pub responded_at: Option<i64>,
}

impl From<Membership> for MemberView {
    fn from(m: Membership) -> Self {
        MemberView {
            email: m.email,
            status: m.status,
            invited_at: m.invited_at,
            responded_at: m.responded_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InviteRequest {
    pub email: String,
}

#[utoipa::path(get, path = "/api/v1/rooms/{name}/members", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 200, body = Vec<MemberView>), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    let members = st.db.room_members(&room.id).await.map_err(store_error)?;
    Ok(Json(members.into_iter().map(MemberView::from).collect()))
}

/// Invites someone by email and mails them (whether or not they have an account yet:
/// they sign up with that address to answer). Inviting someone who declined asks again.
#[utoipa::path(post, path = "/api/v1/rooms/{name}/members", tag = "rooms", request_body = InviteRequest, params(("name" = String, Path, description = "the room's id, or (for its owner) its name")), responses((status = 201, body = MemberView), (status = 403, description = "too many people on the list", body = ErrorBody), (status = 404, description = "not found (or another user's)", body = ErrorBody), (status = 422, description = "a field is invalid", body = ErrorBody), (status = 429, description = "too many invitations sent lately", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn invite(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    let email = parse_email(&req.email)?;
    let owner = caller.account(&st).await?;
    if owner.email_verified_at.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "email_unverified",
            "Confirm your email address first (open the link in the mail we sent): invitations go out in your name.",
        ));
    }
    if email == owner.email {
        return Err(ApiError::invalid_field(
            "email",
            "that is you: the owner is always in the room",
        ));
    }
    let members = st.db.room_members(&room.id).await.map_err(store_error)?;
    let before = members.iter().find(|m| m.email == email);
    if before.is_none() && members.len() >= MAX_MEMBERS {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            format!("A room lists at most {MAX_MEMBERS} people: remove someone first."),
        ));
    }
    let asks_again = before.is_none_or(|m| m.status == "declined");
    if asks_again {
        st.limits
            .invite_mails
            .check(&caller.user_id, std::time::Instant::now())
            .map_err(too_many)?;
    }
    let m = st
        .db
        .invite_member(&room.id, &email, now_millis())
        .await
        .map_err(store_error)?;
    if asks_again {
        let who = if owner.display_name.is_empty() {
            owner.email.clone()
        } else {
            owner.display_name.clone()
        };
        let lobby = format!("{}/room", st.config.public_url.trim_end_matches('/'));
        crate::mail::queue(&st, &email, format!("{who} invited you to the room {}", room.name), format!(
                    "{who} invited you to the room “{}” on StreamCore.\n\nOpen {lobby} signed in as {email} to accept or decline (make an account with this address if you have none).\n",
                    room.name
                ))
            .await
            .map_err(store_error)?;
        info!(user = %caller.user_id, room = %room.name, "room invitation mailed");
    }
    Ok((StatusCode::CREATED, Json(m.into())))
}

/// Removes someone from the room's list (invited, member or declined).
#[utoipa::path(delete, path = "/api/v1/rooms/{name}/members/{email}", tag = "rooms", params(("name" = String, Path, description = "the room's id, or (for its owner) its name"), ("email" = String, Path)), responses((status = 204, description = "removed"), (status = 404, description = "no such room or person on its list", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path((name, email)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_user()?;
    let room = own_room(&st, &caller, &name).await?;
    let email = email.trim().to_lowercase();
    if !st
        .db
        .remove_member(&room.id, &email)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("nobody with that email is on the list"));
    }
    // Their tokens (and everyone's issued before) stop joining.
    info!(user = %caller.user_id, room = %room.name, "room member removed");
    crate::live_rooms::revoke(&st, &room, crate::live_rooms::Revocation::WhoMayJoinChanged)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: String,
    /// The room's id: what its page and join tokens are asked with.
    pub room_id: String,
    /// The room's name (its owner's choice; another owner may use it too).
    pub room_name: String,
    /// Who invited you (their display name).
    pub owner_name: String,
    /// `invited`, `accepted` or `declined`.
    pub status: String,
    pub invited_at: i64,
}

impl From<Invitation> for InvitationView {
    fn from(i: Invitation) -> Self {
        InvitationView {
            id: i.membership.id,
            room_id: i.membership.room_id,
            room_name: i.room_name,
            owner_name: i.owner_name,
            status: i.membership.status,
            invited_at: i.membership.invited_at,
        }
    }
}

/// Rooms others invited the caller to: pending, accepted and declined.
#[utoipa::path(get, path = "/api/v1/invitations", tag = "rooms", responses((status = 200, body = Vec<InvitationView>), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn invitations(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<InvitationView>>, ApiError> {
    caller.require_user()?;
    let email = caller.account(&st).await?.email;
    let list = st.db.invitations(&email).await.map_err(store_error)?;
    Ok(Json(list.into_iter().map(InvitationView::from).collect()))
}

async fn answer(
    st: &AppState,
    caller: &Caller,
    id: &str,
    accept: bool,
) -> Result<Json<InvitationView>, ApiError> {
    caller.require_user()?;
    let email = caller.account(st).await?.email;
    st.db
        .answer_invitation(id, &email, &caller.user_id, accept, now_millis())
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such invitation"))?;
    let inv = st
        .db
        .invitations(&email)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|i| i.membership.id == id)
        .ok_or_else(|| ApiError::not_found("no such invitation"))?;
    info!(user = %caller.user_id, room = %inv.room_name, accept, "room invitation answered");
    Ok(Json(inv.into()))
}

/// Accepts an invitation: the caller becomes a member and may join the room.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/accept", tag = "rooms", params(("id" = String, Path)), responses((status = 200, body = InvitationView), (status = 404, description = "no such invitation (or someone else's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn accept(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InvitationView>, ApiError> {
    answer(&st, &caller, &id, true).await
}

/// Declines an invitation, or leaves a room the caller had joined as a member.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/decline", tag = "rooms", params(("id" = String, Path)), responses((status = 200, body = InvitationView), (status = 404, description = "no such invitation (or someone else's)", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn decline(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InvitationView>, ApiError> {
    answer(&st, &caller, &id, false).await
}
