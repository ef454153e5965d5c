//! Opus encoding (libopus) into Ogg, at 48 kHz, with the end trimmed to the input's
//! exact length (RFC 7845 granule positions).

use std::io::Write;

use opus::{Application, Bitrate, Channels, Encoder};
use recorder::OggOpusWriter;
use recorder::ogg::PRE_SKIP;

use crate::TranscodeError;

/// 20 ms at 48 kHz.
const FRAME: usize = 960;

/// The default bitrate: 96 kb/s stereo, 64 kb/s mono.
pub fn default_bitrate(channels: usize) -> i32 {
    if channels == 1 { 64_000 } else { 96_000 }
}

/// Encodes interleaved 48 kHz `samples` (1 or 2 channels) as Ogg Opus into `out`.
/// Returns the output back.
pub fn encode_ogg_opus<W: Write>(
    samples: &[f32],
    channels: usize,
    bitrate: i32,
    out: W,
) -> Result<W, TranscodeError> {
    let ch = match channels {
        1 => Channels::Mono,
        2 => Channels::Stereo,
        n => {
            return Err(TranscodeError::Unsupported(format!(
                "{n} channels (Opus output is mono or stereo)"
            )));
        }
    };
    let enc_err = |e: opus::Error| TranscodeError::Encode(e.to_string());
    let mut enc = Encoder::new(48_000, ch, Application::Audio).map_err(enc_err)?;
    enc.set_bitrate(Bitrate::Bits(bitrate)).map_err(enc_err)?;
    let lookahead = enc.get_lookahead().map_err(enc_err)?;
    if lookahead != i32::from(PRE_SKIP) {
        return Err(TranscodeError::Encode(format!(
            "libopus look-ahead is {lookahead}, the Ogg writer's pre-skip {PRE_SKIP}"
        )));
    }
    let io = |e: recorder::OggError| TranscodeError::Encode(e.to_string());
    let mut w = OggOpusWriter::new(out, channels as u8, 1, "StreamCore transcoder").map_err(io)?;
    let frames = samples.len() / channels;
    // The encoder's look-ahead is flushed with silence past the end; the last page's
    // granule then trims the stream back to exactly `frames`.
    let total = frames + PRE_SKIP as usize;
    let mut buf = vec![0f32; FRAME * channels];
    let mut packet = vec![0u8; 4000];
    let mut pos = 0usize;
    let mut ts = 0u32;
    while pos < total {
        buf.fill(0.0);
        let have = frames.saturating_sub(pos).min(FRAME);
        if have > 0 {
            buf[..have * channels]
                .copy_from_slice(&samples[pos * channels..(pos + have) * channels]);
        }
        let n = enc.encode_float(&buf, &mut packet).map_err(enc_err)?;
        w.push(ts, &packet[..n]).map_err(io)?;
        ts = ts.wrapping_add(FRAME as u32);
        pos += FRAME;
    }
    w.finish_at(total as u64).map_err(io)
}
