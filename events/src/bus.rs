//! The bus both backends stand behind: batches in, deliveries out.

use tokio::sync::mpsc;

use crate::Topic;
use crate::inprocess::InProcessBus;
#[cfg(feature = "kafka")]
use crate::kafka::KafkaBus;

/// One event to publish: its topic, its ordering key and its serialised envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    /// Records with the same key reach every consumer in publish order.
    pub key: String,
    /// The envelope as JSON.
    pub payload: String,
    /// [`crate::EventKey::sign`] of `payload` (the `streamcore-signature` header).
    pub signature: Option<String>,
}

/// One record as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: Topic,
    pub key: String,
    pub payload: Vec<u8>,
    /// The record's `streamcore-signature` header, if it had one.
    pub signature: Option<String>,
    /// Kafka's partition and offset; the in-process bus numbers records per bus.
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// Some records of the batch may not have been accepted; publish it again.
    #[error("publishing failed: {0}")]
    Publish(String),
    #[error("subscribing failed: {0}")]
    Subscribe(String),
    #[error("receiving failed: {0}")]
    Receive(String),
    #[error("the bus is closed")]
    Closed,
    #[error("bad Kafka settings: {0}")]
    Config(String),
}

/// The event bus: in-process (embedded default) or Kafka. Cheap to clone.
#[derive(Clone)]
pub enum Bus {
    InProcess(InProcessBus),
    #[cfg(feature = "kafka")]
    Kafka(KafkaBus),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Bus {
    pub fn in_process() -> Bus {
        Bus::InProcess(InProcessBus::default())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::InProcess(_) => "in-process",
            #[cfg(feature = "kafka")]
            Bus::Kafka(_) => "kafka",
        }
    }

    /// Publishes a batch, in order. Returns when every record is accepted; on error
    /// the caller retries the whole batch (consumers drop the repeats by event id).
    pub async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        match self {
            Bus::InProcess(b) => b.publish(records).await,
            #[cfg(feature = "kafka")]
            Bus::Kafka(b) => b.publish(records).await,
        }
    }

    /// Creates the topics that do not exist yet (Kafka); nothing to do in-process.
    pub async fn ensure_topics(&self) -> Result<(), BusError> {
        match self {
            Bus::InProcess(_) => Ok(()),
            #[cfg(feature = "kafka")]
            Bus::Kafka(b) => b.ensure_topics().await,
        }
    }

    /// Joins consumer group `group` on `topics`. Every group receives every record;
    /// subscribing again with the same group replaces the earlier subscription.
    pub fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Subscription, BusError> {
        match self {
            Bus::InProcess(b) => Ok(Subscription::InProcess(b.subscribe(group, topics))),
            #[cfg(feature = "kafka")]
            Bus::Kafka(b) => Ok(Subscription::Kafka(Box::new(b.subscribe(group, topics)?))),
        }
    }
}

/// A consumer group's stream of deliveries.
pub enum Subscription {
    InProcess(mpsc::Receiver<Delivery>),
    #[cfg(feature = "kafka")]
    Kafka(Box<rdkafka::consumer::StreamConsumer>),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

impl Subscription {
    /// The next delivery. Kafka errors (broker away) are returned, not hidden; the
    /// consumer keeps its place and the next call continues.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        match self {
            Subscription::InProcess(rx) => rx.recv().await.ok_or(BusError::Closed),
            #[cfg(feature = "kafka")]
            Subscription::Kafka(c) => crate::kafka::next(c).await,
        }
    }

    /// A delivery already waiting, without waiting for one: what an in-process
    /// consumer drains at shutdown (its queue dies with the process). Kafka keeps what
    /// was not consumed for the group's next run: `None`.
    pub fn try_next(&mut self) -> Option<Delivery> {
        match self {
            Subscription::InProcess(rx) => rx.try_recv().ok(),
            #[cfg(feature = "kafka")]
            Subscription::Kafka(_) => None,
        }
    }

    /// Marks `d` handled: after a restart the group continues after it.
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub fn commit(&self, d: &Delivery) -> Result<(), BusError> {
        match self {
            Subscription::InProcess(_) => Ok(()),
            #[cfg(feature = "kafka")]
            Subscription::Kafka(c) => crate::kafka::commit(c, d),
        }
    }
}
