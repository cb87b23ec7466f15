//! Read-ahead blocks no request has read yet: the ones that are read are
//! counted, so `read-ahead - read-ahead-read` is what read-ahead fetched
//! for nothing (so far).

use std::collections::HashSet;
use std::sync::Mutex;

/// Shards: a block is stored or read once per MiB or so, but sharding
/// keeps unrelated objects apart.
const SHARDS: usize = 16;
/// Blocks remembered per shard: 1 MiB of hashes in all. Beyond it new
/// read-ahead blocks are not remembered, and their reads not counted.
const PER_SHARD: usize = 4096;

/// The read-ahead blocks stored and not read since, by key hash.
pub struct Unread {
    shards: [Mutex<HashSet<u128>>; SHARDS],
}

impl Default for Unread {
    fn default() -> Self {
        Unread {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Unread {
    fn shard(&self, hash: u128) -> std::sync::MutexGuard<'_, HashSet<u128>> {
        self.shards[hash as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A read-ahead block was stored.
    pub fn stored(&self, hash: u128) {
        let mut shard = self.shard(hash);
        if shard.len() < PER_SHARD {
            shard.insert(hash);
        }
    }

    /// A block was read: whether it was a read-ahead block read for the
    /// first time.
    pub fn read(&self, hash: u128) -> bool {
        self.shard(hash).remove(&hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_ahead_block_counts_once_and_the_set_stays_bounded() {
        let unread = Unread::default();
        unread.stored(7);
        assert!(unread.read(7));
        assert!(!unread.read(7), "counted once");
        assert!(!unread.read(8), "not a read-ahead block");
        for hash in 0..(SHARDS * PER_SHARD * 2) as u128 {
            unread.stored(hash);
        }
        let held: usize = unread.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(held, SHARDS * PER_SHARD);
    }
}
