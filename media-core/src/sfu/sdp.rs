//! What the core reads from an offer itself, before or beside str0m: the directions
//! it asks for, the codec it prefers, the m-lines an answer carries.

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::Mid;

use super::SfuError;

/// The codec an offer lists first in its first video m-line (the offerer's
/// preference), when it is one the node forwards.
pub(super) fn offer_preferred_video_codec(sdp: &str) -> Option<Codec> {
    let mut first_pt: Option<&str> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if first_pt.is_some() {
                return None;
            }
            if m.starts_with("video ") {
                first_pt = m.split(' ').nth(3);
            }
        } else if let (Some(pt), Some(map)) = (first_pt, line.strip_prefix("a=rtpmap:")) {
            let (map_pt, rest) = map.split_once(' ')?;
            if map_pt == pt {
                return match rest.split('/').next()?.to_ascii_uppercase().as_str() {
                    "VP8" => Some(Codec::Vp8),
                    "H264" => Some(Codec::H264),
                    "VP9" => Some(Codec::Vp9),
                    "AV1" => Some(Codec::Av1),
                    _ => None,
                };
            }
        }
    }
    None
}

/// True if an offer has an audio or video m-line the client sends on (`sendonly` or
/// `sendrecv`, the default; not refused with port 0).
pub(super) fn offer_sends_media(sdp: &str) -> bool {
    let mut in_media = false;
    let mut sends = false;
    let mut any = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_media && sends {
                any = true;
            }
            in_media = (m.starts_with("audio ") || m.starts_with("video "))
                && m.split(' ').nth(1) != Some("0");
            sends = true;
        } else if in_media && matches!(line, "a=recvonly" | "a=inactive") {
            sends = false;
        }
    }
    any || (in_media && sends)
}

/// True if an offer has a video m-line the client receives on (`recvonly` or
/// `sendrecv`, not refused with port 0).
pub(super) fn offer_receives_video(sdp: &str) -> bool {
    let mut video = false;
    let mut receives = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if video && receives {
                return true;
            }
            video = m.starts_with("video ") && m.split(' ').nth(1) != Some("0");
            receives = true; // sendrecv unless the section says otherwise
        } else if video && matches!(line, "a=sendonly" | "a=inactive") {
            receives = false;
        }
    }
    video && receives
}

pub(super) fn parse_offer(sdp: &str) -> Result<SdpOffer, SfuError> {
    SdpOffer::from_sdp_string(sdp)
        .map_err(|e| SfuError::MalformedSdp(clean_parse_error(&e.to_string())))
}

/// The `a=mid:` values of an SDP, in m-line order.
pub(super) fn answer_mids(sdp: &str) -> impl Iterator<Item = Mid> + '_ {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
}

/// The SDP parser's message names a memory address ("at PointerOffset(0x…)"); that
/// says nothing to a client and leaks process layout, so it is cut out.
fn clean_parse_error(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at PointerOffset(") {
        out.push_str(&rest[..i]);
        rest = match rest[i..].find(')') {
            Some(j) => &rest[i + j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_that_send() {
        let recv = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(!offer_sends_media(recv));
        let send = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert!(offer_sends_media(send));
        let implicit = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(offer_sends_media(implicit));
        let stopped = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n";
        assert!(!offer_sends_media(stopped));
        let data = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert!(!offer_sends_media(data));
    }

    #[test]
    fn offers_that_receive_video() {
        let v = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(offer_receives_video(v));
        let a = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";
        assert!(!offer_receives_video(a));
        let send = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(!offer_receives_video(send));
        let implicit = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 X 1\r\na=sendonly\r\n";
        assert!(offer_receives_video(implicit));
        let refused = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(!offer_receives_video(refused));
    }

    #[test]
    fn the_offers_first_video_codec_is_its_preference() {
        let h264_first = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n\
                          m=video 9 X 102 96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(offer_preferred_video_codec(h264_first), Some(Codec::H264));
        let vp8_first =
            "v=0\r\nm=video 9 X 96 102\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 vp8/90000\r\n";
        assert_eq!(offer_preferred_video_codec(vp8_first), Some(Codec::Vp8));
        let audio_only = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(offer_preferred_video_codec(audio_only), None);
        // The first video m-line names no rtpmap for its first payload type.
        let unnamed = "v=0\r\nm=video 9 X 97\r\nm=video 9 X 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(offer_preferred_video_codec(unnamed), None);
    }

    #[test]
    fn parse_errors_lose_pointers() {
        assert_eq!(
            clean_parse_error(
                "SDP parse: Parse error at PointerOffset(0x7fb0f8001ff3)\nUnexpected end of input\nExpected `o`\n"
            ),
            "SDP parse: Parse error; Unexpected end of input; Expected `o`"
        );
        assert_eq!(clean_parse_error("plain"), "plain");
    }
}
