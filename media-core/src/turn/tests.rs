//! The TURN core against a scripted client, on a fake clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::ClientAuth;
use super::credentials::{long_term_key, rest_password, rest_username};
use super::server::PendingAllocation;
use super::stun::{self, Builder, Class};
use super::*;

const SECRET: &str = "n0rth-w1nd";
const REALM: &str = "streamcore";
const START_UNIX: u64 = 1_800_000_000;

fn node() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

fn relay_addr(n: u16) -> SocketAddr {
    SocketAddr::new("10.0.0.1".parse().unwrap(), 50000 + n)
}

struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        Clock(Instant::now())
    }

    fn at(&self, secs: u64) -> Now {
        Now {
            instant: self.0 + Duration::from_secs(secs),
            unix_secs: START_UNIX + secs,
        }
    }
}

fn server() -> TurnServer {
    let mut c = TurnConfig::new(REALM, SECRET, [9; 32]);
    c.allowed_peers = vec![PeerRule::exact(node())];
    c.max_allocations_per_user = 2;
    TurnServer::new(c)
}

/// A TURN client: its 5-tuple and REST credentials (with the nonce it was given).
struct Client {
    ft: FiveTuple,
    auth: ClientAuth,
    /// The key the server's answers are signed with.
    key: [u8; 16],
    challenged: bool,
    next: u8,
}

impl Client {
    fn new(
        transport: ClientTransport,
        port: u16,
        identity: &str,
        expiry: u64,
        secret: &str,
    ) -> Client {
        let username = rest_username(expiry, identity);
        Client::with_credentials(
            transport,
            port,
            &username,
            &rest_password(secret, &username),
        )
    }

    fn with_credentials(
        transport: ClientTransport,
        port: u16,
        username: &str,
        password: &str,
    ) -> Client {
        Client {
            ft: FiveTuple {
                transport,
                client: SocketAddr::new("192.168.1.20".parse().unwrap(), port),
                server: "10.0.0.1:3478".parse().unwrap(),
            },
            auth: ClientAuth::new(username, password),
            key: long_term_key(username, REALM, password),
            challenged: false,
            next: 0,
        }
    }

    fn valid(port: u16, identity: &str) -> Client {
        Client::new(
            ClientTransport::Udp,
            port,
            identity,
            START_UNIX + 86_400,
            SECRET,
        )
    }

    fn tid(&mut self) -> [u8; 12] {
        self.next += 1;
        [self.next; 12]
    }

    /// Sends a request (authenticated once a nonce is known) and returns what the
    /// server made of it.
    fn request<'a>(
        &mut self,
        srv: &mut TurnServer,
        method: u16,
        attrs: impl Fn(Builder) -> Builder,
        now: Now,
        buf: &'a mut Vec<u8>,
    ) -> FromClient<'a> {
        let tid = self.tid();
        *buf = self
            .auth
            .sign(attrs(Builder::new(method, Class::Request, tid)))
            .fingerprint()
            .finish();
        srv.from_client(self.ft, buf, now)
    }

    /// A request's answer: its class, error code (0 on success), and the message.
    fn ask(
        &mut self,
        srv: &mut TurnServer,
        method: u16,
        attrs: impl Fn(Builder) -> Builder + Copy,
        now: Now,
    ) -> (Class, u16, Vec<u8>) {
        let mut buf = Vec::new();
        let reply = match self.request(srv, method, attrs, now, &mut buf) {
            FromClient::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        };
        let m = stun::parse(&reply).unwrap();
        let code = m
            .attr(stun::ERROR_CODE)
            .map_or(0, |v| u16::from(v[2]) * 100 + u16::from(v[3]));
        if m.text(stun::NONCE).is_some() {
            self.auth.learn(&m);
            self.challenged = true;
        }
        (m.class, code, reply)
    }

    /// The 401 challenge, then the authenticated Allocate up to its pending state.
    fn start_allocate(&mut self, srv: &mut TurnServer, now: Now) -> Result<PendingAllocation, u16> {
        let transport = |b: Builder| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        if !self.challenged {
            let (class, code, _) = self.ask(srv, stun::ALLOCATE, transport, now);
            assert_eq!((class, code), (Class::Error, 401));
        }
        let mut buf = Vec::new();
        match self.request(srv, stun::ALLOCATE, transport, now, &mut buf) {
            FromClient::Allocate(p) => Ok(p),
            FromClient::Reply(r) => {
                let m = stun::parse(&r).unwrap();
                let v = m.attr(stun::ERROR_CODE).expect("an error");
                Err(u16::from(v[2]) * 100 + u16::from(v[3]))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn allocate(&mut self, srv: &mut TurnServer, relay: SocketAddr, now: Now) -> SocketAddr {
        let pending = self.start_allocate(srv, now).expect("allocation allowed");
        let answer = srv.allocated(pending, Some(relay), now.instant);
        let m = stun::parse(&answer).unwrap();
        assert_eq!(m.class, Class::Success);
        assert!(
            m.integrity_matches(&self.key),
            "the answer is signed with the user's key"
        );
        assert_eq!(
            m.xor_address(stun::XOR_MAPPED_ADDRESS),
            Some(self.ft.client)
        );
        m.xor_address(stun::XOR_RELAYED_ADDRESS).unwrap()
    }
}

fn peer_attr(peer: SocketAddr) -> impl Fn(Builder) -> Builder + Copy {
    move |b: Builder| b.xor_address(stun::XOR_PEER_ADDRESS, peer)
}

#[test]
fn a_client_relays_to_the_node_both_ways_by_indication_and_channel() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::valid(5000, "alice");
    let relay = c.allocate(&mut srv, relay_addr(1), clock.at(0));
    assert_eq!(relay, relay_addr(1));
    assert_eq!(srv.allocations(), [1, 0, 0]);
    assert_eq!(srv.client_of(relay), Some(c.ft));

    let (class, _, _) = c.ask(
        &mut srv,
        stun::CREATE_PERMISSION,
        peer_attr(node()),
        clock.at(1),
    );
    assert_eq!(class, Class::Success);
    let tid = c.tid();
    let send = Builder::new(stun::SEND, Class::Indication, tid)
        .xor_address(stun::XOR_PEER_ADDRESS, node())
        .attr(stun::DATA_ATTR, b"stun to the node")
        .finish();
    assert_eq!(
        srv.from_client(c.ft, &send, clock.at(2)),
        FromClient::Relay {
            relay,
            peer: node(),
            data: b"stun to the node"
        }
    );
    let (to, data) = srv
        .from_peer(relay, node(), b"answer", clock.at(2).instant)
        .unwrap();
    assert_eq!(to, c.ft);
    let m = stun::parse(&data).unwrap();
    assert_eq!((m.method, m.class), (stun::DATA, Class::Indication));
    assert_eq!(m.xor_address(stun::XOR_PEER_ADDRESS), Some(node()));
    assert_eq!(m.attr(stun::DATA_ATTR), Some(&b"answer"[..]));

    let bind = |b: Builder| {
        b.attr(stun::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
            .xor_address(stun::XOR_PEER_ADDRESS, node())
    };
    assert_eq!(
        c.ask(&mut srv, stun::CHANNEL_BIND, bind, clock.at(3)).0,
        Class::Success
    );
    let cd = stun::channel_data(0x4000, b"rtp", false);
    assert_eq!(
        srv.from_client(c.ft, &cd, clock.at(3)),
        FromClient::Relay {
            relay,
            peer: node(),
            data: b"rtp"
        }
    );
    let (_, data) = srv
        .from_peer(relay, node(), b"rtcp", clock.at(3).instant)
        .unwrap();
    assert_eq!(data, stun::channel_data(0x4000, b"rtcp", false));
    let s = srv.stats();
    assert_eq!((s.bytes_to_peers, s.bytes_to_clients), (16 + 3, 6 + 4));
    assert_eq!(s.allocations_total, [1, 0, 0]);
}

#[test]
fn stream_clients_get_padded_channel_data_and_lose_the_allocation_on_close() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::new(ClientTransport::Tls, 5001, "bob", START_UNIX + 60, SECRET);
    let relay = c.allocate(&mut srv, relay_addr(2), clock.at(0));
    let bind = |b: Builder| {
        b.attr(stun::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
            .xor_address(stun::XOR_PEER_ADDRESS, node())
    };
    assert_eq!(
        c.ask(&mut srv, stun::CHANNEL_BIND, bind, clock.at(1)).0,
        Class::Success
    );
    let (_, data) = srv
        .from_peer(relay, node(), b"abcde", clock.at(1).instant)
        .unwrap();
    assert_eq!(data.len(), 12, "padded to four bytes");
    assert_eq!(srv.allocations(), [0, 0, 1]);
    assert_eq!(srv.client_closed(c.ft), vec![(c.ft, relay)]);
    assert_eq!(srv.allocations(), [0, 0, 0]);
    assert!(
        srv.from_peer(relay, node(), b"x", clock.at(2).instant)
            .is_none()
    );
}

#[test]
fn nothing_is_relayed_to_an_address_outside_the_allow_list() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::valid(5002, "mallory");
    let relay = c.allocate(&mut srv, relay_addr(3), clock.at(0));
    let elsewhere: SocketAddr = "192.0.2.9:53".parse().unwrap();
    let (class, code, reply) = c.ask(
        &mut srv,
        stun::CREATE_PERMISSION,
        peer_attr(elsewhere),
        clock.at(1),
    );
    assert_eq!((class, code), (Class::Error, 403));
    assert!(stun::parse(&reply).unwrap().integrity_matches(&c.key));
    // The node's IP, but not its media port.
    let other_port = SocketAddr::new(node().ip(), 22);
    let bind = move |b: Builder| {
        b.attr(stun::CHANNEL_NUMBER, &[0x40, 0x02, 0, 0])
            .xor_address(stun::XOR_PEER_ADDRESS, other_port)
    };
    assert_eq!(
        c.ask(&mut srv, stun::CHANNEL_BIND, bind, clock.at(1)).1,
        403
    );
    // A permission for the node's IP does not open its other ports.
    assert_eq!(
        c.ask(
            &mut srv,
            stun::CREATE_PERMISSION,
            peer_attr(node()),
            clock.at(1)
        )
        .1,
        0
    );
    let send = Builder::new(stun::SEND, Class::Indication, [1; 12])
        .xor_address(stun::XOR_PEER_ADDRESS, other_port)
        .attr(stun::DATA_ATTR, b"ssh?")
        .finish();
    assert_eq!(
        srv.from_client(c.ft, &send, clock.at(2)),
        FromClient::Ignore
    );
    // And nothing comes back from an address without a permission.
    assert!(
        srv.from_peer(relay, elsewhere, b"x", clock.at(2).instant)
            .is_none()
    );
    assert_eq!(srv.stats().forbidden, 2);
}

#[test]
fn expired_forged_and_stale_credentials_are_refused() {
    let clock = Clock::new();
    let mut srv = server();
    let mut expired = Client::new(ClientTransport::Udp, 5003, "eve", START_UNIX - 1, SECRET);
    assert_eq!(
        expired.start_allocate(&mut srv, clock.at(0)).unwrap_err(),
        401
    );
    let mut forged = Client::new(
        ClientTransport::Udp,
        5004,
        "eve",
        START_UNIX + 600,
        "guessed",
    );
    assert_eq!(
        forged.start_allocate(&mut srv, clock.at(0)).unwrap_err(),
        401
    );
    let mut not_rest = Client::with_credentials(ClientTransport::Udp, 5005, "eve", "pw");
    assert_eq!(
        not_rest.start_allocate(&mut srv, clock.at(0)).unwrap_err(),
        401
    );
    assert_eq!(srv.stats().unauthorized, 3);

    // A nonce outlives its lifetime: 438, with a fresh one that works.
    let mut c = Client::valid(5006, "carol");
    let _ = c.start_allocate(&mut srv, clock.at(0)).unwrap();
    let transport = |b: Builder| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    let (_, code, _) = c.ask(&mut srv, stun::ALLOCATE, transport, clock.at(601));
    assert_eq!(code, 438);
    assert!(c.start_allocate(&mut srv, clock.at(601)).is_ok());
    // A credential that expires while its allocation is open is refused at refresh.
    let mut short = Client::new(ClientTransport::Udp, 5007, "dan", START_UNIX + 30, SECRET);
    short.allocate(&mut srv, relay_addr(4), clock.at(0));
    let (_, code, _) = short.ask(&mut srv, stun::REFRESH, |b| b, clock.at(31));
    assert_eq!(code, 401);
}

#[test]
fn a_user_holds_at_most_the_quota_and_gets_it_back_when_one_ends() {
    let clock = Clock::new();
    let mut srv = server();
    let mut a = Client::valid(6000, "quota");
    let mut b = Client::valid(6001, "quota");
    let mut c = Client::valid(6002, "quota");
    a.allocate(&mut srv, relay_addr(10), clock.at(0));
    b.allocate(&mut srv, relay_addr(11), clock.at(0));
    assert_eq!(c.start_allocate(&mut srv, clock.at(0)).unwrap_err(), 486);
    assert_eq!(srv.stats().over_quota, 1);
    // Another user is not affected.
    Client::valid(6003, "someone else").allocate(&mut srv, relay_addr(12), clock.at(0));
    // Refresh with lifetime 0 ends an allocation.
    let zero = |b: Builder| b.u32_attr(stun::LIFETIME, 0);
    let (class, _, reply) = a.ask(&mut srv, stun::REFRESH, zero, clock.at(1));
    assert_eq!(class, Class::Success);
    assert_eq!(
        stun::parse(&reply).unwrap().u32_attr(stun::LIFETIME),
        Some(0)
    );
    c.allocate(&mut srv, relay_addr(13), clock.at(1));
}

#[test]
fn allocations_expire_unless_refreshed() {
    let clock = Clock::new();
    let mut srv = server();
    let mut a = Client::valid(7000, "a");
    let mut b = Client::valid(7001, "b");
    let ra = a.allocate(&mut srv, relay_addr(20), clock.at(0));
    let rb = b.allocate(&mut srv, relay_addr(21), clock.at(0));
    assert_eq!(srv.next_expiry(), Some(clock.at(600).instant));
    let keep = |b: Builder| b.u32_attr(stun::LIFETIME, 100_000);
    let (_, _, reply) = b.ask(&mut srv, stun::REFRESH, keep, clock.at(300));
    // Asked for more than the maximum: gets the maximum.
    assert_eq!(
        stun::parse(&reply).unwrap().u32_attr(stun::LIFETIME),
        Some(3600)
    );
    assert_eq!(srv.expire(clock.at(600).instant), vec![(a.ft, ra)]);
    assert_eq!(srv.expire(clock.at(3899).instant), vec![]);
    assert_eq!(srv.expire(clock.at(3900).instant), vec![(b.ft, rb)]);
    // Requests on a gone allocation (with a fresh nonce): 437.
    assert_eq!(a.ask(&mut srv, stun::REFRESH, |b| b, clock.at(3901)).1, 438);
    assert_eq!(a.ask(&mut srv, stun::REFRESH, |b| b, clock.at(3901)).1, 437);
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_others_a_mismatch() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::valid(8000, "r");
    let pending = c.start_allocate(&mut srv, clock.at(0)).unwrap();
    let transport = |b: Builder| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    // Rebuild the same request (same transaction) the client would retransmit.
    c.next -= 1;
    let mut buf = Vec::new();
    let first = srv.allocated(pending, Some(relay_addr(30)), clock.at(0).instant);
    let again = match c.request(&mut srv, stun::ALLOCATE, transport, clock.at(1), &mut buf) {
        FromClient::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    let relayed = |m: &[u8]| {
        stun::parse(m)
            .unwrap()
            .xor_address(stun::XOR_RELAYED_ADDRESS)
    };
    assert_eq!(relayed(&again), relayed(&first));
    assert_eq!(
        c.ask(&mut srv, stun::ALLOCATE, transport, clock.at(2)).1,
        437
    );
    // Another user on the same 5-tuple may not touch it.
    let mut other = Client::valid(8000, "not r");
    assert_eq!(
        other.ask(&mut srv, stun::REFRESH, |b| b, clock.at(2)).1,
        401
    );
    assert_eq!(
        other.ask(&mut srv, stun::REFRESH, |b| b, clock.at(2)).1,
        441
    );
    // TCP relays are not offered.
    let mut tcp = Client::valid(8001, "t");
    assert_eq!(tcp.ask(&mut srv, stun::REFRESH, |b| b, clock.at(2)).1, 401);
    let tcp_transport = |b: Builder| b.attr(stun::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    assert_eq!(
        tcp.ask(&mut srv, stun::ALLOCATE, tcp_transport, clock.at(2))
            .1,
        442
    );
}

#[test]
fn binding_requests_are_answered_without_credentials() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::valid(9000, "stun");
    let (class, code, reply) = c.ask(&mut srv, stun::BINDING, |b| b, clock.at(0));
    assert_eq!((class, code), (Class::Success, 0));
    assert_eq!(
        stun::parse(&reply)
            .unwrap()
            .xor_address(stun::XOR_MAPPED_ADDRESS),
        Some(c.ft.client)
    );
}

#[test]
fn the_stream_deframer_splits_stun_and_channel_data_whatever_the_pieces() {
    let stun_msg = Builder::new(stun::BINDING, Class::Request, [3; 12])
        .attr(stun::SOFTWARE, b"abc")
        .finish();
    let cd = stun::channel_data(0x4000, b"hello", true);
    let mut stream = stun_msg.clone();
    stream.extend_from_slice(&cd);
    let mut d = StreamDeframer::default();
    let mut out = Vec::new();
    for byte in &stream {
        d.push(std::slice::from_ref(byte));
        while let Some(m) = d.next_message().unwrap() {
            out.push(m);
        }
    }
    assert_eq!(out, vec![stun_msg, cd]);
    d.push(&[0xC0, 0, 0, 0]);
    assert!(d.next_message().is_err());
}

/// Random and mutated messages (valid ones with bytes flipped, truncated, lengths
/// changed) never panic the core; a small run here, 100k against the node's ports
/// in the node's tests.
#[test]
fn random_and_mutated_input_never_panics() {
    let clock = Clock::new();
    let mut srv = server();
    let mut c = Client::valid(9100, "fuzz");
    let relay = c.allocate(&mut srv, relay_addr(40), clock.at(0));
    let tid = c.tid();
    let seeds = [
        c.auth
            .sign(
                Builder::new(stun::CHANNEL_BIND, Class::Request, tid)
                    .attr(stun::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
                    .xor_address(stun::XOR_PEER_ADDRESS, node()),
            )
            .fingerprint()
            .finish(),
        stun::channel_data(0x4000, b"payload", false),
        Builder::new(stun::SEND, Class::Indication, tid)
            .xor_address(stun::XOR_PEER_ADDRESS, node())
            .attr(stun::DATA_ATTR, b"x")
            .finish(),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000u64 {
        let mut m = seeds[(rnd() % 3) as usize].clone();
        match i % 4 {
            0 => {
                let n = (rnd() % 64) as usize;
                m = (0..n).map(|_| rnd() as u8).collect();
            }
            1 => {
                for _ in 0..1 + rnd() % 4 {
                    let at = (rnd() as usize) % m.len();
                    m[at] ^= rnd() as u8;
                }
            }
            2 => m.truncate((rnd() as usize) % m.len()),
            _ => {
                let at = 2 + (rnd() as usize) % 2;
                m[at] = rnd() as u8;
            }
        }
        let _ = srv.from_client(c.ft, &m, clock.at(1));
        let _ = srv.from_peer(relay, node(), &m, clock.at(1).instant);
        let mut d = StreamDeframer::default();
        d.push(&m);
        while let Ok(Some(_)) = d.next_message() {}
    }
}

#[test]
fn peer_rules_parse_addresses_ports_and_ranges() {
    let r = PeerRule::parse("10.0.0.7:40000-40007").unwrap();
    assert_eq!(
        (r.ip.to_string(), r.ports),
        ("10.0.0.7".into(), 40000..=40007)
    );
    assert_eq!(PeerRule::parse("10.0.0.7:5").unwrap().ports, 5..=5);
    assert_eq!(PeerRule::parse("10.0.0.7").unwrap().ports, 1..=65535);
    assert_eq!(PeerRule::parse("[::1]:9").unwrap().ip.to_string(), "::1");
    for bad in ["host:1", "10.0.0.7:9-1", "10.0.0.7:0", "10.0.0.7:x"] {
        assert!(PeerRule::parse(bad).is_err(), "{bad}");
    }
}
