//! Cancel safety: a write whose future or handler is dropped mid-write, or
//! whose task is aborted, leaves no temporary file, gives its write permit
//! back and is an error to the readers following it — never a clean end of
//! a truncated body (pingora issue #932).

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::{body, get_body, key, meta, open, read_all};
use edge_cdn_store::{StoreConfig, TieredStore};
use pingora_cache::storage::{HitHandler, MissHandler, Storage};
use pingora_cache::trace::Span;
use tempfile::TempDir;
use tokio::sync::Notify;

/// One writer at a time, so a leaked permit shows as a refused writer.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        write_concurrency: 1,
        ..common::config(dir)
    }
}

/// A chunk large enough that writing it is still in flight when the
/// future writing it is dropped after its first poll, even on a busy
/// machine.
fn big_chunk() -> Bytes {
    body(16 * 1024 * 1024, 3)
}

/// Poll `future` once, then drop it: a request dropped mid-await.
fn poll_once_and_drop<F: Future>(future: F) {
    let mut future = pin!(future);
    let poll = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(poll.is_pending(), "the future was still waiting on its I/O");
}

/// Wait for `check` to hold, for at most five seconds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached in time");
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

/// A store in a fresh directory.
fn fresh() -> (TempDir, &'static TieredStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    (dir, store)
}

/// A write of `name` with `first` written, and a reader following it.
async fn followed_write(
    store: &'static TieredStore,
    name: &str,
    first: Bytes,
) -> (MissHandler, HitHandler) {
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(&key(name), &meta(name), &span)
        .await
        .unwrap();
    miss.write_body(first, false).await.unwrap();
    let (_, reader) = store
        .lookup(&key(name), &span)
        .await
        .unwrap()
        .expect("a partial hit");
    (miss, reader)
}

/// The reader's outcome, bounded so a reader left waiting fails the test.
async fn read_to_end(mut reader: HitHandler) -> pingora_error::Result<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), read_all(&mut reader))
        .await
        .expect("the reader was told how the write ended")
}

/// What every abandoned write must leave: no temporary file, a permit for
/// the next writer, and nothing stored under its key.
async fn assert_abandoned(store: &'static TieredStore, dir: &Path, name: &str) {
    until("the temporary file is removed", async || {
        temp_files(dir) == 0
    })
    .await;
    until("the write permit is released", async || {
        let span = Span::inactive().handle();
        store
            .get_miss_handler(&key("/next"), &meta("next"), &span)
            .await
            .is_ok()
    })
    .await;
    assert!(get_body(store, name).await.is_none(), "nothing was stored");
}

#[tokio::test]
async fn a_write_future_dropped_mid_write_abandons_the_write() {
    let (dir, store) = fresh();
    let (mut miss, reader) = followed_write(store, "/w", body(100_000, 1)).await;

    poll_once_and_drop(miss.write_body(big_chunk(), false));

    assert!(
        read_to_end(reader).await.is_err(),
        "the reader sees an error while the handler is still alive"
    );
    assert_abandoned(store, dir.path(), "/w").await;
    assert!(
        miss.write_body(body(10, 2), false).await.is_err(),
        "the write cannot continue"
    );
}

#[tokio::test]
async fn a_write_that_times_out_abandons_the_write() {
    let (dir, store) = fresh();
    // The deadline races the write: on a busy machine the write can win,
    // so try again (a new key each time) until the deadline passes first.
    for attempt in 0..20 {
        let name = format!("/t{attempt}");
        let (mut miss, reader) = followed_write(store, &name, body(100_000, 1)).await;

        let timed = tokio::time::timeout(Duration::ZERO, miss.write_body(big_chunk(), false)).await;
        drop(miss);
        if timed.is_ok() {
            continue;
        }
        assert!(read_to_end(reader).await.is_err());
        assert_abandoned(store, dir.path(), &name).await;
        return;
    }
    panic!("the deadline never passed mid-write");
}

#[tokio::test]
async fn a_handler_dropped_before_finish_abandons_the_write() {
    let (dir, store) = fresh();
    let (mut miss, reader) = followed_write(store, "/h", body(100_000, 1)).await;
    // The last chunk waits in the handler for the commit.
    miss.write_body(body(1_000, 2), true).await.unwrap();

    drop(miss);

    assert!(read_to_end(reader).await.is_err());
    assert_abandoned(store, dir.path(), "/h").await;
}

#[tokio::test]
async fn an_aborted_writing_task_abandons_the_write() {
    let (dir, store) = fresh();
    let (mut miss, reader) = followed_write(store, "/a", body(100_000, 1)).await;

    let wrote = Arc::new(Notify::new());
    let writing = tokio::spawn({
        let wrote = wrote.clone();
        async move {
            loop {
                miss.write_body(body(256 * 1024, 2), false).await.unwrap();
                wrote.notify_one();
            }
        }
    });
    wrote.notified().await;
    writing.abort();
    assert!(writing.await.unwrap_err().is_cancelled());

    assert!(read_to_end(reader).await.is_err());
    assert_abandoned(store, dir.path(), "/a").await;
}

#[tokio::test]
async fn a_finish_future_dropped_mid_commit_still_commits() {
    let (dir, store) = fresh();
    let data = [body(100_000, 4), big_chunk()].concat();
    let data = Bytes::from(data);
    let (mut miss, reader) = followed_write(store, "/f", data.slice(..100_000)).await;
    // The last chunk is written by `finish`, with the commit.
    miss.write_body(data.slice(100_000..), true).await.unwrap();

    poll_once_and_drop(miss.finish());

    assert_eq!(
        read_to_end(reader).await.unwrap(),
        data,
        "the reader gets the whole body"
    );
    until("the object is findable", async || {
        get_body(store, "/f").await.as_ref() == Some(&data)
    })
    .await;
    assert_eq!(store.health().disk_objects, 1, "and indexed");
    until("the temporary file is gone", async || {
        temp_files(dir.path()) == 0
    })
    .await;
    let span = Span::inactive().handle();
    assert!(
        store
            .get_miss_handler(&key("/next"), &meta("next"), &span)
            .await
            .is_ok(),
        "the permit is released"
    );
}
