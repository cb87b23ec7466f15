//! Storing blocks off the path of the bytes going to clients.
//!
//! Writing a block goes through the store's blocking pool; done inline, it
//! would hold every chunk of an origin response until the chunk before it
//! is on disk. A [`Keeper`] hands chunks to a task that stores them in
//! order, so reading the origin and feeding the client go on meanwhile.
//! A run fetched for a waiting client holds its chunks until the client
//! has its first bytes: on a busy core the store's writes (blocking-pool
//! threads) would otherwise delay them.
//!
//! The first request for a large object gets it whole from the origin, on
//! pingora's ordinary path (it is too large to store whole); a [`Tee`]
//! keeps those bytes as blocks too, so the object is not fetched again.
//! pingora's body filter cannot wait, so a tee that falls behind stops
//! rather than slow the client or buffer without bound, and the block it
//! was writing is not stored.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::serve::Storing;
use super::Engine;

/// Chunks in flight between a response and the task storing them.
const DEPTH: usize = 64;

/// Hands an object's bytes, in order, to the task storing its blocks.
/// Dropped, the task stores what it was given and ends; a block left
/// incomplete is not stored.
pub(super) struct Keeper {
    chunks: Option<mpsc::Sender<(u64, Bytes)>>,
    /// While held, the task queues chunks without storing them.
    hold: Option<oneshot::Sender<()>>,
}

impl Keeper {
    /// Start the task storing `storing`'s blocks. `held`: it only queues
    /// them until [`Keeper::release`] (or a full queue, or the keeper's
    /// end), so that a client waiting for its first byte does not share
    /// the core with the store's writes.
    pub(super) fn start(engine: &'static Engine, mut storing: Storing, held: bool) -> Keeper {
        let (chunks, mut receiver) = mpsc::channel::<(u64, Bytes)>(DEPTH);
        let (hold, released) = oneshot::channel();
        tokio::spawn(async move {
            if held {
                // Released or dropped: store from here on.
                let _ = released.await;
            }
            while let Some((at, chunk)) = receiver.recv().await {
                storing.store(engine, at, chunk).await;
            }
        });
        Keeper {
            chunks: Some(chunks),
            hold: held.then_some(hold),
        }
    }

    /// Store from now on what a held keeper queued.
    pub(super) fn release(&mut self) {
        self.hold = None;
    }

    /// Store `chunk`, the object's bytes from `at`, waiting only while
    /// the task is `DEPTH` chunks behind.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may lose `chunk`: drop the keeper too, so no
    /// block is stored with a gap.
    pub(super) async fn keep(&mut self, at: u64, chunk: Bytes) {
        let Some(chunks) = &self.chunks else {
            return;
        };
        if chunks.capacity() == 0 {
            // A held queue must not hold its reader up.
            self.hold = None;
        }
        if chunks.send((at, chunk)).await.is_err() {
            self.chunks = None;
        }
    }

    /// Store `chunk` if the task has room, never waiting; otherwise stop
    /// storing from here on.
    fn offer(&mut self, at: u64, chunk: Bytes) {
        let Some(chunks) = &self.chunks else {
            return;
        };
        if chunks.try_send((at, chunk)).is_err() {
            self.chunks = None;
        }
    }
}

/// Stores a whole response's blocks as its body passes to its client.
pub struct Tee {
    keeper: Keeper,
    /// The object's offset of the next body byte.
    at: u64,
}

impl Tee {
    /// A tee for a body whose first byte is the object's first.
    pub(super) fn new(keeper: Keeper) -> Tee {
        Tee { keeper, at: 0 }
    }

    /// Pass on the next body bytes. Never waits.
    pub fn feed(&mut self, chunk: &Bytes) {
        self.keeper.offer(self.at, chunk.clone());
        self.at += chunk.len() as u64;
    }
}
