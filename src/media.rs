//! The thin async driver around `media_core::Sfu`: one thread per worker, each with
//! its own UDP socket and current-thread tokio runtime. Nothing is shared between
//! workers on the packet path; the session table is touched only by signaling calls
//! and peer removals.
//!
//! A room lives on one worker (chosen by a hash of its name), so forwarding inside a
//! room never crosses threads.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use media_core::{
    JoinRequest, OfferRequest, ParticipantInfo, PeerId, PeerRole, RemoteIceCreds, RemoveReason,
    RoomId, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats,
};
use signaling::{
    BackendError, JoinRoom, MediaBackend, OpenSession, OpenedSession, ParticipantKey, RoomBackend,
    RoomCommand, RoomReply, RoomUpdate, SessionId, SessionOwner,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use crate::config::Settings;
use crate::ice_tcp::{IceTcp, TcpEvent};
use crate::load::{LoadMeter, SharedLoad};
use crate::metrics::Metrics;
use crate::recv_buffer::RecvBufferSizer;
use crate::udp_batch;
use media_core::str0m::net::{Protocol, Transmit};

/// Largest datagram we read; larger ones are truncated and then rejected by str0m.
const RECV_BUF: usize = 2048;
/// Datagrams read per wake-up before outputs are flushed.
const RECV_BATCH: usize = 64;
/// The send buffer: a keyframe burst to many subscribers must not overflow it. (The
/// receive buffer follows the traffic: `crate::recv_buffer`.)
const SEND_BUF_BYTES: usize = 4 * 1024 * 1024;

enum Command {
    Accept {
        room: RoomId,
        identity: String,
        name: String,
        role: PeerRole,
        offer: String,
        room_limit: Option<usize>,
        reply: oneshot::Sender<Result<media_core::Accepted, SfuError>>,
    },
    Remove {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidates {
        peer: PeerId,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// A WHIP/WHEP client's ICE restart; the reply is the new answer.
    RestartIce {
        peer: PeerId,
        creds: RemoteIceCreds,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    /// A room participant joins; `updates` hears the room from the snapshot on.
    Join {
        req: JoinRoom,
        updates: mpsc::Sender<RoomUpdate>,
        reply: oneshot::Sender<Result<(PeerId, Vec<ParticipantInfo>), SfuError>>,
    },
    /// A resumed participant's new update channel.
    Attach {
        peer: PeerId,
        updates: mpsc::Sender<RoomUpdate>,
        reply: oneshot::Sender<Result<Vec<ParticipantInfo>, SfuError>>,
    },
    Room {
        peer: PeerId,
        cmd: RoomCommand,
        reply: oneshot::Sender<Result<RoomReply, SfuError>>,
    },
    /// Record a room: its media goes to `tap` as well.
    StartTap {
        room: RoomId,
        tap: Box<dyn media_core::MediaTap>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// Stop recording a room (the tap is dropped).
    StopTap {
        room: RoomId,
        reply: oneshot::Sender<Result<Option<media_core::TapStats>, SfuError>>,
    },
    /// The identities of a room's peers.
    Identities {
        room: RoomId,
        reply: oneshot::Sender<Result<Vec<String>, SfuError>>,
    },
    /// Remove a room's peers with these identities (their passes were revoked).
    Evict {
        room: RoomId,
        identities: Vec<String>,
        reply: oneshot::Sender<Result<usize, SfuError>>,
    },
    /// The relay between nodes (`crate::relay`); no reply: a link never waits on media.
    Relay(RelayCommand),
    /// Close every peer gracefully and stop.
    Shutdown,
}

/// What a relay link asks of the worker of a room.
pub enum RelayCommand {
    /// Offer the room's tracks to a link (its node imports the room); with
    /// `participants`, its participants and data messages too (a link to another node,
    /// not to another worker).
    Export {
        room: RoomId,
        link: u64,
        sink: Box<dyn media_core::RelaySink>,
        participants: bool,
    },
    StopExport {
        room: RoomId,
        link: u64,
    },
    /// The link closed: every room it exported (sent to every worker).
    StopLinkExports {
        link: u64,
    },
    ExportKeyframe {
        room: RoomId,
        track: u32,
        rid: Option<media_core::str0m::media::Rid>,
    },
    /// A participant of the other side of a room imported over `link`.
    ImportParticipant {
        room: RoomId,
        link: u64,
        participant: media_core::relay::RelayParticipant,
    },
    ImportLeft {
        room: RoomId,
        link: u64,
        participant: u64,
        reason: RemoveReason,
    },
    /// A data message of the other side's participant `participant`.
    ImportData {
        room: RoomId,
        link: u64,
        participant: u64,
        to: Option<Vec<String>>,
        payload: serde_json::Value,
    },
    /// A track of a room this node imports, announced over `link`.
    ImportTrack {
        room: RoomId,
        link: u64,
        track: media_core::relay::RelayTrack,
    },
    ImportEnded {
        room: RoomId,
        link: u64,
        track: u32,
    },
    ImportMuted {
        room: RoomId,
        link: u64,
        track: u32,
        muted: bool,
    },
    ImportPacket {
        room: RoomId,
        link: u64,
        packet: media_core::relay::RelayedPacket,
    },
    /// The import of a room over `link` ends (no subscriber here, or the link closed).
    CloseImport {
        room: RoomId,
        link: u64,
    },
}

impl RelayCommand {
    fn room(&self) -> Option<&RoomId> {
        match self {
            RelayCommand::Export { room, .. }
            | RelayCommand::StopExport { room, .. }
            | RelayCommand::ExportKeyframe { room, .. }
            | RelayCommand::ImportParticipant { room, .. }
            | RelayCommand::ImportLeft { room, .. }
            | RelayCommand::ImportData { room, .. }
            | RelayCommand::ImportTrack { room, .. }
            | RelayCommand::ImportEnded { room, .. }
            | RelayCommand::ImportMuted { room, .. }
            | RelayCommand::ImportPacket { room, .. }
            | RelayCommand::CloseImport { room, .. } => Some(room),
            RelayCommand::StopLinkExports { .. } => None,
        }
    }
}

/// An imported track's subscribers wait for a keyframe: the relay asks the exporter.
#[derive(Debug)]
pub struct RelayKeyframe {
    pub room: RoomId,
    pub link: u64,
    pub track: u32,
    pub rid: Option<String>,
}

/// Where workers send [`RelayKeyframe`]s, once the relay runs.
type RelayKeyframes = Arc<std::sync::OnceLock<mpsc::UnboundedSender<RelayKeyframe>>>;

/// Links between two workers of this node (a room spread over workers) have this bit
/// set; QUIC links between nodes never do.
const LOCAL_LINK: u64 = 1 << 63;

fn local_link(home: usize, importer: usize) -> u64 {
    LOCAL_LINK | ((home as u64) << 20) | importer as u64
}

/// The worker a local link exports from.
fn local_link_home(link: u64) -> Option<usize> {
    (link & LOCAL_LINK != 0).then_some(((link & !LOCAL_LINK) >> 20) as usize)
}

/// What spreading needs across workers: every worker's queue, and which rooms are
/// spread to which worker.
#[derive(Default)]
struct Spreads {
    senders: std::sync::OnceLock<Vec<mpsc::Sender<Command>>>,
    /// (room, importing worker) → the local link that feeds it.
    rooms: Mutex<HashMap<(RoomId, usize), u64>>,
}

/// A room's export to another worker of this node: what the room's worker offers
/// goes straight into the importing worker's queue.
struct WorkerSink {
    tx: mpsc::Sender<Command>,
    room: RoomId,
    link: u64,
}

impl media_core::RelaySink for WorkerSink {
    fn offer(&mut self, item: media_core::RelayOut) -> bool {
        let (room, link) = (self.room.clone(), self.link);
        let cmd = match item {
            media_core::RelayOut::Track(track) => RelayCommand::ImportTrack { room, link, track },
            // A link to another worker carries tracks only (`participants: false`).
            media_core::RelayOut::Participant(_)
            | media_core::RelayOut::ParticipantLeft { .. }
            | media_core::RelayOut::Data { .. } => return true,
            media_core::RelayOut::TrackEnded { track, .. } => {
                RelayCommand::ImportEnded { room, link, track }
            }
            media_core::RelayOut::Muted { track, muted, .. } => RelayCommand::ImportMuted {
                room,
                link,
                track,
                muted,
            },
            media_core::RelayOut::Packet(packet) => {
                RelayCommand::ImportPacket { room, link, packet }
            }
        };
        self.tx.try_send(Command::Relay(cmd)).is_ok()
    }
}

#[derive(Debug, Clone)]
struct SessionEntry {
    worker: usize,
    peer: PeerId,
    owner: SessionOwner,
}

#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<SessionId, SessionEntry>,
    by_peer: HashMap<(usize, PeerId), SessionId>,
}

impl Sessions {
    fn remove_peer(&mut self, worker: usize, peer: PeerId) {
        if let Some(id) = self.by_peer.remove(&(worker, peer)) {
            self.by_id.remove(&id);
        }
    }
}

struct Worker {
    tx: mpsc::Sender<Command>,
    /// What the worker measured of its own load, for admission.
    load: Arc<SharedLoad>,
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The node's media workers, as signaling sees them.
pub struct MediaWorkers {
    workers: Vec<Worker>,
    sessions: Arc<Mutex<Sessions>>,
    draining: AtomicBool,
    /// New peers go only to a worker under this share of its core (100: always).
    max_load_percent: u8,
    metrics: Metrics,
    relay_keyframes: RelayKeyframes,
    /// A room's players on its own worker at most before others serve it (0: none).
    room_players_per_worker: usize,
    spreads: Arc<Spreads>,
}

impl std::fmt::Debug for MediaWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaWorkers")
            .field("ports", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl MediaWorkers {
    /// Binds every worker's socket (so a taken port fails start-up, not a later call)
    /// and starts the worker threads.
    pub fn start(
        settings: &Settings,
        metrics: Metrics,
        room_events: mpsc::UnboundedSender<(usize, SfuEvent)>,
        relays: Option<Arc<dyn media_core::turn::RelayDirectory>>,
    ) -> anyhow::Result<Self> {
        let n = settings.worker_count();
        let bind_ip = settings.media_bind_ip();
        let sessions = Arc::new(Mutex::new(Sessions::default()));
        let relay_keyframes = RelayKeyframes::default();
        let spreads = Arc::new(Spreads::default());
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let port = if settings.media.port == 0 {
                0
            } else {
                settings.media.port + i as u16
            };
            let socket = bind_udp(SocketAddr::new(bind_ip, port))
                .with_context(|| format!("binding media worker {i} on {bind_ip}:{port}"))?;
            let local_addr = socket.local_addr()?;
            let candidates: Vec<SocketAddr> = settings
                .advertised_ips()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, local_addr.port()))
                .collect();
            // ICE-TCP on the UDP port's number (any free port when the UDP port was
            // picked for us and its number is taken on TCP).
            let tcp = if settings.media.ice_tcp {
                let at = SocketAddr::new(bind_ip, local_addr.port());
                let l = match bind_tcp(at) {
                    Err(_) if settings.media.port == 0 => bind_tcp(SocketAddr::new(bind_ip, 0)),
                    r => r,
                }
                .with_context(|| format!("binding media worker {i}'s ICE-TCP listener on {at}"))?;
                Some(l)
            } else {
                None
            };
            let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose()?;
            let mut config = SfuConfig::new(local_addr);
            config.candidates = candidates;
            if let Some(t) = tcp_addr {
                config.tcp_candidates = settings
                    .advertised_ips()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, t.port()))
                    .collect();
            }
            config.max_peers = settings.media.max_peers_per_worker;
            config.relays = relays.clone();
            config.relay_id_space = u8::try_from(i).context("at most 256 media workers")?;
            config.keyframe_min_interval =
                Duration::from_millis(settings.media.keyframe_interval_ms);
            config.connect_timeout = Duration::from_secs(settings.media.connect_timeout_secs);
            config.disconnect_grace = Duration::from_secs(settings.media.disconnect_grace_secs);
            config.initial_bitrate = (settings.media.bwe_initial_kbps > 0)
                .then(|| media_core::str0m::bwe::Bitrate::kbps(settings.media.bwe_initial_kbps));
            config.send_buffer_video = settings.media.video_send_buffer_packets;
            config.video_queue_limit = settings.media.video_queue_limit_bytes;
            let (tx, rx) = mpsc::channel(1024);
            let load = Arc::new(SharedLoad::default());
            let ctx = WorkerContext {
                index: i,
                load: load.clone(),
                recv_buffer_ms: settings.media.recv_buffer_ms,
                sessions: sessions.clone(),
                metrics: metrics.clone(),
                room_events: room_events.clone(),
                relay_keyframes: relay_keyframes.clone(),
                spreads: spreads.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            error!(worker = i, error = %e, "could not start worker runtime");
                            return;
                        }
                    };
                    rt.block_on(run_worker(socket, tcp, config, rx, ctx));
                })
                .context("spawning media worker thread")?;
            info!(worker = i, addr = %local_addr, tcp = ?tcp_addr, "media worker listening");
            workers.push(Worker {
                tx,
                load,
                local_addr,
                tcp_addr,
                thread: Mutex::new(Some(thread)),
            });
        }
        let _ = spreads
            .senders
            .set(workers.iter().map(|w: &Worker| w.tx.clone()).collect());
        Ok(MediaWorkers {
            workers,
            sessions,
            draining: AtomicBool::new(false),
            max_load_percent: settings.media.max_worker_load_percent,
            metrics,
            relay_keyframes,
            room_players_per_worker: settings.media.room_players_per_worker,
            spreads,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local_addr).collect()
    }

    /// The workers' ICE-TCP listeners (empty when ICE-TCP is off).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().filter_map(|w| w.tcp_addr).collect()
    }

    /// The rooms of this node's WHIP/WHEP sessions, with how many each has.
    pub fn session_rooms(&self) -> Vec<(RoomId, usize)> {
        let mut rooms = std::collections::BTreeMap::<RoomId, usize>::new();
        if let Ok(s) = self.sessions.lock() {
            for e in s.by_id.values() {
                *rooms.entry(e.owner.room.clone()).or_default() += 1;
            }
        }
        rooms.into_iter().collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.by_id.len()).unwrap_or(0)
    }

    /// Stops new sessions; existing ones continue.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Closes every peer (with a goodbye) and joins the worker threads.
    /// Blocks until the threads have finished; call it from a blocking context.
    pub fn shutdown(&self) {
        self.start_draining();
        for w in &self.workers {
            let _ = w.tx.try_send(Command::Shutdown);
        }
        for w in &self.workers {
            let handle = w.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = handle {
                let _ = t.join();
            }
        }
    }

    /// Admission control: a worker whose last measured load is at its limit takes no
    /// new peer (its room cannot move to another worker: a room lives on one), so the
    /// newcomer is told to come back instead of everyone's media queueing.
    fn admit(&self, worker: usize) -> Result<(), BackendError> {
        let load = &self.workers[worker].load;
        if load.admits(self.max_load_percent) {
            return Ok(());
        }
        let load_percent = (load.permille() / 10).min(100) as u8;
        info!(
            worker,
            load_percent,
            limit = self.max_load_percent,
            "new peer refused: worker at its load limit"
        );
        self.metrics.admission_refusals.inc();
        Err(BackendError::Overloaded { load_percent })
    }

    /// The worker a new WHEP player of `room` goes to: the room's own, unless it holds
    /// `room_players_per_worker` of them or is at its load limit; then the other worker
    /// with the fewest of the room's players that takes peers.
    fn player_worker(&self, room: &RoomId, home: usize) -> usize {
        if self.workers.len() < 2 {
            return home;
        }
        let on = |w: usize| {
            self.sessions.lock().map_or(0, |s| {
                s.by_id
                    .values()
                    .filter(|e| {
                        e.worker == w
                            && e.owner.role == PeerRole::Subscriber
                            && e.owner.room == *room
                    })
                    .count()
            })
        };
        let admits = |w: usize| self.workers[w].load.admits(self.max_load_percent);
        let cap = self.room_players_per_worker;
        if admits(home) && (cap == 0 || on(home) < cap) {
            return home;
        }
        (0..self.workers.len())
            .filter(|w| *w != home && admits(*w))
            .min_by_key(|w| on(*w))
            .unwrap_or(home)
    }

    /// Feeds `room` from its worker `home` to worker `to` (once).
    fn spread(&self, room: &RoomId, home: usize, to: usize) {
        let link = local_link(home, to);
        if lock(&self.spreads.rooms)
            .insert((room.clone(), to), link)
            .is_some()
        {
            return;
        }
        let sink = WorkerSink {
            tx: self.workers[to].tx.clone(),
            room: room.clone(),
            link,
        };
        let cmd = Command::Relay(RelayCommand::Export {
            room: room.clone(),
            link,
            sink: Box::new(sink),
            participants: false,
        });
        if self.workers[home].tx.try_send(cmd).is_err() {
            lock(&self.spreads.rooms).remove(&(room.clone(), to));
            return;
        }
        info!(%room, from = home, to, "room spread to another worker");
    }

    fn worker_for(&self, room: &RoomId) -> usize {
        let mut h = DefaultHasher::new();
        room.hash(&mut h);
        (h.finish() % self.workers.len() as u64) as usize
    }

    async fn call<T>(
        &self,
        worker: usize,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.workers[worker]
            .tx
            .send(make(reply))
            .await
            .map_err(|_| BackendError::Unavailable(format!("media worker {worker} has stopped")))?;
        rx.await
            .map_err(|_| {
                BackendError::Unavailable(format!("media worker {worker} did not answer"))
            })?
            .map_err(BackendError::from)
    }

    /// Starts offering a room's media to a recorder's tap, on the room's worker.
    /// The identities of the peers in `room`.
    pub async fn identities(&self, room: RoomId) -> Result<Vec<String>, BackendError> {
        // Every worker: a room's players may be spread over them.
        let mut all = Vec::new();
        for w in 0..self.workers.len() {
            let room = room.clone();
            all.extend(
                self.call(w, |reply| Command::Identities { room, reply })
                    .await?,
            );
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Removes the peers of `room` with these identities (`left`, reason `revoked`).
    pub async fn evict(
        &self,
        room: RoomId,
        identities: Vec<String>,
    ) -> Result<usize, BackendError> {
        let mut n = 0;
        for w in 0..self.workers.len() {
            let (room, identities) = (room.clone(), identities.clone());
            n += self
                .call(w, |reply| Command::Evict {
                    room,
                    identities,
                    reply,
                })
                .await?;
        }
        Ok(n)
    }

    pub async fn start_tap(
        &self,
        room: RoomId,
        tap: Box<dyn media_core::MediaTap>,
    ) -> Result<(), BackendError> {
        let w = self.worker_for(&room);
        self.call(w, |reply| Command::StartTap { room, tap, reply })
            .await
    }

    /// Stops a room's tap; its counters, if it had one.
    pub async fn stop_tap(
        &self,
        room: RoomId,
    ) -> Result<Option<media_core::TapStats>, BackendError> {
        let w = self.worker_for(&room);
        self.call(w, |reply| Command::StopTap { room, reply }).await
    }

    /// Hands a relay command to the room's worker (every worker for a link's end).
    /// False when a worker's queue was full and the command was dropped.
    pub fn relay(&self, cmd: RelayCommand) -> bool {
        let Some(room) = cmd.room() else {
            let RelayCommand::StopLinkExports { link } = cmd else {
                return false;
            };
            let mut all = true;
            for w in &self.workers {
                let stop = Command::Relay(RelayCommand::StopLinkExports { link });
                all &= w.tx.try_send(stop).is_ok();
            }
            if !all {
                self.metrics.relay_dropped.inc();
            }
            return all;
        };
        let w = self.worker_for(room);
        let sent = self.workers[w].tx.try_send(Command::Relay(cmd)).is_ok();
        if !sent {
            self.metrics.relay_dropped.inc();
        }
        sent
    }

    /// Hands a relay link's control command (a participant, a track, an export, an
    /// end) to the room's worker (every worker for a link's end), waiting for room in
    /// its queue: unlike packets, none may be lost, and they keep their order.
    pub async fn relay_control(&self, cmd: RelayCommand) {
        let Some(room) = cmd.room() else {
            let RelayCommand::StopLinkExports { link } = cmd else {
                return;
            };
            for w in &self.workers {
                let stop = Command::Relay(RelayCommand::StopLinkExports { link });
                let _ = w.tx.send(stop).await;
            }
            return;
        };
        let w = self.worker_for(room);
        // Fails only once the worker stopped (the node shuts down).
        let _ = self.workers[w].tx.send(Command::Relay(cmd)).await;
    }

    /// Where the workers send keyframe requests for imported tracks (set once).
    pub fn set_relay_keyframes(&self, tx: mpsc::UnboundedSender<RelayKeyframe>) {
        let _ = self.relay_keyframes.set(tx);
    }

    fn entry(&self, id: &SessionId) -> Option<SessionEntry> {
        self.sessions.lock().ok()?.by_id.get(id).cloned()
    }
}

impl Drop for MediaWorkers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl MediaBackend for MediaWorkers {
    async fn open_session(&self, req: OpenSession) -> Result<OpenedSession, BackendError> {
        if self.is_draining() {
            return Err(BackendError::Draining);
        }
        let home = self.worker_for(&req.room);
        let worker = match req.role {
            PeerRole::Subscriber => self.player_worker(&req.room, home),
            _ => home,
        };
        self.admit(worker)?;
        let owner = SessionOwner {
            room: req.room.clone(),
            identity: req.identity.clone(),
            role: req.role,
            ice_ufrag: String::new(),
            token_id: req.token_id,
        };
        let accepted = self
            .call(worker, |reply| Command::Accept {
                room: req.room,
                identity: req.identity,
                name: req.name,
                role: req.role,
                offer: req.offer_sdp,
                room_limit: req.room_limit,
                reply,
            })
            .await?;
        if worker != home {
            self.spread(&owner.room, home, worker);
        }
        let id = SessionId::random();
        let owner = SessionOwner {
            ice_ufrag: signaling::sdpfrag::ice_ufrag(&accepted.answer_sdp)
                .unwrap_or_default()
                .to_owned(),
            ..owner
        };
        if let Ok(mut s) = self.sessions.lock() {
            s.by_peer.insert((worker, accepted.peer), id.clone());
            s.by_id.insert(
                id.clone(),
                SessionEntry {
                    worker,
                    peer: accepted.peer,
                    owner,
                },
            );
        }
        let kind = match req.role {
            PeerRole::Publisher => "whip",
            PeerRole::Subscriber => "whep",
            PeerRole::Participant => "rtc",
        };
        self.metrics
            .sessions_created
            .with_label_values(&[kind])
            .inc();
        Ok(OpenedSession {
            id,
            answer_sdp: accepted.answer_sdp,
        })
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), BackendError> {
        let e = self.entry(id).ok_or(BackendError::UnknownSession)?;
        let r = self
            .call(e.worker, |reply| Command::Remove {
                peer: e.peer,
                reply,
            })
            .await;
        if let Ok(mut s) = self.sessions.lock() {
            s.remove_peer(e.worker, e.peer);
        }
        match r {
            Err(BackendError::Sfu(SfuError::UnknownPeer)) => Err(BackendError::UnknownSession),
            other => other,
        }
    }

    async fn add_candidates(
        &self,
        id: &SessionId,
        candidates: Vec<String>,
    ) -> Result<(), BackendError> {
        let e = self.entry(id).ok_or(BackendError::UnknownSession)?;
        self.call(e.worker, |reply| Command::Candidates {
            peer: e.peer,
            candidates,
            reply,
        })
        .await
    }

    async fn restart_ice(
        &self,
        id: &SessionId,
        creds: RemoteIceCreds,
    ) -> Result<String, BackendError> {
        let e = self.entry(id).ok_or(BackendError::UnknownSession)?;
        let answer = self
            .call(e.worker, |reply| Command::RestartIce {
                peer: e.peer,
                creds,
                reply,
            })
            .await?;
        if let Ok(mut s) = self.sessions.lock()
            && let Some(entry) = s.by_id.get_mut(id)
        {
            entry.owner.ice_ufrag = signaling::sdpfrag::ice_ufrag(&answer)
                .unwrap_or_default()
                .to_owned();
        }
        Ok(answer)
    }

    fn session_owner(&self, id: &SessionId) -> Option<SessionOwner> {
        self.entry(id).map(|e| e.owner)
    }

    fn sessions_of_token(&self, token_id: &str) -> usize {
        self.sessions.lock().map_or(0, |s| {
            s.by_id
                .values()
                .filter(|e| e.owner.token_id == token_id)
                .count()
        })
    }
}

impl RoomBackend for MediaWorkers {
    async fn join_room(
        &self,
        req: JoinRoom,
        updates: mpsc::Sender<RoomUpdate>,
    ) -> Result<(ParticipantKey, Vec<ParticipantInfo>), BackendError> {
        if self.is_draining() {
            return Err(BackendError::Draining);
        }
        let worker = self.worker_for(&req.room);
        self.admit(worker)?;
        let (peer, snapshot) = self
            .call(worker, |reply| Command::Join {
                req,
                updates,
                reply,
            })
            .await?;
        self.metrics
            .sessions_created
            .with_label_values(&["rtc"])
            .inc();
        Ok((ParticipantKey { worker, peer }, snapshot))
    }

    async fn attach(
        &self,
        key: ParticipantKey,
        updates: mpsc::Sender<RoomUpdate>,
    ) -> Result<Vec<ParticipantInfo>, BackendError> {
        self.call(key.worker, |reply| Command::Attach {
            peer: key.peer,
            updates,
            reply,
        })
        .await
    }

    async fn room_command(
        &self,
        key: ParticipantKey,
        cmd: RoomCommand,
    ) -> Result<RoomReply, BackendError> {
        self.call(key.worker, |reply| Command::Room {
            peer: key.peer,
            cmd,
            reply,
        })
        .await
    }

    fn is_draining(&self) -> bool {
        MediaWorkers::is_draining(self)
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel may clamp these (net.core.rmem_max, wmem_max).
    let _ = socket.set_recv_buffer_size(crate::recv_buffer::FLOOR);
    let _ = socket.set_send_buffer_size(SEND_BUF_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A room participant's update channel.
struct Listener {
    peer: PeerId,
    identity: String,
    updates: mpsc::Sender<RoomUpdate>,
}

/// The update channels of the room participants on one worker, by room.
#[derive(Default)]
struct Listeners {
    by_room: HashMap<RoomId, Vec<Listener>>,
}

impl Listeners {
    fn add(&mut self, room: RoomId, l: Listener) {
        let v = self.by_room.entry(room).or_default();
        v.retain(|o| o.peer != l.peer);
        v.push(l);
    }

    /// Sends to every listener of `room` that `to` accepts. A listener whose queue is
    /// full is dropped: its socket sees the channel close and the client resumes with
    /// a fresh snapshot, rather than the worker waiting or the update being lost.
    fn send(
        &mut self,
        room: &RoomId,
        update: &RoomUpdate,
        mut to: impl FnMut(&Listener) -> bool,
    ) -> usize {
        let Some(v) = self.by_room.get_mut(room) else {
            return 0;
        };
        let mut n = 0;
        v.retain(|l| {
            if !to(l) {
                return !l.updates.is_closed();
            }
            match l.updates.try_send(update.clone()) {
                Ok(()) => {
                    n += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    info!(peer = %l.peer, %room, "room updates backed up; participant cut off");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if v.is_empty() {
            self.by_room.remove(room);
        }
        n
    }

    fn remove(&mut self, room: &RoomId, peer: PeerId) {
        if let Some(v) = self.by_room.get_mut(room) {
            v.retain(|l| l.peer != peer);
            if v.is_empty() {
                self.by_room.remove(room);
            }
        }
    }
}

struct WorkerContext {
    index: usize,
    load: Arc<SharedLoad>,
    /// The socket's receive buffer holds this many milliseconds of its traffic.
    recv_buffer_ms: u32,
    sessions: Arc<Mutex<Sessions>>,
    metrics: Metrics,
    /// Lifecycle events for `room.events` (unbounded: a few per join, and the media
    /// thread must never wait on the database).
    room_events: mpsc::UnboundedSender<(usize, SfuEvent)>,
    relay_keyframes: RelayKeyframes,
    spreads: Arc<Spreads>,
}

async fn run_worker(
    std_socket: StdUdpSocket,
    tcp_listener: Option<std::net::TcpListener>,
    config: SfuConfig,
    mut rx: mpsc::Receiver<Command>,
    ctx: WorkerContext,
) {
    let socket = match UdpSocket::from_std(std_socket) {
        Ok(s) => s,
        Err(e) => {
            error!(worker = ctx.index, error = %e, "could not register the media socket");
            return;
        }
    };
    let (listener, mut tcp) = match tcp_listener.map(IceTcp::new).transpose() {
        Ok(Some((l, t))) => (Some(l), Some(t)),
        Ok(None) => (None, None),
        Err(e) => {
            error!(worker = ctx.index, error = %e, "could not register the ICE-TCP listener");
            return;
        }
    };
    let tcp_local = tcp.as_ref().map(IceTcp::local_addr);
    let local = config.local_addr;
    let mut sfu = Sfu::new(config);
    let mut listeners = Listeners::default();
    let mut buf = vec![0u8; RECV_BUF];
    let mut batch = Vec::with_capacity(udp_batch::BATCH);
    let mut reported = SfuStats::default();
    let mut last_gauges = Instant::now();
    let label = ctx.index.to_string();
    // Wake at least this often so gauges stay fresh on an idle worker.
    let idle_wake = Duration::from_secs(1);
    let mut meter = LoadMeter::new(Instant::now());
    let mut sizer = RecvBufferSizer::new(ctx.recv_buffer_ms);
    let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
    set_recv_buffer(&socket, &ctx, &label, sizer.current());

    loop {
        let deadline = sfu
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + idle_wake)
            .min(tokio::time::Instant::now() + idle_wake);
        // Waiting ends when select! returns; everything after is the turn's work.
        let wake = tokio::select! {
            biased;
            cmd = rx.recv() => Wake::Command(cmd),
            r = socket.recv_from(&mut buf) => Wake::Datagram(r),
            accepted = accept(listener.as_ref()) => Wake::Accepted(accepted),
            ev = tcp_event(tcp.as_mut()) => Wake::Tcp(ev),
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
        };
        let woke = Instant::now();
        match wake {
            Wake::Command(None | Some(Command::Shutdown)) => break,
            Wake::Command(Some(c)) => handle_command(&mut sfu, &ctx, &mut listeners, c),
            Wake::Datagram(Ok((n, src))) => {
                sfu.handle_datagram(woke, src, local, &buf[..n]);
                // Drain what else is queued before flushing.
                for _ in 1..RECV_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, src)) => sfu.handle_datagram(Instant::now(), src, local, &buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            Wake::Datagram(Err(e)) => debug!(worker = ctx.index, error = %e, "recv failed"),
            Wake::Accepted(accepted) => {
                if let (Ok((stream, remote)), Some(t)) = (accepted, tcp.as_mut()) {
                    t.adopt(stream, remote);
                }
            }
            Wake::Tcp(ev) => {
                if let (Some(t), Some(at)) = (tcp.as_mut(), tcp_local) {
                    let mut next = ev;
                    // Drain what else is queued before flushing.
                    for _ in 0..RECV_BATCH {
                        match next {
                            Some(TcpEvent::Frame(src, data)) => {
                                sfu.handle_packet(Instant::now(), Protocol::Tcp, src, at, &data);
                            }
                            Some(TcpEvent::Closed(src)) => t.closed(src),
                            None => break,
                        }
                        next = t.events.try_recv().ok();
                    }
                }
            }
            Wake::Timer => {}
        }
        let now = Instant::now();
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
        }
        flush(&mut sfu, &socket, tcp.as_mut(), &mut batch, &ctx.metrics).await;
        deliver_events(&mut sfu, &ctx, &mut listeners);
        let stats = sfu.stats();
        if stats != reported {
            ctx.metrics.add_stats(&reported, &stats);
            reported = stats;
        }
        let done = Instant::now();
        if let Some(permille) = meter.record(done.duration_since(woke), done) {
            ctx.load.set(permille);
            ctx.metrics
                .worker_load
                .with_label_values(&[&label])
                .set(f64::from(permille) / 1000.0);
            let bytes = sfu.stats().bytes_in;
            let resized = sizer.resize(bytes - window_bytes, done.duration_since(window_start));
            (window_start, window_bytes) = (done, bytes);
            if let Some(size) = resized {
                set_recv_buffer(&socket, &ctx, &label, size);
            }
        }
        if now.duration_since(last_gauges) >= Duration::from_secs(1) {
            last_gauges = now;
            ctx.metrics
                .peers
                .with_label_values(&[&label])
                .set(sfu.peer_count() as i64);
            ctx.metrics
                .rooms
                .with_label_values(&[&label])
                .set(sfu.room_count() as i64);
            ctx.metrics
                .tracks
                .with_label_values(&[&label])
                .set(sfu.track_count() as i64);
            ctx.metrics
                .ice_tcp_connections
                .with_label_values(&[&label])
                .set(tcp.as_ref().map_or(0, |t| t.connections() as i64));
        }
    }

    // Graceful end: every peer gets its goodbye.
    let now = Instant::now();
    for p in sfu.peer_ids() {
        let _ = sfu.remove_peer(now, p);
        if let Ok(mut s) = ctx.sessions.lock() {
            s.remove_peer(ctx.index, p);
        }
    }
    flush(&mut sfu, &socket, tcp.as_mut(), &mut batch, &ctx.metrics).await;
    ctx.metrics.peers.with_label_values(&[&label]).set(0);
    ctx.metrics.rooms.with_label_values(&[&label]).set(0);
    ctx.metrics.tracks.with_label_values(&[&label]).set(0);
    info!(worker = ctx.index, "media worker stopped");
}

fn handle_command(sfu: &mut Sfu, ctx: &WorkerContext, listeners: &mut Listeners, c: Command) {
    let now = Instant::now();
    match c {
        Command::Join {
            req,
            updates,
            reply,
        } => {
            // Everything before the join reaches the others first; the joiner's
            // snapshot then contains it, and its channel hears only what follows.
            deliver_events(sfu, ctx, listeners);
            let r = sfu.join(
                now,
                JoinRequest {
                    room: &req.room,
                    identity: &req.identity,
                    name: &req.name,
                    room_limit: req.room_limit,
                    may_publish: req.may_publish,
                },
            );
            deliver_events(sfu, ctx, listeners);
            let r = r.map(|peer| {
                listeners.add(
                    req.room.clone(),
                    Listener {
                        peer,
                        identity: req.identity.clone(),
                        updates,
                    },
                );
                (peer, sfu.room_participants(&req.room))
            });
            if let Ok((peer, _)) = &r
                && reply.is_closed()
            {
                let _ = sfu.remove_peer(now, *peer);
            }
            let _ = reply.send(r);
        }
        Command::Attach {
            peer,
            updates,
            reply,
        } => {
            deliver_events(sfu, ctx, listeners);
            let r = match sfu.peer_room(peer) {
                Some((room, identity)) => {
                    let room = room.clone();
                    listeners.add(
                        room.clone(),
                        Listener {
                            peer,
                            identity: identity.to_owned(),
                            updates,
                        },
                    );
                    Ok(sfu.room_participants(&room))
                }
                None => Err(SfuError::UnknownPeer),
            };
            let _ = reply.send(r);
        }
        Command::Room { peer, cmd, reply } => {
            let _ = reply.send(room_command(sfu, listeners, now, peer, cmd));
        }
        Command::Accept {
            room,
            identity,
            name,
            role,
            offer,
            room_limit,
            reply,
        } => {
            let r = sfu.accept_offer(
                now,
                OfferRequest {
                    room_limit,
                    room: &room,
                    identity: &identity,
                    name: &name,
                    role,
                    offer_sdp: &offer,
                },
            );
            if let Ok(a) = &r
                && reply.is_closed()
            {
                // The HTTP request went away: nobody will ever use this peer.
                let _ = sfu.remove_peer(now, a.peer);
            }
            let _ = reply.send(r);
        }
        Command::Remove { peer, reply } => {
            let _ = reply.send(sfu.remove_peer(now, peer));
        }
        Command::Candidates {
            peer,
            candidates,
            reply,
        } => {
            let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let _ = reply.send(sfu.add_remote_candidates(now, peer, &refs).map(|_| ()));
        }
        Command::RestartIce { peer, creds, reply } => {
            let _ = reply.send(sfu.restart_ice(now, peer, &creds));
        }
        Command::StartTap { room, tap, reply } => {
            let _ = reply.send(sfu.start_tap(room, tap));
        }
        Command::StopTap { room, reply } => {
            let _ = reply.send(Ok(sfu.stop_tap(&room).map(|(_, stats)| stats)));
        }
        Command::Identities { room, reply } => {
            let mut ids: Vec<String> = sfu
                .room_participants(&room)
                .into_iter()
                .filter(|p| !sfu.is_import(p.peer))
                .map(|p| p.identity)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let _ = reply.send(Ok(ids));
        }
        Command::Evict {
            room,
            identities,
            reply,
        } => {
            let n = sfu.remove_identities(now, &room, &identities, RemoveReason::Revoked);
            let _ = reply.send(Ok(n));
        }
        Command::Relay(r) => handle_relay(sfu, listeners, now, r),
        Command::Shutdown => {}
    }
}

fn handle_relay(sfu: &mut Sfu, listeners: &mut Listeners, now: Instant, cmd: RelayCommand) {
    match cmd {
        RelayCommand::Export {
            room,
            link,
            sink,
            participants,
        } => sfu.start_export(&room, link, sink, participants),
        RelayCommand::StopExport { room, link } => {
            sfu.stop_export(&room, link);
        }
        RelayCommand::StopLinkExports { link } => sfu.stop_link_exports(link),
        RelayCommand::ExportKeyframe { room, track, rid } => {
            if let Err(e) = sfu.export_keyframe(now, &room, track, rid) {
                debug!(%room, track, error = %e, "keyframe request for an unknown exported track");
            }
        }
        RelayCommand::ImportParticipant {
            room,
            link,
            participant,
        } => {
            if let Err(e) = sfu.import_participant(now, link, &participant) {
                info!(%room, link, identity = %participant.identity, error = %e, "relayed participant not imported");
            }
        }
        RelayCommand::ImportLeft {
            room,
            link,
            participant,
            reason,
        } => sfu.import_left(now, &room, link, participant, reason),
        RelayCommand::ImportData {
            room,
            link,
            participant,
            to,
            payload,
        } => {
            let Some(from) = sfu.import_sender(&room, link, participant) else {
                debug!(%room, link, participant, "data from an unknown relayed participant dropped");
                return;
            };
            let (identity, name) = match sfu.peer_room(from) {
                Some((_, identity)) => (
                    identity.to_owned(),
                    sfu.peer_name(from).unwrap_or(identity).to_owned(),
                ),
                None => return,
            };
            let update = RoomUpdate::Data {
                from,
                from_identity: identity,
                from_name: name,
                payload: payload.clone(),
            };
            listeners.send(&room, &update, |l| {
                to.as_ref().is_none_or(|t| t.contains(&l.identity))
            });
            // The room's node passes it on to the room's other nodes.
            sfu.export_data(from, to, payload);
        }
        RelayCommand::ImportTrack { room, link, track } => {
            if let Err(e) = sfu.import_track(now, link, &track) {
                info!(%room, link, track = track.track, error = %e, "relayed track not imported");
            }
        }
        RelayCommand::ImportEnded { room, link, track } => {
            sfu.import_track_ended(now, &room, link, track);
        }
        RelayCommand::ImportMuted {
            room,
            link,
            track,
            muted,
        } => sfu.import_muted(now, &room, link, track, muted),
        RelayCommand::ImportPacket { room, link, packet } => {
            sfu.import_packet(now, &room, link, packet);
        }
        RelayCommand::CloseImport { room, link } => sfu.close_import(now, &room, link),
    }
}

/// The next ICE-TCP connection, or never without a listener.
/// Asks the kernel for a receive buffer of `size` bytes and reports what it gave.
fn set_recv_buffer(socket: &UdpSocket, ctx: &WorkerContext, label: &str, size: usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(size) {
        debug!(worker = ctx.index, size, error = %e, "could not size the receive buffer");
    }
    if let Ok(actual) = sock.recv_buffer_size() {
        debug!(
            worker = ctx.index,
            asked = size,
            actual,
            "receive buffer sized"
        );
        ctx.metrics
            .recv_buffer_bytes
            .with_label_values(&[label])
            .set(actual as i64);
    }
}

/// What ended a worker's wait.
enum Wake {
    Command(Option<Command>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Accepted(std::io::Result<(tokio::net::TcpStream, SocketAddr)>),
    Tcp(Option<TcpEvent>),
    Timer,
}

async fn accept(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The next frame or close of an ICE-TCP connection, or never without a listener.
async fn tcp_event(tcp: Option<&mut IceTcp>) -> Option<TcpEvent> {
    match tcp {
        Some(t) => t.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends what the core has to send: ICE-TCP frames one by one, UDP datagrams in
/// batches of [`udp_batch::BATCH`] per system call. Every sent buffer goes back to
/// the core ([`Sfu::recycle`]), so forwarding does not allocate.
async fn flush(
    sfu: &mut Sfu,
    socket: &UdpSocket,
    mut tcp: Option<&mut IceTcp>,
    batch: &mut Vec<Transmit>,
    metrics: &Metrics,
) {
    while let Some(t) = sfu.poll_transmit() {
        if t.proto == Protocol::Tcp {
            let sent = tcp
                .as_mut()
                .is_some_and(|c| c.send(t.destination, &t.contents));
            if !sent {
                metrics.send_errors.inc();
            }
            sfu.recycle(t.contents);
            continue;
        }
        batch.push(t);
        if batch.len() == udp_batch::BATCH {
            send_udp(socket, batch, metrics).await;
            recycle(sfu, batch);
        }
    }
    send_udp(socket, batch, metrics).await;
    recycle(sfu, batch);
}

/// Hands the sent datagrams' buffers back to the core for its next SRTP output.
fn recycle(sfu: &mut Sfu, batch: &mut Vec<Transmit>) {
    for t in batch.drain(..) {
        sfu.recycle(t.contents);
    }
}

/// Sends `batch`, waiting for room when the socket buffer is full; a datagram the
/// kernel refuses is counted and skipped.
async fn send_udp(socket: &UdpSocket, batch: &[Transmit], metrics: &Metrics) {
    let fd = socket.as_raw_fd();
    let mut at = 0;
    while at < batch.len() {
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
            udp_batch::send_batch(fd, &batch[at..])
        });
        match sent {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    metrics.send_errors.inc_by((batch.len() - at) as u64);
                    debug!(error = %e, "socket not writable");
                    break;
                }
            }
            Err(e) => {
                metrics.send_errors.inc();
                debug!(dest = %batch[at].destination, error = %e, "send failed");
                at += 1;
            }
        }
    }
}

fn room_command(
    sfu: &mut Sfu,
    listeners: &mut Listeners,
    now: Instant,
    peer: PeerId,
    cmd: RoomCommand,
) -> Result<RoomReply, SfuError> {
    match cmd {
        RoomCommand::Offer(sdp) => sfu.negotiate(now, peer, &sdp).map(RoomReply::Answer),
        RoomCommand::Candidates(c) => {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            sfu.add_remote_candidates(now, peer, &refs)
                .map(|_| RoomReply::Done)
        }
        RoomCommand::Subscribe { mid, track } => sfu
            .subscribe(now, peer, mid, track)
            .map(|_| RoomReply::Done),
        RoomCommand::Unsubscribe { mid } => {
            sfu.unsubscribe(now, peer, mid).map(|_| RoomReply::Done)
        }
        RoomCommand::Pause { mid, paused } => sfu
            .set_paused(now, peer, mid, paused)
            .map(|_| RoomReply::Done),
        RoomCommand::MaxLayer { mid, max_layer } => sfu
            .set_layer_preference(peer, mid, max_layer)
            .map(|_| RoomReply::Done),
        RoomCommand::Mute { mid, muted } => sfu
            .set_track_muted(now, peer, mid, muted)
            .map(|_| RoomReply::Done),
        RoomCommand::Unpublish { mid } => sfu.unpublish(now, peer, mid).map(|_| RoomReply::Done),
        RoomCommand::Data { to, payload } => {
            let (room, identity) = sfu.peer_room(peer).ok_or(SfuError::UnknownPeer)?;
            let room = room.clone();
            let update = RoomUpdate::Data {
                from: peer,
                from_identity: identity.to_owned(),
                from_name: sfu.peer_name(peer).unwrap_or(identity).to_owned(),
                payload: payload.clone(),
            };
            let mut n = listeners.send(&room, &update, |l| {
                l.peer != peer && to.as_ref().is_none_or(|t| t.contains(&l.identity))
            });
            // The room's other nodes deliver it to theirs: a message to someone there
            // counts as delivered once handed to their node.
            if let Some(to) = &to {
                n += sfu
                    .room_participants(&room)
                    .iter()
                    .filter(|p| sfu.is_import(p.peer) && to.contains(&p.identity))
                    .count();
            }
            sfu.export_data(peer, to, payload);
            Ok(RoomReply::Delivered(n))
        }
        RoomCommand::Leave(reason) => sfu
            .remove_peer_because(now, peer, reason)
            .map(|_| RoomReply::Done),
    }
}

/// Hands the core's events to the room's participants and to `room.events`.
fn deliver_events(sfu: &mut Sfu, ctx: &WorkerContext, listeners: &mut Listeners) {
    let mut left: Vec<RoomId> = Vec::new();
    while let Some(ev) = sfu.poll_event() {
        if let SfuEvent::PeerRemoved { room, .. } = &ev
            && !left.contains(room)
        {
            left.push(room.clone());
        }
        on_event(ctx, listeners, ev);
    }
    for room in left {
        end_lone_local_imports(sfu, ctx, &room);
    }
}

/// A room spread to this worker whose last player here left: the import ends, and
/// the room's worker stops exporting to this one. (Imports from other nodes end by
/// the relay's own check.)
fn end_lone_local_imports(sfu: &mut Sfu, ctx: &WorkerContext, room: &RoomId) {
    let imports = sfu.lone_imports(room);
    if imports.is_empty() && !sfu.room_participants(room).is_empty() {
        return; // players remain
    }
    for link in imports {
        if local_link_home(link).is_some() {
            sfu.close_import(Instant::now(), room, link);
        }
    }
    let Some(link) = lock(&ctx.spreads.rooms).remove(&(room.clone(), ctx.index)) else {
        return;
    };
    let Some(home) = local_link_home(link) else {
        return;
    };
    if let Some(tx) = ctx.spreads.senders.get().and_then(|s| s.get(home)) {
        let stop = RelayCommand::StopExport {
            room: room.clone(),
            link,
        };
        let _ = tx.try_send(Command::Relay(stop));
    }
    info!(%room, from = home, to = ctx.index, "room no longer spread to this worker");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn event_room(ev: &SfuEvent) -> &RoomId {
    match ev {
        SfuEvent::PeerJoined { room, .. }
        | SfuEvent::PeerConnected { room, .. }
        | SfuEvent::PeerRemoved { room, .. }
        | SfuEvent::TrackPublished { room, .. }
        | SfuEvent::TrackUnpublished { room, .. }
        | SfuEvent::TrackMuted { room, .. }
        | SfuEvent::LayersWanted { room, .. }
        | SfuEvent::SpeakerChanged { room, .. }
        | SfuEvent::RelayKeyframeWanted { room, .. } => room,
    }
}

fn on_event(ctx: &WorkerContext, listeners: &mut Listeners, ev: SfuEvent) {
    if let SfuEvent::RelayKeyframeWanted {
        room,
        link,
        track,
        rid,
    } = ev
    {
        if let Some(home) = local_link_home(link) {
            let ask = RelayCommand::ExportKeyframe {
                room,
                track,
                rid: rid.as_deref().map(Into::into),
            };
            if let Some(tx) = ctx.spreads.senders.get().and_then(|s| s.get(home)) {
                let _ = tx.try_send(Command::Relay(ask));
            }
        } else if let Some(tx) = ctx.relay_keyframes.get() {
            let _ = tx.send(RelayKeyframe {
                room,
                link,
                track,
                rid,
            });
        }
        return;
    }
    let room = event_room(&ev).clone();
    let update = RoomUpdate::Sfu(ev.clone());
    listeners.send(&room, &update, |_| true);
    if let SfuEvent::PeerRemoved {
        peer, room, reason, ..
    } = &ev
    {
        listeners.remove(room, *peer);
        if let Ok(mut s) = ctx.sessions.lock() {
            s.remove_peer(ctx.index, *peer);
        }
        debug!(worker = ctx.index, %peer, %room, ?reason, "session ended");
    }
    // The receiver lives as long as the node; after shutdown nobody listens.
    let _ = ctx.room_events.send((ctx.index, ev));
}

/// The control API ends revoked passes through the workers.
impl control_api::live_rooms::LiveRooms for MediaWorkers {
    fn identities<'a>(
        &'a self,
        room: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let room = RoomId::parse(room).map_err(|e| e.to_string())?;
            MediaWorkers::identities(self, room)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn evict<'a>(
        &'a self,
        room: &'a str,
        identities: Vec<String>,
    ) -> futures_util::future::BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            let room = RoomId::parse(room).map_err(|e| e.to_string())?;
            MediaWorkers::evict(self, room, identities)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_datagram_is_counted_and_the_rest_of_the_batch_still_goes() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let metrics = Metrics::new();
        let transmit = |destination: SocketAddr, byte: u8| Transmit {
            proto: Protocol::Udp,
            source: socket.local_addr().unwrap(),
            destination,
            contents: vec![byte; 20].into(),
        };
        // 150 datagrams, three system calls' worth; the 71st goes to an IPv6
        // address from an IPv4 socket, which the kernel refuses.
        let refused: SocketAddr = "[::1]:9".parse().unwrap();
        let batch: Vec<Transmit> = (0..150u8)
            .map(|i| transmit(if i == 70 { refused } else { to }, i))
            .collect();
        send_udp(&socket, &batch, &metrics).await;
        assert_eq!(metrics.send_errors.get(), 1);
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for i in (0..150u8).filter(|i| *i != 70) {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 20], "datagram {i}, in order");
        }
    }

    fn update(n: u64) -> RoomUpdate {
        RoomUpdate::Data {
            from: PeerId(n),
            from_identity: "x".into(),
            from_name: "x".into(),
            payload: serde_json::json!(n),
        }
    }

    #[test]
    fn a_listener_that_falls_behind_is_cut_off_and_the_others_are_not() {
        let room = RoomId::parse("r").unwrap();
        let mut l = Listeners::default();
        let (slow_tx, mut slow_rx) = mpsc::channel(2);
        let (fast_tx, mut fast_rx) = mpsc::channel(16);
        l.add(
            room.clone(),
            Listener {
                peer: PeerId(1),
                identity: "slow".into(),
                updates: slow_tx,
            },
        );
        l.add(
            room.clone(),
            Listener {
                peer: PeerId(2),
                identity: "fast".into(),
                updates: fast_tx,
            },
        );
        for n in 0..3 {
            l.send(&room, &update(n), |_| true);
        }
        // The slow one got what fit, then its channel closed: it resumes for a fresh
        // snapshot instead of silently missing an update.
        assert_eq!(slow_rx.try_recv().unwrap(), update(0));
        assert_eq!(slow_rx.try_recv().unwrap(), update(1));
        assert!(matches!(
            slow_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        for n in 0..3 {
            assert_eq!(fast_rx.try_recv().unwrap(), update(n));
        }
        // Named delivery counts only those it reached.
        assert_eq!(l.send(&room, &update(9), |x| x.identity == "fast"), 1);
        assert_eq!(l.send(&room, &update(9), |x| x.identity == "slow"), 0);
    }
}
