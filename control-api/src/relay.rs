//! `EventRelay`: publishes the outbox to the bus, in order, without losing anything.
//!
//! Loop: hold the relay lease (one publisher among nodes sharing a database), read the
//! oldest unpublished rows in `seq` order, publish them as one batch, and mark exactly
//! those rows published once the bus accepted all of them. A failed batch is published
//! again after a backoff, whole and in the same order: the bus keeps per-key order and
//! consumers drop the repeats by event id. While the broker is away, events simply
//! wait in the outbox; nothing is dropped and no state change waits for the broker.
//!
//! Wake-ups: `AppState::events_written` (a local commit), else every `poll`
//! (rows written by other nodes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use events::{Record, Topic};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::auth::now_millis;
use crate::state::AppState;
use crate::store::Store;

const LEASE: &str = "event-relay";

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per batch.
    pub batch: i64,
    /// How often to look for rows without a wake-up.
    pub poll: Duration,
    /// How long the lease lasts without renewal; longer than a publish can block.
    pub lease_ttl: Duration,
    /// Published rows are kept this long (for inspection), then deleted.
    pub retention: Duration,
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 500,
            poll: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters of one relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub published: AtomicU64,
    pub failed_batches: AtomicU64,
}

pub struct EventRelay {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub stats: Arc<RelayStats>,
}

impl std::fmt::Debug for EventRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRelay").finish_non_exhaustive()
    }
}

impl EventRelay {
    pub fn start(st: &AppState, config: RelayConfig) -> EventRelay {
        let (stop, rx) = watch::channel(false);
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(run(st.clone(), config, rx, stats.clone()));
        EventRelay { stop, task, stats }
    }

    /// Stops after the batch under way (bounded by `grace`); what is left stays in the
    /// outbox for the next start.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn run(
    st: AppState,
    cfg: RelayConfig,
    mut stop: watch::Receiver<bool>,
    stats: Arc<RelayStats>,
) {
    let holder = st.node_id.to_string();
    if let Err(e) = st.bus.ensure_topics().await {
        warn!(bus = st.bus.kind(), error = %e, "could not create topics yet; will retry");
    }
    let mut backoff = Duration::ZERO;
    let mut last_purge = tokio::time::Instant::now();
    let mut leader = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if !backoff.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
        }
        let now = now_millis();
        match st
            .db
            .take_lease(LEASE, &holder, now, cfg.lease_ttl.as_millis() as i64)
            .await
        {
            Ok(true) => {
                if !leader {
                    info!(node = %holder, "event relay is publishing");
                    leader = true;
                }
            }
            Ok(false) => {
                leader = false;
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            Err(e) => {
                error!(error = %e, "event relay: lease query failed");
                backoff = next_backoff(backoff, cfg.max_backoff);
                continue;
            }
        }
        let rows = match st.db.unpublished_events(cfg.batch).await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "event relay: reading the outbox failed");
                backoff = next_backoff(backoff, cfg.max_backoff);
                continue;
            }
        };
        if rows.is_empty() {
            backoff = Duration::ZERO;
            if last_purge.elapsed() >= Duration::from_secs(600) {
                last_purge = tokio::time::Instant::now();
                let before = now - cfg.retention.as_millis() as i64;
                if let Err(e) = st.db.purge_published_events(before).await {
                    warn!(error = %e, "event relay: purging old events failed");
                }
            }
            tokio::select! {
                _ = st.events_queued.notified() => {}
                _ = tokio::time::sleep(cfg.poll) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let mut records = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut unknown = Vec::new();
        for r in rows {
            match Topic::parse(&r.event.topic) {
                Some(topic) => {
                    seqs.push(r.seq);
                    records.push(Record {
                        topic,
                        key: r.event.key,
                        signature: Some(st.event_key.sign(r.event.payload.as_bytes())),
                        payload: r.event.payload,
                    });
                }
                None => {
                    // Only this code writes the outbox; a row it cannot route would
                    // otherwise block the relay forever.
                    error!(seq = r.seq, topic = %r.event.topic, id = %r.event.id, "outbox row names no known topic; skipped");
                    unknown.push(r.seq);
                }
            }
        }
        if !unknown.is_empty()
            && let Err(e) = st.db.mark_events_published(&unknown, now).await
        {
            error!(error = %e, "event relay: marking skipped rows failed");
        }
        match publish_and_mark(&st, &records, &seqs).await {
            Ok(()) => {
                stats
                    .published
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                if !backoff.is_zero() {
                    info!(
                        bus = st.bus.kind(),
                        "event bus reachable again; outbox draining"
                    );
                }
                backoff = Duration::ZERO;
            }
            Err(e) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                let pending = st.db.count_unpublished_events().await.unwrap_or(-1);
                warn!(bus = st.bus.kind(), error = %e, pending, "event bus unavailable; events wait in the outbox");
                // A broker that restarted empty has lost its topics.
                let _ = st.bus.ensure_topics().await;
                backoff = next_backoff(backoff, cfg.max_backoff);
            }
        }
    }
}

async fn publish_and_mark(st: &AppState, records: &[Record], seqs: &[i64]) -> Result<(), String> {
    st.bus.publish(records).await.map_err(|e| e.to_string())?;
    // Published but not marked (database down now) means they go out again later:
    // a repeat, which consumers drop, never a loss.
    st.db
        .mark_events_published(seqs, now_millis())
        .await
        .map_err(|e| format!("marking published: {e}"))?;
    Ok(())
}

fn next_backoff(b: Duration, max: Duration) -> Duration {
    if b.is_zero() {
        Duration::from_millis(100)
    } else {
        (b * 2).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let max = Duration::from_secs(5);
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            b = next_backoff(b, max);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
