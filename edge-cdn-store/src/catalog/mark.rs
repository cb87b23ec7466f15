//! How far the segment ring's entries are known to be cataloged, so the
//! walk after a crash need not read the catalog entry by entry.
//!
//! Every ring entry appended for a new object or a rewrite is recorded in
//! the catalog before its append's hold on the mark ends
//! (`crate::segments::Appended`); the reclaimer writes the ring's mark
//! here as the head enters each region: every entry with a lower sequence
//! number has its catalog entry, committed to the journal before the mark
//! (one journal for the database, replayed in order, so the mark never
//! survives a crash that an entry before it did not). The walk then
//! records again only the entries at or above it (`crate::recovery`).
//!
//! `marks`: `b"ring"` → the sequence number, little-endian u64.

use super::{db, Catalog};
use crate::error::StoreError;

/// The key of the ring's mark.
const RING: &[u8] = b"ring";

impl Catalog {
    /// The ring's mark: every ring entry with a lower sequence number is
    /// cataloged. 0 (nothing known) in a new catalog.
    pub fn ring_mark(&self) -> Result<u64, StoreError> {
        Ok(self
            .marks
            .get(RING)
            .map_err(db)?
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// Set the ring's mark to `seq` (0 for a ring laid out anew, whose
    /// sequence numbers start again).
    pub fn set_ring_mark(&self, seq: u64) -> Result<(), StoreError> {
        self.marks.insert(RING, seq.to_le_bytes()).map_err(db)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mark_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let catalog = super::super::open(dir.path()).unwrap().0;
            assert_eq!(catalog.ring_mark().unwrap(), 0);
            catalog.set_ring_mark(42).unwrap();
        }
        let catalog = super::super::open(dir.path()).unwrap().0;
        assert_eq!(catalog.ring_mark().unwrap(), 42);
    }
}
