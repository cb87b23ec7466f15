//! Storing a whole response's blocks as it passes to its client.
//!
//! The first request for a large object gets it whole from the origin, on
//! pingora's ordinary path (it is too large to store whole). Its bytes go
//! by anyway: the tee stores them as blocks, so the object is not fetched
//! again. pingora's body filter is synchronous, so the bytes cross to a
//! task through a bounded channel; when the task falls behind, the tee
//! stops rather than slow the client or buffer without bound, and the
//! block it was writing is not stored.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::serve::Storing;
use super::Engine;

/// Chunks in flight between the response and the task storing them.
const DEPTH: usize = 64;

/// Feeds a response's body to the task storing its blocks.
pub struct Tee {
    chunks: Option<mpsc::Sender<Bytes>>,
}

impl Tee {
    /// Start the task storing `storing`'s blocks from the body's first
    /// byte; `last` is the object's last block.
    pub(super) fn start(engine: &'static Engine, mut storing: Storing, last: u64) -> Tee {
        let (chunks, mut receiver) = mpsc::channel::<Bytes>(DEPTH);
        tokio::spawn(async move {
            let mut at = 0;
            while let Some(chunk) = receiver.recv().await {
                let len = chunk.len() as u64;
                storing.store(engine, at, chunk, last).await;
                at += len;
            }
        });
        Tee {
            chunks: Some(chunks),
        }
    }

    /// Pass on the next body bytes. Never waits: if the task is behind,
    /// the tee stops here.
    pub fn feed(&mut self, chunk: &Bytes) {
        let Some(chunks) = &self.chunks else {
            return;
        };
        if chunks.try_send(chunk.clone()).is_err() {
            self.chunks = None;
        }
    }
}
