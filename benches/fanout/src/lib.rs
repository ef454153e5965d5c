//! # streamcore-fanout
//!
//! B0's fan-out harness: one publisher and N subscribers (str0m client `Rtc`s) wired
//! to one `media_core::Sfu` in memory, in virtual time ([`inmem`]), with the
//! synthetic audio and video sources ([`shape`]) and the counting allocator
//! ([`alloc`]) it reports heap operations with.
//!
//! `sc-instructions` runs one fixed fan-out so that `valgrind --tool=callgrind` can
//! count the instructions the SFU spends per forwarded packet: a figure that repeats
//! exactly on a noisy machine, unlike time. `tests/instructions.rs` (in the README's
//! test command) fails when that figure grows more than 10 % over the committed
//! baseline in `instructions-baseline.json`.
//!
//! Invariants: nothing here reads the wall clock except to time SFU calls; every
//! call into the SFU goes through [`inmem::InMem`]'s timing wrapper, which is where
//! callgrind's collection is switched on.

pub mod alloc;
pub mod inmem;
pub mod shape;
