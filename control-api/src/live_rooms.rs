//! Ending the sessions whose pass to a room was just revoked.
//!
//! Revoking a room's join tokens (its epoch moving on) stops new joins and resumes at
//! once (`signaling::room_authority`). Who is in the room already is dealt with here:
//! after the database says the room changed, the media plane is asked who is in it,
//! each identity is resolved to the account (or device) it names, and those who may
//! no longer be there are removed (`left` with reason `revoked`).
//!
//! Invariants:
//! - The database change comes first and stands whatever happens here: a media plane
//!   that cannot be reached is logged, and the revoked tokens still join nothing.
//! - The owner's own sessions (their account, their devices, and identities they chose
//!   for tokens they made, which name no account or device) stay, except when the
//!   room is deleted.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::{info, warn};

use crate::state::AppState;
use crate::store::{Room, Store};

/// The media plane's side: who is in a room, and removing them. `room` is the room's
/// name as the media plane knows it.
pub trait LiveRooms: Send + Sync {
    /// The identities of the room's peers (participants and WHIP/WHEP sessions).
    fn identities<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// Removes the room's peers with these identities; how many went.
    fn evict<'a>(
        &'a self,
        room: &'a str,
        identities: Vec<String>,
    ) -> BoxFuture<'a, Result<usize, String>>;
}

/// `None` on a node that runs the API only (no media plane in the process).
pub type LiveRoomsRef = Option<Arc<dyn LiveRooms>>;

/// Who leaves a room whose passes were revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The room is gone: everyone.
    Deleted,
    /// "Cancel every pass": everyone but the owner's own sessions.
    Reset,
    /// Someone was removed, the access changed or the link was replaced: everyone
    /// who may not join the room as it stands now (share-link holders who are not
    /// members always: the link they came with is gone, or no longer opens the room).
    WhoMayJoinChanged,
}

/// Ends the sessions `why` revokes in `room` (as the database has it now); how many.
pub async fn end_revoked_sessions(st: &AppState, room: &Room, why: Revocation) -> usize {
    let Some(live) = &st.live_rooms else {
        return 0;
    };
    let present = match live.identities(&room.id).await {
        Ok(p) => p,
        Err(e) => {
            warn!(room = %room.id, error = %e, "could not ask the media plane who is in a revoked room; they stay until they leave");
            return 0;
        }
    };
    let mut leaving = Vec::new();
    for identity in present {
        if leaving.contains(&identity) {
            continue;
        }
        let stays = match why {
            Revocation::Deleted => false,
            Revocation::Reset => owners_own(st, room, &identity).await,
            Revocation::WhoMayJoinChanged => {
                owners_own(st, room, &identity).await || still_member(st, room, &identity).await
            }
        };
        if !stays {
            leaving.push(identity);
        }
    }
    if leaving.is_empty() {
        return 0;
    }
    match live.evict(&room.id, leaving).await {
        Ok(n) => {
            info!(room = %room.id, ?why, removed = n, "revoked passes: their sessions ended");
            n
        }
        Err(e) => {
            warn!(room = %room.id, error = %e, "could not end the sessions of revoked passes; they stay until they leave");
            0
        }
    }
}

/// Whose an identity is, as far as the store can say.
enum Owner {
    /// A user's id, or a device's (then its user's).
    Account(String),
    /// Neither: an identity the owner (or the operator) chose for a token.
    Chosen,
    /// The store did not answer.
    Unknown,
}

async fn account_of(st: &AppState, identity: &str) -> Owner {
    let user_lookup_failed = match st.db.user_by_id(identity).await {
        Ok(Some(u)) => return Owner::Account(u.id),
        Ok(None) => false,
        Err(_) => true,
    };
    match st.db.device_by_id(identity).await {
        Ok(Some(d)) => Owner::Account(d.user_id),
        Ok(None) if !user_lookup_failed => Owner::Chosen,
        Ok(None) | Err(_) => {
            warn!(%identity, "could not tell whose a room identity is; its session ends with the revoked passes");
            Owner::Unknown
        }
    }
}

/// The owner's account or device, or an identity the owner chose (it names neither
/// an account nor a device: only the owner's tokens, and the operator's, carry those).
/// When the store cannot say, the session ends: whoever may still join comes back.
async fn owners_own(st: &AppState, room: &Room, identity: &str) -> bool {
    match account_of(st, identity).await {
        Owner::Account(user) => user == room.owner_id,
        Owner::Chosen => true,
        Owner::Unknown => false,
    }
}

/// An account (or its device) that may still join a `members` or `link` room without
/// a link: it accepted an invitation and is still on the list.
async fn still_member(st: &AppState, room: &Room, identity: &str) -> bool {
    if room.access != "members" && room.access != "link" {
        return false;
    }
    match account_of(st, identity).await {
        Owner::Account(user) => st.db.is_member(&room.id, &user).await.unwrap_or(false),
        Owner::Chosen | Owner::Unknown => false,
    }
}
