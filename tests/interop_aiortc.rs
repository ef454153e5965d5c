//! Interop with an independent WebRTC implementation: aiortc (Python) publishes a
//! 440 Hz tone and synthetic video over WHIP; aiortc players on WHEP decode them.
//!
//! The Python virtualenv is created (once, cached) by `scripts/ensure-venv.sh`. All
//! traffic stays on 127.0.0.1: the script pins aioice's host addresses to loopback.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use tokio::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's venv python (`scripts/ensure-venv.sh`, shared with the recorder's tests).
async fn venv_python() -> String {
    tokio::task::spawn_blocking(support::python)
        .await
        .expect("the venv helper ran")
}

fn harness(py: &str, args: &[String]) -> Command {
    let mut c = Command::new(py);
    c.arg(repo().join("scripts/interop/whip_whep.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a harness process to completion within `limit`, returning its last JSON line.
async fn finish(child: tokio::process::Child, what: &str, limit: Duration) -> serde_json::Value {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .expect("harness output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{what} printed nothing; stderr:\n{stderr}"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: {e}: {last}"))
}

async fn interop(codec: &str) {
    let py = venv_python().await;
    let srv = TestServer::start().await;
    let room = format!("interop-{}", codec.to_lowercase());
    let whip = format!("{}/whip/{room}", srv.base);
    let whep = format!("{}/whep/{room}", srv.base);

    // One player arrives before the publisher, one after.
    let early = harness(
        &py,
        &[
            "play".into(),
            "--url".into(),
            whep.clone(),
            "--token".into(),
            srv.subscribe_token(&room, "early"),
            "--seconds".into(),
            "3".into(),
            "--expect-freq".into(),
            "440".into(),
            "--expect-video".into(),
            "--video-codec".into(),
            codec.into(),
            "--timeout".into(),
            "25".into(),
        ],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = harness(
        &py,
        &[
            "publish".into(),
            "--url".into(),
            whip,
            "--token".into(),
            srv.publish_token(&room, "phone"),
            "--seconds".into(),
            "7".into(),
            "--freq".into(),
            "440".into(),
            "--video".into(),
            "--video-codec".into(),
            codec.into(),
        ],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = harness(
        &py,
        &[
            "play".into(),
            "--url".into(),
            whep,
            "--token".into(),
            srv.subscribe_token(&room, "late"),
            "--seconds".into(),
            "3".into(),
            "--expect-freq".into(),
            "440".into(),
            "--expect-video".into(),
            "--video-codec".into(),
            codec.into(),
        ],
    )
    .spawn()
    .unwrap();

    let limit = Duration::from_secs(40);
    let early = finish(early, "early player", limit).await;
    let late = finish(late, "late player", limit).await;
    let publisher = finish(publisher, "publisher", limit).await;
    for (name, r) in [("early", &early), ("late", &late)] {
        assert_eq!(r["ok"], true, "{name}: {r}");
        assert!(
            (r["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 15.0,
            "{name}: {r}"
        );
        assert!(r["audio_frames"].as_u64().unwrap() > 50, "{name}: {r}");
        assert!(r["video_frames"].as_u64().unwrap() > 5, "{name}: {r}");
        // The codec asked for, not VP8 as a fallback, and whole pictures of the
        // publisher's size.
        assert_eq!(r["video_codec"], codec, "{name}: {r}");
        assert_eq!(
            r["video_size"],
            serde_json::json!([320, 240]),
            "{name}: {r}"
        );
        assert_eq!(r["delete_status"], 200, "{name}: {r}");
    }
    assert_eq!(publisher["delete_status"], 200, "{publisher}");
    assert_eq!(publisher["video_codec"], codec, "{publisher}");
    assert!(srv.metric("streamcore_keyframe_requests_total").await >= 1);
    // Every session ends with its DELETE (the workers take the removal in their
    // next loop turn).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while srv.server().workers.session_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions left after every DELETE",
            srv.server().workers.session_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_vp8_and_opus() {
    interop("VP8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_h264_and_opus() {
    interop("H264").await;
}

/// A network that drops UDP, with aiortc: its ICE (aioice) has no ICE-TCP, so it goes
/// the other way a browser would, through TURN over TCP (Debian's coturn, with the
/// REST credentials the node hands out). Publisher and player run in a network
/// namespace whose UDP nftables drops; the player hears the publisher's 440 Hz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_without_udp_goes_through_turn_over_tcp() {
    through_turn_over_tcp_without_udp(Turn::Coturn).await;
}

/// The same through the node's own embedded TURN server (TCP listener only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_without_udp_goes_through_the_embedded_turn_over_tcp() {
    through_turn_over_tcp_without_udp(Turn::Embedded).await;
}

enum Turn {
    Coturn,
    Embedded,
}

async fn through_turn_over_tcp_without_udp(turn: Turn) {
    let py = venv_python().await;
    let ns = tokio::task::spawn_blocking(|| {
        let ns = common::netns::NetNs::create();
        ns.block_udp();
        ns
    })
    .await
    .unwrap();
    let host = ns.host_ip;
    let (coturn, srv, turn_tcp, secret) = match turn {
        Turn::Coturn => {
            let coturn =
                tokio::task::spawn_blocking(move || common::coturn::Coturn::start_on(host.into()))
                    .await
                    .unwrap();
            let turn_tcp = format!("turn:{host}:{}?transport=tcp", coturn.port);
            let (url, key) = (turn_tcp.clone(), coturn.secret.clone());
            let srv = TestServer::start_with(move |s| {
                s.http = std::net::SocketAddr::new(host.into(), 0);
                s.turn.external_urls = vec![url];
                s.turn.shared_secret = Some(key);
            })
            .await;
            let secret = coturn.secret.clone();
            (Some(coturn), srv, turn_tcp, secret)
        }
        Turn::Embedded => {
            let secret = format!("embedded-{}", rand::random::<u32>());
            let key = secret.clone();
            let srv = TestServer::start_with(move |s| {
                s.http = std::net::SocketAddr::new(host.into(), 0);
                s.turn.embedded = true;
                s.turn.udp_port = 0;
                s.turn.tcp_port = support::free_port();
                s.turn.shared_secret = Some(key);
            })
            .await;
            let at = srv.server().turn.as_ref().and_then(|t| t.tcp_addr).unwrap();
            (None, srv, format!("turn:{at}?transport=tcp"), secret)
        }
    };
    // The servers the node hands a client of this identity (join-token response,
    // `joined`, WHIP/WHEP `Link`).
    let ice = |identity: &str| {
        let config = signaling::IceServerConfig {
            turn_urls: vec![turn_tcp.clone()],
            shared_secret: Some(secret.clone()),
            credential_ttl: Duration::from_secs(600),
            ..Default::default()
        };
        serde_json::to_string(&config.servers_for(identity, std::time::SystemTime::now())).unwrap()
    };
    let o = ns.client_ip.octets();
    let lab = [
        "--lab-net".to_owned(),
        format!("{}.{}.{}.0/24", o[0], o[1], o[2]),
        "--host-ip".to_owned(),
        ns.client_ip.to_string(),
    ];
    let in_ns = |args: Vec<String>| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, &py])
            .arg(repo().join("scripts/interop/whip_whep.py"))
            .args(args)
            .args(&lab)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    };
    let publisher = in_ns(vec![
        "publish".into(),
        "--url".into(),
        format!("{}/whip/firewalled", srv.base),
        "--token".into(),
        srv.publish_token("firewalled", "phone"),
        "--seconds".into(),
        "8".into(),
        "--freq".into(),
        "440".into(),
        "--ice-servers".into(),
        ice("phone"),
        "--timeout".into(),
        "25".into(),
    ])
    .spawn()
    .unwrap();
    let player = in_ns(vec![
        "play".into(),
        "--url".into(),
        format!("{}/whep/firewalled", srv.base),
        "--token".into(),
        srv.subscribe_token("firewalled", "office"),
        "--seconds".into(),
        "3".into(),
        "--expect-freq".into(),
        "440".into(),
        "--ice-servers".into(),
        ice("office"),
        "--timeout".into(),
        "25".into(),
    ])
    .spawn()
    .unwrap();
    let limit = Duration::from_secs(50);
    let player = finish(player, "player behind the firewall", limit).await;
    let publisher = finish(publisher, "publisher behind the firewall", limit).await;
    assert_eq!(player["ok"], true, "{player}");
    assert!(
        (player["dominant_hz"].as_f64().unwrap() - 440.0).abs() < 15.0,
        "{player}"
    );
    assert!(player["audio_frames"].as_u64().unwrap() > 50, "{player}");
    assert_eq!(publisher["delete_status"], 200, "{publisher}");
    // Without the TURN server the same client gets nowhere: UDP really is blocked.
    let direct = in_ns(vec![
        "play".into(),
        "--url".into(),
        format!("{}/whep/firewalled", srv.base),
        "--token".into(),
        srv.subscribe_token("firewalled", "direct"),
        "--seconds".into(),
        "1".into(),
        "--timeout".into(),
        "6".into(),
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(
        direct.status.code(),
        Some(1),
        "a direct UDP client connected: {}",
        String::from_utf8_lossy(&direct.stdout)
    );
    if coturn.is_none() {
        // Both clients' connections counted by the transport they reached TURN with.
        srv.wait_for_metric("streamcore_connections_total{transport=\"turn-tcp\"}", 2)
            .await;
    }
    srv.stop().await;
    drop(coturn);
}
