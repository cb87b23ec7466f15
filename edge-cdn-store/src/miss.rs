//! Writing a missed object: streamed to a temporary file (readable by the
//! requests collapsed behind it), committed by `finish`, abandoned — and
//! reported to readers as an error — if dropped without it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::OwnedSemaphorePermit;

use crate::catalog::Record;
use crate::disk::BodyWriter;
use crate::error::StoreError;
use crate::io;
use crate::memory::MemObject;
use crate::observer::StoreEvent;
use crate::partial::{Partial, Progress};
use crate::shared::SharedWrites;
use crate::store::TieredStore;

/// One object being written.
pub struct Miss {
    pub(crate) store: &'static TieredStore,
    pub(crate) hash: u128,
    pub(crate) partial: Arc<Partial>,
    pub(crate) writer: Option<BodyWriter>,
    pub(crate) key: Vec<u8>,
    /// What the catalog records once the object is committed.
    pub(crate) record: Option<Record>,
    /// The body so far, while it is small enough for the memory tier.
    pub(crate) small: Option<BytesMut>,
    /// The final chunk, written by `finish` with the commit: one trip to
    /// the blocking pool instead of two (for a one-chunk body, that halves
    /// the handoffs after the temp file exists).
    pub(crate) last: Option<Bytes>,
    pub(crate) write_tag: [u8; 8],
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// Remove `writer`'s temporary file off the runtime's workers (it is file
/// I/O).
fn abandon(writer: BodyWriter) {
    io::detach(move || writer.abandon());
}

#[async_trait]
impl HandleMiss for Miss {
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
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "write after failure"))?;
        let total = writer.written() + data.len() as u64;
        if total > self.store.max_object_size() {
            abandon(writer);
            return Err(StoreError::TooLarge(total).into_pingora());
        }
        if let Some(small) = &mut self.small {
            if total <= self.store.memory_max_object() {
                small.extend_from_slice(&data);
            } else {
                self.small = None;
            }
        }
        if eof {
            self.writer = Some(writer);
            self.last = Some(data);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let len = data.len() as u64;
        let (writer, result) = io::blocking(move || {
            let result = writer.write(&data);
            Ok((writer, result))
        })
        .await
        .map_err(StoreError::into_pingora)?;
        self.store
            .observe(StoreEvent::DiskLatency("write", started.elapsed()));
        match result {
            Ok(()) => {
                self.store.observe(StoreEvent::BytesWritten(len));
                self.partial.publish(Progress::Writing(writer.written()));
                self.writer = Some(writer);
                Ok(())
            }
            Err(e) => {
                self.store.observe(StoreEvent::Error("write"));
                abandon(writer);
                Err(e.into_pingora())
            }
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "finish after failure"))?;
        let store = self.store;
        let (hash, key) = (self.hash, std::mem::take(&mut self.key));
        let (internal, header) = (self.partial.internal.clone(), self.partial.header.clone());
        let last = self.last.take();
        let last_len = last.as_ref().map_or(0, |d| d.len() as u64);
        let started = std::time::Instant::now();
        let committed = io::blocking(move || {
            let mut writer = writer;
            if let Some(data) = last {
                if let Err(e) = writer.write(&data) {
                    writer.abandon();
                    return Err(e);
                }
            }
            writer.commit(store.disk(), &internal, &header, &key)
        })
        .await;
        self.store
            .observe(StoreEvent::DiskLatency("commit", started.elapsed()));
        let (body_len, meta_len) = committed.map_err(|e| {
            store.observe(StoreEvent::Error("commit"));
            e.into_pingora()
        })?;
        if last_len > 0 {
            store.observe(StoreEvent::BytesWritten(last_len));
        }
        let size = body_len + meta_len;
        store.index().insert(hash, size);
        if let Some(record) = self.record.take() {
            store.catalog().insert(record);
        }
        let held = match self.small.take() {
            Some(body) if body.len() as u64 == body_len => MemObject::new(
                self.partial.internal.clone(),
                self.partial.header.clone(),
                body.freeze(),
            ),
            _ => None,
        };
        match held.map(Arc::new) {
            Some(object) => {
                store.memory().insert(hash, object.clone());
                if store.shared_writes() == SharedWrites::WriteThrough {
                    store.share(hash, &object);
                }
            }
            None => {
                store.memory().remove(hash);
            }
        }
        self.partial.publish(Progress::Done(body_len));
        store.partials().remove(hash, self.partial.write_id);
        store.observe(StoreEvent::Insert(size));
        Ok(MissFinishType::Created(size as usize))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.write_tag)
    }
}

impl Drop for Miss {
    fn drop(&mut self) {
        // Dropped without `finish`: the write failed. Readers following it
        // must see an error, not a clean end of a truncated body.
        if let Some(writer) = self.writer.take() {
            self.partial.publish(Progress::Abandoned);
            self.store
                .partials()
                .remove(self.hash, self.partial.write_id);
            abandon(writer);
        } else if !matches!(*self.partial.subscribe().borrow(), Progress::Done(_)) {
            self.partial.publish(Progress::Abandoned);
            self.store
                .partials()
                .remove(self.hash, self.partial.write_id);
        }
    }
}
