//! The web app in real Chromium: Debian's `chromium`, driven by Playwright for Python
//! (`scripts/browser/*.py`), against the node started here in-process. Each test is a
//! scenario a person goes through on the pages; the scenario checks what the pages
//! show and what the browser's WebRTC stack decodes, and prints what it measured,
//! which is checked again here. Screenshots of every page, at desktop and phone
//! width, land in `target/tmp/browser-screenshots`.
//!
//! One scenario runs at a time: several Chromiums at once on a 2-core machine would
//! starve each other's encoders, and the scenarios measure media.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots")
}

/// Runs `scripts/browser/<name>.py` against `srv`; its JSON result.
async fn scenario(name: &str, srv: &TestServer, extra: &[&str]) -> Value {
    scenario_at(name, &srv.base, srv, extra).await
}

/// Runs a scenario against `srv` reached at `base`.
async fn scenario_at(name: &str, base: &str, srv: &TestServer, extra: &[&str]) -> Value {
    scenario_with(name, base, srv, extra, None).await
}

/// Runs a scenario with Chromium started by `launcher` (a wrapper around Debian's
/// Chromium, which it is given) instead of Chromium itself.
async fn scenario_with(
    name: &str,
    base: &str,
    srv: &TestServer,
    extra: &[&str],
    launcher: Option<&(dyn Fn(&str) -> String + Sync)>,
) -> Value {
    let (py, chromium) = tokio::task::spawn_blocking(|| (support::python(), common::chromium()))
        .await
        .expect("the setup helpers ran");
    let chromium = launcher.map_or(chromium.clone(), |l| l(&chromium));
    let child = Command::new(py)
        .arg(repo().join(format!("scripts/browser/{name}.py")))
        .args(["--base", base, "--shots"])
        .arg(screenshots())
        .arg("--data-dir")
        .arg(&srv.data_dir)
        .args(extra)
        .env("STREAMCORE_CHROMIUM", chromium)
        .current_dir(repo().join("scripts/browser"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the scenario");
    let limit = Duration::from_secs(300);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {limit:?}"))
        .expect("the scenario's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{name} printed no result ({e}): {last}\nstderr:\n{stderr}"));
    println!("{name}: {v}");
    // Kept for the test command to print: a passing test's output is not shown, and
    // the figures (the remote command's round trip, reconnect time, …) are wanted.
    let results = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-results");
    std::fs::create_dir_all(&results).expect("the results directory");
    std::fs::write(results.join(format!("{name}.json")), format!("{v}\n"))
        .expect("the scenario's result written");
    v
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// The seed use case: pair a phone by its code, go live with a music file, hear it in
/// the listen page (440 ± 5 Hz measured there), and control the phone's player from
/// the browser with its state mirrored within 500 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_pairs_goes_live_with_music_and_a_browser_listens_and_controls_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("phone_listen", &srv, &[]).await;
    assert!((number(&r, "hz") - 440.0).abs() <= 5.0, "{r}");
    assert!(number(&r, "rms") > 0.01, "{r}");
    assert!(number(&r, "audio_packets") > 50.0, "{r}");
    assert!(number(&r, "audio_energy") > 0.0, "{r}");
    assert!(
        number(&r, "mirrored_ms") <= 500.0,
        "pause mirrored after {} ms",
        r["mirrored_ms"]
    );
    srv.stop().await;
}

/// A phone plays two short songs through and skips a third: the history page, open
/// meanwhile, shows the two plays as they are counted, with the period's top tracks,
/// artists and albums, and says so in words when the server cannot answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_page_follows_what_the_phone_plays() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("history", &srv, &[]).await;
    assert_eq!(r["plays"], 2, "{r}");
    assert_eq!(r["tracks"].as_array().map(Vec::len), Some(2), "{r}");
    srv.stop().await;
}

/// A person makes a podcast from an upload in the pages: a show (a too-small artwork
/// refused in words, a proper one taken), an episode with two chapters published —
/// its feed passes feedparser, an independent RSS/iTunes/Podcasting 2.0 check and
/// every link it hands out (audio with byte ranges, chapters, artwork) — and a second
/// episode scheduled for later stays out of the feed until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_podcasts_page_publishes_a_show() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("podcasts", &srv, &[]).await;
    assert_eq!(r["episodes_in_feed"], 1, "{r}");
    assert_eq!(r["chapters"], 2, "{r}");
    assert!(number(&r, "enclosure_bytes") > 1000.0, "{r}");
    assert_eq!(r["scheduled_in_feed"], false, "{r}");
    assert_eq!(r["artwork"]["width"], 1400, "{r}");
    srv.stop().await;
}

/// Three people in a room they reach by invitation (a stranger is told no room is open
/// to them): audio and video both ways, a simulcast layer cap, screen share, chat,
/// active speaker, mute, and a reconnect nobody notices; then a fourth joins with the
/// share link, and a replaced link lets nobody in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_meet_in_a_room() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("room", &srv, &[]).await;
    assert!(number(&r, "low_width") <= 320.0, "{r}");
    assert!(number(&r, "auto_width") > number(&r, "low_width"), "{r}");
    assert!(number(&r, "reconnect_ms") <= 2000.0, "{r}");
    srv.stop().await;
}

/// A page of another origin publishes and plays with the client library (CORS), and
/// a second WHEP player half a second behind the first decodes at once, every time
/// (the keyframe-request defect found with Chromium). Then a player and the publisher
/// restart ICE on their sessions (RFC 9725 §4.4) and the player keeps decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_publishes_and_plays_and_late_players_get_keyframes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("foreign", &srv, &[]).await;
    let rounds = r["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3, "{r}");
    for round in rounds {
        // The scenario fails on a player without a frame in 8 s; the second player
        // must not wait for a periodic keyframe either (Chromium sends none).
        assert!(number(round, "second_ms") < 3000.0, "{r}");
    }
    // The restart's PATCH round trip and Chromium's checks against the new credentials.
    assert!(number(&r["restart"], "player_ms") < 2000.0, "{r}");
    assert!(number(&r["restart"], "publisher_ms") < 2000.0, "{r}");
    srv.stop().await;
}

/// What the `turn` scenario found: a relay-only publisher and player connected
/// through TURN and decoded video; the TURN server would relay to the node and
/// refused (403) to relay anywhere else.
fn relayed_only_through_turn(r: &Value) {
    assert_eq!(r["paths"]["publisher"]["type"], "relay", "{r}");
    assert_eq!(r["paths"]["player"]["type"], "relay", "{r}");
    assert!(number(r, "video_frames") > 10.0, "{r}");
    assert_eq!(r["relay_refusals"]["node"][0], "bound", "{r}");
    assert!(
        r["relay_refusals"]["elsewhere"][0]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{r}"
    );
}

/// Clients that can only go through TURN: the node hands out Debian's coturn with
/// REST-style credentials, and a relay-only Chromium publisher and player connect
/// through it; coturn refuses expired and forged credentials, and, configured as the
/// README says, relays to the node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_clients_connect_through_an_external_turn_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let coturn = tokio::task::spawn_blocking(common::coturn::Coturn::start)
        .await
        .unwrap();
    let srv = TestServer::start_with(|s| {
        s.turn.external_urls = coturn.urls();
        s.turn.shared_secret = Some(coturn.secret.clone());
    })
    .await;
    let r = scenario("turn", &srv, &["--turn-secret", &coturn.secret]).await;
    relayed_only_through_turn(&r);
    srv.stop().await;
}

/// The embedded TURN server in place of coturn: the same relay-only Chromium
/// publisher and player connect through it with the node's REST credentials; it
/// refuses expired and forged credentials (401) and a relay to anywhere but the
/// node's media ports (403); the metrics count the relayed connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_clients_connect_through_the_embedded_turn_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let secret = format!("embedded-{}", rand::random::<u32>());
    let key = secret.clone();
    let srv = TestServer::start_with(move |s| {
        s.turn.embedded = true;
        s.turn.udp_port = support::free_port();
        s.turn.tcp_port = support::free_port();
        s.turn.shared_secret = Some(key);
    })
    .await;
    let turn = srv
        .server()
        .turn
        .as_ref()
        .expect("the embedded TURN server runs");
    assert_eq!(turn.urls.len(), 2, "{:?}", turn.urls);
    let r = scenario("turn", &srv, &["--turn-secret", &secret]).await;
    relayed_only_through_turn(&r);
    // The metrics (updated every second) count what happened. Both the UDP and the TCP
    // listener are handed out and Chromium picks either (on a loaded machine the TCP
    // allocation can win). A peer is counted under the transport of the datagram that
    // completed its connection, which can be the other allocation than the pair
    // Chromium ends up on, so the two peers are counted across the TURN transports.
    for who in ["publisher", "player"] {
        let protocol = r["paths"][who]["relayProtocol"]
            .as_str()
            .unwrap_or_else(|| panic!("no relay protocol for the {who}: {r}"));
        assert!(matches!(protocol, "udp" | "tcp"), "{r}");
    }
    // A prefix: the sum of turn-udp, turn-tcp and turn-tls.
    srv.wait_for_metric("streamcore_connections_total{transport=\"turn-", 2)
        .await;
    for (name, at_least) in [
        ("streamcore_turn_refusals_total{reason=\"forbidden\"}", 1),
        ("streamcore_turn_refusals_total{reason=\"unauthorized\"}", 2),
        (
            "streamcore_turn_relayed_bytes_total{direction=\"to_client\"}",
            10_000,
        ),
        ("streamcore_turn_allocations_total", 3),
    ] {
        srv.wait_for_metric(name, at_least).await;
    }
    srv.stop().await;
}

/// Only HTTPS and TURN over TLS (on 443) get through: Chromium in a network namespace
/// whose firewall drops everything to the node but TCP to those two ports. On the
/// node's pages a person pairs a phone, the phone goes live with camera and
/// microphone, and the listen page plays it, both through the embedded TURN server's
/// TLS listener with the ICE servers the node handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_firewall_that_lets_only_tls_out_through_turn_over_tls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ns = tokio::task::spawn_blocking(common::netns::NetNs::create)
        .await
        .unwrap();
    let host = ns.host_ip;
    // TURN/TLS on 443, as strict firewalls want it, unless something here holds it.
    let turns = match std::net::TcpListener::bind((host, 443)) {
        Ok(_) => 443,
        Err(_) => support::free_port(),
    };
    let https = support::free_port();
    let srv = TestServer::start_with(move |s| {
        s.http = std::net::SocketAddr::new(host.into(), https);
        s.public_url = Some(format!("https://{host}:{https}"));
        s.tls.self_signed = true;
        s.metrics = Some("127.0.0.1:0".parse().unwrap());
        s.turn.embedded = true;
        s.turn.udp_port = support::free_port();
        s.turn.tcp_port = support::free_port();
        s.turn.tls_port = turns;
    })
    .await;
    let ns = tokio::task::spawn_blocking(move || {
        ns.allow_only_tcp_to(host, &[https, turns]);
        ns
    })
    .await
    .unwrap();
    let launcher = |chromium: &str| ns.chromium(chromium);
    let base = format!("https://{host}:{https}");
    let r = scenario_with("turn_tls", &base, &srv, &[], Some(&launcher)).await;
    for who in ["pub", "player"] {
        assert_eq!(r["paths"][who]["type"], "relay", "{r}");
        assert_eq!(r["paths"][who]["relayProtocol"], "tls", "{r}");
    }
    assert!(number(&r, "video_frames") > 10.0, "{r}");
    assert!(number(&r, "audio_packets") > 50.0, "{r}");
    srv.wait_for_metric(
        "streamcore_turn_allocations_total{transport=\"turn-tls\"}",
        2,
    )
    .await;
    srv.wait_for_metric("streamcore_connections_total{transport=\"turn-tls\"}", 2)
        .await;
    srv.stop().await;
}

/// A network that drops UDP and a client that changes address, for real: Chromium in
/// a network namespace of its own (UDP dropped by nftables there) publishes a 440 Hz
/// tone and plays it back over ICE-TCP; then its address moves, and both WHIP/WHEP
/// sessions restart ICE by themselves and keep going; then two room participants there
/// move again and resume with an ICE restart, nobody seeing anyone leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_firewall_without_udp_over_ice_tcp_and_moving_address() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ns = tokio::task::spawn_blocking(|| {
        let ns = common::netns::NetNs::create();
        ns.block_udp();
        ns
    })
    .await
    .unwrap();
    let host = ns.host_ip;
    let srv = TestServer::start_with(move |s| {
        s.http = std::net::SocketAddr::new(host.into(), 0);
    })
    .await;
    let new_ip = {
        let o = ns.client_ip.octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], 3)
    };
    let launcher = |chromium: &str| ns.chromium(chromium);
    let r = scenario_with(
        "ice_tcp",
        &srv.base.clone(),
        &srv,
        &[
            "--netns",
            &ns.name,
            "--client-if",
            &ns.client_if,
            "--old-ip",
            &ns.client_ip.to_string(),
            "--new-ip",
            &new_ip.to_string(),
        ],
        Some(&launcher),
    )
    .await;
    assert!((number(&r, "hz") - 440.0).abs() <= 5.0, "{r}");
    assert!((number(&r, "hz_after") - 440.0).abs() <= 5.0, "{r}");
    assert_eq!(r["paths"]["player"]["protocol"], "tcp", "{r}");
    assert!(number(&r, "media_back_after_restart_ms") <= 2000.0, "{r}");
    // The room protocol: both participants resumed with an ICE restart.
    assert!((number(&r["room"], "hz_after") - 440.0).abs() <= 5.0, "{r}");
    assert!(
        number(&r["room"], "media_back_after_resume_ms") <= 2000.0,
        "{r}"
    );
    assert!(
        srv.metric("streamcore_connections_total{transport=\"tcp\"}")
            .await
            >= 2,
        "{r}"
    );
    srv.stop().await;
}

/// Recording a Chromium room from the recordings page: a chapter marked while it
/// records, tracks that decode, a podcast mixdown with its episode and stems, raw
/// tracks gone after the room's retention, the recording deleted; and an upload with
/// live progress that plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_is_recorded_mixed_down_and_an_upload_plays() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Raw tracks past the room's retention are looked for every second.
    let srv = TestServer::start_with(|s| s.recording.retention_sweep_secs = 1).await;
    let r = scenario("recordings", &srv, &[]).await;
    assert!(number(&r, "episode_s") >= 4.0, "{r}");
    let tracks = r["tracks"].as_object().expect("tracks");
    assert!(tracks.len() >= 4, "{r}");
    srv.stop().await;
}

/// The client library moves a WHIP/WHEP session (what a draining node's `reconnect`
/// makes it do): to a working endpoint, to one nobody answers (it falls back), and
/// stopped halfway (nothing stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_by_the_client_library_falls_back_and_stops_cleanly() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let (p, s) = (
        srv.publish_token("moves", "phone"),
        srv.subscribe_token("moves", "listener"),
    );
    let r = scenario(
        "session_moves",
        &srv,
        &["--room", "moves", "--pub-token", &p, "--sub-token", &s],
    )
    .await;
    assert_ne!(r["first"], r["second"], "{r}");
    srv.stop().await;
}

/// Wrong and expired pairing codes, a removed device, an ended and an expired session, a used reset
/// link, a wrong password, a missing room, a denied microphone: each says what
/// happened, and the page goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_message_and_breaks_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = TestServer::start().await;
    let r = scenario("errors", &srv, &[]).await;
    for key in [
        "wrong_code",
        "expired_code",
        "insecure_origin",
        "removed_device",
        "ended_session",
        "expired_session",
        "reset_token",
        "denied_microphone",
    ] {
        assert!(r[key].as_str().is_some_and(|m| m.len() > 20), "{key}: {r}");
    }
    srv.stop().await;
}

/// Signing in with an OpenID Connect provider in the pages, against the real one (npm's
/// oidc-provider): a new person signs in with "Sign in with Test IdP" and gets an
/// account for the provider's email; a person with a password account is sent to
/// `/link-account`, where only that account's password links the two (a wrong one is
/// refused in words) and signs in; the account section lists the provider, unlinks it
/// (but never an account's only way in) and links it again; an email the provider has
/// not verified and a sign-in link used twice are explained on the sign-in page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_an_openid_connect_provider() {
    let _one = ONE_AT_A_TIME.lock().await;
    let keys = std::env::temp_dir().join(format!("sc-oidc-keys-{}.json", rand::random::<u64>()));
    let file = keys.clone();
    let provider = tokio::task::spawn_blocking(move || common::oidc::Provider::start(0, &file))
        .await
        .expect("the provider started");
    let issuer = provider.issuer.clone();
    let srv = TestServer::start_with(|s| {
        s.oidc = vec![control_api::oidc::ProviderConfig {
            id: "test".into(),
            name: "Test IdP".into(),
            issuer,
            client_id: "streamcore".into(),
            client_secret: "s3cret".into(),
        }]
    })
    .await;
    let r = scenario("oidc", &srv, &[]).await;
    // A new person: an account made for the provider's verified email, signed in.
    assert_eq!(r["signed_in_as"], "dana@corp.test", "{r}");
    assert_eq!(r["dana_providers"][0], "Test IdP", "{r}");
    assert!(
        r["last_sign_in"]
            .as_str()
            .is_some_and(|m| m.contains("only way")),
        "{r}"
    );
    // A password account: linked only with its password.
    assert_eq!(r["link_page_email"], "eve@corp.test", "{r}");
    assert!(
        r["wrong_password"]
            .as_str()
            .is_some_and(|m| m.contains("password")),
        "{r}"
    );
    assert_eq!(r["linked_as"], "eve@corp.test", "{r}");
    assert_eq!(r["eve_providers"][0], "Test IdP", "{r}");
    assert_eq!(r["relinked"], "Test IdP is linked to your account.", "{r}");
    // Refusals in words, gone from the address bar.
    assert!(
        r["unverified"]
            .as_str()
            .is_some_and(|m| m.contains("not verified")),
        "{r}"
    );
    assert!(
        r["replayed"]
            .as_str()
            .is_some_and(|m| m.contains("used already")),
        "{r}"
    );
    assert_eq!(r["no_providers_hidden"], true, "{r}");
    // The accounts as the node sees them: Dana's made by the provider (no password),
    // Eve's the one she signed up with (her password), the provider linked to it, and
    // none for Finn, whose email the provider did not vouch for.
    use control_api::routes::oidc::NO_PASSWORD;
    use control_api::store::Store;
    use control_api::store::oidc::OidcStore;
    let db = &srv.server().api.db;
    let dana = db
        .user_by_email("dana@corp.test")
        .await
        .unwrap()
        .expect("an account for dana");
    assert_eq!(dana.password_hash, NO_PASSWORD, "made by the provider");
    let eve = db
        .user_by_email("eve@corp.test")
        .await
        .unwrap()
        .expect("eve's account");
    assert_ne!(eve.password_hash, NO_PASSWORD, "her own account");
    let linked = db.user_identities(&eve.id).await.unwrap();
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(
        (linked[0].provider.as_str(), linked[0].email.as_deref()),
        (provider.issuer.as_str(), Some("eve@corp.test")),
        "identities are kept under the provider's issuer"
    );
    assert!(
        db.user_by_email("unverified-finn@corp.test")
            .await
            .unwrap()
            .is_none(),
        "no account for an unverified email"
    );
    srv.stop().await;
    drop(provider);
    let _ = std::fs::remove_file(keys);
}

/// HTTPS without a proxy: the phone reaches the node by a LAN name over the node's own
/// certificate, is a secure origin there, and goes live with its microphone, then its
/// camera (the listener decodes the pictures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_on_the_lan_goes_live_with_its_microphone_and_camera_over_https() {
    let _one = ONE_AT_A_TIME.lock().await;
    let port = support::free_port();
    let srv = TestServer::start_with(|s| {
        s.http = format!("127.0.0.1:{port}").parse().unwrap();
        s.public_url = Some(format!("https://phone.test:{port}"));
        s.tls.self_signed = true;
    })
    .await;
    let tls = srv.server().tls.as_ref().expect("HTTPS is on");
    assert!(tls.ca.is_some());
    let r = scenario_at("tls", &format!("https://phone.test:{port}"), &srv, &[]).await;
    assert!(number(&r, "audio_packets") > 50.0, "{r}");
    assert!(number(&r, "video_frames") > 10.0, "{r}");
    srv.stop().await;
}
