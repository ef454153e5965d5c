//! RFC 4571 framing, as ICE-TCP (RFC 6544) carries STUN, DTLS, RTP and RTCP over a
//! stream: each packet is preceded by its length, two bytes big-endian.

/// Appends `packet` as one frame to `out`; `None` (and nothing appended) when it is
/// longer than a frame can say.
pub fn frame(packet: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(packet.len()).ok()?;
    out.reserve(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(())
}

/// Splits a byte stream back into packets, whatever pieces it arrives in.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        let len = usize::from(u16::from_be_bytes([*self.buf.first()?, *self.buf.get(1)?]));
        if self.buf.len() < 2 + len {
            return None;
        }
        let packet = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let mut stream = Vec::new();
        for p in [&b"stun"[..], &[], &[7u8; 1200]] {
            frame(p, &mut stream).unwrap();
        }
        for piece in [1, 3, 1000, stream.len()] {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                d.push(chunk);
                while let Some(p) = d.next_packet() {
                    got.push(p);
                }
            }
            assert_eq!(
                got,
                [b"stun".to_vec(), Vec::new(), vec![7u8; 1200]],
                "{piece}"
            );
        }
        assert!(frame(&vec![0; 70_000], &mut stream).is_none());
    }
}
