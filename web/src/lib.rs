//! # web: the pages and the JavaScript client, inside the binary
//!
//! `assets/` is embedded at compile time (`build.rs`): `pages/*.html` are what people
//! open (`/`, `/phone`, `/listen`, `/room`, `/recordings`, `/uploads`, `/history`,
//! `/podcasts`, `/servers`, `/reset-password`, `/verify-email`, `/sign-up`,
//! `/link-account`), `static/` holds their scripts and styles, and
//! `sdk/streamcore.js` is the client library every page is built on (docs/client.md).
//! There is no build step and nothing is fetched from elsewhere: the bytes in the
//! repository are the bytes a browser gets.
//!
//! Invariants:
//! - Every page is sent with a Content-Security-Policy that allows no inline script or
//!   style and nothing from another origin — but connections (WHIP/WHEP, `/rtc`) to
//!   the other media nodes of its cluster ([`ClusterOrigins`]) — with
//!   `X-Content-Type-Options: nosniff`, a `Referrer-Policy`, and no framing.
//! - Every asset carries its content hash as `ETag` and `Cache-Control: no-cache`: a
//!   new binary's assets are used at once, unchanged ones cost a `304`.
//! - The client library may be imported by a page of any origin
//!   (`Access-Control-Allow-Origin: *`); it carries no secret.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `assets/`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted hash of the bytes.
    pub etag: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The pages: route → file under `assets/`.
pub const PAGES: [(&str, &str); 13] = [
    ("/", "pages/index.html"),
    ("/phone", "pages/phone.html"),
    ("/listen", "pages/listen.html"),
    ("/room", "pages/room.html"),
    ("/recordings", "pages/recordings.html"),
    ("/uploads", "pages/uploads.html"),
    ("/history", "pages/history.html"),
    ("/podcasts", "pages/podcasts.html"),
    ("/servers", "pages/servers.html"),
    ("/reset-password", "pages/reset-password.html"),
    ("/verify-email", "pages/verify-email.html"),
    ("/sign-up", "pages/sign-up.html"),
    ("/link-account", "pages/link-account.html"),
];

/// The pages' policy: scripts, styles, fonts and connections only from this origin
/// (WebSockets included), pictures and media also from `blob:`/`data:` URLs the
/// pages make themselves (QR codes, recorded audio).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The media nodes of the cluster a page may connect to besides its own origin: a
/// room may live on another node, whose WHIP/WHEP and `/rtc` the page then uses
/// directly. Set from the node registry as nodes come and go, beside origins the
/// operator names for nodes yet to come (`https://*.media.example`).
#[derive(Debug, Clone, Default)]
pub struct ClusterOrigins {
    policy: Arc<RwLock<Option<HeaderValue>>>,
    fixed: Arc<Vec<String>>,
    /// Where pictures and media may also come from: the object store, when public
    /// files redirect to it (S3's presigned URLs).
    media: Arc<Vec<String>>,
}

/// `scheme://host[:port]` as CSP sources for HTTP(S) and its WebSocket, or `None`
/// when it is not a plain origin (a host may start with `*.`, a wildcard).
pub fn connect_sources(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    let (scheme, host) = url.split_once("://")?;
    let name = host.strip_prefix("*.").unwrap_or(host);
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    let ws = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    plain.then(|| format!("{scheme}://{host} {ws}://{host}"))
}

impl ClusterOrigins {
    /// With `fixed` origins allowed whatever the registry says.
    pub fn with_fixed(fixed: &[String]) -> ClusterOrigins {
        let o = ClusterOrigins {
            policy: Arc::default(),
            fixed: Arc::new(fixed.to_vec()),
            media: Arc::default(),
        };
        o.set([]);
        o
    }

    /// The same, with `origins` (`scheme://host[:port]`) allowed for `<img>` and
    /// `<audio>`/`<video>`: the object store a podcast's artwork and live episodes
    /// redirect to. One that is not a plain origin is left out.
    pub fn with_media(mut self, origins: &[String]) -> ClusterOrigins {
        self.media = Arc::new(
            origins
                .iter()
                .filter(|o| connect_sources(o).is_some())
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        );
        self.set([]);
        self
    }

    /// Replaces the nodes' base URLs (`https://host:port`); each is allowed over HTTP(S)
    /// and as a WebSocket. A URL that is not a plain origin is left out.
    pub fn set<'a>(&self, base_urls: impl IntoIterator<Item = &'a str>) {
        let mut sources: Vec<String> = self
            .fixed
            .iter()
            .filter_map(|o| connect_sources(o))
            .collect();
        sources.extend(base_urls.into_iter().filter_map(connect_sources));
        let mut text = CONTENT_SECURITY_POLICY.to_owned();
        if !sources.is_empty() {
            let extra = format!("connect-src 'self' {}", sources.join(" "));
            text = text.replace("connect-src 'self'", &extra);
        }
        if !self.media.is_empty() {
            let media = self.media.join(" ");
            text = text
                .replace(
                    "img-src 'self' data: blob:",
                    &format!("img-src 'self' data: blob: {media}"),
                )
                .replace(
                    "media-src 'self' blob:",
                    &format!("media-src 'self' blob: {media}"),
                );
        }
        let policy = (text != CONTENT_SECURITY_POLICY)
            .then(|| HeaderValue::from_str(&text).ok())
            .flatten();
        if let Ok(mut p) = self.policy.write() {
            *p = policy;
        }
    }

    /// The pages' policy with these nodes in `connect-src`.
    pub fn policy(&self) -> HeaderValue {
        self.policy
            .read()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY))
    }
}

/// The embedded file at `path` (under `assets/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The routes of the pages, their files and the client library.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    router_in_cluster(ClusterOrigins::default())
}

/// [`router`] for a node of a cluster: its pages may connect to the other nodes.
pub fn router_in_cluster<S: Clone + Send + Sync + 'static>(nodes: ClusterOrigins) -> Router<S> {
    let mut r = Router::new();
    for (route, file) in PAGES {
        let nodes = nodes.clone();
        r = r.route(
            route,
            get(move |headers: HeaderMap| async move {
                let mut resp = serve(file, &headers, Kind::Page);
                resp.headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, nodes.policy());
                resp
            }),
        );
    }
    r.route(
        "/static/{*path}",
        get(
            |axum::extract::Path(p): axum::extract::Path<String>, headers: HeaderMap| async move {
                serve(&format!("static/{p}"), &headers, Kind::Static)
            },
        ),
    )
    .route(
        "/sdk/{*path}",
        get(
            |axum::extract::Path(p): axum::extract::Path<String>, headers: HeaderMap| async move {
                serve(&format!("sdk/{p}"), &headers, Kind::Sdk)
            },
        ),
    )
    .route(
        "/favicon.ico",
        get(
            |headers: HeaderMap| async move { serve("static/favicon.svg", &headers, Kind::Static) },
        ),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Page,
    Static,
    Sdk,
}

fn serve(path: &str, request: &HeaderMap, kind: Kind) -> Response {
    let Some(a) = asset(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"code":"not_found","message":"no such file"}}"#,
        )
            .into_response();
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.bytes.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    match kind {
        Kind::Page => {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                "permissions-policy",
                HeaderValue::from_static(
                    "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
                ),
            );
            h.insert(
                "cross-origin-opener-policy",
                HeaderValue::from_static("same-origin"),
            );
        }
        Kind::Sdk => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        Kind::Static => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn the_object_stores_origin_may_serve_pictures_and_media() {
        let o = ClusterOrigins::with_fixed(&[])
            .with_media(&["http://127.0.0.1:9000/".into(), "not a url".into()]);
        let p = o.policy();
        let p = p.to_str().unwrap();
        assert!(
            p.contains("img-src 'self' data: blob: http://127.0.0.1:9000;"),
            "{p}"
        );
        assert!(
            p.contains("media-src 'self' blob: http://127.0.0.1:9000;"),
            "{p}"
        );
        assert!(p.contains("connect-src 'self';"), "{p}");
        o.set(["https://node-2.example:8443"]);
        let p = o.policy();
        let p = p.to_str().unwrap();
        assert!(
            p.contains("connect-src 'self' https://node-2.example:8443 wss://node-2.example:8443;"),
            "{p}"
        );
        assert!(
            p.contains("media-src 'self' blob: http://127.0.0.1:9000;"),
            "{p}"
        );
        assert_eq!(
            ClusterOrigins::with_fixed(&[]).with_media(&[]).policy(),
            CONTENT_SECURITY_POLICY
        );
    }

    #[test]
    fn every_page_and_the_sdk_are_embedded() {
        for (_, file) in PAGES {
            assert!(asset(file).is_some(), "{file} is missing");
        }
        assert!(asset("sdk/streamcore.js").is_some());
        assert!(asset("static/favicon.svg").is_some());
    }

    #[test]
    fn pages_load_only_files_that_are_embedded() {
        // A page that names a script or stylesheet the binary lacks renders broken.
        for (_, file) in PAGES {
            let html = std::str::from_utf8(asset(file).unwrap().bytes).unwrap();
            for attr in ["src=\"", "href=\""] {
                for part in html.split(attr).skip(1) {
                    let url = part.split('"').next().unwrap();
                    if let Some(p) = url
                        .strip_prefix('/')
                        .filter(|p| p.starts_with("static/") || p.starts_with("sdk/"))
                    {
                        assert!(
                            asset(p).is_some(),
                            "{file} loads {url}, which is not embedded"
                        );
                    }
                }
            }
            assert!(
                !html.contains("<script>")
                    && !html.contains(" style=\"")
                    && !html.contains("<style"),
                "{file} has inline script or style, which the policy refuses"
            );
        }
    }

    #[test]
    fn pages_take_input_only_once_their_script_is_ready() {
        // `<main>` starts inert; the page's script lifts it (app.js `pageReady`) once
        // its controls are wired, so an early click or submit is not lost.
        for (_, file) in PAGES {
            let html = std::str::from_utf8(asset(file).unwrap().bytes).unwrap();
            let main = html.split("<main").nth(1).and_then(|m| m.split('>').next());
            assert!(
                main.is_some_and(|m| m.contains(" inert") && m.contains("aria-busy=\"true\"")),
                "{file}'s <main> does not start inert and busy"
            );
            let script = html
                .split("<script type=\"module\" src=\"/")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_else(|| panic!("{file} has no module script"));
            let js = std::str::from_utf8(asset(script).unwrap().bytes).unwrap();
            // Imported and used.
            assert!(
                js.matches("pageReady").count() >= 2,
                "{script} never calls pageReady"
            );
        }
    }

    #[tokio::test]
    async fn pages_of_a_cluster_node_may_connect_to_the_other_nodes() {
        let nodes = ClusterOrigins::default();
        let app: Router = router_in_cluster(nodes.clone());
        let csp = |r: Response| r.headers()[header::CONTENT_SECURITY_POLICY].clone();
        let page = || {
            app.clone()
                .oneshot(Request::get("/room").body(Body::empty()).unwrap())
        };
        assert_eq!(csp(page().await.unwrap()), CONTENT_SECURITY_POLICY);
        nodes.set([
            "https://b.example:8443/",
            "http://127.0.0.1:4001",
            "http://evil; script-src *",
            "ftp://c.example",
        ]);
        let with = csp(page().await.unwrap());
        let with = with.to_str().unwrap();
        assert!(
            with.contains(
                "connect-src 'self' https://b.example:8443 wss://b.example:8443 http://127.0.0.1:4001 ws://127.0.0.1:4001;"
            ),
            "{with}"
        );
        assert!(!with.contains("evil") && !with.contains("ftp"), "{with}");
        assert_eq!(
            with.replace(
                " https://b.example:8443 wss://b.example:8443 http://127.0.0.1:4001 ws://127.0.0.1:4001",
                ""
            ),
            CONTENT_SECURITY_POLICY,
            "nothing else changes"
        );
        nodes.set([]);
        assert_eq!(csp(page().await.unwrap()), CONTENT_SECURITY_POLICY);
        // Origins the operator names stay, for nodes that join later.
        let fixed = ClusterOrigins::with_fixed(&["https://*.media.example".into()]);
        fixed.set(["http://127.0.0.1:4001"]);
        let with = fixed.policy();
        assert!(
            with.to_str().unwrap().contains(
                "connect-src 'self' https://*.media.example wss://*.media.example http://127.0.0.1:4001 ws://127.0.0.1:4001;"
            ),
            "{with:?}"
        );
        assert_eq!(connect_sources("https://*.*.example"), None);
        assert_eq!(connect_sources("https://a b"), None);
    }

    #[tokio::test]
    async fn pages_carry_the_security_headers() {
        for (route, _) in PAGES {
            let r = get(route, &[]).await;
            assert_eq!(r.status(), StatusCode::OK, "{route}");
            let h = r.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert!(
                h[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
        }
    }

    #[tokio::test]
    async fn the_sdk_is_importable_from_any_origin_and_revalidated_by_etag() {
        let r = get("/sdk/streamcore.js", &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/sdk/streamcore.js", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            get("/static/nope.js", &[]).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
