//! A request body must keep coming: a client that stops sending for `idle`, or whose
//! average rate after the first `idle` is below `min_bytes_per_sec`, holds a
//! connection slot, a handler and (for an upload) a spool file for nothing. The
//! listener wraps every request body in [`PacedBody`]; reading a body that stalls
//! fails with [`BodyStalled`], which handlers answer with `408 body_too_slow`.
//!
//! [`Pace`] is the rule, plain and with the time passed in; [`PacedBody`] drives it
//! with a timer while a handler reads.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The limits of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest wait for the next bytes; also the grace before the rate counts.
    pub idle: Duration,
    pub min_bytes_per_sec: u64,
}

/// Why a body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyStalled {
    #[error("the request body stopped: nothing arrived for {0} s")]
    Idle(u64),
    #[error("the request body is too slow: under {0} bytes a second")]
    TooSlow(u64),
}

/// How one body is going.
#[derive(Debug, Clone)]
pub struct Pace {
    limits: BodyLimits,
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(limits: BodyLimits, now: Instant) -> Pace {
        Pace {
            limits,
            started: now,
            last: now,
            bytes: 0,
        }
    }

    pub fn received(&mut self, n: usize, now: Instant) {
        self.bytes += n as u64;
        self.last = now;
    }

    /// When the body is cut off unless more arrives first.
    pub fn deadline(&self) -> Instant {
        let idle = self.last + self.limits.idle;
        let rate = match self.limits.min_bytes_per_sec {
            0 => return idle,
            r => {
                // The moment the average falls under the rate, never before the grace.
                let covered = Duration::from_secs_f64(self.bytes as f64 / r as f64);
                (self.started + covered).max(self.started + self.limits.idle)
            }
        };
        idle.min(rate)
    }

    pub fn check(&self, now: Instant) -> Result<(), BodyStalled> {
        if now >= self.last + self.limits.idle {
            return Err(BodyStalled::Idle(self.limits.idle.as_secs()));
        }
        let elapsed = now.duration_since(self.started);
        let r = self.limits.min_bytes_per_sec;
        if r > 0
            && elapsed >= self.limits.idle
            && (self.bytes as f64) <= r as f64 * elapsed.as_secs_f64()
        {
            return Err(BodyStalled::TooSlow(r));
        }
        Ok(())
    }
}

/// A body read under a [`Pace`].
pub struct PacedBody<B> {
    inner: B,
    limits: BodyLimits,
    pace: Option<Pace>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl<B> PacedBody<B> {
    pub fn new(inner: B, limits: BodyLimits) -> PacedBody<B> {
        PacedBody {
            inner,
            limits,
            pace: None,
            timer: None,
            failed: false,
        }
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // The clock starts when a handler first reads, not when the header arrived.
        let limits = this.limits;
        let pace = this
            .pace
            .get_or_insert_with(|| Pace::new(limits, Instant::now()));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    pace.received(data.len(), Instant::now());
                }
                this.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let mut deadline = pace.deadline();
                loop {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                    timer.as_mut().reset(deadline.into());
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    if let Err(stalled) = pace.check(now) {
                        this.failed = true;
                        return Poll::Ready(Some(Err(Box::new(stalled))));
                    }
                    // Woken at a deadline rounded early: wait a little more.
                    deadline = pace.deadline().max(now + Duration::from_millis(1));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The stall behind a body error, if that is what it was.
pub fn stalled(e: &(dyn std::error::Error + 'static)) -> Option<BodyStalled> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<BodyStalled>() {
            return Some(*s);
        }
        cur = err.source();
    }
    None
}

/// The API's answer to a stalled body.
pub fn stalled_error(s: BodyStalled) -> signaling::ApiError {
    signaling::ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "body_too_slow",
        format!("{s}; send it again on a better connection"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        idle: Duration::from_secs(10),
        min_bytes_per_sec: 1000,
    };

    #[test]
    fn a_body_that_stops_is_cut_off_after_the_idle_time() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        p.received(50_000, t0 + Duration::from_secs(1));
        assert_eq!(p.check(t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(p.deadline(), t0 + Duration::from_secs(11));
        assert_eq!(
            p.check(t0 + Duration::from_secs(11)),
            Err(BodyStalled::Idle(10))
        );
    }

    #[test]
    fn a_trickle_under_the_rate_is_cut_off_once_the_grace_is_over() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        // 500 bytes a second, a chunk every second: never idle, always too slow.
        for s in 1..=9 {
            p.received(500, t0 + Duration::from_secs(s));
            assert_eq!(p.check(t0 + Duration::from_secs(s)), Ok(()), "grace, {s} s");
        }
        p.received(500, t0 + Duration::from_secs(10));
        assert_eq!(p.deadline(), t0 + Duration::from_secs(10));
        assert_eq!(
            p.check(t0 + Duration::from_secs(10)),
            Err(BodyStalled::TooSlow(1000))
        );
    }

    #[test]
    fn a_steady_body_is_never_cut_off() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        for s in 1..=600 {
            let now = t0 + Duration::from_secs(s);
            p.received(2000, now);
            assert_eq!(p.check(now), Ok(()), "{s} s");
            assert!(p.deadline() > now);
        }
    }
}
