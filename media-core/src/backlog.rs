//! `Backlog`: a bound on what one subscriber's video m-line has waiting in str0m's
//! pacer, and the pressure signal that steps its simulcast layer down.
//!
//! With the bandwidth estimator on, str0m's pacer holds every written packet until
//! its rate lets it go, and its queue has no cap: a subscriber whose link, or whose
//! worker, cannot keep up piles up seconds of video (megabytes per subscriber on a
//! saturated worker). Nothing can be taken back out of that queue, so the SFU bounds
//! what it puts in:
//! - **pressure**: the queue holds half the limit, or its oldest packet has waited
//!   `pressure_age`: the m-line's layer steps down (at most once per
//!   `pressure_step`) and may not climb back for `pressure_hold`;
//! - **shed**: a frame would start on a queue of three quarters of the limit, or a
//!   packet would take it over the limit: nothing more is written until the queue
//!   has drained to a quarter, and then only from a keyframe (the munger numbers on
//!   without a gap, so the player sees a clean cut, not loss);
//! - a frame that starts on a queue at or below that quarter is written whole, so a
//!   keyframe bigger than the limit cannot lock a subscriber out: the queue stays
//!   under `max(limit, limit / 4 + one frame)`.
//!
//! The queue size is str0m's last sample of it (`StreamTx::queue_info`, refreshed at
//! each of the subscriber's timeouts) plus everything written since: an
//! over-estimate until the next sample, never an under-estimate.

use std::time::{Duration, Instant};

/// The bound of one video m-line's pacer queue, and the marks derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Bytes the queue may hold at most (but see the whole-frame rule).
    pub limit: usize,
    /// The oldest queued packet has waited this long: the link does not keep up.
    pub pressure_age: Duration,
    /// The shortest time between two steps down.
    pub pressure_step: Duration,
    /// How long a step down holds the layer below where it was.
    pub pressure_hold: Duration,
}

impl BacklogLimits {
    pub fn new(limit: usize) -> Self {
        BacklogLimits {
            limit,
            pressure_age: Duration::from_millis(400),
            pressure_step: Duration::from_secs(1),
            pressure_hold: Duration::from_secs(8),
        }
    }

    fn pressure_mark(&self) -> usize {
        self.limit / 2
    }

    fn shed_mark(&self) -> usize {
        self.limit / 4 * 3
    }

    fn resume_mark(&self) -> usize {
        self.limit / 4
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// The queue is being shed: drop it.
    Drop,
    /// Drop it and shedding starts: the m-line must start again on a keyframe.
    Shed,
}

/// The queue of one video m-line, as far as the SFU can tell.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// When str0m last sampled the queue, and what it held.
    sampled_at: Option<Instant>,
    sampled_bytes: usize,
    oldest: Option<Instant>,
    /// Bytes written since that sample.
    written: usize,
    /// The RTP timestamp of the frame being written.
    frame: Option<u32>,
    /// That frame started on a short queue: it is written whole.
    whole_frame: bool,
    shedding: bool,
    /// Pressure was seen by the last admitted packet.
    pressed: bool,
    /// The last step down.
    stepped_at: Option<Instant>,
}

impl Backlog {
    /// str0m's sample of the queue (`created_at`, bytes, when the oldest unsent
    /// packet was queued). A sample already seen changes nothing.
    pub fn sample(&mut self, at: Instant, bytes: usize, oldest: Option<Instant>) {
        if self.sampled_at == Some(at) {
            return;
        }
        self.sampled_at = Some(at);
        self.sampled_bytes = bytes;
        self.oldest = oldest;
        self.written = 0;
    }

    /// Bytes queued, at most.
    pub fn queued(&self) -> usize {
        self.sampled_bytes + self.written
    }

    /// Whether a packet of `len` payload bytes of the frame with RTP timestamp `ts`
    /// may be written now; counts it if so.
    pub fn admit(&mut self, now: Instant, limits: &BacklogLimits, ts: u32, len: usize) -> Admit {
        let frame_start = self.frame != Some(ts);
        self.frame = Some(ts);
        let queued = self.queued();
        if self.shedding {
            if !(frame_start && queued <= limits.resume_mark()) {
                return Admit::Drop;
            }
            self.shedding = false;
        }
        let waited = self
            .oldest
            .is_some_and(|t| now.saturating_duration_since(t) >= limits.pressure_age);
        self.pressed = waited || queued >= limits.pressure_mark();
        if frame_start {
            self.whole_frame = queued <= limits.resume_mark();
        }
        let over = if frame_start {
            queued >= limits.shed_mark()
        } else {
            !self.whole_frame && queued + len > limits.limit
        };
        if over {
            self.shedding = true;
            self.pressed = true;
            return Admit::Shed;
        }
        self.written += len;
        Admit::Send
    }

    /// True once per `pressure_step` while the queue is under pressure: the caller
    /// steps the layer down.
    pub fn step_down(&mut self, now: Instant, limits: &BacklogLimits) -> bool {
        if !std::mem::take(&mut self.pressed) {
            return false;
        }
        if self
            .stepped_at
            .is_some_and(|t| now.saturating_duration_since(t) < limits.pressure_step)
        {
            return false;
        }
        self.stepped_at = Some(now);
        true
    }

    /// Until when the last step down holds the layer down.
    pub fn held_until(&self, limits: &BacklogLimits) -> Option<Instant> {
        self.stepped_at.map(|t| t + limits.pressure_hold)
    }

    pub fn is_shedding(&self) -> bool {
        self.shedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 160_000;

    /// A fixed origin for virtual time.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn limits() -> BacklogLimits {
        BacklogLimits::new(LIMIT)
    }

    /// Writes one frame of `packets` × `len` bytes; what each packet got.
    fn frame(b: &mut Backlog, now: Instant, ts: u32, packets: usize, len: usize) -> Vec<Admit> {
        (0..packets)
            .map(|_| b.admit(now, &limits(), ts, len))
            .collect()
    }

    #[test]
    fn a_draining_queue_passes_everything() {
        let t0 = origin();
        let mut b = Backlog::default();
        for n in 0..100u32 {
            let now = t0 + Duration::from_millis(33 * n as u64);
            // The pacer keeps up: each sample finds the last frame gone.
            b.sample(now, 0, None);
            assert!(
                frame(&mut b, now, n * 3000, 4, 1200)
                    .iter()
                    .all(|a| *a == Admit::Send)
            );
            assert!(!b.step_down(now, &limits()));
        }
    }

    #[test]
    fn a_queue_that_does_not_drain_is_shed_at_a_frame_start_and_resumes_low() {
        let t0 = origin();
        let mut b = Backlog::default();
        b.sample(t0, 0, None);
        let mut written = 0;
        let mut n = 0u32;
        // No new sample: nothing leaves. Frames of 10 kB until the shed mark.
        loop {
            let got = frame(&mut b, t0, n * 3000, 10, 1000);
            n += 1;
            if got[0] == Admit::Shed {
                assert!(got[1..].iter().all(|a| *a == Admit::Drop));
                break;
            }
            assert!(got.iter().all(|a| *a == Admit::Send), "{got:?}");
            written += 10_000;
        }
        assert_eq!(written, 120_000, "shed at three quarters of the limit");
        assert!(b.queued() <= LIMIT);
        assert!(b.is_shedding());
        // Half drained: still shedding.
        b.sample(t0 + Duration::from_millis(100), 60_000, Some(t0));
        assert_eq!(frame(&mut b, t0, n * 3000, 2, 1000), [Admit::Drop; 2]);
        n += 1;
        // Down to a quarter: the next frame start goes out again.
        b.sample(t0 + Duration::from_millis(200), 40_000, Some(t0));
        assert_eq!(frame(&mut b, t0, n * 3000, 2, 1000), [Admit::Send; 2]);
        assert!(!b.is_shedding());
    }

    #[test]
    fn shedding_ends_only_at_a_frame_start() {
        let t0 = origin();
        let mut b = Backlog::default();
        b.sample(t0, 130_000, None);
        assert_eq!(b.admit(t0, &limits(), 1, 1000), Admit::Shed);
        b.sample(t0 + Duration::from_millis(50), 0, None);
        // Same frame: its head was dropped, its tail is no use.
        assert_eq!(b.admit(t0, &limits(), 1, 1000), Admit::Drop);
        assert_eq!(b.admit(t0, &limits(), 2, 1000), Admit::Send);
    }

    #[test]
    fn a_frame_over_the_limit_is_cut_unless_it_started_on_a_short_queue() {
        let t0 = origin();
        let mut b = Backlog::default();
        // Starts at 100 kB (under the shed mark): cut where it would pass the limit.
        b.sample(t0, 100_000, None);
        let got = frame(&mut b, t0, 1, 100, 1000);
        assert_eq!(got.iter().filter(|a| **a == Admit::Send).count(), 60);
        assert_eq!(got[60], Admit::Shed);
        assert!(b.queued() <= LIMIT);

        // A 200 kB keyframe on an empty queue goes out whole.
        let mut b = Backlog::default();
        b.sample(t0, 0, None);
        let got = frame(&mut b, t0, 1, 200, 1000);
        assert!(got.iter().all(|a| *a == Admit::Send));
        // The next frame finds the queue still full: shed.
        assert_eq!(b.admit(t0, &limits(), 2, 1000), Admit::Shed);
    }

    #[test]
    fn pressure_steps_down_at_most_once_per_step() {
        let t0 = origin();
        let l = limits();
        let mut b = Backlog::default();
        // Half the limit queued: pressure, not yet shedding.
        b.sample(t0, 80_000, None);
        assert_eq!(b.admit(t0, &l, 1, 1000), Admit::Send);
        assert!(b.step_down(t0, &l));
        assert_eq!(b.held_until(&l), Some(t0 + l.pressure_hold));
        let t1 = t0 + Duration::from_millis(500);
        b.sample(t1, 80_000, None);
        assert_eq!(b.admit(t1, &l, 2, 1000), Admit::Send);
        assert!(!b.step_down(t1, &l), "within the step interval");
        let t2 = t0 + l.pressure_step;
        b.sample(t2, 80_000, None);
        assert_eq!(b.admit(t2, &l, 3, 1000), Admit::Send);
        assert!(b.step_down(t2, &l));
    }

    #[test]
    fn an_old_packet_is_pressure_even_on_a_small_queue() {
        let t0 = origin();
        let l = limits();
        let mut b = Backlog::default();
        let now = t0 + l.pressure_age;
        b.sample(now, 5_000, Some(t0));
        assert_eq!(b.admit(now, &l, 1, 1000), Admit::Send);
        assert!(b.step_down(now, &l));
        let later = now + Duration::from_secs(2);
        b.sample(later, 5_000, Some(later - Duration::from_millis(10)));
        assert_eq!(b.admit(later, &l, 2, 1000), Admit::Send);
        assert!(!b.step_down(later, &l), "the queue drains again");
    }
}
