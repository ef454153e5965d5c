//! SQLite implementation of [`Store`], the embedded default.
//!
//! One database file in WAL mode with foreign keys on. Write transactions start with
//! `BEGIN IMMEDIATE` so they take the write lock up front and wait (busy timeout)
//! instead of failing on a lock upgrade.
//!
//! The small helpers at the end of this file (ids, clock, LIKE patterns, conflict
//! mapping) are shared with `postgres.rs`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::Recorded;
use super::{
    Capabilities, Device, Invitation, Job, JobChange, LibraryQuery, LibraryTrack, ListeningStats,
    Mail, Membership, Millis, NewDevice, NewUser, NodeRow, OutboxEvent, OutboxRow, OwnedCounts,
    Pairing, PlayCount, PlayRow, Presence, PresenceChange, R, Recording, RecordingChange,
    RefreshRecord, Role, Room, RoomSettings, Signup, Store, StoreError, SyncCounts, TrackMeta,
    User, apply_presence,
};

/// Connections of a file database. WAL lets readers run beside the one writer.
const POOL_SIZE: u32 = 8;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) a SQLite database.
    ///
    /// Accepts a URL (`sqlite://data/sc.db`, `sqlite:sc.db?mode=rwc`, `sqlite::memory:`)
    /// or a plain file path (`data/sc.db`; missing parent directories are created).
    /// An in-memory database gets a single, never-recycled connection so that it lives
    /// as long as the store. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url_or_path: &str) -> Result<Self, StoreError> {
        let in_memory = url_or_path.contains(":memory:") || url_or_path.contains("mode=memory");
        let options = if url_or_path.starts_with("sqlite:") || url_or_path == ":memory:" {
            SqliteConnectOptions::from_str(url_or_path)?
        } else {
            let path = std::path::Path::new(url_or_path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
            SqliteConnectOptions::new().filename(path)
        };
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(POOL_SIZE)
        };
        let pool = pool_options.connect_with(options).await?;
        Ok(SqliteStore { pool })
    }

    /// The underlying pool (health checks, closing in tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn user_row(r: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        password_hash: r.try_get("password_hash")?,
        role: parse_role(r.try_get("role")?)?,
        created_at: r.try_get("created_at")?,
        email_verified_at: r.try_get("email_verified_at")?,
    })
}

fn refresh_row(r: &SqliteRow) -> Result<RefreshRecord, sqlx::Error> {
    Ok(RefreshRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        family_id: r.try_get("family_id")?,
        token_hash: r.try_get("token_hash")?,
        device_id: r.try_get("device_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn mail_row(r: &SqliteRow) -> Result<Mail, sqlx::Error> {
    Ok(Mail {
        id: r.try_get("id")?,
        to_addr: r.try_get("to_addr")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

fn device_row(r: &SqliteRow) -> Result<Device, sqlx::Error> {
    Ok(Device {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        capabilities: Capabilities {
            mic: r.try_get("cap_mic")?,
            camera: r.try_get("cap_camera")?,
            screen: r.try_get("cap_screen")?,
        },
        created_at: r.try_get("created_at")?,
        last_seen: r.try_get("last_seen")?,
        online: r.try_get("online")?,
        control_conn: r.try_get("control_conn")?,
    })
}

fn outbox_row(r: &SqliteRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        seq: r.try_get("seq")?,
        event: OutboxEvent {
            id: r.try_get("id")?,
            topic: r.try_get("topic")?,
            key: r.try_get("key")?,
            payload: r.try_get("payload")?,
            created_at: r.try_get("created_at")?,
        },
    })
}

async fn insert_outbox(
    conn: &mut sqlx::SqliteConnection,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    for e in events {
        sqlx::query(
            "INSERT INTO event_outbox (id, topic, key, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.topic)
        .bind(&e.key)
        .bind(&e.payload)
        .bind(e.created_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| conflict(e, "event id"))?;
    }
    Ok(())
}

fn pairing_row(r: &SqliteRow) -> Result<Pairing, sqlx::Error> {
    Ok(Pairing {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        code: r.try_get("code")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        attempts: r.try_get("attempts")?,
        claimed_at: r.try_get("claimed_at")?,
        device_id: r.try_get("device_id")?,
    })
}

fn job_row(r: &SqliteRow) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        owner_id: r.try_get("owner_id")?,
        recording_id: r.try_get("recording_id")?,
        spec: r.try_get("spec")?,
        status: r.try_get("status")?,
        stage: r.try_get("stage")?,
        percent: r.try_get("percent")?,
        attempts: r.try_get("attempts")?,
        worker_id: r.try_get("worker_id")?,
        lease_until: r.try_get("lease_until")?,
        last_error: r.try_get("last_error")?,
        result: r.try_get("result")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn node_row(r: &SqliteRow) -> Result<NodeRow, sqlx::Error> {
    let list = |column: &str| -> Result<Vec<String>, sqlx::Error> {
        let text: String = r.try_get(column)?;
        Ok(text
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect())
    };
    Ok(NodeRow {
        id: r.try_get("id")?,
        region: r.try_get("region")?,
        zone: r.try_get("zone")?,
        public_url: r.try_get("public_url")?,
        media_addrs: list("media_addrs")?,
        turn_urls: list("turn_urls")?,
        relay_addr: r.try_get("relay_addr")?,
        capacity: r.try_get("capacity")?,
        workers: r.try_get("workers")?,
        cpu_percent: r.try_get("cpu_percent")?,
        peers: r.try_get("peers")?,
        forwarded_bps: r.try_get("forwarded_bps")?,
        state: r.try_get("state")?,
        started_at: r.try_get("started_at")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
    })
}

fn recording_row(r: &SqliteRow) -> Result<Recording, sqlx::Error> {
    Ok(Recording {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        sfu_room: r.try_get("room_name")?,
        owner_id: r.try_get("owner_id")?,
        started_by: r.try_get("started_by")?,
        node_id: r.try_get("node_id")?,
        status: r.try_get("status")?,
        started_at: r.try_get("started_at")?,
        stopped_at: r.try_get("stopped_at")?,
        uploaded_at: r.try_get("uploaded_at")?,
        stop_reason: r.try_get("stop_reason")?,
        failure: r.try_get("failure")?,
        last_error: r.try_get("last_error")?,
        manifest: r.try_get("manifest")?,
        objects: r.try_get("objects")?,
        continues: r.try_get("continues")?,
    })
}

fn room_row(r: &SqliteRow) -> Result<Room, sqlx::Error> {
    Ok(Room {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        name: r.try_get("name")?,
        max_participants: r.try_get("max_participants")?,
        auto_record: r.try_get("auto_record")?,
        publish_policy: r.try_get("publish_policy")?,
        access: r.try_get("access")?,
        share_key: r.try_get("share_key")?,
        epoch: r.try_get("epoch")?,
        created_at: r.try_get("created_at")?,
    })
}

fn membership_row(r: &SqliteRow) -> Result<Membership, sqlx::Error> {
    Ok(Membership {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        email: r.try_get("email")?,
        user_id: r.try_get("user_id")?,
        status: r.try_get("status")?,
        invited_at: r.try_get("invited_at")?,
        responded_at: r.try_get("responded_at")?,
    })
}

fn invitation_row(r: &SqliteRow) -> Result<Invitation, sqlx::Error> {
    Ok(Invitation {
        membership: membership_row(r)?,
        room_name: r.try_get("room_name")?,
        owner_name: r.try_get("owner_name")?,
    })
}

fn track_meta_row(r: &SqliteRow) -> Result<TrackMeta, sqlx::Error> {
    Ok(TrackMeta {
        client_id: r.try_get("client_id")?,
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        album: r.try_get("album")?,
        duration_ms: r.try_get("duration_ms")?,
        codec: r.try_get("codec")?,
        size_bytes: r.try_get("size_bytes")?,
    })
}

fn track_row(r: &SqliteRow) -> Result<LibraryTrack, sqlx::Error> {
    Ok(LibraryTrack {
        device_id: r.try_get("device_id")?,
        meta: track_meta_row(r)?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn collect<T>(rows: Vec<SqliteRow>, f: fn(&SqliteRow) -> Result<T, sqlx::Error>) -> R<Vec<T>> {
    rows.iter()
        .map(|r| f(r).map_err(StoreError::from))
        .collect()
}

impl Store for SqliteStore {
    async fn migrate(&self) -> R<()> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    // ---- users ----

    async fn create_user(&self, new: NewUser) -> R<User> {
        let now = now_ms();
        let user = User {
            id: new_id(),
            email: new.email,
            display_name: new.display_name,
            password_hash: new.password_hash,
            role: new.role,
            created_at: now,
            email_verified_at: new.email_verified.then_some(now),
        };
        sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, role, created_at, \
             email_verified_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.created_at)
        .bind(user.email_verified_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "email"))?;
        Ok(user)
    }

    async fn user_by_email(&self, email: &str) -> R<Option<User>> {
        let row = sqlx::query(
            "SELECT id, email, display_name, password_hash, role, created_at, email_verified_at \
             FROM users WHERE email = ?",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_row).transpose()?)
    }

    async fn user_by_id(&self, id: &str) -> R<Option<User>> {
        let row = sqlx::query(
            "SELECT id, email, display_name, password_hash, role, created_at, email_verified_at \
             FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_row).transpose()?)
    }

    async fn list_users(&self) -> R<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, email, display_name, password_hash, role, created_at, email_verified_at \
             FROM users ORDER BY created_at, email",
        )
        .fetch_all(&self.pool)
        .await?;
        collect(rows, user_row)
    }

    async fn count_users(&self) -> R<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    async fn set_password(&self, user_id: &str, hash: &str) -> R<()> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_role(&self, user_id: &str, role: Role) -> R<bool> {
        let done = sqlx::query("UPDATE users SET role = ? WHERE id = ?")
            .bind(role.as_str())
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- refresh tokens ----

    async fn insert_refresh(&self, rec: RefreshRecord) -> R<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, device_id, \
             created_at, expires_at, used_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rec.id)
        .bind(&rec.user_id)
        .bind(&rec.family_id)
        .bind(&rec.token_hash)
        .bind(&rec.device_id)
        .bind(rec.created_at)
        .bind(rec.expires_at)
        .bind(rec.used_at)
        .bind(rec.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "refresh token"))?;
        Ok(())
    }

    async fn refresh_by_hash(&self, hash: &str) -> R<Option<RefreshRecord>> {
        let row = sqlx::query(
            "SELECT id, user_id, family_id, token_hash, device_id, created_at, expires_at, \
             used_at, revoked_at FROM refresh_tokens WHERE token_hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(refresh_row).transpose()?)
    }

    async fn mark_refresh_used(&self, id: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ? \
             WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_family(&self, family_id: &str, now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_tokens(&self, user_id: &str, now: Millis) -> R<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET sessions_ended_at = ? WHERE id = ?")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn sessions_ended_at(&self, user_id: &str) -> R<Option<Millis>> {
        let at: Option<Option<Millis>> =
            sqlx::query_scalar("SELECT sessions_ended_at FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.flatten())
    }

    async fn revoke_device_tokens(&self, device_id: &str, now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    // ---- password reset ----

    async fn insert_password_reset(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> R<()> {
        sqlx::query(
            "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "password reset token"))?;
        Ok(())
    }

    async fn take_password_reset(&self, token_hash: &str, now: Millis) -> R<Option<String>> {
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE password_resets SET used_at = ? \
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? \
             RETURNING user_id",
        )
        .bind(now)
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(user_id)
    }

    // ---- mail outbox ----

    async fn insert_email_verification(
        &self,
        user_id: &str,
        email: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> R<()> {
        sqlx::query(
            "INSERT INTO email_verifications (token_hash, user_id, email, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(email)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "email verification token"))?;
        Ok(())
    }

    async fn take_email_verification(&self, token_hash: &str, now: Millis) -> R<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let taken: Option<(String, String)> = sqlx::query_as(
            "UPDATE email_verifications SET used_at = ? \
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? \
             RETURNING user_id, email",
        )
        .bind(now)
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, email)) = taken else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?) \
             WHERE id = ? AND email = ?",
        )
        .bind(now)
        .bind(&user_id)
        .bind(&email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((done.rows_affected() == 1).then_some(user_id))
    }

    async fn insert_signup(&self, signup: Signup) -> R<()> {
        sqlx::query("DELETE FROM signups WHERE expires_at <= ?")
            .bind(signup.created_at)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO signups (token_hash, email, display_name, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&signup.token_hash)
        .bind(&signup.email)
        .bind(&signup.display_name)
        .bind(signup.created_at)
        .bind(signup.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "sign-up token"))?;
        Ok(())
    }

    async fn signup_by_token(&self, token_hash: &str, now: Millis) -> R<Option<Signup>> {
        let row: Option<(String, String, String, Millis, Millis)> = sqlx::query_as(
            "SELECT token_hash, email, display_name, created_at, expires_at FROM signups \
             WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(token_hash, email, display_name, created_at, expires_at)| Signup {
                token_hash,
                email,
                display_name,
                created_at,
                expires_at,
            },
        ))
    }

    async fn delete_signups(&self, email: &str) -> R<u64> {
        let done = sqlx::query("DELETE FROM signups WHERE email = ?")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_mail(&self, mail: Mail) -> R<()> {
        sqlx::query(
            "INSERT INTO mail_outbox (id, to_addr, subject, body, created_at, sent_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&mail.id)
        .bind(&mail.to_addr)
        .bind(&mail.subject)
        .bind(&mail.body)
        .bind(mail.created_at)
        .bind(mail.sent_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "mail id"))?;
        Ok(())
    }

    async fn list_mail(&self, limit: i64) -> R<Vec<Mail>> {
        let rows = sqlx::query(
            "SELECT id, to_addr, subject, body, created_at, sent_at FROM mail_outbox \
             ORDER BY created_at DESC, rowid DESC LIMIT ?",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        collect(rows, mail_row)
    }

    async fn mark_mail_sent(&self, id: &str, now: Millis) -> R<()> {
        sqlx::query("UPDATE mail_outbox SET body = '', sent_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unsent_mail(&self, limit: i64) -> R<Vec<Mail>> {
        let rows = sqlx::query(
            "SELECT id, to_addr, subject, body, created_at, sent_at FROM mail_outbox \
             WHERE sent_at IS NULL ORDER BY created_at, rowid LIMIT ?",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        collect(rows, mail_row)
    }

    // ---- devices ----

    async fn create_device(&self, new: NewDevice, now: Millis) -> R<Device> {
        let device = Device {
            id: new_id(),
            user_id: new.user_id,
            name: new.name,
            kind: new.kind,
            capabilities: new.capabilities,
            created_at: now,
            last_seen: None,
            online: false,
            control_conn: None,
        };
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, kind, cap_mic, cap_camera, cap_screen, \
             created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        )
        .bind(&device.id)
        .bind(&device.user_id)
        .bind(&device.name)
        .bind(&device.kind)
        .bind(device.capabilities.mic)
        .bind(device.capabilities.camera)
        .bind(device.capabilities.screen)
        .bind(device.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "device id"))?;
        Ok(device)
    }

    async fn list_devices(&self, user_id: &str) -> R<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE user_id = ? ORDER BY created_at, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, device_row)
    }

    async fn device(&self, user_id: &str, id: &str) -> R<Option<Device>> {
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE user_id = ? AND id = ?",
        )
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    async fn device_by_id(&self, id: &str) -> R<Option<Device>> {
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    async fn rename_device(&self, user_id: &str, id: &str, name: &str) -> R<bool> {
        let done = sqlx::query("UPDATE devices SET name = ? WHERE user_id = ? AND id = ?")
            .bind(name)
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_device(&self, user_id: &str, id: &str) -> R<bool> {
        // The foreign keys cascade too; the explicit delete keeps the contract even on a
        // connection opened without `PRAGMA foreign_keys`.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM library_tracks WHERE user_id = ? AND device_id = ?")
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM devices WHERE user_id = ? AND id = ?")
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_presence<F>(
        &self,
        user_id: Option<&str>,
        id: &str,
        p: &Presence,
        now: Millis,
        events: F,
    ) -> R<Option<PresenceChange>>
    where
        F: FnOnce(&PresenceChange) -> Vec<OutboxEvent> + Send,
    {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE id = ? AND (? IS NULL OR user_id = ?)",
        )
        .bind(id)
        .bind(user_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let old = device_row(&row)?;
        let new = apply_presence(&old.presence(), p, now);
        sqlx::query(
            "UPDATE devices SET online = ?, control_conn = ?, last_seen = ?, cap_mic = ?, \
             cap_camera = ?, cap_screen = ? WHERE id = ?",
        )
        .bind(new.online)
        .bind(&new.control_conn)
        .bind(new.last_seen)
        .bind(new.capabilities.mic)
        .bind(new.capabilities.camera)
        .bind(new.capabilities.screen)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let change = PresenceChange {
            was_online: old.online,
            old_capabilities: old.capabilities,
            device: Device {
                online: new.online,
                control_conn: new.control_conn,
                last_seen: new.last_seen,
                capabilities: new.capabilities,
                ..old
            },
        };
        insert_outbox(&mut tx, &events(&change)).await?;
        tx.commit().await?;
        Ok(Some(change))
    }

    async fn stale_online_devices(&self, before: Millis, limit: i64) -> R<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT user_id, id FROM devices WHERE online = 1 \
             AND (last_seen IS NULL OR last_seen < ?) LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("user_id")?, r.try_get("id")?)))
            .collect()
    }

    async fn record_now_playing(
        &self,
        user_id: &str,
        device_id: &str,
        state_json: &str,
        now: Millis,
        event: impl FnOnce(i64) -> OutboxEvent + Send,
    ) -> R<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seq: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO now_playing (device_id, user_id, state, updated_at, seq) \
             SELECT id, user_id, ?, ?, 1 FROM devices WHERE id = ? AND user_id = ? \
             ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, \
             updated_at = excluded.updated_at, seq = now_playing.seq + 1 \
             RETURNING seq",
        )
        .bind(state_json)
        .bind(now)
        .bind(device_id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let Some(&seq) = seq.first() else {
            return Ok(false);
        };
        insert_outbox(&mut tx, std::slice::from_ref(&event(seq))).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn now_playing(&self, user_id: &str) -> R<Vec<(String, String, Millis)>> {
        let rows = sqlx::query(
            "SELECT device_id, state, updated_at FROM now_playing WHERE user_id = ? \
             ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("device_id")?,
                    r.try_get("state")?,
                    r.try_get("updated_at")?,
                ))
            })
            .collect()
    }

    // ---- events outbox ----

    async fn insert_events(&self, events: &[OutboxEvent]) -> R<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_outbox(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unpublished_events(&self, limit: i64) -> R<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT seq, id, topic, key, payload, created_at FROM event_outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, outbox_row)
    }

    async fn mark_events_published(&self, seqs: &[i64], now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE event_outbox SET published_at = ? \
             WHERE published_at IS NULL AND seq IN (SELECT value FROM json_each(?))",
        )
        .bind(now)
        .bind(json(&seqs)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn count_unpublished_events(&self) -> R<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn purge_published_events(&self, before: Millis) -> R<u64> {
        let done = sqlx::query(
            "DELETE FROM event_outbox WHERE published_at IS NOT NULL AND published_at < ?",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> R<bool> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- pairing ----

    async fn create_pairing(&self, p: Pairing) -> R<()> {
        sqlx::query(
            "INSERT INTO pairings (id, user_id, code, created_at, expires_at, attempts, \
             claimed_at, device_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.id)
        .bind(&p.user_id)
        .bind(&p.code)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(p.attempts)
        .bind(p.claimed_at)
        .bind(&p.device_id)
        .execute(&self.pool)
        .await
        .map_err(pairing_conflict)?;
        Ok(())
    }

    async fn pairing_by_code(&self, code: &str) -> R<Option<Pairing>> {
        let row = sqlx::query(
            "SELECT id, user_id, code, created_at, expires_at, attempts, claimed_at, device_id \
             FROM pairings WHERE code = ?",
        )
        .bind(code)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(pairing_row).transpose()?)
    }

    async fn pairing(&self, user_id: &str, id: &str) -> R<Option<Pairing>> {
        let row = sqlx::query(
            "SELECT id, user_id, code, created_at, expires_at, attempts, claimed_at, device_id \
             FROM pairings WHERE user_id = ? AND id = ?",
        )
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(pairing_row).transpose()?)
    }

    async fn owned_counts(&self, user_id: &str, now: Millis) -> R<OwnedCounts> {
        let (rooms, devices, open_pairings, jobs_in_flight, upload_bytes): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
                 (SELECT COUNT(*) FROM rooms WHERE owner_id = ?1 AND name NOT LIKE 'device-%'), \
                 (SELECT COUNT(*) FROM devices WHERE user_id = ?1), \
                 (SELECT COUNT(*) FROM pairings \
                   WHERE user_id = ?1 AND claimed_at IS NULL AND expires_at > ?2), \
                 (SELECT COUNT(*) FROM transcode_jobs \
                   WHERE owner_id = ?1 AND status IN ('queued', 'running', 'retrying')), \
                 (SELECT CAST(COALESCE(SUM(CASE WHEN json_valid(spec) THEN \
                      CASE WHEN json_type(spec, '$.source.bytes') = 'integer' \
                      THEN json_extract(spec, '$.source.bytes') ELSE 0 END ELSE 0 END), 0) AS INTEGER) \
                    FROM transcode_jobs WHERE owner_id = ?1 AND kind = 'transcode' \
                   AND status <> 'deleted')",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(OwnedCounts {
            rooms,
            devices,
            open_pairings,
            jobs_in_flight,
            upload_bytes,
        })
    }

    async fn count_wrong_pairing_guess(&self, now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE pairings SET attempts = attempts + 1 \
             WHERE claimed_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn claim_pairing(&self, id: &str, device_id: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE pairings SET claimed_at = ?, device_id = ? \
             WHERE id = ? AND claimed_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(device_id)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- rooms ----

    async fn create_recording(&self, rec: &Recording, event: OutboxEvent) -> R<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO recordings (id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rec.id)
        .bind(&rec.room_id)
        .bind(&rec.sfu_room)
        .bind(&rec.owner_id)
        .bind(&rec.started_by)
        .bind(&rec.node_id)
        .bind(&rec.status)
        .bind(rec.started_at)
        .bind(rec.stopped_at)
        .bind(rec.uploaded_at)
        .bind(&rec.stop_reason)
        .bind(&rec.failure)
        .bind(&rec.last_error)
        .bind(&rec.manifest)
        .bind(&rec.objects)
        .bind(&rec.continues)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, "active recording of this room"))?;
        insert_outbox(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn change_recording(
        &self,
        id: &str,
        from: &[&str],
        change: RecordingChange,
        events: Vec<OutboxEvent>,
    ) -> R<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE recordings SET status = ?, \
             stopped_at = COALESCE(?, stopped_at), \
             uploaded_at = COALESCE(?, uploaded_at), \
             stop_reason = COALESCE(?, stop_reason), \
             failure = COALESCE(?, failure), \
             last_error = COALESCE(?, last_error), \
             manifest = COALESCE(?, manifest), \
             objects = COALESCE(?, objects) \
             WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(&change.status)
        .bind(change.stopped_at)
        .bind(change.uploaded_at)
        .bind(&change.stop_reason)
        .bind(&change.failure)
        .bind(&change.last_error)
        .bind(&change.manifest)
        .bind(&change.objects)
        .bind(id)
        .bind(json(&from)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, "active recording of this room"))?
        .rows_affected();
        if done != 1 {
            return Ok(false);
        }
        insert_outbox(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn recording(&self, id: &str) -> R<Option<Recording>> {
        let row = sqlx::query("SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings WHERE id = ?")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        Ok(row.as_ref().map(recording_row).transpose()?)
    }

    async fn room_recordings(&self, room_id: &str) -> R<Vec<Recording>> {
        let rows = sqlx::query(
            "SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings \
             WHERE room_id = ? ORDER BY started_at DESC, id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, recording_row)
    }

    async fn node_recordings(&self, node_id: &str, status: &str) -> R<Vec<Recording>> {
        let rows = sqlx::query(
            "SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings \
             WHERE node_id = ? AND status = ? ORDER BY started_at",
        )
        .bind(node_id)
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, recording_row)
    }

    async fn recordings_handed_over_to(&self, node_id: &str) -> R<Vec<Recording>> {
        let rows = sqlx::query(
            "SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings \
             WHERE node_id = ? AND status = 'recording' AND continues IS NOT NULL ORDER BY started_at",
        )
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, recording_row)
    }

    // ---- cluster ----

    async fn beat_node(&self, n: &NodeRow) -> R<()> {
        sqlx::query(
            "INSERT INTO nodes (id, region, zone, public_url, media_addrs, turn_urls, relay_addr, capacity, workers, cpu_percent, peers, forwarded_bps, state, started_at, heartbeat_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET region = excluded.region, zone = excluded.zone, \
             public_url = excluded.public_url, media_addrs = excluded.media_addrs, \
             turn_urls = excluded.turn_urls, relay_addr = excluded.relay_addr, \
             capacity = excluded.capacity, workers = excluded.workers, \
             cpu_percent = excluded.cpu_percent, peers = excluded.peers, \
             forwarded_bps = excluded.forwarded_bps, \
             state = CASE WHEN nodes.state = 'draining' AND nodes.started_at = excluded.started_at \
             THEN 'draining' ELSE excluded.state END, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&n.id)
        .bind(&n.region)
        .bind(&n.zone)
        .bind(&n.public_url)
        .bind(n.media_addrs.join(","))
        .bind(n.turn_urls.join(","))
        .bind(&n.relay_addr)
        .bind(n.capacity)
        .bind(n.workers)
        .bind(n.cpu_percent)
        .bind(n.peers)
        .bind(n.forwarded_bps)
        .bind(&n.state)
        .bind(n.started_at)
        .bind(n.heartbeat_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn nodes(&self) -> R<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT id, region, zone, public_url, media_addrs, turn_urls, relay_addr, capacity, workers, cpu_percent, peers, forwarded_bps, state, started_at, heartbeat_at FROM nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        collect(rows, node_row)
    }

    async fn drain_node(&self, id: &str) -> R<bool> {
        let done = sqlx::query("UPDATE nodes SET state = 'draining' WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_node(&self, id: &str) -> R<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM room_homes WHERE node_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_nodes(&self, before: Millis) -> R<u64> {
        let done = sqlx::query("DELETE FROM nodes WHERE heartbeat_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        // Their rooms' homes went with them (a live placement replaces such a home
        // anyway; this keeps rooms never used again from piling up).
        sqlx::query("DELETE FROM room_homes WHERE node_id NOT IN (SELECT id FROM nodes)")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn room_home(&self, room_id: &str) -> R<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT node_id FROM room_homes WHERE room_id = ?")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn place_room(
        &self,
        room_id: &str,
        node_id: &str,
        now: Millis,
        alive_since: Millis,
    ) -> R<String> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO room_homes (room_id, node_id, placed_at) VALUES (?, ?, ?) \
             ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, placed_at = excluded.placed_at \
             WHERE room_homes.node_id NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= ?)",
        )
        .bind(room_id)
        .bind(node_id)
        .bind(now)
        .bind(alive_since)
        .execute(&mut *tx)
        .await?;
        let home: String = sqlx::query_scalar("SELECT node_id FROM room_homes WHERE room_id = ?")
            .bind(room_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(home)
    }

    async fn node_rooms(&self, node_id: &str) -> R<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT room_id FROM room_homes WHERE node_id = ? ORDER BY room_id")
                .bind(node_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn move_room(&self, room_id: &str, from: &str, to: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE room_homes SET node_id = ?, placed_at = ? WHERE room_id = ? AND node_id = ?",
        )
        .bind(to)
        .bind(now)
        .bind(room_id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_room(&self, room_id: &str, node_id: &str) -> R<()> {
        sqlx::query("DELETE FROM room_homes WHERE room_id = ? AND node_id = ?")
            .bind(room_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- transcode jobs ----

    async fn create_job(&self, job: &Job, events: Vec<OutboxEvent>) -> R<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "INSERT INTO transcode_jobs (id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(&job.owner_id)
        .bind(&job.recording_id)
        .bind(&job.spec)
        .bind(&job.status)
        .bind(&job.stage)
        .bind(job.percent)
        .bind(job.attempts)
        .bind(&job.worker_id)
        .bind(job.lease_until)
        .bind(&job.last_error)
        .bind(&job.result)
        .bind(job.created_at)
        .bind(job.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(false);
        }
        insert_outbox(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_job(
        &self,
        id: &str,
        worker_id: &str,
        now: Millis,
        lease_until: Millis,
    ) -> R<Option<Job>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE transcode_jobs SET status = 'running', attempts = attempts + 1, \
             worker_id = ?, lease_until = ?, updated_at = ? \
             WHERE id = ? AND (status IN ('queued', 'retrying') \
             OR (status = 'running' AND (lease_until IS NULL OR lease_until < ? OR worker_id = ?)))",
        )
        .bind(worker_id)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(now)
        .bind(worker_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let job = job_row(&row)?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn change_job(
        &self,
        id: &str,
        worker_id: &str,
        change: JobChange,
        now: Millis,
        events: Vec<OutboxEvent>,
    ) -> R<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE transcode_jobs SET status = ?, \
             stage = COALESCE(?, stage), \
             percent = COALESCE(?, percent), \
             lease_until = COALESCE(?, lease_until), \
             last_error = COALESCE(?, last_error), \
             result = COALESCE(?, result), \
             updated_at = ? \
             WHERE id = ? AND status = 'running' AND worker_id = ?",
        )
        .bind(&change.status)
        .bind(&change.stage)
        .bind(change.percent)
        .bind(change.lease_until)
        .bind(&change.last_error)
        .bind(&change.result)
        .bind(now)
        .bind(id)
        .bind(worker_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(false);
        }
        insert_outbox(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn job(&self, id: &str) -> R<Option<Job>> {
        let row = sqlx::query("SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_row).transpose()?)
    }

    async fn owner_jobs(&self, owner_id: &str, kind: &str, limit: i64) -> R<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE owner_id = ? AND kind = ? AND status <> 'deleted' ORDER BY created_at DESC, id LIMIT ?",
        )
        .bind(owner_id)
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, job_row)
    }

    async fn delete_finished_job(&self, owner_id: &str, id: &str) -> R<bool> {
        let done = sqlx::query(
            "UPDATE transcode_jobs SET status = 'deleted', updated_at = ? \
             WHERE id = ? AND owner_id = ? AND status IN ('completed', 'failed')",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recording_jobs(&self, recording_id: &str) -> R<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE recording_id = ? ORDER BY created_at DESC, id",
        )
        .bind(recording_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, job_row)
    }

    async fn open_jobs(&self, limit: i64) -> R<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE status IN ('queued', 'running', 'retrying') ORDER BY created_at, id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, job_row)
    }

    async fn create_room(
        &self,
        owner_id: &str,
        name: &str,
        s: RoomSettings,
        now: Millis,
    ) -> R<Room> {
        let room = Room {
            id: new_id(),
            owner_id: owner_id.to_owned(),
            name: name.to_owned(),
            max_participants: s.max_participants,
            auto_record: s.auto_record,
            publish_policy: s.publish_policy,
            access: s.access,
            share_key: s.share_key,
            epoch: 0,
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO rooms (id, owner_id, name, max_participants, auto_record, \
             publish_policy, access, share_key, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&room.id)
        .bind(&room.owner_id)
        .bind(&room.name)
        .bind(room.max_participants)
        .bind(room.auto_record)
        .bind(&room.publish_policy)
        .bind(&room.access)
        .bind(&room.share_key)
        .bind(room.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "room name"))?;
        Ok(room)
    }

    async fn list_rooms(&self, owner_id: &str) -> R<Vec<Room>> {
        let rows = sqlx::query(
            "SELECT id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at FROM rooms WHERE owner_id = ? ORDER BY name",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, room_row)
    }

    async fn room_by_owner_name(&self, owner_id: &str, name: &str) -> R<Option<Room>> {
        let row = sqlx::query(
            "SELECT id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at FROM rooms WHERE owner_id = ? AND name = ?",
        )
        .bind(owner_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn room_by_id(&self, id: &str) -> R<Option<Room>> {
        let row = sqlx::query(
            "SELECT id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at FROM rooms WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn update_room(&self, owner_id: &str, name: &str, s: RoomSettings) -> R<Option<Room>> {
        let row = sqlx::query(
            "UPDATE rooms SET max_participants = ?, auto_record = ?, publish_policy = ?, \
             access = ?, share_key = ? WHERE owner_id = ? AND name = ? \
             RETURNING id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at",
        )
        .bind(s.max_participants)
        .bind(s.auto_record)
        .bind(&s.publish_policy)
        .bind(&s.access)
        .bind(&s.share_key)
        .bind(owner_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn delete_room(&self, owner_id: &str, name: &str) -> R<bool> {
        let done = sqlx::query("DELETE FROM rooms WHERE owner_id = ? AND name = ?")
            .bind(owner_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn bump_room_epoch(&self, room_id: &str, why: &str) -> R<i64> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE rooms SET epoch = epoch + 1, revoked_why = ? WHERE id = ? RETURNING epoch",
        )
        .bind(why)
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch.unwrap_or(0))
    }

    async fn room_revocations(&self, room_ids: &[String]) -> R<Vec<(String, i64, String)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(room_ids).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_as(
            "SELECT id, epoch, revoked_why FROM rooms \
             WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- room members ----

    async fn invite_member(&self, room_id: &str, email: &str, now: Millis) -> R<Membership> {
        let row = sqlx::query(
            "INSERT INTO room_members (id, room_id, email, status, invited_at) \
             VALUES (?, ?, ?, 'invited', ?) \
             ON CONFLICT (room_id, email) DO UPDATE SET \
               status = CASE WHEN room_members.status = 'declined' THEN 'invited' ELSE room_members.status END, \
               invited_at = CASE WHEN room_members.status = 'declined' THEN excluded.invited_at ELSE room_members.invited_at END, \
               responded_at = CASE WHEN room_members.status = 'declined' THEN NULL ELSE room_members.responded_at END \
             RETURNING id, room_id, email, user_id, status, invited_at, responded_at",
        )
        .bind(new_id())
        .bind(room_id)
        .bind(email)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(membership_row(&row)?)
    }

    async fn room_members(&self, room_id: &str) -> R<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT id, room_id, email, user_id, status, invited_at, responded_at FROM room_members WHERE room_id = ? ORDER BY email",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, membership_row)
    }

    async fn remove_member(&self, room_id: &str, email: &str) -> R<bool> {
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = ? AND email = ?")
            .bind(room_id)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn invitations(&self, email: &str) -> R<Vec<Invitation>> {
        let rows = sqlx::query(
            "SELECT m.id, m.room_id, m.email, m.user_id, m.status, m.invited_at, m.responded_at, \
             r.name AS room_name, u.display_name AS owner_name \
             FROM room_members m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = r.owner_id \
             WHERE m.email = ? ORDER BY m.invited_at DESC, m.id",
        )
        .bind(email)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, invitation_row)
    }

    async fn answer_invitation(
        &self,
        id: &str,
        email: &str,
        user_id: &str,
        accept: bool,
        now: Millis,
    ) -> R<Option<Membership>> {
        let row = sqlx::query(
            "UPDATE room_members SET status = ?, user_id = ?, responded_at = ? \
             WHERE id = ? AND email = ? RETURNING id, room_id, email, user_id, status, invited_at, responded_at",
        )
        .bind(if accept { "accepted" } else { "declined" })
        .bind(accept.then_some(user_id))
        .bind(now)
        .bind(id)
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(membership_row).transpose()?)
    }

    async fn is_member(&self, room_id: &str, user_id: &str) -> R<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM room_members \
             WHERE room_id = ? AND user_id = ? AND status = 'accepted'",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    // ---- library ----

    async fn upsert_tracks(
        &self,
        user_id: &str,
        device_id: &str,
        tracks: &[TrackMeta],
        now: Millis,
    ) -> R<SyncCounts> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let owned: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM devices WHERE id = ? AND user_id = ?")
                .bind(device_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if owned.is_none() {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        if tracks.is_empty() {
            tx.commit().await?;
            return Ok(SyncCounts::default());
        }
        // One read of the batch's tracks that are already stored, the decision in
        // memory, one write of everything new or changed: a few statements per sync
        // instead of two per track. JSON arrays keep the SQL fixed (no parameter limit).
        let ids = json(&tracks.iter().map(|t| &t.client_id).collect::<Vec<_>>())?;
        let rows = sqlx::query(
            "SELECT client_id, title, artist, album, duration_ms, codec, size_bytes \
             FROM library_tracks \
             WHERE device_id = ?1 AND client_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(device_id)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .iter()
            .map(|r| track_meta_row(r).map(|m| (m.client_id.clone(), m)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        let (counts, writes) = plan_upsert(&stored, tracks);
        if !writes.is_empty() {
            let rows = json(
                &writes
                    .iter()
                    .map(|t| {
                        (
                            &t.client_id,
                            &t.title,
                            &t.artist,
                            &t.album,
                            t.duration_ms,
                            &t.codec,
                            t.size_bytes,
                            fold(&t.title),
                            fold(&t.artist),
                            fold(&t.album),
                        )
                    })
                    .collect::<Vec<_>>(),
            )?;
            sqlx::query(
                "INSERT INTO library_tracks (device_id, client_id, user_id, title, artist, \
                 album, duration_ms, codec, size_bytes, title_lc, artist_lc, album_lc, \
                 updated_at) \
                 SELECT ?1, json_extract(value, '$[0]'), ?2, json_extract(value, '$[1]'), \
                 json_extract(value, '$[2]'), json_extract(value, '$[3]'), \
                 json_extract(value, '$[4]'), json_extract(value, '$[5]'), \
                 json_extract(value, '$[6]'), json_extract(value, '$[7]'), \
                 json_extract(value, '$[8]'), json_extract(value, '$[9]'), ?3 \
                 FROM json_each(?4) WHERE true \
                 ON CONFLICT (device_id, client_id) DO UPDATE SET title = excluded.title, \
                 artist = excluded.artist, album = excluded.album, \
                 duration_ms = excluded.duration_ms, codec = excluded.codec, \
                 size_bytes = excluded.size_bytes, title_lc = excluded.title_lc, \
                 artist_lc = excluded.artist_lc, album_lc = excluded.album_lc, \
                 updated_at = excluded.updated_at",
            )
            .bind(device_id)
            .bind(user_id)
            .bind(now)
            .bind(rows)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(counts)
    }

    async fn delete_tracks(&self, user_id: &str, device_id: &str, client_ids: &[String]) -> R<u64> {
        if client_ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut deleted = 0;
        for client_id in client_ids {
            let done = sqlx::query(
                "DELETE FROM library_tracks WHERE user_id = ? AND device_id = ? AND client_id = ?",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
            deleted += done.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn list_tracks(&self, user_id: &str, q: &LibraryQuery) -> R<Vec<LibraryTrack>> {
        let (limit, offset) = page(q);
        let rows = sqlx::query(
            r"SELECT device_id, client_id, title, artist, album, duration_ms, codec, size_bytes,
                     updated_at
              FROM library_tracks
              WHERE user_id = ?1
                AND (?2 IS NULL OR device_id = ?2)
                AND (?3 IS NULL
                     OR title_lc LIKE ?3 ESCAPE '\'
                     OR artist_lc LIKE ?3 ESCAPE '\'
                     OR album_lc LIKE ?3 ESCAPE '\')
              ORDER BY artist_lc, album_lc, title_lc, artist, album, title, client_id
              LIMIT ?4 OFFSET ?5",
        )
        .bind(user_id)
        .bind(q.device_id.as_deref())
        .bind(q.q.as_deref().map(like_pattern))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, track_row)
    }

    async fn listening_cursor(&self, device_id: &str) -> R<Option<(String, i64)>> {
        let row = sqlx::query("SELECT cursor, version FROM listening_cursors WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("cursor")?, r.try_get("version")?)),
            None => None,
        })
    }

    async fn record_listening(
        &self,
        user_id: &str,
        device_id: &str,
        cursor: &str,
        version: Option<i64>,
        plays: &[PlayRow],
        now: Millis,
    ) -> R<Recorded> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = match version {
            None => sqlx::query(
                "INSERT INTO listening_cursors (device_id, user_id, cursor, version, updated_at) \
                 SELECT id, user_id, ?, 1, ? FROM devices WHERE id = ? AND user_id = ? \
                 ON CONFLICT (device_id) DO NOTHING",
            )
            .bind(cursor)
            .bind(now)
            .bind(device_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?,
            Some(v) => sqlx::query(
                "UPDATE listening_cursors SET cursor = ?, version = version + 1, updated_at = ? \
                 WHERE device_id = ? AND user_id = ? AND version = ?",
            )
            .bind(cursor)
            .bind(now)
            .bind(device_id)
            .bind(user_id)
            .bind(v)
            .execute(&mut *tx)
            .await?,
        };
        if done.rows_affected() == 0 {
            let owned: Vec<i64> =
                sqlx::query_scalar("SELECT 1 FROM devices WHERE id = ? AND user_id = ?")
                    .bind(device_id)
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await?;
            return Ok(if owned.is_empty() {
                Recorded::NotOwned
            } else {
                Recorded::Stale
            });
        }
        for p in plays {
            let key = super::track_key(&p.title, &p.artist, &p.album);
            sqlx::query(
                "INSERT INTO play_tracks (user_id, track_key, title, artist, album, track_id) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, track_key) DO NOTHING",
            )
            .bind(user_id)
            .bind(key)
            .bind(&p.title)
            .bind(&p.artist)
            .bind(&p.album)
            .bind(&p.track_id)
            .execute(&mut *tx)
            .await?;
            // Written again only when it listened longer: an unchanged row stays put.
            sqlx::query(
                "INSERT INTO plays (id, user_id, device_id, track_key, track_id, title, artist, \
                 album, duration_ms, started_at, listened_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET listened_ms = excluded.listened_ms \
                 WHERE excluded.listened_ms > plays.listened_ms",
            )
            .bind(&p.id)
            .bind(user_id)
            .bind(device_id)
            .bind(key)
            .bind(&p.track_id)
            .bind(&p.title)
            .bind(&p.artist)
            .bind(&p.album)
            .bind(p.duration_ms)
            .bind(p.started_at)
            .bind(p.listened_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Recorded::Stored)
    }

    async fn listening_stats(&self, user_id: &str, since: Millis, limit: i64) -> R<ListeningStats> {
        let rows = sqlx::query(LISTENING_STATS_SQL)
            .bind(user_id)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut stats = ListeningStats::default();
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            stats.push(&kind, play_count_row(r)?);
        }
        Ok(stats)
    }

    async fn recent_plays(
        &self,
        user_id: &str,
        before: (Millis, &str),
        limit: i64,
    ) -> R<Vec<PlayRow>> {
        let rows = sqlx::query(
            "SELECT id, device_id, track_id, title, artist, album, duration_ms, started_at, \
             listened_ms FROM plays WHERE user_id = ?1 \
             AND (started_at < ?2 OR (started_at = ?2 AND id < ?3)) \
             ORDER BY started_at DESC, id DESC LIMIT ?4",
        )
        .bind(user_id)
        .bind(before.0)
        .bind(before.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, play_row)
    }
}

/// A user's listening statistics (`Store::listening_stats`; parameters: user, since,
/// limit). The user's tracks in key order, each one's plays of the period read from
/// the narrow index `plays_user_track`: the plays come grouped, with no sort (SQLite
/// has no hash aggregate, and sorting a year of plays cost most of the time; `CROSS
/// JOIN` and `INDEXED BY` keep the planner to that order whatever its statistics say). Artists,
/// albums and totals are grouped from the few thousand tracks. Public so the tests can
/// ask the planner how it runs.
pub const LISTENING_STATS_SQL: &str = r"WITH k AS MATERIALIZED (
        SELECT t.title, t.artist, t.album, t.track_id,
               count(*) AS plays, sum(p.listened_ms) AS ms
        FROM play_tracks t
        CROSS JOIN plays p INDEXED BY plays_user_track
             ON p.user_id = t.user_id AND p.track_key = t.track_key AND p.started_at >= ?2
        WHERE t.user_id = ?1
        GROUP BY t.track_key)
      SELECT * FROM (SELECT 'track' AS kind, title, artist, album, track_id, plays, ms
                     FROM k ORDER BY plays DESC, ms DESC, title, artist, album LIMIT ?3)
      UNION ALL
      SELECT * FROM (SELECT 'artist', '', artist, '', '', sum(plays), sum(ms)
                     FROM k WHERE artist <> '' GROUP BY artist
                     ORDER BY 6 DESC, 7 DESC, 3 LIMIT ?3)
      UNION ALL
      SELECT * FROM (SELECT 'album', '', artist, album, '', sum(plays), sum(ms)
                     FROM k WHERE album <> '' GROUP BY artist, album
                     ORDER BY 6 DESC, 7 DESC, 3, 4 LIMIT ?3)
      UNION ALL
      SELECT 'total', '', '', '', '', coalesce(sum(plays), 0), coalesce(sum(ms), 0)
      FROM k";

fn play_row(r: &SqliteRow) -> Result<PlayRow, sqlx::Error> {
    Ok(PlayRow {
        id: r.try_get("id")?,
        device_id: r.try_get("device_id")?,
        track_id: r.try_get("track_id")?,
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        album: r.try_get("album")?,
        duration_ms: r.try_get("duration_ms")?,
        started_at: r.try_get("started_at")?,
        listened_ms: r.try_get("listened_ms")?,
    })
}

fn play_count_row(r: &SqliteRow) -> Result<PlayCount, sqlx::Error> {
    Ok(PlayCount {
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        album: r.try_get("album")?,
        track_id: r.try_get("track_id")?,
        plays: r.try_get("plays")?,
        listened_ms: r.try_get("ms")?,
    })
}

// ---- helpers shared with postgres.rs ----

/// Milliseconds since the Unix epoch, for the few rows whose trait method takes no `now`.
pub(super) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(super) fn parse_role(s: String) -> Result<Role, sqlx::Error> {
    Role::parse(&s).ok_or_else(|| sqlx::Error::Decode(format!("unknown role {s:?}").into()))
}

/// Case folding used for the `*_lc` search columns and the search text (Unicode-aware,
/// unlike SQLite's `lower()`), identical on both backends.
pub(super) fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// `%<q>%` for `LIKE ... ESCAPE '\'`, with the query folded and `\`, `%`, `_` escaped.
pub(super) fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in fold(q).chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// How an upsert batch applies to what is stored, decided in memory so that both stores
/// need one read and one write per sync instead of two statements per track.
///
/// Entries are taken in order, each compared with the track's current state (as stored,
/// or as an earlier entry of the same batch left it): identical is unchanged, different
/// is updated, absent is inserted. Returns the counts and, for every track inserted or
/// updated at least once, its final version (in first-seen order, one per client_id).
pub(super) fn plan_upsert<'a>(
    stored: &HashMap<String, TrackMeta>,
    tracks: &'a [TrackMeta],
) -> (SyncCounts, Vec<&'a TrackMeta>) {
    let mut counts = SyncCounts::default();
    // client_id -> (latest version in the batch, written at least once)
    let mut latest: HashMap<&'a str, (&'a TrackMeta, bool)> = HashMap::new();
    let mut order: Vec<&'a str> = Vec::new();
    for t in tracks {
        let id = t.client_id.as_str();
        let current = match latest.get(id) {
            Some((m, _)) => Some(*m),
            None => stored.get(id),
        };
        let changed = match current {
            Some(old) if old == t => {
                counts.unchanged += 1;
                false
            }
            Some(_) => {
                counts.updated += 1;
                true
            }
            None => {
                counts.inserted += 1;
                true
            }
        };
        match latest.entry(id) {
            Entry::Occupied(mut e) => {
                let written = e.get().1 || changed;
                e.insert((t, written));
            }
            Entry::Vacant(e) => {
                e.insert((t, changed));
                order.push(id);
            }
        }
    }
    let writes = order
        .into_iter()
        .filter_map(|id| latest.get(id).filter(|(_, w)| *w).map(|(m, _)| *m))
        .collect();
    (counts, writes)
}

/// A value as JSON text, for `json_each(?)`.
fn json<T: serde::Serialize>(v: &T) -> R<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))
}

/// Limit and offset of a library query; negative values count as zero.
pub(super) fn page(q: &LibraryQuery) -> (i64, i64) {
    (q.limit.max(0), q.offset.max(0))
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Maps a unique violation to `Conflict(what)`, anything else to `Database`.
pub(super) fn conflict(e: sqlx::Error, what: &'static str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(what)
    } else {
        StoreError::Database(e)
    }
}

/// A clash on `pairings.code` is `Conflict("pairing code")` (the caller retries with a
/// new code); one on the caller-chosen id is `Conflict("pairing id")`.
pub(super) fn pairing_conflict(e: sqlx::Error) -> StoreError {
    let on_id = match &e {
        // PostgreSQL names the constraint; SQLite names the column in the message.
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint() == Some("pairings_pkey") || db.message().contains("pairings.id")
        }
        _ => false,
    };
    conflict(e, if on_id { "pairing id" } else { "pairing code" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, title: &str) -> TrackMeta {
        TrackMeta {
            client_id: id.into(),
            title: title.into(),
            artist: "A".into(),
            album: "B".into(),
            duration_ms: 1000,
            codec: "aac".into(),
            size_bytes: 10,
        }
    }

    fn counts(inserted: u64, updated: u64, unchanged: u64) -> SyncCounts {
        SyncCounts {
            inserted,
            updated,
            unchanged,
            deleted: 0,
        }
    }

    #[test]
    fn plan_upsert_is_the_sequential_outcome() {
        let stored: HashMap<String, TrackMeta> = [t("a", "A"), t("b", "B")]
            .into_iter()
            .map(|m| (m.client_id.clone(), m))
            .collect();
        // unchanged, updated, inserted; nothing to write for the unchanged one
        let batch = [t("a", "A"), t("b", "B2"), t("c", "C")];
        let (c, w) = plan_upsert(&stored, &batch);
        assert_eq!(c, counts(1, 1, 1));
        assert_eq!(w, [&batch[1], &batch[2]]);
        // each entry is compared with the one before it in the batch; the last one wins
        let batch = [
            t("c", "C"),
            t("c", "C"),
            t("c", "C2"),
            t("a", "A2"),
            t("a", "A"),
        ];
        let (c, w) = plan_upsert(&stored, &batch);
        assert_eq!(c, counts(1, 3, 1));
        assert_eq!(w, [&batch[2], &batch[4]], "a is written back as stored");
        let (c, w) = plan_upsert(&stored, &[]);
        assert_eq!((c, w.len()), (SyncCounts::default(), 0));
    }
}
