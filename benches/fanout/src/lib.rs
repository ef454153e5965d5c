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

/// `KIND N` from a tool's command line (`audio|video` and a number of subscribers).
pub fn workload_from_args(tool: &str) -> anyhow::Result<(shape::Kind, usize)> {
    let usage = || format!("usage: {tool} audio|video N");
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("audio") => shape::Kind::Audio,
        Some("video") => shape::Kind::Video,
        _ => anyhow::bail!(usage()),
    };
    let n = args
        .next()
        .ok_or_else(|| anyhow::anyhow!(usage()))?
        .parse()
        .map_err(|_| anyhow::anyhow!("N must be a number of subscribers; {}", usage()))?;
    Ok((kind, n))
}
