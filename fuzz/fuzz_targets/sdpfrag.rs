//! WHIP/WHEP PATCH bodies (`application/trickle-ice-sdpfrag`) and the SDP helpers the
//! PATCH path runs on them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = signaling::sdpfrag::IceFragment::parse(text);
    let _ = signaling::sdpfrag::ice_ufrag(text);
    let _ = signaling::sdpfrag::restart_answer(text);
});
