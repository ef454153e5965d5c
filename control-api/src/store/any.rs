//! `Db`: the backend chosen at start-up, behind the one `Store` interface.

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::*;

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Db {
    /// `postgres://…` or `postgresql://…` selects PostgreSQL; anything else is a SQLite
    /// URL or file path.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Postgres(PgStore::connect(url).await?))
        } else {
            Ok(Db::Sqlite(SqliteStore::connect(url).await?))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl Store for Db {
    async fn migrate(&self) -> R<()> {
        delegate!(self, s => s.migrate())
    }
    async fn create_user(&self, new: NewUser) -> R<User> {
        delegate!(self, s => s.create_user(new))
    }
    async fn user_by_email(&self, email: &str) -> R<Option<User>> {
        delegate!(self, s => s.user_by_email(email))
    }
    async fn user_by_id(&self, id: &str) -> R<Option<User>> {
        delegate!(self, s => s.user_by_id(id))
    }
    async fn list_users(&self) -> R<Vec<User>> {
        delegate!(self, s => s.list_users())
    }
    async fn count_users(&self) -> R<i64> {
        delegate!(self, s => s.count_users())
    }
    async fn set_password(&self, user_id: &str, hash: &str) -> R<()> {
        delegate!(self, s => s.set_password(user_id, hash))
    }
    async fn set_role(&self, user_id: &str, role: Role) -> R<bool> {
        delegate!(self, s => s.set_role(user_id, role))
    }
    async fn insert_refresh(&self, rec: RefreshRecord) -> R<()> {
        delegate!(self, s => s.insert_refresh(rec))
    }
    async fn refresh_by_hash(&self, hash: &str) -> R<Option<RefreshRecord>> {
        delegate!(self, s => s.refresh_by_hash(hash))
    }
    async fn mark_refresh_used(&self, id: &str, now: Millis) -> R<bool> {
        delegate!(self, s => s.mark_refresh_used(id, now))
    }
    async fn revoke_family(&self, family_id: &str, now: Millis) -> R<u64> {
        delegate!(self, s => s.revoke_family(family_id, now))
    }
    async fn revoke_user_tokens(&self, user_id: &str, now: Millis) -> R<u64> {
        delegate!(self, s => s.revoke_user_tokens(user_id, now))
    }
    async fn sessions_ended_at(&self, user_id: &str) -> R<Option<Millis>> {
        delegate!(self, s => s.sessions_ended_at(user_id))
    }
    async fn revoke_device_tokens(&self, device_id: &str, now: Millis) -> R<u64> {
        delegate!(self, s => s.revoke_device_tokens(device_id, now))
    }
    async fn insert_password_reset(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> R<()> {
        delegate!(self, s => s.insert_password_reset(user_id, token_hash, expires_at))
    }
    async fn take_password_reset(&self, token_hash: &str, now: Millis) -> R<Option<String>> {
        delegate!(self, s => s.take_password_reset(token_hash, now))
    }
    async fn insert_email_verification(
        &self,
        user_id: &str,
        email: &str,
        token_hash: &str,
        expires_at: Millis,
    ) -> R<()> {
        delegate!(self, s => s.insert_email_verification(user_id, email, token_hash, expires_at))
    }
    async fn take_email_verification(&self, token_hash: &str, now: Millis) -> R<Option<String>> {
        delegate!(self, s => s.take_email_verification(token_hash, now))
    }
    async fn insert_signup(&self, signup: Signup) -> R<()> {
        delegate!(self, s => s.insert_signup(signup))
    }
    async fn signup_by_token(&self, token_hash: &str, now: Millis) -> R<Option<Signup>> {
        delegate!(self, s => s.signup_by_token(token_hash, now))
    }
    async fn delete_signups(&self, email: &str) -> R<u64> {
        delegate!(self, s => s.delete_signups(email))
    }
    async fn insert_mail(&self, mail: Mail) -> R<()> {
        delegate!(self, s => s.insert_mail(mail))
    }
    async fn list_mail(&self, limit: i64) -> R<Vec<Mail>> {
        delegate!(self, s => s.list_mail(limit))
    }
    async fn mark_mail_sent(&self, id: &str, now: Millis) -> R<()> {
        delegate!(self, s => s.mark_mail_sent(id, now))
    }
    async fn unsent_mail(&self, limit: i64) -> R<Vec<Mail>> {
        delegate!(self, s => s.unsent_mail(limit))
    }
    async fn create_device(&self, new: NewDevice, now: Millis) -> R<Device> {
        delegate!(self, s => s.create_device(new, now))
    }
    async fn list_devices(&self, user_id: &str) -> R<Vec<Device>> {
        delegate!(self, s => s.list_devices(user_id))
    }
    async fn device(&self, user_id: &str, id: &str) -> R<Option<Device>> {
        delegate!(self, s => s.device(user_id, id))
    }
    async fn device_by_id(&self, id: &str) -> R<Option<Device>> {
        delegate!(self, s => s.device_by_id(id))
    }
    async fn rename_device(&self, user_id: &str, id: &str, name: &str) -> R<bool> {
        delegate!(self, s => s.rename_device(user_id, id, name))
    }
    async fn delete_device(&self, user_id: &str, id: &str) -> R<bool> {
        delegate!(self, s => s.delete_device(user_id, id))
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
        delegate!(self, s => s.update_presence(user_id, id, p, now, events))
    }
    async fn stale_online_devices(&self, before: Millis, limit: i64) -> R<Vec<(String, String)>> {
        delegate!(self, s => s.stale_online_devices(before, limit))
    }
    async fn record_now_playing(
        &self,
        user_id: &str,
        device_id: &str,
        state_json: &str,
        now: Millis,
        event: impl FnOnce(i64) -> OutboxEvent + Send,
    ) -> R<bool> {
        delegate!(self, s => s.record_now_playing(user_id, device_id, state_json, now, event))
    }
    async fn now_playing(&self, user_id: &str) -> R<Vec<(String, String, Millis)>> {
        delegate!(self, s => s.now_playing(user_id))
    }
    async fn insert_events(&self, events: &[OutboxEvent]) -> R<()> {
        delegate!(self, s => s.insert_events(events))
    }
    async fn unpublished_events(&self, limit: i64) -> R<Vec<OutboxRow>> {
        delegate!(self, s => s.unpublished_events(limit))
    }
    async fn mark_events_published(&self, seqs: &[i64], now: Millis) -> R<u64> {
        delegate!(self, s => s.mark_events_published(seqs, now))
    }
    async fn count_unpublished_events(&self) -> R<i64> {
        delegate!(self, s => s.count_unpublished_events())
    }
    async fn purge_published_events(&self, before: Millis) -> R<u64> {
        delegate!(self, s => s.purge_published_events(before))
    }
    async fn take_lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> R<bool> {
        delegate!(self, s => s.take_lease(name, holder, now, ttl))
    }
    async fn create_pairing(&self, p: Pairing) -> R<()> {
        delegate!(self, s => s.create_pairing(p))
    }
    async fn pairing_by_code(&self, code: &str) -> R<Option<Pairing>> {
        delegate!(self, s => s.pairing_by_code(code))
    }
    async fn pairing(&self, user_id: &str, id: &str) -> R<Option<Pairing>> {
        delegate!(self, s => s.pairing(user_id, id))
    }
    async fn owned_counts(&self, user_id: &str, now: Millis) -> R<OwnedCounts> {
        delegate!(self, s => s.owned_counts(user_id, now))
    }
    async fn count_wrong_pairing_guess(&self, now: Millis) -> R<u64> {
        delegate!(self, s => s.count_wrong_pairing_guess(now))
    }
    async fn claim_pairing(&self, id: &str, device_id: &str, now: Millis) -> R<bool> {
        delegate!(self, s => s.claim_pairing(id, device_id, now))
    }
    async fn create_job(&self, job: &Job, events: Vec<OutboxEvent>) -> R<bool> {
        delegate!(self, s => s.create_job(job, events))
    }
    async fn claim_job(
        &self,
        id: &str,
        worker_id: &str,
        now: Millis,
        lease_until: Millis,
    ) -> R<Option<Job>> {
        delegate!(self, s => s.claim_job(id, worker_id, now, lease_until))
    }
    async fn change_job(
        &self,
        id: &str,
        worker_id: &str,
        change: JobChange,
        now: Millis,
        events: Vec<OutboxEvent>,
    ) -> R<bool> {
        delegate!(self, s => s.change_job(id, worker_id, change, now, events))
    }
    async fn job(&self, id: &str) -> R<Option<Job>> {
        delegate!(self, s => s.job(id))
    }
    async fn owner_jobs(&self, owner_id: &str, kind: &str, limit: i64) -> R<Vec<Job>> {
        delegate!(self, s => s.owner_jobs(owner_id, kind, limit))
    }
    async fn recording_jobs(&self, recording_id: &str) -> R<Vec<Job>> {
        delegate!(self, s => s.recording_jobs(recording_id))
    }
    async fn open_jobs(&self, limit: i64) -> R<Vec<Job>> {
        delegate!(self, s => s.open_jobs(limit))
    }
    async fn create_recording(&self, rec: &Recording, event: OutboxEvent) -> R<()> {
        delegate!(self, s => s.create_recording(rec, event))
    }
    async fn change_recording(
        &self,
        id: &str,
        from: &[&str],
        change: RecordingChange,
        events: Vec<OutboxEvent>,
    ) -> R<bool> {
        delegate!(self, s => s.change_recording(id, from, change, events))
    }
    async fn recording(&self, id: &str) -> R<Option<Recording>> {
        delegate!(self, s => s.recording(id))
    }
    async fn room_recordings(&self, room_id: &str) -> R<Vec<Recording>> {
        delegate!(self, s => s.room_recordings(room_id))
    }
    async fn node_recordings(&self, node_id: &str, status: &str) -> R<Vec<Recording>> {
        delegate!(self, s => s.node_recordings(node_id, status))
    }
    async fn recordings_handed_over_to(&self, node_id: &str) -> R<Vec<Recording>> {
        delegate!(self, s => s.recordings_handed_over_to(node_id))
    }
    async fn create_room(
        &self,
        owner_id: &str,
        name: &str,
        st: RoomSettings,
        now: Millis,
    ) -> R<Room> {
        delegate!(self, s => s.create_room(owner_id, name, st, now))
    }
    async fn list_rooms(&self, owner_id: &str) -> R<Vec<Room>> {
        delegate!(self, s => s.list_rooms(owner_id))
    }
    async fn room_by_owner_name(&self, owner_id: &str, name: &str) -> R<Option<Room>> {
        delegate!(self, s => s.room_by_owner_name(owner_id, name))
    }
    async fn room_by_id(&self, id: &str) -> R<Option<Room>> {
        delegate!(self, s => s.room_by_id(id))
    }
    async fn update_room(&self, owner_id: &str, name: &str, st: RoomSettings) -> R<Option<Room>> {
        delegate!(self, s => s.update_room(owner_id, name, st))
    }
    async fn delete_room(&self, owner_id: &str, name: &str) -> R<bool> {
        delegate!(self, s => s.delete_room(owner_id, name))
    }
    async fn bump_room_epoch(&self, room_id: &str, why: &str) -> R<i64> {
        delegate!(self, s => s.bump_room_epoch(room_id, why))
    }

    async fn room_revocations(&self, room_ids: &[String]) -> R<Vec<(String, i64, String)>> {
        delegate!(self, s => s.room_revocations(room_ids))
    }
    async fn invite_member(&self, room_id: &str, email: &str, now: Millis) -> R<Membership> {
        delegate!(self, s => s.invite_member(room_id, email, now))
    }
    async fn room_members(&self, room_id: &str) -> R<Vec<Membership>> {
        delegate!(self, s => s.room_members(room_id))
    }
    async fn remove_member(&self, room_id: &str, email: &str) -> R<bool> {
        delegate!(self, s => s.remove_member(room_id, email))
    }
    async fn invitations(&self, email: &str) -> R<Vec<Invitation>> {
        delegate!(self, s => s.invitations(email))
    }
    async fn answer_invitation(
        &self,
        id: &str,
        email: &str,
        user_id: &str,
        accept: bool,
        now: Millis,
    ) -> R<Option<Membership>> {
        delegate!(self, s => s.answer_invitation(id, email, user_id, accept, now))
    }
    async fn is_member(&self, room_id: &str, user_id: &str) -> R<bool> {
        delegate!(self, s => s.is_member(room_id, user_id))
    }
    async fn upsert_tracks(
        &self,
        user_id: &str,
        device_id: &str,
        tracks: &[TrackMeta],
        now: Millis,
    ) -> R<SyncCounts> {
        delegate!(self, s => s.upsert_tracks(user_id, device_id, tracks, now))
    }
    async fn delete_tracks(&self, user_id: &str, device_id: &str, client_ids: &[String]) -> R<u64> {
        delegate!(self, s => s.delete_tracks(user_id, device_id, client_ids))
    }
    async fn list_tracks(&self, user_id: &str, q: &LibraryQuery) -> R<Vec<LibraryTrack>> {
        delegate!(self, s => s.list_tracks(user_id, q))
    }
    async fn beat_node(&self, node: &NodeRow) -> R<()> {
        delegate!(self, s => s.beat_node(node))
    }
    async fn nodes(&self) -> R<Vec<NodeRow>> {
        delegate!(self, s => s.nodes())
    }
    async fn drain_node(&self, id: &str) -> R<bool> {
        delegate!(self, s => s.drain_node(id))
    }
    async fn remove_node(&self, id: &str) -> R<()> {
        delegate!(self, s => s.remove_node(id))
    }
    async fn forget_nodes(&self, before: Millis) -> R<u64> {
        delegate!(self, s => s.forget_nodes(before))
    }
    async fn room_home(&self, room_id: &str) -> R<Option<String>> {
        delegate!(self, s => s.room_home(room_id))
    }
    async fn place_room(
        &self,
        room_id: &str,
        node_id: &str,
        now: Millis,
        alive_since: Millis,
    ) -> R<String> {
        delegate!(self, s => s.place_room(room_id, node_id, now, alive_since))
    }
    async fn node_rooms(&self, node_id: &str) -> R<Vec<String>> {
        delegate!(self, s => s.node_rooms(node_id))
    }
    async fn move_room(&self, room_id: &str, from: &str, to: &str, now: Millis) -> R<bool> {
        delegate!(self, s => s.move_room(room_id, from, to, now))
    }
    async fn release_room(&self, room_id: &str, node_id: &str) -> R<()> {
        delegate!(self, s => s.release_room(room_id, node_id))
    }
    async fn delete_finished_job(&self, owner_id: &str, id: &str) -> R<bool> {
        delegate!(self, s => s.delete_finished_job(owner_id, id))
    }
    async fn listening_cursor(&self, device_id: &str) -> R<Option<(String, i64)>> {
        delegate!(self, s => s.listening_cursor(device_id))
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
        delegate!(self, s => s.record_listening(user_id, device_id, cursor, version, plays, now))
    }
    async fn listening_stats(&self, user_id: &str, since: Millis, limit: i64) -> R<ListeningStats> {
        delegate!(self, s => s.listening_stats(user_id, since, limit))
    }
    async fn recent_plays(
        &self,
        user_id: &str,
        before: (Millis, &str),
        limit: i64,
    ) -> R<Vec<PlayRow>> {
        delegate!(self, s => s.recent_plays(user_id, before, limit))
    }
}
