//! A media socket's receive buffer, sized in milliseconds of the worker's own
//! incoming traffic rather than in megabytes: a worker that falls behind (its core
//! taken, or more work than it can do) should drop what it cannot read within that
//! time, not turn a full buffer into a second of latency for every peer.
//!
//! Sans-IO: the worker reports the bytes it received per measurement window; the
//! sizer answers with a new size when the traffic moved enough to matter. The kernel
//! doubles what it is given (bookkeeping) and caps it at `net.core.rmem_max`.

use std::time::Duration;

/// Never smaller: a burst of a few hundred datagrams (publishers' keyframes and the
/// players' feedback arriving together) must fit even on an idle worker.
pub const FLOOR: usize = 256 * 1024;
/// Never larger, whatever the traffic.
pub const CEILING: usize = 8 * 1024 * 1024;

/// Sizes one socket's receive buffer to `ms` milliseconds of its traffic.
#[derive(Debug)]
pub struct RecvBufferSizer {
    ms: u32,
    current: usize,
}

impl RecvBufferSizer {
    /// Starts at [`FLOOR`] (what the socket is bound with).
    pub fn new(ms: u32) -> Self {
        RecvBufferSizer { ms, current: FLOOR }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The size to set after `bytes` arrived over `window`, when it differs from the
    /// current one by more than a quarter (so steady traffic does not resize it).
    pub fn resize(&mut self, bytes: u64, window: Duration) -> Option<usize> {
        let secs = window.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let wanted = (bytes as f64 / secs * f64::from(self.ms) / 1000.0) as usize;
        let wanted = wanted.clamp(FLOOR, CEILING);
        let (lo, hi) = (
            self.current - self.current / 4,
            self.current + self.current / 4,
        );
        if (lo..=hi).contains(&wanted) {
            return None;
        }
        self.current = wanted;
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn follows_the_traffic_within_its_bounds() {
        let mut s = RecvBufferSizer::new(100);
        // Idle and light traffic stay at the floor.
        assert_eq!(s.resize(0, SEC), None);
        assert_eq!(s.resize(1_000_000, SEC), None);
        // 40 MB/s: 100 ms of it is 4 MB.
        assert_eq!(s.resize(40_000_000, SEC), Some(4_000_000));
        assert_eq!(s.current(), 4_000_000);
        // A change under a quarter leaves it alone; a bigger one follows.
        assert_eq!(s.resize(45_000_000, SEC), None);
        assert_eq!(s.resize(20_000_000, SEC), Some(2_000_000));
        // Capped both ways.
        assert_eq!(s.resize(1_000_000_000, SEC), Some(CEILING));
        assert_eq!(s.resize(0, SEC), Some(FLOOR));
        // The window's length counts: 4 MB in half a second is 8 MB/s.
        let mut s = RecvBufferSizer::new(100);
        assert_eq!(s.resize(4_000_000, SEC / 2), Some(800_000));
        assert_eq!(s.resize(1, Duration::ZERO), None);
    }
}
