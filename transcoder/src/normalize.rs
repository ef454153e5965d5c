//! Gain to a target loudness under a true-peak ceiling.

use crate::TranscodeError;
use crate::limiter::TruePeakLimiter;
use crate::loudness::{Loudness, integrated, measure};

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
pub(crate) const CEILING_MARGIN_DB: f64 = 0.3;

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
    let (out, mut report) = normalize_measured(samples, channels, rate, target, input, None)?;
    if report.output.true_peak_dbtp.is_nan() {
        report.output = measure(&out, channels, rate)?;
    }
    Ok((out, report))
}

/// [`normalize`] of audio already measured (`input`), starting the gain search at
/// `start_gain_db` when given (a repeat at a lower ceiling starts where the last one
/// ended, so it needs fewer limiter passes). The search measures integrated loudness
/// only: the report's output true peak is NaN, for the caller to measure where it
/// matters (after encoding, say).
pub fn normalize_measured(
    samples: &[f32],
    channels: usize,
    rate: u32,
    target: Target,
    input: Loudness,
    start_gain_db: Option<f64>,
) -> Result<(Vec<f32>, NormalizeReport), TranscodeError> {
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
    let mut gain_db = start_gain_db.unwrap_or(target.lufs - input.integrated_lufs);
    let mut best = None;
    let mut last: Option<(f64, f64)> = None;
    // Each pass adds what the last fell short, scaled by how much loudness the last
    // change of gain bought (a secant step): under heavy limiting a dB of gain buys well
    // under a dB of loudness, and adding only the shortfall would take many passes.
    for _ in 0..8 {
        let g = 10f64.powf(gain_db / 20.0) as f32;
        let mut out: Vec<f32> = samples.iter().map(|s| s * g).collect();
        let limited_frames = limiter.process(&mut out, channels);
        let output = Loudness {
            integrated_lufs: integrated(&out, channels, rate)?,
            true_peak_dbtp: f64::NAN,
        };
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
        let slope = match last {
            Some((g0, l0)) if (gain_db - g0).abs() > 1e-3 => {
                ((output.integrated_lufs - l0) / (gain_db - g0)).clamp(0.1, 1.0)
            }
            _ => 1.0,
        };
        last = Some((gain_db, output.integrated_lufs));
        gain_db += (short / slope).clamp(-6.0, 6.0);
    }
    best.ok_or_else(|| TranscodeError::BadAudio("nothing to normalise".into()))
}
