//! Uploads closed recordings from the spool to the object store, and finishes the
//! ones a dead recorder left behind.
//!
//! Per recording: every track file not yet marked uploaded is put and confirmed,
//! then marked; the manifest goes last; then `Uploaded` is reported and the
//! directory removed. Keys are fixed by the recording (`<room>/<id>/<file>`), so an
//! upload repeated after a crash overwrites the same objects instead of adding any.
//! A failed attempt is retried with exponential backoff, for as long as it takes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::manifest::{Manifest, SpoolState};
use crate::ogg::repair_ogg;
use crate::session::unix_ms;
use crate::spool::{is_uploaded, mark_uploaded};
use crate::store::{Store, StoreError};
use crate::{RecorderError, RecorderEvent, RecorderEventKind};

#[derive(Debug, Clone)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry `n` (0-based): doubling, capped.
    pub fn delay(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.min(16)).min(self.max)
    }
}

/// The object key of a recording's file.
pub fn object_key(room: &str, recording_id: &str, file: &str) -> String {
    format!(
        "{}/{}/{file}",
        crate::spool::safe_name(room),
        crate::spool::safe_name(recording_id)
    )
}

/// Counters the driver exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploadStats {
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub failed_attempts: u64,
    pub recordings_uploaded: u64,
}

#[derive(Clone)]
pub struct UploadQueue {
    tx: mpsc::UnboundedSender<PathBuf>,
    pub stats: Arc<Mutex<UploadStats>>,
    /// Recordings queued or being uploaded.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for UploadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadQueue").finish_non_exhaustive()
    }
}

impl UploadQueue {
    pub fn push(&self, dir: PathBuf) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.tx.send(dir).is_err() {
            self.pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts the uploader task. `pending` are recordings found in the spool at start
/// (see [`recover`]); they go first.
pub fn start(
    store: Store,
    backoff: Backoff,
    pending: Vec<PathBuf>,
    events: mpsc::UnboundedSender<RecorderEvent>,
) -> (UploadQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let stats = Arc::new(Mutex::new(UploadStats::default()));
    let st = stats.clone();
    let pending_count = Arc::new(std::sync::atomic::AtomicUsize::new(pending.len()));
    let left = pending_count.clone();
    let task = tokio::spawn(async move {
        let mut queue: VecDeque<PathBuf> = pending.into();
        loop {
            let Some(dir) = (match queue.pop_front() {
                Some(d) => Some(d),
                None => rx.recv().await,
            }) else {
                return;
            };
            let mut attempt = 0;
            loop {
                match upload_recording(&store, &dir, &events, &st).await {
                    Ok(()) => {
                        left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    Err(e) => {
                        st.lock().unwrap_or_else(|p| p.into_inner()).failed_attempts += 1;
                        if let Some(id) = dir.file_name().and_then(|n| n.to_str())
                            && let Ok(m) = Manifest::read(&dir)
                        {
                            let _ = events.send(RecorderEvent {
                                recording_id: m.recording_id,
                                room: m.room,
                                kind: RecorderEventKind::UploadRetrying(format!("{id}: {e}")),
                            });
                        }
                        let wait = backoff.delay(attempt);
                        warn!(dir = %dir.display(), error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "recording upload failed; retrying");
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(wait).await;
                        // New work keeps its order behind this one.
                        while let Ok(d) = rx.try_recv() {
                            queue.push_back(d);
                        }
                    }
                }
            }
        }
    });
    (
        UploadQueue {
            tx,
            stats,
            pending: pending_count,
        },
        task,
    )
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Recorder(#[from] RecorderError),
}

async fn upload_recording(
    store: &Store,
    dir: &Path,
    events: &mpsc::UnboundedSender<RecorderEvent>,
    stats: &Mutex<UploadStats>,
) -> Result<(), UploadError> {
    if !dir.exists() {
        return Ok(()); // finished by an earlier attempt
    }
    let manifest = Manifest::read(dir)?;
    let mut keys = Vec::new();
    for t in manifest.tracks.iter().filter(|t| !t.file.is_empty()) {
        let key = object_key(&manifest.room, &manifest.recording_id, &t.file);
        let path = dir.join(&t.file);
        if !is_uploaded(dir, &t.file) {
            if !path.exists() {
                // Nothing was ever written to it (the recorder died at once).
                warn!(file = %path.display(), "track file missing; the manifest lists it without data");
            } else {
                let n = store.put_file(&key, &path).await?;
                mark_uploaded(dir, &t.file)?;
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                s.files_uploaded += 1;
                s.bytes_uploaded += n;
            }
        }
        if path.exists() {
            keys.push(key);
        }
    }
    let mkey = object_key(
        &manifest.room,
        &manifest.recording_id,
        crate::manifest::MANIFEST_FILE,
    );
    let data =
        serde_json::to_vec_pretty(&manifest).map_err(|e| RecorderError::Manifest(e.to_string()))?;
    store.put_bytes(&mkey, data).await?;
    keys.push(mkey);
    info!(recording = %manifest.recording_id, store = store.description(), objects = keys.len(), "recording uploaded");
    let _ = events.send(RecorderEvent {
        recording_id: manifest.recording_id.clone(),
        room: manifest.room.clone(),
        kind: RecorderEventKind::Uploaded {
            objects: keys,
            manifest: manifest.clone(),
        },
    });
    stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .recordings_uploaded += 1;
    // Deleted only now that the store has confirmed every file.
    tokio::fs::remove_dir_all(dir)
        .await
        .map_err(|e| RecorderError::io(dir, e))?;
    Ok(())
}

/// Finds the spool's recordings at start. One still `recording` belonged to a
/// recorder that died: its files are cut back to their last complete page or block,
/// its manifest closed (`interrupted`), and `Stopped` is reported. Returns every
/// directory to upload.
pub fn recover(
    spool: &Path,
    events: &mpsc::UnboundedSender<RecorderEvent>,
) -> Result<Vec<PathBuf>, RecorderError> {
    let dirs = crate::spool::recordings(spool)?;
    recover_dirs(&dirs, events)?;
    Ok(dirs)
}

/// [`recover`] for the recordings in `dirs` (each a recording's spool directory).
pub fn recover_dirs(
    dirs: &[PathBuf],
    events: &mpsc::UnboundedSender<RecorderEvent>,
) -> Result<(), RecorderError> {
    for dir in dirs {
        let mut m = match Manifest::read(dir) {
            Ok(m) => m,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "unreadable recording manifest; left in the spool");
                continue;
            }
        };
        if m.state == SpoolState::Recording {
            for t in m.tracks.iter_mut().filter(|t| !t.file.is_empty()) {
                let path = dir.join(&t.file);
                if t.kind == "video" && path.exists() {
                    match crate::video::repair_matroska(&path) {
                        Ok(ms) if ms > 0.0 => t.duration_ms = ms,
                        Ok(_) => {
                            t.error = Some(
                                "nothing of it reached the disk before the recorder died".into(),
                            )
                        }
                        Err(e) => t.error = Some(format!("repair: {e}")),
                    }
                }
                if t.codec == "opus" && path.exists() {
                    match repair_ogg(&path) {
                        Ok(0) => {
                            t.error = Some(
                                "nothing of it reached the disk before the recorder died".into(),
                            )
                        }
                        Ok(samples) => {
                            t.duration_ms = samples.saturating_sub(u64::from(crate::ogg::PRE_SKIP))
                                as f64
                                / 48.0
                        }
                        Err(e) => t.error = Some(format!("repair: {e}")),
                    }
                }
            }
            m.state = SpoolState::Closed;
            m.stopped_at = Some(unix_ms(SystemTime::now()) as i64);
            m.stop_reason = Some("interrupted".into());
            m.gaps = m.find_gaps();
            m.write(dir)?;
            info!(recording = %m.recording_id, "interrupted recording finished from the spool");
            let _ = events.send(RecorderEvent {
                recording_id: m.recording_id.clone(),
                room: m.room.clone(),
                kind: RecorderEventKind::Stopped(m.clone()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d: Vec<u64> = (0..6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(1000), Duration::from_secs(1));
    }

    #[test]
    fn keys_are_fixed_by_the_recording() {
        assert_eq!(object_key("room a", "r1", "00-x.ogg"), "room_a/r1/00-x.ogg");
    }
}
