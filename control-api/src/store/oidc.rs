//! Sign-in with OpenID Connect: logins in flight (taken once), the accounts' provider
//! identities, and links waiting for the user to prove the account. One SQL text for
//! both backends (sqlx binds `$n` on SQLite too), as in [`super::podcasts`]. `state`
//! and link tokens are stored as SHA-256 digests only.

use std::future::Future;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{Db, Millis, StoreError};

type R<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcLogin {
    pub state_hash: String,
    pub provider: String,
    pub nonce: String,
    pub verifier: String,
    pub link_user_id: Option<String>,
    pub return_to: String,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcIdentity {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub email: Option<String>,
    pub linked_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingLink {
    pub token_hash: String,
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub user_id: String,
    pub return_to: String,
    pub expires_at: Millis,
}

pub trait OidcStore {
    fn insert_oidc_login(&self, login: &OidcLogin) -> impl Future<Output = R<()>> + Send;
    /// Takes the login of `state_hash` if it has not expired at `now`: one caller gets
    /// it, once (expired ones are removed too).
    fn take_oidc_login(
        &self,
        state_hash: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<OidcLogin>>> + Send;
    fn oidc_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> impl Future<Output = R<Option<OidcIdentity>>> + Send;
    fn user_identities(&self, user_id: &str) -> impl Future<Output = R<Vec<OidcIdentity>>> + Send;
    /// Links; `Conflict` when the identity is another account's or the account has
    /// one of this provider already.
    fn link_identity(&self, identity: &OidcIdentity) -> impl Future<Output = R<()>> + Send;
    fn unlink_identity(
        &self,
        user_id: &str,
        provider: &str,
    ) -> impl Future<Output = R<bool>> + Send;
    fn insert_pending_link(&self, link: &PendingLink) -> impl Future<Output = R<()>> + Send;
    /// The pending link of `token_hash`, unexpired at `now` (not taken: a wrong
    /// password may be tried again).
    fn pending_link(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> impl Future<Output = R<Option<PendingLink>>> + Send;
    fn delete_pending_link(&self, token_hash: &str) -> impl Future<Output = R<bool>> + Send;
}

fn conflict(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("oidc identity")
        }
        _ => StoreError::Database(e),
    }
}

macro_rules! oidc_store {
    ($store:ty) => {
        impl OidcStore for $store {
            async fn insert_oidc_login(&self, l: &OidcLogin) -> R<()> {
                // Logins nobody finished (a day past their end) go.
                sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
                    .bind(l.expires_at - 86_400_000)
                    .execute(self.pool())
                    .await?;
                sqlx::query(
                    "INSERT INTO oidc_logins (state_hash, provider, nonce, verifier, link_user_id, return_to, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&l.state_hash)
                .bind(&l.provider)
                .bind(&l.nonce)
                .bind(&l.verifier)
                .bind(&l.link_user_id)
                .bind(&l.return_to)
                .bind(l.expires_at)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn take_oidc_login(&self, state_hash: &str, now: Millis) -> R<Option<OidcLogin>> {
                let mut tx = self.pool().begin().await?;
                sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let row: Option<OidcLogin> = sqlx::query_as(
                    "DELETE FROM oidc_logins WHERE state_hash = $1 \
                     RETURNING state_hash, provider, nonce, verifier, link_user_id, return_to, expires_at",
                )
                .bind(state_hash)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn oidc_identity(&self, provider: &str, subject: &str) -> R<Option<OidcIdentity>> {
                Ok(sqlx::query_as(
                    "SELECT provider, subject, user_id, email, linked_at FROM oidc_identities \
                     WHERE provider = $1 AND subject = $2",
                )
                .bind(provider)
                .bind(subject)
                .fetch_optional(self.pool())
                .await?)
            }

            async fn user_identities(&self, user_id: &str) -> R<Vec<OidcIdentity>> {
                Ok(sqlx::query_as(
                    "SELECT provider, subject, user_id, email, linked_at FROM oidc_identities \
                     WHERE user_id = $1 ORDER BY linked_at, provider",
                )
                .bind(user_id)
                .fetch_all(self.pool())
                .await?)
            }

            async fn link_identity(&self, i: &OidcIdentity) -> R<()> {
                sqlx::query(
                    "INSERT INTO oidc_identities (provider, subject, user_id, email, linked_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&i.provider)
                .bind(&i.subject)
                .bind(&i.user_id)
                .bind(&i.email)
                .bind(i.linked_at)
                .execute(self.pool())
                .await
                .map_err(conflict)?;
                Ok(())
            }

            async fn unlink_identity(&self, user_id: &str, provider: &str) -> R<bool> {
                let done = sqlx::query("DELETE FROM oidc_identities WHERE user_id = $1 AND provider = $2")
                    .bind(user_id)
                    .bind(provider)
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_pending_link(&self, l: &PendingLink) -> R<()> {
                sqlx::query("DELETE FROM oidc_pending_links WHERE expires_at < $1")
                    .bind(l.expires_at - 86_400_000)
                    .execute(self.pool())
                    .await?;
                sqlx::query(
                    "INSERT INTO oidc_pending_links (token_hash, provider, subject, email, user_id, return_to, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&l.token_hash)
                .bind(&l.provider)
                .bind(&l.subject)
                .bind(&l.email)
                .bind(&l.user_id)
                .bind(&l.return_to)
                .bind(l.expires_at)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn pending_link(&self, token_hash: &str, now: Millis) -> R<Option<PendingLink>> {
                Ok(sqlx::query_as(
                    "SELECT token_hash, provider, subject, email, user_id, return_to, expires_at \
                     FROM oidc_pending_links WHERE token_hash = $1 AND expires_at >= $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(self.pool())
                .await?)
            }

            async fn delete_pending_link(&self, token_hash: &str) -> R<bool> {
                let done = sqlx::query("DELETE FROM oidc_pending_links WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

oidc_store!(SqliteStore);
oidc_store!(PgStore);

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl OidcStore for Db {
    async fn insert_oidc_login(&self, login: &OidcLogin) -> R<()> {
        delegate!(self, s => s.insert_oidc_login(login))
    }
    async fn take_oidc_login(&self, state_hash: &str, now: Millis) -> R<Option<OidcLogin>> {
        delegate!(self, s => s.take_oidc_login(state_hash, now))
    }
    async fn oidc_identity(&self, provider: &str, subject: &str) -> R<Option<OidcIdentity>> {
        delegate!(self, s => s.oidc_identity(provider, subject))
    }
    async fn user_identities(&self, user_id: &str) -> R<Vec<OidcIdentity>> {
        delegate!(self, s => s.user_identities(user_id))
    }
    async fn link_identity(&self, identity: &OidcIdentity) -> R<()> {
        delegate!(self, s => s.link_identity(identity))
    }
    async fn unlink_identity(&self, user_id: &str, provider: &str) -> R<bool> {
        delegate!(self, s => s.unlink_identity(user_id, provider))
    }
    async fn insert_pending_link(&self, link: &PendingLink) -> R<()> {
        delegate!(self, s => s.insert_pending_link(link))
    }
    async fn pending_link(&self, token_hash: &str, now: Millis) -> R<Option<PendingLink>> {
        delegate!(self, s => s.pending_link(token_hash, now))
    }
    async fn delete_pending_link(&self, token_hash: &str) -> R<bool> {
        delegate!(self, s => s.delete_pending_link(token_hash))
    }
}
