//! Settings: defaults → config file → `STREAMCORE_*` environment → command-line flags.
//!
//! Nested keys use `__` in the environment: `STREAMCORE_MEDIA__PORT=40000`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener: WHIP/WHEP, health, metrics.
    pub http: SocketAddr,
    /// Where the node keeps its state (signing key, spool).
    pub data_dir: PathBuf,
    /// A separate listener for `/metrics`; when unset, `/metrics` is on `http`.
    pub metrics: Option<SocketAddr>,
    /// How long SIGTERM waits for sessions to end before closing them.
    pub shutdown_grace_secs: u64,
    /// The control plane's database: `postgres://…`, or a SQLite file. Default: a SQLite
    /// file in `data_dir`.
    pub database_url: Option<String>,
    /// The URL browsers and phones reach this node at (pairing links, reset mails, the
    /// URLs in join tokens). Default: `http(s)://` the listen address, or the first
    /// advertised IP when the node listens on a wildcard address.
    pub public_url: Option<String>,
    /// Origins whose pages may call `/api/v1` (CORS), e.g. `["https://app.example.com"]`.
    /// Empty (the default): only the node's own pages. WHIP/WHEP allow any origin:
    /// the join token is their authority.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Reverse proxies in front of the node (`10.0.0.0/8`, `192.0.2.1`): from them
    /// `Forwarded`/`X-Forwarded-For` name the client for rate limits and logs; from
    /// anyone else those headers are ignored. Empty (the default): no proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// HTTPS on the `http` listener (`[tls]`).
    #[serde(default)]
    pub tls: TlsSettings,
    pub log: LogSettings,
    pub media: MediaSettings,
    /// Delivery of password-reset mail. Unset: mails stay in the outbox, where the operator
    /// reads them (`streamcore admin mail`).
    pub smtp: Option<SmtpSettings>,
    /// Names this node in events, consumer groups and leases. Default: kept in
    /// `data_dir/node-id`, made up on first start.
    pub node_id: Option<String>,
    pub events: EventSettings,
    pub recording: RecordingSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    /// OpenID Connect providers people may sign in with (`[[oidc]]` tables: id,
    /// name, issuer, client_id, client_secret). The redirect URI to register at each
    /// is `<public_url>/auth/oidc/callback`.
    #[serde(default)]
    pub oidc: Vec<control_api::oidc::ProviderConfig>,
    #[serde(default)]
    pub turn: TurnSettings,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
}

/// `[cluster]`: how this node describes itself to the others sharing its database
/// (`streamcore::cluster`). Rooms are placed on the least-loaded node of a token
/// caller's region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// A region label (`eu-west`); join tokens place new rooms on a node of the
    /// caller's region. Empty: no region.
    pub region: String,
    /// A finer label within the region, shown to operators.
    pub zone: String,
    /// Peers this node is sized for; its load is the larger of its busiest worker's CPU
    /// share and its peers over this. 0: `media.max_peers_per_worker` per worker.
    pub capacity: usize,
    /// Origins the pages may connect to besides the nodes the registry lists now, for
    /// nodes that join while a page is open: `["https://*.media.example"]`.
    pub connect_origins: Vec<String>,
    /// Run the relay (`streamcore::relay`): WHEP players on this node of a room that
    /// lives on another are fed over QUIC from that node, instead of redirected there.
    pub relay: bool,
    /// The relay's UDP port on the media bind address (0: any free port; the registry
    /// tells the other nodes which).
    pub relay_port: u16,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            region: String::new(),
            zone: String::new(),
            capacity: 0,
            connect_origins: Vec::new(),
            relay: true,
            relay_port: 0,
        }
    }
}

/// `[limits]`: abuse limits of the control API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sign-ups per client address per minute (429 with `Retry-After` beyond).
    pub register_per_address_per_minute: u32,
    /// Sign-ups per minute in all.
    pub register_per_minute: u32,
    /// Argon2 password hashes and checks at once (19 MiB each); more wait up to
    /// `password_hash_wait_ms`, then get 503 with `Retry-After`. 0: two per core.
    pub concurrent_password_hashes: usize,
    pub password_hash_wait_ms: u64,
    /// An open pairing code is void (the owner starts a new one) once this many
    /// wrong codes were tried anywhere while it was open.
    pub pairing_wrong_guesses_per_code: u32,
    /// HTTP(S) connections the node holds open, in all and per client address (IPv6
    /// per /64; trusted proxies count only in all); more are closed at accept.
    pub http_connections: usize,
    pub http_connections_per_address: usize,
    /// A request's header must arrive whole within this many seconds.
    pub http_header_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds is cut off (408
    /// `body_too_slow`); so is one whose average rate, after that long, is under
    /// `http_min_body_bytes_per_sec` (0: no minimum).
    pub http_body_idle_secs: u64,
    pub http_min_body_bytes_per_sec: u64,
    /// The most a user may hold at once; beyond, 403 `quota_exceeded`.
    pub rooms_per_user: i64,
    pub devices_per_user: i64,
    pub open_pairings_per_user: i64,
    /// Uploads and mixdowns queued or in progress.
    pub jobs_in_flight_per_user: i64,
    /// Browser and device sockets open on one node.
    pub sockets_per_user: usize,
    /// Bytes of uploaded files a user keeps in the store, in MiB.
    pub upload_mib_per_user: u64,
    /// Live WHIP/WHEP sessions one join token may hold (a client that reconnects
    /// while its old session lingers needs more than one).
    pub sessions_per_join_token: usize,
    /// A WebSocket (browser events, `/rtc`) silent this long, not even answering the
    /// node's pings, is closed.
    pub websocket_idle_secs: u64,
    /// The longest a join token from the API may live (clients ask for new ones to
    /// join again; a session already open outlives its token).
    pub join_token_max_ttl_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let api = control_api::ApiConfig::default();
        LimitSettings {
            register_per_address_per_minute: api.register_per_address_per_minute,
            register_per_minute: api.register_per_minute,
            concurrent_password_hashes: 0,
            password_hash_wait_ms: api.password_hash_wait.as_millis() as u64,
            pairing_wrong_guesses_per_code: api.pairing_wrong_guesses_per_code,
            http_connections: 10_000,
            http_connections_per_address: 256,
            http_header_timeout_secs: 15,
            http_body_idle_secs: 30,
            http_min_body_bytes_per_sec: 1024,
            rooms_per_user: api.quotas.rooms,
            devices_per_user: api.quotas.devices,
            open_pairings_per_user: api.quotas.open_pairings,
            jobs_in_flight_per_user: api.quotas.jobs_in_flight,
            sockets_per_user: api.quotas.sockets,
            upload_mib_per_user: api.quotas.upload_bytes / (1024 * 1024),
            sessions_per_join_token: 4,
            websocket_idle_secs: 60,
            join_token_max_ttl_secs: api.max_join_ttl.as_secs(),
        }
    }
}

/// `[turn]`: the STUN and TURN servers handed to clients (join-token responses,
/// `joined`, WHIP/WHEP `Link` headers), and the embedded TURN server. TURN
/// credentials are time-limited REST-style ones made from `shared_secret`, which an
/// external TURN server (e.g. coturn with `use-auth-secret` and `static-auth-secret`)
/// shares; the embedded one makes up a secret when none is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSettings {
    /// e.g. `["stun:stun.example.net:3478"]`.
    pub stun_urls: Vec<String>,
    /// e.g. `["turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:443?transport=tcp"]`.
    pub external_urls: Vec<String>,
    pub shared_secret: Option<String>,
    /// How long a handed-out TURN credential is accepted.
    pub credential_ttl_secs: u64,
    /// Run the embedded TURN server (relays to this node's media ports only).
    pub embedded: bool,
    /// Its listeners on the media bind address: UDP, TCP, and TLS (with the `[tls]`
    /// certificate; 443 is what passes strict firewalls). 0: that listener is off.
    pub udp_port: u16,
    pub tcp_port: u16,
    pub tls_port: u16,
    /// Relay ports, `low-high`.
    pub relay_ports: String,
    /// The IP relay sockets bind. Default: the media bind IP; with a wildcard bind,
    /// the local address that routes to the advertised one (the private interface
    /// behind 1:1 NAT).
    pub relay_ip: Option<IpAddr>,
    /// The name clients use for `turns:` URLs (must match the certificate). Default:
    /// the public URL's host.
    pub tls_host: Option<String>,
    /// A PEM certificate chain and key for the TLS listener alone (TURN often has a
    /// name of its own); default: the `[tls]` certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub realm: String,
    /// Allocations one identity may hold at once.
    pub max_allocations_per_user: usize,
    /// Peers a relay may reach besides this node's media ports (`ip`, `ip:port`,
    /// `ip:low-high`): e.g. other nodes of a cluster.
    pub allowed_peers: Vec<String>,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            stun_urls: Vec::new(),
            external_urls: Vec::new(),
            shared_secret: None,
            // A day: a listening session outlasts an hour, and a credential is
            // needed again at every allocation refresh and ICE restart.
            credential_ttl_secs: 24 * 3600,
            embedded: false,
            udp_port: 3478,
            tcp_port: 3478,
            tls_port: 0,
            relay_ports: "49152-65535".into(),
            relay_ip: None,
            tls_host: None,
            tls_cert: None,
            tls_key: None,
            realm: "streamcore".into(),
            // A browser allocates per local interface and per URL, for each of its
            // connections; 20 covers a room page with a screen share.
            max_allocations_per_user: 20,
            allowed_peers: Vec::new(),
        }
    }
}

impl TurnSettings {
    /// The ICE servers for clients; `embedded_urls` are the embedded server's, and
    /// `secret` the one it checks (the configured one, or one made up at start).
    pub fn ice_servers_with(
        &self,
        embedded_urls: &[String],
        secret: Option<&str>,
    ) -> signaling::IceServerConfig {
        let mut turn_urls = self.external_urls.clone();
        turn_urls.extend_from_slice(embedded_urls);
        signaling::IceServerConfig {
            stun_urls: self.stun_urls.clone(),
            turn_urls,
            shared_secret: secret
                .map(str::to_owned)
                .or_else(|| self.shared_secret.clone()),
            credential_ttl: Duration::from_secs(self.credential_ttl_secs),
        }
    }

    pub fn ice_servers(&self) -> signaling::IceServerConfig {
        self.ice_servers_with(&[], None)
    }

    /// The relay port range.
    pub fn relay_port_range(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let bad = || {
            format!(
                "turn.relay_ports: '{}' is not low-high (e.g. 49152-65535)",
                self.relay_ports
            )
        };
        let (lo, hi) = self.relay_ports.split_once('-').ok_or_else(bad)?;
        let (lo, hi): (u16, u16) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(lo..=hi)
    }

    fn validate_embedded(&self, tls: bool) -> Result<(), String> {
        if !self.embedded {
            return Ok(());
        }
        self.relay_port_range()?;
        for p in &self.allowed_peers {
            media_core::turn::PeerRule::parse(p).map_err(|e| format!("turn.allowed_peers: {e}"))?;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("turn.tls_cert and turn.tls_key go together".into());
        }
        if self.tls_port != 0 && !tls && self.tls_cert.is_none() {
            return Err(
                "turn.tls_port needs a certificate: configure [tls], or turn.tls_cert and turn.tls_key"
                    .into(),
            );
        }
        if self.udp_port == 0 && self.tcp_port == 0 && self.tls_port == 0 {
            return Err("turn.embedded needs at least one of udp_port, tcp_port, tls_port".into());
        }
        if self.max_allocations_per_user == 0 {
            return Err("turn.max_allocations_per_user must be at least 1".into());
        }
        if self.realm.is_empty() {
            return Err("turn.realm must not be empty".into());
        }
        Ok(())
    }
}

/// `[tls]`: serve HTTPS instead of HTTP. Browsers give a page the camera and the
/// microphone only on a secure origin, and a phone on the LAN reaches the node by an
/// IP, not `localhost`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// A PEM certificate chain (leaf first) …
    pub cert: Option<PathBuf>,
    /// … and its PEM private key.
    pub key: Option<PathBuf>,
    /// Make (once) and keep a local CA and a certificate for the advertised addresses in
    /// `data_dir/tls`; the start-up log prints their SHA-256 fingerprints.
    pub self_signed: bool,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some()
    }
}

/// `[worker]`: the transcode worker (`streamcore worker`, and in-process in `serve`)
/// and uploads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Run a worker inside `serve`.
    pub in_process: bool,
    /// Attempts before a job goes to `transcode.dead_letter`.
    pub max_attempts: u32,
    /// First retry delay; each later one doubles, up to `backoff_max_secs`.
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// A running job's claim; renewed while it runs, so a dead worker's job is taken
    /// up again this long after it stopped renewing.
    pub lease_secs: u64,
    /// Scratch files of running jobs. Default: `data_dir/worker`.
    pub scratch_dir: Option<PathBuf>,
    /// Largest upload `POST /api/v1/uploads` takes, in MiB.
    pub max_upload_mib: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            in_process: true,
            // 2 s … 256 s apart: about eight and a half minutes of an object store or
            // database away before a job is dead-lettered.
            max_attempts: 8,
            backoff_base_ms: 2_000,
            backoff_max_secs: 300,
            lease_secs: 120,
            scratch_dir: None,
            max_upload_mib: 512,
        }
    }
}

/// `[recording]`: where recordings are spooled and stored.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Where tracks are written before upload. Default: `data_dir/spool`.
    pub spool_dir: Option<PathBuf>,
    /// The local-directory store, used when no S3 bucket is set. Default:
    /// `data_dir/recordings`.
    pub local_dir: Option<PathBuf>,
    /// S3 (or S3-compatible) bucket; set to store recordings there.
    pub s3_bucket: Option<String>,
    /// The S3 endpoint (`http://127.0.0.1:9000` for a local one); unset for AWS.
    pub s3_endpoint: Option<String>,
    /// Where podcast apps and browsers reach the same S3 service, when it is not
    /// `s3_endpoint` (a compose network's `http://minio:9000`): presigned URLs are
    /// made for it.
    #[serde(default)]
    pub s3_public_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    /// Secret: `config print` shows `***`.
    pub s3_secret_access_key: Option<String>,
    /// Items (packets) queued between the SFU and one recording before it refuses more.
    pub queue: usize,
    /// `spool_dir` is storage every node of the cluster mounts: each node spools in
    /// its own directory under it (named by its node id), and takes over the
    /// recordings of a node silent for 15 s (finished as `interrupted`, uploaded).
    #[serde(default)]
    pub shared_spool: bool,
    /// How often a node looks for raw tracks past their room's retention (one node
    /// at a time does it, under a lease).
    #[serde(default = "default_retention_sweep_secs")]
    pub retention_sweep_secs: u64,
}

fn default_retention_sweep_secs() -> u64 {
    600
}

impl std::fmt::Debug for RecordingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSettings")
            .field("spool_dir", &self.spool_dir)
            .field("local_dir", &self.local_dir)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_public_endpoint", &self.s3_public_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &self.s3_secret_access_key.as_ref().map(|_| "***"),
            )
            .field("queue", &self.queue)
            .field("shared_spool", &self.shared_spool)
            .field("retention_sweep_secs", &self.retention_sweep_secs)
            .finish()
    }
}

/// `[recording]` keys whose environment values are taken as text, never parsed.
const RECORDING_TEXT_KEYS: [&str; 5] = [
    "s3_bucket",
    "s3_public_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
];

/// `[events]`: where events go (`docs/events.md`).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Kafka bootstrap servers (`host:port,…`). Unset: the in-process bus.
    pub kafka_brokers: Option<String>,
    /// Partitions of each topic the node creates.
    pub kafka_partitions: i32,
    /// Replication factor of each topic the node creates.
    pub kafka_replication: i32,
    /// How long a publish waits for the broker before the relay retries the batch.
    pub kafka_message_timeout_secs: u64,
    /// Longest a consumer fetch waits at the broker (bounds remote-control latency on
    /// brokers that hold fetches for the whole wait).
    pub kafka_fetch_wait_ms: u64,
    /// TLS to the brokers (their certificates verified, names included).
    #[serde(default)]
    pub kafka_tls: bool,
    /// PEM CA certificates the brokers' certificates must chain to (with `kafka_tls`);
    /// unset: the system's CA bundle.
    #[serde(default)]
    pub kafka_ca_file: Option<PathBuf>,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`: log in to the brokers with SASL/SCRAM as
    /// `kafka_sasl_username`. Unset: no login.
    #[serde(default)]
    pub kafka_sasl_mechanism: Option<String>,
    #[serde(default)]
    pub kafka_sasl_username: Option<String>,
    /// Secret: `config print` shows `***`.
    #[serde(default)]
    pub kafka_sasl_password: Option<String>,
    /// A device is online while its heartbeats are newer than this.
    pub online_window_secs: u64,
    /// The listening history's consumer group on the bus. Every node of a cluster
    /// uses the same; a new name reads `now.playing` again from the start of what the
    /// broker keeps, which counts no play twice (to rebuild the history).
    #[serde(default = "default_history_group")]
    pub history_group: String,
}

fn default_history_group() -> String {
    "streamcore-history".into()
}

impl std::fmt::Debug for EventSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSettings")
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_partitions", &self.kafka_partitions)
            .field("kafka_replication", &self.kafka_replication)
            .field(
                "kafka_message_timeout_secs",
                &self.kafka_message_timeout_secs,
            )
            .field("kafka_fetch_wait_ms", &self.kafka_fetch_wait_ms)
            .field("kafka_tls", &self.kafka_tls)
            .field("kafka_ca_file", &self.kafka_ca_file)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("kafka_sasl_username", &self.kafka_sasl_username)
            .field(
                "kafka_sasl_password",
                &self.kafka_sasl_password.as_ref().map(|_| "***"),
            )
            .field("online_window_secs", &self.online_window_secs)
            .field("history_group", &self.history_group)
            .finish()
    }
}

/// `[events]` keys whose environment values are taken as text, never parsed.
const EVENTS_TEXT_KEYS: [&str; 6] = [
    "kafka_brokers",
    "history_group",
    "kafka_ca_file",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
];

impl EventSettings {
    /// How the node's Kafka clients connect (checked by `Settings::validate`).
    pub fn kafka_security(&self) -> anyhow::Result<events::KafkaSecurity> {
        let scram = match (
            &self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (None, None, None) => None,
            (Some(m), Some(user), Some(password)) => {
                let mechanism = events::ScramMechanism::parse(m).with_context(|| {
                    format!("events.kafka_sasl_mechanism {m:?}: use SCRAM-SHA-256 or SCRAM-SHA-512")
                })?;
                if user.is_empty() || password.is_empty() {
                    bail!("events.kafka_sasl_username and kafka_sasl_password must not be empty");
                }
                Some(events::ScramLogin {
                    mechanism,
                    username: user.clone(),
                    password: password.clone(),
                })
            }
            _ => bail!(
                "events.kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password go together: set all three for a SCRAM login, or none"
            ),
        };
        if let Some(ca) = &self.kafka_ca_file {
            if !self.kafka_tls {
                bail!("events.kafka_ca_file is set but kafka_tls is not: set kafka_tls = true");
            }
            std::fs::metadata(ca)
                .with_context(|| format!("events.kafka_ca_file {}", ca.display()))?;
        }
        Ok(events::KafkaSecurity {
            tls: self.kafka_tls,
            ca_file: self.kafka_ca_file.clone(),
            scram,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// A tracing filter, e.g. `info` or `streamcore=debug,str0m=info`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// IP the UDP media sockets bind; defaults to the IP of `http`.
    pub bind: Option<IpAddr>,
    /// First UDP port; worker `i` uses `port + i`. 0 picks free ports (tests).
    pub port: u16,
    /// Media workers (threads), one UDP port each. 0 = one per CPU core.
    pub workers: usize,
    /// ICE-TCP: each worker also listens on TCP, on the same port number as its UDP
    /// socket, for clients whose network drops UDP (RFC 6544, passive candidates).
    pub ice_tcp: bool,
    /// Addresses clients reach the media ports at (the public IP behind NAT). Defaults
    /// to the bind IP, which must then not be a wildcard.
    pub advertise: Vec<IpAddr>,
    /// Peers per worker at most.
    pub max_peers_per_worker: usize,
    /// Minimum spacing of keyframe requests to one publisher track.
    pub keyframe_interval_ms: u64,
    /// Peers that do not connect within this time are removed.
    pub connect_timeout_secs: u64,
    /// Peers that lose connectivity are removed after this grace period; room
    /// participants whose socket went away may resume within it.
    pub disconnect_grace_secs: u64,
    /// A room whose last participant left ends this much later unless someone comes
    /// back (its recording goes on through the gap); 0 ends it at once.
    pub empty_room_grace_secs: u64,
    /// Where a subscriber's bandwidth estimate starts (kb/s); 0 turns estimation off,
    /// and layers then follow subscribers' preferences alone.
    #[serde(default = "default_bwe_initial_kbps")]
    pub bwe_initial_kbps: u64,
    /// Video packets kept per subscriber for retransmission (NACK); bounds the RTT
    /// over which a loss is still repaired, and most of a video subscriber's memory.
    #[serde(default = "default_video_send_buffer_packets")]
    pub video_send_buffer_packets: usize,
    /// Bytes each video m-line of a subscriber may have waiting in the pacer (with the
    /// estimator on): half of it steps the layer down, and a queue at the bound is
    /// shed and restarts on a keyframe.
    #[serde(default = "default_video_queue_limit_bytes")]
    pub video_queue_limit_bytes: usize,
    /// Admission control: a worker busy more than this share of its core (over the
    /// last second) takes no new peers; they get 503 `node_full` with `Retry-After`.
    /// 100 never refuses.
    #[serde(default = "default_max_worker_load_percent")]
    pub max_worker_load_percent: u8,
    /// Each media socket's receive buffer holds this many milliseconds of its
    /// incoming traffic (re-measured every second; 256 KiB to 8 MiB): a worker that
    /// falls behind drops what it cannot read in that time instead of queueing it.
    #[serde(default = "default_recv_buffer_ms")]
    pub recv_buffer_ms: u32,
    /// A room's WHEP players on its own worker at most; more are served by another
    /// worker, fed one copy of each track from the room's worker (as a node imports a
    /// room over the relay). 0: no count; a room spreads only when its worker is at
    /// `max_worker_load_percent`.
    #[serde(default)]
    pub room_players_per_worker: usize,
}

fn default_recv_buffer_ms() -> u32 {
    100
}

fn default_max_worker_load_percent() -> u8 {
    90
}

fn default_video_send_buffer_packets() -> usize {
    media_core::DEFAULT_SEND_BUFFER_VIDEO
}

fn default_video_queue_limit_bytes() -> usize {
    media_core::DEFAULT_VIDEO_QUEUE_LIMIT
}

fn default_bwe_initial_kbps() -> u64 {
    1_000
}

/// An SMTP server for outgoing mail (`[smtp]`, `STREAMCORE_SMTP__HOST`, …).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// The server's name; with TLS also the name its certificate must carry.
    pub host: String,
    /// 587 by default (submission with STARTTLS); 465 is usual for `tls = "tls"`.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender: `noreply@example.com` or `StreamCore <noreply@example.com>`.
    pub from: String,
    /// Login, when the server wants one (set both or neither).
    pub username: Option<String>,
    /// Secret: `config print` shows `***`.
    pub password: Option<String>,
    /// `starttls` (default; required, never a silent fallback), `tls` (implicit TLS) or
    /// `none` (plain text, for a relay on the same host).
    #[serde(default)]
    pub tls: SmtpTlsMode,
    /// PEM file of extra CA certificates to trust (a private CA), besides the built-in
    /// Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    None,
    #[default]
    Starttls,
    Tls,
}

/// `[smtp]` keys whose environment values are taken as text, never parsed.
const SMTP_TEXT_KEYS: [&str; 5] = ["host", "from", "username", "password", "ca_file"];

fn default_smtp_port() -> u16 {
    587
}

impl SmtpSettings {
    /// The control API's view of these settings.
    pub fn to_smtp_config(&self) -> control_api::mail::SmtpConfig {
        use control_api::mail::{SmtpConfig, SmtpTls};
        let mut c = SmtpConfig::new(self.host.clone(), self.port, self.from.clone());
        c.username = self.username.clone();
        c.password = self.password.clone();
        c.tls = match self.tls {
            SmtpTlsMode::None => SmtpTls::None,
            SmtpTlsMode::Starttls => SmtpTls::Starttls,
            SmtpTlsMode::Tls => SmtpTls::Tls,
        };
        c.ca_file = self.ca_file.clone();
        c
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: "127.0.0.1:8080".parse().expect("literal address"), // constant
            data_dir: PathBuf::from("data"),
            metrics: None,
            shutdown_grace_secs: 30,
            database_url: None,
            public_url: None,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: TlsSettings::default(),
            log: LogSettings {
                json: false,
                level: "info".into(),
            },
            media: MediaSettings {
                bind: None,
                port: 40_000,
                workers: 0,
                advertise: Vec::new(),
                max_peers_per_worker: 10_000,
                keyframe_interval_ms: 350,
                connect_timeout_secs: 30,
                disconnect_grace_secs: 20,
                empty_room_grace_secs: 30,
                ice_tcp: true,
                bwe_initial_kbps: default_bwe_initial_kbps(),
                video_send_buffer_packets: default_video_send_buffer_packets(),
                video_queue_limit_bytes: default_video_queue_limit_bytes(),
                max_worker_load_percent: default_max_worker_load_percent(),
                room_players_per_worker: 0,
                recv_buffer_ms: default_recv_buffer_ms(),
            },
            smtp: None,
            node_id: None,
            events: EventSettings {
                kafka_brokers: None,
                kafka_partitions: 3,
                kafka_replication: 1,
                kafka_message_timeout_secs: 30,
                kafka_fetch_wait_ms: 100,
                kafka_tls: false,
                kafka_ca_file: None,
                kafka_sasl_mechanism: None,
                kafka_sasl_username: None,
                kafka_sasl_password: None,
                online_window_secs: 60,
                history_group: default_history_group(),
            },
            recording: RecordingSettings {
                spool_dir: None,
                local_dir: None,
                s3_bucket: None,
                s3_endpoint: None,
                s3_public_endpoint: None,
                s3_region: "us-east-1".into(),
                s3_access_key_id: None,
                s3_secret_access_key: None,
                queue: 8192,
                shared_spool: false,
                retention_sweep_secs: default_retention_sweep_secs(),
            },
            worker: WorkerSettings::default(),
            oidc: Vec::new(),
            turn: TurnSettings::default(),
            limits: LimitSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the layered value alone.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "MediaOverrides::is_empty")]
    pub media: MediaOverrides,
    #[serde(skip_serializing_if = "LogOverrides::is_empty")]
    pub log: LogOverrides,
    #[serde(skip_serializing_if = "EventOverrides::is_empty")]
    pub events: EventOverrides,
    #[serde(skip_serializing_if = "TlsOverrides::is_empty")]
    pub tls: TlsOverrides,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TlsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<bool>,
}

impl TlsOverrides {
    fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.self_signed.is_none()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct EventOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
}

impl EventOverrides {
    fn is_empty(&self) -> bool {
        self.kafka_brokers.is_none()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MediaOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<Vec<IpAddr>>,
}

impl MediaOverrides {
    fn is_empty(&self) -> bool {
        self.bind.is_none()
            && self.port.is_none()
            && self.workers.is_none()
            && self.advertise.is_none()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
}

impl LogOverrides {
    fn is_empty(&self) -> bool {
        self.json.is_none()
    }
}

/// `STREAMCORE_*` variables that are not settings.
const NOT_SETTINGS: [&str; 7] = [
    "admin_password",
    "config",
    "test_pg_url",
    "cache",
    "tansu",
    "chromium",
    // The test command's OpenID Connect provider (`scripts/ensure-oidc-provider.sh`).
    "oidc_provider",
];

impl Settings {
    /// Layers the sources. `file` is read when given (it must exist), else
    /// `streamcore.toml` in the working directory when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(f) => {
                if !f.exists() {
                    bail!("config file {} does not exist", f.display());
                }
                fig = fig.merge(Toml::file(f));
            }
            None => fig = fig.merge(Toml::file("streamcore.toml")),
        }
        // Variables with the prefix that are not settings (the CLI's own inputs and the
        // test scripts') are left out.
        fig = fig.merge(
            Env::prefixed("STREAMCORE_")
                .filter(|k| !NOT_SETTINGS.iter().any(|n| k == *n))
                .split("__"),
        );
        // The environment provider reads values as TOML scalars (`123456` is a number,
        // `true` a bool); these settings are text whatever they look like, so a numeric
        // password keeps its exact characters.
        for (key, value) in Env::prefixed("STREAMCORE_SMTP__").iter() {
            if SMTP_TEXT_KEYS.contains(&key.as_str()) {
                fig = fig.merge(Serialized::default(&format!("smtp.{key}"), value));
            }
        }
        for (key, value) in Env::prefixed("STREAMCORE_RECORDING__").iter() {
            if RECORDING_TEXT_KEYS.contains(&key.as_str()) {
                fig = fig.merge(Serialized::default(&format!("recording.{key}"), value));
            }
        }
        for (key, value) in Env::prefixed("STREAMCORE_EVENTS__").iter() {
            if EVENTS_TEXT_KEYS.contains(&key.as_str()) {
                fig = fig.merge(Serialized::default(&format!("events.{key}"), value));
            }
        }
        fig = fig.merge(Serialized::defaults(overrides));
        let s: Settings = fig.extract().context("invalid settings")?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.turn
            .ice_servers()
            .validate()
            .map_err(anyhow::Error::msg)?;
        self.turn
            .validate_embedded(self.tls.enabled())
            .map_err(anyhow::Error::msg)?;
        if self.limits.register_per_address_per_minute == 0 || self.limits.register_per_minute == 0
        {
            bail!(
                "limits.register_per_address_per_minute and limits.register_per_minute must be at least 1"
            );
        }
        if self.limits.http_connections == 0
            || self.limits.http_connections_per_address == 0
            || self.limits.http_header_timeout_secs == 0
            || self.limits.http_body_idle_secs == 0
        {
            bail!(
                "limits.http_connections, limits.http_connections_per_address, limits.http_header_timeout_secs and limits.http_body_idle_secs must be at least 1"
            );
        }
        let l = &self.limits;
        if l.rooms_per_user < 1
            || l.devices_per_user < 1
            || l.open_pairings_per_user < 1
            || l.jobs_in_flight_per_user < 1
            || l.sockets_per_user < 1
            || l.upload_mib_per_user < 1
            || l.sessions_per_join_token < 1
            || l.websocket_idle_secs < 3
            || l.join_token_max_ttl_secs < 1
        {
            bail!(
                "the per-user quotas in [limits] must be at least 1 (limits.websocket_idle_secs at least 3)"
            );
        }
        if self.limits.pairing_wrong_guesses_per_code == 0 {
            bail!("limits.pairing_wrong_guesses_per_code must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            bail!("worker.max_attempts must be at least 1");
        }
        for (i, p) in self.oidc.iter().enumerate() {
            if p.id.is_empty()
                || p.id.len() > 40
                || !p
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bail!("oidc[{i}].id must be 1–40 of a-z, 0-9 and -");
            }
            if self.oidc[..i].iter().any(|o| o.id == p.id) {
                bail!("oidc[{i}].id {} is given twice", p.id);
            }
            if p.name.trim().is_empty() || p.client_id.is_empty() || p.client_secret.is_empty() {
                bail!(
                    "oidc[{i}] ({}) needs a name, a client_id and a client_secret",
                    p.id
                );
            }
            // The client secret goes to its token endpoint: never in the clear off this host.
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|h| {
                    p.issuer
                        .strip_prefix(h)
                        .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
                });
            if !(p.issuer.starts_with("https://") || loopback) {
                bail!(
                    "oidc[{i}].issuer must be an https:// URL (http only on this machine's loopback)"
                );
            }
        }
        if !(16..=4096).contains(&self.media.video_send_buffer_packets) {
            bail!("media.video_send_buffer_packets must be 16–4096");
        }
        if !(32_000..=8_000_000).contains(&self.media.video_queue_limit_bytes) {
            bail!("media.video_queue_limit_bytes must be 32000–8000000");
        }
        if !(1..=100).contains(&self.media.max_worker_load_percent) {
            bail!("media.max_worker_load_percent must be 1–100");
        }
        if !(10..=2000).contains(&self.media.recv_buffer_ms) {
            bail!("media.recv_buffer_ms must be 10–2000");
        }
        if self.worker.lease_secs < 5 {
            bail!("worker.lease_secs must be at least 5");
        }
        if self.worker.max_upload_mib == 0 {
            bail!("worker.max_upload_mib must be at least 1");
        }
        if self.recording.queue < 16 {
            bail!("recording.queue must be at least 16");
        }
        if self
            .recording
            .s3_bucket
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            bail!(
                "recording.s3_bucket is empty; unset it to store recordings in a local directory"
            );
        }
        if self
            .events
            .kafka_brokers
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            bail!("events.kafka_brokers is empty; unset it for the in-process bus");
        }
        let security = self.events.kafka_security()?;
        if self.events.kafka_brokers.is_none() && (security.tls || security.scram.is_some()) {
            bail!(
                "events.kafka_tls or events.kafka_sasl_* are set but events.kafka_brokers is not: set the brokers, or unset these for the in-process bus"
            );
        }
        if self.events.kafka_partitions < 1 || self.events.kafka_replication < 1 {
            bail!("events.kafka_partitions and events.kafka_replication must be at least 1");
        }
        if self.events.online_window_secs == 0 {
            bail!("events.online_window_secs must be at least 1");
        }
        let g = &self.events.history_group;
        if g.is_empty() || g.len() > 200 || g.chars().any(char::is_control) {
            bail!("events.history_group must be 1–200 characters, none of them control characters");
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            bail!("node_id must be 1–64 letters, digits, '-' or '_'");
        }
        for (key, label) in [
            ("cluster.region", &self.cluster.region),
            ("cluster.zone", &self.cluster.zone),
        ] {
            if label.len() > 64
                || !label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("{key} must be at most 64 letters, digits, '-' or '_'");
            }
        }
        for o in &self.cluster.connect_origins {
            if web::connect_sources(o).is_none() {
                bail!(
                    "cluster.connect_origins: '{o}' is not an origin like https://media.example:8443 or https://*.media.example"
                );
            }
        }
        if self.media.workers > 256 {
            bail!("media.workers = {} is more than 256", self.media.workers);
        }
        if self.media.port != 0
            && (self.media.port as usize + self.worker_count()) > u16::MAX as usize + 1
        {
            bail!("media.port + workers exceeds 65535");
        }
        if self.media_bind_ip().is_unspecified() && self.media.advertise.is_empty() {
            bail!(
                "media binds the wildcard address {}; set media.advertise (STREAMCORE_MEDIA__ADVERTISE \
                 or --advertise) to the IP clients reach this node at",
                self.media_bind_ip()
            );
        }
        if self.media.advertise.iter().any(|ip| ip.is_unspecified()) {
            bail!("media.advertise cannot contain a wildcard address");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls.cert and tls.key must be set together (--tls-cert and --tls-key)");
        }
        if self.tls.self_signed && self.tls.cert.is_some() {
            bail!("tls.self_signed and tls.cert exclude each other: pick one");
        }
        control_api::client_addr::parse_proxies(&self.trusted_proxies)
            .map_err(anyhow::Error::msg)?;
        for origin in &self.cors_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|h| !h.contains('/') && !h.is_empty());
            if !ok {
                bail!("cors_origins: '{origin}' is not an origin (scheme://host[:port], no path)");
            }
        }
        if let Some(smtp) = &self.smtp {
            if smtp.host.trim().is_empty() {
                bail!("smtp.host is empty");
            }
            if smtp.port == 0 {
                bail!("smtp.port cannot be 0");
            }
            if smtp.from.trim().is_empty() {
                bail!("smtp.from is empty; set the sender address of reset mails");
            }
            if smtp.username.is_some() != smtp.password.is_some() {
                bail!("smtp.username and smtp.password must be set together");
            }
        }
        Ok(())
    }

    pub fn worker_count(&self) -> usize {
        match self.media.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn media_bind_ip(&self) -> IpAddr {
        self.media.bind.unwrap_or(self.http.ip())
    }

    /// The IPs offered as host candidates.
    pub fn advertised_ips(&self) -> Vec<IpAddr> {
        if self.media.advertise.is_empty() {
            vec![self.media_bind_ip()]
        } else {
            self.media.advertise.clone()
        }
    }

    /// The key every node of a cluster shares to prove itself on relay links.
    pub fn cluster_key_path(&self) -> PathBuf {
        self.keys_dir().join("cluster-relay.key")
    }

    pub fn token_key_path(&self) -> PathBuf {
        self.keys_dir().join("join-token-ed25519.pem")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    /// The database to use: the configured URL, else `streamcore.db` in `data_dir`.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.data_dir.join("streamcore.db").display())
        })
    }

    /// The public URL for a node whose HTTP listener is bound to `bound` (the port may
    /// have been chosen by the OS).
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        let ip = if bound.ip().is_unspecified() {
            self.media.advertise.first().copied().unwrap_or(bound.ip())
        } else {
            bound.ip()
        };
        format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
    }

    pub fn public_url(&self) -> String {
        self.public_url_for(self.http)
    }

    /// The recorder's settings: spool and object store.
    pub fn recorder_config(&self) -> (recorder::RecorderConfig, recorder::StoreConfig) {
        let r = &self.recording;
        let spool = r
            .spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"));
        let store = match &r.s3_bucket {
            Some(bucket) => recorder::StoreConfig::S3 {
                bucket: bucket.clone(),
                endpoint: r.s3_endpoint.clone().unwrap_or_default(),
                region: r.s3_region.clone(),
                access_key_id: r.s3_access_key_id.clone().unwrap_or_default(),
                secret_access_key: r.s3_secret_access_key.clone().unwrap_or_default(),
            },
            None => recorder::StoreConfig::Local {
                dir: r
                    .local_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("recordings")),
            },
        };
        (
            recorder::RecorderConfig {
                spool,
                queue: r.queue,
                session: recorder::SessionConfig::default(),
                backoff: recorder::Backoff::default(),
            },
            store,
        )
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.worker
            .scratch_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("worker"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The effective settings as TOML, for `streamcore config print`. Secrets are
    /// hidden: the database URL's password and `smtp.password` show as `***`; the signing
    /// key is a path, never its content.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact_url);
        if let Some(smtp) = &mut shown.smtp
            && smtp.password.is_some()
        {
            smtp.password = Some("***".into());
        }
        if shown.events.kafka_sasl_password.is_some() {
            shown.events.kafka_sasl_password = Some("***".into());
        }
        if shown.recording.s3_secret_access_key.is_some() {
            shown.recording.s3_secret_access_key = Some("***".into());
        }
        if shown.turn.shared_secret.is_some() {
            shown.turn.shared_secret = Some("***".into());
        }
        for p in &mut shown.oidc {
            p.client_secret = "***".into();
        }
        Ok(toml::to_string_pretty(&shown)?)
    }
}

/// Hides the password of a URL (`postgres://user:secret@host/db` → `postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Parses durations like `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit '{unit}' in '{s}'; use s, m, h or d")),
    };
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn layers_in_order() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:9000\"\n[media]\nport = 41000\nworkers = 2\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.http.port(), 9000);
        assert_eq!(s.media.port, 41000);
        assert_eq!(s.worker_count(), 2);
        let o = Overrides {
            media: MediaOverrides {
                port: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Settings::load(Some(&file), &o).unwrap();
        assert_eq!(s.media.port, 0);
        assert_eq!(s.media.workers, 2, "file value survives a partial override");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wildcard_bind_needs_an_advertised_address() {
        let mut s = Settings {
            http: "0.0.0.0:8080".parse().unwrap(),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        s.media.advertise = vec!["192.0.2.10".parse().unwrap()];
        assert!(s.validate().is_ok());
        assert_eq!(
            s.advertised_ips(),
            vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "htp = \"x\"\n").unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn media_limits_are_checked() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        assert_eq!(Settings::default().media.video_send_buffer_packets, 256);
        std::fs::write(&file, "[media]\nvideo_send_buffer_packets = 8\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(
            format!("{e:#}").contains("video_send_buffer_packets"),
            "{e:#}"
        );
        std::fs::write(&file, "[media]\nvideo_send_buffer_packets = 600\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.media.video_send_buffer_packets, 600);
        // The admission limit is a share of one core.
        assert_eq!(s.media.max_worker_load_percent, 90);
        assert_eq!(s.media.recv_buffer_ms, 100);
        std::fs::write(&file, "[media]\nrecv_buffer_ms = 5\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(format!("{e:#}").contains("recv_buffer_ms"), "{e:#}");
        assert_eq!(s.media.video_queue_limit_bytes, 160_000);
        std::fs::write(&file, "[media]\nvideo_queue_limit_bytes = 1000\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(
            format!("{e:#}").contains("video_queue_limit_bytes"),
            "{e:#}"
        );
        std::fs::write(&file, "[media]\nmax_worker_load_percent = 0\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(
            format!("{e:#}").contains("max_worker_load_percent"),
            "{e:#}"
        );
        for (bad, key) in [
            ("region = \"eu west\"", "cluster.region"),
            (
                "connect_origins = [\"ftp://x.example\"]",
                "cluster.connect_origins",
            ),
        ] {
            std::fs::write(&file, format!("[cluster]\n{bad}\n")).unwrap();
            let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{e:#}");
        }
        std::fs::write(
            &file,
            "[cluster]\nregion = \"eu-west\"\nconnect_origins = [\"https://*.media.example\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.cluster.connect_origins, ["https://*.media.example"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn turn_table_checks_and_redaction() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[turn]\nexternal_urls = [\"turn:t.example:3478?transport=udp\"]\nshared_secret = \"n0rth-w1nd\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.turn.credential_ttl_secs, 86400, "default lifetime");
        let printed = s.to_toml().unwrap();
        assert!(!printed.contains("n0rth"), "{printed}");
        assert!(printed.contains("shared_secret = \"***\""), "{printed}");
        // TURN URLs without the secret the TURN server checks are refused at load.
        std::fs::write(&file, "[turn]\nexternal_urls = [\"turn:t.example:3478\"]\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(format!("{e:#}").contains("shared_secret"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn embedded_turn_settings_are_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[turn]\nembedded = true\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(
            (s.turn.udp_port, s.turn.tcp_port, s.turn.tls_port),
            (3478, 3478, 0)
        );
        assert_eq!(s.turn.relay_port_range().unwrap(), 49152..=65535);
        for (toml, says) in [
            ("embedded = true\ntls_port = 443\n", "[tls]"),
            (
                "embedded = true\nrelay_ports = \"60000-50000\"\n",
                "relay_ports",
            ),
            (
                "embedded = true\nallowed_peers = [\"not-an-ip:1\"]\n",
                "allowed_peers",
            ),
            (
                "embedded = true\nudp_port = 0\ntcp_port = 0\n",
                "at least one",
            ),
            (
                "embedded = true\nmax_allocations_per_user = 0\n",
                "max_allocations_per_user",
            ),
        ] {
            std::fs::write(&file, format!("[turn]\n{toml}")).unwrap();
            let e = Settings::load(Some(&file), &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{toml}: {e:#}");
        }
        // With a certificate, TURN over TLS is fine.
        std::fs::write(
            &file,
            "[tls]\nself_signed = true\n[turn]\nembedded = true\ntls_port = 443\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kafka_security_settings_checks_and_redaction() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not read here").unwrap();
        let load = |events: &str| {
            std::fs::write(
                &file,
                format!("[events]\nkafka_brokers = \"k:9093\"\n{events}"),
            )
            .unwrap();
            Settings::load(Some(&file), &Overrides::default())
        };
        let s = load(&format!(
            "kafka_tls = true\nkafka_ca_file = {:?}\nkafka_sasl_mechanism = \"scram-sha-512\"\n\
             kafka_sasl_username = \"node\"\nkafka_sasl_password = \"kafka-s3cret\"\n",
            ca.display().to_string()
        ))
        .unwrap();
        let sec = s.events.kafka_security().unwrap();
        assert!(sec.tls);
        assert_eq!(sec.ca_file.as_deref(), Some(ca.as_path()));
        let login = sec.scram.clone().unwrap();
        assert_eq!(
            (
                login.mechanism,
                login.username.as_str(),
                login.password.as_str()
            ),
            (events::ScramMechanism::Sha512, "node", "kafka-s3cret")
        );
        assert!(
            !format!("{:?}", s.events).contains("s3cret"),
            "Debug hides it"
        );
        assert!(!format!("{sec:?}").contains("s3cret"), "Debug hides it");
        let printed = s.to_toml().unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("kafka_sasl_password = \"***\""),
            "{printed}"
        );

        // Plain TCP and no login by default.
        let plain = load("").unwrap().events.kafka_security().unwrap();
        assert!(!plain.tls && plain.scram.is_none() && plain.ca_file.is_none());
        // Each refused at load, with the setting named.
        for (bad, names) in [
            (
                "kafka_sasl_mechanism = \"PLAIN\"\nkafka_sasl_username = \"u\"\nkafka_sasl_password = \"p\"\n",
                "SCRAM-SHA-256",
            ),
            ("kafka_sasl_username = \"u\"\n", "go together"),
            (
                "kafka_sasl_mechanism = \"SCRAM-SHA-256\"\nkafka_sasl_username = \"u\"\n",
                "go together",
            ),
            ("kafka_ca_file = \"/etc/hosts\"\n", "kafka_tls"),
            (
                "kafka_tls = true\nkafka_ca_file = \"/no/such/ca.pem\"\n",
                "kafka_ca_file",
            ),
        ] {
            let e = load(bad).expect_err(bad);
            assert!(format!("{e:#}").contains(names), "{bad}: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn smtp_table_defaults_checks_and_redaction() {
        let dir = std::env::temp_dir().join(format!("sc-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[smtp]\nhost = \"mail.example.com\"\nfrom = \"StreamCore <noreply@example.com>\"\n\
             username = \"relay\"\npassword = \"s3cret-pw\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        let smtp = s.smtp.clone().expect("[smtp] is set");
        assert_eq!(smtp.host, "mail.example.com");
        assert_eq!(smtp.port, 587, "default port");
        assert_eq!(smtp.tls, SmtpTlsMode::Starttls, "default TLS mode");
        assert_eq!(smtp.password.as_deref(), Some("s3cret-pw"));
        assert!(!format!("{smtp:?}").contains("s3cret"), "Debug hides it");
        let c = smtp.to_smtp_config();
        assert_eq!(
            (c.port, c.tls, c.username.as_deref()),
            (587, control_api::mail::SmtpTls::Starttls, Some("relay"))
        );

        let printed = s.to_toml().unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("password = \"***\""), "{printed}");
        assert!(printed.contains("host = \"mail.example.com\""), "{printed}");
        let back: Settings = toml::from_str(&printed).unwrap();
        assert_eq!(back.smtp.unwrap().port, 587, "the printed form loads again");

        // Bad values are refused at load.
        std::fs::write(
            &file,
            "[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\ntls = \"ssl\"\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::write(
            &file,
            "[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::write(&file, "[smtp]\nhost = \"h\"\n").unwrap();
        assert!(
            Settings::load(Some(&file), &Overrides::default()).is_err(),
            "from is required"
        );
        assert!(Settings::default().smtp.is_none());
        assert!(!Settings::default().to_toml().unwrap().contains("smtp"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn prints_as_toml() {
        let t = Settings::default().to_toml().unwrap();
        assert!(t.contains("http = \"127.0.0.1:8080\""), "{t}");
        assert!(t.contains("[media]"));
        assert!(t.contains("port = 40000"));
    }
}
