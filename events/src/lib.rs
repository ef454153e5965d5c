//! # events: what happened, in one envelope, on one bus
//!
//! Every event StreamCore emits is an [`Envelope`] (versioned JSON: id, type, time,
//! source, subject, data) of one [`EventType`], and every type belongs to exactly one
//! [`Topic`]. Producers never talk to the bus directly: the control plane writes
//! events to an outbox table in the same transaction as the state change, and a relay
//! hands them to the [`Bus`] in outbox order (see `control-api`'s `relay` module).
//!
//! The [`Bus`] is either the in-process bus (the embedded default) or Kafka through
//! `rdkafka`; both have the same interface and the same delivery semantics:
//! - `publish` returns once every record of the batch is accepted (Kafka: acknowledged
//!   by all in-sync replicas); an error means *some* may not have been, and the caller
//!   publishes the whole batch again;
//! - records with the same key are delivered to a consumer group in publish order;
//! - delivery is at least once: consumers drop repeats by event id ([`SeenIds`]);
//! - every consumer group receives every record of the topics it subscribed to.
//!
//! Records carry an HMAC of their payload ([`EventKey`], `signing`): consumers that
//! act on an event (command a device, run a job) act only on records signed with the
//! cluster's key.
//!
//! Invariant: this crate knows nothing of databases, HTTP or media; it moves bytes
//! with a topic and a key.

mod bus;
mod envelope;
mod inprocess;
#[cfg(feature = "kafka")]
mod kafka;
mod signing;

pub use bus::{Bus, BusError, Delivery, Record, Subscription};
pub use envelope::{
    ENVELOPE_VERSION, Envelope, EventType, SeenIds, Topic, parse_rfc3339_millis, rfc3339_millis,
};
pub use inprocess::InProcessBus;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaConfig, KafkaSecurity, ScramLogin, ScramMechanism};
pub use signing::{EventKey, SIGNATURE_HEADER};
