//! The store through pingora's `Storage` interface, on a real directory.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use bytesize::ByteSize;
use common::{body, get, invalidate, key, meta, open, put, read_all, reopen};
use edge_cdn_store::StoreConfig;
use pingora_cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;

/// Small tiers, so that every size class is exercised with small bodies.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        memory_max_object: ByteSize::kib(4),
        verify_whole_below: ByteSize::kib(64),
        ..common::config(dir)
    }
}

/// [`config`] with every object in its own files, for the tests of what
/// the file engine does with damaged files (`segments.rs` tests the ring).
fn files_only(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_bytes: Some(ByteSize::b(0)),
        ..config(dir)
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().and_then(|e| e.to_str()) == Some(ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, ext, &mut out);
    out
}

#[tokio::test]
async fn objects_round_trip_in_every_size_class() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    // Memory-sized, whole-verified disk, and streamed-from-disk bodies.
    for (path, len) in [
        ("/tiny", 100),
        ("/mid", 50_000),
        ("/large", 1_000_000),
        ("/empty", 0),
    ] {
        let data = body(len, 7);
        put(store, path, &data).await;
        let (meta, got) = get(store, path).await.expect(path);
        assert_eq!(got, data, "{path}");
        assert_eq!(meta.headers()["x-tag"], path);
    }
    assert!(get(store, "/absent").await.is_none());
}

#[tokio::test]
async fn seeks_serve_ranges_from_disk_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let data = body(300_000, 3);
    put(store, "/r", &data).await;
    let span = Span::inactive().handle();
    let (_, mut hit) = store.lookup(&key("/r"), &span).await.unwrap().unwrap();
    assert!(hit.can_seek());
    hit.seek(70_000, Some(200_000)).unwrap();
    assert_eq!(
        read_all(&mut hit).await.unwrap(),
        data.slice(70_000..200_000)
    );
}

#[tokio::test]
async fn a_restart_keeps_every_committed_object() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<Bytes> = (0..20).map(|i| body(i * 7_000, i as u8)).collect();
    {
        let store = open(config(dir.path()));
        for (i, d) in data.iter().enumerate() {
            put(store, &format!("/o/{i}"), d).await;
        }
    }
    let store = reopen(config(dir.path())).await;
    assert_eq!(store.health().disk_objects, 20);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(&get(store, &format!("/o/{i}")).await.unwrap().1, d);
    }
}

#[tokio::test]
async fn corrupt_files_are_misses_and_are_removed_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let small = body(30_000, 1);
    let large = body(600_000, 2);
    {
        let store = open(files_only(dir.path()));
        put(store, "/small", &small).await;
        put(store, "/large", &large).await;
    }
    // Flip one byte in the middle of every body; truncate nothing yet.
    for path in files(dir.path(), "body") {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let store = reopen(files_only(dir.path())).await;
    // Checked whole at lookup: a miss.
    assert!(get(store, "/small").await.is_none());
    // Checked block by block: the read fails before the bad block is returned.
    let span = Span::inactive().handle();
    let (_, mut hit) = store.lookup(&key("/large"), &span).await.unwrap().unwrap();
    let mut served = Vec::new();
    let failed = loop {
        match hit.read_body().await {
            Ok(Some(chunk)) => served.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(failed, "a corrupt block is an error");
    assert_eq!(
        &served[..],
        &large[..served.len()],
        "only intact bytes were served"
    );
    assert!(
        get(store, "/large").await.is_none(),
        "and the object is gone"
    );
    assert!(files(dir.path(), "meta").is_empty() && files(dir.path(), "body").is_empty());
}

#[tokio::test]
async fn truncated_foreign_and_old_layout_files_are_cleaned_up_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(files_only(dir.path()));
        put(store, "/a", &body(10_000, 1)).await;
        put(store, "/b", &body(10_000, 2)).await;
        put(store, "/c", &body(10_000, 3)).await;
    }
    let metas = files(dir.path(), "meta");
    let bodies = files(dir.path(), "body");
    // A truncated meta, a truncated body, and a body without its meta.
    std::fs::write(&metas[0], &std::fs::read(&metas[0]).unwrap()[..20]).unwrap();
    let other = bodies
        .iter()
        .find(|b| b.with_extension("meta") != metas[0])
        .unwrap()
        .clone();
    let len = std::fs::metadata(&other).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&other)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let third = bodies
        .iter()
        .find(|b| **b != other && b.with_extension("meta") != metas[0])
        .unwrap();
    std::fs::remove_file(third.with_extension("meta")).unwrap();
    // The two-level `xx/yy/` layout of earlier versions.
    let old_layout = dir.path().join("ab").join("cd");
    std::fs::create_dir_all(&old_layout).unwrap();
    std::fs::copy(&other, old_layout.join("x.body")).unwrap();
    let store = reopen(files_only(dir.path())).await;
    assert_eq!(store.health().disk_objects, 0);
    assert!(files(dir.path(), "meta").is_empty() && files(dir.path(), "body").is_empty());
    assert!(!old_layout.exists());
}

#[tokio::test]
async fn collapsed_readers_stream_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let span = Span::inactive().handle();
    let data = body(500_000, 9);
    let mut miss = store
        .get_miss_handler(&key("/p"), &meta("p"), &span)
        .await
        .unwrap();
    miss.write_body(data.slice(..100_000), false).await.unwrap();

    let (_, mut reader) = store
        .lookup(&key("/p"), &span)
        .await
        .unwrap()
        .expect("partial hit");
    let first = reader.read_body().await.unwrap().unwrap();
    assert_eq!(
        first,
        data.slice(..first.len()),
        "bytes arrive before the write ends"
    );
    let reading = tokio::spawn(async move {
        let mut all = first.to_vec();
        all.extend_from_slice(&read_all(&mut reader).await.unwrap());
        all
    });
    for chunk in data.slice(100_000..).chunks(50_000) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    miss.finish().await.unwrap();
    assert_eq!(reading.await.unwrap(), data.to_vec());
}

/// A body up to 256 KiB is held in memory until it is whole, whatever the
/// memory tier keeps (4 KiB here): readers following it read it from
/// there, no file exists before `finish`, and `finish` stores it in one go
/// (an entry of the segment ring, at this size: no file at all).
#[tokio::test]
async fn a_small_body_is_held_until_whole_and_followed_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let span = Span::inactive().handle();
    let data = body(100_000, 4);
    let mut miss = store
        .get_miss_handler(&key("/s"), &meta("s"), &span)
        .await
        .unwrap();
    let (_, mut reader) = store
        .lookup_streaming_write(&key("/s"), miss.streaming_write_tag(), &span)
        .await
        .unwrap()
        .expect("the miss's own reader");
    for chunk in data.chunks(30_000) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    let (_, mut follower) = store.lookup(&key("/s"), &span).await.unwrap().unwrap();
    let mut read = Vec::new();
    while read.len() < data.len() {
        read.extend_from_slice(&follower.read_body().await.unwrap().unwrap());
    }
    assert_eq!(read, data.to_vec(), "read whole before the write ends");
    let made: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(made.is_empty(), "no file yet: {made:?}");
    miss.finish().await.unwrap();
    assert_eq!(read_all(&mut reader).await.unwrap(), data);
    assert_eq!(follower.read_body().await.unwrap(), None, "then the end");
    assert_eq!(get(store, "/s").await.unwrap().1, data);
    assert!(files(dir.path(), "body").is_empty());
}

#[tokio::test]
async fn an_abandoned_write_is_an_error_to_its_readers_not_a_short_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(&key("/x"), &meta("x"), &span)
        .await
        .unwrap();
    miss.write_body(body(70_000, 1), false).await.unwrap();
    let (_, mut reader) = store.lookup(&key("/x"), &span).await.unwrap().unwrap();
    drop(miss);
    assert!(read_all(&mut reader).await.is_err());
    assert!(get(store, "/x").await.is_none());
    // The temporary file is removed off the runtime; give it a moment.
    let tmp = dir.path().join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).unwrap().next().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the abandoned write's temporary file was not removed");
}

#[tokio::test]
async fn purge_update_meta_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let span = Span::inactive().handle();
    let data = body(200_000, 5);
    put(store, "/m", &data).await;

    // A 304 refresh rewrites the meta and keeps the body.
    let mut refreshed = meta("m");
    refreshed
        .response_header_mut()
        .insert_header("x-tag", "refreshed")
        .unwrap();
    assert!(store
        .update_meta(&key("/m"), &refreshed, &span)
        .await
        .unwrap());
    let (meta_now, body_now) = get(store, "/m").await.unwrap();
    assert_eq!(meta_now.headers()["x-tag"], "refreshed");
    assert_eq!(body_now, data);

    // A refresh that grows the header grows the object's size on disk as
    // the index (and so eviction) counts it, by as much as its meta file.
    let meta_file = || {
        use pingora_cache::key::CacheHashKey;
        let hash = u128::from_be_bytes(key("/m").combined_bin());
        let shard = dir.path().join(format!("{:02x}", hash >> 120));
        std::fs::read_dir(shard)
            .unwrap()
            .flatten()
            .find(|f| f.file_name().to_string_lossy().ends_with(".meta"))
            .unwrap()
            .metadata()
            .unwrap()
            .len()
    };
    let (size_before, file_before) = (store.health().disk_bytes, meta_file());
    let mut grown = meta("m");
    grown
        .response_header_mut()
        .insert_header("x-long", "v".repeat(3_000))
        .unwrap();
    assert!(store.update_meta(&key("/m"), &grown, &span).await.unwrap());
    let grew = meta_file() - file_before;
    assert!(grew >= 3_000, "{grew}");
    assert_eq!(store.health().disk_bytes, size_before + grew);

    // Expire: kept, but no longer fresh.
    let compact = key("/m").to_compact();
    let outcome = store
        .expire(PurgeTarget::Active(&compact), &span)
        .await
        .unwrap();
    assert_eq!(outcome, PurgeOutcome::Expired);
    let (stale, _) = get(store, "/m").await.unwrap();
    assert!(!stale.is_fresh(SystemTime::now()));

    // Purge: gone.
    let outcome = invalidate(store, &compact).await;
    assert_eq!(outcome, PurgeOutcome::Purged(None));
    assert!(get(store, "/m").await.is_none());
    let outcome = store
        .purge(PurgeTarget::Active(&compact), PurgeType::Eviction, &span)
        .await
        .unwrap();
    assert_eq!(outcome, PurgeOutcome::NotFound);
}

#[tokio::test]
async fn saturated_disk_io_degrades_to_not_storing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        write_concurrency: 1,
        ..config(dir.path())
    });
    let span = Span::inactive().handle();
    let first = store
        .get_miss_handler(&key("/1"), &meta("1"), &span)
        .await
        .unwrap();
    assert!(store
        .get_miss_handler(&key("/2"), &meta("2"), &span)
        .await
        .is_err());
    drop(first);
    assert!(store
        .get_miss_handler(&key("/2"), &meta("2"), &span)
        .await
        .is_ok());
}

#[tokio::test]
async fn objects_over_the_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        max_object_size: ByteSize::kib(100),
        ..config(dir.path())
    });
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(&key("/big"), &meta("b"), &span)
        .await
        .unwrap();
    miss.write_body(body(60_000, 1), false).await.unwrap();
    assert!(miss.write_body(body(60_000, 2), false).await.is_err());
    drop(miss);
    assert!(get(store, "/big").await.is_none());
}

#[tokio::test]
async fn health_reports_a_writable_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    put(store, "/h", &body(10, 1)).await;
    let health = store.health();
    assert_eq!(health.writable, Ok(()));
    assert!(health.space.is_some_and(|s| s.free > 0));
    assert_eq!(health.disk_objects, 1);
}
