//! Whether a WebSocket's peer is still there: the node pings a quiet socket and
//! closes one that stays silent (no frame at all, not even the pong a browser sends
//! by itself) for the idle timeout. A half-open TCP connection (a phone that lost its
//! network, a client that stopped reading) would otherwise hold its socket, its quota
//! and its room seat for ever.
//!
//! Plain state with the time passed in: the socket loops ask when to wake and what to
//! do then.

use std::time::{Duration, Instant};

/// What a socket loop does when [`Liveness::wake_at`] comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a ping frame.
    Ping,
    /// Nothing heard for the idle timeout: close the socket.
    Idle,
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Liveness {
    idle: Duration,
    last_heard: Instant,
    next_ping: Instant,
}

impl Liveness {
    /// Pings come every third of `idle`, so a live peer answers two or three times
    /// before it could be taken for gone.
    pub fn new(now: Instant, idle: Duration) -> Liveness {
        Liveness {
            idle,
            last_heard: now,
            next_ping: now + idle / 3,
        }
    }

    /// A frame arrived from the peer (any frame: text, pong, ping).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    pub fn wake_at(&self) -> Instant {
        self.next_ping.min(self.last_heard + self.idle)
    }

    pub fn due(&mut self, now: Instant) -> Due {
        if now >= self.last_heard + self.idle {
            return Due::Idle;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.idle / 3;
            return Due::Ping;
        }
        Due::Nothing
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_pinged_then_closed_a_talking_one_never() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut silent = Liveness::new(t0, 60 * s);
        assert_eq!(silent.wake_at(), t0 + 20 * s);
        assert_eq!(silent.due(t0 + 10 * s), Due::Nothing);
        assert_eq!(silent.due(t0 + 20 * s), Due::Ping);
        assert_eq!(silent.wake_at(), t0 + 40 * s);
        assert_eq!(silent.due(t0 + 40 * s), Due::Ping);
        assert_eq!(
            silent.wake_at(),
            t0 + 60 * s,
            "the idle deadline comes before the next ping"
        );
        assert_eq!(silent.due(t0 + 60 * s), Due::Idle);

        let mut talking = Liveness::new(t0, 60 * s);
        for minute in 1..100u32 {
            let now = t0 + 20 * s * minute;
            assert_ne!(talking.due(now), Due::Idle, "at {minute}");
            talking.heard(now); // its pong
        }
    }
}
