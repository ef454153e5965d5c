-- A room's name is unique among its owner's rooms, no longer across the node: a name
-- taken by someone else must not answer `409` (that told strangers which rooms
-- exist). The SFU knows a room by its id from now on; a recording's `room_name`
-- keeps the SFU room it recorded (the name before this migration, the id after).
--
-- SQLite cannot drop a UNIQUE column constraint, so the table is rebuilt. Dropping
-- `rooms` cascades to `room_members` (foreign keys stay on inside the migration's
-- transaction), so the invitations are kept aside and put back.
CREATE TEMP TABLE room_members_kept AS SELECT * FROM room_members;

CREATE TABLE rooms_per_owner (
    id               TEXT    NOT NULL PRIMARY KEY,
    owner_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL,
    max_participants INTEGER NOT NULL,
    auto_record      INTEGER NOT NULL DEFAULT 0 CHECK (auto_record IN (0, 1)),
    publish_policy   TEXT    NOT NULL,       -- owner | anyone
    created_at       INTEGER NOT NULL,
    access           TEXT    NOT NULL DEFAULT 'private',
    share_key        TEXT    NOT NULL DEFAULT '',
    epoch            INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner_id, name)
) STRICT;
INSERT INTO rooms_per_owner (id, owner_id, name, max_participants, auto_record,
                             publish_policy, created_at, access, share_key, epoch)
    SELECT id, owner_id, name, max_participants, auto_record,
           publish_policy, created_at, access, share_key, epoch
      FROM rooms;
DROP TABLE rooms;
ALTER TABLE rooms_per_owner RENAME TO rooms;

INSERT INTO room_members SELECT * FROM room_members_kept;
DROP TABLE room_members_kept;
