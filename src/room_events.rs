//! `room.events` from the media plane: the SFU's lifecycle events become outbox rows.
//!
//! [`RoomEventTracker`] is the pure part: it turns `SfuEvent`s into room events and
//! decides when a room starts (its first participant connects) and ends (its last
//! connected participant leaves). A peer that never connects never "joins", and its
//! tracks are announced only once it has joined. Rooms live on one worker, so the
//! tracker keys peers by (worker, peer).
//!
//! [`run`] is the driver: events are written to the outbox in arrival order; while
//! the database is unavailable they wait in memory and are retried, never dropped.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use control_api::AppState;
use control_api::events::outbox_event;
use control_api::store::Store;
use events::EventType;
use media_core::str0m::media::MediaKind;
use media_core::{PeerId, PeerRole, RemoveReason, SfuEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::warn;

type PeerKey = (usize, PeerId);

/// One room event: its type, the room (the ordering key) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    pub kind: EventType,
    pub room: String,
    pub data: Value,
}

#[derive(Debug, Default)]
pub struct RoomEventTracker {
    /// Connected participants per room.
    joined: HashMap<String, HashSet<PeerKey>>,
    /// Tracks published by peers that have not connected yet.
    pending_tracks: HashMap<PeerKey, Vec<Value>>,
    /// Tracks announced, so their end is announced too.
    announced: HashSet<(PeerKey, String)>,
}

fn participant_id(worker: usize, peer: PeerId) -> String {
    format!("w{worker}-{peer}")
}

fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn reason_name(r: RemoveReason) -> &'static str {
    match r {
        RemoveReason::Requested => "left",
        RemoveReason::ConnectTimeout => "connect_timeout",
        RemoveReason::Disconnected => "disconnected",
        RemoveReason::ClosedByRemote => "closed_by_remote",
        RemoveReason::Failed => "failed",
    }
}

impl RoomEventTracker {
    pub fn on_event(&mut self, worker: usize, ev: &SfuEvent) -> Vec<RoomEvent> {
        let mut out = Vec::new();
        match ev {
            // A room participant is in the room from its join (it may never send media);
            // a WHIP/WHEP session from the moment it connects.
            SfuEvent::PeerJoined {
                peer,
                room,
                identity,
                role: role @ PeerRole::Participant,
            }
            | SfuEvent::PeerConnected {
                peer,
                room,
                identity,
                role,
            } => {
                let key = (worker, *peer);
                let room = room.to_string();
                let members = self.joined.entry(room.clone()).or_default();
                if members.is_empty() {
                    out.push(RoomEvent {
                        kind: EventType::RoomStarted,
                        room: room.clone(),
                        data: json!({"room": room}),
                    });
                }
                if members.insert(key) {
                    out.push(RoomEvent {
                        kind: EventType::RoomParticipantJoined,
                        room: room.clone(),
                        data: json!({
                            "room": room,
                            "participant": identity,
                            "participant_id": participant_id(worker, *peer),
                            "role": role.as_str(),
                        }),
                    });
                }
                for data in self.pending_tracks.remove(&key).unwrap_or_default() {
                    if let Some(mid) = data["track"].as_str() {
                        self.announced.insert((key, mid.to_owned()));
                    }
                    out.push(RoomEvent {
                        kind: EventType::RoomTrackPublished,
                        room: room.clone(),
                        data,
                    });
                }
            }
            SfuEvent::TrackPublished {
                room,
                peer,
                identity,
                mid,
                kind,
            } => {
                let key = (worker, *peer);
                let room = room.to_string();
                let data = json!({
                    "room": room,
                    "participant": identity,
                    "participant_id": participant_id(worker, *peer),
                    "track": mid.to_string(),
                    "kind": kind_name(*kind),
                });
                if self.joined.get(&room).is_some_and(|m| m.contains(&key)) {
                    self.announced.insert((key, mid.to_string()));
                    out.push(RoomEvent {
                        kind: EventType::RoomTrackPublished,
                        room,
                        data,
                    });
                } else {
                    self.pending_tracks.entry(key).or_default().push(data);
                }
            }
            SfuEvent::TrackUnpublished { room, peer, mid } => {
                let key = (worker, *peer);
                if self.announced.remove(&(key, mid.to_string())) {
                    let room = room.to_string();
                    out.push(RoomEvent {
                        kind: EventType::RoomTrackUnpublished,
                        room: room.clone(),
                        data: json!({
                            "room": room,
                            "participant_id": participant_id(worker, *peer),
                            "track": mid.to_string(),
                        }),
                    });
                }
            }
            SfuEvent::SpeakerChanged {
                room,
                peer,
                identity,
                mid,
            } => {
                let key = (worker, *peer);
                let room = room.to_string();
                if self.joined.get(&room).is_some_and(|m| m.contains(&key)) {
                    out.push(RoomEvent {
                        kind: EventType::RoomSpeakerChanged,
                        room: room.clone(),
                        data: json!({
                            "room": room,
                            "participant": identity,
                            "participant_id": participant_id(worker, *peer),
                            "track": mid.to_string(),
                        }),
                    });
                }
            }
            SfuEvent::PeerJoined { .. }
            | SfuEvent::TrackMuted { .. }
            | SfuEvent::LayersWanted { .. } => {}
            SfuEvent::PeerRemoved {
                peer,
                room,
                identity,
                reason,
            } => {
                let key = (worker, *peer);
                self.pending_tracks.remove(&key);
                self.announced.retain(|(k, _)| *k != key);
                let room = room.to_string();
                let Some(members) = self.joined.get_mut(&room) else {
                    return out;
                };
                if members.remove(&key) {
                    out.push(RoomEvent {
                        kind: EventType::RoomParticipantLeft,
                        room: room.clone(),
                        data: json!({
                            "room": room,
                            "participant": identity,
                            "participant_id": participant_id(worker, *peer),
                            "reason": reason_name(*reason),
                        }),
                    });
                }
                if members.is_empty() {
                    self.joined.remove(&room);
                    out.push(RoomEvent {
                        kind: EventType::RoomEnded,
                        room: room.clone(),
                        data: json!({"room": room}),
                    });
                }
            }
        }
        out
    }
}

/// Writes the media plane's room events to the outbox until the channel closes.
pub async fn run(st: AppState, mut rx: mpsc::UnboundedReceiver<(usize, SfuEvent)>) {
    let mut tracker = RoomEventTracker::default();
    let source = st.event_source();
    while let Some((worker, ev)) = rx.recv().await {
        let now = control_api::auth::now_millis();
        let room_events = tracker.on_event(worker, &ev);
        for e in &room_events {
            match e.kind {
                EventType::RoomStarted => {
                    tokio::spawn(auto_record(st.clone(), e.room.clone()));
                }
                EventType::RoomEnded => {
                    tokio::spawn(stop_at_room_end(st.clone(), e.room.clone()));
                }
                _ => {}
            }
        }
        let rows: Vec<_> = room_events
            .into_iter()
            .map(|e| {
                outbox_event(
                    &source,
                    e.kind,
                    &e.room,
                    format!("room/{}", e.room),
                    e.data,
                    now,
                )
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match st.db.insert_events(&rows).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, events = rows.len(), "room events wait: outbox write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        st.events_written();
    }
}

/// A room that starts with `auto_record` set is recorded from its start.
async fn auto_record(st: AppState, room: String) {
    match st.db.room_by_name(&room).await {
        Ok(Some(r)) if r.auto_record => {
            if let Err(e) = control_api::routes::recordings::start_recording(&st, &r, "auto").await
            {
                warn!(%room, error = ?e, "auto-record did not start");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(%room, error = %e, "auto-record: room settings unavailable"),
    }
}

/// A room's recording ends with the room (its last participant left).
async fn stop_at_room_end(st: AppState, room: String) {
    let Some(ctl) = st.recordings.clone() else {
        return;
    };
    let Some(id) = ctl.recording_of_room(&room) else {
        return;
    };
    match ctl.stop(&id, "room_ended").await {
        Ok(Some(manifest)) => {
            if let Err(e) =
                control_api::routes::recordings::mark_stopped(&st, &id, &room, &manifest).await
            {
                // The recorder's own Stopped report makes the same change.
                warn!(recording = %id, error = %e, "marking the recording stopped failed");
            }
        }
        Ok(None) => {}
        Err(e) => warn!(recording = %id, error = %e, "stopping the recording at room end failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::RoomId;
    use media_core::str0m::media::Mid;

    fn names(v: &[RoomEvent]) -> Vec<&'static str> {
        v.iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn rooms_start_with_the_first_join_and_end_with_the_last_leave() {
        let mut t = RoomEventTracker::default();
        let room = RoomId::parse("demo").unwrap();
        let (a, b, ghost) = (PeerId(1), PeerId(2), PeerId(3));
        let published = |peer, mid: &str| SfuEvent::TrackPublished {
            room: room.clone(),
            peer,
            identity: "phone".into(),
            mid: Mid::from(mid),
            kind: MediaKind::Audio,
        };
        let connected = |peer, identity: &str| SfuEvent::PeerConnected {
            peer,
            room: room.clone(),
            identity: identity.into(),
            role: PeerRole::Publisher,
        };
        let removed = |peer, reason| SfuEvent::PeerRemoved {
            peer,
            room: room.clone(),
            identity: "x".into(),
            reason,
        };
        // Tracks wait for their publisher to connect.
        assert!(t.on_event(0, &published(a, "0")).is_empty());
        let e = t.on_event(0, &connected(a, "phone"));
        assert_eq!(
            names(&e),
            [
                "room.started",
                "room.participant_joined",
                "room.track_published"
            ]
        );
        assert_eq!(e[2].data["track"], "0");
        assert_eq!(e[1].data["participant"], "phone");
        assert_eq!(
            names(&t.on_event(0, &connected(b, "browser"))),
            ["room.participant_joined"]
        );
        // A peer that never connected leaves no trace.
        assert!(t.on_event(0, &published(ghost, "0")).is_empty());
        assert!(
            t.on_event(0, &removed(ghost, RemoveReason::ConnectTimeout))
                .is_empty()
        );
        let unpub = SfuEvent::TrackUnpublished {
            room: room.clone(),
            peer: a,
            mid: Mid::from("0"),
        };
        assert_eq!(names(&t.on_event(0, &unpub)), ["room.track_unpublished"]);
        assert!(t.on_event(0, &unpub).is_empty(), "announced once");
        let e = t.on_event(0, &removed(a, RemoveReason::Requested));
        assert_eq!(names(&e), ["room.participant_left"]);
        assert_eq!(e[0].data["reason"], "left");
        assert_eq!(
            names(&t.on_event(0, &removed(b, RemoveReason::Disconnected))),
            ["room.participant_left", "room.ended"]
        );
        // Same peer number on another worker is another participant.
        assert_eq!(
            names(&t.on_event(1, &connected(a, "p"))),
            ["room.started", "room.participant_joined"]
        );
    }
}
