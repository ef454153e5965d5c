-- Sign-in with OpenID Connect. A login in flight is a row keyed by its `state`'s
-- digest, taken once (a replayed `state` finds nothing). An account's provider
-- identities are (provider, subject) pairs; a provider account whose verified email
-- is an existing account's waits in `oidc_pending_links` until the user proves that
-- account (its password), and is never linked before.
CREATE TABLE oidc_logins (
    state_hash    TEXT   NOT NULL PRIMARY KEY,
    provider      TEXT   NOT NULL,
    nonce         TEXT   NOT NULL,
    verifier      TEXT   NOT NULL,           -- PKCE code verifier
    link_user_id  TEXT,                      -- set when a signed-in user links
    return_to     TEXT   NOT NULL,
    expires_at    BIGINT NOT NULL
);

CREATE TABLE oidc_identities (
    provider   TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    email      TEXT,
    linked_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities (user_id);
-- One identity of each provider per account.
CREATE UNIQUE INDEX oidc_identities_user_provider ON oidc_identities (user_id, provider);

CREATE TABLE oidc_pending_links (
    token_hash  TEXT   NOT NULL PRIMARY KEY,
    provider    TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    email       TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    return_to   TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL
);
