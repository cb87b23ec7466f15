//! The shared-tier seam, with an in-process shared tier between two stores.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use bytesize::ByteSize;
use common::{config, get_body, key, open_shared};
use edge_cdn_store::{
    BytesBody, SharedBody, SharedError, SharedHit, SharedMeta, SharedTier, SharedWrites,
    StoreConfig, TieredStore,
};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;

/// What the in-process tier holds for one object.
#[derive(Clone)]
struct Held {
    meta: SharedMeta,
    body: Bytes,
    ttl: Duration,
}

/// A shared tier in memory, standing in for a PoP-wide cache. It hands
/// bodies out in 1000-byte chunks, so every hit streams.
#[derive(Default)]
struct InProcess {
    objects: Mutex<HashMap<u128, Held>>,
    gets: AtomicUsize,
    puts: AtomicUsize,
}

impl InProcess {
    fn len(&self) -> usize {
        self.objects.lock().unwrap().len()
    }

    fn held(&self, name: &str) -> Option<Held> {
        let hash = u128::from_be_bytes(key(name).combined_bin());
        self.objects.lock().unwrap().get(&hash).cloned()
    }
}

#[async_trait]
impl SharedTier for InProcess {
    async fn get(&self, hash: u128) -> Result<Option<SharedHit>, SharedError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let held = self.objects.lock().unwrap().get(&hash).cloned();
        Ok(held.map(|held| SharedHit {
            meta: held.meta,
            body: Box::new(BytesBody::new(held.body, 1000)),
        }))
    }
    async fn put(
        &self,
        hash: u128,
        meta: SharedMeta,
        ttl: Duration,
        mut body: Box<dyn SharedBody>,
    ) -> Result<(), SharedError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let mut all = Vec::new();
        while let Some(chunk) = body.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        assert_eq!(all.len() as u64, meta.body_len, "the body is whole");
        let held = Held {
            meta,
            body: all.into(),
            ttl,
        };
        self.objects.lock().unwrap().insert(hash, held);
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
    async fn get(&self, _hash: u128) -> Result<Option<SharedHit>, SharedError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(None)
    }
    async fn put(
        &self,
        _hash: u128,
        _meta: SharedMeta,
        _ttl: Duration,
        _body: Box<dyn SharedBody>,
    ) -> Result<(), SharedError> {
        Err(SharedError::Unavailable("down".into()))
    }
    async fn delete(&self, _hash: u128) -> Result<(), SharedError> {
        Err(SharedError::Unavailable("down".into()))
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
    until(|| shared.len() > 0).await;

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
    until(|| shared.len() > 0).await;
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
async fn invalidation_and_soft_purge_reach_the_shared_tier_and_eviction_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    let store = open(dir.path(), shared.clone(), SharedWrites::WriteThrough);
    let span = Span::inactive().handle();
    put(store, "/e", b"evicted").await;
    put(store, "/i", b"invalidated").await;
    put(store, "/s", b"marked stale").await;
    until(|| shared.len() == 3).await;

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
    // A soft purge keeps the local copy (stale) and deletes the shared
    // one, which cannot be marked stale in place.
    let soft = key("/s").to_compact();
    let outcome = store
        .expire(PurgeTarget::Active(&soft), &span)
        .await
        .unwrap();
    assert!(matches!(outcome, PurgeOutcome::Expired));
    let objects = shared.objects.lock().unwrap();
    assert!(objects.contains_key(&u128::from_be_bytes(e.combined_bin())));
    assert!(!objects.contains_key(&u128::from_be_bytes(i.combined_bin())));
    assert!(!objects.contains_key(&u128::from_be_bytes(soft.combined_bin())));
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
    assert_eq!(shared.len(), 0, "nothing shared on write");
    // ...read again after a restart: promoted from disk, so shared.
    let store = open(dir.path(), shared.clone(), SharedWrites::OnPromotion);
    store.recovered().await;
    assert!(get_body(store, "/hot").await.is_some());
    until(|| shared.len() == 1).await;
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

#[tokio::test]
async fn a_large_object_streams_from_the_shared_tier_and_is_stored_locally() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = Arc::new(InProcess::default());
    let a = open(a_dir.path(), shared.clone(), SharedWrites::WriteThrough);
    let b = open(b_dir.path(), shared.clone(), SharedWrites::WriteThrough);
    // Over memory_max_object (256 KiB): shared from A's disk file.
    let data = common::body(1024 * 1024 + 7, 3);
    common::put(a, "/large", &data).await;
    until(|| shared.len() == 1).await;
    let held = shared.held("/large").unwrap();
    assert_eq!(held.body, data);
    assert!(
        held.ttl > Duration::from_secs(590) && held.ttl <= Duration::from_secs(600),
        "the TTL is the stale horizon: {:?}",
        held.ttl
    );

    let span = Span::inactive().handle();
    let (meta, mut hit) = b.lookup(&key("/large"), &span).await.unwrap().unwrap();
    assert!(hit.should_count_access(), "the local copy is admitted");
    assert_eq!(hit.get_eviction_weight(), data.len());
    assert_eq!(
        meta.response_header().headers.get("x-tag").unwrap(),
        "/large"
    );
    // A second reader while the first streams follows the local fill.
    let (_, mut second) = b.lookup(&key("/large"), &span).await.unwrap().unwrap();
    assert_eq!(common::read_all(&mut hit).await.unwrap(), data);
    assert_eq!(common::read_all(&mut second).await.unwrap(), data);
    assert_eq!(shared.gets.load(Ordering::SeqCst), 1, "asked once");
    assert_eq!(b.health().disk_objects, 1, "stored locally");
    assert_eq!(get_body(b, "/large").await.unwrap(), data);
    assert_eq!(
        shared.puts.load(Ordering::SeqCst),
        1,
        "a fill is not shared back"
    );
}

#[tokio::test]
async fn objects_over_shared_max_object_are_not_shared() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    let store = open_shared(
        StoreConfig {
            shared_max_object: ByteSize::kib(1),
            ..config(dir.path())
        },
        shared.clone(),
    );
    common::put(store, "/big", &common::body(2048, 1)).await;
    common::put(store, "/small", &common::body(1024, 2)).await;
    until(|| shared.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(shared.held("/small").is_some());
    assert!(shared.held("/big").is_none());
}

#[tokio::test]
async fn a_short_shared_body_is_an_error_not_a_short_response() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    let (internal, header) = common::meta("/short").serialize().unwrap();
    let hash = u128::from_be_bytes(key("/short").combined_bin());
    shared.objects.lock().unwrap().insert(
        hash,
        Held {
            meta: SharedMeta {
                internal: internal.into(),
                header: header.into(),
                body_len: 5000,
            },
            body: common::body(4000, 9),
            ttl: Duration::from_secs(60),
        },
    );
    for writers in [64, 1] {
        // Stored locally as it streams, and streamed without a local copy.
        let store = open_shared(
            StoreConfig {
                write_concurrency: writers,
                ..config(dir.path())
            },
            shared.clone(),
        );
        let _busy = if writers == 1 {
            let span = Span::inactive().handle();
            Some(
                store
                    .get_miss_handler(&key("/other"), &common::meta("other"), &span)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        let span = Span::inactive().handle();
        let (_, mut hit) = store.lookup(&key("/short"), &span).await.unwrap().unwrap();
        assert!(
            common::read_all(&mut hit).await.is_err(),
            "{writers} writers: a body short of its length fails"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.health().disk_objects, 0, "and is not stored");
    }
}

#[tokio::test]
async fn on_promotion_shares_a_large_object_read_from_disk_once() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(InProcess::default());
    let data = common::body(2 * 1024 * 1024, 5);
    {
        let store = open(dir.path(), shared.clone(), SharedWrites::OnPromotion);
        common::put(store, "/video", &data).await;
    }
    let store = open(dir.path(), shared.clone(), SharedWrites::OnPromotion);
    store.recovered().await;
    for _ in 0..3 {
        assert_eq!(get_body(store, "/video").await.unwrap(), data);
    }
    until(|| shared.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(shared.puts.load(Ordering::SeqCst), 1);
    assert_eq!(shared.held("/video").unwrap().body, data);
}
