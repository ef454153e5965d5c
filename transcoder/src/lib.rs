//! # transcoder: loudness-normalised audio and waveform previews
//!
//! Today: decoding and resampling to 48 kHz, and the signal-processing core on
//! interleaved `f32` PCM in memory:
//! - [`decode`]: symphonia (MP3, AAC, FLAC, WAV, Vorbis, and Opus through libopus;
//!   Ogg, MKV/WebM, MP4, …).
//! - [`resample`]: rubato's FFT resampler to 48 kHz, length kept.
//! - [`loudness`]: EBU R128 integrated loudness and true peak (as the `ebur128`
//!   crate's meter reads them).
//! - [`kweighting`]: BS.1770 K-weighted energy kept per frame, so a gain search
//!   estimates the loudness of each try without filtering the audio again.
//! - [`truepeak`]: the 4× polyphase true-peak interpolator the meter and the limiter
//!   share (the `ebur128` crate's filter, vectorised and split over the cores).
//! - [`limiter`]: a look-ahead true-peak limiter (4× oversampled detection, gain that
//!   never overshoots its ceiling: a limiter, not clipping).
//! - [`normalize`]: gain to a target loudness, limited to a true-peak ceiling; the
//!   input is prepared once (frame peaks, K-weighted energy) for every try.
//! - [`waveform`]: peaks in a fixed number of buckets, as JSON-ready data and as SVG.
//!
//! - [`encode`]: Opus (libopus) in Ogg, end-trimmed to the input's length.
//! - [`pipeline`]: one file, decode → 48 kHz → normalise → Opus, with its waveform.
//! - [`mixdown`]: a recording's speakers aligned by wall clock, a normalised stem
//!   each, mixed into one normalised episode.
//! - [`jobs`]: what a job is and the bookkeeping of running them (retry and
//!   dead-letter decisions, due order, committable offsets), with no clock or I/O of
//!   its own; the node's `worker` module drives it.
//!
//! Invariants:
//! - Nothing here changes the length of the audio: normalising returns as many frames
//!   as it was given.
//! - The limiter's gain is at most what each sample's detected peak requires, so the
//!   output's true peak stays under the ceiling (up to the detector's accuracy).

pub mod decode;
pub mod encode;
pub mod jobs;
pub mod kweighting;
pub mod limiter;
pub mod loudness;
pub mod mixdown;
mod mp4edit;
pub mod normalize;
pub mod pipeline;
pub mod resample;
pub mod truepeak;
pub mod waveform;

pub use decode::{Pcm, decode_file};
pub use encode::{encode_ogg_opus, normalize_to_opus};
pub use jobs::{JobError, JobSpec, RetryPolicy};
pub use limiter::TruePeakLimiter;
pub use loudness::{Loudness, measure};
pub use mixdown::{Mixdown, Speaker, TrackAudio, mixdown};
pub use normalize::{NormalizeReport, Target, normalize};
pub use pipeline::{TranscodeOptions, TranscodeReport, transcode_file};
pub use resample::to_48k;
pub use waveform::{Peaks, peaks, svg};

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("bad audio: {0}")]
    BadAudio(String),
    #[error("loudness meter: {0}")]
    Meter(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("encoding: {0}")]
    Encode(String),
}
