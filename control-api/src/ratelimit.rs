//! Fixed-window attempt counters keyed by a string (an email, an IP address).
//!
//! Deterministic and clock-free: callers pass `now`. Used to slow down password
//! guessing, reset-mail flooding and pairing-code guessing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    slots: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for `key`; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut slots) = self.slots.lock() else {
            return Ok(()); // a poisoned limiter must not lock everyone out
        };
        if slots.len() > 100_000 {
            let window = self.window;
            slots.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let slot = slots.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0);
        }
        if slot.1 >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(slot.0)));
        }
        slot.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_window() {
        let l = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("a", t0).is_ok());
        assert_eq!(
            l.check("a", t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert!(l.check("b", t0).is_ok(), "keys are independent");
        assert!(
            l.check("a", t0 + Duration::from_secs(60)).is_ok(),
            "a new window"
        );
    }
}
