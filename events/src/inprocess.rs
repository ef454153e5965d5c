//! The in-process bus: the embedded default, with Kafka's delivery semantics inside
//! one process. Each consumer group has one bounded queue; a full queue makes
//! `publish` wait (back-pressure, like a consumer lagging behind a log), so nothing
//! is dropped while the process lives. Durability across restarts comes from the
//! outbox, not from the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::Topic;
use crate::bus::{BusError, Delivery, Record};

/// Records a group may have queued before `publish` waits for it.
const GROUP_QUEUE: usize = 4096;

struct Group {
    topics: Vec<Topic>,
    tx: mpsc::Sender<Delivery>,
}

#[derive(Clone, Default)]
pub struct InProcessBus {
    groups: Arc<Mutex<HashMap<String, Group>>>,
    next_offset: Arc<AtomicI64>,
}

impl InProcessBus {
    pub async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        for r in records {
            let targets: Vec<(String, mpsc::Sender<Delivery>)> = {
                let groups = self.groups.lock().map_err(|_| BusError::Closed)?;
                groups
                    .iter()
                    .filter(|(_, g)| g.topics.contains(&r.topic))
                    .map(|(name, g)| (name.clone(), g.tx.clone()))
                    .collect()
            };
            let offset = self.next_offset.fetch_add(1, Ordering::Relaxed);
            for (name, tx) in targets {
                let d = Delivery {
                    topic: r.topic,
                    key: r.key.clone(),
                    payload: r.payload.as_bytes().to_vec(),
                    signature: r.signature.clone(),
                    partition: 0,
                    offset,
                };
                if tx.send(d).await.is_err() {
                    // The consumer went away: forget the group, unless it re-subscribed.
                    if let Ok(mut groups) = self.groups.lock()
                        && groups.get(&name).is_some_and(|g| g.tx.is_closed())
                    {
                        groups.remove(&name);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn subscribe(&self, group: &str, topics: &[Topic]) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE);
        if let Ok(mut groups) = self.groups.lock() {
            groups.insert(
                group.to_owned(),
                Group {
                    topics: topics.to_vec(),
                    tx,
                },
            );
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;

    fn rec(topic: Topic, key: &str, n: usize) -> Record {
        Record {
            topic,
            key: key.into(),
            payload: format!("{key}-{n}"),
            signature: None,
        }
    }

    #[tokio::test]
    async fn every_group_gets_its_topics_in_order() {
        let bus = Bus::in_process();
        let mut a = bus.subscribe("a", &[Topic::DeviceStatus]).unwrap();
        let mut b = bus
            .subscribe("b", &[Topic::DeviceStatus, Topic::NowPlaying])
            .unwrap();
        let batch: Vec<Record> = (0..10)
            .map(|i| {
                let t = if i % 2 == 0 {
                    Topic::DeviceStatus
                } else {
                    Topic::NowPlaying
                };
                rec(t, "k", i)
            })
            .collect();
        bus.publish(&batch).await.unwrap();
        for i in (0..10).step_by(2) {
            let d = a.next().await.unwrap();
            assert_eq!(d.payload, format!("k-{i}").into_bytes());
        }
        for i in 0..10 {
            let d = b.next().await.unwrap();
            assert_eq!(d.payload, format!("k-{i}").into_bytes());
            b.commit(&d).unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_group_queue_waits_instead_of_dropping() {
        let bus = Bus::in_process();
        let mut sub = bus.subscribe("slow", &[Topic::RoomEvents]).unwrap();
        let n = GROUP_QUEUE + 100;
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let batch: Vec<Record> = (0..n).map(|i| rec(Topic::RoomEvents, "r", i)).collect();
                bus.publish(&batch).await
            })
        };
        for i in 0..n {
            let d = sub.next().await.unwrap();
            assert_eq!(d.payload, format!("r-{i}").into_bytes());
        }
        publisher.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_dropped_consumer_does_not_block_publishers() {
        let bus = Bus::in_process();
        drop(bus.subscribe("gone", &[Topic::RoomEvents]).unwrap());
        bus.publish(&[rec(Topic::RoomEvents, "r", 0)])
            .await
            .unwrap();
        bus.publish(&[rec(Topic::RoomEvents, "r", 1)])
            .await
            .unwrap();
    }
}
