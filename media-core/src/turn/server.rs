//! The TURN server's state machine (RFC 8656), without IO: allocations keyed by the
//! client's 5-tuple, their permissions and channels, REST-credential checks, the
//! per-user quota and the peer allow-list.
//!
//! ```text
//!   driver                                  TurnServer
//!   ──────                                  ──────────
//!   bytes from a client ──from_client(…)──► Reply / Relay / Allocate / Ignore
//!   relay socket bound  ──allocated(…)────► the Allocate answer
//!   bytes from a peer   ──from_peer(…)────► ChannelData or Data indication for a client
//!   stream closed       ──client_closed(…)► the relay address to release
//!   timer               ──expire(now)─────► allocations whose lifetime ran out
//! ```
//!
//! Invariants:
//! - Nothing is relayed to or accepted from an address outside the allow-list:
//!   CreatePermission and ChannelBind for such a peer are refused with 403, so a
//!   client learns why, and no data path exists to it.
//! - Every request but Binding is authenticated (long-term credentials, REST
//!   username); answers after authentication carry MESSAGE-INTEGRITY.
//! - A user holds at most `max_allocations_per_user` allocations at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::credentials::{Nonces, long_term_key, parse_rest_username, rest_password};
use super::stun::{self, Builder, Class, Message};

/// How the client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientTransport {
    Udp,
    Tcp,
    Tls,
}

impl ClientTransport {
    pub const ALL: [ClientTransport; 3] = [
        ClientTransport::Udp,
        ClientTransport::Tcp,
        ClientTransport::Tls,
    ];

    /// The label metrics use: `turn-udp`, `turn-tcp`, `turn-tls`.
    pub fn label(self) -> &'static str {
        match self {
            ClientTransport::Udp => "turn-udp",
            ClientTransport::Tcp => "turn-tcp",
            ClientTransport::Tls => "turn-tls",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Streams carry ChannelData padded to four bytes.
    fn is_stream(self) -> bool {
        self != ClientTransport::Udp
    }
}

/// One client connection: transport, the client's address, the listener's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: ClientTransport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Peers a relay may talk to: an IP and a range of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule {
    pub ip: IpAddr,
    pub ports: RangeInclusive<u16>,
}

impl PeerRule {
    pub fn exact(addr: SocketAddr) -> PeerRule {
        PeerRule {
            ip: addr.ip(),
            ports: addr.port()..=addr.port(),
        }
    }

    /// `ip`, `ip:port` or `ip:low-high` (IPv6 in brackets with a port).
    pub fn parse(s: &str) -> Result<PeerRule, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerRule {
                ip,
                ports: 1..=u16::MAX,
            });
        }
        let (host, ports) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("'{s}' is not ip, ip:port or ip:low-high"))?;
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("'{host}' in '{s}' is not an IP address"))?;
        let bad = || format!("'{ports}' in '{s}' is not a port or a low-high range");
        let (lo, hi) = match ports.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let p = ports.parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(PeerRule { ip, ports: lo..=hi })
    }
}

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub realm: String,
    /// The REST credentials' secret.
    pub secret: String,
    /// Keys the server's nonces; random per process is enough.
    pub nonce_key: [u8; 32],
    pub allowed_peers: Vec<PeerRule>,
    pub max_allocations_per_user: usize,
    pub max_allocations: usize,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
}

impl TurnConfig {
    pub fn new(realm: &str, secret: &str, nonce_key: [u8; 32]) -> TurnConfig {
        TurnConfig {
            realm: realm.to_owned(),
            secret: secret.to_owned(),
            nonce_key,
            allowed_peers: Vec::new(),
            max_allocations_per_user: 20,
            max_allocations: 10_000,
            // RFC 8656 §7.2's default; a client refreshes before it runs out.
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
        }
    }

    fn may_permit(&self, ip: IpAddr) -> bool {
        self.allowed_peers.iter().any(|r| r.ip == ip)
    }

    fn may_relay(&self, peer: SocketAddr) -> bool {
        self.allowed_peers
            .iter()
            .any(|r| r.ip == peer.ip() && r.ports.contains(&peer.port()))
    }
}

/// The clocks the server reads, given by the caller: a monotonic one for lifetimes
/// and wall-clock seconds for credential and nonce expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix_secs: u64,
}

/// What to do with bytes a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient<'a> {
    /// Send this back to the client, the way it came.
    Reply(Vec<u8>),
    /// Send `data` from the relay socket at `relay` to `peer`.
    Relay {
        relay: SocketAddr,
        peer: SocketAddr,
        data: &'a [u8],
    },
    /// The Allocate passed every check: bind a relay socket, then call
    /// [`TurnServer::allocated`] with this.
    Allocate(PendingAllocation),
    /// Nothing (an indication without a permission, a stray answer, garbage).
    Ignore,
}

/// An Allocate waiting for its relay socket.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingAllocation {
    pub five_tuple: FiveTuple,
    transaction: [u8; 12],
    auth: Auth,
    lifetime: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Auth {
    username: String,
    identity: String,
    key: [u8; 16],
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    relay: SocketAddr,
    auth: Auth,
    transaction: [u8; 12],
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_of: HashMap<SocketAddr, u16>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurnStats {
    /// Messages (STUN or ChannelData, well formed or not) from clients.
    pub client_messages: u64,
    /// Allocations made, by [`ClientTransport`].
    pub allocations_total: [u64; 3],
    pub bytes_to_peers: u64,
    pub bytes_to_clients: u64,
    /// Requests refused: bad or expired credentials (401), a peer outside the
    /// allow-list (403), the user's quota (486).
    pub unauthorized: u64,
    pub forbidden: u64,
    pub over_quota: u64,
}

const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const UDP: u8 = 17;
const SOFTWARE_NAME: &[u8] = b"StreamCore";
const FORBIDDEN_PEER: &str = "Forbidden: this server relays only to its media ports";

#[derive(Debug)]
pub struct TurnServer {
    config: TurnConfig,
    nonces: Nonces,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddr, FiveTuple>,
    per_user: HashMap<String, usize>,
    stats: TurnStats,
    /// Allocations ended (by Refresh with lifetime 0, a closed stream, or expiry)
    /// whose relay sockets the driver has yet to close.
    released: Vec<(FiveTuple, SocketAddr)>,
}

impl TurnServer {
    pub fn new(config: TurnConfig) -> TurnServer {
        TurnServer {
            nonces: Nonces::new(&config.nonce_key),
            config,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            stats: TurnStats::default(),
            released: Vec::new(),
        }
    }

    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Allocations open now, by [`ClientTransport`].
    pub fn allocations(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for ft in self.allocations.keys() {
            n[ft.transport.index()] += 1;
        }
        n
    }

    /// The client a relay address serves.
    pub fn client_of(&self, relay: SocketAddr) -> Option<FiveTuple> {
        self.by_relay.get(&relay).copied()
    }

    /// Handles one STUN message or ChannelData from a client.
    pub fn from_client<'a>(&mut self, ft: FiveTuple, data: &'a [u8], now: Now) -> FromClient<'a> {
        self.stats.client_messages += 1;
        if let Some(cd) = stun::parse_channel_data(data) {
            return self.channel_data_from_client(ft, cd.channel, cd.data, now.instant);
        }
        let Ok(msg) = stun::parse(data) else {
            return FromClient::Ignore;
        };
        match (msg.method, msg.class) {
            (stun::BINDING, Class::Request) => FromClient::Reply(
                Builder::new(stun::BINDING, Class::Success, msg.transaction)
                    .xor_address(stun::XOR_MAPPED_ADDRESS, ft.client)
                    .attr(stun::SOFTWARE, SOFTWARE_NAME)
                    .fingerprint()
                    .finish(),
            ),
            (stun::SEND, Class::Indication) => self.send_indication(ft, &msg, now.instant),
            (
                stun::ALLOCATE | stun::REFRESH | stun::CREATE_PERMISSION | stun::CHANNEL_BIND,
                Class::Request,
            ) => {
                let auth = match self.authenticate(&msg, now) {
                    Ok(a) => a,
                    Err(reply) => return FromClient::Reply(reply),
                };
                match msg.method {
                    stun::ALLOCATE => self.allocate(ft, &msg, auth, now.instant),
                    stun::REFRESH => FromClient::Reply(self.refresh(ft, &msg, &auth, now.instant)),
                    stun::CREATE_PERMISSION => {
                        FromClient::Reply(self.create_permission(ft, &msg, &auth, now.instant))
                    }
                    _ => FromClient::Reply(self.channel_bind(ft, &msg, &auth, now.instant)),
                }
            }
            (_, Class::Request) => FromClient::Reply(
                Builder::new(msg.method, Class::Error, msg.transaction)
                    .error(400, "Bad Request: not a TURN method")
                    .fingerprint()
                    .finish(),
            ),
            _ => FromClient::Ignore,
        }
    }

    /// The long-term-credential dance (RFC 8489 §9.2): 401 with a realm and nonce to
    /// a request without integrity, 438 for a stale nonce, 401 for credentials that
    /// are not the secret's or have expired.
    fn authenticate(&mut self, msg: &Message<'_>, now: Now) -> Result<Auth, Vec<u8>> {
        let challenge = |this: &mut Self, code: u16, reason: &str| {
            let nonce = this
                .nonces
                .make(now.unix_secs + this.config.nonce_lifetime.as_secs());
            Builder::new(msg.method, Class::Error, msg.transaction)
                .error(code, reason)
                .attr(stun::REALM, this.config.realm.as_bytes())
                .attr(stun::NONCE, nonce.as_bytes())
                .attr(stun::SOFTWARE, SOFTWARE_NAME)
                .fingerprint()
                .finish()
        };
        if !msg.has_integrity() {
            return Err(challenge(self, 401, "Unauthorized"));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.text(stun::USERNAME),
            msg.text(stun::REALM),
            msg.text(stun::NONCE),
        ) else {
            return Err(Builder::new(msg.method, Class::Error, msg.transaction)
                .error(400, "Bad Request: USERNAME, REALM and NONCE are needed")
                .fingerprint()
                .finish());
        };
        if !self.nonces.valid(nonce, now.unix_secs) || realm != self.config.realm {
            return Err(challenge(self, 438, "Stale Nonce"));
        }
        let Some((expiry, identity)) = parse_rest_username(username) else {
            self.stats.unauthorized += 1;
            return Err(challenge(
                self,
                401,
                "Unauthorized: not a <expiry>:<id> username",
            ));
        };
        if expiry <= now.unix_secs {
            self.stats.unauthorized += 1;
            return Err(challenge(
                self,
                401,
                "Unauthorized: the credential has expired",
            ));
        }
        let password = rest_password(&self.config.secret, username);
        let key = long_term_key(username, &self.config.realm, &password);
        if !msg.integrity_matches(&key) {
            self.stats.unauthorized += 1;
            return Err(challenge(self, 401, "Unauthorized: wrong credential"));
        }
        Ok(Auth {
            username: username.to_owned(),
            identity: identity.to_owned(),
            key,
        })
    }

    fn error(msg: &Message<'_>, auth: &Auth, code: u16, reason: &str) -> Vec<u8> {
        Builder::new(msg.method, Class::Error, msg.transaction)
            .error(code, reason)
            .attr(stun::SOFTWARE, SOFTWARE_NAME)
            .integrity(&auth.key)
            .fingerprint()
            .finish()
    }

    /// A signed success answer to `msg`, with what `attrs` adds.
    fn success(msg: &Message<'_>, auth: &Auth, attrs: impl FnOnce(Builder) -> Builder) -> Vec<u8> {
        attrs(Builder::new(msg.method, Class::Success, msg.transaction))
            .attr(stun::SOFTWARE, SOFTWARE_NAME)
            .integrity(&auth.key)
            .fingerprint()
            .finish()
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let asked = msg
            .u32_attr(stun::LIFETIME)
            .map_or(self.config.default_lifetime, |s| {
                Duration::from_secs(s.into())
            });
        asked
            .min(self.config.max_lifetime)
            .max(self.config.default_lifetime)
    }

    fn allocate<'a>(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: Auth,
        now: Instant,
    ) -> FromClient<'a> {
        if let Some(a) = self.allocations.get(&ft) {
            // A retransmission of the request that made it gets the same answer.
            if a.transaction == msg.transaction && a.auth == auth {
                let lifetime = a.expires.saturating_duration_since(now);
                return FromClient::Reply(Self::allocate_success(
                    msg.transaction,
                    ft,
                    a.relay,
                    lifetime,
                    &auth,
                ));
            }
            return FromClient::Reply(Self::error(msg, &auth, 437, "Allocation Mismatch"));
        }
        match msg.attr(stun::REQUESTED_TRANSPORT) {
            None => {
                return FromClient::Reply(Self::error(
                    msg,
                    &auth,
                    400,
                    "Bad Request: no REQUESTED-TRANSPORT",
                ));
            }
            Some(v) if v.first() != Some(&UDP) => {
                return FromClient::Reply(Self::error(
                    msg,
                    &auth,
                    442,
                    "Unsupported Transport Protocol",
                ));
            }
            Some(_) => {}
        }
        if msg.attr(stun::EVEN_PORT).is_some() || msg.attr(stun::RESERVATION_TOKEN).is_some() {
            return FromClient::Reply(Self::error(
                msg,
                &auth,
                508,
                "Insufficient Capacity: no port reservations",
            ));
        }
        if let Some(family) = msg.attr(stun::REQUESTED_ADDRESS_FAMILY)
            && family.first() != Some(&0x01)
        {
            return FromClient::Reply(Self::error(msg, &auth, 440, "Address Family not Supported"));
        }
        if self.per_user.get(&auth.identity).copied().unwrap_or(0)
            >= self.config.max_allocations_per_user
        {
            self.stats.over_quota += 1;
            return FromClient::Reply(Self::error(msg, &auth, 486, "Allocation Quota Reached"));
        }
        if self.allocations.len() >= self.config.max_allocations {
            return FromClient::Reply(Self::error(msg, &auth, 508, "Insufficient Capacity"));
        }
        FromClient::Allocate(PendingAllocation {
            five_tuple: ft,
            transaction: msg.transaction,
            auth,
            lifetime: self.lifetime(msg),
        })
    }

    fn allocate_success(
        transaction: [u8; 12],
        ft: FiveTuple,
        relay: SocketAddr,
        lifetime: Duration,
        auth: &Auth,
    ) -> Vec<u8> {
        Builder::new(stun::ALLOCATE, Class::Success, transaction)
            .xor_address(stun::XOR_RELAYED_ADDRESS, relay)
            .u32_attr(stun::LIFETIME, lifetime.as_secs() as u32)
            .xor_address(stun::XOR_MAPPED_ADDRESS, ft.client)
            .attr(stun::SOFTWARE, SOFTWARE_NAME)
            .integrity(&auth.key)
            .fingerprint()
            .finish()
    }

    /// Completes an Allocate once the driver has bound (or failed to bind) a relay
    /// socket; the answer for the client.
    pub fn allocated(
        &mut self,
        pending: PendingAllocation,
        relay: Option<SocketAddr>,
        now: Instant,
    ) -> Vec<u8> {
        let PendingAllocation {
            five_tuple: ft,
            transaction,
            auth,
            lifetime,
        } = pending;
        let Some(relay) = relay else {
            return Builder::new(stun::ALLOCATE, Class::Error, transaction)
                .error(508, "Insufficient Capacity: no relay port free")
                .integrity(&auth.key)
                .fingerprint()
                .finish();
        };
        let answer = Self::allocate_success(transaction, ft, relay, lifetime, &auth);
        *self.per_user.entry(auth.identity.clone()).or_default() += 1;
        self.stats.allocations_total[ft.transport.index()] += 1;
        self.by_relay.insert(relay, ft);
        self.allocations.insert(
            ft,
            Allocation {
                relay,
                auth,
                transaction,
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
            },
        );
        answer
    }

    /// The allocation of `ft` made by the same user, or the error to answer.
    fn own_allocation(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<&mut Allocation, Vec<u8>> {
        match self.allocations.get_mut(&ft) {
            None => Err(Self::error(msg, auth, 437, "Allocation Mismatch")),
            Some(a) if a.auth.username != auth.username => {
                Err(Self::error(msg, auth, 441, "Wrong Credentials"))
            }
            Some(a) => Ok(a),
        }
    }

    fn refresh(&mut self, ft: FiveTuple, msg: &Message<'_>, auth: &Auth, now: Instant) -> Vec<u8> {
        let asked = msg.u32_attr(stun::LIFETIME);
        let lifetime = self.lifetime(msg);
        let a = match self.own_allocation(ft, msg, auth) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let granted = if asked == Some(0) {
            0
        } else {
            a.expires = now + lifetime;
            lifetime.as_secs() as u32
        };
        if granted == 0 {
            self.remove(ft);
        }
        Self::success(msg, auth, |b| b.u32_attr(stun::LIFETIME, granted))
    }

    fn create_permission(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        now: Instant,
    ) -> Vec<u8> {
        let mut peers = Vec::new();
        for raw in msg.attrs(stun::XOR_PEER_ADDRESS) {
            match xor_peer(raw, msg) {
                Some(p) => peers.push(p),
                None => {
                    return Self::error(msg, auth, 400, "Bad Request: malformed XOR-PEER-ADDRESS");
                }
            }
        }
        if peers.is_empty() {
            return Self::error(msg, auth, 400, "Bad Request: no XOR-PEER-ADDRESS");
        }
        if peers.iter().any(|p| !self.config.may_permit(p.ip())) {
            self.stats.forbidden += 1;
            return Self::error(msg, auth, 403, FORBIDDEN_PEER);
        }
        let a = match self.own_allocation(ft, msg, auth) {
            Ok(a) => a,
            Err(e) => return e,
        };
        for p in peers {
            a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME);
        }
        Self::success(msg, auth, |b| b)
    }

    fn channel_bind(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        now: Instant,
    ) -> Vec<u8> {
        let number = msg
            .attr(stun::CHANNEL_NUMBER)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let Some(number) = number.filter(|n| stun::is_channel_number(*n)) else {
            return Self::error(
                msg,
                auth,
                400,
                "Bad Request: CHANNEL-NUMBER missing or out of range",
            );
        };
        let Some(peer) = msg
            .attr(stun::XOR_PEER_ADDRESS)
            .and_then(|raw| xor_peer(raw, msg))
        else {
            return Self::error(msg, auth, 400, "Bad Request: no XOR-PEER-ADDRESS");
        };
        if !self.config.may_relay(peer) {
            self.stats.forbidden += 1;
            return Self::error(msg, auth, 403, FORBIDDEN_PEER);
        }
        let a = match self.own_allocation(ft, msg, auth) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let taken_by_other_peer = a.channels.get(&number).is_some_and(|c| c.peer != peer);
        let peer_on_other_channel = a.channel_of.get(&peer).is_some_and(|n| *n != number);
        if taken_by_other_peer || peer_on_other_channel {
            return Self::error(
                msg,
                auth,
                400,
                "Bad Request: channel or peer already bound otherwise",
            );
        }
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        );
        a.channel_of.insert(peer, number);
        a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Self::success(msg, auth, |b| b)
    }

    fn send_indication<'a>(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'a>,
        now: Instant,
    ) -> FromClient<'a> {
        let (Some(peer), Some(data)) = (
            msg.attr(stun::XOR_PEER_ADDRESS)
                .and_then(|raw| xor_peer(raw, msg)),
            msg.attr(stun::DATA_ATTR),
        ) else {
            return FromClient::Ignore;
        };
        let Some(a) = self.allocations.get(&ft) else {
            return FromClient::Ignore;
        };
        if !a.permitted(peer.ip(), now) || !self.config.may_relay(peer) {
            return FromClient::Ignore;
        }
        self.stats.bytes_to_peers += data.len() as u64;
        FromClient::Relay {
            relay: a.relay,
            peer,
            data,
        }
    }

    fn channel_data_from_client<'a>(
        &mut self,
        ft: FiveTuple,
        channel: u16,
        data: &'a [u8],
        now: Instant,
    ) -> FromClient<'a> {
        let Some(a) = self.allocations.get(&ft) else {
            return FromClient::Ignore;
        };
        let Some(c) = a.channels.get(&channel).filter(|c| c.expires > now) else {
            return FromClient::Ignore;
        };
        self.stats.bytes_to_peers += data.len() as u64;
        FromClient::Relay {
            relay: a.relay,
            peer: c.peer,
            data,
        }
    }

    /// Bytes a peer sent to the relay at `relay`: the client to pass them to, and the
    /// message carrying them (ChannelData when a channel is bound, else a Data
    /// indication). `None` when the peer has no permission.
    pub fn from_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<(FiveTuple, Vec<u8>)> {
        let ft = *self.by_relay.get(&relay)?;
        let a = self.allocations.get(&ft)?;
        if !a.permitted(peer.ip(), now) {
            return None;
        }
        let out = match a
            .channel_of
            .get(&peer)
            .and_then(|n| a.channels.get(n).map(|c| (n, c)))
        {
            Some((n, c)) if c.expires > now => {
                stun::channel_data(*n, data, ft.transport.is_stream())
            }
            _ => Builder::new(stun::DATA, Class::Indication, rand_transaction(now, data))
                .xor_address(stun::XOR_PEER_ADDRESS, peer)
                .attr(stun::DATA_ATTR, data)
                .finish(),
        };
        self.stats.bytes_to_clients += data.len() as u64;
        Some((ft, out))
    }

    /// A stream client went away: its allocation ends (RFC 8656 §3.1). The relay
    /// addresses to release.
    pub fn client_closed(&mut self, ft: FiveTuple) -> Vec<(FiveTuple, SocketAddr)> {
        self.remove(ft);
        self.take_released()
    }

    /// Allocations that ended since the last call, however they ended: their relay
    /// sockets are to be closed. The driver asks after every call that can end one.
    pub fn take_released(&mut self) -> Vec<(FiveTuple, SocketAddr)> {
        std::mem::take(&mut self.released)
    }

    fn remove(&mut self, ft: FiveTuple) {
        let Some(a) = self.allocations.remove(&ft) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        if let Some(n) = self.per_user.get_mut(&a.auth.identity) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.auth.identity);
            }
        }
        self.released.push((ft, a.relay));
    }

    /// Ends allocations whose lifetime ran out and forgets stale permissions and
    /// channels; every allocation released since the last call (as
    /// [`TurnServer::take_released`]).
    pub fn expire(&mut self, now: Instant) -> Vec<(FiveTuple, SocketAddr)> {
        let ended: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(ft, _)| *ft)
            .collect();
        for ft in ended {
            self.remove(ft);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, e| *e > now);
            let before = a.channels.len();
            a.channels.retain(|_, c| c.expires > now);
            if a.channels.len() != before {
                let channels = &a.channels;
                a.channel_of.retain(|_, n| channels.contains_key(n));
            }
        }
        self.take_released()
    }

    /// When [`TurnServer::expire`] has something to do next.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.allocations.values().map(|a| a.expires).min()
    }
}

fn xor_peer(raw: &[u8], msg: &Message<'_>) -> Option<SocketAddr> {
    super::stun::decode_xor_address(raw, &msg.transaction)
}

/// Indications need a transaction ID nobody answers; it need not be secret, only
/// vary. Derived from the clock and the payload so the core stays deterministic.
fn rand_transaction(now: Instant, data: &[u8]) -> [u8; 12] {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    now.hash(&mut h);
    data.hash(&mut h);
    let a = h.finish().to_be_bytes();
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&a);
    t[8..].copy_from_slice(&(data.len() as u32).to_be_bytes());
    t
}
