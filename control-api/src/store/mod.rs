//! Persistence for the control plane: one trait, a SQLite implementation (the
//! embedded default) and a PostgreSQL one, with migrations in `migrations/<backend>/`.
//!
//! Conventions shared by both backends:
//! - ids are UUID v4 strings; times are milliseconds since the Unix epoch (`i64`);
//! - secrets (refresh tokens, reset tokens) are stored only as SHA-256 hex digests;
//! - every query that reads user-owned rows filters by the owner's user id, so one user
//!   can never see another's devices, rooms or library;
//! - single-use state changes (`mark_refresh_used`, `take_password_reset`,
//!   `claim_pairing`) are one conditional `UPDATE` and report whether they won, so two
//!   racing requests cannot both succeed.

use std::future::Future;

use serde::{Deserialize, Serialize};

pub mod any;
pub mod oidc;
pub mod podcasts;
pub mod postgres;
pub mod retention;
pub mod sqlite;

pub use any::Db;

pub type Millis = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. email or room name taken).
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// Lower-cased.
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: Millis,
    /// When the account proved it holds `email` (see `routes::accounts::verify_email`).
    pub email_verified_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    /// Made by the operator, who vouches for the address.
    pub email_verified: bool,
}

/// One refresh token. Tokens of one login form a *family*: each use rotates to a new
/// token of the same family; presenting a used token again revokes the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    /// SHA-256 hex of the opaque token.
    pub token_hash: String,
    /// Set for device-scoped credentials (a paired phone).
    pub device_id: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A sign-up waiting for its link to be opened (mail first: the account is made only
/// then, with the password chosen there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signup {
    pub token_hash: String,
    /// Normalised (trimmed, lower case).
    pub email: String,
    pub display_name: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub id: String,
    pub to_addr: String,
    pub subject: String,
    pub body: String,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    #[serde(default)]
    pub mic: bool,
    #[serde(default)]
    pub camera: bool,
    #[serde(default)]
    pub screen: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// `phone`, `browser` or `other`.
    pub kind: String,
    pub capabilities: Capabilities,
    pub created_at: Millis,
    pub last_seen: Option<Millis>,
    /// Presence as last decided by [`apply_presence`]; see `docs/events.md`.
    pub online: bool,
    /// The live device socket remote-control commands go to, if any.
    pub control_conn: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    pub user_id: String,
    pub name: String,
    pub kind: String,
    pub capabilities: Capabilities,
}

/// What a user holds, as quotas count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnedCounts {
    /// Rooms they made (not their devices' live rooms).
    pub rooms: i64,
    pub devices: i64,
    /// Pairings neither claimed nor expired.
    pub open_pairings: i64,
    /// Their transcode and mixdown jobs queued, running or waiting to retry.
    pub jobs_in_flight: i64,
    /// Bytes of the files they uploaded (each upload job's `spec.source.bytes`).
    pub upload_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub id: String,
    pub user_id: String,
    /// The short code typed or scanned on the phone (unique among all pairings).
    pub code: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Wrong codes tried while this pairing was open (see `count_wrong_pairing_guess`).
    pub attempts: i64,
    pub claimed_at: Option<Millis>,
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: String,
    pub owner_id: String,
    /// Unique among its owner's rooms (another owner may have a room of the same
    /// name). The SFU knows the room by its `id`.
    pub name: String,
    pub max_participants: i64,
    pub auto_record: bool,
    /// `owner` (only the owner may publish) or `anyone`.
    pub publish_policy: String,
    /// Who may join: `private`, `members` or `link` (see `routes::rooms`).
    pub access: String,
    /// The secret a share link carries (used only while `access` is `link`).
    pub share_key: String,
    /// Join tokens of an earlier epoch no longer join (see `bump_room_epoch`).
    pub epoch: i64,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub max_participants: i64,
    pub auto_record: bool,
    pub publish_policy: String,
    pub access: String,
    pub share_key: String,
}

/// One person invited to a room by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub id: String,
    pub room_id: String,
    /// Lower-cased, as accounts store it.
    pub email: String,
    /// The account that accepted (set once accepted).
    pub user_id: Option<String>,
    /// `invited`, `accepted` or `declined`.
    pub status: String,
    pub invited_at: Millis,
    pub responded_at: Option<Millis>,
}

/// An invitation as its invitee sees it: with the room's name and who invited them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub membership: Membership,
    pub room_name: String,
    pub owner_name: String,
}

/// A track of a phone's local music library, as the phone reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrackMeta {
    /// The phone's stable id for the track; (device, client_id) is unique.
    pub client_id: String,
    pub title: String,
    #[serde(default)]
    pub artist: String,
    #[serde(default)]
    pub album: String,
    pub duration_ms: i64,
    #[serde(default)]
    pub codec: String,
    #[serde(default)]
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryTrack {
    pub device_id: String,
    pub meta: TrackMeta,
    pub updated_at: Millis,
}

/// What an incremental sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

/// One play of the listening history (see `crate::history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlayRow {
    /// The id of the `now.playing` event that started it.
    pub id: String,
    pub device_id: String,
    /// The library track's `client_id` (or its title, when the device gave no id).
    pub track_id: String,
    pub title: String,
    pub artist: String,
    pub album: String,
    /// 0 when unknown.
    pub duration_ms: i64,
    pub started_at: Millis,
    pub listened_ms: i64,
}

/// The statistics' key of a track: its title, artist and album, hashed (SHA-256, the
/// first 8 bytes). Grouping a year of plays by an integer is several times cheaper
/// than by three strings; two different tracks share a key with odds of 2^-64.
pub fn track_key(title: &str, artist: &str, album: &str) -> i64 {
    use aws_lc_rs::digest::{SHA256, digest};
    let text = [title, artist, album].join("\u{0}");
    let d = digest(&SHA256, text.as_bytes());
    i64::from_be_bytes(
        d.as_ref()[..8]
            .try_into()
            .expect("a SHA-256 digest is 32 bytes"),
    )
}

/// What [`Store::record_listening`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Stored,
    /// Another writer moved the cursor on first: read it again.
    Stale,
    /// The device is not (or no longer) the user's: nothing stored.
    NotOwned,
}

/// Plays and listening time of one track, artist or album in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlayCount {
    /// Empty for artists and albums.
    pub title: String,
    /// Empty for albums' and tracks' unknown artists.
    pub artist: String,
    /// Empty for artists.
    pub album: String,
    /// One of the track's ids (tracks only).
    pub track_id: String,
    pub plays: i64,
    pub listened_ms: i64,
}

/// A user's listening in a period, computed by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListeningStats {
    pub plays: i64,
    pub listened_ms: i64,
    /// Most played first (then most listened); tracks are grouped by title, artist and
    /// album, so the same song on two devices is one track.
    pub tracks: Vec<PlayCount>,
    pub artists: Vec<PlayCount>,
    pub albums: Vec<PlayCount>,
}

impl ListeningStats {
    /// Sorts the rows of the statistics query (`kind`, then the count) into place.
    pub(crate) fn push(&mut self, kind: &str, row: PlayCount) {
        match kind {
            "track" => self.tracks.push(row),
            "artist" => self.artists.push(row),
            "album" => self.albums.push(row),
            _ => {
                self.plays = row.plays;
                self.listened_ms = row.listened_ms;
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LibraryQuery {
    /// Case-insensitive substring of title, artist or album.
    pub q: Option<String>,
    pub device_id: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A media node as it last reported itself (see `migrations/*/0012_cluster.sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub id: String,
    pub region: String,
    pub zone: String,
    /// Where browsers reach the node's HTTP(S): WHIP/WHEP, `/rtc`, the pages.
    pub public_url: String,
    /// Its media ports as clients reach them (`ip:port`).
    pub media_addrs: Vec<String>,
    /// Its embedded TURN server's `turn:`/`turns:` URLs (none without one).
    pub turn_urls: Vec<String>,
    /// Where its QUIC relay listens (`ip:port`); empty without one.
    pub relay_addr: String,
    /// Peers it is sized for.
    pub capacity: i64,
    pub workers: i64,
    /// Its busiest media worker's share of a core over the last second, 0–100.
    pub cpu_percent: f64,
    pub peers: i64,
    /// Bits per second it sent over the last second.
    pub forwarded_bps: i64,
    /// `active` or `draining`.
    pub state: String,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
}

/// One recording of a room (see `migrations/*/0003_recordings.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    /// The room it was made in. A room deleted keeps its recordings under its old id
    /// (archived): no room of the same name made later sees them.
    pub room_id: String,
    /// The SFU room it recorded, the first segment of its object keys: the room's id
    /// (before migration 0011, when rooms were global, the room's name). Stored in the
    /// `room_name` column.
    pub sfu_room: String,
    pub owner_id: String,
    pub started_by: String,
    pub node_id: String,
    /// `recording`, `stopped`, `uploaded` or `failed`.
    pub status: String,
    pub started_at: Millis,
    pub stopped_at: Option<Millis>,
    pub uploaded_at: Option<Millis>,
    pub stop_reason: Option<String>,
    pub failure: Option<String>,
    pub last_error: Option<String>,
    pub manifest: Option<String>,
    pub objects: Option<String>,
    /// The recording this one continues: its node drained, and the room's new node
    /// took over (the two overlap for a moment, so nothing is missed).
    pub continues: Option<String>,
}

/// A change of a recording: the new status and the fields it sets (`None` keeps a
/// field as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingChange {
    pub status: String,
    pub stopped_at: Option<Millis>,
    pub uploaded_at: Option<Millis>,
    pub stop_reason: Option<String>,
    pub failure: Option<String>,
    pub last_error: Option<String>,
    pub manifest: Option<String>,
    pub objects: Option<String>,
}

/// One transcode job (see `migrations/*/0004_transcode_jobs.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// `transcode` or `mixdown`.
    pub kind: String,
    pub owner_id: Option<String>,
    pub recording_id: Option<String>,
    /// JSON: `transcoder::JobSpec`.
    pub spec: String,
    /// `queued`, `running`, `retrying`, `completed` or `failed`.
    pub status: String,
    pub stage: Option<String>,
    pub percent: i64,
    /// Attempts started so far.
    pub attempts: i64,
    pub worker_id: Option<String>,
    pub lease_until: Option<Millis>,
    pub last_error: Option<String>,
    /// JSON, once completed.
    pub result: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Job {
    /// A new job waiting for a worker.
    pub fn queued(
        id: String,
        kind: &str,
        owner_id: Option<String>,
        recording_id: Option<String>,
        spec: String,
        now: Millis,
    ) -> Job {
        Job {
            id,
            kind: kind.to_owned(),
            owner_id,
            recording_id,
            spec,
            status: "queued".into(),
            stage: None,
            percent: 0,
            attempts: 0,
            worker_id: None,
            lease_until: None,
            last_error: None,
            result: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "deleted")
    }

    /// Its owner deleted it (and its files): kept as a row so that a redelivered
    /// request for it is not taken for a new one, but listed nowhere.
    pub fn is_deleted(&self) -> bool {
        self.status == "deleted"
    }
}

/// A change of a job by the worker holding it: the new status and the fields it
/// sets (`None` keeps a field as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobChange {
    pub status: String,
    pub stage: Option<String>,
    pub percent: Option<i64>,
    pub lease_until: Option<Millis>,
    pub last_error: Option<String>,
    pub result: Option<String>,
}

/// One event for the outbox: the envelope JSON with its topic and ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub created_at: Millis,
}

/// An outbox row: its position in publish order and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub event: OutboxEvent,
}

/// What happened to a device's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// An HTTP or socket heartbeat, optionally with new capabilities.
    Heartbeat { capabilities: Option<Capabilities> },
    /// The device opened its control socket `conn`.
    Connect {
        conn: String,
        capabilities: Option<Capabilities>,
    },
    /// Control socket `conn` closed. A newer socket of the device is left alone.
    Disconnect { conn: String },
    /// The sweeper: offline if the last heartbeat is older than `stale_before`.
    Expire { stale_before: Millis },
}

/// The presence columns of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceState {
    pub online: bool,
    pub control_conn: Option<String>,
    pub last_seen: Option<Millis>,
    pub capabilities: Capabilities,
}

/// The rule both backends apply inside their transaction.
pub fn apply_presence(old: &PresenceState, p: &Presence, now: Millis) -> PresenceState {
    let mut s = old.clone();
    match p {
        Presence::Heartbeat { capabilities } => {
            s.online = true;
            s.last_seen = Some(now);
            if let Some(c) = capabilities {
                s.capabilities = *c;
            }
        }
        Presence::Connect { conn, capabilities } => {
            s.online = true;
            s.last_seen = Some(now);
            s.control_conn = Some(conn.clone());
            if let Some(c) = capabilities {
                s.capabilities = *c;
            }
        }
        Presence::Disconnect { conn } => {
            if old.control_conn.as_deref() == Some(conn) {
                s.control_conn = None;
                s.online = false;
            }
        }
        Presence::Expire { stale_before } => {
            if old.online && old.last_seen.is_none_or(|t| t < *stale_before) {
                s.online = false;
                s.control_conn = None;
            }
        }
    }
    s
}

/// A presence update as applied: the device afterwards and what it was before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub device: Device,
    pub was_online: bool,
    pub old_capabilities: Capabilities,
}

impl PresenceChange {
    pub fn came_online(&self) -> bool {
        !self.was_online && self.device.online
    }
    pub fn went_offline(&self) -> bool {
        self.was_online && !self.device.online
    }
    pub fn capabilities_changed(&self) -> bool {
        self.old_capabilities != self.device.capabilities
    }
}

impl Device {
    pub fn presence(&self) -> PresenceState {
        PresenceState {
            online: self.online,
            control_conn: self.control_conn.clone(),
            last_seen: self.last_seen,
            capabilities: self.capabilities,
        }
    }
}

type R<T> = Result<T, StoreError>;

/// Everything the control plane stores. Implementations must be cheap to clone
/// (a connection pool inside).
pub trait Store: Clone + Send + Sync + 'static {
    /// Applies this backend's migrations (idempotent).
    fn migrate(&self) -> impl Future<Output = R<()>> + Send;

    // users
    fn create_user(&self, new: NewUser) -> impl Future<Output = R<User>> + Send;
    fn user_by_email(&self, email: &str) -> impl Future<Output = R<Option<User>>> + Send;
    fn user_by_id(&self, id: &str) -> impl Future<Output = R<Option<User>>> + Send;
    fn list_users(&self) -> impl Future<Output = R<Vec<User>>> + Send;
    fn count_users(&self) -> impl Future<Output = R<i64>> + Send;
    fn set_password(&self, user_id: &str, hash: &str) -> impl Future<Output = R<()>> + Send;
    fn set_role(&self, user_id: &str, role: Role) -> impl Future<Output = R<bool>> + Send;

    // refresh tokens
    fn insert_refresh(&self, rec: RefreshRecord) -> impl Future<Output = R<()>> + Send;
    fn refresh_by_hash(&self, hash: &str) -> impl Future<Output = R<Option<RefreshRecord>>> + Send;
    /// Sets `used_at` if it is unset and the token is not revoked; true if this call did.
    fn mark_refresh_used(&self, id: &str, now: Millis) -> impl Future<Output = R<bool>> + Send;
    fn revoke_family(&self, family_id: &str, now: Millis) -> impl Future<Output = R<u64>> + Send;
    /// Revokes every live refresh token of a user (logout everywhere, password change)
    /// and notes the time (`sessions_ended_at`).
    fn revoke_user_tokens(&self, user_id: &str, now: Millis)
    -> impl Future<Output = R<u64>> + Send;
    /// When the user's sessions were last ended ([`Store::revoke_user_tokens`]).
    fn sessions_ended_at(&self, user_id: &str) -> impl Future<Output = R<Option<Millis>>> + Send;
    /// Revokes the device-scoped tokens of one device (device removed).
    fn revoke_device_tokens(
        &self,
        device_id: &str,
        now: Millis,
    ) -> impl Future<Output = R<u64>> + Send;

    // password reset
    fn insert_password_reset(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> impl Future<Output = R<()>> + Send;
    /// Consumes an unused, unexpired reset token; returns its user.
    fn take_password_reset(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<String>>> + Send;

    // mail outbox
    /// A verification link for `email` of `user_id`, stored as its token's hash.
    fn insert_email_verification(
        &self,
        user_id: &str,
        email: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> impl Future<Output = R<()>> + Send;
    /// Uses a verification link once: marks its user verified, if the account still has
    /// the address the link was sent to. The user id when it did.
    fn take_email_verification(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<String>>> + Send;
    /// A pending sign-up: the link mailed to `email`, stored as its token's hash.
    /// Expired ones are deleted on the way.
    fn insert_signup(&self, signup: Signup) -> impl Future<Output = R<()>> + Send;
    /// The pending sign-up of a link, unless it expired.
    fn signup_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<Signup>>> + Send;
    /// Deletes every pending sign-up of an address (its account now exists).
    fn delete_signups(&self, email: &str) -> impl Future<Output = R<u64>> + Send;
    fn insert_mail(&self, mail: Mail) -> impl Future<Output = R<()>> + Send;
    /// Newest first.
    fn list_mail(&self, limit: i64) -> impl Future<Output = R<Vec<Mail>>> + Send;
    /// Marks a mail sent and scrubs its body: what it carried (a reset token) is no
    /// longer kept once the mail server has it.
    fn mark_mail_sent(&self, id: &str, now: Millis) -> impl Future<Output = R<()>> + Send;
    /// Mails not yet marked sent, oldest first (insertion order among equal times).
    fn unsent_mail(&self, limit: i64) -> impl Future<Output = R<Vec<Mail>>> + Send;

    // devices
    fn create_device(&self, new: NewDevice, now: Millis) -> impl Future<Output = R<Device>> + Send;
    fn list_devices(&self, user_id: &str) -> impl Future<Output = R<Vec<Device>>> + Send;
    fn device(&self, user_id: &str, id: &str) -> impl Future<Output = R<Option<Device>>> + Send;
    /// A device by its id alone, whoever's it is (to say whose a room identity is).
    fn device_by_id(&self, id: &str) -> impl Future<Output = R<Option<Device>>> + Send;
    fn rename_device(
        &self,
        user_id: &str,
        id: &str,
        name: &str,
    ) -> impl Future<Output = R<bool>> + Send;
    /// Deletes the device and its library tracks.
    fn delete_device(&self, user_id: &str, id: &str) -> impl Future<Output = R<bool>> + Send;
    /// Applies a presence change ([`apply_presence`]) to one device and, in the same
    /// transaction, writes the events `events` makes of it to the outbox. `None` when
    /// the device does not exist (or is another user's). `user_id: None` is for the
    /// sweeper, which acts on any user's device.
    fn update_presence<F>(
        &self,
        user_id: Option<&str>,
        id: &str,
        p: &Presence,
        now: Millis,
        events: F,
    ) -> impl Future<Output = R<Option<PresenceChange>>> + Send
    where
        F: FnOnce(&PresenceChange) -> Vec<OutboxEvent> + Send;
    /// Devices marked online whose last heartbeat is older than `before`: (user, device).
    fn stale_online_devices(
        &self,
        before: Millis,
        limit: i64,
    ) -> impl Future<Output = R<Vec<(String, String)>>> + Send;
    /// Stores a device's reported playback state and its `now.playing` event in one
    /// transaction; the state's number (one more than the device's last, from 1) is
    /// given to `event` to put in it. False when the device does not exist (or is
    /// another user's).
    fn record_now_playing(
        &self,
        user_id: &str,
        device_id: &str,
        state_json: &str,
        now: Millis,
        event: impl FnOnce(i64) -> OutboxEvent + Send,
    ) -> impl Future<Output = R<bool>> + Send;
    /// The last reported state of each of a user's devices: (device, state JSON, time).
    fn now_playing(
        &self,
        user_id: &str,
    ) -> impl Future<Output = R<Vec<(String, String, Millis)>>> + Send;

    // events outbox
    /// Writes events in one transaction (state changes that live nowhere else: remote
    /// commands, room events from the SFU).
    fn insert_events(&self, events: &[OutboxEvent]) -> impl Future<Output = R<()>> + Send;
    /// Unpublished events, oldest first (`seq` order).
    fn unpublished_events(&self, limit: i64) -> impl Future<Output = R<Vec<OutboxRow>>> + Send;
    fn mark_events_published(
        &self,
        seqs: &[i64],
        now: Millis,
    ) -> impl Future<Output = R<u64>> + Send;
    fn count_unpublished_events(&self) -> impl Future<Output = R<i64>> + Send;
    /// Deletes published events older than `before` (retention).
    fn purge_published_events(&self, before: Millis) -> impl Future<Output = R<u64>> + Send;
    /// Takes or renews the lease `name` for `holder` until `now + ttl`; true if
    /// `holder` holds it now. One conditional statement decides between racers.
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        ttl: Millis,
    ) -> impl Future<Output = R<bool>> + Send;

    // recordings
    /// Inserts a recording in status `recording` with its `recording.started` event.
    /// `Conflict` when the room already has an active recording.
    fn create_recording(
        &self,
        rec: &Recording,
        event: OutboxEvent,
    ) -> impl Future<Output = R<()>> + Send;
    /// Applies `change` if the recording's status is one of `from`, writing `events`
    /// in the same transaction. False (and nothing written) otherwise.
    fn change_recording(
        &self,
        id: &str,
        from: &[&str],
        change: RecordingChange,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = R<bool>> + Send;
    fn recording(&self, id: &str) -> impl Future<Output = R<Option<Recording>>> + Send;
    /// A room's recordings, newest first.
    fn room_recordings(&self, room_id: &str) -> impl Future<Output = R<Vec<Recording>>> + Send;
    /// Recordings in `status` held by `node_id` (recovery at start).
    fn node_recordings(
        &self,
        node_id: &str,
        status: &str,
    ) -> impl Future<Output = R<Vec<Recording>>> + Send;
    /// Recordings a draining node handed over to `node_id` that are still
    /// `recording` (the ones it has to start). Polled often: the partial index of
    /// migration 0014 keeps it to those rows.
    fn recordings_handed_over_to(
        &self,
        node_id: &str,
    ) -> impl Future<Output = R<Vec<Recording>>> + Send;

    // cluster
    /// Writes `node`'s row (its heartbeat). A node that is `draining` stays draining
    /// until it restarts (a new `started_at`), whatever its beat says.
    fn beat_node(&self, node: &NodeRow) -> impl Future<Output = R<()>> + Send;
    /// Every registered node, by id.
    fn nodes(&self) -> impl Future<Output = R<Vec<NodeRow>>> + Send;
    /// Marks a node `draining`; false if there is no such node.
    fn drain_node(&self, id: &str) -> impl Future<Output = R<bool>> + Send;
    /// Deletes a node's row and the homes of its rooms (it stopped cleanly).
    fn remove_node(&self, id: &str) -> impl Future<Output = R<()>> + Send;
    /// Deletes the rows of nodes silent since before `before` (long dead), and the homes
    /// of rooms on nodes that are not registered.
    fn forget_nodes(&self, before: Millis) -> impl Future<Output = R<u64>> + Send;
    /// The node `room_id` is placed on, if any (alive or not).
    fn room_home(&self, room_id: &str) -> impl Future<Output = R<Option<String>>> + Send;
    /// Places `room_id` on `node_id` unless it is placed on a node that has beaten
    /// since `alive_since`; returns the node it is placed on now. One conditional
    /// statement decides between racers.
    fn place_room(
        &self,
        room_id: &str,
        node_id: &str,
        now: Millis,
        alive_since: Millis,
    ) -> impl Future<Output = R<String>> + Send;
    /// The rooms placed on `node_id`.
    fn node_rooms(&self, node_id: &str) -> impl Future<Output = R<Vec<String>>> + Send;
    /// Moves `room_id`'s home from `from` to `to`; false if it is not on `from`.
    fn move_room(
        &self,
        room_id: &str,
        from: &str,
        to: &str,
        now: Millis,
    ) -> impl Future<Output = R<bool>> + Send;
    /// Forgets `room_id`'s home if it is `node_id` (the room ended there).
    fn release_room(&self, room_id: &str, node_id: &str) -> impl Future<Output = R<()>> + Send;

    // transcode jobs
    /// Inserts `job` unless its id exists, with `events` in the same transaction.
    /// True if it was inserted.
    fn create_job(
        &self,
        job: &Job,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = R<bool>> + Send;
    /// Moves a job to `running` for `worker_id` until `lease_until` and counts the
    /// attempt — if it is queued or retrying, or running on a lease that ran out or
    /// on this same worker (restarted: its earlier attempt died with it).
    /// Returns the claimed job; `None` if it is not there to claim.
    fn claim_job(
        &self,
        id: &str,
        worker_id: &str,
        now: Millis,
        lease_until: Millis,
    ) -> impl Future<Output = R<Option<Job>>> + Send;
    /// Applies `change` if the job is `running` on `worker_id`, writing `events` in
    /// the same transaction. False (nothing written) if the worker lost it.
    fn change_job(
        &self,
        id: &str,
        worker_id: &str,
        change: JobChange,
        now: Millis,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = R<bool>> + Send;
    fn job(&self, id: &str) -> impl Future<Output = R<Option<Job>>> + Send;
    /// A user's jobs of `kind`, newest first.
    fn owner_jobs(
        &self,
        owner_id: &str,
        kind: &str,
        limit: i64,
    ) -> impl Future<Output = R<Vec<Job>>> + Send;
    /// Marks a user's job that is over (completed or failed) deleted: it is listed
    /// nowhere and counts toward no quota, and its row keeps a redelivered request for
    /// it from running it again. False when there is none such.
    fn delete_finished_job(&self, owner_id: &str, id: &str)
    -> impl Future<Output = R<bool>> + Send;
    /// A recording's jobs, newest first.
    fn recording_jobs(&self, recording_id: &str) -> impl Future<Output = R<Vec<Job>>> + Send;
    /// Jobs not finished (queued, running, retrying), oldest first.
    fn open_jobs(&self, limit: i64) -> impl Future<Output = R<Vec<Job>>> + Send;

    /// What a user holds now, for quotas ([`OwnedCounts`]).
    fn owned_counts(
        &self,
        user_id: &str,
        now: Millis,
    ) -> impl Future<Output = R<OwnedCounts>> + Send;

    // pairing
    fn create_pairing(&self, p: Pairing) -> impl Future<Output = R<()>> + Send;
    fn pairing_by_code(&self, code: &str) -> impl Future<Output = R<Option<Pairing>>> + Send;
    fn pairing(&self, user_id: &str, id: &str) -> impl Future<Output = R<Option<Pairing>>> + Send;
    /// Counts a wrong code against every pairing open at `now` (unclaimed, unexpired):
    /// a wrong code names no pairing, so each open one bears every guess made in its
    /// life. Returns how many pairings were open.
    fn count_wrong_pairing_guess(&self, now: Millis) -> impl Future<Output = R<u64>> + Send;
    /// Marks the pairing claimed by `device_id` if it is unclaimed and unexpired.
    fn claim_pairing(
        &self,
        id: &str,
        device_id: &str,
        now: Millis,
    ) -> impl Future<Output = R<bool>> + Send;

    // rooms
    fn create_room(
        &self,
        owner_id: &str,
        name: &str,
        s: RoomSettings,
        now: Millis,
    ) -> impl Future<Output = R<Room>> + Send;
    fn list_rooms(&self, owner_id: &str) -> impl Future<Output = R<Vec<Room>>> + Send;
    /// The owner's room of this name.
    fn room_by_owner_name(
        &self,
        owner_id: &str,
        name: &str,
    ) -> impl Future<Output = R<Option<Room>>> + Send;
    /// A room by its id (the SFU's name for it), whoever's it is.
    fn room_by_id(&self, id: &str) -> impl Future<Output = R<Option<Room>>> + Send;
    fn update_room(
        &self,
        owner_id: &str,
        name: &str,
        s: RoomSettings,
    ) -> impl Future<Output = R<Option<Room>>> + Send;
    fn delete_room(&self, owner_id: &str, name: &str) -> impl Future<Output = R<bool>> + Send;
    /// Moves the room's epoch on, for `why` (`crate::live_rooms::Revocation`): every
    /// join token issued before stops joining. The new epoch.
    fn bump_room_epoch(&self, room_id: &str, why: &str) -> impl Future<Output = R<i64>> + Send;
    /// The epoch of each of these rooms that exists, and why it last moved on:
    /// `(room id, epoch, why)`.
    fn room_revocations(
        &self,
        room_ids: &[String],
    ) -> impl Future<Output = R<Vec<(String, i64, String)>>> + Send;

    // room members
    /// Invites `email` to the room; inviting again someone who declined asks again,
    /// anyone else's row is returned as it is.
    fn invite_member(
        &self,
        room_id: &str,
        email: &str,
        now: Millis,
    ) -> impl Future<Output = R<Membership>> + Send;
    fn room_members(&self, room_id: &str) -> impl Future<Output = R<Vec<Membership>>> + Send;
    fn remove_member(&self, room_id: &str, email: &str) -> impl Future<Output = R<bool>> + Send;
    /// The invitations sent to `email`, newest first.
    fn invitations(&self, email: &str) -> impl Future<Output = R<Vec<Invitation>>> + Send;
    /// Accepts (binding `user_id`) or declines the invitation `id` sent to `email`.
    fn answer_invitation(
        &self,
        id: &str,
        email: &str,
        user_id: &str,
        accept: bool,
        now: Millis,
    ) -> impl Future<Output = R<Option<Membership>>> + Send;
    /// Whether `user_id` accepted an invitation to the room.
    fn is_member(&self, room_id: &str, user_id: &str) -> impl Future<Output = R<bool>> + Send;

    // library
    /// Inserts or updates tracks by (device, client_id); identical tracks count as
    /// unchanged. Runs in one transaction.
    fn upsert_tracks(
        &self,
        user_id: &str,
        device_id: &str,
        tracks: &[TrackMeta],
        now: Millis,
    ) -> impl Future<Output = R<SyncCounts>> + Send;
    fn delete_tracks(
        &self,
        user_id: &str,
        device_id: &str,
        client_ids: &[String],
    ) -> impl Future<Output = R<u64>> + Send;
    /// Ordered by artist, album, title, client_id.
    fn list_tracks(
        &self,
        user_id: &str,
        q: &LibraryQuery,
    ) -> impl Future<Output = R<Vec<LibraryTrack>>> + Send;

    // listening history
    /// A device's listening cursor (`history::Cursor` as JSON) and its version, if it
    /// has one.
    fn listening_cursor(
        &self,
        device_id: &str,
    ) -> impl Future<Output = R<Option<(String, i64)>>> + Send;
    /// Stores a device's cursor and the plays it made, in one transaction, if the
    /// stored cursor is still at `version` (`None`: there is none yet); a play stored
    /// before keeps the longer listening.
    fn record_listening(
        &self,
        user_id: &str,
        device_id: &str,
        cursor: &str,
        version: Option<i64>,
        plays: &[PlayRow],
        now: Millis,
    ) -> impl Future<Output = R<Recorded>> + Send;
    /// The user's plays that started at or after `since`: totals and the `limit` most
    /// played tracks, artists and albums.
    fn listening_stats(
        &self,
        user_id: &str,
        since: Millis,
        limit: i64,
    ) -> impl Future<Output = R<ListeningStats>> + Send;
    /// The user's plays before `before` (start time, then id), newest first.
    fn recent_plays(
        &self,
        user_id: &str,
        before: (Millis, &str),
        limit: i64,
    ) -> impl Future<Output = R<Vec<PlayRow>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(online: bool, conn: Option<&str>, last_seen: Option<Millis>) -> PresenceState {
        PresenceState {
            online,
            control_conn: conn.map(str::to_owned),
            last_seen,
            capabilities: Capabilities::default(),
        }
    }

    #[test]
    fn presence_rules() {
        let off = state(false, None, None);
        let caps = Capabilities {
            mic: true,
            ..Capabilities::default()
        };
        let hb = apply_presence(
            &off,
            &Presence::Heartbeat {
                capabilities: Some(caps),
            },
            10,
        );
        assert_eq!(
            hb,
            PresenceState {
                capabilities: caps,
                ..state(true, None, Some(10))
            }
        );
        let conn = |c: &str| Presence::Connect {
            conn: c.into(),
            capabilities: None,
        };
        let a = apply_presence(&off, &conn("a"), 20);
        assert_eq!(a, state(true, Some("a"), Some(20)));
        // A newer socket replaces the old one; the old one closing leaves it alone.
        let b = apply_presence(&a, &conn("b"), 30);
        let closed_a = apply_presence(&b, &Presence::Disconnect { conn: "a".into() }, 31);
        assert_eq!(closed_a, b);
        let closed_b = apply_presence(&b, &Presence::Disconnect { conn: "b".into() }, 32);
        assert_eq!(closed_b, state(false, None, Some(30)));
        // Expiry only takes devices whose last heartbeat is old.
        let fresh = apply_presence(&b, &Presence::Expire { stale_before: 30 }, 40);
        assert_eq!(fresh, b);
        let stale = apply_presence(&b, &Presence::Expire { stale_before: 31 }, 40);
        assert_eq!(stale, state(false, None, Some(30)));
    }
}
