//! Ending the sessions whose pass to a room was just revoked.
//!
//! Revoking a room's join tokens (its epoch moving on) stops new joins and resumes at
//! once (`signaling::room_authority`). Who is in the room already is dealt with here:
//! after the database says the room changed, the media plane is asked who is in it,
//! each identity is resolved to the account (or device) it names, and those who may
//! no longer be there are removed (`left` with reason `revoked`).
//!
//! In a cluster the owner's request reaches one server (often the control plane, which
//! holds no one): every media node checks the rooms it serves every second
//! ([`check_revocations`]) and ends, on its side, the sessions a room's new epoch
//! revokes, for the reason the database gives (`rooms.revoked_why`).
//!
//! Invariants:
//! - The database change comes first and stands whatever happens here: a media plane
//!   that cannot be reached is logged, and the revoked tokens still join nothing.
//! - A node acts once per epoch of a room: the server that made the change marks the
//!   epoch seen as it ends its own sessions, so the check does not end again those
//!   who came back with a fresh pass.
//! - The owner's own sessions (their account, their devices, and identities they chose
//!   for tokens they made, which name no account or device) stay, except when the
//!   room is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

impl Revocation {
    /// As `rooms.revoked_why` has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Deleted => "deleted",
            Revocation::Reset => "reset",
            Revocation::WhoMayJoinChanged => "who_may_join_changed",
        }
    }

    /// An unknown word (a newer server's) is read as the strictest change short of
    /// deletion.
    pub fn parse(s: &str) -> Revocation {
        match s {
            "deleted" => Revocation::Deleted,
            "who_may_join_changed" => Revocation::WhoMayJoinChanged,
            _ => Revocation::Reset,
        }
    }
}

/// The epoch of each room this node has acted on, or let a session in with, by room
/// id; and when the room was last served here (a room not served for
/// [`FORGET_AFTER`] is forgotten).
pub type SeenEpochs = Arc<Mutex<HashMap<String, (i64, Instant)>>>;

/// A room unserved this long is forgotten (its next session marks it again).
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn seen(st: &AppState) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
    st.revocations_seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks `epoch` of `room` seen, as a session is let in with it (a revocation this
/// node has not acted on yet stays due).
pub fn mark_admitted(seen: &SeenEpochs, room: &str, epoch: i64) {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(room.to_owned())
        .or_insert((epoch, Instant::now()));
}

/// Moves the room's epoch on for `why` and ends the sessions it revokes on this
/// node (the others end theirs within a second: [`check_revocations`]); the room as
/// it is now.
pub async fn revoke(
    st: &AppState,
    room: &Room,
    why: Revocation,
) -> Result<Room, crate::store::StoreError> {
    let epoch = st.db.bump_room_epoch(&room.id, why.as_str()).await?;
    if st.live_rooms.is_some() {
        let mut seen = seen(st);
        let e = seen
            .entry(room.id.clone())
            .or_insert((epoch, Instant::now()));
        e.0 = e.0.max(epoch);
    }
    let now = st
        .db
        .room_by_id(&room.id)
        .await?
        .unwrap_or_else(|| room.clone());
    end_revoked_sessions(st, &now, why).await;
    Ok(now)
}

/// Every second on a media node, with the rooms it serves: a room whose epoch moved
/// on since this node last looked has the sessions its reason revokes ended here (the
/// strictest short of deletion when it moved on more than once: only the last reason
/// is kept), and a room that no longer exists has all of them ended. An epoch counts
/// as acted on once its sessions are ended; a failure is tried again at the next check.
pub async fn check_revocations(st: &AppState, served: &[String]) {
    if st.live_rooms.is_none() {
        return;
    }
    let rows = match st.db.room_revocations(served).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "could not check the served rooms for revoked passes; checking again in a second");
            return;
        }
    };
    // (room, the epoch to mark acted on, why; `None`: deleted).
    let mut due: Vec<(String, i64, Option<Revocation>)> = Vec::new();
    {
        let mut seen = seen(st);
        let now = Instant::now();
        seen.retain(|room, (_, at)| {
            served.contains(room) || now.duration_since(*at) < FORGET_AFTER
        });
        for room in served {
            match rows.iter().find(|(id, _, _)| id == room) {
                Some((_, epoch, why)) => match seen.get_mut(room) {
                    Some((before, at)) => {
                        *at = now;
                        if *before < *epoch {
                            let why = if *epoch - *before > 1 {
                                Revocation::Reset
                            } else {
                                Revocation::parse(why)
                            };
                            due.push((room.clone(), *epoch, Some(why)));
                        }
                    }
                    None => {
                        seen.insert(room.clone(), (*epoch, now));
                    }
                },
                // A room served here that the database no longer has was deleted
                // (tokens made on the command line name no room: never seen here).
                None if seen.contains_key(room) => due.push((room.clone(), 0, None)),
                None => {}
            }
        }
    }
    for (room_id, epoch, why) in due {
        let done = match why {
            Some(why) => match st.db.room_by_id(&room_id).await {
                Ok(Some(room)) => {
                    info!(room = %room_id, ?why, "a room's passes were revoked elsewhere; ending them here");
                    try_end_revoked_sessions(st, &room, why).await.is_ok()
                }
                Ok(None) => end_all(st, &room_id).await,
                Err(e) => {
                    warn!(room = %room_id, error = %e, "a revoked room could not be read; trying again at the next check");
                    false
                }
            },
            None => {
                info!(room = %room_id, "a room served here was deleted elsewhere; ending its sessions");
                end_all(st, &room_id).await
            }
        };
        if !done {
            continue;
        }
        let mut seen = seen(st);
        if why.is_none() {
            seen.remove(&room_id);
        } else if let Some(e) = seen.get_mut(&room_id) {
            e.0 = e.0.max(epoch);
        }
    }
}

/// Ends every session of a deleted room on this node; false if the media plane could
/// not be asked or told.
async fn end_all(st: &AppState, room_id: &str) -> bool {
    let Some(live) = &st.live_rooms else {
        return true;
    };
    let everyone = match live.identities(room_id).await {
        Ok(p) => p,
        Err(e) => {
            warn!(room = %room_id, error = %e, "could not ask the media plane who is in a deleted room");
            return false;
        }
    };
    if everyone.is_empty() {
        return true;
    }
    match live.evict(room_id, everyone).await {
        Ok(n) => {
            info!(room = %room_id, removed = n, "deleted room: its sessions ended");
            true
        }
        Err(e) => {
            warn!(room = %room_id, error = %e, "could not end the sessions of a deleted room");
            false
        }
    }
}

/// Ends the sessions `why` revokes in `room` (as the database has it now); how many.
pub async fn end_revoked_sessions(st: &AppState, room: &Room, why: Revocation) -> usize {
    try_end_revoked_sessions(st, room, why).await.unwrap_or(0)
}

/// [`end_revoked_sessions`], with an error when the media plane could not be asked
/// or told (logged here).
async fn try_end_revoked_sessions(
    st: &AppState,
    room: &Room,
    why: Revocation,
) -> Result<usize, ()> {
    let Some(live) = &st.live_rooms else {
        return Ok(0);
    };
    let present = match live.identities(&room.id).await {
        Ok(p) => p,
        Err(e) => {
            warn!(room = %room.id, error = %e, "could not ask the media plane who is in a revoked room; they stay until they leave");
            return Err(());
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
        return Ok(0);
    }
    match live.evict(&room.id, leaving).await {
        Ok(n) => {
            info!(room = %room.id, ?why, removed = n, "revoked passes: their sessions ended");
            Ok(n)
        }
        Err(e) => {
            warn!(room = %room.id, error = %e, "could not end the sessions of revoked passes; they stay until they leave");
            Err(())
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
