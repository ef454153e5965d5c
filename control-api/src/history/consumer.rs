//! The history consumer: `now.playing` from the bus into plays in the database.
//!
//! Records are checked as the hub checks them (the cluster's signature, an envelope it
//! can read) and applied one at a time, in the bus's order, which is per device. A
//! record is committed on the bus only after its device's cursor and plays are stored;
//! a database that fails is retried, and the offset stays put meanwhile.

use std::time::Duration;

use events::{BusError, Envelope, EventType, Topic};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::tracker::{Cursor, Play, observe};
use crate::hub::Task;
use crate::state::AppState;
use crate::store::{PlayRow, Store, StoreError};

/// Tries of one record against a failing database before it is skipped (logged):
/// a record that can never be stored must not hold up everyone's history behind it.
const STORE_TRIES: u32 = 8;

/// Joins the history's consumer group (`ApiConfig::history_group`) on `now.playing`.
pub fn start(st: &AppState) -> Result<Task, BusError> {
    let sub = st
        .bus
        .subscribe(&st.config.history_group, &[Topic::NowPlaying])?;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(consume(st.clone(), sub, rx));
    Ok(Task::new(stop, task))
}

async fn consume(st: AppState, mut sub: events::Subscription, mut stop: watch::Receiver<bool>) {
    loop {
        let d = tokio::select! {
            d = sub.next() => d,
            _ = stop.changed() => return,
        };
        let d = match d {
            Ok(d) => d,
            Err(BusError::Closed) => return,
            Err(e) => {
                debug!(error = %e, "history consumer: bus error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if !st.event_key.verify(&d.payload, d.signature.as_deref()) {
            warn!(topic = %d.topic, partition = d.partition, offset = d.offset, key = %d.key, "history consumer: record without a valid signature ignored");
        } else {
            match Envelope::from_slice(&d.payload) {
                Ok(env) => {
                    let mut tries = 0;
                    loop {
                        match apply(&st, &env).await {
                            Ok(()) => break,
                            Err(e) => {
                                tries += 1;
                                if tries >= STORE_TRIES {
                                    warn!(event = %env.id, offset = d.offset, error = %e, "history consumer: state not stored after {STORE_TRIES} tries; skipped");
                                    break;
                                }
                                debug!(event = %env.id, error = %e, "history consumer: storing failed; retrying");
                                let backoff = Duration::from_millis(250 << tries.min(5));
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff) => {}
                                    _ = stop.changed() => return,
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(topic = %d.topic, offset = d.offset, error = %e, "history consumer: unreadable event skipped")
                }
            }
        }
        if let Err(e) = sub.commit(&d) {
            debug!(error = %e, "history consumer: offset not stored");
        }
    }
}

/// Applies one event to its device's cursor and stores both.
async fn apply(st: &AppState, env: &Envelope) -> Result<(), StoreError> {
    if env.event_type() != Some(EventType::NowPlayingUpdated) {
        return Ok(());
    }
    let data = &env.data;
    let (Some(user), Some(device), Some(at)) = (
        data["user_id"].as_str(),
        data["device_id"].as_str(),
        env.time_millis(),
    ) else {
        warn!(event = %env.id, "history consumer: a now_playing event without user, device or time skipped");
        return Ok(());
    };
    let Some(o) = observe(&env.id, at, &data["state"]) else {
        warn!(event = %env.id, device, "history consumer: a now_playing event without a readable state skipped");
        return Ok(());
    };
    let mut cursor = match st.db.listening_cursor(device).await? {
        Some(json) => serde_json::from_str::<Cursor>(&json).unwrap_or_else(|e| {
            warn!(device, error = %e, "history consumer: unreadable cursor; the device starts afresh");
            Cursor::default()
        }),
        None => Cursor::default(),
    };
    let applied = cursor.apply(&o);
    if applied.skipped {
        debug!(event = %env.id, device, "history consumer: state already applied");
        return Ok(());
    }
    let plays: Vec<PlayRow> = applied.plays.iter().map(|p| row(device, p)).collect();
    let json = serde_json::to_string(&cursor).expect("a cursor serialises");
    let now = crate::auth::now_millis();
    if st
        .db
        .record_listening(user, device, &json, &plays, now)
        .await?
    {
        for p in &plays {
            info!(user, device, play = %p.id, track = %p.track_id, listened_ms = p.listened_ms, "play recorded");
        }
    } else {
        debug!(event = %env.id, device, user, "history consumer: the device is not the user's (removed?); state ignored");
    }
    Ok(())
}

fn row(device: &str, p: &Play) -> PlayRow {
    PlayRow {
        id: p.id.clone(),
        device_id: device.to_owned(),
        track_id: p.track.id.clone(),
        title: p.track.title.clone(),
        artist: p.track.artist.clone(),
        album: p.track.album.clone(),
        duration_ms: p.track.duration_ms,
        started_at: p.started_at,
        listened_ms: p.listened_ms,
    }
}
