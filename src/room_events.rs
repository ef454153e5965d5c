//! `room.events` from the media plane: the SFU's lifecycle events become outbox rows.
//!
//! [`RoomEventTracker`] is the pure part: it turns `SfuEvent`s into room events and
//! decides when a room starts (its first participant connects) and ends (it has been
//! empty for the grace period: a phone that drops off for a few seconds and comes back
//! finds the same room, and its recording goes on). A peer that never connects never
//! "joins", and its tracks are announced only once it has joined. Rooms live on one
//! worker, so the tracker keys peers by (worker, peer). Time is the caller's.
//!
//! [`run`] is the driver: events are written to the outbox in arrival order; while
//! the database is unavailable they wait in memory and are retried, never dropped.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use control_api::AppState;
use control_api::events::outbox_event;
use control_api::store::Store;
use events::EventType;
use media_core::str0m::media::MediaKind;
use media_core::{PeerId, PeerRole, RemoveReason, SfuEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

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
    /// Other nodes' participants per room (shadows): they keep the room going here
    /// (it neither ends nor is let go while they are in it), but their node reports
    /// their joins and leaves.
    relayed: HashMap<String, HashSet<PeerKey>>,
    /// Tracks published by peers that have not connected yet.
    pending_tracks: HashMap<PeerKey, Vec<Value>>,
    /// Tracks announced, so their end is announced too.
    announced: HashSet<(PeerKey, String)>,
    /// How long a room stays after its last participant left.
    grace: Duration,
    /// Empty rooms within their grace, and when it runs out.
    ending: HashMap<String, Instant>,
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
        RemoveReason::Replaced => "replaced",
        RemoveReason::Revoked => "revoked",
    }
}

impl RoomEventTracker {
    /// A tracker whose rooms end once they have been empty for `grace`.
    pub fn new(grace: Duration) -> Self {
        RoomEventTracker {
            grace,
            ..RoomEventTracker::default()
        }
    }

    /// `room.started` when someone arrives in an empty room, unless it is back within
    /// its grace (the same room goes on).
    fn start(&mut self, room: &str, out: &mut Vec<RoomEvent>) {
        let first = self.is_empty(room);
        let resumed = self.ending.remove(room).is_some();
        if first && !resumed {
            out.push(RoomEvent {
                kind: EventType::RoomStarted,
                room: room.to_owned(),
                data: json!({"room": room}),
            });
        }
    }

    /// Nobody is in the room here, from this node or another.
    fn is_empty(&self, room: &str) -> bool {
        self.joined.get(room).is_none_or(HashSet::is_empty)
            && self.relayed.get(room).is_none_or(HashSet::is_empty)
    }

    /// When [`Self::poll_ended`] next has something to say.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ending.values().min().copied()
    }

    /// `room.ended` for every room whose grace ran out by `now`.
    pub fn poll_ended(&mut self, now: Instant) -> Vec<RoomEvent> {
        let mut due: Vec<String> = self
            .ending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(room, _)| room.clone())
            .collect();
        due.sort();
        due.into_iter()
            .map(|room| {
                self.ending.remove(&room);
                ended(room)
            })
            .collect()
    }

    pub fn on_event(&mut self, worker: usize, ev: &SfuEvent, now: Instant) -> Vec<RoomEvent> {
        let mut out = Vec::new();
        match ev {
            // A room participant is in the room from its join (it may never send media);
            // a WHIP/WHEP session from the moment it connects. Another node's
            // participant (`relayed`) is that node's to report.
            SfuEvent::PeerJoined {
                peer,
                room,
                identity,
                role: role @ PeerRole::Participant,
                relayed: false,
                ..
            }
            | SfuEvent::PeerConnected {
                peer,
                room,
                identity,
                role,
            } => {
                let key = (worker, *peer);
                let room = room.to_string();
                self.start(&room, &mut out);
                let members = self.joined.entry(room.clone()).or_default();
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
            SfuEvent::PeerJoined {
                peer,
                room,
                relayed: true,
                ..
            } => {
                let room = room.to_string();
                self.start(&room, &mut out);
                self.relayed
                    .entry(room)
                    .or_default()
                    .insert((worker, *peer));
            }
            SfuEvent::PeerJoined { .. }
            | SfuEvent::TrackMuted { .. }
            | SfuEvent::LayersWanted { .. }
            | SfuEvent::RelayKeyframeWanted { .. } => {}
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
                let was_relayed = self.relayed.get_mut(&room).is_some_and(|r| r.remove(&key));
                if self.relayed.get(&room).is_some_and(HashSet::is_empty) {
                    self.relayed.remove(&room);
                }
                let was_member = self.joined.get_mut(&room).is_some_and(|m| m.remove(&key));
                if !(was_relayed || was_member) {
                    return out;
                }
                if was_member {
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
                if self.joined.get(&room).is_some_and(HashSet::is_empty) {
                    self.joined.remove(&room);
                }
                if self.is_empty(&room) {
                    if self.grace.is_zero() {
                        out.push(ended(room));
                    } else {
                        self.ending.insert(room, now + self.grace);
                    }
                }
            }
        }
        out
    }
}

fn ended(room: String) -> RoomEvent {
    RoomEvent {
        kind: EventType::RoomEnded,
        data: json!({"room": room}),
        room,
    }
}

/// Writes the media plane's room events to the outbox until the channel closes; an
/// empty room ends `grace` after its last participant left, unless one came back.
pub async fn run(
    st: AppState,
    mut rx: mpsc::UnboundedReceiver<(usize, SfuEvent)>,
    grace: Duration,
) {
    let mut tracker = RoomEventTracker::new(grace);
    let source = st.event_source();
    loop {
        let deadline = tracker.next_deadline();
        let next = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => break,
            },
            _ = sleep_until(deadline) => None,
        };
        let instant = Instant::now();
        let mut room_events = match next {
            Some((worker, ev)) => tracker.on_event(worker, &ev, instant),
            None => Vec::new(),
        };
        room_events.extend(tracker.poll_ended(instant));
        drop_starts_and_ends_of_rooms_living_elsewhere(&st, &mut room_events).await;
        let now = control_api::auth::now_millis();
        for e in &room_events {
            match e.kind {
                EventType::RoomStarted => {
                    tokio::spawn(auto_record(st.clone(), e.room.clone()));
                }
                EventType::RoomEnded => {
                    tokio::spawn(stop_at_room_end(st.clone(), e.room.clone()));
                    tokio::spawn(release_home(st.clone(), e.room.clone()));
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

/// A room starts and ends once, on the node it lives on: a node that imports it over
/// the relay for its listeners reports their joins and leaves, not the room's start
/// or end (which would tell the bus the room ended while it goes on elsewhere).
async fn drop_starts_and_ends_of_rooms_living_elsewhere(
    st: &AppState,
    events: &mut Vec<RoomEvent>,
) {
    let mut elsewhere = Vec::new();
    for e in events
        .iter()
        .filter(|e| matches!(e.kind, EventType::RoomStarted | EventType::RoomEnded))
    {
        match st.db.room_home(&e.room).await {
            Ok(Some(home)) if home != *st.node_id => elsewhere.push(e.room.clone()),
            Ok(_) => {}
            // Unknown: reported, rather than lost.
            Err(err) => {
                warn!(room = %e.room, error = %err, "the room's node is unknown; its start or end is reported from here")
            }
        }
    }
    if !elsewhere.is_empty() {
        events.retain(|e| {
            !(matches!(e.kind, EventType::RoomStarted | EventType::RoomEnded)
                && elsewhere.contains(&e.room))
        });
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// A room that starts with `auto_record` set is recorded from its start, by the node
/// it lives on (not by one that imports it over the relay for its listeners).
async fn auto_record(st: AppState, room: String) {
    match st.db.room_by_id(&room).await {
        Ok(Some(r)) if r.auto_record => {
            match st.db.room_home(&room).await {
                Ok(Some(home)) if home != *st.node_id => {
                    tracing::debug!(%room, %home, "auto-record: the room lives on another node, which records it");
                    return;
                }
                Err(e) => {
                    warn!(%room, error = %e, "auto-record: the room's node is unknown");
                    return;
                }
                Ok(_) => {}
            }
            match control_api::routes::recordings::start_recording(&st, &r, "auto").await {
                Ok(_) => {}
                // A recording handed over by a draining node goes on here already.
                Err(e) if e.code == "already_recording" => {
                    info!(%room, "auto-record: the room is being recorded already")
                }
                Err(e) => warn!(%room, error = ?e, "auto-record did not start"),
            }
        }
        Ok(_) => {}
        Err(e) => warn!(%room, error = %e, "auto-record: room settings unavailable"),
    }
}

/// An ended room has no home: the next join token places it afresh (on the least
/// loaded node), and a request reaching this node for it takes it again.
async fn release_home(st: AppState, room: String) {
    if let Err(e) = st.db.release_room(&room, &st.node_id).await {
        warn!(%room, error = %e, "the ended room's home was not released; it is taken over once this node is gone");
    }
}

/// A room's recording ends with the room (empty for the grace period).
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
        let now = Instant::now();
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
        assert!(t.on_event(0, &published(a, "0"), now).is_empty());
        let e = t.on_event(0, &connected(a, "phone"), now);
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
            names(&t.on_event(0, &connected(b, "browser"), now)),
            ["room.participant_joined"]
        );
        // A peer that never connected leaves no trace.
        assert!(t.on_event(0, &published(ghost, "0"), now).is_empty());
        assert!(
            t.on_event(0, &removed(ghost, RemoveReason::ConnectTimeout), now)
                .is_empty()
        );
        let unpub = SfuEvent::TrackUnpublished {
            room: room.clone(),
            peer: a,
            mid: Mid::from("0"),
        };
        assert_eq!(
            names(&t.on_event(0, &unpub, now)),
            ["room.track_unpublished"]
        );
        assert!(t.on_event(0, &unpub, now).is_empty(), "announced once");
        let e = t.on_event(0, &removed(a, RemoveReason::Requested), now);
        assert_eq!(names(&e), ["room.participant_left"]);
        assert_eq!(e[0].data["reason"], "left");
        assert_eq!(
            names(&t.on_event(0, &removed(b, RemoveReason::Disconnected), now)),
            ["room.participant_left", "room.ended"]
        );
        // Same peer number on another worker is another participant.
        assert_eq!(
            names(&t.on_event(1, &connected(a, "p"), now)),
            ["room.started", "room.participant_joined"]
        );
    }

    #[test]
    fn another_nodes_participants_keep_the_room_going_but_are_reported_there() {
        let mut t = RoomEventTracker::default();
        let now = Instant::now();
        let room = RoomId::parse("spread").unwrap();
        let (local, shadow) = (PeerId(1), PeerId(2));
        let joined = |peer, relayed| SfuEvent::PeerJoined {
            peer,
            room: room.clone(),
            identity: "someone".into(),
            name: "Someone".into(),
            role: PeerRole::Participant,
            relayed,
        };
        let removed = |peer| SfuEvent::PeerRemoved {
            peer,
            room: room.clone(),
            identity: "someone".into(),
            reason: RemoveReason::Requested,
        };
        // The room starts with the first person, here or relayed; only the local
        // join is this node's to report.
        assert_eq!(
            names(&t.on_event(0, &joined(shadow, true), now)),
            ["room.started"]
        );
        assert_eq!(
            names(&t.on_event(0, &joined(local, false), now)),
            ["room.participant_joined"]
        );
        // The local person leaves: the room goes on while the other node's is in it.
        assert_eq!(
            names(&t.on_event(0, &removed(local), now)),
            ["room.participant_left"]
        );
        assert_eq!(names(&t.on_event(0, &removed(shadow), now)), ["room.ended"]);
    }

    #[test]
    fn an_empty_room_ends_only_after_its_grace() {
        let grace = Duration::from_secs(30);
        let mut t = RoomEventTracker::new(grace);
        let start = Instant::now();
        let room = RoomId::parse("podcast").unwrap();
        let connected = |peer| SfuEvent::PeerConnected {
            peer,
            room: room.clone(),
            identity: "phone".into(),
            role: PeerRole::Publisher,
        };
        let removed = |peer| SfuEvent::PeerRemoved {
            peer,
            room: room.clone(),
            identity: "phone".into(),
            reason: RemoveReason::Disconnected,
        };
        t.on_event(0, &connected(PeerId(1)), start);
        // The only publisher's phone drops: the room waits.
        let dropped = start + Duration::from_secs(60);
        assert_eq!(
            names(&t.on_event(0, &removed(PeerId(1)), dropped)),
            ["room.participant_left"]
        );
        assert_eq!(t.next_deadline(), Some(dropped + grace));
        assert!(t.poll_ended(dropped + Duration::from_secs(29)).is_empty());
        // It comes back two seconds later: the same room, no new start.
        assert_eq!(
            names(&t.on_event(0, &connected(PeerId(2)), dropped + Duration::from_secs(2))),
            ["room.participant_joined"]
        );
        assert_eq!(t.next_deadline(), None);
        assert!(t.poll_ended(dropped + grace * 2).is_empty());
        // Gone for good: the room ends when the grace runs out, once.
        let left = dropped + Duration::from_secs(100);
        t.on_event(0, &removed(PeerId(2)), left);
        assert!(
            t.poll_ended(left + grace - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(names(&t.poll_ended(left + grace)), ["room.ended"]);
        assert!(t.poll_ended(left + grace * 2).is_empty());
        assert_eq!(t.next_deadline(), None);
        // After it ended, a join starts the room anew.
        assert_eq!(
            names(&t.on_event(0, &connected(PeerId(3)), left + grace * 3)),
            ["room.started", "room.participant_joined"]
        );
    }
}
