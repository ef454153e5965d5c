//! BS.1770 integrated loudness from K-weighted energy kept per frame, so that the
//! loudness of the same audio under many gain curves costs a multiply-add per frame
//! instead of filtering the audio again.
//!
//! The filter, channel weights, 400 ms blocks every 100 ms and the gates (absolute
//! −70 LUFS, relative −10 LU) are the `ebur128` crate's, and on the unmodified audio
//! [`WeightedEnergy::integrated`] equals that crate's `loudness_global` to rounding
//! (tested). The crate keeps no per-frame figures, which a gain search needs.
//!
//! Under a slowly varying gain `g(n)` (a limiter's), the loudness of `g·x` is taken
//! as that of `g(n)²·e(n)`, `e` being the K-weighted energy of `x`: exact for a
//! constant gain, and within hundredths of a LU for a limiter's gain, which moves
//! over milliseconds while the filter's response is flat across the few tens of Hz
//! that motion spreads each frequency over. A search that needs the exact figure
//! measures its result once.

/// 4th-order K-weighting filter (high shelf, then RLB high-pass) at `rate`, as one
/// direct-form II section: numerator and denominator, the `ebur128` crate's.
fn coefficients(rate: f64) -> ([f64; 5], [f64; 5]) {
    let (f0, g, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let vh = 10f64.powf(g / 20.0);
    let vb = vh.powf(0.4996667741545416);
    let a0 = 1.0 + k / q + k * k;
    let pb = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
    ];
    let pa = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0];
    let (f0, q) = (38.13547087602444, 0.5003270373238773);
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let d = 1.0 + k / q + k * k;
    let rb = [1.0, -2.0, 1.0];
    let ra = [1.0, 2.0 * (k * k - 1.0) / d, (1.0 - k / q + k * k) / d];
    let conv = |p: [f64; 3], r: [f64; 3]| {
        [
            p[0] * r[0],
            p[0] * r[1] + p[1] * r[0],
            p[0] * r[2] + p[1] * r[1] + p[2] * r[0],
            p[1] * r[2] + p[2] * r[1],
            p[2] * r[2],
        ]
    };
    (conv(pb, rb), conv(pa, ra))
}

/// The weight of each channel in the sum, by the `ebur128` crate's default layout:
/// 4 channels are L R Ls Rs, 5 are L R C Ls Rs, otherwise L R C LFE Ls Rs (LFE left
/// out, surrounds at +1.5 dB) and anything past six left out.
fn channel_weights(channels: usize) -> Vec<f64> {
    const SURROUND: f64 = 1.41;
    match channels {
        4 => vec![1.0, 1.0, SURROUND, SURROUND],
        5 => vec![1.0, 1.0, 1.0, SURROUND, SURROUND],
        n => (0..n)
            .map(|c| match c {
                0..=2 => 1.0,
                4 | 5 => SURROUND,
                _ => 0.0,
            })
            .collect(),
    }
}

/// One filtering pass: the filter and what it produces.
struct Run {
    b: [f64; 5],
    a: [f64; 5],
    per_frame: Vec<f32>,
    per_100ms: Vec<f64>,
    keep_frames: bool,
    frames_per_100ms: usize,
}

impl Run {
    /// The end of each 100 ms: its sum kept (if it is whole), subnormals flushed from
    /// the filter `state`.
    fn end_block<'s>(&mut self, block: f64, whole: bool, state: impl Iterator<Item = &'s mut f64>) {
        if whole {
            self.per_100ms.push(block);
        }
        // Digital silence would decay the state into subnormals, which are slow;
        // what is flushed here is far below any gate.
        for v in state {
            if v.abs() < 1e-150 {
                *v = 0.0;
            }
        }
    }

    /// Filters the first `C` channels of frames `stride` samples long (the channels
    /// past `C` weigh nothing).
    fn filter<const C: usize>(&mut self, samples: &[f32], stride: usize, weights: &[f64]) {
        let (a, b) = (self.a, self.b);
        let w: [f64; C] = std::array::from_fn(|c| weights[c]);
        // State-major (`s[k][c]`): each step is the same operation on every channel,
        // which the compiler does as one vector operation.
        let mut s = [[0f64; C]; 5];
        for chunk in samples.chunks(stride * self.frames_per_100ms) {
            let mut block = 0f64;
            for frame in chunk.chunks_exact(stride) {
                // One bounds check per frame, not per channel.
                let frame: &[f32; C] = frame.first_chunk().expect("C ≤ stride");
                let mut sum = 0f64;
                for c in 0..C {
                    s[0][c] =
                        (f64::from(frame[c]) - a[2] * s[2][c] - a[3] * s[3][c] - a[4] * s[4][c])
                            - a[1] * s[1][c];
                    let y = b[0] * s[0][c]
                        + b[1] * s[1][c]
                        + b[2] * s[2][c]
                        + b[3] * s[3][c]
                        + b[4] * s[4][c];
                    s[4][c] = s[3][c];
                    s[3][c] = s[2][c];
                    s[2][c] = s[1][c];
                    s[1][c] = s[0][c];
                    sum += w[c] * y * y;
                }
                if self.keep_frames {
                    self.per_frame.push(sum as f32);
                }
                block += sum;
            }
            let whole = chunk.len() == stride * self.frames_per_100ms;
            self.end_block(block, whole, s.iter_mut().flatten());
        }
    }
}

/// The K-weighted energy of every frame of a piece of audio.
#[derive(Debug, Clone)]
pub struct WeightedEnergy {
    /// Σ over channels of weight × (K-filtered sample)², per frame.
    per_frame: Vec<f32>,
    /// The same summed exactly (in `f64`) per 100 ms, for the unmodified audio.
    per_100ms: Vec<f64>,
    frames_per_100ms: usize,
}

impl WeightedEnergy {
    /// Filters interleaved `samples` of `channels` at `rate`. `samples.len()` must be a
    /// multiple of `channels` (the caller checks the shape).
    pub fn of(samples: &[f32], channels: usize, rate: u32) -> Self {
        Self::filter(samples, channels, rate, true)
    }

    /// The integrated loudness of `samples` alone (nothing kept per frame).
    pub fn integrated_of(samples: &[f32], channels: usize, rate: u32) -> f64 {
        Self::filter(samples, channels, rate, false).integrated()
    }

    fn filter(samples: &[f32], channels: usize, rate: u32, keep_frames: bool) -> Self {
        // As the `ebur128` crate rounds it.
        let frames_per_100ms = ((rate as usize + 5) / 10).max(1);
        let frames = samples.len().checked_div(channels).unwrap_or(0);
        let (b, a) = coefficients(f64::from(rate));
        let weights = channel_weights(channels);
        let per_frame = Vec::with_capacity(if keep_frames { frames } else { 0 });
        let per_100ms = Vec::with_capacity(frames / frames_per_100ms);
        let mut run = Run {
            b,
            a,
            per_frame,
            per_100ms,
            keep_frames,
            frames_per_100ms,
        };
        // The channel count as a constant: the filter states then live in registers.
        // Past six channels only the first six weigh anything.
        match channels {
            0 => {}
            1 => run.filter::<1>(samples, channels, &weights),
            2 => run.filter::<2>(samples, channels, &weights),
            3 => run.filter::<3>(samples, channels, &weights),
            4 => run.filter::<4>(samples, channels, &weights),
            5 => run.filter::<5>(samples, channels, &weights),
            _ => run.filter::<6>(samples, channels, &weights),
        }
        let Run {
            per_frame,
            per_100ms,
            ..
        } = run;
        WeightedEnergy {
            per_frame,
            per_100ms,
            frames_per_100ms,
        }
    }

    pub fn frames(&self) -> usize {
        self.per_frame.len()
    }

    /// Integrated loudness (LUFS, `-inf` for silence) of the audio as it was given.
    pub fn integrated(&self) -> f64 {
        gated_loudness(&self.per_100ms, self.frames_per_100ms)
    }

    /// Integrated loudness of the audio scaled by `gain` (linear) and then frame by
    /// frame by `frame_gains` (one per frame), as the module doc describes.
    pub fn integrated_under(&self, gain: f64, frame_gains: &[f32]) -> f64 {
        assert_eq!(
            frame_gains.len(),
            self.per_frame.len(),
            "one gain per frame"
        );
        let mut per_100ms = Vec::with_capacity(self.per_100ms.len());
        self.sums_under(gain, 0, frame_gains, &mut per_100ms);
        self.integrated_of_sums(&per_100ms)
    }

    /// Frames per 100 ms: [`Self::sums_under`] takes gains in runs that start on a
    /// multiple of it.
    pub fn frames_per_100ms(&self) -> usize {
        self.frames_per_100ms
    }

    /// [`Self::integrated_under`] a run at a time: appends to `per_100ms` the energy
    /// of each whole 100 ms of frames `first_frame ..` under `gain` and `frame_gains`
    /// (the gains of those frames). `first_frame` is a multiple of
    /// [`Self::frames_per_100ms`], and only a file's last run may end within 100 ms
    /// (that part is left out, as the meter leaves it out).
    /// [`Self::integrated_of_sums`] turns all of them into the loudness.
    pub fn sums_under(
        &self,
        gain: f64,
        first_frame: usize,
        frame_gains: &[f32],
        per_100ms: &mut Vec<f64>,
    ) {
        let n = self.frames_per_100ms;
        assert_eq!(first_frame % n, 0, "runs start on a 100 ms boundary");
        let energy = &self.per_frame[first_frame..first_frame + frame_gains.len()];
        for (e, g) in energy.chunks_exact(n).zip(frame_gains.chunks_exact(n)) {
            // f32 products summed in lanes, then once into f64: a 100 ms sum of
            // 4,800 terms loses nothing a loudness figure shows.
            let sum: f32 = e
                .chunks_exact(8)
                .zip(g.chunks_exact(8))
                .fold([0f32; 8], |mut acc, (e, g)| {
                    for i in 0..8 {
                        acc[i] += e[i] * g[i] * g[i];
                    }
                    acc
                })
                .iter()
                .sum::<f32>()
                + e.chunks_exact(8)
                    .remainder()
                    .iter()
                    .zip(g.chunks_exact(8).remainder())
                    .map(|(e, g)| e * g * g)
                    .sum::<f32>();
            per_100ms.push(f64::from(sum) * gain * gain);
        }
    }

    /// The integrated loudness of the 100 ms energies [`Self::sums_under`] made.
    pub fn integrated_of_sums(&self, per_100ms: &[f64]) -> f64 {
        gated_loudness(per_100ms, self.frames_per_100ms)
    }
}

/// BS.1770 gating over 400 ms blocks made of four consecutive 100 ms sums (a block
/// every 100 ms, the first once 400 ms have passed, as the `ebur128` crate forms
/// them).
fn gated_loudness(per_100ms: &[f64], frames_per_100ms: usize) -> f64 {
    let block_frames = (4 * frames_per_100ms) as f64;
    let absolute = 10f64.powf((-70.0 + 0.691) / 10.0);
    let blocks = || {
        per_100ms
            .windows(4)
            .map(|w| (w[0] + w[1] + w[2] + w[3]) / block_frames)
            .filter(move |e| *e >= absolute)
    };
    let (count, sum) = blocks().fold((0u64, 0f64), |(n, s), e| (n + 1, s + e));
    if count == 0 {
        return f64::NEG_INFINITY;
    }
    let relative = sum / count as f64 * 10f64.powf(-10.0 / 10.0);
    let (count, sum) = blocks()
        .filter(|e| *e >= relative)
        .fold((0u64, 0f64), |(n, s), e| (n + 1, s + e));
    if count == 0 {
        return f64::NEG_INFINITY;
    }
    10.0 * (sum / count as f64).log10() - 0.691
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebur128::{EbuR128, Mode};

    fn crate_integrated(samples: &[f32], channels: usize, rate: u32) -> f64 {
        let mut m = EbuR128::new(channels as u32, rate, Mode::I).unwrap();
        m.add_frames_f32(samples).unwrap();
        m.loudness_global().unwrap()
    }

    /// Tones, noise and a quiet stretch, different per channel.
    fn music(frames: usize, channels: usize, rate: u32) -> Vec<f32> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..frames * channels)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                let (n, c) = (i / channels, i % channels);
                let t = n as f32 / rate as f32;
                let level = if (t % 4.0) < 1.0 { 0.02 } else { 0.3 };
                level * ((t * 220.0 * (c + 1) as f32 * std::f32::consts::TAU).sin() + 0.3 * noise)
            })
            .collect()
    }

    #[test]
    fn equals_the_ebur128_meter() {
        for (rate, channels) in [
            (48_000, 1),
            (48_000, 2),
            (44_100, 2),
            (48_000, 4),
            (48_000, 5),
            (48_000, 6),
            (48_000, 8),
        ] {
            let s = music(rate as usize * 7 + 1234, channels, rate);
            let ours = WeightedEnergy::of(&s, channels, rate).integrated();
            let theirs = crate_integrated(&s, channels, rate);
            assert!(
                (ours - theirs).abs() < 1e-9,
                "{rate} Hz × {channels}: {ours} against {theirs}"
            );
        }
    }

    #[test]
    fn silence_and_short_audio_read_minus_infinity() {
        assert_eq!(
            WeightedEnergy::of(&[0.0; 96_000], 2, 48_000).integrated(),
            f64::NEG_INFINITY
        );
        // Under one 400 ms block.
        let s = music(10_000, 1, 48_000);
        assert_eq!(
            WeightedEnergy::of(&s, 1, 48_000).integrated(),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn a_constant_gain_is_exact_and_a_limiters_gain_is_close() {
        let rate = 48_000;
        let s = music(rate as usize * 6, 2, rate);
        let energy = WeightedEnergy::of(&s, 2, rate);
        let ones = vec![1f32; energy.frames()];
        let half = energy.integrated_under(0.5, &ones);
        assert!(
            (half - (energy.integrated() - 20.0 * 2f64.log10())).abs() < 1e-4,
            "{half}"
        );
        // A gain that dips to −6 dB for 200 ms every second, with 5 ms ramps: what the
        // estimate reads against the meter on the audio actually turned down.
        let gains: Vec<f32> = (0..energy.frames())
            .map(|n| {
                let t = (n % rate as usize) as f32 / rate as f32;
                let ramp =
                    ((t - 0.4) / 0.005).clamp(0.0, 1.0) - ((t - 0.6) / 0.005).clamp(0.0, 1.0);
                1.0 - 0.5 * ramp
            })
            .collect();
        let turned: Vec<f32> = s
            .chunks_exact(2)
            .zip(&gains)
            .flat_map(|(f, g)| [f[0] * g, f[1] * g])
            .collect();
        let estimate = energy.integrated_under(1.0, &gains);
        let exact = crate_integrated(&turned, 2, rate);
        assert!(
            (estimate - exact).abs() < 0.02,
            "{estimate} against {exact}"
        );
        assert!(exact < energy.integrated() - 0.5, "the test turns it down");
    }

    #[test]
    fn sums_in_runs_equal_the_whole_and_runs_must_start_on_100ms() {
        // 44.1 kHz: 4,410 frames per 100 ms, and a tail shorter than that.
        let rate = 44_100;
        let s = music(rate as usize * 3 + 777, 2, rate);
        let energy = WeightedEnergy::of(&s, 2, rate);
        let gains: Vec<f32> = (0..energy.frames())
            .map(|n| 1.0 - 0.4 * ((n / 3_000) % 2) as f32)
            .collect();
        let whole = energy.integrated_under(0.7, &gains);
        let n = energy.frames_per_100ms();
        assert_eq!(n, 4_410);
        for run in [n, 3 * n, 100 * n] {
            let mut sums = Vec::new();
            for first in (0..gains.len()).step_by(run) {
                let end = (first + run).min(gains.len());
                energy.sums_under(0.7, first, &gains[first..end], &mut sums);
            }
            assert_eq!(sums.len(), 30, "whole 100 ms only");
            assert_eq!(energy.integrated_of_sums(&sums), whole, "runs of {run}");
        }
        let misaligned = std::panic::catch_unwind(|| {
            energy.sums_under(1.0, 7, &gains[7..n + 7], &mut Vec::new());
        });
        assert!(misaligned.is_err(), "a run off the 100 ms grid is refused");
    }
}
