//! # OpenID Connect: the relying party
//!
//! Sign-in with any provider configured by issuer URL: its discovery document names
//! the endpoints, its JWKS the keys (fetched again when a token names a key it does
//! not hold, so a provider that rotates its keys keeps working). The authorization code
//! flow with PKCE (S256): `state` (single use, stored as a digest, and held by the
//! browser that began the login in a cookie) ties the callback to the login, `nonce`
//! ties the ID token to it, and the ID token's signature, issuer, audience (`azp` when
//! it has several), expiry and not-before are verified before anything is believed.
//!
//! The HTTP routes (`routes::oidc`) decide what a verified identity does to accounts;
//! this module only proves who the provider says it is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// One provider, as the operator configures it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// In URLs and in accounts' identities: `[a-z0-9-]`.
    pub id: String,
    /// On the sign-in button: "Sign in with <name>".
    pub name: String,
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` is its discovery.
    pub issuer: String,
    pub client_id: String,
    /// Sent with HTTP Basic to the token endpoint.
    pub client_secret: String,
}

impl ProviderConfig {
    /// What the accounts' identities of this provider are stored under: its issuer,
    /// so that a provider id pointed at another issuer finds none of the first's.
    pub fn key(&self) -> String {
        self.issuer.trim_end_matches('/').to_owned()
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider answered something unexpected: {0}")]
    Protocol(String),
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
}

/// What the discovery document says.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Identity {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Some providers send it as a string.
    #[serde(default, deserialize_with = "loose_bool")]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    /// The party the token was issued to, when it has several audiences.
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    aud: serde_json::Value,
}

/// `true`, `false`, `"true"` or `"false"`.
fn loose_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

impl Identity {
    /// The email, when the provider vouches for it.
    pub fn verified_email(&self) -> Option<String> {
        match (&self.email, self.email_verified) {
            (Some(e), Some(true)) => Some(e.trim().to_lowercase()),
            _ => None,
        }
    }
}

/// A PKCE verifier: 32 random bytes, base64url (43 characters).
pub fn new_verifier() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// A random secret for `state`, `nonce` and link tokens.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Verifies an ID token against the provider's keys: signature (RS256/ES256, never
/// `none` or HMAC), issuer, audience, expiry (a minute of leeway), and the login's
/// nonce. `Ok(None)` when no key has the token's `kid` (fetch the keys again).
pub fn verify_id_token(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Option<Identity>, OidcError> {
    let bad = |m: String| OidcError::InvalidToken(m);
    let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(bad(format!("signed with {:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // One key and no kid: that key.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => return Err(bad("no kid, and the provider has several keys".into())),
    };
    let Some(jwk) = jwk else {
        return Ok(None);
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("the provider's key: {e}")))?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = 60;
    v.validate_nbf = true;
    let data = jsonwebtoken::decode::<Identity>(token, &key, &v).map_err(|e| {
        bad(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "its signature does not match".into()
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "it is for another client".into(),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "another issuer made it".into(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "it has expired".into(),
            _ => e.to_string(),
        })
    })?;
    if data.claims.nonce.as_deref() != Some(nonce) {
        return Err(bad("its nonce is not this sign-in's".into()));
    }
    // Several audiences: it must have been issued to us (OpenID Connect Core 3.1.3.7).
    let several = data.claims.aud.as_array().is_some_and(|a| a.len() > 1);
    match data.claims.azp.as_deref() {
        Some(azp) if azp != client_id => return Err(bad("it was issued to another party".into())),
        None if several => return Err(bad("it has several audiences and no azp".into())),
        _ => {}
    }
    Ok(Some(data.claims))
}

fn token_has_kid(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|h| h.kid.is_some())
}

/// How long a discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Keys are fetched again for an unknown `kid` at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(2);
/// Keys are read again at least this often: one the provider withdrew stops working.
const JWKS_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Cached {
    discovery: Option<(Instant, Discovery)>,
    keys: Option<(Instant, JwkSet)>,
    /// When the keys were last fetched for a `kid` they lacked. Apart from `keys`'s
    /// time: a rotation soon after an ordinary fetch must still be picked up.
    refetched: Option<Instant>,
}

impl Cached {
    /// The keys as last read, if they may serve at `now`: read within [`JWKS_TTL`],
    /// and, when `fresh` keys are asked for (a `kid` they lack), only while the last
    /// such fetch is under [`JWKS_REFETCH`] old, so that tokens with made-up `kid`s
    /// cannot make us fetch on every sign-in.
    fn usable_keys(&self, fresh: bool, now: Instant) -> Option<&JwkSet> {
        let (at, keys) = self.keys.as_ref()?;
        let throttled = self
            .refetched
            .is_some_and(|r| now.saturating_duration_since(r) < JWKS_REFETCH);
        (now.saturating_duration_since(*at) < JWKS_TTL && (!fresh || throttled)).then_some(keys)
    }
}

/// The configured providers, with their discovery documents and keys as last read.
pub struct Providers {
    configs: Vec<ProviderConfig>,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field(
                "configs",
                &self.configs.iter().map(|c| &c.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Providers {
    pub fn new(configs: Vec<ProviderConfig>) -> Arc<Providers> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Arc::new(Providers {
            configs,
            http,
            cache: Mutex::default(),
        })
    }

    pub fn list(&self) -> &[ProviderConfig] {
        &self.configs
    }

    pub fn get(&self, id: &str) -> Option<&ProviderConfig> {
        self.configs.iter().find(|c| c.id == id)
    }

    /// The provider whose identities are stored under `key` (its issuer).
    pub fn by_key(&self, key: &str) -> Option<&ProviderConfig> {
        self.configs.iter().find(|c| c.key() == key)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("{url}: {e}")))?;
        if !r.status().is_success() {
            return Err(OidcError::Protocol(format!(
                "{url} answered {}",
                r.status()
            )));
        }
        r.json()
            .await
            .map_err(|e| OidcError::Protocol(format!("{url}: {e}")))
    }

    /// The provider's discovery document (cached for an hour).
    pub async fn discovery(&self, p: &ProviderConfig) -> Result<Discovery, OidcError> {
        if let Some((at, d)) = self
            .cache
            .lock()
            .await
            .get(&p.id)
            .and_then(|c| c.discovery.clone())
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.fetch_json(&url).await?;
        if d.issuer.trim_end_matches('/') != p.issuer.trim_end_matches('/') {
            return Err(OidcError::Protocol(format!(
                "the discovery document names issuer {}, not {}",
                d.issuer, p.issuer
            )));
        }
        self.cache
            .lock()
            .await
            .entry(p.id.clone())
            .or_default()
            .discovery = Some((Instant::now(), d.clone()));
        Ok(d)
    }

    /// The provider's keys; `fresh` reads them again (unless a `fresh` read was just
    /// made: [`Cached::usable_keys`]).
    async fn keys(
        &self,
        p: &ProviderConfig,
        d: &Discovery,
        fresh: bool,
    ) -> Result<JwkSet, OidcError> {
        if let Some(k) = self
            .cache
            .lock()
            .await
            .get(&p.id)
            .and_then(|c| c.usable_keys(fresh, Instant::now()).cloned())
        {
            return Ok(k);
        }
        let k: JwkSet = self.fetch_json(&d.jwks_uri).await?;
        let now = Instant::now();
        let mut cache = self.cache.lock().await;
        let cached = cache.entry(p.id.clone()).or_default();
        cached.keys = Some((now, k.clone()));
        if fresh {
            cached.refetched = Some(now);
        }
        Ok(k)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the verified
    /// identity in the ID token.
    pub async fn redeem(
        &self,
        p: &ProviderConfig,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let d = self.discovery(p).await?;
        let r = self
            .http
            .post(&d.token_endpoint)
            .basic_auth(&p.client_id, Some(&p.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("{}: {e}", d.token_endpoint)))?;
        let status = r.status();
        let body: serde_json::Value = r
            .json()
            .await
            .map_err(|e| OidcError::Protocol(format!("the token answer: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Refused(format!(
                "{} ({})",
                body["error"].as_str().unwrap_or("error"),
                body["error_description"].as_str().unwrap_or("")
            )));
        }
        let token = body["id_token"]
            .as_str()
            .ok_or_else(|| OidcError::Protocol("no id_token in the token answer".into()))?;
        let keys = self.keys(p, &d, false).await?;
        match verify_id_token(token, &keys, &d.issuer, &p.client_id, nonce) {
            Ok(Some(id)) => return Ok(id),
            Ok(None) => {}
            // No kid, and the one key fails: it may have been replaced.
            Err(e) if !token_has_kid(token) => {
                let keys = self.keys(p, &d, true).await?;
                return verify_id_token(token, &keys, &d.issuer, &p.client_id, nonce)?.ok_or(e);
            }
            Err(e) => return Err(e),
        }
        // A key not seen yet: the provider rotated its keys.
        let keys = self.keys(p, &d, true).await?;
        verify_id_token(token, &keys, &d.issuer, &p.client_id, nonce)?.ok_or_else(|| {
            OidcError::InvalidToken("signed with a key the provider does not publish".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = new_verifier();
        assert_eq!(v.len(), 43);
        assert_ne!(v, new_verifier());
    }

    #[test]
    fn only_a_verified_email_counts() {
        let id = |email: Option<&str>, verified: Option<bool>| Identity {
            sub: "s".into(),
            email: email.map(str::to_owned),
            email_verified: verified,
            name: None,
            nonce: None,
            azp: None,
            aud: serde_json::Value::Null,
        };
        assert_eq!(
            id(Some(" Ann@Example.COM "), Some(true)).verified_email(),
            Some("ann@example.com".into())
        );
        assert_eq!(
            id(Some("ann@example.com"), Some(false)).verified_email(),
            None
        );
        assert_eq!(id(Some("ann@example.com"), None).verified_email(), None);
        assert_eq!(id(None, Some(true)).verified_email(), None);
    }

    #[test]
    fn unsigned_and_hmac_tokens_are_refused_before_any_key() {
        let keys = JwkSet { keys: Vec::new() };
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        assert!(verify_id_token(&none, &keys, "i", "c", "n").is_err());
        let hmac = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        let e = verify_id_token(&hmac, &keys, "i", "c", "n").unwrap_err();
        assert!(e.to_string().contains("HS256"), "{e}");
        // An RS256 token naming a key the set lacks: fetch the keys again.
        let unknown = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k9"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert!(matches!(
            verify_id_token(&unknown, &keys, "i", "c", "n"),
            Ok(None)
        ));
    }

    #[test]
    fn keys_are_fetched_again_for_an_unknown_kid_at_most_every_two_seconds() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let keys = JwkSet { keys: Vec::new() };
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let read_at_0 = Cached {
            keys: Some((t0, keys)),
            ..Cached::default()
        };
        assert!(read_at_0.usable_keys(false, at(1.0)).is_some());
        // Rotated half a second after an ordinary read: read again at once.
        assert!(read_at_0.usable_keys(true, at(0.5)).is_none());
        assert!(read_at_0.usable_keys(false, at(3600.0)).is_none(), "stale");
        let refetched_at_0 = Cached {
            refetched: Some(t0),
            ..read_at_0
        };
        assert!(
            refetched_at_0.usable_keys(true, at(1.9)).is_some(),
            "throttled"
        );
        assert!(refetched_at_0.usable_keys(true, at(2.0)).is_none());
        assert!(Cached::default().usable_keys(false, t0).is_none());
    }
}
