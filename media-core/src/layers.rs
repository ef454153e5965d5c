//! `LayerSelector`: which simulcast layer one subscriber receives.
//!
//! Layers are indexed low to high (0 = the smallest). The selector keeps a *target*
//! (what the subscriber should get now) and a *current* layer (what it gets): the target
//! follows the subscriber's preference (highest layer it wants) and its estimated
//! bandwidth; the current layer moves to the target only on a keyframe of the target
//! layer, so the player never sees a stream start mid-picture.
//!
//! Rules, in order:
//! - only *active* layers count (a layer the publisher stopped sending drops out);
//! - never above the preference, nor above a ceiling the send queue's pressure set
//!   ([`LayerSelector::step_down`]: one layer below where it was, for a while);
//! - the highest layer whose bitrate fits the bandwidth estimate: the first choice, the
//!   current layer and lower ones fit at 100 % of their bitrate, a higher one only at
//!   `up_headroom` × its bitrate and only after it has fitted for `up_hold` (no flapping
//!   on a noisy estimate) — unless the subscriber just raised its preference: then a
//!   higher layer that fits with headroom is taken at once; going down is immediate;
//! - if nothing fits, the lowest active layer (a frozen picture helps nobody);
//! - without an estimate yet, the preference alone decides.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerConfig {
    pub up_headroom: f64,
    pub up_hold: Duration,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            up_headroom: 1.25,
            up_hold: Duration::from_secs(2),
        }
    }
}

/// What the SFU knows of one incoming layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Measured on ingress, bits per second.
    pub bitrate_bps: u64,
    /// The publisher is sending it.
    pub active: bool,
}

/// A subscriber's layer choice; `K` names a layer (the simulcast rid).
#[derive(Debug, Clone)]
pub struct LayerSelector<K> {
    config: LayerConfig,
    /// Highest layer (index, 0 = lowest) the subscriber wants; `None`: no limit.
    preferred_max: Option<usize>,
    current: Option<K>,
    target: Option<K>,
    /// A higher layer that fits, and since when.
    up_candidate: Option<(K, Instant)>,
    /// The preference was raised since the last update: the subscriber asked for more.
    raised: bool,
    /// A ceiling from the send queue's pressure: highest layer index, until when.
    ceiling: Option<(usize, Instant)>,
    /// A step down asked for, to take at the next update, and how long it holds.
    step_until: Option<Instant>,
}

impl<K: Copy + PartialEq> LayerSelector<K> {
    pub fn new(config: LayerConfig) -> Self {
        LayerSelector {
            config,
            preferred_max: None,
            current: None,
            target: None,
            up_candidate: None,
            raised: false,
            ceiling: None,
            step_until: None,
        }
    }

    pub fn current(&self) -> Option<K> {
        self.current
    }

    pub fn target(&self) -> Option<K> {
        self.target
    }

    /// The highest layer index the subscriber wants, if it set a cap.
    pub fn preference(&self) -> Option<usize> {
        self.preferred_max
    }

    /// Highest layer index wanted (0 = lowest); `None` for no limit.
    pub fn set_preference(&mut self, max_layer: Option<usize>) {
        let cap = |p: Option<usize>| p.unwrap_or(usize::MAX);
        self.raised |= cap(max_layer) > cap(self.preferred_max);
        self.preferred_max = max_layer;
    }

    /// The send queue does not drain: the next update goes one layer below the current
    /// one (or below the ceiling already set), and nothing climbs above that before
    /// `until`.
    pub fn step_down(&mut self, until: Instant) {
        self.step_until = Some(until);
    }

    /// Re-decides the target from the layers (ordered low to high) and the bandwidth
    /// estimate. True when the target changed (the caller then asks the publisher for a
    /// keyframe of it).
    pub fn update(
        &mut self,
        now: Instant,
        layers: &[(K, LayerInfo)],
        available_bps: Option<u64>,
    ) -> bool {
        let position = |k: K| layers.iter().position(|(x, _)| *x == k);
        let lowest_active = layers.iter().position(|(_, l)| l.active);
        let reference = self.current.or(self.target).and_then(position);
        self.ceiling = self.ceiling.filter(|(_, until)| now < *until);
        if let Some(until) = self.step_until.take() {
            let from = reference.or(lowest_active).unwrap_or(0);
            let from = self.ceiling.map_or(from, |(c, _)| c.min(from));
            self.ceiling = Some((from.saturating_sub(1), until));
        }
        let cap = self
            .preferred_max
            .unwrap_or(usize::MAX)
            .min(self.ceiling.map_or(usize::MAX, |(c, _)| c));
        let active = || {
            layers
                .iter()
                .enumerate()
                .filter(|(i, (_, l))| l.active && *i <= cap)
                .map(|(i, (_, l))| (i, l))
        };
        let wanted = match available_bps {
            None => active().map(|(i, _)| i).next_back(),
            Some(bw) => {
                let fits = |i: usize, l: &LayerInfo| {
                    // Headroom only to go up from a layer the subscriber has.
                    let need = if reference.is_some_and(|r| i > r) {
                        l.bitrate_bps as f64 * self.config.up_headroom
                    } else {
                        l.bitrate_bps as f64
                    };
                    need <= bw as f64
                };
                active()
                    .filter(|(i, l)| fits(*i, l))
                    .map(|(i, _)| i)
                    .next_back()
            }
        }
        .or_else(|| {
            // Nothing fits (or the preference is below every active layer).
            active().map(|(i, _)| i).next().or(lowest_active)
        });
        let raised = std::mem::take(&mut self.raised);
        let wanted = match (wanted, reference) {
            (Some(w), Some(r)) if w > r && available_bps.is_some() && !raised => {
                let key = layers[w].0;
                match self.up_candidate {
                    Some((c, since))
                        if c == key && now.duration_since(since) >= self.config.up_hold =>
                    {
                        self.up_candidate = None;
                        Some(w)
                    }
                    Some((c, _)) if c == key => Some(r),
                    _ => {
                        self.up_candidate = Some((key, now));
                        Some(r)
                    }
                }
            }
            (w, _) => {
                self.up_candidate = None;
                w
            }
        };
        // Held at a layer that has gone inactive: the highest active one below it.
        let wanted = match wanted {
            Some(w) if !layers[w].1.active => {
                active().map(|(i, _)| i).rfind(|i| *i < w).or(lowest_active)
            }
            w => w,
        };
        let wanted = wanted.map(|i| layers[i].0);
        if wanted != self.target {
            self.target = wanted;
            return true;
        }
        false
    }

    /// Forgets the current layer (the source changed): the next keyframe of the target
    /// starts the stream again.
    pub fn reset(&mut self) {
        self.current = None;
        self.target = None;
        self.up_candidate = None;
    }

    /// Forwarding stopped mid-stream (the send queue was shed): the stream starts
    /// again at the next keyframe of the target.
    pub fn interrupt(&mut self) {
        self.current = None;
    }

    /// A keyframe of `layer` arrived: true if the subscriber now switches to it. The
    /// caller rebases sequence numbers and timestamps at the switch.
    pub fn on_keyframe(&mut self, layer: K) -> bool {
        if self.target == Some(layer) && self.current != Some(layer) {
            self.current = Some(layer);
            return true;
        }
        false
    }

    /// Should a packet of `layer` go to this subscriber?
    pub fn forwards(&self, layer: K) -> bool {
        self.current == Some(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn layers(active: [bool; 3]) -> Vec<(usize, LayerInfo)> {
        L.iter()
            .zip(active)
            .enumerate()
            .map(|(i, (b, a))| {
                (
                    i,
                    LayerInfo {
                        bitrate_bps: *b,
                        active: a,
                    },
                )
            })
            .collect()
    }

    /// One step: (ms, active layers, bandwidth estimate, preference).
    type Step = (u64, [bool; 3], Option<u64>, Option<usize>);

    /// Runs the steps and returns the target after each, with a keyframe of the target
    /// after every step (so current follows).
    fn check(steps: &[Step]) -> Vec<Option<usize>> {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerConfig::default());
        steps
            .iter()
            .map(|(ms, act, bw, pref)| {
                s.set_preference(*pref);
                s.update(t0 + Duration::from_millis(*ms), &layers(*act), *bw);
                if let Some(t) = s.target() {
                    s.on_keyframe(t);
                }
                s.target()
            })
            .collect()
    }

    const ALL: [bool; 3] = [true, true, true];

    #[test]
    fn no_estimate_means_the_preference_decides() {
        assert_eq!(check(&[(0, ALL, None, None)]), [Some(2)]);
        assert_eq!(check(&[(0, ALL, None, Some(1))]), [Some(1)]);
        assert_eq!(check(&[(0, ALL, None, Some(0))]), [Some(0)]);
    }

    #[test]
    fn bandwidth_down_is_immediate_and_up_waits_for_the_hold() {
        let got = check(&[
            (0, ALL, Some(3_000_000), None),
            (100, ALL, Some(600_000), None), // down at once
            (200, ALL, Some(100_000), None), // nothing fits: the lowest
            (300, ALL, Some(700_000), None), // 1 fits with headroom (625k), but hold
            (1_000, ALL, Some(700_000), None),
            (2_300, ALL, Some(700_000), None),   // held 2 s: up
            (2_400, ALL, Some(1_600_000), None), // 2 needs 1.875 M with headroom
            (5_000, ALL, Some(2_000_000), None), // fits: starts the hold
            (7_000, ALL, Some(2_000_000), None), // held: up
        ]);
        assert_eq!(
            got,
            [
                Some(2),
                Some(1),
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                Some(2)
            ]
        );
    }

    #[test]
    fn a_noisy_estimate_does_not_flap() {
        let got = check(&[
            (0, ALL, Some(600_000), None),
            (500, ALL, Some(1_900_000), None),
            (1_000, ALL, Some(600_000), None), // the hold restarts
            (1_500, ALL, Some(1_900_000), None),
            (3_000, ALL, Some(1_900_000), None), // only 1.5 s since 1 500
        ]);
        assert_eq!(got, [Some(1), Some(1), Some(1), Some(1), Some(1)]);
    }

    #[test]
    fn preference_changes_apply_at_once() {
        let got = check(&[
            (0, ALL, Some(3_000_000), None),
            (100, ALL, Some(3_000_000), Some(0)),
            (200, ALL, Some(3_000_000), Some(1)), // raised, and it fits: at once
            (300, ALL, Some(3_000_000), None),    // raised again: the top fits too
            (400, ALL, Some(700_000), None),      // the estimate drops: down
            (500, ALL, Some(3_000_000), None),    // bandwidth back, no new ask: hold
            (2_600, ALL, Some(3_000_000), None),
        ]);
        assert_eq!(
            got,
            [
                Some(2),
                Some(0),
                Some(1),
                Some(2),
                Some(1),
                Some(1),
                Some(2)
            ]
        );
    }

    #[test]
    fn a_layer_the_publisher_drops_drops_out() {
        let got = check(&[
            (0, ALL, Some(3_000_000), None),
            (100, [true, true, false], Some(3_000_000), None),
            (200, [false, true, false], Some(3_000_000), None),
            (300, [false, false, false], Some(3_000_000), None),
        ]);
        assert_eq!(got, [Some(2), Some(1), Some(1), None]);
    }

    #[test]
    fn the_switch_waits_for_a_keyframe_of_the_target() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerConfig::default());
        assert!(s.update(t0, &layers(ALL), Some(600_000)));
        assert_eq!(s.target(), Some(1));
        assert!(!s.forwards(1), "nothing until a keyframe");
        assert!(
            !s.on_keyframe(0),
            "a keyframe of another layer does not switch"
        );
        assert!(s.on_keyframe(1));
        assert!(s.forwards(1) && !s.forwards(0));
        assert!(!s.on_keyframe(1), "already there");
        assert!(s.update(t0, &layers(ALL), Some(200_000)));
        assert_eq!(s.target(), Some(0));
        assert!(
            s.forwards(1),
            "keeps the old layer until the new one's keyframe"
        );
        assert!(s.on_keyframe(0));
        assert!(s.forwards(0));
    }

    #[test]
    fn a_step_down_holds_a_layer_lower_until_it_expires() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let bw = Some(3_000_000);
        let mut s = LayerSelector::new(LayerConfig::default());
        s.update(at(0), &layers(ALL), bw);
        s.on_keyframe(2);
        s.step_down(at(8_000));
        assert!(s.update(at(0), &layers(ALL), bw));
        assert_eq!(s.target(), Some(1), "one below the current layer");
        s.on_keyframe(1);
        // A second step before the first expires goes further down, not back to 1.
        s.step_down(at(9_000));
        assert!(s.update(at(1_000), &layers(ALL), bw));
        assert_eq!(s.target(), Some(0));
        s.on_keyframe(0);
        s.step_down(at(9_000));
        assert!(
            !s.update(at(1_500), &layers(ALL), bw),
            "nothing below the lowest"
        );
        // The estimate would allow the top all along: still held until 9 s.
        assert!(!s.update(at(8_999), &layers(ALL), bw));
        assert_eq!(s.target(), Some(0));
        // Then the normal climb: the top after it fitted for the hold.
        s.update(at(9_000), &layers(ALL), bw);
        assert_eq!(s.target(), Some(0));
        assert!(s.update(at(11_000), &layers(ALL), bw));
        assert_eq!(s.target(), Some(2));
    }
}
