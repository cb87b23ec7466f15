//! Admission of writes to disk, and a write in flight.
//!
//! At most `write_concurrency` objects are written at once; beyond that a
//! write is refused ([`StoreError::Saturated`]) rather than queued, so an
//! overloaded disk costs a response its caching, never its latency. Every
//! writer — a miss, a shared-tier fill — is admitted by [`Writers::admit`],
//! and a [`Write`] can only be begun from the [`Admitted`] it returns: one
//! admission path, enforced by the types.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::disk::format::MetaBlobs;
use crate::disk::{BodyWriter, DiskTier};
use crate::error::StoreError;
use crate::io;

/// The permits for writes in flight.
pub struct Writers {
    permits: Arc<Semaphore>,
    concurrency: usize,
}

impl Writers {
    /// Room for `concurrency` writes at once.
    pub fn new(concurrency: usize) -> Writers {
        Writers {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    /// Leave to write one object, or [`StoreError::Saturated`] if
    /// `concurrency` writes are in flight (or the store is closed).
    pub fn admit(&self) -> Result<Admitted, StoreError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map(Admitted)
            .map_err(|_| StoreError::Saturated)
    }

    /// Admit no more writes, and wait (blocking, at most `wait`) until
    /// every write in flight has finished or given up: whether it did.
    pub fn close(&self, wait: std::time::Duration) -> bool {
        self.permits.close();
        let deadline = std::time::Instant::now() + wait;
        while self.permits.available_permits() < self.concurrency {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }
}

/// Leave to write one object; dropping it unused gives the permit back.
pub struct Admitted(OwnedSemaphorePermit);

impl Admitted {
    /// Start writing `hash`'s body to a temporary file. Blocking: run it
    /// through [`io::blocking`]. On failure the permit comes back with the
    /// error, for a writer that goes on holding the body for its readers.
    pub fn begin(self, disk: &DiskTier, hash: u128) -> Result<Write, (StoreError, Admitted)> {
        match disk.begin(hash) {
            Ok(body) => Ok(Write {
                body,
                permit: self.0,
            }),
            Err(error) => Err((error, self)),
        }
    }
}

/// An object being written, holding its write permit.
///
/// Dropped before [`Write::commit`] it is abandoned: its temporary file is
/// removed and its permit released, wherever it is dropped. Removing the
/// file is file I/O, so async code gives it up with [`Write::abandon`].
pub struct Write {
    body: BodyWriter,
    permit: OwnedSemaphorePermit,
}

impl Write {
    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.body.written()
    }

    /// The temporary body file, for readers following the write.
    /// Blocking.
    pub fn share(&self) -> Result<std::fs::File, StoreError> {
        self.body.share()
    }

    /// Append body bytes. Blocking.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.body.write(data)
    }

    /// Commit the object with its meta file's `blobs`; returns the body
    /// and meta file lengths, and the permit, which the caller holds until
    /// the object is installed (so a store that waits for every permit
    /// back, as [`Writers::close`] does, sees no half-installed object).
    /// Blocking. Not committed, the permit is released.
    pub fn commit(
        self,
        disk: &DiskTier,
        blobs: MetaBlobs<'_>,
    ) -> Result<((u64, u64), Admitted), StoreError> {
        let Write { body, permit } = self;
        Ok((body.commit(disk, blobs)?, Admitted(permit)))
    }

    /// Stop writing, keeping the permit: the temporary file is removed
    /// (blocking), and the permit, held until the body that failed to
    /// store has gone to its readers, bounds how many such bodies memory
    /// holds at once.
    pub fn discard(self) -> Admitted {
        let Write { body, permit } = self;
        drop(body);
        Admitted(permit)
    }

    /// Give up from async code: the permit is released now, so the next
    /// writer need not wait, and the temporary file is removed on the
    /// blocking pool.
    pub fn abandon(self) {
        let Write { body, permit } = self;
        drop(permit);
        io::detach(move || drop(body));
    }
}
