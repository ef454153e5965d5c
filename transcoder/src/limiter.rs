//! A look-ahead true-peak limiter, applied to a whole buffer.
//!
//! Peaks are detected 4× oversampled by [`crate::truepeak`], the meter's own
//! interpolator, so peaks between samples count and the limiter holds down exactly
//! what the meter reads. Each frame gets the gain its neighbourhood's peak allows
//! (`ceiling / peak`, at most 1); that requirement is held for the look-ahead and a
//! little either side, released exponentially, and smoothed by a moving average as
//! long as the look-ahead. Every frame's gain is then an average of values no larger
//! than its own requirement: the output never exceeds the ceiling and the gain moves
//! smoothly (no clipping, no steps).

use std::collections::VecDeque;

use crate::truepeak;

/// Frames either side of a frame whose detected peak also bounds its gain: covers
/// the interpolator's reach (the values around frame n see frames n − 5 ..= n + 6).
const SPREAD: usize = 8;

#[derive(Debug, Clone)]
pub struct TruePeakLimiter {
    /// Linear ceiling.
    ceiling: f32,
    /// Look-ahead (= attack) in frames.
    lookahead: usize,
    /// Per-frame release coefficient.
    release: f32,
}

impl TruePeakLimiter {
    /// A limiter to `ceiling_dbtp`, with 5 ms look-ahead and 80 ms release.
    pub fn new(ceiling_dbtp: f64, rate: u32) -> Self {
        Self::with_times(ceiling_dbtp, rate, 0.005, 0.080)
    }

    pub fn with_times(ceiling_dbtp: f64, rate: u32, lookahead_s: f64, release_s: f64) -> Self {
        let rate = f64::from(rate.max(1));
        TruePeakLimiter {
            ceiling: 10f64.powf(ceiling_dbtp / 20.0) as f32,
            lookahead: ((lookahead_s * rate).round() as usize).max(1),
            release: (-1.0 / (release_s * rate)).exp() as f32,
        }
    }

    /// The detected (4× oversampled) peak of each frame, over the channels.
    fn peaks(&self, samples: &[f32], channels: usize) -> Vec<f32> {
        let mut p = vec![0f32; samples.len() / channels];
        truepeak::frame_peaks(samples, channels, &mut p);
        p
    }

    /// The gain of each frame (≤ 1); frames that need none get exactly 1.
    pub fn gains(&self, samples: &[f32], channels: usize) -> Vec<f32> {
        let peaks = self.peaks(samples, channels);
        let frames = peaks.len();
        let need: Vec<f32> = peaks
            .iter()
            .map(|p| {
                if *p > self.ceiling {
                    self.ceiling / p
                } else {
                    1.0
                }
            })
            .collect();
        // hold[m] = min(need[m - SPREAD ..= m + lookahead + SPREAD]), by a monotone deque.
        let (back, ahead) = (SPREAD, self.lookahead + SPREAD);
        let mut hold = vec![1f32; frames];
        let mut q: VecDeque<usize> = VecDeque::new();
        let mut next = 0usize; // next index to enter the window
        for (m, h) in hold.iter_mut().enumerate() {
            let hi = (m + ahead).min(frames.saturating_sub(1));
            while next <= hi && next < frames {
                while q.back().is_some_and(|&b| need[b] >= need[next]) {
                    q.pop_back();
                }
                q.push_back(next);
                next += 1;
            }
            let lo = m.saturating_sub(back);
            while q.front().is_some_and(|&f| f < lo) {
                q.pop_front();
            }
            *h = q.front().map_or(1.0, |&f| need[f]);
        }
        // Release: back toward 1 exponentially, never above the hold.
        let mut prev = 1f32;
        for h in hold.iter_mut() {
            let released = 1.0 - (1.0 - prev) * self.release;
            prev = h.min(released);
            *h = prev;
        }
        // Attack: moving average over the look-ahead (each window holds this frame).
        let l = self.lookahead;
        let mut out = vec![1f32; frames];
        let mut sum = 0f64;
        for i in 0..frames {
            sum += f64::from(hold[i]);
            if i >= l {
                sum -= f64::from(hold[i - l]);
            }
            let n = (i + 1).min(l);
            // Before a full window, the missing frames count as the first one's value.
            let missing = l - n;
            out[i] = ((sum + missing as f64 * f64::from(hold[0])) / l as f64) as f32;
        }
        out
    }

    /// Limits `samples` in place; returns how many frames it turned down.
    pub fn process(&self, samples: &mut [f32], channels: usize) -> usize {
        if channels == 0 {
            return 0;
        }
        let gains = self.gains(samples, channels);
        let mut limited = 0;
        for (frame, g) in samples.chunks_mut(channels).zip(&gains) {
            if *g < 1.0 {
                limited += 1;
                for s in frame {
                    *s *= g;
                }
            }
        }
        limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loudness::measure;

    #[test]
    fn quiet_audio_is_left_alone() {
        let l = TruePeakLimiter::new(-1.0, 48_000);
        let mut s: Vec<f32> = (0..48_000).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        let before = s.clone();
        assert_eq!(l.process(&mut s, 1), 0);
        assert_eq!(s, before);
    }

    #[test]
    fn peaks_between_samples_are_caught() {
        // fs/4 at a 45° phase: every sample is at 0.707 of the true peak.
        let rate = 48_000;
        let mut s: Vec<f32> = (0..rate * 2)
            .map(|i| {
                (std::f64::consts::FRAC_PI_2 * i as f64 + std::f64::consts::FRAC_PI_4).sin() as f32
            })
            .collect();
        let sample_peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(sample_peak < 0.71);
        let before = measure(&s, 1, rate).unwrap();
        assert!(before.true_peak_dbtp > -0.5, "{before:?}");
        TruePeakLimiter::new(-1.0, rate).process(&mut s, 1);
        // At the ceiling: the limiter detects with the meter's interpolator (the
        // gain's smoothing between detected frames leaves a hair either way).
        let after = measure(&s, 1, rate).unwrap();
        assert!(after.true_peak_dbtp <= -1.0 + 0.01, "{after:?}");
        assert!(
            after.true_peak_dbtp >= -1.3,
            "limited, not crushed: {after:?}"
        );
    }

    #[test]
    fn gain_never_exceeds_what_each_frame_needs_and_recovers() {
        let rate = 48_000;
        // Quiet, one loud burst, quiet again.
        let mut s = vec![0.1f32; rate as usize];
        for (i, x) in s.iter_mut().enumerate().skip(20_000).take(2_000) {
            *x = 2.0 * (i as f32 * 0.3).sin();
        }
        let l = TruePeakLimiter::new(-1.0, rate);
        let g = l.gains(&s, 1);
        let ceiling = 10f32.powf(-1.0 / 20.0);
        for (x, gi) in s.iter().zip(&g) {
            assert!((x * gi).abs() <= ceiling * 1.0001);
        }
        // Well before the burst and long after it, no gain change.
        assert_eq!(g[10_000], 1.0);
        assert!(
            g[rate as usize - 1] > 0.999,
            "released by the end: {}",
            g[rate as usize - 1]
        );
        // The gain is smooth: no step larger than the attack allows.
        let steepest = g
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0f32, f32::max);
        assert!(steepest < 0.05, "{steepest}");
    }
}
