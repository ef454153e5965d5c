//! Per-room retention of raw recorded tracks: the setting, the recordings whose
//! tracks are due, and marking them gone. One SQL text for both backends (sqlx binds
//! `$n` on SQLite too), as in [`super::podcasts`].

use std::future::Future;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{Db, Millis, StoreError};

type R<T> = Result<T, StoreError>;

pub const DAY_MS: i64 = 86_400_000;

/// A recording whose track files are due for deletion.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueTracks {
    pub id: String,
    /// The first segment of its object keys.
    pub sfu_room: String,
    /// JSON array of its object keys.
    pub objects: Option<String>,
    pub manifest: Option<String>,
}

pub trait RetentionStore {
    /// Days a room keeps raw tracks after a mixdown; `None` clears it (kept forever).
    fn set_track_retention(
        &self,
        room_id: &str,
        days: Option<i64>,
        now: Millis,
    ) -> impl Future<Output = R<()>> + Send;
    fn track_retention(&self, room_id: &str) -> impl Future<Output = R<Option<i64>>> + Send;
    /// Uploaded recordings of rooms with a retention whose first finished mixdown is
    /// that many days old at `now`, and whose tracks are still there; oldest first.
    fn tracks_due(&self, now: Millis, limit: i64)
    -> impl Future<Output = R<Vec<DueTracks>>> + Send;
    /// Records that `files` track files of the recording went at `now`, and what of
    /// its objects is left (JSON array); false when it was marked already.
    fn mark_tracks_deleted(
        &self,
        recording_id: &str,
        remaining: &str,
        files: i64,
        now: Millis,
    ) -> impl Future<Output = R<bool>> + Send;
    /// When the recording's tracks were deleted, if they were.
    fn tracks_deleted_at(
        &self,
        recording_id: &str,
    ) -> impl Future<Output = R<Option<Millis>>> + Send;
}

macro_rules! retention_store {
    ($store:ty) => {
        impl RetentionStore for $store {
            async fn set_track_retention(&self, room_id: &str, days: Option<i64>, now: Millis) -> R<()> {
                match days {
                    Some(days) => {
                        sqlx::query(
                            "INSERT INTO room_retention (room_id, tracks_days, updated_at) VALUES ($1, $2, $3) \
                             ON CONFLICT (room_id) DO UPDATE SET tracks_days = excluded.tracks_days, \
                             updated_at = excluded.updated_at",
                        )
                        .bind(room_id)
                        .bind(days)
                        .bind(now)
                        .execute(self.pool())
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM room_retention WHERE room_id = $1")
                            .bind(room_id)
                            .execute(self.pool())
                            .await?;
                    }
                }
                Ok(())
            }

            async fn track_retention(&self, room_id: &str) -> R<Option<i64>> {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT tracks_days FROM room_retention WHERE room_id = $1")
                        .bind(room_id)
                        .fetch_optional(self.pool())
                        .await?;
                Ok(row.map(|r| r.0))
            }

            async fn tracks_due(&self, now: Millis, limit: i64) -> R<Vec<DueTracks>> {
                Ok(sqlx::query_as(
                    "SELECT r.id, r.room_name AS sfu_room, r.objects, r.manifest \
                     FROM recordings r JOIN room_retention t ON t.room_id = r.room_id \
                     WHERE r.status = 'uploaded' \
                     AND NOT EXISTS (SELECT 1 FROM recording_tracks_deleted d WHERE d.recording_id = r.id) \
                     AND EXISTS (SELECT 1 FROM transcode_jobs j WHERE j.recording_id = r.id \
                         AND j.kind = 'mixdown' AND j.status = 'completed' \
                         AND j.updated_at + t.tracks_days * $1 <= $2) \
                     ORDER BY r.started_at, r.id LIMIT $3",
                )
                .bind(DAY_MS)
                .bind(now)
                .bind(limit)
                .fetch_all(self.pool())
                .await?)
            }

            async fn mark_tracks_deleted(&self, recording_id: &str, remaining: &str, files: i64, now: Millis) -> R<bool> {
                let mut tx = self.pool().begin().await?;
                let done = sqlx::query(
                    "INSERT INTO recording_tracks_deleted (recording_id, deleted_at, files) VALUES ($1, $2, $3) \
                     ON CONFLICT (recording_id) DO NOTHING",
                )
                .bind(recording_id)
                .bind(now)
                .bind(files)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    sqlx::query("UPDATE recordings SET objects = $1 WHERE id = $2")
                        .bind(remaining)
                        .bind(recording_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn tracks_deleted_at(&self, recording_id: &str) -> R<Option<Millis>> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT deleted_at FROM recording_tracks_deleted WHERE recording_id = $1",
                )
                .bind(recording_id)
                .fetch_optional(self.pool())
                .await?;
                Ok(row.map(|r| r.0))
            }
        }
    };
}

retention_store!(SqliteStore);
retention_store!(PgStore);

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl RetentionStore for Db {
    async fn set_track_retention(&self, room_id: &str, days: Option<i64>, now: Millis) -> R<()> {
        delegate!(self, s => s.set_track_retention(room_id, days, now))
    }
    async fn track_retention(&self, room_id: &str) -> R<Option<i64>> {
        delegate!(self, s => s.track_retention(room_id))
    }
    async fn tracks_due(&self, now: Millis, limit: i64) -> R<Vec<DueTracks>> {
        delegate!(self, s => s.tracks_due(now, limit))
    }
    async fn mark_tracks_deleted(
        &self,
        recording_id: &str,
        remaining: &str,
        files: i64,
        now: Millis,
    ) -> R<bool> {
        delegate!(self, s => s.mark_tracks_deleted(recording_id, remaining, files, now))
    }
    async fn tracks_deleted_at(&self, recording_id: &str) -> R<Option<Millis>> {
        delegate!(self, s => s.tracks_deleted_at(recording_id))
    }
}
