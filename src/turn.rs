//! The embedded TURN server's driver: UDP, TCP and TLS listeners, one UDP relay
//! socket per allocation, and a timer, around the sans-IO [`TurnServer`] of
//! `media_core::turn`. For clients whose network lets nothing through but TCP (or
//! TLS on 443): their relay talks to this node's media ports, and nowhere else.
//!
//! Invariants: no task awaits while holding the core's lock (every send under it is
//! a non-blocking `try_send`: a full queue loses the packet, as a congested path
//! would); a relay socket lives exactly as long as its allocation; a stream client's
//! allocation ends with its connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use media_core::turn::server::TurnStats;
use media_core::turn::{
    ClientTransport, FiveTuple, FromClient, Now, PeerRule, RelayDirectory, StreamDeframer,
    TurnConfig, TurnServer,
};
use std::sync::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::conn_slots::ConnectionSlots;
use crate::metrics::Metrics;

/// A stream client quiet this long is closed (ICE consent checks run every few
/// seconds through a working relay).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Stream connections held at most (counted from accept, handshakes included) …
const MAX_STREAMS: usize = 4096;
/// … and from one address.
const MAX_STREAMS_PER_IP: usize = 64;
/// A stream client that takes no data for this long is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one stream client at most.
const SEND_QUEUE: usize = 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server: its listeners' addresses and the URLs clients get.
pub struct EmbeddedTurn {
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    /// `turn:`/`turns:` URLs for the ICE servers handed out.
    pub urls: Vec<String>,
    /// The secret the credentials are checked with.
    pub secret: String,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Tells the connections' tasks to end.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for EmbeddedTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTurn")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// The relay addresses of open allocations, for the media workers.
#[derive(Debug, Default)]
pub struct Relays(RwLock<HashMap<SocketAddr, ClientTransport>>);

impl Relays {
    fn insert(&self, relay: SocketAddr, transport: ClientTransport) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(relay, transport);
    }

    fn remove(&self, relay: SocketAddr) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&relay);
    }
}

impl RelayDirectory for Relays {
    fn transport_of(&self, relay: SocketAddr) -> Option<ClientTransport> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&relay)
            .copied()
    }
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

struct Shared {
    core: Mutex<TurnServer>,
    relays: Mutex<HashMap<SocketAddr, Relay>>,
    streams: Mutex<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    /// Open TCP/TLS connections, in all and per address.
    slots: Arc<ConnectionSlots>,
    udp: Option<Arc<UdpSocket>>,
    directory: Arc<Relays>,
    relay_ip: IpAddr,
    relay_ports: RangeInclusive<u16>,
    media: MediaAddrs,
    stop: watch::Receiver<bool>,
}

/// The node's media ports as clients name them (the advertised addresses, public
/// behind NAT) and as the relay reaches them here (the relay's own IP: a public
/// address behind 1:1 NAT is not on this host).
#[derive(Debug, Clone)]
struct MediaAddrs {
    local_ip: IpAddr,
    public: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl MediaAddrs {
    /// Where to send what a client relays to `peer`.
    fn to_local(&self, peer: SocketAddr) -> SocketAddr {
        if self.ports.contains(&peer.port()) && self.public.contains(&peer.ip()) {
            SocketAddr::new(self.local_ip, peer.port())
        } else {
            peer
        }
    }

    /// The address a client knows for what arrived from `source` (unchanged when
    /// the local address is itself advertised).
    fn to_public(&self, source: SocketAddr) -> SocketAddr {
        match self.public.first() {
            Some(p)
                if source.ip() == self.local_ip
                    && !self.public.contains(&self.local_ip)
                    && self.ports.contains(&source.port()) =>
            {
                SocketAddr::new(*p, source.port())
            }
            _ => source,
        }
    }
}

/// The relay sockets' IP: the configured one, else the media bind IP, else (a
/// wildcard bind) the local address this host reaches its advertised one from —
/// the same address when it is local, the interface's behind NAT.
fn relay_ip(settings: &Settings) -> IpAddr {
    if let Some(ip) = settings.turn.relay_ip {
        return ip;
    }
    let bind = settings.media_bind_ip();
    if !bind.is_unspecified() {
        return bind;
    }
    let advertised = settings.advertised_ips()[0];
    let probe = || -> std::io::Result<IpAddr> {
        let any: IpAddr = if advertised.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        };
        let s = std::net::UdpSocket::bind((any, 0))?;
        s.connect((advertised, 9))?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(advertised)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug already reported; the data stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

impl EmbeddedTurn {
    /// Binds the listeners (a taken port fails the start) and starts serving.
    /// `media` are the node's media sockets, which relays may reach; `tls` the TLS
    /// listener's certificate ([`crate::tls::turn_config`]).
    pub async fn start(
        settings: &Settings,
        media: &[SocketAddr],
        tls: Option<Arc<rustls::ServerConfig>>,
        directory: Arc<Relays>,
        metrics: Metrics,
    ) -> anyhow::Result<EmbeddedTurn> {
        let t = &settings.turn;
        let bind_ip = settings.media_bind_ip();
        let advertised = settings.advertised_ips();
        // Relays bind a concrete address: it is the source the media workers see.
        let relay_ip = relay_ip(settings);
        let mut allowed: Vec<PeerRule> = Vec::new();
        for m in media {
            if !m.ip().is_unspecified() {
                allowed.push(PeerRule::exact(*m));
            }
            for ip in &advertised {
                allowed.push(PeerRule::exact(SocketAddr::new(*ip, m.port())));
            }
        }
        for p in &t.allowed_peers {
            allowed.push(PeerRule::parse(p).map_err(anyhow::Error::msg)?);
        }
        let secret = t.shared_secret.clone().unwrap_or_else(|| {
            rand::random::<[u8; 24]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        let mut config = TurnConfig::new(&t.realm, &secret, rand::random());
        config.allowed_peers = allowed;
        config.max_allocations_per_user = t.max_allocations_per_user;

        let udp = if t.udp_port != 0 {
            let at = SocketAddr::new(bind_ip, t.udp_port);
            Some(Arc::new(UdpSocket::bind(at).await.with_context(|| {
                format!("binding the TURN UDP listener on {at}")
            })?))
        } else {
            None
        };
        let tcp = bind_tcp(bind_ip, t.tcp_port, "TCP").await?;
        let tls_listener = match tls {
            Some(cfg) if t.tls_port != 0 => bind_tcp(bind_ip, t.tls_port, "TLS")
                .await?
                .map(|l| (l, tokio_rustls::TlsAcceptor::from(cfg))),
            _ => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            core: Mutex::new(TurnServer::new(config)),
            relays: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            slots: ConnectionSlots::new(MAX_STREAMS, MAX_STREAMS_PER_IP),
            udp: udp.clone(),
            directory,
            relay_ip,
            relay_ports: t.relay_port_range().map_err(anyhow::Error::msg)?,
            media: MediaAddrs {
                local_ip: relay_ip,
                public: advertised.clone(),
                ports: media.iter().map(SocketAddr::port).collect(),
            },
            stop: stop_rx,
        });

        let udp_addr = udp.as_ref().map(|u| u.local_addr()).transpose()?;
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose()?;
        let tls_addr = tls_listener
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?;
        let host = url_host(advertised[0]);
        let tls_host = t
            .tls_host
            .clone()
            .or_else(|| public_host(settings))
            .unwrap_or_else(|| host.clone());
        let mut urls = Vec::new();
        if let Some(a) = udp_addr {
            urls.push(format!("turn:{host}:{}?transport=udp", a.port()));
        }
        if let Some(a) = tcp_addr {
            urls.push(format!("turn:{host}:{}?transport=tcp", a.port()));
        }
        if let Some(a) = tls_addr {
            urls.push(format!("turns:{tls_host}:{}?transport=tcp", a.port()));
        }

        let mut tasks = Vec::new();
        if let Some(u) = udp {
            tasks.push(tokio::spawn(serve_udp(shared.clone(), u)));
        }
        if let Some(l) = tcp {
            tasks.push(tokio::spawn(accept(shared.clone(), l, None)));
        }
        if let Some((l, acceptor)) = tls_listener {
            tasks.push(tokio::spawn(accept(shared.clone(), l, Some(acceptor))));
        }
        tasks.push(tokio::spawn(tick(shared.clone(), metrics)));
        info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, relay_ip = %relay_ip,
            relay_ports = %t.relay_ports, "embedded TURN server listening");
        Ok(EmbeddedTurn {
            udp_addr,
            tcp_addr,
            tls_addr,
            urls,
            secret,
            tasks,
            shared,
            stop,
        })
    }

    /// Stops listening, closes every client connection and releases every relay.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for (relay, r) in lock(&self.shared.relays).drain() {
            r.reader.abort();
            self.shared.directory.remove(relay);
        }
        lock(&self.shared.streams).clear();
    }
}

impl Drop for EmbeddedTurn {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind_tcp(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<Option<TcpListener>> {
    if port == 0 {
        return Ok(None);
    }
    let at = SocketAddr::new(ip, port);
    Ok(Some(TcpListener::bind(at).await.with_context(|| {
        format!("binding the TURN {what} listener on {at}")
    })?))
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn public_host(settings: &Settings) -> Option<String> {
    let url = settings.public_url.as_deref()?;
    let hostport = url.split("://").nth(1)?.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

impl Shared {
    /// Feeds one message from a client to the core and carries out what it says;
    /// the reply for the client, if any.
    fn from_client(self: &Arc<Self>, ft: FiveTuple, data: &[u8]) -> Option<Vec<u8>> {
        let now = now();
        let mut core = lock(&self.core);
        let reply = match core.from_client(ft, data, now) {
            FromClient::Reply(r) => Some(r),
            FromClient::Relay { relay, peer, data } => {
                let to = self.media.to_local(peer);
                if let Some(r) = lock(&self.relays).get(&relay)
                    && let Err(e) = r.socket.try_send_to(data, to)
                {
                    debug!(%relay, %peer, error = %e, "TURN relay send failed");
                }
                None
            }
            FromClient::Allocate(pending) => {
                let bound = self.bind_relay();
                let answer = core.allocated(pending, bound.as_ref().map(|(a, _)| *a), now.instant);
                match bound {
                    Some((addr, socket)) => {
                        let reader = tokio::spawn(read_relay(self.clone(), addr, socket.clone()));
                        lock(&self.relays).insert(addr, Relay { socket, reader });
                        self.directory.insert(addr, ft.transport);
                        debug!(client = %ft.client, transport = ft.transport.label(), relay = %addr, "TURN allocation");
                    }
                    None => warn!(ip = %self.relay_ip, ports = ?self.relay_ports,
                        "TURN: no relay socket could be bound (ports taken, or the IP is not this host's: set turn.relay_ip)"),
                }
                Some(answer)
            }
            FromClient::Ignore => None,
        };
        // A Refresh with lifetime 0 ends an allocation: its socket goes now.
        let released = core.take_released();
        drop(core);
        for (_, relay) in released {
            self.release(relay);
        }
        reply
    }

    /// A UDP socket on a free port of the relay range (random probes, so two
    /// allocations do not race for the same port and a full range fails fast).
    fn bind_relay(&self) -> Option<(SocketAddr, Arc<UdpSocket>)> {
        let (lo, hi) = (*self.relay_ports.start(), *self.relay_ports.end());
        for _ in 0..64 {
            let port = lo + (rand::random::<u32>() % (u32::from(hi - lo) + 1)) as u16;
            let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, port)) else {
                continue;
            };
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            if let (Ok(addr), Ok(s)) = (s.local_addr(), UdpSocket::from_std(s)) {
                return Some((addr, Arc::new(s)));
            }
        }
        None
    }

    fn to_client(&self, ft: FiveTuple, msg: Vec<u8>) {
        match ft.transport {
            ClientTransport::Udp => {
                if let Some(u) = &self.udp {
                    let _ = u.try_send_to(&msg, ft.client);
                }
            }
            ClientTransport::Tcp | ClientTransport::Tls => {
                if let Some(tx) = lock(&self.streams).get(&ft) {
                    let _ = tx.try_send(msg);
                }
            }
        }
    }

    fn release(&self, relay: SocketAddr) {
        if let Some(r) = lock(&self.relays).remove(&relay) {
            r.reader.abort();
        }
        self.directory.remove(relay);
    }
}

async fn serve_udp(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let server = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "TURN UDP listener has no address");
            return;
        }
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors surface here on Linux; the socket goes on.
            Err(e) => {
                debug!(error = %e, "TURN UDP receive error");
                continue;
            }
        };
        let ft = FiveTuple {
            transport: ClientTransport::Udp,
            client,
            server,
        };
        if let Some(reply) = shared.from_client(ft, &buf[..n]) {
            let _ = socket.try_send_to(&reply, client);
        }
    }
}

async fn read_relay(shared: Arc<Shared>, relay: SocketAddr, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!(%relay, error = %e, "TURN relay receive error");
                continue;
            }
        };
        let peer = shared.media.to_public(peer);
        let out = lock(&shared.core).from_peer(relay, peer, &buf[..n], Instant::now());
        if let Some((ft, msg)) = out {
            shared.to_client(ft, msg);
        }
    }
}

async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (server, transport) = match (listener.local_addr(), tls.is_some()) {
        (Ok(a), true) => (a, ClientTransport::Tls),
        (Ok(a), false) => (a, ClientTransport::Tcp),
        (Err(e), _) => {
            warn!(error = %e, "TURN stream listener has no address");
            return;
        }
    };
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "TURN accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = shared.slots.take(client.ip(), false) else {
            debug!(%client, "TURN connection refused: at the limit");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ft = FiveTuple {
            transport,
            client,
            server,
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_stream(shared, ft, stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_stream(shared, ft, s).await,
                        Ok(Err(e)) => debug!(%client, error = %e, "TURN TLS handshake failed"),
                        Err(_) => debug!(%client, "TURN TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One TCP or TLS client: its messages to the core, the core's (and the relay's)
/// messages back; the allocation ends with the connection.
async fn serve_stream<S>(shared: Arc<Shared>, ft: FiveTuple, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    lock(&shared.streams).insert(ft, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&msg)).await {
                Ok(Ok(())) => {}
                // A client that takes nothing is gone, as far as we are concerned.
                Ok(Err(_)) | Err(_) => return,
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
    });
    let mut stop = shared.stop.clone();
    let mut deframer = StreamDeframer::default();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, read.read(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        deframer.push(&buf[..n]);
        loop {
            match deframer.next_message() {
                Ok(Some(msg)) => {
                    if let Some(reply) = shared.from_client(ft, &msg)
                        && tx.try_send(reply).is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(client = %ft.client, error = %e, "TURN stream closed: not STUN or ChannelData");
                    break 'read;
                }
            }
        }
    }
    lock(&shared.streams).remove(&ft);
    let released = lock(&shared.core).client_closed(ft);
    for (_, relay) in released {
        shared.release(relay);
    }
    drop(tx);
    // Bounded by the write timeout; the connection's slot is held until then.
    let _ = writer.await;
}

/// Once a second: ends expired allocations and updates the metrics.
async fn tick(shared: Arc<Shared>, metrics: Metrics) {
    let mut prev = TurnStats::default();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (ended, stats, open) = {
            let mut core = lock(&shared.core);
            let ended = core.expire(Instant::now());
            (ended, core.stats().clone(), core.allocations())
        };
        for (ft, relay) in ended {
            debug!(client = %ft.client, %relay, "TURN allocation expired");
            shared.release(relay);
        }
        metrics.add_turn_stats(&prev, &stats, open);
        prev = stats;
    }
}

#[cfg(test)]
mod tests {
    use super::MediaAddrs;

    #[test]
    fn media_addresses_behind_nat_are_reached_locally_and_named_publicly() {
        let m = MediaAddrs {
            local_ip: "10.0.0.5".parse().unwrap(),
            public: vec!["203.0.113.7".parse().unwrap()],
            ports: vec![40000, 40001],
        };
        let public = "203.0.113.7:40001".parse().unwrap();
        let local = "10.0.0.5:40001".parse().unwrap();
        assert_eq!(m.to_local(public), local);
        assert_eq!(m.to_public(local), public);
        // Other ports and addresses pass as they are.
        for other in ["203.0.113.7:22", "10.0.0.5:22", "192.0.2.1:40000"] {
            let a = other.parse().unwrap();
            assert_eq!(m.to_local(a), a);
            assert_eq!(m.to_public(a), a);
        }
        // Without NAT nothing changes.
        let plain = MediaAddrs {
            local_ip: "127.0.0.1".parse().unwrap(),
            public: vec!["127.0.0.1".parse().unwrap()],
            ports: vec![40000],
        };
        let a = "127.0.0.1:40000".parse().unwrap();
        assert_eq!((plain.to_local(a), plain.to_public(a)), (a, a));
    }
}
