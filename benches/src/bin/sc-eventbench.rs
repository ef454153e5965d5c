//! sc-eventbench: remote-control latency and event-relay throughput (issue "Events").
//!
//! Runs the real node in-process on loopback (SQLite in a temporary directory, the
//! in-process bus, or Kafka with `--kafka-brokers`), then:
//!
//! 1. **Command → mirrored state.** A paired phone on its device socket answers every
//!    command at once with its new state; two browsers hold user sockets. For each of
//!    `--commands` commands (sequential): time from sending `POST …/commands` until
//!    *both* browsers have the resulting `now_playing`. Baseline in the same run: the
//!    round trip of a `ping` on a browser socket (WebSocket + JSON, no outbox, no bus).
//! 2. **Relay throughput.** `--events` events written to the outbox in batches of 500,
//!    then the time for the relay to publish them all (a consumer group reads them).
//!    Baseline in the same run: the same records published straight to the bus, no
//!    database.
//!
//! Output: one JSON object on stdout; `docs/benchmarks.md` has the numbers.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control_api::events::outbox_event;
use control_api::store::Store;
use events::{EventType, Record, Topic};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Args {
    kafka: Option<String>,
    fetch_wait_ms: u64,
    commands: usize,
    events: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        kafka: None,
        fetch_wait_ms: 100,
        commands: 300,
        events: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().context("missing value");
        match k.as_str() {
            "--kafka-brokers" => a.kafka = Some(v()?),
            "--kafka-fetch-wait-ms" => a.fetch_wait_ms = v()?.parse()?,
            "--commands" => a.commands = v()?.parse()?,
            "--events" => a.events = v()?.parse()?,
            _ => bail!(
                "usage: sc-eventbench [--kafka-brokers HOST:PORT [--kafka-fetch-wait-ms MS]] [--commands N] [--events N]"
            ),
        }
    }
    Ok(a)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    Ok(v)
}

async fn socket(base: &str, path: &str, token: &str) -> anyhow::Result<Ws> {
    let mut req =
        format!("{}{}", base.replacen("http://", "ws://", 1), path).into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("socket silent for 30 s")?
            .context("socket closed")??;
        if let Message::Text(t) = m {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

async fn wait(ws: &mut Ws, f: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    loop {
        let v = next_json(ws).await?;
        if f(&v) {
            return Ok(v);
        }
    }
}

fn percentiles(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": v.len(), "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": v[v.len() - 1]})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    // Warnings only (RUST_LOG overrides): librdkafka's own chatter stays out.
    streamcore::init_logging(false, "warn,rdkafka=off,librdkafka=off");
    let dir = std::env::temp_dir().join(format!("sc-eventbench-{}", rand::random::<u64>()));
    let mut s = streamcore::config::Settings {
        http: "127.0.0.1:0".parse()?,
        data_dir: dir.clone(),
        ..Default::default()
    };
    s.media.port = 0;
    s.media.workers = 1;
    s.events.kafka_brokers = a.kafka.clone();
    s.events.kafka_fetch_wait_ms = a.fetch_wait_ms;
    let srv = streamcore::server::start(&s).await?;
    let base = format!("http://{}", srv.http_addr);
    let http = reqwest::Client::new();
    // Signing up is mail first: the link's token comes from the node's outbox.
    post(
        &http,
        format!("{base}/api/v1/auth/register"),
        None,
        json!({"email": "bench@example.com"}),
    )
    .await?;
    let mails = control_api::store::Store::list_mail(&srv.api.db, 10).await?;
    let token = mails
        .iter()
        .find_map(|m| control_api::mail::link_token(&m.body, "/sign-up").map(str::to_owned))
        .context("no sign-up link in the outbox")?;
    let reg = post(
        &http,
        format!("{base}/api/v1/auth/register/complete"),
        None,
        json!({"token": token, "password": "a long enough password"}),
    )
    .await?;
    let access = reg["session"]["access_token"]
        .as_str()
        .context("token")?
        .to_owned();
    let p = post(
        &http,
        format!("{base}/api/v1/pairings"),
        Some(&access),
        json!({}),
    )
    .await?;
    let claim = post(
        &http,
        format!("{base}/api/v1/pairings/claim"),
        None,
        json!({"code": p["code"], "device": {"name": "bench phone", "kind": "phone"}}),
    )
    .await?;
    let device = claim["device"]["id"].as_str().context("device")?.to_owned();
    let device_token = claim["session"]["access_token"]
        .as_str()
        .context("token")?
        .to_owned();

    // The phone: answers every command with its state, and heartbeats as asked (a
    // device socket silent for the online window is closed).
    let mut phone = socket(&base, "/api/v1/devices/socket", &device_token).await?;
    let welcome = wait(&mut phone, |m| m["type"] == "welcome").await?;
    let beat = Duration::from_millis(welcome["heartbeat_interval_ms"].as_u64().unwrap_or(10_000));
    let phone_task = tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(beat);
        loop {
            let reply = tokio::select! {
                m = next_json(&mut phone) => match m {
                    Ok(m) if m["type"] == "command" => json!({"type": "state", "command_id": m["command_id"], "state": {"status": "playing", "position_ms": m["position_ms"]}}),
                    Ok(_) => continue,
                    Err(_) => break,
                },
                _ = heartbeat.tick() => json!({"type": "heartbeat"}),
            };
            if phone.send(Message::text(reply.to_string())).await.is_err() {
                break;
            }
        }
    });
    let mut browsers = Vec::new();
    for _ in 0..2 {
        let mut b = socket(&base, "/api/v1/events/socket", &access).await?;
        wait(&mut b, |m| m["type"] == "snapshot").await?;
        browsers.push(b);
    }

    // Baseline: ping round trips on a browser socket.
    let mut ping = Vec::new();
    for _ in 0..a.commands {
        let t = Instant::now();
        browsers[0]
            .send(Message::text(json!({"type": "ping"}).to_string()))
            .await?;
        wait(&mut browsers[0], |m| m["type"] == "pong").await?;
        ping.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Warm-up, then the measured commands.
    let url = format!("{base}/api/v1/devices/{device}/commands");
    let mut mirrored = Vec::new();
    for i in 0..a.commands + 20 {
        let t = Instant::now();
        let acc = post(
            &http,
            url.clone(),
            Some(&access),
            json!({"action": "seek", "position_ms": i}),
        )
        .await?;
        let id = acc["command_id"].clone();
        for b in browsers.iter_mut() {
            wait(b, |m| {
                m["type"] == "now_playing" && m["data"]["command_id"] == id
            })
            .await?;
        }
        if i >= 20 {
            mirrored.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    // Relay throughput: the node's relay drains a prepared outbox to the bus, where a
    // consumer group of `room.events` reads it (in-process, a group without readers
    // would make publishing free).
    let st = srv.api.clone();
    let mut sink = st.bus.subscribe("bench-sink", &[Topic::RoomEvents])?;
    let sink_task = tokio::spawn(async move { while sink.next().await.is_ok() {} });
    let source = st.event_source();
    let make = |i: usize| {
        outbox_event(
            &source,
            EventType::RoomParticipantJoined,
            &format!("room-{}", i % 16),
            format!("room/room-{}", i % 16),
            json!({"n": i}),
            0,
        )
    };
    let rows: Vec<_> = (0..a.events).map(make).collect();
    let t = Instant::now();
    for chunk in rows.chunks(500) {
        st.db.insert_events(chunk).await?;
    }
    let write_s = t.elapsed().as_secs_f64();
    st.events_written();
    let t = Instant::now();
    while st.db.count_unpublished_events().await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if t.elapsed() > Duration::from_secs(300) {
            bail!("relay did not drain within 300 s");
        }
    }
    let relay_s = t.elapsed().as_secs_f64();
    // Baseline: the same records straight to the bus.
    let records: Vec<Record> = (0..a.events)
        .map(|i| {
            let e = make(i);
            Record {
                topic: Topic::RoomEvents,
                key: e.key,
                // Signed, as the relay signs.
                signature: Some(st.event_key.sign(e.payload.as_bytes())),
                payload: e.payload,
            }
        })
        .collect();
    let t = Instant::now();
    for chunk in records.chunks(500) {
        st.bus.publish(chunk).await?;
    }
    let bus_s = t.elapsed().as_secs_f64();

    let ping_p = percentiles(ping);
    let cmd_p = percentiles(mirrored);
    let out = json!({
        "bus": st.bus.kind(),
        "kafka_fetch_wait_ms": a.kafka.as_ref().map(|_| a.fetch_wait_ms),
        "command_to_mirrored_state": cmd_p,
        "baseline_socket_ping": ping_p,
        "ratio_p50": cmd_p["p50_ms"].as_f64().unwrap_or(0.0) / ping_p["p50_ms"].as_f64().unwrap_or(1.0),
        "relay": {"events": a.events, "outbox_write_s": write_s, "relay_s": relay_s, "relay_events_per_s": a.events as f64 / relay_s},
        "baseline_bus_publish": {"events_per_s": a.events as f64 / bus_s},
        "ratio_relay_to_bus": (a.events as f64 / relay_s) / (a.events as f64 / bus_s),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    phone_task.abort();
    sink_task.abort();
    srv.shutdown(Duration::from_millis(100), std::future::pending())
        .await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
