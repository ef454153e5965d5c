//! TURN credentials in the REST style (coturn's `use-auth-secret`): username
//! `<expiry, unix seconds>:<identity>`, password `base64(HMAC-SHA1(secret, username))`.
//! Whoever knows the secret hands them out (the node's signaling) or checks them (the
//! embedded TURN server, or coturn); nothing is stored anywhere.
//!
//! Also the long-term-credential key of RFC 8489 §9.2.2 and the server's nonces,
//! which are stateless: an expiry and a MAC over it, so no table grows per client.

use aws_lc_rs::hmac;
use base64::Engine;
use md5::{Digest, Md5};

/// `<expiry>:<identity>`. A `:` in the identity would end coturn's timestamp early
/// on some separators; identities are not secret, so it is replaced.
pub fn rest_username(expiry_unix: u64, identity: &str) -> String {
    format!("{expiry_unix}:{}", identity.replace(':', "_"))
}

/// The password a TURN server with `secret` expects for `username`.
pub fn rest_password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// A REST username's expiry and identity; `None` when it is not of that form.
pub fn parse_rest_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, identity) = username.split_once(':')?;
    Some((expiry.parse().ok()?, identity))
}

/// `MD5(username ":" realm ":" password)`, the key of MESSAGE-INTEGRITY.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Makes and checks nonces: `<expiry, hex>-<first 8 bytes of its HMAC, hex>`.
pub struct Nonces {
    key: hmac::Key,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces")
    }
}

impl Nonces {
    pub fn new(secret: &[u8]) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn make(&self, expiry_unix: u64) -> String {
        let stamp = format!("{expiry_unix:x}");
        let tag = hmac::sign(&self.key, stamp.as_bytes());
        format!("{stamp}-{}", hex(&tag.as_ref()[..8]))
    }

    /// Whether `nonce` is one of ours that has not expired at `now_unix`.
    pub fn valid(&self, nonce: &str, now_unix: u64) -> bool {
        let Some((stamp, tag)) = nonce.split_once('-') else {
            return false;
        };
        let Ok(expiry) = u64::from_str_radix(stamp, 16) else {
            return false;
        };
        let expected = hmac::sign(&self.key, stamp.as_bytes());
        expiry > now_unix && tag == hex(&expected.as_ref()[..8])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_is_coturns() {
        // coturn's turnutils_uclient computes the same for this secret and username.
        assert_eq!(
            rest_password("n0rth-w1nd", "1700000000:alice"),
            base64::engine::general_purpose::STANDARD.encode(
                hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"n0rth-w1nd"),
                    b"1700000000:alice"
                )
                .as_ref()
            )
        );
        assert_eq!(rest_username(5, "a:b"), "5:a_b");
        assert_eq!(parse_rest_username("5:a_b"), Some((5, "a_b")));
        assert_eq!(parse_rest_username("soon:a"), None);
        assert_eq!(parse_rest_username("alice"), None);
    }

    #[test]
    fn long_term_key_is_rfc5769s() {
        // MD5 of "user:realm:pass", as Python's hashlib computes it.
        let k = long_term_key("user", "realm", "pass");
        assert_eq!(hex(&k), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let n = Nonces::new(b"server secret");
        let nonce = n.make(1000);
        assert!(n.valid(&nonce, 999));
        assert!(!n.valid(&nonce, 1000));
        assert!(!Nonces::new(b"other").valid(&nonce, 999));
        let forged = format!("{:x}-{}", 5000, nonce.split_once('-').unwrap().1);
        assert!(!n.valid(&forged, 999));
        assert!(!n.valid("garbage", 0));
    }
}
