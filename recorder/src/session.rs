//! One recording being written: tap items in, track files and the manifest out.
//!
//! [`Session`] is plain and synchronous (file IO only, time from the packets), so it
//! is tested directly; [`spawn`] runs one on its own thread behind a bounded queue,
//! which is what the SFU's tap feeds.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use media_core::str0m::format::Codec;
use media_core::str0m::media::MediaKind;
use media_core::{MediaTap, PeerId, SenderClock, TapItem, TapPacket, TapTrack, TrackRef};
use tracing::{info, warn};

use crate::manifest::{ClockSource, Manifest, SpoolState, TrackEntry};
use crate::ogg::{OggOpusWriter, PRE_SKIP};
use crate::reorder::Reorder;
use crate::spool::{fsync_dir, safe_name};
use crate::video::{VideoWriter, video_extension};
use crate::{RecorderError, RecorderEvent, RecorderEventKind};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long a packet may wait for an earlier one that is missing.
    pub reorder_wait: Duration,
    /// Most packets held per track while reordering.
    pub reorder_packets: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            reorder_wait: Duration::from_millis(150),
            reorder_packets: 128,
        }
    }
}

enum Writer {
    Opus(OggOpusWriter<BufWriter<File>>),
    Video(VideoWriter<BufWriter<File>>),
    /// Nothing is written (unsupported codec, or the writer failed).
    None,
}

struct TrackState {
    entry: usize,
    clock_rate: u32,
    writer: Writer,
    reorder: Reorder,
    first_rtp: Option<i64>,
    /// The publisher.
    owner: PeerId,
    /// Earliest start the packets' arrivals imply, on the node's clock (Unix ms):
    /// min over packets of arrival − media time since the first sample. The least
    /// delayed packet wins, so jitter on the first one does not move the track.
    implied_start: f64,
    sender_clock: Option<SenderClock>,
    path: PathBuf,
}

pub struct Session {
    dir: PathBuf,
    manifest: Manifest,
    tracks: Vec<TrackState>,
    /// Index into `tracks` of each live track.
    live: HashMap<TrackRef, usize>,
    config: SessionConfig,
    /// Maps packet arrival (monotonic) to wall-clock time.
    anchor: (Instant, SystemTime),
    scratch: Vec<TapPacket>,
    /// Per publisher: min over its packets of arrival − the sender-report time of the
    /// packet (ms). It maps the publisher's clock onto the node's through its least
    /// delayed packet; one offset for all of a publisher's tracks keeps their sender
    /// reports' lip sync.
    publisher_offset: HashMap<PeerId, f64>,
    /// Packets of tracks never announced (their announcement was refused).
    pub orphan_packets: u64,
}

/// A monotonic instant on the wall clock, through the session's anchor (Unix ms).
fn wall_ms(anchor: (Instant, SystemTime), at: Instant) -> f64 {
    let wall = if at >= anchor.0 {
        anchor.1 + (at - anchor.0)
    } else {
        anchor.1 - (anchor.0 - at)
    };
    unix_ms(wall)
}

pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Opus => "opus",
        Codec::Vp8 => "vp8",
        Codec::Vp9 => "vp9",
        Codec::H264 => "h264",
        Codec::Av1 => "av1",
        Codec::H265 => "h265",
        _ => "other",
    }
}

impl Session {
    /// Creates the recording's spool directory and its first manifest.
    pub fn create(
        spool: &Path,
        recording_id: &str,
        room: &str,
        config: SessionConfig,
        anchor: (Instant, SystemTime),
    ) -> Result<Session, RecorderError> {
        let dir = spool.join(safe_name(recording_id));
        std::fs::create_dir_all(&dir).map_err(|e| RecorderError::io(&dir, e))?;
        fsync_dir(spool)?;
        let manifest = Manifest {
            version: crate::manifest::MANIFEST_VERSION,
            recording_id: recording_id.to_owned(),
            room: room.to_owned(),
            state: SpoolState::Recording,
            started_at: unix_ms(anchor.1) as i64,
            stopped_at: None,
            stop_reason: None,
            refused_by_queue: 0,
            tracks: Vec::new(),
            gaps: Vec::new(),
        };
        manifest.write(&dir)?;
        Ok(Session {
            dir,
            manifest,
            tracks: Vec::new(),
            live: HashMap::new(),
            config,
            anchor,
            scratch: Vec::with_capacity(16),
            publisher_offset: HashMap::new(),
            orphan_packets: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Handles one tap item; returns the entry of a track that was just added.
    pub fn handle(&mut self, item: TapItem) -> Result<Option<TrackEntry>, RecorderError> {
        match item {
            TapItem::Track(t) => self.add_track(t).map(Some),
            TapItem::Packet(p) => {
                let Some(&i) = self.live.get(&p.track) else {
                    self.orphan_packets += 1;
                    return Ok(None);
                };
                let mut ready = std::mem::take(&mut self.scratch);
                self.tracks[i].reorder.push(p, &mut ready);
                for p in ready.drain(..) {
                    self.write(i, &p);
                }
                self.scratch = ready;
                Ok(None)
            }
            TapItem::TrackEnded(t) => {
                if let Some(i) = self.live.remove(&t) {
                    self.finish_track(i);
                    self.manifest.write(&self.dir)?;
                }
                Ok(None)
            }
        }
    }

    fn add_track(&mut self, t: TapTrack) -> Result<TrackEntry, RecorderError> {
        if let Some(i) = self.live.remove(&t.track) {
            self.finish_track(i);
        }
        let n = self.tracks.len();
        let (ext, supported) = match (t.kind, t.codec) {
            (MediaKind::Audio, Codec::Opus) => ("ogg", true),
            (MediaKind::Video, c) => match video_extension(c) {
                Some(e) => (e, true),
                None => ("bin", false),
            },
            _ => ("bin", false),
        };
        let file = format!(
            "{n:02}-{}-{}.{ext}",
            safe_name(&t.identity),
            safe_name(&t.track.mid.to_string())
        );
        let path = self.dir.join(&file);
        let mut error = None;
        let writer = if supported {
            let f = File::create(&path).map_err(|e| RecorderError::io(&path, e))?;
            let out = BufWriter::with_capacity(64 * 1024, f);
            let made = match t.codec {
                Codec::Opus => {
                    OggOpusWriter::new(out, t.channels.clamp(1, 2), n as u32 + 1, "StreamCore")
                        .map(Writer::Opus)
                        .map_err(|e| e.to_string())
                }
                c => VideoWriter::new(out, c)
                    .map(Writer::Video)
                    .map_err(|e| e.to_string()),
            };
            match made {
                Ok(w) => w,
                Err(e) => {
                    error = Some(e);
                    Writer::None
                }
            }
        } else {
            error = Some(format!("{:?} is not recorded", t.codec));
            Writer::None
        };
        let entry = TrackEntry {
            file: if supported { file } else { String::new() },
            participant: t.identity.clone(),
            mid: t.track.mid.to_string(),
            kind: match t.kind {
                MediaKind::Audio => "audio".into(),
                MediaKind::Video => "video".into(),
            },
            codec: codec_name(t.codec).into(),
            clock_rate: t.clock_rate,
            rid: t.rid.map(|r| r.to_string()),
            first_sample_at: None,
            clock_source: None,
            duration_ms: 0.0,
            packets: 0,
            lost_packets: 0,
            bytes: 0,
            error,
        };
        self.manifest.tracks.push(entry.clone());
        self.tracks.push(TrackState {
            entry: self.manifest.tracks.len() - 1,
            clock_rate: t.clock_rate.max(1),
            writer,
            reorder: Reorder::new(self.config.reorder_packets, self.config.reorder_wait),
            first_rtp: None,
            owner: t.track.owner,
            implied_start: f64::INFINITY,
            sender_clock: None,
            path,
        });
        self.live.insert(t.track, n);
        self.manifest.write(&self.dir)?;
        info!(recording = %self.manifest.recording_id, participant = %t.identity, codec = ?t.codec, "track added to recording");
        Ok(entry)
    }

    fn write(&mut self, i: usize, p: &TapPacket) {
        let st = &mut self.tracks[i];
        let entry = &mut self.manifest.tracks[st.entry];
        if st.sender_clock.is_none() {
            st.sender_clock = p.sender_clock;
        }
        // (the file failed, what happened)
        let res: Result<(), (bool, String)> = match &mut st.writer {
            Writer::Opus(w) => w
                .push(p.rtp_time as u32, &p.payload)
                .map_err(|e| (matches!(e, crate::OggError::Io(_)), e.to_string())),
            Writer::Video(w) => w
                .push(p)
                .map_err(|e| (matches!(e, crate::video::VideoError::Io(_)), e.to_string())),
            Writer::None => return,
        };
        match res {
            Ok(()) => {
                entry.packets += 1;
                entry.bytes += p.payload.len() as u64;
                if st.first_rtp.is_none() && written_anything(&st.writer) {
                    st.first_rtp = Some(p.rtp_time);
                }
                let rate = f64::from(st.clock_rate);
                let arrival = wall_ms(self.anchor, p.arrival);
                if let Some(first) = st.first_rtp {
                    let implied = arrival - (p.rtp_time - first) as f64 * 1000.0 / rate;
                    st.implied_start = st.implied_start.min(implied);
                }
                if let Some(sc) = st.sender_clock {
                    let sent =
                        unix_ms(sc.ntp_time) + (p.rtp_time - sc.rtp_time) as f64 * 1000.0 / rate;
                    let off = self
                        .publisher_offset
                        .entry(st.owner)
                        .or_insert(f64::INFINITY);
                    *off = off.min(arrival - sent);
                }
            }
            Err((file_failed, e)) => {
                // A bad packet from the publisher costs that packet only, unless the
                // file itself failed.
                if file_failed {
                    warn!(recording = %self.manifest.recording_id, file = %entry.file, error = %e, "track file failed; the track stops recording");
                    entry.error = Some(e);
                    st.writer = Writer::None;
                } else {
                    entry.lost_packets += 1;
                }
            }
        }
    }

    fn finish_track(&mut self, i: usize) {
        let mut rest = std::mem::take(&mut self.scratch);
        self.tracks[i].reorder.flush(&mut rest);
        for p in rest.drain(..) {
            self.write(i, &p);
        }
        self.scratch = rest;
        let st = &mut self.tracks[i];
        let entry = &mut self.manifest.tracks[st.entry];
        entry.lost_packets += st.reorder.lost;
        let writer = std::mem::replace(&mut st.writer, Writer::None);
        let result: Result<Option<f64>, String> = match writer {
            Writer::Opus(w) => {
                let samples = w.samples();
                w.finish()
                    .map_err(|e| e.to_string())
                    .and_then(|out| sync(out).map_err(|e| e.to_string()))
                    .map(|_| Some(samples.saturating_sub(u64::from(PRE_SKIP)) as f64 / 48.0))
            }
            Writer::Video(w) => w
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|(out, ms)| sync(out).map(|_| Some(ms)).map_err(|e| e.to_string())),
            Writer::None => Ok(None),
        };
        match result {
            Ok(Some(ms)) => entry.duration_ms = ms,
            Ok(None) => {}
            Err(e) => {
                warn!(file = %st.path.display(), error = %e, "closing a track file failed");
                entry.error = Some(e);
            }
        }
        // Every track lands on the node's clock, so tracks of publishers whose clocks
        // disagree still line up; a publisher's sender reports, when there are any,
        // place its tracks relative to each other (capture time, not arrival).
        if let Some(first) = st.first_rtp {
            let offset = self
                .publisher_offset
                .get(&st.owner)
                .filter(|o| o.is_finite());
            let (at, source) = match (st.sender_clock, offset) {
                (Some(sc), Some(off)) => (
                    unix_ms(sc.ntp_time)
                        + (first - sc.rtp_time) as f64 * 1000.0 / f64::from(st.clock_rate)
                        + off,
                    ClockSource::SenderReport,
                ),
                _ => (st.implied_start, ClockSource::Arrival),
            };
            entry.first_sample_at = at.is_finite().then_some(at);
            entry.clock_source = Some(source);
        }
    }

    /// Notes how many items the SFU's queue refused (they are missing from the files).
    pub fn set_refused(&mut self, n: u64) {
        self.manifest.refused_by_queue = n;
    }

    /// Finishes every track, fsyncs, and marks the manifest closed.
    pub fn close(mut self, reason: &str, now: SystemTime) -> Result<Manifest, RecorderError> {
        let live: Vec<usize> = self.live.drain().map(|(_, i)| i).collect();
        for i in live {
            self.finish_track(i);
        }
        self.manifest.state = SpoolState::Closed;
        self.manifest.stopped_at = Some(unix_ms(now) as i64);
        self.manifest.stop_reason = Some(reason.to_owned());
        self.manifest.gaps = self.manifest.find_gaps();
        fsync_dir(&self.dir)?;
        self.manifest.write(&self.dir)?;
        Ok(self.manifest)
    }
}

fn written_anything(w: &Writer) -> bool {
    match w {
        Writer::Opus(_) => true,
        Writer::Video(v) => v.started(),
        Writer::None => false,
    }
}

fn sync(out: BufWriter<File>) -> std::io::Result<()> {
    let f = out.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

/// How often a session's thread takes what the SFU queued.
const POLL: Duration = Duration::from_millis(10);

/// The SFU side of a running session: a bounded queue that never blocks.
pub struct QueueTap(SyncSender<TapItem>);

impl MediaTap for QueueTap {
    fn offer(&mut self, item: TapItem) -> bool {
        match self.0.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The control side of a running session.
pub struct SessionHandle {
    pub recording_id: String,
    stop: Arc<AtomicBool>,
    reason: Arc<Mutex<String>>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    done: tokio::sync::oneshot::Receiver<Result<Manifest, RecorderError>>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("recording_id", &self.recording_id)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Stops the session: what is queued is written, the files are closed and
    /// fsynced; resolves to the closed manifest.
    pub async fn stop(self, reason: &str) -> Result<Manifest, RecorderError> {
        self.stop_counting(reason, 0).await
    }

    /// [`stop`](Self::stop), noting that the SFU's queue refused `refused` items.
    pub async fn stop_counting(
        self,
        reason: &str,
        refused: u64,
    ) -> Result<Manifest, RecorderError> {
        self.refused.store(refused, Ordering::Release);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        self.stop.store(true, Ordering::Release);
        self.done
            .await
            .unwrap_or_else(|_| Err(RecorderError::Manifest("the session thread died".into())))
    }
}

/// Called with the spool directory and the outcome when a session has closed.
pub type OnClosed = Box<dyn FnOnce(&Path, &Result<Manifest, RecorderError>) + Send>;

/// Runs `session` on its own thread behind a queue of `capacity` items. When it
/// closes, `on_closed` gets the manifest (the recorder queues the upload from there).
pub fn spawn(
    session: Session,
    capacity: usize,
    events: tokio::sync::mpsc::UnboundedSender<RecorderEvent>,
    on_closed: OnClosed,
) -> Result<(QueueTap, SessionHandle), RecorderError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(16));
    let stop = Arc::new(AtomicBool::new(false));
    let reason = Arc::new(Mutex::new(String::from("requested")));
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let id = session.manifest.recording_id.clone();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (s2, r2, n2) = (stop.clone(), reason.clone(), refused.clone());
    std::thread::Builder::new()
        .name(format!("rec-{}", &id[..id.len().min(8)]))
        .spawn(move || {
            let dir = session.dir.clone();
            let result = run(session, rx, &s2, &r2, &n2, &events);
            on_closed(&dir, &result);
            let _ = done_tx.send(result);
        })
        .map_err(|e| RecorderError::io(Path::new("<thread>"), e))?;
    Ok((
        QueueTap(tx),
        SessionHandle {
            recording_id: id,
            stop,
            reason,
            refused,
            done,
        },
    ))
}

fn run(
    mut session: Session,
    rx: Receiver<TapItem>,
    stop: &AtomicBool,
    reason: &Mutex<String>,
    refused: &std::sync::atomic::AtomicU64,
    events: &tokio::sync::mpsc::UnboundedSender<RecorderEvent>,
) -> Result<Manifest, RecorderError> {
    let id = session.manifest.recording_id.clone();
    let room = session.manifest.room.clone();
    let handle = |session: &mut Session, item| -> Result<(), RecorderError> {
        if let Some(entry) = session.handle(item)? {
            let _ = events.send(RecorderEvent {
                recording_id: id.clone(),
                room: room.clone(),
                kind: RecorderEventKind::TrackAdded(entry),
            });
        }
        Ok(())
    };
    // Polled, not woken: a sender that finds the receiver asleep on the channel pays
    // a futex wake (a syscall, often a context switch) per packet; one that finds it
    // sleeping on a timer pays nothing. 10 ms of queue is far inside its capacity.
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(item) = rx.try_recv() {
            handle(&mut session, item)?;
        }
        // Whatever the SFU queued before the stop is part of the recording.
        if stopping {
            break;
        }
        std::thread::sleep(POLL);
    }
    let reason = reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
    session.set_refused(refused.load(Ordering::Acquire));
    session.close(&reason, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OggOpusReader;
    use media_core::PeerId;
    use media_core::str0m::media::Mid;

    fn track(peer: u64, name: &str) -> TapTrack {
        TapTrack {
            track: TrackRef {
                owner: PeerId(peer),
                mid: Mid::from("0"),
            },
            identity: name.into(),
            kind: MediaKind::Audio,
            codec: Codec::Opus,
            clock_rate: 48_000,
            channels: 2,
            rid: None,
        }
    }

    /// 20 ms Opus packets (TOC config 31: CELT fullband 20 ms).
    fn packet(t: &TapTrack, seq: u64, at: Instant, clock: Option<SenderClock>) -> TapItem {
        TapItem::Packet(TapPacket {
            track: t.track,
            seq,
            rtp_time: 1000 + seq as i64 * 960,
            marker: false,
            payload: vec![0xf8, 0xff, 0xfe].into(),
            arrival: at,
            sender_clock: clock,
        })
    }

    #[test]
    fn two_tracks_with_a_gap_and_sender_reports_make_a_closed_manifest() {
        let spool = std::env::temp_dir().join(format!("sc-session-{}", rand_suffix()));
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s =
            Session::create(&spool, "rec1", "room", SessionConfig::default(), (t0, wall)).unwrap();
        let (a, b) = (track(1, "alice"), track(2, "bob"));
        assert!(s.handle(TapItem::Track(a.clone())).unwrap().is_some());
        assert!(s.handle(TapItem::Track(b.clone())).unwrap().is_some());
        // Bob's clock is 5 s ahead of the node's: his sender report says RTP time 1000
        // was wall + 5 s; his packets take 10 ms to arrive.
        let sr = SenderClock {
            ntp_time: wall + Duration::from_secs(5),
            rtp_time: 1000,
        };
        for seq in 0..100u64 {
            // Alice's first packet is 30 ms late (jitter), the rest on time.
            let jitter = if seq == 0 { 30 } else { 0 };
            let at = t0 + Duration::from_millis(seq * 20 + jitter);
            // Alice loses packets 40..50: the file keeps the time as silence.
            if !(40..50).contains(&seq) {
                s.handle(packet(&a, seq, at, None)).unwrap();
            }
            let at = t0 + Duration::from_millis(seq * 20 + 10);
            s.handle(packet(&b, seq, at, Some(sr))).unwrap();
        }
        // A packet of a track never announced is counted, not written.
        s.handle(packet(&track(9, "x"), 0, t0, None)).unwrap();
        assert_eq!(s.orphan_packets, 1);
        let dir = s.dir().to_owned();
        let m = s.close("requested", wall + Duration::from_secs(3)).unwrap();
        assert_eq!(m.state, SpoolState::Closed);
        assert_eq!(Manifest::read(&dir).unwrap(), m);
        let (ma, mb) = (&m.tracks[0], &m.tracks[1]);
        assert_eq!(ma.participant, "alice");
        assert_eq!(ma.lost_packets, 10);
        assert_eq!(ma.packets, 90);
        // 100 packets of 20 ms less the 6.5 ms pre-skip, for both.
        assert!((ma.duration_ms - 1993.5).abs() < 0.01, "{}", ma.duration_ms);
        assert!((mb.duration_ms - 1993.5).abs() < 0.01);
        assert_eq!(ma.clock_source, Some(ClockSource::Arrival));
        assert_eq!(mb.clock_source, Some(ClockSource::SenderReport));
        // Both on the node's clock: Alice's late first packet does not move her, Bob's
        // wrong clock does not move him (only his 10 ms of network delay remains).
        assert_eq!(ma.first_sample_at, Some(unix_ms(wall)));
        assert_eq!(mb.first_sample_at, Some(unix_ms(wall) + 10.0));
        for t in [ma, mb] {
            let r = OggOpusReader::parse(&std::fs::read(dir.join(&t.file)).unwrap()).unwrap();
            assert_eq!(r.samples().unwrap(), 100 * 960);
        }
        std::fs::remove_dir_all(&spool).unwrap();
    }

    fn rand_suffix() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}
