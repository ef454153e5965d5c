//! # recorder: per-track recording of rooms, spooled locally, uploaded to a store
//!
//! ```text
//!  SFU worker ──tap (bounded queue, never blocks)──► session thread ──► spool dir
//!                                                     (Ogg / WebM / MKV writers,      │
//!                                                      manifest)                      ▼
//!                                           uploader task ◄── closed recordings ──────┘
//!                                              │ put + confirm, retry with backoff
//!                                              ▼
//!                                        object store (local dir | S3)
//! ```
//!
//! - [`session`]: one recording being written, fed by [`media_core::MediaTap`].
//! - [`ogg`], [`video`]: container writers (Ogg Opus; Matroska/WebM for video).
//! - [`manifest`]: what a recording holds and when each track's first sample was.
//! - [`spool`], [`upload`], [`store`]: durability from disk to the object store.
//!
//! Invariants:
//! - Writers take RTP payloads with their RTP timestamps and produce a file whose
//!   duration is the media time covered, gaps included: missing time (DTX, loss) is
//!   written as silence, never squeezed out.
//! - The SFU never waits for the recorder: a full queue refuses items, the SFU
//!   counts them, and the recorder records the gap.
//! - Files are fsynced at close; a recording's local files are deleted only after
//!   the store confirmed each one (size read back) and the manifest, which goes last.
//! - A restart finishes what a dead recorder left: interrupted recordings are closed
//!   from their spool and uploaded; an upload repeated after a crash writes the same
//!   keys, so nothing is duplicated.

pub mod manifest;
pub mod ogg;
pub mod reorder;
pub mod session;
pub mod spool;
pub mod store;
pub mod upload;
pub mod video;

use std::path::{Path, PathBuf};

pub use manifest::{ClockSource, Gap, Manifest, SpoolState, TrackEntry};
pub use ogg::{OggError, OggOpusReader, OggOpusWriter, opus_packet_samples, repair_ogg};
pub use session::{QueueTap, Session, SessionConfig, SessionHandle};
pub use store::{Store, StoreConfig, StoreError};
pub use upload::{Backoff, UploadQueue, UploadStats, object_key};

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest: {0}")]
    Manifest(String),
}

impl RecorderError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RecorderError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What the recorder reports; the control plane turns these into state and
/// `recording.events`.
#[derive(Debug, Clone)]
pub struct RecorderEvent {
    pub recording_id: String,
    pub room: String,
    pub kind: RecorderEventKind,
}

#[derive(Debug, Clone)]
pub enum RecorderEventKind {
    TrackAdded(TrackEntry),
    /// Files closed and fsynced (also for a recording finished after a crash).
    Stopped(Manifest),
    /// The store confirmed every file and the manifest.
    Uploaded {
        objects: Vec<String>,
        manifest: Manifest,
    },
    /// An upload attempt failed; it is retried (the error).
    UploadRetrying(String),
    /// The recording could not be written (its reason).
    Failed(String),
}

/// Settings of a recorder.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub spool: PathBuf,
    /// Items queued between the SFU and a recording before it refuses more.
    pub queue: usize,
    pub session: SessionConfig,
    pub backoff: Backoff,
}

/// Starts and stops recordings and owns the uploader.
#[derive(Debug, Clone)]
pub struct Recorder {
    config: RecorderConfig,
    uploads: UploadQueue,
    events: tokio::sync::mpsc::UnboundedSender<RecorderEvent>,
}

impl Recorder {
    /// Recovers the spool (see [`upload::recover`]) and starts the uploader; needs a
    /// tokio runtime.
    pub fn start(
        config: RecorderConfig,
        store: Store,
        events: tokio::sync::mpsc::UnboundedSender<RecorderEvent>,
    ) -> Result<(Recorder, tokio::task::JoinHandle<()>), RecorderError> {
        std::fs::create_dir_all(&config.spool).map_err(|e| RecorderError::io(&config.spool, e))?;
        let pending = upload::recover(&config.spool, &events)?;
        let (uploads, task) = upload::start(store, config.backoff.clone(), pending, events.clone());
        Ok((
            Recorder {
                config,
                uploads,
                events,
            },
            task,
        ))
    }

    /// Takes over the recordings of another recorder's spool `from` (a node that
    /// died, its spool on storage this node shares): each is moved into this spool
    /// (a rename, so of two nodes adopting at once each recording goes to one),
    /// finished as [`upload::recover`] finishes a spool at start (`interrupted`) and
    /// queued for upload. A recording with a file written in the last `quiet_for` is
    /// left alone: its recorder may be alive (only its database connection lost).
    /// Returns the spool names of the recordings taken; one that could not be moved
    /// is logged and left where it is.
    pub fn adopt(&self, from: &Path, quiet_for: std::time::Duration) -> Vec<String> {
        let mut taken = Vec::new();
        let mut names = Vec::new();
        let dirs = match spool::recordings(from) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(spool = %from.display(), error = %e, "another node's spool is unreadable");
                return names;
            }
        };
        for dir in dirs {
            let Some(name) = dir.file_name() else {
                continue;
            };
            if spool::written_within(&dir, quiet_for) {
                continue;
            }
            let to = self.config.spool.join(name);
            match std::fs::rename(&dir, &to) {
                Ok(()) => {
                    names.push(name.to_string_lossy().into_owned());
                    taken.push(to);
                }
                // Another node took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not take over a recording; it stays in the other node's spool")
                }
            }
        }
        if taken.is_empty() {
            return names;
        }
        if let Err(e) = spool::fsync_dir(&self.config.spool) {
            tracing::warn!(error = %e, "the spool directory could not be synced after a takeover");
        }
        // In this spool now: a failure here is finished at this node's next start.
        if let Err(e) = upload::recover_dirs(&taken, &self.events) {
            tracing::warn!(error = %e, "a recording taken over could not be finished; this node's next start retries");
        }
        for dir in taken {
            self.uploads.push(dir);
        }
        names
    }

    /// True while closed recordings wait for (or are in) upload.
    pub fn has_pending_uploads(&self) -> bool {
        self.uploads.pending() > 0
    }

    pub fn upload_stats(&self) -> UploadStats {
        *self.uploads.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts writing a recording: the tap goes to the SFU, the handle stops it.
    pub fn begin(
        &self,
        recording_id: &str,
        room: &str,
    ) -> Result<(QueueTap, SessionHandle), RecorderError> {
        let session = Session::create(
            &self.config.spool,
            recording_id,
            room,
            self.config.session.clone(),
            (std::time::Instant::now(), std::time::SystemTime::now()),
        )?;
        let uploads = self.uploads.clone();
        let events = self.events.clone();
        let (id, room) = (recording_id.to_owned(), room.to_owned());
        session::spawn(
            session,
            self.config.queue,
            self.events.clone(),
            Box::new(move |dir, result| {
                let kind = match result {
                    Ok(m) => RecorderEventKind::Stopped(m.clone()),
                    Err(e) => {
                        tracing::error!(recording = %id, error = %e, "recording failed at close");
                        RecorderEventKind::Failed(e.to_string())
                    }
                };
                let _ = events.send(RecorderEvent {
                    recording_id: id,
                    room,
                    kind,
                });
                // Even a failed close leaves files worth keeping: the manifest names
                // them and recovery or the uploader takes them from here.
                uploads.push(dir.to_owned());
            }),
        )
    }
}
