//! `streamcore`: one binary for every role. See `streamcore --help`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use media_core::RoomId;
use signaling::{Grants, JoinTokenSigner};
use streamcore::config::{
    EventOverrides, LogOverrides, MediaOverrides, Overrides, Settings, parse_duration,
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
    #[arg(long)]
    identity: String,
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
        }
    }
}

fn main() -> anyhow::Result<()> {
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
            println!("{}", signer.sign(&room, &a.identity, grants, a.ttl)?);
            Ok(())
        }
        Command::Api(args) => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            streamcore::init_logging(settings.log.json, &settings.log.level);
            runtime()?.block_on(async {
                let server = streamcore::server::start_api(&settings).await?;
                tracing::info!(http = %server.http_addr, "control API listening");
                wait_for_signal().await;
                server.shutdown().await;
                Ok(())
            })
        }
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
        Command::Config {
            command: ConfigCommand::Print(args),
        } => {
            let settings = Settings::load(args.common.config.as_deref(), &args.overrides())?;
            print!("{}", settings.to_toml()?);
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let server = streamcore::server::start(&settings).await?;
    tracing::info!(
        "publish with WHIP at http://{0}/whip/<room>, play with WHEP at http://{0}/whep/<room>",
        server.http_addr
    );
    wait_for_signal().await;
    // A second signal during the drain exits at once.
    server
        .shutdown(settings.shutdown_grace(), wait_for_signal())
        .await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
