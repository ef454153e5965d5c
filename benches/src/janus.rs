//! The peer server: Janus 1.1.2 (Debian's `janus` package) with its VideoRoom plugin,
//! started fresh for a run, pinned to a core, and driven over its HTTP API, so that
//! the load generator can publish to it and subscribe from it as it does with
//! `streamcore serve` (one publisher's SRTP in, N subscribers' SRTP out, one room).
//!
//! Janus gathers ICE candidates only on non-loopback interfaces, so it is given a
//! private address of its own on a veth interface of this host (`JANUS_IF`, made on
//! first use; it needs root). Traffic to a local address never leaves the host: the
//! kernel routes it through `lo`, the same path StreamCore's loopback traffic takes.
//!
//! Janus runs with one static event loop (`event_loops = 1`): every handle's media
//! is sent from one thread, as StreamCore's one media worker does, and the whole
//! process is pinned to the server core.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::server::{Process, free_tcp_port};

/// The veth interface that carries Janus's address, and the address.
pub const JANUS_IF: &str = "scjanus0";
pub const JANUS_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const ROOM: u64 = 1;
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// How to start Janus.
#[derive(Debug, Clone)]
pub struct JanusSpec {
    pub janus: PathBuf,
    /// `taskset -c` value.
    pub cpu: String,
}

/// Events Janus sent, by the handle they are for.
#[derive(Default)]
struct Inbox {
    by_handle: RefCell<HashMap<u64, VecDeque<Value>>>,
    arrived: Notify,
    error: RefCell<Option<String>>,
}

pub struct JanusServer {
    pub process: Process,
    pub base: String,
    dir: PathBuf,
    session: u64,
    http: reqwest::Client,
    inbox: Rc<Inbox>,
    poller: tokio::task::JoinHandle<()>,
    /// The publisher's feed id, once one has joined.
    feed: RefCell<Option<u64>>,
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        self.poller.abort();
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gives this host `JANUS_IP` on a veth pair (idempotent; needs root).
pub fn ensure_interface() -> anyhow::Result<()> {
    let has = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout).contains(&format!("{JANUS_IP}/"))
    };
    let show = Command::new("ip")
        .args(["-4", "addr", "show", "dev", JANUS_IF])
        .output()
        .context("running ip (iproute2)")?;
    if show.status.success() && has(&show) {
        return Ok(());
    }
    let steps: [&[&str]; 4] = [
        &[
            "link", "add", JANUS_IF, "type", "veth", "peer", "name", "scjanus1",
        ],
        &["addr", "add", &format!("{JANUS_IP}/32"), "dev", JANUS_IF],
        &["link", "set", JANUS_IF, "up"],
        &["link", "set", "scjanus1", "up"],
    ];
    for args in steps {
        let out = Command::new("ip").args(args).output()?;
        if !out.status.success() {
            bail!(
                "ip {}: {} (Janus needs a non-loopback address; this needs root)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    eprintln!("made {JANUS_IF} with {JANUS_IP} for Janus (a local address, routed through lo)");
    Ok(())
}

fn write_config(dir: &Path, http_port: u16) -> anyhow::Result<()> {
    let disabled_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let disabled_transports = ["mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    let d = dir.display();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
  configs_folder = "{d}"
  plugins_folder = "{LIB}/plugins"
  transports_folder = "{LIB}/transports"
  events_folder = "{LIB}/events"
  loggers_folder = "{LIB}/loggers"
  debug_level = 3
  session_timeout = 120
  event_loops = 1
}}
certificates: {{ }}
media: {{ rtp_port_range = "40000-60000" }}
nat: {{ nice_debug = false ice_enforce_list = "{JANUS_IP}" ignore_mdns = true }}
plugins: {{ disable = "{disabled_plugins}" }}
transports: {{ disable = "{disabled_transports}" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
"#
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{ json = \"compact\" base_path = \"/janus\" http = true port = {http_port} ip = \"127.0.0.1\" https = false }}\nadmin: {{ admin_http = false }}\n"
        ),
    )?;
    // One room with no bitrate cap and no periodic keyframe requests: the same
    // forwarding job StreamCore's bench room does.
    std::fs::write(
        dir.join("janus.plugin.videoroom.jcfg"),
        format!(
            "general: {{ }}\nroom-{ROOM}: {{ description = \"bench\" publishers = 1 bitrate = 0 fir_freq = 0 audiocodec = \"opus\" videocodec = \"vp8\" }}\n"
        ),
    )?;
    Ok(())
}

impl JanusServer {
    pub async fn start(spec: &JanusSpec) -> anyhow::Result<JanusServer> {
        ensure_interface()?;
        let dir = std::env::temp_dir().join(format!(
            "sc-janus-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let port = free_tcp_port()?;
        write_config(&dir, port)?;
        let log = std::fs::File::create(dir.join("janus.log"))?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(&spec.cpu)
            .arg(&spec.janus)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .arg("-o") // no colours in the log
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", spec.janus.display()))?;
        let mut process = Process::new(child);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()?;
        let base = format!("http://127.0.0.1:{port}/janus");
        let deadline = Instant::now() + Duration::from_secs(15);
        let session = loop {
            let r = http
                .post(&base)
                .json(&json!({"janus": "create", "transaction": "create"}))
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<Value>().await
                && let Some(id) = v["data"]["id"].as_u64()
            {
                break id;
            }
            if let Some(st) = process.exited()? {
                bail!("janus exited at start ({st}): {}", tail(&dir));
            }
            if Instant::now() > deadline {
                bail!("janus did not answer in 15 s: {}", tail(&dir));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let inbox = Rc::new(Inbox::default());
        let poller = tokio::task::spawn_local(poll_events(
            http.clone(),
            format!("{base}/{session}?maxev=50"),
            inbox.clone(),
        ));
        Ok(JanusServer {
            process,
            base,
            dir,
            session,
            http,
            inbox,
            poller,
            feed: RefCell::new(None),
        })
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir)
    }

    /// Sends one request; returns Janus's synchronous reply (`success` or `ack`).
    async fn request(&self, path: &str, mut body: Value) -> anyhow::Result<Value> {
        body["transaction"] = json!(format!("{:016x}", rand::random::<u64>()));
        let v: Value = self
            .http
            .post(format!("{}/{}{path}", self.base, self.session))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        match v["janus"].as_str() {
            Some("success") | Some("ack") => Ok(v),
            _ => bail!("janus refused {body}: {v}"),
        }
    }

    /// A plugin request on `handle`, with a JSEP when it carries SDP; Janus acks it
    /// and answers with an event.
    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> anyhow::Result<()> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            m["jsep"] = jsep;
        }
        self.request(&format!("/{handle}"), m).await.map(drop)
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let v = self
            .request(
                "",
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        v["data"]["id"].as_u64().context("attach: no handle id")
    }

    /// Waits for an event of `handle` that carries a JSEP, skipping others.
    async fn jsep_event(&self, handle: u64) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.inbox.arrived.notified();
            if let Some(e) = self.inbox.error.borrow().as_ref() {
                bail!("janus event poll failed: {e}");
            }
            let found = {
                let mut by = self.inbox.by_handle.borrow_mut();
                let q = by.entry(handle).or_default();
                let mut found = None;
                while let Some(ev) = q.pop_front() {
                    if let Some(err) = ev["plugindata"]["data"].get("error") {
                        bail!("janus videoroom error: {err}");
                    }
                    if ev.get("jsep").is_some() {
                        found = Some(ev);
                        break;
                    }
                }
                found
            };
            if let Some(ev) = found {
                return Ok(ev);
            }
            let now = Instant::now();
            if now > deadline {
                bail!("janus sent no SDP for handle {handle} in 20 s");
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    /// Joins the room as its publisher with `offer`; returns Janus's answer.
    pub async fn publish(&self, offer: &str) -> anyhow::Result<String> {
        let handle = self.attach().await?;
        self.message(
            handle,
            json!({"request": "joinandconfigure", "room": ROOM, "ptype": "publisher",
                   "display": "publisher", "audio": true, "video": true}),
            Some(json!({"type": "offer", "sdp": offer})),
        )
        .await?;
        let ev = self.jsep_event(handle).await?;
        let feed = ev["plugindata"]["data"]["id"]
            .as_u64()
            .context("the publisher's join has no feed id")?;
        *self.feed.borrow_mut() = Some(feed);
        ev["jsep"]["sdp"]
            .as_str()
            .map(str::to_owned)
            .context("janus answer without SDP")
    }

    /// Joins as a subscriber of the publisher's feed: `answer` turns Janus's offer
    /// into ours, which starts the subscription.
    pub async fn subscribe(
        &self,
        answer: impl FnOnce(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let feed = self.feed.borrow().context("no publisher has joined")?;
        let handle = self.attach().await?;
        self.message(
            handle,
            json!({"request": "join", "room": ROOM, "ptype": "subscriber",
                   "streams": [{"feed": feed}]}),
            None,
        )
        .await?;
        let ev = self.jsep_event(handle).await?;
        let offer = ev["jsep"]["sdp"]
            .as_str()
            .context("janus offer without SDP")?
            .to_owned();
        let sdp = answer(&offer)?;
        self.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": sdp})),
        )
        .await?;
        Ok(offer)
    }
}

/// Long-polls the session's events into the inbox until aborted.
async fn poll_events(http: reqwest::Client, url: String, inbox: Rc<Inbox>) {
    let mut failures = 0;
    loop {
        let r = async { http.get(&url).send().await?.json::<Value>().await }.await;
        match r {
            Ok(v) => {
                failures = 0;
                let events = match v {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                let mut by = inbox.by_handle.borrow_mut();
                for e in events {
                    if let Some(h) = e["sender"].as_u64() {
                        by.entry(h).or_default().push_back(e);
                    }
                }
                drop(by);
                inbox.arrived.notify_waiters();
            }
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    *inbox.error.borrow_mut() = Some(e.to_string());
                    inbox.arrived.notify_waiters();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn tail(dir: &Path) -> String {
    let s = std::fs::read_to_string(dir.join("janus.log")).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The address peers bind to when they talk to Janus.
pub fn peer_ip() -> IpAddr {
    IpAddr::V4(JANUS_IP)
}
