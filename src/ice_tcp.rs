//! ICE-TCP (RFC 6544) for one media worker: a passive TCP listener whose connections
//! carry RFC 4571 frames (a 2-byte big-endian length, then one STUN, DTLS, RTP or RTCP
//! packet). For clients whose network drops UDP.
//!
//! Each connection is a task that hands its frames to the worker loop as packets from
//! the connection's remote address ([`TcpEvent::Frame`]); the worker's transmits to
//! that address go back out as frames ([`IceTcp::send`]). The media core sees one more
//! transport, nothing else: demultiplexing, ICE and DTLS are the same as over UDP.
//!
//! Invariants: the worker never waits on a connection (a connection whose queue is
//! full loses the packet, as a congested UDP path would, instead of queueing media
//! without bound); a connection that sends nothing for [`IDLE_TIMEOUT`] (consent
//! checks come every few seconds) or a frame longer than [`MAX_FRAME`] is closed; at
//! most [`MAX_CONNECTIONS`] per worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

/// Largest frame taken: a packet is at most an MTU; anything far larger is not ICE.
pub const MAX_FRAME: usize = 8 * 1024;
/// A connection quiet this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one worker holds at most.
pub const MAX_CONNECTIONS: usize = 4096;
/// Frames queued towards one connection at most.
const SEND_QUEUE: usize = 1024;

/// What the connections tell the worker loop.
#[derive(Debug)]
pub enum TcpEvent {
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

/// The connections of one worker's listener.
pub struct IceTcp {
    local: SocketAddr,
    conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    events_tx: mpsc::Sender<TcpEvent>,
    /// Frames and closes from every connection, in arrival order per connection.
    pub events: mpsc::Receiver<TcpEvent>,
}

impl IceTcp {
    /// Takes a bound, non-blocking listener; must run inside the worker's runtime.
    /// The listener is the caller's to accept on ([`IceTcp::adopt`] what it accepts).
    pub fn new(listener: std::net::TcpListener) -> std::io::Result<(TcpListener, IceTcp)> {
        let listener = TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        let (events_tx, events) = mpsc::channel(4096);
        let conns = IceTcp {
            local,
            conns: HashMap::new(),
            events_tx,
            events,
        };
        Ok((listener, conns))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts serving an accepted connection.
    pub fn adopt(&mut self, stream: TcpStream, remote: SocketAddr) {
        if self.conns.len() >= MAX_CONNECTIONS {
            debug!(%remote, "ICE-TCP connection refused: at the limit");
            return;
        }
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        self.conns.insert(remote, tx);
        let (read, write) = stream.into_split();
        tokio::spawn(read_frames(read, remote, self.events_tx.clone()));
        tokio::spawn(write_frames(write, rx));
    }

    /// Queues `packet` as one frame to the connection from `to`; false if there is no
    /// such connection or its queue is full.
    pub fn send(&mut self, to: SocketAddr, packet: &[u8]) -> bool {
        let Some(conn) = self.conns.get(&to) else {
            return false;
        };
        let mut frame = Vec::new();
        if media_core::framing::frame(packet, &mut frame).is_none() {
            return false;
        }
        match conn.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.conns.remove(&to);
                false
            }
        }
    }

    /// Forgets a connection its reader found closed (its writer ends with the queue).
    pub fn closed(&mut self, remote: SocketAddr) {
        self.conns.remove(&remote);
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

async fn read_frames(
    mut read: tokio::net::tcp::OwnedReadHalf,
    remote: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE_TIMEOUT, read.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 || len > MAX_FRAME {
            debug!(%remote, len, "ICE-TCP connection closed: not an RFC 4571 frame");
            break;
        }
        let mut data = vec![0u8; len];
        match tokio::time::timeout(IDLE_TIMEOUT, read.read_exact(&mut data)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        if events.send(TcpEvent::Frame(remote, data)).await.is_err() {
            return;
        }
    }
    let _ = events.send(TcpEvent::Closed(remote)).await;
}

async fn write_frames(mut write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if write.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
