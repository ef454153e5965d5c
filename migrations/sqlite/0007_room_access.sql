-- Who may join a room: `private` (the owner and the owner's devices), `members`
-- (users the owner invited by email, once they accept) or `link` (anyone signed in
-- who holds the share link, which carries `share_key`). Rooms made before this
-- migration were open to every user who knew the name; they become private, the
-- safe reading, and their owners choose again.
ALTER TABLE rooms ADD COLUMN access TEXT NOT NULL DEFAULT 'private';
-- The share link's secret. Kept readable (the owner copies the link again later);
-- a new one replaces it whenever link sharing is switched on or the owner asks, so
-- an old link stops working (and a key made here is never the one first shared).
ALTER TABLE rooms ADD COLUMN share_key TEXT NOT NULL DEFAULT '';
UPDATE rooms SET share_key = lower(hex(randomblob(32))) WHERE share_key = '';

-- Invitations to a room, by email: `invited` until the person answers, then
-- `accepted` (a member, `user_id` set) or `declined`. Removing one deletes the row.
CREATE TABLE room_members (
    id           TEXT    NOT NULL PRIMARY KEY,
    room_id      TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    email        TEXT    NOT NULL,
    user_id      TEXT    REFERENCES users (id) ON DELETE CASCADE,
    status       TEXT    NOT NULL CHECK (status IN ('invited', 'accepted', 'declined')),
    invited_at   INTEGER NOT NULL,
    responded_at INTEGER,
    UNIQUE (room_id, email)
) STRICT;
CREATE INDEX room_members_email ON room_members (email);
CREATE INDEX room_members_user ON room_members (user_id);
