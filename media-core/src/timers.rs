//! One timer structure for all peers of a worker.
//!
//! A binary heap of (deadline, peer). Entries are never removed in place: a peer
//! records the deadline it is scheduled at, and an entry that does not match is
//! stale and skipped. A later deadline never pushes a new entry (the earlier one
//! fires, finds nothing due, and reschedules), so the heap grows only when a
//! deadline moves earlier.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::PeerId;

#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, PeerId)>>,
}

impl TimerQueue {
    /// Schedules `peer` at `at` unless it is already scheduled no later.
    /// `scheduled` is the peer's own record of its earliest live entry.
    pub fn schedule(&mut self, peer: PeerId, at: Instant, scheduled: &mut Option<Instant>) {
        if scheduled.is_none_or(|s| at < s) {
            self.heap.push(Reverse((at, peer)));
            *scheduled = Some(at);
        }
    }

    /// The earliest entry, possibly stale: waking early is always safe.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops one entry due at `now`. The caller checks it against the peer's record.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, PeerId)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earlier_deadline_pushes_later_does_not() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = TimerQueue::default();
        let mut rec = None;
        q.schedule(PeerId(1), ms(100), &mut rec);
        q.schedule(PeerId(1), ms(200), &mut rec); // later: ignored
        assert_eq!(q.len(), 1);
        q.schedule(PeerId(1), ms(50), &mut rec); // earlier: pushed
        assert_eq!(q.len(), 2);
        assert_eq!(rec, Some(ms(50)));
        assert_eq!(q.next_deadline(), Some(ms(50)));
        assert_eq!(q.pop_due(ms(10)), None);
        assert_eq!(q.pop_due(ms(60)), Some((ms(50), PeerId(1))));
        assert_eq!(q.pop_due(ms(60)), None);
        // The 100 ms entry is stale relative to a record of 50 ms; the caller skips it.
        assert_eq!(q.pop_due(ms(100)), Some((ms(100), PeerId(1))));
        assert!(q.is_empty());
    }
}
