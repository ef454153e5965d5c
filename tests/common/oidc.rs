//! The OpenID Connect provider of the sign-in tests (tests/web.rs, tests/browser.rs):
//! npm's `oidc-provider` run by `scripts/oidc/provider.mjs` (installed by
//! `scripts/ensure-oidc-provider.sh`; `scripts/test` sets `STREAMCORE_OIDC_PROVIDER`),
//! on a loopback port, with the client `streamcore`/`s3cret` whose redirect URI is
//! `http://127.0.0.1/auth/oidc/callback` on any port. Its development login form takes
//! any login name (`unverified…` gets an unverified email) and any password.

use serde_json::json;

/// A running provider (killed when dropped), signing with the keys in the file it was
/// started with (made there when the file does not exist).
pub struct Provider {
    child: std::process::Child,
    pub issuer: String,
}

impl Provider {
    /// Starts it on `port` (0: any free one) and waits for `READY <issuer>`. Blocks:
    /// from async code, call it in `spawn_blocking`.
    pub fn start(port: u16, keys: &std::path::Path) -> Provider {
        use std::io::BufRead;
        let exe = std::env::var("STREAMCORE_OIDC_PROVIDER").unwrap_or_else(|_| {
            let out = std::process::Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/ensure-oidc-provider.sh"
                ))
                .output()
                .expect("scripts/ensure-oidc-provider.sh");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .trim()
                .to_owned()
        });
        let mut child = std::process::Command::new(exe)
            .args([
                "--port",
                &port.to_string(),
                "--client-id",
                "streamcore",
                "--client-secret",
                "s3cret",
            ])
            .args([
                "--redirect-uri",
                "http://127.0.0.1/auth/oidc/callback",
                "--any-loopback-port",
            ])
            .arg("--keys")
            .arg(keys)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the OIDC provider");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("the provider said {line:?}"))
            .to_owned();
        Provider { child, issuer }
    }

    pub fn port(&self) -> u16 {
        self.issuer.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// What its token endpoint returns from now on: `normal`, `tamper`,
    /// `wrong_audience`, `expired` or `wrong_nonce` ID tokens.
    pub async fn mode(&self, mode: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/__test/mode", self.issuer))
            .json(&json!({ "mode": mode }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "mode {mode}: {}", r.status());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
