//! A disk that is full, fills mid-write or loses the store's directory
//! costs caching, never a response: readers following a write that fails
//! get the whole body (from memory), nothing partial is left or stored,
//! the failure is counted by reason, and storing resumes once room (or the
//! directory) is back.
//!
//! The small filesystems are tmpfs mounts, which need root (as CI runs);
//! elsewhere those tests say so and pass without running.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{body, get_body, key, meta, put, read_all};
use edge_cdn_store::{Space, StoreConfig, StoreEvent, StoreObserver, TieredStore, WriteFailure};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{HitHandler, MissFinishType, MissHandler, Storage};
use pingora_cache::trace::Span;
use tempfile::TempDir;

/// A tmpfs of a fixed size, unmounted when dropped.
struct Tmpfs(TempDir);

impl Tmpfs {
    /// Mount one of `size` (e.g. `1m`); `None`, said on stderr, when this
    /// process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mount -t tmpfs was refused");
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fill it with a ballast file until about `leave` bytes are free.
    fn fill(&self, leave: u64) {
        let free = Space::of(self.path()).unwrap().free;
        let ballast = vec![0u8; free.saturating_sub(leave) as usize];
        std::fs::write(self.ballast(), ballast).unwrap();
    }

    /// Wait (at most ten seconds) until `bytes` are free again: the space
    /// of a removed file comes back when its last descriptor closes. If it
    /// does not, fail naming the files and this process's descriptors
    /// still on the filesystem.
    async fn wait_for_room(&self, bytes: u64) {
        for _ in 0..200 {
            if Space::of(self.path()).unwrap().free >= bytes {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let files: Vec<_> = walk(self.path());
        let open: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.starts_with(self.path()))
            .collect();
        panic!(
            "the space never came back: {:?} free; files {files:?}; open here {open:?}",
            Space::of(self.path()).unwrap()
        );
    }

    fn ballast(&self) -> std::path::PathBuf {
        self.path().join("ballast")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Every file under `dir`, with its length.
fn walk(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push((path, entry.metadata().map_or(0, |m| m.len())));
        }
    }
    found
}

/// Counts the write failures the store reports.
#[derive(Default)]
struct Failures(Mutex<Vec<WriteFailure>>);

impl StoreObserver for Failures {
    fn event(&self, event: StoreEvent) {
        if let StoreEvent::WriteFailed(reason) = event {
            self.0.lock().unwrap().push(reason);
        }
    }
}

impl Failures {
    fn seen(&self) -> Vec<WriteFailure> {
        self.0.lock().unwrap().clone()
    }
}

/// A store in `dir/cache` with a free-space floor of `min_free_percent`.
fn open(dir: &Path, min_free_percent: u8) -> (&'static TieredStore, Arc<Failures>) {
    let failures = Arc::new(Failures::default());
    let config = StoreConfig {
        dir: dir.join("cache"),
        min_free_percent,
        ..common::config(dir)
    };
    let store = TieredStore::open(config, failures.clone()).unwrap();
    (Box::leak(Box::new(store)), failures)
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cache/tmp")).unwrap().count()
}

/// A write of `name` and the reader pingora gives the miss's own client.
async fn write_with_reader(store: &'static TieredStore, name: &str) -> (MissHandler, HitHandler) {
    let span = Span::inactive().handle();
    let miss = store
        .get_miss_handler(&key(name), &meta(name), &span)
        .await
        .unwrap();
    let (_, reader) = store
        .lookup_streaming_write(&key(name), miss.streaming_write_tag(), &span)
        .await
        .unwrap()
        .unwrap();
    (miss, reader)
}

/// Read to the end, bounded so a reader left waiting fails the test.
fn read_to_end(mut reader: HitHandler) -> tokio::task::JoinHandle<pingora_error::Result<Bytes>> {
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(10), read_all(&mut reader))
            .await
            .expect("the reader was told how the write ended")
    })
}

#[tokio::test]
async fn a_disk_filling_mid_write_serves_every_reader_whole_and_stores_nothing() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let (store, failures) = open(fs.path(), 0);
    let data = body(3 * 1024 * 1024, 7);
    let (mut miss, own) = write_with_reader(store, "/big").await;
    let own = read_to_end(own);
    let mut follower = None;
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .expect("a failed write is not the response's error");
        if i == 4 {
            let span = Span::inactive().handle();
            let (_, hit) = store.lookup(&key("/big"), &span).await.unwrap().unwrap();
            follower = Some(read_to_end(hit));
        }
    }
    assert!(
        matches!(
            miss.finish().await.unwrap(),
            MissFinishType::Appended(0, None)
        ),
        "finish reports nothing stored, without an error"
    );

    assert_eq!(
        own.await.unwrap().unwrap(),
        data,
        "the miss's client gets it whole"
    );
    let followed = follower.unwrap().await.unwrap().unwrap();
    assert_eq!(followed, data, "a collapsed reader gets it whole");
    assert_eq!(failures.seen(), [WriteFailure::NoSpace]);
    assert_eq!(temp_files(fs.path()), 0, "the partial file is gone");
    assert!(
        get_body(store, "/big").await.is_none(),
        "nothing was stored"
    );

    let small = body(10_000, 1);
    fs.wait_for_room(64 * 1024).await;
    put(store, "/small", &small).await;
    assert_eq!(
        get_body(store, "/small").await.unwrap(),
        small,
        "storing resumes"
    );
}

#[tokio::test]
async fn a_write_given_up_after_its_disk_filled_is_an_error_to_its_readers() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let (store, _) = open(fs.path(), 0);
    let (mut miss, reader) = write_with_reader(store, "/w").await;
    for chunk in body(1024 * 1024, 3).chunks(64 * 1024) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    drop(miss);
    assert!(
        read_to_end(reader).await.unwrap().is_err(),
        "a truncated body is an error, never a clean end"
    );
    assert_eq!(temp_files(fs.path()), 0);
}

#[tokio::test]
async fn no_write_begins_under_the_free_space_floor_until_room_returns() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let (store, failures) = open(fs.path(), 10);
    fs.fill(64 * 1024);
    let health = store.health();
    assert!(health.writable.is_ok(), "{:?}", health.writable);
    let low = health.low_space.expect("readiness says the space is low");
    assert!(low.contains("min_free_percent"), "{low}");

    let span = Span::inactive().handle();
    assert!(store
        .get_miss_handler(&key("/a"), &meta("a"), &span)
        .await
        .is_err());
    assert_eq!(failures.seen(), [WriteFailure::NoSpace]);
    assert_eq!(temp_files(fs.path()), 0);

    std::fs::remove_file(fs.ballast()).unwrap();
    // Once in about ten runs the space still read as low right after the
    // removal (the cause was not found); if it never comes back, the wait
    // fails naming the files and descriptors on the filesystem.
    fs.wait_for_room(1024 * 1024).await;
    assert!(store.health().low_space.is_none());
    let data = body(100_000, 2);
    put(store, "/a", &data).await;
    assert_eq!(get_body(store, "/a").await.unwrap(), data);
}

#[tokio::test]
async fn a_deleted_store_directory_is_recreated_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, failures) = open(dir.path(), 0);
    put(store, "/before", &body(1000, 1)).await;
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();

    let data = body(200_000, 4);
    put(store, "/after", &data).await;
    assert_eq!(get_body(store, "/after").await.unwrap(), data);
    assert!(failures.seen().is_empty(), "{:?}", failures.seen());

    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    assert!(
        store.health().writable.is_ok(),
        "the probe recreates it too"
    );
    assert!(dir.path().join("cache/tmp").is_dir());
}

/// An object the purge catalog cannot record is not kept, since no purge
/// could find it: it is removed again, its response still served whole,
/// and the failure counted (`catalog`). Here the catalog's database lives
/// on a full filesystem of its own.
#[tokio::test]
async fn an_object_the_catalog_cannot_record_is_not_kept() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    std::os::unix::fs::symlink(fs.path(), dir.path().join("cache/catalog")).unwrap();
    let (store, failures) = open(dir.path(), 0);
    fs.fill(0);

    // The database buffers its journal: writes fail once a buffer's worth
    // of records meets the full disk. Long keys get there in a few objects.
    let long = "k".repeat(4096);
    let mut failed_at = None;
    for i in 0..64 {
        let name = format!("/{i}/{long}");
        let data = body(2048, i as u8);
        let (mut miss, reader) = write_with_reader(store, &name).await;
        let reader = read_to_end(reader);
        miss.write_body(data.clone(), true).await.unwrap();
        miss.finish().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), data, "served whole");
        if failures.seen().contains(&WriteFailure::Catalog) {
            failed_at = Some(name);
            break;
        }
    }
    let name = failed_at.expect("the catalog's writes failed on a full disk");
    assert!(!store.holds(&key(&name)), "not indexed");
    assert!(get_body(store, &name).await.is_none(), "a miss");
    let hash = u128::from_be_bytes(key(&name).combined_bin());
    let shard = dir.path().join(format!("cache/{:02x}", hash >> 120));
    let left: Vec<_> = std::fs::read_dir(&shard)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with(&format!("{hash:032x}"))
        })
        .collect();
    assert!(left.is_empty(), "its files are gone: {left:?}");
}

/// A full disk under the segment ring (no free-space floor): an append
/// fails with no space, the miss is served and not stored, the failure is
/// counted; objects already in the ring keep being hits, and appending
/// resumes once room returns.
#[tokio::test]
async fn a_full_disk_stops_ring_appends_and_keeps_ring_hits() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let failures = Arc::new(Failures::default());
    // A memory tier too small for these bodies: hits read the ring.
    let config = StoreConfig {
        dir: fs.path().join("cache"),
        memory_max_object: bytesize::ByteSize::kib(1),
        ..common::config(fs.path())
    };
    let store: &'static TieredStore = Box::leak(Box::new(
        TieredStore::open(config, failures.clone()).unwrap(),
    ));
    let before = body(20_000, 1);
    put(store, "/before", &before).await;
    fs.fill(4 * 1024);

    let span = Span::inactive().handle();
    let data = body(30_000, 2);
    let mut miss = store
        .get_miss_handler(&key("/full"), &meta("full"), &span)
        .await
        .unwrap();
    let (_, reader) = store
        .lookup_streaming_write(&key("/full"), miss.streaming_write_tag(), &span)
        .await
        .unwrap()
        .expect("the miss's own reader");
    let reading = read_to_end(reader);
    miss.write_body(data.clone(), true).await.unwrap();
    let finished = miss.finish().await.unwrap();
    assert!(
        !matches!(finished, MissFinishType::Created(_)),
        "stored nothing"
    );
    assert_eq!(reading.await.unwrap().unwrap(), data, "served whole");
    assert_eq!(failures.seen(), [WriteFailure::NoSpace]);
    assert!(get_body(store, "/full").await.is_none());
    assert_eq!(
        get_body(store, "/before").await.unwrap(),
        before,
        "hits go on"
    );

    std::fs::remove_file(fs.ballast()).unwrap();
    fs.wait_for_room(64 * 1024).await;
    put(store, "/after", &data).await;
    assert_eq!(get_body(store, "/after").await.unwrap(), data);
}
