//! Forwarding allocates nothing per packet: heap operations inside SFU calls, per
//! forwarded packet, in steady state (`sc-allocs`, the allocator's exact count in
//! virtual time, so no timing and no flakiness).
//!
//! Counted over 30 s after a 20 s warm-up: past each session's first answers to its
//! peer's reports (a subscriber's first DLRR answer makes the storage later ones are
//! built in, str0m patch 23) and the publisher's payload pool's growth to the payloads
//! alive at once (patch 25). What is left there is a payload buffer the pool adds at a
//! new peak (video: five in 30 s, 0.00018 per forwarded packet); audio allocates
//! nothing. Received payloads are copied into buffers the publisher's session recycles
//! (patch 25); reports are built and read in storage each worker thread keeps (patches
//! 26 and 27); sent datagrams' buffers come back to the SFU and are sized so that they
//! do not grow again (patch 27) and kept for a minute (media-core's `Outbox`). Over
//! 2026-12's patches this went from 0.116 (audio) and 0.121 (video) through 0.0036 and
//! 0.0047 to this; about 1.4 and 2.6 before the sent buffers were recycled and str0m's
//! send, feedback and ICE paths were patched (docs/str0m-patches.md). The bounds leave
//! no room for anything per report: one allocation per subscriber's sender report
//! (0.005 for video) or per consent check (0.007 for audio) fails them by far.

mod common;

fn check(kind: &str, bound: f64) {
    let r = common::report(
        env!("CARGO_BIN_EXE_sc-allocs"),
        &[kind, "10", "--warmup", "20", "--window", "30"],
    );
    let forwarded = r["forwarded"].as_u64().unwrap();
    assert!(forwarded > 0, "nothing forwarded: {r}");
    assert_eq!(r["delivered"], r["forwarded"], "{r}");
    let per = r["sfu_heap_ops_per_forwarded"].as_f64().unwrap();
    println!("{kind}: {per:.5} heap operations per forwarded packet ({forwarded} forwarded)");
    assert!(
        per < bound,
        "{kind}: {per:.5} heap operations per forwarded packet inside the SFU, over {bound}; \
         run `sc-allocs {kind} 10 --warmup 20 --window 30 --stacks` to see where: {r}"
    );
}

#[test]
fn a_forwarded_audio_packet_costs_no_allocation_of_its_own() {
    check("audio", 0.0002);
}

#[test]
fn a_forwarded_video_packet_costs_no_allocation_of_its_own() {
    check("video", 0.0004);
}
