//! Join tokens: JWTs (EdDSA / Ed25519) that grant an identity access to one room.
//!
//! The control plane (or `streamcore token create`) signs them with a private key;
//! SFU nodes hold only the public key and verify. Claims:
//!
//! | claim | meaning |
//! |---|---|
//! | `sub` | participant identity: unique in a room (a second room participant with it replaces the first) |
//! | `name` | the name others see (absent: the identity) |
//! | `room` | room name |
//! | `grants` | `publish`, `subscribe`, `publish_data`, `record` (all default false) |
//! | `iat`, `nbf`, `exp` | issued at, not before, expiry (seconds since the epoch) |
//! | `jti` | random token id |
//! | `rid`, `epoch` | the control plane's room id and room epoch when it issued the token (absent from operator tokens): a node asks [`crate::room_authority`] whether they are still current |

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use media_core::RoomId;
use serde::{Deserialize, Serialize};

/// What a token allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub publish_data: bool,
    #[serde(default)]
    pub record: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    pub sub: String,
    pub room: String,
    pub grants: Grants,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    /// Most participants the room may hold when this token joins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The room a token was issued for, as the control plane knew it: deleting the room,
/// or moving its epoch on (a reset, a member removed, its access changed), revokes
/// every token bound to the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomBinding {
    pub room_id: String,
    pub epoch: i64,
}

/// A verified token, parsed into domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant {
    pub identity: String,
    /// What other participants see: the token's `name`, or else the identity.
    pub name: String,
    pub room: RoomId,
    pub grants: Grants,
    /// Most peers the room may hold, counting the joining one.
    pub room_limit: Option<usize>,
    /// The token's `jti`: WHIP/WHEP sessions are counted per token.
    pub token_id: String,
    /// Absent from tokens the operator made for rooms the control plane may not know.
    pub binding: Option<RoomBinding>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token names an invalid room: {0}")]
    BadRoom(String),
    #[error("the token has no identity")]
    NoIdentity,
    #[error("the token's name is empty, longer than 128 bytes or not printable")]
    BadName,
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Longest identity accepted, in bytes.
pub const MAX_IDENTITY_LEN: usize = 128;
/// Longest display name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A display name: 1–128 bytes, no control characters.
pub fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

/// What a control-plane token carries besides its room, identity, grants and life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// Most participants the room may hold when this token joins it.
    pub max_participants: Option<u32>,
    /// The control plane's room, which revokes the token when it goes.
    pub binding: Option<RoomBinding>,
    /// The name others see; `None` shows the identity.
    pub name: Option<String>,
}

#[derive(Clone)]
pub struct JoinTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JoinTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokenVerifier")
    }
}

impl JoinTokenVerifier {
    /// From a raw 32-byte Ed25519 public key.
    pub fn from_public_key(public: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub", "nbf"]);
        JoinTokenVerifier {
            key: DecodingKey::from_ed_der(public),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<JoinGrant, TokenError> {
        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            },
        )?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > MAX_IDENTITY_LEN {
            return Err(TokenError::NoIdentity);
        }
        let room = RoomId::parse(&c.room).map_err(|e| TokenError::BadRoom(e.to_string()))?;
        let name = match c.name {
            Some(n) if valid_name(&n) => n,
            Some(_) => return Err(TokenError::BadName),
            None => c.sub.clone(),
        };
        Ok(JoinGrant {
            name,
            identity: c.sub,
            room,
            grants: c.grants,
            room_limit: c.max_participants.map(|n| n as usize),
            token_id: c.jti,
            binding: match (c.rid, c.epoch) {
                (Some(room_id), Some(epoch)) => Some(RoomBinding { room_id, epoch }),
                _ => None,
            },
        })
    }
}

/// An Ed25519 signing key kept in a PEM (PKCS#8) file.
pub struct Ed25519Key {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    key: EncodingKey,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("key", &"[redacted]")
            .finish()
    }
}

const PEM_LABEL: &str = "PRIVATE KEY";

impl Ed25519Key {
    pub fn generate() -> Result<Self, TokenError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| TokenError::Signing(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(Ed25519Key {
            pkcs8: der.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
            key: EncodingKey::from_ed_der(der),
        })
    }

    /// Loads the PEM key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let err = |message: String| TokenError::Key {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = STANDARD
                    .decode(body.trim())
                    .map_err(|e| err(format!("not PEM: {e}")))?;
                Self::from_pkcs8(&der)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let b64 = STANDARD.encode(&signer.pkcs8);
                let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
                for chunk in b64.as_bytes().chunks(64) {
                    pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII")); // base64 output is ASCII
                    pem.push('\n');
                }
                pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
                write_private(path, pem.as_bytes()).map_err(|e| err(e.to_string()))?;
                Ok(signer)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// A key id: the first 8 bytes of SHA-256 of the public key, hex.
    pub fn key_id(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.public);
        hex::encode(&d.as_ref()[..8])
    }

    /// The public key as a JWK (`OKP`, `Ed25519`), for a JWKS endpoint.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.key_id(),
            "x": URL_SAFE_NO_PAD.encode(&self.public),
        })
    }

    /// Signs `claims` as an EdDSA JWT.
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// The node's join-token signing key. Only the control plane and the CLI sign.
#[derive(Debug)]
pub struct JoinTokenSigner {
    key: Ed25519Key,
}

impl JoinTokenSigner {
    pub fn generate() -> Result<Self, TokenError> {
        Ed25519Key::generate().map(|key| JoinTokenSigner { key })
    }

    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        Ed25519Key::load_or_create(path).map(|key| JoinTokenSigner { key })
    }

    pub fn key(&self) -> &Ed25519Key {
        &self.key
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    pub fn public_jwk(&self) -> serde_json::Value {
        self.key.public_jwk()
    }

    pub fn verifier(&self) -> JoinTokenVerifier {
        JoinTokenVerifier::from_public_key(self.key.public_key())
    }

    pub fn sign(
        &self,
        room: &RoomId,
        identity: &str,
        grants: Grants,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.sign_limited(room, identity, grants, ttl, None)
    }

    /// A token that may join only while the room holds fewer than `max_participants`.
    pub fn sign_limited(
        &self,
        room: &RoomId,
        identity: &str,
        grants: Grants,
        ttl: Duration,
        max_participants: Option<u32>,
    ) -> Result<String, TokenError> {
        self.sign_scoped(
            room,
            identity,
            grants,
            ttl,
            TokenScope {
                max_participants,
                ..TokenScope::default()
            },
        )
    }

    /// A token with its [`TokenScope`]: bound to the control plane's room (it stops
    /// working when the room is deleted or its epoch moves on), with a display name.
    pub fn sign_scoped(
        &self,
        room: &RoomId,
        identity: &str,
        grants: Grants,
        ttl: Duration,
        scope: TokenScope,
    ) -> Result<String, TokenError> {
        if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN {
            return Err(TokenError::NoIdentity);
        }
        if scope.name.as_deref().is_some_and(|n| !valid_name(n)) {
            return Err(TokenError::BadName);
        }
        let TokenScope {
            max_participants,
            binding,
            name,
        } = scope;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = JoinClaims {
            sub: identity.to_owned(),
            room: room.as_str().to_owned(),
            grants,
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            jti: hex::encode(rand::random::<[u8; 12]>()),
            max_participants,
            epoch: binding.as_ref().map(|b| b.epoch),
            rid: binding.map(|b| b.room_id),
            name,
        };
        self.key.sign_claims(&claims)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            publish: true,
            ..Grants::default()
        }
    }

    #[test]
    fn sign_and_verify() {
        let s = JoinTokenSigner::generate().unwrap();
        let room = RoomId::parse("r").unwrap();
        let t = s
            .sign(&room, "alice", grants(), Duration::from_secs(60))
            .unwrap();
        let g = s.verifier().verify(&t).unwrap();
        assert_eq!(g.identity, "alice");
        assert_eq!(g.room, room);
        assert!(g.grants.publish && !g.grants.subscribe);
    }

    #[test]
    fn other_keys_and_tampering_are_rejected() {
        let a = JoinTokenSigner::generate().unwrap();
        let b = JoinTokenSigner::generate().unwrap();
        let room = RoomId::parse("r").unwrap();
        let t = a
            .sign(&room, "x", grants(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            b.verifier().verify(&t),
            Err(TokenError::Invalid(_))
        ));
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let claims = serde_json::json!({"sub":"x","room":"r","grants":{"publish":true,"subscribe":true},"iat":0,"nbf":0,"exp":u64::MAX / 2,"jti":"j"});
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(a.verifier().verify(&parts.join(".")).is_err());
        assert!(a.verifier().verify("not a token").is_err());
    }

    #[test]
    fn room_limits_travel_in_the_token() {
        let s = JoinTokenSigner::generate().unwrap();
        let room = RoomId::parse("r").unwrap();
        let t = s
            .sign_limited(&room, "x", grants(), Duration::from_secs(60), Some(5))
            .unwrap();
        assert_eq!(s.verifier().verify(&t).unwrap().room_limit, Some(5));
        let t = s
            .sign(&room, "x", grants(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.verifier().verify(&t).unwrap().room_limit, None);
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let s = JoinTokenSigner::generate().unwrap();
        let claims = JoinClaims {
            sub: "x".into(),
            room: "r".into(),
            grants: grants(),
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
            max_participants: None,
            rid: None,
            epoch: None,
            name: None,
        };
        let t = s.key().sign_claims(&claims).unwrap();
        assert!(matches!(s.verifier().verify(&t), Err(TokenError::Expired)));
    }

    #[test]
    fn a_bound_token_carries_its_room_binding() {
        let s = JoinTokenSigner::generate().unwrap();
        let room = RoomId::parse("r").unwrap();
        let binding = RoomBinding {
            room_id: "id-1".into(),
            epoch: 7,
        };
        let t = s
            .sign_scoped(
                &room,
                "x",
                grants(),
                Duration::from_secs(60),
                TokenScope {
                    binding: Some(binding.clone()),
                    ..TokenScope::default()
                },
            )
            .unwrap();
        assert_eq!(s.verifier().verify(&t).unwrap().binding, Some(binding));
        let plain = s
            .sign(&room, "x", grants(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.verifier().verify(&plain).unwrap().binding, None);
    }

    #[test]
    fn the_name_others_see_travels_in_the_token() {
        let s = JoinTokenSigner::generate().unwrap();
        let room = RoomId::parse("r").unwrap();
        let named = |name: &str| {
            s.sign_scoped(
                &room,
                "u-1",
                grants(),
                Duration::from_secs(60),
                TokenScope {
                    name: Some(name.into()),
                    ..TokenScope::default()
                },
            )
        };
        let g = s.verifier().verify(&named("Ann Lee").unwrap()).unwrap();
        assert_eq!((g.identity.as_str(), g.name.as_str()), ("u-1", "Ann Lee"));
        assert!(matches!(named("a\u{7}b"), Err(TokenError::BadName)));
        assert!(matches!(named(" "), Err(TokenError::BadName)));
        // Without a name, others see the identity.
        let plain = s
            .sign(&room, "u-1", grants(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.verifier().verify(&plain).unwrap().name, "u-1");
    }

    #[test]
    fn key_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("sc-key-{}", rand::random::<u64>()));
        let path = dir.join("keys/join.pem");
        let a = JoinTokenSigner::load_or_create(&path).unwrap();
        let b = JoinTokenSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
