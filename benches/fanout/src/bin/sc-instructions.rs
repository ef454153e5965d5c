//! One fixed fan-out through `media_core::Sfu` for `valgrind --tool=callgrind`:
//! `sc-instructions audio|video N`. Connects a publisher and N subscribers, warms
//! up for 4 s of virtual time, then sends for 2 s with SFU calls routed through
//! `counted_sfu_call` (the only function callgrind collects in, with
//! `--toggle-collect=*counted_sfu_call*`). Prints one JSON object: packets the
//! publisher sent, the SFU received (`rtp_in`) and forwarded, and the subscribers
//! were delivered in that window. Natively it runs in well under a second;
//! under callgrind in under a minute.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;
use streamcore_fanout::inmem::{COUNT_SFU, InMem};
use streamcore_fanout::shape::Kind;

fn main() -> anyhow::Result<()> {
    let (kind, n) = streamcore_fanout::workload_from_args("sc-instructions")?;
    str0m::crypto::from_feature_flags().install_process_default();
    let mut h = InMem::new(kind, n)?;
    h.run(Duration::from_secs(4));
    COUNT_SFU.store(true, Relaxed);
    let w = h.measure(Duration::from_secs(2));
    COUNT_SFU.store(false, Relaxed);
    println!(
        "{}",
        json!({
            "kind": if kind == Kind::Audio { "audio" } else { "video" },
            "subscribers": n,
            "sent": w.sent,
            "rtp_in": w.stats.rtp_in,
            "forwarded": w.forwarded(),
            "delivered": w.received,
        })
    );
    Ok(())
}
