//! ICE restart for sessions that never renegotiate (WHIP, WHEP).
//!
//! RFC 9725 §4.4: a WHIP client that changed network sends only its new ICE
//! credentials and candidates; everything else negotiated still holds. str0m restarts
//! ICE when an offer carries new remote credentials, so the session's own first offer
//! is replayed with the new credentials: the m-lines, codecs and directions are those
//! already agreed, the answer differs only in the node's fresh credentials.

/// The client's new ICE credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIceCreds {
    pub ufrag: String,
    pub pwd: String,
}

impl RemoteIceCreds {
    /// Credentials as RFC 8839 allows them: 4–256 and 22–256 `ice-char`s
    /// (ALPHA / DIGIT / "+" / "/"). Anything else could smuggle lines into the offer.
    pub fn new(ufrag: &str, pwd: &str) -> Option<Self> {
        let ice_chars = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        let ok = (4..=256).contains(&ufrag.len())
            && (22..=256).contains(&pwd.len())
            && ice_chars(ufrag)
            && ice_chars(pwd);
        ok.then(|| RemoteIceCreds {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        })
    }
}

/// `offer` with every `ice-ufrag`/`ice-pwd` replaced by `creds` and its candidates
/// dropped (they belong to the network the client left; new ones come by trickle).
pub fn restart_offer(offer: &str, creds: &RemoteIceCreds) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(&creds.ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(&creds.pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=ice-ufrag:oldU\r\na=ice-pwd:oldPasswordOldPassword12\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:oldU\r\n\
        a=ice-pwd:oldPasswordOldPassword12\r\na=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\n\
        a=end-of-candidates\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";

    #[test]
    fn replaces_every_credential_and_drops_the_old_candidates() {
        let creds = RemoteIceCreds::new("newU", "newPasswordNewPassword34").unwrap();
        let out = restart_offer(OFFER, &creds);
        assert_eq!(out.matches("a=ice-ufrag:newU\r\n").count(), 2);
        assert_eq!(
            out.matches("a=ice-pwd:newPasswordNewPassword34\r\n")
                .count(),
            2
        );
        assert!(!out.contains("old"));
        assert!(!out.contains("candidate"));
        // Everything else is kept, in order.
        let kept: Vec<&str> = out.lines().filter(|l| !l.contains("ice-")).collect();
        let want: Vec<&str> = OFFER
            .lines()
            .filter(|l| !l.contains("ice-") && !l.contains("candidate"))
            .collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn credentials_outside_the_ice_alphabet_are_refused() {
        assert!(RemoteIceCreds::new("abcd", "0123456789012345678901").is_some());
        assert!(RemoteIceCreds::new("abc", "0123456789012345678901").is_none());
        assert!(RemoteIceCreds::new("abcd", "short").is_none());
        assert!(RemoteIceCreds::new("ab\r\nm=x", "0123456789012345678901").is_none());
        assert!(RemoteIceCreds::new("abcd", "01234567890123456789 1\r\n").is_none());
    }
}
