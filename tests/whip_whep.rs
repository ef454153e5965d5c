//! WHIP publish and WHEP play through the real node over loopback UDP.
mod common;

use std::time::Duration;

use common::{TestServer, connect, join, move_and_restart_ice, payload, pump};
use media_core::str0m::media::MediaKind::{Audio, Video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_three_players() {
    let srv = TestServer::start().await;
    let mut publisher = join(
        &srv,
        "/whip/live",
        &srv.publish_token("live", "phone"),
        &[Audio, Video],
    )
    .await
    .unwrap();
    assert!(publisher.location.starts_with("/whip/live/"));
    let mut players = Vec::new();
    for i in 0..3 {
        let t = srv.subscribe_token("live", &format!("browser{i}"));
        players.push(join(&srv, "/whep/live", &t, &[Audio, Video]).await.unwrap());
    }
    {
        let mut all: Vec<&mut common::Peer> = vec![&mut publisher];
        all.extend(players.iter_mut());
        connect(&mut all).await;
    }
    every_player_gets_every_frame(&mut publisher, &mut players).await;
    assert!(srv.metric("streamcore_rtp_packets_forwarded_total").await >= 3 * (50 + 25 * 3));
    assert_eq!(srv.metric("streamcore_forward_errors_total").await, 0);
    // The malloc gauges are read at a scrape (this process's heap: the server's and
    // the test's own peers'; only that the gauge is wired up is checked).
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(srv.metric("streamcore_malloc_in_use_bytes").await > 0);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_first_then_publisher_leaves_and_another_arrives() {
    let srv = TestServer::start().await;
    let mut player = join(&srv, "/whep/r", &srv.subscribe_token("r", "tv"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut player]).await;

    let mut p1 = join(&srv, "/whip/r", &srv.publish_token("r", "phone1"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut p1]).await;
    for n in 0..10 {
        p1.send_audio(&payload(n, 50));
        pump(&mut [&mut p1, &mut player], Duration::from_millis(20)).await;
    }
    // The publisher ends its session.
    let del = srv
        .http
        .delete(format!("{}{}", srv.base, p1.location))
        .header("Authorization", format!("Bearer {}", p1.token))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let again = srv
        .http
        .delete(format!("{}{}", srv.base, p1.location))
        .header("Authorization", format!("Bearer {}", p1.token))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    pump(&mut [&mut player], Duration::from_millis(200)).await;
    assert_eq!(player.frames_of(Audio).len(), 10);

    let mut p2 = join(&srv, "/whip/r", &srv.publish_token("r", "phone2"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut p2]).await;
    for n in 100..110 {
        p2.send_audio(&payload(n, 50));
        pump(&mut [&mut p2, &mut player], Duration::from_millis(20)).await;
    }
    pump(&mut [&mut player], Duration::from_millis(200)).await;
    let got = player.frames_of(Audio);
    assert_eq!(
        got.len(),
        20,
        "the player's audio continues from the second publisher"
    );
    assert_eq!(got[19], payload(109, 50));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_never_connects_is_reaped() {
    let srv = TestServer::start_with(|s| s.media.connect_timeout_secs = 1).await;
    let p = join(
        &srv,
        "/whip/idle",
        &srv.publish_token("idle", "ghost"),
        &[Audio],
    )
    .await
    .unwrap();
    // Never stepped: no STUN, no DTLS.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let del = srv
        .http
        .delete(format!("{}{}", srv.base, p.location))
        .header("Authorization", format!("Bearer {}", p.token))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404, "the session was reaped");
    assert_eq!(srv.server().workers.session_count(), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_sessions_and_keeps_old_ones() {
    let srv = TestServer::start().await;
    let mut publisher = join(&srv, "/whip/d", &srv.publish_token("d", "a"), &[Audio])
        .await
        .unwrap();
    let mut player = join(&srv, "/whep/d", &srv.subscribe_token("d", "b"), &[Audio])
        .await
        .unwrap();
    connect(&mut [&mut publisher, &mut player]).await;
    assert_eq!(
        srv.http
            .get(format!("{}/readyz", srv.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    srv.server().workers.start_draining();
    assert_eq!(
        srv.http
            .get(format!("{}/readyz", srv.base))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        srv.http
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = join(&srv, "/whep/d", &srv.subscribe_token("d", "c"), &[Audio])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"]["code"], "draining");
    for n in 0..5 {
        publisher.send_audio(&payload(n, 40));
        pump(
            &mut [&mut publisher, &mut player],
            Duration::from_millis(20),
        )
        .await;
    }
    pump(&mut [&mut player], Duration::from_millis(100)).await;
    assert_eq!(
        player.frames_of(Audio).len(),
        5,
        "existing sessions keep flowing while draining"
    );
    srv.stop().await;
}

/// A session's events (the WHEP draft's server-sent events): asked for with the
/// session's token, read without one at the URL handed back; a move of the session's
/// room (a drain) arrives as `reconnect` with the endpoint on the room's new node, a
/// move of another room does not, and the stream ends with its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_events_tell_it_where_to_reconnect() {
    let srv = TestServer::start().await;
    let token = srv.subscribe_token("ev", "b");
    let resp = srv
        .http
        .post(format!("{}/whep/ev", srv.base))
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {token}"))
        .body(common::offer(&[Audio], media_core::str0m::media::Direction::RecvOnly).3)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let links: Vec<String> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let events = format!("{location}/events");
    assert!(
        links.contains(&format!(
            "<{events}>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"reconnect\""
        )),
        "{links:?}"
    );
    let ask = |token: Option<String>, body: &'static str| {
        let mut r = srv
            .http
            .post(format!("{}{events}", srv.base))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    assert_eq!(ask(None, r#"["reconnect"]"#).await.unwrap().status(), 401);
    let other = srv.subscribe_token("ev", "someone else");
    assert_eq!(
        ask(Some(other), r#"["reconnect"]"#).await.unwrap().status(),
        403
    );
    let bad = ask(Some(token.clone()), r#"{"reconnect": true}"#)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_events", "{body}");
    let ok = ask(Some(token.clone()), r#"["reconnect", "layers"]"#)
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let stream_at = ok.headers()["location"].to_str().unwrap().to_owned();
    assert!(stream_at.starts_with(&format!("{events}/")), "{stream_at}");
    let guessed = srv
        .http
        .get(format!("{}{events}/{}", srv.base, "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(guessed.status(), 404, "a key that is not the session's");

    let mut stream = srv
        .http
        .get(format!("{}{stream_at}", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let room = |s: &str| media_core::RoomId::parse(s).unwrap();
    let events_ = &srv.server().session_events;
    events_.move_rooms([(room("elsewhere"), "http://n1.example".to_owned())].into());
    events_.move_rooms(
        [
            (room("elsewhere"), "http://n1.example".to_owned()),
            (room("ev"), "http://n2.example/".to_owned()),
        ]
        .into(),
    );
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("\n\n") || !text.contains("reconnect") {
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("a reconnect event");
    assert!(text.contains("event: reconnect\n"), "{text:?}");
    assert!(
        text.contains(r#"data: {"reason":"node_draining","url":"http://n2.example/whep/ev"}"#),
        "{text:?}"
    );
    assert!(
        !text.contains("n1.example"),
        "another room's move: {text:?}"
    );

    // The session ends: so does its stream.
    let deleted = srv
        .http
        .delete(format!("{}{location}", srv.base))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await
    .expect("the stream ended with its session");
    srv.stop().await;
}

/// Sends audio until `player` has received `more` further frames; how long it took.
async fn audio_back(
    publisher: &mut common::Peer,
    player: &mut common::Peer,
    more: usize,
) -> Duration {
    let start = std::time::Instant::now();
    let want = player.frames_of(Audio).len() + more;
    let mut n = 1000;
    while player.frames_of(Audio).len() < want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no audio after the ICE restart"
        );
        publisher.send_audio(&payload(n, 100));
        n += 1;
        pump(
            &mut [&mut *publisher, &mut *player],
            Duration::from_millis(20),
        )
        .await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_new_network_restarts_ice_and_keeps_its_session() {
    let srv = TestServer::start().await;
    let mut publisher = join(
        &srv,
        "/whip/move",
        &srv.publish_token("move", "phone"),
        &[Audio],
    )
    .await
    .unwrap();
    let mut player = join(
        &srv,
        "/whep/move",
        &srv.subscribe_token("move", "tv"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut publisher, &mut player]).await;
    audio_back(&mut publisher, &mut player, 5).await;
    let sessions = srv.metric("streamcore_sessions_created_total").await;
    assert!(player.etag.starts_with('"'), "201 carries an ETag");
    let (player_location, first_etag) = (player.location.clone(), player.etag.clone());

    // The player's address changes (127.0.0.1 → 127.0.0.2) and it restarts ICE.
    let (status, etag) = move_and_restart_ice(&srv, &mut player, "127.0.0.2").await;
    assert_eq!(status, 200);
    assert_ne!(etag, first_etag, "a new ICE session, a new ETag");
    let took = audio_back(&mut publisher, &mut player, 5).await;
    println!("player: audio back {took:?} after the restart");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // And the publisher's.
    let (status, _) = move_and_restart_ice(&srv, &mut publisher, "127.0.0.3").await;
    assert_eq!(status, 200);
    let took = audio_back(&mut publisher, &mut player, 5).await;
    println!("publisher: audio back {took:?} after the restart");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Same sessions: nothing was created, the resource is where it was.
    assert_eq!(player.location, player_location);
    assert_eq!(
        srv.metric("streamcore_sessions_created_total").await,
        sessions
    );

    let patch = |etag: Option<&str>, body: &str| {
        let mut r = srv
            .http
            .patch(format!("{}{}", srv.base, player.location))
            .header("Content-Type", "application/trickle-ice-sdpfrag")
            .header("Authorization", format!("Bearer {}", player.token))
            .body(body.to_owned());
        if let Some(e) = etag {
            r = r.header("If-Match", e);
        }
        r.send()
    };
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.2 9 typ host\r\n";
    // Candidates for the ICE session that was restarted are refused; for the current
    // one they are taken.
    let r = patch(Some(&first_etag), candidate).await.unwrap();
    assert_eq!(r.status(), 412);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ice_session_changed");
    assert_eq!(
        patch(Some(&player.etag), candidate).await.unwrap().status(),
        204
    );
    // A restart without credentials, or with ones that could not be ICE's, is refused.
    for bad in [candidate, "a=ice-ufrag:ab\r\na=ice-pwd:x\r\n"] {
        let r = patch(Some("*"), bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "malformed_sdpfrag");
    }
    // Media still flows after the refusals.
    audio_back(&mut publisher, &mut player, 5).await;
    srv.stop().await;
}

/// Configured STUN and TURN servers reach every kind of client: WHIP/WHEP `201`s name
/// them in `Link` headers (RFC 9725 §4.6) and `/rtc`'s `joined` carries them, TURN with
/// credentials for the client's identity that expire after the configured lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_are_handed_to_every_client() {
    let srv = TestServer::start_with(|s| {
        s.turn.stun_urls = vec!["stun:stun.example.net:3478".into()];
        s.turn.external_urls = vec!["turn:turn.example.net:3478?transport=udp".into()];
        s.turn.shared_secret = Some("north".into());
        s.turn.credential_ttl_secs = 600;
    })
    .await;
    let (_, _, _, sdp, _) = common::offer(&[Audio], media_core::str0m::media::Direction::SendOnly);
    let resp = srv
        .http
        .post(format!("{}/whip/links", srv.base))
        .header("Content-Type", "application/sdp")
        .header(
            "Authorization",
            format!("Bearer {}", srv.publish_token("links", "phone")),
        )
        .body(sdp)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The ICE servers' links (the session's events link comes after them).
    let links: Vec<&str> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|l| l.contains("rel=\"ice-server\""))
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let turn = links[1];
    assert!(turn.starts_with(
        "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\""
    ));
    let username = turn
        .split("username=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (expiry, identity) = username.split_once(':').unwrap();
    assert_eq!(identity, "phone");
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert!(turn.ends_with("; credential-type=\"password\""), "{turn}");

    let token = srv.token(
        "links",
        "carol",
        signaling::Grants {
            subscribe: true,
            ..signaling::Grants::default()
        },
    );
    let client = common::room::RoomClient::join(&srv, &token).await;
    let servers = &client.joined["ice_servers"];
    assert_eq!(
        servers[0]["urls"][0], "stun:stun.example.net:3478",
        "{servers}"
    );
    assert!(servers[0].get("username").is_none());
    assert_eq!(
        servers[1]["urls"][0],
        "turn:turn.example.net:3478?transport=udp"
    );
    assert!(servers[1]["username"].as_str().unwrap().ends_with(":carol"));
    assert!(!servers[1]["credential"].as_str().unwrap().is_empty());
    srv.stop().await;
}

/// A client whose network passes no UDP reaches the node over ICE-TCP (RFC 6544): its
/// only candidate is TCP, it plays a UDP publisher's audio and video in full, and the
/// node's TCP candidate ranks below its UDP one, so UDP wins wherever it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_udp_plays_over_ice_tcp() {
    let srv = TestServer::start().await;
    let mut publisher = join(
        &srv,
        "/whip/tcp",
        &srv.publish_token("tcp", "phone"),
        &[Audio, Video],
    )
    .await
    .unwrap();
    let mut player = common::join_over_tcp(
        &srv,
        "/whep/tcp",
        &srv.subscribe_token("tcp", "office"),
        &[Audio, Video],
    )
    .await;
    let prio = |proto: &str| -> u64 {
        let line = player
            .answer
            .lines()
            .find(|l| l.starts_with("a=candidate:") && l.split_whitespace().nth(2) == Some(proto))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    assert!(prio("tcp") < prio("udp"), "{}", player.answer);
    connect(&mut [&mut publisher, &mut player]).await;
    let mut sent_a = Vec::new();
    let mut sent_v = Vec::new();
    for n in 0..50u32 {
        let a = payload(n, 120);
        publisher.send_audio(&a);
        sent_a.push(a);
        if n % 2 == 0 {
            sent_v.push(publisher.send_video(n == 0, &payload(n, 3000)));
        }
        pump(
            &mut [&mut publisher, &mut player],
            Duration::from_millis(20),
        )
        .await;
    }
    pump(
        &mut [&mut publisher, &mut player],
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(player.frames_of(Audio), sent_a);
    assert_eq!(player.frames_of(Video), sent_v);
    assert_eq!(
        srv.metric("streamcore_connections_total{transport=\"tcp\"}")
            .await,
        1
    );
    assert_eq!(
        srv.metric("streamcore_connections_total{transport=\"udp\"}")
            .await,
        1
    );
    assert_eq!(srv.metric("streamcore_ice_tcp_connections").await, 1);
    srv.stop().await;
}

/// Admission control from the worker's measured load: while a flood of datagrams keeps
/// the room's worker over its limit, a new WHIP session is refused with 503
/// `node_full` and `Retry-After`; an existing session keeps its media; once the flood
/// stops, new sessions are admitted again. The socket's receive buffer follows the
/// traffic (`media.recv_buffer_ms`) up during the flood and back down after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_load_limit_refuses_new_peers_and_recovers() {
    let srv = TestServer::start_with(|s| {
        s.media.workers = 1;
        // A share the flood below reaches on any machine; an idle worker stays under.
        s.media.max_worker_load_percent = 2;
    })
    .await;
    let mut publisher = join(
        &srv,
        "/whip/busy",
        &srv.publish_token("busy", "a"),
        &[Audio],
    )
    .await
    .unwrap();
    let mut player = join(
        &srv,
        "/whep/busy",
        &srv.subscribe_token("busy", "b"),
        &[Audio],
    )
    .await
    .unwrap();
    connect(&mut [&mut publisher, &mut player]).await;
    let idle_buffer = srv.metric("streamcore_recv_buffer_bytes").await;
    assert!(idle_buffer >= 256 * 1024, "{idle_buffer}");
    // The kernel grants more than the floor only up to net.core.rmem_max.
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Junk datagrams (no STUN, no known source) cost the worker a read and a drop
    // each. Bounded: at most 20 s and 5 million datagrams, stopped as soon as the
    // test has what it needs.
    let target = srv.server().workers.local_addrs()[0];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let junk = [0x5au8; 1000];
            let until = std::time::Instant::now() + Duration::from_secs(20);
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
                && sent < 5_000_000
            {
                sent += 64;
                for _ in 0..64 {
                    let _ = sock.send_to(&junk, target);
                }
            }
        })
    };
    let post = |identity: &'static str| {
        let (_rtc, _sock, _mids, sdp, _pending) =
            common::offer(&[Audio], media_core::str0m::media::Direction::SendOnly);
        srv.http
            .post(format!("{}/whip/busy", srv.base))
            .header("Content-Type", "application/sdp")
            .header(
                "Authorization",
                format!("Bearer {}", srv.publish_token("busy", identity)),
            )
            .body(sdp)
            .send()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let resp = post("c").await.unwrap();
        if resp.status() == 503 {
            break resp;
        }
        assert_eq!(resp.status(), 201, "admitted while under the limit");
        assert!(
            std::time::Instant::now() < deadline,
            "the flood never took the worker over 2 % of its core"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "node_full", "{body}");
    assert!(srv.metric("streamcore_admission_refusals_total").await >= 1);
    if rmem_max > 256 * 1024 {
        srv.wait_for_metric("streamcore_recv_buffer_bytes", idle_buffer + 1)
            .await;
    }

    // The session that was there keeps its media meanwhile.
    let before = player.frames_of(Audio).len();
    for n in 0..5 {
        publisher.send_audio(&payload(n, 40));
        pump(
            &mut [&mut publisher, &mut player],
            Duration::from_millis(20),
        )
        .await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while player.frames_of(Audio).len() < before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the admitted session lost its media under load"
        );
        pump(&mut [&mut player], Duration::from_millis(20)).await;
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let resp = post("d").await.unwrap();
        if resp.status() == 201 {
            break;
        }
        assert_eq!(resp.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never came back under its limit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.wait_for_metric_to_be("streamcore_recv_buffer_bytes", idle_buffer)
        .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spreads_over_two_workers_and_both_halves_of_its_players_receive() {
    let srv = TestServer::start_with(|s| {
        s.media.workers = 2;
        s.media.room_players_per_worker = 2;
    })
    .await;
    let mut publisher = join(
        &srv,
        "/whip/big",
        &srv.publish_token("big", "phone"),
        &[Audio, Video],
    )
    .await
    .unwrap();
    let mut players = Vec::new();
    for i in 0..4 {
        let t = srv.subscribe_token("big", &format!("browser{i}"));
        players.push(join(&srv, "/whep/big", &t, &[Audio, Video]).await.unwrap());
    }
    {
        let mut all: Vec<&mut common::Peer> = vec![&mut publisher];
        all.extend(players.iter_mut());
        connect(&mut all).await;
    }
    // Two players on the room's worker, two on the other, fed from the first (the
    // publisher's shadow there is not counted: it is the first worker's peer).
    let per_worker = peers_per_worker(&srv).await;
    assert_eq!(per_worker.len(), 2, "{per_worker:?}");
    let mut counts: Vec<f64> = per_worker.iter().map(|(_, n)| *n).collect();
    counts.sort_by(f64::total_cmp);
    assert_eq!(
        counts,
        [2.0, 3.0],
        "publisher and two players on one worker, two players on the other: {per_worker:?}"
    );
    every_player_gets_every_frame(&mut publisher, &mut players).await;
    assert_eq!(srv.metric("streamcore_forward_errors_total").await, 0);
    // The other worker's players leave: its import ends with them.
    for p in players.drain(2..) {
        let resp = srv
            .http
            .delete(format!("{}{}", srv.base, p.location))
            .header("Authorization", format!("Bearer {}", p.token))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // The room is gone from the other worker (its shadows ended), and stays on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let w = peers_per_worker(&srv).await;
        let rooms = srv.series_by("streamcore_rooms", "worker").await;
        let mut in_rooms: Vec<f64> = rooms.iter().map(|(_, n)| *n).collect();
        in_rooms.sort_by(f64::total_cmp);
        if w.iter().map(|(_, n)| n).sum::<f64>() == 3.0 && in_rooms == [0.0, 1.0] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{w:?} {rooms:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.stop().await;
}

/// `streamcore_peers` by worker (the gauges are refreshed once a second: waits up to
/// 5 s for both workers to show).
async fn peers_per_worker(srv: &TestServer) -> Vec<(String, f64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = srv.series_by("streamcore_peers", "worker").await;
        if v.len() == 2 || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The publisher sends 50 audio and 25 video frames (a keyframe first); every player
/// gets each of them, in order.
async fn every_player_gets_every_frame(publisher: &mut common::Peer, players: &mut [common::Peer]) {
    let mut sent_a = Vec::new();
    let mut sent_v = Vec::new();
    for n in 0..50u32 {
        let a = payload(n, 120);
        publisher.send_audio(&a);
        sent_a.push(a);
        if n % 2 == 0 {
            sent_v.push(publisher.send_video(n == 0, &payload(n, 3000)));
        }
        let mut all: Vec<&mut common::Peer> = vec![&mut *publisher];
        all.extend(players.iter_mut());
        pump(&mut all, Duration::from_millis(20)).await;
    }
    let mut all: Vec<&mut common::Peer> = vec![publisher];
    all.extend(players.iter_mut());
    pump(&mut all, Duration::from_millis(300)).await;
    for (i, p) in players.iter().enumerate() {
        assert_eq!(p.frames_of(Audio), sent_a, "audio at player {i}");
        assert_eq!(p.frames_of(Video), sent_v, "video at player {i}");
    }
}
