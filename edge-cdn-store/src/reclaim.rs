//! The reclaimer: a thread that keeps the segment ring's next region free.
//!
//! When the ring's head moves into a region, the region after it is freed
//! here, ahead of need: its entries are read, and every object the index
//! still places there is dropped from the index, the memory tier and the
//! catalog, under the object's lock (a fill or removal of the same object
//! never interleaves). Only then may the head enter it and overwrite it. A
//! lookup that found an object there before it was dropped reads its entry
//! whole, or finds it overwritten and misses.

use std::sync::Arc;
use std::time::Duration;

use crate::observer::StoreEvent;
use crate::segments::Segments;
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

/// Drop every object the index places in `region`; returns how many, or
/// `None` if the ring was stopped meanwhile (the region stays unfreed).
fn free(
    tiers: &Tiers,
    ring: &Segments,
    region: u32,
) -> Result<Option<usize>, crate::error::StoreError> {
    let scanned = ring.scan(region, false)?;
    let mut dropped = 0;
    for (header, loc, _) in scanned.entries.iter().filter(|(h, _, _)| h.live) {
        if ring.is_stopped() {
            return Ok(None);
        }
        let hash = header.hash;
        let _held = tiers.hold(hash);
        if !tiers.index.take_at(hash, *loc) {
            continue;
        }
        tiers.memory.remove(hash);
        if let Err(error) = tiers.catalog.remove(&hash.to_be_bytes()) {
            tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "catalog entry of a reclaimed object left");
            tiers.observe(StoreEvent::CatalogFailed);
        }
        tiers.observe(StoreEvent::Eviction);
        dropped += 1;
    }
    Ok(Some(dropped))
}
