//! `/rtc` client messages: the room protocol's parser, on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = signaling::room::parse_client_message(text);
    }
});
