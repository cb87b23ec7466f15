//! The one seam for file I/O a request waits for.
//!
//! A lookup's read of a segment ring entry, and each block of a body
//! streamed from its file, go through [`Engine`]: io_uring where the
//! kernel has it (`crate::uring`), else the blocking pool. Every other
//! file operation the store makes on behalf of a request runs through
//! [`blocking`] (or [`detach`], when nobody waits for it), never on a
//! runtime worker, except the commit of a held miss, which runs on the
//! store's commit thread (`crate::commit`). A task that panics or is
//! cancelled by a runtime shutting down becomes [`StoreError::Blocking`]
//! here, in one place.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::StoreError;
use crate::uring::{Failed, Rings};

/// Which engine does a disk hit's reads, as configured
/// ([`StoreConfig::io_engine`](crate::StoreConfig::io_engine)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoEngineChoice {
    /// io_uring if the kernel has it, else the blocking pool.
    #[default]
    Auto,
    /// io_uring, or the store does not open.
    IoUring,
    /// tokio's blocking pool, a thread hand-off per read.
    BlockingPool,
}

/// The engine a store does a disk hit's reads with: what
/// [`IoEngineChoice`] came to on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring: a read of cached pages completes in its submission.
    IoUring,
    /// tokio's blocking pool.
    BlockingPool,
}

impl IoEngine {
    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IoEngine::IoUring => "io_uring",
            IoEngine::BlockingPool => "blocking_pool",
        }
    }
}

/// A disk hit's reads (ring entries, body blocks), on the engine chosen
/// when the store opened.
pub enum Engine {
    /// Through the store's io_uring rings.
    IoUring(Rings),
    /// On tokio's blocking pool.
    BlockingPool,
}

impl Engine {
    /// The engine `choice` asks for on this kernel, logged: `Auto` falls
    /// back to the blocking pool (saying why) where io_uring cannot be set
    /// up; `IoUring` is then an error.
    pub fn open(choice: IoEngineChoice) -> Result<Engine, StoreError> {
        let engine = match choice {
            IoEngineChoice::BlockingPool => Engine::BlockingPool,
            IoEngineChoice::IoUring => Engine::IoUring(
                Rings::new().map_err(|e| StoreError::Io("set up io_uring (io_engine)", e))?,
            ),
            IoEngineChoice::Auto => match Rings::new() {
                Ok(rings) => Engine::IoUring(rings),
                Err(error) => {
                    tracing::warn!(
                        target: "edge_cdn_store",
                        %error,
                        "io_uring is not available: disk hits read on the blocking pool"
                    );
                    Engine::BlockingPool
                }
            },
        };
        tracing::info!(
            target: "edge_cdn_store",
            engine = engine.kind().as_str(),
            "disk hits read through"
        );
        Ok(engine)
    }

    /// Which engine this is.
    pub fn kind(&self) -> IoEngine {
        match self {
            Engine::IoUring(_) => IoEngine::IoUring,
            Engine::BlockingPool => IoEngine::BlockingPool,
        }
    }

    /// Read `len` bytes of `file` at `offset` (fewer only at its end);
    /// `what` names the read in an error. A read io_uring does not carry
    /// out (its queue full, the kernel short of memory, the read
    /// cancelled) is done on the blocking pool instead: only an error of
    /// the file's own is an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read dropped early finishes in the kernel or on the
    /// pool, and its buffer is freed there.
    pub async fn read_at(
        &self,
        file: &Arc<File>,
        offset: u64,
        len: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, StoreError> {
        if let Engine::IoUring(rings) = self {
            match rings.read_at(file, offset, len).await {
                Ok(buf) => return Ok(buf),
                Err(Failed::Done(e)) => return Err(StoreError::Io(what, e)),
                // The engine's failure, not the file's: the pool does it.
                Err(Failed::Submit(error)) => {
                    tracing::debug!(target: "edge_cdn_store", what, %error, "io_uring did not take it: on the blocking pool instead");
                }
            }
        }
        let file = file.clone();
        blocking(move || read_fully(&file, offset, len).map_err(|e| StoreError::Io(what, e))).await
    }
}

/// `len` bytes of `file` at `offset`, fewer only at its end. Blocking.
fn read_fully(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Run `work` on the blocking pool and wait for its result.
///
/// # Cancel safety
///
/// `work` runs to its end even if the returned future is dropped; its
/// result is then dropped where the task finished, normally on the blocking
/// pool. So a closure must leave the store consistent by itself: whatever
/// must happen after its I/O (installing a committed object, telling
/// readers) belongs inside it, not after the `.await`.
pub async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await?
}

/// Run `work` on the blocking pool without waiting for it: for cleanup
/// that is file I/O but has no result, such as removing an abandoned
/// write's temporary file. Outside a runtime (a store dropped after its
/// runtime) it runs here, on the calling thread. A runtime shutting down
/// may drop `work` without running it, so cleanup that must happen belongs
/// in the `Drop` of what `work` owns (as `BodyWriter`'s removal of its
/// temporary file does).
pub fn detach<F>(work: F)
where
    F: FnOnce() + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(work)),
        Err(_) => work(),
    }
}
