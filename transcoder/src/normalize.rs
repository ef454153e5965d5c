//! Gain to a target loudness under a true-peak ceiling.

use crate::TranscodeError;
use crate::limiter::TruePeakLimiter;
use crate::loudness::{Loudness, measure};

/// What to normalise to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub lufs: f64,
    /// The true-peak ceiling the output must stay under.
    pub ceiling_dbtp: f64,
}

impl Target {
    /// Music: −14 LUFS, −1 dBTP.
    pub const MUSIC: Target = Target {
        lufs: -14.0,
        ceiling_dbtp: -1.0,
    };
    /// Podcasts: −16 LUFS, −1 dBTP.
    pub const PODCAST: Target = Target {
        lufs: -16.0,
        ceiling_dbtp: -1.0,
    };
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalizeReport {
    pub input: Loudness,
    pub output: Loudness,
    /// The gain applied before limiting, in dB.
    pub gain_db: f64,
    /// Frames the limiter turned down.
    pub limited_frames: usize,
}

/// The limiter aims a little under the ceiling: its detector and the later Opus
/// encode both add a few hundredths of a dB.
const CEILING_MARGIN_DB: f64 = 0.3;

/// Returns `samples` (interleaved, `channels`, `rate`) at `target` loudness with its
/// true peak under the ceiling. Silence stays silence. Limiting costs loudness, so the
/// gain is raised by what each pass fell short, until it is within 0.1 LU.
pub fn normalize(
    samples: &[f32],
    channels: usize,
    rate: u32,
    target: Target,
) -> Result<(Vec<f32>, NormalizeReport), TranscodeError> {
    let input = measure(samples, channels, rate)?;
    if !input.integrated_lufs.is_finite() {
        return Ok((
            samples.to_vec(),
            NormalizeReport {
                input,
                output: input,
                gain_db: 0.0,
                limited_frames: 0,
            },
        ));
    }
    let limiter = TruePeakLimiter::new(target.ceiling_dbtp - CEILING_MARGIN_DB, rate);
    let mut gain_db = target.lufs - input.integrated_lufs;
    let mut best = None;
    // Each pass adds what the last fell short; heavy limiting needs a few.
    for _ in 0..8 {
        let g = 10f64.powf(gain_db / 20.0) as f32;
        let mut out: Vec<f32> = samples.iter().map(|s| s * g).collect();
        let limited_frames = limiter.process(&mut out, channels);
        let output = measure(&out, channels, rate)?;
        let short = target.lufs - output.integrated_lufs;
        best = Some((
            out,
            NormalizeReport {
                input,
                output,
                gain_db,
                limited_frames,
            },
        ));
        if short.abs() <= 0.1 || limited_frames == 0 {
            break;
        }
        // Limited harder than the loudness allows: more gain, the limiter takes it.
        gain_db += short;
    }
    best.ok_or_else(|| TranscodeError::BadAudio("nothing to normalise".into()))
}
