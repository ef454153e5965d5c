//! The listening tracker: a device's `now.playing` states in, plays out.
//!
//! Plain and synchronous: the consumer ([`super::consumer`]) loads a device's
//! [`Cursor`], applies one observed state, stores the cursor and the plays it returned.
//!
//! Rules:
//! - a play begins when a track first shows in a state that is not `stopped`, and
//!   starts (`started_at`) when it first plays; it ends when another track shows, the
//!   device stops, or the same track starts over from its beginning after it counted;
//! - it accrues the time the device says it was `playing`. A stretch that ends in a
//!   state of the same track with a position counts what the position advanced (a seek
//!   forward is not listening), at most the wall time; any other stretch counts the
//!   wall time, at most [`STRETCH_CAP_MS`] (devices report at least every 15 s while
//!   playing: a phone that vanished mid-song adds at most that), and never more than
//!   was left of the track;
//! - it **counts** once it accrued 30 s, or half the track if that is shorter; it is
//!   stored then, and again with all its listening when it ends.
//!
//! Idempotent and in order: states carry the device's own number (`seq`, given by the
//! store in the transaction that records them) and the cursor skips any number it has
//! passed, so replaying a topic from its start, or a relay publishing a batch twice,
//! changes nothing, whatever the clocks of the nodes that stamped the states. (States
//! without a number are ordered by time, then event id.) Time never runs backwards for
//! a device: a state stamped earlier than the last one counts as at the same moment. A
//! play's id is the id of the event that began it, so a play stored twice is stored
//! once.

use serde::{Deserialize, Serialize};

use crate::store::Millis;

/// A play counts after this much listening, or half the track if shorter.
pub const COUNTS_AFTER_MS: i64 = 30_000;
/// The most a stretch of `playing` counts without a position of the same track to go
/// by: three of the phone's 15 s reports.
pub const STRETCH_CAP_MS: i64 = 45_000;
/// Slack on positions: they are reported late and rounded.
const POSITION_SLACK_MS: i64 = 2_000;
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
    /// The device's number for the state (`None` in events from before it had one).
    pub seq: Option<i64>,
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
    /// When it first played (`None`: shown, not played yet).
    started_at: Option<Millis>,
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
            // A play that counts has played.
            started_at: self.started_at.unwrap_or_default(),
            listened_ms: self.listened_ms,
        }
    }

    /// Where the track is at `at`, by the last report.
    fn position_at(&self, at: Millis) -> i64 {
        match self.playing_since {
            Some((since, from)) => from + (at - since).max(0),
            None => self.last_position_ms,
        }
    }

    /// Adds the stretch of `playing` that ends at `at`; `position` is where the same
    /// track is then, if the state says.
    fn accrue(&mut self, at: Millis, position: Option<i64>) {
        let Some((since, from)) = self.playing_since.take() else {
            return;
        };
        let wall = (at - since).max(0);
        let mut credit = match position {
            // It moved on: no more than it moved (a seek forward is not listening).
            Some(p) if p > from => wall.min(p - from + POSITION_SLACK_MS),
            // Sought back (or nothing to go by): the wall time, bounded.
            _ => wall.min(STRETCH_CAP_MS),
        };
        if self.track.duration_ms > 0 {
            credit = credit.min((self.track.duration_ms - from).max(0) + POSITION_SLACK_MS);
        }
        self.listened_ms += credit;
    }

    /// The device says it plays from `position` at `at`.
    fn playing(&mut self, at: Millis, position: i64) {
        self.playing_since = Some((at, position));
        self.started_at.get_or_insert(at);
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
    /// The newest state number applied.
    #[serde(default)]
    last_seq: i64,
    /// The latest state time seen.
    last_at: Millis,
    /// The events without a number applied at `last_at`.
    ids_at_last: Vec<String>,
    open: Option<OpenPlay>,
}

/// What one observation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Plays to store (each counts): one that ended, or the open one as it comes to
    /// count.
    pub plays: Vec<Play>,
    /// The observation was older than the cursor, or already applied.
    pub skipped: bool,
}

impl Cursor {
    /// Whether `o` comes after everything applied so far.
    fn is_new(&self, o: &Observation) -> bool {
        match o.seq {
            Some(seq) => seq > self.last_seq,
            None => {
                o.at > self.last_at
                    || (o.at == self.last_at && !self.ids_at_last.contains(&o.event_id))
            }
        }
    }

    /// Applies one state of the device.
    pub fn apply(&mut self, o: &Observation) -> Applied {
        if !self.is_new(o) {
            return Applied {
                plays: Vec::new(),
                skipped: true,
            };
        }
        if let Some(seq) = o.seq {
            self.last_seq = seq;
        }
        // A node whose clock is behind does not make time run backwards.
        let at = o.at.max(self.last_at);
        if o.at > self.last_at {
            self.last_at = o.at;
            self.ids_at_last.clear();
        }
        if o.seq.is_none() && o.at == self.last_at {
            self.ids_at_last.push(o.event_id.clone());
        }

        let mut plays = Vec::new();
        let same_track = |open: &OpenPlay| {
            o.status != Status::Stopped && o.track.as_ref().is_some_and(|t| t.id == open.track.id)
        };
        if let Some(open) = &mut self.open {
            let was_at = open.position_at(at);
            let counted = open.counts();
            let same = same_track(open);
            open.accrue(at, if same { o.position_ms } else { None });
            let started_over = same
                && open.counts()
                && o.position_ms
                    .is_some_and(|p| p < START_OVER_BELOW_MS && p + START_OVER_BELOW_MS < was_at);
            if same && !started_over {
                let position = o.position_ms.unwrap_or(was_at).max(0);
                open.last_position_ms = position;
                if o.status == Status::Playing {
                    open.playing(at, position);
                }
                // Stored when it comes to count, and again when it ends: not at every
                // state in between (each write of a play costs the statistics' index).
                if open.counts() && !counted {
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
            let position = o.position_ms.unwrap_or(0).max(0);
            let mut open = OpenPlay {
                id: o.event_id.clone(),
                track: track.clone(),
                started_at: None,
                listened_ms: 0,
                playing_since: None,
                last_position_ms: position,
            };
            if o.status == Status::Playing {
                open.playing(at, position);
            }
            self.open = Some(open);
        }
        Applied {
            plays,
            skipped: false,
        }
    }
}

/// Reads the `state` of a `now_playing.updated` event. `None`: not a state at all.
pub fn observe(
    event_id: &str,
    seq: Option<i64>,
    at: Millis,
    state: &serde_json::Value,
) -> Option<Observation> {
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
        seq,
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

    const S: i64 = 1_000;
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

    /// A device's states, numbered and applied in order; every play each returned.
    struct Device {
        cursor: Cursor,
        n: i64,
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

        fn observation(
            &mut self,
            at: Millis,
            status: Status,
            pos: i64,
            t: Option<&TrackRef>,
        ) -> Observation {
            self.n += 1;
            Observation {
                event_id: format!("e{}", self.n),
                seq: Some(self.n),
                at,
                status,
                position_ms: Some(pos),
                track: t.cloned(),
            }
        }

        fn apply(&mut self, o: &Observation) -> Applied {
            let a = self.cursor.apply(o);
            self.stored.extend(a.plays.iter().cloned());
            a
        }

        fn state(&mut self, at: Millis, status: Status, pos: i64, t: Option<&TrackRef>) -> Applied {
            let o = self.observation(at, status, pos, t);
            self.apply(&o)
        }

        fn playing(&mut self, at: Millis, pos: i64, t: &TrackRef) -> Applied {
            self.state(at, Status::Playing, pos, Some(t))
        }

        fn stop(&mut self, at: Millis) -> Applied {
            self.state(at, Status::Stopped, 0, None)
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
        assert_eq!(counts_after(4 * MIN), 30 * S);
        assert_eq!(counts_after(40 * S), 20 * S);
        assert_eq!(counts_after(0), 30 * S);

        let mut d = Device::new();
        let a = track("a", 4 * MIN);
        d.playing(0, 0, &a);
        d.playing(15 * S, 15 * S, &a);
        // 29 s in, paused: not a play yet.
        assert!(
            d.state(29 * S, Status::Paused, 29 * S, Some(&a))
                .plays
                .is_empty()
        );
        // Resumed 10 min later for 1 s more: 30 s of listening, the pause not counted.
        d.playing(10 * MIN, 29 * S, &a);
        let p = d.state(10 * MIN + S, Status::Paused, 30 * S, Some(&a));
        assert_eq!(p.plays.len(), 1);
        assert_eq!(p.plays[0].listened_ms, 30 * S);
        assert_eq!((p.plays[0].started_at, p.plays[0].id.as_str()), (0, "e1"));
    }

    #[test]
    fn a_play_is_written_when_it_comes_to_count_and_when_it_ends() {
        let mut d = Device::new();
        let a = track("a", 6 * MIN);
        let mut writes = Vec::new();
        for i in 0..6 {
            writes.push(d.playing(i * 15 * S, i * 15 * S, &a).plays.len());
        }
        writes.push(d.stop(90 * S).plays.len());
        assert_eq!(writes, [0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(d.table()[0].listened_ms, 90 * S);
    }

    #[test]
    fn a_short_listen_is_not_a_play() {
        let mut d = Device::new();
        d.playing(0, 0, &track("a", 4 * MIN));
        d.playing(10 * S, 0, &track("b", 4 * MIN));
        d.stop(20 * S);
        assert!(d.table().is_empty());
    }

    #[test]
    fn changing_tracks_ends_a_play_and_starts_the_next() {
        let mut d = Device::new();
        let (a, b) = (track("a", 40 * S), track("b", 3 * MIN));
        d.playing(0, 0, &a);
        d.playing(15 * S, 15 * S, &a);
        d.playing(30 * S, 30 * S, &a);
        // a ends by itself; b begins.
        let next = d.playing(40 * S, 0, &b);
        assert_eq!(next.plays.len(), 1, "a ended having counted");
        assert_eq!(
            (next.plays[0].track.id.as_str(), next.plays[0].listened_ms),
            ("a", 40 * S)
        );
        d.stop(70 * S);
        let t = d.table();
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].track.id.as_str(), t[1].listened_ms), ("b", 30 * S));
        assert_eq!(t[1].started_at, 40 * S);
    }

    #[test]
    fn a_vanished_phone_adds_at_most_one_silent_stretch() {
        let mut d = Device::new();
        let a = track("a", 6 * MIN);
        d.playing(0, 5 * S, &a);
        // The next word from the device comes an hour later.
        d.stop(60 * MIN);
        assert_eq!(d.table()[0].listened_ms, STRETCH_CAP_MS);
        // Never more than was left of the track.
        let mut d = Device::new();
        d.playing(0, 3 * MIN - 35 * S, &track("b", 3 * MIN));
        d.stop(60 * MIN);
        assert_eq!(d.table()[0].listened_ms, 35 * S + POSITION_SLACK_MS);
    }

    #[test]
    fn positions_of_the_same_track_bound_what_counts() {
        let mut d = Device::new();
        let a = track("a", 6 * MIN);
        d.playing(0, 0, &a);
        // A seek forward 10 s in: 10 s listened, not the 2 minutes skipped.
        d.playing(10 * S, 2 * MIN, &a);
        // The player stalled: 20 s of wall time, 5 s of music.
        d.playing(30 * S, 2 * MIN + 5 * S, &a);
        // Sought back: the wall time.
        d.playing(50 * S, MIN, &a);
        d.state(60 * S, Status::Paused, MIN + 10 * S, Some(&a));
        d.stop(2 * MIN);
        let t = d.table();
        assert_eq!(
            t[0].listened_ms,
            10 * S + (5 * S + POSITION_SLACK_MS) + 20 * S + 10 * S
        );
    }

    #[test]
    fn starting_over_after_it_counted_is_a_new_play() {
        let a = track("a", MIN);
        // Paused at the end, then played from the start.
        let mut d = Device::new();
        d.playing(0, 0, &a);
        d.state(MIN, Status::Paused, MIN, Some(&a));
        d.playing(MIN + 100, 0, &a);
        d.playing(MIN + 30_100, 30 * S, &a);
        d.stop(2 * MIN + 100);
        let t = d.table();
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t.iter().all(|p| p.listened_ms == MIN), "{t:?}");
        assert_eq!(t[1].started_at, MIN + 100);
        // Looping with nothing in between: the estimated position says it went round.
        let mut d = Device::new();
        for i in 0..4 {
            d.playing(i * 15 * S, i * 15 * S, &a);
        }
        d.playing(MIN, 0, &a);
        d.stop(MIN + 40 * S);
        let t = d.table();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].listened_ms, MIN);
        // Sought back early, before it counted: the same play.
        let mut d = Device::new();
        d.playing(0, 0, &a);
        d.playing(10 * S, 0, &a);
        d.state(40 * S, Status::Paused, 30 * S, Some(&a));
        assert_eq!(d.table().len(), 1);
        assert_eq!(d.table()[0].listened_ms, 40 * S);
    }

    #[test]
    fn a_play_starts_when_it_first_plays() {
        let mut d = Device::new();
        let a = track("a", 3 * MIN);
        // The page opened on a paused track; it plays an hour later.
        d.state(0, Status::Paused, 0, Some(&a));
        d.playing(60 * MIN, 0, &a);
        d.state(61 * MIN, Status::Paused, MIN, Some(&a));
        assert_eq!(d.table()[0].started_at, 60 * MIN);
    }

    #[test]
    fn states_are_ordered_by_their_number_not_by_clocks() {
        let mut d = Device::new();
        let a = track("a", 3 * MIN);
        d.playing(100 * S, 0, &a);
        // The phone moved to a node whose clock is 10 s behind: its pause still counts.
        let paused = d.state(90 * S, Status::Paused, 20 * S, Some(&a));
        assert!(!paused.skipped);
        d.stop(60 * MIN);
        // Nothing accrued while paused, and no time ran backwards.
        assert!(d.table().is_empty(), "{:?}", d.table());
    }

    #[test]
    fn replays_and_repeats_change_nothing() {
        let (a, b) = (track("a", 3 * MIN), track("b", 3 * MIN));
        let mut d = Device::new();
        let stream = [
            d.observation(0, Status::Playing, 0, Some(&a)),
            d.observation(20 * S, Status::Paused, 20 * S, Some(&a)),
            d.observation(20 * S, Status::Playing, 20 * S, Some(&a)),
            d.observation(30 * S, Status::Playing, 30 * S, Some(&a)),
            d.observation(40 * S, Status::Playing, 0, Some(&b)),
            d.observation(70 * S, Status::Stopped, 0, None),
        ];
        for o in &stream {
            d.apply(o);
        }
        let once = d.table();
        assert_eq!(once.len(), 2, "{once:?}");
        assert_eq!((once[0].listened_ms, once[1].listened_ms), (40 * S, 30 * S));
        let end = d.cursor.clone();
        // The whole stream again: every state is skipped.
        for o in &stream {
            assert!(d.apply(o).skipped, "{o:?} applied twice");
        }
        assert_eq!((d.cursor.clone(), d.table()), (end, once.clone()));
        // Each state delivered twice in a row (a relay's retried batch).
        let mut twice = Device::new();
        for o in &stream {
            twice.apply(o);
            assert!(twice.apply(o).skipped);
        }
        assert_eq!(twice.table(), once);
    }

    #[test]
    fn states_without_a_number_are_ordered_by_time_then_id() {
        let a = track("a", 3 * MIN);
        let o = |id: &str, at: Millis, status: Status| Observation {
            event_id: id.into(),
            seq: None,
            at,
            status,
            position_ms: Some(at),
            track: Some(a.clone()),
        };
        let stream = [
            o("x", 0, Status::Playing),
            // Two states in the same millisecond.
            o("y", 20 * S, Status::Paused),
            o("z", 20 * S, Status::Playing),
            o("w", 40 * S, Status::Paused),
        ];
        let mut c = Cursor::default();
        let mut last = Vec::new();
        for s in &stream {
            last = c.apply(s).plays;
        }
        assert_eq!(last[0].listened_ms, 40 * S);
        let end = c.clone();
        for s in &stream {
            assert!(c.apply(s).skipped, "{s:?}");
        }
        assert_eq!(c, end);
    }

    #[test]
    fn the_cursor_survives_being_stored() {
        let mut d = Device::new();
        d.playing(0, 0, &track("a", 3 * MIN));
        let json = serde_json::to_string(&d.cursor).unwrap();
        let back: Cursor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d.cursor);
    }

    #[test]
    fn states_are_read_leniently_and_clipped() {
        let o = observe(
            "e",
            Some(3),
            5,
            &serde_json::json!({"status": "playing", "position_ms": 7,
                "track": {"id": " t1 ", "title": "x".repeat(600), "duration_ms": 1000}}),
        )
        .unwrap();
        assert_eq!(o.seq, Some(3));
        let t = o.track.unwrap();
        assert_eq!(
            (t.id.as_str(), t.title.len(), t.artist.as_str()),
            ("t1", 500, "")
        );
        let no_id = observe(
            "e",
            None,
            5,
            &serde_json::json!({"status": "paused", "track": {"title": "Song"}}),
        );
        assert_eq!(no_id.unwrap().track.unwrap().id, "Song");
        let nothing = observe(
            "e",
            None,
            5,
            &serde_json::json!({"status": "paused", "track": {}}),
        );
        assert_eq!(nothing.unwrap().track, None);
        assert!(observe("e", None, 5, &serde_json::json!({"status": "dancing"})).is_none());
        assert_eq!(clip(&"é".repeat(300)).len(), 500);
    }
}
