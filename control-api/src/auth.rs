//! Credentials: Argon2id password hashes, short-lived access JWTs, and opaque refresh
//! tokens that rotate on every use.
//!
//! A login starts a refresh-token *family*. Each refresh marks the presented token used
//! and issues the next one of the family. Presenting a token that was already used
//! means it was copied: the whole family is revoked, and both holders must log in again.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use aws_lc_rs::digest::{SHA256, digest};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use signaling::{Ed25519Key, TokenError};

use crate::store::{Millis, RefreshRecord, Role};

pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Hashes a password with Argon2id (OWASP defaults). CPU-heavy: call from a
/// blocking thread.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt: [u8; 16] = rand::random();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies a password against a stored hash. CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => {
            // An account no password opens (made by a sign-in provider) costs the same
            // time as any other, so a login's timing does not tell it apart.
            if let Ok(d) = PasswordHash::new(dummy_hash()) {
                let _ = Argon2::default().verify_password(password.as_bytes(), &d);
            }
            false
        }
    }
}

/// A hash of a password nobody has, so a login for an unknown email costs the same
/// time as one for a known email.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default())
}

/// An opaque secret: 256 random bits, URL-safe.
pub fn new_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// How secrets are stored: SHA-256, hex.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(digest(&SHA256, secret.as_bytes()).as_ref())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub role: Role,
    /// Present for device-scoped credentials (a paired phone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub iat: u64,
    /// `iat` to the millisecond: a token made in the same second as a sessions' end,
    /// but after it, still opens a socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
    pub exp: u64,
    pub typ: String,
}

/// Signs and verifies access tokens with the control plane's own Ed25519 key.
pub struct AccessTokens {
    key: Ed25519Key,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokens")
    }
}

const ACCESS_TYP: &str = "access";

impl AccessTokens {
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        Ok(Self::from_key(Ed25519Key::load_or_create(path)?))
    }

    pub fn from_key(key: Ed25519Key) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        AccessTokens {
            decoding: DecodingKey::from_ed_der(key.public_key()),
            key,
            validation,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }

    pub fn issue(
        &self,
        user_id: &str,
        role: Role,
        device: Option<&str>,
    ) -> Result<String, TokenError> {
        let now_ms = now_millis();
        let now = now_ms as u64 / 1000;
        self.key.sign_claims(&AccessClaims {
            sub: user_id.to_owned(),
            role,
            device: device.map(str::to_owned),
            iat: now,
            iat_ms: Some(now_ms),
            exp: now + self.access_ttl.as_secs(),
            typ: ACCESS_TYP.into(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        if data.claims.typ != ACCESS_TYP {
            return Err(TokenError::Invalid("not an access token".into()));
        }
        Ok(data.claims)
    }

    /// A new refresh token of `family` (a new family when `None`): the secret to hand
    /// out and the record to store.
    pub fn new_refresh(
        &self,
        user_id: &str,
        family: Option<&str>,
        device: Option<&str>,
    ) -> (String, RefreshRecord) {
        let secret = new_secret();
        let now = now_millis();
        let rec = RefreshRecord {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_owned(),
            family_id: family.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            token_hash: secret_hash(&secret),
            device_id: device.map(str::to_owned),
            created_at: now,
            expires_at: now + self.refresh_ttl.as_millis() as Millis,
            used_at: None,
            revoked_at: None,
        };
        (secret, rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn access_tokens() {
        let t = AccessTokens::from_key(Ed25519Key::generate().unwrap());
        let tok = t.issue("u1", Role::Admin, Some("d1")).unwrap();
        let c = t.verify(&tok).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.role, c.device.as_deref()),
            ("u1", Role::Admin, Some("d1"))
        );
        let other = AccessTokens::from_key(Ed25519Key::generate().unwrap());
        assert!(other.verify(&tok).is_err());
    }

    #[test]
    fn secrets_hash_stably() {
        let s = new_secret();
        assert_eq!(secret_hash(&s), secret_hash(&s));
        assert_ne!(secret_hash(&s), secret_hash(&new_secret()));
        assert_eq!(s.len(), 43);
    }
}
