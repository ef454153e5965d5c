//! Normalisation of generated fixtures: sine sweeps, speech-like noise, silence and
//! clipped input, mono and stereo, at both targets. Output loudness within ±0.5 LU
//! of the target and true peak at most −1 dBTP (the ebur128 meter), length kept.

use transcoder::{Target, measure, normalize};

const RATE: u32 = 48_000;

/// A deterministic pseudo-random source (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A logarithmic sweep 40 Hz → 16 kHz at `amp`.
fn sweep(secs: f64, amp: f32) -> Vec<f32> {
    let n = (secs * f64::from(RATE)) as usize;
    let (f0, f1) = (40f64, 16_000f64);
    let k = (f1 / f0).ln() / secs;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let phase = 2.0 * std::f64::consts::PI * f0 * ((k * t).exp() - 1.0) / k;
            amp * phase.sin() as f32
        })
        .collect()
}

/// Noise shaped like speech: low-passed, in syllable-length bursts with pauses.
fn speech_like(secs: f64, amp: f32, seed: u64) -> Vec<f32> {
    let n = (secs * f64::from(RATE)) as usize;
    let mut noise = Noise(seed);
    let mut lp = 0f32;
    (0..n)
        .map(|i| {
            lp += 0.15 * (noise.next() - lp);
            let t = i as f64 / f64::from(RATE);
            // ~4 syllables a second, a pause every 2 s.
            let env = ((2.0 * std::f64::consts::PI * 4.0 * t).sin().max(0.0)) as f32;
            let pause = if (t % 2.0) > 1.6 { 0.0 } else { 1.0 };
            amp * 3.0 * lp * env * pause
        })
        .collect()
}

/// A loud sine that was clipped hard (full-scale flat tops).
fn clipped(secs: f64) -> Vec<f32> {
    let n = (secs * f64::from(RATE)) as usize;
    (0..n)
        .map(|i| {
            (3.0 * (2.0 * std::f64::consts::PI * 220.0 * i as f64 / f64::from(RATE)).sin() as f32)
                .clamp(-1.0, 1.0)
        })
        .collect()
}

fn stereo(l: &[f32], r: &[f32]) -> Vec<f32> {
    l.iter().zip(r).flat_map(|(a, b)| [*a, *b]).collect()
}

fn check(name: &str, samples: &[f32], channels: usize, target: Target) {
    let (out, report) = normalize(samples, channels, RATE, target).unwrap();
    assert_eq!(out.len(), samples.len(), "{name}: length kept");
    let m = measure(&out, channels, RATE).unwrap();
    assert_eq!(m, report.output, "{name}: the report says what came out");
    assert!(
        (m.integrated_lufs - target.lufs).abs() <= 0.5,
        "{name}: {:.2} LUFS for a target of {} ({report:?})",
        m.integrated_lufs,
        target.lufs
    );
    assert!(
        m.true_peak_dbtp <= target.ceiling_dbtp,
        "{name}: true peak {:.2} dBTP over {} ({report:?})",
        m.true_peak_dbtp,
        target.ceiling_dbtp
    );
}

#[test]
fn quiet_and_loud_sweeps_reach_the_music_target() {
    check("quiet sweep", &sweep(8.0, 0.05), 1, Target::MUSIC);
    check("loud sweep", &sweep(8.0, 0.95), 1, Target::MUSIC);
    let s = sweep(8.0, 0.5);
    check("stereo sweep", &stereo(&s, &s), 2, Target::MUSIC);
}

#[test]
fn speech_reaches_the_podcast_target_and_peaks_are_limited_not_clipped() {
    let quiet = speech_like(12.0, 0.05, 7);
    check("quiet speech", &quiet, 1, Target::PODCAST);
    // Loud enough that reaching −16 LUFS needs the limiter.
    let (a, b) = (speech_like(12.0, 0.3, 11), speech_like(12.0, 0.3, 12));
    let st = stereo(&a, &b);
    check("stereo speech", &st, 2, Target::PODCAST);
    // Music loudness from speech needs real limiting: still within the ceiling.
    let (out, report) = normalize(&quiet, 1, RATE, Target::MUSIC).unwrap();
    assert!(report.limited_frames > 0, "{report:?}");
    let peak = out.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        peak < 10f32.powf(-1.0 / 20.0),
        "no sample reaches the ceiling: {peak}"
    );
    check("speech at the music target", &quiet, 1, Target::MUSIC);
}

#[test]
fn clipped_input_comes_out_under_the_ceiling() {
    check("clipped", &clipped(6.0), 1, Target::MUSIC);
    check("clipped, podcast", &clipped(6.0), 1, Target::PODCAST);
}

#[test]
fn silence_stays_silence() {
    let s = vec![0f32; 5 * RATE as usize];
    let (out, report) = normalize(&s, 1, RATE, Target::MUSIC).unwrap();
    assert_eq!(out, s);
    assert_eq!(report.gain_db, 0.0);
    assert_eq!(report.input.integrated_lufs, f64::NEG_INFINITY);
}
