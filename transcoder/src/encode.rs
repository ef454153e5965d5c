//! Opus encoding (libopus) into Ogg, at 48 kHz, with the end trimmed to the input's
//! exact length (RFC 7845 granule positions).

use std::io::Write;

use opus::{Application, Bitrate, Channels, Decoder, Encoder};
use recorder::OggOpusWriter;
use recorder::ogg::PRE_SKIP;

use crate::TranscodeError;
use crate::loudness::measure;
use crate::normalize::{NormalizeReport, Target, normalize_measured};

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
    encode(samples, channels, bitrate, out, None)
}

/// Like [`encode_ogg_opus`], and also decodes every packet as a player would (libopus,
/// pre-skip dropped, trimmed to the input's length), returning that audio too.
pub fn encode_ogg_opus_decoded<W: Write>(
    samples: &[f32],
    channels: usize,
    bitrate: i32,
    out: W,
) -> Result<(W, Vec<f32>), TranscodeError> {
    let mut decoded = Vec::with_capacity(samples.len() + PRE_SKIP as usize * channels);
    let w = encode(samples, channels, bitrate, out, Some(&mut decoded))?;
    decoded.drain(..(PRE_SKIP as usize * channels).min(decoded.len()));
    decoded.truncate(samples.len());
    Ok((w, decoded))
}

/// The Ogg Opus file of `samples` normalised to `target`, with the true peak of its
/// *decoded* audio under the target's ceiling. Lossy coding adds peaks — 3 to 4 dB
/// on dense, noisy, heavily limited music — so the limiter's ceiling alone does not hold in
/// the delivered file: the encoded audio is decoded and measured, and while it
/// overshoots, the limiter's ceiling is lowered by the overshoot and the audio is
/// normalised and encoded again (at most four passes; dense music takes three). The report's output is the
/// decoded file's loudness and true peak.
pub fn normalize_to_opus(
    samples: &[f32],
    channels: usize,
    target: Target,
    bitrate: i32,
) -> Result<(Vec<u8>, Vec<f32>, NormalizeReport), TranscodeError> {
    let input = measure(samples, channels, 48_000)?;
    let mut aim = target;
    let mut start_gain = None;
    let mut last = None;
    for _ in 0..4 {
        let (normalised, mut report) =
            normalize_measured(samples, channels, 48_000, aim, input, start_gain)?;
        let (file, decoded) = encode_ogg_opus_decoded(&normalised, channels, bitrate, Vec::new())?;
        // The limiter holds the PCM under its aim (0.3 dB under the ceiling it is
        // given); unlimited, the peak is the input's moved by the gain.
        let pcm_peak = (input.true_peak_dbtp + report.gain_db)
            .min(aim.ceiling_dbtp - crate::normalize::CEILING_MARGIN_DB);
        report.output = measure(&decoded, channels, 48_000)?;
        let decoded_peak = report.output.true_peak_dbtp;
        let over = decoded_peak - target.ceiling_dbtp;
        start_gain = Some(report.gain_db);
        last = Some((file, normalised, report));
        if over <= -0.05 || !over.is_finite() {
            break;
        }
        // What the codec added on top of the limited PCM is about the same at a lower
        // ceiling: aim under the target by that much (and by at least what it overshot).
        let added = (decoded_peak - pcm_peak).max(0.0);
        aim.ceiling_dbtp = (target.ceiling_dbtp - added - 0.15).min(aim.ceiling_dbtp - over - 0.15);
    }
    last.ok_or_else(|| TranscodeError::Encode("nothing encoded".into()))
}

fn encode<W: Write>(
    samples: &[f32],
    channels: usize,
    bitrate: i32,
    out: W,
    decoded: Option<&mut Vec<f32>>,
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
    let Some(decoded) = decoded else {
        return encode_packets(samples, ch, bitrate, out, |_| Ok(()));
    };
    // The decoder runs beside the encoder (the encoder is the long pole), fed the
    // packets in order.
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(256);
        let decoder = s.spawn(move || -> Result<(), TranscodeError> {
            let mut dec = Decoder::new(48_000, ch).map_err(enc_err)?;
            let mut pcm = vec![0f32; FRAME * channels];
            for packet in rx {
                let got = dec
                    .decode_float(&packet, &mut pcm, false)
                    .map_err(enc_err)?;
                decoded.extend_from_slice(&pcm[..got * channels]);
            }
            Ok(())
        });
        let written = encode_packets(samples, ch, bitrate, out, |packet| {
            // A closed channel means the decoder failed: its error is reported below.
            let _ = tx.send(packet.to_vec());
            Ok(())
        });
        drop(tx);
        let decoding = decoder
            .join()
            .unwrap_or_else(|_| Err(TranscodeError::Encode("the decoder panicked".into())));
        let w = written?;
        decoding?;
        Ok(w)
    })
}

fn enc_err(e: opus::Error) -> TranscodeError {
    TranscodeError::Encode(e.to_string())
}

/// Encodes `samples` into Ogg pages on `out`, handing each packet to `each` too.
fn encode_packets<W: Write>(
    samples: &[f32],
    ch: Channels,
    bitrate: i32,
    out: W,
    mut each: impl FnMut(&[u8]) -> Result<(), TranscodeError>,
) -> Result<W, TranscodeError> {
    let channels = ch as usize;
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
        each(&packet[..n])?;
        ts = ts.wrapping_add(FRAME as u32);
        pos += FRAME;
    }
    w.finish_at(total as u64).map_err(io)
}
