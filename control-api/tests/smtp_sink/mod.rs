//! A real SMTP server for the mail tests: aiosmtpd, driven by
//! `scripts/interop/smtp_sink.py`, on 127.0.0.1 only. Also used by the root crate's
//! `tests/smtp.rs` (through `#[path]`).
//!
//! The Python virtualenv comes from `scripts/ensure-venv.sh` (cached; the first run
//! installs it from PyPI). The server process is killed when the [`Sink`] is dropped,
//! and exits by itself after five minutes in any case.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The repository root (the directory holding `scripts/ensure-venv.sh`).
pub fn repo_root() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("scripts/ensure-venv.sh").exists() {
            return dir.to_owned();
        }
        dir = dir
            .parent()
            .expect("scripts/ensure-venv.sh above the crate");
    }
}

/// The virtualenv's python, set up once per test binary.
pub fn venv_python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/ensure-venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/ensure-venv.sh");
        assert!(
            out.status.success(),
            "scripts/ensure-venv.sh failed: the SMTP tests need Python 3 and aiosmtpd from PyPI"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .expect("venv python path")
            .trim()
            .to_owned()
    })
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running aiosmtpd and what it has seen.
pub struct Sink {
    pub port: u16,
    /// With `--tls`: PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    _child: Child,
}

impl Sink {
    /// Starts the server on `port` with extra `args` (`--tls starttls`, `--auth u:p`,
    /// `--fail-first 2`, `--reject addr`), and waits until it accepts connections.
    pub async fn start(port: u16, args: &[&str]) -> Sink {
        let ca_file =
            std::env::temp_dir().join(format!("smtp-sink-ca-{:016x}.pem", rand::random::<u64>()));
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("scripts/interop/smtp_sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--ca-out")
            .arg(&ca_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting scripts/interop/smtp_sink.py");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let ev = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "noise", "line": line}));
                ev.lock().unwrap().push(v);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let se = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                se.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut sink = Sink {
            port,
            ca_file,
            events,
            stderr,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.count("ready") == 0 {
            if let Ok(Some(status)) = sink._child.try_wait() {
                panic!(
                    "the SMTP server exited ({status}) before it was ready:\n{}",
                    sink.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server was not ready within 60 s:\n{}",
                sink.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sink
    }

    /// Every event of one kind so far (`message`, `refused`, `rejected`).
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    pub fn count(&self, kind: &str) -> usize {
        self.events(kind).len()
    }

    /// The accepted messages so far.
    pub fn messages(&self) -> Vec<Value> {
        self.events("message")
    }

    /// Waits until `n` messages have arrived (panics after `limit`).
    pub async fn wait_messages(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived within {limit:?}; server log:\n{}",
                m.len(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self._child.start_kill();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// The reset token in a reset mail's text.
pub fn reset_token(body: &str) -> String {
    body.lines()
        .find_map(|l| l.trim().strip_prefix("Reset token: "))
        .unwrap_or_else(|| panic!("no reset token in:\n{body}"))
        .trim()
        .to_owned()
}
