use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtp_::Bitrate;

/// Time window for averaging estimate changes.
const ESTIMATE_WINDOW: Duration = Duration::from_secs(3);

/// Estimates recorded within this span share one slot of the window. The estimator
/// may change its estimate on every timeout (hundreds of times a second when
/// feedback is late), and one entry per change (24 bytes each) had no bound: 1024
/// entries per session were seen on a loaded server. Slots keep it at most
/// `SLOTS + 2` entries (the slots of the last window, one pushed before the oldest
/// leaves) whatever the rate.
const SLOT: Duration = Duration::from_millis(100);

/// Slots that fit in the window (a slot leaves once it started more than a window ago).
const SLOTS: usize = (ESTIMATE_WINDOW.as_millis() / SLOT.as_millis()) as usize;

const TOLERANCE: f64 = 0.05;

/// The changed estimates recorded from `start` to `start + SLOT`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    sum: f64,
    count: u32,
}

/// Smooths BWE estimates by averaging over a time window.
pub struct EstimateSmoother {
    slots: VecDeque<Slot>,
    /// The last estimate recorded: a repeat of it is not counted again.
    last: Option<Bitrate>,
    maybe_emit: bool,
    emitted: Option<Bitrate>,
}

impl EstimateSmoother {
    pub fn new() -> Self {
        Self {
            slots: VecDeque::with_capacity(SLOTS + 2),
            last: None,
            maybe_emit: false,
            emitted: None,
        }
    }

    /// Record a new estimate and update the smoothed average.
    pub fn record(&mut self, now: Instant, estimate: Bitrate) {
        // Did value change from previous?
        if self.last != Some(estimate) {
            self.last = Some(estimate);
            self.maybe_emit = true;
            match self.slots.back_mut() {
                Some(s) if now < s.start + SLOT => {
                    s.sum += estimate.as_f64();
                    s.count += 1;
                }
                _ => self.slots.push_back(Slot {
                    start: now,
                    sum: estimate.as_f64(),
                    count: 1,
                }),
            }
        }

        // Remove slots older than the window.
        while let Some(s) = self.slots.front() {
            if now.duration_since(s.start) <= ESTIMATE_WINDOW {
                break;
            }
            if self.slots.len() > 1 {
                self.slots.pop_front();
                self.maybe_emit = true;
                continue;
            }
            // Keep the last estimate alone once the rest of the window is gone
            // (estimates stop coming).
            let last = self.last.map_or(0.0, |b| b.as_f64());
            let s = &mut self.slots[0];
            if s.count != 1 || s.sum != last {
                s.sum = last;
                s.count = 1;
                self.maybe_emit = true;
            }
            break;
        }
    }

    /// Poll for an estimate to emit. Returns Some only when there's a new value to emit.
    pub fn poll(&mut self) -> Option<Bitrate> {
        if !self.maybe_emit {
            return None;
        }

        let (total, count) = self
            .slots
            .iter()
            .fold((0.0, 0), |(t, c), s| (t + s.sum, c + s.count));
        if count == 0 {
            return None;
        }
        let avg = total / count as f64;
        let rate: Bitrate = avg.into();

        // This forces emitting if we have the first ever value, or a last
        // where the rest of the window is gone (estimates stop coming).
        let force = count == 1 && self.emitted != Some(rate);

        // Emit if we deviate enough from previously emitted.
        let deviate = if let Some(emitted) = self.emitted {
            !in_tolerance(emitted, rate)
        } else {
            true
        };

        self.maybe_emit = false;

        // Are we not to emit?
        if !force && !deviate {
            return None;
        }

        self.emitted = Some(rate);
        Some(rate)
    }
}

fn in_tolerance(b1: Bitrate, b2: Bitrate) -> bool {
    let min = b1 * (1.0 - TOLERANCE);
    let max = b1 * (1.0 + TOLERANCE);
    b2 > min && b2 < max
}

#[cfg(test)]
mod test {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn first_estimate_is_emitted_then_only_deviations() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        s.record(t0, Bitrate::kbps(1000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(1000)));
        assert_eq!(s.poll(), None);
        // The average over the window moves to 1020: within 5 %, not emitted.
        s.record(ms(t0, 200), Bitrate::kbps(1040));
        assert_eq!(s.poll(), None);
        // 1000, 1040, 1600: 1213 on average, emitted.
        s.record(ms(t0, 400), Bitrate::kbps(1600));
        assert_eq!(s.poll(), Some(Bitrate::from(3640_000.0 / 3.0)));
    }

    #[test]
    fn a_repeated_estimate_is_counted_once() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        s.record(t0, Bitrate::kbps(1000));
        for i in 1..100 {
            s.record(ms(t0, i), Bitrate::kbps(2000));
        }
        assert_eq!(s.poll(), Some(Bitrate::kbps(1500)));
    }

    #[test]
    fn estimates_older_than_the_window_leave_and_the_last_one_stays() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        s.record(t0, Bitrate::kbps(1000));
        s.record(ms(t0, 500), Bitrate::kbps(3000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(2000)));
        // 1000 left the window: 3000 alone.
        s.record(ms(t0, 3200), Bitrate::kbps(3000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(3000)));
        // Long after, with nothing new, the last estimate is still the average.
        s.record(ms(t0, 9000), Bitrate::kbps(3000));
        assert_eq!(s.poll(), None);
        assert_eq!(s.slots.len(), 1);
    }

    #[test]
    fn the_last_estimate_stays_alone_when_its_slot_held_others() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        s.record(t0, Bitrate::kbps(1000));
        s.record(ms(t0, 10), Bitrate::kbps(2000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(1500)));
        // The slot is out of the window; only the last estimate counts now.
        s.record(ms(t0, 3500), Bitrate::kbps(2000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(2000)));
    }

    #[test]
    fn a_change_after_a_long_plateau_is_not_averaged_with_it() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        s.record(t0, Bitrate::kbps(1000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(1000)));
        s.record(ms(t0, 5000), Bitrate::kbps(2000));
        assert_eq!(s.poll(), Some(Bitrate::kbps(2000)));
        assert_eq!(s.slots.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_however_often_the_estimate_changes() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        let capacity = s.slots.capacity();
        // A new estimate every millisecond for 10 s.
        for i in 0..10_000u64 {
            s.record(ms(t0, i), Bitrate::kbps(1000 + i % 7));
            assert!(s.slots.len() <= SLOTS + 1, "{} slots", s.slots.len());
        }
        assert_eq!(s.slots.capacity(), capacity);
        // The average is over the last 3 s: 1000..1006 evenly.
        let avg = s.poll().unwrap().as_f64();
        assert!((avg - 1_003_000.0).abs() < 100.0, "{avg}");
    }
}
