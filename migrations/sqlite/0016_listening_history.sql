-- Each device's states are numbered (`seq` in `now_playing.updated`), one more than
-- the last, in the transaction that stores them: the history orders and deduplicates
-- by it, whatever the clocks of the nodes that stamped them.
ALTER TABLE now_playing ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;

-- Listening history (control-api/src/history): each device's place in its stream of
-- `now.playing` states, and the plays those states made.
CREATE TABLE listening_cursors (
    device_id  TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cursor     TEXT    NOT NULL,  -- history::Cursor as JSON
    version    INTEGER NOT NULL,  -- one more on every write: a stale writer changes nothing
    updated_at INTEGER NOT NULL
) STRICT;

-- One play per row. The statistics go through the user's tracks (`play_tracks`, in
-- key order) and read each one's plays in the period from the narrow index below, so
-- the plays arrive grouped by the integer `track_key` (a hash of title, artist and
-- album) and nothing is sorted.
CREATE TABLE plays (
    id          TEXT    NOT NULL PRIMARY KEY,  -- the event that began the play
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at  INTEGER NOT NULL,
    device_id   TEXT    NOT NULL,              -- plays outlive a removed device
    track_key   INTEGER NOT NULL,
    track_id    TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    artist      TEXT    NOT NULL,
    album       TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    listened_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX plays_user_track ON plays (user_id, track_key, started_at, listened_ms);
CREATE INDEX plays_user_recent ON plays (user_id, started_at DESC, id DESC);

-- Each track a user played once: what `track_key` stands for.
CREATE TABLE play_tracks (
    user_id   TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    track_key INTEGER NOT NULL,
    title     TEXT    NOT NULL,
    artist    TEXT    NOT NULL,
    album     TEXT    NOT NULL,
    track_id  TEXT    NOT NULL,  -- the first library id it was played under
    PRIMARY KEY (user_id, track_key)
) STRICT, WITHOUT ROWID;
