//! Whether a join token's room is still the room it was issued for. Tokens from the
//! control plane carry the room's id and epoch ([`crate::token::RoomBinding`]); before
//! a token opens a WHIP/WHEP session or joins (or resumes) over `/rtc`, the node asks
//! the [`RoomAuthority`] — the control plane's database in this binary. A deleted room,
//! or one whose epoch moved on (reset, a member removed, its access changed), refuses
//! every token bound to the old one: `401 token_revoked`. Sessions already open are
//! not cut; their clients need a new token to come back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use media_core::RoomId;

use crate::error::ApiError;
use crate::token::{JoinGrant, RoomBinding};

pub trait RoomAuthority: std::fmt::Debug + Send + Sync + 'static {
    /// True while `binding` names `room` as it is now; an error when that cannot be
    /// known (the database is away).
    fn is_current<'a>(
        &'a self,
        room: &'a RoomId,
        binding: &'a RoomBinding,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;
}

/// A node without a control plane (`None`) takes every valid token.
pub type SharedRoomAuthority = Option<Arc<dyn RoomAuthority>>;

/// Refuses a token whose room binding is no longer current.
pub async fn check(authority: &SharedRoomAuthority, grant: &JoinGrant) -> Result<(), ApiError> {
    let (Some(authority), Some(binding)) = (authority, &grant.binding) else {
        return Ok(());
    };
    match authority.is_current(&grant.room, binding).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!(room = %grant.room, identity = %grant.identity, epoch = binding.epoch, "revoked join token refused");
            Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "token_revoked",
                "this join token was revoked: the room was deleted or reset, or who may join it changed; ask for a new one",
            ))
        }
        Err(e) => {
            tracing::warn!(room = %grant.room, error = %e, "room binding could not be checked");
            Err(ApiError::unavailable(
                "room_check_unavailable",
                "the room could not be checked right now; try again",
            ))
        }
    }
}
