//! The transcoder's output measured by an independent meter: FFmpeg's `ebur128`
//! filter (through PyAV in the project's venv, `scripts/interop/loudness.py`).

#[path = "../../recorder/tests/support/mod.rs"]
mod support;

use transcoder::{Target, measure, normalize};

const RATE: u32 = 48_000;

/// A 32-bit float WAV.
fn wav(samples: &[f32], channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 4) as u32;
    let mut v = Vec::with_capacity(44 + data_len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&RATE.to_le_bytes());
    v.extend_from_slice(&(RATE * 4 * u32::from(channels)).to_le_bytes());
    v.extend_from_slice(&(4 * channels).to_le_bytes());
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

fn ffmpeg_meter(py: &str, samples: &[f32], channels: u16) -> (f64, f64) {
    let path = std::env::temp_dir().join(format!("sc-lufs-{}.wav", support::rand_u64()));
    std::fs::write(&path, wav(samples, channels)).unwrap();
    let m = support::ffmpeg_loudness(py, &path);
    let _ = std::fs::remove_file(&path);
    m
}

fn tone_bursts(secs: f64, amp: f32, channels: usize) -> Vec<f32> {
    let n = (secs * f64::from(RATE)) as usize;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / f64::from(RATE);
            let env = if ((t * 2.0) as u64).is_multiple_of(2) {
                1.0
            } else {
                0.3
            };
            let x = amp * (env * (2.0 * std::f64::consts::PI * 330.0 * t).sin()) as f32;
            std::iter::repeat_n(x, channels)
        })
        .collect()
}

#[test]
fn ffmpeg_agrees_on_loudness_and_true_peak() {
    let py = support::python();
    for (channels, amp, target) in [(1usize, 0.05f32, Target::MUSIC), (2, 0.9, Target::PODCAST)] {
        let input = tone_bursts(10.0, amp, channels);
        let (out, _) = normalize(&input, channels, RATE, target).unwrap();
        let ours = measure(&out, channels, RATE).unwrap();
        let (i, tp) = ffmpeg_meter(&py, &out, channels as u16);
        assert!(
            (i - target.lufs).abs() <= 0.5,
            "FFmpeg: {i} LUFS, target {}",
            target.lufs
        );
        assert!(tp <= target.ceiling_dbtp, "FFmpeg: true peak {tp} dBTP");
        // The two meters agree (FFmpeg prints one decimal).
        assert!(
            (i - ours.integrated_lufs).abs() <= 0.15,
            "FFmpeg {i}, ours {ours:?}"
        );
        let (i_in, _) = ffmpeg_meter(&py, &input, channels as u16);
        let ours_in = measure(&input, channels, RATE).unwrap();
        assert!(
            (i_in - ours_in.integrated_lufs).abs() <= 0.15,
            "input: FFmpeg {i_in}, ours {ours_in:?}"
        );
    }
}
