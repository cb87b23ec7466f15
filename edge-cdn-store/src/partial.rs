//! Writes in progress, readable while they are written.
//!
//! A miss publishes how many body bytes are readable; readers collapsed
//! behind it read up to that point and wait for more. A writer that goes
//! away without finishing is reported to its readers as an error — never
//! as a clean end of body (pingora issue #932: a truncated body that looks
//! complete).
//!
//! Body bytes are where the writer put them: *held* in memory (a small
//! body is written to disk only when it is whole, in one trip) or in the
//! temporary file, which the writer hands over as an open file once it
//! exists, so no reader opens a file by name. A write whose storing fails
//! (a full disk) is not abandoned: its readers include the client of the
//! miss itself, which pingora serves from the store. The rest of the body
//! is *spilled*: held in memory after the bytes the file already has, for
//! the readers following it to read to the end; the write stops being
//! listed, so later lookups miss instead.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::memory::MemObject;
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
    /// pingora's meta blobs as the writer was given them, decoded once
    /// (with an empty body): readers build their `CacheMeta` from it
    /// without decompressing the header blob again.
    pub meta: MemObject,
    /// The temporary body file, once the writer has made it: every body
    /// byte not held in memory is in it.
    file: OnceLock<Arc<File>>,
    progress: watch::Sender<Progress>,
    held: Mutex<Held>,
}

/// Body bytes held in memory, by offset, in order: a small body before it
/// is written, or what could not be stored.
#[derive(Default)]
struct Held(Vec<(u64, Bytes)>);

/// Where a reader finds the body bytes at its position.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// In the file, this many bytes at most before the spilled part.
    File(u64),
    /// Held in memory.
    Memory(Bytes),
}

impl Partial {
    /// Follow this write's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Where the readable bytes from `pos` up to `readable` are.
    pub fn next(&self, pos: u64, readable: u64) -> Next {
        let held = self.held();
        let after = held.0.partition_point(|(at, _)| *at <= pos);
        if let Some((at, chunk)) = after.checked_sub(1).map(|i| &held.0[i]) {
            let end = at + chunk.len() as u64;
            if pos < end {
                let to = end.min(readable);
                return Next::Memory(chunk.slice((pos - at) as usize..(to - at) as usize));
            }
        }
        let next_held = held.0.get(after).map_or(u64::MAX, |(at, _)| *at);
        Next::File(readable.min(next_held) - pos)
    }

    /// The temporary body file; `None` before the writer made it (when
    /// every readable byte is held in memory).
    pub fn file(&self) -> Option<Arc<File>> {
        self.file.get().cloned()
    }

    /// The body bytes held in memory, in order: the whole body, for a
    /// write that held it all.
    pub fn held_bytes(&self) -> Vec<Bytes> {
        self.held()
            .0
            .iter()
            .map(|(_, chunk)| chunk.clone())
            .collect()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Register a new write of `hash`, with its `meta` (and an empty
    /// body), for readers to follow; a later write of the same key replaces
    /// it for new readers.
    pub fn announce(&'static self, hash: u128, meta: MemObject) -> Announced {
        let partial = Arc::new(Partial {
            write_id: self.next_write.fetch_add(1, Ordering::Relaxed),
            meta,
            file: OnceLock::new(),
            progress: watch::Sender::new(Progress::Writing(0)),
            held: Mutex::default(),
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

    /// Hold `data`, at body offset `at`, in memory for the readers, and
    /// make it readable.
    pub fn hold(&self, at: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        self.partial.held().0.push((at, data));
        self.written(at + len);
    }

    /// The temporary file now holds every body byte so far: readers read
    /// it through `file` from now on, and the bytes held in memory are let
    /// go.
    pub fn in_file(&self, file: Arc<File>) {
        // Set once, before any byte is read from it.
        let _ = self.partial.file.set(file);
        self.partial.held().0.clear();
    }

    /// Storing failed: `data`, at body offset `at`, is held for the
    /// readers instead of written, and the write is no longer listed, so
    /// new lookups miss rather than follow a body that is not stored.
    pub fn spill(&self, at: u64, data: Bytes) {
        self.partials.remove(self.hash, self.partial.write_id);
        self.hold(at, data);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn partials() -> &'static Partials {
        Box::leak(Box::default())
    }

    fn meta() -> MemObject {
        let header = pingora_http::ResponseHeader::build(200, None).unwrap();
        let now = std::time::SystemTime::now();
        let meta = pingora_cache::CacheMeta::new(now, now, 0, 0, header);
        let (internal, header) = meta.serialize().unwrap();
        MemObject::decoded(internal.into(), header.into(), Bytes::new(), &meta)
    }

    #[test]
    fn readers_read_the_file_then_the_spilled_bytes_in_order() {
        let partials = partials();
        let writer = partials.announce(1, meta());
        let partial = writer.partial().clone();
        writer.written(100);
        assert_eq!(partial.next(0, 100), Next::File(100));

        writer.spill(100, Bytes::from_static(b"abc"));
        writer.spill(103, Bytes::from_static(b"defg"));
        assert!(
            partials.get(1, None).is_none(),
            "a spilled write is unlisted"
        );
        assert_eq!(
            partial.next(40, 107),
            Next::File(60),
            "the file up to the spill"
        );
        assert_eq!(
            partial.next(100, 107),
            Next::Memory(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            partial.next(101, 107),
            Next::Memory(Bytes::from_static(b"bc"))
        );
        assert_eq!(
            partial.next(103, 105),
            Next::Memory(Bytes::from_static(b"de"))
        );
        assert_eq!(*partial.subscribe().borrow(), Progress::Writing(107));

        drop(writer);
        assert_eq!(
            *partial.subscribe().borrow(),
            Progress::Abandoned,
            "dropped before done: an error to readers"
        );
    }

    #[test]
    fn a_held_body_is_read_from_memory_until_it_is_in_the_file() {
        let partials = partials();
        let writer = partials.announce(2, meta());
        let partial = writer.partial().clone();
        writer.hold(0, Bytes::from_static(b"hello "));
        writer.hold(6, Bytes::from_static(b"world"));
        assert!(partials.get(2, None).is_some(), "held, still listed");
        assert_eq!(
            partial.next(0, 11),
            Next::Memory(Bytes::from_static(b"hello "))
        );
        assert_eq!(
            partial.next(8, 11),
            Next::Memory(Bytes::from_static(b"rld"))
        );
        assert_eq!(partial.held_bytes().concat(), b"hello world");
        assert!(partial.file().is_none());

        let file = tempfile::tempfile().unwrap();
        writer.in_file(Arc::new(file));
        assert!(partial.file().is_some());
        assert_eq!(partial.next(3, 11), Next::File(8), "in the file now");
    }
}
