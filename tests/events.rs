//! Events and remote control through the real node: the outbox, the relay, the bus
//! (in-process, and Kafka on a real tansu broker), the device and browser sockets.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::kafka::Tansu;
use common::remote::{
    command, heartbeat, pair_phone, recv, register, send, send_raw, socket, socket_first_message,
    wait_for,
};
use common::{TestServer, connect, join, pump};
use control_api::store::Store;
use events::{Bus, Envelope, KafkaBus, KafkaConfig, Record, SeenIds, Topic};
use media_core::str0m::media::MediaKind::Audio;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// The project's venv python (`scripts/ensure-venv.sh`, shared with the recorder's tests).
async fn venv_python() -> String {
    tokio::task::spawn_blocking(support::python)
        .await
        .expect("the venv helper ran")
}

async fn kafka_server(t: &Tansu) -> TestServer {
    let brokers = t.brokers();
    TestServer::start_with(move |s| {
        s.events.kafka_brokers = Some(brokers);
        s.events.kafka_message_timeout_secs = 5;
    })
    .await
}

/// A consumer outside the node: its own group on the node's broker.
fn kafka_consumer(t: &Tansu, topics: &[Topic]) -> events::Subscription {
    let bus = Bus::Kafka(KafkaBus::new(KafkaConfig::new(&t.brokers())).unwrap());
    bus.subscribe(&format!("test-{}", uuid::Uuid::new_v4()), topics)
        .unwrap()
}

/// Envelopes from `sub` until `done` says enough (deduplicated by id), or panics.
async fn collect(
    sub: &mut events::Subscription,
    within: Duration,
    done: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = SeenIds::new(100_000);
    let mut out = Vec::new();
    while !done(&out) {
        let d = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => continue,
            Err(_) => panic!(
                "timed out; got {:?}",
                out.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>()
            ),
        };
        let env = Envelope::from_slice(&d.payload).expect("an envelope");
        assert!(
            d.signature.is_some(),
            "every record carries its signature: {env:?}"
        );
        assert_eq!(
            env.event_type().map(|t| t.topic()),
            Some(d.topic),
            "{env:?}"
        );
        if seen.first_time(&env.id) {
            out.push(env);
        }
        sub.commit(&d).unwrap();
    }
    out
}

fn kinds(v: &[Envelope]) -> Vec<&str> {
    v.iter().map(|e| e.kind.as_str()).collect()
}

/// A browser commands the phone over HTTP and over its socket; the phone answers with
/// its state; both browsers see it. Bad messages get errors and break nothing.
async fn remote_control(srv: &TestServer) {
    let http = &srv.http;
    let user = register(srv, &format!("{}@example.com", uuid::Uuid::new_v4())).await;
    let (device, device_token) = pair_phone(http, &srv.base, &user, "Pixel").await;
    let mut phone = socket(&srv.base, "/api/v1/devices/socket", &device_token).await;
    let welcome = wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    assert_eq!(welcome["device_id"], device);

    let mut a = socket(&srv.base, "/api/v1/events/socket", &user.access).await;
    let mut b = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
    for s in [&mut a, &mut b] {
        let snap = wait_for(s, WAIT, |m| m["type"] == "snapshot").await;
        assert_eq!(snap["devices"][0]["id"], device);
        assert_eq!(snap["devices"][0]["online"], true);
    }

    // HTTP command → phone.
    let (s, accepted) = command(
        http,
        &srv.base,
        &user.access,
        &device,
        json!({"action": "pause"}),
    )
    .await;
    assert_eq!(s, 202, "{accepted}");
    let cmd = wait_for(&mut phone, WAIT, |m| m["type"] == "command").await;
    assert_eq!(cmd["action"], "pause");
    assert_eq!(cmd["command_id"], accepted["command_id"]);
    assert_eq!(cmd["event_id"], accepted["event_id"]);

    // Phone's new state → every browser.
    send(
        &mut phone,
        json!({"type": "state", "command_id": cmd["command_id"], "state": {"status": "paused", "position_ms": 61_000, "volume": 80, "track": {"id": "t1", "title": "Song"}}}),
    )
    .await;
    for s in [&mut a, &mut b] {
        let np = wait_for(s, WAIT, |m| m["type"] == "now_playing").await;
        assert_eq!(np["data"]["command_id"], accepted["command_id"]);
        assert_eq!(np["data"]["state"]["status"], "paused");
        assert_eq!(np["data"]["state"]["position_ms"], 61_000);
        assert_eq!(np["data"]["device_id"], device);
    }
    let r = http
        .get(format!("{}/api/v1/devices/{device}/now-playing", srv.base))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let np: Value = r.json().await.unwrap();
    assert_eq!(np["state"]["track"]["title"], "Song");

    // Socket command from browser b → phone, acknowledged to b with its request id.
    send(&mut b, json!({"type": "command", "request_id": 7, "device_id": device, "action": "seek", "position_ms": 5000})).await;
    let ack = wait_for(&mut b, WAIT, |m| m["type"] == "command_accepted").await;
    assert_eq!(ack["request_id"], 7);
    let cmd = wait_for(&mut phone, WAIT, |m| m["type"] == "command").await;
    assert_eq!(cmd["action"], "seek");
    assert_eq!(cmd["position_ms"], 5000);
    assert_eq!(cmd["command_id"], ack["command_id"]);

    // Bad input: an error message, and the sockets keep working.
    send_raw(&mut b, "{not json").await;
    let e = wait_for(&mut b, WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["error"]["code"], "malformed_json");
    send(&mut b, json!({"type": "command", "request_id": 8, "device_id": device, "action": "volume", "volume": 300})).await;
    let e = wait_for(&mut b, WAIT, |m| m["type"] == "error").await;
    assert_eq!(
        (e["request_id"].clone(), e["error"]["code"].clone()),
        (json!(8), json!("invalid_field"))
    );
    send(
        &mut phone,
        json!({"type": "state", "state": {"status": "dancing"}}),
    )
    .await;
    let e = wait_for(&mut phone, WAIT, |m| m["type"] == "error").await;
    assert_eq!(e["error"]["code"], "invalid_message");
    send(&mut phone, json!({"type": "ping"})).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "pong").await;
    send(&mut b, json!({"type": "ping"})).await;
    wait_for(&mut b, WAIT, |m| m["type"] == "pong").await;

    // The phone leaves: browsers see it go offline; commands fail fast.
    drop(phone);
    for s in [&mut a, &mut b] {
        let st = wait_for(s, WAIT, |m| {
            m["type"] == "device_status" && m["event"] == "device.offline"
        })
        .await;
        assert_eq!(st["data"]["device_id"], device);
    }
    let t0 = std::time::Instant::now();
    let (s, e) = command(
        http,
        &srv.base,
        &user.access,
        &device,
        json!({"action": "resume"}),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "device_offline");
    assert!(t0.elapsed() < Duration::from_secs(2), "fails fast");

    // The relay's work shows in the metrics (sampled once a second): online, pause,
    // its state, seek, offline.
    srv.wait_for_metric("streamcore_events_published_total", 5)
        .await;
    srv.wait_for_metric_to_be("streamcore_events_pending", 0)
        .await;
    srv.wait_for_metric_to_be("streamcore_device_sockets", 0)
        .await;
    srv.wait_for_metric_to_be("streamcore_user_sockets", 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_control_through_the_in_process_bus() {
    let srv = TestServer::start().await;
    remote_control(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_control_through_kafka() {
    let t = Tansu::start();
    let srv = kafka_server(&t).await;
    remote_control(&srv).await;
    srv.stop().await;
}

/// Kafka over TLS with a SCRAM login (`events.kafka_tls`, `kafka_ca_file`,
/// `kafka_sasl_*`): remote control works end to end through a broker that lets in only
/// that user, and an outside client (confluent-kafka) with the login reads the events.
/// A wrong password, no login, or no TLS (or TLS without the broker's CA) publishes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_with_a_scram_login() {
    const USER: &str = "streamcore-node";
    const PASSWORD: &str = "a broker password of some length";
    let t = Tansu::start_secured(USER, PASSWORD);
    let login = |password: &str| events::ScramLogin {
        // tansu 0.6 offers SCRAM-SHA-256 only.
        mechanism: events::ScramMechanism::Sha256,
        username: USER.into(),
        password: password.into(),
    };
    let bus = |tls: bool, ca_file: Option<std::path::PathBuf>, scram| {
        let mut config = KafkaConfig::new(&t.brokers());
        config.message_timeout = Duration::from_secs(3);
        config.security = events::KafkaSecurity {
            tls,
            ca_file,
            scram,
        };
        KafkaBus::new(config).unwrap()
    };
    let record = |key: &str| {
        let env = Envelope::new(
            events::EventType::ALL[0],
            1,
            "streamcore/test",
            format!("test/{key}"),
            json!({}),
        );
        Record {
            topic: env.event_type().unwrap().topic(),
            key: key.into(),
            signature: None,
            payload: env.to_json(),
        }
    };
    // The right login over TLS makes the topics and publishes.
    let allowed = bus(true, Some(t.ca_file()), Some(login(PASSWORD)));
    allowed
        .ensure_topics()
        .await
        .expect("topics made with the login");
    allowed
        .publish(&[record("allowed")])
        .await
        .expect("the right login publishes");
    // Anyone else publishes nothing: each fails within its message timeout.
    let refused = [
        (
            "a wrong password",
            true,
            Some(t.ca_file()),
            Some(login("not it")),
        ),
        ("no login", true, Some(t.ca_file()), None),
        ("no TLS", false, None, Some(login(PASSWORD))),
        ("an unknown CA", true, None, Some(login(PASSWORD))),
    ];
    for (what, tls, ca_file, scram) in refused {
        assert!(
            bus(tls, ca_file, scram)
                .publish(&[record("refused")])
                .await
                .is_err(),
            "{what}: published through a broker that wants a login over TLS"
        );
    }

    // A node with the settings: remote control end to end through the broker, and an
    // outside client with the login reads the events.
    let (brokers, ca) = (t.brokers(), t.ca_file());
    let srv = TestServer::start_with(move |s| {
        s.events.kafka_brokers = Some(brokers);
        s.events.kafka_message_timeout_secs = 5;
        s.events.kafka_tls = true;
        s.events.kafka_ca_file = Some(ca);
        s.events.kafka_sasl_mechanism = Some("SCRAM-SHA-256".into());
        s.events.kafka_sasl_username = Some(USER.into());
        s.events.kafka_sasl_password = Some(PASSWORD.into());
    })
    .await;
    remote_control(&srv).await;
    let py = venv_python().await;
    let records = t.outside_consume(&py, "playback.events", 1).await;
    assert_eq!(records[0]["value"]["version"], 1, "{records:?}");
    srv.stop().await;
}

/// Records produced straight to the topics by someone without the cluster's event key
/// are ignored: a command reaches no device, a forged "sessions ended" closes no
/// socket. Signed with the key, a command still reaches only a device of the user it
/// names (checked in the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bus_records_command_no_device() {
    let t = Tansu::start();
    let srv = kafka_server(&t).await;
    let http = &srv.http;
    let owner = register(&srv, "owner@example.com").await;
    let other = register(&srv, "other@example.com").await;
    let (device, device_token) = pair_phone(http, &srv.base, &owner, "Pixel").await;
    let mut phone = socket(&srv.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    let node_key = srv.server().api.event_key.clone();
    let wrong_key = events::EventKey::new(&[9; 32]).unwrap();
    let now = control_api::auth::now_millis();
    let record = |kind, key: &str, data: Value, sign: Option<&events::EventKey>| {
        let env = Envelope::new(kind, now, "outside/forger", format!("device/{key}"), data);
        let payload = env.to_json();
        Record {
            topic: kind.topic(),
            key: key.to_owned(),
            signature: sign.map(|k| k.sign(payload.as_bytes())),
            payload,
        }
    };
    let pause = |user: &str, id: &str| json!({"device_id": device, "user_id": user, "command_id": id, "action": "pause"});
    let forger = Bus::Kafka(KafkaBus::new(KafkaConfig::new(&t.brokers())).unwrap());
    forger
        .publish(&[
            record(
                events::EventType::UserSessionsEnded,
                &owner.id,
                json!({"user_id": owner.id, "ended_at": now + 60_000, "reason": "forged"}),
                None,
            ),
            record(
                events::EventType::PlaybackPause,
                &device,
                pause(&owner.id, "unsigned"),
                None,
            ),
            record(
                events::EventType::PlaybackPause,
                &device,
                pause(&owner.id, "wrong-key"),
                Some(&wrong_key),
            ),
            record(
                events::EventType::PlaybackPause,
                &device,
                pause(&other.id, "other-users"),
                Some(&node_key),
            ),
            record(
                events::EventType::PlaybackPause,
                &device,
                pause(&owner.id, "signed"),
                Some(&node_key),
            ),
        ])
        .await
        .unwrap();
    // Same key, same partition, in order: had any forged record been obeyed it would
    // have come first (and the forged session end would have closed the socket).
    let first = wait_for(&mut phone, WAIT, |m| m["type"] == "command").await;
    assert_eq!(first["command_id"], "signed", "{first}");
    let (s, accepted) = command(
        http,
        &srv.base,
        &owner.access,
        &device,
        json!({"action": "resume"}),
    )
    .await;
    assert_eq!(s, 202, "{accepted}");
    let next = wait_for(&mut phone, WAIT, |m| m["type"] == "command").await;
    assert_eq!(next["command_id"], accepted["command_id"], "{next}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_to_a_device_that_never_connected_fail_and_others_are_refused() {
    let srv = TestServer::start().await;
    let http = &srv.http;
    let user = register(&srv, "owner@example.com").await;
    let other = register(&srv, "other@example.com").await;
    let (device, device_token) = pair_phone(http, &srv.base, &user, "Pixel").await;
    let (s, e) = command(
        http,
        &srv.base,
        &user.access,
        &device,
        json!({"action": "play"}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (409, json!("device_offline"))
    );
    // An HTTP heartbeat makes it online but gives it no socket to receive commands.
    assert_eq!(
        heartbeat(http, &srv.base, &device_token, &device).await,
        204
    );
    let (s, _) = command(
        http,
        &srv.base,
        &user.access,
        &device,
        json!({"action": "play"}),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = command(
        http,
        &srv.base,
        &other.access,
        &device,
        json!({"action": "play"}),
    )
    .await;
    assert_eq!(s, 404, "another user's device does not exist for them");
    let (s, e) = command(
        http,
        &srv.base,
        &device_token,
        &device,
        json!({"action": "play"}),
    )
    .await;
    assert_eq!((s, e["error"]["code"].clone()), (403, json!("forbidden")));
    let (s, e) = command(
        http,
        &srv.base,
        &user.access,
        &device,
        json!({"action": "explode"}),
    )
    .await;
    assert_eq!((s, e["error"]["field"].clone()), (422, json!("action")));
    // A user credential cannot open the device socket; a bad token cannot open either.
    let ws = format!(
        "{}/api/v1/devices/socket",
        srv.base.replacen("http", "ws", 1)
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws.clone())
            .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user.access).parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let mut bad = socket_first_message(&srv.base, "/api/v1/events/socket", "nonsense").await;
    let e = recv(&mut bad, WAIT).await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");
    assert!(
        recv(&mut bad, WAIT).await.is_none(),
        "closed after a bad auth"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_status_follows_sockets_heartbeats_and_silence() {
    let srv = TestServer::start_with(|s| s.events.online_window_secs = 1).await;
    let bus = srv.server().api.bus.clone();
    let mut sub = bus
        .subscribe("test-status", &[Topic::DeviceStatus])
        .unwrap();
    let http = &srv.http;
    let user = register(&srv, "s@example.com").await;
    let (device, device_token) = pair_phone(http, &srv.base, &user, "Pixel").await;
    let mut phone = socket(&srv.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    send(&mut phone, json!({"type": "heartbeat", "capabilities": {"mic": true, "camera": false, "screen": false}})).await;
    // Silence longer than the online window: the node closes the socket.
    let got = collect(&mut sub, WAIT, |v| v.len() >= 3).await;
    assert_eq!(
        kinds(&got),
        [
            "device.online",
            "device.capabilities_changed",
            "device.offline"
        ]
    );
    assert!(got.iter().all(|e| e.subject == format!("device/{device}")));
    assert_eq!(got[1].data["capabilities"]["mic"], true);
    // An HTTP-only device goes offline when its heartbeats stop (the sweeper).
    assert_eq!(
        heartbeat(http, &srv.base, &device_token, &device).await,
        204
    );
    let got = collect(&mut sub, WAIT, |v| v.len() >= 2).await;
    assert_eq!(kinds(&got), ["device.online", "device.offline"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_follow_whip_and_whep_sessions() {
    // The room ends a second after its last participant left.
    let srv = TestServer::start_with(|s| s.media.empty_room_grace_secs = 1).await;
    let mut sub = srv
        .server()
        .api
        .bus
        .subscribe("test-rooms", &[Topic::RoomEvents])
        .unwrap();
    let mut publisher = join(
        &srv,
        "/whip/ev",
        &srv.publish_token("ev", "phone"),
        &[Audio],
    )
    .await
    .unwrap();
    let mut player = join(&srv, "/whep/ev", &srv.subscribe_token("ev", "tv"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut publisher, &mut player]).await;
    let got = collect(&mut sub, WAIT, |v| v.len() >= 4).await;
    let mut k = kinds(&got);
    k[1..].sort();
    assert_eq!(
        k,
        [
            "room.started",
            "room.participant_joined",
            "room.participant_joined",
            "room.track_published"
        ]
    );
    let track = got
        .iter()
        .find(|e| e.kind == "room.track_published")
        .unwrap();
    assert_eq!(
        (
            track.data["participant"].clone(),
            track.data["kind"].clone()
        ),
        (json!("phone"), json!("audio"))
    );
    for url in [&publisher.location, &player.location] {
        let token = if url.starts_with("/whip") {
            &publisher.token
        } else {
            &player.token
        };
        let r = srv
            .http
            .delete(format!("{}{url}", srv.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    pump(
        &mut [&mut publisher, &mut player],
        Duration::from_millis(100),
    )
    .await;
    let got = collect(&mut sub, WAIT, |v| v.iter().any(|e| e.kind == "room.ended")).await;
    assert_eq!(
        kinds(&got),
        [
            "room.track_unpublished",
            "room.participant_left",
            "room.participant_left",
            "room.ended"
        ]
    );
    assert!(got.iter().all(|e| e.subject == "room/ev"));
    srv.stop().await;
}

/// Every topic round-trips through a real broker, and records of one key arrive in
/// the order they were published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_round_trips_through_kafka_in_order_per_key() {
    let t = Tansu::start();
    let bus = Bus::Kafka(KafkaBus::new(KafkaConfig::new(&t.brokers())).unwrap());
    bus.ensure_topics().await.unwrap();
    let mut sub = kafka_consumer(&t, &Topic::ALL);
    let mut records = Vec::new();
    let mut sent: HashMap<(Topic, String), Vec<String>> = HashMap::new();
    for i in 0..120 {
        let topic = Topic::ALL[i % Topic::ALL.len()];
        let key = format!("key-{}", i % 4);
        let kind = events::EventType::ALL
            .iter()
            .find(|k| k.topic() == topic)
            .unwrap();
        let env = Envelope::new(
            *kind,
            1_000 + i as i64,
            "streamcore/test",
            format!("test/{key}"),
            json!({"n": i}),
        );
        sent.entry((topic, key.clone()))
            .or_default()
            .push(env.id.clone());
        let payload = env.to_json();
        records.push(Record {
            topic,
            key,
            signature: Some(format!("sig-{}", env.id)),
            payload,
        });
    }
    bus.publish(&records).await.unwrap();
    let got = collect(&mut sub, Duration::from_secs(30), |v| v.len() >= 120).await;
    let mut received: HashMap<(Topic, String), Vec<String>> = HashMap::new();
    for e in &got {
        let topic = e.event_type().unwrap().topic();
        let key = e.subject.trim_start_matches("test/").to_owned();
        received.entry((topic, key)).or_default().push(e.id.clone());
    }
    assert_eq!(
        received, sent,
        "every record once, in order per (topic, key)"
    );
}

/// The broker becomes unreachable while events keep happening: they wait in the outbox
/// and arrive once it is back, each once and in order. The outside consumer is
/// confluent-kafka (librdkafka in Python), not our client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    let t = Tansu::start();
    let srv = kafka_server(&t).await;
    let http = &srv.http;
    let user = register(&srv, "k@example.com").await;
    let (device, device_token) = pair_phone(http, &srv.base, &user, "Pixel").await;
    let mut phone = socket(&srv.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    let seek = |n: i64| {
        command(
            http,
            &srv.base,
            &user.access,
            &device,
            json!({"action": "seek", "position_ms": n}),
        )
    };
    let mut issued = Vec::new();
    for n in 0..10 {
        let (s, a) = seek(n).await;
        assert_eq!(s, 202, "{a}");
        issued.push(a["event_id"].as_str().unwrap().to_owned());
    }
    let mut sub = kafka_consumer(&t, &[Topic::PlaybackEvents]);
    let first = collect(&mut sub, Duration::from_secs(30), |v| v.len() >= 10).await;
    assert_eq!(
        first.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        issued
    );
    drop(sub);

    t.cut();
    let mut during = Vec::new();
    for n in 10..20 {
        let (s, a) = seek(n).await;
        assert_eq!(
            s, 202,
            "commands are accepted while the broker is away: {a}"
        );
        during.push(a["event_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = srv
        .server()
        .api
        .db
        .count_unpublished_events()
        .await
        .unwrap();
    assert!(pending >= 10, "the events wait in the outbox ({pending})");
    t.heal();
    let out = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if srv
                .server()
                .api
                .db
                .count_unpublished_events()
                .await
                .unwrap()
                == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(out.is_ok(), "the outbox drained after the broker returned");
    let py = venv_python().await;
    let records = t.outside_consume(&py, "playback.events", 20).await;
    let mut ids = Vec::new();
    let mut distinct = HashSet::new();
    for v in records {
        assert_eq!(v["key"], device, "keyed by device");
        let env = &v["value"];
        assert_eq!(env["version"], 1);
        assert_eq!(env["type"], "playback.seek");
        if distinct.insert(env["id"].as_str().unwrap().to_owned()) {
            ids.push(env["id"].as_str().unwrap().to_owned());
        }
    }
    let all: Vec<String> = issued.iter().chain(&during).cloned().collect();
    assert_eq!(
        ids, all,
        "every event once, in order, the waiting ones after the others"
    );
    srv.stop().await;
}

/// Two nodes share one PostgreSQL database and one broker (and their keys): a browser on
/// node A commands a phone whose socket is on node B, and the phone's state reaches the
/// browsers on both nodes, once each. One relay publishes at a time (the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_database_and_a_broker() {
    let t = Tansu::start();
    let (db_url, _db) = common::pg::fresh_pg_url().await;
    let shared = std::env::temp_dir().join(format!("sc-two-nodes-{}", uuid::Uuid::new_v4()));
    let node = |id: &'static str| {
        let (db_url, brokers, dir) = (db_url.clone(), t.brokers(), shared.clone());
        move |s: &mut streamcore::config::Settings| {
            s.data_dir = dir;
            s.database_url = Some(db_url);
            s.node_id = Some(id.into());
            s.events.kafka_brokers = Some(brokers);
            s.events.kafka_fetch_wait_ms = 20;
        }
    };
    let a = TestServer::start_with(node("node-a")).await;
    let b = TestServer::start_with(node("node-b")).await;
    let http = &a.http;
    let user = register(&a, "two@example.com").await;
    let (device, device_token) = pair_phone(http, &a.base, &user, "Pixel").await;
    let mut phone = socket(&b.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    let mut on_a = socket(&a.base, "/api/v1/events/socket", &user.access).await;
    let mut on_b = socket(&b.base, "/api/v1/events/socket", &user.access).await;
    for s in [&mut on_a, &mut on_b] {
        wait_for(s, WAIT, |m| m["type"] == "snapshot").await;
    }
    let (s, acc) = command(
        http,
        &a.base,
        &user.access,
        &device,
        json!({"action": "next"}),
    )
    .await;
    assert_eq!(s, 202, "{acc}");
    let cmd = wait_for(&mut phone, Duration::from_secs(20), |m| {
        m["type"] == "command"
    })
    .await;
    assert_eq!(cmd["command_id"], acc["command_id"]);
    send(&mut phone, json!({"type": "state", "command_id": cmd["command_id"], "state": {"status": "playing", "track": {"id": "t2"}}})).await;
    for s in [&mut on_a, &mut on_b] {
        let np = wait_for(s, Duration::from_secs(20), |m| m["type"] == "now_playing").await;
        assert_eq!(np["data"]["command_id"], acc["command_id"]);
        // Once: nothing else of that kind follows.
        while let Some(m) = recv(s, Duration::from_millis(500)).await {
            assert_ne!(
                m["type"], "now_playing",
                "a repeat reached the browser: {m}"
            );
        }
    }
    // The phone got the command once, too.
    while let Some(m) = recv(&mut phone, Duration::from_millis(300)).await {
        assert_ne!(m["type"], "command", "a repeat reached the phone: {m}");
    }
    // The relays' metrics are sampled once a second: wait until the three show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let published = loop {
        let p = (
            a.metric("streamcore_events_published_total").await,
            b.metric("streamcore_events_published_total").await,
        );
        if p.0 + p.1 >= 3 || tokio::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        published.0 == 0 || published.1 == 0,
        "one relay publishes at a time: {published:?}"
    );
    assert!(published.0 + published.1 >= 3, "{published:?}");
    b.stop().await;
    a.stop().await;
}

/// Sockets do not outlive their credentials: removing a device closes its socket at
/// once, a password change closes the user's browser and device sockets (and the old
/// access token, which still verifies, opens none), and a socket whose token expires
/// is closed unless a fresh one arrives in-band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_close_when_their_credentials_end() {
    let srv = TestServer::start().await;
    let http = &srv.http;
    let user = register(&srv, "sockets-end@example.com").await;
    let is_error =
        |code: &'static str| move |v: &Value| v["type"] == "error" && v["error"]["code"] == code;

    // A removed device's socket closes at once.
    let (gone, gone_token) = pair_phone(http, &srv.base, &user, "Old phone").await;
    let mut gone_ws = socket_first_message(&srv.base, "/api/v1/devices/socket", &gone_token).await;
    wait_for(&mut gone_ws, WAIT, |v| v["type"] == "welcome").await;
    let s = http
        .delete(format!("{}/api/v1/devices/{gone}", srv.base))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);
    wait_for(&mut gone_ws, WAIT, is_error("not_found")).await;
    assert!(recv(&mut gone_ws, WAIT).await.is_none(), "closed");

    // A password change closes the user's sockets, browsers' and devices'.
    let (_, phone_token) = pair_phone(http, &srv.base, &user, "Phone").await;
    let mut phone = socket_first_message(&srv.base, "/api/v1/devices/socket", &phone_token).await;
    wait_for(&mut phone, WAIT, |v| v["type"] == "welcome").await;
    let mut browser = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
    wait_for(&mut browser, WAIT, |v| v["type"] == "snapshot").await;
    let (s, v) = common::remote::post(
        http,
        format!("{}/api/v1/me/password", srv.base),
        Some(&user.access),
        json!({"current_password": "a long enough password", "new_password": "another long password"}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    for ws in [&mut browser, &mut phone] {
        wait_for(ws, WAIT, is_error("session_ended")).await;
        assert!(recv(ws, WAIT).await.is_none(), "closed");
    }
    // The old access token still verifies (for its short life) but opens no socket.
    let mut again = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
    wait_for(&mut again, WAIT, is_error("session_ended")).await;
    assert!(recv(&mut again, WAIT).await.is_none(), "closed");

    // Tokens that expire in 2 s, signed with the node's own key.
    let mut tokens = control_api::auth::AccessTokens::load_or_create(
        &srv.data_dir.join("keys/access-token-ed25519.pem"),
    )
    .unwrap();
    tokens.access_ttl = Duration::from_secs(2);
    let short = tokens
        .issue(&user.id, control_api::store::Role::User, None)
        .unwrap();
    let mut expiring = socket_first_message(&srv.base, "/api/v1/events/socket", &short).await;
    wait_for(&mut expiring, WAIT, |v| v["type"] == "snapshot").await;
    let mut refreshed = socket_first_message(&srv.base, "/api/v1/events/socket", &short).await;
    wait_for(&mut refreshed, WAIT, |v| v["type"] == "snapshot").await;
    tokens.access_ttl = Duration::from_secs(60);
    let fresh = tokens
        .issue(&user.id, control_api::store::Role::User, None)
        .unwrap();
    send(&mut refreshed, json!({"type": "auth", "token": fresh})).await;
    wait_for(&mut refreshed, WAIT, |v| v["type"] == "auth_ok").await;
    // The first closes when its token ends; the refreshed one still answers after.
    wait_for(&mut expiring, WAIT, is_error("token_expired")).await;
    assert!(recv(&mut expiring, WAIT).await.is_none(), "closed");
    send(&mut refreshed, json!({"type": "nonsense", "request_id": 7})).await;
    let answer = wait_for(&mut refreshed, WAIT, |v| v["request_id"] == 7).await;
    assert_eq!(answer["type"], "error", "{answer}");
    // A fresh token of someone else is refused, and the socket closed.
    let other = register(&srv, "someone-else@example.com").await;
    send(
        &mut refreshed,
        json!({"type": "auth", "token": other.access, "request_id": 8}),
    )
    .await;
    wait_for(&mut refreshed, WAIT, is_error("forbidden")).await;
    assert!(recv(&mut refreshed, WAIT).await.is_none(), "closed");
    srv.stop().await;
}

/// A user holds at most `limits.sockets_per_user` sockets on a node (2 here, browsers'
/// and devices' together): one more is told why and closed; once one closes, another
/// opens; another user is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sockets_are_capped() {
    let srv = TestServer::start_with(|s| s.limits.sockets_per_user = 2).await;
    let http = &srv.http;
    let user = register(&srv, "many-tabs@example.com").await;
    let (_, phone_token) = pair_phone(http, &srv.base, &user, "Phone").await;
    let mut phone = socket_first_message(&srv.base, "/api/v1/devices/socket", &phone_token).await;
    wait_for(&mut phone, WAIT, |v| v["type"] == "welcome").await;
    let mut tab = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
    wait_for(&mut tab, WAIT, |v| v["type"] == "snapshot").await;
    let mut third = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
    let e = wait_for(&mut third, WAIT, |v| v["type"] == "error").await;
    assert_eq!(e["error"]["code"], "quota_exceeded", "{e}");
    assert!(recv(&mut third, WAIT).await.is_none(), "closed");
    let other = register(&srv, "one-tab@example.com").await;
    let mut theirs = socket_first_message(&srv.base, "/api/v1/events/socket", &other.access).await;
    wait_for(&mut theirs, WAIT, |v| v["type"] == "snapshot").await;
    // One closes: the next opens (the node may take a moment to see the close).
    drop(tab);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut next = socket_first_message(&srv.base, "/api/v1/events/socket", &user.access).await;
        match recv(&mut next, WAIT).await {
            Some(v) if v["type"] == "snapshot" => break,
            Some(v) if v["error"]["code"] == "quota_exceeded" => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the closed socket still counts"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    srv.stop().await;
}

/// Frames of `ws` until `n` pings arrived (each answered by the client library as it
/// reads), or panics after `within`.
async fn read_pings(ws: &mut common::remote::Ws, n: usize, within: Duration) {
    use futures_util::StreamExt as _;
    let deadline = tokio::time::Instant::now() + within;
    let mut pings = 0;
    while pings < n {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None) => {
                panic!("closed after {pings} pings")
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("socket error after {pings} pings: {e}"),
            Err(_) => panic!("{pings} of {n} pings within {within:?}"),
        }
    }
}

/// True once `ws` ends (a close frame, the end of the stream or a reset) within
/// `within`; the frames before are read and dropped.
async fn closes(ws: &mut common::remote::Ws, within: Duration) -> bool {
    use futures_util::StreamExt as _;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)),
            ) => {
                return true;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => return false,
        }
    }
}

/// The node pings quiet sockets and closes those that stay silent (`limits.websocket_idle_secs`):
/// a browser socket and a `/rtc` socket whose client stopped reading are closed; ones
/// that answer the pings stay open for several idle periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_answering_ones_stay() {
    let srv = TestServer::start_with(|s| s.limits.websocket_idle_secs = 3).await;
    let user = register(&srv, "idle@example.com").await;
    let mut answering = socket(&srv.base, "/api/v1/events/socket", &user.access).await;
    let mut silent = socket(&srv.base, "/api/v1/events/socket", &user.access).await;
    let token = srv.token(
        "idle-room",
        "quiet",
        signaling::Grants {
            subscribe: true,
            ..signaling::Grants::default()
        },
    );
    let mut rtc_silent = socket(&srv.base, "/rtc", "unused").await;
    send(
        &mut rtc_silent,
        json!({"type": "join", "id": 0, "token": token, "version": 1}),
    )
    .await;
    wait_for(&mut rtc_silent, WAIT, |m| m["type"] == "joined").await;
    // Five pings a second apart is past the 3 s idle timeout, answered all along; the
    // others read nothing meanwhile.
    read_pings(&mut answering, 5, Duration::from_secs(20)).await;
    send(&mut answering, json!({"type": "ping"})).await;
    wait_for(&mut answering, WAIT, |m| m["type"] == "pong").await;
    assert!(
        closes(&mut silent, WAIT).await,
        "the silent browser socket is closed"
    );
    assert!(
        closes(&mut rtc_silent, WAIT).await,
        "the silent /rtc socket is closed"
    );
    srv.stop().await;
}

// ---------------------------------------------------------------- listening history

/// A signed `now_playing.updated` record of `device` at `at`, as the node publishes.
fn state_record(key: &events::EventKey, user: &str, device: &str, at: i64, state: Value) -> Record {
    let env = Envelope::new(
        events::EventType::NowPlayingUpdated,
        at,
        "streamcore/elsewhere",
        format!("device/{device}"),
        json!({"device_id": device, "user_id": user, "state": state}),
    );
    let payload = env.to_json();
    Record {
        topic: Topic::NowPlaying,
        key: device.to_owned(),
        signature: Some(key.sign(payload.as_bytes())),
        payload,
    }
}

fn playing(status: &str, id: &str, duration_ms: i64) -> Value {
    at_position(status, id, duration_ms, 0)
}

fn at_position(status: &str, id: &str, duration_ms: i64, position_ms: i64) -> Value {
    json!({"status": status, "position_ms": position_ms, "track": {"id": id, "title": format!("Title {id}"), "artist": "Band", "album": "Record", "duration_ms": duration_ms}})
}

/// Three days ago on `device` (states without numbers, as from an older node): `a`
/// for 80 s, `b` for 40 s (paused, then stopped), `c` skipped after 5 s, `d` for 40 s.
/// Three plays, 160 s.
fn three_plays(key: &events::EventKey, user: &str, device: &str, base: i64) -> Vec<Record> {
    let s = |at: i64, state: Value| state_record(key, user, device, base + at * 1000, state);
    vec![
        s(0, playing("playing", "a", 200_000)),
        s(40, at_position("playing", "a", 200_000, 40_000)),
        s(80, playing("playing", "b", 180_000)),
        s(120, at_position("paused", "b", 180_000, 40_000)),
        s(130, json!({"status": "stopped"})),
        s(200, playing("playing", "c", 200_000)),
        s(205, playing("playing", "d", 200_000)),
        s(245, json!({"status": "stopped"})),
    ]
}

async fn stats(srv: &TestServer, user: &common::remote::User) -> Value {
    let (s, v) = common::remote::get(
        &srv.http,
        format!("{}/api/v1/me/stats?period=all", srv.base),
        &user.access,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Polls the user's statistics until `done` holds (or panics with the last answer).
async fn stats_until(
    srv: &TestServer,
    user: &common::remote::User,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = stats(srv, user).await;
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plays the 1 s track `id` on the phone's socket, reporting `playing` until the play
/// counts and `srv` shows `plays` in all.
async fn play_live(
    srv: &TestServer,
    user: &common::remote::User,
    phone: &mut common::remote::Ws,
    id: &str,
    plays: i64,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        send(
            phone,
            json!({"type": "state", "state": playing("playing", id, 1_000)}),
        )
        .await;
        let v = stats(srv, user).await;
        if v["plays"] == plays {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The in-process bus: a batch published twice (a relay's retry) counts once, and the
/// statistics are the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_history_through_the_in_process_bus_counts_repeats_once() {
    let srv = TestServer::start().await;
    let user = register(&srv, "hist-inproc@example.com").await;
    let (device, _) = pair_phone(&srv.http, &srv.base, &user, "Pixel").await;
    let api = &srv.server().api;
    let base = control_api::auth::now_millis() - 3 * 24 * 3_600_000;
    let batch = three_plays(&api.event_key, &user.id, &device, base);
    api.bus.publish(&batch).await.unwrap();
    api.bus.publish(&batch).await.unwrap();
    let v = stats_until(&srv, &user, WAIT, |v| v["plays"] == 3).await;
    assert_eq!(v["top_artists"][0]["plays"], 3, "{v}");
    // A state after the repeats: once it is applied, so were they.
    api.bus
        .publish(&[state_record(
            &api.event_key,
            &user.id,
            &device,
            base + 600_000,
            json!({"status": "stopped"}),
        )])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !api
        .db
        .listening_cursor(&device)
        .await
        .unwrap()
        .is_some_and(|(c, _)| c.contains(&format!("\"last_at\":{}", base + 600_000)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last state was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats(&srv, &user).await["listened_ms"], 160_000);
    let (s, recent) = common::remote::get(
        &srv.http,
        format!("{}/api/v1/me/plays", srv.base),
        &user.access,
    )
    .await;
    assert_eq!(s, 200);
    let listened: Vec<i64> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["listened_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(listened, [40_000, 40_000, 80_000], "{recent}");
    assert_eq!(stats(&srv, &user).await["plays"], 3);
    let r = srv
        .http
        .get(format!("{}/api/v1/me/stats", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the history is its user's alone");
    // Bad periods and limits are refused in words.
    for q in ["period=decade", "limit=0", "limit=x"] {
        let (s, e) = common::remote::get(
            &srv.http,
            format!("{}/api/v1/me/stats?{q}", srv.base),
            &user.access,
        )
        .await;
        assert_eq!(s, 422, "{q}: {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    srv.stop().await;
}

/// Kafka: the history consumer reads `now.playing` as any outside consumer does. The
/// phone's own states and records published twice count each play once. Then the
/// history is rebuilt: with the plays and cursors gone from the database (a restore
/// from before them), a node with a new consumer group reads the whole topic again
/// from its start and makes the very same plays, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_history_from_kafka_survives_a_replay_of_the_topic() {
    let t = Tansu::start();
    let shared = std::env::temp_dir().join(format!("sc-history-{}", uuid::Uuid::new_v4()));
    let node = |group: &'static str| {
        let (brokers, dir) = (t.brokers(), shared.clone());
        move |s: &mut streamcore::config::Settings| {
            s.data_dir = dir;
            s.events.kafka_brokers = Some(brokers);
            s.events.kafka_fetch_wait_ms = 20;
            s.events.history_group = group.into();
        }
    };
    let a = TestServer::start_with(node("streamcore-history")).await;
    let user = register(&a, "hist-kafka@example.com").await;
    let (device, device_token) = pair_phone(&a.http, &a.base, &user, "Pixel").await;
    let key = a.server().api.event_key.clone();
    let outside = Bus::Kafka(KafkaBus::new(KafkaConfig::new(&t.brokers())).unwrap());
    let batch = three_plays(
        &key,
        &user.id,
        &device,
        control_api::auth::now_millis() - 3 * 24 * 3_600_000,
    );
    outside.publish(&batch).await.unwrap();
    outside.publish(&batch).await.unwrap();
    stats_until(&a, &user, Duration::from_secs(30), |v| v["plays"] == 3).await;

    // The phone's own states, through the node's outbox and relay.
    let mut phone = socket(&a.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    play_live(&a, &user, &mut phone, "live", 4).await;
    send(
        &mut phone,
        json!({"type": "state", "state": {"status": "stopped"}}),
    )
    .await;
    // The stop is applied once the device's cursor holds no open play.
    let db = a.server().api.db.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !db
        .listening_cursor(&device)
        .await
        .unwrap()
        .is_some_and(|(c, _)| c.contains("\"open\":null"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stop was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(phone);
    let (_, plays_before) =
        common::remote::get(&a.http, format!("{}/api/v1/me/plays", a.base), &user.access).await;
    let total_before = stats(&a, &user).await["listened_ms"].as_i64().unwrap();
    a.stop().await;

    // The database loses the history; a node whose history group is new reads the
    // topic from its start, every record (the repeats too) again.
    let db = control_api::store::sqlite::SqliteStore::connect(
        shared.join("streamcore.db").to_str().unwrap(),
    )
    .await
    .unwrap();
    for sql in ["DELETE FROM plays", "DELETE FROM listening_cursors"] {
        sqlx::query(sql).execute(db.pool()).await.unwrap();
    }
    db.pool().close().await;
    let b = TestServer::start_with(node("streamcore-history-rebuilt")).await;
    stats_until(&b, &user, Duration::from_secs(30), |v| v["plays"] == 4).await;
    let mut phone = socket(&b.base, "/api/v1/devices/socket", &device_token).await;
    wait_for(&mut phone, WAIT, |m| m["type"] == "welcome").await;
    // A new play after the replay: once it shows, the replayed records before it (same
    // device, same partition) were all read.
    let after = play_live(&b, &user, &mut phone, "after", 5).await;
    let (_, plays_after) =
        common::remote::get(&b.http, format!("{}/api/v1/me/plays", b.base), &user.access).await;
    let older: Vec<&Value> = plays_after.as_array().unwrap().iter().skip(1).collect();
    let earlier: Vec<&Value> = plays_before.as_array().unwrap().iter().collect();
    assert_eq!(earlier.len(), 4, "{plays_before}");
    assert_eq!(older, earlier, "the replay changed the plays before it");
    assert_eq!(after["plays"], 5, "{after}");
    assert_eq!(plays_after[0]["track_id"], "after", "{plays_after}");
    let old_total: i64 = older
        .iter()
        .map(|p| p["listened_ms"].as_i64().unwrap())
        .sum();
    assert_eq!(old_total, total_before, "{plays_after}");
    b.stop().await;
    let _ = std::fs::remove_dir_all(&shared);
}
