//! What the SFU keeps per subscriber: `sc-heap audio|video N`. A publisher streams
//! for 1 s, N subscribers join and receive for 4 s (their keyframe, str0m's buffers
//! at size), then the subscribers' own client `Rtc`s are dropped so that what is
//! left of the growth is the SFU's: live heap bytes per subscriber, counted by the
//! allocator (the lower bound of RSS: malloc's own retention comes on top). The
//! same measurement as B0's heap column, without the rest of B0.

use std::time::Duration;

use serde_json::json;
use streamcore_fanout::alloc::{self, CountingAlloc};
use streamcore_fanout::inmem::InMem;
use streamcore_fanout::shape::Kind;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> anyhow::Result<()> {
    let (kind, n) = streamcore_fanout::workload_from_args("sc-heap")?;
    str0m::crypto::from_feature_flags().install_process_default();
    let mut h = InMem::new(kind, 0)?;
    h.run(Duration::from_secs(1));
    let live0 = alloc::live_bytes();
    h.add_subscribers(n)?;
    h.run(Duration::from_secs(4));
    let w = h.measure(Duration::from_secs(2));
    h.drop_subscriber_clients();
    let live1 = alloc::live_bytes();
    println!(
        "{}",
        json!({
            "kind": if kind == Kind::Audio { "audio" } else { "video" },
            "subscribers": n,
            "heap_bytes_per_subscriber": (live1 - live0) / n.max(1) as i64,
            "forwarded": w.forwarded(),
            "delivered": w.received,
        })
    );
    Ok(())
}
