//! The history consumer: `now.playing` from the bus into plays in the database.
//!
//! Records are checked as the hub checks them (the cluster's signature, an envelope it
//! can read) and applied one at a time, in the bus's order, which is per device. A
//! record is committed on the bus only once its device's cursor and plays are stored.
//!
//! - A database that is away is waited for, however long: the offset stays put and
//!   nothing is skipped. Only a record that can never be stored (a constraint the data
//!   breaks) is logged and skipped.
//! - Two nodes may handle one device for a moment while the broker moves a partition
//!   between them. The cursor carries a version and is written only over the version
//!   it was read at; the loser reads it again and applies its state to the winner's
//!   cursor, where an already applied state is skipped.
//! - On the in-process bus, states still queued at shutdown are applied before the
//!   task ends (the queue dies with the process; Kafka keeps them for the group).

use std::time::{Duration, Instant};

use events::{BusError, Delivery, Envelope, EventType, Topic};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::tracker::{Cursor, Play, observe};
use crate::hub::Task;
use crate::state::AppState;
use crate::store::{PlayRow, Recorded, Store, StoreError};

/// Longest wait between two tries against a database that is away.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Reads of a cursor that another writer keeps moving before giving up for now.
const STALE_TRIES: u32 = 8;
/// How long shutdown spends on the in-process queue.
const DRAIN_FOR: Duration = Duration::from_secs(4);

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
            _ = stop.changed() => break,
        };
        let d = match d {
            Ok(d) => d,
            Err(BusError::Closed) => return,
            Err(e) => {
                debug!(error = %e, "history consumer: bus error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        if !handle(&st, &d, Some(&mut stop)).await {
            break;
        }
        if let Err(e) = sub.commit(&d) {
            debug!(error = %e, "history consumer: offset not stored");
        }
    }
    let until = Instant::now() + DRAIN_FOR;
    let mut drained = 0;
    while Instant::now() < until
        && let Some(d) = sub.try_next()
    {
        handle(&st, &d, None).await;
        drained += 1;
    }
    if drained > 0 {
        info!(
            states = drained,
            "history consumer: queued states applied before stopping"
        );
    }
}

/// Handles one record, waiting out a database that is away. False when stopped first
/// (the record is not committed then).
async fn handle(st: &AppState, d: &Delivery, mut stop: Option<&mut watch::Receiver<bool>>) -> bool {
    if !st.event_key.verify(&d.payload, d.signature.as_deref()) {
        warn!(topic = %d.topic, partition = d.partition, offset = d.offset, key = %d.key, "history consumer: record without a valid signature ignored");
        return true;
    }
    let env = match Envelope::from_slice(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            warn!(topic = %d.topic, offset = d.offset, error = %e, "history consumer: unreadable event skipped");
            return true;
        }
    };
    let mut tries = 0u32;
    loop {
        match apply(st, &env).await {
            Ok(()) => return true,
            Err(e) if !is_transient(&e) => {
                warn!(event = %env.id, offset = d.offset, error = %e, "history consumer: state that cannot be stored skipped");
                return true;
            }
            Err(e) => {
                tries += 1;
                let backoff = Duration::from_millis(250 << tries.min(6)).min(MAX_BACKOFF);
                if tries % 10 == 1 {
                    warn!(event = %env.id, tries, error = %e, "history consumer: the database is away; waiting");
                }
                match &mut stop {
                    Some(stop) => tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return false,
                    },
                    // Draining at shutdown: one more try, no waiting.
                    None if tries < 2 => {}
                    None => return false,
                }
            }
        }
    }
}

/// Errors worth waiting out: the database is away, busy or the state raced another
/// writer. A constraint the data breaks, or a row that does not decode, stays broken.
fn is_transient(e: &ApplyError) -> bool {
    match e {
        ApplyError::Raced => true,
        ApplyError::Store(StoreError::Database(e)) => match e {
            sqlx::Error::Database(db) => db.kind() == sqlx::error::ErrorKind::Other,
            sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => false,
            _ => true,
        },
        ApplyError::Store(_) => false,
    }
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the device's cursor kept moving under another writer")]
    Raced,
}

/// Applies one event to its device's cursor and stores both.
async fn apply(st: &AppState, env: &Envelope) -> Result<(), ApplyError> {
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
    let Some(o) = observe(&env.id, data["seq"].as_i64(), at, &data["state"]) else {
        warn!(event = %env.id, device, "history consumer: a now_playing event without a readable state skipped");
        return Ok(());
    };
    for _ in 0..STALE_TRIES {
        let (mut cursor, version) = match st.db.listening_cursor(device).await? {
            Some((json, version)) => (
                serde_json::from_str::<Cursor>(&json).unwrap_or_else(|e| {
                    warn!(device, error = %e, "history consumer: unreadable cursor; the device starts afresh");
                    Cursor::default()
                }),
                Some(version),
            ),
            None => (Cursor::default(), None),
        };
        let applied = cursor.apply(&o);
        if applied.skipped {
            debug!(event = %env.id, device, "history consumer: state already applied");
            return Ok(());
        }
        let plays: Vec<PlayRow> = applied.plays.iter().map(|p| row(device, p)).collect();
        let json = serde_json::to_string(&cursor).expect("a cursor serialises");
        let now = crate::auth::now_millis();
        match st
            .db
            .record_listening(user, device, &json, version, &plays, now)
            .await?
        {
            Recorded::Stored => {
                for p in &plays {
                    debug!(user, device, play = %p.id, track = %p.track_id, listened_ms = p.listened_ms, "play recorded");
                }
                return Ok(());
            }
            Recorded::Stale => {
                debug!(event = %env.id, device, "history consumer: the cursor moved under another writer; reading it again");
            }
            Recorded::NotOwned => {
                debug!(event = %env.id, device, user, "history consumer: the device is not the user's (removed?); state ignored");
                return Ok(());
            }
        }
    }
    Err(ApplyError::Raced)
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
