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
    /// A blocking I/O task panicked, or was cancelled by the runtime
    /// shutting down.
    #[error("disk task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// As a pingora error, for the `Storage` trait.
    pub fn into_pingora(self) -> Box<Error> {
        let kind = match &self {
            StoreError::Io(..) => ErrorType::FileReadError,
            _ => ErrorType::InternalError,
        };
        Error::explain(kind, self.to_string())
    }
}
