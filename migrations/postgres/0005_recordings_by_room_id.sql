-- A recording belongs to the room it was made in (its id), not to whatever room
-- bears that name later: a room deleted and created again under the same name by
-- someone else must not show them the old room's recordings. Recordings of a
-- deleted room are archived: they keep the old room's id, which no room has any more.
ALTER TABLE recordings ADD COLUMN room_id TEXT NOT NULL DEFAULT '';
-- Recordings made before this migration: the room of that name and owner, if any
-- (none: archived, as above).
UPDATE recordings SET room_id = COALESCE(
    (SELECT rooms.id FROM rooms
      WHERE rooms.name = recordings.room_name AND rooms.owner_id = recordings.owner_id),
    'archived:' || recordings.id);
CREATE INDEX recordings_room_id ON recordings (room_id, started_at);
