//! Helpers shared by the store's integration tests: a store on a
//! directory, keys, metas, bodies, and a write or read through the
//! `Storage` interface as pingora would do it.

// Each test file uses its own subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edge_cdn_store::{IoEngineChoice, NoopObserver, SharedTier, StoreConfig, TieredStore};
use pingora_cache::key::{CacheKey, CompactCacheKey};
use pingora_cache::storage::{
    HitHandler, MissFinishType, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::Span;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

/// The default configuration on `dir`, without the free-space floor: how
/// full the test machine's disk is must not decide what these tests see
/// (`full.rs` tests the floor on its own filesystem). Its reads use the
/// engine [`IO_ENGINE`] names, so that `./x test` runs the suite on each.
pub fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        min_free_percent: 0,
        io_engine: io_engine(),
        ..StoreConfig::default()
    }
}

/// The environment variable naming the engine the suite's stores read
/// with: `io-uring` or `blocking-pool` (unset: `auto`).
pub const IO_ENGINE: &str = "EDGE_STORE_TEST_IO_ENGINE";

fn io_engine() -> IoEngineChoice {
    match std::env::var(IO_ENGINE).as_deref() {
        Err(_) => IoEngineChoice::Auto,
        Ok("io-uring") => IoEngineChoice::IoUring,
        Ok("blocking-pool") => IoEngineChoice::BlockingPool,
        Ok(other) => panic!("{IO_ENGINE}={other}: io-uring or blocking-pool"),
    }
}

/// Open a store for the rest of the test (pingora wants `'static`).
pub fn open(config: StoreConfig) -> &'static TieredStore {
    Box::leak(Box::new(
        TieredStore::open(config, Arc::new(NoopObserver)).unwrap(),
    ))
}

/// Open a store on files an earlier store left, once it has walked them:
/// until then, objects it has not reached are misses.
pub async fn reopen(config: StoreConfig) -> &'static TieredStore {
    let store = open(config);
    store.recovered().await;
    store
}

/// Open a store with a shared tier behind it.
pub fn open_shared(config: StoreConfig, shared: Arc<dyn SharedTier>) -> &'static TieredStore {
    Box::leak(Box::new(
        TieredStore::open_with_shared(config, Arc::new(NoopObserver), shared).unwrap(),
    ))
}

/// The cache key for `name`.
pub fn key(name: &str) -> CacheKey {
    CacheKey::new(name.as_bytes().to_vec(), "test")
}

/// A fresh response meta whose `x-tag` header says `tag`.
pub fn meta(tag: &str) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("x-tag", tag).unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(600), now, 0, 0, header)
}

/// A fresh response meta whose `Surrogate-Key` says `surrogate_key`.
pub fn tagged(surrogate_key: &str) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .insert_header("surrogate-key", surrogate_key)
        .unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(600), now, 0, 0, header)
}

/// `len` bytes that differ by `seed` and by position.
pub fn body(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

/// Store `data` under `name` in 64 KiB writes; returns the object's size.
pub async fn put(store: &'static TieredStore, name: &str, data: &Bytes) -> usize {
    put_with(store, &key(name), &meta(name), data).await
}

/// Store `data` under `key` with `meta`; returns the object's size.
pub async fn put_with(
    store: &'static TieredStore,
    key: &CacheKey,
    meta: &CacheMeta,
    data: &Bytes,
) -> usize {
    let span = Span::inactive().handle();
    let mut miss = store.get_miss_handler(key, meta, &span).await.unwrap();
    for chunk in data.chunks(64 * 1024) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    match miss.finish().await.unwrap() {
        MissFinishType::Created(size) => size,
        MissFinishType::Appended(..) => panic!("a new object"),
    }
}

/// Invalidate `key`'s object through the `Storage` interface, as a
/// `PURGE` request does.
pub async fn invalidate(store: &'static TieredStore, key: &CompactCacheKey) -> PurgeOutcome {
    let span = Span::inactive().handle();
    store
        .purge(PurgeTarget::Active(key), PurgeType::Invalidation, &span)
        .await
        .unwrap()
}

/// Read a hit to its end.
pub async fn read_all(hit: &mut HitHandler) -> pingora_error::Result<Bytes> {
    let mut all = Vec::new();
    while let Some(chunk) = hit.read_body().await? {
        all.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(all))
}

/// Look `name` up and read it whole.
pub async fn get(store: &'static TieredStore, name: &str) -> Option<(CacheMeta, Bytes)> {
    let span = Span::inactive().handle();
    let (meta, mut hit) = store.lookup(&key(name), &span).await.unwrap()?;
    Some((meta, read_all(&mut hit).await.unwrap()))
}

/// Look `name` up and return only its body.
pub async fn get_body(store: &'static TieredStore, name: &str) -> Option<Bytes> {
    get(store, name).await.map(|(_, body)| body)
}

/// The environment variable that makes a test binary a child phase.
const CHILD: &str = "EDGE_STORE_TEST_CHILD";

/// Run the test `name` again in a child process with `phase` and `dir` in
/// its environment, and wait for it to end (`ready: false`) or to create
/// `dir/ready` and then SIGKILL it (`ready: true`).
pub fn child(name: &str, phase: &str, dir: &Path, ready: bool) {
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(CHILD, format!("{phase}:{}", dir.display()))
        .spawn()
        .unwrap();
    if !ready {
        assert!(process.wait().unwrap().success(), "child phase {phase}");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("ready").exists() {
        assert!(Instant::now() < deadline, "child never got mid-write");
        assert!(process.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    process.kill().unwrap(); // SIGKILL: no destructor runs.
    process.wait().unwrap();
}

/// Run this test's binary as a child for `phase` (see [`child`]) that
/// ends by crashing itself (an abort: no destructor runs, as after a
/// `kill -9`), and wait for it.
pub fn child_crashing(name: &str, phase: &str, dir: &Path) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(CHILD, format!("{phase}:{}", dir.display()))
        .status()
        .unwrap();
    assert!(!status.success(), "child phase {phase} did not crash");
}

/// The phase and directory this process runs as a child for, if it is one.
pub fn child_phase() -> Option<(String, std::path::PathBuf)> {
    let var = std::env::var(CHILD).ok()?;
    let (phase, dir) = var.split_once(':')?;
    Some((phase.to_owned(), dir.into()))
}
