//! Writing a missed object: streamed to a temporary file (readable by the
//! requests collapsed behind it), committed by `finish`, abandoned — and
//! reported to readers as an error — if dropped without it.

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
use crate::partial::Announced;
use crate::shared::SharedWrites;
use crate::tiers::Tiers;
use crate::write::Write;

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
}

/// One object being written.
pub struct Miss {
    tiers: &'static Tiers,
    hash: u128,
    /// `None` once finished, failed, or lost with a dropped future.
    flight: Option<InFlight>,
    /// The body so far, while it is small enough for the memory tier.
    small: Option<BytesMut>,
    /// The final chunk, written by `finish` with the commit: one trip to
    /// the blocking pool instead of two (for a one-chunk body, that halves
    /// the handoffs after the temp file exists).
    last: Option<Bytes>,
    write_tag: [u8; 8],
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
            flight: Some(InFlight {
                write,
                readers,
                key: encode_key(key),
                record,
            }),
            small: Some(BytesMut::new()),
            last: None,
            write_tag,
        }
    }
}

#[async_trait]
impl HandleMiss for Miss {
    /// Append `data` to the body; with `eof`, it is kept for `finish` to
    /// write with the commit.
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
        let mut flight = self
            .flight
            .take()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "write after failure"))?;
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
            self.flight = Some(flight);
            self.last = Some(data);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let len = data.len() as u64;
        let written = io::blocking(move || {
            flight.write.write(&data)?;
            flight.readers.written(flight.write.written());
            Ok(flight)
        })
        .await;
        self.tiers
            .observe(StoreEvent::DiskLatency("write", started.elapsed()));
        match written {
            Ok(flight) => {
                self.tiers.observe(StoreEvent::BytesWritten(len));
                self.flight = Some(flight);
                Ok(())
            }
            Err(e) => {
                self.tiers.observe(StoreEvent::Error("write"));
                Err(e.into_pingora())
            }
        }
    }

    /// Write the last chunk, commit the object and make it findable.
    ///
    /// # Cancel safety
    ///
    /// The commit, the index, catalog and memory updates and telling the
    /// readers all run on the blocking pool once started: dropping the
    /// future does not lose a committed object or leave readers waiting.
    /// Only the copy to the shared tier is skipped.
    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let InFlight {
            mut write,
            readers,
            key,
            record,
        } = self
            .flight
            .take()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "finish after failure"))?;
        let (tiers, hash) = (self.tiers, self.hash);
        let small = self.small.take();
        let last = self.last.take();
        let started = std::time::Instant::now();
        let committed = io::blocking(move || {
            let last_len = last.as_ref().map_or(0, |d| d.len() as u64);
            if let Some(data) = last {
                write.write(&data)?;
            }
            let partial = readers.partial();
            let blobs = MetaBlobs {
                internal: &partial.internal,
                header: &partial.header,
                key: &key,
            };
            let (body_len, meta_len) = write.commit(&tiers.disk, blobs)?;
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
            tiers.install_committed(hash, size, record, held.clone());
            readers.done(body_len);
            tiers.observe(StoreEvent::Insert(size));
            Ok((size, held))
        })
        .await;
        self.tiers
            .observe(StoreEvent::DiskLatency("commit", started.elapsed()));
        let (size, held) = committed.map_err(|e| {
            tiers.observe(StoreEvent::Error("commit"));
            e.into_pingora()
        })?;
        if let Some(object) = held {
            if tiers.config.shared_writes == SharedWrites::WriteThrough {
                tiers.share(hash, &object);
            }
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
        if let Some(flight) = self.flight.take() {
            flight.abandon();
        }
    }
}
