//! EBU R128 loudness of interleaved PCM: integrated loudness from
//! [`crate::kweighting`], true peak from [`crate::truepeak`] — both read as the
//! `ebur128` crate's meter (tested), computed faster; that meter itself measures at
//! 96 kHz and up.

use ebur128::{EbuR128, Mode};

use crate::TranscodeError;
use crate::kweighting::WeightedEnergy;
use crate::truepeak;

/// Integrated loudness and true peak of a piece of audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loudness {
    /// LUFS; `-inf` for silence (no block above the absolute gate).
    pub integrated_lufs: f64,
    /// dBTP, the highest over the channels (4× oversampled below 96 kHz).
    pub true_peak_dbtp: f64,
}

/// Measures interleaved `samples` of `channels` at `rate`. Mono counts as one channel
/// (BS.1770 and FFmpeg's `ebur128` default; as dual mono it would read 3 dB louder).
/// Below 96 kHz the true peak is [`truepeak::channel_peak`] (the meter's own
/// interpolator, equal to its reading), computed beside the integrated loudness.
pub fn measure(samples: &[f32], channels: usize, rate: u32) -> Result<Loudness, TranscodeError> {
    check_shape(samples, channels)?;
    if rate >= 96_000 {
        return measure_with_meter(samples, channels, rate);
    }
    let (integrated_lufs, true_peak_dbtp) = std::thread::scope(|s| {
        let loudness = s.spawn(|| integrated(samples, channels, rate));
        let peak = true_peak_dbtp(samples, channels);
        let loudness = loudness
            .join()
            .unwrap_or_else(|_| Err(TranscodeError::Meter("the meter panicked".into())));
        (loudness, peak)
    });
    Ok(Loudness {
        integrated_lufs: integrated_lufs?,
        true_peak_dbtp,
    })
}

/// The true peak (dBTP) over the channels of interleaved `samples`, by
/// [`truepeak::channel_peak`] (below 96 kHz, as the meter reads it).
pub fn true_peak_dbtp(samples: &[f32], channels: usize) -> f64 {
    let peak = (0..channels)
        .map(|c| truepeak::channel_peak(samples, channels, c))
        .fold(0f32, f32::max);
    truepeak::dbtp(peak)
}

pub(crate) fn check_shape(samples: &[f32], channels: usize) -> Result<(), TranscodeError> {
    if channels == 0 || !samples.len().is_multiple_of(channels) {
        return Err(TranscodeError::BadAudio(format!(
            "{} samples do not split into {channels} channels",
            samples.len()
        )));
    }
    Ok(())
}

/// Both figures from the `ebur128` meter (it oversamples 2× at 96 kHz and up).
fn measure_with_meter(
    samples: &[f32],
    channels: usize,
    rate: u32,
) -> Result<Loudness, TranscodeError> {
    let meter_err = |e: ebur128::Error| TranscodeError::Meter(format!("{e:?}"));
    let mut m =
        EbuR128::new(channels as u32, rate, Mode::I | Mode::TRUE_PEAK).map_err(meter_err)?;
    // In blocks, so the meter's internal buffers stay small.
    for block in samples.chunks(channels * rate as usize) {
        m.add_frames_f32(block).map_err(meter_err)?;
    }
    let integrated_lufs = m.loudness_global().map_err(meter_err)?;
    let mut peak = 0f64;
    for c in 0..channels as u32 {
        peak = peak.max(m.true_peak(c).map_err(meter_err)?);
    }
    Ok(Loudness {
        integrated_lufs: if integrated_lufs.is_nan() {
            f64::NEG_INFINITY
        } else {
            integrated_lufs
        },
        true_peak_dbtp: 20.0 * peak.max(1e-12).log10(),
    })
}

/// Integrated loudness alone (LUFS, `-inf` for silence): what a gain search needs,
/// without the cost of the true-peak scan. Computed by [`crate::kweighting`], which
/// reads as the `ebur128` meter (tested) in one pass over the audio.
pub fn integrated(samples: &[f32], channels: usize, rate: u32) -> Result<f64, TranscodeError> {
    check_shape(samples, channels)?;
    Ok(WeightedEnergy::integrated_of(samples, channels, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amp: f32, secs: f64, rate: u32) -> Vec<f32> {
        (0..(secs * f64::from(rate)) as usize)
            .map(|i| {
                amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32
            })
            .collect()
    }

    #[test]
    fn a_full_scale_1k_sine_reads_as_the_standard_says() {
        // EBU Tech 3341: a 1 kHz sine at 0 dBFS on one channel of stereo is −3.01 LUFS.
        let s = sine(1000.0, 1.0, 5.0, 48_000);
        let stereo: Vec<f32> = s.iter().flat_map(|x| [*x, 0.0]).collect();
        let l = measure(&stereo, 2, 48_000).unwrap();
        assert!((l.integrated_lufs + 3.01).abs() < 0.05, "{l:?}");
        assert!(l.true_peak_dbtp.abs() < 0.1, "{l:?}");
    }

    #[test]
    fn silence_is_minus_infinity_and_bad_shapes_are_refused() {
        let l = measure(&vec![0.0; 96_000], 2, 48_000).unwrap();
        assert_eq!(l.integrated_lufs, f64::NEG_INFINITY);
        assert!(measure(&[0.0; 3], 2, 48_000).is_err());
        assert!(measure(&[], 0, 48_000).is_err());
    }

    #[test]
    fn reads_as_the_ebur128_meter_at_every_rate() {
        // 44.1 and 48 kHz take our interpolator, 96 kHz the meter's 2× one: the
        // same figures either way.
        for rate in [44_100, 48_000, 96_000] {
            let s: Vec<f32> = sine(997.0, 0.8, 3.0, rate)
                .iter()
                .zip(sine(3_001.0, 0.15, 3.0, rate))
                .flat_map(|(a, b)| [*a + b, *a - b])
                .collect();
            let ours = measure(&s, 2, rate).unwrap();
            let meter = measure_with_meter(&s, 2, rate).unwrap();
            assert_eq!(ours.true_peak_dbtp, meter.true_peak_dbtp, "{rate} Hz");
            assert!(
                (ours.integrated_lufs - meter.integrated_lufs).abs() < 1e-9,
                "{rate} Hz: {ours:?} against {meter:?}"
            );
        }
    }
}
