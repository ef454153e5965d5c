//! VP9 and AV1 SVC pass through: every spatial layer of a picture reaches the
//! subscriber unchanged (one SSRC, no layer stripping), and a late subscriber starts
//! at the next keyframe.

mod common;

use std::time::Duration;

use common::Harness;
use media_core::PeerRole;
use media_core::str0m::format::Codec;

/// The packets of picture `n` with two spatial layers: (payload, marker).
fn picture(codec: Codec, n: u32, keyframe: bool) -> Vec<(Vec<u8>, bool)> {
    let tag = |layer: u8| {
        let mut body = vec![layer, (n >> 8) as u8, n as u8];
        body.extend(std::iter::repeat_n(0x42, 200 + 300 * layer as usize));
        body
    };
    (0..2u8)
        .map(|sid| {
            let mut p = match codec {
                // RFC 9628 flexible mode: I, P (not on keyframes), L, F, B, E; a
                // 15-bit picture id; the layer byte (SID in bits 3..1, D on S1).
                Codec::Vp9 => {
                    let p_bit = if keyframe { 0 } else { 0x40 };
                    let pid = (n & 0x7fff) as u16;
                    let d = if sid == 1 { 0x01 } else { 0 };
                    vec![
                        0x80 | p_bit | 0x20 | 0x10 | 0x08 | 0x04,
                        0x80 | (pid >> 8) as u8,
                        pid as u8,
                        (sid << 1) | d,
                    ]
                }
                // AV1 aggregation header: W=1 (one OBU element), N on the first
                // packet of a keyframe's coded video sequence.
                _ => vec![0x10 | if keyframe && sid == 0 { 0x08 } else { 0 }],
            };
            p.extend(tag(sid));
            (p, sid == 1)
        })
        .collect()
}

fn passes_every_layer(codec: Codec) {
    let mut h = Harness::new();
    let p = h.join_codec_rtp("svc", PeerRole::Publisher, codec).unwrap();
    let early = h
        .join_codec_rtp("svc", PeerRole::Subscriber, codec)
        .unwrap();
    h.connect_all();
    let mut sent = Vec::new();
    let mut seq = 1u64;
    let mut late = None;
    for n in 0..40u32 {
        if n == 15 {
            late = Some(
                h.join_codec_rtp("svc", PeerRole::Subscriber, codec)
                    .unwrap(),
            );
            h.connect_all();
        }
        for (payload, marker) in picture(codec, n, n % 10 == 0) {
            h.send_rtp(p, seq, n * 3000, marker, payload.clone());
            sent.push((n, payload));
            seq += 1;
        }
        h.run(Duration::from_millis(33));
    }
    h.run(Duration::from_millis(200));
    let all: Vec<Vec<u8>> = sent.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(
        h.clients[early].rtp, all,
        "{codec:?}: both layers of every picture, unchanged"
    );
    // The late subscriber starts at the keyframe of picture 20 and gets both layers.
    let from_20: Vec<Vec<u8>> = sent
        .iter()
        .filter(|(n, _)| *n >= 20)
        .map(|(_, p)| p.clone())
        .collect();
    let late = &h.clients[late.unwrap()].rtp;
    assert_eq!(
        late.first(),
        from_20.first(),
        "{codec:?}: starts at a keyframe"
    );
    assert_eq!(late, &from_20, "{codec:?}: late subscriber");
}

#[test]
fn vp9_svc_passes_through() {
    passes_every_layer(Codec::Vp9);
}

#[test]
fn av1_svc_passes_through() {
    passes_every_layer(Codec::Av1);
}
