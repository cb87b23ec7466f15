//! Writes in progress, readable while they are written.
//!
//! A miss publishes how many body bytes are in its temporary file; readers
//! collapsed behind it read up to that point and wait for more. A writer
//! that goes away without finishing is reported to its readers as an error —
//! never as a clean end of body (pingora issue #932: a truncated body that
//! looks complete).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// pingora's internal meta blob, as the writer was given it.
    pub internal: Bytes,
    /// pingora's header blob.
    pub header: Bytes,
    /// The temporary body file readers read from.
    pub temp: PathBuf,
    progress: watch::Sender<Progress>,
}

impl Partial {
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
    next_write: AtomicU64,
}

impl Default for Partials {
    fn default() -> Self {
        Partials {
            shards: Sharded::new(SHARDS),
            next_write: AtomicU64::new(1),
        }
    }
}

impl Partials {
    fn shard(&self, hash: u128) -> MutexGuard<'_, HashMap<u128, Arc<Partial>>> {
        self.shards.lock(hash as usize)
    }

    /// Register a new write of `hash` whose body is being written to
    /// `temp`, for readers to follow; a later write of the same key
    /// replaces it for new readers.
    pub fn announce(
        &'static self,
        hash: u128,
        internal: Bytes,
        header: Bytes,
        temp: PathBuf,
    ) -> Announced {
        let partial = Arc::new(Partial {
            write_id: self.next_write.fetch_add(1, Ordering::Relaxed),
            internal,
            header,
            temp,
            progress: watch::Sender::new(Progress::Writing(0)),
        });
        self.shard(hash).insert(hash, partial.clone());
        Announced {
            partials: self,
            hash,
            partial,
        }
    }

    /// The write in progress for `hash`, optionally a specific one.
    pub fn get(&self, hash: u128, write_id: Option<u64>) -> Option<Arc<Partial>> {
        self.shard(hash)
            .get(&hash)
            .filter(|p| write_id.is_none_or(|id| p.write_id == id))
            .cloned()
    }

    /// Unregister write `write_id` of `hash` (not a newer one).
    fn remove(&self, hash: u128, write_id: u64) {
        let mut shard = self.shard(hash);
        if shard.get(&hash).is_some_and(|p| p.write_id == write_id) {
            shard.remove(&hash);
        }
    }
}

/// A write registered for readers to follow, held by its writer.
///
/// Dropped before [`Announced::done`] — by an error, a dropped future or a
/// dropped handler, wherever that happens — it tells the readers the write
/// was abandoned, so none of them mistakes a truncated body for a whole one.
/// Either way it unregisters the write.
pub struct Announced {
    partials: &'static Partials,
    hash: u128,
    partial: Arc<Partial>,
}

impl Announced {
    /// The write, as readers see it.
    pub fn partial(&self) -> &Arc<Partial> {
        &self.partial
    }

    /// Tell readers that `len` body bytes are readable.
    pub fn written(&self, len: u64) {
        self.partial.progress.send_replace(Progress::Writing(len));
    }

    /// Tell readers the body is complete with `len` bytes, and unregister
    /// the write: new lookups find the committed object instead.
    pub fn done(self, len: u64) {
        self.partial.progress.send_replace(Progress::Done(len));
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.partial.progress.send_if_modified(|progress| {
            let finished = matches!(progress, Progress::Done(_));
            if !finished {
                *progress = Progress::Abandoned;
            }
            !finished
        });
        self.partials.remove(self.hash, self.partial.write_id);
    }
}
