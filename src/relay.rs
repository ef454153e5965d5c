//! The relay between nodes: one QUIC connection (`quinn`) per node pair, over which a
//! node imports the rooms that live on another node, so its own subscribers are fed
//! from one copy of each track ([`media_core::relay`] is the protocol).
//!
//! ```text
//!   node B (importer)                         node A (the room's home, exporter)
//!   WHEP or /rtc for R ─import(R, A)─► link ──Import{R}──► start_export(R, sink)
//!   workers ◄─Participant/Track/Packet─ link ◄── Participant / Track / datagrams ── sink ◄── Sfu
//!   start_export(R, sink) ◄──Import{R, back}── link ◄── A imports B's side of R back
//!   Sfu: keyframe wanted ──────────► link ──Keyframe──► export_keyframe
//!   gap in a stream ───────────────► link ──Nack──► RepairBuffer ──datagram──►
//! ```
//!
//! The room's node imports back every node that imports a room from it, and passes
//! each node's participants on to the others: a room's nodes form a star around its
//! home, and its `/rtc` participants, wherever they are, see one room.
//!
//! ## Trust
//! Every node of a cluster holds the cluster key (`keys/cluster-relay.key`, shared like
//! the token key). TLS gives the connection its privacy; a node proves it holds the
//! key with an HMAC of the connection's TLS exporter secret, each way, before anything
//! else crosses. The proof is bound to the TLS session, so it cannot be replayed on
//! another connection, and a node without the key is closed at once. Certificates are
//! self-signed and not what is trusted.
//!
//! ## Invariants
//! - At most one link per peer node in this process's table; a link that closes takes
//!   its imports' tracks away (subscribers' slots fall empty) and its exports with it;
//!   the maintenance pass dials again while local subscribers still want the room. A
//!   link stays open once made (keep-alives are cheap); imports come and go over it.
//! - Packets never wait on a media worker (`try_send`: a full queue drops them);
//!   control items (participants, tracks, ends, exports) wait for room, in order, and
//!   are never dropped. A media worker never waits on the relay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::hmac;
use control_api::store::Store;
use media_core::relay::{
    Arrival, Control, ControlReader, LossDetector, RelayedPacket, RepairBuffer, encode_control,
};
use media_core::{RelayOut, RelaySink, RoomId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::media::{MediaWorkers, RelayCommand, RelayKeyframe};
use crate::metrics::Metrics;

/// Nodes of another relay version do not link: their WHEP players and `/rtc`
/// participants are sent to the room's node instead (a rolling upgrade).
const ALPN: &[u8] = b"streamcore-relay/2";
/// The name relay links dial (certificates are not what is trusted).
pub const SERVER_NAME: &str = "streamcore-relay";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-streamcore-relay";
/// A link that says nothing for this long is gone (keep-alives every second).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// The handshake (QUIC, TLS and both proofs) must end within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often imports are checked against local subscribers and links dialled again.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// Items an export may have queued towards its link; beyond, packets are dropped.
const EXPORT_QUEUE: usize = 4096;
/// Packets an exporter keeps per link for repairs.
const REPAIR_PACKETS: usize = 1024;
/// QUIC close code: the peer did not prove the cluster key.
const CLOSE_UNAUTHORISED: u32 = 0x5c01;
/// An import is not ended for want of players this soon after it began: the player
/// that asked for it is registered a moment later.
const IMPORT_GRACE: Duration = Duration::from_secs(5);
/// After a link to a node failed, new WHEP players of its rooms are redirected there
/// for this long instead of served here (the link is still dialled for the players
/// already here).
const FAILED_LINK_BACKOFF: Duration = Duration::from_secs(10);
/// The UDP payload QUIC starts with: RTP packets of up to 1200 bytes plus the relay's
/// header fit, on networks with the usual 1500-byte MTU between nodes (quinn lowers it
/// if packets this large do not get through).
const INITIAL_MTU: u16 = 1452;

/// The relay of one node.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    key: hmac::Key,
    endpoint: quinn::Endpoint,
    media: Arc<MediaWorkers>,
    db: control_api::store::Db,
    metrics: Metrics,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Rooms imported: the node each comes from, and since when.
    imports: Mutex<HashMap<RoomId, (String, Instant)>>,
    /// Rooms of this node imported back from the nodes that import them (`back`),
    /// while those nodes do.
    back_imports: Mutex<Vec<(RoomId, String)>>,
    /// Why this node exports a room to a peer node; the export ends when neither
    /// reason holds.
    exporting: Mutex<HashMap<(RoomId, String), Exported>>,
    /// The rooms this node's `/rtc` participants are in (set once the room protocol
    /// runs): an import they use is kept.
    participant_rooms: std::sync::OnceLock<Box<dyn Fn() -> Vec<RoomId> + Send + Sync>>,
    /// The nodes without a relay, by the registry's last reading (every second). A
    /// node not read yet is tried: a failed dial then marks it in `failed`.
    relayless: Mutex<Vec<String>>,
    /// Nodes a link to which failed lately (not dialled, not imported from, until then).
    failed: Mutex<HashMap<String, Instant>>,
    /// Dials under way, so one maintenance pass does not start a second.
    dialling: Mutex<Vec<String>>,
    next_link: AtomicU64,
    stop: watch::Sender<bool>,
}

/// Why a room is exported to a peer: the peer imports the room from this node
/// (`forward`), or, living there, imports this node's side of it back (`back`). Both
/// hold at once while two nodes each take the other for the room's home.
#[derive(Debug, Default, Clone, Copy)]
struct Exported {
    forward: bool,
    back: bool,
}

/// One authenticated connection to a peer node.
struct Link {
    id: u64,
    peer: String,
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<Control>,
    repair: Mutex<RepairBuffer>,
    loss: Mutex<LossDetector>,
    /// Imported tracks' rooms (datagrams carry only the track id).
    tracks: Mutex<HashMap<u32, RoomId>>,
    /// The rooms whose participants or tracks came in over this link.
    rooms: Mutex<Vec<RoomId>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("node", &self.inner.node_id)
            .field("addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the relay's UDP socket and starts accepting links and maintaining imports.
    pub fn start(
        bind: SocketAddr,
        node_id: &str,
        cluster_key: &[u8],
        media: Arc<MediaWorkers>,
        db: control_api::store::Db,
        metrics: Metrics,
    ) -> anyhow::Result<Relay> {
        let endpoint = endpoint(bind).with_context(|| format!("binding the relay on {bind}"))?;
        let (stop, _) = watch::channel(false);
        let relay = Relay {
            inner: Arc::new(Inner {
                node_id: node_id.to_owned(),
                key: hmac::Key::new(hmac::HMAC_SHA256, cluster_key),
                endpoint,
                media: media.clone(),
                db,
                metrics,
                links: Mutex::new(HashMap::new()),
                imports: Mutex::new(HashMap::new()),
                back_imports: Mutex::new(Vec::new()),
                exporting: Mutex::new(HashMap::new()),
                participant_rooms: std::sync::OnceLock::new(),
                relayless: Mutex::new(Vec::new()),
                failed: Mutex::new(HashMap::new()),
                dialling: Mutex::new(Vec::new()),
                next_link: AtomicU64::new(1),
                stop,
            }),
        };
        let (kf_tx, kf_rx) = mpsc::unbounded_channel();
        media.set_relay_keyframes(kf_tx);
        tokio::spawn(relay.clone().accept_loop());
        tokio::spawn(relay.clone().keyframe_loop(kf_rx));
        tokio::spawn(relay.clone().maintain_loop());
        info!(node = node_id, addr = %relay.local_addr()?, "relay listening");
        Ok(relay)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Closes every link and stops.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        self.inner.endpoint.close(0u32.into(), b"node stopping");
    }

    /// Imports `room` from `home` for this node's subscribers; returns at once (the
    /// link is dialled in the background if need be).
    pub fn start_import(&self, room: &RoomId, home: &str) {
        let fresh = {
            let mut imports = lock(&self.inner.imports);
            let before = imports.insert(room.clone(), (home.to_owned(), Instant::now()));
            before.is_none_or(|(n, _)| n != home)
        };
        if !fresh {
            return;
        }
        info!(%room, from = home, "importing the room");
        match self.link_to(home) {
            Some(link) => {
                let _ = link.control.send(Control::Import {
                    room: room.as_str().to_owned(),
                    back: false,
                });
            }
            None => self.dial_in_background(home.to_owned()),
        }
    }

    fn link_to(&self, node: &str) -> Option<Arc<Link>> {
        lock(&self.inner.links).get(node).cloned()
    }

    fn link_by_id(&self, id: u64) -> Option<Arc<Link>> {
        lock(&self.inner.links)
            .values()
            .find(|l| l.id == id)
            .cloned()
    }

    fn dial_in_background(&self, node: String) {
        {
            let mut d = lock(&self.inner.dialling);
            if d.contains(&node) {
                return;
            }
            d.push(node.clone());
        }
        let relay = self.clone();
        tokio::spawn(async move {
            if let Err(e) = relay.dial(&node).await {
                warn!(peer = %node, error = %format!("{e:#}"), "relay link could not be opened");
                lock(&relay.inner.failed).insert(node.clone(), Instant::now());
            }
            lock(&relay.inner.dialling).retain(|n| *n != node);
        });
    }

    async fn dial(&self, node: &str) -> anyhow::Result<()> {
        let nodes = self
            .inner
            .db
            .nodes()
            .await
            .context("reading the registry")?;
        let row = nodes
            .into_iter()
            .find(|n| n.id == node)
            .with_context(|| format!("node {node} is not in the registry"))?;
        let addr: SocketAddr = row
            .relay_addr
            .parse()
            .with_context(|| format!("node {node} has no relay address"))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            self.inner
                .endpoint
                .connect(addr, SERVER_NAME)?
                .await
                .context("QUIC handshake")
        })
        .await
        .context("QUIC handshake timed out")??;
        let (send, recv) = conn.open_bi().await.context("opening the control stream")?;
        self.run_link(conn, send, recv, Some(node)).await
    }

    async fn accept_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let incoming = tokio::select! {
                i = self.inner.endpoint.accept() => i,
                _ = stop.changed() => return,
            };
            let Some(incoming) = incoming else {
                return;
            };
            let relay = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                let r = async {
                    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming)
                        .await
                        .context("QUIC handshake timed out")?
                        .context("QUIC handshake")?;
                    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi())
                        .await
                        .context("no control stream")?
                        .context("no control stream")?;
                    relay.run_link(conn, send, recv, None).await
                };
                if let Err(e) = r.await {
                    info!(%from, error = %format!("{e:#}"), "relay link refused or ended");
                }
            });
        }
    }

    /// Proves the key, checks the peer's proof, then serves the link until it closes.
    /// `expect` is the node dialled (`None` when accepting).
    async fn run_link(
        &self,
        conn: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        expect: Option<&str>,
    ) -> anyhow::Result<()> {
        let dialer = expect.is_some();
        let (node, reader) = match authenticate(
            &self.inner.key,
            &self.inner.node_id,
            &conn,
            &mut send,
            &mut recv,
            expect,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                self.inner.metrics.relay_auth_failures.inc();
                return Err(e);
            }
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            id: self.inner.next_link.fetch_add(1, Ordering::Relaxed),
            peer: node.clone(),
            conn: conn.clone(),
            control,
            repair: Mutex::new(RepairBuffer::new(REPAIR_PACKETS)),
            loss: Mutex::new(LossDetector::default()),
            tracks: Mutex::new(HashMap::new()),
            rooms: Mutex::new(Vec::new()),
        });
        if let Some(old) = lock(&self.inner.links).insert(node.clone(), link.clone()) {
            // The newer connection wins; the old one's rooms move over below.
            old.conn.close(0u32.into(), b"replaced");
        }
        // What the peer imports from this node, and this node back from it, is asked
        // for again over this link (by each side as the link comes up): the old link's
        // exports end with it.
        lock(&self.inner.back_imports).retain(|(_, n)| *n != node);
        lock(&self.inner.exporting).retain(|(_, n), _| *n != node);
        self.inner
            .metrics
            .relay_links
            .with_label_values(&[&node])
            .set(1);
        info!(peer = %node, link = link.id, addr = %conn.remote_address(), dialer, "relay link up");
        lock(&self.inner.failed).remove(&node);
        // What this node imports from the peer is asked for again on the new link.
        for (room, (from, _)) in lock(&self.inner.imports).iter() {
            if *from == node {
                let _ = link.control.send(Control::Import {
                    room: room.as_str().to_owned(),
                    back: false,
                });
            }
        }
        let writer = tokio::spawn(write_control(send, control_rx));
        let datagrams = tokio::spawn(self.clone().read_datagrams(link.clone()));
        let r = self.read_control(&link, recv, reader).await;
        writer.abort();
        datagrams.abort();
        self.link_closed(&link).await;
        r
    }

    async fn read_control(
        &self,
        link: &Arc<Link>,
        mut recv: quinn::RecvStream,
        mut reader: ControlReader,
    ) -> anyhow::Result<()> {
        loop {
            let msg = read_frame(&mut recv, &mut reader).await?;
            self.on_control(link, msg).await;
        }
    }

    async fn on_control(&self, link: &Arc<Link>, msg: Control) {
        let media = &self.inner.media;
        let room_of = |r: &str| match RoomId::parse(r) {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(peer = %link.peer, room = r, error = %e, "relay message names no valid room");
                None
            }
        };
        match msg {
            Control::Hello { .. } => {}
            Control::Import { room, back } => {
                let Some(room) = room_of(&room) else { return };
                if media.is_draining() && !back {
                    let _ = link.control.send(Control::Refused {
                        room: room.as_str().to_owned(),
                        reason: "the node is draining".into(),
                    });
                    return;
                }
                let fresh = {
                    let mut exporting = lock(&self.inner.exporting);
                    let e = exporting
                        .entry((room.clone(), link.peer.clone()))
                        .or_default();
                    let fresh = !e.forward && !e.back;
                    if back {
                        e.back = true;
                    } else {
                        e.forward = true;
                    }
                    fresh
                };
                if fresh {
                    let sink = LinkSink::new(self.clone(), link.clone());
                    media
                        .relay_control(RelayCommand::Export {
                            room: room.clone(),
                            link: link.id,
                            sink: Box::new(sink),
                            participants: true,
                        })
                        .await;
                }
                if !back {
                    // The importer's own participants join this side of the room.
                    let added = {
                        let mut backs = lock(&self.inner.back_imports);
                        let added = !backs.iter().any(|(r, n)| *r == room && *n == link.peer);
                        if added {
                            backs.push((room.clone(), link.peer.clone()));
                        }
                        added
                    };
                    if added {
                        let _ = link.control.send(Control::Import {
                            room: room.as_str().to_owned(),
                            back: true,
                        });
                    }
                }
            }
            Control::Stop { room, back } => {
                let Some(room) = room_of(&room) else { return };
                let ended = {
                    let mut exporting = lock(&self.inner.exporting);
                    let key = (room.clone(), link.peer.clone());
                    match exporting.get_mut(&key) {
                        Some(e) => {
                            if back {
                                e.back = false;
                            } else {
                                e.forward = false;
                            }
                            let ended = !e.forward && !e.back;
                            if ended {
                                exporting.remove(&key);
                            }
                            ended
                        }
                        None => false,
                    }
                };
                if ended {
                    media
                        .relay_control(RelayCommand::StopExport {
                            room: room.clone(),
                            link: link.id,
                        })
                        .await;
                }
                if back {
                    return;
                }
                let was_back = {
                    let mut backs = lock(&self.inner.back_imports);
                    let before = backs.len();
                    backs.retain(|(r, n)| !(*r == room && *n == link.peer));
                    backs.len() < before
                };
                if was_back {
                    // The node no longer imports the room: nor does this one its side
                    // (unless it imports the room from there itself).
                    let _ = link.control.send(Control::Stop {
                        room: room.as_str().to_owned(),
                        back: true,
                    });
                    let forward = lock(&self.inner.imports)
                        .get(&room)
                        .is_some_and(|(from, _)| *from == link.peer);
                    if !forward {
                        self.close_import_over(link, &room).await;
                    }
                }
            }
            Control::Keyframe { room, track, rid } => {
                let Some(room) = room_of(&room) else { return };
                media.relay(RelayCommand::ExportKeyframe {
                    room,
                    track,
                    rid: rid.as_deref().map(Into::into),
                });
            }
            Control::Nack { track, ssrc, seqs } => {
                let mut buf = Vec::new();
                let repair = lock(&link.repair);
                for seq in seqs {
                    let Some(p) = repair.find(track, ssrc, seq) else {
                        continue;
                    };
                    buf.clear();
                    p.encode(&mut buf);
                    if link
                        .conn
                        .send_datagram(bytes::Bytes::copy_from_slice(&buf))
                        .is_ok()
                    {
                        self.inner
                            .metrics
                            .relay_repaired
                            .with_label_values(&[&link.peer])
                            .inc();
                    }
                }
            }
            Control::Participant(p) => {
                let Some(room) = room_of(&p.room) else { return };
                if !self.imports_from(&room, &link.peer) {
                    return; // announced after this node stopped importing the room
                }
                note_room(link, &room);
                media
                    .relay_control(RelayCommand::ImportParticipant {
                        room,
                        link: link.id,
                        participant: p,
                    })
                    .await;
            }
            Control::ParticipantLeft {
                room,
                participant,
                reason,
            } => {
                let Some(room) = room_of(&room) else { return };
                let reason = media_core::RemoveReason::parse(reason.as_deref().unwrap_or(""));
                media
                    .relay_control(RelayCommand::ImportLeft {
                        room,
                        link: link.id,
                        participant,
                        reason,
                    })
                    .await;
            }
            Control::Data {
                room,
                participant,
                to,
                payload,
            } => {
                let Some(room) = room_of(&room) else { return };
                media
                    .relay_control(RelayCommand::ImportData {
                        room,
                        link: link.id,
                        participant,
                        to,
                        payload,
                    })
                    .await;
            }
            Control::Track(t) => {
                let Some(room) = room_of(&t.room) else { return };
                if !self.imports_from(&room, &link.peer) {
                    return; // announced after this node stopped importing the room
                }
                note_room(link, &room);
                lock(&link.tracks).insert(t.track, room.clone());
                media
                    .relay_control(RelayCommand::ImportTrack {
                        room,
                        link: link.id,
                        track: t,
                    })
                    .await;
            }
            Control::TrackEnded { room, track } => {
                let Some(room) = room_of(&room) else { return };
                lock(&link.tracks).remove(&track);
                lock(&link.loss).forget(track);
                media
                    .relay_control(RelayCommand::ImportEnded {
                        room,
                        link: link.id,
                        track,
                    })
                    .await;
            }
            Control::Muted { room, track, muted } => {
                let Some(room) = room_of(&room) else { return };
                media
                    .relay_control(RelayCommand::ImportMuted {
                        room,
                        link: link.id,
                        track,
                        muted,
                    })
                    .await;
            }
            Control::Refused { room, reason } => {
                warn!(peer = %link.peer, %room, %reason, "import refused");
                if let Some(room) = room_of(&room) {
                    lock(&self.inner.imports).remove(&room);
                }
            }
        }
    }

    async fn read_datagrams(self, link: Arc<Link>) {
        let received = self
            .inner
            .metrics
            .relay_packets_received
            .with_label_values(&[&link.peer]);
        let lost = self
            .inner
            .metrics
            .relay_packets_lost
            .with_label_values(&[&link.peer]);
        while let Ok(d) = link.conn.read_datagram().await {
            let (p, nack) = match receive_packet(&d, &link.loss) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    debug!(peer = %link.peer, error = %e, "relay datagram dropped");
                    continue;
                }
            };
            let Some(room) = lock(&link.tracks).get(&p.track).cloned() else {
                continue; // before its announcement, or after its end
            };
            if !nack.is_empty() {
                lost.inc_by(nack.len() as u64);
                let _ = link.control.send(Control::Nack {
                    track: p.track,
                    ssrc: p.ssrc,
                    seqs: nack,
                });
            }
            received.inc();
            self.inner.media.relay(RelayCommand::ImportPacket {
                room,
                link: link.id,
                packet: p,
            });
        }
    }

    async fn keyframe_loop(self, mut rx: mpsc::UnboundedReceiver<RelayKeyframe>) {
        while let Some(k) = rx.recv().await {
            if let Some(link) = self.link_by_id(k.link) {
                let _ = link.control.send(Control::Keyframe {
                    room: k.room.as_str().to_owned(),
                    track: k.track,
                    rid: k.rid,
                });
            }
        }
    }

    async fn link_closed(&self, link: &Arc<Link>) {
        let current = {
            let mut links = lock(&self.inner.links);
            let current = links.get(&link.peer).is_some_and(|l| l.id == link.id);
            if current {
                links.remove(&link.peer);
                self.inner
                    .metrics
                    .relay_links
                    .with_label_values(&[&link.peer])
                    .set(0);
            }
            current
        };
        info!(peer = %link.peer, link = link.id, reason = ?link.conn.close_reason(), "relay link down");
        if current {
            // A newer link to the node asks for its imports again itself.
            lock(&self.inner.back_imports).retain(|(_, n)| *n != link.peer);
            lock(&self.inner.exporting).retain(|(_, n), _| *n != link.peer);
        }
        self.inner
            .media
            .relay_control(RelayCommand::StopLinkExports { link: link.id })
            .await;
        lock(&link.tracks).clear();
        let rooms: Vec<RoomId> = std::mem::take(&mut *lock(&link.rooms));
        for room in rooms {
            self.inner
                .media
                .relay_control(RelayCommand::CloseImport {
                    room,
                    link: link.id,
                })
                .await;
        }
    }

    /// Whether this node takes `room`'s participants and tracks from `node`: it
    /// imports the room from there, or imports its side back.
    fn imports_from(&self, room: &RoomId, node: &str) -> bool {
        lock(&self.inner.imports)
            .get(room)
            .is_some_and(|(from, _)| from == node)
            || lock(&self.inner.back_imports)
                .iter()
                .any(|(r, n)| r == room && n == node)
    }

    /// Ends what came in of `room` over `link`: its participants leave here.
    async fn close_import_over(&self, link: &Arc<Link>, room: &RoomId) {
        let ended: Vec<u32> = {
            let mut tracks = lock(&link.tracks);
            let ended = tracks
                .iter()
                .filter(|(_, r)| *r == room)
                .map(|(t, _)| *t)
                .collect::<Vec<_>>();
            tracks.retain(|_, r| r != room);
            ended
        };
        {
            let mut loss = lock(&link.loss);
            for t in ended {
                loss.forget(t);
            }
        }
        lock(&link.rooms).retain(|r| r != room);
        self.inner
            .media
            .relay_control(RelayCommand::CloseImport {
                room: room.clone(),
                link: link.id,
            })
            .await;
    }

    /// Stops importing `room` (from wherever it came); its side there goes on coming
    /// while that node imports this node's side back.
    async fn end_import(&self, room: &RoomId) {
        let Some((node, _)) = lock(&self.inner.imports).remove(room) else {
            return;
        };
        if let Some(link) = self.link_to(&node) {
            let _ = link.control.send(Control::Stop {
                room: room.as_str().to_owned(),
                back: false,
            });
            let back = lock(&self.inner.back_imports)
                .iter()
                .any(|(r, n)| r == room && *n == node);
            if !back {
                self.close_import_over(&link, room).await;
            }
        }
    }

    /// The rooms this node imports, with the node each comes from.
    pub fn imported_rooms(&self) -> Vec<(RoomId, String)> {
        lock(&self.inner.imports)
            .iter()
            .map(|(r, (n, _))| (r.clone(), n.clone()))
            .collect()
    }

    /// `room` lives on `home` now (`None`: here): an import from another node ends,
    /// and one from `home` starts.
    pub async fn follow_home(&self, room: &RoomId, home: Option<&str>) {
        let from = lock(&self.inner.imports).get(room).map(|(n, _)| n.clone());
        if from.as_deref() == home || from.is_none() {
            return;
        }
        info!(%room, from = ?from, to = ?home, "the imported room moved");
        self.end_import(room).await;
        if let Some(home) = home {
            self.start_import(room, home);
        }
    }

    /// Where the room protocol's participants are: their rooms' imports are kept.
    pub fn set_participant_rooms(&self, rooms: impl Fn() -> Vec<RoomId> + Send + Sync + 'static) {
        let _ = self.inner.participant_rooms.set(Box::new(rooms));
    }

    /// Every second: stops imports nobody here listens to, and dials links that are
    /// missing for the imports that remain.
    async fn maintain_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        // The first pass at once: the registry tells which nodes have no relay.
        let mut every = tokio::time::interval(MAINTAIN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            let mut listened: Vec<RoomId> = self
                .inner
                .media
                .session_rooms()
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            if let Some(rooms) = self.inner.participant_rooms.get() {
                listened.extend(rooms());
            }
            if let Ok(nodes) = self.inner.db.nodes().await {
                *lock(&self.inner.relayless) = nodes
                    .into_iter()
                    .filter(|n| n.relay_addr.is_empty())
                    .map(|n| n.id)
                    .collect();
            }
            lock(&self.inner.failed).retain(|_, at| at.elapsed() < FAILED_LINK_BACKOFF);
            let imports: Vec<(RoomId, String, Instant)> = lock(&self.inner.imports)
                .iter()
                .map(|(r, (n, since))| (r.clone(), n.clone(), *since))
                .collect();
            for (room, node, since) in imports {
                if !listened.contains(&room) && since.elapsed() >= IMPORT_GRACE {
                    info!(%room, from = %node, "import ended: nobody here");
                    self.end_import(&room).await;
                } else if self.link_to(&node).is_none() {
                    // Its people are here already: keep trying (one dial at a time).
                    self.dial_in_background(node);
                }
            }
        }
    }
}

/// Notes that `room` has something coming in over `link`.
fn note_room(link: &Link, room: &RoomId) {
    let mut rooms = lock(&link.rooms);
    if !rooms.contains(room) {
        rooms.push(room.clone());
    }
}

impl signaling::placement::Cascade for Relay {
    /// False (the player is redirected) while this node drains, when the room's node
    /// runs no relay, or while a link to it has failed lately.
    fn import(&self, room: &RoomId, home: &str) -> bool {
        let reachable = !lock(&self.inner.relayless).iter().any(|n| n == home)
            && !lock(&self.inner.failed).contains_key(home);
        if self.inner.media.is_draining() || !reachable {
            return false;
        }
        self.start_import(room, home);
        true
    }
}

/// An export towards its link: control items go on the link's stream at once, in
/// order and never dropped (they are few); packets through a bounded queue, drained
/// by a task that sends them as datagrams (a link that falls behind loses packets).
struct LinkSink {
    packets: mpsc::Sender<RelayedPacket>,
    control: mpsc::UnboundedSender<Control>,
}

impl LinkSink {
    fn new(relay: Relay, link: Arc<Link>) -> LinkSink {
        let (tx, mut rx) = mpsc::channel::<RelayedPacket>(EXPORT_QUEUE);
        let control = link.control.clone();
        tokio::spawn(async move {
            let sent = relay
                .inner
                .metrics
                .relay_packets_sent
                .with_label_values(&[&link.peer]);
            let mut buf = Vec::with_capacity(1500);
            while let Some(p) = rx.recv().await {
                if send_packet(&link.conn, &p, &mut buf, &link.repair) {
                    sent.inc();
                }
            }
        });
        LinkSink {
            packets: tx,
            control,
        }
    }
}

impl RelaySink for LinkSink {
    fn offer(&mut self, item: RelayOut) -> bool {
        let msg = match item {
            RelayOut::Packet(p) => return self.packets.try_send(p).is_ok(),
            RelayOut::Participant(p) => Control::Participant(p),
            RelayOut::ParticipantLeft {
                room,
                participant,
                reason,
            } => Control::ParticipantLeft {
                room,
                participant,
                reason: reason.map(|r| r.as_str().to_owned()),
            },
            RelayOut::Data {
                room,
                participant,
                to,
                payload,
            } => Control::Data {
                room,
                participant,
                to,
                payload,
            },
            RelayOut::Track(t) => Control::Track(t),
            RelayOut::TrackEnded { room, track } => Control::TrackEnded { room, track },
            RelayOut::Muted { room, track, muted } => Control::Muted { room, track, muted },
        };
        // Closed only with the link, whose end ends the export too.
        let _ = self.control.send(msg);
        true
    }
}

/// Sends one relayed packet as a datagram, and keeps it for the peer's NACKs. False
/// when QUIC refused it (the link is closing, or its datagram buffer is full).
pub fn send_packet(
    conn: &quinn::Connection,
    p: &RelayedPacket,
    buf: &mut Vec<u8>,
    repair: &Mutex<RepairBuffer>,
) -> bool {
    buf.clear();
    p.encode(buf);
    let sent = match conn.send_datagram(bytes::Bytes::copy_from_slice(buf)) {
        Ok(()) => true,
        Err(e) => {
            debug!(len = buf.len(), error = %e, "relay datagram not sent");
            false
        }
    };
    lock(repair).keep(p);
    sent
}

/// Reads one received datagram: the packet to forward with what went missing before
/// it (to NACK), or `None` for a copy already forwarded.
pub fn receive_packet(
    d: &[u8],
    loss: &Mutex<LossDetector>,
) -> Result<Option<(RelayedPacket, Vec<u64>)>, media_core::relay::RelayError> {
    let p = RelayedPacket::decode(d)?;
    Ok(match lock(loss).on_packet(p.track, p.ssrc, p.seq) {
        Arrival::Drop => None,
        Arrival::Forward { nack } => Some((p, nack)),
    })
}

async fn write_control(mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Control>) {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        buf.clear();
        encode_control(&msg, &mut buf);
        while let Ok(more) = rx.try_recv() {
            encode_control(&more, &mut buf);
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
    }
}

async fn read_frame(
    recv: &mut quinn::RecvStream,
    reader: &mut ControlReader,
) -> anyhow::Result<Control> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(msg) = reader.next_frame()? {
            return Ok(msg);
        }
        match recv.read(&mut buf).await? {
            Some(n) => reader.push(&buf[..n]),
            None => anyhow::bail!("the peer closed the control stream"),
        }
    }
}

/// Each side proves the cluster key over this connection's TLS exporter secret and
/// checks the other's proof. The peer's node id and the control stream's reader (it
/// may hold what followed the hello) on success; the connection is closed otherwise.
async fn authenticate(
    key: &hmac::Key,
    me: &str,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    expect: Option<&str>,
) -> anyhow::Result<(String, ControlReader)> {
    let dialer = expect.is_some();
    let mut ekm = [0u8; 32];
    conn.export_keying_material(&mut ekm, EXPORTER_LABEL, b"")
        .map_err(|_| anyhow::anyhow!("the TLS exporter is unavailable"))?;
    let mine = hmac::sign(key, &proof_message(&ekm, dialer, me));
    let mut out = Vec::new();
    encode_control(
        &Control::Hello {
            node: me.to_owned(),
            proof: hex::encode(mine.as_ref()),
        },
        &mut out,
    );
    send.write_all(&out).await.context("sending hello")?;
    let mut reader = ControlReader::default();
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(recv, &mut reader))
        .await
        .context("no hello from the peer")?
        .context("no hello from the peer")?;
    let Control::Hello { node, proof } = hello else {
        conn.close(CLOSE_UNAUTHORISED.into(), b"hello expected");
        anyhow::bail!("the peer did not start with hello");
    };
    let verified = hex::decode(&proof)
        .ok()
        .is_some_and(|p| hmac::verify(key, &proof_message(&ekm, !dialer, &node), &p).is_ok());
    if !verified || expect.is_some_and(|e| e != node) {
        conn.close(CLOSE_UNAUTHORISED.into(), b"cluster key not proven");
        warn!(peer = %node, addr = %conn.remote_address(), "relay peer refused: it did not prove the cluster key");
        anyhow::bail!("node {node} did not prove the cluster key");
    }
    Ok((node, reader))
}

/// What a proof signs: who proves (dialer or acceptor, and its node id) and the
/// session's secret.
fn proof_message(ekm: &[u8], dialer: bool, node: &str) -> Vec<u8> {
    let mut m = if dialer {
        b"dialer:".to_vec()
    } else {
        b"acceptor:".to_vec()
    };
    m.extend_from_slice(ekm);
    m.extend_from_slice(node.as_bytes());
    m
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A QUIC endpoint that accepts links and dials them, with a fresh self-signed
/// certificate (the cluster key, not the certificate, is what is trusted).
pub fn endpoint(bind: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rcgen::KeyPair::generate().context("making the relay key")?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?
        .self_signed(&key)
        .context("making the relay certificate")?;
    let cert_der = cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(KeyProvesNode(provider)))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into()?))
        .initial_mtu(INITIAL_MTU)
        .datagram_receive_buffer_size(Some(4 * 1024 * 1024));
    let transport = Arc::new(transport);
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    client_config.transport_config(transport);
    let mut endpoint = quinn::Endpoint::server(server_config, bind)?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// Accepts any certificate whose handshake signature is valid: the peer is trusted
/// by its proof of the cluster key afterwards, bound to this very TLS session.
#[derive(Debug)]
struct KeyProvesNode(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for KeyProvesNode {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dials `b` from `a` and runs both sides' proofs; each side's outcome.
    async fn handshake(
        key_a: &[u8],
        key_b: &[u8],
    ) -> (anyhow::Result<String>, anyhow::Result<String>) {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (a, b) = (endpoint(any).unwrap(), endpoint(any).unwrap());
        let to = b.local_addr().unwrap();
        let (ka, kb) = (
            hmac::Key::new(hmac::HMAC_SHA256, key_a),
            hmac::Key::new(hmac::HMAC_SHA256, key_b),
        );
        // Each side keeps its connection until both are done: a dropped one closes.
        let acceptor = async {
            let conn = b.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let r = authenticate(&kb, "node-b", &conn, &mut send, &mut recv, None).await;
            (r.map(|(node, _)| node), conn)
        };
        let dialer = async {
            let conn = a.connect(to, SERVER_NAME).unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let r = authenticate(&ka, "node-a", &conn, &mut send, &mut recv, Some("node-b")).await;
            (r.map(|(node, _)| node), conn)
        };
        let ((d, _c1), (a, _c2)) = tokio::join!(dialer, acceptor);
        (d, a)
    }

    #[tokio::test]
    async fn nodes_with_the_cluster_key_link_up() {
        let (dialer, acceptor) = handshake(&[7; 32], &[7; 32]).await;
        assert_eq!(dialer.unwrap(), "node-b");
        assert_eq!(acceptor.unwrap(), "node-a");
    }

    #[tokio::test]
    async fn a_node_without_the_cluster_key_is_refused_both_ways() {
        let (dialer, acceptor) = handshake(&[7; 32], &[8; 32]).await;
        assert!(dialer.is_err(), "the dialer refuses the acceptor's proof");
        assert!(acceptor.is_err(), "the acceptor refuses the dialer's proof");
    }

    #[tokio::test]
    async fn a_dialled_node_that_answers_with_another_name_is_refused() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (a, b) = (endpoint(any).unwrap(), endpoint(any).unwrap());
        let to = b.local_addr().unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let acceptor = async {
            let conn = b.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            authenticate(&key, "node-c", &conn, &mut send, &mut recv, None).await
        };
        let dialer = async {
            let conn = a.connect(to, SERVER_NAME).unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            authenticate(&key, "node-a", &conn, &mut send, &mut recv, Some("node-b")).await
        };
        let (d, _) = tokio::join!(dialer, acceptor);
        assert!(d.is_err());
    }
}
