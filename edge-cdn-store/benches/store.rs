//! Store throughput: hit lookups per tier (disk hits through io_uring and
//! the blocking pool, in one run), inserts, and many readers of one hot
//! object. `cargo bench -p edge-cdn-store --bench store`

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use bytesize::ByteSize;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edge_cdn_store::{IoEngineChoice, NoopObserver, StoreConfig, TieredStore};
use pingora_cache::key::CacheKey;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

/// A response header as origins send them: decoding it is part of a hit.
fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "public, max-age=3600"),
        ("Date", "Sat, 21 Nov 2026 10:00:00 GMT"),
        ("Last-Modified", "Fri, 20 Nov 2026 08:30:00 GMT"),
        ("ETag", "\"5f3c-61a2b3c4d5e6f\""),
        ("Vary", "Accept-Encoding"),
        ("Server", "origin/1.0"),
        ("X-Request-Id", "0d9f7a2e-3c41-4b8e-9a57-1f2e3d4c5b6a"),
    ] {
        header.append_header(name, value).unwrap();
    }
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

async fn put(store: &'static TieredStore, key: &CacheKey, len: usize) {
    let span = Span::inactive().handle();
    let mut miss = store.get_miss_handler(key, &meta(), &span).await.unwrap();
    miss.write_body(Bytes::from(vec![1u8; len]), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
}

async fn read(store: &'static TieredStore, key: &CacheKey) -> usize {
    let span = Span::inactive().handle();
    let (_, mut hit) = store.lookup(key, &span).await.unwrap().unwrap();
    let mut n = 0;
    while let Some(chunk) = hit.read_body().await.unwrap() {
        n += chunk.len();
    }
    n
}

/// A store in a new directory under `dir`, with small objects kept in
/// memory only up to 8 KiB, so larger ones are disk hits.
fn open(dir: &std::path::Path, name: &str, io_engine: IoEngineChoice) -> &'static TieredStore {
    Box::leak(Box::new(
        TieredStore::open(
            StoreConfig {
                dir: dir.join(name),
                disk_bytes: ByteSize::gib(4),
                memory_max_object: ByteSize::kib(8),
                io_engine,
                ..StoreConfig::default()
            },
            Arc::new(NoopObserver),
        )
        .unwrap(),
    ))
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = open(dir.path(), "io_uring", IoEngineChoice::IoUring);
    let pooled = open(dir.path(), "blocking_pool", IoEngineChoice::BlockingPool);
    let small = CacheKey::new(&b"small"[..], "b");
    let medium = CacheKey::new(&b"medium"[..], "b");
    let large = CacheKey::new(&b"large"[..], "b");
    runtime.block_on(async {
        for store in [store, pooled] {
            put(store, &small, 4 * 1024).await;
            put(store, &medium, 64 * 1024).await;
            put(store, &large, 4 * 1024 * 1024).await;
        }
    });

    let mut group = c.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory tier, 4 KiB", |b| {
        b.to_async(&runtime).iter(|| read(store, &small))
    });
    // Disk hits through each read engine, in one run.
    for (engine, store) in [("io_uring", store), ("blocking pool", pooled)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            format!("disk tier, 64 KiB in the ring (checked whole), {engine}"),
            |b| b.to_async(&runtime).iter(|| read(store, &medium)),
        );
        group.throughput(Throughput::Bytes(4 * 1024 * 1024));
        group.bench_function(
            format!("disk tier, 4 MiB in files (checked per block), {engine}"),
            |b| b.to_async(&runtime).iter(|| read(store, &large)),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("insert");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    group.bench_function("16 KiB object", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let key = CacheKey::new(format!("insert-{n}").into_bytes(), "b");
            async move { put(store, &key, 16 * 1024).await }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("concurrent readers");
    group.throughput(Throughput::Elements(32));
    group.bench_function("32 readers of one hot 4 KiB object", |b| {
        b.to_async(&runtime).iter(|| async {
            let readers: Vec<_> = (0..32)
                .map(|_| {
                    let key = small.clone();
                    tokio::spawn(async move { read(store, &key).await })
                })
                .collect();
            for r in readers {
                r.await.unwrap();
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = store;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(store);
