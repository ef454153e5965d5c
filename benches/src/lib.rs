//! # streamcore-benches
//!
//! How StreamCore measures itself (see `docs/benchmarks.md` for the commands and the
//! latest numbers, and `shared/BENCHMARKS.md` for the method):
//!
//! - `benches/b0_inproc.rs` (B0, `cargo bench -p streamcore-benches`): one
//!   publisher → N subscribers through `media_core::Sfu` in memory, with str0m client
//!   peers and virtual time; ns and heap allocations per forwarded packet on the SFU
//!   side, plus the SRTP-protect floor.
//! - `src/bin/sc-loadgen.rs` (B1 audio, B2 video): the real `streamcore serve`
//!   process pinned to core 0, joined over WHIP/WHEP from a str0m load generator
//!   pinned to core 1; CPU-µs per forwarded packet from `/proc`, RSS per subscriber,
//!   loss, and the SRTP-protect + `send_to` floor measured in the same run; with
//!   `--servers streamcore,janus`, the same ladders against Janus 1.1.2 (`janus.rs`).
//! - `src/bin/sc-roombench.rs`, `sc-eventbench.rs`, `sc-apibench.rs`: rooms, events,
//!   the control API (each with its baseline in the same run).
//! - `src/bin/sc-recbench.rs`: what a recording adds to forwarding, and recorded
//!   tracks per core against a raw append of the same bytes.
//! - `src/bin/sc-transportbench.rs`: server CPU per forwarded packet and added latency
//!   for subscribers over ICE-TCP, against the same over UDP in the same run.
//!
//! This library holds what they share.

pub mod janus;
pub mod plot;
pub mod procfs;
pub mod server;
pub mod srtp;

// B0's harness lives in its own small crate, so the instruction-count test can build
// it without the server.
pub use streamcore_fanout::{alloc, inmem, shape};

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                n: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        }
    }

    /// "median (min–max)" with `decimals` digits; just the value for one sample.
    pub fn show(&self, decimals: usize) -> String {
        if self.n == 0 {
            return "–".into();
        }
        if self.n == 1 || self.min == self.max {
            return format!("{:.*}", decimals, self.median);
        }
        format!(
            "{:.*} ({:.*}–{:.*})",
            decimals, self.median, decimals, self.min, decimals, self.max
        )
    }
}

/// A fixed-bucket latency histogram: 10 µs buckets up to 500 ms, then one overflow.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; Self::BUCKETS + 1],
            count: 0,
        }
    }
}

impl Histogram {
    const BUCKET_NS: u64 = 10_000;
    const BUCKETS: usize = 50_000;

    pub fn record(&mut self, ns: u64) {
        let i = ((ns / Self::BUCKET_NS) as usize).min(Self::BUCKETS);
        self.buckets[i] += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.count = 0;
    }

    /// Adds what `other` recorded.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The `q` quantile (0..=1) in ms, at bucket resolution (upper edge).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= target {
                return ((i as u64 + 1) * Self::BUCKET_NS) as f64 / 1e6;
            }
        }
        f64::INFINITY
    }
}

/// Polls `f` every `every` until it holds or `limit` has passed; its last answer.
pub async fn wait_until(
    limit: std::time::Duration,
    every: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(Summary::of(&[1.0, 2.0]).median, 1.5);
        assert_eq!(Summary::of(&[]).show(1), "–");
    }

    #[test]
    fn histogram() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        assert!((h.quantile_ms(0.5) - 0.05).abs() < 0.011);
        assert!((h.quantile_ms(0.99) - 0.1).abs() < 0.011);
    }
}
