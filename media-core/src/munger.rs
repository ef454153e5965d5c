//! Sequence-number and timestamp rewriting for one outgoing track.
//!
//! A subscriber's m-line outlives the publisher tracks that feed it: when the source
//! changes (a publisher leaves and another arrives) the player must still see one
//! stream whose sequence numbers advance by one and whose timestamps advance with
//! wall time. The `Munger` keeps an offset per source and re-bases it on a switch.
//!
//! Invariants: output sequence numbers start below 2^16 (a fresh receiver assumes
//! SRTP rollover counter 0), and never repeat or go backwards across a switch.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No packet forwarded yet.
    Fresh,
    /// The next packet comes from a new source; re-base both offsets on it.
    Switching,
    Running,
}

/// Rewrites (extended sequence number, RTP timestamp) from one source at a time.
#[derive(Debug, Clone)]
pub struct Munger {
    state: State,
    seq_offset: u64,
    ts_offset: u32,
    /// Packets of the current source older than the first one forwarded are dropped:
    /// their rewritten numbers would collide with the previous source's.
    first_in_seq: u64,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
}

impl Default for Munger {
    fn default() -> Self {
        Self::new()
    }
}

impl Munger {
    pub fn new() -> Self {
        Munger {
            state: State::Fresh,
            seq_offset: 0,
            ts_offset: 0,
            first_in_seq: 0,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
        }
    }

    /// The next packet will come from a different source (or the same source after
    /// an interruption the subscriber must not see as a jump).
    pub fn switch_source(&mut self) {
        if self.state != State::Fresh {
            self.state = State::Switching;
        }
    }

    /// Rewrites one packet. `None` means drop it (it predates the current source's
    /// first forwarded packet).
    pub fn rewrite(
        &mut self,
        now: Instant,
        in_seq: u64,
        in_ts: u32,
        clock_rate: u32,
    ) -> Option<(u64, u32)> {
        match self.state {
            State::Fresh => {
                // Keep the publisher's 16-bit sequence so captures are easy to follow,
                // but drop its rollover count.
                let out = in_seq & 0xffff;
                self.seq_offset = out.wrapping_sub(in_seq);
                self.ts_offset = 0;
                self.first_in_seq = in_seq;
                self.state = State::Running;
            }
            State::Switching => {
                let next = self.last_out_seq + 1;
                self.seq_offset = next.wrapping_sub(in_seq);
                let elapsed = self
                    .last_out_at
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                let ticks = (elapsed.as_secs_f64() * clock_rate as f64) as u64;
                let ticks = ticks.clamp(1, u32::MAX as u64) as u32;
                let ts_next = self.last_out_ts.wrapping_add(ticks);
                self.ts_offset = ts_next.wrapping_sub(in_ts);
                self.first_in_seq = in_seq;
                self.state = State::Running;
            }
            State::Running => {
                if in_seq < self.first_in_seq {
                    return None;
                }
            }
        }
        let out_seq = in_seq.wrapping_add(self.seq_offset);
        let out_ts = in_ts.wrapping_add(self.ts_offset);
        if out_seq >= self.last_out_seq || self.last_out_at.is_none() {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Some((out_seq, out_ts))
    }
}

/// VP8 PictureID (15-bit) and TL0PICIDX (8-bit) rewriting for one outgoing track,
/// the counterpart of [`Munger`] for the payload descriptor: a decoder that sees the
/// picture id jump when the source or simulcast layer changes would take it for lost
/// pictures. After a switch the ids continue from the last ones sent.
#[derive(Debug, Clone, Default)]
pub struct PictureIdMunger {
    state: PidState,
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: u16,
    last_tl0: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum PidState {
    #[default]
    Fresh,
    Switching,
    Running,
}

const PID_MASK: u16 = 0x7fff;

impl PictureIdMunger {
    pub fn switch_source(&mut self) {
        if self.state != PidState::Fresh {
            self.state = PidState::Switching;
        }
    }

    /// The picture id and TL0PICIDX to send for an incoming packet's.
    pub fn rewrite(&mut self, pid: u16, tl0: Option<u8>) -> (u16, Option<u8>) {
        let pid = pid & PID_MASK;
        let fresh = self.state == PidState::Fresh;
        match self.state {
            PidState::Fresh => {
                self.pid_offset = 0;
                self.tl0_offset = 0;
                self.state = PidState::Running;
            }
            PidState::Switching => {
                self.pid_offset = self.last_pid.wrapping_add(1).wrapping_sub(pid) & PID_MASK;
                if let Some(t) = tl0 {
                    self.tl0_offset = self.last_tl0.wrapping_add(1).wrapping_sub(t);
                }
                self.state = PidState::Running;
            }
            PidState::Running => {}
        }
        let out_pid = pid.wrapping_add(self.pid_offset) & PID_MASK;
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        // Only forward progress counts (packets of one picture share its id; a
        // retransmitted old one must not pull the base back).
        let ahead = out_pid.wrapping_sub(self.last_pid) & PID_MASK;
        if fresh || ahead < 0x4000 {
            self.last_pid = out_pid;
            if let Some(t) = out_tl0 {
                self.last_tl0 = t;
            }
        }
        (out_pid, out_tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One step: (ms since start, switch before this packet?, in_seq, in_ts, expected out).
    type Step = (u64, bool, u64, u32, Option<(u64, u32)>);

    fn check(steps: &[Step]) {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut m = Munger::new();
        for (i, &(ms, switch, seq, ts, want)) in steps.iter().enumerate() {
            if switch {
                m.switch_source();
            }
            let got = m.rewrite(t0 + Duration::from_millis(ms), seq, ts, 48_000);
            assert_eq!(got, want, "step {i}: in ({seq}, {ts})");
        }
    }

    #[test]
    fn passes_through_below_rollover() {
        check(&[
            (0, false, 100, 1000, Some((100, 1000))),
            (20, false, 101, 1960, Some((101, 1960))),
            (40, false, 103, 2920, Some((103, 2920))), // a gap stays a gap (NACK works)
            (41, false, 102, 2440, Some((102, 2440))), // reordered
        ]);
    }

    #[test]
    fn rebases_a_long_running_source_below_rollover() {
        check(&[
            (0, false, 70_000, 5, Some((70_000 - 65_536, 5))),
            (20, false, 70_001, 965, Some((70_001 - 65_536, 965))),
            (21, false, 69_999, 0, None), // older than the first forwarded packet
        ]);
    }

    #[test]
    fn switch_continues_numbering_and_time() {
        check(&[
            (0, false, 10, 0, Some((10, 0))),
            (20, false, 11, 960, Some((11, 960))),
            // New source 1 s later with unrelated numbers: seq continues at 12,
            // timestamp advances by the 980 ms of wall time (47040 ticks at 48 kHz).
            (1000, true, 5000, 777, Some((12, 960 + 47_040))),
            (1020, false, 5001, 777 + 960, Some((13, 960 + 47_040 + 960))),
            (1021, false, 4999, 0, None),
        ]);
    }

    #[test]
    fn switch_before_first_packet_is_fresh() {
        check(&[(0, true, 300, 9, Some((300, 9)))]);
    }

    #[test]
    fn timestamps_wrap() {
        check(&[
            (0, false, 1, u32::MAX - 10, Some((1, u32::MAX - 10))),
            (20, false, 2, 949, Some((2, 949))),
        ]);
    }
}

#[cfg(test)]
mod picture_id_tests {
    use super::*;

    #[test]
    fn picture_ids_continue_across_switches_and_wrap() {
        let mut m = PictureIdMunger::default();
        assert_eq!(m.rewrite(100, Some(7)), (100, Some(7)));
        assert_eq!(
            m.rewrite(100, Some(7)),
            (100, Some(7)),
            "same picture, next packet"
        );
        assert_eq!(m.rewrite(101, Some(8)), (101, Some(8)));
        m.switch_source();
        // Another layer with its own counters continues where the last one stopped.
        assert_eq!(m.rewrite(9000, Some(200)), (102, Some(9)));
        assert_eq!(m.rewrite(9001, Some(201)), (103, Some(10)));
        assert_eq!(
            m.rewrite(9000, Some(200)),
            (102, Some(9)),
            "a late packet keeps its id"
        );
        assert_eq!(
            m.rewrite(9002, None),
            (104, None),
            "no TL0PICIDX in this one"
        );
        m.switch_source();
        assert_eq!(m.rewrite(0x7fff, Some(255)), (105, Some(11)));
        assert_eq!(
            m.rewrite(0, Some(0)),
            (106, Some(12)),
            "15-bit and 8-bit wrap"
        );
        let mut w = PictureIdMunger::default();
        assert_eq!(w.rewrite(0x7fff, Some(255)), (0x7fff, Some(255)));
        assert_eq!(w.rewrite(0, Some(0)), (0, Some(0)));
        w.switch_source();
        assert_eq!(w.rewrite(500, Some(3)), (1, Some(1)));
        // The first id may be anywhere in the 15-bit range.
        let mut f = PictureIdMunger::default();
        assert_eq!(f.rewrite(20_000, Some(9)), (20_000, Some(9)));
        f.switch_source();
        assert_eq!(f.rewrite(1_000, Some(1)), (20_001, Some(10)));
    }
}
