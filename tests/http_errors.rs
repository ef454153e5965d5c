//! Every refusal of the WHIP/WHEP endpoints: status, JSON body, and no leaked peer.
mod common;

use common::{TestServer, join, offer};
use media_core::str0m::media::Direction;
use media_core::str0m::media::MediaKind::Audio;
use signaling::Grants;

async fn post(
    srv: &TestServer,
    path: &str,
    token: Option<&str>,
    ctype: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = srv
        .http
        .post(format!("{}{}", srv.base, path))
        .header("Content-Type", ctype)
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// (path, token, content type, body, expected status, expected error code)
type Case = (
    &'static str,
    Option<String>,
    &'static str,
    String,
    u16,
    &'static str,
);

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let srv = TestServer::start().await;
    let (_, _, _, sdp, _) = offer(&[Audio], Direction::SendOnly);
    let pubt = srv.publish_token("room1", "alice");
    let subt = srv.subscribe_token("room1", "bob");

    let cases: Vec<Case> = vec![
        (
            "/whip/room1",
            None,
            "application/sdp",
            sdp.clone(),
            401,
            "unauthorized",
        ),
        (
            "/whip/room1",
            Some("garbage".into()),
            "application/sdp",
            sdp.clone(),
            401,
            "unauthorized",
        ),
        // A token signed by someone else's key.
        (
            "/whip/room1",
            Some(
                signaling::JoinTokenSigner::generate()
                    .unwrap()
                    .sign(
                        &media_core::RoomId::parse("room1").unwrap(),
                        "mallory",
                        Grants {
                            publish: true,
                            ..Grants::default()
                        },
                        std::time::Duration::from_secs(60),
                    )
                    .unwrap(),
            ),
            "application/sdp",
            sdp.clone(),
            401,
            "unauthorized",
        ),
        (
            "/whip/room1",
            Some(subt.clone()),
            "application/sdp",
            sdp.clone(),
            403,
            "forbidden",
        ),
        (
            "/whep/room1",
            Some(pubt.clone()),
            "application/sdp",
            sdp.clone(),
            403,
            "forbidden",
        ),
        (
            "/whip/room2",
            Some(pubt.clone()),
            "application/sdp",
            sdp.clone(),
            403,
            "forbidden",
        ),
        (
            "/whip/bad%20room",
            Some(pubt.clone()),
            "application/sdp",
            sdp.clone(),
            400,
            "invalid_room",
        ),
        (
            "/whip/room1",
            Some(pubt.clone()),
            "text/plain",
            sdp.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "/whip/room1",
            Some(pubt.clone()),
            "application/sdp",
            String::new(),
            400,
            "malformed_sdp",
        ),
        (
            "/whip/room1",
            Some(pubt.clone()),
            "application/sdp",
            "v=0\r\nnonsense".into(),
            400,
            "malformed_sdp",
        ),
        // A publisher offering only to receive.
        (
            "/whip/room1",
            Some(pubt.clone()),
            "application/sdp",
            offer(&[Audio], Direction::RecvOnly).3,
            422,
            "no_usable_media",
        ),
        (
            "/whep/room1",
            Some(subt.clone()),
            "application/sdp",
            sdp.clone(),
            422,
            "no_usable_media",
        ),
    ];
    for (path, token, ctype, body, want_status, want_code) in &cases {
        let (status, json) = post(&srv, path, token.as_deref(), ctype, body).await;
        assert_eq!(
            (status, code(&json)),
            (*want_status, *want_code),
            "{path} {ctype} {json}"
        );
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(!json.to_string().contains("PointerOffset"));
    }
    // An SDP body over the size limit.
    let big = "a".repeat(signaling::whip::MAX_SDP_BYTES + 1);
    let resp = srv
        .http
        .post(format!("{}/whip/room1", srv.base))
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {pubt}"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        srv.server().workers.session_count(),
        0,
        "no refused request left a session"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resource_errors() {
    let srv = TestServer::start().await;
    let alice = srv.publish_token("r", "alice");
    let p = join(&srv, "/whip/r", &alice, &[Audio]).await.unwrap();
    let url = format!("{}{}", srv.base, p.location);
    let send = |method: reqwest::Method,
                url: String,
                token: Option<String>,
                ctype: Option<&'static str>,
                body: &'static str,
                if_match: bool| {
        let mut r = srv.http.request(method, url).body(body);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(c) = ctype {
            r = r.header("Content-Type", c);
        }
        if if_match {
            r = r.header("If-Match", "*");
        }
        async move {
            let resp = r.send().await.unwrap();
            let s = resp.status().as_u16();
            (
                s,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let frag = "application/trickle-ice-sdpfrag";
    // Unknown session and malformed ids.
    let (s, j) = send(
        reqwest::Method::DELETE,
        format!("{}/whip/r/{}", srv.base, "0".repeat(32)),
        Some(alice.clone()),
        None,
        "",
        false,
    )
    .await;
    assert_eq!((s, code(&j)), (404, "not_found"));
    let (s, _) = send(
        reqwest::Method::DELETE,
        format!("{}/whip/r/xyz", srv.base),
        Some(alice.clone()),
        None,
        "",
        false,
    )
    .await;
    assert_eq!(s, 404);
    // Another identity may not end or change it.
    let eve = srv.publish_token("r", "eve");
    let (s, j) = send(
        reqwest::Method::DELETE,
        url.clone(),
        Some(eve.clone()),
        None,
        "",
        false,
    )
    .await;
    assert_eq!((s, code(&j)), (403, "forbidden"));
    let (s, _) = send(reqwest::Method::DELETE, url.clone(), None, None, "", false).await;
    assert_eq!(s, 401);
    // Trickle: wrong type, a good candidate, a bad one, and an ICE restart.
    let (s, _) = send(
        reqwest::Method::PATCH,
        url.clone(),
        Some(alice.clone()),
        Some("application/sdp"),
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        false,
    )
    .await;
    assert_eq!(s, 415);
    let (s, _) = send(reqwest::Method::PATCH, url.clone(), Some(alice.clone()), Some(frag), "a=ice-ufrag:x\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n", false).await;
    assert_eq!(s, 204);
    let (s, j) = send(
        reqwest::Method::PATCH,
        url.clone(),
        Some(alice.clone()),
        Some(frag),
        "a=candidate:garbage\r\n",
        false,
    )
    .await;
    assert_eq!((s, code(&j)), (400, "malformed_sdpfrag"));
    let (s, j) = send(
        reqwest::Method::PATCH,
        url.clone(),
        Some(alice.clone()),
        Some(frag),
        "a=ice-ufrag:new\r\na=ice-pwd:newpasswordnewpassword\r\n",
        true,
    )
    .await;
    // An ICE restart whose ufrag is shorter than ICE allows (4).
    assert_eq!((s, code(&j)), (400, "malformed_sdpfrag"));
    // OPTIONS lists the methods.
    let r = srv
        .http
        .request(reqwest::Method::OPTIONS, url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["allow"].to_str().unwrap().contains("DELETE"));
    // The owner ends it.
    let (s, _) = send(
        reqwest::Method::DELETE,
        url.clone(),
        Some(alice.clone()),
        None,
        "",
        false,
    )
    .await;
    assert_eq!(s, 200);
    srv.stop().await;
}

/// One join token holds at most `limits.sessions_per_join_token` live WHIP/WHEP
/// sessions: one more is refused (429 `too_many_sessions`) and joins nothing; ending
/// a session makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_holds_a_bounded_number_of_sessions() {
    let srv = TestServer::start_with(|s| s.limits.sessions_per_join_token = 2).await;
    let token = srv.subscribe_token("capped", "viewer");
    let first = join(&srv, "/whep/capped", &token, &[Audio]).await.unwrap();
    let _second = join(&srv, "/whep/capped", &token, &[Audio]).await.unwrap();
    let Err(refused) = join(&srv, "/whep/capped", &token, &[Audio]).await else {
        panic!("a third session on one token was taken");
    };
    assert_eq!(
        (refused.status, code(&refused.body)),
        (429, "too_many_sessions"),
        "{:?}",
        refused.body
    );
    // Another token is not held back by this one's sessions.
    let other = srv.subscribe_token("capped", "viewer-2");
    join(&srv, "/whep/capped", &other, &[Audio]).await.unwrap();
    let r = srv
        .http
        .delete(format!("{}{}", srv.base, first.location))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    join(&srv, "/whep/capped", &token, &[Audio])
        .await
        .expect("room again once a session ended");
    srv.stop().await;
}
