//! Forwarding allocates nothing per packet: heap operations inside SFU calls, per
//! forwarded packet, in steady state (`sc-allocs`, the allocator's exact count in
//! virtual time, so no timing and no flakiness).
//!
//! What is left comes once per publisher report or once per session, not per packet:
//! parsing the publisher's source descriptions and its answers to our RRTRs, the
//! buffers a subscriber's first DLRR answer is built in (kept for the next, str0m patch
//! 23), a media-core pool buffer regrown after a trim, and rarely a payload buffer the
//! publisher's pool has to add (a new peak of payloads alive at once). Received
//! payloads are copied into buffers the publisher's session recycles once every
//! subscriber has sent them and let them go (str0m patch 25); our sender reports'
//! source descriptions and the subscribers' extended reports are built and read in
//! storage each worker thread keeps (patch 26). Counted over 30 s, longer than the
//! media-core pool's trim interval and several reports, at N = 10 that is 0.0036
//! (audio) and 0.0047 (video) per forwarded packet; 0.116 and 0.121 before patches 25
//! and 26, about 1.4 and 2.6 before the sent buffers were recycled and str0m's send,
//! feedback and ICE paths were patched (docs/str0m-patches.md). The bounds leave little
//! room: one more allocation per consent check (0.007 for audio), per subscriber's
//! sender report (0.005 video) or per transport-wide report (received from
//! subscribers: 0.11 for video) fails them, and one per publisher packet (0.1) fails
//! them by far.

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
    check("audio", 0.006);
}

#[test]
fn a_forwarded_video_packet_costs_no_allocation_of_its_own() {
    check("video", 0.008);
}
