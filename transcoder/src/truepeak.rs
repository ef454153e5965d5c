//! True peak by 4× polyphase interpolation (ITU-R BS.1770 Annex 2), shared by the
//! meter and the limiter so that the peaks the limiter holds down are exactly the
//! ones the meter reads.
//!
//! The filter is the `ebur128` crate's (libebur128's): a 48-tap Hann-windowed sinc in
//! four phases of 12 taps, phase `f` at output `m` being `Σₜ h[4t + f]·x[m − t]`.
//! Each output is accumulated in `f32` in the same tap order as that crate, so
//! [`channel_peak`] equals its `true_peak` bit for bit, at a fraction of the cost:
//! here the inner loop runs over a block of outputs for one tap (no ring buffer, no
//! bounds check per tap), which the compiler turns into vector multiply-adds, and
//! long inputs are split over the machine's cores.

use std::f64::consts::PI;

pub const PHASES: usize = 4;
pub const TAPS_PER_PHASE: usize = 12;
/// Phase 0 is the input delayed by this many frames: the interpolated values around
/// frame `n` are the outputs at `n + DELAY`.
pub const DELAY: usize = 6;
/// Outputs computed per pass over the taps: small enough to stay in L1.
const BLOCK: usize = 2048;
/// Outputs computed together, their phases' sums held in registers.
const LANES: usize = 8;
/// Inputs shorter than this many frames are not worth a thread.
const PARALLEL_MIN_FRAMES: usize = 1 << 16;

/// `h[f][t]` = the coefficient of `x[m − t]` in phase `f`.
pub fn coefficients() -> [[f32; TAPS_PER_PHASE]; PHASES] {
    let taps = (PHASES * TAPS_PER_PHASE) as f64;
    let mut h = [[0f32; TAPS_PER_PHASE]; PHASES];
    for t in 0..TAPS_PER_PHASE {
        for (f, phase) in h.iter_mut().enumerate() {
            let j = (t * PHASES + f) as f64;
            let w = 0.5 * (1.0 - (2.0 * PI * j / taps).cos());
            let m = j - taps / 2.0;
            phase[t] = if m.abs() > 1e-6 {
                w * (m * PI / PHASES as f64).sin() / (m * PI / PHASES as f64)
            } else {
                w
            } as f32;
        }
    }
    h
}

/// For the outputs `m` in `range` of channel `c` of interleaved `samples`, calls
/// `each(m0, peaks)` with `peaks[i]` = the largest `|y_f(m0 + i)|` over the phases.
/// Outputs past the input's end see silence after it (the filter's tail).
fn scan(
    samples: &[f32],
    channels: usize,
    c: usize,
    range: std::ops::Range<usize>,
    h: &[[f32; TAPS_PER_PHASE]; PHASES],
    mut each: impl FnMut(usize, &[f32]),
) {
    const HISTORY: usize = TAPS_PER_PHASE - 1;
    let frames = samples.len() / channels;
    // window[k] = x[m0 − HISTORY + k], silence outside the input.
    let mut window = vec![0f32; BLOCK + HISTORY];
    let mut peaks = vec![0f32; BLOCK];
    let mut m0 = range.start;
    while m0 < range.end {
        let b = BLOCK.min(range.end - m0);
        for (k, w) in window[..b + HISTORY].iter_mut().enumerate() {
            let n = (m0 + k).wrapping_sub(HISTORY);
            *w = if n < frames {
                samples[n * channels + c]
            } else {
                0.0
            };
        }
        let peaks = &mut peaks[..b];
        // Outputs in groups of LANES: the four phases' sums of a group stay in
        // registers across the taps, and each input is loaded once for all four
        // phases. Each sum still adds its taps in order from 0, as the crate does.
        for (group, out) in peaks.chunks_mut(LANES).enumerate() {
            let i = group * LANES;
            if let Ok(out) = <&mut [f32; LANES]>::try_from(&mut *out) {
                let mut acc = [[0f32; LANES]; PHASES];
                for t in 0..TAPS_PER_PHASE {
                    let x: &[f32; LANES] = window[HISTORY - t + i..HISTORY - t + i + LANES]
                        .try_into()
                        .expect("LANES inputs");
                    for (sums, phase) in acc.iter_mut().zip(h) {
                        for (a, &s) in sums.iter_mut().zip(x) {
                            *a += s * phase[t];
                        }
                    }
                }
                for (k, o) in out.iter_mut().enumerate() {
                    *o = acc.iter().fold(0f32, |p, sums| p.max(sums[k].abs()));
                }
            } else {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = h.iter().fold(0f32, |p, phase| {
                        let mut a = 0f32;
                        for (t, &coeff) in phase.iter().enumerate() {
                            a += window[HISTORY - t + i + k] * coeff;
                        }
                        p.max(a.abs())
                    });
                }
            }
        }
        each(m0, peaks);
        m0 += b;
    }
}

/// A linear peak in dBTP (silence reads −240 dB, not −∞).
pub fn dbtp(peak: f32) -> f64 {
    20.0 * f64::from(peak).max(1e-12).log10()
}

/// Splits `0..len` into one range per available core (one range when short).
fn ranges(len: usize) -> Vec<std::ops::Range<usize>> {
    let threads = if len < PARALLEL_MIN_FRAMES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let step = len.div_ceil(threads).max(1);
    (0..len)
        .step_by(step)
        .map(|s| s..(s + step).min(len))
        .collect()
}

/// The true peak (linear) of channel `c` of interleaved `samples`: the largest
/// interpolated value over the outputs the input produces, or the largest sample if
/// that is larger, as the `ebur128` crate reports it.
pub fn channel_peak(samples: &[f32], channels: usize, c: usize) -> f32 {
    let frames = samples.len() / channels;
    let h = coefficients();
    let part = |r: std::ops::Range<usize>| {
        let mut m = 0f32;
        for n in r.clone() {
            m = m.max(samples[n * channels + c].abs());
        }
        scan(samples, channels, c, r, &h, |_, p| {
            m = p.iter().fold(m, |a, &b| a.max(b));
        });
        m
    };
    let parts = ranges(frames);
    if parts.len() <= 1 {
        return part(0..frames);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|r| {
                let part = &part;
                s.spawn(move || part(r))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .fold(0f32, f32::max)
    })
}

/// The detected peak around each frame, over the channels: `out[n]` = the largest of
/// `|x[n]|` and the interpolated values at outputs `n + DELAY` (which see the
/// samples `n − 5 ..= n + 6`). `out` has one entry per frame. Returns the true peak
/// over the channels, the largest [`channel_peak`], found in the same scan.
pub fn frame_peaks(samples: &[f32], channels: usize, out: &mut [f32]) -> f32 {
    let frames = samples.len() / channels;
    assert_eq!(out.len(), frames, "one peak per frame");
    let h = coefficients();
    let fill = |start: usize, out: &mut [f32]| -> f32 {
        for (i, o) in out.iter_mut().enumerate() {
            let n = start + i;
            *o = samples[n * channels..(n + 1) * channels]
                .iter()
                .fold(0f32, |m, s| m.max(s.abs()));
        }
        let mut true_peak = out.iter().fold(0f32, |m, &v| m.max(v));
        // The true peak also reads the outputs before the first frame's (the
        // filter filling), which no frame's peak covers.
        let from = if start == 0 { 0 } else { start + DELAY };
        let range = from..start + out.len() + DELAY;
        for c in 0..channels {
            scan(samples, channels, c, range.clone(), &h, |m0, p| {
                // Outputs m0..m0 + p.len(): those under `frames` count for the true
                // peak (the tail past the end does not), those from the first
                // frame's on go to the frames.
                let tp_end = frames.saturating_sub(m0).min(p.len());
                true_peak = p[..tp_end].iter().fold(true_peak, |a, &b| a.max(b));
                let skip = (start + DELAY).saturating_sub(m0).min(p.len());
                let from = m0 + skip - DELAY - start;
                for (o, &v) in out[from..from + p.len() - skip].iter_mut().zip(&p[skip..]) {
                    *o = o.max(v);
                }
            });
        }
        true_peak
    };
    let parts = ranges(frames);
    if parts.len() <= 1 {
        return fill(0, out);
    }
    std::thread::scope(|s| {
        let mut rest = &mut out[..];
        let mut handles = Vec::new();
        for r in parts {
            let (mine, tail) = rest.split_at_mut(r.len());
            rest = tail;
            let fill = &fill;
            handles.push(s.spawn(move || fill(r.start, mine)));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .fold(0f32, f32::max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebur128::{EbuR128, Mode};

    fn meter_peak(samples: &[f32], channels: usize, c: usize) -> f64 {
        let mut m = EbuR128::new(channels as u32, 48_000, Mode::TRUE_PEAK).unwrap();
        m.add_frames_f32(samples).unwrap();
        m.true_peak(c as u32).unwrap()
    }

    /// A deterministic noise-and-tones test signal.
    fn signal(frames: usize, channels: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..frames * channels)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let noise = (state as f32 / u32::MAX as f32) * 2.0 - 1.0;
                let t = (i / channels) as f32;
                0.4 * noise + 0.5 * (t * 0.9 + i as f32 % 2.0).sin()
            })
            .collect()
    }

    #[test]
    fn equals_the_ebur128_meter_bit_for_bit() {
        // Short (under one tap span), one block, several blocks, and long enough to
        // be split over threads.
        for (frames, channels) in [(5, 1), (700, 2), (5_000, 1), (150_000, 2)] {
            let s = signal(frames, channels, frames as u32);
            for c in 0..channels {
                let ours = f64::from(channel_peak(&s, channels, c));
                assert_eq!(
                    ours,
                    meter_peak(&s, channels, c),
                    "{frames} frames, channel {c}"
                );
            }
            let mut p = vec![0f32; frames];
            let over_channels = (0..channels)
                .map(|c| meter_peak(&s, channels, c))
                .fold(0f64, f64::max);
            assert_eq!(
                f64::from(frame_peaks(&s, channels, &mut p)),
                over_channels,
                "{frames} frames: frame_peaks' true peak"
            );
        }
    }

    #[test]
    fn a_peak_between_samples_is_found_and_frame_peaks_cover_it() {
        // fs/4 at 45°: every sample is 0.707 of the true peak of 1.
        let s: Vec<f32> = (0..4_000)
            .map(|i| (PI / 2.0 * i as f64 + PI / 4.0).sin() as f32)
            .collect();
        let sample_peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(sample_peak < 0.71);
        let tp = channel_peak(&s, 1, 0);
        assert!((tp - 1.0).abs() < 0.02, "{tp}");
        let mut p = vec![0f32; s.len()];
        assert_eq!(
            frame_peaks(&s, 1, &mut p),
            tp,
            "the same scan reads the true peak"
        );
        // The peak of 1 lies between every other pair of samples (+0.707, +0.707 or
        // −0.707, −0.707): away from the edges, one frame of every two finds it, and
        // the frames between the pairs that cross zero see the samples' 0.707.
        for pair in p[100..3_900].chunks(2) {
            let (hi, lo) = (pair[0].max(pair[1]), pair[0].min(pair[1]));
            assert!((hi - 1.0).abs() < 0.01, "{pair:?}");
            assert!((lo - sample_peak).abs() < 0.01, "{pair:?}");
        }
        // The per-frame peaks hold everything the meter reads.
        assert!(p.iter().fold(0f32, |m, &v| m.max(v)) >= tp);
    }

    #[test]
    fn frame_peaks_split_over_threads_equal_one_pass() {
        let s = signal(200_000, 2, 7);
        let mut whole = vec![0f32; 200_000];
        let true_peak = frame_peaks(&s, 2, &mut whole);
        assert_eq!(
            true_peak,
            channel_peak(&s, 2, 0).max(channel_peak(&s, 2, 1))
        );
        // The reference: one range, in this thread.
        let h = coefficients();
        let mut one = vec![0f32; 200_000];
        for (n, o) in one.iter_mut().enumerate() {
            *o = s[2 * n].abs().max(s[2 * n + 1].abs());
        }
        for c in 0..2 {
            scan(&s, 2, c, DELAY..200_000 + DELAY, &h, |m0, p| {
                for (i, &v) in p.iter().enumerate() {
                    let n = m0 + i - DELAY;
                    one[n] = one[n].max(v);
                }
            });
        }
        assert_eq!(whole, one);
    }
}
