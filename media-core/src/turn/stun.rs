//! The STUN message format (RFC 8489) as far as a TURN server needs it: parsing a
//! message into its attributes without copying, checking MESSAGE-INTEGRITY, and
//! building answers with XOR-addresses, ERROR-CODE, MESSAGE-INTEGRITY and FINGERPRINT.
//! ChannelData (RFC 8656 §12) lives here too: it shares the wire with STUN.
//!
//! Parsing never panics on any input; a message that is not well formed is an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

// Methods.
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA_ATTR: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const SOFTWARE: u16 = 0x8022;
pub const FINGERPRINT: u16 = 0x8028;

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The four classes a message type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The message type field for `method` and `class` (RFC 8489 §5: the class bits are
/// interleaved with the method's).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    Short,
    #[error("not a STUN message (top bits or magic cookie)")]
    NotStun,
    #[error("the length field does not match the datagram")]
    BadLength,
    #[error("an attribute runs past the message")]
    BadAttribute,
}

/// A parsed message; attribute values borrow the input.
#[derive(Debug)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub transaction: [u8; 12],
    raw: &'a [u8],
    attrs: Vec<(u16, &'a [u8])>,
    /// Where MESSAGE-INTEGRITY starts, when there is one.
    integrity_at: Option<usize>,
}

/// Whether `buf` starts like a STUN message (as opposed to ChannelData).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

pub fn parse(buf: &[u8]) -> Result<Message<'_>, StunError> {
    if buf.len() < HEADER_LEN {
        return Err(StunError::Short);
    }
    if !looks_like_stun(buf) {
        return Err(StunError::NotStun);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len % 4 != 0 || HEADER_LEN + len != buf.len() {
        return Err(StunError::BadLength);
    }
    let (method, class) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&buf[8..20]);
    let mut attrs = Vec::new();
    let mut integrity_at = None;
    let mut at = HEADER_LEN;
    while at < buf.len() {
        let head = buf.get(at..at + 4).ok_or(StunError::BadAttribute)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let alen = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = buf
            .get(at + 4..at + 4 + alen)
            .ok_or(StunError::BadAttribute)?;
        // Attributes after MESSAGE-INTEGRITY (but FINGERPRINT) are to be ignored.
        if integrity_at.is_none() || kind == FINGERPRINT {
            attrs.push((kind, value));
        }
        if kind == MESSAGE_INTEGRITY && integrity_at.is_none() {
            integrity_at = Some(at);
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    if at != buf.len() {
        return Err(StunError::BadAttribute);
    }
    Ok(Message {
        method,
        class,
        transaction,
        raw: buf,
        attrs,
        integrity_at,
    })
}

impl<'a> Message<'a> {
    /// The first attribute of `kind`.
    pub fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }

    /// Every attribute of `kind`, in order.
    pub fn attrs(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    pub fn text(&self, kind: u16) -> Option<&'a str> {
        std::str::from_utf8(self.attr(kind)?).ok()
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_address(self.attr(kind)?, &self.transaction)
    }

    pub fn u32_attr(&self, kind: u16) -> Option<u32> {
        let v = self.attr(kind)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// Whether MESSAGE-INTEGRITY is the HMAC-SHA1 of the message under `key`.
    pub fn integrity_matches(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(given) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        let mut covered = self.raw[..at].to_vec();
        // The length field as if MESSAGE-INTEGRITY were the last attribute.
        let len = (at + 24 - HEADER_LEN) as u16;
        covered[2..4].copy_from_slice(&len.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        hmac::verify(&key, &covered, given).is_ok()
    }
}

pub(crate) fn decode_xor_address(v: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match v[1] {
        0x01 if v.len() == 8 => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 if v.len() == 20 => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(transaction);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Builds one message. Attributes are appended in call order; `integrity` and
/// `fingerprint` come last, in that order.
pub struct Builder {
    buf: Vec<u8>,
    transaction: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: Class, transaction: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction);
        Builder { buf, transaction }
    }

    pub fn attr(mut self, kind: u16, value: &[u8]) -> Builder {
        self.put(kind, value);
        self
    }

    fn put(&mut self, kind: u16, value: &[u8]) {
        // Callers pass values far below 64 KiB (a datagram's payload at most).
        let len = value.len().min(usize::from(u16::MAX));
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        self.buf.extend_from_slice(&value[..len]);
        let pad = len.div_ceil(4) * 4 - len;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_len(self.buf.len());
    }

    fn set_len(&mut self, total: usize) {
        let len = (total - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn u32_attr(self, kind: u16, v: u32) -> Builder {
        self.attr(kind, &v.to_be_bytes())
    }

    pub fn xor_address(mut self, kind: u16, addr: SocketAddr) -> Builder {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let cookie = MAGIC_COOKIE.to_be_bytes();
        let mut v = vec![0u8];
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(0x01);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend(ip.octets().iter().zip(cookie).map(|(a, b)| a ^ b));
            }
            IpAddr::V6(ip) => {
                v.push(0x02);
                v.extend_from_slice(&port.to_be_bytes());
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&cookie);
                mask[4..].copy_from_slice(&self.transaction);
                v.extend(ip.octets().iter().zip(mask).map(|(a, b)| a ^ b));
            }
        }
        self.put(kind, &v);
        self
    }

    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(ERROR_CODE, &v)
    }

    /// MESSAGE-INTEGRITY: HMAC-SHA1 under `key` of everything so far.
    pub fn integrity(mut self, key: &[u8]) -> Builder {
        let total = self.buf.len() + 24;
        self.set_len(total);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = hmac::sign(&key, &self.buf);
        self.buf.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(tag.as_ref());
        self
    }

    pub fn fingerprint(mut self) -> Builder {
        let total = self.buf.len() + 8;
        self.set_len(total);
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.buf.extend_from_slice(&FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A ChannelData message (RFC 8656 §12.4): channel number, length, data.
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

/// Whether a channel number is one a client may bind (0x4000 through 0x4FFF).
pub fn is_channel_number(n: u16) -> bool {
    (0x4000..=0x4FFF).contains(&n)
}

/// Parses ChannelData; padding after the data (over TCP) is allowed and ignored.
pub fn parse_channel_data(buf: &[u8]) -> Option<ChannelData<'_>> {
    let head = buf.get(..4)?;
    let channel = u16::from_be_bytes([head[0], head[1]]);
    if !is_channel_number(channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let data = buf.get(4..4 + len)?;
    Some(ChannelData { channel, data })
}

/// ChannelData for `data`; `pad` rounds it up to four bytes, as streams require.
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let len = data.len().min(usize::from(u16::MAX));
    let padded = if pad { len.div_ceil(4) * 4 } else { len };
    let mut out = Vec::with_capacity(4 + padded);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&data[..len]);
    out.resize(4 + padded, 0);
    out
}

/// The length of the first STUN message or ChannelData at the start of a stream
/// (RFC 8656 §12.5), once its 4-byte head has arrived; `Err` for bytes that are
/// neither.
pub fn stream_frame_len(head: &[u8]) -> Option<Result<usize, StunError>> {
    let head = head.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some(match head[0] & 0xC0 {
        0x00 => Ok(HEADER_LEN + len),
        0x40 => Ok(4 + len.div_ceil(4) * 4),
        _ => Err(StunError::NotStun),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_interleave_class_bits() {
        assert_eq!(message_type(ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(DATA, Class::Indication), 0x0017);
        assert_eq!(split_type(0x0113), (ALLOCATE, Class::Error));
        assert_eq!(split_type(0x0109), (CHANNEL_BIND, Class::Success));
    }

    #[test]
    fn built_messages_parse_back_with_integrity_and_fingerprint() {
        let tid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let peer6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let msg = Builder::new(CREATE_PERMISSION, Class::Request, tid)
            .attr(USERNAME, b"1700000000:alice")
            .xor_address(XOR_PEER_ADDRESS, peer)
            .xor_address(XOR_PEER_ADDRESS, peer6)
            .integrity(b"key")
            .fingerprint()
            .finish();
        let m = parse(&msg).unwrap();
        assert_eq!((m.method, m.class), (CREATE_PERMISSION, Class::Request));
        assert_eq!(m.text(USERNAME), Some("1700000000:alice"));
        let peers: Vec<_> = m
            .attrs(XOR_PEER_ADDRESS)
            .filter_map(|v| decode_xor_address(v, &tid))
            .collect();
        assert_eq!(peers, vec![peer, peer6]);
        assert!(m.integrity_matches(b"key"));
        assert!(!m.integrity_matches(b"other key"));
        // A flipped bit anywhere before the integrity breaks it.
        let mut bad = msg.clone();
        bad[HEADER_LEN + 5] ^= 1;
        assert!(!parse(&bad).unwrap().integrity_matches(b"key"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(parse(&[0u8; 3]).unwrap_err(), StunError::Short);
        let mut m = Builder::new(BINDING, Class::Request, [1; 12])
            .attr(SOFTWARE, b"x")
            .finish();
        m[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&m).unwrap_err(), StunError::BadLength);
        let mut m = Builder::new(BINDING, Class::Request, [1; 12])
            .attr(SOFTWARE, b"abcd")
            .finish();
        m[HEADER_LEN + 3] = 200;
        assert_eq!(parse(&m).unwrap_err(), StunError::BadAttribute);
        m[4] = 0;
        assert_eq!(parse(&m).unwrap_err(), StunError::NotStun);
    }

    #[test]
    fn channel_data_round_trips_and_pads_on_streams() {
        let udp = channel_data(0x4001, b"hello", false);
        assert_eq!(udp.len(), 9);
        let tcp = channel_data(0x4001, b"hello", true);
        assert_eq!(tcp.len(), 12);
        for m in [&udp, &tcp] {
            assert_eq!(
                parse_channel_data(m),
                Some(ChannelData {
                    channel: 0x4001,
                    data: b"hello"
                })
            );
        }
        assert_eq!(stream_frame_len(&tcp), Some(Ok(12)));
        assert_eq!(parse_channel_data(&channel_data(0x3FFF, b"x", false)), None);
        let stun = Builder::new(BINDING, Class::Request, [0; 12]).finish();
        assert_eq!(stream_frame_len(&stun), Some(Ok(20)));
        assert_eq!(
            stream_frame_len(&[0x80, 0, 0, 0]),
            Some(Err(StunError::NotStun))
        );
        assert_eq!(stream_frame_len(&[0]), None);
    }
}
