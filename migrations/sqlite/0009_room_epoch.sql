-- A room's epoch: join tokens carry the room's id and the epoch they were issued in,
-- and a node refuses a token whose room is gone or whose epoch moved on. It moves on
-- when the owner resets the room, removes someone from its list, changes who may
-- join, or makes a new share link.
ALTER TABLE rooms ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
