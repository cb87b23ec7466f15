//! A circuit breaker for a remote tier: after `failures` consecutive
//! failures (errors or timeouts) it *opens* and calls fail at once, without
//! touching the network, for `cooldown`; then it lets one call through as a
//! probe (*half-open*). The probe succeeding closes it; failing reopens it
//! for another cooldown.
//!
//! So a dead shared tier costs each request nothing once the breaker is
//! open, instead of a timeout each, and is found again by itself when it
//! returns. Every failure and every change of state is reported to the
//! store's observer ([`StoreEvent::SharedError`],
//! [`StoreEvent::SharedBreaker`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::observer::{StoreEvent, StoreObserver};
use crate::shared::SharedError;

/// Where a [`Breaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cooldown has passed.
    Open,
    /// One probe call is in flight; the others fail at once.
    HalfOpen,
}

impl BreakerState {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What a shared-tier call was doing, for counting its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedOp {
    /// Looking an object up (its meta and first chunk).
    Get,
    /// Reading a later chunk of a body.
    Read,
    /// Writing an object.
    Put,
    /// Deleting an object.
    Delete,
}

impl SharedOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedOp::Get => "get",
            SharedOp::Read => "read",
            SharedOp::Put => "put",
            SharedOp::Delete => "delete",
        }
    }
}

struct State {
    state: BreakerState,
    consecutive: u32,
    opened: Instant,
}

/// A circuit breaker; see the module documentation.
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
    observer: Arc<dyn StoreObserver>,
}

impl Breaker {
    /// A closed breaker that opens after `failures` consecutive failures
    /// (at least 1) and stays open for `cooldown`, reporting to `observer`.
    pub fn new(failures: u32, cooldown: Duration, observer: Arc<dyn StoreObserver>) -> Breaker {
        observer.event(StoreEvent::SharedBreaker(BreakerState::Closed));
        Breaker {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State {
                state: BreakerState::Closed,
                consecutive: 0,
                opened: Instant::now(),
            }),
            observer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, state: &mut State, to: BreakerState) {
        if state.state != to {
            state.state = to;
            if to == BreakerState::Open {
                state.opened = Instant::now();
            }
            self.observer.event(StoreEvent::SharedBreaker(to));
        }
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Why calls are not being made, if they are not.
    pub fn degraded(&self) -> Option<String> {
        let state = self.lock();
        match state.state {
            BreakerState::Closed => None,
            BreakerState::Open => Some(format!(
                "circuit breaker open after {} consecutive failures; probing again in {:?}",
                self.failures,
                self.cooldown.saturating_sub(state.opened.elapsed())
            )),
            BreakerState::HalfOpen => Some("circuit breaker half-open: probing".to_owned()),
        }
    }

    /// Leave to make one `op` call, or [`SharedError::BreakerOpen`]. The
    /// caller settles the returned [`Attempt`]; dropping it unsettled (the
    /// caller gave up waiting) counts as a failure.
    pub fn attempt(&self, op: SharedOp) -> Result<Attempt<'_>, SharedError> {
        let mut state = self.lock();
        let probe = match state.state {
            BreakerState::Closed => false,
            BreakerState::Open if state.opened.elapsed() >= self.cooldown => {
                self.enter(&mut state, BreakerState::HalfOpen);
                true
            }
            BreakerState::Open | BreakerState::HalfOpen => return Err(SharedError::BreakerOpen),
        };
        Ok(Attempt {
            breaker: self,
            op,
            probe,
            settled: false,
        })
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        state.consecutive = 0;
        // Any answer shows the tier is back, a probe's or a straggler's.
        self.enter(&mut state, BreakerState::Closed);
    }

    fn failed(&self, op: SharedOp, probe: bool) {
        self.observer.event(StoreEvent::SharedError(op));
        let mut state = self.lock();
        state.consecutive = state.consecutive.saturating_add(1);
        let open = match state.state {
            BreakerState::Closed => state.consecutive >= self.failures,
            // Only the probe decides a half-open breaker; calls started
            // before it opened do not.
            BreakerState::HalfOpen => probe,
            BreakerState::Open => false,
        };
        if open {
            self.enter(&mut state, BreakerState::Open);
        }
    }
}

/// One call the breaker let through; settle it with
/// [`Attempt::succeeded`] or [`Attempt::failed`].
pub struct Attempt<'a> {
    breaker: &'a Breaker,
    op: SharedOp,
    probe: bool,
    settled: bool,
}

impl Attempt<'_> {
    /// The tier answered.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.succeeded();
    }

    /// The tier failed or timed out.
    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.failed(self.op, self.probe);
    }
}

impl Drop for Attempt<'_> {
    /// Unsettled: the caller stopped waiting (the store's `shared_timeout`
    /// fired first), which is a timeout like any other.
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.failed(self.op, self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::NoopObserver;

    fn breaker(cooldown: Duration) -> Breaker {
        Breaker::new(3, cooldown, Arc::new(NoopObserver))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(Duration::from_secs(60));
        b.attempt(SharedOp::Get).unwrap().failed();
        b.attempt(SharedOp::Get).unwrap().failed();
        b.attempt(SharedOp::Get).unwrap().succeeded();
        b.attempt(SharedOp::Get).unwrap().failed();
        b.attempt(SharedOp::Get).unwrap().failed();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        drop(b.attempt(SharedOp::Get).unwrap());
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "an abandoned call is a failure"
        );
        assert!(matches!(
            b.attempt(SharedOp::Get),
            Err(SharedError::BreakerOpen)
        ));
        assert!(b.degraded().is_some());
    }

    #[test]
    fn one_probe_after_the_cooldown_closes_or_reopens_it() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.attempt(SharedOp::Put).unwrap().failed();
        }
        let probe = b.attempt(SharedOp::Get).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(
            b.attempt(SharedOp::Get).is_err(),
            "one probe at a time while half-open"
        );
        probe.failed();
        assert_eq!(b.state(), BreakerState::Open);
        b.attempt(SharedOp::Get).unwrap().succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.degraded(), None);
    }
}
