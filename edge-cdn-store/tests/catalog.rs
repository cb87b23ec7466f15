//! The catalog: objects found by primary key (every Vary variant), prefix
//! and surrogate tag; kept right through purges, meta rewrites and restarts,
//! reconciled with the object files after a `kill -9`, rebuilt from them
//! when its database is corrupt, and never shared with a store that holds
//! it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{body, child, child_phase, config, invalidate, open, put_with, reopen, tagged};
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;

fn variant(primary: &str, variance: Option<u8>) -> CacheKey {
    let mut key = CacheKey::new(primary, "site");
    if let Some(v) = variance {
        key.set_variance_key([v; 16]);
    }
    key
}

async fn names(
    store: &'static edge_cdn_store::TieredStore,
    selector: edge_cdn_store::Selector<'_>,
) -> Vec<String> {
    let mut out: Vec<String> = store
        .select(selector)
        .await
        .unwrap()
        .iter()
        .map(|l| String::from_utf8_lossy(&l.primary_key).into_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn selections_survive_a_restart_and_follow_purges_and_rewrites() {
    use edge_cdn_store::Selector::{Prefix, Primary, Tag};
    let dir = tempfile::tempdir().unwrap();
    let data = body(1000, 1);
    {
        let store = open(config(dir.path()));
        put_with(store, &variant("h/a", Some(1)), &tagged("red blue"), &data).await;
        put_with(store, &variant("h/a", Some(2)), &tagged("red"), &data).await;
        put_with(store, &variant("h/b", None), &tagged("blue"), &data).await;
        put_with(store, &variant("g/a", None), &tagged("red"), &data).await;
    }
    let store = reopen(config(dir.path())).await;
    let primary = variant("h/a", None).primary_bin();
    assert_eq!(names(store, Primary(&primary)).await, ["h/a", "h/a"]);
    assert_eq!(names(store, Prefix(b"h/")).await, ["h/a", "h/a", "h/b"]);
    assert_eq!(names(store, Tag("red")).await, ["g/a", "h/a", "h/a"]);
    assert_eq!(store.catalog_totals(), (4, 2));
    let listed = store.select(Tag("blue")).await.unwrap();
    assert!(listed.iter().all(|l| l.key.user_tag.as_ref() == "site"));

    // Purging one variant through the Storage interface drops it here too.
    let span = Span::inactive().handle();
    invalidate(store, &variant("h/a", Some(1)).to_compact()).await;
    assert_eq!(names(store, Primary(&primary)).await, ["h/a"]);
    assert_eq!(names(store, Tag("blue")).await, ["h/b"]);

    // A meta rewrite (a 304 refresh) retags.
    store
        .update_meta(&variant("h/b", None), &tagged("green"), &span)
        .await
        .unwrap();
    assert!(store.select(Tag("blue")).await.unwrap().is_empty());
    assert_eq!(names(store, Tag("green")).await, ["h/b"]);

    // Describe reports where the object is and what it holds.
    let listed = store.select(Tag("green")).await.unwrap().remove(0);
    let described = store.describe(&listed).await.unwrap();
    assert_eq!(described.meta.response_header().status.as_u16(), 200);
    assert!(described.size > data.len() as u64);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_catalog_behind_and_ahead_of_the_files_after_a_kill_mid_fill_is_reconciled() {
    const NAME: &str =
        "a_catalog_behind_and_ahead_of_the_files_after_a_kill_mid_fill_is_reconciled";
    let data = body(2000, 3);
    let span = Span::inactive().handle();
    if let Some((phase, dir)) = child_phase() {
        return runtime().block_on(async {
            let store = open(config(&dir));
            if phase == "first" {
                for name in ["k/a", "k/b", "k/c"] {
                    put_with(store, &variant(name, None), &tagged("red"), &data).await;
                }
                return;
            }
            // Second: record two more, purge one, retag one, then die
            // with a fill half written.
            for name in ["k/d", "k/e"] {
                put_with(store, &variant(name, None), &tagged("red blue"), &data).await;
            }
            invalidate(store, &variant("k/a", None).to_compact()).await;
            store
                .update_meta(&variant("k/b", None), &tagged("green"), &span)
                .await
                .unwrap();
            let mut miss = store
                .get_miss_handler(&variant("k/f", None), &tagged("red"), &span)
                .await
                .unwrap();
            miss.write_body(body(100_000, 9), false).await.unwrap();
            std::fs::write(dir.join("ready"), b"").unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(miss);
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let stale = tempfile::tempdir().unwrap();
    child(NAME, "first", dir.path(), false);
    // The catalog as it was after the first run: in the second it misses
    // k/d and k/e (behind), and still has k/a and k/b's old tag (ahead).
    copy_dir(&dir.path().join("catalog"), stale.path());
    child(NAME, "second", dir.path(), true);
    std::fs::remove_dir_all(dir.path().join("catalog")).unwrap();
    copy_dir(stale.path(), &dir.path().join("catalog"));

    runtime().block_on(async {
        use edge_cdn_store::Selector::{Prefix, Primary, Tag};
        let store = reopen(config(dir.path())).await;
        assert_eq!(
            names(store, Prefix(b"k/")).await,
            ["k/b", "k/c", "k/d", "k/e"]
        );
        assert_eq!(names(store, Tag("red")).await, ["k/c", "k/d", "k/e"]);
        assert_eq!(names(store, Tag("blue")).await, ["k/d", "k/e"]);
        assert_eq!(names(store, Tag("green")).await, ["k/b"]);
        let f = variant("k/f", None).primary_bin();
        assert!(names(store, Primary(&f)).await.is_empty(), "the torn fill");
        assert_eq!(store.catalog_totals(), (4, 3));
    });
}

#[test]
fn a_corrupt_catalog_is_discarded_and_rebuilt_from_the_files() {
    const NAME: &str = "a_corrupt_catalog_is_discarded_and_rebuilt_from_the_files";
    if let Some((_, dir)) = child_phase() {
        return runtime().block_on(async {
            let store = open(config(&dir));
            for (name, tags) in [("c/a", "red"), ("c/b", "red blue"), ("d/a", "blue")] {
                put_with(store, &variant(name, None), &tagged(tags), &body(500, 1)).await;
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    child(NAME, "fill", dir.path(), false);
    // Every file of the database overwritten, and a catalog of a format
    // this build does not know beside it.
    let catalog = dir.path().join("catalog");
    fn scribble(path: &Path) {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                scribble(&entry.path());
            } else {
                std::fs::write(entry.path(), b"not a database").unwrap();
            }
        }
    }
    scribble(&catalog);
    std::fs::create_dir_all(catalog.join("v0-9")).unwrap();
    std::fs::write(catalog.join("v0-9/old"), b"x").unwrap();

    runtime().block_on(async {
        use edge_cdn_store::Selector::{Prefix, Tag};
        let store = reopen(config(dir.path())).await;
        assert_eq!(names(store, Prefix(b"c/")).await, ["c/a", "c/b"]);
        assert_eq!(names(store, Tag("blue")).await, ["c/b", "d/a"]);
        assert_eq!(store.catalog_totals(), (3, 2));
    });
    let left: Vec<_> = std::fs::read_dir(&catalog)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["v2-1"], "the corrupt and the old catalogs are gone");
}

#[tokio::test]
async fn a_catalog_held_by_another_store_is_left_to_it() {
    use edge_cdn_store::Selector::Tag;
    // As during a binary upgrade: the old process still runs when the new
    // one opens the same directory.
    let dir = tempfile::tempdir().unwrap();
    let old = open(config(dir.path()));
    put_with(old, &variant("h/a", None), &tagged("red"), &body(500, 1)).await;
    let new = reopen(config(dir.path())).await;
    assert_eq!(names(new, Tag("red")).await, ["h/a"]);
    put_with(new, &variant("h/b", None), &tagged("red"), &body(500, 2)).await;
    assert_eq!(names(new, Tag("red")).await, ["h/a", "h/b"]);
    assert_eq!(names(old, Tag("red")).await, ["h/a"], "each its own");
    let mut generations: Vec<_> = std::fs::read_dir(dir.path().join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generations.sort();
    assert_eq!(generations, ["v2-0", "v2-1"]);
}
