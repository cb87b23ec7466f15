//! Purges the store has answered but not yet carried out on disk: a purge
//! takes its objects out of the index at once and leaves their entries,
//! files and catalog records to a background thread (see `crate::purging`).
//! Until that thread is done, a crash would let the recovery walk put
//! those objects back, so the purge first records, durably as the catalog
//! is (in its journal, before the purge returns), which objects it took
//! and when; the thread drops the record when it has removed them, and a
//! store that opens with a record left walks its files and removes them
//! (`crate::recovery`).
//!
//! `purging`: purge id ‖ part (both big-endian) → when (nanoseconds since
//! the Unix epoch, little-endian u64) ‖ the objects' hashes (16 bytes each,
//! big-endian). A purge of many objects is split into parts of at most
//! [`PART_HASHES`] hashes, so no value is large.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{db, Catalog};
use crate::error::StoreError;

/// Hashes per stored part of a purge's record (1 MiB).
const PART_HASHES: usize = 65_536;

/// Bytes of a hash.
const HASH: usize = 16;

/// Which recorded purge: ids grow with each purge of a catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PurgeId(u64);

/// A purge answered but not known to be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Which.
    pub id: PurgeId,
    /// When it was made: an object written after it is not its business.
    pub at: SystemTime,
    /// The objects it took.
    pub hashes: Vec<u128>,
}

impl Catalog {
    /// Record that a purge made `at` took `hashes` out of the index, in one
    /// batch; returns its id, for [`Catalog::purge_done`].
    pub fn purge_begun(&self, at: SystemTime, hashes: &[u128]) -> Result<PurgeId, StoreError> {
        let id = self.next_purge.fetch_add(1, Ordering::Relaxed);
        let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let mut batch = self.db.batch();
        for (part, chunk) in hashes.chunks(PART_HASHES).enumerate() {
            let mut value = Vec::with_capacity(8 + chunk.len() * HASH);
            value.extend_from_slice(&nanos.to_le_bytes());
            for hash in chunk {
                value.extend_from_slice(&hash.to_be_bytes());
            }
            batch.insert(&self.purging, key(id, part as u32), value);
        }
        batch.commit().map_err(db)?;
        Ok(PurgeId(id))
    }

    /// The purge `id` is carried out: drop its record.
    pub fn purge_done(&self, id: PurgeId) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for kv in self.purging.prefix(id.0.to_be_bytes()) {
            batch.remove(&self.purging, kv.key().map_err(db)?);
        }
        batch.commit().map_err(db)
    }

    /// Every purge recorded and not done, oldest first; a part that does
    /// not decode is skipped (its objects may come back: logged).
    pub fn pending_purges(&self) -> Result<Vec<Pending>, StoreError> {
        let mut out: Vec<Pending> = Vec::new();
        for kv in self.purging.iter() {
            let (key, value) = kv.into_inner().map_err(db)?;
            let Some((id, at, hashes)) = decode(&key, &value) else {
                tracing::warn!(target: "edge_cdn_store", "undecodable pending purge record ignored");
                continue;
            };
            match out.last_mut().filter(|last| last.id == id) {
                Some(last) => last.hashes.extend(hashes),
                None => out.push(Pending { id, at, hashes }),
            }
        }
        Ok(out)
    }

    /// The id after every recorded one: where this catalog's ids go on.
    pub(super) fn first_free_purge(&self) -> Result<u64, StoreError> {
        let last = self.purging.last_key_value();
        let Some(kv) = last else { return Ok(0) };
        let key = kv.key().map_err(db)?;
        Ok(key
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, |b| u64::from_be_bytes(b) + 1))
    }
}

/// The key of part `part` of purge `id`.
fn key(id: u64, part: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&part.to_be_bytes());
    key
}

/// A part's id, time and hashes; `None` if it is not one.
fn decode(key: &[u8], value: &[u8]) -> Option<(PurgeId, SystemTime, Vec<u128>)> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let nanos = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let hashes = value.get(8..)?;
    if hashes.len() % HASH != 0 {
        return None;
    }
    let hashes = hashes
        .chunks_exact(HASH)
        .map(|h| u128::from_be_bytes(h.try_into().expect("chunks of HASH bytes")))
        .collect();
    Some((
        PurgeId(id),
        UNIX_EPOCH + Duration::from_nanos(nanos),
        hashes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_is_pending_until_done_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let many: Vec<u128> = (0..PART_HASHES as u128 + 3).collect();
        let (first, second) = {
            let catalog = super::super::open(dir.path()).unwrap().0;
            assert!(catalog.pending_purges().unwrap().is_empty());
            let first = catalog.purge_begun(at, &many).unwrap();
            let second = catalog.purge_begun(at, &[7, 9]).unwrap();
            assert!(second > first);
            (first, second)
        };
        let catalog = super::super::open(dir.path()).unwrap().0;
        let pending = catalog.pending_purges().unwrap();
        assert_eq!(
            pending,
            [
                Pending {
                    id: first,
                    at,
                    hashes: many
                },
                Pending {
                    id: second,
                    at,
                    hashes: vec![7, 9]
                }
            ]
        );
        // Ids go on after the recorded ones.
        let third = catalog.purge_begun(at, &[]).unwrap();
        assert!(third > second);
        catalog.purge_done(first).unwrap();
        catalog.purge_done(third).unwrap();
        let left: Vec<PurgeId> = catalog
            .pending_purges()
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(left, [second]);
    }
}
