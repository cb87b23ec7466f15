//! Blocks being fetched, so concurrent requests for the same missing
//! block make one origin fetch.
//!
//! A request that finds a block missing claims it before asking the
//! origin. Another request that needs the block meanwhile waits until the
//! claimant has begun storing it — from then on the store's own readers
//! follow the write as it arrives — or has given up, and then looks again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// Shards of the claim map: claims on different blocks rarely contend.
const SHARDS: usize = 16;

/// Where a claimed block stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The claimant is asking the origin.
    Fetching,
    /// Its write has begun (or been refused): look it up in the store.
    Settled,
}

/// The blocks claimed now, by block key hash.
pub struct Flights {
    shards: [Mutex<HashMap<u128, watch::Receiver<Stage>>>; SHARDS],
}

/// The outcome of trying to claim a block.
pub enum Claim {
    /// This request fetches it.
    Mine(Flight),
    /// Another request is fetching it: wait for it to settle
    /// ([`Flights::settled`]), then look again.
    Theirs,
}

/// A claimed block. Settled when dropped, whatever happened.
pub struct Flight {
    flights: &'static Flights,
    hash: u128,
    stage: watch::Sender<Stage>,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Flights {
    fn shard(&self, hash: u128) -> MutexGuard<'_, HashMap<u128, watch::Receiver<Stage>>> {
        self.shards[hash as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request has claimed the block whose key hashes to `hash`
    /// and not begun writing it yet.
    pub fn claimed(&self, hash: u128) -> bool {
        self.shard(hash).contains_key(&hash)
    }

    /// Wait, at most `limit`, until the claim on the block whose key
    /// hashes to `hash` settles (or its claimant goes away); at once when
    /// nobody has claimed it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is held but a receiver.
    pub async fn settled(&self, hash: u128, limit: Duration) {
        let theirs = self.shard(hash).get(&hash).cloned();
        if let Some(mut theirs) = theirs {
            let settled = theirs.wait_for(|s| *s == Stage::Settled);
            let _ = tokio::time::timeout(limit, settled).await;
        }
    }

    /// Claim the block whose key hashes to `hash`.
    pub fn claim(&'static self, hash: u128) -> Claim {
        let mut shard = self.shard(hash);
        if shard.contains_key(&hash) {
            return Claim::Theirs;
        }
        let (stage, receiver) = watch::channel(Stage::Fetching);
        shard.insert(hash, receiver);
        Claim::Mine(Flight {
            flights: self,
            hash,
            stage,
        })
    }
}

impl Flight {
    /// The block's write has begun (or was refused): waiters may look it
    /// up now. Its claim is released.
    pub fn settle(self) {}
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.shard(self.hash).remove(&self.hash);
        self.stage.send_replace(Stage::Settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claimant_per_block_and_waiters_wake_when_it_settles() {
        let flights: &'static Flights = Box::leak(Box::default());
        let Claim::Mine(mine) = flights.claim(7) else {
            panic!("the first claim is mine")
        };
        assert!(
            matches!(flights.claim(7), Claim::Theirs),
            "the second waits"
        );
        assert!(matches!(flights.claim(8), Claim::Mine(_)));
        let waiter = tokio::spawn(flights.settled(7, Duration::from_secs(10)));
        mine.settle();
        waiter.await.unwrap();
        assert!(
            matches!(flights.claim(7), Claim::Mine(_)),
            "settling releases the claim"
        );
    }
}
