//! Simulcast: a publisher sends three layers; each subscriber receives one, chosen by
//! its `LayerSelector` (preference, publisher's active layers), switching only on a
//! keyframe of the new layer, as one continuous stream.
mod common;

use std::time::Duration;

use common::{Harness, payload};
use media_core::PeerRole;
use media_core::str0m::media::MediaKind::Video;

/// Layer sizes (bytes per frame), so the measured bitrates order them l < m < h.
const SIZES: [(&str, usize); 3] = [("l", 150), ("m", 500), ("h", 1100)];

/// Sends `frames` frames at 30 fps on the layers in `on`, a keyframe on every layer
/// each 10th frame. Each frame's second byte names its layer, the next four its number.
fn send(h: &mut Harness, p: usize, start: u32, frames: u32, on: &[&str]) {
    for n in start..start + frames {
        let bodies = bodies(n, on);
        let layers: Vec<(&str, bool, &[u8])> = bodies
            .iter()
            .map(|(r, b)| (*r, n.is_multiple_of(10), b.as_slice()))
            .collect();
        h.send_simulcast_frame(p, &layers);
        h.run(Duration::from_millis(33));
    }
}

/// Frame `n` of each layer in `on`: its second byte names the layer, the next four
/// its number.
fn bodies(n: u32, on: &[&str]) -> Vec<(&'static str, Vec<u8>)> {
    SIZES
        .iter()
        .filter(|(r, _)| on.contains(r))
        .map(|(r, size)| {
            let mut b = payload(n, *size);
            b[1] = r.as_bytes()[0];
            b[2..6].copy_from_slice(&n.to_be_bytes());
            (*r, b)
        })
        .collect()
}

/// The layers of the frames a client received, run-length encoded: "h", "hl", ….
fn layer_runs(h: &Harness, c: usize) -> String {
    let mut out = String::new();
    for f in h.clients[c].frames_of(Video) {
        let l = f[1] as char;
        if !out.ends_with(l) {
            out.push(l);
        }
    }
    out
}

#[test]
fn each_subscriber_gets_one_layer_and_switches_on_keyframes() {
    // Preference alone: no bandwidth estimator (see `bandwidth_*` for the estimate).
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h.join_simulcast("sim", &["l", "m", "h"]).unwrap();
    let a = h.join("sim", PeerRole::Subscriber, &[Video]).unwrap();
    let b = h.join("sim", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    send(&mut h, p, 0, 40, &["l", "m", "h"]);
    // Without a bandwidth estimate, the highest layer once all are seen (it may start
    // on the first layer that arrives).
    assert!(layer_runs(&h, a).ends_with('h'), "{}", layer_runs(&h, a));
    let before = h.clients[a].frames_of(Video).len();
    assert!(before >= 20, "{before}");
    let b_start = layer_runs(&h, b);

    // a asks for the lowest layer: it switches at the next keyframe of l; b stays.
    let (pa, mid) = (h.clients[a].peer, h.clients[a].mid(Video));
    h.sfu.set_layer_preference(pa, mid, Some(0)).unwrap();
    send(&mut h, p, 40, 30, &["l", "m", "h"]);
    assert!(layer_runs(&h, a).ends_with("hl"), "{}", layer_runs(&h, a));
    assert_eq!(layer_runs(&h, b), b_start, "b is not affected");

    // The publisher drops its lowest layer: a falls back to the lowest it still sends.
    send(&mut h, p, 70, 60, &["m", "h"]);
    assert!(layer_runs(&h, a).ends_with("hlm"), "{}", layer_runs(&h, a));

    // No cap again: back to the top.
    h.sfu.set_layer_preference(pa, mid, None).unwrap();
    send(&mut h, p, 130, 30, &["m", "h"]);
    assert!(layer_runs(&h, a).ends_with("hlmh"), "{}", layer_runs(&h, a));

    // One stream in order: frame numbers never go back although the source layer
    // changed several times (the munger keeps sequence numbers and timestamps going;
    // str0m's depacketizer would drop or merge frames otherwise). At a switch the old
    // layer's frame of the same instant may precede the new layer's keyframe. While the
    // dropped layer was still presumed active (up to `LAYER_INACTIVE_AFTER` and a
    // measuring window), nothing arrived: that gap is the cost of detecting it.
    let frames = h.clients[a].frames_of(Video);
    let numbers: Vec<u32> = frames
        .iter()
        .map(|f| u32::from_be_bytes([f[2], f[3], f[4], f[5]]))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
    let repeats = numbers.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(repeats <= layer_runs(&h, a).len(), "{numbers:?}");
    let gap = numbers.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap <= 50,
        "a dropped layer froze the picture for {gap} frames"
    );
    assert_eq!(h.sfu.stats().forward_errors, 0);
}

/// Layers carry independent VP8 picture ids; the subscriber sees one sequence of them
/// across a layer switch (the SFU patches the payload descriptor).
#[test]
fn vp8_picture_ids_continue_across_a_layer_switch() {
    let mut h = Harness::new();
    let p = h.join_simulcast_rtp("pid", &["l", "h"]).unwrap();
    let s = h.join("pid", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    let frame = |h: &mut Harness, n: u64| {
        let key = n.is_multiple_of(10);
        h.send_vp8_rtp(p, "l", 1000 + n, 1000 + n as u16, 10 + n as u8, key);
        h.send_vp8_rtp(
            p,
            "h",
            50_000 + n,
            20_000 + n as u16,
            200u8.wrapping_add(n as u8),
            key,
        );
        h.run(Duration::from_millis(33));
    };
    for n in 0..40 {
        frame(&mut h, n);
    }
    let (peer, mid) = (h.clients[s].peer, h.clients[s].mid(Video));
    h.sfu.set_layer_preference(peer, mid, Some(0)).unwrap();
    for n in 40..80 {
        frame(&mut h, n);
    }
    let ids: Vec<u64> = h.clients[s]
        .frames
        .iter()
        .filter_map(|f| f.picture_id)
        .collect();
    assert!(ids.len() >= 40, "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
        "{ids:?}"
    );
}

/// The subscriber's link narrows and widens: the send-side estimate (TWCC feedback
/// from the subscriber) follows, and the layer follows the estimate — down at once,
/// up after probing found room and the hold passed. The other subscriber keeps the
/// top layer throughout.
#[test]
fn bandwidth_estimate_moves_a_subscriber_down_and_up() {
    let mut h = Harness::new();
    let p = h.join_simulcast("bw", &["l", "m", "h"]).unwrap();
    let a = h.join("bw", PeerRole::Subscriber, &[Video]).unwrap();
    let b = h.join("bw", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    send(&mut h, p, 0, 120, &["l", "m", "h"]);
    assert!(layer_runs(&h, a).ends_with('h'), "{}", layer_runs(&h, a));
    assert!(layer_runs(&h, b).ends_with('h'), "{}", layer_runs(&h, b));

    // b's link drops to 200 kb/s: below h (~300 kb/s on the wire), above m.
    h.clients[b].downlink = Some(common::Link::new(200_000));
    send(&mut h, p, 120, 300, &["l", "m", "h"]);
    let runs = layer_runs(&h, b);
    assert!(
        runs.ends_with('m') || runs.ends_with('l'),
        "b went down: {runs}"
    );
    let lowered = runs.clone();

    // The link opens up again: probing finds the room, b climbs back to h.
    h.clients[b].downlink.as_mut().unwrap().bps = 5_000_000;
    send(&mut h, p, 420, 450, &["l", "m", "h"]);
    let runs = layer_runs(&h, b);
    assert!(
        runs.ends_with('h') && runs.len() > lowered.len(),
        "b back up: {runs}"
    );
    assert!(
        layer_runs(&h, a).ends_with('h'),
        "a untouched: {}",
        layer_runs(&h, a)
    );
    assert!(!layer_runs(&h, a).contains('m'), "{}", layer_runs(&h, a));
}

/// Keyframe requests are per layer: while one subscriber's layer keeps producing
/// keyframes, another subscriber waiting for a different layer still gets its
/// request through, and its picture starts within one request interval.
#[test]
fn a_keyframe_of_one_layer_does_not_answer_a_request_for_another() {
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h.join_simulcast("kf", &["l", "m", "h"]).unwrap();
    let a = h.join("kf", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    // The publisher sends a layer's keyframe only when asked for that layer (and at
    // the start); `a` takes the top layer.
    let mut wanted: Vec<&str> = vec!["l", "m", "h"];
    let frame = |h: &mut Harness, n: u32, wanted: &mut Vec<&str>| {
        for r in std::mem::take(&mut h.clients[p].keyframe_rids) {
            match r {
                Some(r) => wanted.push(["l", "m", "h"].into_iter().find(|x| *x == &*r).unwrap()),
                None => wanted.extend(["l", "m", "h"]),
            }
        }
        let bodies = bodies(n, &["l", "m", "h"]);
        let layers: Vec<(&str, bool, &[u8])> = bodies
            .iter()
            .map(|(r, b)| (*r, wanted.contains(r), b.as_slice()))
            .collect();
        wanted.clear();
        h.send_simulcast_frame(p, &layers);
        h.run(Duration::from_millis(33));
    };
    for n in 0..40 {
        frame(&mut h, n, &mut wanted);
    }
    assert!(layer_runs(&h, a).ends_with('h'), "{}", layer_runs(&h, a));
    // b arrives capped to the lowest layer while a's layer keeps its keyframes coming.
    let b = h.join("kf", PeerRole::Subscriber, &[Video]).unwrap();
    let (pb, mid) = (h.clients[b].peer, h.clients[b].mid(Video));
    h.sfu.set_layer_preference(pb, mid, Some(0)).unwrap();
    h.connect_all();
    for n in 40..55 {
        wanted.push("h");
        frame(&mut h, n, &mut wanted);
    }
    assert!(layer_runs(&h, b).starts_with('l'), "{}", layer_runs(&h, b));
    let got = h.clients[b].frames_of(Video).len();
    assert!(got >= 8, "b's picture started late: {got} frames of 15");
}

/// H264 simulcast: the same per-subscriber layer choice, switching on IDR pictures.
#[test]
fn h264_simulcast_layers_switch_on_idr() {
    use media_core::str0m::format::Codec;
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h
        .join_codec("h264", PeerRole::Publisher, Codec::H264, &["l", "h"])
        .unwrap();
    let s = h
        .join_codec("h264", PeerRole::Subscriber, Codec::H264, &[])
        .unwrap();
    h.connect_all();
    let send = |h: &mut Harness, from: u32, n: u32| {
        for i in from..from + n {
            let key = i.is_multiple_of(10);
            let lo = [b'l'; 120];
            let hi = [b'h'; 900];
            h.send_h264_simulcast_frame(p, &[("l", key, &lo), ("h", key, &hi)]);
            h.run(Duration::from_millis(33));
        }
    };
    // The tag byte after the start code and NAL header names the layer.
    let runs = |h: &Harness| {
        let mut out = String::new();
        for f in h.clients[s].frames_of(Video) {
            let l = f.get(5).map_or('?', |b| *b as char);
            if !out.ends_with(l) {
                out.push(l);
            }
        }
        out
    };
    send(&mut h, 0, 40);
    assert!(runs(&h).ends_with('h'), "{}", runs(&h));
    let (peer, mid) = (h.clients[s].peer, h.clients[s].mid(Video));
    h.sfu.set_layer_preference(peer, mid, Some(0)).unwrap();
    let before = h.clients[s].frames_of(Video).len();
    send(&mut h, 40, 30);
    assert!(runs(&h).ends_with("hl"), "{}", runs(&h));
    // The first low frame after the switch is the IDR picture.
    let frames = h.clients[s].frames_of(Video);
    let first_low = frames[before..]
        .iter()
        .find(|f| f.get(5) == Some(&b'l'))
        .unwrap();
    assert_eq!(first_low[4] & 0x1f, 5, "switch at an IDR");
    assert_eq!(h.sfu.stats().forward_errors, 0);
}

/// The publisher hears which layers anyone may receive: up to the highest preference
/// among the subscribers, none when nobody watches, all again when someone arrives.
/// Every `LayersWanted` so far: (wanted, unwanted), oldest first.
fn announced(h: &Harness) -> Vec<(Vec<String>, Vec<String>)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            media_core::SfuEvent::LayersWanted {
                layers, unwanted, ..
            } => Some((layers.clone(), unwanted.clone())),
            _ => None,
        })
        .collect()
}

/// The wanted layers of every `LayersWanted` so far.
fn wanted(h: &Harness) -> Vec<Vec<String>> {
    announced(h).into_iter().map(|(w, _)| w).collect()
}

#[test]
fn the_publisher_hears_which_layers_are_wanted() {
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h.join_simulcast("want", &["l", "m", "h"]).unwrap();
    let a = h.join("want", PeerRole::Subscriber, &[Video]).unwrap();
    let b = h.join("want", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    send(&mut h, p, 0, 40, &["l", "m", "h"]);
    assert_eq!(wanted(&h).last().unwrap(), &["l", "m", "h"]);
    let cap = |h: &mut Harness, c: usize, max: Option<usize>| {
        let (peer, mid) = (h.clients[c].peer, h.clients[c].mid(Video));
        h.sfu.set_layer_preference(peer, mid, max).unwrap();
    };
    cap(&mut h, a, Some(0));
    cap(&mut h, b, Some(1));
    send(&mut h, p, 40, 20, &["l", "m", "h"]);
    assert_eq!(wanted(&h).last().unwrap(), &["l", "m"]);
    cap(&mut h, b, Some(0));
    send(&mut h, p, 60, 20, &["l", "m", "h"]);
    assert_eq!(wanted(&h).last().unwrap(), &["l"]);
    // Both leave: nothing is wanted (the publisher may stop encoding).
    for c in [a, b] {
        let peer = h.clients[c].peer;
        let now = h.now;
        h.sfu.remove_peer(now, peer).unwrap();
    }
    send(&mut h, p, 80, 20, &["l", "m", "h"]);
    assert_eq!(wanted(&h).last().unwrap(), &Vec::<String>::new());
    // Someone arrives: every layer is wanted again before any packet of them.
    let n = wanted(&h).len();
    let _c = h.join("want", PeerRole::Subscriber, &[Video]).unwrap();
    assert_eq!(wanted(&h).len(), n + 1);
    assert_eq!(wanted(&h).last().unwrap(), &["l", "m", "h"]);
}

/// A publisher that stops encoding the layers nobody wants (as browsers do on
/// `layers_wanted`) keeps being told the same layers: a paused layer keeps its place
/// in the low-to-high order, so the cap still names the lowest one and not a paused
/// one that now measures 0 bit/s; lifting the cap asks for every layer again.
#[test]
fn a_publisher_that_pauses_unwanted_layers_is_asked_for_the_same_ones() {
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h.join_simulcast("pause", &["l", "m", "h"]).unwrap();
    let a = h.join("pause", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    send(&mut h, p, 0, 40, &["l", "m", "h"]);
    let (peer, mid) = (h.clients[a].peer, h.clients[a].mid(Video));
    h.sfu.set_layer_preference(peer, mid, Some(0)).unwrap();
    send(&mut h, p, 40, 20, &["l", "m", "h"]);
    assert_eq!(wanted(&h).last().unwrap(), &["l"]);
    // The publisher obeys: only "l" for 3 s, long past the inactivity window.
    let n = wanted(&h).len();
    send(&mut h, p, 60, 90, &["l"]);
    assert_eq!(
        &wanted(&h)[n..],
        &[] as &[Vec<String>],
        "nothing new to ask while only the wanted layer flows"
    );
    assert_eq!(layer_runs(&h, a).chars().last(), Some('l'));
    // The cap lifted while only "l" flows: every layer is asked for again.
    h.sfu.set_layer_preference(peer, mid, None).unwrap();
    send(&mut h, p, 150, 10, &["l"]);
    assert_eq!(wanted(&h).last().unwrap(), &["l", "m", "h"]);
    send(&mut h, p, 160, 60, &["l", "m", "h"]);
    assert_eq!(layer_runs(&h, a).chars().last(), Some('h'));
}

/// A layer the publisher declared but never sent (a browser holds back its top layer
/// for bandwidth or a small camera) is neither wanted nor unwanted: the publisher is
/// never told to switch it off, so it can appear later.
#[test]
fn a_layer_never_received_is_not_switched_off() {
    let mut h = Harness::with_config(|c| c.initial_bitrate = None);
    let p = h.join_simulcast("unseen", &["l", "m", "h"]).unwrap();
    let a = h.join("unseen", PeerRole::Subscriber, &[Video]).unwrap();
    h.connect_all();
    let last = |h: &Harness| announced(h).pop().expect("layers announced");
    send(&mut h, p, 0, 40, &["l", "m"]);
    assert_eq!(last(&h), (vec!["l".into(), "m".into()], vec![]));
    let (peer, mid) = (h.clients[a].peer, h.clients[a].mid(Video));
    h.sfu.set_layer_preference(peer, mid, Some(0)).unwrap();
    send(&mut h, p, 40, 20, &["l", "m"]);
    assert_eq!(last(&h), (vec!["l".into()], vec!["m".into()]));
    // "h" shows up later: now it is known, and unwanted too.
    send(&mut h, p, 60, 40, &["l", "m", "h"]);
    assert_eq!(last(&h), (vec!["l".into()], vec!["m".into(), "h".into()]));
}
