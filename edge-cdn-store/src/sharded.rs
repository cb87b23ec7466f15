//! One sharded map type for the store's four concurrent maps (the disk
//! index, the writes in progress, the memory tier and the catalog): each is
//! consulted on every request, so none of them may be a single lock.
//!
//! The caller picks a shard by a slot it derives from the key (a key hash's
//! low bits); the slot is taken modulo the shard count here, so callers
//! need not know it. A poisoned shard is still used: every update the store
//! makes under a shard lock leaves the map consistent, so a panic elsewhere
//! must not turn every later lookup of that shard into one.

use std::sync::{Mutex, MutexGuard};

/// A `T` (a map) split over a fixed number of independently locked shards.
pub struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
}

impl<T: Default> Sharded<T> {
    /// `count` empty shards.
    ///
    /// # Panics
    ///
    /// If `count` is zero.
    pub fn new(count: usize) -> Sharded<T> {
        assert!(count > 0, "a sharded map needs at least one shard");
        Sharded {
            shards: (0..count).map(|_| Mutex::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The shard for `slot`, locked.
    pub fn lock(&self, slot: usize) -> MutexGuard<'_, T> {
        lock(&self.shards[slot % self.shards.len()])
    }

    /// Lock the shard of `slot` if it is free now.
    pub fn try_lock(&self, slot: usize) -> Option<MutexGuard<'_, T>> {
        match self.shards[slot % self.shards.len()].try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Lock the shards of every slot in `slots`, each once, in shard
    /// order: two callers doing so (or holding one shard at a time) never
    /// deadlock.
    pub fn lock_all(&self, slots: impl IntoIterator<Item = usize>) -> Vec<MutexGuard<'_, T>> {
        let mut shards: Vec<usize> = slots.into_iter().map(|s| s % self.shards.len()).collect();
        shards.sort_unstable();
        shards.dedup();
        shards.into_iter().map(|s| lock(&self.shards[s])).collect()
    }

    /// Every shard in turn, each locked only while the iterator holds it,
    /// so a walk never holds more than one lock.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.shards.len()
    }
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn slots_wrap_onto_the_shards() {
        let map: Sharded<HashMap<u8, u8>> = Sharded::new(4);
        map.lock(1).insert(1, 1);
        assert_eq!(map.lock(5).get(&1), Some(&1), "slot 5 is shard 1");
        assert_eq!(map.each().map(|s| s.len()).sum::<usize>(), 1);
        assert_eq!(map.count(), 4);
    }
}
