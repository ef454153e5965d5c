//! Authenticated records: every record StreamCore publishes carries an HMAC-SHA256 of
//! its exact payload bytes, keyed with the cluster's event key, in the record's
//! `streamcore-signature` header (hex). Consumers that act on what a record says (the
//! hub delivering commands to devices, the worker running transcode jobs) drop records
//! whose signature is missing or wrong, so a producer on the bus without the key
//! cannot command a device or start a job. Outside consumers may ignore the header;
//! an outside producer that should be obeyed signs the bytes it sends with the key.

use aws_lc_rs::hmac;

/// The Kafka record header that carries the signature.
pub const SIGNATURE_HEADER: &str = "streamcore-signature";

/// The cluster's event key (every node that publishes or acts on events holds it).
pub struct EventKey {
    key: hmac::Key,
}

impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventKey([redacted])")
    }
}

impl EventKey {
    /// From a secret of at least 32 bytes (shorter ones are refused: they would be
    /// guessable).
    pub fn new(secret: &[u8]) -> Result<EventKey, String> {
        if secret.len() < 32 {
            return Err(format!(
                "an event key is at least 32 bytes, not {}",
                secret.len()
            ));
        }
        Ok(EventKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The signature of `payload`, as the header carries it.
    pub fn sign(&self, payload: &[u8]) -> String {
        hex::encode(hmac::sign(&self.key, payload).as_ref())
    }

    /// Whether `signature` is this key's signature of `payload` (compared in constant
    /// time).
    pub fn verify(&self, payload: &[u8], signature: Option<&str>) -> bool {
        let Some(Ok(tag)) = signature.map(hex::decode) else {
            return false;
        };
        hmac::verify(&self.key, payload, &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_opens_only_its_own_bytes_under_its_own_key() {
        let key = EventKey::new(&[7; 32]).unwrap();
        let other = EventKey::new(&[8; 32]).unwrap();
        let sig = key.sign(b"{\"a\":1}");
        assert!(key.verify(b"{\"a\":1}", Some(&sig)));
        assert!(!key.verify(b"{\"a\":2}", Some(&sig)), "other bytes");
        assert!(!other.verify(b"{\"a\":1}", Some(&sig)), "another key");
        assert!(!key.verify(b"{\"a\":1}", None), "unsigned");
        assert!(!key.verify(b"{\"a\":1}", Some("zz")), "not hex");
        assert!(!key.verify(b"{\"a\":1}", Some(&sig[..10])), "cut short");
        assert!(EventKey::new(&[1; 31]).is_err());
    }
}
