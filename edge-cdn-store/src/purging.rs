//! Purges answered at once and carried out on disk in the background.
//!
//! A purge of many objects has two parts of very different cost. Taking
//! them out of memory and the index is a few hundred nanoseconds each, and
//! is all it takes for every lookup to miss them. Removing them from disk
//! is tens of microseconds each: a tombstone in each of the catalog's
//! keyspaces and a `pwrite` over each ring entry's magic (100,000 objects
//! among 10 million took 3.4 s, `docs/benchmarks.md`). So a purge records
//! what it takes in the catalog (`crate::catalog::Pending`, which a crash
//! leaves for the next start to finish), takes the objects out of memory
//! and the index, answers, and leaves the disk to one thread, `store-purge`,
//! which removes them a batch at a time under their locks and then drops
//! the record.
//!
//! Until the thread reaches them, the catalog still lists the purged
//! objects; [`Purging::hides`] keeps them out of selections. An object
//! filled again after its purge is indexed again, and the thread leaves
//! it and its new catalog entry alone, removing only the purged copy.
//! A selection that scanned the catalog while a purge was carried out may
//! hold entries the thread removed after the scan read them, which are no
//! longer hidden either: [`Purging::carried_out`] tells it to look again.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::commit::Committer;
use crate::error::StoreError;

/// How long an unbounded [`Purging::wait_idle`] sleeps between looks.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The store's purges in flight and the thread that carries them out.
pub struct Purging {
    thread: Committer,
    state: Mutex<State>,
    /// Signalled when the last purge in flight is carried out.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// Objects purged and not yet removed from disk, each with how many
    /// purges in flight took it.
    hashes: HashMap<u128, u32>,
    /// Purges in flight.
    running: usize,
    /// Purges carried out since the store opened.
    carried_out: u64,
}

impl Purging {
    /// Start the thread.
    pub fn start() -> Result<Purging, StoreError> {
        Ok(Purging {
            thread: Committer::start("store-purge", || {})?,
            state: Mutex::default(),
            idle: Condvar::new(),
        })
    }

    /// A purge of `hashes` begins: until the returned guard is dropped
    /// (however the purge's work ends, a panic included), each is hidden
    /// and the purge counts as in flight.
    pub fn begin(&self, hashes: Vec<u128>) -> Begun<'_> {
        let mut state = self.state();
        state.running += 1;
        for hash in &hashes {
            *state.hashes.entry(*hash).or_default() += 1;
        }
        Begun {
            purging: self,
            hashes,
        }
    }

    /// Carry `work` out on the thread, or here if the thread is stopped
    /// (the store is being dropped). Blocking in that case only.
    pub fn carry_out(&self, work: impl FnOnce() + Send + 'static) {
        if let Err(work) = self.thread.queue(work) {
            work();
        }
    }

    /// The purge of `hashes` is carried out.
    fn end(&self, hashes: &[u128]) {
        let mut state = self.state();
        for hash in hashes {
            if let Some(count) = state.hashes.get_mut(hash) {
                *count -= 1;
                if *count == 0 {
                    state.hashes.remove(hash);
                }
            }
        }
        state.running -= 1;
        state.carried_out += 1;
        if state.running == 0 {
            state.hashes.shrink_to_fit();
            self.idle.notify_all();
        }
    }

    /// Whether `hash`'s object was purged and is still being removed.
    pub fn hides(&self, hash: u128) -> bool {
        self.state().hashes.contains_key(&hash)
    }

    /// How many purges have been carried out (their catalog entries
    /// removed, their objects no longer hidden): a selection reads it
    /// before and after its scan of the catalog, to know whether an entry
    /// it read may have been removed since without being hidden any more.
    pub fn carried_out(&self) -> u64 {
        self.state().carried_out
    }

    /// Purges in flight.
    pub fn running(&self) -> usize {
        self.state().running
    }

    /// Wait up to `wait` (for ever if `None`) for every purge in flight to
    /// be carried out; returns whether they were.
    pub fn wait_idle(&self, wait: Option<Duration>) -> bool {
        let until = wait.and_then(|wait| Instant::now().checked_add(wait));
        let mut state = self.state();
        while state.running > 0 {
            let left = match until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => IDLE_CHECK,
            };
            if left.is_zero() {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Take no more purges onto the thread; it carries out those queued
    /// and ends.
    pub fn stop(&self) {
        self.thread.stop();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A purge in flight, from [`Purging::begin`]: it ends when dropped.
pub struct Begun<'a> {
    purging: &'a Purging,
    hashes: Vec<u128>,
}

impl Begun<'_> {
    /// The objects the purge takes.
    pub fn hashes(&self) -> &[u128] {
        &self.hashes
    }
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        self.purging.end(&self.hashes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn hidden_until_carried_out_and_idle_after() {
        let purging: &'static Purging = Box::leak(Box::new(Purging::start().unwrap()));
        let release = Arc::new(AtomicBool::new(false));
        let first = purging.begin(vec![1, 2]);
        let second = purging.begin(vec![2]);
        assert_eq!(first.hashes(), [1, 2]);
        assert!(purging.hides(1) && purging.hides(2) && !purging.hides(3));
        let released = release.clone();
        purging.carry_out(move || {
            while !released.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(first);
        });
        assert!(!purging.wait_idle(Some(Duration::from_millis(20))));
        release.store(true, Ordering::SeqCst);
        // One of the two purges is still in flight.
        assert!(!purging.wait_idle(Some(Duration::from_millis(200))));
        assert!(!purging.hides(1) && purging.hides(2));
        assert_eq!(purging.carried_out(), 1);
        drop(second);
        assert_eq!(purging.carried_out(), 2);
        assert!(purging.wait_idle(Some(Duration::ZERO)));
        assert!(!purging.hides(2));

        // A stopped thread: the work runs in the caller.
        purging.stop();
        let ran = Arc::new(AtomicBool::new(false));
        let for_work = ran.clone();
        purging.carry_out(move || for_work.store(true, Ordering::SeqCst));
        assert!(ran.load(Ordering::SeqCst));
    }
}
