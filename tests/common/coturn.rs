//! Debian's coturn as the external TURN server, on loopback ports of its own, checking
//! the node's REST-style credentials with a shared secret.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Coturn {
    child: Child,
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub secret: String,
    dir: std::path::PathBuf,
}

impl Coturn {
    /// Starts `turnserver` (Debian's coturn, installed when missing) and waits until it
    /// listens.
    pub fn start() -> Coturn {
        Self::start_on([127, 0, 0, 1].into())
    }

    /// Listens and relays on `ip` (a test link's address, say).
    pub fn start_on(ip: std::net::IpAddr) -> Coturn {
        let bin = crate::common::ensure_debian_command("turnserver", "coturn");
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let relay_min = 50_000 + (rand::random::<u16>() % 100) * 100;
        let secret = format!("secret-{}", rand::random::<u64>());
        let dir = std::env::temp_dir().join(format!("sc-coturn-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(bin)
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint"])
            .args([
                "--listening-ip",
                &ip.to_string(),
                "--relay-ip",
                &ip.to_string(),
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_min}"))
            .arg(format!("--max-port={}", relay_min + 99))
            .args(["--use-auth-secret", "--realm", "streamcore.test"])
            .arg(format!("--static-auth-secret={secret}"))
            // The node is on loopback here; in production it is not, and coturn's
            // default (no loopback peers) stays.
            .arg("--allow-loopback-peers")
            // Not an open relay: peers are the node's media address only (README).
            .arg("--denied-peer-ip=0.0.0.0-255.255.255.255")
            .arg(format!("--allowed-peer-ip={ip}"))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .args(["--log-file", "stdout", "--simple-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting turnserver");
        let c = Coturn {
            child,
            ip,
            port,
            secret,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "turnserver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The URLs the node hands out for it.
    pub fn urls(&self) -> Vec<String> {
        vec![
            format!("turn:{}:{}?transport=udp", self.ip, self.port),
            format!("turn:{}:{}?transport=tcp", self.ip, self.port),
        ]
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
