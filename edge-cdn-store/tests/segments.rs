//! The segment ring (small objects appended to region files): damaged
//! entries, removals that outlive a crash, a crash mid-append, region reuse
//! under concurrent readers, and objects moving between the ring and files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use common::{body, get, invalidate, key, meta, open, put, reopen};
use edge_cdn_store::{StoreConfig, TieredStore};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;

/// A ring of three 8 MiB regions, and a memory tier too small for the
/// bodies here, so every hit reads the ring.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        disk_bytes: ByteSize::mib(256),
        segment_bytes: Some(ByteSize::mib(24)),
        memory_max_object: ByteSize::kib(1),
        ..common::config(dir)
    }
}

/// The ring's file.
fn ring(dir: &Path) -> PathBuf {
    dir.join("segments").join("ring")
}

/// Object files (meta and body) in the store directory's shards.
fn object_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|shard| shard.file_name().len() == 2)
        .map(|shard| std::fs::read_dir(shard.path()).unwrap().count())
        .sum()
}

fn name(i: usize) -> String {
    format!("/seg/{i}")
}

/// The body object `i` is stored with: its seed differs from its
/// neighbours', and its `x-tag` names it, so a wrong entry shows.
fn data(i: usize) -> Bytes {
    body(20_000 + i % 7 * 3_000, i as u8)
}

/// Object `i` as a lookup finds it: `None` for a miss; a panic for any
/// object but the one asked for.
async fn check(store: &'static TieredStore, i: usize) -> Option<()> {
    let (meta, got) = get(store, &name(i)).await?;
    assert_eq!(
        meta.headers()["x-tag"],
        name(i).as_str(),
        "another object's entry"
    );
    assert_eq!(got, data(i), "object {i} served wrong bytes");
    Some(())
}

#[tokio::test]
async fn small_objects_live_in_the_ring_and_come_back_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    for i in 0..50 {
        put(store, &name(i), &data(i)).await;
    }
    assert_eq!(object_files(dir.path()), 0, "no object files");
    for i in 0..50 {
        check(store, i).await.expect("stored");
    }
    // No saved index: the next store scans the ring.
    let store = reopen(config(dir.path())).await;
    assert_eq!(store.health().disk_objects, 50);
    assert_eq!(store.catalog_totals().0, 50);
    for i in 0..50 {
        check(store, i).await.expect("recovered");
    }
}

#[tokio::test]
async fn a_damaged_entry_is_a_miss_and_is_not_brought_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    for i in 0..3 {
        put(store, &name(i), &data(i)).await;
    }
    // Flip a byte in the middle entry's body.
    let mut bytes = std::fs::read(ring(dir.path())).unwrap();
    let written = bytes.len();
    bytes[written / 2] ^= 0x5a;
    std::fs::write(ring(dir.path()), &bytes).unwrap();
    assert!(check(store, 1).await.is_none(), "checked whole: a miss");
    assert!(check(store, 0).await.is_some() && check(store, 2).await.is_some());
    assert_eq!(store.health().disk_objects, 2);
    let store = reopen(config(dir.path())).await;
    assert!(check(store, 1).await.is_none());
    assert!(check(store, 0).await.is_some() && check(store, 2).await.is_some());
}

#[tokio::test]
async fn a_purged_entry_stays_purged_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    for i in 0..3 {
        put(store, &name(i), &data(i)).await;
    }
    invalidate(store, &key(&name(1)).to_compact()).await;
    assert!(check(store, 1).await.is_none());
    let store = reopen(config(dir.path())).await;
    assert!(
        check(store, 1).await.is_none(),
        "its entry was marked removed"
    );
    assert_eq!(store.health().disk_objects, 2);
}

/// A 304's new headers are a new entry; the scan after a crash finds the
/// later one.
#[tokio::test]
async fn a_refreshed_entry_comes_back_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    put(store, &name(0), &data(0)).await;
    let mut refreshed = meta(&name(0));
    refreshed
        .response_header_mut()
        .insert_header("x-refreshed", "yes")
        .unwrap();
    let span = Span::inactive().handle();
    assert!(store
        .update_meta(&key(&name(0)), &refreshed, &span)
        .await
        .unwrap());
    let store = reopen(config(dir.path())).await;
    let (meta, got) = get(store, &name(0)).await.unwrap();
    assert_eq!(meta.headers()["x-refreshed"], "yes");
    assert_eq!(got, data(0));
    assert_eq!(store.health().disk_objects, 1);
}

/// An object that grows past the ring's entry size moves to files, and
/// back: only the latest copy is kept, before and after a crash.
#[tokio::test]
async fn an_object_moving_between_the_ring_and_files_keeps_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let large = body(200_000, 1);
    put(store, &name(0), &data(0)).await;
    put(store, &name(0), &large).await;
    assert_eq!(object_files(dir.path()), 2, "in files now");
    assert_eq!(get(store, &name(0)).await.unwrap().1, large);
    put(store, &name(0), &data(0)).await;
    assert_eq!(
        object_files(dir.path()),
        0,
        "back in the ring, files removed"
    );
    check(store, 0).await.unwrap();
    let store = reopen(config(dir.path())).await;
    check(store, 0).await.unwrap();
    assert_eq!(store.health().disk_objects, 1);
}

/// The ring wraps several times while readers look up objects at random:
/// each lookup is the right object whole, or a miss; the oldest objects
/// are reclaimed, and the index and catalog agree at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_are_reused_under_readers_who_get_whole_objects_or_misses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let written = Arc::new(AtomicUsize::new(0));
    let objects = 3_000; // about 80 MiB through a 24 MiB ring
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let written = written.clone();
            tokio::spawn(async move {
                let (mut hits, mut misses, mut seed) = (0, 0, r as u64 + 1);
                while written.load(Ordering::Relaxed) < objects {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let upto = written.load(Ordering::Relaxed).max(1);
                    match check(store, (seed >> 33) as usize % upto).await {
                        Some(()) => hits += 1,
                        None => misses += 1,
                    }
                }
                (hits, misses)
            })
        })
        .collect();
    for i in 0..objects {
        put(store, &name(i), &data(i)).await;
        written.store(i + 1, Ordering::Relaxed);
    }
    let mut hits = 0;
    for reader in readers {
        hits += reader.await.unwrap().0;
    }
    assert!(hits > 0, "readers found objects");
    assert!(check(store, 0).await.is_none(), "the oldest were reclaimed");
    check(store, objects - 1)
        .await
        .expect("the newest are kept");
    // The reclaimer finishes the region it may be on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = store.health();
    assert_eq!(store.catalog_totals().0, health.disk_objects);
    assert!(health.disk_bytes <= 24 << 20, "{}", health.disk_bytes);
}

/// Run as the child: append objects from four tasks without end, saying
/// "ready" once 200 are committed.
fn append_until_killed(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(config(dir));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (next, ready) = (next.clone(), dir.join("ready"));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        put(store, &name(i), &data(i)).await;
                        if i == 200 {
                            std::fs::write(&ready, b"").unwrap();
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn a_process_killed_mid_append_serves_no_torn_entry() {
    if let Some((_, dir)) = common::child_phase() {
        return append_until_killed(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    common::child(
        "a_process_killed_mid_append_serves_no_torn_entry",
        "appending",
        dir.path(),
        true,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = reopen(config(dir.path())).await;
        let found = store.health().disk_objects;
        assert!(found >= 190, "objects committed before the kill: {found}");
        let mut served = 0;
        for i in 0..found + 100 {
            if check(store, i).await.is_some() {
                served += 1;
            }
        }
        assert_eq!(served, found, "every indexed object is served whole");
        // The commit thread journals a round's catalog entries together:
        // those a kill lost are made again from the ring, so a purge still
        // finds every object served.
        let listed = store
            .select(edge_cdn_store::Selector::Prefix(b"/seg/"))
            .await
            .unwrap();
        assert_eq!(listed.len(), found, "every indexed object is cataloged");
        assert_eq!(store.catalog_totals().0, found);
        // The ring goes on from where it was.
        put(store, &name(1_000_000), &data(1)).await;
        assert_eq!(get(store, &name(1_000_000)).await.unwrap().1, data(1));
    });
}

/// A store that stored object 0 in its ring, and then had its directory
/// removed while it runs.
async fn one_object_then_directory_deleted() -> (tempfile::TempDir, &'static TieredStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    put(store, &name(0), &data(0)).await;
    std::fs::remove_dir_all(dir.path()).unwrap();
    (dir, store)
}

/// The store's directory removed while it runs: the ring is made anew at
/// the next round of commits (its first append checks the file), and what
/// the old one held is a miss.
#[tokio::test]
async fn a_deleted_ring_is_made_anew_and_what_it_held_is_a_miss() {
    let (dir, store) = one_object_then_directory_deleted().await;
    put(store, &name(1), &data(1)).await;
    assert!(ring(dir.path()).exists(), "a new ring");
    check(store, 1).await.expect("stored in the new ring");
    assert!(check(store, 0).await.is_none(), "gone with the old one");
}

/// A ring deleted while nothing is appended is made anew by the health
/// probe.
#[tokio::test]
async fn the_health_probe_makes_a_deleted_ring_anew() {
    let (dir, store) = one_object_then_directory_deleted().await;
    let health = tokio::task::spawn_blocking(|| store.health())
        .await
        .unwrap();
    assert!(health.writable.is_ok(), "{:?}", health.writable);
    assert!(ring(dir.path()).exists(), "a new ring");
    assert!(check(store, 0).await.is_none(), "gone with the old one");
    put(store, &name(1), &data(1)).await;
    check(store, 1).await.expect("stored in the new ring");
}

/// A purge of many objects at once, some in the ring and some in files:
/// each is gone from every tier and the catalog, and stays gone after a
/// crash.
#[tokio::test]
async fn a_batched_purge_removes_objects_in_the_ring_and_in_files() {
    use edge_cdn_store::Selector::Tag;
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let large = body(200_000, 3);
    for i in 0..600 {
        let tag = if i % 3 == 0 { "gone" } else { "kept" };
        let data = if i % 50 == 0 {
            large.clone()
        } else {
            body(2_000, i as u8)
        };
        common::put_with(store, &key(&name(i)), &common::tagged(tag), &data).await;
    }
    assert!(object_files(dir.path()) > 0, "some in files");
    let listed = store.select_for_purge(Tag("gone")).await.unwrap();
    assert_eq!(listed.len(), 200);
    assert_eq!(store.purge_all(&listed).await, 200);
    assert_eq!(store.purge_all(&listed).await, 0, "nothing left to purge");
    assert!(store.select(Tag("gone")).await.unwrap().is_empty());
    assert_eq!(store.health().disk_objects, 400);
    store.purges_carried_out().await;
    assert_eq!(store.health().purging, 0);
    assert_eq!(store.catalog_totals(), (400, 1));
    for i in (0..600).step_by(3) {
        assert!(get(store, &name(i)).await.is_none(), "{i} purged");
    }
    let store = reopen(config(dir.path())).await;
    assert_eq!(store.health().disk_objects, 400);
    assert!(store.select(Tag("gone")).await.unwrap().is_empty());
}

/// Objects the purge test below stores: every other one tagged "gone".
const PURGED_OF: usize = 2_000;

/// Whether object `i` of that test carries the purged tag.
fn purged(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// The purge test's phases as children: fill and purge, then crash while
/// the purge is still being carried out on disk (`crash`, which writes how
/// many purges were in flight to `in-flight`); or open what it left, check
/// and stop cleanly (`check`).
fn purge_child(phase: &str, dir: &Path) {
    use edge_cdn_store::Selector::Tag;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = reopen(config(dir)).await;
        if phase == "crash" {
            for i in 0..PURGED_OF {
                let tag = if purged(i) { "gone" } else { "kept" };
                let data = body(2_000, i as u8);
                common::put_with(store, &key(&name(i)), &common::tagged(tag), &data).await;
            }
            let listed = store.select_for_purge(Tag("gone")).await.unwrap();
            assert_eq!(store.purge_all(&listed).await, PURGED_OF / 2);
            let in_flight = store.health().purging;
            std::fs::write(dir.join("in-flight"), in_flight.to_string()).unwrap();
            std::process::abort();
        }
        assert_eq!(store.health().disk_objects, PURGED_OF / 2);
        for i in 0..PURGED_OF {
            assert_eq!(
                get(store, &name(i)).await.is_some(),
                !purged(i),
                "object {i}"
            );
        }
        assert!(store.select(Tag("gone")).await.unwrap().is_empty());
        assert_eq!(store.catalog_totals(), (PURGED_OF / 2, 1));
        store.save_index().unwrap();
    });
}

/// A purge answers before its objects are off the disk; a crash before
/// they are does not bring any back, and the start that finishes the
/// purge drops its record, so the start after a clean stop walks nothing.
#[test]
fn a_purge_answered_before_a_crash_stays_whole() {
    let test = "a_purge_answered_before_a_crash_stays_whole";
    if let Some((phase, dir)) = common::child_phase() {
        return purge_child(&phase, &dir);
    }
    let dir = tempfile::tempdir().unwrap();
    common::child_crashing(test, "crash", dir.path());
    let in_flight = std::fs::read_to_string(dir.path().join("in-flight")).unwrap();
    assert_eq!(
        in_flight, "1",
        "the crash came while the purge was carried out"
    );
    common::child(test, "check", dir.path(), false);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(config(dir.path()));
        assert!(
            store.health().recovering.is_none(),
            "the saved index is taken: no purge was left"
        );
        assert_eq!(store.health().disk_objects, PURGED_OF / 2);
        assert!(get(store, &name(0)).await.is_none());
        assert!(get(store, &name(1)).await.is_some());
    });
}

/// An object that is read keeps being copied forward as the ring wraps;
/// one nobody reads is reclaimed on the first lap.
#[tokio::test]
async fn an_object_that_is_read_outlives_laps_of_the_ring() {
    use pingora_cache::eviction::{CacheEntryKey, EvictionManager};
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let hot = 1_000_000;
    put(store, &name(hot), &data(hot)).await;
    let read = || {
        let entry = CacheEntryKey::key_only(key(&name(hot)).to_compact());
        store
            .eviction()
            .access(&entry, 0, std::time::SystemTime::now())
    };
    // About 80 MiB through a 24 MiB ring: three laps and more. The hot
    // object is read every 100 fills, as hits would.
    for i in 0..3_000 {
        put(store, &name(i), &data(i)).await;
        if i % 100 == 0 {
            assert!(read(), "still stored at fill {i}");
        }
    }
    check(store, hot).await.expect("kept by its reads");
    assert!(check(store, 0).await.is_none(), "never read: reclaimed");
}

/// A store of files reopened with a ring after a crash (an upgrade): the
/// ring is empty, so it takes appends while the walk recovers the files,
/// and a refill appended there is not replaced by the walk's older files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refills_during_the_walk_of_older_files_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let files_only = StoreConfig {
        segment_bytes: Some(ByteSize::b(0)),
        ..config(dir.path())
    };
    let store = open(files_only);
    // Within the ring, so none is reclaimed.
    let n = 500;
    for i in 0..n {
        put(store, &name(i), &body(2_000, 1)).await;
    }
    let store = open(config(dir.path()));
    for i in (0..n).rev() {
        put(store, &name(i), &data(i)).await;
    }
    store.recovered().await;
    for i in 0..n {
        check(store, i).await.expect("the refill");
    }
    assert_eq!(store.health().disk_objects, n);
}
