//! Opus encoding (libopus) into Ogg, at 48 kHz, with the end trimmed to the input's
//! exact length (RFC 7845 granule positions).

use std::io::Write;

use opus::{Application, Bitrate, Channels, Decoder, Encoder};
use recorder::OggOpusWriter;
use recorder::ogg::PRE_SKIP;

use crate::TranscodeError;
use crate::loudness::{measure, true_peak_dbtp};
use crate::normalize::{NormalizeReport, Prepared, Target};
use crate::truepeak;

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
/// on dense, noisy, heavily limited music — so the limiter's ceiling alone does not
/// hold in the delivered file: the encoded audio is decoded and measured, and while it
/// overshoots, the limiter's ceiling is lowered by the overshoot and the audio is
/// normalised and encoded again (at most four encodes). On long inputs the codec's
/// overshoot is first predicted from a few seconds of the loudest stretches (see
/// [`Probe`]), so that the first whole encode usually holds. The report's output is
/// the decoded file's loudness and true peak.
pub fn normalize_to_opus(
    samples: &[f32],
    channels: usize,
    target: Target,
    bitrate: i32,
) -> Result<(Vec<u8>, Vec<f32>, NormalizeReport), TranscodeError> {
    let (file, normalised, report, _) =
        normalize_to_opus_probed(samples, channels, target, bitrate, &Probe::DEFAULT)?;
    Ok((file, normalised, report))
}

/// How the codec's overshoot is predicted before the first whole encode: the
/// `windows` stretches of `window_frames` with the most energy (dense, loud audio is
/// where the codec adds most), each encoded after `preroll_frames` of what precedes
/// it (the encoder settles, and only the window is measured).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// Inputs shorter than this are encoded whole at every try.
    pub min_frames: usize,
    pub window_frames: usize,
    pub preroll_frames: usize,
    pub windows: usize,
    /// The probes' peak is held this far under the ceiling: the whole file's worst
    /// peak may lie where no probe looked.
    pub margin_db: f64,
}

impl Probe {
    /// 24 windows of 1 s: 36 s of encoding, against 600 s for a 10-minute file.
    pub const DEFAULT: Probe = Probe {
        min_frames: 48_000 * 120,
        window_frames: 48_000,
        preroll_frames: 24_000,
        windows: 24,
        margin_db: 0.3,
    };

    /// The windows to probe, loudest first: the stretches `i * window_frames ..`
    /// that have a full pre-roll before them. Chosen on the input, so every aim
    /// probes the same audio.
    fn windows(&self, pcm: &[f32], channels: usize) -> Vec<ProbeWindow> {
        let frames = pcm.len() / channels;
        let w = self.window_frames.max(1);
        let first = self.preroll_frames.div_ceil(w);
        let mut by_energy: Vec<(f64, usize)> = (first..frames / w)
            .map(|i| {
                let s = &pcm[i * w * channels..(i + 1) * w * channels];
                (s.iter().map(|x| f64::from(*x) * f64::from(*x)).sum(), i)
            })
            .collect();
        by_energy.sort_by(|a, b| b.0.total_cmp(&a.0));
        by_energy
            .into_iter()
            .take(self.windows)
            .map(|(_, index)| ProbeWindow {
                index,
                added_db: 0.0,
            })
            .collect()
    }

    /// The true peak (dBTP) of the decoded probe `windows` of the audio `render`
    /// returns for a range of frames, in the order given; each window probed keeps
    /// its decoded peak over `pcm_peak_dbtp` (the limited audio's expected peak).
    /// With `stop_above_dbtp`, the scan stops at the first window over it and
    /// returns that window's peak.
    fn decoded_peak(
        &self,
        windows: &mut [ProbeWindow],
        render: impl Fn(std::ops::Range<usize>) -> Vec<f32>,
        (channels, bitrate): (usize, i32),
        pcm_peak_dbtp: f64,
        stop_above_dbtp: Option<f64>,
        encodes: &mut Encodes,
    ) -> Result<f64, TranscodeError> {
        let w = self.window_frames.max(1);
        let mut peak = f64::NEG_INFINITY;
        encodes.aims += 1;
        for window in windows {
            if stop_above_dbtp.is_some_and(|stop| peak > stop) {
                break;
            }
            encodes.windows += 1;
            let i = window.index;
            let stretch = render(i * w - self.preroll_frames..(i + 1) * w);
            let (_, decoded) = encode_ogg_opus_decoded(&stretch, channels, bitrate, Vec::new())?;
            // A little of the pre-roll too, as the interpolator's history.
            let from = self.preroll_frames.saturating_sub(truepeak::TAPS_PER_PHASE);
            let measured = &decoded[(from * channels).min(decoded.len())..];
            let here = true_peak_dbtp(measured, channels);
            window.added_db = here - pcm_peak_dbtp;
            peak = peak.max(here);
        }
        Ok(peak)
    }
}

/// A probe window: frames `index * window_frames ..`, and its decoded peak over the
/// limited audio's expected peak at the last aim that encoded it (about what the
/// codec adds there; negative for a window the limiter did not reach). Aims probe the
/// largest first.
#[derive(Debug, Clone, Copy)]
struct ProbeWindow {
    index: usize,
    added_db: f64,
}

/// Aims tried on the probe windows before the first whole encode. After the first,
/// a failing aim usually costs one window's encode (and a gain search).
const MAX_PROBED_AIMS: usize = 5;

/// Where the aim goes after an overshoot: what the codec added on top of the
/// limited PCM is about the same at a lower ceiling, so aim under `ceiling_dbtp` by
/// that much (and by at least what it overshot).
fn lowered_aim(aim: f64, ceiling_dbtp: f64, pcm_peak: f64, decoded_peak: f64) -> f64 {
    let over = decoded_peak - ceiling_dbtp;
    let added = (decoded_peak - pcm_peak).max(0.0);
    (ceiling_dbtp - added - 0.15).min(aim - over - 0.15)
}

/// What one [`normalize_to_opus_probed`] encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Encodes {
    /// Aims tried on the probe windows.
    pub aims: usize,
    /// Probe windows encoded, over all aims.
    pub windows: usize,
    /// Whole-input encodes.
    pub whole: usize,
}

/// [`normalize_to_opus`] with its probe settings; also returns what it encoded.
pub(crate) fn normalize_to_opus_probed(
    samples: &[f32],
    channels: usize,
    target: Target,
    bitrate: i32,
    probe: &Probe,
) -> Result<(Vec<u8>, Vec<f32>, NormalizeReport, Encodes), TranscodeError> {
    let prepared = Prepared::new(samples, channels, 48_000)?;
    let input = prepared.input();
    // The limiter holds the PCM under its aim (0.3 dB under the ceiling it is given);
    // unlimited, the peak is the input's moved by the gain.
    let pcm_peak = |aim: &Target, gain_db: f64| {
        (input.true_peak_dbtp + gain_db).min(aim.ceiling_dbtp - crate::normalize::CEILING_MARGIN_DB)
    };
    let mut aim = target;
    let mut start_gain = None;
    let mut planned = None;
    let mut encodes = Encodes::default();
    if samples.len() / channels >= probe.min_frames {
        let probe_ceiling = target.ceiling_dbtp - probe.margin_db;
        let mut windows = probe.windows(samples, channels);
        for tried in 0..MAX_PROBED_AIMS {
            let plan = prepared.plan(aim, start_gain);
            start_gain = Some(plan.gain_db);
            let peak_in = pcm_peak(&aim, plan.gain_db);
            // The first aim probes every window, to learn where the codec adds most;
            // later ones start there and give up at their first window over the
            // ceiling (the lowered aim needs the worst window, which the first
            // usually is). The aim that holds has looked at every window.
            let probed = probe.decoded_peak(
                &mut windows,
                |frames| prepared.render(&plan, frames),
                (channels, bitrate),
                peak_in,
                (tried > 0).then_some(probe_ceiling),
                &mut encodes,
            )?;
            if probed <= probe_ceiling || !probed.is_finite() {
                // The first whole encode uses this search.
                planned = Some(plan);
                break;
            }
            windows.sort_by(|a, b| b.added_db.total_cmp(&a.added_db));
            aim.ceiling_dbtp = lowered_aim(aim.ceiling_dbtp, probe_ceiling, peak_in, probed);
        }
    }
    let mut last = None;
    for _ in 0..4 {
        let (normalised, mut report) = match planned.take() {
            Some(plan) => prepared.normalise_planned(aim, plan)?,
            None => prepared.normalise(aim, start_gain)?,
        };
        let (file, decoded) = encode_ogg_opus_decoded(&normalised, channels, bitrate, Vec::new())?;
        encodes.whole += 1;
        let peak_in = pcm_peak(&aim, report.gain_db);
        report.output = measure(&decoded, channels, 48_000)?;
        let decoded_peak = report.output.true_peak_dbtp;
        let over = decoded_peak - target.ceiling_dbtp;
        start_gain = Some(report.gain_db);
        last = Some((file, normalised, report));
        if over <= -0.05 || !over.is_finite() {
            break;
        }
        aim.ceiling_dbtp =
            lowered_aim(aim.ceiling_dbtp, target.ceiling_dbtp, peak_in, decoded_peak);
    }
    let (file, normalised, report) =
        last.ok_or_else(|| TranscodeError::Encode("nothing encoded".into()))?;
    Ok((file, normalised, report, encodes))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Quiet for its peaks, bright and noisy: a bed of noise and tones under
    /// hi-hat-like noise bursts eight times a second. Brought to −14 LUFS it needs
    /// the limiter on every burst, and the codec adds peak on top of what it limited.
    fn bursts(secs: usize) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        // Noise low-passed to well inside the codec's 20 kHz band, so that what the
        // codec changes is the peaks, not the loudness.
        let (mut lp_l, mut lp_r) = (0f32, 0f32);
        (0..secs * 48_000)
            .flat_map(|i| {
                let t = i as f32 / 48_000.0;
                let tone = (t * 2.0 * std::f32::consts::PI * 220.0).sin()
                    + 0.5 * (t * 2.0 * std::f32::consts::PI * 3_520.0).sin();
                lp_l += 0.5 * (noise() - lp_l);
                lp_r += 0.5 * (noise() - lp_r);
                let burst = 1.2 * (-(t % 0.125) / 0.02).exp();
                let l = 0.05 * tone + (0.1 + burst) * lp_l;
                let r = 0.04 * tone + (0.1 + burst) * lp_r;
                [l.clamp(-1.0, 1.0), r.clamp(-1.0, 1.0)]
            })
            .collect()
    }

    #[test]
    fn probing_the_codec_first_saves_whole_encodes_and_still_holds_the_ceiling() {
        let pcm = bursts(30);
        let target = Target::MUSIC;
        let never = Probe {
            min_frames: usize::MAX,
            ..Probe::DEFAULT
        };
        let scaled = Probe {
            min_frames: 0,
            window_frames: 24_000,
            preroll_frames: 12_000,
            windows: 6,
            ..Probe::DEFAULT
        };
        let (_, _, plain, plain_encodes) =
            normalize_to_opus_probed(&pcm, 2, target, 96_000, &never).unwrap();
        let (_, _, probed, probed_encodes) =
            normalize_to_opus_probed(&pcm, 2, target, 96_000, &scaled).unwrap();
        assert!(
            plain_encodes.whole > 1,
            "this audio must overshoot at the first try, or the test shows nothing"
        );
        assert_eq!(plain_encodes.windows, 0);
        assert!(
            probed_encodes.whole < plain_encodes.whole,
            "{probed_encodes:?} with the probe, {plain_encodes:?} without"
        );
        // The first aim and the one that held encoded every window; any aims between
        // gave up at their first window over the ceiling, before their last.
        let Encodes { aims, windows, .. } = probed_encodes;
        assert!((2..MAX_PROBED_AIMS).contains(&aims), "{probed_encodes:?}");
        assert!(windows >= 2 * scaled.windows, "{probed_encodes:?}");
        assert!(
            windows <= 2 * scaled.windows + (aims - 2) * (scaled.windows - 1),
            "{probed_encodes:?}"
        );
        for r in [plain, probed] {
            assert!(r.output.true_peak_dbtp <= target.ceiling_dbtp, "{r:?}");
            assert!(
                (r.output.integrated_lufs - target.lufs).abs() <= 0.5,
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_probe_with_a_ceiling_stops_at_the_first_window_over_it_and_updates_only_what_it_encoded() {
        let pcm = bursts(12);
        let probe = Probe {
            min_frames: 0,
            window_frames: 24_000,
            preroll_frames: 12_000,
            windows: 6,
            ..Probe::DEFAULT
        };
        let loud = |frames: std::ops::Range<usize>| pcm[frames.start * 2..frames.end * 2].to_vec();
        let mut windows = probe.windows(&pcm, 2);
        assert_eq!(windows.len(), 6);
        let mut all = Encodes::default();
        let peak = probe
            .decoded_peak(&mut windows, loud, (2, 96_000), -3.0, None, &mut all)
            .unwrap();
        assert_eq!(
            (all.aims, all.windows),
            (1, 6),
            "without a ceiling, every window"
        );
        let worst = windows
            .iter()
            .map(|w| w.added_db)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((peak - (-3.0 + worst)).abs() < 1e-9, "{peak} {windows:?}");

        // Against a 3 dB lower expected peak, with a ceiling between the first two
        // windows' peaks (the larger second): the scan stops at the second, and only
        // the windows it encoded change.
        if windows[0].added_db > windows[1].added_db {
            windows.swap(0, 1);
        }
        let before = windows.clone();
        let (first, second) = (-3.0 + before[0].added_db, -3.0 + before[1].added_db);
        assert!(
            second > first + 1e-3,
            "two windows with different peaks: {before:?}"
        );
        let mut stopped = Encodes::default();
        let returned = probe
            .decoded_peak(
                &mut windows,
                loud,
                (2, 96_000),
                -6.0,
                Some((first + second) / 2.0),
                &mut stopped,
            )
            .unwrap();
        assert_eq!((stopped.aims, stopped.windows), (1, 2), "{before:?}");
        assert!((returned - second).abs() < 1e-9, "{returned} {before:?}");
        for (k, (now, was)) in windows.iter().zip(&before).enumerate() {
            let moved = if k < 2 { 3.0 } else { 0.0 };
            assert!(
                (now.added_db - (was.added_db + moved)).abs() < 1e-9,
                "window {k}: {now:?} {was:?}"
            );
        }
    }
}
