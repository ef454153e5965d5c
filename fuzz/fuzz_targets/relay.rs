//! What a relay link reads from another node: RTP datagrams and control frames
//! (`media_core::relay`). Nothing panics, and a datagram that decodes encodes back to
//! the same packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_core::relay::{ControlReader, RelayedPacket};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RelayedPacket::decode(data) {
        let mut again = Vec::new();
        p.encode(&mut again);
        assert_eq!(RelayedPacket::decode(&again).as_ref(), Ok(&p));
    }
    let mut reader = ControlReader::default();
    let (a, b) = data.split_at(data.len() / 2);
    for part in [a, b] {
        reader.push(part);
        while let Ok(Some(_)) = reader.next_frame() {}
    }
});
