//! Assembles the node: media workers, signaling routes, the control API, the web app,
//! health and metrics, the SMTP mail relay, HTTP or HTTPS, and the drain-on-shutdown
//! sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use signaling::{JoinTokenSigner, SignalingState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Settings;
use crate::conn_slots::ConnectionSlots;
use crate::http_listener::HttpLimits;
use crate::media::MediaWorkers;
use crate::metrics::Metrics;
use control_api::hub;
use control_api::mail::MailRelay;
use control_api::relay::{EventRelay, RelayConfig};
use events::{Bus, KafkaBus, KafkaConfig};
use tokio::sync::mpsc;

/// How long shutdown lets a mail that is being sent finish.
const MAIL_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown lets the event relay finish the batch under way.
const EVENTS_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown lets closed recordings upload; the rest upload at the next start.
const UPLOAD_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown lets a running transcode job finish; after that it is taken up
/// again when its lease runs out.
const JOB_GRACE: Duration = Duration::from_secs(5);

/// A running node. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub http_addr: SocketAddr,
    /// Where browsers reach it (`http://…` or `https://…`).
    pub public_url: String,
    /// The HTTPS certificate in use, if any.
    pub tls: Option<crate::tls::Tls>,
    pub metrics_addr: Option<SocketAddr>,
    pub media_addrs: Vec<SocketAddr>,
    pub signer: Arc<JoinTokenSigner>,
    pub workers: Arc<MediaWorkers>,
    pub api: control_api::AppState,
    stop: watch::Sender<bool>,
    http_task: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    mail_relay: Option<MailRelay>,
    events: EventServices,
    pub recorder: crate::recording::RunningRecorder,
    worker: Option<crate::worker::RunningWorker>,
    /// The embedded TURN server, when `turn.embedded` is on.
    pub turn: Option<crate::turn::EmbeddedTurn>,
    /// This node's heartbeat in the cluster's registry.
    cluster: crate::cluster::ClusterMember,
    /// The relay to the other nodes, when `cluster.relay` is on.
    pub relay: Option<crate::relay::Relay>,
    /// The room protocol's sockets, told to move when the node drains.
    rooms: signaling::room::RoomState<MediaWorkers>,
    /// The WHIP/WHEP sessions' events, told to reconnect when the node drains.
    pub session_events: Arc<signaling::session_events::SessionEvents>,
    /// Sends participants of rooms that live elsewhere there, and ends revoked passes
    /// (`cluster::keep_rooms_whole`).
    keeper: tokio::task::JoinHandle<()>,
    /// Set when the node drains: it takes no rooms from then on.
    draining: Arc<std::sync::atomic::AtomicBool>,
    region: String,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("http_addr", &self.http_addr)
            .field("media_addrs", &self.media_addrs)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct OpsState {
    workers: Arc<MediaWorkers>,
    metrics: Metrics,
}

/// The data dir, the join-token key and the control plane's database (migrated).
/// `public_url` is where browsers reach the node (links, QR codes, token URLs).
async fn open_control_plane(
    settings: &Settings,
    public_url: &str,
) -> anyhow::Result<(Arc<JoinTokenSigner>, control_api::AppState)> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let signer = Arc::new(
        JoinTokenSigner::load_or_create(&settings.token_key_path())
            .context("loading the join-token key")?,
    );
    let mut api = control_api::build_state(
        &settings.database_url(),
        &settings.keys_dir(),
        signer.clone(),
        control_api::ApiConfig {
            public_url: public_url.to_owned(),
            placement: true,
            region: settings.cluster.region.clone(),
            turn_secret_shared: settings.turn.shared_secret.is_some(),
            secure_cookies: public_url.starts_with("https://") || settings.tls.enabled(),
            online_window: Duration::from_secs(settings.events.online_window_secs),
            max_upload_bytes: settings.worker.max_upload_mib * 1024 * 1024,
            upload_dir: settings.data_dir.join("uploads"),
            ice_servers: Arc::new(settings.turn.ice_servers()),
            trusted_proxies: control_api::client_addr::parse_proxies(&settings.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
            register_per_address_per_minute: settings.limits.register_per_address_per_minute,
            register_per_minute: settings.limits.register_per_minute,
            concurrent_password_hashes: match settings.limits.concurrent_password_hashes {
                0 => control_api::ApiConfig::default().concurrent_password_hashes,
                n => n,
            },
            password_hash_wait: Duration::from_millis(settings.limits.password_hash_wait_ms),
            pairing_wrong_guesses_per_code: settings.limits.pairing_wrong_guesses_per_code,
            quotas: control_api::state::Quotas {
                rooms: settings.limits.rooms_per_user,
                devices: settings.limits.devices_per_user,
                open_pairings: settings.limits.open_pairings_per_user,
                jobs_in_flight: settings.limits.jobs_in_flight_per_user,
                sockets: settings.limits.sockets_per_user,
                upload_bytes: settings
                    .limits
                    .upload_mib_per_user
                    .saturating_mul(1024 * 1024),
            },
            websocket_idle: Duration::from_secs(settings.limits.websocket_idle_secs),
            history_group: settings.events.history_group.clone(),
            oidc: settings.oidc.clone(),
            retention_sweep: Duration::from_secs(settings.recording.retention_sweep_secs.max(1)),
            max_join_ttl: Duration::from_secs(settings.limits.join_token_max_ttl_secs),
            ..control_api::ApiConfig::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "opening the database {}",
            crate::config::redact_url(&settings.database_url())
        )
    })?;
    api.node_id = Arc::from(node_id(settings)?);
    api.bus = match &settings.events.kafka_brokers {
        Some(brokers) => {
            let mut k = KafkaConfig::new(brokers);
            k.client_id = format!("streamcore-{}", api.node_id);
            k.partitions = settings.events.kafka_partitions;
            k.replication = settings.events.kafka_replication;
            k.message_timeout = Duration::from_secs(settings.events.kafka_message_timeout_secs);
            k.fetch_wait = Duration::from_millis(settings.events.kafka_fetch_wait_ms);
            k.security = settings.events.kafka_security()?;
            if k.security.scram.is_some() && !k.security.tls {
                tracing::warn!(
                    "events: SCRAM login to Kafka without TLS: the password stays secret, the events do not"
                );
            }
            Bus::Kafka(KafkaBus::new(k).context("configuring Kafka")?)
        }
        None => Bus::in_process(),
    };
    info!(node = %api.node_id, bus = api.bus.kind(), "events");
    let store_config = settings.recorder_config().1;
    let mut store = recorder::Store::open(&store_config).context("opening the object store")?;
    if let Some(public) = settings.recording.s3_public_endpoint.as_deref() {
        store = store
            .with_public_endpoint(&store_config, public)
            .context("the S3 public endpoint")?;
    }
    api.objects = Some(Arc::new(crate::worker::StoreObjects(Arc::new(store))));
    Ok((signer, api))
}

/// The object store's origin when public files redirect to it (S3's presigned URLs),
/// for the pages' policy: the podcasts page shows artwork and plays live episodes from
/// their public addresses.
async fn store_origin(api: &control_api::AppState) -> Vec<String> {
    let Some(objects) = &api.objects else {
        return Vec::new();
    };
    match objects.presigned_get("origin-probe").await {
        Ok(Some(url)) => url
            .split_once("://")
            .map(|(scheme, rest)| {
                let host = rest.split(['/', '?']).next().unwrap_or(rest);
                vec![format!("{scheme}://{host}")]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Starts the transcode worker on this node.
pub fn start_worker(
    settings: &Settings,
    api: &control_api::AppState,
    metrics: Metrics,
) -> anyhow::Result<crate::worker::RunningWorker> {
    // The store uploads go into (a client of its own: they are cheap).
    let store =
        recorder::Store::open(&settings.recorder_config().1).context("opening the object store")?;
    crate::worker::RunningWorker::start(
        api,
        Arc::new(store),
        crate::worker::WorkerConfig::from_settings(settings),
        metrics,
    )
    .context("starting the transcode worker")
}

/// The configured node id, else the one kept in the data dir (made on first start).
fn node_id(settings: &Settings) -> anyhow::Result<String> {
    if let Some(id) = &settings.node_id {
        return Ok(id.clone());
    }
    let path = settings.data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", &uuid_hex()[..8]);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

fn uuid_hex() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Copies the relay's counters, the outbox depth and the socket counts into the
/// metrics once a second.
async fn sample_events(
    api: control_api::AppState,
    stats: Arc<control_api::relay::RelayStats>,
    m: Metrics,
) {
    use control_api::store::Store;
    use std::sync::atomic::Ordering;
    let (mut published, mut failed) = (0, 0);
    loop {
        let p = stats.published.load(Ordering::Relaxed);
        let f = stats.failed_batches.load(Ordering::Relaxed);
        m.events_published.inc_by(p - published);
        m.event_publish_failures.inc_by(f - failed);
        (published, failed) = (p, f);
        if let Ok(n) = api.db.count_unpublished_events().await {
            m.events_pending.set(n);
        }
        let (devices, users) = api.hub.counts();
        m.device_sockets.set(devices as i64);
        m.user_sockets.set(users as i64);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The event relay, the hub's consumer, the presence sweeper and (on media nodes) the
/// room-event writer.
struct EventServices {
    relay: EventRelay,
    consumer: hub::Task,
    history: hub::Task,
    sweeper: hub::Task,
    retention: hub::Task,
    room_events: Option<tokio::task::JoinHandle<()>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

impl EventServices {
    fn start(
        api: &control_api::AppState,
        // The media plane's events, and how long an empty room lasts.
        room_events: Option<(
            mpsc::UnboundedReceiver<(usize, media_core::SfuEvent)>,
            Duration,
        )>,
        metrics: Option<Metrics>,
    ) -> anyhow::Result<EventServices> {
        let relay = EventRelay::start(api, RelayConfig::default());
        let consumer = hub::start_consumer(api).context("subscribing to events")?;
        let history = control_api::history::start(api).context("subscribing to now.playing")?;
        let sweeper = hub::start_sweeper(
            api,
            (api.config.online_window / 4).max(Duration::from_millis(250)),
        );
        let retention = control_api::retention::start(api, api.config.retention_sweep);
        let room_events = room_events
            .map(|(rx, grace)| tokio::spawn(crate::room_events::run(api.clone(), rx, grace)));
        let sampler =
            metrics.map(|m| tokio::spawn(sample_events(api.clone(), relay.stats.clone(), m)));
        Ok(EventServices {
            relay,
            consumer,
            history,
            sweeper,
            retention,
            room_events,
            sampler,
        })
    }

    async fn shutdown(self, api: &control_api::AppState) {
        // Media workers are gone, so the room-event channel is closed: let the writer
        // put what it holds into the outbox, then let the relay publish it.
        if let Some(t) = self.room_events
            && tokio::time::timeout(EVENTS_GRACE, t).await.is_err()
        {
            tracing::warn!("room events still waiting for the database at shutdown");
        }
        api.events_written();
        if let Some(t) = self.sampler {
            t.abort();
        }
        self.sweeper.shutdown().await;
        self.retention.shutdown().await;
        self.consumer.shutdown().await;
        self.relay.shutdown(EVENTS_GRACE).await;
        // After the relay's last publish: the in-process bus's history applies what
        // it queued before it stops (Kafka keeps it for the group's next run).
        self.history.shutdown().await;
        if let Bus::Kafka(k) = &api.bus {
            // librdkafka's flush blocks its thread.
            let k = k.clone();
            let _ = tokio::task::spawn_blocking(move || k.flush(EVENTS_GRACE)).await;
        }
    }
}

/// Starts the node on `settings`. Ports given as 0 are chosen by the OS; the chosen
/// addresses are in the returned value.
/// The HTTP(S) listener: bound first, so a port the OS chooses is in the links the
/// control plane makes; its address, the public URL, and the certificate if any.
struct HttpListener {
    listener: TcpListener,
    addr: SocketAddr,
    public_url: String,
    tls: Option<crate::tls::Tls>,
}

async fn bind_http(settings: &Settings) -> anyhow::Result<HttpListener> {
    let listener = TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("binding HTTP on {}", settings.http))?;
    let addr = listener.local_addr()?;
    let public_url = settings.public_url_for(addr);
    let tls = crate::tls::load(settings)?;
    if let Some(t) = &tls {
        crate::tls::announce(t, &public_url);
    }
    Ok(HttpListener {
        listener,
        addr,
        public_url,
        tls,
    })
}

pub async fn start(settings: &Settings) -> anyhow::Result<RunningServer> {
    let HttpListener {
        listener,
        addr: http_addr,
        public_url,
        tls,
    } = bind_http(settings).await?;
    let (signer, mut api) = open_control_plane(settings, &public_url).await?;
    // First, so a bad [smtp] fails the start before anything listens.
    let mail_relay = start_mail_relay(settings, &api)?;
    let metrics = Metrics::new();
    let (room_tx, room_rx) = mpsc::unbounded_channel();
    let relays = settings
        .turn
        .embedded
        .then(|| Arc::new(crate::turn::Relays::default()));
    let workers = Arc::new(MediaWorkers::start(
        settings,
        metrics.clone(),
        room_tx,
        relays
            .clone()
            .map(|r| r as Arc<dyn media_core::turn::RelayDirectory>),
    )?);
    let recorder =
        crate::recording::RunningRecorder::start(settings, &api, workers.clone(), metrics.clone())
            .await?;
    api.recordings = Some(recorder.service.clone());
    api.live_rooms = Some(workers.clone());
    // Subscribed before the relay starts, so it hears every request.
    let worker = if settings.worker.in_process {
        Some(start_worker(settings, &api, metrics.clone())?)
    } else {
        None
    };
    let events = EventServices::start(
        &api,
        Some((
            room_rx,
            Duration::from_secs(settings.media.empty_room_grace_secs),
        )),
        Some(metrics.clone()),
    )?;
    let media_addrs = workers.local_addrs();
    let turn = match relays {
        Some(directory) => Some(
            crate::turn::EmbeddedTurn::start(
                settings,
                &media_addrs,
                crate::tls::turn_config(settings, tls.as_ref())?,
                directory,
                metrics.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let ice_servers = Arc::new(match &turn {
        Some(t) => settings.turn.ice_servers_with(&t.urls, Some(&t.secret)),
        None => settings.turn.ice_servers(),
    });
    // The join-token response hands out the embedded server's URLs too, known only now.
    let turn_urls = turn.as_ref().map(|t| t.urls.clone()).unwrap_or_default();
    api.config = Arc::new(control_api::ApiConfig {
        ice_servers: ice_servers.clone(),
        embedded_turn_urls: turn_urls.clone(),
        ..(*api.config).clone()
    });
    let relay = if settings.cluster.relay {
        let key = control_api::keyfile::load_or_create(&settings.cluster_key_path())
            .context("reading the cluster key")?;
        let bind = SocketAddr::new(settings.media_bind_ip(), settings.cluster.relay_port);
        Some(crate::relay::Relay::start(
            bind,
            &api.node_id,
            &key,
            workers.clone(),
            api.db.clone(),
            metrics.clone(),
        )?)
    } else {
        None
    };
    let relay_addr = match &relay {
        Some(r) => {
            let port = r.local_addr()?.port();
            settings
                .advertised_ips()
                .first()
                .map(|ip| SocketAddr::new(*ip, port))
        }
        None => None,
    };
    // Registered before the first request, so a token made now can be placed here.
    let origins = web::ClusterOrigins::with_fixed(&settings.cluster.connect_origins)
        .with_media(&store_origin(&api).await);
    let cluster = crate::cluster::ClusterMember::join(
        settings,
        api.db.clone(),
        api.node_id.clone(),
        crate::cluster::Reach {
            public_url: &public_url,
            media_addrs: &media_addrs,
            turn_urls: &turn_urls,
            relay_addr,
        },
        metrics.clone(),
        origins.clone(),
    )
    .await?;
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let placement: signaling::placement::SharedPlacement =
        Some(Arc::new(control_api::cluster::DbPlacement {
            db: api.db.clone(),
            node_id: api.node_id.clone(),
            region: settings.cluster.region.clone(),
            draining: draining.clone(),
        }));
    let ops = OpsState {
        workers: workers.clone(),
        metrics: metrics.clone(),
    };
    // Join tokens from the API are bound to their room as the database knows it.
    let room_authority: signaling::room_authority::SharedRoomAuthority =
        Some(Arc::new(control_api::routes::rooms::DbRoomAuthority {
            db: api.db.clone(),
            seen: api.revocations_seen.clone(),
        }));
    let rooms = signaling::room::RoomState::new(
        workers.clone(),
        signer.verifier(),
        signaling::room::RoomProtocolConfig {
            // One grace for both: a lost network costs the socket and ICE at once.
            resume_grace: Duration::from_secs(settings.media.disconnect_grace_secs),
            ice_servers: ice_servers.clone(),
            idle_timeout: Duration::from_secs(settings.limits.websocket_idle_secs),
            rooms: room_authority.clone(),
            placement: placement.clone(),
            cascade: relay
                .clone()
                .map(|r| Arc::new(r) as Arc<dyn signaling::placement::Cascade>),
            markers: Some(Arc::new(control_api::routes::podcasts::RoomMarkerSink(
                api.clone(),
            ))),
        },
    );
    if let Some(relay) = &relay {
        let rooms = rooms.clone();
        relay.set_participant_rooms(move || {
            rooms
                .participant_rooms()
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        });
    }
    let session_events = Arc::new(signaling::session_events::SessionEvents::default());
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops.clone())
        .merge(signaling::router(SignalingState {
            backend: workers.clone(),
            verifier: signer.verifier(),
            ice_servers: ice_servers.clone(),
            sessions_per_token: settings.limits.sessions_per_join_token,
            rooms: room_authority.clone(),
            placement: placement.clone(),
            cascade: relay
                .clone()
                .map(|r| Arc::new(r) as Arc<dyn signaling::placement::Cascade>),
            events: session_events.clone(),
        }))
        .merge(signaling::room::router(rooms.clone()))
        .merge(api_router(settings, &api))
        .merge(web::router_in_cluster(origins));
    if settings.metrics.is_none() {
        app = app.merge(metrics_router(ops.clone()));
    }

    let (stop, stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(serve(
        listener,
        app,
        tls.as_ref().map(|t| t.config.clone()),
        http_limits(settings, Some(&metrics))?,
        stop_rx.clone(),
    ));

    let (metrics_addr, metrics_task) = match settings.metrics {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics on {addr}"))?;
            let a = l.local_addr()?;
            (
                Some(a),
                Some(tokio::spawn(serve(
                    l,
                    metrics_router(ops),
                    None,
                    http_limits(settings, None)?,
                    stop_rx,
                ))),
            )
        }
        None => (None, None),
    };
    let keeper = crate::cluster::keep_rooms_whole(
        api.clone(),
        rooms.clone(),
        workers.clone(),
        relay.clone(),
    );
    info!(http = %http_addr, url = %public_url, media = ?media_addrs, "streamcore listening");
    Ok(RunningServer {
        http_addr,
        public_url,
        tls,
        metrics_addr,
        media_addrs,
        signer,
        workers,
        api,
        stop,
        http_task,
        metrics_task,
        mail_relay,
        events,
        recorder,
        worker,
        turn,
        keeper,
        cluster,
        relay,
        rooms,
        session_events,
        draining,
        region: settings.cluster.region.clone(),
    })
}

/// The control API, answering CORS preflights for the configured origins only.
fn api_router(settings: &Settings, api: &control_api::AppState) -> Router {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let router = control_api::router(api.clone());
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::LOCATION, header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600)),
    )
}

fn metrics_router(ops: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// Starts SMTP delivery of the mail outbox when `[smtp]` is configured.
fn start_mail_relay(
    settings: &Settings,
    api: &control_api::AppState,
) -> anyhow::Result<Option<MailRelay>> {
    match &settings.smtp {
        Some(smtp) => Ok(Some(
            MailRelay::start(api, smtp.to_smtp_config()).context("starting SMTP delivery")?,
        )),
        None => {
            info!(
                "no [smtp] configured: reset mails stay in the outbox (`streamcore admin mail` prints them)"
            );
            Ok(None)
        }
    }
}

/// Small writes go out at once: a WebSocket message (a remote command, a room
/// event) otherwise waits for the ACK of the previous segment, which the peer's
/// delayed ACK holds back ~40 ms.
pub(crate) fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// How long a stopping listener lets open HTTPS connections finish.
const HTTP_GRACE: Duration = Duration::from_secs(5);

async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    stop: watch::Receiver<bool>,
) {
    crate::http_listener::serve(listener, app, tls, limits, stop, HTTP_GRACE).await;
}

/// The HTTP(S) listener's limits from `[limits]` (and `trusted_proxies`).
fn http_limits(settings: &Settings, metrics: Option<&Metrics>) -> anyhow::Result<HttpLimits> {
    let l = &settings.limits;
    Ok(HttpLimits {
        slots: ConnectionSlots::new(l.http_connections, l.http_connections_per_address),
        header_timeout: Duration::from_secs(l.http_header_timeout_secs),
        trusted_proxies: control_api::client_addr::parse_proxies(&settings.trusted_proxies)
            .map_err(anyhow::Error::msg)?,
        refused: metrics.map(|m| m.http_connections_refused.clone()),
        body: control_api::body_pace::BodyLimits {
            idle: Duration::from_secs(l.http_body_idle_secs),
            min_bytes_per_sec: l.http_min_body_bytes_per_sec,
        },
    })
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(ops): State<OpsState>) -> impl IntoResponse {
    if ops.workers.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

impl RunningServer {
    /// Drains: `/readyz` turns 503 and new sessions are refused at once; waits up to
    /// `grace` for sessions to end and for the `/rtc` participants (resumable ones
    /// too) of rooms moved to other nodes to be told (or until `force` fires), then
    /// closes the rest
    /// with a goodbye and stops listening.
    pub async fn shutdown(self, grace: Duration, force: impl std::future::Future<Output = ()>) {
        self.workers.start_draining();
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.keeper.abort();
        // The database may be away: the drain goes on without it.
        let cluster_grace = Duration::from_secs(3);
        let _ = tokio::time::timeout(cluster_grace, async {
            self.cluster.drain().await;
            self.move_rooms_away().await;
        })
        .await;
        info!(
            sessions = self.workers.session_count(),
            participants_to_move = self.rooms.participants_to_move(),
            grace_secs = grace.as_secs(),
            "draining"
        );
        // `/rtc` participants of moved rooms count too: stopping the workers before
        // each has been sent its `move` would leave it to find the room's new node
        // by itself.
        let remaining = || self.workers.session_count() + self.rooms.participants_to_move();
        let wait = async {
            while remaining() > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = wait => info!("all sessions ended"),
            _ = tokio::time::sleep(grace) => info!(sessions = self.workers.session_count(), participants_to_move = self.rooms.participants_to_move(), "grace period over; closing sessions"),
            _ = force => info!("second signal; closing now"),
        }
        // Recordings close their files while the workers still run (their taps go).
        self.recorder.service.stop_all("shutdown").await;
        // The relay first: its packets share the workers' queues.
        if let Some(r) = &self.relay {
            r.shutdown();
        }
        let workers = self.workers.clone();
        // Joining worker threads blocks; keep it off the async threads.
        let _ = tokio::task::spawn_blocking(move || workers.shutdown()).await;
        if tokio::time::timeout(Duration::from_secs(3), self.cluster.leave())
            .await
            .is_err()
        {
            tracing::warn!(
                "could not leave the cluster's registry in time; this node will be taken for dead"
            );
        }
        let _ = self.stop.send(true);
        let _ = self.http_task.await;
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
        self.recorder.shutdown(UPLOAD_GRACE).await;
        if let Some(w) = self.worker {
            w.shutdown(JOB_GRACE).await;
        }
        self.events.shutdown(&self.api).await;
        if let Some(r) = self.mail_relay {
            r.shutdown(MAIL_GRACE).await;
        }
    }
}

impl RunningServer {
    /// Resolves when an operator asks the cluster to drain this node (the admin API);
    /// the caller then shuts it down as on SIGTERM.
    pub async fn drain_requested(&self) {
        self.cluster.drain_requested().await;
    }

    /// Places this node's rooms on other nodes and tells their `/rtc` participants to
    /// join there, and their WHIP/WHEP sessions (those of rooms relayed here too) to
    /// open again on the room's node.
    async fn move_rooms_away(&self) {
        let mut people = std::collections::HashMap::<String, usize>::new();
        for room in self
            .workers
            .session_rooms()
            .into_iter()
            .chain(self.rooms.participant_rooms())
        {
            *people.entry(room.0.as_str().to_owned()).or_default() += room.1;
        }
        let moved = match control_api::cluster::move_rooms_away(
            &self.api.db,
            &self.api.node_id,
            &self.region,
            &people,
        )
        .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the rooms could not be moved off this node; their people stay until the grace ends");
                return;
            }
        };
        // Recordings first: the new node starts them before the people arrive.
        let to_nodes: Vec<(String, String)> = moved
            .iter()
            .map(|(room, to)| (room.clone(), to.node_id.clone()))
            .collect();
        // Bounded: the people's moves below must go out whatever the database does.
        if tokio::time::timeout(
            Duration::from_secs(1),
            self.recorder.service.hand_over(&self.api, &to_nodes),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                "handing the recordings over took over a second; the rest stop with this node"
            );
        }
        let moves = moved
            .into_iter()
            .filter_map(|(room, to)| {
                let room = media_core::RoomId::parse(&room).ok()?;
                Some((
                    room,
                    signaling::room::Move::to_node(&to.base_url, "node_draining"),
                ))
            })
            .collect();
        let mut moves: std::collections::HashMap<_, _> = moves;
        // Rooms served here that live elsewhere (moved, or imported over the relay):
        // their WHIP/WHEP sessions and `/rtc` participants go to the room's node.
        let mut served: Vec<String> = self
            .workers
            .session_rooms()
            .into_iter()
            .chain(self.rooms.participant_rooms())
            .map(|(r, _)| r.as_str().to_owned())
            .collect();
        served.sort();
        served.dedup();
        match control_api::cluster::rooms_living_elsewhere(
            &self.api.db,
            &self.api.node_id,
            &served,
            true,
        )
        .await
        {
            Ok(elsewhere) => {
                let elsewhere: Vec<(media_core::RoomId, String)> = elsewhere
                    .into_iter()
                    .filter_map(|e| Some((media_core::RoomId::parse(&e.room).ok()?, e.base_url)))
                    .collect();
                for (room, base) in &elsewhere {
                    moves
                        .entry(room.clone())
                        .or_insert_with(|| signaling::room::Move::to_node(base, "node_draining"));
                }
                self.session_events
                    .move_rooms(elsewhere.into_iter().collect());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not tell the sessions of rooms served here where their rooms live; they stay until the grace ends")
            }
        }
        // One call: each replaces the moves the room sockets follow.
        self.rooms.move_rooms(moves);
    }
}

/// A control-API-only node (`streamcore api`).
pub struct RunningApi {
    pub http_addr: SocketAddr,
    pub api: control_api::AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    mail_relay: Option<MailRelay>,
    events: EventServices,
    /// Reads the node registry for its pages' policy.
    cluster: crate::cluster::ClusterMember,
}

impl std::fmt::Debug for RunningApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApi")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

pub async fn start_api(settings: &Settings) -> anyhow::Result<RunningApi> {
    let HttpListener {
        listener,
        addr: http_addr,
        public_url,
        tls,
    } = bind_http(settings).await?;
    let (_, api) = open_control_plane(settings, &public_url).await?;
    let mail_relay = start_mail_relay(settings, &api)?;
    let events = EventServices::start(&api, None, None)?;
    // Its pages use the media nodes' WHIP/WHEP and `/rtc`.
    let origins = web::ClusterOrigins::with_fixed(&settings.cluster.connect_origins)
        .with_media(&store_origin(&api).await);
    let cluster = crate::cluster::ClusterMember::observe(api.db.clone(), origins.clone());
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(healthz))
        .merge(api_router(settings, &api))
        .merge(web::router_in_cluster(origins));
    let (stop, rx) = watch::channel(false);
    let limits = http_limits(settings, None)?;
    let task = tokio::spawn(serve(listener, app, tls.map(|t| t.config), limits, rx));
    Ok(RunningApi {
        http_addr,
        api,
        stop,
        task,
        mail_relay,
        events,
        cluster,
    })
}

impl RunningApi {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.cluster.leave().await;
        self.events.shutdown(&self.api).await;
        if let Some(r) = self.mail_relay {
            r.shutdown(MAIL_GRACE).await;
        }
    }
}

/// A transcode-worker node (`streamcore worker`): the worker, and the event relay so
/// its outbox rows are published even with no API node running.
pub struct RunningWorkerNode {
    pub api: control_api::AppState,
    worker: crate::worker::RunningWorker,
    events: EventServices,
}

impl std::fmt::Debug for RunningWorkerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningWorkerNode")
    }
}

pub async fn start_worker_node(settings: &Settings) -> anyhow::Result<RunningWorkerNode> {
    let (_, api) = open_control_plane(settings, &settings.public_url()).await?;
    let worker = start_worker(settings, &api, Metrics::new())?;
    let events = EventServices::start(&api, None, None)?;
    Ok(RunningWorkerNode {
        api,
        worker,
        events,
    })
}

impl RunningWorkerNode {
    pub async fn shutdown(self, grace: Duration) {
        self.worker.shutdown(grace).await;
        self.events.shutdown(&self.api).await;
    }
}
