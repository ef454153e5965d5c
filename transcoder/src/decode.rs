//! Decoding audio files to interleaved `f32` with symphonia: MP3, AAC (in MP4/M4A or
//! ADTS), FLAC, WAV/AIFF, Vorbis, and Opus through libopus, in their containers (Ogg,
//! MKV/WebM, MP4, …). The
//! container is found by probing the bytes; the file name is only a hint.
//!
//! A packet the decoder rejects is skipped and counted (a corrupt frame costs that
//! frame); a file whose container cannot be read, or that holds no audio, fails with
//! the reason.

use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::TranscodeError;
use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;

/// Samples an AAC-LC decoder outputs before the first real one.
const AAC_DECODER_DELAY: usize = 1024;

/// Decoded audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub rate: u32,
    pub channels: usize,
    /// Interleaved.
    pub samples: Vec<f32>,
    /// Packets the decoder rejected (skipped).
    pub bad_packets: u64,
    /// The codec, as its decoder names itself (`flac`, `mp3`, `aac`, …).
    pub codec: String,
}

impl Pcm {
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1)
    }

    pub fn duration_ms(&self) -> f64 {
        self.frames() as f64 * 1000.0 / f64::from(self.rate.max(1))
    }
}

/// Decodes the first audio track of `path`.
pub fn decode_file(path: &Path) -> Result<Pcm, TranscodeError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TranscodeError::BadAudio(format!("{}: {e}", path.display())))?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    decode(
        MediaSourceStream::new(Box::new(file), Default::default()),
        &hint,
        crate::mp4edit::read(path),
    )
}

/// symphonia's decoders, and libopus for Opus (symphonia has none of its own).
fn codecs() -> &'static CodecRegistry {
    static REGISTRY: std::sync::OnceLock<CodecRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut r);
        r.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        r
    })
}

fn unsupported(what: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Unsupported(what.to_string())
}

fn decode(
    mss: MediaSourceStream<'static>,
    hint: &Hint,
    edit: Option<crate::mp4edit::Edit>,
) -> Result<Pcm, TranscodeError> {
    let mut reader = symphonia::default::get_probe()
        .probe(
            hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| unsupported(format!("not an audio file this decoder reads ({e})")))?;
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| unsupported("the file has no audio track"))?;
    let track_id = track.id;
    // The playable length, and the encoder delay before it, where the container says
    // (MP4's edit list): decoders that are not gapless (AAC) return them too.
    let (playable, delay) = (track.num_frames, track.delay);
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| unsupported("the audio track has no codec parameters"))?
        .clone();
    let mut decoder = codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| unsupported(format!("no decoder for this codec ({e})")))?;
    // The decoder's short name: `flac`, `mp3`, `aac`, `vorbis`, `opus`, `pcm_s16le`, …
    let codec = decoder.codec_info().short_name.to_owned();
    let mut out = Pcm {
        rate: params.sample_rate.unwrap_or(0),
        channels: params.channels.as_ref().map_or(0, |c| c.count()),
        samples: Vec::new(),
        bad_packets: 0,
        codec,
    };
    let mut tmp: Vec<f32> = Vec::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A cut-short file ends where its data does.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => {
                return Err(TranscodeError::BadAudio(format!(
                    "reading the container: {e}"
                )));
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let spec = buf.spec();
                let (rate, channels) = (spec.rate(), spec.channels().count());
                if out.samples.is_empty() {
                    out.rate = rate;
                    out.channels = channels;
                } else if rate != out.rate || channels != out.channels {
                    return Err(unsupported(format!(
                        "the audio changes format mid-stream ({} Hz × {} → {rate} Hz × {channels})",
                        out.rate, out.channels
                    )));
                }
                buf.copy_to_vec_interleaved(&mut tmp);
                out.samples.extend_from_slice(&tmp);
            }
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                out.bad_packets += 1;
            }
            Err(e) => return Err(TranscodeError::BadAudio(format!("decoding: {e}"))),
        }
    }
    if out.samples.is_empty() {
        return Err(TranscodeError::BadAudio(
            "no audio could be decoded from the file".into(),
        ));
    }
    let ch = out.channels.max(1);
    // An MP4 edit list says where the playable audio starts (the encoder's delay: 1024
    // samples of AAC warm-up from FFmpeg, 2112 from Apple's encoder) and how long it is
    // (the last frame's padding is not); symphonia 0.6 reads it but does not apply it.
    // Without one, raw AAC still starts with the decoder's 1024-sample warm-up.
    let delay = match (edit, delay) {
        (Some(e), _) => e.delay as usize,
        (None, Some(d)) => d as usize,
        (None, None) if params.codec == CODEC_ID_AAC => AAC_DECODER_DELAY,
        (None, None) => 0,
    };
    let decoded = out.samples.len() / ch;
    let keep = edit
        .map(|e| e.playable)
        .or(playable)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(decoded);
    if decoded > keep || params.codec == CODEC_ID_AAC || edit.is_some() {
        let d = delay.min(decoded.saturating_sub(1));
        out.samples.drain(..d * ch);
        out.samples.truncate(keep.min(decoded - d) * ch);
    }
    Ok(out)
}
