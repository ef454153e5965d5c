//! The client's half of TURN's long-term credentials (RFC 8489 §9.2), for the node's
//! tests and load generators that act as TURN clients: learn the realm and nonce from
//! a 401 or 438, then sign every request.

use super::credentials::long_term_key;
use super::stun::{self, Builder, Message};

#[derive(Debug, Clone)]
pub struct ClientAuth {
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
}

impl ClientAuth {
    pub fn new(username: &str, password: &str) -> ClientAuth {
        ClientAuth {
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
        }
    }

    /// Takes the realm and nonce of a challenge (401) or stale-nonce (438) answer.
    pub fn learn(&mut self, answer: &Message<'_>) {
        if let Some(r) = answer.text(stun::REALM) {
            self.realm = Some(r.to_owned());
        }
        if let Some(n) = answer.text(stun::NONCE) {
            self.nonce = Some(n.to_owned());
        }
    }

    /// The key answers are signed with, once the realm is known.
    pub fn key(&self) -> Option<[u8; 16]> {
        Some(long_term_key(
            &self.username,
            self.realm.as_deref()?,
            &self.password,
        ))
    }

    /// `b` with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once a challenge has
    /// been learned; as it is before.
    pub fn sign(&self, b: Builder) -> Builder {
        match (&self.realm, &self.nonce, self.key()) {
            (Some(realm), Some(nonce), Some(key)) => b
                .attr(stun::USERNAME, self.username.as_bytes())
                .attr(stun::REALM, realm.as_bytes())
                .attr(stun::NONCE, nonce.as_bytes())
                .integrity(&key),
            _ => b,
        }
    }
}

/// The error code of an error answer.
pub fn error_code(m: &Message<'_>) -> Option<u16> {
    let v = m.attr(stun::ERROR_CODE)?;
    Some(u16::from(*v.get(2)?) * 100 + u16::from(*v.get(3)?))
}
