//! WHIP publish and WHEP play through the real node over loopback UDP.
mod common;

use std::time::Duration;

use common::{TestServer, connect, join, payload, pump};
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
    let mut sent_a = Vec::new();
    let mut sent_v = Vec::new();
    for n in 0..50u32 {
        let a = payload(n, 120);
        publisher.send_audio(&a);
        sent_a.push(a);
        if n % 2 == 0 {
            sent_v.push(publisher.send_video(n == 0, &payload(n, 3000)));
        }
        let mut all: Vec<&mut common::Peer> = vec![&mut publisher];
        all.extend(players.iter_mut());
        pump(&mut all, Duration::from_millis(20)).await;
    }
    let mut all: Vec<&mut common::Peer> = vec![&mut publisher];
    all.extend(players.iter_mut());
    pump(&mut all, Duration::from_millis(300)).await;
    for (i, p) in players.iter().enumerate() {
        assert_eq!(p.frames_of(Audio), sent_a, "audio at player {i}");
        assert_eq!(p.frames_of(Video), sent_v, "video at player {i}");
    }
    assert!(srv.metric("streamcore_rtp_packets_forwarded_total").await >= 3 * (50 + 25 * 3));
    assert_eq!(srv.metric("streamcore_forward_errors_total").await, 0);
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
