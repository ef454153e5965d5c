-- Why a room's epoch last moved on (`reset`, `who_may_join_changed`): every node
-- serving the room sees the new epoch within a second and ends the sessions that
-- reason revokes, whichever server the owner's request reached.
ALTER TABLE rooms ADD COLUMN revoked_why TEXT NOT NULL DEFAULT '';
