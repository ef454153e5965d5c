//! Whole files: FFmpeg-encoded fixtures → `transcode_file` → Ogg Opus, checked by our
//! Ogg reader and libopus decoder and by FFmpeg (decoder and `ebur128` meter, through
//! PyAV): loudness within ±0.5 LU of the target, true peak ≤ −1 dBTP, duration within
//! 20 ms of the input.

#[path = "../../recorder/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;

use recorder::OggOpusReader;
use transcoder::{Target, TranscodeOptions, measure, transcode_file};

fn fixture(py: &str, kind: &str, container: &str, rate: u32, secs: f64) -> PathBuf {
    support::make_audio(py, kind, container, rate, secs)
}

/// Decodes our Ogg Opus with libopus, honouring pre-skip and the end granule.
fn decode_ogg(data: &[u8]) -> (Vec<f32>, usize) {
    let r = OggOpusReader::parse(data).unwrap();
    let ch = usize::from(r.channels);
    let mut dec = opus::Decoder::new(
        48_000,
        if ch == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        },
    )
    .unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0f32; 5760 * ch];
    for p in &r.packets {
        let n = dec.decode_float(p, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..n * ch]);
    }
    // The last page's granule: where the stream ends (end trimming).
    let end = r.pages.last().map_or(0, |(g, _)| *g) as usize * ch;
    pcm.truncate(end);
    pcm.drain(..usize::from(r.pre_skip) * ch);
    (pcm, ch)
}

#[test]
fn fixtures_become_normalised_opus_of_the_same_length() {
    let py = support::python();
    for (kind, container, rate, target) in [
        ("sweep", "flac", 44_100, Target::MUSIC),
        ("speech", "mp3", 48_000, Target::PODCAST),
        ("clipped", "wav", 48_000, Target::MUSIC),
        ("speech", "m4a", 44_100, Target::PODCAST),
    ] {
        let input = fixture(&py, kind, container, rate, 6.0);
        let output = input.with_extension("opus.ogg");
        let mut stages = Vec::new();
        let report = transcode_file(
            &input,
            &output,
            &TranscodeOptions {
                target,
                ..TranscodeOptions::default()
            },
            |stage, pct| stages.push((stage.to_owned(), pct)),
        )
        .unwrap_or_else(|e| panic!("{kind} {container}: {e}"));
        assert_eq!(stages.last().unwrap(), &("done".to_owned(), 100));
        assert!(
            stages.windows(2).all(|w| w[0].1 <= w[1].1),
            "progress only grows"
        );
        assert_eq!(report.waveform.buckets, 1000);
        let data = std::fs::read(&output).unwrap();
        let (pcm, ch) = decode_ogg(&data);
        let ms = (pcm.len() / ch) as f64 / 48.0;
        // Every format within 20 ms, AAC in MP4 too (its edit list is applied).
        assert!((ms - 6000.0).abs() <= 20.0, "{kind} {container}: {ms} ms");
        let ours = measure(&pcm, ch, 48_000).unwrap();
        assert!(
            (ours.integrated_lufs - target.lufs).abs() <= 0.5,
            "{kind} {container}: {ours:?}"
        );
        assert!(
            ours.true_peak_dbtp <= target.ceiling_dbtp,
            "{kind} {container}: {ours:?}"
        );
        let (i, tp) = support::ffmpeg_loudness(&py, &output);
        assert!(
            (i - target.lufs).abs() <= 0.5,
            "{kind} {container}: FFmpeg {i} LUFS"
        );
        assert!(
            tp <= target.ceiling_dbtp,
            "{kind} {container}: FFmpeg {tp} dBTP"
        );
        let ff = support::decode(&py, &output);
        let ff_ms = ff[0]["samples"].as_f64().unwrap() / 48.0;
        assert!(
            (ff_ms - ms).abs() <= 1.0,
            "{kind} {container}: FFmpeg decodes {ff_ms} ms, we {ms}"
        );
        let _ = std::fs::remove_file(&input);
        let _ = std::fs::remove_file(&output);
    }
}

#[test]
fn opus_inputs_decode_through_libopus_and_come_out_normalised() {
    // Our own output as input: Ogg Opus, decoded by libopus inside symphonia.
    let py = support::python();
    let src = fixture(&py, "speech", "flac", 48_000, 5.0);
    let first = src.with_extension("first.ogg");
    transcode_file(&src, &first, &TranscodeOptions::default(), |_, _| {}).unwrap();
    let pcm = transcoder::decode_file(&first).unwrap();
    assert_eq!((pcm.rate, pcm.channels), (48_000, 2));
    assert!(
        (pcm.duration_ms() - 5000.0).abs() <= 20.0,
        "{} ms",
        pcm.duration_ms()
    );
    let second = src.with_extension("second.ogg");
    let report = transcode_file(
        &first,
        &second,
        &TranscodeOptions {
            target: Target::PODCAST,
            ..TranscodeOptions::default()
        },
        |_, _| {},
    )
    .unwrap();
    assert!((report.loudness.input.integrated_lufs + 14.0).abs() <= 0.5);
    let (i, tp) = support::ffmpeg_loudness(&py, &second);
    assert!(
        (i + 16.0).abs() <= 0.5 && tp <= -1.0,
        "FFmpeg: {i} LUFS, {tp} dBTP"
    );
    for p in [src, first, second] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_corrupt_input_fails_the_transcode_with_a_reason_and_writes_nothing() {
    let dir = std::env::temp_dir();
    let input = dir.join(format!("sc-tx-bad-{}.flac", support::rand_u64()));
    std::fs::write(&input, vec![0x42u8; 10_000]).unwrap();
    let output = input.with_extension("ogg");
    let err = transcode_file(&input, &output, &TranscodeOptions::default(), |_, _| {}).unwrap_err();
    assert!(
        matches!(
            err,
            transcoder::TranscodeError::Unsupported(_) | transcoder::TranscodeError::BadAudio(_)
        ),
        "{err:?}"
    );
    assert!(!err.to_string().is_empty());
    assert!(!output.exists());
    let _ = std::fs::remove_file(&input);
}

/// Dense, mastered-sounding music (the benchmark's signal, 40 s) needs the limiter, and
/// Opus then adds peaks of its own: the delivered file's decoded true peak must still
/// be under the ceiling (before the decoded check it read up to +1.6 dBTP).
#[test]
fn dense_music_stays_under_the_ceiling_once_encoded() {
    let py = support::python();
    let src = std::env::temp_dir().join(format!("sc-dense-{}.flac", support::rand_u64()));
    let st = std::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/interop/bench_audio.py"
        ))
        .arg(&src)
        .arg("40")
        .status()
        .unwrap();
    assert!(st.success());
    let out = src.with_extension("opus");
    let r = transcode_file(&src, &out, &TranscodeOptions::default(), |_, _| {}).unwrap();
    assert!(
        r.loudness.limited_frames > 0,
        "the fixture needs the limiter"
    );
    let (pcm, ch) = decode_ogg(&std::fs::read(&out).unwrap());
    let ours = measure(&pcm, ch, 48_000).unwrap();
    assert!(ours.true_peak_dbtp <= -1.0, "{ours:?}");
    assert!((ours.integrated_lufs + 14.0).abs() <= 0.5, "{ours:?}");
    assert!(
        (r.loudness.output.true_peak_dbtp - ours.true_peak_dbtp).abs() < 0.05,
        "the report is the file's"
    );
    let (lufs, tp) = support::ffmpeg_loudness(&py, &out);
    assert!(tp <= -1.0, "FFmpeg: {tp} dBTP");
    assert!((lufs + 14.0).abs() <= 0.5, "FFmpeg: {lufs} LUFS");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&out);
}
