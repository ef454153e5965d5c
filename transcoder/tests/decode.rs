//! Decoding what FFmpeg's encoders wrote (fixtures made by `scripts/interop/make_audio.py`
//! through PyAV): every container and codec decodes to the duration it was given,
//! within 20 ms, resampled to 48 kHz, and normalises to the target. Corrupt and
//! unsupported files fail with a reason.

#[path = "../../recorder/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;

use transcoder::{Target, TranscodeError, decode_file, measure, normalize, to_48k};

fn fixture(py: &str, kind: &str, container: &str, rate: u32, secs: f64) -> PathBuf {
    support::make_audio(py, kind, container, rate, secs)
}

#[test]
fn every_container_decodes_to_its_duration_and_normalises() {
    let py = support::python();
    for container in ["wav", "flac", "mp3", "m4a", "ogg", "webm"] {
        for (kind, rate) in [("sweep", 44_100), ("speech", 48_000)] {
            let path = fixture(&py, kind, container, rate, 4.0);
            let pcm = decode_file(&path).unwrap_or_else(|e| panic!("{container} {kind}: {e}"));
            assert_eq!(pcm.channels, 2, "{container}");
            assert_eq!(pcm.rate, rate, "{container}");
            let codec = match container {
                "wav" => "pcm_s16le",
                "m4a" => "aac",
                "ogg" | "webm" => "vorbis",
                other => other,
            };
            assert_eq!(pcm.codec, codec, "{container}");
            let pcm = to_48k(pcm).unwrap();
            assert_eq!(pcm.rate, 48_000);
            let ms = pcm.duration_ms();
            assert!(
                (ms - 4000.0).abs() <= 20.0,
                "{container} {kind} ({}): {ms} ms decoded of 4000",
                pcm.codec
            );
            let target = if kind == "speech" {
                Target::PODCAST
            } else {
                Target::MUSIC
            };
            let (out, _) = normalize(&pcm.samples, 2, 48_000, target).unwrap();
            let m = measure(&out, 2, 48_000).unwrap();
            assert!(
                (m.integrated_lufs - target.lufs).abs() <= 0.5,
                "{container} {kind}: {m:?}"
            );
            assert!(m.true_peak_dbtp <= -1.0, "{container} {kind}: {m:?}");
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[test]
fn corrupt_and_unsupported_files_fail_with_a_reason() {
    let py = support::python();
    let dir = std::env::temp_dir();
    // Not audio at all, whatever the name says.
    let junk = dir.join(format!("sc-junk-{}.mp3", support::rand_u64()));
    std::fs::write(
        &junk,
        b"this is not an mp3 file, only text pretending to be one",
    )
    .unwrap();
    match decode_file(&junk) {
        Err(TranscodeError::Unsupported(m)) | Err(TranscodeError::BadAudio(m)) => {
            assert!(!m.is_empty())
        }
        other => panic!("junk decoded: {other:?}"),
    }
    // A file cut in half decodes what is there: about half of its 4 s.
    let flac = fixture(&py, "sweep", "flac", 48_000, 4.0);
    let data = std::fs::read(&flac).unwrap();
    std::fs::write(&flac, &data[..data.len() / 2]).unwrap();
    let cut = decode_file(&flac).expect("a cut FLAC decodes up to the cut");
    assert!(
        (1500.0..2600.0).contains(&cut.duration_ms()),
        "{} ms of a FLAC cut at half its 4 s",
        cut.duration_ms()
    );
    // Garbage inside a valid container: bad packets are skipped and counted.
    let mp3 = fixture(&py, "sweep", "mp3", 44_100, 4.0);
    let mut data = std::fs::read(&mp3).unwrap();
    let n = data.len();
    for b in &mut data[n / 3..n / 3 + 2000] {
        *b = 0x5a;
    }
    std::fs::write(&mp3, &data).unwrap();
    let garbled = decode_file(&mp3).expect("garbage inside an MP3 costs packets, not the file");
    assert!(garbled.bad_packets >= 1, "no bad packet counted");
    assert!(
        (3000.0..4100.0).contains(&garbled.duration_ms()),
        "{} ms left of 4 s",
        garbled.duration_ms()
    );
    assert!(matches!(
        decode_file(&dir.join("sc-does-not-exist.wav")),
        Err(TranscodeError::BadAudio(_))
    ));
    for p in [junk, flac, mp3] {
        let _ = std::fs::remove_file(p);
    }
}
