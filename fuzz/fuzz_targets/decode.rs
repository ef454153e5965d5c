//! The transcoder's decode of any bytes a user uploads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One file per fuzzing process, written over for each input.
    let path = std::env::temp_dir().join(format!("sc-fuzz-{}.upload", std::process::id()));
    std::fs::write(&path, data).expect("written");
    let _ = transcoder::decode::decode_file(&path);
});
