//! The recorder's repair of a WebM/Matroska file cut or corrupted by a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One file per fuzzing process, written over for each input.
    let path = std::env::temp_dir().join(format!("sc-fuzz-{}.webm", std::process::id()));
    std::fs::write(&path, data).expect("written");
    let _ = recorder::video::repair_matroska(&path);
});
