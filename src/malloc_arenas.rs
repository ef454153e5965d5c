//! How many malloc arenas the process uses (glibc), and what they hold.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight per core,
//! and an arena keeps what was freed in it for its own thread's later use. A node's
//! threads (the HTTP runtime's, each media worker's, the blocking pool's) each get
//! one, so what a subscriber's join allocates and frees on one thread, and what lives
//! on in another, spread over heaps that each stay at their own peak. B2 measured
//! 172–177 kB of RSS per video subscriber at N = 50 with glibc's default and 98–106
//! kB with two arenas (`docs/benchmarks.md`). Sharing costs little here: forwarding
//! allocates nothing per packet, and each thread's cache (tcache) serves small blocks
//! without taking an arena's lock.
//!
//! [`heap_stats`] reads what the arenas hold for the metrics: blocks in use, and
//! blocks freed but kept (the allocator's retention after a peak).
//!
//! Invariant: an operator's own limit (`MALLOC_ARENA_MAX`, or `arena_max` in
//! `GLIBC_TUNABLES`) is left as it is.
#![allow(unsafe_code)] // mallopt(3) and mallinfo2(3): std and libc's safe surface do not wrap them

/// The arenas a node uses. Past the limit glibc hands threads the existing arenas in
/// turn; two rather than one halve how often two threads that miss their caches at
/// once wait for the same lock, and one kept no less (B2 video at N = 50: 109–111 kB
/// per subscriber with one, 101–102 with two, in the same session's short runs).
pub const ARENAS: i32 = 2;

/// Limits the process to [`ARENAS`] arenas unless its environment sets a limit. Call
/// it first in `main`, before other threads start: a thread keeps the arena it got.
/// Returns the limit it set (`None`: the environment's stands, or not glibc).
pub fn limit() -> Option<i32> {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || tunables.to_string_lossy().contains("malloc.arena_max")
    {
        return None;
    }
    set_arena_max(ARENAS).then_some(ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt only sets one of the allocator's parameters; M_ARENA_MAX is
    // one glibc documents, and any positive value is valid.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> bool {
    false
}

/// What malloc holds, over all arenas (mallinfo2(3)).
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    /// Bytes in blocks the program holds (from the arenas and mapped on their own),
    /// those waiting in the threads' caches included.
    pub in_use: u64,
    /// Bytes freed but kept by the arenas for later blocks (resident once touched).
    pub free: u64,
}

/// The heap's figures now; `None` where the allocator is not glibc's. It walks every
/// arena's free lists under its lock: for a scrape, not for a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_stats() -> Option<HeapStats> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let m = unsafe { libc::mallinfo2() };
    Some(HeapStats {
        in_use: (m.uordblks + m.hblkhd) as u64,
        free: m.fordblks as u64,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_stats() -> Option<HeapStats> {
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn heap_stats_count_a_block_while_it_is_held() {
        // 64 MiB, and half of it as slack for what other tests free meanwhile.
        let before = heap_stats().expect("glibc");
        let block = vec![1u8; 64 << 20];
        let held = heap_stats().expect("glibc");
        std::hint::black_box(&block);
        assert!(
            held.in_use >= before.in_use + (32 << 20),
            "{before:?} before, {held:?} holding 64 MiB"
        );
    }
}
