//! The shared-tier seam, with an in-process shared tier between two stores.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{config, get_body, key, open_shared};
use edge_cdn_store::{
    SharedError, SharedObject, SharedTier, SharedWrites, StoreConfig, TieredStore,
};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;

/// A shared tier in memory, standing in for a PoP-wide cache.
#[derive(Default)]
struct InProcess {
    objects: Mutex<HashMap<u128, SharedObject>>,
}

#[async_trait]
impl SharedTier for InProcess {
    async fn get(&self, hash: u128) -> Result<Option<SharedObject>, SharedError> {
        Ok(self.objects.lock().unwrap().get(&hash).cloned())
    }
    async fn put(&self, hash: u128, object: SharedObject) -> Result<(), SharedError> {
        self.objects.lock().unwrap().insert(hash, object);
        Ok(())
    }
    async fn delete(&self, hash: u128) -> Result<(), SharedError> {
        self.objects.lock().unwrap().remove(&hash);
        Ok(())
    }
}

/// A shared tier that never answers in time.
struct Stalled;

#[async_trait]
impl SharedTier for Stalled {
    async fn get(&self, _hash: u128) -> Result<Option<SharedObject>, SharedError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(None)
    }
    async fn put(&self, _hash: u128, _object: SharedObject) -> Result<(), SharedError> {
        Err(SharedError("down".into()))
    }
    async fn delete(&self, _hash: u128) -> Result<(), SharedError> {
        Err(SharedError("down".into()))
    }
}

fn open(
    dir: &std::path::Path,
    shared: Arc<dyn SharedTier>,
    writes: SharedWrites,
) -> &'static TieredStore {
    open_shared(
        StoreConfig {
            shared_writes: writes,
            ..config(dir)
        },
        shared,
    )
}

async fn put(store: &'static TieredStore, name: &str, data: &'static [u8]) {
    common::put(store, name, &Bytes::from_static(data)).await;
}

async fn until(check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn a_local_miss_is_filled_from_the_shared_tier_and_kept_locally() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = Arc::new(InProcess::default());
    let a = open(a_dir.path(), shared.clone(), SharedWrites::WriteThrough);
    let b = open(b_dir.path(), shared.clone(), SharedWrites::WriteThrough);
    put(a, "/s", b"shared body").await;
    until(|| !shared.objects.lock().unwrap().is_empty()).await;

    assert_eq!(
        get_body(b, "/s").await.as_deref(),
        Some(&b"shared body"[..])
    );
    assert_eq!(
        b.health().disk_objects,
        1,
        "the shared copy is kept locally"
    );
    shared.objects.lock().unwrap().clear();
    assert_eq!(
        get_body(b, "/s").await.as_deref(),
        Some(&b"shared body"[..]),
        "served locally now"
    );
}

#[tokio::test]
async fn a_shared_fill_is_admitted_like_any_writer() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = Arc::new(InProcess::default());
    let a = open(a_dir.path(), shared.clone(), SharedWrites::WriteThrough);
    put(a, "/s", b"shared body").await;
    until(|| !shared.objects.lock().unwrap().is_empty()).await;
    let b = open_shared(
        StoreConfig {
            write_concurrency: 1,
            ..config(b_dir.path())
        },
        shared.clone(),
    );
    let span = Span::inactive().handle();
    let busy = b
        .get_miss_handler(&key("/other"), &common::meta("other"), &span)
        .await
        .unwrap();

    assert_eq!(
        get_body(b, "/s").await.as_deref(),
        Some(&b"shared body"[..]),
        "served from the shared tier"
    );
    assert_eq!(
        b.health().disk_objects,
        0,
        "not stored while the only write permit is taken"
    );
    drop(busy);
    assert_eq!(
        get_body(b, "/s").await.as_deref(),
        Some(&b"shared body"[..])
    );
    assert_eq!(b.health().disk_objects, 1, "stored once a permit is free");
}

#[tokio::test]
async fn invalidation_reaches_the_shared_tier_and_eviction_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    let store = open(dir.path(), shared.clone(), SharedWrites::WriteThrough);
    let span = Span::inactive().handle();
    put(store, "/e", b"evicted").await;
    put(store, "/i", b"invalidated").await;
    until(|| shared.objects.lock().unwrap().len() == 2).await;

    let e = key("/e").to_compact();
    store
        .purge(PurgeTarget::Active(&e), PurgeType::Eviction, &span)
        .await
        .unwrap();
    let i = key("/i").to_compact();
    store
        .purge(PurgeTarget::Active(&i), PurgeType::Invalidation, &span)
        .await
        .unwrap();
    let objects = shared.objects.lock().unwrap();
    assert!(objects.contains_key(&u128::from_be_bytes(e.combined_bin())));
    assert!(!objects.contains_key(&u128::from_be_bytes(i.combined_bin())));
}

#[tokio::test]
async fn on_promotion_writes_only_objects_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    // Written by one process...
    {
        let store = open(dir.path(), shared.clone(), SharedWrites::OnPromotion);
        put(store, "/hot", b"hot").await;
        put(store, "/cold", b"cold").await;
    }
    assert!(
        shared.objects.lock().unwrap().is_empty(),
        "nothing shared on write"
    );
    // ...read again after a restart: promoted from disk, so shared.
    let store = open(dir.path(), shared.clone(), SharedWrites::OnPromotion);
    assert!(get_body(store, "/hot").await.is_some());
    until(|| shared.objects.lock().unwrap().len() == 1).await;
}

#[tokio::test]
async fn a_stalled_shared_tier_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Stalled), SharedWrites::WriteThrough);
    let looked = tokio::time::timeout(Duration::from_secs(5), get_body(store, "/nothing")).await;
    assert_eq!(
        looked.expect("the lookup does not wait for the shared tier"),
        None
    );
    // Writes still work locally; the failing shared write is only counted.
    put(store, "/local", b"local").await;
    assert_eq!(
        get_body(store, "/local").await.as_deref(),
        Some(&b"local"[..])
    );
}
