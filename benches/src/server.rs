//! The server under test: a fresh `streamcore serve` process pinned to a core, with
//! its own data directory and join-token key, killed (and its directory removed) on
//! drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use media_core::RoomId;
use signaling::{Grants, JoinTokenSigner};

use crate::procfs::{self, CpuReading};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub streamcore: PathBuf,
    /// `taskset -c` value.
    pub cpu: String,
    /// The server's RUST_LOG; when set, its log is kept in target/bench-results.
    pub log: Option<String>,
    pub workers: usize,
    /// More settings, as `STREAMCORE_*` environment variables.
    pub env: Vec<(String, String)>,
    /// A data directory shared with other servers (a cluster: one database file, one
    /// set of keys), kept on drop; `None`: a fresh one of its own, removed on drop.
    pub dir: Option<PathBuf>,
}

/// A server process a bench started: what `/proc` says of it; killed on drop.
pub struct Process {
    child: Child,
    pub pid: String,
}

impl Process {
    pub fn new(child: Child) -> Process {
        let pid = child.id().to_string();
        Process { child, pid }
    }

    pub fn cpu(&self) -> CpuReading {
        procfs::cpu(&self.pid).unwrap_or_default()
    }

    pub fn rss_kb(&self) -> u64 {
        procfs::rss_kb(&self.pid).unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Server {
    keep_log: bool,
    /// The data directory is this server's own (removed on drop).
    owned: bool,
    log: PathBuf,
    pub process: Process,
    pub base: String,
    dir: PathBuf,
    pub signer: JoinTokenSigner,
    pub http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
        if self.keep_log {
            let dest = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bench-results")
                .join(format!("server-{}.log", self.process.pid));
            let _ = std::fs::create_dir_all(dest.parent().unwrap_or(Path::new(".")));
            let _ = std::fs::copy(&self.log, &dest);
        }
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn free_tcp_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    pub async fn start(args: &ServerSpec) -> anyhow::Result<Server> {
        let owned = args.dir.is_none();
        let dir = args.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "sc-bench-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ))
        });
        std::fs::create_dir_all(&dir)?;
        let signer = JoinTokenSigner::load_or_create(&dir.join("keys/join-token-ed25519.pem"))?;
        let port = free_tcp_port()?;
        let log_path = dir.join(format!("server-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        // The server runs in its data directory: a relative path given by the user
        // names a file relative to where they ran the bench.
        let exe = std::path::absolute(&args.streamcore)?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(&args.cpu)
            .arg(&exe)
            .args(["serve", "--data-dir"])
            .arg(&dir)
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--media-port", "0", "--workers", &args.workers.to_string()])
            .current_dir(&dir)
            .env("RUST_LOG", args.log.as_deref().unwrap_or("warn"))
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting streamcore serve")?;
        // taskset execs the server: the child's pid is the server's.
        let process = Process::new(child);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4)
            // The server closes a keep-alive connection that sends no request within
            // its header timeout (15 s); reusing one it is closing fails the request.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()?;
        let mut s = Server {
            keep_log: args.log.is_some(),
            owned,
            log: log_path,
            process,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            signer,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = s.http.get(format!("{}/healthz", s.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(st) = s.process.exited()? {
                bail!("streamcore exited at start ({st}): {}", s.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "streamcore did not answer /healthz in 15 s: {}",
                    s.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The server binary must be the one we pinned.
        let cpus = procfs::cpus_allowed(&s.process.pid).unwrap_or_default();
        if cpus != args.cpu {
            eprintln!(
                "warning: server allowed on CPUs {cpus}, wanted {}",
                args.cpu
            );
        }
        Ok(s)
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Counter values by metric name, summed over labels.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let mut m = HashMap::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = l.rsplit_once(' ') else {
                continue;
            };
            let name = name.split('{').next().unwrap_or(name);
            if let Ok(v) = value.parse::<f64>() {
                *m.entry(name.to_owned()).or_insert(0.0) += v;
            }
        }
        Ok(m)
    }

    pub fn cpu(&self) -> CpuReading {
        self.process.cpu()
    }

    pub fn rss_kb(&self) -> u64 {
        self.process.rss_kb()
    }

    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    pub fn token(&self, room: &str, identity: &str, grants: Grants) -> anyhow::Result<String> {
        Ok(self.signer.sign(
            &RoomId::parse(room)?,
            identity,
            grants,
            Duration::from_secs(3600),
        )?)
    }
}
