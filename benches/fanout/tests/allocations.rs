//! Forwarding allocates nothing per packet: heap operations inside SFU calls, per
//! forwarded packet, in steady state (`sc-allocs`, the allocator's exact count in
//! virtual time, so no timing and no flakiness).
//!
//! What is left is driven by what comes in, not by what goes out: one shared payload
//! per publisher packet (`Arc<[u8]>`, shared by every subscriber: 0.1 of it at
//! N = 10) and SDES building and XR parsing once per sender report and peer (each
//! second for video, each 5 s for audio; the DLRR answer reuses the last one's
//! storage, str0m patch 23), and a pool buffer regrown after a trim (rarely, since
//! the pool keeps a keyframe's buffers for 10 s). Counted over 30 s, longer than
//! that trim interval and several reports, at N = 10 that is 0.116 (audio) and 0.121
//! (video) per forwarded packet (a 3 s window, as `sc-allocs` counts by default, may
//! hold no audio report: 0.100); before the sent buffers
//! were recycled and str0m's send, feedback and ICE paths were patched
//! (docs/str0m-patches.md) it was about 1.4 and 2.6. The bounds leave little room:
//! one more allocation per consent check (0.007 for audio) or per transport-wide
//! report (received from subscribers: 0.11 for video) fails them, and one per
//! forwarded packet fails them by far.

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
    check("audio", 0.12);
}

#[test]
fn a_forwarded_video_packet_costs_no_allocation_of_its_own() {
    check("video", 0.125);
}
