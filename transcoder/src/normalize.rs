//! Gain to a target loudness under a true-peak ceiling.

use crate::TranscodeError;
use crate::kweighting::WeightedEnergy;
use crate::limiter::{GainScratch, TruePeakLimiter};
use crate::loudness::{Loudness, check_shape, integrated, measure};
use crate::truepeak;
use std::sync::Mutex;

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
/// gain is raised by what each try fell short, until it is within 0.1 LU.
pub fn normalize(
    samples: &[f32],
    channels: usize,
    rate: u32,
    target: Target,
) -> Result<(Vec<f32>, NormalizeReport), TranscodeError> {
    let prepared = Prepared::new(samples, channels, rate)?;
    let (out, mut report) = prepared.normalise(target, None)?;
    report.output = measure(&out, channels, rate)?;
    Ok((out, report))
}

/// Audio prepared for gain searches: its loudness, and the two things every try at a
/// gain needs and that scale with the gain — the limiter's detected peak and the
/// K-weighted energy of each frame. A try then costs the limiter's gain curve and a
/// multiply-add per frame, not a filtering of the audio (let alone the 4×
/// oversampled detector) per try.
#[derive(Debug)]
pub struct Prepared<'a> {
    samples: &'a [f32],
    channels: usize,
    rate: u32,
    input: Loudness,
    peaks: Vec<f32>,
    /// The largest of `peaks`: a try whose gain keeps it under the limiter's
    /// ceiling limits nothing, and needs no gain curve.
    peak_max: f32,
    energy: WeightedEnergy,
    /// What the last search worked in, for the next.
    scratch: Mutex<GainScratch>,
}

/// The outcome of a gain search: the gain, the limiter's gain per frame, and the
/// loudness the limited audio is estimated to have.
#[derive(Debug, Clone)]
pub struct Plan {
    pub gain_db: f64,
    /// `None` when no frame is limited.
    frame_gains: Option<Vec<f32>>,
    pub estimated_lufs: f64,
    pub limited_frames: usize,
}

impl<'a> Prepared<'a> {
    /// Measures `samples` (their integrated loudness and true peak) and detects the
    /// peak of every frame.
    pub fn new(samples: &'a [f32], channels: usize, rate: u32) -> Result<Self, TranscodeError> {
        check_shape(samples, channels)?;
        let mut peaks = vec![0f32; samples.len() / channels];
        let (energy, true_peak) = std::thread::scope(|s| {
            let energy = s.spawn(|| WeightedEnergy::of(samples, channels, rate));
            let true_peak = truepeak::frame_peaks(samples, channels, &mut peaks);
            let energy = energy
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (energy, true_peak)
        });
        let input = if rate >= 96_000 {
            measure(samples, channels, rate)?
        } else {
            Loudness {
                integrated_lufs: energy.integrated(),
                true_peak_dbtp: truepeak::dbtp(true_peak),
            }
        };
        Ok(Prepared {
            samples,
            channels,
            rate,
            input,
            peak_max: peaks.iter().fold(0f32, |m, p| m.max(*p)),
            peaks,
            energy,
            scratch: Mutex::default(),
        })
    }

    pub fn input(&self) -> Loudness {
        self.input
    }

    /// Searches the gain that brings the audio to `target.lufs` once the limiter
    /// holds it under `target.ceiling_dbtp`, starting at `start_gain_db` when given
    /// (a repeat at a lower ceiling starts where the last one ended). Each try adds
    /// what the last fell short, scaled by how much loudness the last change of gain
    /// bought (a secant step): under heavy limiting a dB of gain buys well under a dB
    /// of loudness, and adding only the shortfall would take many tries.
    pub fn plan(&self, target: Target, start_gain_db: Option<f64>) -> Plan {
        let input = self.input.integrated_lufs;
        if !input.is_finite() {
            return Plan {
                gain_db: 0.0,
                frame_gains: None,
                estimated_lufs: input,
                limited_frames: 0,
            };
        }
        let limiter = TruePeakLimiter::new(target.ceiling_dbtp - CEILING_MARGIN_DB, self.rate);
        let mut gain_db = start_gain_db.unwrap_or(target.lufs - input);
        let mut last: Option<(f64, f64)> = None;
        // The buffers of the last search, if no other is running.
        let mut scratch = self
            .scratch
            .try_lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let mut tried = None;
        let n = self.energy.frames_per_100ms();
        let chunk = crate::limiter::CHUNK_FRAMES.div_ceil(n) * n;
        let mut per_100ms = Vec::new();
        for _ in 0..MAX_TRIES {
            let g = 10f64.powf(gain_db / 20.0);
            // The curve's frames limited and loudness, summed chunk by chunk while
            // they are in cache (runs of whole 100 ms, as the sums want them).
            let mut limited_frames = 0;
            per_100ms.clear();
            if limiter.limits(self.peak_max, g as f32) {
                limiter.gains_into(
                    &self.peaks,
                    g as f32,
                    chunk,
                    &mut scratch,
                    |first, gains| {
                        limited_frames += gains.iter().filter(|g| **g < 1.0).count();
                        self.energy.sums_under(g, first, gains, &mut per_100ms);
                    },
                );
            }
            let estimated_lufs = if limited_frames == 0 {
                input + gain_db
            } else {
                self.energy.integrated_of_sums(&per_100ms)
            };
            tried = Some((gain_db, estimated_lufs, limited_frames));
            let short = target.lufs - estimated_lufs;
            if short.abs() <= 0.1 || limited_frames == 0 {
                break;
            }
            // Limited harder than the loudness allows: more gain, the limiter takes it.
            let slope = match last {
                Some((g0, l0)) if (gain_db - g0).abs() > 1e-3 => {
                    ((estimated_lufs - l0) / (gain_db - g0)).clamp(0.1, 1.0)
                }
                _ => 1.0,
            };
            last = Some((gain_db, estimated_lufs));
            gain_db += (short / slope).clamp(-6.0, 6.0);
        }
        let (gain_db, estimated_lufs, limited_frames) = tried.expect("at least one try");
        let frame_gains = (limited_frames > 0).then(|| scratch.take_gains(self.peaks.len()));
        if let Ok(mut kept) = self.scratch.try_lock() {
            *kept = scratch;
        }
        Plan {
            gain_db,
            frame_gains,
            estimated_lufs,
            limited_frames,
        }
    }

    /// The frames `frames` of the audio under `plan` (interleaved).
    pub fn render(&self, plan: &Plan, frames: std::ops::Range<usize>) -> Vec<f32> {
        let ch = self.channels;
        let g = 10f64.powf(plan.gain_db / 20.0) as f32;
        let src = &self.samples[frames.start * ch..frames.end * ch];
        match &plan.frame_gains {
            None => src.iter().map(|s| s * g).collect(),
            Some(gains) => src
                .chunks_exact(ch)
                .zip(&gains[frames])
                .flat_map(|(frame, fg)| frame.iter().map(move |s| s * g * fg))
                .collect(),
        }
    }

    /// The whole audio normalised to `target`: [`Self::plan`], then the result measured
    /// exactly and, where the estimate was off by more than the search's 0.1 LU (it
    /// can be, under heavy limiting), the search repeated with the aim moved by the
    /// difference. The report's output true peak is NaN, for the caller to measure
    /// where it matters (after encoding, say).
    pub fn normalise(
        &self,
        target: Target,
        start_gain_db: Option<f64>,
    ) -> Result<(Vec<f32>, NormalizeReport), TranscodeError> {
        self.normalise_planned(target, self.plan(target, start_gain_db))
    }

    /// [`Self::normalise`] from a search already made at `target` (`first`).
    pub fn normalise_planned(
        &self,
        target: Target,
        first: Plan,
    ) -> Result<(Vec<f32>, NormalizeReport), TranscodeError> {
        let frames = self.peaks.len();
        let mut aim = target;
        let mut start = Some(first.gain_db);
        let mut next = Some(first);
        let mut best: Option<(Vec<f32>, NormalizeReport)> = None;
        for _ in 0..3 {
            let plan = match next.take() {
                Some(plan) => plan,
                None => self.plan(aim, start),
            };
            let out = self.render(&plan, 0..frames);
            let integrated_lufs = integrated(&out, self.channels, self.rate)?;
            let report = NormalizeReport {
                input: self.input,
                output: Loudness {
                    integrated_lufs,
                    true_peak_dbtp: f64::NAN,
                },
                gain_db: plan.gain_db,
                limited_frames: plan.limited_frames,
            };
            let off = target.lufs - integrated_lufs;
            let closer = best
                .as_ref()
                .is_none_or(|(_, b)| off.abs() < (target.lufs - b.output.integrated_lufs).abs());
            if closer {
                best = Some((out, report));
            }
            if off.abs() <= 0.1 || plan.frame_gains.is_none() || !off.is_finite() {
                break;
            }
            aim.lufs += off;
            start = Some(plan.gain_db + off);
        }
        Ok(best.expect("at least one try"))
    }
}

/// Tries per gain search. A try is cheap (see [`Prepared`]); heavy limiting can need
/// several.
const MAX_TRIES: usize = 12;
