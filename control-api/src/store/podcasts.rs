//! Podcast shows, episodes and recording markers (and deleting a recording, which
//! takes its markers along): one implementation for both
//! backends. The SQL is the same text on each (sqlx binds `$n` on SQLite too), so the
//! queries are written once and expanded for each pool by [`podcast_store!`].
//!
//! Every read and write of a show filters by its owner; episodes are reached through
//! their show (the routes check the show's owner first), and public reads
//! (`public_show`, `feed_episodes`) return only what the feed shows.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{Db, Millis, StoreError};

type R<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Show {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub description: String,
    pub author: String,
    /// A language tag (`en`, `pt-BR`).
    pub language: String,
    /// One of Apple's top-level categories (`crate::podcast::CATEGORIES`).
    pub category: String,
    pub explicit: bool,
    pub artwork_key: Option<String>,
    pub artwork_type: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// How many episodes it has (any status); read only.
    #[sqlx(default)]
    pub episodes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chapter {
    /// From the episode's start.
    pub start_ms: i64,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Episode {
    pub id: String,
    pub show_id: String,
    /// Made once; podcast apps know the episode by it across edits.
    pub guid: String,
    pub title: String,
    pub description: String,
    /// `draft` or `published` (published with `publish_at` ahead: scheduled).
    pub status: String,
    pub publish_at: Option<Millis>,
    pub season: Option<i64>,
    pub episode: Option<i64>,
    pub source_job: String,
    pub audio_key: String,
    pub audio_bytes: i64,
    pub audio_type: String,
    pub duration_ms: i64,
    /// JSON, `[Chapter]` ascending.
    pub chapters: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Episode {
    pub fn chapter_list(&self) -> Vec<Chapter> {
        serde_json::from_str(&self.chapters).unwrap_or_default()
    }

    /// Whether a feed read at `now` shows it.
    pub fn is_live(&self, now: Millis) -> bool {
        self.status == "published" && self.publish_at.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Marker {
    pub id: String,
    pub recording_id: String,
    /// Wall clock, like the recording's `first_sample_at` and a mixdown's `starts_at_ms`.
    pub at_ms: Millis,
    pub title: String,
    pub created_by: String,
    pub created_at: Millis,
}

pub trait PodcastStore {
    fn create_show(&self, show: &Show) -> impl Future<Output = R<()>> + Send;
    /// The owner's shows, newest first, with their episode counts.
    fn shows(&self, owner_id: &str) -> impl Future<Output = R<Vec<Show>>> + Send;
    fn show(&self, owner_id: &str, id: &str) -> impl Future<Output = R<Option<Show>>> + Send;
    /// A show by id alone: for its public feed and files.
    fn public_show(&self, id: &str) -> impl Future<Output = R<Option<Show>>> + Send;
    /// Writes the show's fields (not its artwork); false when it is gone.
    fn update_show(&self, show: &Show) -> impl Future<Output = R<bool>> + Send;
    /// Sets the show's artwork; the key it replaces (false when the show is gone).
    fn set_artwork(
        &self,
        show: &Show,
        key: &str,
        mime: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<Option<String>>>> + Send;
    /// Deletes the show and its episodes.
    fn delete_show(&self, owner_id: &str, id: &str) -> impl Future<Output = R<bool>> + Send;
    fn create_episode(&self, ep: &Episode) -> impl Future<Output = R<()>> + Send;
    /// A show's episodes, newest first.
    fn episodes(&self, show_id: &str) -> impl Future<Output = R<Vec<Episode>>> + Send;
    fn episode(&self, show_id: &str, id: &str) -> impl Future<Output = R<Option<Episode>>> + Send;
    /// Writes the episode's fields (not its guid, show or audio); false when it is gone.
    fn update_episode(&self, ep: &Episode) -> impl Future<Output = R<bool>> + Send;
    fn delete_episode(&self, show_id: &str, id: &str) -> impl Future<Output = R<bool>> + Send;
    /// What the feed shows at `now`: published, publish time passed, newest first.
    fn feed_episodes(
        &self,
        show_id: &str,
        now: Millis,
        limit: i64,
    ) -> impl Future<Output = R<Vec<Episode>>> + Send;
    fn add_marker(&self, marker: &Marker) -> impl Future<Output = R<()>> + Send;
    /// Deletes a finished recording (`uploaded` or `failed`) of `owner_id`'s with its
    /// markers, and marks its mixdowns deleted (their rows stay, as an upload's do);
    /// false when there is no such finished recording.
    fn delete_recording(
        &self,
        owner_id: &str,
        id: &str,
        now: Millis,
    ) -> impl Future<Output = R<bool>> + Send;
    /// A recording's markers by time.
    fn markers(&self, recording_id: &str) -> impl Future<Output = R<Vec<Marker>>> + Send;
}

const SHOW_COLUMNS: &str = "id, owner_id, title, description, author, language, category, explicit, \
     artwork_key, artwork_type, created_at, updated_at, \
     (SELECT COUNT(*) FROM episodes e WHERE e.show_id = shows.id) AS episodes";
const EPISODE_COLUMNS: &str = "id, show_id, guid, title, description, status, publish_at, season, \
     episode, source_job, audio_key, audio_bytes, audio_type, duration_ms, chapters, created_at, updated_at";

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

macro_rules! podcast_store {
    ($store:ty) => {
        impl PodcastStore for $store {
            async fn create_show(&self, s: &Show) -> R<()> {
                sqlx::query(
                    "INSERT INTO shows (id, owner_id, title, description, author, language, category, \
                     explicit, artwork_key, artwork_type, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&s.id)
                .bind(&s.owner_id)
                .bind(&s.title)
                .bind(&s.description)
                .bind(&s.author)
                .bind(&s.language)
                .bind(&s.category)
                .bind(s.explicit)
                .bind(&s.artwork_key)
                .bind(&s.artwork_type)
                .bind(s.created_at)
                .bind(s.updated_at)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn shows(&self, owner_id: &str) -> R<Vec<Show>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {SHOW_COLUMNS} FROM shows WHERE owner_id = $1 ORDER BY created_at DESC, id"
                )))
                .bind(owner_id)
                .fetch_all(self.pool())
                .await?)
            }

            async fn show(&self, owner_id: &str, id: &str) -> R<Option<Show>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {SHOW_COLUMNS} FROM shows WHERE id = $1 AND owner_id = $2"
                )))
                .bind(id)
                .bind(owner_id)
                .fetch_optional(self.pool())
                .await?)
            }

            async fn public_show(&self, id: &str) -> R<Option<Show>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {SHOW_COLUMNS} FROM shows WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(self.pool())
                .await?)
            }

            async fn update_show(&self, s: &Show) -> R<bool> {
                let done = sqlx::query(
                    "UPDATE shows SET title = $1, description = $2, author = $3, language = $4, \
                     category = $5, explicit = $6, updated_at = $7 \
                     WHERE id = $8 AND owner_id = $9",
                )
                .bind(&s.title)
                .bind(&s.description)
                .bind(&s.author)
                .bind(&s.language)
                .bind(&s.category)
                .bind(s.explicit)
                .bind(s.updated_at)
                .bind(&s.id)
                .bind(&s.owner_id)
                .execute(self.pool())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_artwork(&self, s: &Show, key: &str, mime: &str, now: Millis) -> R<Option<Option<String>>> {
                let mut tx = self.pool().begin().await?;
                let old: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT artwork_key FROM shows WHERE id = $1 AND owner_id = $2",
                )
                .bind(&s.id)
                .bind(&s.owner_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((old,)) = old else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE shows SET artwork_key = $1, artwork_type = $2, updated_at = $3 \
                     WHERE id = $4 AND owner_id = $5",
                )
                .bind(key)
                .bind(mime)
                .bind(now)
                .bind(&s.id)
                .bind(&s.owner_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(old))
            }

            async fn delete_show(&self, owner_id: &str, id: &str) -> R<bool> {
                let mut tx = self.pool().begin().await?;
                let done = sqlx::query("DELETE FROM shows WHERE id = $1 AND owner_id = $2")
                    .bind(id)
                    .bind(owner_id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 1 {
                    // The foreign key cascades; said here too so that a connection
                    // without foreign keys leaves no orphan.
                    sqlx::query("DELETE FROM episodes WHERE show_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_episode(&self, e: &Episode) -> R<()> {
                sqlx::query(
                    "INSERT INTO episodes (id, show_id, guid, title, description, status, publish_at, \
                     season, episode, source_job, audio_key, audio_bytes, audio_type, duration_ms, \
                     chapters, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                )
                .bind(&e.id)
                .bind(&e.show_id)
                .bind(&e.guid)
                .bind(&e.title)
                .bind(&e.description)
                .bind(&e.status)
                .bind(e.publish_at)
                .bind(e.season)
                .bind(e.episode)
                .bind(&e.source_job)
                .bind(&e.audio_key)
                .bind(e.audio_bytes)
                .bind(&e.audio_type)
                .bind(e.duration_ms)
                .bind(&e.chapters)
                .bind(e.created_at)
                .bind(e.updated_at)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn episodes(&self, show_id: &str) -> R<Vec<Episode>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {EPISODE_COLUMNS} FROM episodes WHERE show_id = $1 ORDER BY created_at DESC, id"
                )))
                .bind(show_id)
                .fetch_all(self.pool())
                .await?)
            }

            async fn episode(&self, show_id: &str, id: &str) -> R<Option<Episode>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {EPISODE_COLUMNS} FROM episodes WHERE id = $1 AND show_id = $2"
                )))
                .bind(id)
                .bind(show_id)
                .fetch_optional(self.pool())
                .await?)
            }

            async fn update_episode(&self, e: &Episode) -> R<bool> {
                let done = sqlx::query(
                    "UPDATE episodes SET title = $1, description = $2, status = $3, publish_at = $4, \
                     season = $5, episode = $6, chapters = $7, updated_at = $8 \
                     WHERE id = $9 AND show_id = $10",
                )
                .bind(&e.title)
                .bind(&e.description)
                .bind(&e.status)
                .bind(e.publish_at)
                .bind(e.season)
                .bind(e.episode)
                .bind(&e.chapters)
                .bind(e.updated_at)
                .bind(&e.id)
                .bind(&e.show_id)
                .execute(self.pool())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_episode(&self, show_id: &str, id: &str) -> R<bool> {
                let done = sqlx::query("DELETE FROM episodes WHERE id = $1 AND show_id = $2")
                    .bind(id)
                    .bind(show_id)
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn feed_episodes(&self, show_id: &str, now: Millis, limit: i64) -> R<Vec<Episode>> {
                Ok(sqlx::query_as(sql(format!(
                    "SELECT {EPISODE_COLUMNS} FROM episodes \
                     WHERE show_id = $1 AND status = 'published' AND publish_at <= $2 \
                     ORDER BY publish_at DESC, id LIMIT $3"
                )))
                .bind(show_id)
                .bind(now)
                .bind(limit)
                .fetch_all(self.pool())
                .await?)
            }

            async fn add_marker(&self, m: &Marker) -> R<()> {
                sqlx::query(
                    "INSERT INTO recording_markers (id, recording_id, at_ms, title, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&m.id)
                .bind(&m.recording_id)
                .bind(m.at_ms)
                .bind(&m.title)
                .bind(&m.created_by)
                .bind(m.created_at)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn delete_recording(&self, owner_id: &str, id: &str, now: Millis) -> R<bool> {
                let mut tx = self.pool().begin().await?;
                let done = sqlx::query(
                    "DELETE FROM recordings WHERE id = $1 AND owner_id = $2 \
                     AND status IN ('uploaded', 'failed')",
                )
                .bind(id)
                .bind(owner_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    sqlx::query("DELETE FROM recording_markers WHERE recording_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM recording_tracks_deleted WHERE recording_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE transcode_jobs SET status = 'deleted', updated_at = $1 \
                         WHERE recording_id = $2 AND status IN ('completed', 'failed')",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn markers(&self, recording_id: &str) -> R<Vec<Marker>> {
                Ok(sqlx::query_as(
                    "SELECT id, recording_id, at_ms, title, created_by, created_at \
                     FROM recording_markers WHERE recording_id = $1 ORDER BY at_ms, id",
                )
                .bind(recording_id)
                .fetch_all(self.pool())
                .await?)
            }
        }
    };
}

podcast_store!(SqliteStore);
podcast_store!(PgStore);

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl PodcastStore for Db {
    async fn create_show(&self, show: &Show) -> R<()> {
        delegate!(self, s => s.create_show(show))
    }
    async fn shows(&self, owner_id: &str) -> R<Vec<Show>> {
        delegate!(self, s => s.shows(owner_id))
    }
    async fn show(&self, owner_id: &str, id: &str) -> R<Option<Show>> {
        delegate!(self, s => s.show(owner_id, id))
    }
    async fn public_show(&self, id: &str) -> R<Option<Show>> {
        delegate!(self, s => s.public_show(id))
    }
    async fn update_show(&self, show: &Show) -> R<bool> {
        delegate!(self, s => s.update_show(show))
    }
    async fn set_artwork(
        &self,
        show: &Show,
        key: &str,
        mime: &str,
        now: Millis,
    ) -> R<Option<Option<String>>> {
        delegate!(self, s => s.set_artwork(show, key, mime, now))
    }
    async fn delete_show(&self, owner_id: &str, id: &str) -> R<bool> {
        delegate!(self, s => s.delete_show(owner_id, id))
    }
    async fn create_episode(&self, ep: &Episode) -> R<()> {
        delegate!(self, s => s.create_episode(ep))
    }
    async fn episodes(&self, show_id: &str) -> R<Vec<Episode>> {
        delegate!(self, s => s.episodes(show_id))
    }
    async fn episode(&self, show_id: &str, id: &str) -> R<Option<Episode>> {
        delegate!(self, s => s.episode(show_id, id))
    }
    async fn update_episode(&self, ep: &Episode) -> R<bool> {
        delegate!(self, s => s.update_episode(ep))
    }
    async fn delete_episode(&self, show_id: &str, id: &str) -> R<bool> {
        delegate!(self, s => s.delete_episode(show_id, id))
    }
    async fn feed_episodes(&self, show_id: &str, now: Millis, limit: i64) -> R<Vec<Episode>> {
        delegate!(self, s => s.feed_episodes(show_id, now, limit))
    }
    async fn add_marker(&self, marker: &Marker) -> R<()> {
        delegate!(self, s => s.add_marker(marker))
    }
    async fn markers(&self, recording_id: &str) -> R<Vec<Marker>> {
        delegate!(self, s => s.markers(recording_id))
    }
    async fn delete_recording(&self, owner_id: &str, id: &str, now: Millis) -> R<bool> {
        delegate!(self, s => s.delete_recording(owner_id, id, now))
    }
}
