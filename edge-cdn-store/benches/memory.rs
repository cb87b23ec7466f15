//! RAM per object with many objects on disk (10 million unless
//! `MEMORY_BENCH_OBJECTS` says otherwise): the store's index with its
//! eviction manager (`ClockEviction`, whose state lives in the index),
//! next to what they replace — the former `HashMap` index plus pingora's
//! `lru::Manager` — and the catalog (primary keys and tags, for purges: on
//! disk, so only its database's caches are in RAM; at most a million
//! objects unless `MEMORY_BENCH_CATALOG_OBJECTS` says otherwise).
//! Counted by a wrapping allocator, so the figures are exact for this
//! build, not estimates from RSS.
//!
//! Then a throughput run of the two index + eviction pairs on the same
//! workload, in this one process: fills (index insert, admit, removing the
//! victims from the index as a purge does) and hits (index probe, access),
//! from two threads.
//!
//! `cargo bench -p edge-cdn-store --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use edge_cdn_store::__bench::{clock_eviction, open_catalog, Index, Journal, Record};
use edge_cdn_store::ClockEviction;
use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
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

/// Operations per pair in the throughput run.
const OPERATIONS: u64 = 2_000_000;
/// Threads in the throughput run (the machine's two cores).
const THREADS: u64 = 2;

/// SplitMix64: a well-mixed 64-bit value from `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key hash for object `i`, as random as real ones (blake2b output):
/// objects fall on the index's shards unevenly, as they do in a store.
fn hash(i: u64) -> u128 {
    (u128::from(mix(i)) << 64) | u128::from(mix(!i))
}

/// An entry as pingora builds one per request: a key-only compact key with
/// a typical short user tag.
fn entry(hash: u128) -> CacheEntryKey {
    CacheEntryKey::key_only(CompactCacheKey {
        primary: hash.to_be_bytes(),
        variance: None,
        user_tag: "www".into(),
    })
}

/// The index the store kept before `ClockEviction`: a sharded `HashMap`
/// of hash bytes to size.
struct OldIndex(Vec<Mutex<HashMap<[u8; 16], u32>>>);

impl OldIndex {
    fn new() -> OldIndex {
        OldIndex((0..64).map(|_| Mutex::default()).collect())
    }
    fn shard(&self, hash: u128) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], u32>> {
        self.0[hash as usize % 64].lock().unwrap()
    }
    fn reserve(&self, n: usize) {
        for shard in &self.0 {
            shard.lock().unwrap().reserve(n / 64 + 1);
        }
    }
    fn insert(&self, hash: u128, size: u32) {
        self.shard(hash).insert(hash.to_be_bytes(), size);
    }
    fn get(&self, hash: u128) -> Option<u32> {
        self.shard(hash).get(&hash.to_be_bytes()).copied()
    }
    fn remove(&self, hash: u128) {
        self.shard(hash).remove(&hash.to_be_bytes());
    }
}

fn measure<T>(build: impl FnOnce() -> T) -> (T, isize) {
    let before = LIVE.load(Ordering::Relaxed);
    let built = build();
    (built, LIVE.load(Ordering::Relaxed) - before)
}

fn row(name: &str, bytes: isize, objects: usize, note: &str) {
    println!(
        "  {name:<34} {:>9.1} MiB  {:>6.1} bytes/object  {note}",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / objects as f64
    );
}

fn main() {
    let objects: usize = std::env::var("MEMORY_BENCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    println!("{objects} objects on disk");
    let n = objects as u64;
    let now = SystemTime::now();

    // The index and its manager, as recovery fills them (reserving for
    // what it found), every object tracked.
    let (clock, clock_bytes) = measure(|| {
        let index = Arc::new(Index::default());
        index.reserve(objects);
        for i in 0..n {
            index.insert(hash(i), 40_000 + i);
        }
        clock_eviction(index, u64::MAX)
    });
    row(
        "index + ClockEviction (recovered)",
        clock_bytes,
        objects,
        "(one table: hash, size, CLOCK bits)",
    );
    drop(clock);

    // The same, grown insert by insert (a store filling from empty).
    let (clock, grown_bytes) = measure(|| {
        let index = Arc::new(Index::default());
        for i in 0..n {
            index.insert(hash(i), 40_000 + i);
        }
        clock_eviction(index, u64::MAX)
    });
    row(
        "index + ClockEviction (grown)",
        grown_bytes,
        objects,
        "(filled from empty)",
    );
    drop(clock);

    // Before: the HashMap index, and pingora's LRU tracking the same objects.
    let (old, old_index_bytes) = measure(|| {
        let old = OldIndex::new();
        old.reserve(objects);
        for i in 0..n {
            old.insert(hash(i), 40_000);
        }
        old
    });
    let (manager, lru_bytes) = measure(|| {
        let manager = lru::Manager::<16>::with_capacity(usize::MAX, objects / 16);
        for i in 0..n {
            let _ = manager.admit(entry(hash(i)), 40_000, now);
        }
        manager
    });
    row("former HashMap index", old_index_bytes, objects, "");
    row(
        "pingora lru::Manager",
        lru_bytes,
        objects,
        "(the eviction manager the host used)",
    );
    row(
        "former index + lru::Manager",
        old_index_bytes + lru_bytes,
        objects,
        "",
    );
    drop((old, manager));

    // The catalog, on disk: a typical 40-byte primary key (site, host,
    // path) and two tags per object from a pool of a thousand, for at
    // most a million objects by default (filling its database is the slow
    // part of this bench: about 35 µs per object). What it holds in RAM is
    // its database's block cache and write buffers, which are bounded, and
    // whatever grows with the objects; the second half of the objects
    // shows the latter.
    let catalog_objects = std::env::var("MEMORY_BENCH_CATALOG_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(objects.min(1_000_000)) as u64;
    let dir = tempfile::tempdir().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let (catalog, _) = open_catalog(dir.path()).unwrap();
    let record = |i: u64| Record {
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
    for i in 0..catalog_objects / 2 {
        catalog.insert(record(i), Journal::Now).unwrap();
    }
    let half = LIVE.load(Ordering::Relaxed);
    for i in catalog_objects / 2..catalog_objects {
        catalog.insert(record(i), Journal::Now).unwrap();
    }
    let catalog_bytes = LIVE.load(Ordering::Relaxed) - before;
    let catalog_growth = LIVE.load(Ordering::Relaxed) - half;
    std::hint::black_box(&catalog);
    row(
        &format!("catalog ({catalog_objects} objects)"),
        catalog_bytes,
        catalog_objects as usize,
        "(on disk: 40-byte keys, 2 tags each; RAM is its bounded caches)",
    );
    println!(
        "    growth over the second half {:>6.1} bytes/object",
        catalog_growth as f64 / (catalog_objects / 2) as f64
    );
    drop(catalog);

    throughput();
}

/// Fills and hits through each pair: `OPERATIONS` fills of distinct keys
/// into room for a quarter of them (so most fills evict), each followed by
/// a hit on a key filled a little earlier.
fn throughput() {
    let room = OPERATIONS / 4;
    let size = 40_000u64;
    let limit = room * size;
    let now = SystemTime::now();
    println!(
        "\n{OPERATIONS} fills + {OPERATIONS} hits from {THREADS} threads, room for {room} objects"
    );

    let index = Arc::new(Index::default());
    let clock: ClockEviction = clock_eviction(index.clone(), limit);
    let new = run(|i| {
        let h = hash(i);
        index.insert(h, size);
        for victim in clock.admit(entry(h), size as usize, now) {
            index.remove(u128::from_be_bytes(victim.key().combined_bin()));
        }
        let earlier = hash(i.saturating_sub(1000));
        if index.get(earlier).is_some() {
            clock.access(&entry(earlier), size as usize, now);
        }
    });

    let old = OldIndex::new();
    let manager = lru::Manager::<16>::with_capacity(limit as usize, (room / 16) as usize);
    let former = run(|i| {
        let h = hash(i);
        old.insert(h, size as u32);
        for victim in manager.admit(entry(h), size as usize, now) {
            old.remove(u128::from_be_bytes(victim.key().combined_bin()));
        }
        let earlier = hash(i.saturating_sub(1000));
        if old.get(earlier).is_some() {
            manager.access(&entry(earlier), size as usize, now);
        }
    });
    println!(
        "  index + ClockEviction         {:>6.2} M fill+hit/s",
        new / 1e6
    );
    println!(
        "  former index + lru::Manager   {:>6.2} M fill+hit/s",
        former / 1e6
    );
    println!("  ratio (new / former)          {:>6.2}", new / former);
}

/// Run `op` for `OPERATIONS` distinct `i` over `THREADS` threads; returns
/// operations per second.
fn run(op: impl Fn(u64) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let op = &op;
            s.spawn(move || {
                let mut i = t;
                while i < OPERATIONS {
                    op(i);
                    i += THREADS;
                }
            });
        }
    });
    OPERATIONS as f64 / started.elapsed().as_secs_f64()
}
