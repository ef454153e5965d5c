//! `Hub`: this node's live sockets, and the two tasks that feed them.
//!
//! - Phones hold one *device socket* each (`/api/v1/devices/socket`); remote-control
//!   commands from `playback.events` go down it.
//! - Browsers hold *user sockets* (`/api/v1/events/socket`); every `now.playing` and
//!   `device.status` event of their user is pushed to all of them.
//!
//! Delivery goes through the bus, never straight from the HTTP handler to a socket,
//! so a phone on another node is reached the same way as one on this node. Each node
//! consumes with its own group (`streamcore-hub-<node>`) and drops repeats by event id.
//!
//! [`PresenceSweeper`] marks devices offline whose heartbeats stopped (a phone whose
//! node died, or an HTTP-only device), writing `device.offline` like any other flip.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use events::{Envelope, EventType, SeenIds, Topic};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::auth::now_millis;
use crate::events::presence_events;
use crate::state::AppState;
use crate::store::{Millis, Presence, Store};

/// Messages a socket may have queued before the slowest reader loses them; a socket
/// that far behind is closed (the client reconnects and gets a snapshot).
pub const SOCKET_QUEUE: usize = 256;

/// Pushed events older than this when they arrive are not pushed (a consumer catching
/// up after a restart must not replay history to live screens).
const PUSH_MAX_AGE_MS: i64 = 30_000;

struct DeviceSocket {
    conn: String,
    user_id: String,
    opened_at: Millis,
    tx: mpsc::Sender<String>,
}

/// One browser socket of a user.
struct UserSocket {
    id: u64,
    opened_at: Millis,
    tx: mpsc::Sender<String>,
}

#[derive(Default)]
pub struct Hub {
    devices: Mutex<HashMap<String, DeviceSocket>>,
    users: Mutex<HashMap<String, Vec<UserSocket>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// The device's socket `conn` becomes the one commands go to (a newer socket of
    /// the same device replaces an older one).
    pub fn register_device(
        &self,
        device_id: &str,
        conn: &str,
        user_id: &str,
    ) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        if let Ok(mut d) = self.devices.lock() {
            d.insert(
                device_id.to_owned(),
                DeviceSocket {
                    conn: conn.to_owned(),
                    user_id: user_id.to_owned(),
                    opened_at: now_millis(),
                    tx,
                },
            );
        }
        rx
    }

    pub fn unregister_device(&self, device_id: &str, conn: &str) {
        if let Ok(mut d) = self.devices.lock()
            && d.get(device_id).is_some_and(|s| s.conn == conn)
        {
            d.remove(device_id);
        }
    }

    /// True if the device has a socket on this node and the message was queued.
    pub fn send_to_device(&self, device_id: &str, msg: String) -> bool {
        let Ok(d) = self.devices.lock() else {
            return false;
        };
        d.get(device_id).is_some_and(|s| s.tx.try_send(msg).is_ok())
    }

    pub fn register_user(&self, user_id: &str) -> (u64, mpsc::Receiver<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        if let Ok(mut u) = self.users.lock() {
            u.entry(user_id.to_owned()).or_default().push(UserSocket {
                id,
                opened_at: now_millis(),
                tx,
            });
        }
        (id, rx)
    }

    pub fn unregister_user(&self, user_id: &str, id: u64) {
        if let Ok(mut u) = self.users.lock()
            && let Some(v) = u.get_mut(user_id)
        {
            v.retain(|s| s.id != id);
            if v.is_empty() {
                u.remove(user_id);
            }
        }
    }

    /// Queues `msg` on every socket of the user here; a socket whose queue is full is
    /// dropped (its task sees the channel close and ends the connection).
    pub fn send_to_user(&self, user_id: &str, msg: &str) -> usize {
        let Ok(mut u) = self.users.lock() else {
            return 0;
        };
        let Some(v) = u.get_mut(user_id) else {
            return 0;
        };
        v.retain(|s| s.tx.try_send(msg.to_owned()).is_ok());
        v.len()
    }

    /// Ends the device's socket if it was opened before `before` (the device was
    /// removed then; a socket opened later holds a credential that still verified
    /// after the removal, which cannot be): `last` is its last message, then it closes.
    pub fn end_device(&self, device_id: &str, before: Millis, last: &str) -> bool {
        let Ok(mut d) = self.devices.lock() else {
            return false;
        };
        if d.get(device_id).is_none_or(|s| s.opened_at > before) {
            return false;
        }
        // Dropping the sender closes the socket once it has sent what is queued.
        if let Some(s) = d.remove(device_id) {
            let _ = s.tx.try_send(last.to_owned());
        }
        true
    }

    /// Ends every socket of the user opened before `before` — browsers' and the user's
    /// devices' (their sessions ended then) — each with `last` as its last message.
    /// Returns how many were ended.
    pub fn end_user(&self, user_id: &str, before: Millis, last: &str) -> usize {
        let mut ended = 0;
        if let Ok(mut u) = self.users.lock()
            && let Some(v) = u.get_mut(user_id)
        {
            v.retain(|s| {
                if s.opened_at > before {
                    return true;
                }
                let _ = s.tx.try_send(last.to_owned());
                ended += 1;
                false
            });
            if v.is_empty() {
                u.remove(user_id);
            }
        }
        if let Ok(mut d) = self.devices.lock() {
            d.retain(|_, s| {
                if s.user_id != user_id || s.opened_at > before {
                    return true;
                }
                let _ = s.tx.try_send(last.to_owned());
                ended += 1;
                false
            });
        }
        ended
    }

    /// The user's sockets on this node: their browsers' and their devices'.
    pub fn sockets_of(&self, user_id: &str) -> usize {
        let browsers = self
            .users
            .lock()
            .map(|u| u.get(user_id).map_or(0, Vec::len))
            .unwrap_or(0);
        let devices = self
            .devices
            .lock()
            .map(|d| d.values().filter(|s| s.user_id == user_id).count())
            .unwrap_or(0);
        browsers + devices
    }

    /// Device sockets and user sockets on this node.
    pub fn counts(&self) -> (usize, usize) {
        let d = self.devices.lock().map(|d| d.len()).unwrap_or(0);
        let u = self
            .users
            .lock()
            .map(|u| u.values().map(Vec::len).sum())
            .unwrap_or(0);
        (d, u)
    }
}

/// A background task with a stop signal.
pub struct Task {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

impl Task {
    pub fn new(stop: watch::Sender<bool>, task: tokio::task::JoinHandle<()>) -> Task {
        Task { stop, task }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut t = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut t)
            .await
            .is_err()
        {
            t.abort();
        }
    }
}

/// Consumes `playback.events`, `now.playing`, `device.status`, `transcode.jobs` and
/// `recording.events` and delivers them to this node's sockets.
pub fn start_consumer(st: &AppState) -> Result<Task, events::BusError> {
    let group = format!("streamcore-hub-{}", st.node_id);
    let sub = st.bus.subscribe(
        &group,
        &[
            Topic::PlaybackEvents,
            Topic::NowPlaying,
            Topic::DeviceStatus,
            Topic::TranscodeJobs,
            Topic::RecordingEvents,
        ],
    )?;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(consume(st.clone(), sub, rx));
    Ok(Task { stop, task })
}

/// Pushes of recording events, in the order they were consumed: each needs its
/// recording's owner looked up first, one after the other.
type RecordingPushes = mpsc::UnboundedSender<(String, String)>;

fn start_recording_pushes(st: &AppState) -> RecordingPushes {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
    let st = st.clone();
    tokio::spawn(async move {
        use crate::store::Store;
        while let Some((recording, msg)) = rx.recv().await {
            match st.db.recording(&recording).await {
                Ok(Some(r)) => {
                    st.hub.send_to_user(&r.owner_id, &msg);
                }
                Ok(None) => {}
                Err(e) => debug!(recording, error = %e, "recording event not pushed: no owner"),
            }
        }
    });
    tx
}

async fn consume(st: AppState, mut sub: events::Subscription, mut stop: watch::Receiver<bool>) {
    let mut seen = SeenIds::new(50_000);
    let recordings = start_recording_pushes(&st);
    loop {
        let d = tokio::select! {
            d = sub.next() => d,
            _ = stop.changed() => return,
        };
        let d = match d {
            Ok(d) => d,
            Err(events::BusError::Closed) => return,
            Err(e) => {
                debug!(error = %e, "hub consumer: bus error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if !st.event_key.verify(&d.payload, d.signature.as_deref()) {
            // Not from a node holding the event key: a command in it could reach any
            // device, a push any user.
            warn!(topic = %d.topic, partition = d.partition, offset = d.offset, key = %d.key, "hub consumer: record without a valid signature ignored");
        } else {
            match Envelope::from_slice(&d.payload) {
                Ok(env) => {
                    if seen.first_time(&env.id) {
                        deliver(&st, &env, &recordings).await;
                    }
                }
                Err(e) => {
                    warn!(topic = %d.topic, offset = d.offset, error = %e, "hub consumer: unreadable event skipped")
                }
            }
        }
        if let Err(e) = sub.commit(&d) {
            debug!(error = %e, "hub consumer: offset not stored");
        }
    }
}

/// Milliseconds since the envelope's time (0 if unreadable).
fn age_ms(env: &Envelope) -> i64 {
    env.time_millis().map_or(0, |t| now_millis() - t)
}

async fn deliver(st: &AppState, env: &Envelope, recordings: &RecordingPushes) {
    let Some(kind) = env.event_type() else {
        return;
    };
    let data = &env.data;
    let user = data["user_id"].as_str().unwrap_or_default();
    let age = age_ms(env);
    // Sessions end however late the news arrives: only sockets opened before the
    // event are closed, so a late or repeated one harms nothing.
    match kind {
        EventType::DeviceRemoved => {
            let (device, at) = (
                data["device_id"].as_str().unwrap_or_default(),
                data["removed_at"].as_i64().unwrap_or(0),
            );
            let last = crate::routes::control::error_msg(
                "not_found",
                "this device was removed from the account",
                None,
            );
            if st.hub.end_device(device, at, &last) {
                info!(device, "device removed: its socket closed");
            }
            return;
        }
        EventType::UserSessionsEnded => {
            let at = data["ended_at"].as_i64().unwrap_or(0);
            let last = crate::routes::control::error_msg(
                "session_ended",
                "your sessions were ended; sign in again",
                None,
            );
            let n = st.hub.end_user(user, at, &last);
            if n > 0 {
                info!(user, sockets = n, reason = %data["reason"], "sessions ended: sockets closed");
            }
            return;
        }
        _ => {}
    }
    if kind.is_command() {
        let device = data["device_id"].as_str().unwrap_or_default();
        if age > st.config.command_ttl.as_millis() as i64 {
            info!(device, command = %data["command_id"], age_ms = age, "command too old; not delivered");
            return;
        }
        // Signed by a node, and still only to a device of the user it names.
        match st.db.device(user, device).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                warn!(device, user, command = %data["command_id"], "command names a device that is not its user's; not delivered");
                return;
            }
            Err(e) => {
                warn!(device, command = %data["command_id"], error = %e, "command not delivered: its device could not be checked");
                return;
            }
        }
        let mut msg = data.clone();
        msg["type"] = json!("command");
        msg["event_id"] = json!(env.id);
        if st.hub.send_to_device(device, msg.to_string()) {
            debug!(device, command = %data["command_id"], "command delivered to the device socket");
        }
        return;
    }
    if age > PUSH_MAX_AGE_MS {
        return;
    }
    let push_type = match kind.topic() {
        Topic::NowPlaying => "now_playing",
        Topic::DeviceStatus => "device_status",
        Topic::PlaybackEvents => "playback_event",
        // A user's jobs: progress and results for the browser that uploaded.
        Topic::TranscodeJobs => "transcode_job",
        // The room owner's recordings page follows their status.
        Topic::RecordingEvents => "recording",
        _ => return,
    };
    let msg = json!({
        "type": push_type,
        "event": env.kind,
        "event_id": env.id,
        "time": env.time,
        "data": data,
    });
    if kind.topic() == Topic::RecordingEvents {
        // Recording events name the recording, not its owner: the owner is looked up.
        if let Some(id) = data["recording_id"].as_str() {
            let _ = recordings.send((id.to_owned(), msg.to_string()));
        }
        return;
    }
    st.hub.send_to_user(user, &msg.to_string());
}

/// Marks devices offline whose heartbeats stopped for longer than the online window.
pub fn start_sweeper(st: &AppState, every: Duration) -> Task {
    let (stop, mut rx) = watch::channel(false);
    let st = st.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = rx.changed() => return,
            }
            let now = now_millis();
            let stale_before = now - st.config.online_window.as_millis() as i64;
            let stale = match st.db.stale_online_devices(stale_before, 500).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "presence sweep failed");
                    continue;
                }
            };
            let source = st.event_source();
            let mut wrote = false;
            for (_, device) in stale {
                let r = st
                    .db
                    .update_presence(
                        None,
                        &device,
                        &Presence::Expire { stale_before },
                        now,
                        |c| presence_events(&source, c, now),
                    )
                    .await;
                match r {
                    Ok(Some(c)) if c.went_offline() => {
                        info!(%device, "device offline: heartbeats stopped");
                        wrote = true;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(%device, error = %e, "presence sweep: update failed"),
                }
            }
            if wrote {
                st.events_written();
            }
        }
    });
    Task { stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_register_replace_and_receive() {
        let hub = Hub::default();
        let mut old = hub.register_device("d1", "c1", "u1");
        let mut new = hub.register_device("d1", "c2", "u1");
        assert!(hub.send_to_device("d1", "x".into()));
        assert_eq!(new.recv().await.as_deref(), Some("x"));
        assert!(
            old.recv().await.is_none(),
            "the replaced socket's queue closed"
        );
        hub.unregister_device("d1", "c1"); // the old socket closing leaves the new one
        assert!(hub.send_to_device("d1", "y".into()));
        hub.unregister_device("d1", "c2");
        assert!(!hub.send_to_device("d1", "z".into()));

        let (a, mut ra) = hub.register_user("u1");
        let (_b, mut rb) = hub.register_user("u1");
        assert_eq!(hub.send_to_user("u1", "s"), 2);
        assert_eq!(ra.recv().await.as_deref(), Some("s"));
        assert_eq!(rb.recv().await.as_deref(), Some("s"));
        hub.unregister_user("u1", a);
        assert_eq!(hub.send_to_user("u1", "t"), 1);
        assert_eq!(hub.counts(), (0, 1));
    }

    #[tokio::test]
    async fn ending_sessions_closes_only_the_sockets_opened_before() {
        let hub = Hub::default();
        let mut phone = hub.register_device("d1", "c1", "u1");
        let mut other_phone = hub.register_device("d2", "c2", "u2");
        let (_, mut browser) = hub.register_user("u1");
        let (_, mut other_browser) = hub.register_user("u2");
        let now = now_millis();
        // An event from before these sockets opened ends none of them.
        assert_eq!(hub.end_user("u1", now - 60_000, "old"), 0);
        assert!(!hub.end_device("d1", now - 60_000, "old"));
        assert_eq!(hub.end_user("u1", now, "ended"), 2);
        for rx in [&mut phone, &mut browser] {
            assert_eq!(rx.recv().await.as_deref(), Some("ended"));
            assert!(rx.recv().await.is_none(), "closed after its last message");
        }
        assert_eq!(hub.counts(), (1, 1), "the other user's sockets stay");
        assert!(hub.end_device("d2", now, "removed"));
        assert_eq!(other_phone.recv().await.as_deref(), Some("removed"));
        assert!(other_phone.recv().await.is_none());
        assert_eq!(hub.send_to_user("u2", "still here"), 1);
        assert_eq!(other_browser.recv().await.as_deref(), Some("still here"));
    }
}
