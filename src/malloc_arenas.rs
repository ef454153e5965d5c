//! How many malloc arenas the process uses (glibc).
//!
//! glibc gives each thread that allocates an arena of its own, up to eight per core,
//! and an arena keeps what was freed in it for its own thread's later use. A node's
//! threads (the HTTP runtime's, each media worker's, the blocking pool's) each get
//! one, so what a subscriber's join allocates and frees on one thread, and what lives
//! on in another, spread over heaps that each stay at their own peak. B2 measured
//! 172–177 kB of RSS per video subscriber at N = 50 with glibc's default and 100–102
//! kB with two arenas (`docs/benchmarks.md`). Sharing costs little here: forwarding
//! allocates nothing per packet, and each thread's cache (tcache) serves small blocks
//! without taking an arena's lock.
//!
//! [`heap_stats`] reads what the arenas hold, live and freed-but-kept, for the
//! metrics: RSS above the live heap is the allocator's retention.
//!
//! Invariant: an operator's own limit (`MALLOC_ARENA_MAX`, or `arena_max` in
//! `GLIBC_TUNABLES`) is left as it is.
#![allow(unsafe_code)] // mallopt(3): std and libc's safe surface do not wrap it

/// The arenas a node uses: two, so that the media worker's thread need not wait for an
/// HTTP thread that is allocating.
pub const ARENAS: i32 = 2;

/// Limits the process to [`ARENAS`] arenas unless its environment sets a limit. Call
/// it first in `main`, before other threads start: a thread keeps the arena it got.
/// Returns the limit it set (`None`: the environment's stands, or not glibc).
pub fn limit() -> Option<i32> {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("malloc.arena_max") {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in blocks the program holds (from the arenas and mapped on their own).
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
    use std::sync::{Arc, Barrier};

    /// The arenas glibc has made so far: one `<heap nr=…>` each in malloc_info(3).
    fn arenas() -> usize {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream sets `buf` and `len` at fclose; the buffer is read
        // once, within `len`, then freed with free(3), as open_memstream(3) says.
        unsafe {
            let f = libc::open_memstream(&mut buf, &mut len);
            assert!(!f.is_null(), "open_memstream failed");
            assert_eq!(libc::malloc_info(0, f), 0, "malloc_info failed");
            assert_eq!(libc::fclose(f), 0);
            let xml = String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len))
                .into_owned();
            libc::free(buf.cast());
            xml.matches("<heap nr=").count()
        }
    }

    /// Threads that allocate at the same time, each holding its block until all have one.
    fn allocate_on_threads(n: usize) {
        let all = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let all = all.clone();
                std::thread::spawn(move || {
                    let block = vec![i as u8; 4096];
                    all.wait();
                    std::hint::black_box(block);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("an allocating thread panicked");
        }
    }

    #[test]
    fn heap_stats_count_a_block_while_it_is_held() {
        // 16 MiB, and 4 MiB of slack for what other tests free meanwhile.
        let before = heap_stats().expect("glibc");
        let block = vec![1u8; 16 << 20];
        let held = heap_stats().expect("glibc");
        std::hint::black_box(&block);
        assert!(
            held.in_use >= before.in_use + (12 << 20),
            "{before:?} before, {held:?} holding 16 MiB"
        );
    }

    #[test]
    fn new_threads_share_the_limited_arenas() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.arena_max"))
        {
            assert_eq!(limit(), None, "the environment's limit stands");
            return;
        }
        let before = arenas();
        // Without a limit, glibc makes an arena for each new thread that finds no arena
        // of an exited thread free (twelve threads, at most eight free: four at least);
        // past eight arenas it fixes its limit for good, and a later one is not taken.
        assert!(
            before <= 8,
            "{before} arenas already: too many for this test to tell"
        );
        assert_eq!(limit(), Some(ARENAS));
        allocate_on_threads(12);
        let after = arenas();
        assert!(
            after <= before.max(ARENAS as usize),
            "{before} arenas before, {after} after twelve threads allocated at once"
        );
    }
}
