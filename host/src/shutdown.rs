//! Graceful shutdown that waits for the requests in flight, not a fixed time.
//!
//! pingora's graceful terminate closes the listeners, sleeps a fixed grace
//! period and then drops whatever tasks remain. stavka counts requests in
//! flight and, on SIGTERM: reports not-ready and keeps serving for
//! `server.grace_period` (so a load balancer can notice), closes the
//! listeners, waits until the count reaches zero (at most
//! `server.shutdown_timeout`), then exits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// How many requests are being served, and whether shutdown has begun.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    draining: AtomicBool,
}

/// Held by each request's context; dropping it ends the request.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    /// Count one more request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    /// Requests being served now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Shutdown has begun: readiness probes should fail.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process's signal handling, given to pingora in place of its own.
pub struct Signals {
    /// Shared with the proxy and the admin API.
    pub in_flight: Arc<InFlight>,
    /// How long to keep accepting after SIGTERM.
    pub grace_period: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
            _ = term.recv() => {
                self.in_flight.draining.store(true, Ordering::Relaxed);
                tracing::info!(grace_period = ?self.grace_period, "SIGTERM: draining");
                tokio::time::sleep(self.grace_period).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = quit.recv() => {
                // A new binary started with --upgrade is waiting for the
                // listening sockets: pingora sends them, keeps serving a few
                // seconds beside it, then drains.
                self.in_flight.draining.store(true, Ordering::Relaxed);
                tracing::info!("SIGQUIT: handing the listeners to the new process, then draining");
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}

/// Once pingora has closed the listeners, exit as soon as the last request in
/// flight finishes (or `limit` passes), instead of sleeping pingora's whole
/// grace period and then dropping what is left; `on_exit` runs first (it
/// saves what must survive the process).
pub fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    in_flight: Arc<InFlight>,
    limit: Duration,
    on_exit: Arc<dyn Fn() + Send + Sync>,
) {
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let deadline = Instant::now() + limit;
            while in_flight.count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let left = in_flight.count();
            if left > 0 {
                tracing::warn!(left, "shutdown timeout: dropping requests still in flight");
            } else {
                tracing::info!("drained: exiting");
            }
            on_exit();
            std::process::exit(0);
        })
        .expect("spawn the drain thread");
}
