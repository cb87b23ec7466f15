//! The one seam for blocking file I/O.
//!
//! Every file operation the store makes on behalf of a request runs through
//! [`blocking`] (or [`detach`], when nobody waits for it), never on a
//! runtime worker, except the commit of a held miss, which runs on the
//! store's commit thread (`crate::commit`). Today this is tokio's blocking
//! pool; it is where a faster engine (io_uring, as foyer's `IoEngine` does)
//! plugs in later, without touching the callers. A task that panics or is
//! cancelled by a runtime shutting down becomes [`StoreError::Blocking`]
//! here, in one place.

use crate::error::StoreError;

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
