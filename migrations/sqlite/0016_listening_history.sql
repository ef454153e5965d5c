-- Listening history (control-api/src/history): each device's place in its stream of
-- `now.playing` states, and the plays those states made.
CREATE TABLE listening_cursors (
    device_id  TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cursor     TEXT    NOT NULL,  -- history::Cursor as JSON
    updated_at INTEGER NOT NULL
) STRICT;

-- Clustered by user and start time (WITHOUT ROWID): the plays of one user in a period
-- are one range of the table, which keeps a year of 100 000 plays fast to aggregate.
CREATE TABLE plays (
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at  INTEGER NOT NULL,
    id          TEXT    NOT NULL UNIQUE,  -- the event that started the play
    device_id   TEXT    NOT NULL,         -- plays outlive a removed device
    track_id    TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    artist      TEXT    NOT NULL,
    album       TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    listened_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, started_at, id)
) STRICT, WITHOUT ROWID;
