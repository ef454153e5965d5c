//! Listening history: every `now.playing` change of a user's devices becomes a play.
//!
//! - [`tracker`] turns one device's states into plays (plain, synchronous, tested with
//!   made-up times);
//! - [`consumer`] reads `now.playing` from the bus in its own consumer group, as an
//!   outside consumer would, so it works on Kafka and on the in-process bus alike; it
//!   stores each device's cursor and its plays in one transaction, over the cursor's
//!   version, so a restarted or rebalanced group continues where it stopped and a
//!   replayed topic counts nothing twice;
//! - `routes::history` serves the plays and the statistics
//!   (`GET /api/v1/me/plays`, `GET /api/v1/me/stats`), computed by the database.

pub mod consumer;
pub mod tracker;

pub use consumer::start;
