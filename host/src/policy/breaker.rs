//! A module's circuit breaker: a module whose calls keep failing stops being
//! entered for a while, so a looping or trapping guest costs its own site a
//! failure-mode answer rather than every site its deadline's worth of CPU.
//!
//! Closed, calls enter the module and failures (trap, deadline, memory) are
//! counted; `failures` of them within `window` open it. Open, calls are
//! refused at once for `cooldown`. Then it is half-open: one call probes the
//! module while the others are still refused; the probe's success closes
//! the breaker, its failure opens it again.
//!
//! The breaker belongs to the module name, not a version: a new version
//! starts it closed ([`Breaker::reset`]). A closed breaker costs a call one
//! atomic load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{IntCounter, IntGauge};

use crate::events::{EventKind, EventLog};
use crate::policy_settings::BreakerLimits;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls enter the module.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call enters; the others are refused.
    HalfOpen,
}

impl BreakerState {
    /// The name used in logs and `/policies`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The value of `stavka_policy_breaker_state`: 0 closed, 1 half-open,
    /// 2 open, so larger is worse.
    fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    fn from_gauge(code: u8) -> BreakerState {
        match code {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }
}

/// The state with what each state needs to remember.
#[derive(Debug)]
enum State {
    /// When the recent failures happened, oldest first.
    Closed(VecDeque<Instant>),
    /// Refusing until then.
    Open(Instant),
    /// Whether a probe call is in the module now.
    HalfOpen { probing: bool },
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed(_) => BreakerState::Closed,
            State::Open(_) => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// The metrics a breaker keeps current.
pub struct BreakerMetrics {
    /// `stavka_policy_breaker_state{module}`.
    pub state: IntGauge,
    /// `stavka_policy_breaker_opens_total{module}`.
    pub opens: IntCounter,
    /// Where openings and recoveries are told to the operator.
    pub events: Arc<EventLog>,
}

/// One module's circuit breaker.
pub struct Breaker {
    /// The module's name, for the log.
    module: Arc<str>,
    /// [`BreakerState::gauge`] of `state`, read without the lock.
    code: AtomicU8,
    state: Mutex<State>,
    metrics: BreakerMetrics,
}

/// Leave to enter the module once; say how it went with
/// [`Ticket::succeeded`] or [`Ticket::failed`]. A probe's ticket dropped
/// unsettled (its call was cancelled or never started) lets the next call
/// probe instead.
#[must_use = "settle the ticket with how the call went"]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// A closed breaker for `module`, reporting to `metrics`.
    pub fn new(module: Arc<str>, metrics: BreakerMetrics) -> Breaker {
        metrics.state.set(BreakerState::Closed.gauge());
        Breaker {
            module,
            code: AtomicU8::new(0),
            state: Mutex::new(State::Closed(VecDeque::new())),
            metrics,
        }
    }

    /// Where it stands now.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_gauge(self.code.load(Ordering::Relaxed))
    }

    /// Close it and forget past failures: a new version gets a fresh start.
    pub fn reset(&self) {
        self.set(&mut self.lock(), State::Closed(VecDeque::new()));
    }

    /// Whether a call at `now` may enter the module.
    pub fn admit(&self, now: Instant) -> Option<Ticket<'_>> {
        if self.state() == BreakerState::Closed {
            return Some(Ticket {
                breaker: self,
                probe: false,
            });
        }
        let mut state = self.lock();
        match &*state {
            State::Closed(_) => Some(Ticket {
                breaker: self,
                probe: false,
            }),
            State::Open(until) if now < *until => None,
            State::HalfOpen { probing: true } => None,
            State::Open(_) | State::HalfOpen { probing: false } => {
                self.set(&mut state, State::HalfOpen { probing: true });
                Some(Ticket {
                    breaker: self,
                    probe: true,
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: &mut State, next: State) {
        let (was, public) = (state.public(), next.public());
        if public != was {
            let (module, from, to) = (&*self.module, was.as_str(), public.as_str());
            if public == BreakerState::Open {
                self.metrics.opens.inc();
                tracing::warn!(module, from, to, "policy circuit breaker opened: the failure mode answers without entering the module");
            } else {
                tracing::info!(module, from, to, "policy circuit breaker");
            }
            // The operator hears when it trips and when it is whole again,
            // not of every probe between.
            let event = match (was, public) {
                (BreakerState::Closed, BreakerState::Open) => Some((
                    EventKind::BreakerOpened,
                    "the failure mode answers without entering the module",
                )),
                (_, BreakerState::Closed) => {
                    Some((EventKind::BreakerRecovered, "calls enter the module again"))
                }
                _ => None,
            };
            if let Some((kind, detail)) = event {
                self.metrics.events.record(kind, module, detail);
            }
        }
        *state = next;
        self.code.store(public.gauge() as u8, Ordering::Relaxed);
        self.metrics.state.set(public.gauge());
    }
}

impl Ticket<'_> {
    /// The call succeeded: a probe closes the breaker.
    pub fn succeeded(self) {
        if self.probe {
            let breaker = self.breaker;
            std::mem::forget(self);
            breaker.set(&mut breaker.lock(), State::Closed(VecDeque::new()));
        }
    }

    /// The call failed at `now`: a probe reopens the breaker; otherwise the
    /// failure counts, and opens it if `limits.failures` fell within
    /// `limits.window`.
    pub fn failed(self, limits: &BreakerLimits, now: Instant) {
        let (breaker, probe) = (self.breaker, self.probe);
        std::mem::forget(self);
        let mut state = breaker.lock();
        let open = State::Open(now + limits.cooldown);
        if probe {
            return breaker.set(&mut state, open);
        }
        let State::Closed(recent) = &mut *state else {
            // Admitted before the breaker opened: already accounted for.
            return;
        };
        while recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= limits.window)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        if recent.len() >= limits.failures as usize {
            breaker.set(&mut state, open);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut state = self.breaker.lock();
            if matches!(*state, State::HalfOpen { probing: true }) {
                self.breaker
                    .set(&mut state, State::HalfOpen { probing: false });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "m".into(),
            BreakerMetrics {
                state: IntGauge::new("state", "state").unwrap(),
                opens: IntCounter::new("opens", "opens").unwrap(),
                events: Default::default(),
            },
        )
    }

    const LIMITS: BreakerLimits = BreakerLimits {
        failures: 3,
        window: Duration::from_secs(10),
        cooldown: Duration::from_secs(5),
    };

    fn fail(b: &Breaker, at: Instant) {
        b.admit(at).expect("admitted").failed(&LIMITS, at);
    }

    #[test]
    fn opens_after_failures_within_the_window_and_probes_after_the_cooldown() {
        let b = breaker();
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0 + Duration::from_secs(11));
        fail(&b, t0 + Duration::from_secs(12));
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the first fell out of the window"
        );
        let t = t0 + Duration::from_secs(13);
        fail(&b, t);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.metrics.opens.get(), 1);
        assert_eq!(b.metrics.state.get(), 2);
        assert!(
            b.admit(t + Duration::from_secs(4)).is_none(),
            "cooling down"
        );

        let probe = b.admit(t + LIMITS.cooldown).expect("the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(
            b.admit(t + LIMITS.cooldown).is_none(),
            "one probe at a time"
        );
        probe.failed(&LIMITS, t + LIMITS.cooldown);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.metrics.opens.get(), 2);

        let later = t + LIMITS.cooldown * 2;
        b.admit(later).expect("the next probe").succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.metrics.state.get(), 0);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&b, t);
        }
        let at = t + LIMITS.cooldown;
        drop(b.admit(at).expect("the probe"));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.admit(at).expect("probes again").succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
