//! `streamcore::malloc_arenas::limit` in a process of its own: the arena limit is
//! process-wide and fixed once glibc has made more than eight arenas, so the test
//! must not share its process with other tests' threads.
#![allow(unsafe_code)] // malloc_info(3) and open_memstream(3), to count the arenas
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::sync::{Arc, Barrier};

use streamcore::malloc_arenas::{ARENAS, limit};

/// The arenas glibc has made so far: one `<heap nr=…>` each in malloc_info(3).
fn arenas() -> usize {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream sets `buf` and `len` at fclose; the buffer is read once,
    // within `len`, then freed with free(3), as open_memstream(3) says.
    unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        assert!(!f.is_null(), "open_memstream failed");
        assert_eq!(libc::malloc_info(0, f), 0, "malloc_info failed");
        assert_eq!(libc::fclose(f), 0);
        let xml =
            String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len)).into_owned();
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
fn new_threads_share_the_limited_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|t| t.to_string_lossy().contains("malloc.arena_max"))
    {
        assert_eq!(limit(), None, "the environment's limit stands");
        return;
    }
    // This process's main thread and the test's: two arenas at most so far. Without
    // a limit glibc makes one for each new thread that finds no arena of an exited
    // thread free (twelve threads, at most two free: ten at least).
    let before = arenas();
    assert!(before <= 2, "{before} arenas before the test's threads");
    assert_eq!(limit(), Some(ARENAS));
    allocate_on_threads(12);
    let after = arenas();
    assert!(
        after <= ARENAS as usize,
        "{before} arenas before, {after} after twelve threads allocated at once"
    );
}
