//! This node as a member of the cluster: its heartbeat, and what it learns of the others.
//!
//! Once a second a media node writes its row in `nodes` (`control_api::cluster`): its
//! public URL, media addresses, capacity and the last second's load — its busiest
//! worker's CPU share, its peers, the bits it sent — and whether it drains. In the same
//! loop it reads every node's row into the `streamcore_cluster_*` gauges and the live
//! nodes' origins into its pages' policy (`web::ClusterOrigins`: a page may use a room
//! on another node). The first row is written before the node takes requests, so a
//! join token made the moment it is up can be placed on it. A node that stops cleanly
//! deletes its row and its rooms' homes; one that dies falls silent and is dead three
//! seconds later. A control-API-only server reads the registry without a row of its
//! own ([`ClusterMember::observe`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use control_api::cluster::{FORGET_AFTER, HEARTBEAT, NodeStatus, NodeView};
use control_api::store::{Db, NodeRow, Store};
use prometheus::core::Collector;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;
use crate::metrics::Metrics;

/// Where clients reach a node: what its registry row says of it.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub public_url: &'a str,
    pub media_addrs: &'a [std::net::SocketAddr],
    /// Its embedded TURN server's URLs.
    pub turn_urls: &'a [String],
    /// Where its relay listens, as the other nodes reach it.
    pub relay_addr: Option<std::net::SocketAddr>,
}

/// The heartbeat task of a running node.
pub struct ClusterMember {
    db: Db,
    /// The node's id; `None` for a server that only observes.
    id: Option<Arc<str>>,
    draining: watch::Sender<bool>,
    /// Set when the registry says this node drains (an operator asked the API).
    drain_requested: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterMember {
    /// Registers the node (its first heartbeat) and starts beating.
    pub async fn join(
        settings: &Settings,
        db: Db,
        id: Arc<str>,
        reach: Reach<'_>,
        metrics: Metrics,
        origins: web::ClusterOrigins,
    ) -> anyhow::Result<ClusterMember> {
        let Reach {
            public_url,
            media_addrs,
            turn_urls,
            relay_addr,
        } = reach;
        let workers = media_addrs.len().max(1);
        let capacity = match settings.cluster.capacity {
            0 => workers * settings.media.max_peers_per_worker,
            n => n,
        };
        let now = control_api::auth::now_millis();
        let row = NodeRow {
            id: id.to_string(),
            region: settings.cluster.region.clone(),
            zone: settings.cluster.zone.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            media_addrs: media_addrs.iter().map(ToString::to_string).collect(),
            turn_urls: turn_urls.to_vec(),
            relay_addr: relay_addr.map(|a| a.to_string()).unwrap_or_default(),
            capacity: capacity as i64,
            workers: workers as i64,
            cpu_percent: 0.0,
            peers: 0,
            forwarded_bps: 0,
            state: "active".into(),
            started_at: now,
            heartbeat_at: now,
        };
        db.beat_node(&row)
            .await
            .map_err(|e| anyhow::anyhow!("registering node {id} in the cluster's database: {e}"))?;
        info!(node = %id, region = %settings.cluster.region, capacity, "joined the cluster");
        Ok(Self::spawn(db, Some(id), Some((row, metrics)), origins))
    }

    /// Reads the registry into `origins` once a second, without a row of its own.
    pub fn observe(db: Db, origins: web::ClusterOrigins) -> ClusterMember {
        Self::spawn(db, None, None, origins)
    }

    fn spawn(
        db: Db,
        id: Option<Arc<str>>,
        beating: Option<(NodeRow, Metrics)>,
        origins: web::ClusterOrigins,
    ) -> ClusterMember {
        let (draining, draining_rx) = watch::channel(false);
        let (requested, drain_requested) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            db.clone(),
            beating,
            origins,
            (draining_rx, requested),
            stop_rx,
        ));
        ClusterMember {
            db,
            id,
            draining,
            drain_requested,
            stop,
            task,
        }
    }

    /// Resolves when the registry says this node drains though it was not told to
    /// here (`POST /api/v1/admin/nodes/{id}/drain`).
    pub async fn drain_requested(&self) {
        let mut r = self.drain_requested.clone();
        let _ = r.wait_for(|d| *d).await;
    }

    /// From now on the node says it drains: no new room is placed on it.
    pub async fn drain(&self) {
        let _ = self.draining.send(true);
        let Some(id) = &self.id else { return };
        if let Err(e) = self.db.drain_node(id).await {
            warn!(node = %id, error = %e, "could not mark the node draining");
        }
    }

    /// Stops beating and deletes the node's row and its rooms' homes.
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let Some(id) = &self.id else { return };
        match self.db.remove_node(id).await {
            Ok(()) => info!(node = %id, "left the cluster"),
            Err(e) => {
                warn!(node = %id, error = %e, "could not leave the cluster; it will be taken for dead")
            }
        }
    }
}

/// Once a second: write this node's row (when it has one), then read everyone's.
async fn run(
    db: Db,
    mut beating: Option<(NodeRow, Metrics)>,
    origins: web::ClusterOrigins,
    (draining, requested): (watch::Receiver<bool>, watch::Sender<bool>),
    mut stop: watch::Receiver<bool>,
) {
    let mut sent = (
        Instant::now(),
        beating.as_ref().map_or(0, |(_, m)| m.bytes_out.get()),
    );
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        beats += 1;
        let now_ms = control_api::auth::now_millis();
        // A database that does not answer must not hold up the node's shutdown.
        let beat = async {
            if let Some((row, metrics)) = &mut beating {
                let now = Instant::now();
                let bytes = metrics.bytes_out.get();
                let secs = now.duration_since(sent.0).as_secs_f64();
                if secs > 0.0 {
                    row.forwarded_bps = ((bytes.saturating_sub(sent.1)) as f64 * 8.0 / secs) as i64;
                }
                sent = (now, bytes);
                row.cpu_percent = busiest_worker(metrics) * 100.0;
                row.peers = sum(&metrics.peers) as i64;
                if *draining.borrow() {
                    row.state = "draining".into();
                }
                row.heartbeat_at = now_ms;
                match db.beat_node(row).await {
                    Ok(()) if failing => {
                        failing = false;
                        info!(node = %row.id, "heartbeat written again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        warn!(node = %row.id, error = %e, "heartbeat not written; the cluster takes this node for dead after 3 s");
                    }
                    Err(_) => {}
                }
            }
            if let Ok(nodes) = db.nodes().await {
                if let Some((row, _)) = &beating
                    && !*draining.borrow()
                    && nodes
                        .iter()
                        .any(|n| n.id == row.id && n.state == "draining")
                {
                    requested.send_replace(true);
                }
                origins.set(
                    nodes
                        .iter()
                        .filter(|n| control_api::cluster::status(n, now_ms) != NodeStatus::Dead)
                        .map(|n| n.public_url.as_str()),
                );
                if let Some((_, metrics)) = &beating {
                    export(metrics, nodes, now_ms);
                }
            }
            if beats % 60 == 1 {
                let _ = db
                    .forget_nodes(now_ms - FORGET_AFTER.as_millis() as i64)
                    .await;
            }
        };
        tokio::select! {
            () = beat => {}
            _ = stop.changed() => return,
        }
    }
}

/// Every second, checks where the rooms this node serves live, and takes back served
/// rooms that lost their home (`control_api::cluster::rooms_living_elsewhere`): a room
/// served on two nodes (its home released while someone joined here, or taken over
/// while this node's heartbeat was late) is whole again within seconds.
///
/// A room imported over the relay from its home stays served here; if its home moved,
/// the import follows it (or ends, when the room came to live here). Participants of a
/// room that lives elsewhere and is not imported (no relay, or this node drains) are
/// sent to its node.
///
/// The same pass ends the sessions of served rooms whose passes were revoked on
/// another server (`control_api::live_rooms::check_revocations`).
pub fn keep_rooms_whole(
    api: control_api::AppState,
    rooms: signaling::room::RoomState<crate::media::MediaWorkers>,
    workers: Arc<crate::media::MediaWorkers>,
    relay: Option<crate::relay::Relay>,
) -> tokio::task::JoinHandle<()> {
    let (db, me) = (api.db.clone(), api.node_id.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut served: Vec<String> = workers
                .session_rooms()
                .into_iter()
                .chain(rooms.participant_rooms())
                .map(|(r, _)| r.as_str().to_owned())
                .collect();
            served.sort();
            served.dedup();
            control_api::live_rooms::check_revocations(&api, &served).await;
            let draining = workers.is_draining();
            let elsewhere =
                match control_api::cluster::rooms_living_elsewhere(&db, &me, &served, draining)
                    .await
                {
                    Ok(e) => e,
                    Err(e) => {
                        warn!(error = %e, "could not check where this node's rooms live");
                        continue;
                    }
                };
            let imported = relay
                .as_ref()
                .map(crate::relay::Relay::imported_rooms)
                .unwrap_or_default();
            let mut moves = std::collections::HashMap::new();
            for e in elsewhere {
                let Ok(room) = media_core::RoomId::parse(&e.room) else {
                    continue;
                };
                if !draining
                    && let Some(relay) = &relay
                    && imported.iter().any(|(r, _)| *r == room)
                {
                    relay.follow_home(&room, Some(&e.node_id)).await;
                    continue;
                }
                warn!(room = %e.room, to = %e.node_id, "room served here lives on another node; its participants move there");
                moves.insert(
                    room,
                    signaling::room::Move::to_node(&e.base_url, "room_elsewhere"),
                );
            }
            // A served room the relay imports, living nowhere else: it lives here now.
            if !draining && let Some(relay) = &relay {
                for (room, _) in &imported {
                    let here = served.iter().any(|s| s == room.as_str())
                        && !moves.contains_key(room)
                        && db
                            .room_home(room.as_str())
                            .await
                            .is_ok_and(|h| h.as_deref() == Some(&*me));
                    if here {
                        relay.follow_home(room, None).await;
                    }
                }
            }
            rooms.move_rooms(moves);
        }
    })
}

/// The registry as gauges; rows gone since the last read are gone from the gauges,
/// and a dead node has only its heartbeat age.
fn export(metrics: &Metrics, nodes: Vec<NodeRow>, now: i64) {
    metrics.cluster_node_load.reset();
    metrics.cluster_node_peers.reset();
    metrics.cluster_node_heartbeat_age.reset();
    let mut counts = [0i64; 3];
    for n in nodes {
        let v = NodeView::new(n, now);
        counts[match v.status {
            NodeStatus::Active => 0,
            NodeStatus::Draining => 1,
            NodeStatus::Dead => 2,
        }] += 1;
        // A dead node's last load is stale: it must not make the cluster look full
        // (or empty) to an alert over the nodes' loads.
        if v.status != NodeStatus::Dead {
            metrics
                .cluster_node_load
                .with_label_values(&[&v.id])
                .set(v.load);
            metrics
                .cluster_node_peers
                .with_label_values(&[&v.id])
                .set(v.peers);
        }
        metrics
            .cluster_node_heartbeat_age
            .with_label_values(&[&v.id])
            .set(Duration::from_millis(v.heartbeat_age_ms as u64).as_secs_f64());
    }
    for (status, n) in ["active", "draining", "dead"].iter().zip(counts) {
        metrics.cluster_nodes.with_label_values(&[status]).set(n);
    }
}

/// The largest of the workers' load gauges (a share of a core, 0–1).
fn busiest_worker(metrics: &Metrics) -> f64 {
    metrics
        .worker_load
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_gauge().get_value())
        .fold(0.0, f64::max)
}

/// The sum of an integer gauge over its labels.
fn sum(gauges: &prometheus::IntGaugeVec) -> f64 {
    gauges
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_gauge().get_value())
        .sum()
}
