//! The reclaimer: a thread that keeps the segment ring's next region free.
//!
//! When the ring's head moves into a region, the region after it is freed
//! here, ahead of need. Its entries are read, and every object the index
//! still places there is either copied forward to the head, if it was read
//! since it was stored or last copied (its CLOCK counter is above a new
//! object's; the copy takes one off), or dropped from the index, the memory
//! tier and the catalog (one catalog batch per 64 objects). Both happen
//! under the objects' locks, so a fill or removal of the same object never
//! interleaves. So the ring is first in, first out for objects nobody
//! reads, and keeps those that are read, as RRIP keeps re-referenced lines.
//! Before any of that the region is *retired* (its first header
//! overwritten), so a crash from then on brings nothing of it back: not an
//! object dropped, nor the old copy of one copied forward and purged since.
//! Only then may the head enter the region and overwrite it. A lookup that
//! found an object there before it moved reads its entry whole, or finds
//! it overwritten and misses.
//!
//! A region that cannot be read is retired all the same, and every object
//! the index places there dropped (found by a walk of the index), so one
//! bad region costs its objects, not the ring.
//!
//! Each time the head enters a region, the reclaimer also writes the
//! ring's catalog mark, so a walk after a crash reads the catalog only for
//! the entries appended since.

use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::index::INSERTED;
use crate::observer::StoreEvent;
use crate::segments::entry::{Entry, Parts};
use crate::segments::{Loc, Segments};
use crate::tiers::Tiers;

/// How long the reclaimer waits after failing to free a region (its
/// retiring write failed) before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Objects dropped per catalog batch, their locks held meanwhile (few
/// enough that commits and purges of other objects rarely wait).
const BATCH: usize = 64;

/// How freeing a region ended.
enum Freed {
    /// Nothing the index places there is left in it.
    Done,
    /// The ring was stopped meanwhile; the region stays unfreed.
    Stopped,
}

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
    let mut marked = 0;
    while ring.wait_for_work() {
        marked = mark_cataloged(tiers, ring, marked);
        while let Some(region) = ring.to_free().filter(|_| ring.is_on()) {
            let freeing = ring.freeing();
            match free(tiers, ring, region) {
                Ok(Freed::Stopped) => return,
                Ok(Freed::Done) => ring.freed(region),
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

/// Write the ring's catalog mark (`crate::catalog`'s `mark`) if it moved
/// past `marked`, the last one written; returns the mark written now. A
/// failure only costs the next walk catalog reads.
fn mark_cataloged(tiers: &Tiers, ring: &Segments, marked: u64) -> u64 {
    let mark = ring.cataloged_below();
    if mark <= marked || !ring.is_on() {
        return marked;
    }
    match tiers.catalog.set_ring_mark(mark) {
        Ok(()) => mark,
        Err(error) => {
            tracing::warn!(target: "edge_cdn_store", %error, "segment ring's catalog mark not written");
            marked
        }
    }
}

/// Copy forward or drop every object the index places in `region`. A
/// region that cannot be read is retired all the same, and every object
/// the index places there is dropped.
fn free(tiers: &Tiers, ring: &Segments, region: u32) -> Result<Freed, StoreError> {
    let live: Vec<(u128, Loc, Option<Entry>)> = match ring.scan(region, true) {
        Ok(scanned) => scanned
            .entries
            .into_iter()
            .filter(|(header, _, _)| header.live)
            .map(|(header, loc, entry)| (header.hash, loc, entry))
            .collect(),
        Err(error) => {
            tracing::warn!(target: "edge_cdn_store", region, %error, "segment region unreadable; the objects in it are dropped");
            placed_in(tiers, region)
        }
    };
    // From here a crash leaves nothing of this region to bring back.
    ring.retire(region)?;
    let (mut dropped, mut kept) = (0, 0);
    for batch in live.chunks(BATCH) {
        if ring.is_stopped() {
            return Ok(Freed::Stopped);
        }
        let _held = tiers
            .holds
            .lock_all(batch.iter().map(|(hash, _, _)| *hash as usize));
        let mut gone = Vec::new();
        for (hash, loc, entry) in batch {
            let hash = *hash;
            let Some(clock) = tiers.index.clock_at(hash, *loc) else {
                continue;
            };
            let read_since = clock > INSERTED;
            if read_since
                && entry
                    .as_ref()
                    .is_some_and(|entry| copy_forward(tiers, ring, hash, *loc, entry))
            {
                tiers.observe(StoreEvent::CopiedForward);
                kept += 1;
                continue;
            }
            tiers.index.take_at(hash, *loc);
            tiers.memory.remove(hash);
            gone.push(hash.to_be_bytes());
        }
        tiers.uncatalog(&gone);
        for _ in &gone {
            tiers.observe(StoreEvent::Eviction);
        }
        dropped += gone.len();
    }
    tracing::debug!(target: "edge_cdn_store", region, dropped, kept, "segment region freed");
    Ok(Freed::Done)
}

/// Every object the index places in `region`, with no entry to copy
/// forward: what freeing an unreadable region drops. One walk of the whole
/// index, a shard at a time (an error path).
fn placed_in(tiers: &Tiers, region: u32) -> Vec<(u128, Loc, Option<Entry>)> {
    let mut placed = Vec::new();
    tiers.index.each(|hash, _, _, loc| {
        if let Some(loc) = loc.filter(|loc| loc.region == region) {
            placed.push((hash, loc, None));
        }
    });
    placed
}

/// Append `entry`, `hash`'s entry at `loc`, again at the head, and move the
/// index there; false if the ring cannot take it now (the object is then
/// dropped). Call it holding the object's lock.
fn copy_forward(tiers: &Tiers, ring: &Segments, hash: u128, loc: Loc, entry: &Entry) -> bool {
    let parts = Parts {
        internal: &entry.internal,
        header: &entry.meta_header,
        key: &entry.key,
        body: std::slice::from_ref(&entry.body),
    };
    match ring.append(hash, &parts) {
        // The catalog has the object already: nothing to wait for.
        Ok(Ok(appended)) => tiers.index.relocate(hash, loc, appended.loc),
        _ => false,
    }
}
