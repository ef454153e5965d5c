//! A media worker's load: the share of wall time its thread spends working (not
//! waiting for a datagram, a command or a timer), per one-second window. Admission
//! control reads it: a worker over its limit takes no new peers (`node_full`, 503
//! with `Retry-After`), so a saturated worker degrades for the newcomer instead of
//! queueing for everyone.
//!
//! Sans-IO: the worker loop reports each turn's busy time with its own clock; the
//! figure is published through an atomic the HTTP side reads without a round trip
//! to the worker.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long one measurement spans.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Busy time over windows of [`WINDOW`].
#[derive(Debug)]
pub struct LoadMeter {
    window_start: Instant,
    busy: Duration,
}

impl LoadMeter {
    pub fn new(now: Instant) -> Self {
        LoadMeter {
            window_start: now,
            busy: Duration::ZERO,
        }
    }

    /// Adds one loop turn's work, ending at `now`. When a window closes, its load in
    /// per mille (0–1000).
    pub fn record(&mut self, busy: Duration, now: Instant) -> Option<u32> {
        self.busy += busy;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let permille = (self.busy.as_secs_f64() / elapsed.as_secs_f64() * 1000.0).round();
        self.window_start = now;
        self.busy = Duration::ZERO;
        Some((permille as u32).min(1000))
    }
}

/// A worker's last measured load, shared with whoever admits new peers.
#[derive(Debug, Default)]
pub struct SharedLoad(AtomicU32);

impl SharedLoad {
    pub fn set(&self, permille: u32) {
        self.0.store(permille, Relaxed);
    }

    /// Per mille of one core.
    pub fn permille(&self) -> u32 {
        self.0.load(Relaxed)
    }

    /// True while the worker may take another peer under `limit_percent` (100: always).
    pub fn admits(&self, limit_percent: u8) -> bool {
        limit_percent >= 100 || self.permille() < u32::from(limit_percent) * 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_busy_time_over_the_window() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LoadMeter::new(t0);
        assert_eq!(m.record(Duration::from_millis(300), ms(400)), None);
        assert_eq!(m.record(Duration::from_millis(200), ms(900)), None);
        // The window closes on the first turn past a second: 750 ms of 1000.
        assert_eq!(m.record(Duration::from_millis(250), ms(1000)), Some(750));
        // A new window starts there; an idle second reads as 0.
        assert_eq!(m.record(Duration::ZERO, ms(2000)), Some(0));
        // A late wake-up stretches the window; the ratio stays a share of it.
        assert_eq!(m.record(Duration::from_millis(500), ms(4000)), Some(250));
        // Never over a whole core, even when a turn ran past the window.
        assert_eq!(m.record(Duration::from_millis(1500), ms(5000)), Some(1000));
    }

    #[test]
    fn admission_follows_the_limit() {
        let load = SharedLoad::default();
        assert!(load.admits(90));
        load.set(899);
        assert!(load.admits(90));
        load.set(900);
        assert!(!load.admits(90));
        assert!(load.admits(100), "100 % never refuses");
        load.set(1000);
        assert!(load.admits(100));
        assert!(!load.admits(1));
    }
}
