//! Crash safety and model equivalence.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{body, config, get_body, key, meta, put};
use edge_cdn_store::TieredStore;
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use proptest::prelude::*;

fn open(dir: &Path) -> &'static TieredStore {
    common::open(config(dir))
}

/// Run as the child: commit five objects, start a sixth, say so, then wait
/// to be killed.
fn child(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(dir);
        for i in 0..5u8 {
            put(store, &format!("done-{i}"), &body(300_000, i)).await;
        }
        let span = Span::inactive().handle();
        let mut miss = store
            .get_miss_handler(&key("torn"), &meta("torn"), &span)
            .await
            .unwrap();
        miss.write_body(body(200_000, 9), false).await.unwrap();
        std::fs::write(dir.join("ready"), b"").unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(miss);
    });
}

#[test]
fn a_process_killed_mid_write_keeps_every_committed_object_and_nothing_torn() {
    if let Some((_, dir)) = common::child_phase() {
        return child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    common::child(
        "a_process_killed_mid_write_keeps_every_committed_object_and_nothing_torn",
        "mid-write",
        dir.path(),
        true,
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(dir.path());
        store.recovered().await;
        assert_eq!(store.health().disk_objects, 5);
        for i in 0..5u8 {
            assert_eq!(
                get_body(store, &format!("done-{i}")).await,
                Some(body(300_000, i))
            );
        }
        assert_eq!(
            get_body(store, "torn").await,
            None,
            "the interrupted write is not an object"
        );
    });
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "its temporary file was removed at open");
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize, u8),
    Get(u8),
    Purge(u8),
    /// A stop without saving the index (a crash), or with (`clean`).
    Restart {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, prop_oneof![0usize..2_000, 60_000usize..200_000], any::<u8>())
            .prop_map(|(k, len, seed)| Op::Put(k, len, seed)),
        4 => (0u8..6).prop_map(Op::Get),
        2 => (0u8..6).prop_map(Op::Purge),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of puts, gets, purges and restarts (clean, or as after
    /// a crash) leaves the store answering exactly as a map would.
    #[test]
    fn the_store_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut store = open(dir.path());
            let mut model: HashMap<u8, Bytes> = HashMap::new();
            let span = Span::inactive().handle();
            for op in ops {
                match op {
                    Op::Put(k, len, seed) => {
                        let data = body(len, seed);
                        put(store, &format!("k{k}"), &data).await;
                        model.insert(k, data);
                    }
                    Op::Get(k) => {
                        assert_eq!(get_body(store, &format!("k{k}")).await, model.get(&k).cloned());
                    }
                    Op::Purge(k) => {
                        let compact = key(&format!("k{k}")).to_compact();
                        store.purge(PurgeTarget::Active(&compact), PurgeType::Invalidation, &span).await.unwrap();
                        model.remove(&k);
                    }
                    Op::Restart { clean } => {
                        if clean {
                            store.save_index().unwrap();
                        }
                        store = open(dir.path());
                        // Recovering, a lookup misses or finds the object
                        // whole; once recovered, it finds it.
                        for k in 0..6u8 {
                            let found = get_body(store, &format!("k{k}")).await;
                            assert!(found.is_none() || found == model.get(&k).cloned());
                        }
                        store.recovered().await;
                    }
                }
            }
            for k in 0..6u8 {
                assert_eq!(get_body(store, &format!("k{k}")).await, model.get(&k).cloned());
            }
        });
    }
}
