//! The purge catalog at scale, on disk: what recording an object costs on
//! the fill path, and how long selecting 100k objects by tag and by prefix
//! takes among many.
//!
//! `cargo bench -p edge-cdn-store --bench catalog` (objects: the
//! `CATALOG_OBJECTS` environment variable, default 1,000,000; the database
//! goes in a temporary directory under `CATALOG_DIR`, default the system's).
//!
//! Each object has a 40-byte primary key, a group tag shared by a tenth of
//! all objects and a tag of its own (a product id, say). Objects are
//! recorded one at a time, as fills (and the walk after a crash) do, then
//! selections run, then the catalog is reopened as a restart does, and
//! tidied and counted as the end of a walk does.

use std::time::Instant;

use edge_cdn_store::__bench::{open_catalog, Journal, OwnedSelector, Record};
use pingora_cache::key::CompactCacheKey;

fn hash(i: usize) -> [u8; 16] {
    // Spread like real key hashes (which are blake2b output).
    ((i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x5851_F42D_4C95_7F2D)
        .to_be_bytes()
}

fn record(i: usize) -> Record {
    Record {
        key: CompactCacheKey {
            primary: hash(i),
            variance: None,
            user_tag: "www".into(),
        },
        primary_key: format!("www\0www.example.com\0/assets/{i:012}.js")
            .into_bytes()
            .into(),
        tags: vec![
            format!("group-{}", i % 10).into(),
            format!("item-{i}").into(),
        ],
    }
}

fn main() {
    let objects: usize = std::env::var("CATALOG_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = match std::env::var_os("CATALOG_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let started = Instant::now();
    let (catalog, _) = open_catalog(dir.path()).unwrap();
    for i in 0..objects {
        catalog.insert(record(i), Journal::Now).unwrap();
    }
    let insert = started.elapsed();

    println!("{objects} objects in the catalog (40-byte keys, a group tag and an own tag each)");
    println!(
        "  recorded one at a time     {:>8.2} s   {:>6.2} µs/object  (a fill's cost; the walk's after a crash)",
        insert.as_secs_f64(),
        insert.as_secs_f64() * 1e6 / objects as f64
    );
    // Keys /assets/000000100000 to /assets/000000199999: 100k objects
    // from 200k objects up.
    let prefix = b"www\0www.example.com\0/assets/0000001".to_vec();
    for (what, selector) in [
        ("tag (a tenth of all)", OwnedSelector::Tag("group-3".into())),
        ("prefix (100k)", OwnedSelector::Prefix(prefix)),
        (
            "tag (one object)",
            OwnedSelector::Tag(format!("item-{}", objects / 2)),
        ),
        (
            "primary (one object)",
            OwnedSelector::Primary(hash(objects / 3)),
        ),
    ] {
        let started = Instant::now();
        let found = catalog.select(&selector).unwrap();
        let took = started.elapsed();
        println!(
            "  select by {what:<22} {:>8} found in {:>9.1} ms",
            found.len(),
            took.as_secs_f64() * 1e3
        );
    }
    drop(catalog);
    let started = Instant::now();
    let (catalog, fresh) = open_catalog(dir.path()).unwrap();
    let reopen = started.elapsed();
    assert!(!fresh);
    let started = Instant::now();
    let gone = catalog.recount(|_| true).unwrap();
    let tidy = started.elapsed();
    assert!(gone.is_empty());
    assert_eq!(catalog.totals().0, objects);
    println!(
        "  reopened                   {:>8.3} s   (a restart reads nothing per object)",
        reopen.as_secs_f64()
    );
    println!(
        "  tidied and counted         {:>8.2} s   {:>6.2} µs/object  (after a walk: one scan of entries and tags)",
        tidy.as_secs_f64(),
        tidy.as_secs_f64() * 1e6 / objects as f64
    );
    let disk = du(dir.path());
    println!(
        "  on disk                    {:>8.1} MiB  {:>6.1} bytes/object",
        disk as f64 / (1 << 20) as f64,
        disk as f64 / objects as f64
    );
}

/// Bytes in files under `path`.
fn du(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
