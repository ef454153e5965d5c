//! Forwarding allocates nothing per packet: heap operations inside SFU calls, per
//! forwarded packet, in steady state (`sc-allocs`, the allocator's exact count in
//! virtual time, so no timing and no flakiness).
//!
//! What is left is driven by reports, not by packets: SDES building and XR parsing once
//! per sender report and peer (each second for video, each 5 s for audio; the DLRR
//! answer reuses the last one's storage, str0m patch 23), and rarely a payload buffer
//! the pool has to add (a keyframe held longer than the packets after it). Received
//! payloads are copied into buffers the publisher's session recycles once every
//! subscriber has sent them and let them go (str0m patch 25); before that each
//! publisher packet made one shared buffer (0.1 per forwarded packet at N = 10).
//! Counted over 30 s, longer than the pool's trim interval and several reports, at
//! N = 10 that is 0.016 (audio) and 0.021 (video) per forwarded packet; before the
//! payload pool 0.116 and 0.121, before the sent buffers were recycled and str0m's send,
//! feedback and ICE paths were patched (docs/str0m-patches.md) about 1.4 and 2.6. The
//! bounds leave little room: one more allocation per consent check (0.007 for audio)
//! or per transport-wide report (received from subscribers: 0.11 for video) fails
//! them, and one per publisher packet (0.1) fails them by far.

mod common;

fn check(kind: &str, bound: f64) {
    let r = common::report(
        env!("CARGO_BIN_EXE_sc-allocs"),
        &[kind, "10", "--window", "30"],
    );
    let forwarded = r["forwarded"].as_u64().unwrap();
    assert!(forwarded > 0, "nothing forwarded: {r}");
    assert_eq!(r["delivered"], r["forwarded"], "{r}");
    let per = r["sfu_heap_ops_per_forwarded"].as_f64().unwrap();
    println!("{kind}: {per:.3} heap operations per forwarded packet ({forwarded} forwarded)");
    assert!(
        per < bound,
        "{kind}: {per:.3} heap operations per forwarded packet inside the SFU, over {bound}; \
         run `sc-allocs {kind} 10 --stacks` to see where: {r}"
    );
}

#[test]
fn a_forwarded_audio_packet_costs_no_allocation_of_its_own() {
    check("audio", 0.02);
}

#[test]
fn a_forwarded_video_packet_costs_no_allocation_of_its_own() {
    check("video", 0.025);
}
