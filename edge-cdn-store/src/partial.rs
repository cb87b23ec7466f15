//! Writes in progress, readable while they are written.
//!
//! A miss publishes how many body bytes are in its temporary file; readers
//! collapsed behind it read up to that point and wait for more. A writer
//! that goes away without finishing is reported to its readers as an error —
//! never as a clean end of body (pingora issue #932: a truncated body that
//! looks complete).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::sharded::Sharded;

/// Where a write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many body bytes are readable so far.
    Writing(u64),
    /// Complete, with this many body bytes.
    Done(u64),
    /// The writer gave up; the body is incomplete.
    Abandoned,
}

/// One write in progress.
pub struct Partial {
    /// Identifies this write among writes of the same key.
    pub write_id: u64,
    /// pingora's two meta blobs, as the writer was given them.
    pub internal: Bytes,
    /// pingora's header blob.
    pub header: Bytes,
    /// The temporary body file readers read from.
    pub temp: PathBuf,
    progress: watch::Sender<Progress>,
}

impl Partial {
    /// A write that has written nothing yet.
    pub fn new(write_id: u64, internal: Bytes, header: Bytes, temp: PathBuf) -> Partial {
        Partial {
            write_id,
            internal,
            header,
            temp,
            progress: watch::Sender::new(Progress::Writing(0)),
        }
    }

    /// Publish progress to readers.
    pub fn publish(&self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    /// Follow this write's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

/// Shards of the in-progress map: every lookup consults it, so it must not
/// be one lock.
const SHARDS: usize = 16;

/// Writes in progress by key hash.
pub struct Partials {
    shards: Sharded<HashMap<u128, Arc<Partial>>>,
}

impl Default for Partials {
    fn default() -> Self {
        Partials {
            shards: Sharded::new(SHARDS),
        }
    }
}

impl Partials {
    fn shard(&self, hash: u128) -> MutexGuard<'_, HashMap<u128, Arc<Partial>>> {
        self.shards.lock(hash as usize)
    }

    /// Register a write; a later write of the same key replaces it for new readers.
    pub fn insert(&self, hash: u128, partial: Arc<Partial>) {
        self.shard(hash).insert(hash, partial);
    }

    /// The write in progress for `hash`, optionally a specific one.
    pub fn get(&self, hash: u128, write_id: Option<u64>) -> Option<Arc<Partial>> {
        self.shard(hash)
            .get(&hash)
            .filter(|p| write_id.is_none_or(|id| p.write_id == id))
            .cloned()
    }

    /// Unregister write `write_id` of `hash` (not a newer one).
    pub fn remove(&self, hash: u128, write_id: u64) {
        let mut shard = self.shard(hash);
        if shard.get(&hash).is_some_and(|p| p.write_id == write_id) {
            shard.remove(&hash);
        }
    }
}
