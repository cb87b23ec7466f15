//! The commit thread: where a held miss (a whole body up to 256 KiB) that
//! the segment ring takes is appended and installed, instead of one trip
//! to tokio's blocking pool per miss.
//!
//! A trip to the blocking pool wakes a pool thread (a futex and a switch)
//! for every miss, and on a busy proxy core those wake-ups cost about as
//! much as the commit itself. Here the misses of one scheduler tick share
//! one wake-up: the first commit queued yields once before waking the
//! thread, so the other misses ready on its worker queue theirs meanwhile,
//! and the thread runs everything queued before it sleeps again. Objects
//! kept in files, whose commits create and rename files and may `fsync`,
//! stay on the blocking pool, so they never hold appends up (one that the
//! ring refuses at the last moment, its next region not yet free, is
//! written to files here).
//!
//! After each round (every job it took at one wake-up) the thread runs its
//! `after_round` work: the store's flushes the catalog's journal there, so
//! a round's objects share one `write` (`crate::catalog::Journal`).
//!
//! A second thread of the same kind carries purges out on disk, after
//! they were answered ([`Committer::queue`], `crate::purging`).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::StoreError;

/// A unit of work for the thread.
type Job = Box<dyn FnOnce() + Send>;

/// What the store and the thread share.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// The thread is waiting for jobs.
    idle: bool,
    /// No more jobs are taken; the thread runs what it has and ends.
    stopped: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let _queue = self.queue();
        self.ready.notify_one();
    }
}

/// A store's commit thread.
pub struct Committer {
    shared: Arc<Shared>,
}

/// Wakes the thread when dropped: whether the yield before it completed
/// or the caller's future was dropped meanwhile, a queued job runs.
struct WakeOnDrop<'a>(&'a Shared);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.wake();
    }
}

impl Committer {
    /// Start the thread, named `name`, running `after_round` after each
    /// round of jobs.
    pub fn start(
        name: &str,
        after_round: impl Fn() + Send + 'static,
    ) -> Result<Committer, StoreError> {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&for_thread, after_round))
            .map_err(|e| StoreError::Io("start the commit thread", e))?;
        Ok(Committer { shared })
    }

    /// Run `work` on the commit thread and wait for its result. Blocking
    /// work belongs here only if it is short: the thread runs one job at
    /// a time.
    ///
    /// # Cancel safety
    ///
    /// Once called, `work` runs to its end whether or not the returned
    /// future is awaited or dropped (as with the blocking pool, see
    /// `crate::io::blocking`); its result is then dropped on the thread.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (sent, result) = tokio::sync::oneshot::channel();
        let first = self
            .push(move || {
                let _ = sent.send(work());
            })
            .map_err(|_| StoreError::Stopped)?;
        if first {
            let _wake = WakeOnDrop(&self.shared);
            tokio::task::yield_now().await;
        }
        result.await.map_err(|_| StoreError::Stopped)
    }

    /// Queue `work` to run on the thread, and wake it; no one waits for
    /// it. Gives `work` back if the thread takes no more jobs.
    pub fn queue<F: FnOnce() + Send + 'static>(&self, work: F) -> Result<(), F> {
        if self.push(work)? {
            self.shared.wake();
        }
        Ok(())
    }

    /// Queue `work`; returns whether it is the first for a thread that
    /// waits (the caller wakes it), or `work` if the thread is stopped.
    fn push<F: FnOnce() + Send + 'static>(&self, work: F) -> Result<bool, F> {
        let mut queue = self.shared.queue();
        if queue.stopped {
            return Err(work);
        }
        queue.jobs.push(Box::new(work));
        Ok(queue.idle && queue.jobs.len() == 1)
    }

    /// Take no more jobs; the thread runs those queued and ends.
    pub fn stop(&self) {
        self.shared.queue().stopped = true;
        self.shared.ready.notify_one();
    }
}

/// The thread: run every queued job, in order, then `after_round`, until
/// stopped. A job that panics is dropped (its caller sees
/// [`StoreError::Stopped`]); the thread goes on.
fn run(shared: &Shared, after_round: impl Fn()) {
    loop {
        let jobs = {
            let mut queue = shared.queue();
            while queue.jobs.is_empty() {
                if queue.stopped {
                    return;
                }
                queue.idle = true;
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            queue.idle = false;
            std::mem::take(&mut queue.jobs)
        };
        for job in jobs {
            if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!(target: "edge_cdn_store", "a commit panicked; its object is not stored");
            }
        }
        if std::panic::catch_unwind(AssertUnwindSafe(&after_round)).is_err() {
            tracing::error!(target: "edge_cdn_store", "the work after a round of commits panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_in_order_survive_a_panic_and_a_dropped_caller() {
        let ran = Arc::new(AtomicUsize::new(0));
        // What had run when a round last ended.
        let seen = Arc::new(AtomicUsize::new(0));
        let after_round = {
            let (ran, seen) = (ran.clone(), seen.clone());
            move || seen.store(ran.load(Ordering::SeqCst), Ordering::SeqCst)
        };
        let committer: &'static Committer = Box::leak(Box::new(
            Committer::start("test-commit", after_round).unwrap(),
        ));
        let many: Vec<_> = (0..100)
            .map(|i| {
                let ran = ran.clone();
                tokio::spawn(async move {
                    committer
                        .run(move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                            i
                        })
                        .await
                })
            })
            .collect();
        for (i, task) in many.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().unwrap(), i);
        }
        let panicked = committer.run(|| panic!("a failing commit")).await;
        assert!(matches!(panicked, Err(StoreError::Stopped)));
        // A caller dropped before its job ran: the job still runs.
        let dropped = {
            let ran = ran.clone();
            committer.run(move || ran.fetch_add(1, Ordering::SeqCst))
        };
        drop(tokio::time::timeout(std::time::Duration::ZERO, dropped).await);
        assert_eq!(committer.run(|| 7).await.unwrap(), 7);
        assert_eq!(ran.load(Ordering::SeqCst), 101);
        // The round's work follows its jobs (a job's caller may hear back
        // before it runs).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.load(Ordering::SeqCst) != 101 {
            assert!(
                std::time::Instant::now() < deadline,
                "no work after the last round"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        committer.stop();
        assert!(matches!(
            committer.run(|| 0).await,
            Err(StoreError::Stopped)
        ));
    }
}
