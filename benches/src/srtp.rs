//! The SRTP floor: protecting one RTP packet with AES_CM_128_HMAC_SHA1_80
//! (RFC 3711), built from the same aws-lc-rs primitives str0m 0.25 uses.
//!
//! Two ways of doing the same work:
//! - [`SrtpSender`]: keys prepared once per stream, output into a reused buffer.
//!   This is the floor: the least any SFU must spend per outgoing packet.
//! - [`protect_like_str0m`]: what `str0m` 0.25 with `str0m-aws-lc-rs` 0.7 does
//!   per packet: it builds the AES key schedule and the HMAC key afresh for every
//!   packet and allocates a new output `Vec`.
//!
//! Session keys are random rather than derived from a DTLS master secret; the key
//! derivation happens once per stream and is not part of the per-packet cost.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

pub const TAG_LEN: usize = 10;
pub const GCM_TAG_LEN: usize = 16;
pub const RTP_HEADER_LEN: usize = 12;

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
pub fn rtp_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in (index << 16).to_be_bytes().iter().enumerate() {
        iv[8 + i] ^= b;
    }
    iv
}

/// Writes a plain 12-byte RTP header (no extensions) into `buf[..12]`.
pub fn write_rtp_header(buf: &mut [u8], pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Session keys of one SRTP stream.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    pub enc: [u8; 16],
    pub auth: [u8; 20],
    pub salt: [u8; 14],
}

impl SessionKeys {
    pub fn random() -> Self {
        SessionKeys {
            enc: rand::random(),
            auth: rand::random(),
            salt: rand::random(),
        }
    }
}

/// One outgoing SRTP stream with its keys prepared once.
pub struct SrtpSender {
    enc: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; 14],
    pub ssrc: u32,
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSender")
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

impl SrtpSender {
    pub fn new(keys: &SessionKeys, ssrc: u32) -> Self {
        let unbound = UnboundCipherKey::new(&AES_128, &keys.enc).expect("16-byte AES key");
        SrtpSender {
            enc: EncryptingKey::ctr(unbound).expect("AES-CTR is supported"),
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &keys.auth),
            salt: keys.salt,
            ssrc,
        }
    }

    /// Protects the RTP packet in `buf[..len]` (header of `hlen` bytes) in place and
    /// appends the 10-byte tag; `buf` must have room for it. Returns the SRTP length.
    pub fn protect_in_place(&self, buf: &mut [u8], len: usize, hlen: usize, index: u64) -> usize {
        let iv = rtp_iv(&self.salt, self.ssrc, index);
        let ctx = EncryptionContext::Iv128(FixedLength::from(iv));
        self.enc
            .less_safe_encrypt(&mut buf[hlen..len], ctx)
            .expect("CTR takes any length");
        let mut mac = hmac::Context::with_key(&self.auth);
        mac.update(&buf[..len]);
        mac.update(&((index >> 16) as u32).to_be_bytes());
        let tag = mac.sign();
        buf[len..len + TAG_LEN].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        len + TAG_LEN
    }
}

/// What str0m 0.25 + str0m-aws-lc-rs 0.7 do for one AES_CM_128_HMAC_SHA1_80 packet: a fresh AES key
/// schedule (`UnboundCipherKey::new` + `EncryptingKey::ctr` inside `encrypt`), a
/// fresh HMAC key (`hmac::Key::new` inside `sha1_hmac`), a zeroed output `Vec` with
/// 5 bytes of CTR slack, a copy of the header, and a truncate.
pub fn protect_like_str0m(
    keys: &SessionKeys,
    ssrc: u32,
    rtp: &[u8],
    hlen: usize,
    index: u64,
) -> Vec<u8> {
    let iv = rtp_iv(&keys.salt, ssrc, index);
    let mut output = vec![0u8; rtp.len() + TAG_LEN + 5];
    {
        let unbound = UnboundCipherKey::new(&AES_128, &keys.enc).expect("16-byte AES key");
        let key = EncryptingKey::ctr(unbound).expect("AES-CTR is supported");
        let out = &mut output[hlen..rtp.len()];
        out.copy_from_slice(&rtp[hlen..]);
        key.less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
            .expect("CTR takes any length");
    }
    output[..hlen].copy_from_slice(&rtp[..hlen]);
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &keys.auth);
    let mut mac = hmac::Context::with_key(&key);
    mac.update(&output[..rtp.len()]);
    mac.update(&((index >> 16) as u32).to_be_bytes());
    let tag = mac.sign();
    let n = rtp.len();
    output[n..n + TAG_LEN].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
    output.truncate(n + TAG_LEN);
    output
}

/// AEAD_AES_128_GCM or AEAD_AES_256_GCM (RFC 7714) with a prepared key: what
/// str0m 0.25 does per packet for these profiles (plus a new output `Vec`). Two str0m
/// peers negotiate AEAD_AES_256_GCM (dimpl's first preference).
pub struct GcmSender {
    key: LessSafeKey,
    salt: [u8; 12],
    pub ssrc: u32,
}

impl std::fmt::Debug for GcmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcmSender").finish_non_exhaustive()
    }
}

impl GcmSender {
    pub fn new(ssrc: u32, aes256: bool) -> Self {
        let k: [u8; 32] = rand::random();
        let key = if aes256 {
            UnboundKey::new(&AES_256_GCM, &k)
        } else {
            UnboundKey::new(&AES_128_GCM, &k[..16])
        };
        GcmSender {
            key: LessSafeKey::new(key.expect("key of the algorithm's length")),
            salt: rand::random(),
            ssrc,
        }
    }

    /// Protects `buf[..len]` in place, appending the 16-byte tag. Returns the length.
    /// The IV is (0 ‖ SSRC ‖ ROC ‖ SEQ) XOR salt, from the 48-bit packet index.
    pub fn protect_in_place(&self, buf: &mut [u8], len: usize, hlen: usize, index: u64) -> usize {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&self.ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..8]);
        for (a, b) in iv.iter_mut().zip(self.salt) {
            *a ^= b;
        }
        let (head, body) = buf[..len].split_at_mut(hlen);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*head), body)
            .expect("seal");
        buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
        len + GCM_TAG_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_give_the_same_bytes() {
        let keys = SessionKeys::random();
        let ssrc = 0x1234_5678;
        for len in [40usize, 100, 1200] {
            let mut rtp = vec![0u8; len];
            write_rtp_header(&mut rtp, 111, false, 7, 960, ssrc);
            for (i, b) in rtp[RTP_HEADER_LEN..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let index = 70_000u64;
            let reference = protect_like_str0m(&keys, ssrc, &rtp, RTP_HEADER_LEN, index);
            let sender = SrtpSender::new(&keys, ssrc);
            let mut buf = rtp.clone();
            buf.resize(len + TAG_LEN, 0);
            let n = sender.protect_in_place(&mut buf, len, RTP_HEADER_LEN, index);
            assert_eq!(n, len + TAG_LEN);
            assert_eq!(buf, reference);
            assert_ne!(
                buf[RTP_HEADER_LEN..len],
                rtp[RTP_HEADER_LEN..],
                "payload encrypted"
            );
        }
    }

    #[test]
    fn iv_layout() {
        let iv = rtp_iv(&[0; 14], 0x0102_0304, 0x0000_0506_0708);
        assert_eq!(iv, [0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0]);
    }
}
