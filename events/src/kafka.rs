//! Kafka through `rdkafka` (bundled librdkafka).
//!
//! The producer is idempotent with `acks=all`, so librdkafka's own retries neither
//! reorder nor duplicate records within a partition; records of one key share a
//! partition. While the broker is away, `publish` waits up to `message_timeout` and
//! then fails, and the relay publishes the batch again once the broker is back.
//! Topics are created at start-up (brokers such as tansu do not create them on use)
//! and again whenever a publish fails, since a broker that restarted empty lost them.
//!
//! Every client (producer, consumers, admin) connects as [`KafkaSecurity`] says: plain
//! TCP, TLS that verifies the brokers' certificates (and their names), and optionally a
//! SASL/SCRAM login, so a broker can refuse producers and readers it does not know.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::{debug, info, warn};

use crate::Topic;
use crate::bus::{BusError, Delivery, Record};

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Names this node in broker logs.
    pub client_id: String,
    /// Partitions of each topic StreamCore creates.
    pub partitions: i32,
    /// Replication factor of each topic StreamCore creates.
    pub replication: i32,
    /// How long a record may wait for the broker before `publish` fails.
    pub message_timeout: Duration,
    /// Longest a consumer's fetch waits at the broker for new records. A broker that
    /// answers a fetch only when this runs out (tansu does) adds it to every hop, so it
    /// bounds remote-control latency; a broker that answers as soon as records arrive
    /// only polls this often while idle.
    pub fetch_wait: Duration,
    /// TLS and login towards the brokers.
    pub security: KafkaSecurity,
}

/// How clients reach the brokers. The default is plain TCP without a login, for a
/// broker on a private network.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// TLS to the brokers; their certificates must chain to `ca_file` (or, without
    /// one, to the system's CAs) and name the host connected to.
    pub tls: bool,
    /// PEM CA certificates to trust for the brokers.
    pub ca_file: Option<PathBuf>,
    /// A SASL/SCRAM login.
    pub scram: Option<ScramLogin>,
}

/// A SASL/SCRAM login (RFC 5802, RFC 7677): the password never crosses the wire.
#[derive(Clone)]
pub struct ScramLogin {
    pub mechanism: ScramMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ScramLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`, as Kafka names them.
    pub fn parse(s: &str) -> Option<ScramMechanism> {
        match s.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }
}

impl KafkaSecurity {
    /// librdkafka's `security.protocol`.
    fn protocol(&self) -> &'static str {
        match (self.tls, self.scram.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    fn apply(&self, c: &mut ClientConfig) {
        c.set("security.protocol", self.protocol());
        if self.tls {
            // Verify the broker's name as well as its chain (librdkafka's default, said
            // here so that no default change weakens it).
            c.set("ssl.endpoint.identification.algorithm", "https");
            match &self.ca_file {
                Some(f) => c.set("ssl.ca.location", f.to_string_lossy().as_ref()),
                // The bundled OpenSSL knows no system store of its own: look for the
                // usual CA bundle paths.
                None => c.set("ssl.ca.location", "probe"),
            };
        }
        if let Some(login) = &self.scram {
            c.set("sasl.mechanism", login.mechanism.name())
                .set("sasl.username", &login.username)
                .set("sasl.password", &login.password);
        }
    }
}

impl KafkaConfig {
    pub fn new(brokers: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.to_owned(),
            client_id: "streamcore".into(),
            partitions: 3,
            replication: 1,
            message_timeout: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(100),
            security: KafkaSecurity::default(),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Come back quickly after a broker restart.
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("log_level", "3");
        self.security.apply(&mut c);
        c
    }
}

#[derive(Clone)]
pub struct KafkaBus {
    config: KafkaConfig,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose
    /// broker lost its producer state, e.g. a broker that restarted empty).
    producer: Arc<RwLock<FutureProducer>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer, BusError> {
    config
        .base()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("retry.backoff.ms", "100")
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        .create()
        .map_err(|e| BusError::Config(e.to_string()))
}

impl KafkaBus {
    /// Creates the clients; does not need the broker to be up yet.
    pub fn new(config: KafkaConfig) -> Result<KafkaBus, BusError> {
        let producer = new_producer(&config)?;
        let admin: AdminClient<DefaultClientContext> = config
            .base()
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(KafkaBus {
            config,
            producer: Arc::new(RwLock::new(producer)),
            admin: Arc::new(admin),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn producer(&self) -> Result<FutureProducer, BusError> {
        self.producer
            .read()
            .map(|p| p.clone())
            .map_err(|_| BusError::Closed)
    }

    /// After a failed publish: a producer in a fatal state never recovers, so it is
    /// replaced (the caller publishes the batch again, under a new producer id).
    fn recover(&self, p: &FutureProducer) {
        if let Some((code, reason)) = p.client().fatal_error() {
            warn!(?code, %reason, "Kafka producer failed fatally; starting a new one");
            match new_producer(&self.config) {
                Ok(fresh) => {
                    if let Ok(mut slot) = self.producer.write() {
                        *slot = fresh;
                    }
                }
                Err(e) => warn!(error = %e, "could not start a new Kafka producer"),
            }
        }
    }

    pub async fn ensure_topics(&self) -> Result<(), BusError> {
        let topics: Vec<NewTopic<'_>> = Topic::ALL
            .iter()
            .map(|t| {
                NewTopic::new(
                    t.name(),
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(5)))
            .operation_timeout(Some(Timeout::After(Duration::from_secs(5))));
        let results = self
            .admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(|e| BusError::Publish(format!("creating topics: {e}")))?;
        for r in results {
            match r {
                Ok(name) => info!(topic = %name, "Kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Publish(format!("creating topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }

    pub async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        let producer = self.producer()?;
        let r = publish_with(&producer, records).await;
        if r.is_err() {
            self.recover(&producer);
        }
        r
    }

    /// Flushes queued records (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Ok(p) = self.producer() {
            let _ = p.flush(Timeout::After(timeout));
        }
    }

    pub fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<StreamConsumer, BusError> {
        let consumer: StreamConsumer = self
            .config
            .base()
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            // Offsets are stored only once the record was handled (`commit`).
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "fetch.wait.max.ms",
                self.config.fetch_wait.as_millis().to_string(),
            )
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        let names: Vec<&str> = topics.iter().map(|t| t.name()).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| BusError::Subscribe(e.to_string()))?;
        Ok(consumer)
    }
}

async fn publish_with(producer: &FutureProducer, records: &[Record]) -> Result<(), BusError> {
    let mut inflight = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::to(r.topic.name())
            .key(r.key.as_str())
            .payload(r.payload.as_str());
        if let Some(sig) = &r.signature {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: crate::SIGNATURE_HEADER,
                value: Some(sig.as_str()),
            }));
        }
        // The local queue is large (100k records); when it is full, wait for room.
        let fut = loop {
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((e, back)) => {
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        return Err(BusError::Publish(e.to_string()));
                    }
                    record = back;
                    producer.poll(Timeout::After(Duration::from_millis(10)));
                }
            }
        };
        inflight.push(fut);
    }
    let mut first_error = None;
    for f in inflight {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                first_error.get_or_insert_with(|| "the producer was dropped".into());
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => {
            debug!(error = %e, "Kafka publish failed");
            Err(BusError::Publish(e))
        }
    }
}

pub(crate) async fn next(c: &StreamConsumer) -> Result<Delivery, BusError> {
    loop {
        let m = c
            .recv()
            .await
            .map_err(|e| BusError::Receive(e.to_string()))?;
        let Some(topic) = Topic::parse(m.topic()) else {
            continue;
        };
        return Ok(Delivery {
            topic,
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            signature: m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == crate::SIGNATURE_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            }),
            partition: m.partition(),
            offset: m.offset(),
        });
    }
}

pub(crate) fn commit(c: &StreamConsumer, d: &Delivery) -> Result<(), BusError> {
    // librdkafka stores `offset + 1`, the next record to read.
    c.store_offset(d.topic.name(), d.partition, d.offset)
        .map_err(|e| BusError::Receive(e.to_string()))
}
