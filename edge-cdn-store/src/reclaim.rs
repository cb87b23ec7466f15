//! The reclaimer: a thread that keeps the segment ring's next region free.
//!
//! When the ring's head moves into a region, the region after it is freed
//! here, ahead of need: its entries are read, and every object the index
//! still places there is dropped from the index, the memory tier and the
//! catalog (one batch per 256 objects), under the objects' locks (a fill
//! or removal of the same object never interleaves). Only then may the head enter it and overwrite it. A
//! lookup that found an object there before it was dropped reads its entry
//! whole, or finds it overwritten and misses.

use std::sync::Arc;
use std::time::Duration;

use crate::observer::StoreEvent;
use crate::segments::{Loc, Segments};
use crate::tiers::Tiers;

/// How long the reclaimer waits after failing to read a region before it
/// tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Free regions as the head needs them, until the store closes.
/// Blocking, for the store's life.
///
/// # Panics
///
/// If the store has no segment ring: the store starts this thread only
/// when it has one.
pub fn run(tiers: &Arc<Tiers>) {
    let ring = tiers
        .segments
        .as_ref()
        .expect("a store with a segment ring");
    while ring.wait_for_work() {
        while let Some(region) = ring.to_free().filter(|_| ring.is_on()) {
            let freeing = ring.freeing();
            match free(tiers, ring, region) {
                Ok(None) => return,
                Ok(Some(dropped)) => {
                    tracing::debug!(target: "edge_cdn_store", region, dropped, "segment region reclaimed");
                    ring.freed(region);
                }
                Err(error) => {
                    drop(freeing);
                    // The head stays out of it; new objects go to files.
                    tracing::warn!(target: "edge_cdn_store", region, %error, "segment region not reclaimed; retrying");
                    std::thread::sleep(RETRY);
                }
            }
        }
    }
}

/// Objects dropped per catalog batch, their locks held meanwhile.
const BATCH: usize = 256;

/// Drop every object the index places in `region`; returns how many, or
/// `None` if the ring was stopped meanwhile (the region stays unfreed).
/// The objects are dropped a batch at a time: under their locks, out of
/// the index and memory, then out of the catalog in one batch.
fn free(
    tiers: &Tiers,
    ring: &Segments,
    region: u32,
) -> Result<Option<usize>, crate::error::StoreError> {
    let scanned = ring.scan(region, false)?;
    let live: Vec<(u128, Loc)> = scanned
        .entries
        .iter()
        .filter(|(header, _, _)| header.live)
        .map(|(header, loc, _)| (header.hash, *loc))
        .collect();
    let mut dropped = 0;
    for batch in live.chunks(BATCH) {
        if ring.is_stopped() {
            return Ok(None);
        }
        let _held = tiers
            .holds
            .lock_all(batch.iter().map(|(hash, _)| *hash as usize));
        let gone: Vec<_> = batch
            .iter()
            .filter(|(hash, loc)| tiers.index.take_at(*hash, *loc))
            .map(|(hash, _)| {
                tiers.memory.remove(*hash);
                hash.to_be_bytes()
            })
            .collect();
        if let Err(error) = tiers.catalog.remove_all(&gone) {
            tracing::warn!(target: "edge_cdn_store", region, objects = gone.len(), %error, "catalog entries of reclaimed objects left");
            tiers.observe(StoreEvent::CatalogFailed);
        }
        for _ in &gone {
            tiers.observe(StoreEvent::Eviction);
        }
        dropped += gone.len();
    }
    Ok(Some(dropped))
}
