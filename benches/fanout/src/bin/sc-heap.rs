//! What the SFU keeps per subscriber: `sc-heap audio|video N`. A publisher streams
//! for 1 s, N subscribers join and receive for 4 s (their keyframe, str0m's buffers
//! at size), then the subscribers' own client `Rtc`s are dropped so that what is
//! left of the growth is the SFU's: live heap bytes per subscriber, counted by the
//! allocator (the lower bound of RSS: malloc's own retention comes on top). The
//! same measurement as B0's heap column, without the rest of B0. With `--sites`,
//! the allocations made inside SFU calls and still live are listed by site on
//! stderr, with one stack each (slow: a backtrace per allocation; `--frames K` prints
//! K frames of each, default 9).

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;
use streamcore_fanout::alloc::{self, CountingAlloc};
use streamcore_fanout::inmem::{InMem, TRACE_SFU};
use streamcore_fanout::shape::Kind;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> anyhow::Result<()> {
    let (kind, n) = streamcore_fanout::workload_from_args("sc-heap")?;
    let sites = std::env::args().any(|a| a == "--sites");
    // `--frames K`: how many frames of each site's stack to print (default 9).
    let args: Vec<String> = std::env::args().collect();
    let frames_shown = match args.iter().position(|a| a == "--frames") {
        Some(i) => args
            .get(i + 1)
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--frames needs a number"))?,
        None => 9,
    };
    str0m::crypto::from_feature_flags().install_process_default();
    let mut h = InMem::new(kind, 0)?;
    h.run(Duration::from_secs(1));
    let live0 = alloc::live_bytes();
    if sites {
        alloc::set_live_mode(true);
        TRACE_SFU.store(true, Relaxed);
    }
    h.add_subscribers(n)?;
    h.run(Duration::from_secs(4));
    // How far the heap rises above its steady state in the measured window: a burst
    // (a keyframe's fan-out, SFU and clients together) that is freed again still
    // grows the heap, and the process keeps those pages.
    alloc::reset_peak();
    let steady = alloc::live_bytes();
    let w = h.measure(Duration::from_secs(2));
    let peak = alloc::peak_bytes();
    TRACE_SFU.store(false, Relaxed);
    h.drop_subscriber_clients();
    let live1 = alloc::live_bytes();
    if sites {
        print_sites(alloc::take_live(), n, frames_shown);
    }
    println!(
        "{}",
        json!({
            "kind": if kind == Kind::Audio { "audio" } else { "video" },
            "subscribers": n,
            "heap_bytes_per_subscriber": (live1 - live0) / n.max(1) as i64,
            "burst_heap_bytes_per_subscriber": (peak - steady) / n.max(1) as i64,
            "forwarded": w.forwarded(),
            "delivered": w.received,
        })
    );
    Ok(())
}

/// Live bytes per subscriber by allocation site, largest first, each with one stack.
fn print_sites(live: Vec<(usize, Arc<std::backtrace::Backtrace>)>, n: usize, frames_shown: usize) {
    let mut sites = alloc::by_site(live.iter().map(|(size, bt)| (*size, &**bt)));
    sites.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    for s in sites.iter().take(16) {
        eprintln!(
            "{:>9.0} B/sub {:>6.1} blocks/sub  {}: {}",
            s.bytes as f64 / n as f64,
            s.count as f64 / n as f64,
            s.owner,
            s.site
        );
        for f in s.frames.iter().skip(1).take(frames_shown) {
            eprintln!("        {f}");
        }
    }
}
