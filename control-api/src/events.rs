//! The events the control plane writes to its outbox, built in one place so every
//! producer uses the same envelope, key and data shape (`docs/events.md`).
//!
//! Ordering keys: device events (`playback.events`, `device.status`, `now.playing`)
//! are keyed by device id, so a device's commands, states and presence reach every
//! consumer in the order they happened.

use events::{Envelope, EventType};
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::{Device, Millis, OutboxEvent, PresenceChange};

/// An outbox row for one event.
pub fn outbox_event(
    source: &str,
    kind: EventType,
    key: &str,
    subject: String,
    data: Value,
    now: Millis,
) -> OutboxEvent {
    let env = Envelope::new(kind, now, source, subject, data);
    OutboxEvent {
        id: env.id.clone(),
        topic: kind.topic().name().to_owned(),
        key: key.to_owned(),
        payload: env.to_json(),
        created_at: now,
    }
}

/// The data of every `device.status` event.
pub fn device_status_data(d: &Device) -> Value {
    json!({
        "device_id": d.id,
        "user_id": d.user_id,
        "name": d.name,
        "kind": d.kind,
        "online": d.online,
        "capabilities": d.capabilities,
        "last_seen": d.last_seen,
    })
}

/// The `device.status` events a presence change makes: online/offline on a flip,
/// capabilities_changed when they changed.
pub fn presence_events(source: &str, change: &PresenceChange, now: Millis) -> Vec<OutboxEvent> {
    let d = &change.device;
    let mut out = Vec::new();
    let mut push = |kind| {
        out.push(outbox_event(
            source,
            kind,
            &d.id,
            format!("device/{}", d.id),
            device_status_data(d),
            now,
        ))
    };
    if change.came_online() {
        push(EventType::DeviceOnline);
    }
    if change.capabilities_changed() {
        push(EventType::DeviceCapabilitiesChanged);
    }
    if change.went_offline() {
        push(EventType::DeviceOffline);
    }
    out
}

impl AppState {
    /// Wakes the relay: events were committed to the outbox.
    pub fn events_written(&self) {
        self.events_queued.notify_one();
    }
}

/// `device.removed`: every node closes the device's socket (opened before `now`).
pub fn device_removed_event(
    source: &str,
    user_id: &str,
    device_id: &str,
    now: Millis,
) -> OutboxEvent {
    outbox_event(
        source,
        EventType::DeviceRemoved,
        device_id,
        format!("device/{device_id}"),
        json!({"device_id": device_id, "user_id": user_id, "removed_at": now}),
        now,
    )
}

/// `user.sessions_ended`: every node closes the user's sockets (opened before `now`).
pub fn sessions_ended_event(source: &str, user_id: &str, reason: &str, now: Millis) -> OutboxEvent {
    outbox_event(
        source,
        EventType::UserSessionsEnded,
        user_id,
        format!("user/{user_id}"),
        json!({"user_id": user_id, "reason": reason, "ended_at": now}),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Capabilities;

    fn device(online: bool, mic: bool) -> Device {
        Device {
            id: "d1".into(),
            user_id: "u1".into(),
            name: "Phone".into(),
            kind: "phone".into(),
            capabilities: Capabilities {
                mic,
                ..Capabilities::default()
            },
            created_at: 0,
            last_seen: Some(5),
            online,
            control_conn: None,
        }
    }

    fn types(change: &PresenceChange) -> Vec<String> {
        presence_events("streamcore/t", change, 10)
            .iter()
            .map(|e| {
                assert_eq!(e.topic, "device.status");
                assert_eq!(e.key, "d1");
                Envelope::from_slice(e.payload.as_bytes()).unwrap().kind
            })
            .collect()
    }

    #[test]
    fn presence_flips_and_capability_changes_make_events() {
        let c = |was_online, online, old_mic, mic| PresenceChange {
            device: device(online, mic),
            was_online,
            old_capabilities: Capabilities {
                mic: old_mic,
                ..Capabilities::default()
            },
        };
        assert_eq!(types(&c(false, true, false, false)), ["device.online"]);
        assert_eq!(types(&c(true, false, false, false)), ["device.offline"]);
        assert!(types(&c(true, true, false, false)).is_empty());
        assert_eq!(
            types(&c(true, true, false, true)),
            ["device.capabilities_changed"]
        );
        assert_eq!(
            types(&c(false, true, false, true)),
            ["device.online", "device.capabilities_changed"]
        );
    }
}
