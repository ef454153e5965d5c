//! The node's HTTP(S) listener: accepts connections within [`ConnectionSlots`] (in
//! all and per client address), gives each a deadline for its request headers, does
//! the TLS handshake when HTTPS is on, and serves the router on it. On stop it takes
//! no more connections and lets open ones finish for a grace period.
//!
//! Invariants: a connection holds its slot until it ends, so a few addresses that open
//! many connections and never finish a request (slowloris) hold at most
//! `max_per_address` each and lose them after `header_timeout`; a refused connection
//! is closed at once, before any byte is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::conn_slots::ConnectionSlots;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener allows each connection.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub slots: Arc<ConnectionSlots>,
    /// A client must have sent a request's whole header within this (also while a
    /// kept-alive connection waits for its next request).
    pub header_timeout: Duration,
    /// Reverse proxies carry many clients on their connections: they count only
    /// against the total.
    pub trusted_proxies: Vec<control_api::client_addr::IpNet>,
    /// Counts refused connections by reason (`streamcore_http_connections_refused_total`).
    pub refused: Option<prometheus::IntCounterVec>,
    /// How a request body must keep coming (`control_api::body_pace`).
    pub body: control_api::body_pace::BodyLimits,
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` turns true, then lets
/// open connections finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use tower::ServiceExt as _;

    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (mut tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let proxy = control_api::client_addr::trusted(addr.ip(), &limits.trusted_proxies);
        let slot = match limits.slots.take(addr.ip(), proxy) {
            Ok(s) => s,
            Err(why) => {
                // Debug only: under a flood this would be a line per connection.
                debug!(peer = %addr, reason = why.as_str(), "HTTP connection refused");
                if let Some(c) = &limits.refused {
                    c.with_label_values(&[why.as_str()]).inc();
                }
                continue;
            }
        };
        crate::server::no_delay(&mut tcp);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        let body_limits = limits.body;
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                    let req = req.map(|b| {
                        axum::body::Body::new(control_api::body_pace::PacedBody::new(
                            b,
                            body_limits,
                        ))
                    });
                    app.clone().oneshot(req)
                },
            );
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let result = match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            // A browser that does not trust the certificate yet closes here.
                            Ok(Err(e)) => {
                                return debug!(peer = %addr, error = %e, "TLS handshake failed");
                            }
                            Err(_) => return debug!(peer = %addr, "TLS handshake timed out"),
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                debug!(peer = %addr, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP connections still open at shutdown; closing them");
    }
}
