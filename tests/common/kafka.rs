//! A real Kafka-protocol broker for tests: tansu, built and cached by
//! `scripts/ensure-tansu.sh`, one process per test on a free loopback port, in-memory
//! storage. Clients reach it through a TCP relay in the test, which it advertises, so
//! an outage can be made without losing the broker's state: `cut` drops every
//! connection and refuses new ones (accepts and closes them), `heal` lets them in
//! again.
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
    cache.join("tansu-0.6.0/bin/tansu")
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
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "tansu not found at {}; run scripts/ensure-tansu.sh (scripts/test does)",
            bin.display()
        );
        let broker_port = free_port();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{broker_port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {broker_port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let relay = tokio::spawn(relay(
            tokio::net::TcpListener::from_std(listener).unwrap(),
            broker_port,
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
        }
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
        let output = tokio::process::Command::new(py)
            .args([script, "--brokers", &self.brokers(), "--topic", topic])
            .args(["--count", &count.to_string(), "--timeout", "30"])
            .output()
            .await
            .unwrap();
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

async fn relay(
    listener: tokio::net::TcpListener,
    broker_port: u16,
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
        let link = tokio::spawn(async move {
            if let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
            {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
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
    }
}
