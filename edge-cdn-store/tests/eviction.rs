//! The store paired with pingora's LRU eviction manager, as a host pairs
//! them: admit on commit, purge what it evicts, save and restore its state.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::{body, config, get_body, key};
use edge_cdn_store::TieredStore;
use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::CacheEntryKey;

type Manager = lru::Manager<1>;

fn open(dir: &Path) -> &'static TieredStore {
    common::open(config(dir))
}

/// Store an object and admit it, purging what the manager evicts: what
/// pingora's `finish_miss_handler` does.
async fn put(store: &'static TieredStore, manager: &Manager, name: &str, len: usize) {
    let size = common::put(store, name, &body(len, 7)).await;
    let entry = CacheEntryKey::key_only(key(name).to_compact());
    let span = Span::inactive().handle();
    for victim in manager.admit(entry, size, SystemTime::now()) {
        store
            .purge(PurgeTarget::Exact(&victim), PurgeType::Eviction, &span)
            .await
            .unwrap();
    }
}

async fn has(store: &'static TieredStore, name: &str) -> bool {
    get_body(store, name).await.is_some()
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
    let store = open(dir.path());
    let limit = 2_000_000;
    let manager = Manager::with_capacity(limit, 64);
    for i in 0..300usize {
        // 1 KB to 60 KB, some keys rewritten.
        let len = 1_000 + (i * 7_919) % 59_000;
        put(store, &manager, &format!("o{}", i % 250), len).await;
        let health = store.health();
        assert!(
            health.disk_bytes <= limit as u64,
            "{} bytes on disk at step {i}",
            health.disk_bytes
        );
    }
    let health = store.health();
    assert_eq!(health.disk_objects, manager.total_items());
    assert_eq!(
        files(dir.path()),
        health.disk_objects,
        "every evicted object's files are gone"
    );
}

#[tokio::test]
async fn recency_survives_a_restart_through_saved_eviction_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eviction");
    std::fs::create_dir_all(&state).unwrap();
    let state = state.to_str().unwrap().to_owned();
    {
        let store = open(dir.path());
        let manager = Manager::with_capacity(350_000, 16);
        for name in ["a", "b", "c"] {
            put(store, &manager, name, 100_000).await;
        }
        // "a" is read again: "b" is now the least recently used.
        assert!(manager.access(
            &CacheEntryKey::key_only(key("a").to_compact()),
            100_000,
            SystemTime::now()
        ));
        manager.save(&state).await.unwrap();
    }
    let store = open(dir.path());
    let manager = Manager::with_capacity(350_000, 16);
    manager.load(&state).await.unwrap();
    // Admit only what the saved state does not know, as the host does:
    // admitting a known object would make it the most recently used.
    let recovered = store.take_recovered();
    assert_eq!(recovered.len(), 3);
    for r in recovered {
        assert!(
            manager.peek(&CacheEntryKey::key_only(r.key)),
            "saved state knows every object"
        );
    }
    put(store, &manager, "d", 100_000).await;
    assert!(
        !has(store, "b").await,
        "the least recently used before the restart went first"
    );
    for name in ["a", "c", "d"] {
        assert!(has(store, name).await, "{name}");
    }
}
