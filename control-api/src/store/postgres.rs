//! PostgreSQL implementation of [`Store`].
//!
//! Same schema and semantics as the SQLite store (`migrations/postgres/`); the shared
//! helpers (ids, clock, LIKE patterns, conflict mapping) live at the end of `sqlite.rs`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use super::Recorded;
use super::sqlite::{
    conflict, fold, like_pattern, new_id, now_ms, page, pairing_conflict, parse_role, plan_upsert,
};
use super::{
    Capabilities, Device, Invitation, Job, JobChange, LibraryQuery, LibraryTrack, ListeningStats,
    Mail, Membership, Millis, NewDevice, NewUser, NodeRow, OutboxEvent, OutboxRow, OwnedCounts,
    Pairing, PlayCount, PlayRow, Presence, PresenceChange, R, Recording, RecordingChange,
    RefreshRecord, Role, Room, RoomSettings, Signup, Store, StoreError, SyncCounts, TrackMeta,
    User, apply_presence,
};

/// Connections per store.
const POOL_SIZE: u32 = 10;
/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `postgres://user[:password]@host[:port]/database`. Does not migrate:
    /// call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(PgStore { pool })
    }

    /// The underlying pool (health checks, closing in tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn user_row(r: &PgRow) -> Result<User, sqlx::Error> {
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

fn refresh_row(r: &PgRow) -> Result<RefreshRecord, sqlx::Error> {
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

fn mail_row(r: &PgRow) -> Result<Mail, sqlx::Error> {
    Ok(Mail {
        id: r.try_get("id")?,
        to_addr: r.try_get("to_addr")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

fn device_row(r: &PgRow) -> Result<Device, sqlx::Error> {
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

fn outbox_row(r: &PgRow) -> Result<OutboxRow, sqlx::Error> {
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
    conn: &mut sqlx::PgConnection,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    for e in events {
        sqlx::query(
            "INSERT INTO event_outbox (id, topic, key, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
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

fn pairing_row(r: &PgRow) -> Result<Pairing, sqlx::Error> {
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

fn job_row(r: &PgRow) -> Result<Job, sqlx::Error> {
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

fn node_row(r: &PgRow) -> Result<NodeRow, sqlx::Error> {
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

fn recording_row(r: &PgRow) -> Result<Recording, sqlx::Error> {
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

fn room_row(r: &PgRow) -> Result<Room, sqlx::Error> {
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

fn membership_row(r: &PgRow) -> Result<Membership, sqlx::Error> {
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

fn invitation_row(r: &PgRow) -> Result<Invitation, sqlx::Error> {
    Ok(Invitation {
        membership: membership_row(r)?,
        room_name: r.try_get("room_name")?,
        owner_name: r.try_get("owner_name")?,
    })
}

fn track_meta_row(r: &PgRow) -> Result<TrackMeta, sqlx::Error> {
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

fn track_row(r: &PgRow) -> Result<LibraryTrack, sqlx::Error> {
    Ok(LibraryTrack {
        device_id: r.try_get("device_id")?,
        meta: track_meta_row(r)?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn collect<T>(rows: Vec<PgRow>, f: fn(&PgRow) -> Result<T, sqlx::Error>) -> R<Vec<T>> {
    rows.iter()
        .map(|r| f(r).map_err(StoreError::from))
        .collect()
}

// sqlx 0.9 + PostgreSQL: a `fetch_optional` that stops after the first row leaves the
// rest of the response on the pooled connection, and the next `execute` on that
// connection adds the leftover command's row count to its own `rows_affected`.
// Conditional updates (`mark_refresh_used`, `claim_pairing`) decide on that count, so
// every single-row read here uses `fetch_all(..).into_iter().next()` instead.
impl Store for PgStore {
    async fn migrate(&self) -> R<()> {
        sqlx::migrate!("../migrations/postgres")
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
             email_verified_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
             FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(user_row).transpose()?)
    }

    async fn user_by_id(&self, id: &str) -> R<Option<User>> {
        let row = sqlx::query(
            "SELECT id, email, display_name, password_hash, role, created_at, email_verified_at \
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
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
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_role(&self, user_id: &str, role: Role) -> R<bool> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
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
             created_at, expires_at, used_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
             used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(refresh_row).transpose()?)
    }

    async fn mark_refresh_used(&self, id: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_family(&self, family_id: &str, now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_tokens(&self, user_id: &str, now: Millis) -> R<u64> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET sessions_ended_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn sessions_ended_at(&self, user_id: &str) -> R<Option<Millis>> {
        let at: Option<Option<Millis>> =
            sqlx::query_scalar("SELECT sessions_ended_at FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.flatten())
    }

    async fn revoke_device_tokens(&self, device_id: &str, now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
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
             VALUES ($1, $2, $3, $4)",
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
            "UPDATE password_resets SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING user_id",
        )
        .bind(now)
        .bind(token_hash)
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
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
             VALUES ($1, $2, $3, $4, $5)",
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
            "UPDATE email_verifications SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 \
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
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1) \
             WHERE id = $2 AND email = $3",
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
        sqlx::query("DELETE FROM signups WHERE expires_at <= $1")
            .bind(signup.created_at)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO signups (token_hash, email, display_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
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
             WHERE token_hash = $1 AND expires_at > $2",
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
        let done = sqlx::query("DELETE FROM signups WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_mail(&self, mail: Mail) -> R<()> {
        sqlx::query(
            "INSERT INTO mail_outbox (id, to_addr, subject, body, created_at, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
             ORDER BY created_at DESC, seq DESC LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        collect(rows, mail_row)
    }

    async fn mark_mail_sent(&self, id: &str, now: Millis) -> R<()> {
        sqlx::query("UPDATE mail_outbox SET body = '', sent_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unsent_mail(&self, limit: i64) -> R<Vec<Mail>> {
        let rows = sqlx::query(
            "SELECT id, to_addr, subject, body, created_at, sent_at FROM mail_outbox \
             WHERE sent_at IS NULL ORDER BY created_at, seq LIMIT $1",
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
             created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
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
             last_seen, online, control_conn FROM devices WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, device_row)
    }

    async fn device_by_id(&self, id: &str) -> R<Option<Device>> {
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    async fn device(&self, user_id: &str, id: &str) -> R<Option<Device>> {
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    async fn rename_device(&self, user_id: &str, id: &str, name: &str) -> R<bool> {
        let done = sqlx::query("UPDATE devices SET name = $1 WHERE user_id = $2 AND id = $3")
            .bind(name)
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_device(&self, user_id: &str, id: &str) -> R<bool> {
        // library_tracks (and the device's refresh tokens) go with it: ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, user_id, name, kind, cap_mic, cap_camera, cap_screen, created_at, \
             last_seen, online, control_conn FROM devices \
             WHERE id = $1 AND ($2::TEXT IS NULL OR user_id = $2) FOR UPDATE",
        )
        .bind(id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .next();
        let Some(row) = row else {
            return Ok(None);
        };
        let old = device_row(&row)?;
        let new = apply_presence(&old.presence(), p, now);
        sqlx::query(
            "UPDATE devices SET online = $1, control_conn = $2, last_seen = $3, cap_mic = $4, \
             cap_camera = $5, cap_screen = $6 WHERE id = $7",
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
            "SELECT user_id, id FROM devices WHERE online \
             AND (last_seen IS NULL OR last_seen < $1) LIMIT $2",
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
        let mut tx = self.pool.begin().await?;
        let seq: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO now_playing (device_id, user_id, state, updated_at, seq) \
             SELECT id, user_id, $1, $2, 1 FROM devices WHERE id = $3 AND user_id = $4 \
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
            "SELECT device_id, state, updated_at FROM now_playing WHERE user_id = $1 \
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
        let mut tx = self.pool.begin().await?;
        insert_outbox(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unpublished_events(&self, limit: i64) -> R<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT seq, id, topic, key, payload, created_at FROM event_outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, outbox_row)
    }

    async fn mark_events_published(&self, seqs: &[i64], now: Millis) -> R<u64> {
        let done = sqlx::query(
            "UPDATE event_outbox SET published_at = $1 \
             WHERE published_at IS NULL AND seq = ANY($2)",
        )
        .bind(now)
        .bind(seqs)
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
            "DELETE FROM event_outbox WHERE published_at IS NOT NULL AND published_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> R<bool> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
             expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < $4",
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
             claimed_at, device_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
             FROM pairings WHERE code = $1",
        )
        .bind(code)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(pairing_row).transpose()?)
    }

    async fn pairing(&self, user_id: &str, id: &str) -> R<Option<Pairing>> {
        let row = sqlx::query(
            "SELECT id, user_id, code, created_at, expires_at, attempts, claimed_at, device_id \
             FROM pairings WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(pairing_row).transpose()?)
    }

    async fn owned_counts(&self, user_id: &str, now: Millis) -> R<OwnedCounts> {
        let (rooms, devices, open_pairings, jobs_in_flight, upload_bytes): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
                 (SELECT COUNT(*) FROM rooms WHERE owner_id = $1 AND name NOT LIKE 'device-%'), \
                 (SELECT COUNT(*) FROM devices WHERE user_id = $1), \
                 (SELECT COUNT(*) FROM pairings \
                   WHERE user_id = $1 AND claimed_at IS NULL AND expires_at > $2), \
                 (SELECT COUNT(*) FROM transcode_jobs \
                   WHERE owner_id = $1 AND status IN ('queued', 'running', 'retrying')), \
                 (SELECT COALESCE(SUM(CASE WHEN jsonb_typeof(spec::jsonb #> '{source,bytes}') = 'number' \
                      THEN (spec::jsonb #>> '{source,bytes}')::numeric ELSE 0 END), 0)::bigint \
                    FROM transcode_jobs WHERE owner_id = $1 AND kind = 'transcode' \
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
             WHERE claimed_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn claim_pairing(&self, id: &str, device_id: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE pairings SET claimed_at = $1, device_id = $2 \
             WHERE id = $3 AND claimed_at IS NULL AND expires_at > $4",
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO recordings (id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE recordings SET status = $1, \
             stopped_at = COALESCE($2, stopped_at), \
             uploaded_at = COALESCE($3, uploaded_at), \
             stop_reason = COALESCE($4, stop_reason), \
             failure = COALESCE($5, failure), \
             last_error = COALESCE($6, last_error), \
             manifest = COALESCE($7, manifest), \
             objects = COALESCE($8, objects) \
             WHERE id = $9 AND status = ANY($10)",
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
        .bind(from)
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
        let row = sqlx::query("SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings WHERE id = $1")
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
             WHERE room_id = $1 ORDER BY started_at DESC, id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, recording_row)
    }

    async fn node_recordings(&self, node_id: &str, status: &str) -> R<Vec<Recording>> {
        let rows = sqlx::query(
            "SELECT id, room_id, room_name, owner_id, started_by, node_id, status, started_at, stopped_at, uploaded_at, stop_reason, failure, last_error, manifest, objects, continues FROM recordings \
             WHERE node_id = $1 AND status = $2 ORDER BY started_at",
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
             WHERE node_id = $1 AND status = 'recording' AND continues IS NOT NULL ORDER BY started_at",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
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
        let done = sqlx::query("UPDATE nodes SET state = 'draining' WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_node(&self, id: &str) -> R<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM room_homes WHERE node_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_nodes(&self, before: Millis) -> R<u64> {
        let done = sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
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
            sqlx::query_scalar("SELECT node_id FROM room_homes WHERE room_id = $1")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO room_homes (room_id, node_id, placed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, placed_at = excluded.placed_at \
             WHERE room_homes.node_id NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= $4)",
        )
        .bind(room_id)
        .bind(node_id)
        .bind(now)
        .bind(alive_since)
        .execute(&mut *tx)
        .await?;
        let home: String = sqlx::query_scalar("SELECT node_id FROM room_homes WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(home)
    }

    async fn node_rooms(&self, node_id: &str) -> R<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT room_id FROM room_homes WHERE node_id = $1 ORDER BY room_id",
            )
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?,
        )
    }

    async fn move_room(&self, room_id: &str, from: &str, to: &str, now: Millis) -> R<bool> {
        let done = sqlx::query(
            "UPDATE room_homes SET node_id = $1, placed_at = $2 WHERE room_id = $3 AND node_id = $4",
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
        sqlx::query("DELETE FROM room_homes WHERE room_id = $1 AND node_id = $2")
            .bind(room_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- transcode jobs ----

    async fn create_job(&self, job: &Job, events: Vec<OutboxEvent>) -> R<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO transcode_jobs (id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (id) DO NOTHING",
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE transcode_jobs SET status = 'running', attempts = attempts + 1, \
             worker_id = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND (status IN ('queued', 'retrying') \
             OR (status = 'running' AND (lease_until IS NULL OR lease_until < $5 OR worker_id = $1)))",
        )
        .bind(worker_id)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE transcode_jobs SET status = $1, \
             stage = COALESCE($2, stage), \
             percent = COALESCE($3, percent), \
             lease_until = COALESCE($4, lease_until), \
             last_error = COALESCE($5, last_error), \
             result = COALESCE($6, result), \
             updated_at = $7 \
             WHERE id = $8 AND status = 'running' AND worker_id = $9",
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
        let row = sqlx::query("SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_row).transpose()?)
    }

    async fn owner_jobs(&self, owner_id: &str, kind: &str, limit: i64) -> R<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE owner_id = $1 AND kind = $2 AND status <> 'deleted' ORDER BY created_at DESC, id LIMIT $3",
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
            "UPDATE transcode_jobs SET status = 'deleted', updated_at = $1 \
             WHERE id = $2 AND owner_id = $3 AND status IN ('completed', 'failed')",
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
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE recording_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(recording_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, job_row)
    }

    async fn open_jobs(&self, limit: i64) -> R<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT id, kind, owner_id, recording_id, spec, status, stage, percent, attempts, worker_id, lease_until, last_error, result, created_at, updated_at FROM transcode_jobs WHERE status IN ('queued', 'running', 'retrying') ORDER BY created_at, id LIMIT $1",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
             access, share_key, epoch, created_at FROM rooms WHERE owner_id = $1 ORDER BY name",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, room_row)
    }

    async fn room_by_owner_name(&self, owner_id: &str, name: &str) -> R<Option<Room>> {
        let row = sqlx::query(
            "SELECT id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at FROM rooms WHERE owner_id = $1 AND name = $2",
        )
        .bind(owner_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn room_by_id(&self, id: &str) -> R<Option<Room>> {
        let row = sqlx::query(
            "SELECT id, owner_id, name, max_participants, auto_record, publish_policy, \
             access, share_key, epoch, created_at FROM rooms WHERE id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn update_room(&self, owner_id: &str, name: &str, s: RoomSettings) -> R<Option<Room>> {
        let row = sqlx::query(
            "UPDATE rooms SET max_participants = $1, auto_record = $2, publish_policy = $3, \
             access = $4, share_key = $5 WHERE owner_id = $6 AND name = $7 \
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
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(room_row).transpose()?)
    }

    async fn delete_room(&self, owner_id: &str, name: &str) -> R<bool> {
        let done = sqlx::query("DELETE FROM rooms WHERE owner_id = $1 AND name = $2")
            .bind(owner_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn bump_room_epoch(&self, room_id: &str, why: &str) -> R<i64> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE rooms SET epoch = epoch + 1, revoked_why = $2 WHERE id = $1 RETURNING epoch",
        )
        .bind(room_id)
        .bind(why)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch.unwrap_or(0))
    }

    async fn room_revocations(&self, room_ids: &[String]) -> R<Vec<(String, i64, String)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT id, epoch, revoked_why FROM rooms WHERE id = ANY($1) ORDER BY id",
        )
        .bind(room_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- room members ----

    async fn invite_member(&self, room_id: &str, email: &str, now: Millis) -> R<Membership> {
        let row = sqlx::query(
            "INSERT INTO room_members (id, room_id, email, status, invited_at) \
             VALUES ($1, $2, $3, 'invited', $4) \
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
            "SELECT id, room_id, email, user_id, status, invited_at, responded_at FROM room_members WHERE room_id = $1 ORDER BY email",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, membership_row)
    }

    async fn remove_member(&self, room_id: &str, email: &str) -> R<bool> {
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND email = $2")
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
             WHERE m.email = $1 ORDER BY m.invited_at DESC, m.id",
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
            "UPDATE room_members SET status = $1, user_id = $2, responded_at = $3 \
             WHERE id = $4 AND email = $5 RETURNING id, room_id, email, user_id, status, invited_at, responded_at",
        )
        .bind(if accept { "accepted" } else { "declined" })
        .bind(accept.then_some(user_id))
        .bind(now)
        .bind(id)
        .bind(email)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        Ok(row.as_ref().map(membership_row).transpose()?)
    }

    async fn is_member(&self, room_id: &str, user_id: &str) -> R<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM room_members \
             WHERE room_id = $1 AND user_id = $2 AND status = 'accepted'",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
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
        let mut tx = self.pool.begin().await?;
        // Checks ownership and, by locking the device row, serialises concurrent syncs
        // of one device (no lost updates, no duplicate-key races between them).
        let owned: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM devices WHERE id = $1 AND user_id = $2 FOR UPDATE")
                .bind(device_id)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .next();
        if owned.is_none() {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        if tracks.is_empty() {
            tx.commit().await?;
            return Ok(SyncCounts::default());
        }
        // One read of the batch's tracks that are already stored, the decision in
        // memory, one INSERT ... ON CONFLICT of everything new or changed: the same few
        // statements per sync whatever its size, instead of two per track.
        let ids: Vec<&str> = tracks.iter().map(|t| t.client_id.as_str()).collect();
        let rows = sqlx::query(
            "SELECT client_id, title, artist, album, duration_ms, codec, size_bytes \
             FROM library_tracks WHERE device_id = $1 AND client_id = ANY($2)",
        )
        .bind(device_id)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .iter()
            .map(|r| track_meta_row(r).map(|m| (m.client_id.clone(), m)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        let (counts, writes) = plan_upsert(&stored, tracks);
        if !writes.is_empty() {
            let text = |f: fn(&TrackMeta) -> &str| writes.iter().map(|t| f(t)).collect::<Vec<_>>();
            let folded =
                |f: fn(&TrackMeta) -> &str| writes.iter().map(|t| fold(f(t))).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO library_tracks (device_id, client_id, user_id, title, artist, \
                 album, duration_ms, codec, size_bytes, title_lc, artist_lc, album_lc, \
                 updated_at) \
                 SELECT $1, u.client_id, $2, u.title, u.artist, u.album, u.duration_ms, \
                 u.codec, u.size_bytes, u.title_lc, u.artist_lc, u.album_lc, $3 \
                 FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], \
                 $9::text[], $10::int8[], $11::text[], $12::text[], $13::text[]) \
                 AS u(client_id, title, artist, album, duration_ms, codec, size_bytes, \
                 title_lc, artist_lc, album_lc) \
                 ON CONFLICT (device_id, client_id) DO UPDATE SET title = EXCLUDED.title, \
                 artist = EXCLUDED.artist, album = EXCLUDED.album, \
                 duration_ms = EXCLUDED.duration_ms, codec = EXCLUDED.codec, \
                 size_bytes = EXCLUDED.size_bytes, title_lc = EXCLUDED.title_lc, \
                 artist_lc = EXCLUDED.artist_lc, album_lc = EXCLUDED.album_lc, \
                 updated_at = EXCLUDED.updated_at",
            )
            .bind(device_id)
            .bind(user_id)
            .bind(now)
            .bind(text(|t| &t.client_id))
            .bind(text(|t| &t.title))
            .bind(text(|t| &t.artist))
            .bind(text(|t| &t.album))
            .bind(writes.iter().map(|t| t.duration_ms).collect::<Vec<_>>())
            .bind(text(|t| &t.codec))
            .bind(writes.iter().map(|t| t.size_bytes).collect::<Vec<_>>())
            .bind(folded(|t| &t.title))
            .bind(folded(|t| &t.artist))
            .bind(folded(|t| &t.album))
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
        let done = sqlx::query(
            "DELETE FROM library_tracks \
             WHERE user_id = $1 AND device_id = $2 AND client_id = ANY($3)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(client_ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn list_tracks(&self, user_id: &str, q: &LibraryQuery) -> R<Vec<LibraryTrack>> {
        let (limit, offset) = page(q);
        let rows = sqlx::query(
            r"SELECT device_id, client_id, title, artist, album, duration_ms, codec, size_bytes,
                     updated_at
              FROM library_tracks
              WHERE user_id = $1
                AND ($2::text IS NULL OR device_id = $2)
                AND ($3::text IS NULL
                     OR title_lc LIKE $3 ESCAPE '\'
                     OR artist_lc LIKE $3 ESCAPE '\'
                     OR album_lc LIKE $3 ESCAPE '\')
              ORDER BY artist_lc, album_lc, title_lc, artist, album, title, client_id
              LIMIT $4 OFFSET $5",
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
        let row = sqlx::query("SELECT cursor, version FROM listening_cursors WHERE device_id = $1")
            .bind(device_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
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
        let mut tx = self.pool.begin().await?;
        let done = match version {
            None => sqlx::query(
                "INSERT INTO listening_cursors (device_id, user_id, cursor, version, updated_at) \
                 SELECT id, user_id, $1, 1, $2 FROM devices WHERE id = $3 AND user_id = $4 \
                 ON CONFLICT (device_id) DO NOTHING",
            )
            .bind(cursor)
            .bind(now)
            .bind(device_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?,
            Some(v) => sqlx::query(
                "UPDATE listening_cursors SET cursor = $1, version = version + 1, updated_at = $2 \
                 WHERE device_id = $3 AND user_id = $4 AND version = $5",
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
                sqlx::query_scalar("SELECT 1::bigint FROM devices WHERE id = $1 AND user_id = $2")
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
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, track_key) DO NOTHING",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
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
            r#"SELECT id, device_id, track_id, title, artist, album, duration_ms, started_at,
                      listened_ms FROM plays WHERE user_id = $1
                 AND (started_at < $2 OR (started_at = $2 AND id COLLATE "C" < $3))
               ORDER BY started_at DESC, id COLLATE "C" DESC LIMIT $4"#,
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
/// limit). One pass over the user's range of the narrow index groups plays by their
/// integer track key; the few thousand tracks are then named from `play_tracks`, and
/// artists, albums and totals grouped from those.
/// Ties are broken by bytes (`COLLATE "C"`), as SQLite does. Public so the tests can
/// ask the planner how it runs.
pub const LISTENING_STATS_SQL: &str = r#"WITH t AS MATERIALIZED (
        SELECT track_key, count(*) AS plays, sum(listened_ms)::bigint AS ms
        FROM plays WHERE user_id = $1 AND started_at >= $2
        GROUP BY track_key),
      k AS MATERIALIZED (
        SELECT p.title, p.artist, p.album, p.track_id, t.plays, t.ms
        FROM t JOIN play_tracks p ON p.user_id = $1 AND p.track_key = t.track_key)
      SELECT * FROM (SELECT 'track' AS kind, title, artist, album, track_id, plays, ms
                     FROM k ORDER BY plays DESC, ms DESC, title COLLATE "C",
                                     artist COLLATE "C", album COLLATE "C"
                     LIMIT $3) tracks
      UNION ALL
      SELECT * FROM (SELECT 'artist', '', artist, '', '', sum(plays)::bigint AS p,
                            sum(ms)::bigint AS m
                     FROM k WHERE artist <> '' GROUP BY artist
                     ORDER BY p DESC, m DESC, artist COLLATE "C" LIMIT $3) artists
      UNION ALL
      SELECT * FROM (SELECT 'album', '', artist, album, '', sum(plays)::bigint AS p,
                            sum(ms)::bigint AS m
                     FROM k WHERE album <> '' GROUP BY artist, album
                     ORDER BY p DESC, m DESC, artist COLLATE "C", album COLLATE "C"
                     LIMIT $3) albums
      UNION ALL
      SELECT 'total', '', '', '', '', coalesce(sum(plays), 0)::bigint,
             coalesce(sum(ms), 0)::bigint
      FROM t"#;

fn play_row(r: &PgRow) -> Result<PlayRow, sqlx::Error> {
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

fn play_count_row(r: &PgRow) -> Result<PlayCount, sqlx::Error> {
    Ok(PlayCount {
        title: r.try_get("title")?,
        artist: r.try_get("artist")?,
        album: r.try_get("album")?,
        track_id: r.try_get("track_id")?,
        plays: r.try_get("plays")?,
        listened_ms: r.try_get("ms")?,
    })
}
