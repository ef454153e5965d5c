-- When the account proved it holds its email (the link of a verification mail, or an
-- operator's `streamcore admin create`). Unverified accounts get lower quotas, send no
-- invitations, and are never made admin. Accounts made before this migration were
-- never asked: they count as verified when they were made.
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
UPDATE users SET email_verified_at = created_at;

-- Verification links: single-use, expiring, stored as SHA-256 of the token; each one
-- names the address it was sent to, so a link verifies only that address.
CREATE TABLE email_verifications (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX email_verifications_user ON email_verifications (user_id);
