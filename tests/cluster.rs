//! A cluster on loopback: one control plane (`streamcore api`) and three media nodes
//! (`streamcore serve`), separate processes sharing one PostgreSQL database and one set
//! of keys. Nodes register and beat; join tokens place rooms on the least-loaded node
//! of the caller's region and carry that node's URLs; WHIP requests that reach another
//! node are redirected there (307); a node killed with SIGKILL is seen dead and its
//! rooms are placed again; a node stopped cleanly leaves the registry. WHEP players
//! and `/rtc` participants on a node the room does not live on are served over the
//! QUIC relay from the room's node, one copy per node, both ways; revoked passes end
//! on every node.

mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::remote::{Ws, get, post, recv, send};
use serde_json::{Value, json};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_streamcore");
const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "a long admin password";
const TURN_SECRET: &str = "one secret for the cluster";

/// One `streamcore` process, killed when dropped.
struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `streamcore <role>` on free loopback ports and waits for its address.
fn spawn(
    role: &str,
    dir: &Path,
    db: &str,
    node: &str,
    region: &str,
    env: &[(String, String)],
) -> Proc {
    spawn_at(None, "127.0.0.1", role, dir, db, node, region, env)
}

/// [`spawn`] on `ip` (a free port), inside the network namespace `netns` if given.
#[allow(clippy::too_many_arguments)] // spawn's arguments and where
fn spawn_at(
    netns: Option<&str>,
    ip: &str,
    role: &str,
    dir: &Path,
    db: &str,
    node: &str,
    region: &str,
    env: &[(String, String)],
) -> Proc {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    // A short drain unless the caller's settings say otherwise (they come after).
    c.env("STREAMCORE_SHUTDOWN_GRACE_SECS", "1");
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c.args([
        role,
        "--http",
        &format!("{ip}:0"),
        "--log-json",
        "--database-url",
        db,
    ]);
    if role == "serve" {
        c.args(["--media-port", "0", "--workers", "1"]);
    }
    let mut child = c
        .arg("--data-dir")
        .arg(dir)
        .env("STREAMCORE_NODE_ID", node)
        .env("STREAMCORE_CLUSTER__REGION", region)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep reading the log to its end: a closed pipe would break the server's logging.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // SC_DEBUG_RELAY=1 shows the nodes' relay log lines (with --nocapture).
            if std::env::var("SC_DEBUG_RELAY").is_ok() && line.contains("relay") {
                eprintln!("{line}");
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(http) = v["fields"]["http"].as_str()
            {
                let _ = tx.send(format!("http://{http}"));
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{role} {node} logged no address"));
    Proc { child, base }
}

/// The control plane, three media nodes (`a` and `b` in `eu`, `c` in `us`) and an
/// admin's access token.
struct Cluster {
    api: Proc,
    nodes: Vec<(String, Proc)>,
    http: reqwest::Client,
    admin: String,
    dir: PathBuf,
    db_url: String,
    _db: common::pg::PgTestDb,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(false).await
    }

    /// With `turn`, every node runs its embedded TURN server (one secret for the
    /// cluster).
    async fn start_with(turn: bool) -> Cluster {
        Self::start_with_env(turn, &[]).await
    }

    /// [`Cluster::start_with`], each media node with the settings `node_env` too.
    async fn start_with_env(turn: bool, node_env: &[(&str, &str)]) -> Cluster {
        let env = |node: bool| -> Vec<(String, String)> {
            // The nodes share the data dir, so their spool: each takes over a dead
            // one's recordings.
            let mut e = Vec::new();
            if node {
                e.push(("STREAMCORE_RECORDING__SHARED_SPOOL".into(), "true".into()));
                e.extend(node_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            }
            if !turn {
                return e;
            }
            e.push((
                "STREAMCORE_TURN__SHARED_SECRET".to_owned(),
                TURN_SECRET.to_owned(),
            ));
            if node {
                let port = support::free_port().to_string();
                e.push(("STREAMCORE_TURN__EMBEDDED".into(), "true".into()));
                e.push(("STREAMCORE_TURN__UDP_PORT".into(), port.clone()));
                e.push(("STREAMCORE_TURN__TCP_PORT".into(), port));
            }
            e
        };
        let (db, guard) = common::pg::fresh_pg_url().await;
        let dir = std::env::temp_dir().join(format!("sc-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(BIN)
            .args([
                "admin",
                "create",
                "--email",
                ADMIN_EMAIL,
                "--database-url",
                &db,
            ])
            .arg("--data-dir")
            .arg(&dir)
            .env("STREAMCORE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let api = spawn("api", &dir, &db, "control", "eu", &env(false));
        let nodes = [("a", "eu"), ("b", "eu"), ("c", "us")]
            .into_iter()
            .map(|(id, region)| {
                (
                    id.to_owned(),
                    spawn("serve", &dir, &db, id, region, &env(true)),
                )
            })
            .collect();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (s, v) = post(
            &http,
            format!("{}/api/v1/auth/login", api.base),
            None,
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let admin = v["access_token"].as_str().unwrap().to_owned();
        Cluster {
            api,
            nodes,
            http,
            admin,
            dir,
            db_url: db,
            _db: guard,
        }
    }

    /// Another account (an admin, named `name`), with the admin's password.
    fn create_account(&self, email: &str, name: &str) {
        let out = Command::new(BIN)
            .args(["admin", "create", "--email", email, "--display-name", name])
            .args(["--database-url", &self.db_url, "--data-dir"])
            .arg(&self.dir)
            .env("STREAMCORE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the three nodes are up, each with its relay.
    async fn wait_relays(&self) {
        self.wait_registry("three nodes up, each with a relay", |r| {
            ids_with(r, "active").len() == 3
                && r.iter()
                    .all(|n| n["relay_addr"].as_str().is_some_and(|a| !a.is_empty()))
        })
        .await;
    }

    fn node(&self, id: &str) -> &Proc {
        &self.nodes.iter().find(|(n, _)| n == id).unwrap().1
    }

    /// `GET /api/v1/admin/nodes` by node id.
    async fn registry(&self) -> Vec<Value> {
        let (s, v) = get(
            &self.http,
            format!("{}/api/v1/admin/nodes", self.api.base),
            &self.admin,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    /// Waits until the registry satisfies `ok`, returning it.
    async fn wait_registry(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.registry().await;
            if ok(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the registry never got there: {r:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A room of the admin's; its id.
    async fn room(&self, name: &str) -> String {
        let (s, v) = post(
            &self.http,
            format!("{}/api/v1/rooms", self.api.base),
            Some(&self.admin),
            json!({"name": name}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// A join token for `room` (`grants` plus an optional `region`).
    async fn token(&self, room: &str, body: Value) -> Value {
        let (s, v) = post(
            &self.http,
            format!("{}/api/v1/rooms/{room}/token", self.api.base),
            Some(&self.admin),
            body,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Which node's base URL `url` starts with.
    fn owner_of(&self, url: &str) -> String {
        self.nodes
            .iter()
            .find(|(_, p)| url.starts_with(&format!("{}/", p.base)))
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("{url} is on no node"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ids_with(r: &[Value], status: &str) -> Vec<String> {
    r.iter()
        .filter(|n| n["status"] == status)
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A node's `/metrics` value of `series` (a full series name with labels).
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Waits until a node's `/metrics` shows `series` at `value`.
async fn wait_metric(http: &reqwest::Client, base: &str, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(http, base, series).await != Some(value) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base}/metrics never showed {series} {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the aiortc WHIP/WHEP harness to completion; its last JSON line.
async fn harness(args: &[&str], limit: Duration) -> Value {
    let py = tokio::task::spawn_blocking(support::python).await.unwrap();
    let child = tokio::process::Command::new(py)
        .arg(support::repo().join("scripts/interop/whip_whep.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the harness finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// The node `room` is placed on, read from the database.
/// The payloads of a room's events in the outbox, in order.
async fn outbox_of(sql: &mut sqlx::PgConnection, room: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT payload FROM event_outbox WHERE key = $1 ORDER BY seq")
        .bind(room)
        .fetch_all(sql)
        .await
        .unwrap()
}

async fn room_home_in(sql: &mut sqlx::PgConnection, room: &str) -> Option<String> {
    sqlx::query_scalar("SELECT node_id FROM room_homes WHERE room_id = $1")
        .bind(room)
        .fetch_optional(sql)
        .await
        .unwrap()
}

async fn ws(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_on_one_node_and_requests_are_sent_there() {
    let c = Cluster::start_with(true).await;
    let r = c
        .wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let (s, v) = get(
        &c.http,
        format!("{}/api/v1/admin/nodes", c.api.base),
        "not a token",
    )
    .await;
    assert_eq!(s, 401, "only an admin lists the nodes: {v}");
    for n in &r {
        let id = n["id"].as_str().unwrap();
        assert_eq!(n["public_url"], c.node(id).base, "{n}");
        assert_eq!(n["region"], if id == "c" { "us" } else { "eu" });
        assert_eq!(n["workers"], 1);
        assert_eq!(n["media_addrs"].as_array().unwrap().len(), 1);
        assert!(n["capacity"].as_i64().unwrap() > 0, "{n}");
        assert!(n["heartbeat_age_ms"].as_i64().unwrap() < 3000, "{n}");
    }
    // Every node exports the registry.
    wait_metric(
        &c.http,
        &c.node("c").base,
        "streamcore_cluster_nodes{status=\"active\"}",
        3.0,
    )
    .await;

    // Placed in the caller's region (the control plane's, `eu`, by default), then sticky.
    let room = c.room("music").await;
    let t = c.token(&room, json!({"publish": true})).await;
    let home = c.owner_of(t["whip_url"].as_str().unwrap());
    assert!(home == "a" || home == "b", "placed in eu: {t}");
    assert_eq!(c.owner_of(t["whep_url"].as_str().unwrap()), home);
    assert_eq!(
        t["rtc_url"],
        format!("{}/rtc", c.node(&home).base.replace("http://", "ws://"))
    );
    let listen = c
        .token(&room, json!({"subscribe": true, "region": "us"}))
        .await;
    assert_eq!(
        c.owner_of(listen["whep_url"].as_str().unwrap()),
        "c",
        "a listener in another region plays on a node of its region, over the relay"
    );
    assert_eq!(
        c.owner_of(
            &listen["rtc_url"]
                .as_str()
                .unwrap()
                .replace("ws://", "http://")
        ),
        "c",
        "its `/rtc` is there too: {listen}"
    );
    let again = c.token(&room, json!({"publish": true})).await;
    assert_eq!(
        again["whip_url"], t["whip_url"],
        "a live placement holds whatever region a later caller is in"
    );
    assert_eq!(listen["local"], false, "its URLs name two nodes: {listen}");
    let other = c.room("talk").await;
    let us = c
        .token(&other, json!({"subscribe": true, "region": "us"}))
        .await;
    assert_eq!(c.owner_of(us["whep_url"].as_str().unwrap()), "c");
    let (s, v) = post(
        &c.http,
        format!("{}/api/v1/rooms/{other}/token", c.api.base),
        Some(&c.admin),
        json!({"subscribe": true, "region": "no such/region"}),
    )
    .await;
    assert_eq!(s, 422, "{v}");

    // A real WHIP client sent to the wrong node is redirected to the room's node and
    // publishes there; a WHEP player on another node hears the tone there, relayed
    // from the room's node.
    let wrong: Vec<&str> = ["a", "b", "c"].into_iter().filter(|n| *n != home).collect();
    let whip = format!("{}/whip/{room}", c.node(wrong[0]).base);
    let whep = listen["whep_url"].as_str().unwrap().to_owned();
    assert_eq!(c.owner_of(&whep), wrong[1]);
    let (pt, lt) = (
        t["token"].as_str().unwrap().to_owned(),
        listen["token"].as_str().unwrap().to_owned(),
    );
    let publisher = tokio::spawn(async move {
        harness(
            &[
                "publish",
                "--url",
                &whip,
                "--token",
                &pt,
                "--seconds",
                "8",
                "--freq",
                "440",
            ],
            Duration::from_secs(60),
        )
        .await
    });
    let played = harness(
        &[
            "play",
            "--url",
            &whep,
            "--token",
            &lt,
            "--seconds",
            "3",
            "--expect-freq",
            "440",
        ],
        Duration::from_secs(60),
    )
    .await;
    let published = publisher.await.unwrap();
    let home_base = &c.node(&home).base;
    assert_eq!(
        published["redirected_to"],
        json!([format!("{home_base}/whip/{room}")]),
        "the publisher went once to the room's node: {published}"
    );
    assert_eq!(
        played["redirected_to"],
        json!([]),
        "the player stayed where it was: {played}"
    );
    assert!(
        (played["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 20.0,
        "{played}"
    );

    // A `/rtc` join on another node than the room's is served there, the room
    // relayed from its node (`a_room_participants_on_two_nodes_see_one_room` has the
    // pages); one on the room's node joins there.
    let mut sock = ws(&format!(
        "{}/rtc",
        c.node(wrong[0]).base.replace("http://", "ws://")
    ))
    .await;
    let join = json!({"type": "join", "token": t["token"], "id": 1});
    send(&mut sock, join.clone()).await;
    let served = recv(&mut sock, Duration::from_secs(10))
        .await
        .expect("an answer to join");
    assert_eq!(served["type"], "joined", "{served}");
    assert_eq!(served["id"], 1);
    // It leaves (not merely drops its socket, which would keep it for the resume
    // grace): the room is served on its node only, for the checks below.
    send(&mut sock, json!({"type": "leave", "id": 2})).await;
    while recv(&mut sock, Duration::from_secs(5)).await.is_some() {}
    let mut there = ws(t["rtc_url"].as_str().unwrap()).await;
    send(&mut there, join).await;
    let joined = recv(&mut there, Duration::from_secs(10))
        .await
        .expect("joined");
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["room"], room.as_str());

    // The token hands out the TURN server of the room's node (with credentials from
    // the cluster's secret), as that node's own `joined` does; no other node's.
    let turn_of = |servers: &Value| -> Vec<String> {
        servers
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["credential"].is_string())
            .flat_map(|s| s["urls"].as_array().unwrap().clone())
            .map(|u| u.as_str().unwrap().to_owned())
            .collect()
    };
    let registry = c.registry().await;
    let home_turn: Vec<String> =
        registry.iter().find(|n| n["id"] == home.as_str()).unwrap()["turn_urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
    assert!(!home_turn.is_empty(), "{registry:#?}");
    assert_eq!(turn_of(&t["ice_servers"]), home_turn, "{t}");
    // The listener plays from node c: its TURN server is c's.
    let c_turn: Vec<String> = registry.iter().find(|n| n["id"] == "c").unwrap()["turn_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(turn_of(&listen["ice_servers"]), c_turn, "{listen}");
    assert_eq!(turn_of(&joined["ice_servers"]), home_turn, "{joined}");

    // A room served where it does not live is made whole within seconds: its home
    // released while someone joined is taken back by the node serving it...
    let mut sql = sqlx::PgConnection::connect(&c.db_url).await.unwrap();
    sqlx::query("DELETE FROM room_homes WHERE room_id = $1")
        .bind(&room)
        .execute(&mut sql)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while room_home_in(&mut sql, &room).await.as_deref() != Some(home.as_str()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the released room was not taken back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and one whose home went to another node (as when a late heartbeat made its
    // node look dead) sends its participants there.
    let other = wrong[1];
    sqlx::query("UPDATE room_homes SET node_id = $1 WHERE room_id = $2")
        .bind(other)
        .bind(&room)
        .execute(&mut sql)
        .await
        .unwrap();
    let moved = loop {
        let m = recv(&mut there, Duration::from_secs(10))
            .await
            .expect("a move before the room's node was silent for 10 s");
        if m["type"] == "move" {
            break m;
        }
    };
    assert_eq!(moved["reason"], "room_elsewhere", "{moved}");
    assert_eq!(
        moved["url"],
        format!("{}/rtc", c.node(other).base.replace("http://", "ws://"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_dead_within_seconds_and_its_rooms_are_placed_again() {
    let mut c = Cluster::start().await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let room = c.room("stage").await;
    let t = c.token(&room, json!({"publish": true})).await;
    let home = c.owner_of(t["whip_url"].as_str().unwrap());
    // Live on its node and recorded there (the recording is started on the room's
    // node: its recorder is there), then the node dies without a word.
    let py = tokio::task::spawn_blocking(support::python).await.unwrap();
    let mut publisher = tokio::process::Command::new(py)
        .arg(support::repo().join("scripts/interop/whip_whep.py"))
        .args(["publish", "--url", t["whip_url"].as_str().unwrap()])
        .args(["--token", t["token"].as_str().unwrap(), "--seconds", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(publisher.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .expect("the publisher went live")
    .unwrap();
    assert!(line.contains("published"), "{line}");
    // Recording is asked of the control plane, which sends it on to the room's node
    // (its recorder); so is stopping it, and starting again.
    let record = |path: String| {
        let (http, base, admin) = (c.http.clone(), c.api.base.clone(), c.admin.clone());
        async move {
            post(
                &http,
                format!("{base}/api/v1/rooms/{path}"),
                Some(&admin),
                json!({}),
            )
            .await
        }
    };
    let (s, rec) = record(format!("{room}/recordings")).await;
    assert_eq!(s, 201, "{rec}");
    assert_eq!(rec["status"], "recording", "{rec}");
    let first = rec["id"].as_str().unwrap().to_owned();
    let (s, v) = record(format!("{room}/recordings/{first}/stop")).await;
    // Stopped, and perhaps already in the store (its files are small).
    assert_eq!(s, 200, "{v}");
    assert!(
        ["stopped", "uploaded"].contains(&v["status"].as_str().unwrap_or("")),
        "{v}"
    );
    let (s, rec) = record(format!("{room}/recordings")).await;
    assert_eq!(s, 201, "{rec}");
    let recording = rec["id"].as_str().unwrap().to_owned();
    let sql_url = c.db_url.clone();
    let mut sql = sqlx::PgConnection::connect(&sql_url).await.unwrap();
    let held_by: String = sqlx::query_scalar("SELECT node_id FROM recordings WHERE id = $1")
        .bind(&recording)
        .fetch_one(&mut sql)
        .await
        .unwrap();
    assert_eq!(held_by, home, "recorded on the room's node");
    // Some of it reaches the disk (Ogg pages are a second of audio) before the kill.
    let spooled = c.dir.join("spool").join(&home).join(&recording);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let bytes: u64 = std::fs::read_dir(&spooled)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "ogg"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if bytes > 4000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing recorded in {}",
            spooled.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = tokio::time::Instant::now();
    let pos = c.nodes.iter().position(|(id, _)| *id == home).unwrap();
    let (_, mut dead) = c.nodes.remove(pos);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let r = c
        .wait_registry("the killed node dead", |r| {
            ids_with(r, "dead") == [home.clone()]
        })
        .await;
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(6),
        "declared dead after {after:?}"
    );
    assert_eq!(ids_with(&r, "active").len(), 2);
    let survivor = &c.nodes[0].1.base;
    wait_metric(
        &c.http,
        survivor,
        "streamcore_cluster_nodes{status=\"dead\"}",
        1.0,
    )
    .await;

    // The room is placed again on a live node, and a publisher goes live there.
    let again = c.token(&room, json!({"publish": true})).await;
    let new_home = c.owner_of(again["whip_url"].as_str().unwrap());
    assert_ne!(new_home, home);
    let v = harness(
        &[
            "publish",
            "--url",
            again["whip_url"].as_str().unwrap(),
            "--token",
            again["token"].as_str().unwrap(),
            "--seconds",
            "1",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(v["redirected_to"], json!([]), "{v}");

    // A live node takes over the dead one's recording from the spool they share: it
    // ends `interrupted` with what was spooled, uploaded.
    drop(publisher);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let v = loop {
        let (s, v) = get(
            &c.http,
            format!("{}/api/v1/rooms/{room}/recordings/{recording}", c.api.base),
            &c.admin,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        if v["status"] == "uploaded" {
            break v;
        }
        assert!(
            ["recording", "stopped"].contains(&v["status"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's recording was not taken over: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let adopted_after = killed.elapsed();
    assert_eq!(v["stop_reason"], "interrupted", "{v}");
    let tracks = v["manifest"]["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tracks
            .iter()
            .any(|t| t["duration_ms"].as_f64().unwrap_or(0.0) > 500.0),
        "what was spooled is in it: {v}"
    );
    assert!(!v["objects"].as_array().unwrap().is_empty(), "{v}");
    println!("the dead node's recording was uploaded {adopted_after:?} after the kill");

    // The operator removes the dead node for good; its recording stays as it is.
    let r = c
        .http
        .delete(format!("{}/api/v1/admin/nodes/{home}", c.api.base))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, v) = get(
        &c.http,
        format!("{}/api/v1/rooms/{room}/recordings/{recording}", c.api.base),
        &c.admin,
    )
    .await;
    assert_eq!(v["status"], "uploaded", "{v}");
    assert!(c.registry().await.iter().all(|n| n["id"] != home.as_str()));

    // A node stopped cleanly leaves the registry at once, dead or not.
    let (gone, mut p) = c.nodes.remove(0);
    let ok = Command::new("kill")
        .args(["-s", "TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || {
        let s = p.child.wait().unwrap();
        drop(p);
        s
    })
    .await
    .unwrap();
    assert!(status.success());
    let r = c.registry().await;
    assert!(
        r.iter().all(|n| n["id"] != gone.as_str()),
        "{gone} left: {r:#?}"
    );
}

/// Runs `scripts/browser/<name>.py` in Debian's Chromium against `base`; its result.
async fn scenario(name: &str, base: &str, args: &[&str]) -> Value {
    scenario_with(name, base, args, || {}).await
}

/// [`scenario`] for a script that says `{"event": "ready"}` on a line of its own and
/// then waits for a line on its stdin: `when_ready` runs in between.
async fn scenario_with(
    name: &str,
    base: &str,
    args: &[&str],
    when_ready: impl FnOnce() + Send + 'static,
) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (py, chromium) = tokio::task::spawn_blocking(|| (support::python(), common::chromium()))
        .await
        .unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let mut child = tokio::process::Command::new(py)
        .arg(support::repo().join(format!("scripts/browser/{name}.py")))
        .args(["--base", base, "--shots"])
        .arg(shots)
        .args(args)
        .env("STREAMCORE_CHROMIUM", chromium)
        .current_dir(support::repo().join("scripts/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e).await;
        e
    });
    let run = async {
        let mut when_ready = Some(when_ready);
        let mut lines = Vec::new();
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.contains(r#""event": "ready""#)
                && let Some(f) = when_ready.take()
            {
                tokio::task::spawn_blocking(f).await.unwrap();
                stdin.write_all(b"done\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            lines.push(line);
        }
        (child.wait().await.unwrap(), lines)
    };
    let (status, lines) = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the scenario finished in time");
    let errors = errors.await.unwrap();
    assert!(
        status.success(),
        "{name} failed\nstdout:\n{}\nstderr:\n{errors}",
        lines.join("\n")
    );
    let v: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    println!("{name}: {v}");
    v
}

/// The web app on the control plane (no media of its own): its pages publish and play
/// on the node the room is placed on, another origin their policy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_pages_use_the_node_a_room_lives_on() {
    let mut c = Cluster::start().await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let pids = c
        .nodes
        .iter()
        .map(|(id, p)| format!("{id}={}", p.child.id()))
        .collect::<Vec<_>>()
        .join(",");
    let v = scenario(
        "cluster",
        &c.api.base,
        &[
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
            "--pids",
            &pids,
        ],
    )
    .await;
    let whip = v["whip_url"].as_str().unwrap();
    let whep = v["whep_url"].as_str().unwrap();
    let node = c.owner_of(whip);
    assert_eq!(c.owner_of(whep), node, "{v}");
    assert!(!whip.starts_with(&c.api.base), "{v}");
    let policy = v["policy"].as_str().unwrap();
    let connect: Vec<&str> = policy
        .split(';')
        .find_map(|d| d.trim().strip_prefix("connect-src "))
        .expect("a connect-src directive")
        .split(' ')
        .collect();
    let mut wanted = vec!["'self'".to_owned()];
    for (_, p) in &c.nodes {
        wanted.push(p.base.clone());
        wanted.push(p.base.replace("http://", "ws://"));
    }
    let mut got: Vec<String> = connect.iter().map(|s| s.to_string()).collect();
    got.sort();
    wanted.sort();
    assert_eq!(
        got, wanted,
        "the pages reach their origin and the nodes only: {policy}"
    );
    // The Servers page drained a node without the room: it stopped by itself.
    let drained = v["drained"].as_str().unwrap();
    assert_ne!(drained, node);
    let pos = c.nodes.iter().position(|(id, _)| id == drained).unwrap();
    let (_, mut p) = c.nodes.remove(pos);
    let status = tokio::task::spawn_blocking(move || p.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The one it killed is gone from the registry too.
    let killed = v["killed"].as_str().unwrap();
    assert!(
        c.registry().await.iter().all(|n| n["id"] != killed),
        "{killed} was removed"
    );
}

/// An operator drains the node a room lives on: its two people (the client library in
/// Chromium) are told to move, join the room again on another node, and the subscriber
/// decodes the publisher again; the drained node, empty, exits by itself and leaves the
/// registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_people_move_to_another_node_and_it_exits() {
    let mut c = Cluster::start().await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let room = c.room("drained").await;
    let home = c.owner_of(
        c.token(&room, json!({"subscribe": true})).await["whep_url"]
            .as_str()
            .unwrap(),
    );
    let v = scenario(
        "cluster_move",
        &c.api.base,
        &[
            "--how",
            "drain",
            "--room",
            &room,
            "--admin-token",
            &c.admin,
            "--node",
            &home,
        ],
    )
    .await;
    let moved_to = v["moved_to"].as_str().unwrap();
    let new_home = c.owner_of(&moved_to.replace("ws://", "http://"));
    assert_ne!(new_home, home, "{v}");
    let back = v["receiving_again_ms"].as_u64().unwrap();
    assert!(
        back < 5000,
        "the subscriber decoded again {back} ms after the drain: {v}"
    );

    // Empty, the drained node stops by itself and leaves the registry.
    let pos = c.nodes.iter().position(|(id, _)| *id == home).unwrap();
    let (_, drained) = c.nodes.remove(pos);
    let status = exit_of(drained, "the drained node").await;
    assert!(status.success(), "{status:?}");
    let r = c.registry().await;
    assert!(r.iter().all(|n| n["id"] != home.as_str()), "{r:#?}");
    // A new token for the room names its new node.
    let again = c.token(&room, json!({"subscribe": true})).await;
    assert_eq!(c.owner_of(again["whep_url"].as_str().unwrap()), new_home);
}

/// An operator drains the node a phone's live stream runs on (the phone page, WHIP)
/// while a person listens (the listen page, WHEP): both sessions hear `reconnect` on
/// their events, open again on the room's new node, and the listener hears the tone
/// again within 5 s of the press; the drained node, empty, exits by itself. The room's
/// recording is handed over to the new node without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_whip_and_whep_sessions_reconnect_on_another_node() {
    let mut c = Cluster::start().await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let v = drain_pages(&c, "publisher").await;
    let drained = v["drained"].as_str().unwrap().to_owned();
    assert_eq!(c.owner_of(v["whip_before"].as_str().unwrap()), drained);
    let to = c.owner_of(v["whip_after"].as_str().unwrap());
    assert_ne!(to, drained, "{v}");
    assert_eq!(c.owner_of(v["whep_after"].as_str().unwrap()), to, "{v}");
    let back = v["receiving_again_ms"].as_u64().unwrap();
    assert!(
        back < 5000,
        "the listener received audio again {back} ms after the drain: {v}"
    );
    let pos = c.nodes.iter().position(|(id, _)| *id == drained).unwrap();
    let (_, p) = c.nodes.remove(pos);
    let status = exit_of(p, "the drained node, once its sessions moved").await;
    assert!(status.success(), "{status:?}");

    // The room's recording was handed over: the new node's continues it, and their
    // audio overlaps (no gap; below). Each ends with what it recorded.
    let room = v["room"].as_str().unwrap();
    let first = v["recording"].as_str().unwrap();
    let recordings = |c: &Cluster| {
        let (http, url, admin) = (
            c.http.clone(),
            format!("{}/api/v1/rooms/{room}/recordings", c.api.base),
            c.admin.clone(),
        );
        async move {
            let (s, v) = get(&http, url, &admin).await;
            assert_eq!(s, 200, "{v}");
            v.as_array().unwrap().clone()
        }
    };
    let all = recordings(&c).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let old = all.iter().find(|r| r["id"] == first).unwrap().clone();
    let next = all.iter().find(|r| r["id"] != first).unwrap().clone();
    assert_eq!(next["continues"], first, "{next}");
    assert_eq!(next["status"], "recording", "{next}");
    assert_eq!(old["stop_reason"], "handed_over", "{old}");
    let (s, stopped) = post(
        &c.http,
        format!(
            "{}/api/v1/rooms/{room}/recordings/{}/stop",
            c.api.base,
            next["id"].as_str().unwrap()
        ),
        Some(&c.admin),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{stopped}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = recordings(&c).await;
        if all.iter().all(|r| r["status"] == "uploaded") {
            for r in &all {
                let heard = r["manifest"]["tracks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["duration_ms"].as_f64().unwrap_or(0.0))
                    .fold(0.0, f64::max);
                assert!(heard > 1000.0, "a part with {heard} ms of audio: {r}");
            }
            // The phone sent to both nodes for a moment: the new part's audio starts
            // before the old part's ends (both nodes share this machine's clock).
            let audio = |r: &Value| -> (f64, f64) {
                r["manifest"]["tracks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["kind"] == "audio")
                    .map(|t| {
                        let from = t["first_sample_at"].as_f64().unwrap();
                        (from, from + t["duration_ms"].as_f64().unwrap())
                    })
                    .fold((f64::MAX, 0.0_f64), |(a, b), (f, t)| (a.min(f), b.max(t)))
            };
            let (old_r, next_r) = (
                all.iter().find(|r| r["id"] == first).unwrap(),
                all.iter().find(|r| r["id"] != first).unwrap(),
            );
            let (_, old_end) = audio(old_r);
            let (next_start, _) = audio(next_r);
            assert!(
                next_start <= old_end,
                "a gap of {} ms between the parts",
                next_start - old_end
            );
            println!("the parts overlap by {:.0} ms", old_end - next_start);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two parts were not uploaded: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The room's node is full (the test gives each node room for one peer), so the
/// listen page in Chromium plays the phone's stream from another node, which imports
/// the room over the relay; that node is drained: the listener reconnects to the
/// room's node and hears the tone again within 5 s, the phone stays where it is, and
/// the drained node exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_relayed_from_another_node_reconnects_when_that_node_drains() {
    let mut c = Cluster::start_with_env(false, &[("STREAMCORE_CLUSTER__CAPACITY", "1")]).await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let v = drain_pages(&c, "listener").await;
    let home = c.owner_of(v["whip_before"].as_str().unwrap());
    let relay_node = c.owner_of(v["whep_before"].as_str().unwrap());
    assert_ne!(relay_node, home, "{v}");
    assert_eq!(v["drained"], relay_node.as_str(), "{v}");
    assert_eq!(c.owner_of(v["whep_after"].as_str().unwrap()), home, "{v}");
    assert_eq!(v["whip_after"], v["whip_before"], "{v}");
    let back = v["receiving_again_ms"].as_u64().unwrap();
    assert!(
        back < 5000,
        "the listener received audio again {back} ms after the drain: {v}"
    );
    let pos = c
        .nodes
        .iter()
        .position(|(id, _)| *id == relay_node)
        .unwrap();
    let (_, p) = c.nodes.remove(pos);
    let status = exit_of(p, "the drained relay node").await;
    assert!(status.success(), "{status:?}");
}

/// One room with a person on each of two nodes (every node has room for one peer, so
/// the second person's pass names another node, which imports the room over the relay
/// and is imported back): in Chromium, each decodes the other, chat crosses both ways,
/// a mute shows, each page has an active speaker; the room's node drains, its person
/// moves, the other's node follows the room, and both decode each other again; a
/// leave is seen (`scripts/browser/cluster_room.py`). The relay carried media both
/// ways, and the bus heard each join once, from the node it was on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_participants_on_two_nodes_see_one_room() {
    const BEN_EMAIL: &str = "ben@example.com";
    let c = Cluster::start_with_env(false, &[("STREAMCORE_CLUSTER__CAPACITY", "1")]).await;
    c.wait_relays().await;
    c.create_account(BEN_EMAIL, "Ben");
    let v = scenario(
        "cluster_room",
        &c.api.base,
        &[
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
            "--admin-token",
            &c.admin,
            "--ben-email",
            BEN_EMAIL,
            "--ben-password",
            ADMIN_PASSWORD,
        ],
    )
    .await;
    let owner = |url: &Value| c.owner_of(&format!("{}/", url.as_str().unwrap()));
    let (ada, ben) = (owner(&v["ada_node"]), owner(&v["ben_node"]));
    assert_ne!(ada, ben, "{v}");
    // Ada's node, the room's, was drained: she went on elsewhere, Ben stayed.
    assert_eq!(v["drained"], ada.as_str(), "{v}");
    let ada_after = owner(&v["ada_after"]);
    assert_ne!(ada_after, ada, "{v}");
    let again = v["both_decode_again_ms"].as_u64().unwrap();
    assert!(
        again < 10_000,
        "both decoded again {again} ms after the drain: {v}"
    );
    // Ben's node received Ada's media over the relay before the drain, and after it
    // the room's new node and Ben's received each other's (the drained node is gone).
    for (at, from) in [(&ben, &ada), (&ada_after, &ben), (&ben, &ada_after)] {
        if at == from {
            continue; // the room moved to Ben's node
        }
        // After the drain the pages decode for a second or two before the scenario
        // ends: some 100 packets of audio and video (50 of audio alone).
        let received = relayed_in(&c, at, from).await;
        assert!(
            received >= 50.0,
            "node {at} received {received} from {from}"
        );
    }
    // Each person joined once on the bus (no shadow reported), the room started once.
    let room = v["room"].as_str().unwrap();
    let mut sql = sqlx::PgConnection::connect(&c.db_url).await.unwrap();
    let id: String = sqlx::query_scalar("SELECT id FROM rooms WHERE name = $1")
        .bind(room)
        .fetch_one(&mut sql)
        .await
        .unwrap();
    let events = outbox_of(&mut sql, &id).await;
    let count = |t: &str| {
        events
            .iter()
            .filter(|p| p.contains(&format!("\"{t}\"")))
            .count()
    };
    // Joins by participant: Ada once on each node she was on, Ben once; a shadow
    // would have made one more each.
    let mut joins = std::collections::BTreeMap::<String, usize>::new();
    for e in &events {
        let v: Value = serde_json::from_str(e).unwrap();
        if v["type"] == "room.participant_joined" {
            *joins
                .entry(
                    v["data"]["participant"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_default() += 1;
        }
    }
    let mut counts: Vec<usize> = joins.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2], "{events:#?}");
    assert_eq!(count("room.started"), 1, "{events:#?}");
}

/// Passes revoked on the control plane (which holds nobody) end the sessions they
/// opened on every node within seconds: a link holder served on another node than the
/// room's leaves (`revoked`) when the owner makes a new link, while the owner stays on
/// the room's node and sees the link holder leave; deleting the room ends the owner's
/// session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_passes_end_their_sessions_on_every_node() {
    use common::remote::wait_for;
    let c = Cluster::start().await;
    c.wait_relays().await;
    let guest_email = "gwen@example.com";
    c.create_account(guest_email, "Gwen");
    let (s, v) = post(
        &c.http,
        format!("{}/api/v1/auth/login", c.api.base),
        None,
        json!({"email": guest_email, "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let guest = v["access_token"].as_str().unwrap().to_owned();
    let room = c.room("passes").await;
    let api = |p: &str| format!("{}/api/v1/rooms/{room}{p}", c.api.base);
    let s = c
        .http
        .patch(api(""))
        .bearer_auth(&c.admin)
        .json(&json!({"access": "link"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);
    let share = || async {
        let (s, v) = post(&c.http, api("/share-link"), Some(&c.admin), json!({})).await;
        assert_eq!(s, 200, "{v}");
        v["share_url"]
            .as_str()
            .unwrap()
            .split("key=")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let key = share().await;
    let owner_pass = c.token(&room, json!({"subscribe": true})).await;
    // The guest is in another region than the room: its `/rtc` is on node c.
    let (s, guest_pass) = post(
        &c.http,
        api("/token"),
        Some(&guest),
        json!({"subscribe": true, "key": key, "region": "us"}),
    )
    .await;
    assert_eq!(s, 200, "{guest_pass}");
    let home = c.owner_of(owner_pass["whep_url"].as_str().unwrap());
    let guest_node = c.owner_of(
        &guest_pass["rtc_url"]
            .as_str()
            .unwrap()
            .replace("ws://", "http://"),
    );
    assert_eq!(guest_node, "c", "{guest_pass}");
    assert_ne!(home, guest_node);
    let join = |pass: Value| async move {
        let mut ws = ws(pass["rtc_url"].as_str().unwrap()).await;
        send(
            &mut ws,
            json!({"type": "join", "id": 0, "token": pass["token"], "version": 1}),
        )
        .await;
        let joined = wait_for(&mut ws, Duration::from_secs(10), |m| m["type"] == "joined").await;
        (ws, joined)
    };
    let (mut host, _) = join(owner_pass).await;
    let (mut visitor, _) = join(guest_pass).await;
    let seen = wait_for(&mut host, Duration::from_secs(10), |m| {
        m["type"] == "participant_joined"
    })
    .await;
    assert_eq!(seen["participant"]["name"], "Gwen", "{seen}");

    // A new link, made on the control plane: the guest's node ends its session.
    let revoked_at = std::time::Instant::now();
    share().await;
    let gone = wait_for(&mut visitor, Duration::from_secs(10), |m| {
        m["type"] == "left"
    })
    .await;
    assert_eq!(gone["reason"], "revoked", "{gone}");
    let took = revoked_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the guest left {took:?} after the new link"
    );
    let left = wait_for(&mut host, Duration::from_secs(10), |m| {
        m["type"] == "participant_left" || m["type"] == "left"
    })
    .await;
    assert_eq!(left["type"], "participant_left", "the owner stays: {left}");
    assert_eq!(
        left["reason"], "revoked",
        "the reason crossed the relay: {left}"
    );

    // Deleting the room ends the owner's session on the room's node too.
    let s = c
        .http
        .delete(api(""))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);
    let gone = wait_for(&mut host, Duration::from_secs(10), |m| m["type"] == "left").await;
    assert_eq!(gone["reason"], "revoked", "{gone}");
}

/// A node that drains sends its `/rtc` participants of rooms it imports to the rooms'
/// nodes (`move`, `node_draining`), as it does those of its own rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_nodes_relayed_participants_are_sent_to_the_rooms_node() {
    use common::remote::wait_for;
    // A drain grace long enough to tell waiting for the participants from waiting
    // out the grace.
    let mut c = Cluster::start_with_env(false, &[("STREAMCORE_SHUTDOWN_GRACE_SECS", "30")]).await;
    c.wait_relays().await;
    let room = c.room("drained-relay").await;
    let home_pass = c.token(&room, json!({"publish": true})).await;
    let pass = c
        .token(&room, json!({"publish": true, "region": "us"}))
        .await;
    let near = c.owner_of(
        &pass["rtc_url"]
            .as_str()
            .unwrap()
            .replace("ws://", "http://"),
    );
    assert_eq!(near, "c", "{pass}");
    let mut sock = ws(pass["rtc_url"].as_str().unwrap()).await;
    send(
        &mut sock,
        json!({"type": "join", "id": 0, "token": pass["token"]}),
    )
    .await;
    wait_for(&mut sock, Duration::from_secs(10), |m| {
        m["type"] == "joined"
    })
    .await;
    // A second participant whose connection drops just before the drain: still
    // resumable, so the node must wait for it.
    let away_pass = c
        .token(
            &room,
            json!({"subscribe": true, "region": "us", "identity": "away"}),
        )
        .await;
    let mut away = ws(pass["rtc_url"].as_str().unwrap()).await;
    send(
        &mut away,
        json!({"type": "join", "id": 0, "token": away_pass["token"]}),
    )
    .await;
    let joined = wait_for(&mut away, Duration::from_secs(10), |m| {
        m["type"] == "joined"
    })
    .await;
    drop(away);
    let (s, v) = post(
        &c.http,
        format!("{}/api/v1/admin/nodes/c/drain", c.api.base),
        Some(&c.admin),
        json!({}),
    )
    .await;
    assert!(s == 200 || s == 202, "{s} {v}");
    let moved = wait_for(&mut sock, Duration::from_secs(5), |m| m["type"] == "move").await;
    assert_eq!(moved["reason"], "node_draining", "{moved}");
    let home = c.owner_of(home_pass["whip_url"].as_str().unwrap());
    assert_eq!(
        moved["url"],
        format!("{}/rtc", c.node(&home).base.replace("http://", "ws://")),
        "{moved}"
    );

    // The draining node is still there for the one who dropped: it resumes, is told
    // where the room went, and then the node stops, long before its grace is over.
    let mut back = ws(pass["rtc_url"].as_str().unwrap()).await;
    send(
        &mut back,
        json!({"type": "join", "id": 1, "token": away_pass["token"],
               "resume": {"sid": joined["participant"]["sid"], "token": joined["resume_token"]}}),
    )
    .await;
    let resumed = wait_for(&mut back, Duration::from_secs(5), |m| m["type"] == "joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let moved = wait_for(&mut back, Duration::from_secs(5), |m| m["type"] == "move").await;
    assert_eq!(moved["reason"], "node_draining", "{moved}");
    let told = std::time::Instant::now();
    let pos = c.nodes.iter().position(|(id, _)| id == "c").unwrap();
    let (_, drained) = c.nodes.remove(pos);
    let status = exit_of(drained, "the drained node, once everyone was told").await;
    assert!(status.success(), "{status:?}");
    assert!(
        told.elapsed() < Duration::from_secs(15),
        "the drained node took {:?} to stop after its last participant was told",
        told.elapsed()
    );
}

/// The node a room lives on dies (SIGKILL): its two people (the client library in
/// Chromium) get fresh passes from the control plane, which places the room on a live
/// node once the dead one is declared dead, and join there; the subscriber decodes the
/// publisher again within 5 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_people_are_back_on_another_node_within_seconds() {
    let mut c = Cluster::start().await;
    c.wait_registry("three nodes up", |r| ids_with(r, "active").len() == 3)
        .await;
    let room = c.room("survives").await;
    let home = c.owner_of(
        c.token(&room, json!({"subscribe": true})).await["whep_url"]
            .as_str()
            .unwrap(),
    );
    let pos = c.nodes.iter().position(|(id, _)| *id == home).unwrap();
    let (_, mut doomed) = c.nodes.remove(pos);
    let v = scenario_with(
        "cluster_move",
        &c.api.base,
        &[
            "--how",
            "kill",
            "--room",
            &room,
            "--admin-token",
            &c.admin,
            "--node",
            &home,
        ],
        move || {
            doomed.child.kill().unwrap();
            doomed.child.wait().unwrap();
        },
    )
    .await;
    let moved_to = v["moved_to"].as_str().unwrap();
    assert_ne!(c.owner_of(&moved_to.replace("ws://", "http://")), home);
    let back = v["receiving_again_ms"].as_u64().unwrap();
    assert!(
        back < 5000,
        "the subscriber decoded again {back} ms after the kill: {v}"
    );
}

/// `scripts/browser/cluster_drain_pages.py`: the phone and listen pages, and the node
/// of the `whose` session (`publisher` or `listener`) drained.
async fn drain_pages(c: &Cluster, whose: &str) -> Value {
    scenario(
        "cluster_drain_pages",
        &c.api.base,
        &[
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
            "--admin-token",
            &c.admin,
            "--drain",
            whose,
        ],
    )
    .await
}

/// The exit status of a node that should stop by itself within 20 s (`what` it is,
/// for the failure).
async fn exit_of(mut p: Proc, what: &'static str) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{what} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// The RTP packets node `at` received over the relay from node `from`.
async fn relayed_in(c: &Cluster, at: &str, from: &str) -> f64 {
    let received = by_node(
        &c.http,
        &c.node(at).base,
        "streamcore_relay_packets_received_total",
    )
    .await;
    received
        .iter()
        .find(|(n, _)| n == from)
        .map_or(0.0, |(_, v)| *v)
}

/// Every series of `name` on a node's `/metrics`, by its `node` label.
async fn by_node(http: &reqwest::Client, base: &str, name: &str) -> Vec<(String, f64)> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::series_by_label(&text, name, "node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_nodes_over_the_relay_one_copy_per_node() {
    let c = Cluster::start().await;
    c.wait_relays().await;
    let room = c.room("concert").await;
    let t = c
        .token(&room, json!({"publish": true, "subscribe": true}))
        .await;
    let home = c.owner_of(t["whip_url"].as_str().unwrap());
    let others: Vec<String> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != home)
        .map(str::to_owned)
        .collect();
    let token = t["token"].as_str().unwrap().to_owned();
    let whip = t["whip_url"].as_str().unwrap().to_owned();
    let pt = token.clone();
    let publisher = tokio::spawn(async move {
        harness(
            &[
                "publish",
                "--url",
                &whip,
                "--token",
                &pt,
                "--seconds",
                "14",
                "--freq",
                "440",
                "--video",
            ],
            Duration::from_secs(90),
        )
        .await
    });
    // Two players on one other node, one on the third: each hears the tone and sees
    // video, served where it asked.
    let players: Vec<_> = [&others[0], &others[0], &others[1]]
        .into_iter()
        .map(|node| {
            let url = format!("{}/whep/{room}", c.node(node).base);
            let token = token.clone();
            tokio::spawn(async move {
                harness(
                    &[
                        "play",
                        "--url",
                        &url,
                        "--token",
                        &token,
                        "--seconds",
                        "6",
                        "--expect-freq",
                        "440",
                        "--expect-video",
                    ],
                    Duration::from_secs(90),
                )
                .await
            })
        })
        .collect();
    let mut played = Vec::new();
    for p in players {
        played.push(p.await.unwrap());
    }
    for v in &played {
        assert_eq!(v["redirected_to"], json!([]), "served where it asked: {v}");
        assert!(
            (v["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 20.0,
            "{v}"
        );
        assert!(v["video_frames"].as_u64().unwrap() > 0, "{v}");
    }
    // The room's node sent each other node one copy of each packet: the node with two
    // players got no more than its publisher sent, as the node with one did.
    let home_base = &c.node(&home).base;
    let sent = by_node(&c.http, home_base, "streamcore_relay_packets_sent_total").await;
    let rtp_in = metric(&c.http, home_base, "streamcore_rtp_packets_in_total")
        .await
        .unwrap();
    for node in &others {
        let n = sent
            .iter()
            .find(|(id, _)| id == node)
            .map_or(0.0, |(_, v)| *v);
        assert!(
            n > 0.2 * rtp_in && n <= rtp_in,
            "{node}: {n} relayed of {rtp_in} received ({sent:?})"
        );
        let links = by_node(&c.http, &c.node(node).base, "streamcore_relay_links").await;
        assert!(links.contains(&(home.clone(), 1.0)), "{node}: {links:?}");
        let received = relayed_in(&c, node, &home).await;
        assert!(received > 0.0, "{node} received {received} from {home}");
    }
    // With its players gone, a node stops importing: its export ends on the home.
    let published = publisher.await.unwrap();
    assert!(published["ok"].as_bool().unwrap_or(true), "{published}");
    // The room started once, on its node; the nodes that relayed it for their
    // players reported those players, not a start of their own.
    let mut sql = sqlx::PgConnection::connect(&c.db_url).await.unwrap();
    let events = outbox_of(&mut sql, &room).await;
    let count = |t: &str| {
        events
            .iter()
            .filter(|p| p.contains(&format!("\"{t}\"")))
            .count()
    };
    assert_eq!(count("room.started"), 1, "{events:#?}");
    assert!(count("room.participant_joined") >= 4, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_relay_link_heals_and_the_players_hear_the_room_again() {
    // Node a on this host, node b in a namespace of its own; one SQLite database and
    // one set of keys in a shared directory. The link between them is cut by dropping
    // the relay's UDP inside b's namespace (nftables), then restored.
    let ns = tokio::task::spawn_blocking(common::netns::NetNs::create)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sc-relaycut-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let signer =
        signaling::JoinTokenSigner::load_or_create(&dir.join("keys/join-token-ed25519.pem"))
            .unwrap();
    let db = format!("sqlite://{}", dir.join("streamcore.db").display());
    let (host, guest) = (ns.host_ip.to_string(), ns.client_ip.to_string());
    let a = spawn_at(None, &host, "serve", &dir, &db, "a", "eu", &[]);
    let b = spawn_at(Some(&ns.name), &guest, "serve", &dir, &db, "b", "eu", &[]);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(
        &http,
        &b.base,
        "streamcore_cluster_nodes{status=\"active\"}",
    )
    .await
        != Some(2.0)
    {
        assert!(tokio::time::Instant::now() < deadline, "b never saw a");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let relay_port: u16 = {
        let db_path = dir.join("streamcore.db");
        let mut sql = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
            .await
            .unwrap();
        let addr: String = sqlx::query_scalar("SELECT relay_addr FROM nodes WHERE id = 'a'")
            .fetch_one(&mut sql)
            .await
            .unwrap();
        addr.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    let room = media_core::RoomId::parse("cut").unwrap();
    let token = |identity: &str, publish: bool| {
        signer
            .sign(
                &room,
                identity,
                signaling::Grants {
                    publish,
                    subscribe: !publish,
                    ..signaling::Grants::default()
                },
                Duration::from_secs(600),
            )
            .unwrap()
    };
    let o = ns.host_ip.octets();
    let net = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
    // The harness's arguments for a client on the test link.
    let lab = |mode: &str, url: String, token: String, args: &[&str]| {
        let mut v: Vec<String> = vec![
            mode.into(),
            "--url".into(),
            url,
            "--token".into(),
            token,
            "--lab-net".into(),
            net.clone(),
            "--host-ip".into(),
            host.clone(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| {
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            harness(&args, Duration::from_secs(120)).await
        })
    };
    let publisher = run(lab(
        "publish",
        format!("{}/whip/cut", a.base),
        token("phone", true),
        &["--seconds", "45", "--freq", "440"],
    ));
    // The room is a's once its publisher is there (a player reaching b first would
    // place it on b).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(&http, &a.base, "streamcore_tracks{worker=\"0\"}").await != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publisher never published on a"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A player on b listens through the cut and after it; it keeps b importing.
    let long_player = run(lab(
        "play",
        format!("{}/whep/cut", b.base),
        token("long", false),
        &["--seconds", "30", "--expect-freq", "440"],
    ));
    let links = "streamcore_relay_links{node=\"a\"}";
    wait_metric(&http, &b.base, links, 1.0).await;
    let received = "streamcore_relay_packets_received_total{node=\"a\"}";
    let grows = |before: f64| {
        let http = http.clone();
        let base = b.base.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let now = metric(&http, &base, received).await.unwrap_or(0.0);
                if now > before + 50.0 {
                    return now;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no relayed packets reached b ({before} → {now})"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let before_cut = grows(0.0).await;

    // The cut: b's relay traffic to and from a's relay port is dropped.
    let nft = common::ensure_debian_command("nft", "nftables");
    let port = relay_port.to_string();
    ns.exec(&[&nft, "add table inet relaycut"]);
    for (hook, rule) in [
        ("output", format!("ip daddr {host} udp dport {port} drop")),
        ("input", format!("ip saddr {host} udp sport {port} drop")),
    ] {
        ns.exec(&[
            &nft,
            &format!(
                "add chain inet relaycut {hook} {{ type filter hook {hook} priority 0 ; policy accept ; }}"
            ),
        ]);
        ns.exec(&[&nft, &format!("add rule inet relaycut {hook} {rule}")]);
    }
    let cut_at = tokio::time::Instant::now();
    // The link is seen gone (idle timeout), and both nodes keep serving.
    wait_metric(&http, &b.base, links, 0.0).await;
    for base in [&a.base, &b.base] {
        let s = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert!(s.status().is_success(), "{base} stays up through the cut");
    }
    tokio::time::sleep_until(cut_at + Duration::from_secs(10)).await;
    ns.exec(&[&nft, "delete table inet relaycut"]);

    // Restored: b dials again (its player still wants the room) and media flows.
    wait_metric(&http, &b.base, links, 1.0).await;
    let healed = grows(metric(&http, &b.base, received).await.unwrap_or(before_cut)).await;
    assert!(healed > before_cut);
    let heard = run(lab(
        "play",
        format!("{}/whep/cut", b.base),
        token("fresh", false),
        &["--seconds", "3", "--expect-freq", "440"],
    ))
    .await
    .unwrap();
    assert!(
        (heard["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 20.0,
        "{heard}"
    );
    let long = long_player.await.unwrap();
    assert!(
        (long["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 20.0,
        "{long}"
    );
    publisher.abort();
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
