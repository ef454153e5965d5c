//! Podcast mixdown: speakers' tracks placed on one timeline by their wall-clock
//! start, each speaker's stem normalised on its own, then mixed into the episode and
//! normalised again.
//!
//! Every stem is as long as the episode and starts where it does, so stems dropped
//! into an editor at 0 line up with each other and with the episode.

use crate::TranscodeError;
use crate::normalize::{NormalizeReport, Target, normalize};

/// The rate everything here runs at (the recorder's Opus and the encoder's).
pub const RATE: u32 = 48_000;

/// One decoded track of a speaker at 48 kHz, and where on the wall clock its first
/// sample was (Unix milliseconds, fractional).
#[derive(Debug, Clone)]
pub struct TrackAudio {
    pub starts_at_ms: f64,
    pub channels: usize,
    /// Interleaved.
    pub samples: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Speaker {
    pub name: String,
    pub tracks: Vec<TrackAudio>,
}

#[derive(Debug, Clone)]
pub struct Stem {
    pub speaker: String,
    pub samples: Vec<f32>,
    pub loudness: NormalizeReport,
}

#[derive(Debug, Clone)]
pub struct Mixdown {
    pub channels: usize,
    /// Wall-clock time (Unix ms) of the episode's first sample: the earliest track.
    pub starts_at_ms: f64,
    pub episode: Vec<f32>,
    pub loudness: NormalizeReport,
    pub stems: Vec<Stem>,
}

impl Mixdown {
    pub fn frames(&self) -> usize {
        self.episode.len() / self.channels
    }
}

/// Mixes `speakers` to `target`. Output is stereo if any track is, else mono.
pub fn mixdown(speakers: &[Speaker], target: Target) -> Result<Mixdown, TranscodeError> {
    let tracks = || speakers.iter().flat_map(|s| s.tracks.iter());
    if tracks().next().is_none() {
        return Err(TranscodeError::BadAudio(
            "the recording has no audio".into(),
        ));
    }
    if let Some(t) = tracks().find(|t| !(1..=2).contains(&t.channels)) {
        return Err(TranscodeError::Unsupported(format!(
            "{} channels in a recorded track",
            t.channels
        )));
    }
    let channels = tracks().map(|t| t.channels).max().unwrap_or(1);
    let t0 = tracks()
        .map(|t| t.starts_at_ms)
        .fold(f64::INFINITY, f64::min);
    let offset =
        |t: &TrackAudio| ((t.starts_at_ms - t0) * f64::from(RATE) / 1000.0).round() as usize;
    let frames = tracks()
        .map(|t| offset(t) + t.samples.len() / t.channels)
        .max()
        .unwrap_or(0);

    let mut stems = Vec::with_capacity(speakers.len());
    let mut episode = vec![0f32; frames * channels];
    for s in speakers {
        let mut stem = vec![0f32; frames * channels];
        for t in &s.tracks {
            place(&mut stem, channels, offset(t), &t.samples, t.channels);
        }
        let (stem, loudness) = normalize(&stem, channels, RATE, target)?;
        for (e, x) in episode.iter_mut().zip(&stem) {
            *e += x;
        }
        stems.push(Stem {
            speaker: s.name.clone(),
            samples: stem,
            loudness,
        });
    }
    let (episode, loudness) = normalize(&episode, channels, RATE, target)?;
    Ok(Mixdown {
        channels,
        starts_at_ms: t0,
        episode,
        loudness,
        stems,
    })
}

/// Adds `src` (`src_ch` channels) into `dst` (`ch` channels) from frame `at`; mono
/// goes to both sides of a stereo mix.
fn place(dst: &mut [f32], ch: usize, at: usize, src: &[f32], src_ch: usize) {
    let frames = src.len() / src_ch;
    for i in 0..frames {
        let d = (at + i) * ch;
        if d + ch > dst.len() {
            break;
        }
        if src_ch == ch {
            for c in 0..ch {
                dst[d + c] += src[i * src_ch + c];
            }
        } else {
            // mono into stereo (stereo into mono cannot happen: the mix takes the max)
            let x = src[i];
            dst[d] += x;
            dst[d + 1] += x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loudness::measure;

    /// A 1 kHz tone burst of `secs` starting `at` seconds into a `total`-second mono track.
    fn burst(total: f64, at: f64, secs: f64, amp: f32) -> Vec<f32> {
        let n = (total * f64::from(RATE)) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(RATE);
                if t >= at && t < at + secs {
                    amp * (2.0 * std::f64::consts::PI * 1000.0 * t).sin() as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The first frame whose magnitude passes `level`.
    fn onset(samples: &[f32], ch: usize, level: f32) -> usize {
        samples.iter().position(|x| x.abs() > level).unwrap() / ch
    }

    #[test]
    fn tracks_line_up_by_wall_clock_and_stems_span_the_episode() {
        let speakers = vec![
            Speaker {
                name: "alice".into(),
                tracks: vec![TrackAudio {
                    starts_at_ms: 1_000_000.0,
                    channels: 1,
                    samples: burst(4.0, 1.0, 1.0, 0.05),
                }],
            },
            Speaker {
                name: "bob".into(),
                tracks: vec![TrackAudio {
                    starts_at_ms: 1_000_500.0,
                    channels: 2,
                    samples: burst(4.0, 1.0, 1.0, 0.5)
                        .into_iter()
                        .flat_map(|x| [x, x])
                        .collect(),
                }],
            },
        ];
        let m = mixdown(&speakers, Target::PODCAST).unwrap();
        assert_eq!(m.channels, 2);
        assert_eq!(m.starts_at_ms, 1_000_000.0);
        assert_eq!(m.frames(), (4.5 * 48_000.0) as usize);
        for s in &m.stems {
            assert_eq!(s.samples.len(), m.episode.len());
        }
        // Alice at 1.0 s, Bob (who started 500 ms later) at 1.5 s, in their stems and
        // in the episode.
        let a = onset(&m.stems[0].samples, 2, 0.01);
        let b = onset(&m.stems[1].samples, 2, 0.01);
        assert!((a as i64 - 48_000).abs() <= 2, "alice at {a}");
        assert!((b as i64 - 72_000).abs() <= 2, "bob at {b}");
        assert!((onset(&m.episode, 2, 0.01) as i64 - 48_000).abs() <= 2);
        // Each stem normalised on its own: the quiet speaker is as loud as the other.
        for s in &m.stems {
            let l = measure(&s.samples, 2, RATE).unwrap();
            assert!(
                (l.integrated_lufs + 16.0).abs() < 0.5,
                "{}: {l:?}",
                s.speaker
            );
        }
        let l = measure(&m.episode, 2, RATE).unwrap();
        assert!((l.integrated_lufs + 16.0).abs() < 0.5, "{l:?}");
        assert!(l.true_peak_dbtp <= -1.0, "{l:?}");
    }

    #[test]
    fn a_speaker_with_two_tracks_gets_both_and_no_audio_is_an_error() {
        let track = |start: f64| TrackAudio {
            starts_at_ms: start,
            channels: 1,
            samples: burst(1.0, 0.0, 1.0, 0.1),
        };
        let m = mixdown(
            &[Speaker {
                name: "carol".into(),
                tracks: vec![track(0.0), track(2000.0)],
            }],
            Target::PODCAST,
        )
        .unwrap();
        assert_eq!(m.channels, 1);
        assert_eq!(m.frames(), 3 * 48_000);
        let gap = &m.stems[0].samples[48_000 + 100..96_000 - 100];
        assert!(gap.iter().all(|x| *x == 0.0), "silence between the tracks");
        assert!(m.stems[0].samples[96_000 + 10].abs() > 0.0);
        assert!(mixdown(&[], Target::PODCAST).is_err());
    }
}
