//! Keyframe detection from the first bytes of an RTP payload.
//!
//! The SFU forwards packets without depacketising them, so it only looks far enough
//! into the payload descriptor to tell whether a packet starts a picture that a
//! decoder can begin with. A subscriber that joins late, or whose source changed,
//! gets nothing for a video track until such a packet arrives.

use str0m::format::Codec;

/// True when `payload` (RTP payload, header removed) starts a picture that needs no
/// earlier picture. Audio packets are always independent. Malformed payloads are
/// never keyframes.
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
        c if c.is_audio() => true,
        // Codecs we do not parse: let every packet through rather than never starting.
        _ => true,
    }
}

/// RFC 7741 payload descriptor, then the VP8 payload header's P bit (0 = key frame).
fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let extended = b0 & 0x80 != 0;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

/// RFC 9628 descriptor: B (start of frame) set, P (inter-picture predicted) clear,
/// and, when layer indices are present, the lowest spatial layer.
fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let has_pid = b0 & 0x80 != 0;
    let predicted = b0 & 0x40 != 0;
    let has_layers = b0 & 0x20 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if predicted || !begins_frame {
        return false;
    }
    if !has_layers {
        return true;
    }
    let mut i = 1;
    if has_pid {
        let Some(&pid) = p.get(i) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    matches!(p.get(i), Some(l) if (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice or an SPS in a single NAL unit, a STAP-A, or the first
/// fragment of an FU-A.
fn h264(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if size == 0 {
                    return false;
                }
                if matches!(p[i + 2] & 0x1f, IDR | SPS) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        FU_A => matches!(p.get(1), Some(h) if h & 0x80 != 0 && matches!(h & 0x1f, IDR | SPS)),
        _ => false,
    }
}

/// AV1 RTP spec: the aggregation header's N bit marks the first packet of a coded
/// video sequence, which starts with a key frame.
fn av1(p: &[u8]) -> bool {
    matches!(p.first(), Some(h) if h & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(codec: Codec, cases: &[(&[u8], bool)]) {
        for (payload, want) in cases {
            assert_eq!(
                is_keyframe(codec, payload),
                *want,
                "{codec:?} payload {payload:02x?}"
            );
        }
    }

    #[test]
    fn vp8_descriptors() {
        check(
            Codec::Vp8,
            &[
                (&[0x10, 0x00], true),                               // S=1, PID=0, P=0
                (&[0x10, 0x01], false),                              // P=1: inter frame
                (&[0x00, 0x00], false),                              // not start of partition
                (&[0x90, 0x80, 0x05, 0x00], true),                   // X, I with 7-bit picture id
                (&[0x90, 0x80, 0x85, 0x01, 0x00], true),             // 15-bit picture id
                (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x00], true), // I, L, T
                (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x01], false),
                (&[0x90, 0x80], false), // truncated
                (&[], false),
            ],
        );
    }

    #[test]
    fn vp9_descriptors() {
        check(
            Codec::Vp9,
            &[
                (&[0x08], true),              // B only
                (&[0x48], false),             // P set
                (&[0x00], false),             // not start of frame
                (&[0xa8, 0x05, 0x00], true),  // I, L: spatial layer 0
                (&[0xa8, 0x05, 0x02], false), // spatial layer 1
                (&[0xa8, 0x85, 0x01, 0x00], true),
                (&[0xa8], false),
            ],
        );
    }

    #[test]
    fn h264_nal_units() {
        check(
            Codec::H264,
            &[
                (&[0x65, 0x88], true),                                     // IDR
                (&[0x67, 0x42], true),                                     // SPS
                (&[0x41, 0x9a], false),                                    // non-IDR slice
                (&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68], true), // STAP-A with SPS
                (&[0x78, 0x00, 0x01, 0x41], false),
                (&[0x78, 0x00, 0x00, 0x67], false), // zero-sized NAL in STAP-A
                (&[0x7c, 0x85], true),              // FU-A start, IDR
                (&[0x7c, 0x05], false),             // FU-A continuation
                (&[0x7c, 0x81], false),             // FU-A start, non-IDR
                (&[0x7c], false),
            ],
        );
    }

    #[test]
    fn av1_and_audio() {
        check(
            Codec::Av1,
            &[(&[0x18], true), (&[0x10], false), (&[], false)],
        );
        check(Codec::Opus, &[(&[0xfc], true), (&[], true)]);
    }
}
