//! The transcode worker: runs the jobs of `transcode.jobs` — uploads' transcodes and
//! recordings' mixdowns — against the object store, and writes every step as a job
//! row change with its event (claim, progress, result, retry, dead letter).
//!
//! Where jobs come from: `transcode.requested` on the bus (from the control API's
//! outbox, or from anyone producing to the topic: a request for an unknown job id
//! creates its row), and, at start, the database's unfinished jobs (the in-process bus
//! keeps nothing across a restart; Kafka redelivers what was not committed).
//!
//! Invariants:
//! - A job runs on one worker at a time: it is claimed in the database with a lease,
//!   renewed while it runs; a worker that dies loses its jobs when the lease runs out.
//! - A request's offset is committed only once its job is completed or dead-lettered
//!   (and only over a run of such offsets: `transcoder::jobs::CommitTracker`), so a
//!   crash never loses a job.
//! - A failed attempt is retried after a backoff; a permanent failure (the input is
//!   not audio we decode) or the last attempt goes to `transcode.dead_letter` with the
//!   reason. The worker itself keeps running whatever a job does.
//!
//! The bookkeeping (retry policy, schedule, commits, progress filter) is the sans-IO
//! `transcoder::jobs`; this module is its driver.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control_api::AppState;
use control_api::routes::jobs::{Objects, job_event};
use control_api::routes::recordings::BoxFuture;
use control_api::store::{Job, JobChange, Store};
use events::{Delivery, Envelope, EventType, SeenIds, Topic};
use recorder::Store as ObjectStore;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use transcoder::jobs::{AfterFailure, CommitTracker, ProgressFilter, Schedule};
use transcoder::{JobError, JobSpec, RetryPolicy, TranscodeError};

use crate::config::Settings;
use crate::metrics::Metrics;

/// The consumer group of every worker: each request goes to one of them.
pub const GROUP: &str = "streamcore-transcoder";

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub retry: RetryPolicy,
    pub lease: Duration,
    pub scratch: PathBuf,
}

impl WorkerConfig {
    pub fn from_settings(s: &Settings) -> WorkerConfig {
        WorkerConfig {
            retry: RetryPolicy {
                max_attempts: s.worker.max_attempts,
                base: Duration::from_millis(s.worker.backoff_base_ms),
                max: Duration::from_secs(s.worker.backoff_max_secs),
            },
            lease: Duration::from_secs(s.worker.lease_secs),
            scratch: s.scratch_dir(),
        }
    }
}

/// The object store as the control API sees it (uploads in, results out).
#[derive(Debug, Clone)]
pub struct StoreObjects(pub Arc<ObjectStore>);

/// How long a presigned download URL works: a podcast app or player keeps reading
/// ranges from where it was sent (pauses included) before it asks the node again.
const PRESIGNED_TTL: Duration = Duration::from_secs(3600);

impl Objects for StoreObjects {
    fn put_bytes<'a>(&'a self, key: &'a str, data: Vec<u8>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.0.put_bytes(key, data).await.map_err(|e| e.to_string()) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.0.delete(key).await.map_err(|e| e.to_string()) })
    }

    fn copy<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { self.0.copy(from, to).await.map_err(|e| e.to_string()) })
    }

    fn presigned_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            self.0
                .presigned_get(key, PRESIGNED_TTL)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { self.0.put_file(key, path).await.map_err(|e| e.to_string()) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            self.0
                .get(key)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            self.0
                .delete_prefix(prefix)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(u64, String)>, String>> {
        Box::pin(async move { self.0.head(key).await.map_err(|e| e.to_string()) })
    }

    fn get_range<'a>(
        &'a self,
        key: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<axum::body::Bytes, String>> {
        Box::pin(async move {
            self.0
                .get_range(key, range)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn get_stream<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(u64, control_api::routes::jobs::ByteStream), String>> {
        use futures_util::TryStreamExt;
        Box::pin(async move {
            let (size, stream) = self.0.get_stream(key).await.map_err(|e| e.to_string())?;
            let stream: control_api::routes::jobs::ByteStream =
                Box::pin(stream.map_err(|e| e.to_string()));
            Ok((size, stream))
        })
    }
}

/// A running worker. Call [`RunningWorker::shutdown`].
pub struct RunningWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RunningWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningWorker")
    }
}

impl RunningWorker {
    /// Subscribes to `transcode.jobs` (before the relay publishes anything, so no
    /// request is missed) and starts the loop.
    pub fn start(
        api: &AppState,
        store: Arc<ObjectStore>,
        config: WorkerConfig,
        metrics: Metrics,
    ) -> anyhow::Result<RunningWorker> {
        std::fs::create_dir_all(&config.scratch)?;
        let sub = api.bus.subscribe(GROUP, &[Topic::TranscodeJobs])?;
        let (stop, stop_rx) = watch::channel(false);
        let worker = Worker {
            api: api.clone(),
            store,
            config,
            metrics,
            schedule: Schedule::default(),
            commits: CommitTracker::default(),
            offsets: HashMap::new(),
            seen: SeenIds::new(50_000),
            running: None,
        };
        info!(worker = %api.node_id, "transcode worker started");
        let task = tokio::spawn(worker.run(sub, stop_rx));
        Ok(RunningWorker { stop, task })
    }

    /// Stops taking jobs and waits up to `grace` for the one running; a job still
    /// running then is left to its lease (taken up again at the next start).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut t = self.task;
        if tokio::time::timeout(grace, &mut t).await.is_err() {
            warn!(
                "a transcode job was still running at shutdown; it is taken up again after its lease"
            );
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The outcome of one attempt, as the attempt's task hands it back.
struct Attempt {
    job: Job,
    outcome: Result<Value, JobError>,
}

struct Worker {
    api: AppState,
    store: Arc<ObjectStore>,
    config: WorkerConfig,
    metrics: Metrics,
    schedule: Schedule,
    commits: CommitTracker,
    /// The uncommitted deliveries that asked for each job.
    offsets: HashMap<String, Vec<Delivery>>,
    seen: SeenIds,
    running: Option<(String, tokio::task::JoinHandle<Attempt>)>,
}

impl Worker {
    async fn run(mut self, mut sub: events::Subscription, mut stop: watch::Receiver<bool>) {
        self.recover().await;
        loop {
            let wake = self.schedule.next_due().map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
            });
            let idle = self.running.is_none();
            tokio::select! {
                _ = stop.changed() => break,
                d = sub.next() => match d {
                    Ok(d) => self.on_delivery(&sub, d).await,
                    Err(events::BusError::Closed) => break,
                    Err(e) => {
                        warn!(error = %e, "transcode worker: bus error; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                done = async { self.running.as_mut().map(|(_, t)| t).expect("guarded").await }, if !idle => {
                    self.running = None;
                    self.metrics.jobs_running.set(0);
                    match done {
                        Ok(a) => self.finish(&sub, a).await,
                        Err(e) => warn!(error = %e, "a transcode attempt's task died; its lease runs out and it is claimed again"),
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if idle && wake.is_some() => {
                    self.start_due(&sub).await;
                }
            }
        }
        // A running attempt is waited for (bounded by the shutdown grace), so its
        // result is written rather than redone.
        if let Some((_, t)) = self.running.take()
            && let Ok(a) = t.await
        {
            self.finish(&sub, a).await;
        }
    }

    /// Unfinished jobs in the database are scheduled: the in-process bus does not
    /// keep requests across a restart.
    async fn recover(&mut self) {
        match self.api.db.open_jobs(10_000).await {
            Ok(jobs) => {
                let now = now_ms();
                for j in &jobs {
                    self.schedule.add(&j.id, now);
                }
                if !jobs.is_empty() {
                    info!(jobs = jobs.len(), "unfinished transcode jobs scheduled");
                }
            }
            Err(e) => warn!(error = %e, "listing unfinished jobs at start failed"),
        }
    }

    async fn on_delivery(&mut self, sub: &events::Subscription, d: Delivery) {
        self.commits.received(d.partition, d.offset);
        if !self
            .api
            .event_key
            .verify(&d.payload, d.signature.as_deref())
        {
            // Only a holder of the event key may have a job run (a job reads and
            // writes the object store).
            warn!(partition = d.partition, offset = d.offset, key = %d.key, "transcode.jobs: record without a valid signature ignored");
            return self.done_with(sub, &d);
        }
        let env = match Envelope::from_slice(&d.payload) {
            Ok(env) => env,
            Err(e) => {
                warn!(offset = d.offset, error = %e, "transcode.jobs: unreadable record skipped");
                return self.done_with(sub, &d);
            }
        };
        if env.event_type() != Some(EventType::TranscodeRequested) || !self.seen.first_time(&env.id)
        {
            return self.done_with(sub, &d);
        }
        let Some(job_id) = env.data["job_id"].as_str().map(str::to_owned) else {
            warn!(event = %env.id, "transcode.requested without a job_id: dead-lettered");
            self.write(vec![self.dead_letter_event(
                &format!("event-{}", env.id),
                None,
                0,
                "the request has no job_id",
                &env.data,
            )])
            .await;
            return self.done_with(sub, &d);
        };
        // A request from outside the control API: its row is made here.
        let job = match self.ensure_row(&job_id, &env.data).await {
            Row::Ready(j) => *j,
            Row::Refused => return self.done_with(sub, &d),
            Row::Unavailable => return, // the database is away: the offset stays uncommitted
        };
        if job.is_final() {
            return self.done_with(sub, &d);
        }
        self.offsets.entry(job_id.clone()).or_default().push(d);
        if self.running.as_ref().is_none_or(|(id, _)| *id != job_id) {
            self.schedule.add(&job_id, now_ms());
        }
    }

    async fn ensure_row(&self, id: &str, data: &Value) -> Row {
        match self.api.db.job(id).await {
            Ok(Some(j)) => return Row::Ready(Box::new(j)),
            Ok(None) => {}
            Err(e) => {
                warn!(job = id, error = %e, "reading a job failed; its request is redelivered later");
                return Row::Unavailable;
            }
        }
        if let Some(why) = self.outside_request_refusal(data).await {
            warn!(job = id, reason = %why, "transcode.requested refused: dead-lettered");
            let owner = data["owner_id"].as_str();
            self.write(vec![self.dead_letter_event(id, owner, 0, &why, data)])
                .await;
            return Row::Refused;
        }
        let spec = &data["spec"];
        let job = Job::queued(
            id.to_owned(),
            spec["kind"].as_str().unwrap_or("unknown"),
            data["owner_id"].as_str().map(str::to_owned),
            data["recording_id"].as_str().map(str::to_owned),
            spec.to_string(),
            control_api::auth::now_millis(),
        );
        match self.api.db.create_job(&job, vec![]).await {
            Ok(_) => match self.api.db.job(id).await {
                Ok(Some(j)) => Row::Ready(Box::new(j)),
                _ => Row::Unavailable,
            },
            Err(e) => {
                warn!(job = id, error = %e, "creating a job's row failed; its request is redelivered later");
                Row::Unavailable
            }
        }
    }

    /// Why a request made outside the control API (it has no job row yet) may not run:
    /// what it names must belong to whom it claims. With an owner, a transcode's input
    /// and output lie under `uploads/<owner>/`, and a mixdown's under the owner's
    /// recording it names; without one, nothing under `uploads/` or `podcasts/` (users' files).
    async fn outside_request_refusal(&self, data: &Value) -> Option<String> {
        let spec = &data["spec"];
        let owner = data["owner_id"].as_str();
        let key = |field: &str| spec[field].as_str().unwrap_or_default().to_owned();
        let clean = |k: &str| {
            !k.is_empty() && !k.starts_with('/') && !k.split('/').any(|s| s == ".." || s == ".")
        };
        if let Some(owner) = owner {
            match self.api.db.user_by_id(owner).await {
                Ok(Some(_)) => {}
                Ok(None) => return Some(format!("owner {owner} has no account")),
                Err(e) => return Some(format!("owner {owner} could not be checked: {e}")),
            }
        }
        match (spec["kind"].as_str(), owner) {
            (Some("transcode"), owner) => {
                let (input, output) = (key("input"), key("output_prefix"));
                if !clean(&input) || !clean(&output) {
                    return Some("input and output_prefix must be plain object keys".into());
                }
                let inside = |k: &str| match owner {
                    Some(o) => k.starts_with(&format!("uploads/{o}/")),
                    // Users' files: uploads, and podcast episodes and artwork.
                    None => !k.starts_with("uploads/") && !k.starts_with("podcasts/"),
                };
                if !inside(&input) || !inside(&output) {
                    return Some(match owner {
                        Some(o) => format!("a job of {o} reads and writes only under uploads/{o}/"),
                        None => "a job without an owner may not touch uploads/ or podcasts/".into(),
                    });
                }
                None
            }
            (Some("mixdown"), Some(owner)) => {
                let Some(rec_id) = data["recording_id"].as_str() else {
                    return Some("a mixdown names its recording_id".into());
                };
                let rec = match self.api.db.recording(rec_id).await {
                    Ok(Some(r)) if r.owner_id == owner => r,
                    Ok(_) => return Some(format!("recording {rec_id} is not {owner}'s")),
                    Err(e) => return Some(format!("recording {rec_id} could not be checked: {e}")),
                };
                let prefix = format!("{}/{}/", rec.sfu_room, rec.id);
                let output = key("output_prefix");
                if key("recording_prefix") != prefix
                    || !clean(&output)
                    || !output.starts_with(&format!("{prefix}mixdown/"))
                {
                    return Some(format!(
                        "a mixdown of {rec_id} reads {prefix} and writes under {prefix}mixdown/"
                    ));
                }
                None
            }
            (Some("mixdown"), None) => Some("a mixdown needs an owner_id".into()),
            // An unknown kind fails when it runs, as before.
            _ => None,
        }
    }

    /// Marks a delivery handled and commits as far as that allows.
    fn done_with(&mut self, sub: &events::Subscription, d: &Delivery) {
        if let Some(upto) = self.commits.finished(d.partition, d.offset) {
            let mut at = d.clone();
            at.offset = upto;
            if let Err(e) = sub.commit(&at) {
                warn!(error = %e, "committing transcode.jobs offsets failed; they are redelivered and skipped");
            }
        }
    }

    async fn start_due(&mut self, sub: &events::Subscription) {
        let Some(id) = self.schedule.pop_due(now_ms()) else {
            return;
        };
        let now = control_api::auth::now_millis();
        let lease_until = now + self.config.lease.as_millis() as i64;
        let claimed = match self
            .api
            .db
            .claim_job(&id, &self.api.node_id, now, lease_until)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(job = %id, error = %e, "claiming a job failed; trying again in 1 s");
                self.schedule.add(&id, now_ms() + 1_000);
                return;
            }
        };
        let Some(job) = claimed else {
            // Finished, gone, or running elsewhere: then look again when its lease ends.
            match self.api.db.job(&id).await {
                Ok(Some(j)) if j.status == "running" => {
                    let at = j.lease_until.unwrap_or(now) as u64 + 1_000;
                    self.schedule.add(&id, at);
                }
                _ => self.release(sub, &id),
            }
            return;
        };
        info!(job = %job.id, kind = %job.kind, attempt = job.attempts, "transcode job started");
        self.metrics.jobs_running.set(1);
        let task = tokio::spawn(attempt(
            self.api.clone(),
            self.store.clone(),
            self.config.clone(),
            job,
        ));
        self.running = Some((id, task));
    }

    /// The job is finished (here or elsewhere) or gone: its deliveries are done.
    fn release(&mut self, sub: &events::Subscription, id: &str) {
        for d in self.offsets.remove(id).unwrap_or_default() {
            self.done_with(sub, &d);
        }
    }

    async fn finish(&mut self, sub: &events::Subscription, a: Attempt) {
        let job = a.job;
        let attempt = job.attempts.max(1) as u32;
        let owner = job.owner_id.as_deref();
        let (change, events, again) = match a.outcome {
            Ok(result) => {
                info!(job = %job.id, attempt, "transcode job completed");
                self.metrics.jobs_completed.inc();
                let ev = job_event(
                    &self.api,
                    EventType::TranscodeCompleted,
                    &job.id,
                    owner,
                    json!({ "kind": job.kind, "attempt": attempt, "result": result }),
                );
                let change = JobChange {
                    status: "completed".into(),
                    stage: Some("done".into()),
                    percent: Some(100),
                    result: Some(result.to_string()),
                    ..JobChange::default()
                };
                (change, vec![ev], None)
            }
            Err(err) => match self.config.retry.after_failure(attempt, &err) {
                AfterFailure::RetryIn(delay) => {
                    warn!(job = %job.id, attempt, retry_in_ms = delay.as_millis() as u64, reason = err.reason(), "transcode attempt failed; retrying");
                    self.metrics.job_retries.inc();
                    let ev = job_event(
                        &self.api,
                        EventType::TranscodeFailed,
                        &job.id,
                        owner,
                        json!({ "kind": job.kind, "attempt": attempt, "reason": err.reason(),
                                "final": false, "retry_in_ms": delay.as_millis() as u64 }),
                    );
                    let change = JobChange {
                        status: "retrying".into(),
                        last_error: Some(err.reason().to_owned()),
                        ..JobChange::default()
                    };
                    (change, vec![ev], Some(delay))
                }
                AfterFailure::DeadLetter => {
                    let permanent = matches!(err, JobError::Permanent(_));
                    warn!(job = %job.id, attempt, permanent, reason = err.reason(), "transcode job failed for good; dead-lettered");
                    self.metrics.jobs_dead_lettered.inc();
                    let failed = job_event(
                        &self.api,
                        EventType::TranscodeFailed,
                        &job.id,
                        owner,
                        json!({ "kind": job.kind, "attempt": attempt, "reason": err.reason(), "final": true }),
                    );
                    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
                    let dead = self.dead_letter_event(
                        &job.id,
                        owner,
                        attempt,
                        err.reason(),
                        &json!({ "spec": spec, "permanent": permanent, "kind": job.kind }),
                    );
                    let change = JobChange {
                        status: "failed".into(),
                        last_error: Some(err.reason().to_owned()),
                        ..JobChange::default()
                    };
                    (change, vec![failed, dead], None)
                }
            },
        };
        if !self.change(&job.id, change, events).await {
            warn!(job = %job.id, "the job's lease ran out while it ran; another worker has it");
        }
        match again {
            Some(delay) => {
                self.schedule
                    .add(&job.id, now_ms() + delay.as_millis() as u64);
            }
            None => self.release(sub, &job.id),
        }
    }

    fn dead_letter_event(
        &self,
        job_id: &str,
        owner: Option<&str>,
        attempts: u32,
        reason: &str,
        extra: &Value,
    ) -> control_api::store::OutboxEvent {
        let mut data = extra.clone();
        if !data.is_object() {
            data = json!({ "request": data });
        }
        data["attempts"] = json!(attempts);
        data["reason"] = json!(reason);
        job_event(
            &self.api,
            EventType::TranscodeDeadLettered,
            job_id,
            owner,
            data,
        )
    }

    /// Writes a job change with its events, retrying until the database takes it.
    /// False if the job is no longer this worker's.
    async fn change(
        &self,
        id: &str,
        change: JobChange,
        events: Vec<control_api::store::OutboxEvent>,
    ) -> bool {
        let db = &self.api.db;
        let done = until_written(&format!("job {id}'s result"), || {
            db.change_job(
                id,
                &self.api.node_id,
                change.clone(),
                control_api::auth::now_millis(),
                events.clone(),
            )
        })
        .await;
        self.api.events_written();
        done
    }

    async fn write(&self, events: Vec<control_api::store::OutboxEvent>) {
        until_written("a dead letter", || self.api.db.insert_events(&events)).await;
        self.api.events_written();
    }
}

/// Runs a database write until it succeeds (backoff 100 ms → 5 s): a result or an
/// event the database refuses for a while is delayed, not lost.
async fn until_written<T, F, Fut>(what: &str, mut write: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, control_api::store::StoreError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(v) => return v,
            Err(e) => {
                warn!(error = %e, "writing {what} waits: database write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One attempt: progress is written as it goes (and renews the lease); the outcome
/// goes back to the loop.
async fn attempt(
    api: AppState,
    store: Arc<ObjectStore>,
    config: WorkerConfig,
    job: Job,
) -> Attempt {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u8)>();
    let progress = Progress(tx);
    let reporter = {
        let (api, job, lease) = (api.clone(), job.clone(), config.lease);
        tokio::spawn(async move {
            let mut filter = ProgressFilter::new(10);
            let mut renew = tokio::time::interval(lease / 3);
            renew.tick().await;
            loop {
                let (stage, percent, event) = tokio::select! {
                    p = rx.recv() => match p {
                        Some((stage, percent)) => {
                            let keep = filter.offer(&stage, percent);
                            (Some(stage), Some(percent), keep)
                        }
                        None => return,
                    },
                    _ = renew.tick() => (None, None, false),
                };
                if stage.is_some() && !event {
                    continue;
                }
                let now = control_api::auth::now_millis();
                let events = match (&stage, percent) {
                    (Some(s), Some(p)) if event => vec![job_event(
                        &api,
                        EventType::TranscodeProgress,
                        &job.id,
                        job.owner_id.as_deref(),
                        json!({ "kind": job.kind, "attempt": job.attempts, "stage": s, "percent": p }),
                    )],
                    _ => vec![],
                };
                let change = JobChange {
                    status: "running".into(),
                    stage,
                    percent: percent.map(i64::from),
                    lease_until: Some(now + lease.as_millis() as i64),
                    ..JobChange::default()
                };
                match api
                    .db
                    .change_job(&job.id, &api.node_id, change, now, events)
                    .await
                {
                    Ok(_) => api.events_written(),
                    Err(e) => warn!(job = %job.id, error = %e, "writing progress failed"),
                }
            }
        })
    };
    let dir = config.scratch.join(recorder::spool::safe_name(&job.id));
    let outcome = run_job(&store, &job, &dir, &progress).await;
    drop(progress);
    let _ = reporter.await;
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "removing a job's scratch files failed");
    }
    Attempt { job, outcome }
}

/// Progress reports of a running job: `(stage, percent of the whole job)`.
#[derive(Clone)]
struct Progress(mpsc::UnboundedSender<(String, u8)>);

impl Progress {
    fn report(&self, stage: &str, percent: u8) {
        let _ = self.0.send((stage.to_owned(), percent));
    }

    /// Maps a step's own 0–100 onto `from..to` of the whole job.
    fn scaled(&self, from: u8, to: u8) -> impl FnMut(&str, u8) + Send + 'static {
        let p = self.clone();
        move |stage, pct| {
            let span = u16::from(to - from);
            p.report(stage, from + (span * u16::from(pct.min(100)) / 100) as u8);
        }
    }
}

/// A request's job row, as `ensure_row` finds or makes it.
enum Row {
    Ready(Box<Job>),
    /// What it names is not its owner's: dead-lettered, never run.
    Refused,
    /// The database is away; the request is redelivered later.
    Unavailable,
}

fn decode_error(e: TranscodeError) -> JobError {
    match e {
        // Writing the output (disk full, …) may work next time; the input will not change.
        TranscodeError::Encode(r) => JobError::Transient(format!("encoding: {r}")),
        other => JobError::Permanent(other.to_string()),
    }
}

fn store_error(what: &str, key: &str, e: impl std::fmt::Display) -> JobError {
    JobError::Transient(format!("{what} {key}: {e}"))
}

async fn run_job(
    store: &ObjectStore,
    job: &Job,
    dir: &Path,
    progress: &Progress,
) -> Result<Value, JobError> {
    let spec: JobSpec = serde_json::from_str(&job.spec)
        .map_err(|e| JobError::Permanent(format!("unreadable job spec: {e}")))?;
    spec.validate().map_err(JobError::Permanent)?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| JobError::Transient(format!("scratch dir {}: {e}", dir.display())))?;
    match spec {
        JobSpec::Transcode {
            input,
            output_prefix,
            target_lufs,
            bitrate,
        } => {
            transcode(
                store,
                dir,
                progress,
                &input,
                &output_prefix,
                target(target_lufs, transcoder::Target::MUSIC),
                bitrate,
            )
            .await
        }
        JobSpec::Mixdown {
            recording_prefix,
            output_prefix,
            target_lufs,
            bitrate,
        } => {
            mixdown(
                store,
                dir,
                progress,
                &recording_prefix,
                &output_prefix,
                target(target_lufs, transcoder::Target::PODCAST),
                bitrate,
            )
            .await
        }
    }
}

fn target(lufs: Option<f64>, default: transcoder::Target) -> transcoder::Target {
    transcoder::Target {
        lufs: lufs.unwrap_or(default.lufs),
        ..default
    }
}

/// Fetches `key` into `dir` under its own file name (the extension is the decoder's hint).
async fn fetch(store: &ObjectStore, key: &str, dir: &Path) -> Result<PathBuf, JobError> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| store_error("reading", key, e))?;
    let name = key.rsplit('/').next().unwrap_or("input");
    // Inputs apart from outputs, whatever they are called.
    let inputs = dir.join("in");
    tokio::fs::create_dir_all(&inputs)
        .await
        .map_err(|e| JobError::Transient(format!("{}: {e}", inputs.display())))?;
    let path = inputs.join(recorder::spool::safe_name(name));
    tokio::fs::write(&path, &bytes)
        .await
        .map_err(|e| JobError::Transient(format!("{}: {e}", path.display())))?;
    Ok(path)
}

async fn put(store: &ObjectStore, key: &str, path: &Path) -> Result<(), JobError> {
    store
        .put_file(key, path)
        .await
        .map(|_| ())
        .map_err(|e| store_error("writing", key, e))
}

fn loudness_json(r: &transcoder::NormalizeReport) -> Value {
    // −inf (silence) is not JSON: it shows as null.
    let n = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    json!({
        "input_lufs": n(r.input.integrated_lufs),
        "input_true_peak_dbtp": n(r.input.true_peak_dbtp),
        "output_lufs": n(r.output.integrated_lufs),
        "output_true_peak_dbtp": n(r.output.true_peak_dbtp),
        "gain_db": n(r.gain_db),
        "limited_frames": r.limited_frames,
    })
}

/// Writes `waveform.json` and `.svg` beside `stem` in `dir`; returns their names.
fn write_waveform(
    dir: &Path,
    stem: &str,
    peaks: &transcoder::Peaks,
) -> Result<[String; 2], JobError> {
    let io = |p: &Path, e: std::io::Error| JobError::Transient(format!("{}: {e}", p.display()));
    let json_name = format!("{stem}waveform.json");
    let svg_name = format!("{stem}waveform.svg");
    let p = dir.join(&json_name);
    let data = serde_json::to_vec(peaks).map_err(|e| JobError::Transient(e.to_string()))?;
    std::fs::write(&p, data).map_err(|e| io(&p, e))?;
    let p = dir.join(&svg_name);
    std::fs::write(&p, transcoder::svg(peaks, 1000, 120)).map_err(|e| io(&p, e))?;
    Ok([json_name, svg_name])
}

/// Uploads `names` (files in `dir`) under `prefix`; returns `{name: key}`.
async fn upload_outputs(
    store: &ObjectStore,
    dir: &Path,
    prefix: &str,
    names: &[String],
    progress: &Progress,
    from: u8,
) -> Result<Value, JobError> {
    let mut files = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("{prefix}{name}");
        put(store, &key, &dir.join(name.replace('/', "_"))).await?;
        files.insert(name.clone(), json!(key));
        let done = from as usize + (100 - from as usize) * (i + 1) / names.len();
        progress.report("upload", done.min(99) as u8);
    }
    Ok(Value::Object(files))
}

async fn transcode(
    store: &ObjectStore,
    dir: &Path,
    progress: &Progress,
    input: &str,
    prefix: &str,
    target: transcoder::Target,
    bitrate: Option<i32>,
) -> Result<Value, JobError> {
    progress.report("fetch", 0);
    let src = fetch(store, input, dir).await?;
    let out = dir.join("audio.opus");
    let options = transcoder::TranscodeOptions {
        target,
        bitrate,
        waveform_buckets: 1000,
    };
    let (src2, out2, dir2) = (src.clone(), out.clone(), dir.to_owned());
    let mut report = progress.scaled(5, 90);
    let (r, waveform) = tokio::task::spawn_blocking(move || {
        let r = transcoder::transcode_file(&src2, &out2, &options, &mut report)
            .map_err(decode_error)?;
        let names = write_waveform(&dir2, "", &r.waveform)?;
        Ok::<_, JobError>((r, names))
    })
    .await
    .map_err(|e| JobError::Transient(format!("the transcode thread died: {e}")))??;
    let mut names = vec!["audio.opus".to_owned()];
    names.extend(waveform);
    let files = upload_outputs(store, dir, prefix, &names, progress, 90).await?;
    Ok(json!({
        "files": files,
        "duration_ms": r.duration_ms,
        "channels": r.channels,
        "input": { "codec": r.input_codec, "rate": r.input_rate, "bad_packets": r.bad_packets },
        "target_lufs": target.lufs,
        "bitrate": bitrate.unwrap_or_else(|| transcoder::encode::default_bitrate(r.channels)),
        "loudness": loudness_json(&r.loudness),
    }))
}

/// A speaker's name as a file name: letters, digits, `-` and `_`; unique.
fn stem_name(participant: &str, taken: &mut Vec<String>) -> String {
    let mut base: String = participant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if base.is_empty() {
        base = "speaker".into();
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

async fn mixdown(
    store: &ObjectStore,
    dir: &Path,
    progress: &Progress,
    recording_prefix: &str,
    prefix: &str,
    target: transcoder::Target,
    bitrate: Option<i32>,
) -> Result<Value, JobError> {
    progress.report("fetch", 0);
    let manifest_key = format!("{recording_prefix}{}", recorder::manifest::MANIFEST_FILE);
    let bytes = store
        .get(&manifest_key)
        .await
        .map_err(|e| store_error("reading", &manifest_key, e))?;
    let manifest: recorder::Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| JobError::Permanent(format!("unreadable manifest {manifest_key}: {e}")))?;
    let tracks: Vec<&recorder::TrackEntry> = manifest
        .tracks
        .iter()
        .filter(|t| {
            t.kind == "audio" && t.error.is_none() && t.first_sample_at.is_some() && t.packets > 0
        })
        .collect();
    if tracks.is_empty() {
        return Err(JobError::Permanent(
            "the recording has no audio track with a start time".into(),
        ));
    }
    let mut files = Vec::with_capacity(tracks.len());
    for (i, t) in tracks.iter().enumerate() {
        files.push(fetch(store, &format!("{recording_prefix}{}", t.file), dir).await?);
        progress.report("fetch", (10 * (i + 1) / tracks.len()) as u8);
    }
    // Speakers in the order they first appear.
    let mut order: Vec<String> = Vec::new();
    for t in &tracks {
        if !order.contains(&t.participant) {
            order.push(t.participant.clone());
        }
    }
    let entries: Vec<(String, f64, PathBuf)> = tracks
        .iter()
        .zip(files)
        .map(|(t, f)| {
            (
                t.participant.clone(),
                t.first_sample_at.unwrap_or_default(),
                f,
            )
        })
        .collect();
    let dir2 = dir.to_owned();
    let report = progress.clone();
    let out = tokio::task::spawn_blocking(move || {
        mix_files(&dir2, &order, &entries, target, bitrate, &report)
    })
    .await
    .map_err(|e| JobError::Transient(format!("the mixdown thread died: {e}")))??;
    let (names, mut result) = out;
    let uploaded = upload_outputs(store, dir, prefix, &names, progress, 90).await?;
    result["files"] = uploaded;
    result["recording_id"] = json!(manifest.recording_id);
    result["target_lufs"] = json!(target.lufs);
    Ok(result)
}

/// Decodes, aligns, normalises, mixes and encodes; returns the files written in
/// `dir` (names as they go into the store) and the result without `files`.
fn mix_files(
    dir: &Path,
    order: &[String],
    entries: &[(String, f64, PathBuf)],
    target: transcoder::Target,
    bitrate: Option<i32>,
    progress: &Progress,
) -> Result<(Vec<String>, Value), JobError> {
    progress.report("decode", 10);
    let mut speakers: Vec<transcoder::Speaker> = order
        .iter()
        .map(|n| transcoder::Speaker {
            name: n.clone(),
            tracks: Vec::new(),
        })
        .collect();
    for (i, (who, at, path)) in entries.iter().enumerate() {
        let pcm = transcoder::decode_file(path).map_err(|e| {
            JobError::Permanent(format!(
                "{}: {e}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))
        })?;
        let pcm = transcoder::to_48k(pcm).map_err(decode_error)?;
        if let Some(s) = speakers.iter_mut().find(|s| &s.name == who) {
            s.tracks.push(transcoder::TrackAudio {
                starts_at_ms: *at,
                channels: pcm.channels,
                samples: pcm.samples,
            });
        }
        progress.report("decode", (10 + 30 * (i + 1) / entries.len()) as u8);
    }
    progress.report("mix", 40);
    let m = transcoder::mixdown(&speakers, target).map_err(decode_error)?;
    progress.report("encode", 70);
    let bitrate = bitrate.unwrap_or_else(|| transcoder::encode::default_bitrate(m.channels));
    // Each output is encoded so its decoded true peak stays under the ceiling (the
    // mix is at the target already; this only adds headroom where Opus overshoots).
    let encode = |name: &str, samples: &[f32]| -> Result<transcoder::NormalizeReport, JobError> {
        let (ogg, _, report) = transcoder::normalize_to_opus(samples, m.channels, target, bitrate)
            .map_err(decode_error)?;
        transcoder::pipeline::write_file(&dir.join(name.replace('/', "_")), &ogg)
            .map_err(decode_error)?;
        Ok(report)
    };
    let mut names = vec!["episode.opus".to_owned()];
    let mut episode_loudness = encode("episode.opus", &m.episode)?;
    episode_loudness.input = m.loudness.input; // the stems' sum before the final gain
    let peaks = transcoder::peaks(&m.episode, m.channels, transcoder::mixdown::RATE, 1000);
    names.extend(write_waveform(dir, "episode.", &peaks)?);
    let mut taken = Vec::new();
    let mut stems = Vec::new();
    for (i, s) in m.stems.iter().enumerate() {
        let stem = stem_name(&s.speaker, &mut taken);
        let file = format!("stems/{stem}.opus");
        let mut loudness = encode(&file, &s.samples)?;
        loudness.input = s.loudness.input; // the speaker as recorded
        names.push(file.clone());
        let peaks = transcoder::peaks(&s.samples, m.channels, transcoder::mixdown::RATE, 1000);
        let wf = write_waveform(dir, &format!("stems_{stem}."), &peaks)?;
        let wf_names: Vec<String> = wf
            .iter()
            .map(|n| n.replacen("stems_", "stems/", 1))
            .collect();
        names.extend(wf_names.iter().cloned());
        let first = entries
            .iter()
            .filter(|(who, ..)| *who == s.speaker)
            .map(|(_, at, _)| *at)
            .fold(f64::INFINITY, f64::min);
        stems.push(json!({
            "speaker": s.speaker,
            "file": file,
            "waveform": wf_names[0],
            "offset_ms": first - m.starts_at_ms,
            "loudness": loudness_json(&loudness),
        }));
        progress.report("encode", (70 + 20 * (i + 1) / m.stems.len()) as u8);
    }
    let result = json!({
        "episode": { "file": "episode.opus", "waveform": "episode.waveform.json", "loudness": loudness_json(&episode_loudness) },
        "stems": stems,
        "channels": m.channels,
        "starts_at_ms": m.starts_at_ms,
        "duration_ms": m.frames() as f64 * 1000.0 / f64::from(transcoder::mixdown::RATE),
        "bitrate": bitrate,
    });
    Ok((names, result))
}

#[cfg(test)]
mod tests {
    use super::stem_name;

    #[test]
    fn stem_names_are_safe_and_unique() {
        let mut taken = Vec::new();
        assert_eq!(stem_name("alice", &mut taken), "alice");
        assert_eq!(stem_name("alice", &mut taken), "alice-2");
        assert_eq!(stem_name("../bob smith", &mut taken), "___bob_smith");
        assert_eq!(stem_name("", &mut taken), "speaker");
    }
}
