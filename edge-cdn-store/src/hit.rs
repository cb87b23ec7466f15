//! Reading a cached body: from memory, from disk (checked block by block),
//! from a write still in progress (a miss, or a shared-tier hit being stored
//! locally), or straight from the shared tier. [`Hit`] is the one
//! `HandleHit` pingora sees; each kind of body says only how it reads and
//! seeks.

use std::any::Any;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{HandleHit, HitHandler, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::watch;

use crate::disk::format::{BLOCK, BODY_HEADER_LEN};
use crate::disk::BodyReader;
use crate::error::StoreError;
use crate::io;
use crate::observer::StoreEvent;
use crate::partial::{Next, Partial, Progress};
use crate::shared::SharedBody;
use crate::tiers::Tiers;

/// A cache hit as pingora reads it.
pub enum Hit {
    /// A body held in memory.
    Memory(MemoryHit),
    /// A large body read from disk a block at a time.
    Disk(DiskHit),
    /// A body still being written.
    Partial(PartialHit),
    /// A shared tier's body, streamed without being stored locally.
    Shared(SharedStream),
}

impl Hit {
    /// As the handler pingora takes.
    pub fn boxed(self) -> HitHandler {
        Box::new(self)
    }
}

#[async_trait]
impl HandleHit for Hit {
    /// The next bytes of the body; `None` at its end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe for stored bodies: the position advances only when bytes
    /// are returned, so a call after a dropped one reads the same bytes. A
    /// body streamed from the shared tier is cancel safe as its
    /// [`SharedBody`] is (Redis's is).
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Hit::Memory(hit) => Ok(hit.read()),
            Hit::Disk(hit) => hit.read().await,
            Hit::Partial(hit) => hit.read().await,
            Hit::Shared(hit) => hit.read().await,
        }
    }

    async fn finish(
        self: Box<Self>,
        _: &'static (dyn Storage + Sync),
        _: &CacheKey,
        _: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    /// Whole bodies seek; a write in progress and a stream do not.
    fn can_seek(&self) -> bool {
        !matches!(self, Hit::Partial(_) | Hit::Shared(_))
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        match self {
            Hit::Memory(hit) => hit.seek(start, end),
            Hit::Disk(hit) => hit.seek(start, end),
            Hit::Partial(_) | Hit::Shared(_) => {
                Error::e_explain(ErrorType::InternalError, "a body in flight cannot seek")
            }
        }
    }

    /// A reader following a miss is not an access: the miss itself is
    /// admitted to the eviction manager when it commits. A shared-tier hit
    /// being stored is: nobody else admits the local copy. A body streamed
    /// without being stored is not.
    fn should_count_access(&self) -> bool {
        match self {
            Hit::Memory(_) | Hit::Disk(_) => true,
            Hit::Partial(hit) => hit.weight.is_some(),
            Hit::Shared(_) => false,
        }
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            Hit::Memory(hit) => hit.body.len(),
            Hit::Disk(hit) => hit.reader.len as usize,
            Hit::Partial(hit) => hit.weight.unwrap_or(0),
            Hit::Shared(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A byte range within a body, from a seek.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: usize,
    end: usize,
}

impl Range {
    fn whole(len: usize) -> Range {
        Range { start: 0, end: len }
    }

    fn seek(len: usize, start: usize, end: Option<usize>) -> Result<Range> {
        let end = end.unwrap_or(len).min(len);
        if start >= len && len > 0 || start > end {
            return Error::e_explain(ErrorType::InternalError, "seek out of range");
        }
        Ok(Range { start, end })
    }
}

/// A body held in memory (memory tier, or a small disk body read whole).
pub struct MemoryHit {
    body: Bytes,
    range: Range,
    done: bool,
}

impl MemoryHit {
    /// Serve `body`.
    pub fn new(body: Bytes) -> MemoryHit {
        MemoryHit {
            range: Range::whole(body.len()),
            body,
            done: false,
        }
    }

    fn read(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        self.done = true;
        Some(self.body.slice(self.range.start..self.range.end))
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.range = Range::seek(self.body.len(), start, end)?;
        self.done = false;
        Ok(())
    }
}

/// A large body read from disk a block at a time; each block's checksum is
/// checked before any of it is returned.
pub struct DiskHit {
    tiers: &'static Tiers,
    hash: u128,
    reader: BodyReader,
    range: Range,
    pos: usize,
}

impl DiskHit {
    /// Serve the body `reader` opened.
    pub fn new(tiers: &'static Tiers, hash: u128, reader: BodyReader) -> DiskHit {
        let len = reader.len as usize;
        DiskHit {
            tiers,
            hash,
            reader,
            range: Range::whole(len),
            pos: 0,
        }
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.range.end {
            return Ok(None);
        }
        let index = self.pos / BLOCK;
        let started = std::time::Instant::now();
        let block = self.reader.block_with(&self.tiers.engine, index).await;
        self.tiers
            .observe(StoreEvent::DiskLatency("read", started.elapsed()));
        let block = match block {
            Ok(block) => block,
            Err(e @ StoreError::Blocking(_)) => return Err(e.into_pingora()),
            Err(e) => {
                self.tiers.discard_at(self.hash, None, &e).await;
                return Err(e.into_pingora());
            }
        };
        self.tiers
            .observe(StoreEvent::BytesRead(block.len() as u64));
        let block_start = index * BLOCK;
        let from = self.pos - block_start;
        let to = (self.range.end - block_start).min(block.len());
        self.pos = block_start + to;
        Ok(Some(block.slice(from..to)))
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.range = Range::seek(self.reader.len as usize, start, end)?;
        self.pos = self.range.start;
        Ok(())
    }
}

/// Bytes read from a write in progress per `read_body`.
const PARTIAL_CHUNK: u64 = 64 * 1024;

/// A body still being written: read as it arrives (from memory while the
/// writer holds it there, else from the temporary file), an error if its
/// writer gives up.
pub struct PartialHit {
    progress: watch::Receiver<Progress>,
    pos: u64,
    partial: Arc<Partial>,
    /// The eviction weight to admit, for a write nobody else admits.
    weight: Option<usize>,
}

impl PartialHit {
    /// Follow `partial`.
    pub fn new(partial: Arc<Partial>) -> PartialHit {
        PartialHit {
            progress: partial.subscribe(),
            pos: 0,
            partial,
            weight: None,
        }
    }

    /// Count this read as an access of `weight` bytes: the write it
    /// follows (a shared-tier hit being stored) has no miss to admit it.
    pub fn counted(mut self, weight: usize) -> PartialHit {
        self.weight = Some(weight);
        self
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        loop {
            let readable = match *self.progress.borrow_and_update() {
                Progress::Abandoned => return Err(StoreError::WriteAbandoned.into_pingora()),
                Progress::Done(len) if self.pos >= len => return Ok(None),
                Progress::Done(len) | Progress::Writing(len) => len,
            };
            if self.pos < readable {
                let len = match self.partial.next(self.pos, readable) {
                    Next::Memory(chunk) => {
                        self.pos += chunk.len() as u64;
                        return Ok(Some(chunk));
                    }
                    Next::File(len) => len.min(PARTIAL_CHUNK) as usize,
                };
                // Bytes not held in memory are in the file, which the
                // writer handed over before making them readable.
                let file = self
                    .partial
                    .file()
                    .ok_or(StoreError::Corrupt("partial body bytes in no file"))
                    .map_err(StoreError::into_pingora)?;
                let at = BODY_HEADER_LEN as u64 + self.pos;
                let chunk = io::blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, at)
                        .map(|()| buf)
                        .map_err(|e| StoreError::Io("read partial body", e))
                })
                .await
                .map_err(StoreError::into_pingora)?;
                self.pos += len as u64;
                return Ok(Some(Bytes::from(chunk)));
            }
            if self.progress.changed().await.is_err() {
                // The writer's state went away without saying it finished.
                if !matches!(*self.progress.borrow(), Progress::Done(_)) {
                    return Err(StoreError::WriteAbandoned.into_pingora());
                }
            }
        }
    }
}

/// A shared tier's body streamed to the client without a local copy (no
/// write permit was free, or the object is over `max_object_size`). A body
/// that ends short of, or runs past, its length is an error, never a clean
/// end.
pub struct SharedStream {
    body: Box<dyn SharedBody>,
    len: u64,
    sent: u64,
    done: bool,
}

impl SharedStream {
    /// Stream `body`, which must be `len` bytes.
    pub fn new(body: Box<dyn SharedBody>, len: u64) -> SharedStream {
        SharedStream {
            body,
            len,
            sent: 0,
            done: false,
        }
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let incomplete = |why: String| Error::explain(ErrorType::ReadError, why);
        match self.body.next_chunk().await {
            Ok(Some(chunk)) => {
                self.sent += chunk.len() as u64;
                if self.sent > self.len {
                    return Err(incomplete(format!(
                        "shared body longer than its {} bytes",
                        self.len
                    )));
                }
                Ok(Some(chunk))
            }
            Ok(None) if self.sent == self.len => {
                self.done = true;
                Ok(None)
            }
            Ok(None) => Err(incomplete(format!(
                "shared body ended at {} of {} bytes",
                self.sent, self.len
            ))),
            Err(e) => Err(incomplete(e.to_string())),
        }
    }
}
