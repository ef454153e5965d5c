//! The cluster: the media nodes sharing this database and the node each room lives on.
//!
//! Every media node writes its row in `nodes` once a second (its heartbeat: addresses,
//! capacity, load, state; `streamcore::cluster` on the node). A node silent for
//! [`DEAD_AFTER`] is dead. A join token places its room ([`place`]): on the node the
//! room already lives on while that node is alive, else on the least-loaded active node
//! of the caller's region (any region when none there is up), and its URLs are that
//! node's. A node a request reaches for a room placed elsewhere sends it there
//! ([`DbPlacement`], `signaling::placement`).
//!
//! Invariants: a room has at most one home (`room_homes`, one conditional statement
//! decides between racers); a home on a live node is never taken over; a draining node
//! keeps the rooms it has and gets no new ones.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use media_core::RoomId;
use serde::Serialize;
use signaling::ApiError;
use signaling::placement::{Home, RoomPlacement};
use utoipa::ToSchema;

use crate::auth::now_millis;
use crate::openapi::ErrorBody;
use crate::state::{AppState, Caller, store_error};
use crate::store::{Db, Millis, NodeRow, Store};

/// How often a node writes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose last heartbeat is older than this is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// A dead node's row is deleted after this long (it stays listed as dead until then).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A node's standing, from its row and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Alive and taking new rooms.
    Active,
    /// Alive, keeping its rooms, taking no new ones.
    Draining,
    /// Silent for longer than [`DEAD_AFTER`].
    Dead,
}

/// The earliest heartbeat of a node still alive at `now`.
pub fn alive_since(now: Millis) -> Millis {
    now - DEAD_AFTER.as_millis() as Millis
}

pub fn status(node: &NodeRow, now: Millis) -> NodeStatus {
    if node.heartbeat_at < alive_since(now) {
        NodeStatus::Dead
    } else if node.state == "draining" {
        NodeStatus::Draining
    } else {
        NodeStatus::Active
    }
}

/// How full a node is, 0 (idle) to 1 (a core busy, or every peer slot taken): the
/// larger of its busiest worker's CPU share and its peers over its capacity.
pub fn load(node: &NodeRow) -> f64 {
    let peers = if node.capacity > 0 {
        node.peers as f64 / node.capacity as f64
    } else {
        0.0
    };
    (node.cpu_percent / 100.0).max(peers)
}

/// The node a new room goes to: the least loaded active node in `region`, or in any
/// region when none is up there (an empty `region` means any). Ties go to fewer peers,
/// then to the lower id, so the choice is deterministic.
pub fn choose<'a>(nodes: &'a [NodeRow], region: &str, now: Millis) -> Option<&'a NodeRow> {
    let active = || {
        nodes
            .iter()
            .filter(move |n| status(n, now) == NodeStatus::Active)
    };
    let least = |it: &mut dyn Iterator<Item = &'a NodeRow>| {
        it.min_by(|a, b| {
            load(a)
                .total_cmp(&load(b))
                .then(a.peers.cmp(&b.peers))
                .then(a.id.cmp(&b.id))
        })
    };
    let local = if region.is_empty() {
        None
    } else {
        least(&mut active().filter(|n| n.region == region))
    };
    local.or_else(|| least(&mut active()))
}

/// Where a listener (a grant that only subscribes) of a room living on `home` plays
/// it: on the least-loaded active node of the listener's `region` when the home is in
/// another region, or on the least-loaded other node when the home is full; that node
/// imports the room over the relay. Else on the home. Both ends need a relay.
pub fn listen_node<'a>(
    nodes: &'a [NodeRow],
    home: &str,
    region: &str,
    now: Millis,
) -> Option<&'a NodeRow> {
    let relayed = |n: &&NodeRow| !n.relay_addr.is_empty() && status(n, now) == NodeStatus::Active;
    let home = nodes.iter().find(|n| n.id == home).filter(relayed)?;
    let others: Vec<NodeRow> = nodes
        .iter()
        .filter(relayed)
        .filter(|n| n.id != home.id)
        .cloned()
        .collect();
    let full = load(home) >= 1.0;
    let elsewhere = !region.is_empty() && home.region != region;
    if !(full || elsewhere) {
        return None;
    }
    let chosen = if elsewhere {
        choose(&others, region, now).filter(|n| n.region == region || full)
    } else {
        choose(&others, &home.region, now)
    }?;
    nodes.iter().find(|n| n.id == chosen.id)
}

/// The node a room lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub node_id: String,
    /// Its public base URL (`https://host:port`).
    pub base_url: String,
    /// Its embedded TURN server's URLs.
    pub turn_urls: Vec<String>,
}

/// Where a join token for `room` sends its holder: the node the room lives on,
/// placing it first when it has no live home. 503 `no_media_node` when no node is up.
/// `me` is the answering server: if it is a node, it is alive whatever its last
/// heartbeat says (a slow database write must not make a lone node refuse tokens).
pub async fn place(db: &Db, room: &str, region: &str, me: &str) -> Result<Placed, ApiError> {
    let mut nodes = db.nodes().await.map_err(store_error)?;
    let now = now_millis();
    for n in nodes.iter_mut().filter(|n| n.id == me) {
        n.heartbeat_at = n.heartbeat_at.max(now);
    }
    let url_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id && status(n, now) != NodeStatus::Dead)
            .map(|n| Placed {
                node_id: n.id.clone(),
                base_url: n.public_url.clone(),
                turn_urls: n.turn_urls.clone(),
            })
    };
    if let Some(home) = db.room_home(room).await.map_err(store_error)?
        && let Some(url) = url_of(&home)
    {
        return Ok(url);
    }
    let Some(chosen) = choose(&nodes, region, now) else {
        tracing::warn!(%room, region, nodes = nodes.len(), "no media node to place a room on");
        return Err(ApiError::unavailable(
            "no_media_node",
            "no media server is available right now; try again in a few seconds",
        ));
    };
    let home = db
        .place_room(room, &chosen.id, now, alive_since(now))
        .await
        .map_err(store_error)?;
    if home != chosen.id {
        // Another request placed it first, on a node alive a moment ago.
        return url_of(&home).ok_or_else(|| {
            ApiError::unavailable(
                "no_media_node",
                "the room's media server stopped answering; try again in a few seconds",
            )
        });
    }
    tracing::info!(%room, node = %chosen.id, region = %chosen.region, load = load(chosen), "room placed");
    Ok(Placed {
        node_id: chosen.id.clone(),
        base_url: chosen.public_url.clone(),
        turn_urls: chosen.turn_urls.clone(),
    })
}

/// Moves the rooms placed on `me` (a draining node) to the least-loaded active node of
/// `region` (any region when none is up there): the rooms moved and where they went.
/// `people` says how many each room holds here, counted against the node it goes to
/// so the next room sees that node fuller. A room no node can take stays where it is.
pub async fn move_rooms_away(
    db: &Db,
    me: &str,
    region: &str,
    people: &std::collections::HashMap<String, usize>,
) -> Result<Vec<(String, Placed)>, crate::store::StoreError> {
    let rooms = db.node_rooms(me).await?;
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let mut nodes: Vec<NodeRow> = db
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.id != me)
        .collect();
    let now = now_millis();
    let mut moved = Vec::new();
    for room in rooms {
        let Some(to) = choose(&nodes, region, now).map(|n| n.id.clone()) else {
            tracing::warn!(%room, node = me, "no node to move the room to; it stays");
            continue;
        };
        if db.move_room(&room, me, &to, now).await? {
            let n = nodes
                .iter_mut()
                .find(|n| n.id == to)
                .expect("chosen from the list");
            // Spread the rooms: count the room's people against the node at once, as
            // peers and as their share of its CPU (at its current cost per peer).
            let arriving = people.get(&room).copied().unwrap_or(1).max(1) as i64;
            if n.peers > 0 {
                n.cpu_percent += n.cpu_percent * arriving as f64 / n.peers as f64;
            }
            n.peers += arriving;
            tracing::info!(%room, from = me, to = %to, "room moved off a draining node");
            moved.push((
                room,
                Placed {
                    node_id: to,
                    base_url: n.public_url.clone(),
                    turn_urls: n.turn_urls.clone(),
                },
            ));
        }
    }
    Ok(moved)
}

/// A served room's home on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivesElsewhere {
    pub room: String,
    pub node_id: String,
    /// The node's public base URL.
    pub base_url: String,
}

/// Which of the rooms this node serves (it has sessions or participants in them)
/// live elsewhere, and on which node. A served room without a live home
/// is claimed again (its home was released while someone joined, or its node died),
/// unless this node drains. Nodes call this every second, so a room that came to be
/// served on two nodes is whole again within seconds: the node that is not its home
/// sends its participants to the one that is.
pub async fn rooms_living_elsewhere(
    db: &Db,
    me: &str,
    served: &[String],
    draining: bool,
) -> Result<Vec<LivesElsewhere>, crate::store::StoreError> {
    if served.is_empty() {
        return Ok(Vec::new());
    }
    let mine = db.node_rooms(me).await?;
    let now = now_millis();
    let mut nodes = None;
    let mut elsewhere = Vec::new();
    for room in served.iter().filter(|r| !mine.contains(r)) {
        let home = if draining {
            match db.room_home(room).await? {
                Some(h) => h,
                None => continue,
            }
        } else {
            db.place_room(room, me, now, alive_since(now)).await?
        };
        if home == me {
            tracing::info!(%room, node = me, "room served here taken back");
            continue;
        }
        if nodes.is_none() {
            nodes = Some(db.nodes().await?);
        }
        if let Some(n) = nodes
            .as_ref()
            .and_then(|ns| ns.iter().find(|n| n.id == home))
            .filter(|n| status(n, now) != NodeStatus::Dead)
        {
            elsewhere.push(LivesElsewhere {
                room: room.clone(),
                node_id: n.id.clone(),
                base_url: n.public_url.clone(),
            });
        }
    }
    Ok(elsewhere)
}

/// A node's answer to "where does this room live?" from the database: the room's home
/// if it is alive, else this node, which takes the room — unless it drains: then the
/// room goes to another node.
#[derive(Debug, Clone)]
pub struct DbPlacement {
    pub db: Db,
    pub node_id: Arc<str>,
    /// This node's region, where a draining node sends rooms it has no home for.
    pub region: String,
    /// Set when this node starts draining.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl DbPlacement {
    async fn lookup(&self, room: &str) -> Result<Home, crate::store::StoreError> {
        let now = now_millis();
        let me = &*self.node_id;
        let home = self.db.room_home(room).await?;
        if home.as_deref() == Some(me) {
            return Ok(Home::Here);
        }
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            // Takes no rooms: one with a live home goes there, one without to the
            // least-loaded active node (which a token would choose too).
            return Ok(match place(&self.db, room, &self.region, "").await {
                Ok(p) if p.node_id != me => Home::Elsewhere {
                    node_id: p.node_id,
                    base_url: p.base_url,
                },
                // No other node: the media plane says it drains.
                _ => Home::Here,
            });
        }
        let home = self.db.place_room(room, me, now, alive_since(now)).await?;
        if home == me {
            tracing::info!(%room, node = me, "room taken on by this node");
            return Ok(Home::Here);
        }
        // `place_room` kept the home only because that node was alive. If it left
        // cleanly since (its homes with it), serve here: `rooms_living_elsewhere`
        // claims the room within a second.
        let nodes = self.db.nodes().await?;
        Ok(nodes
            .into_iter()
            .find(|n| n.id == home)
            .map_or(Home::Here, |n| Home::Elsewhere {
                node_id: n.id,
                base_url: n.public_url,
            }))
    }
}

impl RoomPlacement for DbPlacement {
    fn home<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Home, String>> + Send + 'a>>
    {
        Box::pin(async move { self.lookup(room.as_str()).await.map_err(|e| e.to_string()) })
    }
}

/// Marks a request one server sent on to another, so it is not sent on again.
pub const FORWARDED_HEADER: &str = "x-streamcore-forwarded-by";

/// The base URL of the live node a request about a room's media belongs on, when that
/// is not this server: the room's home (placing a room nobody is in, as a join token
/// would), or `node` when the request concerns what a given node holds (a recording).
/// `None` to serve it here: outside a cluster, on the right node, or for a request
/// another server sent on already.
pub async fn media_node_for(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    room: &str,
    node: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if !st.config.placement || headers.contains_key(FORWARDED_HEADER) {
        return Ok(None);
    }
    let me = &*st.node_id;
    let target = match node {
        Some(n) => n.to_owned(),
        None => place(&st.db, room, &st.config.region, me).await?.node_id,
    };
    if target == me {
        return Ok(None);
    }
    let now = now_millis();
    let nodes = st.db.nodes().await.map_err(store_error)?;
    match nodes
        .into_iter()
        .find(|n| n.id == target && status(n, now) != NodeStatus::Dead)
    {
        Some(n) => Ok(Some(n.public_url)),
        None => Err(ApiError::unavailable(
            "media_node_down",
            "the media server of this room is down; try again in a few seconds",
        )),
    }
}

/// Sends a request on to `url` on another node, with the caller's credentials, and
/// answers with what it answered: the page talks to its own server only.
pub async fn forward(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    method: reqwest::Method,
    url: String,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    });
    let mut req = client
        .request(method, &url)
        .header(FORWARDED_HEADER, &*st.node_id)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}");
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        req = req.header(reqwest::header::AUTHORIZATION, auth.as_bytes());
    }
    let resp = req.send().await.map_err(|e| {
        tracing::warn!(%url, error = %e, "a request could not be sent on to the room's media server");
        ApiError::unavailable(
            "media_node_unreachable",
            "the media server of this room could not be reached; try again in a few seconds",
        )
    })?;
    let status = axum::http::StatusCode::from_u16(resp.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body = resp.bytes().await.map_err(|e| {
        tracing::warn!(%url, error = %e, "the room's media server's answer was cut off");
        ApiError::unavailable(
            "media_node_unreachable",
            "the media server of this room stopped answering; try again",
        )
    })?;
    tracing::info!(%url, status = status.as_u16(), "request sent on to the room's media server");
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A media node as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub region: String,
    pub zone: String,
    pub public_url: String,
    pub media_addrs: Vec<String>,
    pub turn_urls: Vec<String>,
    /// Where its relay listens (`ip:port`); empty without one.
    pub relay_addr: String,
    /// Peers it is sized for.
    pub capacity: i64,
    pub workers: i64,
    /// Its busiest media worker's share of a core over the last second, 0–100.
    pub cpu_percent: f64,
    pub peers: i64,
    /// Bits per second it sent over the last second.
    pub forwarded_bps: i64,
    /// 0–1: the larger of `cpu_percent`/100 and `peers`/`capacity`.
    pub load: f64,
    pub status: NodeStatus,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
    /// How long ago its last heartbeat was, by this server's clock.
    pub heartbeat_age_ms: Millis,
}

impl NodeView {
    pub fn new(n: NodeRow, now: Millis) -> NodeView {
        NodeView {
            load: load(&n),
            status: status(&n, now),
            heartbeat_age_ms: (now - n.heartbeat_at).max(0),
            id: n.id,
            region: n.region,
            zone: n.zone,
            public_url: n.public_url,
            media_addrs: n.media_addrs,
            turn_urls: n.turn_urls,
            relay_addr: n.relay_addr,
            capacity: n.capacity,
            workers: n.workers,
            cpu_percent: n.cpu_percent,
            peers: n.peers,
            forwarded_bps: n.forwarded_bps,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
        }
    }
}

/// The cluster's media nodes, dead ones included until they are forgotten.
#[utoipa::path(get, path = "/api/v1/admin/nodes", tag = "admin", responses((status = 200, body = Vec<NodeView>), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_nodes(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    caller.require_admin()?;
    let now = now_millis();
    let nodes = st.db.nodes().await.map_err(store_error)?;
    Ok(Json(
        nodes.into_iter().map(|n| NodeView::new(n, now)).collect(),
    ))
}

/// Drains a node: it takes no new rooms, moves the rooms it has to other nodes (their
/// `/rtc` participants are told to `move`), and stops once empty or after its grace.
#[utoipa::path(post, path = "/api/v1/admin/nodes/{id}/drain", tag = "admin", params(("id" = String, Path, description = "node id")), responses((status = 202, body = NodeView), (status = 404, description = "no such node", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn drain_node(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<(axum::http::StatusCode, Json<NodeView>), ApiError> {
    caller.require_admin()?;
    let now = now_millis();
    let nodes = st.db.nodes().await.map_err(store_error)?;
    if !nodes.iter().any(|n| n.id == id) {
        return Err(ApiError::not_found("no such node"));
    }
    if !nodes
        .iter()
        .any(|n| n.id != id && status(n, now) == NodeStatus::Active)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_other_node",
            "no other server is up to take this one's rooms; start another first (or stop this one, ending its rooms)",
        ));
    }
    if !st.db.drain_node(&id).await.map_err(store_error)? {
        return Err(ApiError::not_found("no such node"));
    }
    tracing::info!(node = %id, by = %caller.user_id, "node drain requested");
    let node = st
        .db
        .nodes()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ApiError::not_found("no such node"))?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(NodeView::new(node, now)),
    ))
}

/// Forgets a dead node (one that will not come back): its row and its rooms' homes;
/// its recordings still `recording` fail, with the reason. A node still beating
/// cannot be removed: drain it.
#[utoipa::path(delete, path = "/api/v1/admin/nodes/{id}", tag = "admin", params(("id" = String, Path, description = "node id")), responses((status = 204, description = "removed"), (status = 404, description = "no such node", body = ErrorBody), (status = 409, description = "the node is alive", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 401, description = "no or bad access token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove_node(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    caller.require_admin()?;
    let now = now_millis();
    let nodes = st.db.nodes().await.map_err(store_error)?;
    let Some(node) = nodes.iter().find(|n| n.id == id) else {
        return Err(ApiError::not_found("no such node"));
    };
    if status(node, now) != NodeStatus::Dead {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "node_alive",
            "this server is still up; drain it instead",
        ));
    }
    st.db.remove_node(&id).await.map_err(store_error)?;
    tracing::info!(node = %id, by = %caller.user_id, "dead node removed from the registry");
    // Its recordings in progress will not be finished by it: say so, not nothing.
    let open = st
        .db
        .node_recordings(&id, "recording")
        .await
        .map_err(store_error)?;
    for r in open {
        let reason = "interrupted: its media server died and was removed from the cluster; what it recorded stays in that server's spool";
        crate::routes::recordings::mark_failed(&st, &r.id, &r.sfu_room, reason)
            .await
            .map_err(store_error)?;
        tracing::warn!(recording = %r.id, room = %r.sfu_room, node = %id, "recording of a removed node marked failed");
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, cpu: f64, peers: i64, beat: Millis) -> NodeRow {
        NodeRow {
            id: id.into(),
            region: region.into(),
            zone: String::new(),
            public_url: format!("http://{id}"),
            media_addrs: vec![],
            turn_urls: vec![],
            relay_addr: String::new(),
            capacity: 100,
            workers: 1,
            cpu_percent: cpu,
            peers,
            forwarded_bps: 0,
            state: "active".into(),
            started_at: 0,
            heartbeat_at: beat,
        }
    }

    const NOW: Millis = 1_000_000;

    fn relayed(mut n: NodeRow) -> NodeRow {
        n.relay_addr = format!("10.0.0.1:{}", 7000 + n.id.len());
        n
    }

    #[test]
    fn a_listener_far_from_the_room_plays_on_a_node_of_its_region() {
        let nodes = [
            relayed(node("a", "eu", 10.0, 5, NOW)),
            relayed(node("c", "us", 30.0, 5, NOW)),
            relayed(node("d", "us", 5.0, 5, NOW)),
        ];
        let id = |n: Option<&NodeRow>| n.map(|n| n.id.clone());
        assert_eq!(id(listen_node(&nodes, "a", "us", NOW)), Some("d".into()));
        assert_eq!(
            id(listen_node(&nodes, "a", "eu", NOW)),
            None,
            "near the home"
        );
        assert_eq!(
            id(listen_node(&nodes, "a", "", NOW)),
            None,
            "no region: the home"
        );
        assert_eq!(
            id(listen_node(&nodes, "a", "asia", NOW)),
            None,
            "no node in its region: the home"
        );
        // A node without a relay neither exports nor imports.
        let mut plain = nodes.clone();
        plain[0].relay_addr.clear();
        assert_eq!(id(listen_node(&plain, "a", "us", NOW)), None);
        // A dead node is not chosen.
        let mut dead = nodes.clone();
        dead[2].heartbeat_at = NOW - 10_000;
        assert_eq!(id(listen_node(&dead, "a", "us", NOW)), Some("c".into()));
    }

    #[test]
    fn a_full_home_sends_listeners_to_the_least_loaded_other_node() {
        let nodes = [
            relayed(node("a", "eu", 100.0, 5, NOW)),
            relayed(node("b", "eu", 20.0, 5, NOW)),
            relayed(node("c", "us", 10.0, 5, NOW)),
        ];
        let id = |n: Option<&NodeRow>| n.map(|n| n.id.clone());
        assert_eq!(id(listen_node(&nodes, "a", "eu", NOW)), Some("b".into()));
        assert_eq!(id(listen_node(&nodes, "a", "us", NOW)), Some("c".into()));
    }

    #[test]
    fn a_node_is_dead_three_seconds_after_its_last_heartbeat() {
        let n = node("a", "", 0.0, 0, NOW - 3000);
        assert_eq!(status(&n, NOW), NodeStatus::Active);
        assert_eq!(status(&n, NOW + 1), NodeStatus::Dead);
        let mut d = node("b", "", 0.0, 0, NOW);
        d.state = "draining".into();
        assert_eq!(status(&d, NOW), NodeStatus::Draining);
    }

    #[test]
    fn load_is_the_fuller_of_cpu_and_peers() {
        assert_eq!(load(&node("a", "", 30.0, 50, NOW)), 0.5);
        assert_eq!(load(&node("a", "", 70.0, 50, NOW)), 0.7);
        let mut no_capacity = node("a", "", 10.0, 500, NOW);
        no_capacity.capacity = 0;
        assert_eq!(load(&no_capacity), 0.1);
    }

    #[test]
    fn the_least_loaded_live_active_node_of_the_region_is_chosen() {
        let mut draining = node("d", "eu", 0.0, 0, NOW);
        draining.state = "draining".into();
        let nodes = vec![
            node("a", "eu", 40.0, 10, NOW),
            node("b", "eu", 20.0, 10, NOW),
            node("c", "us", 0.0, 0, NOW),
            node("e", "eu", 0.0, 0, NOW - 5000), // dead
            draining,
        ];
        assert_eq!(choose(&nodes, "eu", NOW).unwrap().id, "b");
        assert_eq!(choose(&nodes, "us", NOW).unwrap().id, "c");
        // No node up in the region: any region.
        assert_eq!(choose(&nodes, "ap", NOW).unwrap().id, "c");
        assert_eq!(choose(&nodes, "", NOW).unwrap().id, "c");
        assert!(choose(&nodes[3..], "eu", NOW).is_none());
    }

    #[test]
    fn ties_go_to_fewer_peers_then_the_lower_id() {
        let nodes = vec![
            node("b", "", 0.0, 0, NOW),
            node("a", "", 0.0, 0, NOW),
            node("c", "", 0.0, 0, NOW),
        ];
        assert_eq!(choose(&nodes, "", NOW).unwrap().id, "a");
        let nodes = vec![node("a", "", 10.0, 3, NOW), node("b", "", 10.0, 2, NOW)];
        assert_eq!(choose(&nodes, "", NOW).unwrap().id, "b");
    }
}
