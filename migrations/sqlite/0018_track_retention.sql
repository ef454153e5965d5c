-- Per-room retention of raw recorded tracks: a room whose owner sets `tracks_days`
-- has each recording's track files deleted that many days after its first finished
-- mixdown (the episode and stems stay, and so does the manifest). A recording whose
-- tracks went is marked, so that it is not mixed down again from files that are gone.
CREATE TABLE room_retention (
    room_id      TEXT   NOT NULL PRIMARY KEY,
    tracks_days  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE recording_tracks_deleted (
    recording_id  TEXT   NOT NULL PRIMARY KEY,
    deleted_at    INTEGER NOT NULL,
    files         INTEGER NOT NULL             -- how many track files went
) STRICT;
