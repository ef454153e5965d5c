//! Heap operations inside the SFU per forwarded packet, in steady state:
//! `sc-allocs audio|video N [--sites|--stacks] [--window SECONDS] [--warmup SECONDS]`. A
//! publisher and N subscribers warm up for 6 s of virtual time (past the first receiver
//! report of an audio stream, at 5 s: its queues' first growth is not steady state; or
//! `--warmup`: longer, past each session's first answers to its peer's reports), then 3
//! s (or `--window`: longer than the buffer pool's trim interval to count what a trim
//! costs) are counted by the allocator — only inside SFU
//! calls, the buffers handed back to the SFU as the server's driver does. Prints one
//! JSON object; with `--sites`, also where each allocation came from (one backtrace
//! per allocation: slow, for finding them, not for the count); `--stacks` prints one
//! stack per site on stderr.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;
use streamcore_fanout::alloc::{self, CountingAlloc};
use streamcore_fanout::inmem::{InMem, TRACE_SFU};
use streamcore_fanout::shape::Kind;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The whole seconds after `flag`, or `default` without it.
fn seconds_from_args(flag: &str, default: u64) -> anyhow::Result<Duration> {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(Duration::from_secs(default));
    };
    let secs = args.get(i + 1).map(|s| s.parse::<u64>());
    match secs {
        Some(Ok(secs)) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => anyhow::bail!("{flag} takes a whole number of seconds above 0"),
    }
}

fn main() -> anyhow::Result<()> {
    let (kind, n) = streamcore_fanout::workload_from_args("sc-allocs")?;
    let stacks = std::env::args().any(|a| a == "--stacks");
    let sites = stacks || std::env::args().any(|a| a == "--sites");
    str0m::crypto::from_feature_flags().install_process_default();
    let warm_up = seconds_from_args("--warmup", 6)?;
    let window = seconds_from_args("--window", 3)?;
    let mut h = InMem::new(kind, n)?;
    h.run(warm_up);
    if sites {
        alloc::reset_traces(200_000);
        TRACE_SFU.store(true, Relaxed);
    }
    let w = h.measure(window);
    TRACE_SFU.store(false, Relaxed);
    let fwd = w.forwarded().max(1) as f64;
    let ops = w.costs.total().alloc.ops();
    let mut by_site = if sites {
        alloc::by_site(alloc::take_traces().iter().map(|(size, bt)| (*size, bt)))
    } else {
        Vec::new()
    };
    by_site.sort_by_key(|s| std::cmp::Reverse(s.count));
    if stacks {
        for s in &by_site {
            eprintln!("== {}: {}", s.owner, s.site);
            for f in s.frames.iter().take(14) {
                eprintln!("   {f}");
            }
        }
    }
    let by_site: Vec<_> = by_site
        .iter()
        .take(20)
        .map(|s| {
            json!({
                "site": format!("{}: {}", s.owner, s.site),
                "per_forwarded": s.count as f64 / fwd,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "kind": if kind == Kind::Audio { "audio" } else { "video" },
            "subscribers": n,
            "forwarded": w.forwarded(),
            "delivered": w.received,
            "rtp_in": w.stats.rtp_in,
            "sfu_heap_ops": ops,
            "sfu_heap_ops_per_forwarded": ops as f64 / fwd,
            "sites": by_site,
        }))?
    );
    Ok(())
}
