//! The ICE servers handed to clients: STUN URLs as configured, and TURN URLs with
//! time-limited credentials in the TURN REST style (coturn's `use-auth-secret`):
//! username `<expiry, unix seconds>:<identity>`, password
//! `base64(HMAC-SHA1(shared secret, username))`. Nothing is stored: any TURN server
//! that knows the secret checks them, and refuses them once the expiry has passed.
//!
//! They reach clients in the join-token response, the room protocol's `joined`
//! message, and WHIP/WHEP `201` answers as `Link: <…>; rel="ice-server"` headers
//! (RFC 9725 §4.6).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What the operator configured (`[turn]`).
#[derive(Clone, Default)]
pub struct IceServerConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server; TURN URLs are handed out only with it.
    pub shared_secret: Option<String>,
    /// How long a TURN credential is accepted after it is handed out.
    pub credential_ttl: Duration,
}

impl fmt::Debug for IceServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "***"))
            .field("credential_ttl", &self.credential_ttl)
            .finish()
    }
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServerConfig {
    /// Checks the URLs' schemes and that TURN has its secret; the message says what
    /// to fix.
    pub fn validate(&self) -> Result<(), String> {
        for u in &self.stun_urls {
            if !(u.starts_with("stun:") || u.starts_with("stuns:")) {
                return Err(format!(
                    "turn.stun_urls: '{u}' is not a stun: or stuns: URL"
                ));
            }
        }
        for u in &self.turn_urls {
            if !(u.starts_with("turn:") || u.starts_with("turns:")) {
                return Err(format!(
                    "turn.external_urls: '{u}' is not a turn: or turns: URL"
                ));
            }
        }
        if !self.turn_urls.is_empty() && self.shared_secret.as_deref().unwrap_or("").is_empty() {
            return Err("turn.external_urls needs turn.shared_secret (the TURN server's static-auth-secret)".into());
        }
        if !self.turn_urls.is_empty() && self.credential_ttl.is_zero() {
            return Err("turn.credential_ttl_secs must be positive".into());
        }
        Ok(())
    }

    /// The servers for a client of another node of the cluster: this node's embedded
    /// TURN URLs (`own`) swapped for that node's (`theirs`), whose credentials this
    /// node can make only when the cluster shares one `turn.shared_secret`
    /// (`secret_shared`); external TURN and STUN servers are everyone's.
    pub fn on_other_node(
        &self,
        own: &[String],
        theirs: &[String],
        secret_shared: bool,
    ) -> IceServerConfig {
        let mut turn_urls: Vec<String> = self
            .turn_urls
            .iter()
            .filter(|u| !own.contains(u))
            .cloned()
            .collect();
        if secret_shared {
            turn_urls.extend(theirs.iter().cloned());
        }
        IceServerConfig {
            stun_urls: self.stun_urls.clone(),
            turn_urls,
            shared_secret: self.shared_secret.clone(),
            credential_ttl: self.credential_ttl,
        }
    }

    /// The servers for a client of `identity`, with credentials valid from `now` for
    /// the configured lifetime.
    pub fn servers_for(&self, identity: &str, now: SystemTime) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.shared_secret) {
            let expiry = now
                .checked_add(self.credential_ttl)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let username = rest_username(expiry, identity);
            out.push(IceServer {
                urls: self.turn_urls.clone(),
                credential: Some(rest_password(secret, &username)),
                username: Some(username),
            });
        }
        out
    }
}

// One implementation for the node's signaling and its embedded TURN server.
pub use media_core::turn::credentials::{rest_password, rest_username};

/// `Link` header values for `servers` (RFC 9725 §4.6), one per URL.
pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
    let quoted = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(u),
                    quoted(c)
                ));
            }
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn another_nodes_clients_get_its_turn_urls_not_ours() {
        let c = IceServerConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec![
                "turn:shared.example:3478".into(),
                "turn:a.example:3478".into(),
            ],
            shared_secret: Some("s".into()),
            credential_ttl: Duration::from_secs(60),
        };
        let own = ["turn:a.example:3478".to_owned()];
        let theirs = ["turn:b.example:3478".to_owned()];
        let shared = c.on_other_node(&own, &theirs, true);
        assert_eq!(
            shared.turn_urls,
            ["turn:shared.example:3478", "turn:b.example:3478"]
        );
        assert_eq!(shared.stun_urls, c.stun_urls);
        // Without one secret for the cluster, this node cannot vouch for theirs.
        let apart = c.on_other_node(&own, &theirs, false);
        assert_eq!(apart.turn_urls, ["turn:shared.example:3478"]);
    }

    use super::*;

    fn config() -> IceServerConfig {
        IceServerConfig {
            stun_urls: vec!["stun:stun.example.net:3478".into()],
            turn_urls: vec![
                "turn:turn.example.net:3478?transport=udp".into(),
                "turns:turn.example.net:443?transport=tcp".into(),
            ],
            shared_secret: Some("north".into()),
            credential_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn turn_credentials_are_the_rest_style_hmac_of_expiry_and_identity() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let servers = config().servers_for("phone:1", now);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:stun.example.net:3478"]);
        assert_eq!(servers[0].username, None);
        let turn = &servers[1];
        assert_eq!(turn.username.as_deref(), Some("1700003600:phone_1"));
        // The same computation coturn does: HMAC-SHA1 keyed with the secret, base64.
        // (`printf %s 1700003600:phone_1 | openssl dgst -sha1 -hmac north -binary | base64`)
        assert_eq!(
            turn.credential.as_deref(),
            Some("uk6zhMhjhmzAKp4CzJVDnVeO4xM=")
        );
    }

    #[test]
    fn nothing_is_handed_out_unless_configured() {
        assert!(
            IceServerConfig::default()
                .servers_for("a", SystemTime::now())
                .is_empty()
        );
        let no_secret = IceServerConfig {
            shared_secret: None,
            ..config()
        };
        assert!(no_secret.validate().unwrap_err().contains("shared_secret"));
        let bad = IceServerConfig {
            turn_urls: vec!["http://x".into()],
            ..config()
        };
        assert!(bad.validate().is_err());
        assert!(config().validate().is_ok());
        assert!(!format!("{:?}", config()).contains("north"));
    }

    #[test]
    fn link_headers_carry_each_url_and_its_credentials() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:s.example:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:t.example:3478?transport=udp".into()],
                username: Some("1:u".into()),
                credential: Some("p\"w".into()),
            },
        ];
        assert_eq!(
            link_headers(&servers),
            [
                "<stun:s.example:3478>; rel=\"ice-server\"".to_owned(),
                "<turn:t.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1:u\"; \
                 credential=\"p\\\"w\"; credential-type=\"password\""
                    .to_owned(),
            ]
        );
    }
}
