-- Events: the transactional outbox, the relay's lease, device presence and the
-- last playback state of each device. Same shape as migrations/sqlite/0002_events.sql.

CREATE TABLE event_outbox (
    seq          BIGSERIAL NOT NULL PRIMARY KEY,
    id           TEXT      NOT NULL CONSTRAINT event_outbox_id_key UNIQUE,
    topic        TEXT      NOT NULL,
    key          TEXT      NOT NULL,
    payload      TEXT      NOT NULL,
    created_at   BIGINT    NOT NULL,
    published_at BIGINT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published ON event_outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE leases (
    name       TEXT   NOT NULL PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

ALTER TABLE devices ADD COLUMN online BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE devices ADD COLUMN control_conn TEXT;

CREATE TABLE now_playing (
    device_id  TEXT   NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX now_playing_user ON now_playing (user_id);
