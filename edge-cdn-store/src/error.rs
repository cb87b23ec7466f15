//! The store's errors, and their mapping onto pingora's.

use pingora_error::{Error, ErrorType};

/// What can go wrong inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file failed a format or checksum check; it is removed, and the
    /// lookup is a miss.
    #[error("corrupt store file: {0}")]
    Corrupt(&'static str),
    /// The disk is busy: this object is not stored (the response is still served).
    #[error("disk I/O is saturated; not storing this object")]
    Saturated,
    /// The object is larger than the store takes.
    #[error("object of {0} bytes is over the store's maximum")]
    TooLarge(u64),
    /// The writer of an object being streamed went away before finishing.
    #[error("the write this read was following was abandoned")]
    WriteAbandoned,
    /// A filesystem operation failed.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// The store's filesystem has less room than `min_free_percent`
    /// leaves: a new object is not begun (the response is still served).
    #[error("{free} of {total} bytes free on the store's filesystem, under min_free_percent")]
    LowSpace {
        /// Bytes free.
        free: u64,
        /// The filesystem's size.
        total: u64,
    },
    /// The purge catalog's database failed to read or write. An object it
    /// could not record is not kept (no purge could find it); one it could
    /// not forget is gone from disk regardless, and its leftover entry is
    /// reconciled away at the next start.
    #[error("purge catalog: {0}")]
    Catalog(#[source] fjall::Error),
    /// A blocking I/O task panicked, or was cancelled by the runtime
    /// shutting down.
    #[error("disk task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// A commit panicked, or came after the store closed its commit thread.
    #[error("the commit did not run: it panicked, or the store was closed")]
    Stopped,
}

/// Why an object could not be stored. The response it belonged to is
/// served whole all the same; only the copy on disk is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    /// The filesystem is full (`ENOSPC`, `EDQUOT`), or under
    /// `min_free_percent` before the write began.
    NoSpace,
    /// The store's directory went missing and could not be recreated.
    MissingDir,
    /// The purge catalog could not record the object: it was removed
    /// again, since no purge could have found it.
    Catalog,
    /// Any other failure of the write.
    Io,
}

impl WriteFailure {
    /// Every reason, for exporters that resolve their labels up front.
    pub const ALL: [WriteFailure; 4] = [
        WriteFailure::NoSpace,
        WriteFailure::MissingDir,
        WriteFailure::Catalog,
        WriteFailure::Io,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteFailure::NoSpace => "no-space",
            WriteFailure::MissingDir => "missing-dir",
            WriteFailure::Catalog => "catalog",
            WriteFailure::Io => "io",
        }
    }
}

impl StoreError {
    /// Why a write that failed with this error stored nothing.
    pub fn write_failure(&self) -> WriteFailure {
        use std::io::ErrorKind;
        match self {
            StoreError::LowSpace { .. } => WriteFailure::NoSpace,
            StoreError::Io(_, e) => match e.kind() {
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded => WriteFailure::NoSpace,
                ErrorKind::NotFound => WriteFailure::MissingDir,
                _ => WriteFailure::Io,
            },
            StoreError::Catalog(_) => WriteFailure::Catalog,
            _ => WriteFailure::Io,
        }
    }

    /// As a pingora error, for the `Storage` trait.
    pub fn into_pingora(self) -> Box<Error> {
        let kind = match &self {
            StoreError::Io(..) => ErrorType::FileReadError,
            _ => ErrorType::InternalError,
        };
        Error::explain(kind, self.to_string())
    }
}
