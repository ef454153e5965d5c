//! sc-apibench: control-API load benchmark against PostgreSQL, over loopback HTTP.
//!
//! ```text
//!   core 1: sc-apibench (this process,            core 0: streamcore api (pinned)
//!           one current-thread tokio runtime)     PostgreSQL backends: not pinned
//!   ─────────────────────────────────────         ───────────────────────────────────
//!   reqwest clients on 127.0.0.x ── HTTP/1.1 ───► 127.0.0.1:<port> ── sqlx pool (10) ──► PG
//!   /proc/<server>/stat, /proc/<pg backend>/stat around every measured window
//! ```
//!
//! It creates a fresh database `sc_bench_<random>` on the PostgreSQL server (trust
//! auth, loopback only; spoken to with a minimal wire-protocol client, no extra crates),
//! starts the real `streamcore api` binary on 127.0.0.1:0 and reads its address from
//! the JSON log line "control API listening", then measures, each repeated
//! `--repeats` times with a bounded number of requests at a fixed concurrency:
//!
//! - login (Argon2id, for contrast) and pairing (start + claim, the real phone flow);
//! - `POST /auth/refresh`: one rotating refresh-token chain per virtual client;
//! - `POST /devices/{id}/heartbeat` with the paired phones' device credentials;
//! - `POST /library/sync` of `--tracks` tracks in one request: first (all new), second
//!   (identical: the idempotent path), third (10 % changed); then list and search;
//! - `--devices` devices registered with `POST /devices`, then all of them heartbeat
//!   at once: every request is a task parked on one gate, the gate opens, and each
//!   task sends on its own connection. The first wave of a fresh client also opens
//!   the connections ("cold"); the second reuses them ("warm").
//!
//! Each window reports requests/s, p50/p99 (from a sorted Vec of every latency),
//! errors, the CPU time the server process, the database's backends and this process
//! used per request (Δ utime+stime from `/proc`), and how many cores the rest of the
//! machine was busy with meanwhile (`/proc/stat` minus ours: the noise of a shared
//! box). Floors measured in the same run: an Ed25519 verification (every access
//! token), and on our own database connection an autocommit INSERT (the WAL flush
//! every write request waits for) and `SELECT 1`. `--sqlite` runs the same against
//! the embedded SQLite backend instead. At the end the server is killed, the
//! database dropped (`WITH (FORCE)`) and the data directory removed, also on errors
//! and Ctrl-C. Everything is bounded: request counts are fixed, every request has a
//! timeout, and the whole run has `--max-secs`.
//!
//! The login and pairing-claim rate limits (20 logins and 10 claims per client address
//! per minute) are respected, not disabled: those workloads use several loopback
//! source addresses (127.0.0.2…), each within its limit.
//!
//! `sc-apibench --help` for the options; docs/benchmarks-control-api.md for results.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const PINNED_ENV: &str = "SC_APIBENCH_PINNED";
const PASSWORD: &str = "correct horse battery staple";
/// Users with a session each: the refresh chains, and the accounts that log in.
const USERS: usize = 16;
/// Paired phones (real pairing flow): the heartbeat clients and the library devices.
const PHONES: usize = 16;
/// Claims per client address per minute the server allows (`Limits::pairing_addr`).
const CLAIMS_PER_ADDR: usize = 10;

const HELP: &str = "\
sc-apibench: control-API benchmark (PostgreSQL) against `streamcore api`, loopback only

USAGE: sc-apibench [OPTIONS]

  --streamcore PATH   server binary (default: streamcore next to this binary)
  --pg-url URL        maintenance database, trust auth, loopback
                      (default: $STREAMCORE_TEST_PG_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --repeats N         repeats of every measured window (default 3)
  --concurrency LIST  closed-loop clients for refresh and heartbeat (default 1,16)
  --requests N        requests per window at the highest concurrency; N/4 at lower ones (default 4000)
  --list-requests N   requests per list/search window (default 200)
  --tracks N          tracks per library sync (default 10000, the API's maximum)
  --devices N         devices for the all-at-once heartbeat (default 10000)
  --only LIST         subset of login,refresh,heartbeat,library,burst (default all)
  --server-cpu C      core for the server (default 0)
  --load-cpu C        core for this load generator (default 1)
  --no-pin            do not pin anything
  --sqlite            the embedded SQLite backend (DATA_DIR/streamcore.db) instead of PostgreSQL
  --label TEXT        printed in the report (e.g. before/after)
  --json PATH         write every measurement as JSON
  --max-secs S        stop the whole run after this long (default 300)
";

#[derive(Debug, Clone)]
struct Args {
    streamcore: PathBuf,
    pg_url: String,
    repeats: usize,
    concurrency: Vec<usize>,
    requests: usize,
    list_requests: usize,
    tracks: usize,
    devices: usize,
    only: Vec<String>,
    server_cpu: String,
    load_cpu: String,
    pin: bool,
    sqlite: bool,
    label: String,
    json: Option<PathBuf>,
    max_secs: u64,
}

impl Args {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

fn parse_args(argv: &[String]) -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        streamcore: exe
            .parent()
            .map(|d| d.join("streamcore"))
            .unwrap_or_else(|| PathBuf::from("target/release/streamcore")),
        pg_url: std::env::var("STREAMCORE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        repeats: 3,
        concurrency: vec![1, 16],
        requests: 4000,
        list_requests: 200,
        tracks: 10_000,
        devices: 10_000,
        only: Vec::new(),
        server_cpu: "0".into(),
        load_cpu: "1".into(),
        pin: true,
        sqlite: false,
        label: String::new(),
        json: None,
        max_secs: 300,
    };
    let mut it = argv.iter();
    let num = |v: Option<&String>| -> anyhow::Result<usize> {
        v.context("a number")?.parse().context("a number")
    };
    while let Some(k) = it.next() {
        match k.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--streamcore" => a.streamcore = PathBuf::from(it.next().context("a path")?),
            "--pg-url" => a.pg_url = it.next().context("a URL")?.clone(),
            "--repeats" => a.repeats = num(it.next())?.max(1),
            "--concurrency" => {
                a.concurrency = it
                    .next()
                    .context("a list")?
                    .split(',')
                    .map(|v| v.trim().parse::<usize>().context("a list of numbers"))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--requests" => a.requests = num(it.next())?.max(1),
            "--list-requests" => a.list_requests = num(it.next())?.max(1),
            "--tracks" => a.tracks = num(it.next())?.clamp(10, 10_000),
            "--devices" => a.devices = num(it.next())?.clamp(1, 15_000),
            "--only" => {
                a.only = it
                    .next()
                    .context("a list")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                for o in &a.only {
                    if !["login", "refresh", "heartbeat", "library", "burst"].contains(&o.as_str())
                    {
                        bail!("unknown workload {o}");
                    }
                }
            }
            "--server-cpu" => a.server_cpu = it.next().context("a core")?.clone(),
            "--load-cpu" => a.load_cpu = it.next().context("a core")?.clone(),
            "--no-pin" => a.pin = false,
            "--sqlite" => a.sqlite = true,
            "--label" => a.label = it.next().context("a label")?.clone(),
            "--json" => a.json = Some(PathBuf::from(it.next().context("a path")?)),
            "--max-secs" => a.max_secs = num(it.next())? as u64,
            o => bail!("unknown option {o}\n\n{HELP}"),
        }
    }
    a.concurrency.retain(|&c| c > 0);
    a.concurrency.sort_unstable();
    a.concurrency.dedup();
    if a.concurrency.is_empty() {
        a.concurrency = vec![16];
    }
    if !a.streamcore.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin streamcore` or pass --streamcore",
            a.streamcore.display()
        );
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&argv)?;
    if args.pin && std::env::var_os(PINNED_ENV).is_none() {
        // Run ourselves again on the load core; the child does the work.
        let status = Command::new("taskset")
            .arg("-c")
            .arg(&args.load_cpu)
            .arg(std::env::current_exe()?)
            .args(&argv)
            .env(PINNED_ENV, "1")
            .status()
            .context("running taskset (util-linux)")?;
        std::process::exit(status.code().unwrap_or(1));
    }

    let db = format!("sc_bench_{:016x}", rand::random::<u64>());
    let data_dir = std::env::temp_dir().join(&db);
    if args.sqlite {
        let outcome = run_with_db(&args, None, &data_dir, &[]);
        let _ = std::fs::remove_dir_all(&data_dir);
        return outcome;
    }
    let pg = PgAdmin::parse(&args.pg_url)?;
    let pg_info = pg
        .query(
            "SELECT split_part(version(), ' on ', 1), current_setting('synchronous_commit'), \
             current_setting('fsync'), current_setting('shared_buffers'), \
             current_setting('max_connections'), current_setting('autovacuum')",
        )
        .context("querying the PostgreSQL server")?;
    pg.query(&format!("CREATE DATABASE \"{db}\""))?;
    let target = PgTarget { admin: pg, db };
    let outcome = run_with_db(&args, Some(&target), &data_dir, &pg_info);
    // Cleanup, whatever happened.
    let _ = std::fs::remove_dir_all(&data_dir);
    let db = &target.db;
    if let Err(e) = target
        .admin
        .query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
    {
        eprintln!("warning: could not drop database {db}: {e:#}");
    } else {
        eprintln!("dropped database {db}");
    }
    outcome
}

/// The benchmark's own database on the PostgreSQL server.
#[derive(Debug, Clone)]
struct PgTarget {
    admin: PgAdmin,
    db: String,
}

fn run_with_db(
    args: &Args,
    pg: Option<&PgTarget>,
    data_dir: &Path,
    pg_info: &[Vec<Option<String>>],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let url = pg.map(|t| t.admin.url_for(&t.db));
    let server = Server::spawn(args, url.as_deref(), data_dir)?;
    eprintln!(
        "streamcore api pid {} on http://{} (database {})",
        server.pid,
        server.addr,
        pg.map_or("SQLite in the data dir", |t| t.db.as_str())
    );
    let ctx = Ctx {
        base: format!("http://{}", server.addr),
        database_url: url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("streamcore.db").display())),
        port: server.addr.port(),
        server_pid: server.pid,
        pg: pg.cloned(),
        clk: clk_tck(),
        log: server.log.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let mut report = Report::default();
    report
        .notes
        .push(format!("load average at the start: {}", loadavg()));
    let result = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(limit, run(args, &ctx, &mut report)) => match r {
                Ok(r) => r,
                Err(_) => bail!("the run exceeded --max-secs {}; stopped", args.max_secs),
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    // Let the runtime's connections close before the server goes.
    drop(rt);
    let logs = server.log_summary();
    drop(server);
    let total = started.elapsed();
    print_report(args, &report, pg_info, &logs, total);
    if let Some(path) = &args.json {
        let doc = json!({
            "label": args.label,
            "git": git_sha(),
            "machine": machine(),
            "postgres": pg_info,
            "args": format!("{args:?}"),
            "total_secs": total.as_secs_f64(),
            "server_log": {"warn": logs.warn, "error": logs.error, "last": logs.last, "first_errors": logs.first_errors},
            "windows": report.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "sync": report.sync.iter().map(SyncRow::to_json).collect::<Vec<_>>(),
            "notes": report.notes,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    result
}

// ---- the workloads -------------------------------------------------------------------

async fn run(args: &Args, ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let http = client(Some(loopback(1)), Duration::from_secs(30))?;
    let reps = args.repeats;
    let mut floors = Floors::default();
    report.rows.push(ed25519_floor()?);

    // Accounts: one owner of every device and library (U0), plus USERS users whose
    // sign-up sessions are the refresh chains. Signing up is mail first; the link's
    // step (timed) hashes the chosen password with Argon2.
    let mut reg = WorkerOut::default();
    let mut users: Vec<Session> = Vec::new();
    for i in 0..=USERS {
        let email = format!("bench{i}@example.com");
        let token = ask_for_account(&http, ctx, &email)
            .await
            .with_context(|| format!("signing up {email}"))?;
        let t = Instant::now();
        let r = complete_sign_up(&http, ctx, &token).await;
        match r {
            Ok(s) => {
                reg.ok(t);
                users.push(s);
            }
            Err(e) => bail!("registering bench{i}@example.com: {e:#}"),
        }
    }
    let owner = users.remove(0);
    report.rows.push(Row::single(
        "sign-up link opened (Argon2id hash + INSERT)",
        1,
        &[Rep::from_out(reg, Duration::ZERO, None)],
        "setup, sequential",
    ));

    // Pairing, the real phone flow: the owner starts a pairing (QR code), the phone
    // claims the code. Claims are limited per client address, so phones claim from
    // 127.0.0.10, .11, … with at most CLAIMS_PER_ADDR each.
    let mut starts = WorkerOut::default();
    let mut claims = WorkerOut::default();
    let mut phones: Vec<(String, String)> = Vec::new(); // (device id, device access token)
    let mut claimers: Vec<reqwest::Client> = Vec::new();
    for i in 0..PHONES {
        let t = Instant::now();
        let p = call(
            &http,
            Method::POST,
            &ctx.url("/api/v1/pairings"),
            Some(&owner.access),
            None,
            201,
        )
        .await
        .context("starting a pairing")?;
        starts.ok(t);
        let code = p["code"].as_str().context("pairing code")?.to_owned();
        let slot = i / CLAIMS_PER_ADDR;
        if claimers.len() <= slot {
            claimers.push(client(
                Some(loopback(10 + slot as u8)),
                Duration::from_secs(30),
            )?);
        }
        let body = json!({"code": code, "device": {"name": format!("phone {i}"), "kind": "phone", "capabilities": {"mic": true}}});
        let t = Instant::now();
        let v = call(
            &claimers[slot],
            Method::POST,
            &ctx.url("/api/v1/pairings/claim"),
            None,
            Some(serde_json::to_vec(&body)?),
            201,
        )
        .await
        .context("claiming a pairing")?;
        claims.ok(t);
        phones.push((
            v["device"]["id"].as_str().context("device id")?.to_owned(),
            v["session"]["access_token"]
                .as_str()
                .context("device access token")?
                .to_owned(),
        ));
    }
    drop(claimers);
    report.rows.push(Row::single(
        "pairing start (QR SVG + INSERT)",
        1,
        &[Rep::from_out(starts, Duration::ZERO, None)],
        "setup, sequential",
    ));
    report.rows.push(Row::single(
        "pairing claim (device + session)",
        1,
        &[Rep::from_out(claims, Duration::ZERO, None)],
        "setup, sequential, 10 per source address",
    ));

    if args.wants("login") {
        // Each repeat logs every user in once from its own source address: 16 logins
        // per address and 1 per account per repeat, inside 20/addr and 5/account a minute.
        let emails: Arc<Vec<String>> = Arc::new(
            (1..=USERS)
                .map(|i| format!("bench{i}@example.com"))
                .collect(),
        );
        let mut rs = Vec::new();
        for r in 0..reps.min(4) {
            let c = client(Some(loopback(2 + r as u8)), Duration::from_secs(30))?;
            let url = ctx.url("/api/v1/auth/login");
            let n = emails.len();
            let rep = closed_loop(ctx, 2, n, |_, tk| {
                let (c, url, emails) = (c.clone(), url.clone(), emails.clone());
                async move {
                    let mut out = WorkerOut::default();
                    while let Some(i) = take(&tk, n) {
                        let body = json!({"email": emails[i], "password": PASSWORD});
                        let t = Instant::now();
                        let r = match serde_json::to_vec(&body) {
                            Ok(b) => call(&c, Method::POST, &url, None, Some(b), 200)
                                .await
                                .map(drop),
                            Err(e) => Err(e.into()),
                        };
                        out.record(t, r);
                    }
                    out
                }
            })
            .await;
            rs.push(rep);
        }
        report.rows.push(Row::new(
            "login (Argon2id verify)",
            2,
            USERS,
            rs,
            "each repeat from its own 127.0.0.x (rate limits kept)",
        ));
    }

    if args.wants("refresh") {
        let tokens = Arc::new(Mutex::new(
            users.iter().map(|u| u.refresh.clone()).collect::<Vec<_>>(),
        ));
        let url = ctx.url("/api/v1/auth/refresh");
        let refresh_window = |conc: usize, n: usize| {
            let tokens = tokens.clone();
            let (http, url) = (http.clone(), url.clone());
            closed_loop(ctx, conc, n, move |w, tk| {
                let (c, url, tokens) = (http.clone(), url.clone(), tokens.clone());
                async move {
                    let mut out = WorkerOut::default();
                    let mut token = lock(&tokens)[w].clone();
                    while take(&tk, n).is_some() {
                        let t = Instant::now();
                        match refresh(&c, &url, &token).await {
                            Ok(next) => {
                                token = next;
                                out.ok(t);
                            }
                            Err(e) => {
                                // The chain is broken; the others take its share.
                                out.err(e);
                                break;
                            }
                        }
                    }
                    lock(&tokens)[w] = token;
                    out
                }
            })
        };
        for &conc in &args.concurrency {
            let conc = conc.min(USERS);
            let n = per_window(args, conc);
            refresh_window(conc, (conc * 10).max(50)).await; // warm-up
            let mut rs = Vec::new();
            for _ in 0..reps {
                rs.push(refresh_window(conc, n).await);
                if conc == 1 {
                    floors.measure(ctx).await?;
                }
            }
            report.rows.push(Row::new(
                "refresh (rotate token)",
                conc,
                n,
                rs,
                "one token chain per client",
            ));
        }
    }

    if args.wants("heartbeat") {
        let phones = Arc::new(phones.clone());
        let window = |conc: usize, n: usize| {
            let phones = phones.clone();
            let http = http.clone();
            closed_loop(ctx, conc, n, move |w, tk| {
                let c = http.clone();
                let (id, token) = phones[w % phones.len()].clone();
                let url = ctx.url(&format!("/api/v1/devices/{id}/heartbeat"));
                async move {
                    let mut out = WorkerOut::default();
                    while take(&tk, n).is_some() {
                        let t = Instant::now();
                        let r = call(&c, Method::POST, &url, Some(&token), None, 204)
                            .await
                            .map(drop);
                        out.record(t, r);
                    }
                    out
                }
            })
        };
        for &conc in &args.concurrency {
            let conc = conc.min(PHONES);
            let n = per_window(args, conc);
            window(conc, (conc * 10).max(50)).await; // warm-up
            let mut rs = Vec::new();
            for _ in 0..reps {
                rs.push(window(conc, n).await);
                if conc == 1 {
                    floors.measure(ctx).await?;
                }
            }
            report.rows.push(Row::new(
                "heartbeat (device credential)",
                conc,
                n,
                rs,
                "one paired phone per client",
            ));
        }
    }

    if floors.commit.is_empty() {
        for _ in 0..reps {
            floors.measure(ctx).await?;
        }
    }
    floors.report(report);

    if args.wants("library") {
        library(args, ctx, &http, &owner, &phones, report).await?;
    }

    if args.wants("burst") {
        burst(args, ctx, &http, &owner, report).await?;
    }
    Ok(())
}

/// What the database itself costs, measured in the same run (next to the C=1 windows):
/// one connection of our own, autocommit `INSERT` (a WAL flush each: the commit
/// floor of every write request) and `SELECT 1` (the round trip).
#[derive(Debug, Default)]
struct Floors {
    commit: Vec<Rep>,
    select: Vec<Rep>,
}

const FLOOR_N: usize = 100;

impl Floors {
    async fn measure(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let Some(pg) = ctx.pg.clone() else {
            return Ok(());
        };
        let (commit, select) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = pg.admin.connect(&pg.db)?;
            conn.query(
                "CREATE TABLE IF NOT EXISTS bench_floor (id BIGSERIAL PRIMARY KEY, v BIGINT)",
            )?;
            let mut timed = |sql: &str| -> anyhow::Result<Rep> {
                let mut out = WorkerOut::default();
                let t0 = Instant::now();
                for _ in 0..FLOOR_N {
                    let t = Instant::now();
                    let r = conn.query(sql).map(drop);
                    out.record(t, r);
                }
                Ok(Rep::from_out(out, t0.elapsed(), None))
            };
            Ok((
                timed("INSERT INTO bench_floor (v) VALUES (1)")?,
                timed("SELECT 1")?,
            ))
        })
        .await??;
        self.commit.push(commit);
        self.select.push(select);
        Ok(())
    }

    fn report(&mut self, report: &mut Report) {
        if self.commit.is_empty() {
            return;
        }
        report.rows.push(Row::new(
            "floor: PostgreSQL INSERT + commit (WAL flush)",
            1,
            FLOOR_N,
            std::mem::take(&mut self.commit),
            "own connection, next to each C=1 window",
        ));
        report.rows.push(Row::new(
            "floor: PostgreSQL SELECT 1 round trip",
            1,
            FLOOR_N,
            std::mem::take(&mut self.select),
            "own connection, next to each C=1 window",
        ));
    }
}

/// Every request with an access token verifies an Ed25519 signature (EdDSA JWT): the
/// cost of one verification with aws-lc-rs, here on the load core.
fn ed25519_floor() -> anyhow::Result<Row> {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("Ed25519 key"))?;
    let kp =
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| anyhow::anyhow!("Ed25519 key"))?;
    let msg = [b'x'; 220]; // about a JWT's header.claims
    let sig = kp.sign(&msg);
    let pk = UnparsedPublicKey::new(&ED25519, kp.public_key().as_ref().to_vec());
    let mut out = WorkerOut::default();
    let t0 = Instant::now();
    for _ in 0..2000 {
        let t = Instant::now();
        let r = pk
            .verify(&msg, sig.as_ref())
            .map_err(|_| anyhow::anyhow!("Ed25519 verify failed"));
        out.record(t, r);
    }
    let mut rep = Rep::from_out(out, t0.elapsed(), None);
    rep.rps = 2000.0 / t0.elapsed().as_secs_f64();
    Ok(Row::new(
        "floor: Ed25519 verify (aws-lc-rs), in process",
        1,
        2000,
        vec![rep],
        "the signature check of every access token",
    ))
}

/// Requests per window: `--requests` at the highest concurrency, a quarter below it.
fn per_window(args: &Args, conc: usize) -> usize {
    let top = args.concurrency.last().copied().unwrap_or(conc);
    if conc >= top {
        args.requests
    } else {
        (args.requests / 4).max(1)
    }
}

fn track(i: usize, version: u32) -> Value {
    let title = if version > 0 && i.is_multiple_of(10) {
        format!("Title {i} (remaster {version})")
    } else {
        format!("Title {i}")
    };
    json!({
        "client_id": format!("content://media/external/audio/media/{i:06}"),
        "title": title,
        "artist": format!("Artist {}", i % 500),
        "album": format!("Album {}", i % 2000),
        "duration_ms": 120_000 + (i as i64 * 7919) % 240_000,
        "codec": if i.is_multiple_of(3) { "flac" } else { "aac" },
        "size_bytes": 3_000_000 + (i as i64 * 104_729) % 9_000_000,
    })
}

async fn library(
    args: &Args,
    ctx: &Ctx,
    http: &reqwest::Client,
    owner: &Session,
    phones: &[(String, String)],
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = args.tracks;
    let body = |version: u32| -> anyhow::Result<Vec<u8>> {
        let upsert: Vec<Value> = (0..n).map(|i| track(i, version)).collect();
        Ok(serde_json::to_vec(&json!({ "upsert": upsert }))?)
    };
    let (first, changed) = (body(0)?, body(1)?);
    report.notes.push(format!(
        "library sync body: {n} tracks, {} bytes of JSON",
        first.len()
    ));
    let url = ctx.url("/api/v1/library/sync");
    let steps: [(&str, &Vec<u8>, [u64; 3]); 3] = [
        ("first sync (all new)", &first, [n as u64, 0, 0]),
        ("second sync (identical)", &first, [0, 0, n as u64]),
        (
            "third sync (10 % changed)",
            &changed,
            [0, n.div_ceil(10) as u64, (n - n.div_ceil(10)) as u64],
        ),
    ];
    let mut rows: Vec<SyncRow> = steps
        .iter()
        .map(|(name, _, _)| SyncRow {
            name: (*name).to_owned(),
            tracks: n,
            ..SyncRow::default()
        })
        .collect();
    // Each repeat syncs into its own paired phone, with that phone's credential.
    for (_, token) in phones.iter().take(args.repeats) {
        for (k, (name, b, expect)) in steps.iter().enumerate() {
            let before = ctx.cpu();
            let t = Instant::now();
            let v = call(
                http,
                Method::POST,
                &url,
                Some(token),
                Some((*b).clone()),
                200,
            )
            .await
            .with_context(|| name.to_string())?;
            let wall = t.elapsed();
            let cpu = ctx.cpu().since(&before, ctx.clk);
            let got = [
                v["inserted"].as_u64().unwrap_or(u64::MAX),
                v["updated"].as_u64().unwrap_or(u64::MAX),
                v["unchanged"].as_u64().unwrap_or(u64::MAX),
            ];
            if got != *expect {
                bail!("{name}: counts {v} (expected inserted/updated/unchanged {expect:?})");
            }
            rows[k].wall_ms.push(wall.as_secs_f64() * 1e3);
            rows[k].server_ms.push(cpu.server * 1e3);
            rows[k].pg_ms.push(cpu.pg * 1e3);
            rows[k]
                .other_cores
                .push(cpu.other / wall.as_secs_f64().max(1e-3));
            rows[k].counts = v.to_string();
            eprintln!(
                "  {name}: {:.0} ms (server CPU {:.0} ms, PG CPU {:.0} ms) {v}",
                wall.as_secs_f64() * 1e3,
                cpu.server * 1e3,
                cpu.pg * 1e3
            );
        }
    }
    report.sync.extend(rows);

    // Browsing the owner's whole library (every phone's tracks) as the user: the first
    // page once as the database is right after the syncs (on a server with autovacuum
    // off, the table has no statistics yet), then everything after ANALYZE.
    let libs = args.repeats.min(phones.len());
    let offset = n / 200 * 100; // a page in the middle of one device's tracks
    let mut queries = vec![(
        "library list (first page of 100), before ANALYZE".to_owned(),
        "limit=100".to_owned(),
    )];
    if ctx.pg.is_none() {
        queries.clear();
    }
    queries.extend([
        (
            "library list (first page of 100)".to_owned(),
            "limit=100".to_owned(),
        ),
        (
            "library search (q=artist 42, first 100)".to_owned(),
            "q=artist%2042&limit=100".to_owned(),
        ),
        (
            format!("library list, one device, offset {offset}"),
            format!("device_id={}&limit=100&offset={offset}", phones[0].0),
        ),
    ]);
    for (k, (name, q)) in queries.into_iter().enumerate() {
        if k == 1
            && let Some(pg) = ctx.pg.clone()
        {
            let t = Instant::now();
            let stats = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let mut conn = pg.admin.connect(&pg.db)?;
                let before = conn.query(
                    "SELECT coalesce(last_autoanalyze::text, 'never') FROM pg_stat_user_tables \
                     WHERE relname = 'library_tracks'",
                )?;
                conn.query("ANALYZE library_tracks")?;
                Ok(before
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .unwrap_or_default())
            })
            .await??;
            report.notes.push(format!(
                "library_tracks auto-analyzed before our ANALYZE: {stats}; ANALYZE took {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            ));
        }
        let url = ctx.url(&format!("/api/v1/library/tracks?{q}"));
        let check = call(http, Method::GET, &url, Some(&owner.access), None, 200).await?;
        let got = check.as_array().map_or(0, Vec::len);
        if got == 0 {
            bail!("{name}: no rows");
        }
        let conc = args.concurrency.last().copied().unwrap_or(16).min(16);
        // The indexed first page is ~100× cheaper than the scans: more requests, so the
        // window is long enough for the CPU counters (10 ms ticks).
        let total = if name == "library list (first page of 100)" {
            args.list_requests * 10
        } else {
            args.list_requests
        };
        let window = |n: usize| {
            let (http, url, token) = (http.clone(), url.clone(), owner.access.clone());
            closed_loop(ctx, conc, n, move |_, tk| {
                let (c, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    let mut out = WorkerOut::default();
                    while take(&tk, n).is_some() {
                        let t = Instant::now();
                        let r = call_raw(&c, Method::GET, &url, Some(&token), None, 200)
                            .await
                            .map(drop);
                        out.record(t, r);
                    }
                    out
                }
            })
        };
        window(conc * 2).await; // warm-up
        let mut rs = Vec::new();
        for _ in 0..args.repeats {
            rs.push(window(total).await);
        }
        report.rows.push(Row::new(
            &name,
            conc,
            total,
            rs,
            &format!("{} tracks in the library", libs * n),
        ));
    }
    Ok(())
}

async fn burst(
    args: &Args,
    ctx: &Ctx,
    http: &reqwest::Client,
    owner: &Session,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Register the devices (as the owner: pairing claims are rate-limited per address).
    let n = args.devices;
    let ids = Arc::new(Mutex::new(vec![String::new(); n]));
    let url = ctx.url("/api/v1/devices");
    let parts = args.repeats.max(1);
    let mut rs = Vec::new();
    for p in 0..parts {
        let (lo, hi) = (n * p / parts, n * (p + 1) / parts);
        let count = hi - lo;
        let rep = closed_loop(ctx, 16, count, |_, tk| {
            let (c, url, token, ids) =
                (http.clone(), url.clone(), owner.access.clone(), ids.clone());
            async move {
                let mut out = WorkerOut::default();
                while let Some(i) = take(&tk, count) {
                    let body = json!({"name": format!("device {}", lo + i), "kind": "other"});
                    let t = Instant::now();
                    let r = match serde_json::to_vec(&body) {
                        Ok(b) => call(&c, Method::POST, &url, Some(&token), Some(b), 201).await,
                        Err(e) => Err(e.into()),
                    };
                    match r.and_then(|v| v["id"].as_str().map(str::to_owned).context("device id")) {
                        Ok(id) => {
                            lock(&ids)[lo + i] = id;
                            out.ok(t);
                        }
                        Err(e) => out.err(e),
                    }
                }
                out
            }
        })
        .await;
        rs.push(rep);
    }
    report.rows.push(Row::new(
        "device register (POST /devices)",
        16,
        n / parts,
        rs,
        &format!("setup for the {n}-device burst"),
    ));
    let ids: Vec<String> = lock(&ids)
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    if ids.len() != n {
        bail!("only {} of {n} devices registered", ids.len());
    }

    // The all-at-once waves. A fresh client per repeat (its own source address, so the
    // previous repeat's TIME_WAIT sockets do not matter): the cold wave opens one
    // connection per request, the warm wave reuses them.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for r in 0..args.repeats {
        let c = client(Some(loopback(20 + r as u8)), Duration::from_secs(60))?;
        for wave in 0..2 {
            let rep = gate_wave(ctx, &c, &ids, &owner.access).await?;
            eprintln!(
                "  {} wave {}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors, {} connections open at the gate",
                if wave == 0 { "cold" } else { "warm" },
                r + 1,
                rep.rps,
                rep.p50_ms,
                rep.p99_ms,
                rep.max_ms,
                rep.errors,
                rep.conns.unwrap_or(0)
            );
            if wave == 0 {
                cold.push(rep);
            } else {
                warm.push(rep);
            }
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.rows.push(Row::new(
        "all-at-once heartbeat, cold (connect + request)",
        n,
        n,
        cold,
        "fresh client: all connections opened at the gate",
    ));
    report.rows.push(Row::new(
        "all-at-once heartbeat, warm (keep-alive)",
        n,
        n,
        warm,
        "same client again: one open connection per device",
    ));
    Ok(())
}

/// Every request a task parked on one gate; the gate opens; latency is measured from
/// the opening, so it includes this client's own queueing.
async fn gate_wave(
    ctx: &Ctx,
    c: &reqwest::Client,
    ids: &[String],
    token: &str,
) -> anyhow::Result<Rep> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let token: Arc<str> = token.into();
    let mut set = JoinSet::new();
    for id in ids {
        let mut rx = rx.clone();
        let (c, token) = (c.clone(), token.clone());
        let url = ctx.url(&format!("/api/v1/devices/{id}/heartbeat"));
        set.spawn(async move {
            let _ = rx.wait_for(|open| *open).await;
            let r = call_raw(&c, Method::POST, &url, Some(&token), None, 204).await;
            (Instant::now(), r.map(drop))
        });
    }
    drop(rx);
    // Let every task park on the gate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conns = established(ctx.port);
    let warns = ctx.warns();
    let net0 = net_counters();
    let before = ctx.cpu();
    let t0 = Instant::now();
    tx.send(true).context("opening the gate")?;
    let mut out = WorkerOut::default();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((done, Ok(()))) => out.lat_us.push((done - t0).as_micros() as u64),
            Ok((_, Err(e))) => out.err(e),
            Err(e) => out.err(e.into()),
        }
    }
    let wall = t0.elapsed();
    let cpu = ctx.cpu().since(&before, ctx.clk);
    let net1 = net_counters();
    let mut rep = Rep::from_out(out, wall, Some(cpu));
    rep.conns = Some(conns);
    rep.warns = ctx.warns() - warns;
    rep.net = Some(std::array::from_fn(|i| net1[i].saturating_sub(net0[i])));
    Ok(rep)
}

// ---- HTTP ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Session {
    access: String,
    refresh: String,
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last.max(1)))
}

fn client(local: Option<IpAddr>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .local_address(local)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(20))
        .timeout(timeout)
        .build()?)
}

/// One request; fails unless the status is `expect`. Returns the raw body.
async fn call_raw(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    expect: u16,
) -> anyhow::Result<Vec<u8>> {
    let mut req = c.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    if status != expect {
        let text = String::from_utf8_lossy(&bytes);
        bail!(
            "HTTP {status} (expected {expect}): {}",
            text.chars().take(200).collect::<String>()
        );
    }
    Ok(bytes.to_vec())
}

/// [`call_raw`], with the body parsed as JSON (`null` when empty).
async fn call(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    expect: u16,
) -> anyhow::Result<Value> {
    let b = call_raw(c, method, url, token, body, expect).await?;
    if b.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&b)?)
}

/// Asks for an account; the token of the sign-up link, read from the node's outbox.
async fn ask_for_account(c: &reqwest::Client, ctx: &Ctx, email: &str) -> anyhow::Result<String> {
    use control_api::store::Store;
    let body = json!({"email": email, "display_name": "Bench"});
    call_raw(
        c,
        Method::POST,
        &ctx.url("/api/v1/auth/register"),
        None,
        Some(serde_json::to_vec(&body)?),
        202,
    )
    .await?;
    let outbox = control_api::store::Db::connect(&ctx.database_url).await?;
    let mails = outbox.list_mail(50).await?;
    mails
        .iter()
        .filter(|m| m.to_addr == email)
        .find_map(|m| control_api::mail::link_token(&m.body, "/sign-up").map(str::to_owned))
        .context("no sign-up link in the outbox")
}

/// Opens the sign-up link: the account is made with [`PASSWORD`], and signed in.
async fn complete_sign_up(c: &reqwest::Client, ctx: &Ctx, token: &str) -> anyhow::Result<Session> {
    let body = json!({"token": token, "password": PASSWORD});
    let v = call(
        c,
        Method::POST,
        &ctx.url("/api/v1/auth/register/complete"),
        None,
        Some(serde_json::to_vec(&body)?),
        201,
    )
    .await?;
    Ok(Session {
        access: v["session"]["access_token"]
            .as_str()
            .context("access token")?
            .to_owned(),
        refresh: v["session"]["refresh_token"]
            .as_str()
            .context("refresh token")?
            .to_owned(),
    })
}

/// Presents `token`; returns the next token of the chain.
async fn refresh(c: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<String> {
    let body = serde_json::to_vec(&json!({ "refresh_token": token }))?;
    let v = call(c, Method::POST, url, None, Some(body), 200).await?;
    Ok(v["refresh_token"]
        .as_str()
        .context("refresh_token in the answer")?
        .to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- measuring -----------------------------------------------------------------------

/// The next request index of a window, or `None` when all `n` are taken.
fn take(tickets: &AtomicUsize, n: usize) -> Option<usize> {
    let i = tickets.fetch_add(1, Ordering::Relaxed);
    (i < n).then_some(i)
}

#[derive(Debug, Default)]
struct WorkerOut {
    lat_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl WorkerOut {
    fn ok(&mut self, started: Instant) {
        self.lat_us.push(started.elapsed().as_micros() as u64);
    }

    fn err(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn record(&mut self, started: Instant, r: anyhow::Result<()>) {
        match r {
            Ok(()) => self.ok(started),
            Err(e) => self.err(e),
        }
    }

    fn merge(&mut self, o: WorkerOut) {
        self.lat_us.extend(o.lat_us);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// `conc` workers share `n` requests (closed loop: each sends its next request when
/// the previous one is answered).
async fn closed_loop<F, Fut>(ctx: &Ctx, conc: usize, n: usize, make: F) -> Rep
where
    F: Fn(usize, Arc<AtomicUsize>) -> Fut,
    Fut: Future<Output = WorkerOut> + Send + 'static,
{
    let tickets = Arc::new(AtomicUsize::new(0));
    let warns = ctx.warns();
    let net0 = net_counters();
    let before = ctx.cpu();
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..conc.max(1) {
        set.spawn(make(w, tickets.clone()));
    }
    let mut all = WorkerOut::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(o) => all.merge(o),
            Err(e) => all.err(e.into()),
        }
    }
    let wall = t0.elapsed();
    let cpu = ctx.cpu().since(&before, ctx.clk);
    // Requests never sent (every worker stopped early) count as errors.
    let unsent = n.saturating_sub(all.lat_us.len() + all.errors as usize);
    if unsent > 0 {
        all.err(anyhow::anyhow!(
            "{unsent} requests not sent: every client stopped"
        ));
        all.errors += unsent as u64 - 1;
    }
    let net1 = net_counters();
    let mut rep = Rep::from_out(all, wall, Some(cpu));
    rep.warns = ctx.warns() - warns;
    rep.net = Some(std::array::from_fn(|i| net1[i].saturating_sub(net0[i])));
    rep
}

/// One measured window.
#[derive(Debug, Clone, Default)]
struct Rep {
    ok: usize,
    errors: u64,
    first_error: Option<String>,
    wall_s: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU seconds per request of the server, the database backends and this client.
    server_us: f64,
    pg_us: f64,
    client_us: f64,
    /// Cores' worth of CPU the rest of the machine used during the window (noise).
    other_cores: f64,
    /// Server connections open when the gate opened (all-at-once waves).
    conns: Option<u64>,
    /// WARN/ERROR lines the server logged during the window.
    warns: u64,
    /// Kernel TCP counters during the window: listen overflows, listen drops,
    /// SYN cookies sent, retransmitted segments (all-at-once waves).
    net: Option<[u64; 4]>,
}

impl Rep {
    fn from_out(mut o: WorkerOut, wall: Duration, cpu: Option<CpuDelta>) -> Rep {
        o.lat_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1e3;
        let total = (o.lat_us.len() as f64 + o.errors as f64).max(1.0);
        let per = |s: f64| s * 1e6 / total;
        let cpu = cpu.unwrap_or_default();
        Rep {
            ok: o.lat_us.len(),
            errors: o.errors,
            first_error: o.first_error,
            wall_s: wall.as_secs_f64(),
            rps: if wall.is_zero() {
                f64::NAN
            } else {
                o.lat_us.len() as f64 / wall.as_secs_f64()
            },
            p50_ms: ms(percentile(&o.lat_us, 50.0)),
            p99_ms: ms(percentile(&o.lat_us, 99.0)),
            max_ms: ms(o.lat_us.last().copied().unwrap_or(0)),
            server_us: per(cpu.server),
            pg_us: per(cpu.pg),
            client_us: per(cpu.client),
            other_cores: if wall.is_zero() {
                f64::NAN
            } else {
                cpu.other / wall.as_secs_f64()
            },
            conns: None,
            warns: 0,
            net: None,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "ok": self.ok, "errors": self.errors, "first_error": self.first_error,
            "wall_s": self.wall_s, "rps": self.rps, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "max_ms": self.max_ms,
            "server_cpu_us_per_req": self.server_us, "pg_cpu_us_per_req": self.pg_us,
            "client_cpu_us_per_req": self.client_us, "connections_at_gate": self.conns,
            "other_load_cores": self.other_cores,
            "server_warn_lines": self.warns,
            "tcp_listen_overflows_drops_syncookies_retrans": self.net,
        })
    }
}

/// Nearest-rank percentile of a sorted sample.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, min and max.
fn mmm(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn show(values: &[f64], decimals: usize) -> String {
    let (m, lo, hi) = mmm(values);
    if m.is_nan() {
        return "–".into();
    }
    if values.len() == 1 || (lo == hi) {
        return format!("{m:.decimals$}");
    }
    format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
}

#[derive(Debug)]
struct Row {
    name: String,
    conc: usize,
    n: usize,
    reps: Vec<Rep>,
    note: String,
}

impl Row {
    fn new(name: &str, conc: usize, n: usize, reps: Vec<Rep>, note: &str) -> Row {
        Row {
            name: name.to_owned(),
            conc,
            n,
            reps,
            note: note.to_owned(),
        }
    }

    /// A setup step: one window whose latencies are the sample (no rate).
    fn single(name: &str, conc: usize, reps: &[Rep], note: &str) -> Row {
        let n = reps.first().map_or(0, |r| r.ok + r.errors as usize);
        Row::new(name, conc, n, reps.to_vec(), note)
    }

    fn col(&self, f: impl Fn(&Rep) -> f64) -> Vec<f64> {
        self.reps.iter().map(f).collect()
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "concurrency": self.conc, "requests": self.n,
            "note": self.note, "repeats": self.reps.iter().map(Rep::to_json).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Default)]
struct SyncRow {
    name: String,
    tracks: usize,
    wall_ms: Vec<f64>,
    server_ms: Vec<f64>,
    pg_ms: Vec<f64>,
    other_cores: Vec<f64>,
    counts: String,
}

impl SyncRow {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "tracks": self.tracks, "wall_ms": self.wall_ms,
            "server_cpu_ms": self.server_ms, "pg_cpu_ms": self.pg_ms, "counts": self.counts,
            "other_load_cores": self.other_cores,
        })
    }
}

#[derive(Debug, Default)]
struct Report {
    rows: Vec<Row>,
    sync: Vec<SyncRow>,
    notes: Vec<String>,
}

fn print_report(
    args: &Args,
    report: &Report,
    pg_info: &[Vec<Option<String>>],
    logs: &LogSummary,
    total: Duration,
) {
    let pg = pg_info.first().cloned().unwrap_or_default();
    let field = |i: usize| pg.get(i).cloned().flatten().unwrap_or_default();
    println!("## sc-apibench {}", args.label);
    println!();
    println!("- git: {}", git_sha());
    println!("- machine: {}", machine());
    println!("- load average at the end: {}", loadavg());
    println!(
        "- PostgreSQL: {} (synchronous_commit={}, fsync={}, shared_buffers={}, max_connections={}, autovacuum={}); server pool: 10 connections",
        field(0),
        field(1),
        field(2),
        field(3),
        field(4),
        field(5)
    );
    println!(
        "- pinning: {}",
        if args.pin {
            format!(
                "server on CPU {}, load generator on CPU {}, PostgreSQL not pinned",
                args.server_cpu, args.load_cpu
            )
        } else {
            "none".into()
        }
    );
    println!(
        "- repeats: {}; total run {:.0} s; server log: {} WARN, {} ERROR lines",
        args.repeats,
        total.as_secs_f64(),
        logs.warn,
        logs.error
    );
    for l in logs.first_errors.iter().chain(&logs.last) {
        println!("  - `{}`", l.chars().take(300).collect::<String>());
    }
    for n in &report.notes {
        println!("- {n}");
    }
    println!();
    println!(
        "| workload | conc. | requests | req/s | p50 ms | p99 ms | errors | server CPU µs/req | PG CPU µs/req | client CPU µs/req | other load, cores |"
    );
    println!("|---|---:|---:|---|---|---|---:|---|---|---|---|");
    for r in &report.rows {
        let errors: u64 = r.reps.iter().map(|x| x.errors).sum();
        let setup = r.reps.len() == 1 && r.reps[0].wall_s == 0.0;
        println!(
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.conc,
            r.n,
            if r.reps.len() > 1 {
                format!(" ×{}", r.reps.len())
            } else {
                String::new()
            },
            if setup {
                "–".into()
            } else {
                show(&r.col(|x| x.rps), 0)
            },
            show(&r.col(|x| x.p50_ms), 2),
            show(&r.col(|x| x.p99_ms), 2),
            errors,
            if setup {
                "–".into()
            } else {
                show(&r.col(|x| x.server_us), 0)
            },
            if setup {
                "–".into()
            } else {
                show(&r.col(|x| x.pg_us), 0)
            },
            if setup {
                "–".into()
            } else {
                show(&r.col(|x| x.client_us), 0)
            },
            if setup {
                "–".into()
            } else {
                show(&r.col(|x| x.other_cores), 2)
            },
        );
    }
    println!();
    for r in &report.rows {
        if let Some(e) = r.reps.iter().find_map(|x| x.first_error.as_ref()) {
            println!("- first error of \"{}\": `{e}`", r.name);
        }
        let retrans = |x: &Rep| x.net.map_or(0, |n| n[3]);
        if r.reps.iter().all(|x| x.conns.is_none()) && r.reps.iter().any(|x| retrans(x) > 0) {
            let v: Vec<String> = r.reps.iter().map(|x| retrans(x).to_string()).collect();
            println!(
                "- TCP segments retransmitted on this machine during \"{}\": {}",
                r.name,
                v.join(", ")
            );
        }
        if r.reps.iter().any(|x| x.conns.is_some()) {
            let c: Vec<String> = r
                .reps
                .iter()
                .map(|x| format!("{}", x.conns.unwrap_or(0)))
                .collect();
            let mx: Vec<String> = r.reps.iter().map(|x| format!("{:.0}", x.max_ms)).collect();
            let net: Vec<String> = r
                .reps
                .iter()
                .map(|x| {
                    let n = x.net.unwrap_or_default();
                    format!("{}/{}/{}/{}", n[0], n[1], n[2], n[3])
                })
                .collect();
            let warns: Vec<String> = r.reps.iter().map(|x| x.warns.to_string()).collect();
            println!(
                "- {}: server connections open when the gate opened: {}; slowest request (ms): {}; \
                 TCP listen overflows/listen drops/SYN cookies/retransmitted segments: {}; server WARN lines: {}",
                r.name,
                c.join(", "),
                mx.join(", "),
                net.join(", "),
                warns.join(", ")
            );
        }
    }
    if !report.sync.is_empty() {
        println!();
        println!(
            "| library sync, one request | tracks | latency ms | tracks/s | server CPU ms | PG CPU ms | other load, cores | answer |"
        );
        println!("|---|---:|---|---|---|---|---|---|");
        for s in &report.sync {
            let rate: Vec<f64> = s
                .wall_ms
                .iter()
                .map(|ms| s.tracks as f64 / (ms / 1e3))
                .collect();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | `{}` |",
                s.name,
                s.tracks,
                show(&s.wall_ms, 0),
                show(&rate, 0),
                show(&s.server_ms, 0),
                show(&s.pg_ms, 0),
                show(&s.other_cores, 2),
                s.counts
            );
        }
    }
    println!();
    println!(
        "reproduce: `{}`",
        std::iter::once("sc-apibench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ---- /proc -----------------------------------------------------------------------------

struct Ctx {
    base: String,
    /// The node's database (the bench reads sign-up links from its outbox).
    database_url: String,
    port: u16,
    server_pid: u32,
    pg: Option<PgTarget>,
    clk: f64,
    log: Arc<Mutex<LogSummary>>,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn warns(&self) -> u64 {
        let l = lock(&self.log);
        l.warn + l.error
    }

    /// CPU ticks so far of the server, of this database's PostgreSQL backends (found by
    /// their process title, which names the database), and of this process.
    fn cpu(&self) -> Cpu {
        let mut pg = Vec::new();
        let db = self.pg.as_ref().map_or("", |t| t.db.as_str());
        if let Some(dir) = std::fs::read_dir("/proc").ok().filter(|_| !db.is_empty()) {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let is_ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.starts_with("postgres:") && c.contains(db)
                    })
                    .unwrap_or(false);
                if let Some(t) = is_ours.then(|| stat_ticks(pid)).flatten() {
                    pg.push((pid.to_owned(), t));
                }
            }
        }
        Cpu {
            server: stat_ticks(&self.server_pid.to_string()).unwrap_or(0),
            pg,
            client: stat_ticks("self").unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }
}

#[derive(Debug, Clone)]
struct Cpu {
    server: u64,
    pg: Vec<(String, u64)>,
    client: u64,
    /// Busy ticks of the whole machine (all CPUs).
    machine: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuDelta {
    server: f64,
    pg: f64,
    client: f64,
    /// CPU seconds the rest of the machine used (other engineers' builds and tests).
    other: f64,
}

impl Cpu {
    /// CPU seconds used since `before`. A backend that started in between counts from 0.
    fn since(&self, before: &Cpu, clk: f64) -> CpuDelta {
        let pg: u64 = self
            .pg
            .iter()
            .map(|(pid, t)| {
                let t0 = before
                    .pg
                    .iter()
                    .find(|(p, _)| p == pid)
                    .map_or(0, |(_, t0)| *t0);
                t.saturating_sub(t0)
            })
            .sum();
        let server = self.server.saturating_sub(before.server);
        let client = self.client.saturating_sub(before.client);
        let ours = server + pg + client;
        CpuDelta {
            server: server as f64 / clk,
            pg: pg as f64 / clk,
            client: client as f64 / clk,
            other: self
                .machine
                .saturating_sub(before.machine)
                .saturating_sub(ours) as f64
                / clk,
        }
    }
}

/// user + nice + system + irq + softirq + steal of the `cpu` line of `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum()
}

/// utime + stime of a process (all its threads, dead ones included), in clock ticks.
fn stat_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the command: state(0) … utime(11) stime(12)
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Established TCP connections whose local port is the server's (server-side sockets).
fn established(port: u16) -> u64 {
    let want = format!(":{port:04X}");
    let Ok(s) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    s.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count() as u64
}

/// ListenOverflows, ListenDrops, SyncookiesSent (`/proc/net/netstat`) and RetransSegs
/// (`/proc/net/snmp`): counters of this network namespace.
fn net_counters() -> [u64; 4] {
    fn table(path: &str, prefix: &str, names: &[&str]) -> Vec<u64> {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = s.lines().filter(|l| l.starts_with(prefix));
        let (Some(head), Some(vals)) = (lines.next(), lines.next()) else {
            return vec![0; names.len()];
        };
        let head: Vec<&str> = head.split_whitespace().collect();
        let vals: Vec<&str> = vals.split_whitespace().collect();
        names
            .iter()
            .map(|n| {
                head.iter()
                    .position(|h| h == n)
                    .and_then(|i| vals.get(i)?.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
    let ext = table(
        "/proc/net/netstat",
        "TcpExt:",
        &["ListenOverflows", "ListenDrops", "SyncookiesSent"],
    );
    let tcp = table("/proc/net/snmp", "Tcp:", &["RetransSegs"]);
    [ext[0], ext[1], ext[2], tcp[0]]
}

fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} × {cpu}, {mem_gb:.0} GiB, Linux {}", kernel.trim())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_sha() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let sha = run(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{sha}-dirty") } else { sha }
}

// ---- the server process --------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct LogSummary {
    warn: u64,
    error: u64,
    /// The last few WARN/ERROR lines.
    last: Vec<String>,
    /// The first few ERROR lines.
    first_errors: Vec<String>,
}

struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<LogSummary>>,
}

impl Server {
    fn spawn(args: &Args, database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Server> {
        let mut cmd = if args.pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(&args.server_cpu).arg(&args.streamcore);
            c
        } else {
            Command::new(&args.streamcore)
        };
        cmd.arg("api")
            .args(["--http", "127.0.0.1:0", "--log-json"])
            .args(
                database_url
                    .map(|u| ["--database-url", u])
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(data_dir)
            // No ./streamcore.toml from wherever we were started.
            .current_dir(data_dir)
            // Only the listening line and problems; the routes measured here log
            // nothing per request at INFO anyway, but device registration does.
            .env("RUST_LOG", "warn,streamcore=info")
            // This load generator signs up thousands of users from one address.
            .env(
                "STREAMCORE_LIMITS__REGISTER_PER_ADDRESS_PER_MINUTE",
                "1000000",
            )
            .env("STREAMCORE_LIMITS__REGISTER_PER_MINUTE", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", args.streamcore.display()))?;
        // taskset execs the server: the child's pid is the server's.
        let pid = child.id();
        let stderr = child.stderr.take().context("server stderr")?;
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["fields"]["message"] == "control API listening"
                    && let Some(addr) = v["fields"]["http"].as_str().and_then(|a| a.parse().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                let level = v["level"].as_str().unwrap_or("");
                if matches!(level, "WARN" | "ERROR") || v.is_null() {
                    let mut l = lock(&log2);
                    if level == "ERROR" {
                        l.error += 1;
                        if l.first_errors.len() < 3 {
                            l.first_errors.push(line.clone());
                        }
                    } else {
                        l.warn += 1;
                    }
                    if l.last.len() >= 3 {
                        l.last.remove(0);
                    }
                    l.last.push(line);
                }
            }
        });
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => server.addr = addr,
            Err(_) => {
                let logs = server.log_summary();
                bail!(
                    "the server did not report its address; last lines: {:?}",
                    logs.last
                );
            }
        }
        if !server.addr.ip().is_loopback() {
            bail!("the server listens on {}, not loopback", server.addr);
        }
        Ok(server)
    }

    fn log_summary(&self) -> LogSummary {
        lock(&self.log).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a minimal PostgreSQL client (simple query protocol, trust auth) ----------------

#[derive(Debug, Clone)]
struct PgAdmin {
    host: String,
    port: u16,
    user: String,
    database: String,
}

impl PgAdmin {
    /// `postgres://user@host[:port]/database`; loopback hosts only, no password.
    fn parse(url: &str) -> anyhow::Result<PgAdmin> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("--pg-url must start with postgres://")?;
        let rest = rest.split('?').next().unwrap_or(rest);
        let (auth, hostpart) = rest.split_once('@').unwrap_or(("postgres", rest));
        if auth.contains(':') {
            bail!("--pg-url: only trust authentication is supported (no password)");
        }
        let (hostport, database) = hostpart.split_once('/').unwrap_or((hostpart, "postgres"));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().context("--pg-url port")?),
            None => (hostport.to_owned(), 5432),
        };
        let admin = PgAdmin {
            host,
            port,
            user: if auth.is_empty() { "postgres" } else { auth }.to_owned(),
            database: if database.is_empty() {
                "postgres"
            } else {
                database
            }
            .to_owned(),
        };
        let addr = admin.addr()?;
        if !addr.ip().is_loopback() {
            bail!("--pg-url must point at a loopback address, not {addr}");
        }
        Ok(admin)
    }

    fn addr(&self) -> anyhow::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .context("resolving the PostgreSQL host")
    }

    fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{database}",
            self.user, self.host, self.port
        )
    }

    /// Runs one statement on a connection of its own; returns the rows as text.
    fn query(&self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        self.connect(&self.database)?.query(sql)
    }

    fn connect(&self, database: &str) -> anyhow::Result<PgConn> {
        let mut s = TcpStream::connect_timeout(&self.addr()?, Duration::from_secs(10))
            .with_context(|| format!("connecting to PostgreSQL at {}", self.addr_text()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        // StartupMessage, protocol 3.0.
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", self.user.as_str()), ("database", database)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        s.write_all(&msg)?;
        loop {
            let (tag, payload) = read_msg(&mut s)?;
            match tag {
                b'R' => {
                    let code = payload
                        .get(..4)
                        .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        bail!(
                            "PostgreSQL at {} asks for a password (auth code {code}); use a trust-auth server",
                            self.addr_text()
                        );
                    }
                }
                b'E' => bail!("PostgreSQL: {}", pg_error(&payload)),
                b'Z' => break,
                _ => {}
            }
        }
        Ok(PgConn { s })
    }

    fn addr_text(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One connection, simple query protocol.
struct PgConn {
    s: TcpStream,
}

impl PgConn {
    /// Runs one statement (autocommit); returns the rows as text.
    fn query(&mut self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let mut q = vec![b'Q'];
        q.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        q.extend_from_slice(sql.as_bytes());
        q.push(0);
        self.s.write_all(&q)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, p) = read_msg(&mut self.s)?;
            match tag {
                b'D' => rows.push(data_row(&p).context("a malformed DataRow")?),
                b'E' => error = Some(pg_error(&p)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => bail!("PostgreSQL: {e} (in `{sql}`)"),
            None => Ok(rows),
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let _ = self.s.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

fn data_row(p: &[u8]) -> Option<Vec<Option<String>>> {
    let ncols = u16::from_be_bytes([*p.first()?, *p.get(1)?]) as usize;
    let mut at = 2;
    let mut row = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let b = p.get(at..at + 4)?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let end = at + len as usize;
            row.push(Some(String::from_utf8_lossy(p.get(at..end)?).into_owned()));
            at = end;
        }
    }
    Some(row)
}

fn read_msg(s: &mut TcpStream) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).context("reading from PostgreSQL")?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=64 << 20).contains(&len) {
        bail!("PostgreSQL sent a message of {len} bytes");
    }
    let mut payload = vec![0u8; len - 4];
    s.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

/// The message (`M`) field of an ErrorResponse.
fn pg_error(p: &[u8]) -> String {
    p.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "unknown error".into())
}
