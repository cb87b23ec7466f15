//! Filling: 1 KiB misses stored through the `Storage` interface, 16 in
//! flight, with small objects in the segment ring and in files, alternated
//! in one run (ring, files, ring, files) so the machine's drift shows.
//!
//! `cargo bench -p edge-cdn-store --bench fill` (objects per round: the
//! `FILL_OBJECTS` environment variable, default 100,000; each store goes in
//! a temporary directory under `FILL_DIR`, default the system's).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::Engine;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

fn meta(_: usize) -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .append_header("Cache-Control", "public, max-age=86400")
        .unwrap();
    header
        .append_header("Content-Type", "application/javascript")
        .unwrap();
    CacheMeta::new(now + Duration::from_secs(86400), now, 0, 0, header)
}

fn main() {
    let objects: usize = std::env::var("FILL_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("{objects} fills of 1 KiB per round, one runtime worker");
    let mut rates: Vec<(Engine, f64)> = Vec::new();
    for engine in [Engine::Ring, Engine::Files, Engine::Ring, Engine::Files] {
        let dir = match std::env::var_os("FILL_DIR") {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .unwrap();
        let rate = runtime.block_on(async {
            let store = common::open(dir.path(), engine);
            store.recovered().await;
            let started = Instant::now();
            common::fill(store, objects, meta).await;
            objects as f64 / started.elapsed().as_secs_f64()
        });
        println!("  {:<13} {:>9.0} fills/s", engine.as_str(), rate);
        rates.push((engine, rate));
    }
    let mean = |engine| {
        let of: Vec<f64> = rates
            .iter()
            .filter(|(e, _)| *e == engine)
            .map(|(_, r)| *r)
            .collect();
        of.iter().sum::<f64>() / of.len() as f64
    };
    println!(
        "ring ÷ files: {:.2}",
        mean(Engine::Ring) / mean(Engine::Files)
    );
}
