//! Filling: 1 KiB misses stored through the `Storage` interface, 16 in
//! flight, with small objects in the segment ring and in files, alternated
//! in one run (ring, files, ring, files) so the machine's drift shows.
//!
//! `cargo bench -p edge-cdn-store --bench fill` (objects per round: the
//! `FILL_OBJECTS` environment variable, default 100,000; each store goes in
//! a temporary directory under `FILL_DIR`, default the system's).

mod common;

use std::time::Instant;

use common::Engine;

fn main() {
    let objects = common::count("FILL_OBJECTS", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("{objects} fills of 1 KiB per round, one runtime worker");
    let mut rates: Vec<(Engine, f64)> = Vec::new();
    for engine in [Engine::Ring, Engine::Files, Engine::Ring, Engine::Files] {
        let dir = common::scratch("FILL_DIR");
        let rate = runtime.block_on(async {
            let store = common::open(dir.path(), engine);
            store.recovered().await;
            let started = Instant::now();
            common::fill(store, objects, common::meta).await;
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
