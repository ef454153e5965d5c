//! The listening tracker: a device's `now.playing` states in, plays out.
//!
//! Plain and synchronous: the consumer ([`super::consumer`]) loads a device's
//! [`Cursor`], applies one observed state, stores the cursor and the plays it returned.
//!
//! Rules:
//! - a play starts when a track first shows in a state that is not `stopped`; it ends
//!   when another track shows, the device stops, or the same track starts over from
//!   its beginning after it counted;
//! - it accrues wall time while the device says `playing`, each stretch capped by what
//!   was left of the track (so a phone that vanished mid-song adds at most the rest of
//!   the song);
//! - it **counts** once it accrued 30 s, or half the track if that is shorter.
//!
//! Idempotent: the cursor remembers the newest state time and the ids of the events
//! applied at that time, and skips anything not newer. Replaying a topic from its
//! start, or a relay publishing a batch twice, changes nothing. A play's id is the id
//! of the event that started it, so a play stored twice is stored once.

use serde::{Deserialize, Serialize};

use crate::store::Millis;

/// A play counts after this much listening, or half the track if shorter.
pub const COUNTS_AFTER_MS: i64 = 30_000;
/// A stretch of `playing` of a track with no known duration accrues at most this.
const UNKNOWN_LENGTH_CAP_MS: i64 = 60 * 60 * 1000;
/// Slack on the rest-of-track cap: positions are reported late and rounded.
const CAP_SLACK_MS: i64 = 2_000;
/// A track back at a position below this, after it counted, starts a new play.
const START_OVER_BELOW_MS: i64 = 3_000;
/// Longest text kept of a track's title, artist or album (bytes).
const MAX_TEXT: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Playing,
    Paused,
    Stopped,
}

/// What a state says plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRef {
    /// The library track's `client_id`, or the title when the device gave no id.
    pub id: String,
    pub title: String,
    pub artist: String,
    pub album: String,
    /// 0 when unknown.
    pub duration_ms: i64,
}

/// One `now_playing.updated` event, as the tracker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub event_id: String,
    pub at: Millis,
    pub status: Status,
    pub position_ms: Option<i64>,
    pub track: Option<TrackRef>,
}

/// A play as stored: the same id may be written again with more listening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Play {
    pub id: String,
    pub track: TrackRef,
    pub started_at: Millis,
    pub listened_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OpenPlay {
    id: String,
    track: TrackRef,
    started_at: Millis,
    listened_ms: i64,
    /// Set while the device says `playing`: since when, and from which position.
    playing_since: Option<(Millis, i64)>,
    last_position_ms: i64,
}

impl OpenPlay {
    fn counts(&self) -> bool {
        self.listened_ms >= counts_after(self.track.duration_ms)
    }

    fn as_play(&self) -> Play {
        Play {
            id: self.id.clone(),
            track: self.track.clone(),
            started_at: self.started_at,
            listened_ms: self.listened_ms,
        }
    }

    /// Adds the stretch of `playing` that ends at `at`.
    fn accrue(&mut self, at: Millis) {
        if let Some((since, from)) = self.playing_since.take() {
            let cap = if self.track.duration_ms > 0 {
                (self.track.duration_ms - from).max(0) + CAP_SLACK_MS
            } else {
                UNKNOWN_LENGTH_CAP_MS
            };
            self.listened_ms += (at - since).clamp(0, cap);
        }
    }
}

/// Listening needed before a play of a track this long counts.
pub fn counts_after(duration_ms: i64) -> i64 {
    if duration_ms > 0 {
        COUNTS_AFTER_MS.min(duration_ms / 2)
    } else {
        COUNTS_AFTER_MS
    }
}

/// A device's place in its stream of states; stored as JSON between events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The newest state time applied.
    last_at: Millis,
    /// The events applied at `last_at`.
    ids_at_last: Vec<String>,
    open: Option<OpenPlay>,
}

/// What one observation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Plays to store (each counts): one that ended, and the open one.
    pub plays: Vec<Play>,
    /// The observation was older than the cursor, or already applied.
    pub skipped: bool,
}

impl Cursor {
    /// Applies one state of the device.
    pub fn apply(&mut self, o: &Observation) -> Applied {
        if o.at < self.last_at || (o.at == self.last_at && self.ids_at_last.contains(&o.event_id)) {
            return Applied {
                plays: Vec::new(),
                skipped: true,
            };
        }
        if o.at > self.last_at {
            self.last_at = o.at;
            self.ids_at_last.clear();
        }
        self.ids_at_last.push(o.event_id.clone());

        let mut plays = Vec::new();
        let position = o.position_ms.unwrap_or(0).max(0);
        if let Some(open) = &mut self.open {
            open.accrue(o.at);
            let same_track = o.status != Status::Stopped
                && o.track.as_ref().is_some_and(|t| t.id == open.track.id);
            let started_over = same_track
                && open.counts()
                && position < START_OVER_BELOW_MS
                && position + START_OVER_BELOW_MS < open.last_position_ms;
            if same_track && !started_over {
                open.last_position_ms = position;
                if o.status == Status::Playing {
                    open.playing_since = Some((o.at, position));
                }
                if open.counts() {
                    plays.push(open.as_play());
                }
                return Applied {
                    plays,
                    skipped: false,
                };
            }
            if open.counts() {
                plays.push(open.as_play());
            }
            self.open = None;
        }
        if o.status != Status::Stopped
            && let Some(track) = &o.track
        {
            self.open = Some(OpenPlay {
                id: o.event_id.clone(),
                track: track.clone(),
                started_at: o.at,
                listened_ms: 0,
                playing_since: (o.status == Status::Playing).then_some((o.at, position)),
                last_position_ms: position,
            });
        }
        Applied {
            plays,
            skipped: false,
        }
    }
}

/// Reads the `state` of a `now_playing.updated` event. `None`: not a state at all.
pub fn observe(event_id: &str, at: Millis, state: &serde_json::Value) -> Option<Observation> {
    let status = match state["status"].as_str()? {
        "playing" => Status::Playing,
        "paused" => Status::Paused,
        "stopped" => Status::Stopped,
        _ => return None,
    };
    let text = |v: &serde_json::Value| clip(v.as_str().unwrap_or_default().trim());
    let t = &state["track"];
    let track = t.is_object().then(|| {
        let title = text(&t["title"]);
        let id = match t["id"].as_str().map(str::trim) {
            Some(id) if !id.is_empty() => clip(id),
            _ => title.clone(),
        };
        TrackRef {
            id,
            title,
            artist: text(&t["artist"]),
            album: text(&t["album"]),
            duration_ms: t["duration_ms"].as_i64().unwrap_or(0).max(0),
        }
    });
    Some(Observation {
        event_id: event_id.to_owned(),
        at,
        status,
        position_ms: state["position_ms"].as_i64(),
        // A track with neither id nor title cannot be told from the next one.
        track: track.filter(|t| !t.id.is_empty()),
    })
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn track(id: &str, duration_ms: i64) -> TrackRef {
        TrackRef {
            id: id.into(),
            title: format!("Title {id}"),
            artist: "Artist".into(),
            album: "Album".into(),
            duration_ms,
        }
    }

    /// A device's states, applied in order; every play each one returned.
    struct Device {
        cursor: Cursor,
        n: u32,
        stored: Vec<Play>,
    }

    impl Device {
        fn new() -> Device {
            Device {
                cursor: Cursor::default(),
                n: 0,
                stored: Vec::new(),
            }
        }

        fn state(&mut self, at: Millis, status: Status, pos: i64, t: Option<TrackRef>) -> Applied {
            self.n += 1;
            let o = Observation {
                event_id: format!("e{}", self.n),
                at,
                status,
                position_ms: Some(pos),
                track: t,
            };
            let a = self.cursor.apply(&o);
            self.stored.extend(a.plays.iter().cloned());
            a
        }

        /// The plays as a table keyed by id would hold them.
        fn table(&self) -> Vec<Play> {
            let mut by_id: Vec<Play> = Vec::new();
            for p in &self.stored {
                match by_id.iter_mut().find(|q| q.id == p.id) {
                    Some(q) => q.listened_ms = q.listened_ms.max(p.listened_ms),
                    None => by_id.push(p.clone()),
                }
            }
            by_id
        }
    }

    #[test]
    fn a_play_counts_after_thirty_seconds_or_half_the_track() {
        assert_eq!(counts_after(4 * MIN), 30_000);
        assert_eq!(counts_after(40_000), 20_000);
        assert_eq!(counts_after(0), 30_000);

        let mut d = Device::new();
        let a = track("a", 4 * MIN);
        d.state(0, Status::Playing, 0, Some(a.clone()));
        // 29 s in, paused: not a play yet.
        assert!(
            d.state(29_000, Status::Paused, 29_000, Some(a.clone()))
                .plays
                .is_empty()
        );
        // Resumed 10 min later for 1 s more: 30 s of listening, the pause not counted.
        d.state(10 * MIN, Status::Playing, 29_000, Some(a.clone()));
        let p = d.state(10 * MIN + 1_000, Status::Paused, 30_000, Some(a.clone()));
        assert_eq!(p.plays.len(), 1);
        assert_eq!(p.plays[0].listened_ms, 30_000);
        assert_eq!(p.plays[0].started_at, 0);
        assert_eq!(p.plays[0].id, "e1");
    }

    #[test]
    fn a_short_listen_is_not_a_play() {
        let mut d = Device::new();
        d.state(0, Status::Playing, 0, Some(track("a", 4 * MIN)));
        d.state(10_000, Status::Playing, 0, Some(track("b", 4 * MIN)));
        d.state(20_000, Status::Stopped, 10_000, None);
        assert!(d.table().is_empty());
    }

    #[test]
    fn changing_tracks_ends_a_play_and_starts_the_next() {
        let mut d = Device::new();
        d.state(0, Status::Playing, 0, Some(track("a", 40_000)));
        let next = d.state(40_000, Status::Playing, 0, Some(track("b", 3 * MIN)));
        assert_eq!(next.plays.len(), 1, "a ended having counted");
        assert_eq!(next.plays[0].track.id, "a");
        assert_eq!(next.plays[0].listened_ms, 40_000);
        d.state(40_000 + 3 * MIN, Status::Stopped, 0, None);
        let t = d.table();
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].track.id.as_str(), t[1].listened_ms), ("b", 3 * MIN));
        assert_eq!(t[1].started_at, 40_000);
    }

    #[test]
    fn a_vanished_phone_adds_at_most_the_rest_of_the_track() {
        let mut d = Device::new();
        let a = track("a", 3 * MIN);
        d.state(0, Status::Playing, 2 * MIN, Some(a.clone()));
        // The next word from the device comes an hour later.
        d.state(60 * MIN, Status::Stopped, 0, None);
        assert_eq!(d.table()[0].listened_ms, MIN + CAP_SLACK_MS);
    }

    #[test]
    fn starting_over_after_it_counted_is_a_new_play() {
        let mut d = Device::new();
        let a = track("a", MIN);
        d.state(0, Status::Playing, 0, Some(a.clone()));
        d.state(MIN, Status::Paused, MIN, Some(a.clone()));
        d.state(MIN + 100, Status::Playing, 0, Some(a.clone()));
        d.state(2 * MIN + 100, Status::Stopped, 0, None);
        let t = d.table();
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t.iter().all(|p| p.listened_ms == MIN));
        // Seeking back early, before it counted, is the same play.
        let mut d = Device::new();
        d.state(0, Status::Playing, 0, Some(a.clone()));
        d.state(10_000, Status::Playing, 0, Some(a.clone()));
        d.state(40_000, Status::Stopped, 30_000, None);
        assert_eq!(d.table().len(), 1);
        assert_eq!(d.table()[0].listened_ms, 40_000);
    }

    #[test]
    fn replays_and_repeats_change_nothing() {
        let a = track("a", 3 * MIN);
        let b = track("b", 3 * MIN);
        let states = [
            (0, Status::Playing, 0, Some(a.clone())),
            (20_000, Status::Paused, 20_000, Some(a.clone())),
            // Two states in the same millisecond.
            (20_000, Status::Playing, 20_000, Some(a.clone())),
            (90_000, Status::Playing, 0, Some(b.clone())),
            (150_000, Status::Stopped, 0, None),
        ];
        let mut d = Device::new();
        let mut applied = Vec::new();
        for (at, s, pos, t) in states.iter().cloned() {
            d.state(at, s, pos, t);
            applied.push(d.cursor.clone());
        }
        let once = d.table();
        assert_eq!(once.len(), 2);
        assert_eq!(once[0].listened_ms, 90_000);
        assert_eq!(once[1].listened_ms, 60_000);
        let end = d.cursor.clone();

        // The whole stream again, event ids and all: every state is skipped.
        for (i, (at, s, pos, t)) in states.iter().cloned().enumerate() {
            let o = Observation {
                event_id: format!("e{}", i + 1),
                at,
                status: s,
                position_ms: Some(pos),
                track: t,
            };
            assert!(d.cursor.apply(&o).skipped, "state {i} applied twice");
        }
        assert_eq!(d.cursor, end);
        assert_eq!(d.table(), once);

        // Each state delivered twice in a row (a relay's retried batch).
        let mut twice = Device::new();
        for (at, s, pos, t) in states.iter().cloned() {
            twice.n += 1;
            let o = Observation {
                event_id: format!("e{}", twice.n),
                at,
                status: s,
                position_ms: Some(pos),
                track: t,
            };
            for _ in 0..2 {
                let a = twice.cursor.apply(&o);
                twice.stored.extend(a.plays);
            }
        }
        assert_eq!(twice.table(), once);
    }

    #[test]
    fn the_cursor_survives_being_stored() {
        let mut d = Device::new();
        d.state(0, Status::Playing, 0, Some(track("a", 3 * MIN)));
        let json = serde_json::to_string(&d.cursor).unwrap();
        let back: Cursor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d.cursor);
    }

    #[test]
    fn states_are_read_leniently_and_clipped() {
        let o = observe(
            "e",
            5,
            &serde_json::json!({"status": "playing", "position_ms": 7,
                "track": {"id": " t1 ", "title": "x".repeat(600), "duration_ms": 1000}}),
        )
        .unwrap();
        let t = o.track.unwrap();
        assert_eq!(
            (t.id.as_str(), t.title.len(), t.artist.as_str()),
            ("t1", 500, "")
        );
        let no_id = observe(
            "e",
            5,
            &serde_json::json!({"status": "paused", "track": {"title": "Song"}}),
        );
        assert_eq!(no_id.unwrap().track.unwrap().id, "Song");
        let nothing = observe(
            "e",
            5,
            &serde_json::json!({"status": "paused", "track": {}}),
        );
        assert_eq!(nothing.unwrap().track, None);
        assert!(observe("e", 5, &serde_json::json!({"status": "dancing"})).is_none());
        assert_eq!(clip(&"é".repeat(300)).len(), 500);
    }
}
