//! What is on disk, and how recently each object was used: the one table
//! that both lookups and the eviction manager ([`crate::ClockEviction`])
//! consult, so an object costs one slot of RAM, not an index entry plus a
//! recency node.
//!
//! A slot is the 128-bit key hash, the object's size on disk (objects are
//! at most 4 GiB: see `StoreConfig::max_object_size`), a 2-bit CLOCK
//! counter and where the object is (its own files, or an entry in the
//! segment ring: `crate::segments`): 29 bytes, packed. The table is split into shards by the hash's
//! low bits, each an open-addressed Robin Hood table (linear probing,
//! backward-shift deletion, so no tombstones) placed by the hash's high
//! bits. A shard grows by a quarter when it is 7/8 full, and recovery
//! sizes each shard for what it found, so a slot is occupied 70–88% of the
//! time: 33–41 bytes per object (`benches/memory.rs`). A lookup holds one
//! shard's lock for a probe; a writer holds it for one insert.
//!
//! # The CLOCK counter
//!
//! An object enters with [`INSERTED`] (1), each access adds one up to
//! [`HOTTEST`] (3), and the eviction hand, passing a slot, takes one off;
//! it evicts a slot it finds at 0. So an object not read since it was
//! stored is evicted at the hand's second visit, and one read twice or more
//! survives three visits without another read (RRIP's re-reference counter
//! in two bits; Kangaroo's RRIParoo runs RRIP in its flash sets). The hand walks the shards' slots in order, one shard after
//! another: a single CLOCK over the whole table, in hash order rather than
//! insertion order, which is what lets it live in the index itself.
//!
//! The hand passes over objects in the segment ring: the ring frees their
//! space a region at a time, first in first out, and the CLOCK's limit is
//! on the bytes kept in files ([`Index::file_bytes`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::segments::Loc;
use crate::sharded::Sharded;

/// Shards: enough that writers of different keys rarely meet, and that one
/// shard's growth (a rehash under its lock) stays small at tens of
/// millions of objects.
const SHARDS: usize = 256;

/// The counter of an object just stored.
pub const INSERTED: u8 = 1;

/// The counter's ceiling: an object at it survives this many visits of
/// the hand without another read.
pub const HOTTEST: u8 = 3;

/// One object: hash, bytes on disk (0: the slot is empty; a stored object
/// always has a meta file, so its size is never 0), CLOCK counter, and
/// where it is ([`Loc::packed`], or 0 for its own files).
#[derive(Clone, Copy, Default)]
#[repr(C, packed)]
struct Slot {
    hash: u128,
    size: u32,
    clock: u8,
    place: u64,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn loc(&self) -> Option<Loc> {
        Loc::unpacked(self.place)
    }
}

/// Where an object is and how large, as the index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Bytes on disk; for a segment entry, the entry's length.
    pub size: u64,
    /// Its segment entry, or `None` for its own files.
    pub loc: Option<Loc>,
}

/// One shard: a Robin Hood table of slots.
#[derive(Default)]
pub struct Table {
    slots: Box<[Slot]>,
    len: usize,
}

/// Where a slot's hash wants to sit in a table of `capacity` slots: the
/// high 64 bits scaled onto the capacity (the low bits chose the shard).
fn home(hash: u128, capacity: usize) -> usize {
    ((u128::from((hash >> 64) as u64) * capacity as u128) >> 64) as usize
}

/// What one step of the eviction hand found.
pub enum Swept {
    /// An object whose counter was 0, removed: its hash and size.
    Victim(u128, u64),
    /// The hand left this shard with nothing to evict.
    Passed,
    /// The hand took its allowance of steps; it goes on from here.
    Paused,
}

impl Table {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How far `at` is from where its occupant wants to be.
    fn distance(&self, at: usize) -> usize {
        let cap = self.capacity();
        (at + cap - home(self.slots[at].hash, cap)) % cap
    }

    fn find(&self, hash: u128) -> Option<usize> {
        let cap = self.capacity();
        if cap == 0 {
            return None;
        }
        let mut at = home(hash, cap);
        for probed in 0..cap {
            let slot = self.slots[at];
            // Robin Hood order: past a slot closer to its home than we are
            // to ours, `hash` would have been placed already.
            if slot.is_empty() || self.distance(at) < probed {
                return None;
            }
            if slot.hash == hash {
                return Some(at);
            }
            at = (at + 1) % cap;
        }
        None
    }

    /// Rebuild with room for `capacity` slots.
    fn rebuild(&mut self, capacity: usize) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![Slot::default(); capacity].into_boxed_slice(),
        );
        self.len = 0;
        for slot in old.iter().filter(|s| !s.is_empty()) {
            self.place(*slot);
        }
    }

    /// Put a slot whose hash is not in the table; the table has room.
    fn place(&mut self, mut carry: Slot) {
        let cap = self.capacity();
        let mut at = home(carry.hash, cap);
        let mut distance = 0;
        loop {
            if self.slots[at].is_empty() {
                self.slots[at] = carry;
                self.len += 1;
                return;
            }
            let theirs = self.distance(at);
            if theirs < distance {
                std::mem::swap(&mut carry, &mut self.slots[at]);
                distance = theirs;
            }
            at = (at + 1) % cap;
            distance += 1;
        }
    }

    /// Room for `more` slots beyond what is held, at most 7/8 full.
    fn make_room(&mut self, more: usize) {
        let wanted = self.len + more;
        if wanted * 8 > self.capacity() * 7 {
            let grown = (self.capacity() * 5 / 4).max(wanted * 8 / 7 + 1).max(16);
            self.rebuild(grown);
        }
    }

    /// Empty slot `at`, pulling the run after it one step back.
    fn take(&mut self, at: usize) -> Slot {
        let cap = self.capacity();
        let taken = self.slots[at];
        let mut hole = at;
        loop {
            let next = (hole + 1) % cap;
            if self.slots[next].is_empty() || self.distance(next) == 0 {
                self.slots[hole] = Slot::default();
                break;
            }
            self.slots[hole] = self.slots[next];
            hole = next;
        }
        self.len -= 1;
        taken
    }

    /// Move the hand at `*at` forward by at most `steps` slots: evict the
    /// first object found at counter 0, taking one off every other.
    fn sweep(&mut self, at: &mut usize, steps: usize) -> Swept {
        for _ in 0..steps {
            if *at >= self.capacity() {
                return Swept::Passed;
            }
            let slot = &mut self.slots[*at];
            if slot.is_empty() || slot.place != 0 {
                *at += 1;
            } else if slot.clock == 0 {
                // The slot now holds what followed it: the hand stays.
                let victim = self.take(*at);
                return Swept::Victim(victim.hash, u64::from(victim.size));
            } else {
                slot.clock -= 1;
                *at += 1;
            }
        }
        Swept::Paused
    }
}

/// Key hash → bytes on disk, CLOCK counter and place, sharded.
pub struct Index {
    shards: Sharded<Table>,
    objects: AtomicUsize,
    bytes: AtomicU64,
    /// Of `bytes`, those in the segment ring.
    segment_bytes: AtomicU64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: Sharded::new(SHARDS),
            objects: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            segment_bytes: AtomicU64::new(0),
        }
    }
}

/// A size as a slot keeps it: at least 1 (0 marks an empty slot), at most
/// `u32::MAX`.
fn stored(size: u64) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX).max(1)
}

impl Index {
    fn shard(&self, hash: u128) -> std::sync::MutexGuard<'_, Table> {
        self.shards.lock(hash as usize)
    }

    /// The size of `hash`'s object, if one is on disk. No change to its
    /// counter.
    pub fn get(&self, hash: u128) -> Option<u64> {
        self.placed(hash).map(|placed| placed.size)
    }

    /// Where `hash`'s object is and its size, if it is on disk.
    pub fn placed(&self, hash: u128) -> Option<Placed> {
        let table = self.shard(hash);
        table.find(hash).map(|at| placed(&table.slots[at]))
    }

    /// Record `hash` with `size` bytes in its own files; returns the size
    /// it replaced. See [`Index::insert_at`].
    pub fn insert(&self, hash: u128, size: u64) -> Option<u64> {
        self.insert_at(hash, size, None).map(|old| old.size)
    }

    /// Record `hash` with `size` bytes at `loc` (`None`: its own files);
    /// returns what it replaced. A replaced object keeps its counter (a
    /// rewrite is as hot as what it replaces); a new one starts at
    /// [`INSERTED`].
    pub fn insert_at(&self, hash: u128, size: u64, loc: Option<Loc>) -> Option<Placed> {
        let new = Slot {
            hash,
            size: stored(size),
            clock: INSERTED,
            place: loc.map_or(0, Loc::packed),
        };
        let mut table = self.shard(hash);
        self.counted(&new, 1);
        if let Some(at) = table.find(hash) {
            let old = table.slots[at];
            self.counted(&old, -1);
            table.slots[at] = Slot {
                clock: old.clock,
                ..new
            };
            return Some(placed(&old));
        }
        table.make_room(1);
        table.place(new);
        None
    }

    /// Forget `hash`; returns its size if it was there.
    pub fn remove(&self, hash: u128) -> Option<u64> {
        self.take(hash).map(|placed| placed.size)
    }

    /// Forget `hash`; returns where it was, if it was there.
    pub fn take(&self, hash: u128) -> Option<Placed> {
        let mut table = self.shard(hash);
        let at = table.find(hash)?;
        let taken = table.take(at);
        self.counted(&taken, -1);
        Some(placed(&taken))
    }

    /// Forget `hash` if it is the entry at `loc` (not a later copy): what
    /// reclaiming a region does. Returns whether it was.
    pub fn take_at(&self, hash: u128, loc: Loc) -> bool {
        let mut table = self.shard(hash);
        let Some(at) = table
            .find(hash)
            .filter(|&at| table.slots[at].loc() == Some(loc))
        else {
            return false;
        };
        let taken = table.take(at);
        self.counted(&taken, -1);
        true
    }

    /// Add (`sign` 1) or take off (-1) `slot` from the totals.
    fn counted(&self, slot: &Slot, sign: i8) {
        let size = u64::from(slot.size);
        let apply = |counter: &AtomicU64| match sign {
            1 => counter.fetch_add(size, Ordering::Relaxed),
            _ => counter.fetch_sub(size, Ordering::Relaxed),
        };
        apply(&self.bytes);
        if slot.place != 0 {
            apply(&self.segment_bytes);
        }
        match sign {
            1 => self.objects.fetch_add(1, Ordering::Relaxed),
            _ => self.objects.fetch_sub(1, Ordering::Relaxed),
        };
    }

    /// Change `hash`'s size to what `reweigh` makes of it; false if it is
    /// not there. A segment entry's size is its length in the ring, which
    /// does not change: it is left as it is.
    pub fn reweigh(&self, hash: u128, reweigh: impl FnOnce(u64) -> u64) -> bool {
        let mut table = self.shard(hash);
        let Some(at) = table.find(hash) else {
            return false;
        };
        if table.slots[at].place != 0 {
            return true;
        }
        let old = table.slots[at].size;
        let new = stored(reweigh(u64::from(old)));
        table.slots[at].size = new;
        self.bytes.fetch_add(u64::from(new), Ordering::Relaxed);
        self.bytes.fetch_sub(u64::from(old), Ordering::Relaxed);
        true
    }

    /// `hash` was used: one more on its counter, up to [`HOTTEST`]. False
    /// if it is not there.
    pub fn touch(&self, hash: u128) -> bool {
        let mut table = self.shard(hash);
        let Some(at) = table.find(hash) else {
            return false;
        };
        let slot = &mut table.slots[at];
        slot.clock = (slot.clock + 1).min(HOTTEST);
        true
    }

    /// `hash`'s counter, if its entry is the one at `loc`.
    pub fn clock_at(&self, hash: u128, loc: Loc) -> Option<u8> {
        let table = self.shard(hash);
        let at = table.find(hash)?;
        let slot = table.slots[at];
        (slot.loc() == Some(loc)).then_some(slot.clock)
    }

    /// Move `hash`'s entry from `from` to `to` in the ring (an entry of the
    /// same length, copied forward when its region is reclaimed), taking
    /// one off its counter as the CLOCK's hand would: an object copied
    /// forward stays only while it is read. False, and nothing changed, if
    /// it is no longer at `from`.
    pub fn relocate(&self, hash: u128, from: Loc, to: Loc) -> bool {
        let mut table = self.shard(hash);
        let Some(at) = table.find(hash) else {
            return false;
        };
        let slot = &mut table.slots[at];
        if slot.loc() != Some(from) {
            return false;
        }
        slot.place = to.packed();
        slot.clock = slot.clock.saturating_sub(1);
        true
    }

    /// Put back an object a snapshot of the index saved: `hash` with
    /// `size` bytes, counter `clock` (capped at [`HOTTEST`]) and place
    /// `loc`. An entry already there is left as it is.
    pub fn restore(&self, hash: u128, size: u32, clock: u8, loc: Option<Loc>) {
        let mut table = self.shard(hash);
        if size == 0 || table.find(hash).is_some() {
            return;
        }
        let slot = Slot {
            hash,
            size,
            clock: clock.min(HOTTEST),
            place: loc.map_or(0, Loc::packed),
        };
        table.make_room(1);
        table.place(slot);
        self.counted(&slot, 1);
    }

    /// Objects and bytes recorded, in files and in the segment ring
    /// together. Cheap: two counters.
    pub fn totals(&self) -> (usize, u64) {
        (
            self.objects.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Bytes of the objects kept in their own files: what the CLOCK
    /// manager keeps within its limit.
    pub fn file_bytes(&self) -> u64 {
        self.bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.segment_bytes.load(Ordering::Relaxed))
    }

    /// Reserve room for `n` more entries (recovery knows how many it
    /// found), so recovery's table is sized once and tightly. Hashes do
    /// not split evenly over the shards: each gets its share plus four
    /// standard deviations, so hardly any has to grow (by a quarter) at
    /// once.
    pub fn reserve(&self, n: usize) {
        let share = n / self.shards.count();
        let per_shard = share + 4 * share.isqrt() + 1;
        for mut shard in self.shards.each() {
            shard.make_room(per_shard);
        }
    }

    /// How many shards the hand walks.
    pub fn shard_count(&self) -> usize {
        self.shards.count()
    }

    /// Move the eviction hand, at slot `*at` of shard `shard`, by at most
    /// `steps` slots (see [`Table::sweep`]); a victim is removed from the
    /// index here, under the shard's lock, so no lookup finds it after.
    pub fn sweep(&self, shard: usize, at: &mut usize, steps: usize) -> Swept {
        let swept = self.shards.lock(shard).sweep(at, steps);
        if let Swept::Victim(_, size) = swept {
            // The hand takes only objects in files.
            self.counted(
                &Slot {
                    size: stored(size),
                    ..Slot::default()
                },
                -1,
            );
        }
        swept
    }

    /// Every object's hash, size, counter and place, one shard at a time
    /// (so a walk holds one shard lock at once): what a snapshot saves.
    pub fn each(&self, mut f: impl FnMut(u128, u32, u8, Option<Loc>)) {
        for table in self.shards.each() {
            for slot in table.slots.iter().filter(|s| !s.is_empty()) {
                let Slot {
                    hash, size, clock, ..
                } = *slot;
                f(hash, size, clock, slot.loc());
            }
        }
    }
}

fn placed(slot: &Slot) -> Placed {
    Placed {
        size: u64::from(slot.size),
        loc: slot.loc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn spread(i: u64) -> u128 {
        u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    }

    #[test]
    fn a_slot_is_29_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 29);
    }

    #[test]
    fn segment_entries_keep_their_place_and_are_not_the_hands() {
        let index = Index::default();
        let loc = Loc {
            region: 2,
            offset: 64,
        };
        index.insert_at(spread(1), 100, Some(loc));
        index.insert(spread(2), 50);
        assert_eq!(index.totals(), (2, 150));
        assert_eq!(index.file_bytes(), 50);
        assert!(index.reweigh(spread(1), |_| 7));
        assert_eq!(
            index.placed(spread(1)),
            Some(Placed {
                size: 100,
                loc: Some(loc)
            })
        );
        assert!(!index.take_at(
            spread(1),
            Loc {
                region: 2,
                offset: 0
            }
        ));
        // Replaced by a copy in files: the place goes with it.
        let old = index.insert(spread(1), 80);
        assert_eq!(old, Some(100));
        assert_eq!(index.file_bytes(), 130);
        index.insert_at(spread(1), 100, Some(loc));
        assert!(index.take_at(spread(1), loc));
        assert_eq!(index.totals(), (1, 50));
        // The hand passes a segment entry, whatever its counter, and takes
        // the file object once its counter is spent.
        index.insert_at(spread(3), 10, Some(loc));
        let mut victims = Vec::new();
        for _ in 0..=HOTTEST {
            for shard in 0..index.shard_count() {
                let mut at = 0;
                loop {
                    match index.sweep(shard, &mut at, usize::MAX) {
                        Swept::Victim(hash, _) => victims.push(hash),
                        Swept::Passed => break,
                        Swept::Paused => unreachable!("unbounded steps"),
                    }
                }
            }
        }
        assert_eq!(victims, vec![spread(2)]);
        assert_eq!(index.placed(spread(3)).map(|p| p.loc), Some(Some(loc)));
        assert_eq!(index.totals(), (1, 10));
    }

    #[test]
    fn sizes_are_kept_and_replaced() {
        let index = Index::default();
        assert_eq!(index.insert(spread(1), 100), None);
        assert_eq!(index.insert(spread(1), 150), Some(100));
        assert_eq!(index.get(spread(1)), Some(150));
        assert_eq!(index.totals(), (1, 150));
        assert!(index.reweigh(spread(1), |s| s + 10));
        assert_eq!(index.remove(spread(1)), Some(160));
        assert_eq!(index.totals(), (0, 0));
        assert!(!index.reweigh(spread(1), |s| s));
    }

    #[test]
    fn a_zero_size_is_stored_as_one_not_as_empty() {
        let index = Index::default();
        index.insert(spread(2), 0);
        assert_eq!(index.get(spread(2)), Some(1));
    }

    #[test]
    fn the_hand_takes_one_off_each_pass_and_evicts_at_zero() {
        let mut table = Table::default();
        table.make_room(2);
        table.place(Slot {
            hash: spread(1),
            size: 10,
            clock: 0,
            place: 0,
        });
        table.place(Slot {
            hash: spread(2),
            size: 20,
            clock: 2,
            place: 0,
        });
        let mut at = 0;
        let mut victims = Vec::new();
        for _ in 0..4 {
            loop {
                match table.sweep(&mut at, usize::MAX) {
                    Swept::Victim(hash, _) => victims.push(hash),
                    Swept::Passed => break,
                    Swept::Paused => unreachable!("unbounded steps"),
                }
            }
            at = 0;
        }
        assert_eq!(victims, vec![spread(1), spread(2)], "2 needs three passes");
        assert_eq!(table.len, 0);
    }

    proptest! {
        /// The table agrees with a `HashMap` under any sequence of
        /// inserts and removes, including colliding homes and wrap-around.
        #[test]
        fn agrees_with_a_hash_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 1u64..1000), 1..400)) {
            let index = Index { shards: Sharded::new(1), ..Index::default() };
            let mut model = HashMap::new();
            for (insert, key, size) in ops {
                // Few distinct high bits: long runs and wrap-around.
                let hash = (u128::from(key % 7) << 125) | u128::from(key);
                if insert {
                    prop_assert_eq!(index.insert(hash, size), model.insert(hash, size));
                } else {
                    prop_assert_eq!(index.remove(hash), model.remove(&hash));
                }
                prop_assert_eq!(index.totals(), (model.len(), model.values().sum()));
            }
            for (hash, size) in &model {
                prop_assert_eq!(index.get(*hash), Some(*size));
            }
        }
    }
}
