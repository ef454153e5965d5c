//! Jobs: what a worker is asked to do, and the bookkeeping of running them — retries
//! with backoff, the dead-letter decision, the order jobs come due in, and which bus
//! offsets may be committed. Plain and synchronous: time is milliseconds handed in,
//! so the worker's driver owns the clock and the tests use a fake one.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A job as it travels in `transcode.requested` (the envelope's `data.spec`) and sits
/// in its row. Object keys are keys of the node's object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// One audio file → Ogg Opus at the target loudness, with its waveform.
    Transcode {
        input: String,
        /// Outputs go under this prefix: `audio.opus`, `waveform.json`, `waveform.svg`.
        output_prefix: String,
        #[serde(default)]
        target_lufs: Option<f64>,
        #[serde(default)]
        bitrate: Option<i32>,
    },
    /// A recording's audio tracks (its manifest under `recording_prefix`) → one episode,
    /// a stem per speaker, and their waveforms, under `output_prefix`.
    Mixdown {
        recording_prefix: String,
        output_prefix: String,
        #[serde(default)]
        target_lufs: Option<f64>,
        #[serde(default)]
        bitrate: Option<i32>,
    },
}

impl JobSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Transcode { .. } => "transcode",
            JobSpec::Mixdown { .. } => "mixdown",
        }
    }

    /// Keys must be relative and free of `..`: a job names objects, not paths.
    pub fn validate(&self) -> Result<(), String> {
        let (a, b, lufs, bitrate) = match self {
            JobSpec::Transcode {
                input,
                output_prefix,
                target_lufs,
                bitrate,
            } => (input, output_prefix, target_lufs, bitrate),
            JobSpec::Mixdown {
                recording_prefix,
                output_prefix,
                target_lufs,
                bitrate,
            } => (recording_prefix, output_prefix, target_lufs, bitrate),
        };
        for key in [a, b] {
            if key.is_empty()
                || key.starts_with('/')
                || key.split('/').any(|p| p == ".." || p == ".")
            {
                return Err(format!("bad object key {key:?}"));
            }
        }
        if let Some(l) = lufs
            && !(-40.0..=-5.0).contains(l)
        {
            return Err(format!("target_lufs {l} is outside −40…−5"));
        }
        if let Some(b) = bitrate
            && !(6_000..=510_000).contains(b)
        {
            return Err(format!("bitrate {b} is outside 6000…510000 b/s"));
        }
        Ok(())
    }
}

/// Why an attempt failed. Permanent failures (the input is not audio we can read)
/// would fail the same way again; transient ones (the store is away) may not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

impl JobError {
    pub fn reason(&self) -> &str {
        match self {
            JobError::Permanent(r) | JobError::Transient(r) => r,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryIn(Duration),
    DeadLetter,
}

/// Exponential backoff: `base`, 2×, 4×, … capped at `max`; after `max_attempts`
/// attempts (or at once, for a permanent failure) the job goes to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// `attempt` counts from 1 (the attempt that just failed).
    pub fn after_failure(&self, attempt: u32, error: &JobError) -> AfterFailure {
        if matches!(error, JobError::Permanent(_)) || attempt >= self.max_attempts {
            return AfterFailure::DeadLetter;
        }
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        AfterFailure::RetryIn(self.base.saturating_mul(factor).min(self.max))
    }
}

/// Jobs waiting to run, earliest due first (equal times in arrival order). A job id
/// is held at most once: a redelivered request for a job already waiting is ignored.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<std::cmp::Reverse<(u64, u64, String)>>,
    due: HashMap<String, u64>,
    seq: u64,
}

impl Schedule {
    /// Adds `job` due at `at_ms`; an id already waiting keeps the earlier time.
    pub fn add(&mut self, job: &str, at_ms: u64) -> bool {
        if let Some(&t) = self.due.get(job)
            && t <= at_ms
        {
            return false;
        }
        self.seq += 1;
        self.due.insert(job.to_owned(), at_ms);
        self.heap
            .push(std::cmp::Reverse((at_ms, self.seq, job.to_owned())));
        true
    }

    /// The next job due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<String> {
        while let Some(std::cmp::Reverse((at, _, id))) = self.heap.peek().cloned() {
            if self.due.get(&id) != Some(&at) {
                self.heap.pop(); // superseded by an earlier time
                continue;
            }
            if at > now_ms {
                return None;
            }
            self.heap.pop();
            self.due.remove(&id);
            return Some(id);
        }
        None
    }

    /// When the next job comes due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.values().min().copied()
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// Which offsets of a partition may be committed. Jobs finish out of order (one waits
/// for a retry while later ones complete), but committing offset N tells the bus every
/// record up to N is done, so the commit only moves over a run of finished offsets.
#[derive(Debug, Default)]
pub struct CommitTracker {
    partitions: HashMap<i32, BTreeMap<i64, bool>>,
}

impl CommitTracker {
    pub fn received(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .entry(offset)
            .or_insert(false);
    }

    /// Marks an offset finished; returns the highest offset now safe to commit, if
    /// that moved.
    pub fn finished(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        *p.get_mut(&offset)? = true;
        let mut commit = None;
        while let Some((&o, &done)) = p.first_key_value() {
            if !done {
                break;
            }
            p.remove(&o);
            commit = Some(o);
        }
        commit
    }

    /// Offsets received and not finished yet.
    pub fn open(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.values().filter(|d| !**d).count())
            .sum()
    }
}

/// Turns a stream of `(stage, percent)` reports into the few worth writing: every
/// stage change, and otherwise a step of at least `step` percent.
#[derive(Debug)]
pub struct ProgressFilter {
    step: u8,
    last: Option<(String, u8)>,
}

impl ProgressFilter {
    pub fn new(step: u8) -> Self {
        ProgressFilter {
            step: step.max(1),
            last: None,
        }
    }

    pub fn offer(&mut self, stage: &str, percent: u8) -> bool {
        let percent = percent.min(100);
        let keep = match &self.last {
            None => true,
            Some((s, p)) => {
                s != stage || percent >= p.saturating_add(self.step) || (percent == 100 && *p < 100)
            }
        };
        if keep {
            self.last = Some((stage.to_owned(), percent));
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_then_dead_letters() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let t = JobError::Transient("store away".into());
        let delays: Vec<_> = (1..5).map(|a| p.after_failure(a, &t)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 5].map(|s| AfterFailure::RetryIn(Duration::from_secs(s)))
        );
        assert_eq!(p.after_failure(5, &t), AfterFailure::DeadLetter);
        assert_eq!(
            p.after_failure(1, &JobError::Permanent("not audio".into())),
            AfterFailure::DeadLetter
        );
    }

    #[test]
    fn schedule_runs_due_jobs_in_time_then_arrival_order() {
        let mut s = Schedule::default();
        assert!(s.add("b", 100));
        assert!(s.add("a", 50));
        assert!(s.add("c", 100));
        assert!(
            !s.add("a", 70),
            "a later time does not replace an earlier one"
        );
        assert!(s.add("b", 60), "an earlier time does");
        assert_eq!(s.next_due(), Some(50));
        assert_eq!(s.pop_due(49), None);
        assert_eq!(s.pop_due(60).as_deref(), Some("a"));
        assert_eq!(s.pop_due(60).as_deref(), Some("b"));
        assert_eq!(s.pop_due(99), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop_due(100).as_deref(), Some("c"));
        assert!(s.is_empty());
        assert_eq!(s.pop_due(u64::MAX), None, "the superseded b entry is gone");
    }

    #[test]
    fn commits_move_only_over_finished_runs() {
        let mut c = CommitTracker::default();
        for o in 10..14 {
            c.received(0, o);
        }
        c.received(1, 5);
        assert_eq!(c.finished(0, 11), None, "10 is still open");
        assert_eq!(c.finished(0, 12), None);
        assert_eq!(c.finished(0, 10), Some(12));
        assert_eq!(c.finished(1, 5), Some(5), "partitions are independent");
        assert_eq!(c.open(), 1);
        assert_eq!(c.finished(0, 13), Some(13));
        assert_eq!(c.finished(0, 99), None, "never received");
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn progress_keeps_stage_changes_and_steps() {
        let mut f = ProgressFilter::new(10);
        let kept: Vec<_> = [
            ("decode", 0),
            ("decode", 5),
            ("decode", 10),
            ("decode", 12),
            ("resample", 30),
            ("resample", 100),
            ("resample", 100),
        ]
        .into_iter()
        .filter(|(s, p)| f.offer(s, *p))
        .collect();
        assert_eq!(
            kept,
            [
                ("decode", 0),
                ("decode", 10),
                ("resample", 30),
                ("resample", 100)
            ]
        );
    }

    #[test]
    fn specs_round_trip_and_refuse_paths() {
        let spec = JobSpec::Transcode {
            input: "uploads/u1/source".into(),
            output_prefix: "uploads/u1/".into(),
            target_lufs: Some(-16.0),
            bitrate: None,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""kind":"transcode""#), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
        assert!(spec.validate().is_ok());
        let bad = JobSpec::Mixdown {
            recording_prefix: "../etc/".into(),
            output_prefix: "x/".into(),
            target_lufs: None,
            bitrate: None,
        };
        assert!(bad.validate().is_err());
        let loud = JobSpec::Transcode {
            input: "a".into(),
            output_prefix: "b/".into(),
            target_lufs: Some(3.0),
            bitrate: None,
        };
        assert!(loud.validate().unwrap_err().contains("target_lufs"));
    }
}
