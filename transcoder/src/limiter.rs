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

use crate::truepeak;

/// Frames either side of a frame whose detected peak also bounds its gain: covers
/// the interpolator's reach (the values around frame n see frames n − 5 ..= n + 6).
const SPREAD: usize = 8;

/// Frames of gain curve made at a time when the caller has no reason to choose:
/// the working buffers (a few of these) stay in a core's cache.
pub const CHUNK_FRAMES: usize = 16 * 1024;

/// Taken off the release's `1 - gain` each frame. Far under what moves a gain
/// (`1 - u` is exactly 1 in `f32` below 2⁻²⁵ ≈ 3e-8), far over the subnormals
/// (1.2e-38).
const RELEASE_FLOOR: f32 = 1e-30;

/// `a.min(b)` for values that are never NaN, as one instruction (`f32::min` also
/// handles NaN, which costs more on a dependency chain).
fn min(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

fn max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// The buffers [`TruePeakLimiter::gains_into`] works in. Gains of a long file are
/// large, and fresh pages cost more than the arithmetic on them, so a search keeps
/// these from try to try. The curve is computed a chunk at a time in `pre`, `suf`
/// and `released`, which stay in cache; only `gains` is as long as the audio.
#[derive(Debug, Default)]
pub struct GainScratch {
    pre: Vec<f32>,
    suf: Vec<f32>,
    released: Vec<f32>,
    gains: Vec<f32>,
}

impl GainScratch {
    /// Takes the gains of the last [`TruePeakLimiter::gains_into`] over `frames`
    /// frames out (the rest stays for the next search).
    pub fn take_gains(&mut self, frames: usize) -> Vec<f32> {
        self.gains.truncate(frames);
        std::mem::take(&mut self.gains)
    }
}

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

    /// Whether audio whose largest frame peak ([`Self::frame_peaks`]) is `peak_max`,
    /// scaled by `scale`, has any frame to turn down: when not, every gain is 1.
    pub fn limits(&self, peak_max: f32, scale: f32) -> bool {
        peak_max * scale > self.ceiling
    }

    /// The gain of each frame (≤ 1); frames that need none get exactly 1.
    pub fn gains(&self, samples: &[f32], channels: usize) -> Vec<f32> {
        self.gains_for_peaks(&Self::frame_peaks(samples, channels), 1.0)
    }

    /// The detected peak of each frame (4× oversampled, over the channels) of
    /// `samples`: what [`Self::gains_for_peaks`] takes.
    pub fn frame_peaks(samples: &[f32], channels: usize) -> Vec<f32> {
        let mut p = vec![0f32; samples.len().checked_div(channels).unwrap_or(0)];
        if channels > 0 {
            let _true_peak = truepeak::frame_peaks(samples, channels, &mut p);
        }
        p
    }

    /// [`Self::gains`] of the audio scaled by `scale`, from its unscaled frame peaks
    /// ([`Self::frame_peaks`]). The detector is linear, so the peaks of scaled audio
    /// are the scaled peaks: a search over gains detects once.
    pub fn gains_for_peaks(&self, peaks: &[f32], scale: f32) -> Vec<f32> {
        let mut scratch = GainScratch::default();
        self.gains_into(peaks, scale, CHUNK_FRAMES, &mut scratch, |_, _| {});
        scratch.take_gains(peaks.len())
    }

    /// [`Self::gains_for_peaks`] into `scratch`, whose buffers a search reuses from try
    /// to try; returns the gains (one per frame). The curve is made `chunk_frames` at
    /// a time (the result does not depend on it), and `each` sees every chunk's gains
    /// with its first frame as they are made, while they are still in cache: a
    /// search sums what it needs there instead of reading the whole curve again.
    pub fn gains_into<'s>(
        &self,
        peaks: &[f32],
        scale: f32,
        chunk_frames: usize,
        scratch: &'s mut GainScratch,
        mut each: impl FnMut(usize, &[f32]),
    ) -> &'s [f32] {
        let frames = peaks.len();
        let need = |p: &f32| {
            let p = p * scale;
            if p > self.ceiling {
                self.ceiling / p
            } else {
                1.0
            }
        };
        let chunk_frames = chunk_frames.clamp(1, frames.max(1));
        // hold[m] = min(need[m - SPREAD ..= m + lookahead + SPREAD]): the minimum of
        // `q[m .. m + w]`, `need` shifted by SPREAD and padded with 1 (which no
        // minimum of gains ≤ 1 sees), by van Herk / Gil-Werman within each chunk: with
        // running minima forwards (`pre`) and backwards (`suf`) within blocks as long
        // as the window, every window spans one block boundary and is the smaller of
        // two lookups. Branch-free passes instead of a deque per frame.
        let w = SPREAD + self.lookahead + SPREAD + 1;
        let l = self.lookahead;
        let GainScratch {
            pre,
            suf,
            released,
            gains,
        } = scratch;
        // Every frame is written below: a buffer of the right length is not filled.
        gains.truncate(frames);
        gains.resize(frames, 1.0);
        // `released` holds the look-ahead's last `l` released gains, then the chunk's.
        released.clear();
        released.resize(l + chunk_frames, 1.0);
        let mut u = 0f32;
        let mut first = 1f64;
        let mut sum = 0f64;
        for c0 in (0..frames).step_by(chunk_frames) {
            let n = chunk_frames.min(frames - c0);
            // q[c0 .. c0 + n + w - 1]: frame j holds need[j - SPREAD], 1 outside.
            let end = c0 + n + w - 1;
            let lead = SPREAD.saturating_sub(c0);
            let from = c0 + lead - SPREAD;
            let to = (end - SPREAD).min(frames);
            pre.clear();
            pre.resize(lead, 1.0);
            pre.extend(peaks[from..to].iter().map(need));
            pre.resize(end - c0, 1.0);
            suf.clear();
            suf.extend_from_slice(pre);
            for block in pre.chunks_mut(w) {
                let mut run = 1f32;
                for v in block {
                    run = min(run, *v);
                    *v = run;
                }
            }
            for block in suf.chunks_mut(w) {
                let mut run = 1f32;
                for v in block.iter_mut().rev() {
                    run = min(run, *v);
                    *v = run;
                }
            }
            // Release: back toward 1 exponentially, never above the hold. Kept as
            // the reduction `u = 1 - gain`, which releases as `u·r` (one multiply and
            // one max per frame on the dependency chain). Less `RELEASE_FLOOR`, so a
            // long unlimited stretch takes `u` to 0 instead of through subnormal
            // numbers, which cost some CPUs a hundred cycles a multiply.
            for s in 0..n {
                let hold = min(suf[s], pre[s + w - 1]);
                u = max(1.0 - hold, u * self.release - RELEASE_FLOOR);
                debug_assert!(u == 0.0 || u.is_normal(), "subnormal release {u:e}");
                released[l + s] = 1.0 - u;
            }
            if c0 == 0 {
                first = f64::from(released[l]);
            }
            // Attack: moving average over the look-ahead (each window holds this
            // frame); before a full window, the missing frames count as the first
            // one's value.
            let out = &mut gains[c0..c0 + n];
            for (s, g) in out.iter_mut().enumerate() {
                let i = c0 + s;
                if i < l {
                    sum += f64::from(released[l + s]);
                    *g = ((sum + (l - i - 1) as f64 * first) / l as f64) as f32;
                } else {
                    sum += f64::from(released[l + s]) - f64::from(released[s]);
                    *g = (sum / l as f64) as f32;
                }
            }
            each(c0, out);
            released.copy_within(n..n + l, 0);
        }
        gains
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
    use std::collections::VecDeque;
    /// The gains as first written: a monotone deque for the hold, the release as
    /// `min(hold, 1 - (1 - prev)·r)`.
    fn reference_gains(l: &TruePeakLimiter, peaks: &[f32]) -> Vec<f32> {
        let frames = peaks.len();
        let need: Vec<f32> = peaks
            .iter()
            .map(|p| if *p > l.ceiling { l.ceiling / p } else { 1.0 })
            .collect();
        let (back, ahead) = (SPREAD, l.lookahead + SPREAD);
        let mut hold = vec![1f32; frames];
        let mut q: VecDeque<usize> = VecDeque::new();
        let mut next = 0usize;
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
        let mut prev = 1f32;
        for h in hold.iter_mut() {
            prev = h.min(1.0 - (1.0 - prev) * l.release);
            *h = prev;
        }
        let n = l.lookahead;
        (0..frames)
            .map(|i| {
                let from = i as isize - n as isize + 1;
                let sum: f64 = (from..=i as isize)
                    .map(|k| f64::from(hold[k.max(0) as usize]))
                    .sum();
                (sum / n as f64) as f32
            })
            .collect()
    }

    #[test]
    fn gains_equal_the_reference_and_scale_with_the_peaks() {
        // Bursts of peaks over the ceiling, short and long, near the edges too.
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut peaks: Vec<f32> = (0..50_000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let r = (state >> 40) as f32 / (1u64 << 24) as f32;
                let loud = (i / 3_000) % 3 == 0 || !(50..=49_990).contains(&i);
                if loud { 0.5 + r } else { 0.5 * r }
            })
            .collect();
        let l = TruePeakLimiter::new(-1.0, 48_000);
        let ours = l.gains_for_peaks(&peaks, 1.0);
        let reference = reference_gains(&l, &peaks);
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Rounding only: the reference releases `1 - prev`, which near 1 keeps few
        // bits; 1e-4 of gain is 0.001 dB.
        assert!(worst < 1e-4, "{worst}");
        assert!(ours.iter().any(|g| *g < 0.8), "the test limits");
        // Scaled peaks: the same as the peaks scaled beforehand.
        let doubled = l.gains_for_peaks(&peaks, 2.0);
        peaks.iter_mut().for_each(|p| *p *= 2.0);
        assert_eq!(doubled, l.gains_for_peaks(&peaks, 1.0));
        // Short inputs, under one window.
        for n in [1, 7, 300] {
            let p = vec![2f32; n];
            let ours = l.gains_for_peaks(&p, 1.0);
            let reference = reference_gains(&l, &p);
            assert!(
                ours.iter()
                    .zip(&reference)
                    .all(|(a, b)| (a - b).abs() < 1e-4)
            );
        }
    }

    #[test]
    fn the_curve_does_not_depend_on_the_chunk_and_each_chunk_is_seen_once_in_order() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let peaks: Vec<f32> = (0..20_011)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let r = (state >> 40) as f32 / (1u64 << 24) as f32;
                if (i / 1_700) % 2 == 0 {
                    0.6 + r
                } else {
                    0.4 * r
                }
            })
            .collect();
        let l = TruePeakLimiter::new(-1.0, 48_000);
        // One chunk for the whole input: the curve as one pass over all of it.
        let mut scratch = GainScratch::default();
        let whole = l
            .gains_into(&peaks, 1.0, peaks.len(), &mut scratch, |_, _| {})
            .to_vec();
        assert!(whole.iter().any(|g| *g < 0.8), "the test limits");
        let peak_max = peaks.iter().fold(0f32, |m, p| m.max(*p));
        assert!(l.limits(peak_max, 1.0) && !l.limits(peak_max, 0.5));
        assert!(l.gains_for_peaks(&peaks, 0.5).iter().all(|g| *g == 1.0));
        // Under the look-ahead (240 frames), at it, past it, and over the input.
        for chunk in [1, 7, 239, 240, 241, 1_000, 4_800, 20_011, 50_000] {
            let mut scratch = GainScratch::default();
            let mut seen = Vec::new();
            let mut next = 0;
            let gains = l.gains_into(&peaks, 1.0, chunk, &mut scratch, |first, g| {
                assert_eq!(first, next, "chunk {chunk}: in order, none skipped");
                assert!(g.len() <= chunk);
                next += g.len();
                seen.extend_from_slice(g);
            });
            assert_eq!(gains, &whole[..], "chunk {chunk}");
            assert_eq!(seen, whole, "chunk {chunk}: each saw the gains returned");
        }
        // A scratch reused for a shorter input returns only that input's gains.
        let mut scratch = GainScratch::default();
        l.gains_into(&peaks, 1.0, 1_000, &mut scratch, |_, _| {});
        let short = l.gains_into(&peaks[..500], 1.0, 1_000, &mut scratch, |_, _| {});
        assert_eq!(short, &l.gains_for_peaks(&peaks[..500], 1.0)[..]);
    }

    #[test]
    fn a_long_quiet_stretch_releases_to_exactly_one_without_subnormals() {
        // Half a second over the ceiling, then 10 s under it: the release's `1 - gain`
        // would pass through subnormal numbers after about 7 s (the loop's debug
        // assertion fails then: this test guards it in the test profile, not in a
        // release build), and the gain is exactly 1 long before.
        let rate = 48_000;
        let mut peaks = vec![2f32; rate / 2];
        peaks.resize(rate / 2 + 10 * rate, 0.1);
        let g = TruePeakLimiter::new(-1.0, rate as u32).gains_for_peaks(&peaks, 1.0);
        assert!(g[rate / 4] < 0.5, "limited: {}", g[rate / 4]);
        let back = g.iter().rposition(|x| *x < 1.0).expect("limited") + 1;
        assert!(
            back < 3 * rate,
            "released within 2.5 s of the burst: {back}"
        );
        assert!(g[back..].iter().all(|x| *x == 1.0));
        assert!(g[rate / 2..back].windows(2).all(|w| w[0] <= w[1]), "rises");
    }

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
