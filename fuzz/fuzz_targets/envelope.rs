//! The event envelope parser: any bytes off the bus.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = events::Envelope::from_slice(data) {
        let _ = env.event_type();
        let _ = env.time_millis();
        let _ =
            events::Envelope::from_slice(env.to_json().as_bytes()).expect("its own JSON parses");
    }
});
