//! `application/trickle-ice-sdpfrag` bodies (RFC 8840) as WHIP/WHEP use them
//! (RFC 9725 §4.3): candidates trickled by a client, and the credentials of an ICE
//! restart both ways.

/// What a client's PATCH body carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceFragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:…` values (without the `a=`).
    pub candidates: Vec<String>,
}

impl IceFragment {
    /// Reads the ICE lines of a fragment; `m=`, `a=mid:` and anything else are
    /// context the node does not need (one bundled transport).
    pub fn parse(text: &str) -> IceFragment {
        let mut frag = IceFragment::default();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ufrag = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.pwd = Some(v.trim().to_owned());
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                frag.candidates.push(format!("candidate:{c}"));
            }
        }
        frag
    }
}

/// The node's ICE username fragment in an SDP (its answer): it names the ICE
/// session, and is the resource's `ETag`.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// The `ETag` header value of an ICE session.
pub fn etag(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// The answer to an ICE restart (RFC 9725 §4.4): the node's new credentials, and its
/// candidates under the first (bundle-tagged) m-line of `answer_sdp`.
pub fn restart_answer(answer_sdp: &str) -> String {
    let lines: Vec<&str> = answer_sdp.lines().map(str::trim).collect();
    let mut out = Vec::new();
    if lines.contains(&"a=ice-lite") {
        out.push("a=ice-lite".to_owned());
    }
    for key in ["a=ice-ufrag:", "a=ice-pwd:"] {
        if let Some(l) = lines.iter().find(|l| l.starts_with(key)) {
            out.push((*l).to_owned());
        }
    }
    let first_media = lines.iter().position(|l| l.starts_with("m="));
    if let Some(start) = first_media {
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.starts_with("m="))
            .map_or(lines.len(), |i| start + 1 + i);
        let section = &lines[start..end];
        out.push(section[0].to_owned());
        out.extend(
            section
                .iter()
                .filter(|l| l.starts_with("a=mid:") || l.starts_with("a=candidate:"))
                .map(|l| (*l).to_owned()),
        );
        out.push("a=end-of-candidates".to_owned());
    }
    let mut body = out.join("\r\n");
    body.push_str("\r\n");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials_and_candidates() {
        let f = IceFragment::parse(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
             a=end-of-candidates\r\n",
        );
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(
            f.candidates,
            ["candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0"]
        );
        assert_eq!(IceFragment::parse(""), IceFragment::default());
    }

    #[test]
    fn a_restart_answer_has_the_new_credentials_and_the_first_m_lines_candidates() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
            a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
            a=mid:0\r\na=ice-ufrag:NewU\r\na=ice-pwd:NewPasswordNewPassword1\r\n\
            a=candidate:1 1 udp 2130706175 203.0.113.5 50000 typ host\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:NewU\r\n\
            a=candidate:1 1 udp 2130706175 203.0.113.5 50000 typ host\r\n";
        assert_eq!(
            restart_answer(answer),
            "a=ice-lite\r\na=ice-ufrag:NewU\r\na=ice-pwd:NewPasswordNewPassword1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706175 203.0.113.5 50000 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(ice_ufrag(answer), Some("NewU"));
        assert_eq!(etag("NewU"), "\"NewU\"");
    }
}
