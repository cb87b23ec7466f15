//! Writing a missed object: streamed to a temporary file (readable by the
//! requests collapsed behind it), committed by `finish`, abandoned — and
//! reported to readers as an error — if dropped without it.
//!
//! A write that *fails* (a full disk, a deleted directory) only stops the
//! storing: the partial file is removed, the failure counted, and the rest
//! of the body goes on to the readers from memory (see `crate::partial`),
//! so every response it feeds — the miss's own client included — is whole.
//! `finish` then reports that nothing was stored without failing.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::{Error, ErrorType, Result};

use crate::catalog::Record;
use crate::disk::encode_key;
use crate::disk::format::MetaBlobs;
use crate::error::StoreError;
use crate::io;
use crate::memory::MemObject;
use crate::observer::StoreEvent;
use crate::partial::{Announced, Partial};
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
        tiers.write_failed(error);
        let len = self.write.written();
        let mut unstored = Unstored {
            readers: self.readers,
            len,
            _permit: self.write.discard(),
        };
        unstored.spill(data);
        unstored
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

/// Where a miss stands.
enum State {
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
    /// The body so far, while it is small enough for the memory tier.
    small: Option<BytesMut>,
    /// The final chunk, written by `finish` with the commit: one trip to
    /// the blocking pool instead of two (for a one-chunk body, that halves
    /// the handoffs after the temp file exists).
    last: Option<Bytes>,
    write_tag: [u8; 8],
    /// Whether the object goes to the shared tier when committed (per
    /// `shared_writes`): not when it came from there.
    shares: bool,
}

impl Miss {
    /// A miss writing `key`'s object through `write`, with pingora's meta
    /// blobs `internal` and `header` and the catalog's `record`. Readers
    /// can follow it from now on.
    pub fn new(
        tiers: &'static Tiers,
        key: &CacheKey,
        record: Record,
        (internal, header): (Bytes, Bytes),
        write: Write,
    ) -> Miss {
        let hash = write.hash();
        let readers =
            tiers
                .partials
                .announce(hash, internal, header, write.temp_path().to_path_buf());
        let write_tag = readers.partial().write_id.to_be_bytes();
        Miss {
            tiers,
            hash,
            state: State::Storing(Box::new(InFlight {
                write,
                readers,
                key: encode_key(key),
                record,
            })),
            small: Some(BytesMut::new()),
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
            State::Storing(flight) => Some(flight.readers.partial().clone()),
            _ => None,
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
        if self.last.is_some() {
            return Err(Error::explain(
                ErrorType::InternalError,
                "write after the end of the body",
            ));
        }
        let mut flight = match std::mem::replace(&mut self.state, State::Gone) {
            State::Storing(flight) => flight,
            State::Unstored(mut unstored) => {
                unstored.spill(data);
                self.state = State::Unstored(unstored);
                return Ok(());
            }
            State::Gone => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "write after failure",
                ))
            }
        };
        let total = flight.write.written() + data.len() as u64;
        if total > self.tiers.config.max_object_size.as_u64() {
            flight.abandon();
            return Err(StoreError::TooLarge(total).into_pingora());
        }
        if let Some(small) = &mut self.small {
            if total <= self.tiers.config.memory_max_object.as_u64() {
                small.extend_from_slice(&data);
            } else {
                self.small = None;
            }
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
                match state {
                    State::Storing(_) => self.tiers.observe(StoreEvent::BytesWritten(len)),
                    _ => self.small = None,
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

    /// Write the last chunk, commit the object and make it findable. A
    /// body that could not be stored is finished for its readers all the
    /// same, and reported as stored nothing ([`NOT_STORED`]), not as an
    /// error.
    ///
    /// # Cancel safety
    ///
    /// The commit, the index, catalog and memory updates and telling the
    /// readers all run on the blocking pool once started: dropping the
    /// future does not lose a committed object or leave readers waiting.
    /// Only the copy to the shared tier is skipped. That copy runs in the
    /// background for objects up to `shared_max_object`.
    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let mut flight = match std::mem::replace(&mut self.state, State::Gone) {
            State::Storing(flight) => flight,
            State::Unstored(unstored) => return Ok(unstored.done()),
            State::Gone => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "finish after failure",
                ))
            }
        };
        let (tiers, hash) = (self.tiers, self.hash);
        let small = self.small.take();
        let last = self.last.take();
        let started = std::time::Instant::now();
        let committed = io::blocking(move || {
            let last_len = last.as_ref().map_or(0, |d| d.len() as u64);
            if let Some(data) = last {
                if let Err(e) = flight.write.write(&data) {
                    return Ok(Err(flight.fail(tiers, &e, data).done()));
                }
            }
            let InFlight {
                write,
                readers,
                key,
                record,
            } = *flight;
            let written = write.written();
            let partial = readers.partial();
            let blobs = MetaBlobs {
                internal: &partial.internal,
                header: &partial.header,
                key: &key,
            };
            let (body_len, meta_len) = match write.commit(&tiers.disk, blobs) {
                Ok(lens) => lens,
                Err(e) => {
                    // The whole body is in the file the readers hold open.
                    tiers.write_failed(&e);
                    readers.done(written);
                    return Ok(Err(NOT_STORED));
                }
            };
            if last_len > 0 {
                tiers.observe(StoreEvent::BytesWritten(last_len));
            }
            let held = match small {
                Some(body) if body.len() as u64 == body_len => MemObject::new(
                    partial.internal.clone(),
                    partial.header.clone(),
                    body.freeze(),
                )
                .map(Arc::new),
                _ => None,
            };
            let size = body_len + meta_len;
            if let Err(e) = tiers.install_committed(hash, size, record, held.clone()) {
                // Removed again; the readers hold the body file open.
                tiers.write_failed(&e);
                readers.done(body_len);
                return Ok(Err(NOT_STORED));
            }
            readers.done(body_len);
            tiers.observe(StoreEvent::Insert(size));
            Ok(Ok((size, body_len, held)))
        })
        .await;
        self.tiers
            .observe(StoreEvent::DiskLatency("commit", started.elapsed()));
        let (size, body_len, held) = match committed {
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
