//! `streamcore`: one binary for every role. See `streamcore --help`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use media_core::RoomId;
use signaling::{Grants, JoinTokenSigner};
use streamcore::config::{
    EventOverrides, LogOverrides, MediaOverrides, Overrides, Settings, TlsOverrides, parse_duration,
};

#[derive(Parser)]
#[command(name = "streamcore", version, about = "StreamCore media server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole server in one process (SFU, signaling) on embedded defaults.
    Serve(ServeArgs),
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run only the control API (accounts, devices, rooms, join tokens) over HTTP.
    Api(ServeArgs),
    /// Run only a transcode worker (jobs from `transcode.jobs`).
    Worker(ServeArgs),
    /// Transcode one audio file to loudness-normalised Ogg Opus, with a progress bar.
    Transcode(TranscodeArgs),
    /// Apply the database migrations and exit.
    Migrate(ServeArgs),
    /// Operator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account, or make an existing account admin. The password is
    /// read from STREAMCORE_ADMIN_PASSWORD, else from the first line of stdin.
    Create {
        #[command(flatten)]
        serve: ServeArgs,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Print the mail waiting in the outbox, whole (reset links included), for an
    /// operator without SMTP to pass on. The admin API lists it with secrets redacted.
    Mail {
        #[command(flatten)]
        serve: ServeArgs,
        /// Only the mail to this address.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Args, Clone, Default)]
struct CommonArgs {
    /// A TOML settings file (default: ./streamcore.toml when present).
    #[arg(long, env = "STREAMCORE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the node's state (signing key, spool).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// HTTP listen address (WHIP/WHEP, health, metrics).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Serve /metrics on its own listener.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// IP the UDP media sockets bind (default: the IP of --http).
    #[arg(long)]
    media_bind: Option<IpAddr>,
    /// First UDP media port; worker i uses port+i (0: any free port).
    #[arg(long)]
    media_port: Option<u16>,
    /// Media workers, one UDP port each (0: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// IP clients reach the media ports at (repeat for several); needed behind NAT.
    #[arg(long)]
    advertise: Vec<IpAddr>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
    /// Control-plane database: postgres://… or a SQLite file (default: DATA_DIR/streamcore.db).
    #[arg(long)]
    database_url: Option<String>,
    /// Kafka bootstrap servers for events (default: the in-process bus).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with = "tls")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// `self-signed`: HTTPS with a certificate the node makes and keeps for its
    /// addresses (a phone on the LAN gets camera and microphone; see the README).
    #[arg(long, value_parser = ["self-signed"])]
    tls: Option<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a join token signed with this node's key.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long)]
    room: String,
    /// Unique among the room's participants: a second one with it replaces the first.
    #[arg(long)]
    identity: String,
    /// The name other participants see (default: the identity).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    publish: bool,
    #[arg(long)]
    subscribe: bool,
    #[arg(long)]
    publish_data: bool,
    #[arg(long)]
    record: bool,
    /// Lifetime, e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Args)]
struct TranscodeArgs {
    /// Any audio file StreamCore decodes (FLAC, WAV, MP3, AAC/M4A, Ogg Vorbis/Opus, WebM).
    input: PathBuf,
    /// The Ogg Opus file to write.
    output: PathBuf,
    /// Target integrated loudness (default −14 LUFS; −16 is the podcast norm).
    #[arg(long, allow_negative_numbers = true, default_value_t = -14.0)]
    target_lufs: f64,
    /// Opus bitrate in b/s (default 96000 stereo, 64000 mono).
    #[arg(long)]
    bitrate: Option<i32>,
    /// Also write the waveform peaks (JSON) here, and an SVG beside it.
    #[arg(long)]
    waveform: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective settings (defaults, file, environment and flags merged).
    Print(ServeArgs),
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            http: self.http,
            data_dir: self.common.data_dir.clone(),
            metrics: self.metrics,
            database_url: self.database_url.clone(),
            media: MediaOverrides {
                bind: self.media_bind,
                port: self.media_port,
                workers: self.workers,
                advertise: (!self.advertise.is_empty()).then(|| self.advertise.clone()),
            },
            log: LogOverrides {
                json: self.log_json.then_some(true),
            },
            events: EventOverrides {
                kafka_brokers: self.kafka_brokers.clone(),
            },
            tls: TlsOverrides {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                self_signed: self.tls.is_some().then_some(true),
            },
        }
    }
}

fn main() -> anyhow::Result<()> {
    streamcore::malloc_arenas::limit();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            streamcore::init_logging(settings.log.json, &settings.log.level);
            runtime()?.block_on(serve(settings))
        }
        Command::Token {
            command: TokenCommand::Create(a),
        } => {
            let overrides = Overrides {
                data_dir: a.common.data_dir.clone(),
                ..Overrides::default()
            };
            let settings = Settings::load(a.common.config.as_deref(), &overrides)?;
            let room = RoomId::parse(&a.room).map_err(|e| anyhow::anyhow!("--room: {e}"))?;
            if !(a.publish || a.subscribe || a.publish_data || a.record) {
                anyhow::bail!(
                    "grant at least one of --publish, --subscribe, --publish-data, --record"
                );
            }
            let signer = JoinTokenSigner::load_or_create(&settings.token_key_path())?;
            let grants = Grants {
                publish: a.publish,
                subscribe: a.subscribe,
                publish_data: a.publish_data,
                record: a.record,
            };
            let scope = signaling::token::TokenScope {
                name: a.name,
                ..Default::default()
            };
            println!(
                "{}",
                signer.sign_scoped(&room, &a.identity, grants, a.ttl, scope)?
            );
            Ok(())
        }
        Command::Api(args) => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            streamcore::init_logging(settings.log.json, &settings.log.level);
            runtime()?.block_on(async {
                let mut signals = StopSignals::install();
                let server = streamcore::server::start_api(&settings).await?;
                tracing::info!(http = %server.http_addr, "control API listening");
                signals.recv().await;
                server.shutdown().await;
                Ok(())
            })
        }
        Command::Worker(args) => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            streamcore::init_logging(settings.log.json, &settings.log.level);
            runtime()?.block_on(async {
                let mut signals = StopSignals::install();
                let node = streamcore::server::start_worker_node(&settings).await?;
                tracing::info!(node = %node.api.node_id, "transcode worker running");
                signals.recv().await;
                node.shutdown(settings.shutdown_grace()).await;
                Ok(())
            })
        }
        Command::Transcode(a) => transcode(a),
        Command::Migrate(args) => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            streamcore::init_logging(settings.log.json, &settings.log.level);
            runtime()?.block_on(async {
                let db = control_api::store::Db::connect(&settings.database_url()).await?;
                control_api::store::Store::migrate(&db).await?;
                println!("migrations applied ({})", db.backend());
                Ok(())
            })
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    serve,
                    email,
                    display_name,
                },
        } => {
            let settings = Settings::load(serve.common.config.as_deref(), &serve.overrides())?;
            let password = match std::env::var("STREAMCORE_ADMIN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            runtime()?.block_on(async {
                let db = control_api::store::Db::connect(&settings.database_url()).await?;
                let outcome =
                    control_api::admin::create_admin(&db, &email, &password, &display_name).await?;
                println!("{outcome}");
                Ok(())
            })
        }
        Command::Admin {
            command: AdminCommand::Mail { serve, to },
        } => {
            let settings = Settings::load(serve.common.config.as_deref(), &serve.overrides())?;
            runtime()?.block_on(async {
                let db = control_api::store::Db::connect(&settings.database_url()).await?;
                let waiting = control_api::store::Store::unsent_mail(&db, 1000).await?;
                let to = to.map(|t| t.trim().to_lowercase());
                let mut shown = 0;
                for m in waiting
                    .iter()
                    .filter(|m| to.as_deref().is_none_or(|t| m.to_addr == t))
                {
                    println!("To: {}\nSubject: {}\n\n{}\n", m.to_addr, m.subject, m.body);
                    shown += 1;
                }
                eprintln!("{shown} unsent mail(s)");
                Ok(())
            })
        }
        Command::Config {
            command: ConfigCommand::Print(args),
        } => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            print!("{}", settings.to_toml()?);
            Ok(())
        }
    }
}

/// `streamcore transcode`: one file, a progress bar on stderr, a summary on stdout.
fn transcode(a: TranscodeArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    if !(-40.0..=-5.0).contains(&a.target_lufs) {
        anyhow::bail!("--target-lufs {} is outside -40…-5", a.target_lufs);
    }
    let options = transcoder::TranscodeOptions {
        target: transcoder::Target {
            lufs: a.target_lufs,
            ..transcoder::Target::MUSIC
        },
        bitrate: a.bitrate,
        waveform_buckets: 1000,
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_stage = String::new();
    let progress = |stage: &str, pct: u8| {
        let mut err = std::io::stderr().lock();
        if tty {
            let filled = usize::from(pct.min(100)) * 30 / 100;
            let _ = write!(
                err,
                "\r[{}{}] {pct:>3}% {stage:<10}",
                "#".repeat(filled),
                "-".repeat(30 - filled)
            );
            if pct >= 100 {
                let _ = writeln!(err);
            }
        } else if stage != last_stage {
            let _ = writeln!(err, "{pct:>3}% {stage}");
            last_stage = stage.to_owned();
        }
        let _ = err.flush();
    };
    let tmp = a.output.with_extension("opus.part");
    let r = match transcoder::transcode_file(&a.input, &tmp, &options, progress) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if tty {
                eprintln!();
            }
            return Err(anyhow::anyhow!("{}: {e}", a.input.display()));
        }
    };
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    if let Some(path) = &a.waveform {
        std::fs::write(path, serde_json::to_vec(&r.waveform)?)
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::write(
            path.with_extension("svg"),
            transcoder::svg(&r.waveform, 1000, 120),
        )
        .with_context(|| format!("writing {}", path.with_extension("svg").display()))?;
    }
    let l = &r.loudness;
    println!(
        "{}: {:.2} s, {} {} Hz, {} channel(s); {:.1} LUFS → {:.1} LUFS, true peak {:.1} dBTP",
        a.output.display(),
        r.duration_ms / 1000.0,
        r.input_codec,
        r.input_rate,
        r.channels,
        l.input.integrated_lufs,
        l.output.integrated_lufs,
        l.output.true_peak_dbtp
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mut signals = StopSignals::install();
    let server = streamcore::server::start(&settings).await?;
    let url = &server.public_url;
    println!(
        "StreamCore is running: open {url}/ in a browser (WHIP at {url}/whip/<room>, WHEP at {url}/whep/<room>)"
    );
    if let Some(tls) = &server.tls {
        println!("HTTPS certificate SHA-256 fingerprint: {}", tls.fingerprint);
        if let Some((ca, fp)) = &tls.ca {
            println!(
                "local CA for phones to trust: {} (SHA-256 {fp})",
                ca.display()
            );
        }
    }
    tokio::select! {
        () = signals.recv() => {}
        () = server.drain_requested() => tracing::info!("an operator asked the cluster to drain this node"),
    }
    // A second signal during the drain exits at once.
    server
        .shutdown(settings.shutdown_grace(), signals.recv())
        .await;
    Ok(())
}

/// SIGTERM and Ctrl-C, listened for from the moment this is made: made before the node
/// says it is running, so a signal that comes right after drains the node instead of
/// the default kill.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// The next SIGTERM or Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
