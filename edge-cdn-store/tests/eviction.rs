//! The store paired with its own eviction manager (`TieredStore::eviction`),
//! as a host pairs them: admit on commit, purge what it evicts, and keep
//! its counters across a restart with the store's saved index.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::{body, config, get_body, key, meta, put_with, read_all};
use edge_cdn_store::{Selector, StoreConfig, TieredStore};
use pingora_cache::eviction::EvictionManager;
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::CacheEntryKey;

fn open_with_limit(dir: &Path, limit: u64) -> &'static TieredStore {
    common::open(StoreConfig {
        disk_bytes: bytesize::ByteSize::b(limit),
        ..config(dir)
    })
}

/// Purge what the manager evicted, as pingora's `finish_miss_handler`
/// does in its spawned task.
async fn purge_all(store: &'static TieredStore, victims: Vec<CacheEntryKey>) {
    let span = Span::inactive().handle();
    for victim in &victims {
        store
            .purge(PurgeTarget::Exact(victim), PurgeType::Eviction, &span)
            .await
            .unwrap();
    }
}

/// Store an object under `key` and admit it, purging what the manager
/// evicts; returns its size.
async fn put_key(store: &'static TieredStore, key: &CacheKey, len: usize) -> usize {
    let size = put_with(store, key, &meta("m"), &body(len, 7)).await;
    let entry = CacheEntryKey::key_only(key.to_compact());
    let victims = store.eviction().admit(entry, size, SystemTime::now());
    purge_all(store, victims).await;
    size
}

async fn put(store: &'static TieredStore, name: &str, len: usize) -> usize {
    put_key(store, &key(name), len).await
}

async fn has(store: &'static TieredStore, name: &str) -> bool {
    get_body(store, name).await.is_some()
}

fn read(store: &'static TieredStore, name: &str) {
    let entry = CacheEntryKey::key_only(key(name).to_compact());
    assert!(store.eviction().access(&entry, 0, SystemTime::now()));
}

fn files(dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    usize::from(p.extension().is_some_and(|x| x == "body"))
                }
            })
            .sum()
    }
    walk(dir)
}

#[tokio::test]
async fn capacity_is_respected_under_churn_and_no_file_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 2_000_000;
    let store = open_with_limit(dir.path(), limit);
    for i in 0..300usize {
        // 1 KB to 60 KB, some keys rewritten.
        let len = 1_000 + (i * 7_919) % 59_000;
        put(store, &format!("o{}", i % 250), len).await;
        let health = store.health();
        assert!(
            health.disk_bytes <= limit,
            "{} bytes on disk at step {i}",
            health.disk_bytes
        );
    }
    let health = store.health();
    assert_eq!(health.disk_objects, store.eviction().total_items());
    assert_eq!(health.disk_bytes, store.eviction().total_size() as u64);
    assert!(store.eviction().evicted_items() > 0);
    assert_eq!(
        files(dir.path()),
        health.disk_objects,
        "every evicted object's files are gone"
    );
}

const HOT: [&str; 3] = ["o1", "o4", "o7"];

fn names() -> Vec<String> {
    (0..10).map(|i| format!("o{i}")).collect()
}

/// The child of the test below: ten objects, three of them read twice,
/// then a clean stop; the hot objects' bytes left in `dir/hot`.
async fn fill_and_stop(dir: &Path) {
    let store = open_with_limit(dir, 100_000_000);
    let mut hot_bytes = 0u64;
    for name in &names() {
        let size = put(store, name, 20_000).await;
        if HOT.contains(&name.as_str()) {
            hot_bytes += size as u64;
        }
    }
    for name in HOT {
        read(store, name);
        read(store, name);
    }
    store.save_index().unwrap();
    std::fs::write(dir.join("hot"), hot_bytes.to_string()).unwrap();
}

#[test]
fn recency_survives_a_restart_through_the_saved_index() {
    if let Some((_, dir)) = common::child_phase() {
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(fill_and_stop(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    common::child(
        "recency_survives_a_restart_through_the_saved_index",
        "fill",
        dir.path(),
        false,
    );
    let hot_bytes: u64 = std::fs::read_to_string(dir.path().join("hot"))
        .unwrap()
        .parse()
        .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = open_with_limit(dir.path(), 100_000_000);
        assert_eq!(
            store.eviction().total_items(),
            10,
            "saved objects are tracked from the start"
        );
        store.recovered().await;
        // Room for the three read before the restart, and nothing else.
        // With the counters lost, which three stay would be a matter of
        // hash order.
        store.eviction().set_weight_limit(hot_bytes);
        let victims = store.eviction().evict_to_limit();
        assert_eq!(victims.len(), 7);
        purge_all(store, victims).await;
        for name in &names() {
            assert_eq!(
                has(store, name).await,
                HOT.contains(&name.as_str()),
                "{name}"
            );
        }
        assert_eq!(files(dir.path()), 3);
    });
}

#[tokio::test]
async fn a_damaged_saved_index_is_a_walk_that_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with_limit(dir.path(), 100_000_000);
        put(store, "a", 1_000).await;
        store.save_index().unwrap();
    }
    std::fs::write(dir.path().join("index"), b"not a saved index").unwrap();
    let store = open_with_limit(dir.path(), 100_000_000);
    store.recovered().await;
    assert!(has(store, "a").await);
    assert_eq!(store.eviction().total_items(), 1);
}

#[tokio::test]
async fn a_vary_variant_is_evicted_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_limit(dir.path(), 100_000_000);
    let variant = |v: &[u8; 16]| {
        let mut key = CacheKey::new(b"/page".to_vec(), "test");
        key.set_variance_key(*v);
        key
    };
    let (gzip, br) = (variant(b"gzip............"), variant(b"br.............."));
    put_key(store, &gzip, 30_000).await;
    let size = put_key(store, &br, 30_000).await;
    let primary = gzip.primary_bin();
    assert_eq!(
        store
            .select(Selector::Primary(&primary))
            .await
            .unwrap()
            .len(),
        2
    );
    // Room for one: the hand picks a victim, and the purge of the key it
    // returns removes that variant only.
    store.eviction().set_weight_limit(size as u64);
    let victims = store.eviction().evict_to_limit();
    assert_eq!(victims.len(), 1);
    let evicted = victims[0].key().combined_bin();
    let (gone, kept) = if evicted == gzip.combined_bin() {
        (&gzip, &br)
    } else {
        assert_eq!(evicted, br.combined_bin());
        (&br, &gzip)
    };
    purge_all(store, victims).await;
    let span = Span::inactive().handle();
    assert!(store.lookup(gone, &span).await.unwrap().is_none());
    let (_, mut hit) = store.lookup(kept, &span).await.unwrap().unwrap();
    assert_eq!(read_all(&mut hit).await.unwrap(), body(30_000, 7));
    let listed = store.select(Selector::Primary(&primary)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.combined_bin(), kept.combined_bin());
    assert_eq!(files(dir.path()), 1);
}

#[tokio::test]
async fn a_failed_write_is_not_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_limit(dir.path(), 100_000_000);
    // Admitting a key the store did not commit (its write failed: pingora
    // still admits it) tracks nothing, so no phantom bytes are counted.
    let entry = CacheEntryKey::key_only(key("never").to_compact());
    assert!(store
        .eviction()
        .admit(entry.clone(), 5_000, SystemTime::now())
        .is_empty());
    assert!(!store.eviction().peek(&entry));
    assert_eq!(store.eviction().total_size(), 0);
}
