//! Restarts: how soon a store serves hits again, and how long the walk of
//! its files takes after a crash.
//!
//! `cargo bench -p edge-cdn-store --bench restart`
//!
//! 1. The saved index alone, at `RESTART_INDEX_OBJECTS` objects (default
//!    10,000,000): saving it at a clean stop, and taking it back at open.
//!    That is what a clean restart costs besides opening the catalog
//!    (which reads nothing per object; see `--bench catalog`), whatever the
//!    number of files.
//! 2. A real store of `RESTART_STORE_OBJECTS` 1 KiB objects (default
//!    100,000), filled by a child process that exits cleanly (saving its
//!    index) or as after a crash (not saving): the time to open, to the
//!    first hit of an object, and, after a crash, until the walk has
//!    brought every object back; with the objects in the segment ring, then
//!    in files. This machine has 16M inodes, so a store of 10M objects in
//!    files (two each) cannot be built here: the walk's cost per object is
//!    measured and scales linearly. `RESTART_ENGINES=ring` measures the
//!    ring alone, which holds 10M objects here; `RESTART_STOPS=crash` the
//!    restart after a crash alone (each case fills its own store).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Engine;
use edge_cdn_store::__bench::{claim_index_dir, save_index, take_index, Index};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;

/// Set in the child that fills the store: `clean` or `crash`, `-ring` or
/// `-files`, and the directory.
const CHILD: &str = "RESTART_BENCH_CHILD";

fn hash(i: u64) -> u128 {
    u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x5851_F42D
}

fn main() {
    if let Ok(child) = std::env::var(CHILD) {
        let (phase, dir) = child.split_once(':').unwrap();
        let (stop, engine) = phase.split_once('-').unwrap();
        let engine = Engine::from_label(engine).unwrap();
        return fill(Path::new(dir), stop == "clean", engine);
    }
    saved_index();
    let dir = common::scratch("RESTART_DIR");
    for engine in common::engines("RESTART_ENGINES") {
        for clean in stops() {
            restart(dir.path(), clean, engine);
        }
    }
}

/// The stops to restart after, from `RESTART_STOPS` (`clean`, `crash`, or
/// both, the default): whether each is clean.
fn stops() -> Vec<bool> {
    let stops = std::env::var("RESTART_STOPS").unwrap_or_else(|_| "clean,crash".into());
    stops
        .split(',')
        .map(|stop| match stop.trim() {
            "clean" => true,
            "crash" => false,
            other => panic!("RESTART_STOPS: no stop {other}"),
        })
        .collect()
}

/// Part 1: the saved index of many objects.
fn saved_index() {
    let n = common::count("RESTART_INDEX_OBJECTS", 10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let index = Index::default();
    index.reserve(n);
    for i in 0..n as u64 {
        index.insert(hash(i), 1000 + i % 4096);
    }
    let id = claim_index_dir(dir.path()).unwrap();
    let started = Instant::now();
    save_index(dir.path(), &index, id).unwrap();
    let saved = started.elapsed();
    let size = std::fs::metadata(dir.path().join("index")).unwrap().len();
    drop(index);
    // From the page cache, as right after a stop; a cold disk adds its
    // read of the file (at 500 MB/s, 0.4 s for 10M objects).
    let restored = Index::default();
    let started = Instant::now();
    assert!(take_index(dir.path(), &restored));
    let taken = started.elapsed();
    assert_eq!(restored.totals().0, n);
    println!(
        "saved index, {n} objects ({:.1} MiB)",
        size as f64 / (1 << 20) as f64
    );
    println!(
        "  saved at a clean stop      {:>8.2} s",
        saved.as_secs_f64()
    );
    println!(
        "  taken back at open         {:>8.2} s   {:>6.0} ns/object",
        taken.as_secs_f64(),
        taken.as_secs_f64() * 1e9 / n as f64
    );
}

/// Part 2: a real store restarted cleanly or after a crash.
fn restart(dir: &Path, clean: bool, engine: Engine) {
    let n = common::count("RESTART_STORE_OBJECTS", 100_000);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let phase = if clean { "clean" } else { "crash" };
    let status = Command::new(std::env::current_exe().unwrap())
        .env(
            CHILD,
            format!("{phase}-{}:{}", engine.label(), dir.display()),
        )
        .status()
        .unwrap();
    assert!(status.success());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let store = common::open(dir, engine);
        let opened = started.elapsed();
        let mut first = None;
        let mut half = None;
        loop {
            let back = store.health().disk_objects;
            if back > 0 && first.is_none() {
                first = Some(started.elapsed());
            }
            if back >= n / 2 && half.is_none() {
                half = Some(started.elapsed());
            }
            if back >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store.recovered().await;
        let recovered = started.elapsed();
        let span = Span::inactive().handle();
        assert!(store
            .lookup(&common::key(n - 1), &span)
            .await
            .unwrap()
            .is_some());
        let after = if clean { "a clean stop" } else { "a crash" };
        println!(
            "{n} objects of 1 KiB in {}, restarted after {after}",
            engine.as_str()
        );
        for (what, took) in [
            ("open returned", Some(opened)),
            ("first object back", first),
            ("half the objects back", half),
        ] {
            println!("  {what:<26} {:>8.3} s", took.unwrap().as_secs_f64());
        }
        println!(
            "  every object back          {:>8.3} s   {:>6.1} µs/object",
            recovered.as_secs_f64(),
            recovered.as_secs_f64() * 1e6 / n as f64
        );
    });
}

/// The child: fill `dir` with the objects and stop cleanly or not.
fn fill(dir: &Path, clean: bool, engine: Engine) {
    let n = common::count("RESTART_STORE_OBJECTS", 100_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = common::open(dir, engine);
        common::fill(store, n, common::meta).await;
        assert_eq!(store.health().disk_objects, n, "every object stored");
        if clean {
            store.save_index().unwrap();
        }
    });
}
