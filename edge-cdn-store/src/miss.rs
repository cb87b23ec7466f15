//! Writing a missed object.
//!
//! A body up to [`HOLD_MAX`] is *held* in memory as it arrives —
//! the requests collapsed behind the miss (its own client included) read
//! it from there — and `finish` writes it whole: one trip to the blocking
//! pool makes the file, writes and commits it. A larger body goes to a
//! temporary file from the chunk that takes it past that size on, each
//! chunk one trip. Dropped without `finish`, a write is abandoned and its
//! readers told.
//!
//! A write that *fails* (a full disk, a deleted directory) only stops the
//! storing: the partial file is removed, the failure counted, and the rest
//! of the body goes on to the readers from memory (see `crate::partial`),
//! so every response it feeds — the miss's own client included — is whole.
//! `finish` then reports that nothing was stored without failing.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::{Error, ErrorType, Result};

use crate::catalog::{Journal, Record};
use crate::disk::encode_key;
use crate::disk::format::MetaBlobs;
use crate::error::StoreError;
use crate::io;
use crate::memory::MemObject;
use crate::observer::StoreEvent;
use crate::partial::{Announced, Partial};
use crate::segments::entry::{self, Parts};
use crate::segments::{Loc, Refused};
use crate::shared::SharedWrites;
use crate::tiers::Tiers;
use crate::write::{Admitted, Write};

/// What `finish` returns for a body that was not stored. pingora has no
/// "not stored" outcome, and an error from `finish` disables the cache for
/// the request — which fails a client still reading the body from the
/// store. "Appended nothing" is the harmless success: the eviction
/// manager's weight for the key is unchanged, or (for a key it did not
/// track) a weight-1 entry whose eventual eviction finds nothing to purge.
const NOT_STORED: MissFinishType = MissFinishType::Appended(0, None);

/// The largest body held in memory until it is whole. At most
/// `write_concurrency` writes are in flight, so this bounds what they hold
/// (16 MiB at the default 64); whether the memory tier keeps a copy
/// afterwards is its own limit, `memory_max_object`.
const HOLD_MAX: u64 = 256 * 1024;

/// The part of a miss that goes to the blocking pool for each write: the
/// write, its readers and what its commit records travel together, so
/// wherever they are dropped early — an error, a dropped future, a dropped
/// handler — the temporary file goes, the permit is released and the
/// readers are told.
struct InFlight {
    write: Write,
    readers: Announced,
    /// The cache key as the meta file keeps it.
    key: Vec<u8>,
    /// What the catalog records once the object is committed.
    record: Record,
}

impl InFlight {
    /// Give up from async code: readers are told now, the file is removed
    /// on the blocking pool.
    fn abandon(self) {
        drop(self.readers);
        self.write.abandon();
    }

    /// Writing `data` failed with `error`: count it, remove the file and
    /// hand `data` to the readers from memory. Blocking.
    fn fail(self, tiers: &Tiers, error: &StoreError, data: Bytes) -> Unstored {
        let len = self.write.written();
        Unstored::after(tiers, error, self.readers, len, self.write.discard(), data)
    }
}

/// A body held in memory, not yet written: what `finish` needs to write
/// and commit it in one trip.
struct Held {
    /// Leave to write it.
    admitted: Admitted,
    readers: Announced,
    /// The cache key as the meta file keeps it.
    key: Vec<u8>,
    /// What the catalog records once the object is committed.
    record: Record,
    /// Body bytes held.
    len: u64,
}

impl Held {
    /// Whether the segment ring would take this body, with `last` after
    /// it, now.
    fn ring_takes(&self, tiers: &Tiers, last: Option<&Bytes>) -> bool {
        let partial = self.readers.partial();
        let body = self.len + last.map_or(0, |l| l.len() as u64);
        let len = entry::len_of(
            partial.meta.internal.len(),
            partial.meta.head.len(),
            self.key.len(),
            body,
        );
        tiers.segments.as_ref().is_some_and(|ring| ring.takes(len))
    }

    /// Make the temporary file, write the held bytes and `data` to it and
    /// hand it to the readers: the body has outgrown memory. Blocking.
    fn into_file(self, tiers: &Tiers, hash: u128, data: &Bytes) -> State {
        let Held {
            admitted,
            readers,
            key,
            record,
            len,
        } = self;
        let begun = admitted.begin(&tiers.disk, hash);
        let mut write = match begun {
            Ok(write) => write,
            Err((error, admitted)) => {
                let unstored = Unstored::after(tiers, &error, readers, len, admitted, data.clone());
                return State::Unstored(unstored);
            }
        };
        let written = readers
            .partial()
            .held_bytes()
            .iter()
            .chain([data])
            .try_for_each(|chunk| write.write(chunk))
            .and_then(|()| write.share());
        match written {
            Ok(file) => {
                readers.in_file(Arc::new(file));
                readers.written(write.written());
                State::Storing(Box::new(InFlight {
                    write,
                    readers,
                    key,
                    record,
                }))
            }
            Err(error) => {
                // Every byte so far is still held in memory: `data` joins
                // them there, and the file goes.
                let permit = write.discard();
                State::Unstored(Unstored::after(
                    tiers,
                    &error,
                    readers,
                    len,
                    permit,
                    data.clone(),
                ))
            }
        }
    }
}

/// A write whose storing failed, still feeding the readers following it.
struct Unstored {
    readers: Announced,
    /// Body bytes so far, in the file and in memory.
    len: u64,
    /// Held until the readers have the whole body: it bounds how many
    /// bodies are held in memory this way at once.
    _permit: Admitted,
}

impl Unstored {
    /// Storing failed with `error` after `len` body bytes: count it, and
    /// hand `data`, the bytes that follow, to the `readers` from memory,
    /// holding `permit` until they have the whole body. Blocking (the log).
    fn after(
        tiers: &Tiers,
        error: &StoreError,
        readers: Announced,
        len: u64,
        permit: Admitted,
        data: Bytes,
    ) -> Unstored {
        tiers.write_failed(error);
        let mut unstored = Unstored {
            readers,
            len,
            _permit: permit,
        };
        unstored.spill(data);
        unstored
    }

    /// Hand the next body bytes to the readers.
    fn spill(&mut self, data: Bytes) {
        let len = data.len() as u64;
        self.readers.spill(self.len, data);
        self.len += len;
    }

    /// The body is complete.
    fn done(self) -> MissFinishType {
        self.readers.done(self.len);
        NOT_STORED
    }
}

/// An object `finish` stored.
struct Committed {
    /// Bytes on disk, body and meta.
    size: u64,
    /// Body bytes.
    body_len: u64,
    /// The copy the memory tier holds, if it holds one.
    held: Option<Arc<MemObject>>,
}

/// The meta file's blobs of the write `readers` follow, with `key`.
fn blobs<'a>(readers: &'a Announced, key: &'a [u8]) -> MetaBlobs<'a> {
    let partial = readers.partial();
    MetaBlobs {
        internal: &partial.meta.internal,
        header: &partial.meta.head,
        key,
    }
}

/// What [`install`] is given of a committed object.
struct Written {
    /// Body bytes.
    body_len: u64,
    /// Bytes on disk, body and meta.
    size: u64,
    /// Its ring entry; `None` for files.
    loc: Option<Loc>,
}

impl Written {
    /// An object committed to files: `body_len` bytes of body, `meta_len`
    /// of meta file.
    fn in_files((body_len, meta_len): (u64, u64)) -> Written {
        Written {
            body_len,
            size: body_len + meta_len,
            loc: None,
        }
    }
}

/// Make a committed object findable and tell its readers; or, if the
/// catalog cannot record it (it is then removed again), count that and
/// report it not stored. `journal` says when its catalog entry reaches the
/// OS. Blocking.
fn install(
    tiers: &Tiers,
    hash: u128,
    readers: Announced,
    record: Record,
    written: Written,
    held: Option<Arc<MemObject>>,
    journal: Journal,
) -> Result<Committed, MissFinishType> {
    let Written {
        body_len,
        size,
        loc,
    } = written;
    if let Err(e) = tiers.install_committed(hash, size, record, held.clone(), loc, journal) {
        // Removed again; the readers have the body regardless.
        tiers.write_failed(&e);
        readers.done(body_len);
        return Err(NOT_STORED);
    }
    readers.done(body_len);
    tiers.observe(StoreEvent::Insert(size));
    Ok(Committed {
        size,
        body_len,
        held,
    })
}

/// The memory tier's copy of a held body of `len` bytes in `chunks`, if
/// it is small enough for memory.
fn for_memory(
    tiers: &Tiers,
    readers: &Announced,
    chunks: &[Bytes],
    len: u64,
) -> Option<Arc<MemObject>> {
    if len > tiers.config.memory_max_object.as_u64() {
        return None;
    }
    let body = match chunks {
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    };
    Some(Arc::new(readers.partial().meta.with_body(body)))
}

impl Held {
    /// Write the whole held body, and `last` (the final chunk, if kept for
    /// this) after it, as one entry of the segment ring if it takes it, or
    /// else to a new file, and commit it: one trip. Blocking. A failure is
    /// counted and stores nothing; the readers have every byte from memory
    /// either way. `journal` says when its catalog entry reaches the OS
    /// ([`Journal::Later`] on the commit thread, which flushes each round).
    fn commit(
        mut self,
        tiers: &Tiers,
        hash: u128,
        last: Option<Bytes>,
        journal: Journal,
    ) -> Result<Committed, MissFinishType> {
        if let Some(data) = last {
            let len = data.len() as u64;
            self.readers.hold(self.len, data);
            self.len += len;
        }
        let Held {
            admitted,
            readers,
            key,
            record,
            len,
        } = self;
        let chunks = readers.partial().held_bytes();
        if let Some(ring) = &tiers.segments {
            let partial = readers.partial();
            let parts = Parts {
                internal: &partial.meta.internal,
                header: &partial.meta.head,
                key: &key,
                body: &chunks,
            };
            match ring.append(hash, &parts) {
                Ok(Ok(appended)) => {
                    tiers.observe(StoreEvent::BytesWritten(len));
                    let held = for_memory(tiers, &readers, &chunks, len);
                    // The permit, and the entry's hold on the ring's
                    // catalog mark, last until the object is installed.
                    let _permit = admitted;
                    let written = Written {
                        body_len: len,
                        size: appended.len,
                        loc: Some(appended.loc),
                    };
                    return install(tiers, hash, readers, record, written, held, journal);
                }
                // Too large for the ring, or the ring not ready: in files.
                Ok(Err(refused)) => {
                    if refused == Refused::Behind {
                        tiers.observe(StoreEvent::RingBehind);
                    }
                }
                Err(error) => {
                    tiers.write_failed(&error);
                    readers.done(len);
                    return Err(NOT_STORED);
                }
            }
        }
        let stored = admitted
            .begin(&tiers.disk, hash)
            .map_err(|(error, _)| error)
            .and_then(|mut write| {
                chunks.iter().try_for_each(|chunk| write.write(chunk))?;
                write.commit(&tiers.disk, blobs(&readers, &key))
            });
        // The permit is held until the object is installed.
        let (lens, _permit) = match stored {
            Ok(committed) => committed,
            Err(error) => {
                tiers.write_failed(&error);
                readers.done(len);
                return Err(NOT_STORED);
            }
        };
        tiers.observe(StoreEvent::BytesWritten(len));
        let held = for_memory(tiers, &readers, &chunks, len);
        let written = Written::in_files(lens);
        install(tiers, hash, readers, record, written, held, journal)
    }
}

impl InFlight {
    /// Write `last` (the final chunk, if kept for this) and commit the
    /// body in the file. Blocking. A failure is counted and stores
    /// nothing; the readers get the whole body either way.
    fn commit(
        self,
        tiers: &Tiers,
        hash: u128,
        last: Option<Bytes>,
    ) -> Result<Committed, MissFinishType> {
        let mut flight = self;
        if let Some(data) = last {
            let len = data.len() as u64;
            if let Err(e) = flight.write.write(&data) {
                return Err(flight.fail(tiers, &e, data).done());
            }
            tiers.observe(StoreEvent::BytesWritten(len));
        }
        let InFlight {
            write,
            readers,
            key,
            record,
        } = flight;
        let written = write.written();
        match write.commit(&tiers.disk, blobs(&readers, &key)) {
            Ok((lens, _permit)) => {
                let written = Written::in_files(lens);
                install(tiers, hash, readers, record, written, None, Journal::Now)
            }
            Err(e) => {
                // The whole body is in the file the readers hold open.
                tiers.write_failed(&e);
                readers.done(written);
                Err(NOT_STORED)
            }
        }
    }
}

/// Where a miss stands.
enum State {
    /// The body so far is held in memory (boxed, as the others).
    Holding(Box<Held>),
    /// Writing to the temporary file (boxed: it moves to the blocking
    /// pool and back with every chunk).
    Storing(Box<InFlight>),
    /// Storing failed; the body goes on to the readers from memory.
    Unstored(Unstored),
    /// Finished, or lost with a dropped future.
    Gone,
}

/// One object being written.
pub struct Miss {
    tiers: &'static Tiers,
    hash: u128,
    state: State,
    /// The end of the body was written.
    ended: bool,
    /// The final chunk, written by `finish` with the commit: one trip off
    /// the worker instead of two.
    last: Option<Bytes>,
    write_tag: [u8; 8],
    /// Whether the object goes to the shared tier when committed (per
    /// `shared_writes`): not when it came from there.
    shares: bool,
}

impl Miss {
    /// A miss writing `key`'s object (hash `hash`) under `admitted`, with
    /// pingora's meta blobs decoded in `meta` (its body empty) and the
    /// catalog's `record`. Readers can follow it from now on. No I/O: the
    /// body is held until it is whole or outgrows memory.
    pub fn new(
        tiers: &'static Tiers,
        hash: u128,
        key: &CacheKey,
        record: Record,
        meta: MemObject,
        admitted: Admitted,
    ) -> Miss {
        let readers = tiers.partials.announce(hash, meta);
        let write_tag = readers.partial().write_id.to_be_bytes();
        Miss {
            tiers,
            hash,
            state: State::Holding(Box::new(Held {
                admitted,
                readers,
                key: encode_key(key),
                record,
                len: 0,
            })),
            ended: false,
            last: None,
            write_tag,
            shares: true,
        }
    }

    /// This miss is filled from the shared tier, not the origin: it is
    /// not written back there.
    pub fn filling_from_shared(mut self) -> Miss {
        self.shares = false;
        self
    }

    /// The write as its readers follow it, while it is being stored.
    pub fn partial(&self) -> Option<Arc<Partial>> {
        match &self.state {
            State::Holding(held) => Some(held.readers.partial().clone()),
            State::Storing(flight) => Some(flight.readers.partial().clone()),
            _ => None,
        }
    }

    /// Append `data` to a body in the file (with `eof`, keep it for
    /// `finish`).
    async fn append(&mut self, mut flight: Box<InFlight>, data: Bytes, eof: bool) -> Result<()> {
        let total = flight.write.written() + data.len() as u64;
        if total > self.tiers.config.max_object_size.as_u64() {
            flight.abandon();
            return Err(StoreError::TooLarge(total).into_pingora());
        }
        if eof {
            self.state = State::Storing(flight);
            self.last = Some(data);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let len = data.len() as u64;
        let tiers = self.tiers;
        let written = io::blocking(move || {
            Ok(match flight.write.write(&data) {
                Ok(()) => {
                    flight.readers.written(flight.write.written());
                    State::Storing(flight)
                }
                Err(e) => State::Unstored(flight.fail(tiers, &e, data)),
            })
        })
        .await;
        self.tiers
            .observe(StoreEvent::DiskLatency("write", started.elapsed()));
        match written {
            Ok(state) => {
                if let State::Storing(_) = state {
                    self.tiers.observe(StoreEvent::BytesWritten(len));
                }
                self.state = state;
                Ok(())
            }
            Err(e) => {
                self.tiers.write_failed(&e);
                Err(e.into_pingora())
            }
        }
    }

    /// Hold `data` after the body held so far, or, if that takes it past
    /// [`HOLD_MAX`], move the body to a temporary file — unless
    /// `data` ends the body: then `finish` writes it all in one trip.
    async fn hold(&mut self, mut held: Box<Held>, data: Bytes, eof: bool) -> Result<()> {
        let total = held.len + data.len() as u64;
        if total > self.tiers.config.max_object_size.as_u64() {
            return Err(StoreError::TooLarge(total).into_pingora());
        }
        if total <= HOLD_MAX {
            held.readers.hold(held.len, data);
            held.len = total;
            self.state = State::Holding(held);
            return Ok(());
        }
        if eof {
            self.state = State::Holding(held);
            self.last = Some(data);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (tiers, hash) = (self.tiers, self.hash);
        let moved = io::blocking(move || Ok(held.into_file(tiers, hash, &data))).await;
        tiers.observe(StoreEvent::DiskLatency("write", started.elapsed()));
        match moved {
            Ok(state) => {
                if let State::Storing(_) = state {
                    tiers.observe(StoreEvent::BytesWritten(total));
                }
                self.state = state;
                Ok(())
            }
            Err(e) => {
                tiers.write_failed(&e);
                Err(e.into_pingora())
            }
        }
    }
}

#[async_trait]
impl HandleMiss for Miss {
    /// Append `data` to the body; with `eof`, it is kept for `finish` to
    /// write with the commit. A write that fails is not an error: the
    /// object stops being stored and the body goes on to its readers.
    ///
    /// # Cancel safety
    ///
    /// Not resumable: dropping the future before it completes abandons the
    /// write. Its temporary file is removed, its permit released and its
    /// readers get an error once the chunk in flight has been written; a
    /// later call returns an error.
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.ended {
            return Err(Error::explain(
                ErrorType::InternalError,
                "write after the end of the body",
            ));
        }
        self.ended = eof;
        match std::mem::replace(&mut self.state, State::Gone) {
            State::Holding(held) => self.hold(held, data, eof).await,
            State::Storing(flight) => self.append(flight, data, eof).await,
            State::Unstored(mut unstored) => {
                unstored.spill(data);
                self.state = State::Unstored(unstored);
                Ok(())
            }
            State::Gone => Err(Error::explain(
                ErrorType::InternalError,
                "write after failure",
            )),
        }
    }

    /// Write the last chunk, commit the object and make it findable. A
    /// body that could not be stored is finished for its readers all the
    /// same, and reported as stored nothing ([`NOT_STORED`]), not as an
    /// error.
    ///
    /// # Cancel safety
    ///
    /// The commit, the index, catalog and memory updates and telling the
    /// readers all run on the commit thread (a held body) or the blocking
    /// pool (one in its file) once started: dropping the future does not
    /// lose a committed object or leave readers waiting.
    /// Only the copy to the shared tier is skipped. That copy runs in the
    /// background for objects up to `shared_max_object`.
    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let (tiers, hash) = (self.tiers, self.hash);
        let last = self.last.take();
        let started = std::time::Instant::now();
        let committed = match std::mem::replace(&mut self.state, State::Gone) {
            // An append to the ring on the commit thread; files, which
            // rename and may fsync, on the blocking pool.
            State::Holding(held) if held.ring_takes(tiers, last.as_ref()) => {
                tiers
                    .commits
                    .run(move || held.commit(tiers, hash, last, Journal::Later))
                    .await
            }
            State::Holding(held) => {
                io::blocking(move || Ok(held.commit(tiers, hash, last, Journal::Now))).await
            }
            State::Storing(flight) => {
                io::blocking(move || Ok(flight.commit(tiers, hash, last))).await
            }
            State::Unstored(unstored) => return Ok(unstored.done()),
            State::Gone => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "finish after failure",
                ))
            }
        };
        tiers.observe(StoreEvent::DiskLatency("commit", started.elapsed()));
        let Committed {
            size,
            body_len,
            held,
        } = match committed {
            Ok(Ok(stored)) => stored,
            Ok(Err(not_stored)) => return Ok(not_stored),
            Err(e) => {
                tiers.write_failed(&e);
                return Err(e.into_pingora());
            }
        };
        if self.shares && tiers.config.shared_writes == SharedWrites::WriteThrough {
            tiers.share(hash, held, body_len);
        }
        Ok(MissFinishType::Created(size as usize))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.write_tag)
    }
}

impl Drop for Miss {
    /// Dropped without `finish`: the write failed. Readers following it
    /// must see an error, not a clean end of a truncated body.
    fn drop(&mut self) {
        if let State::Storing(flight) = std::mem::replace(&mut self.state, State::Gone) {
            flight.abandon();
        }
    }
}
