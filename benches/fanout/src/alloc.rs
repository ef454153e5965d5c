//! A counting global allocator.
//!
//! A bench binary installs it with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;` and reads
//! [`snapshot`] around the code it measures. Every `alloc`, `alloc_zeroed` and
//! `realloc` is one heap operation (a `realloc` that grows a `Vec` costs like an
//! allocation); frees are counted apart.
//!
//! For attribution, [`reset_traces`] then [`set_tracing`] records a backtrace of
//! each allocation (up to a limit) while tracing is on; [`take_traces`] returns them
//! for classification.
//! Tracing is for a separate, short window: it is slow.
#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Forwards to the system allocator and counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
/// The most bytes live at once since [`reset_peak`]: what the process's heap had to
/// hold, which is what its resident memory keeps after the burst is freed.
static PEAK: AtomicI64 = AtomicI64::new(0);
/// Allocations by size class: index `i` counts sizes in `[2^(i-1), 2^i)` (0 for 0).
static SIZES: [AtomicU64; 24] = [const { AtomicU64::new(0) }; 24];

static TRACING: AtomicBool = AtomicBool::new(false);
static TRACE_LIMIT: AtomicUsize = AtomicUsize::new(0);
static TRACES: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());
/// Live mode: traced allocations are kept by address until freed.
static LIVE_MODE: AtomicBool = AtomicBool::new(false);
type LiveMap = HashMap<usize, (usize, Arc<Backtrace>)>;
static LIVE: Mutex<Option<LiveMap>> = Mutex::new(None);

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn size_class(size: usize) -> usize {
    ((usize::BITS - size.leading_zeros()) as usize).min(SIZES.len() - 1)
}

#[inline]
fn record(size: usize, ptr: *mut u8) {
    let bytes = BYTES.fetch_add(size as u64, Relaxed) + size as u64;
    let live = bytes as i64 - FREED_BYTES.load(Relaxed) as i64;
    // A store only at a new peak: most allocations are not one.
    if live > PEAK.load(Relaxed) {
        PEAK.fetch_max(live, Relaxed);
    }
    SIZES[size_class(size)].fetch_add(1, Relaxed);
    if TRACING.load(Relaxed) {
        trace(size, ptr);
    }
}

#[cold]
fn trace(size: usize, ptr: *mut u8) {
    // The capture allocates: the guard keeps those allocations out of the traces.
    let reentered = IN_TRACE.with(|g| g.replace(true));
    if reentered {
        return;
    }
    if LIVE_MODE.load(Relaxed) {
        if let Ok(mut live) = LIVE.try_lock() {
            let bt = Arc::new(Backtrace::force_capture());
            live.get_or_insert_with(HashMap::new)
                .insert(ptr as usize, (size, bt));
        }
    } else if let Ok(mut t) = TRACES.try_lock()
        && t.len() < TRACE_LIMIT.load(Relaxed)
    {
        let bt = Backtrace::force_capture();
        t.push((size, bt));
    }
    IN_TRACE.with(|g| g.set(false));
}

/// A traced block was freed (`moved: None`) or moved by `realloc`.
#[cold]
fn forget_live(ptr: *mut u8, moved: Option<(*mut u8, usize)>) {
    let reentered = IN_TRACE.with(|g| g.replace(true));
    if reentered {
        return;
    }
    if let Ok(mut live) = LIVE.try_lock()
        && let Some(map) = live.as_mut()
        && let Some((_, bt)) = map.remove(&(ptr as usize))
        && let Some((p, size)) = moved
    {
        map.insert(p as usize, (size, bt));
    }
    IN_TRACE.with(|g| g.set(false));
}

fn counted() -> bool {
    // Allocations made by the tracer itself are not the program's.
    !IN_TRACE.with(Cell::get)
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            record(layout.size(), p);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            record(layout.size(), p);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            FREES.fetch_add(1, Relaxed);
            FREED_BYTES.fetch_add(layout.size() as u64, Relaxed);
            if LIVE_MODE.load(Relaxed) {
                forget_live(ptr, None);
            }
        }
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's valid new size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if counted() {
            REALLOCS.fetch_add(1, Relaxed);
            FREED_BYTES.fetch_add(layout.size() as u64, Relaxed);
            if LIVE_MODE.load(Relaxed) && !p.is_null() {
                forget_live(ptr, Some((p, new_size)));
            }
            record(new_size, p);
        }
        p
    }
}

/// Counters since process start. Only meaningful when [`CountingAlloc`] is the
/// global allocator of the running binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocSnapshot {
    pub allocs: u64,
    pub reallocs: u64,
    pub frees: u64,
    pub bytes: u64,
}

impl AllocSnapshot {
    /// Heap operations that obtain memory: allocations plus reallocations.
    pub fn ops(&self) -> u64 {
        self.allocs + self.reallocs
    }

    pub fn since(&self, earlier: &AllocSnapshot) -> AllocSnapshot {
        AllocSnapshot {
            allocs: self.allocs - earlier.allocs,
            reallocs: self.reallocs - earlier.reallocs,
            frees: self.frees - earlier.frees,
            bytes: self.bytes - earlier.bytes,
        }
    }

    pub fn add(&mut self, d: &AllocSnapshot) {
        self.allocs += d.allocs;
        self.reallocs += d.reallocs;
        self.frees += d.frees;
        self.bytes += d.bytes;
    }
}

#[inline]
pub fn snapshot() -> AllocSnapshot {
    AllocSnapshot {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        frees: FREES.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

/// Bytes currently allocated through the counting allocator (requested sizes,
/// without the allocator's own overhead).
pub fn live_bytes() -> i64 {
    BYTES.load(Relaxed) as i64 - FREED_BYTES.load(Relaxed) as i64
}

/// The most bytes live at once since the last [`reset_peak`] (requested sizes).
pub fn peak_bytes() -> i64 {
    PEAK.load(Relaxed)
}

/// Starts a new peak at what is live now.
pub fn reset_peak() {
    PEAK.store(live_bytes(), Relaxed);
}

/// Allocation counts per size class (`[lo, hi)` bytes, count).
pub fn size_histogram() -> Vec<(usize, usize, u64)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lo = if i == 0 { 0 } else { 1usize << (i - 1) };
            (lo, 1usize << i, c.load(Relaxed))
        })
        .collect()
}

/// Clears the recorded traces and allows at most `limit` more.
pub fn reset_traces(limit: usize) {
    if let Ok(mut t) = TRACES.lock() {
        t.clear();
    }
    TRACE_LIMIT.store(limit, Relaxed);
}

/// Live mode: while on, each traced allocation is kept (with its backtrace) until it
/// is freed, by whatever code frees it. [`take_live`] returns what is still allocated.
pub fn set_live_mode(on: bool) {
    if on {
        let reentered = IN_TRACE.with(|g| g.replace(true));
        if let Ok(mut live) = LIVE.lock() {
            *live = Some(HashMap::new());
        }
        IN_TRACE.with(|g| g.set(reentered));
    }
    LIVE_MODE.store(on, Relaxed);
}

/// The traced allocations still live: (size, backtrace). Ends live mode.
pub fn take_live() -> Vec<(usize, Arc<Backtrace>)> {
    LIVE_MODE.store(false, Relaxed);
    let map = LIVE
        .lock()
        .ok()
        .and_then(|mut l| l.take())
        .unwrap_or_default();
    map.into_values().collect()
}

/// Turns recording of a backtrace per allocation on or off.
#[inline]
pub fn set_tracing(on: bool) {
    TRACING.store(on, Relaxed);
}

/// The recorded (size, backtrace) pairs; clears the record.
pub fn take_traces() -> Vec<(usize, Backtrace)> {
    TRACES
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default()
}

/// Function names of a backtrace, innermost first, with hashes and addresses cut.
pub fn frames(bt: &Backtrace) -> Vec<String> {
    let text = bt.to_string();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (num, name) = l.split_once(": ")?;
            num.parse::<u32>().ok()?;
            Some(strip_hash(name).to_owned())
        })
        .collect()
}

fn strip_hash(name: &str) -> &str {
    match name.rfind("::h") {
        Some(i) if name[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &name[..i],
        _ => name,
    }
}

/// Who asked for an allocation: the innermost frame outside the allocator, the
/// standard library and generic collections, and the crate that frame belongs to.
/// In a build with line tables, inlined frames carry no path, so the crate cannot be
/// read from the site's name; there the site is the chain of the first few frames
/// past the allocator's own.
pub fn attribute(frames: &[String]) -> (String, &'static str) {
    const PLUMBING: &[&str] = &[
        "std::",
        "<std::",
        "core::",
        "<core::",
        "alloc::",
        "<alloc::",
        "__rust",
        "__rdl",
        "hashbrown::",
        "<hashbrown::",
        // This module's own frames, by its path: a literal went stale once when the
        // module moved crates.
        module_path!(),
        concat!("<", module_path!()),
        "_rust",
        "rust_",
        "<unknown>",
    ];
    // The allocator's and the collections' own functions as they show when inlined:
    // by bare name, generics cut.
    const INLINED_PLUMBING: &[&str] = &[
        "trace",
        "record",
        "alloc",
        "realloc",
        "alloc_zeroed",
        "alloc_impl",
        "alloc_impl_runtime",
        "allocate",
        "allocate_zeroed",
        "grow",
        "grow_impl",
        "grow_impl_runtime",
        "grow_amortized",
        "grow_one",
        "grow_exact",
        "finish_grow",
        "reserve",
        "reserve_exact",
        "do_reserve_and_handle",
        "try_allocate_in",
        "try_reserve",
        "with_capacity_in",
        "box_new_uninit",
        "{closure#0}",
    ];
    const INLINED_CHAIN: usize = 5;
    let bare = |f: &str| f.split('<').next().unwrap_or(f).to_owned();
    let mut callers = frames
        .iter()
        .skip_while(|f| {
            PLUMBING.iter().any(|p| f.starts_with(p)) || INLINED_PLUMBING.contains(&&*bare(f))
        })
        .peekable();
    let inlined = callers.peek().is_some_and(|f| !bare(f).contains("::"));
    let site = match callers.peek() {
        Some(f) if !inlined => (*f).clone(),
        Some(_) => callers
            .take(INLINED_CHAIN)
            .cloned()
            .collect::<Vec<_>>()
            .join(" < "),
        None => "<unresolved>".to_owned(),
    };
    let crate_of = |f: &String| {
        let f = f.trim_start_matches('<');
        if f.starts_with("str0m") {
            Some("str0m")
        } else if f.starts_with("media_core") {
            Some("media-core (ours)")
        } else if f.starts_with("aws_lc") {
            Some("aws-lc-rs")
        } else {
            None
        }
    };
    let owner = match frames.iter().find_map(crate_of) {
        // An inlined site has no path: the first frame with one is a caller, and the
        // allocating code (str0m's, often) may belong to another crate.
        Some(krate) if inlined => match krate {
            "str0m" => "inlined into str0m",
            "media-core (ours)" => "inlined into media-core",
            _ => "inlined into aws-lc-rs",
        },
        Some(krate) => krate,
        None => "other",
    };
    (site, owner)
}

/// Allocations (or live blocks) of one site, added up by [`by_site`].
#[derive(Debug)]
pub struct SiteTotal {
    pub owner: &'static str,
    pub site: String,
    /// How many allocations or blocks.
    pub count: u64,
    pub bytes: u64,
    /// The stack of the site's largest one, innermost first.
    pub frames: Vec<String>,
}

/// Adds up traced allocations (`take_traces`) or live blocks (`take_live`) by
/// [`attribute`]d site, resolving each backtrace once; in site order, for the caller
/// to sort by count or by bytes.
pub fn by_site<'a>(blocks: impl IntoIterator<Item = (usize, &'a Backtrace)>) -> Vec<SiteTotal> {
    let mut sites: BTreeMap<(&'static str, String), (SiteTotal, usize)> = BTreeMap::new();
    for (size, bt) in blocks {
        let frames = frames(bt);
        let (site, owner) = attribute(&frames);
        let (total, largest) = sites.entry((owner, site.clone())).or_insert_with(|| {
            let empty = SiteTotal {
                owner,
                site,
                count: 0,
                bytes: 0,
                frames: Vec::new(),
            };
            (empty, 0)
        });
        total.count += 1;
        total.bytes += size as u64;
        if total.frames.is_empty() || size > *largest {
            *largest = size;
            total.frames = frames;
        }
    }
    sites.into_values().map(|(total, _)| total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_cut() {
        assert_eq!(
            strip_hash("str0m::Rtc::poll_output::h0123abcd"),
            "str0m::Rtc::poll_output"
        );
        assert_eq!(strip_hash("media_core::sfu::x"), "media_core::sfu::x");
    }

    fn frames_of(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn attribution_skips_plumbing() {
        let f = frames_of(&[
            "std::backtrace::Backtrace::create",
            "streamcore_fanout::alloc::trace",
            "alloc::raw_vec::finish_grow",
            "str0m::rtp::srtp::SrtpContext::protect_rtp",
            "media_core::sfu::Sfu::forward",
        ]);
        let (site, owner) = attribute(&f);
        assert_eq!(site, "str0m::rtp::srtp::SrtpContext::protect_rtp");
        assert_eq!(owner, "str0m");
    }

    #[test]
    fn inlined_frames_are_named_by_their_chain() {
        let f = frames_of(&[
            "trace",
            "alloc",
            "__rust_alloc",
            "alloc_impl_runtime",
            "grow<Delta>",
            "push_back_mut<Delta>",
            "push_back<Delta>",
            "build_report",
            "create_twcc_feedback",
            "handle_timeout",
            "service",
        ]);
        let (site, owner) = attribute(&f);
        assert_eq!(
            site,
            "push_back_mut<Delta> < push_back<Delta> < build_report < create_twcc_feedback < handle_timeout"
        );
        assert_eq!(owner, "other");
        let mut under_ours = f.clone();
        under_ours.push("media_core::sfu::Sfu::service".to_owned());
        assert_eq!(attribute(&under_ours).1, "inlined into media-core");
    }

    #[test]
    fn size_classes() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 1);
        assert_eq!(size_class(1200), 11);
    }
}
