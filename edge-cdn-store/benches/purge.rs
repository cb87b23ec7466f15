//! Purging by tag: select a quarter of the store with `select_for_purge`
//! and remove it with `purge_all`, as the host does; the purge answers once
//! lookups miss its objects, and the bench also reports when the
//! background removal from disk and catalog is done.
//!
//! `cargo bench -p edge-cdn-store --bench purge` (objects: the
//! `PURGE_OBJECTS` environment variable, default 200,000 of 1 KiB; one in
//! `PURGE_EVERY`, default 4, carries the purged tag; the store goes in a
//! temporary directory under `PURGE_DIR`, default the system's).

mod common;

use std::time::{Duration, Instant, SystemTime};

use edge_cdn_store::Selector;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

fn meta(tag: &str) -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .append_header("Cache-Control", "public, max-age=86400")
        .unwrap();
    header.append_header("Surrogate-Key", tag).unwrap();
    CacheMeta::new(now + Duration::from_secs(86400), now, 0, 0, header)
}

fn main() {
    let objects = common::count("PURGE_OBJECTS", 200_000);
    let every = common::count("PURGE_EVERY", 4).max(1);
    let dir = common::scratch("PURGE_DIR");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = common::open(dir.path(), common::Engine::Ring);
        store.recovered().await;
        let started = Instant::now();
        common::fill(store, objects, move |i| {
            meta(if i % every == 0 { "a" } else { "b" })
        })
        .await;
        println!(
            "{objects} objects of 1 KiB stored in {:.1} s; one in {every} tagged a",
            started.elapsed().as_secs_f64()
        );

        let started = Instant::now();
        let listed = store.select_for_purge(Selector::Tag("a")).await.unwrap();
        let selected = started.elapsed();
        assert_eq!(store.purge_all(&listed).await, listed.len());
        let took = started.elapsed();
        assert!(store.select(Selector::Tag("a")).await.unwrap().is_empty());
        assert_eq!(store.health().disk_objects, objects - listed.len());
        store.purges_carried_out().await;
        let carried_out = started.elapsed();
        println!(
            "  {} purged by tag in {:.2} s ({:.1} µs per object; selecting took {:.2} s); \
             off the disk and the catalog {:.2} s after the purge began",
            listed.len(),
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / listed.len() as f64,
            selected.as_secs_f64(),
            carried_out.as_secs_f64()
        );
        assert_eq!(store.catalog_totals().0, objects - listed.len());
    });
}
