//! Prometheus metrics of the node. Labels are bounded: `worker` (one per UDP port)
//! and WHIP/WHEP `kind`; never rooms, peers or users.

use prometheus::{
    GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use media_core::SfuStats;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub rooms: IntGaugeVec,
    pub peers: IntGaugeVec,
    pub tracks: IntGaugeVec,
    pub datagrams_in: IntCounter,
    pub bytes_in: IntCounter,
    pub datagrams_out: IntCounter,
    pub bytes_out: IntCounter,
    pub datagrams_dropped: IntCounter,
    pub rtp_in: IntCounter,
    pub rtp_forwarded: IntCounter,
    pub forward_errors: IntCounter,
    pub keyframe_requests: IntCounter,
    /// Subscribers' video pacer queues that reached `media.video_queue_limit_bytes`
    /// and were shed, the packets not written meanwhile, and the layer steps down
    /// their pressure caused.
    pub video_queue_sheds: IntCounter,
    pub video_queue_dropped: IntCounter,
    pub video_queue_steps_down: IntCounter,
    pub recording_dropped: IntCounter,
    pub recordings_active: IntGauge,
    pub recordings_uploaded: IntCounter,
    pub recording_upload_failures: IntCounter,
    pub send_errors: IntCounter,
    pub jobs_completed: IntCounter,
    pub job_retries: IntCounter,
    pub jobs_dead_lettered: IntCounter,
    pub jobs_running: IntGauge,
    pub sessions_created: IntCounterVec,
    /// Peers connected, by the transport that completed the connection (`udp`, `tcp`,
    /// and through the embedded TURN server `turn-udp`, `turn-tcp`, `turn-tls`).
    pub connections: IntCounterVec,
    /// The embedded TURN server: open allocations and allocations made, by the
    /// client's transport; bytes relayed, by direction; requests refused, by reason.
    pub turn_allocations: IntGaugeVec,
    pub turn_allocations_total: IntCounterVec,
    pub turn_relayed_bytes: IntCounterVec,
    pub turn_refusals: IntCounterVec,
    pub turn_client_messages: IntCounter,
    /// HTTP(S) connections closed at accept: the node (`full`) or their address
    /// (`address_full`) held as many as allowed.
    pub http_connections_refused: IntCounterVec,
    pub ice_tcp_connections: IntGaugeVec,
    /// Each media worker's share of its core over the last second (0–1), which
    /// admission control compares with `media.max_worker_load_percent`.
    pub worker_load: GaugeVec,
    /// Each media socket's receive buffer as the kernel reports it (it doubles what
    /// it is asked for), sized to `media.recv_buffer_ms` of the worker's traffic.
    pub recv_buffer_bytes: IntGaugeVec,
    /// New peers refused because their room's worker was at its load limit.
    pub admission_refusals: IntCounter,
    /// What malloc holds for the program and what it keeps freed after a peak (the
    /// allocator's retention), from [`crate::malloc_arenas::heap_stats`], read at
    /// each render as a process collector reads `/proc`. The read takes each arena's
    /// lock in turn; forwarding allocates nothing per packet, so a media worker does
    /// not wait on it, and encoding the scrape costs more.
    pub malloc_in_use_bytes: IntGauge,
    pub malloc_free_bytes: IntGauge,
    pub events_published: IntCounter,
    pub event_publish_failures: IntCounter,
    pub events_pending: IntGauge,
    pub device_sockets: IntGauge,
    pub user_sockets: IntGauge,
    /// The cluster's media nodes by status (`active`, `draining`, `dead`), as this
    /// node reads the registry every second.
    pub cluster_nodes: IntGaugeVec,
    /// Each node's load (0–1), peers and heartbeat age, from the registry.
    pub cluster_node_load: GaugeVec,
    pub cluster_node_peers: IntGaugeVec,
    pub cluster_node_heartbeat_age: GaugeVec,
    /// The relay (`crate::relay`): links up per peer node, and per peer node the
    /// packets sent, received, found missing (NACKed) and repaired.
    pub relay_links: IntGaugeVec,
    pub relay_packets_sent: IntCounterVec,
    pub relay_packets_received: IntCounterVec,
    pub relay_packets_lost: IntCounterVec,
    pub relay_repaired: IntCounterVec,
    pub relay_auth_failures: IntCounter,
    /// Relay commands dropped because a media worker's queue was full.
    pub relay_dropped: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric names are valid literals"); // constant names
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once"); // new registry per Metrics
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid literal"); // constant names
    r.register(Box::new(g.clone())).expect("registered once"); // new registry per Metrics
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid literal"); // constant names
    r.register(Box::new(c.clone())).expect("registered once"); // new registry per Metrics
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid literal"); // constant names
    r.register(Box::new(g.clone())).expect("registered once"); // new registry per Metrics
    g
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str, label: &str) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), &[label]).expect("valid literal"); // constant names
    r.register(Box::new(g.clone())).expect("registered once"); // new registry per Metrics
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let sessions_created = IntCounterVec::new(
            Opts::new(
                "streamcore_sessions_created_total",
                "WHIP/WHEP sessions created",
            ),
            &["kind"],
        )
        .expect("valid literal"); // constant names
        r.register(Box::new(sessions_created.clone()))
            .expect("registered once"); // fresh registry
        let connections = IntCounterVec::new(
            Opts::new(
                "streamcore_connections_total",
                "Peers connected, by transport (udp, tcp = ICE-TCP, turn-udp, turn-tcp, turn-tls)",
            ),
            &["transport"],
        )
        .expect("valid literal"); // constant names
        r.register(Box::new(connections.clone()))
            .expect("registered once"); // fresh registry
        Metrics {
            connections,
            turn_allocations: gauge_vec(
                &r,
                "streamcore_turn_allocations",
                "Open allocations on the embedded TURN server, by client transport",
                "transport",
            ),
            turn_allocations_total: counter_vec(
                &r,
                "streamcore_turn_allocations_total",
                "Allocations made on the embedded TURN server, by client transport",
                "transport",
            ),
            turn_relayed_bytes: counter_vec(
                &r,
                "streamcore_turn_relayed_bytes_total",
                "Payload bytes the embedded TURN server relayed (to_peer, to_client)",
                "direction",
            ),
            turn_client_messages: counter(
                &r,
                "streamcore_turn_client_messages_total",
                "Messages (STUN or ChannelData) the embedded TURN server read from clients",
            ),
            turn_refusals: counter_vec(
                &r,
                "streamcore_turn_refusals_total",
                "TURN requests refused (unauthorized, forbidden = peer not allowed, quota)",
                "reason",
            ),
            http_connections_refused: counter_vec(
                &r,
                "streamcore_http_connections_refused_total",
                "HTTP(S) connections closed at accept (full, address_full)",
                "reason",
            ),
            ice_tcp_connections: gauge_vec(
                &r,
                "streamcore_ice_tcp_connections",
                "Open ICE-TCP connections",
                "worker",
            ),
            worker_load: {
                let g = GaugeVec::new(
                    Opts::new(
                        "streamcore_worker_load",
                        "Share of its core a media worker spent working over the last second",
                    ),
                    &["worker"],
                )
                .expect("valid literal"); // constant names
                r.register(Box::new(g.clone())).expect("registered once"); // fresh registry
                g
            },
            recv_buffer_bytes: gauge_vec(
                &r,
                "streamcore_recv_buffer_bytes",
                "A media socket's receive buffer, as the kernel reports it",
                "worker",
            ),
            cluster_nodes: gauge_vec(
                &r,
                "streamcore_cluster_nodes",
                "Media nodes of the cluster by status (active, draining, dead)",
                "status",
            ),
            cluster_node_load: float_gauge_vec(
                &r,
                "streamcore_cluster_node_load",
                "A media node's load, 0-1: the larger of its busiest worker's CPU share and its peers over its capacity",
                "node",
            ),
            cluster_node_peers: gauge_vec(
                &r,
                "streamcore_cluster_node_peers",
                "A media node's peers, as its last heartbeat said",
                "node",
            ),
            cluster_node_heartbeat_age: float_gauge_vec(
                &r,
                "streamcore_cluster_node_heartbeat_age_seconds",
                "How long ago a media node's last heartbeat was (dead past 3 s)",
                "node",
            ),
            relay_links: gauge_vec(
                &r,
                "streamcore_relay_links",
                "Relay links up (1) or down (0), by peer node",
                "node",
            ),
            relay_packets_sent: counter_vec(
                &r,
                "streamcore_relay_packets_sent_total",
                "RTP packets sent to a peer node over the relay (one copy per track, whatever its subscribers there)",
                "node",
            ),
            relay_packets_received: counter_vec(
                &r,
                "streamcore_relay_packets_received_total",
                "RTP packets received from a peer node over the relay",
                "node",
            ),
            relay_packets_lost: counter_vec(
                &r,
                "streamcore_relay_packets_lost_total",
                "Relayed packets found missing and asked for again (NACK), by the node they come from",
                "node",
            ),
            relay_repaired: counter_vec(
                &r,
                "streamcore_relay_packets_repaired_total",
                "Relayed packets sent again to a peer node that missed them",
                "node",
            ),
            relay_auth_failures: counter(
                &r,
                "streamcore_relay_auth_failures_total",
                "Relay connections closed because the peer did not prove the cluster key",
            ),
            relay_dropped: counter(
                &r,
                "streamcore_relay_dropped_total",
                "Relay commands and packets dropped because a media worker's queue was full",
            ),
            admission_refusals: counter(
                &r,
                "streamcore_admission_refusals_total",
                "New peers refused (node_full) because their room's worker was at its load limit",
            ),
            malloc_in_use_bytes: gauge(
                &r,
                "streamcore_malloc_in_use_bytes",
                "Bytes of heap blocks the process holds (glibc's mallinfo2: uordblks + hblkhd)",
            ),
            malloc_free_bytes: gauge(
                &r,
                "streamcore_malloc_free_bytes",
                "Bytes malloc's arenas keep freed for later blocks (glibc's mallinfo2: fordblks)",
            ),
            rooms: gauge_vec(
                &r,
                "streamcore_rooms",
                "Rooms with at least one peer",
                "worker",
            ),
            peers: gauge_vec(
                &r,
                "streamcore_peers",
                "Peers (WebRTC connections)",
                "worker",
            ),
            tracks: gauge_vec(&r, "streamcore_tracks", "Published tracks", "worker"),
            datagrams_in: counter(
                &r,
                "streamcore_udp_datagrams_in_total",
                "UDP datagrams received",
            ),
            bytes_in: counter(&r, "streamcore_udp_bytes_in_total", "UDP bytes received"),
            datagrams_out: counter(
                &r,
                "streamcore_udp_datagrams_out_total",
                "UDP datagrams sent",
            ),
            bytes_out: counter(&r, "streamcore_udp_bytes_out_total", "UDP bytes sent"),
            datagrams_dropped: counter(
                &r,
                "streamcore_udp_datagrams_dropped_total",
                "Datagrams dropped: unclassifiable, unknown source, or rejected by the peer",
            ),
            rtp_in: counter(
                &r,
                "streamcore_rtp_packets_in_total",
                "RTP packets received from publishers",
            ),
            rtp_forwarded: counter(
                &r,
                "streamcore_rtp_packets_forwarded_total",
                "RTP packets written to subscribers",
            ),
            forward_errors: counter(
                &r,
                "streamcore_forward_errors_total",
                "RTP packets that could not be forwarded (no codec match, no stream)",
            ),
            keyframe_requests: counter(
                &r,
                "streamcore_keyframe_requests_total",
                "Keyframe requests sent to publishers",
            ),
            video_queue_sheds: counter(
                &r,
                "streamcore_video_queue_sheds_total",
                "Subscriber video queues shed at their bound (the picture restarts on a keyframe)",
            ),
            video_queue_dropped: counter(
                &r,
                "streamcore_video_queue_dropped_packets_total",
                "Video packets not written to a subscriber while its queue was shed",
            ),
            video_queue_steps_down: counter(
                &r,
                "streamcore_video_queue_layer_steps_down_total",
                "Simulcast layer steps down because a subscriber's video queue did not drain",
            ),
            recording_dropped: counter(
                &r,
                "streamcore_recording_items_dropped_total",
                "Packets and track notices a recording's queue refused (the recorder was behind)",
            ),
            recordings_active: gauge(
                &r,
                "streamcore_recordings_active",
                "Recordings being written on this node",
            ),
            recordings_uploaded: counter(
                &r,
                "streamcore_recordings_uploaded_total",
                "Recordings the object store confirmed (every file and the manifest)",
            ),
            recording_upload_failures: counter(
                &r,
                "streamcore_recording_upload_failures_total",
                "Failed recording upload attempts (each is retried with backoff)",
            ),
            jobs_completed: counter(
                &r,
                "streamcore_transcode_jobs_completed_total",
                "Transcode jobs this node's worker completed",
            ),
            job_retries: counter(
                &r,
                "streamcore_transcode_job_retries_total",
                "Failed transcode attempts that will be retried after a backoff",
            ),
            jobs_dead_lettered: counter(
                &r,
                "streamcore_transcode_jobs_dead_lettered_total",
                "Transcode jobs that failed for good (sent to transcode.dead_letter)",
            ),
            jobs_running: gauge(
                &r,
                "streamcore_transcode_jobs_running",
                "Transcode jobs running on this node's worker",
            ),
            send_errors: counter(
                &r,
                "streamcore_udp_send_errors_total",
                "UDP sends that failed",
            ),
            sessions_created,
            events_published: counter(
                &r,
                "streamcore_events_published_total",
                "Outbox events the relay published to the bus",
            ),
            event_publish_failures: counter(
                &r,
                "streamcore_event_publish_failures_total",
                "Relay batches the bus refused (published again after a backoff)",
            ),
            events_pending: gauge(
                &r,
                "streamcore_events_pending",
                "Outbox events not yet published (all nodes of the database)",
            ),
            device_sockets: gauge(
                &r,
                "streamcore_device_sockets",
                "Device (phone) control sockets on this node",
            ),
            user_sockets: gauge(
                &r,
                "streamcore_user_sockets",
                "Browser (user) event sockets on this node",
            ),
            registry: r,
        }
    }

    /// Adds the growth of a worker's counters since `prev`.
    pub fn add_stats(&self, prev: &SfuStats, now: &SfuStats) {
        self.datagrams_in
            .inc_by(now.datagrams_in - prev.datagrams_in);
        self.bytes_in.inc_by(now.bytes_in - prev.bytes_in);
        self.datagrams_out
            .inc_by(now.datagrams_out - prev.datagrams_out);
        self.bytes_out.inc_by(now.bytes_out - prev.bytes_out);
        self.datagrams_dropped
            .inc_by(now.datagrams_dropped - prev.datagrams_dropped);
        self.rtp_in.inc_by(now.rtp_in - prev.rtp_in);
        self.rtp_forwarded
            .inc_by(now.rtp_forwarded - prev.rtp_forwarded);
        self.forward_errors
            .inc_by(now.forward_errors - prev.forward_errors);
        self.keyframe_requests
            .inc_by(now.keyframe_requests - prev.keyframe_requests);
        self.recording_dropped
            .inc_by(now.tap_refused - prev.tap_refused);
        self.video_queue_sheds
            .inc_by(now.backlog_sheds - prev.backlog_sheds);
        self.video_queue_dropped
            .inc_by(now.backlog_dropped - prev.backlog_dropped);
        self.video_queue_steps_down
            .inc_by(now.backlog_steps_down - prev.backlog_steps_down);
        self.connections
            .with_label_values(&["udp"])
            .inc_by(now.connected_udp - prev.connected_udp);
        self.connections
            .with_label_values(&["tcp"])
            .inc_by(now.connected_tcp - prev.connected_tcp);
        for t in media_core::turn::ClientTransport::ALL {
            let i = t as usize;
            self.connections
                .with_label_values(&[t.label()])
                .inc_by(now.connected_turn[i] - prev.connected_turn[i]);
        }
    }

    /// Counters of the embedded TURN server since `prev`, and its open allocations.
    pub fn add_turn_stats(
        &self,
        prev: &media_core::turn::server::TurnStats,
        now: &media_core::turn::server::TurnStats,
        open: [usize; 3],
    ) {
        for t in media_core::turn::ClientTransport::ALL {
            let i = t as usize;
            self.turn_allocations
                .with_label_values(&[t.label()])
                .set(open[i] as i64);
            self.turn_allocations_total
                .with_label_values(&[t.label()])
                .inc_by(now.allocations_total[i] - prev.allocations_total[i]);
        }
        self.turn_client_messages
            .inc_by(now.client_messages - prev.client_messages);
        for (label, a, b) in [
            ("to_peer", now.bytes_to_peers, prev.bytes_to_peers),
            ("to_client", now.bytes_to_clients, prev.bytes_to_clients),
        ] {
            self.turn_relayed_bytes
                .with_label_values(&[label])
                .inc_by(a - b);
        }
        for (label, a, b) in [
            ("unauthorized", now.unauthorized, prev.unauthorized),
            ("forbidden", now.forbidden, prev.forbidden),
            ("quota", now.over_quota, prev.over_quota),
        ] {
            self.turn_refusals.with_label_values(&[label]).inc_by(a - b);
        }
    }

    pub fn render(&self) -> String {
        if let Some(heap) = crate::malloc_arenas::heap_stats() {
            self.malloc_in_use_bytes
                .set(i64::try_from(heap.in_use).unwrap_or(i64::MAX));
            self.malloc_free_bytes
                .set(i64::try_from(heap.free).unwrap_or(i64::MAX));
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
