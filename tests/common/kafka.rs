//! A real Kafka-protocol broker for tests: tansu, built and cached by
//! `scripts/ensure-tansu.sh`, one process per test on a free loopback port, in-memory
//! storage. Clients reach it through a TCP relay in the test, which it advertises, so
//! an outage can be made without losing the broker's state: `cut` drops every
//! connection and refuses new ones (accepts and closes them), `heal` lets them in
//! again.
//!
//! [`Tansu::start_secured`] is a broker that wants a SASL/SCRAM login, reached over TLS:
//! tansu 0.6 authenticates but does not terminate TLS itself, so the relay does (with a
//! CA of the test's own), and SCRAM users live only in its SQLite storage.
//!
//! Must be created inside a tokio runtime (the relay is a task).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Child,
    pub broker_port: u16,
    pub port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    relay: tokio::task::JoinHandle<()>,
    /// A secured broker's working directory: its database, the CA clients trust.
    dir: Option<PathBuf>,
    /// A secured broker's user and password.
    login: Option<(String, String)>,
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STREAMCORE_TANSU") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("STREAMCORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/streamcore")
        });
    cache.join("tansu-0.6.0-dynostore-libsql/bin/tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tansu {
    /// Starts a broker; panics (the test fails, it does not skip) when tansu is missing.
    pub fn start() -> Tansu {
        let broker_port = free_port();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = broker(
            &std::env::temp_dir(),
            broker_port,
            port,
            "memory://tansu/",
            false,
        );
        Tansu::relaying(child, broker_port, listener, None, None)
    }

    /// Starts a broker that lets in only `username` with `password` (SCRAM-SHA-256: tansu
    /// 0.6 offers no other mechanism), reached over TLS; see [`Tansu::ca_file`].
    pub fn start_secured(username: &str, password: &str) -> Tansu {
        let dir = std::env::temp_dir().join(format!("sc-tansu-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let broker_port = free_port();
        // SCRAM users can only be made while authentication is off: once, then restart.
        let mut setup = broker(&dir, broker_port, broker_port, "sqlite://tansu.db", false);
        let status = Command::new(tansu_bin())
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{broker_port}"))
            .args(["--mechanism", "scram256", username, password])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .status()
            .expect("tansu user create runs");
        assert!(status.success(), "tansu user create: {status}");
        let _ = setup.kill();
        let _ = setup.wait();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = broker(&dir, broker_port, port, "sqlite://tansu.db", true);
        let acceptor = tls_acceptor(&dir);
        let mut t = Tansu::relaying(child, broker_port, listener, Some(acceptor), Some(dir));
        t.login = Some((username.to_owned(), password.to_owned()));
        t
    }

    fn relaying(
        child: Child,
        broker_port: u16,
        listener: std::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        dir: Option<PathBuf>,
    ) -> Tansu {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let relay = tokio::spawn(relay(
            tokio::net::TcpListener::from_std(listener).unwrap(),
            broker_port,
            tls,
            up.clone(),
            links.clone(),
        ));
        Tansu {
            child,
            broker_port,
            port,
            up,
            links,
            relay,
            dir,
            login: None,
        }
    }

    /// The PEM CA a secured broker's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.as_ref().expect("a secured broker").join("ca.pem")
    }

    /// Reads `count` records of `topic` with confluent-kafka, a client no one here
    /// wrote (`scripts/interop/kafka_consume.py`, a fresh group from the earliest
    /// offset): one JSON line per record, `{key, partition, offset, value}`.
    pub async fn outside_consume(
        &self,
        py: &str,
        topic: &str,
        count: usize,
    ) -> Vec<serde_json::Value> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/interop/kafka_consume.py"
        );
        let mut cmd = tokio::process::Command::new(py);
        cmd.args([script, "--brokers", &self.brokers(), "--topic", topic])
            .args(["--count", &count.to_string(), "--timeout", "30"]);
        if let Some((user, password)) = &self.login {
            cmd.arg("--ca-file")
                .arg(self.ca_file())
                .args(["--sasl-mechanism", "SCRAM-SHA-256"])
                .args(["--username", user, "--password", password]);
        }
        let output = cmd.output().await.unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// What clients connect to (the relay).
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker becomes unreachable: live connections drop, new ones are closed.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    pub fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Starts tansu in `dir` (it reads a `.env` there, and a `sqlite://` path is relative
/// to it) and waits until it listens.
fn broker(dir: &std::path::Path, port: u16, advertised: u16, storage: &str, auth: bool) -> Child {
    let bin = tansu_bin();
    assert!(
        bin.exists(),
        "tansu not found at {}; run scripts/ensure-tansu.sh (scripts/test does)",
        bin.display()
    );
    let mut cmd = Command::new(&bin);
    cmd.arg("broker");
    if auth {
        cmd.arg("--authentication");
    }
    let mut child = cmd
        .args([
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine",
            storage,
        ])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tansu exited before listening on {port}: {status}");
        }
        assert!(Instant::now() < deadline, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// TLS for 127.0.0.1 under a CA of the test's own, written to `dir/ca.pem`.
fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    // Names of their own: a leaf whose subject is its issuer's reads as self-signed.
    ca.distinguished_name
        .push(DnType::CommonName, "StreamCore test Kafka CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "StreamCore test Kafka broker");
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone(), ca_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn relay(
    listener: tokio::net::TcpListener,
    broker_port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        if !up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let tls = tls.clone();
        let link = tokio::spawn(async move {
            let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
            else {
                return;
            };
            match tls {
                // A client that does not speak TLS fails the handshake: dropped.
                Some(acceptor) => {
                    if let Ok(mut client) = acceptor.accept(client).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                }
                None => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            }
        });
        let mut l = links.lock().unwrap();
        l.retain(|h| !h.is_finished());
        l.push(link);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.relay.abort();
        self.cut();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
