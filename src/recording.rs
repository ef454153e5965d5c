//! The node's recorder: the media workers' taps, the recorder crate's sessions and
//! uploader, and the recordings' rows and `recording.events`.
//!
//! [`RecordingService`] is what the control API starts and stops recordings through.
//! [`apply_events`] turns what the recorder reports into row changes; a change the
//! database refuses is retried until it lands, so no report is lost, and each row
//! change writes its event only once (see `Store::change_recording`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use control_api::AppState;
use control_api::routes::recordings::{
    BoxFuture, RecordingControl, mark_failed, mark_stopped, recording_event,
};
use control_api::store::{RecordingChange, Store};
use events::EventType;
use media_core::RoomId;
use recorder::{Recorder, RecorderEvent, RecorderEventKind, SessionHandle, Store as ObjectStore};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Settings;
use crate::media::MediaWorkers;
use crate::metrics::Metrics;

struct Active {
    room: RoomId,
    handle: SessionHandle,
}

pub struct RecordingService {
    recorder: Recorder,
    workers: Arc<MediaWorkers>,
    active: Mutex<HashMap<String, Active>>,
    /// Recordings another node continues (this one drains): they stop `handed_over`.
    handed_over: Mutex<std::collections::HashSet<String>>,
    metrics: Metrics,
}

impl std::fmt::Debug for RecordingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingService").finish_non_exhaustive()
    }
}

/// The running recorder: its service, the uploader and the event writer.
pub struct RunningRecorder {
    pub service: Arc<RecordingService>,
    uploader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    /// Tells the writer to apply what is queued and stop (the service, held by the
    /// API's state, outlives shutdown, so its channel never closes by itself).
    stop_writer: tokio::sync::oneshot::Sender<()>,
    /// Takes over the recordings of dead nodes (`recording.shared_spool`).
    adopter: Option<tokio::task::JoinHandle<()>>,
    /// Starts the recordings draining nodes hand over to this one.
    continuer: tokio::task::JoinHandle<()>,
}

impl RunningRecorder {
    /// Opens the object store, recovers the spool (interrupted recordings are closed
    /// and queued for upload) and starts the uploader.
    pub async fn start(
        settings: &Settings,
        api: &AppState,
        workers: Arc<MediaWorkers>,
        metrics: Metrics,
    ) -> anyhow::Result<RunningRecorder> {
        let (mut config, store_config) = settings.recorder_config();
        // A spool the cluster's nodes share: each writes its own part of it.
        let shared_root = settings
            .recording
            .shared_spool
            .then(|| config.spool.clone());
        if let Some(root) = &shared_root {
            config.spool = root.join(recorder::spool::safe_name(&api.node_id));
        }
        let store = ObjectStore::open(&store_config).context("opening the recordings store")?;
        info!(store = store.description(), spool = %config.spool.display(), shared = shared_root.is_some(), "recordings");
        let spool = config.spool.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let (recorder, uploader) =
            Recorder::start(config, store, tx).context("opening the recording spool")?;
        mark_lost(api, &spool).await;
        let adopter = shared_root.map(|root| {
            tokio::spawn(adopt_dead_nodes_recordings(
                api.clone(),
                recorder.clone(),
                root,
            ))
        });
        let (stop_writer, stopped) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn(apply_events(api.clone(), rx, metrics.clone(), stopped));
        let service = Arc::new(RecordingService {
            recorder,
            workers,
            active: Mutex::new(HashMap::new()),
            handed_over: Mutex::default(),
            metrics,
        });
        let continuer = tokio::spawn(start_handed_over_recordings(api.clone(), service.clone()));
        Ok(RunningRecorder {
            service,
            uploader,
            writer,
            stop_writer,
            adopter,
            continuer,
        })
    }

    /// Stops every recording (files closed), then gives the uploader and the event
    /// writer `grace` to finish; what is left is picked up at the next start.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(a) = &self.adopter {
            a.abort();
        }
        self.continuer.abort();
        self.service.stop_all("shutdown").await;
        let deadline = tokio::time::Instant::now() + grace;
        let _ = tokio::time::timeout_at(deadline, async {
            while self.service.recorder.has_pending_uploads() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        self.uploader.abort();
        let _ = self.stop_writer.send(());
        if tokio::time::timeout_at(deadline, self.writer)
            .await
            .is_err()
        {
            warn!("recording events still waiting for the database at shutdown");
        }
    }
}

impl RecordingService {
    async fn start_recording(&self, id: &str, room: &str) -> Result<(), String> {
        let room_id = RoomId::parse(room).map_err(|e| e.to_string())?;
        let (tap, handle) = self
            .recorder
            .begin(id, room)
            .map_err(|e| format!("spool: {e}"))?;
        if let Err(e) = self.workers.start_tap(room_id.clone(), Box::new(tap)).await {
            let _ = handle.stop("failed").await;
            return Err(e.to_string());
        }
        let mut active = self.lock();
        active.insert(
            id.to_owned(),
            Active {
                room: room_id,
                handle,
            },
        );
        self.metrics.recordings_active.set(active.len() as i64);
        Ok(())
    }

    async fn stop_recording(&self, id: &str, reason: &str) -> Result<Option<Value>, String> {
        let active = {
            let mut all = self.lock();
            let Some(a) = all.remove(id) else {
                return Ok(None);
            };
            self.metrics.recordings_active.set(all.len() as i64);
            a
        };
        let refused = match self.workers.stop_tap(active.room.clone()).await {
            Ok(stats) => stats.map_or(0, |s| s.refused),
            Err(e) => {
                warn!(recording = %id, error = %e, "removing the tap failed; closing the recording anyway");
                0
            }
        };
        if refused > 0 {
            warn!(recording = %id, refused, "the recorder fell behind: packets are missing from this recording");
        }
        let manifest = active
            .handle
            .stop_counting(reason, refused)
            .await
            .map_err(|e| format!("closing the recording: {e}"))?;
        serde_json::to_value(&manifest)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The recording running for a room, if any.
    pub fn recording_of(&self, room: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, a)| a.room.as_str() == room)
            .map(|(id, _)| id.clone())
    }

    /// Stops every recording, with `reason`, or `handed_over` for those another node
    /// continues.
    pub async fn stop_all(&self, reason: &str) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            let handed_over = self
                .handed_over
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id);
            let reason = if handed_over { "handed_over" } else { reason };
            if let Err(e) = self.stop_recording(&id, reason).await {
                warn!(recording = %id, error = %e, "stopping a recording failed");
            }
        }
    }

    /// This node drains and its rooms moved (`moved`: room, new node): each room's
    /// recording here is continued by a recording on the room's new node, which
    /// starts it at once, while this one goes on until the node stops (its people
    /// move over meanwhile), so the two overlap and nothing is missed.
    pub async fn hand_over(&self, api: &AppState, moved: &[(String, String)]) {
        for (room, node) in moved {
            let Some(id) = self.recording_of(room) else {
                continue;
            };
            let old = match api.db.recording(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    warn!(recording = %id, error = %e, "could not read a recording to hand it over; it stops with this node");
                    continue;
                }
            };
            match control_api::routes::recordings::continue_recording(api, &old, node).await {
                Ok(_) => {
                    self.handed_over
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id);
                }
                Err(e) => {
                    warn!(recording = %id, to = %node, error = %e, "could not hand a recording over; it stops with this node")
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RecordingControl for RecordingService {
    fn start<'a>(&'a self, id: &'a str, room: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.start_recording(id, room))
    }

    fn stop<'a>(
        &'a self,
        id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>> {
        Box::pin(self.stop_recording(id, reason))
    }

    fn recording_of_room(&self, room: &str) -> Option<String> {
        self.recording_of(room)
    }
}

/// Starts the recordings a draining node handed over to this one (rows of this node,
/// `recording`, continuing another, made after this node started), within a quarter
/// of a second: the room's people are on their way here.
async fn start_handed_over_recordings(api: AppState, service: Arc<RecordingService>) {
    let started = control_api::auth::now_millis();
    let mut tried = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rows = match api.db.recordings_handed_over_to(&api.node_id).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "could not look for recordings handed over to this node");
                continue;
            }
        };
        for r in rows {
            if r.started_at < started || !tried.insert(r.id.clone()) {
                continue;
            }
            match service.start_recording(&r.id, &r.sfu_room).await {
                Ok(()) => {
                    info!(recording = %r.id, continues = ?r.continues, room = %r.sfu_room, "recording handed over to this node started")
                }
                Err(reason) => {
                    warn!(recording = %r.id, room = %r.sfu_room, %reason, "a recording handed over could not start");
                    if let Err(e) = mark_failed(&api, &r.id, &r.sfu_room, &reason).await {
                        warn!(recording = %r.id, error = %e, "could not mark it failed");
                    }
                }
            }
        }
    }
}

/// How long a node is silent, and its recording's files unwritten, before the
/// recording is taken over. Longer than the 3 s after which its rooms are placed
/// elsewhere: a node whose database connection stalls keeps writing its recordings,
/// and they must stay its own (a recording still written to is never taken).
const ADOPT_AFTER: Duration = Duration::from_secs(15);

/// With a spool the nodes share (`recording.shared_spool`): every second, the
/// recordings of each node silent for [`ADOPT_AFTER`] are taken into this node's
/// spool, finished as `interrupted` with what was spooled, and uploaded, so a node
/// that dies loses no recording (`Recorder::adopt`; of two nodes adopting at once,
/// each recording goes to one).
async fn adopt_dead_nodes_recordings(api: AppState, recorder: Recorder, root: std::path::PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = match api.db.nodes().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "could not read the registry for dead nodes' recordings");
                continue;
            }
        };
        // Recordings in the root itself were spooled before the spool was shared: the
        // first node to see them takes them.
        let (r, top) = (recorder.clone(), root.clone());
        if let Ok(taken) = tokio::task::spawn_blocking(move || r.adopt(&top, ADOPT_AFTER)).await
            && !taken.is_empty()
        {
            warn!(recordings = ?taken, "took over recordings spooled before the spool was shared: finished, uploading");
        }
        let silent_since = control_api::auth::now_millis() - ADOPT_AFTER.as_millis() as i64;
        for node in nodes
            .into_iter()
            .filter(|n| n.id != *api.node_id && n.heartbeat_at < silent_since)
        {
            let dir = root.join(recorder::spool::safe_name(&node.id));
            if !dir.is_dir() {
                continue;
            }
            let r = recorder.clone();
            match tokio::task::spawn_blocking(move || r.adopt(&dir, ADOPT_AFTER)).await {
                Ok(taken) if taken.is_empty() => {}
                Ok(taken) => {
                    warn!(node = %node.id, recordings = ?taken, "took over a dead node's recordings: finished as interrupted, uploading")
                }
                Err(e) => warn!(error = %e, "the recordings takeover panicked"),
            }
        }
    }
}

/// Rows this node left `recording` with no spool directory to finish them from
/// (the spool was lost): they fail, with the reason.
async fn mark_lost(api: &AppState, spool: &std::path::Path) {
    let rows = match api.db.node_recordings(&api.node_id, "recording").await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "could not list this node's recordings at start");
            return;
        }
    };
    for r in rows {
        if spool.join(recorder::spool::safe_name(&r.id)).exists() {
            continue; // recovered from the spool; its Stopped report follows
        }
        let reason = "lost: the node restarted without this recording's spool";
        match mark_failed(api, &r.id, &r.sfu_room, reason).await {
            Ok(_) => warn!(recording = %r.id, room = %r.sfu_room, "{reason}"),
            Err(e) => warn!(recording = %r.id, error = %e, "could not mark a lost recording"),
        }
    }
}

/// Writes the recorder's reports as row changes and events, in order; retries a
/// report until the database takes it.
pub async fn apply_events(
    api: AppState,
    mut rx: mpsc::UnboundedReceiver<RecorderEvent>,
    metrics: Metrics,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut stopping = false;
    loop {
        let ev = if stopping {
            match rx.try_recv() {
                Ok(ev) => ev,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return,
                },
                _ = &mut stop => {
                    stopping = true;
                    continue;
                }
            }
        };
        match ev.kind {
            RecorderEventKind::Uploaded { .. } => metrics.recordings_uploaded.inc(),
            RecorderEventKind::UploadRetrying(_) => metrics.recording_upload_failures.inc(),
            _ => {}
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(&api, &ev).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(recording = %ev.recording_id, error = %e, "recording report waits: database write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        api.events_written();
    }
}

async fn apply(api: &AppState, ev: &RecorderEvent) -> Result<(), control_api::store::StoreError> {
    let (id, room) = (&ev.recording_id, &ev.room);
    match &ev.kind {
        RecorderEventKind::TrackAdded(t) => {
            let data = json!({
                "file": t.file, "participant": t.participant, "mid": t.mid,
                "kind": t.kind, "codec": t.codec, "rid": t.rid, "error": t.error,
            });
            api.db
                .insert_events(&[recording_event(
                    api,
                    EventType::RecordingTrackAdded,
                    id,
                    room,
                    data,
                )])
                .await
        }
        RecorderEventKind::Stopped(m) => {
            let manifest = serde_json::to_value(m).unwrap_or(Value::Null);
            mark_stopped(api, id, room, &manifest).await.map(|_| ())
        }
        RecorderEventKind::Uploaded { objects, manifest } => {
            let ev = recording_event(
                api,
                EventType::RecordingUploaded,
                id,
                room,
                json!({ "objects": objects }),
            );
            let change = RecordingChange {
                status: "uploaded".into(),
                uploaded_at: Some(control_api::auth::now_millis()),
                manifest: serde_json::to_string(manifest).ok(),
                objects: serde_json::to_string(objects).ok(),
                ..RecordingChange::default()
            };
            api.db
                .change_recording(id, &["recording", "stopped"], change, vec![ev])
                .await
                .map(|_| ())
        }
        RecorderEventKind::UploadRetrying(error) => {
            let change = RecordingChange {
                status: "stopped".into(),
                last_error: Some(error.clone()),
                ..RecordingChange::default()
            };
            api.db
                .change_recording(id, &["stopped"], change, vec![])
                .await
                .map(|_| ())
        }
        RecorderEventKind::Failed(reason) => mark_failed(api, id, room, reason).await.map(|_| ()),
    }
}
