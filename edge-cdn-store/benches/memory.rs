//! RAM per object with 1 million objects: the store's disk index, its
//! catalog (primary keys and tags, for purges: on disk, so only its
//! database's caches are in RAM) and, separately, pingora's LRU eviction
//! manager tracking the same objects.
//! Counted by a wrapping allocator, so the figures are exact for this
//! build, not estimates from RSS.
//!
//! `cargo bench -p edge-cdn-store --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::SystemTime;

use edge_cdn_store::__bench::{open_catalog, Index, Record};
use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::key::CompactCacheKey;
use pingora_cache::CacheEntryKey;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const OBJECTS: usize = 1_000_000;

fn hash(i: usize) -> u128 {
    // Spread like real key hashes (which are blake2b output).
    (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x5851_F42D_4C95_7F2D
}

fn main() {
    // The disk index, as recovery fills it (reserving for what it found).
    let before = LIVE.load(Ordering::Relaxed);
    let index = Index::default();
    index.reserve(OBJECTS);
    for i in 0..OBJECTS {
        index.insert(hash(i), 40_000 + i as u64);
    }
    let index_bytes = LIVE.load(Ordering::Relaxed) - before;
    std::hint::black_box(&index);

    // The eviction manager tracking the same objects (key-only entries with
    // a typical short user tag).
    let before = LIVE.load(Ordering::Relaxed);
    let manager = lru::Manager::<16>::with_capacity(usize::MAX, OBJECTS / 16);
    let now = SystemTime::now();
    for i in 0..OBJECTS {
        let h = hash(i).to_be_bytes();
        let key = CompactCacheKey {
            primary: h,
            variance: None,
            user_tag: "www".into(),
        };
        let _ = manager.admit(CacheEntryKey::key_only(key), 40_000, now);
    }
    let manager_bytes = LIVE.load(Ordering::Relaxed) - before;
    std::hint::black_box(&manager);

    // The catalog, on disk: a typical 40-byte primary key (site, host,
    // path) and two tags per object from a pool of a thousand. What it
    // holds in RAM is its database's block cache and write buffers, which
    // are bounded, and whatever grows with the objects; the second half of
    // the objects shows the latter.
    let dir = tempfile::tempdir().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let catalog = open_catalog(dir.path(), std::iter::empty(), |_| false).unwrap();
    let record = |i: usize| Record {
        key: CompactCacheKey {
            primary: hash(i).to_be_bytes(),
            variance: None,
            user_tag: "www".into(),
        },
        primary_key: format!("www\0www.example.com\0/assets/{i:012}.js")
            .into_bytes()
            .into(),
        tags: vec!["assets".into(), format!("release-{}", i % 1000).into()],
    };
    for i in 0..OBJECTS / 2 {
        catalog.insert(record(i)).unwrap();
    }
    let half = LIVE.load(Ordering::Relaxed);
    for i in OBJECTS / 2..OBJECTS {
        catalog.insert(record(i)).unwrap();
    }
    let catalog_bytes = LIVE.load(Ordering::Relaxed) - before;
    let catalog_growth = LIVE.load(Ordering::Relaxed) - half;
    std::hint::black_box(&catalog);

    println!("{OBJECTS} objects on disk");
    println!(
        "  store index        {:>8.1} MiB  {:>6.1} bytes/object  (target < 100)",
        index_bytes as f64 / (1 << 20) as f64,
        index_bytes as f64 / OBJECTS as f64
    );
    println!(
        "  catalog            {:>8.1} MiB  {:>6.1} bytes/object  (on disk: 40-byte keys, 2 tags each; RAM is its bounded caches)",
        catalog_bytes as f64 / (1 << 20) as f64,
        catalog_bytes as f64 / OBJECTS as f64
    );
    println!(
        "    growth over the second half {:>6.1} bytes/object",
        catalog_growth as f64 / (OBJECTS / 2) as f64
    );
    println!(
        "  eviction manager   {:>8.1} MiB  {:>6.1} bytes/object  (pingora lru::Manager, measured separately)",
        manager_bytes as f64 / (1 << 20) as f64,
        manager_bytes as f64 / OBJECTS as f64
    );
}
