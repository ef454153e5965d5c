//! # streamcore: the binary's library half
//!
//! Settings ([`config`]), the tokio driver around the media core ([`media`]), the
//! recorder's ([`recording`]) and the transcode worker's ([`worker`]) drivers,
//! Prometheus metrics ([`metrics`]) and the assembly of a node ([`server`]). `main.rs` only parses
//! the command line and calls into this crate, so tests start the same server in-process.

pub mod cluster;
pub mod config;
pub mod conn_slots;
pub mod http_listener;
pub mod ice_tcp;
pub mod load;
pub mod malloc_arenas;
pub mod media;
pub mod metrics;
pub mod recording;
pub mod recv_buffer;
pub mod relay;
pub mod room_events;
pub mod server;
pub mod tls;
pub mod turn;
pub mod udp_batch;
pub mod worker;

/// Installs the log subscriber: text or JSON lines on stderr, filtered by `level`
/// (overridden by `RUST_LOG`).
pub fn init_logging(json: bool, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
