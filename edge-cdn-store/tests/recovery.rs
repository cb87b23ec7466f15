//! Restarts: after a clean stop the saved index serves every object at
//! once; after a crash the store serves while it walks its files, and
//! neither purges nor fills made meanwhile are undone by the walk.

mod common;

use bytes::Bytes;
use common::{body, child, child_phase, config, get_body, invalidate, key, open, put_with, tagged};
use edge_cdn_store::Selector::Tag;
use edge_cdn_store::TieredStore;

/// Objects per test: enough that a walk takes a while.
const OBJECTS: usize = 1500;

fn name(i: usize) -> String {
    format!("/o/{i}")
}

/// Fill `dir` with [`OBJECTS`] objects, every other one tagged `red`, the
/// rest `blue`, in a child process running test `test`, which saves its
/// index (`clean`) or just ends, as a crash would leave the store.
fn filled(test: &str, dir: &std::path::Path, clean: bool) {
    child(test, if clean { "clean" } else { "crash" }, dir, false);
}

/// In a child process: what [`filled`] asked for. Returns whether this
/// process is that child.
fn fill_if_child() -> bool {
    let Some((phase, dir)) = child_phase() else {
        return false;
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = open(config(&dir));
        for i in 0..OBJECTS {
            let tag = if i % 2 == 0 { "red" } else { "blue" };
            put_with(store, &key(&name(i)), &tagged(tag), &body(300, i as u8)).await;
        }
        if phase == "clean" {
            store.save_index().unwrap();
        }
    });
    true
}

/// After purging the `red` objects (the even ones): each is a miss, and
/// each `blue` one is served whole.
async fn assert_only_red_purged(store: &'static TieredStore) {
    for i in 0..OBJECTS {
        let found = get_body(store, &name(i)).await;
        if i % 2 == 0 {
            assert_eq!(found, None, "{i} was purged");
        } else {
            assert_eq!(found, Some(body(300, i as u8)), "{i} was not");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn after_a_clean_stop_every_object_is_served_at_once() {
    if fill_if_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    filled(
        "after_a_clean_stop_every_object_is_served_at_once",
        dir.path(),
        true,
    );
    runtime().block_on(async {
        let store = open(config(dir.path()));
        assert_eq!(store.health().recovering, None, "nothing to walk");
        assert_eq!(store.health().disk_objects, OBJECTS);
        for i in (0..OBJECTS).step_by(7) {
            assert_eq!(get_body(store, &name(i)).await, Some(body(300, i as u8)));
        }
        assert!(
            !dir.path().join("index").exists(),
            "the saved index is taken, not kept for a later crash"
        );
        store.recovered().await;
        assert_eq!(store.catalog_totals(), (OBJECTS, 2));
    });
}

#[test]
fn after_a_crash_the_walk_brings_every_object_back() {
    if fill_if_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    filled(
        "after_a_crash_the_walk_brings_every_object_back",
        dir.path(),
        false,
    );
    runtime().block_on(async {
        let store = open(config(dir.path()));
        // Serving meanwhile: a lookup misses or finds the object whole.
        for i in (0..OBJECTS).step_by(50) {
            let found = get_body(store, &name(i)).await;
            assert!(found.is_none() || found == Some(body(300, i as u8)));
        }
        store.recovered().await;
        assert_eq!(store.health().recovering, None);
        assert_eq!(store.health().disk_objects, OBJECTS);
        for i in 0..OBJECTS {
            assert_eq!(get_body(store, &name(i)).await, Some(body(300, i as u8)));
        }
        assert_eq!(store.catalog_totals(), (OBJECTS, 2));
    });
}

/// A purge made while the store walks its files reaches the objects the
/// walk had not reached yet, whichever comes first.
#[test]
fn a_purge_during_recovery_misses_nothing() {
    if fill_if_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    filled("a_purge_during_recovery_misses_nothing", dir.path(), false);
    runtime().block_on(async {
        let store = open(config(dir.path()));
        for listed in store.select_for_purge(Tag("red")).await.unwrap() {
            invalidate(store, &listed.key).await;
        }
        store.recovered().await;
        assert_only_red_purged(store).await;
        assert!(store.select(Tag("red")).await.unwrap().is_empty());
        assert_eq!(store.select(Tag("blue")).await.unwrap().len(), OBJECTS / 2);
    });
}

/// A purge by key alone, made while the store walks its files, reaches a
/// ring entry the walk has yet to reach (the purge cannot see it): the
/// walk removes it when it gets there. Purged newest first, as the walk
/// reaches them last.
#[test]
fn a_purge_by_key_during_recovery_reaches_entries_not_yet_walked() {
    if fill_if_child() {
        return;
    }
    let test = "a_purge_by_key_during_recovery_reaches_entries_not_yet_walked";
    let dir = tempfile::tempdir().unwrap();
    filled(test, dir.path(), false);
    runtime().block_on(async {
        let store = open(config(dir.path()));
        for i in (0..OBJECTS).rev().filter(|i| i % 2 == 0) {
            invalidate(store, &key(&name(i)).to_compact()).await;
        }
        store.recovered().await;
        assert_only_red_purged(store).await;
        assert_eq!(store.health().disk_objects, OBJECTS / 2);
        assert!(store.select(Tag("red")).await.unwrap().is_empty());
        assert_eq!(store.catalog_totals(), (OBJECTS / 2, 1));
    });
}

/// Objects stored again while the store walks its files keep their new
/// bodies and tags: the walk never puts an older copy's entries back.
#[test]
fn a_fill_during_recovery_is_not_undone_by_the_walk() {
    if fill_if_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    filled(
        "a_fill_during_recovery_is_not_undone_by_the_walk",
        dir.path(),
        false,
    );
    runtime().block_on(async {
        let store = open(config(dir.path()));
        let fresh = Bytes::from_static(b"the new copy");
        for i in 0..OBJECTS {
            put_with(store, &key(&name(i)), &tagged("green"), &fresh).await;
        }
        store.recovered().await;
        for i in 0..OBJECTS {
            assert_eq!(get_body(store, &name(i)).await, Some(fresh.clone()), "{i}");
        }
        assert_eq!(store.select(Tag("green")).await.unwrap().len(), OBJECTS);
        assert!(store.select(Tag("red")).await.unwrap().is_empty());
        assert!(store.select(Tag("blue")).await.unwrap().is_empty());
        assert_eq!(store.health().disk_objects, OBJECTS);
    });
}
