//! What the web app needs from the node, over real HTTP: the pages and the client
//! library with their headers, CORS on WHIP/WHEP and the API, refresh tokens in
//! HttpOnly cookies, stream tokens for devices, signed links to files with byte
//! ranges, join tokens with absolute URLs, and HTTPS with a self-signed certificate.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use common::oidc::Provider;
use common::remote::{get, pair_phone, post, register};
use serde_json::{Value, json};

/// A mono 16-bit 48 kHz WAV of a 440 Hz tone.
fn tone_wav(seconds: f64) -> Vec<u8> {
    let n = (48_000.0 * seconds) as u32;
    let mut w = Vec::with_capacity(44 + 2 * n as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 48_000, 96_000, 0x0010_0002] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let x = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 48_000.0).sin() * 0.5;
        w.extend_from_slice(&((x * 32767.0) as i16).to_le_bytes());
    }
    w
}

/// The `Set-Cookie` headers of an answer.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `name=value` of the named cookie among `Set-Cookie` headers.
fn cookie(set: &[String], name: &str) -> Option<String> {
    set.iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

async fn post_json(
    srv: &TestServer,
    path: &str,
    cookie: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut r = srv.http.post(format!("{}{path}", srv.base)).json(&body);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_the_client_library_are_served_with_their_headers() {
    let srv = TestServer::start().await;
    for page in [
        "/",
        "/phone?code=ABCD2345",
        "/listen",
        "/room?name=x",
        "/recordings",
        "/uploads",
        "/history",
        "/podcasts",
        "/servers",
        "/reset-password",
        "/verify-email",
        "/sign-up?token=x",
        "/link-account?token=x&provider=Test%20IdP",
    ] {
        let r = srv
            .http
            .get(format!("{}{page}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().contains_key("referrer-policy"));
        assert!(r.text().await.unwrap().contains("<!doctype html>"));
    }
    let sdk = srv
        .http
        .get(format!("{}/sdk/streamcore.js", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(sdk.status(), 200);
    assert_eq!(sdk.headers()["access-control-allow-origin"], "*");
    assert!(sdk.text().await.unwrap().contains("export class Room"));
    // The API's JSON 404 is kept for everything else.
    let r = srv
        .http
        .get(format!("{}/no/such/page", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_answer_cors_for_any_origin() {
    let srv = TestServer::start().await;
    for (path, method, extra) in [
        ("/whip/demo", "POST", ("accept-post", "application/sdp")),
        ("/whep/demo", "POST", ("accept-post", "application/sdp")),
        (
            "/whip/demo/abc",
            "PATCH",
            ("accept-patch", "application/trickle-ice-sdpfrag"),
        ),
    ] {
        let r = srv
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", srv.base))
            .header("origin", "https://studio.example")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*", "{path}");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains(method)
        );
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(allowed.contains("authorization") && allowed.contains("content-type"));
        assert_eq!(h[extra.0], extra.1, "{path}");
    }
    // Errors are readable by the other origin too.
    let r = srv
        .http
        .post(format!("{}/whip/demo", srv.base))
        .header("origin", "https://studio.example")
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for h in ["Location", "Link", "ETag"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    srv.stop().await;
}

async fn api_preflight(srv: &TestServer, origin: &str) -> reqwest::Response {
    srv.http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/devices", srv.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_allows_only_configured_origins() {
    let srv = TestServer::start().await;
    let r = api_preflight(&srv, "https://app.example").await;
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "no origin by default"
    );
    srv.stop().await;

    let srv = TestServer::start_with(|s| s.cors_origins = vec!["https://app.example".into()]).await;
    let r = api_preflight(&srv, "https://app.example").await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("authorization")
    );
    let r = api_preflight(&srv, "https://evil.example").await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_keeps_its_refresh_token_in_an_http_only_cookie() {
    let srv = TestServer::start().await;
    let r = post_json(
        &srv,
        "/api/v1/auth/register",
        None,
        json!({"email": "cookie@example.com"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let token = srv
        .mailed_token("cookie@example.com", "/sign-up")
        .await
        .expect("the sign-up link");
    let r = post_json(
        &srv,
        "/api/v1/auth/register/complete",
        None,
        json!({"token": token, "password": "a long password 1", "cookie": true}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let set = set_cookies(&r);
    let first = cookie(&set, "sc_refresh_user").expect("the refresh cookie");
    let attrs = &set[0];
    for a in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/v1/auth",
        "Max-Age=",
    ] {
        assert!(attrs.contains(a), "{attrs} lacks {a}");
    }
    assert!(!attrs.contains("Secure"), "plain HTTP on loopback");
    let v: Value = r.json().await.unwrap();
    assert!(v["session"]["access_token"].is_string());
    assert!(
        v["session"].get("refresh_token").is_none(),
        "the page never sees it: {v}"
    );

    // Refresh with the cookie: a new access token and a rotated cookie.
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&first),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let second = cookie(&set_cookies(&r), "sc_refresh_user").expect("rotated");
    assert_ne!(second, first);
    let v: Value = r.json().await.unwrap();
    assert!(v["access_token"].is_string() && v.get("refresh_token").is_none());

    // The old cookie again at once (the answer that rotated it was lost): still in
    // the leeway, the login goes on. (Reuse later ends it: control-api's tests.)
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&first),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(cookie(&set_cookies(&r), "sc_refresh_user").is_some());
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&second),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 200, "the login goes on");

    // A cookie that does not work is cleared, so the page stops presenting it.
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some("sc_refresh_user=made-up"),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 401);
    let cleared = set_cookies(&r);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("sc_refresh_user=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_refresh_token");

    // No cookie: a distinct code, so a page tells "not signed in" from "ended".
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        None,
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_session");
    // Neither or both of refresh_token and cookie: a bad request.
    let r = post_json(&srv, "/api/v1/auth/refresh", None, json!({})).await;
    assert_eq!(r.status(), 422);

    // Login with a cookie, then a user's cookie presented as a device's: refused.
    let r = post_json(
        &srv,
        "/api/v1/auth/login",
        None,
        json!({"email": "cookie@example.com", "password": "a long password 1", "cookie": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c = cookie(&set_cookies(&r), "sc_refresh_user").unwrap();
    let as_device = c.replacen("sc_refresh_user", "sc_refresh_device", 1);
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&as_device),
        json!({"cookie": "device"}),
    )
    .await;
    assert_eq!(r.status(), 401);

    // Logout clears the cookie and ends the login.
    let r = post_json(
        &srv,
        "/api/v1/auth/logout",
        Some(&c),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(
        set_cookies(&r)
            .iter()
            .any(|s| s.starts_with("sc_refresh_user=;"))
    );
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&c),
        json!({"cookie": "user"}),
    )
    .await;
    assert_eq!(r.status(), 401);

    // A phone page pairs with a cookie of its own kind.
    let user = register(&srv, "owner@example.com").await;
    let (_, p) = post(
        &srv.http,
        format!("{}/api/v1/pairings", srv.base),
        Some(&user.access),
        json!({}),
    )
    .await;
    let r = post_json(
        &srv,
        "/api/v1/pairings/claim",
        None,
        json!({"code": p["code"], "device": {"name": "Phone", "kind": "phone"}, "cookie": true}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let device_cookie = cookie(&set_cookies(&r), "sc_refresh_device").expect("device cookie");
    let r = post_json(
        &srv,
        "/api/v1/auth/refresh",
        Some(&device_cookie),
        json!({"cookie": "device"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_get_stream_tokens_for_their_own_room() {
    let srv = TestServer::start().await;
    let user = register(&srv, "live@example.com").await;
    let (device, device_token) = pair_phone(&srv.http, &srv.base, &user, "Phone").await;
    let url = |d: &str| format!("{}/api/v1/devices/{d}/stream", srv.base);

    let (s, v) = post(
        &srv.http,
        url(&device),
        Some(&device_token),
        json!({"role": "publish"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let room_name = format!("device-{device}");
    assert_eq!(v["room_name"], room_name);
    let room = v["room"].as_str().unwrap().to_owned();
    assert_eq!(v["whip_url"], format!("{}/whip/{room}", srv.base));
    assert_eq!(
        v["rtc_url"],
        format!("{}/rtc", srv.base.replacen("http://", "ws://", 1))
    );
    let grant = srv
        .server()
        .signer
        .verifier()
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert!(grant.grants.publish && !grant.grants.subscribe);
    assert_eq!(grant.identity, device);

    // The user listens; only the device itself may publish.
    let (s, v) = post(
        &srv.http,
        url(&device),
        Some(&user.access),
        json!({"role": "listen"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let grant = srv
        .server()
        .signer
        .verifier()
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert!(grant.grants.subscribe && !grant.grants.publish);
    assert_eq!(grant.room.as_str(), room);
    let (s, v) = post(
        &srv.http,
        url(&device),
        Some(&user.access),
        json!({"role": "publish"}),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, v) = post(
        &srv.http,
        url(&device),
        Some(&user.access),
        json!({"role": "dj"}),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("role")));

    // The room is the user's; another user sees no such device.
    let (_, rooms) = get(
        &srv.http,
        format!("{}/api/v1/rooms", srv.base),
        &user.access,
    )
    .await;
    assert!(
        rooms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == room_name && r["id"] == room)
    );
    let stranger = register(&srv, "stranger@example.com").await;
    let (s, _) = post(
        &srv.http,
        url(&device),
        Some(&stranger.access),
        json!({"role": "listen"}),
    )
    .await;
    assert_eq!(s, 404);

    // Ordinary join tokens carry absolute URLs as well.
    post(
        &srv.http,
        format!("{}/api/v1/rooms", srv.base),
        Some(&user.access),
        json!({"name": "demo"}),
    )
    .await;
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/rooms/demo/token", srv.base),
        Some(&user.access),
        json!({"subscribe": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["whep_url"],
        format!("{}/whep/{}", srv.base, v["room"].as_str().unwrap())
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_files_open_with_signed_links_and_byte_ranges() {
    let srv = TestServer::start().await;
    let user = register(&srv, "links@example.com").await;
    let wav = tone_wav(3.0);
    let r = srv
        .http
        .post(format!(
            "{}/api/v1/uploads?name=tone.wav&target_lufs=-16",
            srv.base
        ))
        .bearer_auth(&user.access)
        .body(wav)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, j) = get(
            &srv.http,
            format!("{}/api/v1/uploads/{id}", srv.base),
            &user.access,
        )
        .await;
        if j["status"] == "completed" {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not complete: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let link = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "audio.opus")
        .and_then(|f| f["url"].as_str())
        .expect("a link to audio.opus")
        .to_owned();
    assert!(link.starts_with(&format!("/api/v1/uploads/{id}/files/audio.opus?exp=")));

    // No credential but the link: the whole file, then a range of it.
    let whole = srv
        .http
        .get(format!("{}{link}", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "audio/ogg");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    let bytes = whole.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"OggS");
    // A player that has this version already gets 304 and no bytes; another version's
    // tag gets the file.
    let again = srv
        .http
        .get(format!("{}{link}", srv.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = srv
        .http
        .get(format!("{}{link}", srv.base))
        .header("if-none-match", "\"another-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap(), bytes);
    // A range asked `If-Range` of another version: the whole (current) file instead.
    let moved = srv
        .http
        .get(format!("{}{link}", srv.base))
        .header("range", "bytes=4-99")
        .header("if-range", "\"another-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    assert_eq!(moved.bytes().await.unwrap().len(), bytes.len());
    let part = srv
        .http
        .get(format!("{}{link}", srv.base))
        .header("range", "bytes=4-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["etag"], etag.as_str());
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 4-99/{}", bytes.len())
    );
    assert_eq!(part.bytes().await.unwrap(), bytes[4..100]);
    let past = srv
        .http
        .get(format!("{}{link}", srv.base))
        .header("range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", bytes.len())
    );

    // The link opens that file only, and only as signed.
    let other = link.replacen("audio.opus", "waveform.svg", 1);
    // The signature's last character changed (to a different one whatever it was).
    let last = if link.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &link[..link.len() - 1]);
    for bad in [
        other,
        tampered,
        format!("/api/v1/uploads/{id}/files/audio.opus"),
    ] {
        let r = srv
            .http
            .get(format!("{}{bad}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }

    // Deleting the upload: another user cannot (404); its owner can, and its files go
    // from the store with it (the source and every output), its link with them.
    let spec_prefix = done["spec"]["output_prefix"].as_str().unwrap().to_owned();
    let dir = srv.data_dir.join("recordings").join(&spec_prefix);
    assert!(dir.join("audio.opus").exists(), "{dir:?}");
    let stranger = register(&srv, "stranger@example.com").await;
    let delete = |token: String| {
        srv.http
            .delete(format!("{}/api/v1/uploads/{id}", srv.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(delete(stranger.access.clone()).await.unwrap().status(), 404);
    assert!(dir.join("audio.opus").exists());
    assert_eq!(delete(user.access.clone()).await.unwrap().status(), 204);
    assert!(!dir.exists(), "left behind: {dir:?}");
    let (s, e) = get(
        &srv.http,
        format!("{}/api/v1/uploads/{id}", srv.base),
        &user.access,
    )
    .await;
    assert_eq!(s, 404, "{e}");
    let r = srv
        .http
        .get(format!("{}{link}", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let again = delete(user.access.clone()).await.unwrap();
    assert_eq!(again.status(), 404);
    srv.stop().await;
}

/// One HTTP/1.1 request over TLS: the answer's head and the server certificate's
/// fingerprint.
async fn https(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    request: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let fp = streamcore::tls::fingerprint(&tls.get_ref().1.peer_certificates().unwrap()[0]);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.ok();
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(h, _)| h);
    (head.to_owned(), fp)
}

/// A TLS client that trusts the CA in `data_dir/tls/ca.pem`, as a phone that installed
/// it does.
fn trusting_the_node(data_dir: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let ca = std::fs::read(data_dir.join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_the_node_makes_and_keeps() {
    let data_dir = std::env::temp_dir().join(format!("sc-tls-{}", rand::random::<u64>()));
    let settings = |s: &mut streamcore::config::Settings| {
        s.tls.self_signed = true;
        s.data_dir = data_dir.clone();
    };
    let mut srv = TestServer::start_with(settings).await;
    let (addr, fingerprint, ca_fingerprint) = {
        let server = srv.server();
        let tls = server.tls.as_ref().expect("HTTPS is on");
        assert_eq!(server.public_url, format!("https://{}", server.http_addr));
        (
            server.http_addr,
            tls.fingerprint.clone(),
            tls.ca.as_ref().expect("a local CA").1.clone(),
        )
    };
    let connector = trusting_the_node(&data_dir);
    let (head, fp) = https(
        &connector,
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-security-policy"),
        "{head}"
    );
    assert_eq!(
        fp, fingerprint,
        "the printed fingerprint is the certificate's"
    );

    // A page's session cookie over HTTPS is Secure.
    let post_json = |path: &'static str, body: String| {
        let connector = connector.clone();
        async move {
            https(
                &connector,
                addr,
                &format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
            .await
            .0
        }
    };
    let head = post_json(
        "/api/v1/auth/register",
        r#"{"email":"tls@example.com"}"#.into(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    let token = srv
        .mailed_token("tls@example.com", "/sign-up")
        .await
        .unwrap();
    let head = post_json(
        "/api/v1/auth/register/complete",
        json!({"token": token, "password": "a long password 1", "cookie": true}).to_string(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let set_cookie = head
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie: sc_refresh_user="))
        .expect("the session cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");

    // A restart keeps the certificate: a phone trusts it once.
    if let Some(s) = srv.server.take() {
        s.shutdown(Duration::from_millis(100), std::future::pending())
            .await;
    }
    let mut again = TestServer::start_with(settings).await;
    let tls = again.server().tls.as_ref().unwrap();
    assert_eq!(tls.fingerprint, fingerprint);
    assert_eq!(tls.ca.as_ref().unwrap().1, ca_fingerprint);
    if let Some(s) = again.server.take() {
        s.shutdown(Duration::from_millis(100), std::future::pending())
            .await;
    }

    // A certificate of one's own, from files (here: the one the node made).
    let with_files = TestServer::start_with(|s| {
        s.tls.cert = Some(data_dir.join("tls/cert.pem"));
        s.tls.key = Some(data_dir.join("tls/key.pem"));
    })
    .await;
    let server = with_files.server();
    let tls = server.tls.as_ref().expect("HTTPS from files");
    assert!(tls.ca.is_none());
    let (head, fp) = https(
        &connector,
        server.http_addr,
        &format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.http_addr
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(fp, fingerprint);
    with_files.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Behind a reverse proxy each client gets its own rate-limit bucket, named by the
/// proxy's `X-Forwarded-For` (an IPv6 client's whole /64 one bucket); from a peer
/// that is not a trusted proxy the header changes nothing. Pairing claims allow 10
/// tries a minute per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_the_client_behind_a_trusted_proxy_only() {
    async fn claim(srv: &TestServer, forwarded_for: &str) -> u16 {
        srv.http
            .post(format!("{}/api/v1/pairings/claim", srv.base))
            .header("X-Forwarded-For", forwarded_for)
            .json(&json!({"code": "ZZZZ-ZZZZ", "device": {"name": "Phone", "kind": "phone"}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let behind = TestServer::start_with(|s| s.trusted_proxies = vec!["127.0.0.1".into()]).await;
    for _ in 0..10 {
        assert_eq!(claim(&behind, "198.51.100.1").await, 400);
    }
    assert_eq!(claim(&behind, "198.51.100.1").await, 429);
    assert_eq!(
        claim(&behind, "198.51.100.2").await,
        400,
        "another client has its own bucket"
    );
    for _ in 0..10 {
        assert_eq!(claim(&behind, "2001:db8:0:1::1").await, 400);
    }
    assert_eq!(claim(&behind, "2001:db8:0:1::2").await, 429, "the same /64");
    assert_eq!(claim(&behind, "2001:db8:0:2::1").await, 400);
    behind.stop().await;

    let direct = TestServer::start().await;
    for i in 0..10 {
        assert_eq!(claim(&direct, &format!("198.51.100.{i}")).await, 400);
    }
    assert_eq!(
        claim(&direct, "198.51.100.99").await,
        429,
        "a forged header buys no new bucket"
    );
    direct.stop().await;
}

/// Sign-ups are limited per client address (429 with `Retry-After`), and Argon2 runs
/// in a bounded number of slots: a flood of sign-ins from many addresses (behind a
/// trusted proxy) gets 401s and, past the wait for a slot, 503 with `Retry-After`,
/// never anything else, and the node keeps answering. (A sign-up hashes nothing until
/// its link is opened.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_rate_limited_and_password_hashing_is_bounded() {
    async fn sign_up(srv: &TestServer, n: usize, forwarded_for: &str) -> reqwest::Response {
        srv.http
            .post(format!("{}/api/v1/auth/register", srv.base))
            .header("X-Forwarded-For", forwarded_for)
            .json(&json!({"email": format!("flood{n}@example.com")}))
            .send()
            .await
            .unwrap()
    }
    let srv = TestServer::start_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.limits.concurrent_password_hashes = 1;
        s.limits.password_hash_wait_ms = 300;
    })
    .await;
    // One address: ten sign-ups a minute.
    for n in 0..10 {
        assert_eq!(sign_up(&srv, n, "198.51.100.1").await.status(), 202);
    }
    let refused = sign_up(&srv, 10, "198.51.100.1").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after_secs"], retry);

    // Many addresses at once, one hashing slot, 300 ms of waiting for it.
    let srv = Arc::new(srv);
    let flood: Vec<_> = (0..60)
        .map(|i| {
            let srv = srv.clone();
            tokio::spawn(async move {
                let r = srv
                    .http
                    .post(format!("{}/api/v1/auth/login", srv.base))
                    .header("X-Forwarded-For", format!("203.0.113.{i}"))
                    .json(&json!({"email": format!("flood{i}@example.com"), "password": "a long password 1"}))
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            })
        })
        .collect();
    let mut checked = 0;
    let mut busy = 0;
    for f in flood {
        match f.await.unwrap() {
            (401, _) => checked += 1,
            (503, true) => busy += 1,
            other => panic!("a sign-in in the flood got {other:?}"),
        }
    }
    assert!(checked >= 1, "none got through");
    assert!(
        busy >= 1,
        "all {checked} waited for one slot: the wait is not bounded"
    );
    let health = reqwest::get(format!("{}/healthz", srv.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    Arc::into_inner(srv).unwrap().stop().await;
}

/// Signing up says nothing about the address: an address with an account gets the same
/// answer as a new one (its owner gets a mail saying so, with no link that could make
/// a second account). A new address's link makes the account once; the password comes
/// with the link, never with the sign-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_answers_alike_whether_or_not_the_address_has_an_account() {
    let srv = TestServer::start().await;
    let ask = |email: &'static str| {
        let srv = &srv;
        async move {
            let r = srv
                .http
                .post(format!("{}/api/v1/auth/register", srv.base))
                .json(&json!({"email": email, "display_name": "Sam"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let mut headers: Vec<String> = r
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date" && *k != "x-request-id")
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect();
            headers.sort();
            (status, headers, r.text().await.unwrap())
        }
    };
    let had = register(&srv, "taken@example.com").await;
    let taken = ask("taken@example.com").await;
    let fresh = ask("fresh@example.com").await;
    assert_eq!(taken.0, 202);
    assert_eq!(
        taken, fresh,
        "the same answer for a taken and a new address"
    );
    // The owner is told; no link for that address works.
    let mails = control_api::store::Store::list_mail(&srv.server().api.db, 50)
        .await
        .unwrap();
    let note = mails
        .iter()
        .find(|m| m.to_addr == "taken@example.com" && m.subject.contains("already"))
        .expect("a note to the owner");
    assert!(!note.body.contains("token="), "{}", note.body);
    // The new address's link: no password at sign-up, then one account, once.
    let (s, v) = post(
        &srv.http,
        format!("{}/api/v1/auth/register", srv.base),
        None,
        json!({"email": "eager@example.com", "password": "a long password 1"}),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("password")));
    let token = srv
        .mailed_token("fresh@example.com", "/sign-up")
        .await
        .unwrap();
    let complete = |token: String| {
        let srv = &srv;
        async move {
            post(
                &srv.http,
                format!("{}/api/v1/auth/register/complete", srv.base),
                None,
                json!({"token": token, "password": "a long password 1"}),
            )
            .await
        }
    };
    let (s, v) = complete(token.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["user"]["display_name"], "Sam");
    assert_eq!(
        v["user"]["email_verified"], true,
        "the link proved the address"
    );
    let (s, v) = complete(token).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_signup_token"))
    );
    // The first account still signs in with its own password; nothing changed it.
    let (s, _) = post(
        &srv.http,
        format!("{}/api/v1/auth/login", srv.base),
        None,
        json!({"email": "taken@example.com", "password": "a long enough password"}),
    )
    .await;
    assert_eq!(s, 200);
    let _ = had;
    srv.stop().await;
}

/// Slowloris: a few hundred connections from one address that start a request and
/// never finish its header cannot starve anyone else. Past the per-address cap they
/// are closed at once; the ones let in are closed when their header deadline passes;
/// meanwhile a client from another address is served at once, and afterwards the
/// first address is too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_from_one_address_do_not_starve_the_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 300;
    const PER_ADDRESS: usize = 50;
    let srv = TestServer::start_with(|s| {
        s.limits.http_connections_per_address = PER_ADDRESS;
        s.limits.http_header_timeout_secs = 2;
    })
    .await;
    let addr = srv.server().http_addr;
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A header begun, never ended.
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(s);
    }
    /// Whether the server has closed `s` (EOF, a reset, or a last answer) by `until`.
    async fn closed_by(s: &mut tokio::net::TcpStream, until: tokio::time::Instant) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout_at(until, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) || matches!(
            tokio::time::timeout_at(until, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    // Another address is served while the slow ones hold what they got.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_string(&mut answer))
        .await
        .expect("served while the slow clients wait")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Every slow connection is closed: the refused ones at once, the others at
    // their header deadline (2 s).
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut still_open = 0;
    for s in &mut slow {
        if !closed_by(s, until).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow connections left open past their deadline"
    );
    drop(slow);

    // The first address is served again, and the refusals were counted.
    let r = srv
        .http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refused = srv
        .metric("streamcore_http_connections_refused_total")
        .await;
    assert!(
        refused >= (SLOW - PER_ADDRESS) as u64,
        "{refused} refusals counted"
    );
    srv.stop().await;
}

/// A request body must keep coming (`limits.http_body_idle_secs`,
/// `limits.http_min_body_bytes_per_sec`): an upload that stops half-way and a JSON body
/// trickled under the minimum rate are answered `408 body_too_slow` and leave nothing
/// behind; a body sent at once is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_stop_or_trickle_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start_with(|s| {
        s.limits.http_body_idle_secs = 2;
        s.limits.http_min_body_bytes_per_sec = 2000;
    })
    .await;
    let addr = srv.server().http_addr;
    let user = register(&srv, "slow-body@example.com").await;
    /// Reads the whole answer (the node closes after it) within 10 s.
    async fn answer(c: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    // An upload announced as 100 kB that stops after 4 kB.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        user.access
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut part = b"fLaC".to_vec();
    part.resize(4096, 0);
    c.write_all(&part).await.unwrap();
    let stopped = answer(&mut c).await;
    assert!(
        stopped.starts_with("HTTP/1.1 408") && stopped.contains("body_too_slow"),
        "{stopped}"
    );

    // A sign-in whose JSON comes 50 bytes every 200 ms: never idle, far under 2000 B/s.
    let body = json!({"email": "slow-body@example.com", "password": "x".repeat(3000)}).to_string();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut cut_off = String::new();
    for chunk in body.as_bytes().chunks(50) {
        if c.write_all(chunk).await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await
            && n > 0
        {
            cut_off = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never cut off");
    }
    assert!(
        cut_off.starts_with("HTTP/1.1 408") && cut_off.contains("body_too_slow"),
        "{cut_off:?}"
    );

    // Nothing of the upload was kept; a body sent at once goes through.
    let (s, v) = get(
        &srv.http,
        format!("{}/api/v1/uploads", srv.base),
        &user.access,
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    let parts = std::fs::read_dir(srv.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(parts, 0, "no spooled part left");
    let (s, _) = post(
        &srv.http,
        format!("{}/api/v1/auth/login", srv.base),
        None,
        json!({"email": "slow-body@example.com", "password": "a long enough password"}),
    )
    .await;
    assert_eq!(s, 200, "signed in with a body sent at once");
    srv.stop().await;
}

/// Join tokens are bound to their room's id and epoch: resetting the room, removing a
/// member or deleting the room (and making another of the same name) revokes every
/// token issued before, over WHEP and over `/rtc` alike (`401 token_revoked`); a new
/// token works. A token the operator made (`streamcore token create`) carries no
/// binding and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_die_with_their_room_epoch() {
    use media_core::str0m::media::MediaKind::Audio;
    let srv = TestServer::start().await;
    let owner = register(&srv, "epoch-owner@example.com").await;
    let url = |p: &str| format!("{}/api/v1{p}", srv.base);
    let (s, v) = post(
        &srv.http,
        url("/rooms"),
        Some(&owner.access),
        json!({"name": "epochs"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token = || async {
        let (s, v) = post(
            &srv.http,
            url("/rooms/epochs/token"),
            Some(&owner.access),
            json!({"subscribe": true}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        // The SFU knows the room by its id: a room made again is another room.
        let room = v["room"].as_str().unwrap().to_owned();
        (v["token"].as_str().unwrap().to_owned(), room)
    };
    let whep = |(t, room): (String, String)| {
        let srv = &srv;
        async move { common::join(srv, &format!("/whep/{room}"), &t, &[Audio]).await }
    };
    let revoked = |r: Result<common::Peer, common::Refused>| match r {
        Err(e) => assert_eq!(
            (e.status, e.body["error"]["code"].as_str()),
            (401, Some("token_revoked")),
            "{:?}",
            e.body
        ),
        Ok(_) => panic!("a revoked token opened a session"),
    };

    let before = token().await;
    assert!(whep(before.clone()).await.is_ok(), "a fresh token joins");
    let (s, _) = post(
        &srv.http,
        url("/rooms/epochs/reset"),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    revoked(whep(before.clone()).await);
    // The room protocol refuses it too.
    let mut rtc = common::remote::socket(&srv.base, "/rtc", "-").await;
    common::remote::send(
        &mut rtc,
        json!({"type": "join", "id": 0, "token": before.0, "version": 1}),
    )
    .await;
    let refused =
        common::remote::wait_for(&mut rtc, Duration::from_secs(10), |m| m["type"] == "error").await;
    assert_eq!(refused["code"], "token_revoked", "{refused}");
    let after_reset = token().await;
    assert!(whep(after_reset.clone()).await.is_ok(), "a new token joins");

    // Deleted and made again under the same name: another room, the old tokens dead.
    let r = srv
        .http
        .delete(url("/rooms/epochs"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = post(
        &srv.http,
        url("/rooms"),
        Some(&owner.access),
        json!({"name": "epochs"}),
    )
    .await;
    assert_eq!(s, 201);
    revoked(whep(after_reset).await);
    let fresh = token().await;
    assert!(whep(fresh.clone()).await.is_ok());

    // An operator's token for the same room is not bound to it.
    let operator = srv.subscribe_token(&fresh.1, "operator");
    assert!(whep((operator, fresh.1)).await.is_ok());
    srv.stop().await;
}

/// Revoking passes ends the sessions they opened, not only future joins: a new share
/// link removes the link holder's room participant and WHEP player at once (`left`,
/// reason `revoked`) while the owner stays; a reset removes the guest who came back
/// with the new link; deleting the room removes the owner too. A guest cannot pose as
/// someone else, and is shown under their display name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_passes_end_the_sessions_they_opened() {
    use common::remote::{send, socket, wait_for};
    use media_core::str0m::media::MediaKind::Audio;
    let srv = TestServer::start().await;
    let url = |p: &str| format!("{}/api/v1{p}", srv.base);
    let owner = register(&srv, "pass-owner@example.com").await;
    let guest = common::remote::sign_up(
        &srv,
        "pass-guest@example.com",
        json!({"email": "pass-guest@example.com", "display_name": "Gwen"}),
    )
    .await;
    let (s, v) = post(
        &srv.http,
        url("/rooms"),
        Some(&owner.access),
        json!({"name": "passes"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // Guests (and the SFU) know the room by its id.
    let passes = v["id"].as_str().unwrap().to_owned();
    let share = || async {
        let (s, v) = post(
            &srv.http,
            url("/rooms/passes/share-link"),
            Some(&owner.access),
            json!({}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let link = v["share_url"].as_str().unwrap().to_owned();
        link.split("key=").nth(1).unwrap().to_owned()
    };
    let (s, _) = srv
        .http
        .patch(url("/rooms/passes"))
        .bearer_auth(&owner.access)
        .json(&json!({"access": "link"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 200);
    let key = share().await;
    let token = |access: String, body: Value| {
        let srv = &srv;
        let passes = &passes;
        async move {
            let (s, v) = post(
                &srv.http,
                format!("{}/api/v1/rooms/{passes}/token", srv.base),
                Some(&access),
                body,
            )
            .await;
            assert_eq!(s, 200, "{v}");
            v["token"].as_str().unwrap().to_owned()
        }
    };
    // A guest may not pose as the owner.
    let (s, v) = post(
        &srv.http,
        url(&format!("/rooms/{passes}/token")),
        Some(&guest.access),
        json!({"subscribe": true, "key": key, "identity": owner.id}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("identity_not_allowed"))
    );
    let join = |t: String| {
        let base = srv.base.clone();
        async move {
            let mut ws = socket(&base, "/rtc", "-").await;
            send(
                &mut ws,
                json!({"type": "join", "id": 0, "token": t, "version": 1}),
            )
            .await;
            let joined =
                wait_for(&mut ws, Duration::from_secs(10), |m| m["type"] == "joined").await;
            (ws, joined)
        }
    };
    let mut host = join(token(owner.access.clone(), json!({"subscribe": true})).await)
        .await
        .0;
    let guest_token = token(
        guest.access.clone(),
        json!({"subscribe": true, "publish_data": true, "key": key}),
    )
    .await;
    let (mut visitor, joined) = join(guest_token.clone()).await;
    assert_eq!(
        (
            &joined["participant"]["identity"],
            &joined["participant"]["name"]
        ),
        (&json!(guest.id), &json!("Gwen"))
    );
    let _player = common::join(&srv, &format!("/whep/{passes}"), &guest_token, &[Audio])
        .await
        .expect("the guest's player opens");
    let seen = wait_for(&mut host, Duration::from_secs(10), |m| {
        m["type"] == "participant_joined" && m["participant"]["kind"] == "subscriber"
    })
    .await;
    assert_eq!(seen["participant"]["name"], "Gwen");

    // A new link: the guest's participant and player leave; the owner stays.
    let key = share().await;
    let gone = wait_for(&mut visitor, Duration::from_secs(10), |m| {
        m["type"] == "left"
    })
    .await;
    assert_eq!(gone["reason"], "revoked");
    for _ in 0..2 {
        let m = wait_for(&mut host, Duration::from_secs(10), |m| {
            m["type"] == "participant_left" || m["type"] == "left"
        })
        .await;
        assert_eq!(
            (&m["type"], &m["reason"]),
            (&json!("participant_left"), &json!("revoked")),
            "{m}"
        );
    }

    // Back with the new link, then the owner cancels every pass: out again.
    let (mut visitor, _) =
        join(token(guest.access.clone(), json!({"subscribe": true, "key": key})).await).await;
    let (s, _) = post(
        &srv.http,
        url("/rooms/passes/reset"),
        Some(&owner.access),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let gone = wait_for(&mut visitor, Duration::from_secs(10), |m| {
        m["type"] == "left"
    })
    .await;
    assert_eq!(gone["reason"], "revoked");
    let m = wait_for(&mut host, Duration::from_secs(10), |m| {
        m["type"] == "participant_left" || m["type"] == "left"
    })
    .await;
    assert_eq!(m["type"], "participant_left", "the owner stays: {m}");

    // A deleted room keeps no one.
    let r = srv
        .http
        .delete(url("/rooms/passes"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let gone = wait_for(&mut host, Duration::from_secs(10), |m| m["type"] == "left").await;
    assert_eq!(gone["reason"], "revoked");
    srv.stop().await;
}

/// Signs in at the provider as `login` from our `start` URL (its login and consent
/// forms, by `scripts/interop/oidc_login.py`): the callback URL it sends the browser
/// back to, not yet followed.
async fn provider_login(start: String, login: &str, callback_prefix: String) -> (String, String) {
    let login = login.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/interop/oidc_login.py"
            ))
            .arg("--cookie-header")
            .args([&start, &login, &callback_prefix])
            .output()
            .expect("python3 runs oidc_login.py");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let url = lines.next().unwrap_or_default().trim().to_owned();
        let cookies = lines.next().unwrap_or_default().trim().to_owned();
        (url, cookies)
    })
    .await
    .unwrap()
}

/// Sign-in with OpenID Connect against a real provider: an account made for a verified
/// email, the same account next time; a replayed `state`, a tampered ID token, one for
/// another audience, an expired one, one with another sign-in's nonce and an unverified
/// email all refused; an existing
/// account's email linked only after its password; keys the provider rotated; linking
/// while signed in, listing and unlinking (never the account's only way in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_openid_connect_against_a_real_provider() {
    let dir = tempfile_dir("oidc");
    let provider = Provider::start(0, &dir.join("keys-1.json"));
    let issuer = provider.issuer.clone();
    let srv = TestServer::start_with(|s| {
        s.oidc = vec![control_api::oidc::ProviderConfig {
            id: "test".into(),
            name: "Test IdP".into(),
            issuer: issuer.clone(),
            client_id: "streamcore".into(),
            client_secret: "s3cret".into(),
        }]
    })
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = format!("{}/auth/oidc/test/start?return_to=/podcasts", srv.base);
    let callback_prefix = format!("{}/auth/oidc/callback", srv.base);
    // Our callback, as the browser that began the sign-in reaches it (with its
    // cookies): where it sends the browser, the refresh cookie it sets, and a pending
    // link's cookie.
    let back = |(url, cookies): (String, String)| {
        let c = no_redirects.clone();
        async move {
            let r = c.get(url).header("cookie", cookies).send().await.unwrap();
            assert_eq!(r.status(), 303);
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            let set = set_cookies(&r);
            (
                location,
                cookie(&set, "sc_refresh_user"),
                cookie(&set, "sc_oidc_link"),
            )
        }
    };
    let session_of = |refresh: String| {
        let http = srv.http.clone();
        let base = srv.base.clone();
        async move {
            let r = http
                .post(format!("{base}/api/v1/auth/refresh"))
                .header("cookie", refresh)
                .json(&json!({"cookie": "user"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let access = v["access_token"].as_str().unwrap().to_owned();
            let (_, me) = get(&http, format!("{base}/api/v1/me/providers"), &access).await;
            (access, me)
        }
    };
    let (s, list) = get(
        &srv.http,
        format!("{}/api/v1/auth/oidc/providers", srv.base),
        "",
    )
    .await;
    assert_eq!(
        (s, list.clone()),
        (200, json!([{"id": "test", "name": "Test IdP"}]))
    );

    // A new person: an account for the provider's verified email, signed in.
    let cb = provider_login(start.clone(), "alice@corp.test", callback_prefix.clone()).await;
    // The callback URL opened in another browser (one that did not begin this sign-in:
    // someone sent it the link) signs nobody in.
    let (location, refresh, _) = back((cb.0.clone(), String::new())).await;
    assert_eq!(
        (location.as_str(), refresh),
        ("/?sign_in_error=invalid_state", None)
    );
    let (location, refresh, _) = back(cb.clone()).await;
    assert_eq!(location, "/podcasts");
    let (_, alice) = session_of(refresh.expect("a session cookie")).await;
    assert_eq!(alice["user"]["email"], "alice@corp.test", "{alice}");
    assert_eq!(alice["user"]["email_verified"], true, "{alice}");
    assert_eq!(alice["has_password"], false, "{alice}");
    assert_eq!(alice["linked"][0]["provider"], "test", "{alice}");
    // The same callback again: its state is spent.
    let (location, refresh, _) = back(cb).await;
    assert_eq!(
        (location.as_str(), refresh),
        ("/?sign_in_error=invalid_state", None)
    );
    // Next time: the same account.
    let cb = provider_login(start.clone(), "alice@corp.test", callback_prefix.clone()).await;
    let (_, refresh, _) = back(cb).await;
    let (alice_access, again) = session_of(refresh.unwrap()).await;
    assert_eq!(again["user"]["id"], alice["user"]["id"]);

    // ID tokens the provider's token endpoint is made to return wrong.
    for mode in ["tamper", "wrong_audience", "expired", "wrong_nonce"] {
        provider.mode(mode).await;
        let cb = provider_login(start.clone(), "alice@corp.test", callback_prefix.clone()).await;
        let (location, refresh, _) = back(cb).await;
        assert_eq!(
            (location.as_str(), refresh),
            ("/?sign_in_error=invalid_token", None),
            "{mode}"
        );
    }
    provider.mode("normal").await;

    // An email the provider does not vouch for makes no account.
    let cb = provider_login(
        start.clone(),
        "unverified-carol@corp.test",
        callback_prefix.clone(),
    )
    .await;
    let (location, refresh, _) = back(cb).await;
    assert_eq!(
        (location.as_str(), refresh),
        ("/?sign_in_error=email_unverified", None)
    );

    // An existing account's verified email: linked only once its password is given.
    let bob = register(&srv, "bob@corp.test").await;
    let cb = provider_login(start.clone(), "bob@corp.test", callback_prefix.clone()).await;
    let (location, refresh, link_cookie) = back(cb).await;
    assert!(refresh.is_none(), "no session before the password");
    let link_cookie = link_cookie.expect("the pending link's cookie");
    let token = location
        .strip_prefix("/link-account?token=")
        .and_then(|t| t.split('&').next())
        .unwrap_or_else(|| panic!("{location}"))
        .to_owned();
    let (_, mine) = get(
        &srv.http,
        format!("{}/api/v1/me/providers", srv.base),
        &bob.access,
    )
    .await;
    assert_eq!(mine["linked"], json!([]), "nothing linked yet: {mine}");
    // The link page in another browser (sent to someone, to phish their password)
    // finds no link.
    let pending = format!("{}/api/v1/auth/oidc/link/{token}", srv.base);
    let r = srv.http.get(&pending).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = srv
        .http
        .get(&pending)
        .header("cookie", &link_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["email"], "bob@corp.test", "{v}");
    let link = format!("{}/api/v1/auth/oidc/link", srv.base);
    let post_link = |password: &'static str, cookie: Option<String>| {
        let mut r = srv
            .http
            .post(&link)
            .json(&json!({"token": token, "password": password}));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, _) = post_link("a long enough password", None).await;
    assert_eq!(
        s, 404,
        "the right password from another browser links nothing"
    );
    let (s, v) = post_link("wrong password here", Some(link_cookie.clone())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{v}"
    );
    let (s, v) = post_link("a long enough password", Some(link_cookie.clone())).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = post_link("a long enough password", Some(link_cookie.clone())).await;
    assert_eq!(s, 404, "a link is used once");
    let (_, mine) = get(
        &srv.http,
        format!("{}/api/v1/me/providers", srv.base),
        &bob.access,
    )
    .await;
    assert_eq!(mine["linked"][0]["provider"], "test", "{mine}");
    let cb = provider_login(start.clone(), "bob@corp.test", callback_prefix.clone()).await;
    let (_, refresh, _) = back(cb).await;
    let (_, bob_now) = session_of(refresh.unwrap()).await;
    assert_eq!(bob_now["user"]["id"], bob.id.as_str());

    // The provider rotates its keys (restarted with new ones): its new tokens verify.
    let port = provider.port();
    drop(provider);
    let provider = Provider::start(port, &dir.join("keys-2.json"));
    let cb = provider_login(start.clone(), "alice@corp.test", callback_prefix.clone()).await;
    let (location, refresh, _) = back(cb).await;
    assert_eq!(location, "/podcasts");
    assert!(refresh.is_some());

    // Unlinking: never the only way into an account; bob has a password.
    let unlink = |token: String| {
        srv.http
            .delete(format!("{}/api/v1/me/providers/test", srv.base))
            .bearer_auth(token)
            .send()
    };
    let r = unlink(alice_access.clone()).await.unwrap();
    assert_eq!(r.status(), 409);
    let r = unlink(bob.access.clone()).await.unwrap();
    assert_eq!(r.status(), 204);
    // Linking while signed in: the provider's account, whatever its email.
    let cb = link_login(&srv, &bob.access, "robert@elsewhere.test", &callback_prefix).await;
    let (location, _, _) = back(cb).await;
    assert_eq!(location, "/?linked=1");
    let (_, mine) = get(
        &srv.http,
        format!("{}/api/v1/me/providers", srv.base),
        &bob.access,
    )
    .await;
    assert_eq!(
        mine["linked"][0]["email"], "robert@elsewhere.test",
        "{mine}"
    );
    // An identity linked to one account cannot be linked to another.
    let cb = link_login(
        &srv,
        &alice_access,
        "robert@elsewhere.test",
        &callback_prefix,
    )
    .await;
    let (location, _, _) = back(cb).await;
    assert_eq!(location, "/?sign_in_error=identity_taken");
    drop(provider);
    srv.stop().await;
}

/// A signed-in user links the provider: its login as `login`, and the cookies the
/// browser holds for the callback (the login's, set by our answer, and the provider's).
async fn link_login(
    srv: &TestServer,
    access: &str,
    login: &str,
    callback_prefix: &str,
) -> (String, String) {
    let r = srv
        .http
        .post(format!("{}/api/v1/me/providers/test", srv.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state = cookie(&set_cookies(&r), "sc_oidc_state").expect("the login's cookie");
    let v: Value = r.json().await.unwrap();
    let (url, cookies) = provider_login(
        v["url"].as_str().unwrap().to_owned(),
        login,
        callback_prefix.to_owned(),
    )
    .await;
    (url, format!("{cookies}; {state}"))
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sc-{name}-{}", uuid_like()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
