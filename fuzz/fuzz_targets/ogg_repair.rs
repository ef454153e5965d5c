//! The recorder's repair of an Ogg Opus file cut or corrupted by a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One file per fuzzing process, written over for each input.
    let path = std::env::temp_dir().join(format!("sc-fuzz-{}.ogg", std::process::id()));
    std::fs::write(&path, data).expect("written");
    let _ = recorder::repair_ogg(&path);
});
