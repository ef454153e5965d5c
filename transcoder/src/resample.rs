//! Resampling to 48 kHz (Opus's rate) with rubato's FFT resampler.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::TranscodeError;
use crate::decode::Pcm;

pub const OUTPUT_RATE: u32 = 48_000;

/// `pcm` at 48 kHz: unchanged if it already is; otherwise resampled whole, with the
/// resampler's delay trimmed, so the duration is kept.
pub fn to_48k(pcm: Pcm) -> Result<Pcm, TranscodeError> {
    if pcm.rate == OUTPUT_RATE || pcm.samples.is_empty() {
        return Ok(pcm);
    }
    let bad = |e: &dyn std::fmt::Display| TranscodeError::BadAudio(format!("resampling: {e}"));
    let channels = pcm.channels.max(1);
    let frames = pcm.frames();
    let mut rs = Fft::<f32>::new(
        pcm.rate as usize,
        OUTPUT_RATE as usize,
        1024,
        channels,
        FixedSync::Input,
    )
    .map_err(|e| bad(&e))?;
    let input = InterleavedSlice::new(&pcm.samples, channels, frames).map_err(|e| bad(&e))?;
    let out = rs.process_all(&input, frames, None).map_err(|e| bad(&e))?;
    Ok(Pcm {
        rate: OUTPUT_RATE,
        channels,
        samples: out.take_data(),
        bad_packets: pcm.bad_packets,
        codec: pcm.codec,
    })
}
