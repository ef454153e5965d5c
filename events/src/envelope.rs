//! The event envelope, the event types and the topics they go to.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Version of the envelope's shape. Consumers refuse versions they do not know.
pub const ENVELOPE_VERSION: u32 = 1;

/// A Kafka topic. Each [`EventType`] belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    PlaybackEvents,
    DeviceStatus,
    NowPlaying,
    RoomEvents,
    RecordingEvents,
    TranscodeJobs,
    TranscodeDeadLetter,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::PlaybackEvents,
        Topic::DeviceStatus,
        Topic::NowPlaying,
        Topic::RoomEvents,
        Topic::RecordingEvents,
        Topic::TranscodeJobs,
        Topic::TranscodeDeadLetter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::PlaybackEvents => "playback.events",
            Topic::DeviceStatus => "device.status",
            Topic::NowPlaying => "now.playing",
            Topic::RoomEvents => "room.events",
            Topic::RecordingEvents => "recording.events",
            Topic::TranscodeJobs => "transcode.jobs",
            Topic::TranscodeDeadLetter => "transcode.dead_letter",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! event_types {
    ($($variant:ident => $name:literal, $topic:ident;)*) => {
        /// Every event type StreamCore emits; `docs/events.md` describes each one's data.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($variant,)* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The `type` field of the envelope.
            pub fn name(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            pub fn topic(self) -> Topic {
                match self { $(EventType::$variant => Topic::$topic,)* }
            }

            pub fn parse(s: &str) -> Option<EventType> {
                match s { $($name => Some(EventType::$variant),)* _ => None }
            }
        }
    };
}

event_types! {
    PlaybackPlay => "playback.play", PlaybackEvents;
    PlaybackPause => "playback.pause", PlaybackEvents;
    PlaybackResume => "playback.resume", PlaybackEvents;
    PlaybackSeek => "playback.seek", PlaybackEvents;
    PlaybackNext => "playback.next", PlaybackEvents;
    PlaybackPrevious => "playback.previous", PlaybackEvents;
    PlaybackVolume => "playback.volume", PlaybackEvents;
    PlaybackTrackEnded => "playback.track_ended", PlaybackEvents;
    DeviceOnline => "device.online", DeviceStatus;
    DeviceOffline => "device.offline", DeviceStatus;
    DeviceCapabilitiesChanged => "device.capabilities_changed", DeviceStatus;
    DeviceRemoved => "device.removed", DeviceStatus;
    UserSessionsEnded => "user.sessions_ended", DeviceStatus;
    NowPlayingUpdated => "now_playing.updated", NowPlaying;
    RoomStarted => "room.started", RoomEvents;
    RoomEnded => "room.ended", RoomEvents;
    RoomParticipantJoined => "room.participant_joined", RoomEvents;
    RoomParticipantLeft => "room.participant_left", RoomEvents;
    RoomTrackPublished => "room.track_published", RoomEvents;
    RoomTrackUnpublished => "room.track_unpublished", RoomEvents;
    RoomSpeakerChanged => "room.speaker_changed", RoomEvents;
    RecordingStarted => "recording.started", RecordingEvents;
    RecordingTrackAdded => "recording.track_added", RecordingEvents;
    RecordingStopped => "recording.stopped", RecordingEvents;
    RecordingUploaded => "recording.uploaded", RecordingEvents;
    RecordingFailed => "recording.failed", RecordingEvents;
    TranscodeRequested => "transcode.requested", TranscodeJobs;
    TranscodeProgress => "transcode.progress", TranscodeJobs;
    TranscodeCompleted => "transcode.completed", TranscodeJobs;
    TranscodeFailed => "transcode.failed", TranscodeJobs;
    TranscodeDeadLettered => "transcode.dead_lettered", TranscodeDeadLetter;
}

impl EventType {
    /// Playback events that are commands for a device (everything but `track_ended`,
    /// which the device itself reports).
    pub fn is_command(self) -> bool {
        self.topic() == Topic::PlaybackEvents && self != EventType::PlaybackTrackEnded
    }
}

/// One event. Serialised as JSON on every topic; the Kafka message key is the
/// ordering key (device, user or room), not part of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub version: u32,
    /// UUID v4; the idempotency key consumers deduplicate by.
    pub id: String,
    /// One of [`EventType::name`].
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 UTC with milliseconds, when the state change happened.
    pub time: String,
    /// Who emitted it: `streamcore/<node id>`.
    pub source: String,
    /// What it is about: `device/<id>`, `user/<id>`, `room/<name>`, …
    pub subject: String,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn new(
        kind: EventType,
        time_ms: i64,
        source: &str,
        subject: String,
        data: serde_json::Value,
    ) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.name().to_owned(),
            time: rfc3339_millis(time_ms),
            source: source.to_owned(),
            subject,
            data,
        }
    }

    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.kind)
    }

    /// Parses an envelope and checks its version.
    pub fn from_slice(bytes: &[u8]) -> Result<Envelope, String> {
        let e: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if e.version != ENVELOPE_VERSION {
            return Err(format!(
                "envelope version {} is not {ENVELOPE_VERSION}",
                e.version
            ));
        }
        Ok(e)
    }

    /// `time` as milliseconds since the Unix epoch.
    pub fn time_millis(&self) -> Option<i64> {
        parse_rfc3339_millis(&self.time)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and a JSON value always serialises.
        serde_json::to_string(self).expect("envelope serialises")
    }
}

/// `2026-12-01T06:30:18.123Z` for milliseconds since the Unix epoch.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The inverse of [`rfc3339_millis`], for that exact format only.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days-from-civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// The last `capacity` event ids a consumer has handled: at-least-once delivery
/// becomes effectively-once for the consumer.
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenIds {
    pub fn new(capacity: usize) -> SeenIds {
        SeenIds {
            capacity: capacity.max(1),
            order: VecDeque::with_capacity(capacity.min(4096)),
            set: HashSet::with_capacity(capacity.min(4096)),
        }
    }

    /// True the first time an id is seen; false for repeats.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_796_106_618_123),
            "2026-12-01T06:30:18.123Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        for ms in [0, 951_782_400_000, 1_796_106_618_123, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_millis("2026-12-01T06:30:18Z"), None);
        assert_eq!(parse_rfc3339_millis("garbage"), None);
    }

    #[test]
    fn every_type_has_a_unique_name_and_a_topic() {
        let mut names = HashSet::new();
        for t in EventType::ALL {
            assert!(names.insert(t.name()), "{}", t.name());
            assert_eq!(EventType::parse(t.name()), Some(*t));
            assert!(Topic::ALL.contains(&t.topic()));
        }
        for topic in Topic::ALL {
            assert_eq!(Topic::parse(topic.name()), Some(topic));
            assert!(EventType::ALL.iter().any(|t| t.topic() == topic), "{topic}");
        }
        assert!(EventType::PlaybackPause.is_command());
        assert!(!EventType::PlaybackTrackEnded.is_command());
        assert!(!EventType::DeviceOnline.is_command());
    }

    #[test]
    fn envelope_round_trips_and_checks_its_version() {
        let e = Envelope::new(
            EventType::DeviceOnline,
            1_000,
            "streamcore/n1",
            "device/d1".into(),
            serde_json::json!({"device_id": "d1"}),
        );
        let json = e.to_json();
        assert!(json.contains(r#""type":"device.online""#), "{json}");
        assert_eq!(Envelope::from_slice(json.as_bytes()).unwrap(), e);
        let v2 = json.replace(r#""version":1"#, r#""version":2"#);
        assert!(Envelope::from_slice(v2.as_bytes()).is_err());
        assert!(Envelope::from_slice(b"{").is_err());
    }

    #[test]
    fn seen_ids_forget_the_oldest() {
        let mut s = SeenIds::new(2);
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        assert!(s.first_time("b"));
        assert!(s.first_time("c"));
        assert!(s.first_time("a"), "a was evicted");
        assert!(!s.first_time("c"));
    }
}
