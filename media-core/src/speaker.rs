//! Active speaker: which published audio track is the one talking, with hysteresis.
//!
//! Input is each track's smoothed level ([`crate::AudioLevel`], -dBov: 0 loud, 127
//! silent) from the RFC 6464 header extension. A track counts as speaking at or below
//! `threshold` -dBov. The speaker changes only when another track has been the loudest
//! speaking track for `hold` and is `margin` dB louder than the current speaker (if the
//! current speaker is still speaking), so cross-talk and short interjections do not
//! flip it back and forth. A candidate stays a candidate while it speaks within
//! `margin` of the loudest, so two voices of about the same level (which trade the
//! "loudest" place from one measurement to the next) still elect one of them. Silence
//! keeps the last speaker.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct SpeakerConfig {
    /// Levels at or below this (-dBov) count as speech.
    pub threshold: u8,
    /// How long a new loudest track must stay loudest before it takes over.
    pub hold: Duration,
    /// How much louder (dB) than a still-speaking current speaker it must be.
    pub margin: u8,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            threshold: 60,
            hold: Duration::from_millis(500),
            margin: 6,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SpeakerDetector<K> {
    config: SpeakerConfig,
    current: Option<K>,
    candidate: Option<(K, Instant)>,
}

impl<K: Copy + PartialEq> SpeakerDetector<K> {
    pub fn new(config: SpeakerConfig) -> Self {
        SpeakerDetector {
            config,
            current: None,
            candidate: None,
        }
    }

    pub fn current(&self) -> Option<K> {
        self.current
    }

    /// Forgets a track that ended.
    pub fn remove(&mut self, k: K) {
        if self.current == Some(k) {
            self.current = None;
        }
        if self.candidate.is_some_and(|(c, _)| c == k) {
            self.candidate = None;
        }
    }

    /// Looks at the levels now; returns the new speaker when it changes.
    pub fn update(&mut self, now: Instant, levels: impl Iterator<Item = (K, u8)>) -> Option<K> {
        let mut loudest: Option<(K, u8)> = None;
        let mut current_level = None;
        let mut candidate_level = None;
        for (k, level) in levels {
            if Some(k) == self.current {
                current_level = Some(level);
            }
            if self.candidate.is_some_and(|(c, _)| c == k) {
                candidate_level = Some(level);
            }
            if level <= self.config.threshold && loudest.is_none_or(|(_, l)| level < l) {
                loudest = Some((k, level));
            }
        }
        let Some((k, level)) = loudest else {
            self.candidate = None;
            return None;
        };
        if Some(k) == self.current {
            self.candidate = None;
            return None;
        }
        if let Some(cur) = current_level
            && cur <= self.config.threshold
            && level.saturating_add(self.config.margin) > cur
        {
            // Not clearly louder than a speaker who is still talking.
            self.candidate = None;
            return None;
        }
        // The candidate holds its place while it is the loudest, or about as loud — and,
        // like any newcomer, clearly louder than a current speaker still talking.
        let margin = self.config.margin;
        let louder_than_current = |l: u8| {
            current_level
                .is_none_or(|cur| cur > self.config.threshold || l.saturating_add(margin) <= cur)
        };
        let holds = |c: K| {
            c == k
                || candidate_level.is_some_and(|cl| {
                    cl <= self.config.threshold
                        && cl <= level.saturating_add(margin)
                        && louder_than_current(cl)
                })
        };
        match self.candidate {
            Some((c, since)) if holds(c) && Some(c) != self.current => {
                if now.duration_since(since) >= self.config.hold {
                    self.current = Some(c);
                    self.candidate = None;
                    return Some(c);
                }
            }
            _ => self.candidate = Some((k, now)),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(ms, [(track, level)…])` steps; returns (ms, new speaker) for each change.
    fn run(steps: &[(u64, &[(u8, u8)])]) -> Vec<(u64, u8)> {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut out = Vec::new();
        for (ms, levels) in steps {
            if let Some(k) = d.update(t0 + Duration::from_millis(*ms), levels.iter().copied()) {
                out.push((*ms, k));
            }
        }
        out
    }

    #[test]
    fn voices_of_about_the_same_level_still_elect_a_speaker() {
        // The loudest place changes hands at every measurement; one of them wins.
        let steps: Vec<(u64, [(u8, u8); 2])> = (0..10)
            .map(|i| {
                (
                    i * 100,
                    if i % 2 == 0 {
                        [(1, 20), (2, 21)]
                    } else {
                        [(1, 21), (2, 20)]
                    },
                )
            })
            .collect();
        let steps: Vec<(u64, &[(u8, u8)])> = steps.iter().map(|(t, l)| (*t, &l[..])).collect();
        assert_eq!(run(&steps), [(500, 1)]);
    }

    #[test]
    fn a_held_candidate_must_still_be_clearly_louder_than_the_speaker() {
        // 1 speaks; 3 starts louder, then falls back to within the margin of 1 while 4
        // is the loudest: 3 may not take over from 1, 4 does after its own hold.
        let steps: &[(u64, &[(u8, u8)])] = &[
            (0, &[(1, 20)]),
            (500, &[(1, 20)]),
            (600, &[(1, 28), (3, 21)]),
            (700, &[(1, 28), (3, 25), (4, 20)]),
            (1100, &[(1, 28), (3, 25), (4, 20)]),
            (1200, &[(1, 28), (3, 25), (4, 20)]),
        ];
        assert_eq!(run(steps), [(500, 1), (1200, 4)]);
    }

    #[test]
    fn a_speaker_takes_over_after_the_hold() {
        assert_eq!(
            run(&[
                (0, &[(1, 30), (2, 90)]),
                (300, &[(1, 30), (2, 90)]),
                (500, &[(1, 30)])
            ]),
            [(500, 1)]
        );
    }

    #[test]
    fn a_short_interjection_does_not_flip_it() {
        let s = run(&[
            (0, &[(1, 30)]),
            (500, &[(1, 30)]),
            // 2 is louder for 300 ms only.
            (600, &[(1, 50), (2, 20)]),
            (900, &[(1, 30), (2, 90)]),
            (1500, &[(1, 30), (2, 90)]),
        ]);
        assert_eq!(s, [(500, 1)]);
    }

    #[test]
    fn cross_talk_needs_a_margin_and_silence_keeps_the_speaker() {
        let s = run(&[
            (0, &[(1, 30)]),
            (500, &[(1, 30)]),
            // 2 is louder, but by less than the margin, while 1 still talks.
            (600, &[(1, 30), (2, 27)]),
            (1200, &[(1, 30), (2, 27)]),
            // Everybody silent: no change.
            (2000, &[(1, 120), (2, 120)]),
            // 1 stops, 2 talks: 2 takes over after the hold.
            (3000, &[(1, 120), (2, 40)]),
            (3500, &[(1, 120), (2, 40)]),
        ]);
        assert_eq!(s, [(500, 1), (3500, 2)]);
    }
}
