//! Reads through io_uring, with no trip to a thread pool when the bytes are
//! in the page cache.
//!
//! A read is pushed on one of a few rings and submitted by the task that
//! wants it, on its own thread. A buffered read of cached pages completes
//! inside that submission (the kernel tries it without blocking first), so
//! the task has its bytes without a context switch, where a blocking-pool
//! trip costs two. A read the kernel must wait for (pages not cached)
//! completes later: each ring has an eventfd, and a `store-uring` thread
//! blocked on it reaps those completions and wakes their tasks. The
//! eventfd is switched on only while a read is left in the kernel after
//! its submission, so a read completed inside it wakes no thread. So the
//! tokio worker never blocks on the disk.
//!
//! Everything the kernel reads into or from (the buffer, the file) is owned
//! by the ring's table of operations until the kernel has completed the
//! operation, not by the future waiting for it: a future dropped early
//! leaves its operation there, marked abandoned, to be freed when it
//! completes. A ring dropped with operations in the kernel cancels them and
//! waits for them; if that fails, their buffers are leaked rather than
//! freed under the kernel.
//!
//! This is `foyer`'s and `tokio-uring`'s shape with less of it: reads only
//! (small writes are batched on the store's commit thread already, and
//! large bodies streamed into files through io_uring measured slower than
//! the blocking pool here, likely because ext4's buffered writes go to
//! io_uring's kernel workers; `docs/benchmarks.md`), and rings shared by
//! the workers (picked per thread) rather than one per runtime, because
//! pingora runs several runtimes and a store outlives none of them.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types, IoUring, Probe};

/// Submission queue entries per ring (the completion queue has twice as
/// many, and the kernel keeps overflowing completions rather than drop
/// them).
const ENTRIES: u32 = 256;

/// The most rings, whatever the number of CPUs: one per worker thread
/// spreads the lock, more would only cost reaper threads.
const MAX_RINGS: usize = 4;

/// How often a reaper looks at its ring unprompted, to offer the kernel
/// entries a submission left queued.
const RESUBMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The store's io_uring rings.
pub struct Rings {
    rings: Vec<Arc<Ring>>,
}

impl Rings {
    /// One ring per CPU (at most [`MAX_RINGS`]), each with its reaper
    /// thread. Fails if the kernel has no io_uring (older than 5.8, or
    /// switched off by `kernel.io_uring_disabled` or a seccomp filter) or
    /// lacks what this needs: the caller then reads on the blocking pool.
    pub fn new() -> io::Result<Rings> {
        let count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_RINGS);
        // Each ring joins `rings` as it starts, so a failure of a later one
        // stops the reapers of those before it (`Rings`' drop).
        let mut rings = Rings {
            rings: Vec::with_capacity(count),
        };
        for i in 0..count {
            rings.rings.push(Ring::new()?.reap_on_thread(i)?);
        }
        Ok(rings)
    }

    /// Read `len` bytes of `file` at `offset`: fewer only at the end of the
    /// file.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read dropped before it completes is left to the
    /// kernel, and its buffer freed when it has.
    pub async fn read_at(
        &self,
        file: &Arc<File>,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, Failed> {
        let ring = self.ring();
        let mut buf = vec![0u8; len];
        let (mut filled, mut retries) = (0, Retries::default());
        while filled < len {
            let at = offset + filled as u64;
            let submitted = ring.submit(file, at, buf, filled).map_err(Failed::Submit)?;
            let (back, read) = submitted.await;
            buf = back;
            match retries.judge(read)? {
                Some(0) => break,
                Some(n) => filled += n,
                None => {}
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// The ring this thread submits to.
    fn ring(&self) -> &Arc<Ring> {
        &self.rings[this_thread() % self.rings.len()]
    }
}

/// An operation the table lost: never, since an operation is in flight or
/// done until its future takes it. Reported as `ECANCELED`, which
/// [`judged`] takes for the engine's failure, not the file's.
fn lost() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// How often an operation the kernel answered `EINTR` or `EAGAIN` is
/// tried again before it is the engine's failure.
const RETRIES: u8 = 3;

/// The transient failures one read has met.
#[derive(Default)]
struct Retries(u8);

impl Retries {
    /// A completed operation's bytes, `None` to try it again, or why it
    /// failed.
    fn judge(&mut self, result: io::Result<usize>) -> Result<Option<usize>, Failed> {
        match result {
            Ok(n) => Ok(Some(n)),
            Err(e) if transient(&e) && self.0 < RETRIES => {
                self.0 += 1;
                Ok(None)
            }
            Err(e) if transient(&e) => Err(Failed::Submit(e)),
            Err(e) => Err(judged(e)),
        }
    }
}

/// A submission that may succeed if tried again shortly.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
    )
}

/// Whose failure a completed operation's error is: cancelled (its thread
/// exited, or the ring went away), a bad address, or io_uring short of
/// memory for the read's own state is the engine's, and says nothing
/// about the file; anything else is the file's.
fn judged(e: io::Error) -> Failed {
    match e.raw_os_error() {
        Some(libc::ECANCELED | libc::EFAULT | libc::ENOMEM) => Failed::Submit(e),
        _ => Failed::Done(e),
    }
}

impl Drop for Rings {
    /// The reapers stop; each ring goes when the last read on it has.
    fn drop(&mut self) {
        for ring in self.rings.iter() {
            ring.stopping.store(true, Ordering::Release);
            ring.signal();
        }
    }
}

/// Why a read through the rings failed.
#[derive(Debug)]
pub enum Failed {
    /// The ring did not carry it out: the file is not at fault.
    Submit(io::Error),
    /// The kernel read the file and failed.
    Done(io::Error),
}

/// Which ring this thread submits to: threads take turns, so a few workers
/// spread over the rings.
fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

/// One io_uring instance and what its operations own.
struct Ring {
    state: Mutex<State>,
    /// Signalled by the kernel for completions while reads are in flight
    /// (see [`State::settle`]), and by [`Rings`]'s drop to stop the reaper.
    eventfd: OwnedFd,
    stopping: AtomicBool,
}

struct State {
    uring: IoUring,
    /// Operations by their `user_data`.
    ops: Vec<Op>,
    /// Indices of `ops` free for reuse.
    free: Vec<usize>,
    /// Operations in the kernel (`Op::InFlight`).
    in_flight: usize,
}

enum Op {
    Free,
    /// In the kernel: it reads into `buf` from `_file`'s descriptor, so
    /// both stay here until it completes.
    InFlight {
        buf: Vec<u8>,
        _file: Arc<File>,
        waker: Option<Waker>,
        /// Its future was dropped: free it when it completes.
        abandoned: bool,
    },
    /// Completed: the buffer and the kernel's result, for its future.
    Done {
        buf: Vec<u8>,
        result: i32,
    },
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let mut uring = IoUring::new(ENTRIES)?;
        let mut probe = Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        // `Tee` stands for Linux 5.8, whose completion queue has the flags
        // word the eventfd switch (`settle`) writes: before it, that word
        // is not there, and writing it would corrupt the submission queue.
        for code in [
            opcode::Read::CODE,
            opcode::AsyncCancel::CODE,
            opcode::Tee::CODE,
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring has no operation {code}"),
                ));
            }
        }
        // SAFETY: eventfd has no memory-safety preconditions; its result is
        // checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        uring.completion().disable_eventfd();
        Ok(Ring {
            state: Mutex::new(State {
                uring,
                ops: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
            }),
            eventfd,
            stopping: AtomicBool::new(false),
        })
    }

    /// Start the thread that reaps what completes asynchronously.
    fn reap_on_thread(self, i: usize) -> io::Result<Arc<Ring>> {
        let ring = Arc::new(self);
        let reaper = ring.clone();
        std::thread::Builder::new()
            .name(format!("store-uring-{i}"))
            .spawn(move || {
                let mut warned = false;
                while !reaper.stopping.load(Ordering::Acquire) {
                    if !reaper.wait() {
                        // Never expected; the look below still collects
                        // what completes, every RESUBMIT_EVERY, so go on.
                        if !std::mem::replace(&mut warned, true) {
                            tracing::warn!(
                                target: "edge_cdn_store",
                                error = %io::Error::last_os_error(),
                                "io_uring reaper cannot wait on its eventfd; looking every 100 ms"
                            );
                        }
                        std::thread::sleep(RESUBMIT_EVERY);
                    }
                    let woken = reaper.lock().settle();
                    wake(woken);
                }
            })?;
        Ok(ring)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block until the eventfd is signalled or [`RESUBMIT_EVERY`] has
    /// passed; false if it cannot be waited on.
    fn wait(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.eventfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = RESUBMIT_EVERY.as_millis() as libc::c_int;
        let interrupted = || io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        // SAFETY: one `pollfd`, which `poll` points at.
        match unsafe { libc::poll(&mut poll, 1, timeout) } {
            0 => return true,
            n if n < 0 => return interrupted(),
            _ => {}
        }
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into `count`, which has 8.
        let n = unsafe { libc::read(self.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        n == 8 || interrupted()
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes the 8 bytes of `one`. A full counter (never, at
        // one write per drop) would only leave the reaper awake already.
        unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// Push a read of `file` at `offset` into `buf[start..]` and submit
    /// it; its completion is what the returned future waits for.
    fn submit(
        self: &Arc<Ring>,
        file: &Arc<File>,
        offset: u64,
        buf: Vec<u8>,
        start: usize,
    ) -> io::Result<Submitted> {
        let mut state = self.lock();
        let mut submitted = self.queue(&mut state, file, offset, buf, start)?;
        if let Err(e) = state.uring.submit() {
            // The entry stays queued and may yet run (a later settle
            // submits it): given up here, it is freed when it completes,
            // and the caller reads on the blocking pool at once.
            let waker = state.abandon(submitted.id);
            submitted.done = true;
            drop(state);
            drop(waker);
            return Err(e);
        }
        let woken = state.settle();
        drop(state);
        wake(woken);
        Ok(submitted)
    }

    /// Push a read of `file` at `offset` into `buf[start..]` on `state`'s
    /// queue, not submitted.
    fn queue(
        self: &Arc<Ring>,
        state: &mut State,
        file: &Arc<File>,
        offset: u64,
        mut buf: Vec<u8>,
        start: usize,
    ) -> io::Result<Submitted> {
        // Beyond what the completion queue holds, completions would wait
        // in the kernel's overflow list: the caller goes to the pool.
        if state.in_flight >= state.uring.completion().capacity() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "io_uring completion queue full",
            ));
        }
        let fd = types::Fd(file.as_raw_fd());
        let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
        // The heap buffer does not move when `buf` is moved into the table.
        // SAFETY: `start <= buf.len()`, so the pointer is in the buffer or
        // one past its end (with `len` 0).
        let at = unsafe { buf.as_mut_ptr().add(start) };
        let entry = opcode::Read::new(fd, at, len).offset(offset).build();
        let id = state.free_id();
        let entry = entry.user_data(id as u64);
        if let Err(e) = state.push(&entry) {
            state.free.push(id);
            return Err(e);
        }
        state.ops[id] = Op::InFlight {
            buf,
            _file: file.clone(),
            waker: None,
            abandoned: false,
        };
        state.in_flight += 1;
        Ok(Submitted {
            ring: self.clone(),
            id,
            done: false,
        })
    }
}

impl State {
    /// Queue `entry`, making room by submitting what is queued if the
    /// queue is full.
    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: what the entry points at (a buffer and a file held in
            // `ops`) lives until its completion is reaped.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "io_uring submission queue full",
        ))
    }

    /// [`State::reap`], and have the eventfd signal completions exactly
    /// while operations are in the kernel: switched on before a last reap,
    /// so none completing meanwhile goes unsignalled, and off once none
    /// is left, so a read completed inside its submission wakes no reaper.
    /// Entries a submission left queued (the kernel may take fewer than
    /// offered when short of memory) are offered again first, and
    /// completions the kernel kept aside when the completion queue was full
    /// are fetched. Returns the wakers of the futures whose operations
    /// completed: wake them once the lock is released.
    #[must_use]
    fn settle(&mut self) -> Vec<Waker> {
        let pending = {
            let submission = self.uring.submission();
            !submission.is_empty() || submission.cq_overflow()
        };
        if pending {
            // Failing again leaves them for the next settle.
            let _ = self.uring.submit();
        }
        let mut woken = Vec::new();
        self.reap(&mut woken);
        let disabled = self.uring.completion().eventfd_disabled();
        if self.in_flight > 0 && disabled {
            self.uring.completion().enable_eventfd();
            self.reap(&mut woken);
        } else if self.in_flight == 0 && !disabled {
            self.uring.completion().disable_eventfd();
        }
        woken
    }

    /// An id whose slot is free. An id on the free list whose slot is not
    /// (never, by construction) is dropped from it rather than reused: its
    /// buffer may still be the kernel's.
    fn free_id(&mut self) -> usize {
        while let Some(id) = self.free.pop() {
            if matches!(self.ops[id], Op::Free) {
                return id;
            }
        }
        self.ops.push(Op::Free);
        self.ops.len() - 1
    }

    /// Take what has completed: results for their futures (their wakers
    /// into `woken`), and abandoned operations freed.
    fn reap(&mut self, woken: &mut Vec<Waker>) {
        let State {
            uring,
            ops,
            free,
            in_flight,
        } = self;
        for completion in uring.completion() {
            let id = completion.user_data() as usize;
            let Some(op) = ops.get_mut(id) else { continue };
            match std::mem::replace(op, Op::Free) {
                Op::InFlight {
                    abandoned: true, ..
                } => {
                    *in_flight -= 1;
                    free.push(id);
                }
                Op::InFlight { buf, waker, .. } => {
                    *in_flight -= 1;
                    *op = Op::Done {
                        buf,
                        result: completion.result(),
                    };
                    woken.extend(waker);
                }
                // A completion for something not in flight (a cancel's own
                // completion carries no operation's id): nothing to do.
                other => *op = other,
            }
        }
    }

    /// The future of `id` is gone: free it now if it has completed, or
    /// when it does. Returns its waker, to drop once the lock is released.
    #[must_use]
    fn abandon(&mut self, id: usize) -> Option<Waker> {
        match &mut self.ops[id] {
            Op::InFlight {
                abandoned, waker, ..
            } => {
                *abandoned = true;
                waker.take()
            }
            Op::Done { .. } => {
                self.ops[id] = Op::Free;
                self.free.push(id);
                None
            }
            Op::Free => None,
        }
    }

    /// Cancel every operation in the kernel and wait for the kernel to be
    /// done with their buffers (a bounded number of rounds: a cancelled
    /// read completes promptly); those it cannot wait for are leaked, not
    /// freed under it. Returns how many were leaked. For a ring nothing
    /// waits on any more: its operations in flight were all abandoned.
    fn cancel_all(&mut self) -> usize {
        let ids: Vec<usize> = (0..self.ops.len())
            .filter(|&id| matches!(self.ops[id], Op::InFlight { .. }))
            .collect();
        for id in ids {
            let cancel = opcode::AsyncCancel::new(id as u64)
                .build()
                .user_data(u64::MAX);
            if self.push(&cancel).is_err() {
                break;
            }
        }
        let mut woken = Vec::new();
        for _ in 0..2 * ENTRIES {
            if self.in_flight == 0 {
                return 0;
            }
            match self.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            self.reap(&mut woken);
        }
        let mut leaked = 0;
        for op in std::mem::take(&mut self.ops) {
            if let Op::InFlight { buf, .. } = op {
                std::mem::forget(buf);
                leaked += 1;
            }
        }
        self.free.clear();
        self.in_flight = 0;
        leaked
    }
}

impl Drop for Ring {
    /// Nothing waits on this ring any more: see [`State::cancel_all`].
    fn drop(&mut self) {
        let leaked = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .cancel_all();
        if leaked > 0 {
            tracing::warn!(target: "edge_cdn_store", leaked, "io_uring reads still in the kernel when their ring closed; their buffers are leaked");
        }
    }
}

/// A submitted read: resolves to its buffer and how many bytes the kernel
/// read into it.
struct Submitted {
    ring: Arc<Ring>,
    id: usize,
    done: bool,
}

impl Future for Submitted {
    type Output = (Vec<u8>, io::Result<usize>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ring = self.ring.clone();
        let mut state = ring.lock();
        let woken = state.settle();
        let id = self.id;
        let polled = if self.done {
            // Polled again after it was ready: its id is no longer its own.
            Poll::Ready((Vec::new(), Err(lost())))
        } else {
            match std::mem::replace(&mut state.ops[id], Op::Free) {
                Op::InFlight {
                    buf,
                    _file,
                    waker,
                    abandoned,
                } => {
                    let (waker, old) = match waker {
                        Some(w) if w.will_wake(cx.waker()) => (Some(w), None),
                        old => (Some(cx.waker().clone()), old),
                    };
                    state.ops[id] = Op::InFlight {
                        buf,
                        _file,
                        waker,
                        abandoned,
                    };
                    drop(state);
                    drop(old);
                    wake(woken);
                    return Poll::Pending;
                }
                Op::Done { buf, result } => {
                    state.free.push(id);
                    self.done = true;
                    let result =
                        usize::try_from(result).map_err(|_| io::Error::from_raw_os_error(-result));
                    Poll::Ready((buf, result))
                }
                Op::Free => {
                    self.done = true;
                    Poll::Ready((Vec::new(), Err(lost())))
                }
            }
        };
        drop(state);
        wake(woken);
        polled
    }
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if !self.done {
            let left = self.ring.lock().abandon(self.id);
            drop(left);
        }
    }
}

/// Wake `woken`, the lock released: a waker's wake (or drop) may run code
/// that takes it again.
fn wake(woken: Vec<Waker>) {
    for waker in woken {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// The rings, or `None` (the test then has nothing to check) on a
    /// kernel that refuses io_uring: the store's suite covers the blocking
    /// pool there, and on every machine (`./x test` runs it on both).
    fn rings() -> Option<Rings> {
        let rings = Rings::new();
        if let Err(error) = &rings {
            eprintln!("io_uring is not available here ({error}): nothing to test");
        }
        rings.ok()
    }

    #[tokio::test]
    async fn a_read_returns_the_bytes_and_stops_at_the_end_of_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let Some(rings) = rings() else { return };
        assert_eq!(rings.read_at(&file, 0, 100_000).await.unwrap(), data);
        assert_eq!(
            rings.read_at(&file, 4096, 10).await.unwrap(),
            data[4096..4106]
        );
        assert_eq!(
            rings.read_at(&file, 99_990, 100).await.unwrap(),
            data[99_990..],
            "cut short at the end"
        );
        assert!(rings.read_at(&file, 200_000, 10).await.unwrap().is_empty());
        assert!(rings.read_at(&file, 0, 0).await.unwrap().is_empty());
        for ring in rings.rings.iter() {
            let mut state = ring.lock();
            assert_eq!(state.in_flight, 0);
            assert!(
                state.uring.completion().eventfd_disabled(),
                "reads completed in their submission leave the reaper asleep"
            );
        }
    }

    #[tokio::test]
    async fn a_read_on_a_descriptor_not_open_for_reading_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let file = Arc::new(File::create(&path).unwrap());
        file.write_all_at(b"x", 0).unwrap();
        let Some(rings) = rings() else { return };
        match rings.read_at(&file, 0, 1).await {
            Err(Failed::Done(error)) => assert_eq!(error.raw_os_error(), Some(libc::EBADF)),
            other => panic!("a failed read: {other:?}"),
        }
    }

    /// A pipe with nothing in it: the read completes only when the test
    /// writes, through the reaper thread and the waker.
    fn pipe() -> (Arc<File>, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new descriptors owned by nothing else.
        unsafe {
            (
                Arc::new(File::from_raw_fd(fds[0])),
                File::from_raw_fd(fds[1]),
            )
        }
    }

    #[tokio::test]
    async fn a_read_the_kernel_completes_later_wakes_its_task() {
        let Some(rings) = rings() else { return };
        let (reader, mut writer) = pipe();
        let read = tokio::spawn(async move { rings.read_at(&reader, 0, 5).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "nothing to read yet");
        writer.write_all(b"hello").unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
        assert_eq!(got, b"hello");
    }

    #[tokio::test]
    async fn reads_beyond_the_completion_queue_are_refused_and_the_rest_complete() {
        let Some(rings) = rings() else { return };
        let rings = Arc::new(rings);
        let (reader, mut writer) = pipe();
        let capacity = rings.ring().lock().uring.completion().capacity();
        // This runtime has one thread, so every read goes to one ring.
        let pending: Vec<_> = (0..capacity)
            .map(|_| {
                let (rings, reader) = (rings.clone(), reader.clone());
                tokio::spawn(async move { rings.read_at(&reader, 0, 1).await })
            })
            .collect();
        // Let every spawned read submit (a scheduler tick runs only some).
        for _ in 0..100 {
            if rings.ring().lock().in_flight == capacity {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(rings.ring().lock().in_flight, capacity);
        match rings.read_at(&reader, 0, 1).await {
            Err(Failed::Submit(error)) => assert_eq!(error.kind(), io::ErrorKind::WouldBlock),
            other => panic!("one more than the queue holds: {other:?}"),
        }
        writer.write_all(&vec![7u8; capacity]).unwrap();
        for read in pending {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .expect("completed")
                .unwrap()
                .unwrap();
            assert_eq!(got, [7]);
        }
        assert_eq!(rings.ring().lock().in_flight, 0);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"after").unwrap();
        let file = Arc::new(file);
        assert_eq!(rings.read_at(&file, 0, 5).await.unwrap(), b"after");
    }

    #[tokio::test]
    async fn a_dropped_read_is_freed_when_it_completes_and_the_ring_goes_on() {
        let Some(rings) = rings() else { return };
        let (reader, mut writer) = pipe();
        let ring = &rings.rings[this_thread() % rings.rings.len()];
        {
            let pending = rings.read_at(&reader, 0, 3);
            tokio::pin!(pending);
            assert!(futures_poll_once(pending.as_mut()).await.is_none());
        }
        let abandoned = |ring: &Ring| {
            ring.lock()
                .ops
                .iter()
                .filter(|op| {
                    matches!(
                        op,
                        Op::InFlight {
                            abandoned: true,
                            ..
                        }
                    )
                })
                .count()
        };
        assert_eq!(abandoned(ring), 1, "left to the kernel");
        writer.write_all(b"abc").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while abandoned(ring) > 0 {
            assert!(std::time::Instant::now() < deadline, "never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"still reads").unwrap();
        let file = Arc::new(file);
        assert_eq!(rings.read_at(&file, 0, 11).await.unwrap(), b"still reads");
    }

    #[test]
    fn a_ring_dropped_with_a_read_in_the_kernel_cancels_it() {
        let (reader, _writer) = pipe();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Some(rings) = rings() else { return };
        runtime.block_on(async {
            let pending = rings.read_at(&reader, 0, 3);
            tokio::pin!(pending);
            assert!(futures_poll_once(pending.as_mut()).await.is_none());
        });
        // Nothing will ever be written: only the cancel ends the read.
        let ring = Arc::downgrade(&rings.rings[this_thread() % rings.rings.len()]);
        drop(rings);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ring.strong_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "the reaper kept it");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn a_read_left_queued_by_its_submission_is_submitted_by_the_reaper() {
        let Some(rings) = rings() else { return };
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"queued").unwrap();
        let file = Arc::new(file);
        let ring = &rings.rings[0];
        // As if the kernel had taken none of what was offered.
        let queued = {
            let mut state = ring.lock();
            ring.queue(&mut state, &file, 0, vec![0; 6], 0).unwrap()
        };
        // Not polled: only the reaper's look can submit it.
        let deadline = std::time::Instant::now() + RESUBMIT_EVERY * 20;
        while !matches!(ring.lock().ops[queued.id], Op::Done { .. }) {
            assert!(std::time::Instant::now() < deadline, "never submitted");
            std::thread::sleep(RESUBMIT_EVERY / 4);
        }
        let (buf, read) = queued.await;
        assert_eq!(read.unwrap(), 6);
        assert_eq!(buf, b"queued");
    }

    #[tokio::test]
    async fn cancelling_a_read_the_kernel_holds_leaks_nothing() {
        let Some(ring) = rings().map(|_| Arc::new(Ring::new().unwrap())) else {
            return;
        };
        let (reader, _writer) = pipe();
        {
            let pending = ring.submit(&reader, 0, vec![0; 3], 0).unwrap();
            tokio::pin!(pending);
            assert!(futures_poll_once(pending.as_mut()).await.is_none());
        }
        let mut state = ring.lock();
        assert_eq!(state.in_flight, 1, "abandoned, still in the kernel");
        // Nothing will ever be written: only the cancel ends the read.
        assert_eq!(state.cancel_all(), 0, "no buffer leaked");
        assert_eq!(state.in_flight, 0);
    }

    /// Poll `future` once: its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut future).poll(cx) {
                Poll::Ready(out) => Some(out),
                Poll::Pending => None,
            })
        })
        .await
    }
}
