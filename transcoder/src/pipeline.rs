//! One file from the command line or a job: decode → 48 kHz → normalise → Opus in Ogg,
//! plus its waveform.

use std::path::Path;

use crate::TranscodeError;
use crate::decode::decode_file;
use crate::encode::{default_bitrate, normalize_to_opus};
use crate::normalize::{NormalizeReport, Target};
use crate::resample::to_48k;
use crate::waveform::{Peaks, peaks};

#[derive(Debug, Clone)]
pub struct TranscodeOptions {
    pub target: Target,
    /// Opus bitrate; `None`: 96 kb/s stereo, 64 kb/s mono.
    pub bitrate: Option<i32>,
    pub waveform_buckets: usize,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        TranscodeOptions {
            target: Target::MUSIC,
            bitrate: None,
            waveform_buckets: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TranscodeReport {
    pub input_codec: String,
    pub input_rate: u32,
    pub channels: usize,
    pub duration_ms: f64,
    pub bad_packets: u64,
    pub loudness: NormalizeReport,
    pub waveform: Peaks,
}

/// Transcodes `input` to an Ogg Opus file at `output`. `progress` hears the stage
/// and a percentage.
pub fn transcode_file(
    input: &Path,
    output: &Path,
    options: &TranscodeOptions,
    mut progress: impl FnMut(&str, u8),
) -> Result<TranscodeReport, TranscodeError> {
    progress("decode", 0);
    let pcm = decode_file(input)?;
    let (input_codec, input_rate, bad_packets) = (pcm.codec.clone(), pcm.rate, pcm.bad_packets);
    progress("resample", 30);
    let mut pcm = to_48k(pcm)?;
    if pcm.channels > 2 {
        pcm.samples = downmix_to_stereo(&pcm.samples, pcm.channels)?;
        pcm.channels = 2;
    }
    progress("normalise", 45);
    let bitrate = options
        .bitrate
        .unwrap_or_else(|| default_bitrate(pcm.channels));
    let (ogg, normalised, loudness) =
        normalize_to_opus(&pcm.samples, pcm.channels, options.target, bitrate)?;
    progress("encode", 85);
    write_file(output, &ogg)?;
    progress("waveform", 95);
    let waveform = peaks(
        &normalised,
        pcm.channels,
        pcm.rate,
        options.waveform_buckets,
    );
    progress("done", 100);
    Ok(TranscodeReport {
        input_codec,
        input_rate,
        channels: pcm.channels,
        duration_ms: pcm.duration_ms(),
        bad_packets,
        loudness,
        waveform,
    })
}

/// Writes `data` to `path` and syncs it.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), TranscodeError> {
    use std::io::Write;
    let err = |e: std::io::Error| TranscodeError::Encode(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Opus output here is mono or stereo. 5.1 (L R C LFE Ls Rs, the WAV/MP4/Vorbis order
/// symphonia hands out) folds down by ITU-R BS.775: centre and surrounds at −3 dB, LFE
/// dropped. Other layouts are refused rather than guessed at.
pub fn downmix_to_stereo(samples: &[f32], channels: usize) -> Result<Vec<f32>, TranscodeError> {
    const M3DB: f32 = std::f32::consts::FRAC_1_SQRT_2;
    match channels {
        6 => Ok(samples
            .chunks_exact(6)
            .flat_map(|f| [f[0] + M3DB * (f[2] + f[4]), f[1] + M3DB * (f[2] + f[5])])
            .collect()),
        n => Err(TranscodeError::Unsupported(format!(
            "{n} channels (mono, stereo and 5.1 are transcoded)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_one_folds_down_by_bs775_and_other_layouts_are_refused() {
        // One frame: L, R, C, LFE, Ls, Rs.
        let out = downmix_to_stereo(&[1.0, 0.0, 0.5, 9.0, 0.2, 0.4], 6).unwrap();
        let m = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0] - (1.0 + m * 0.7)).abs() < 1e-6);
        assert!((out[1] - m * 0.9).abs() < 1e-6, "LFE left out");
        assert!(downmix_to_stereo(&[0.0; 4], 4).is_err());
    }
}
