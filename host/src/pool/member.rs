//! What requests have learned about one member of a pool: the passive
//! health check. Carried in each `Backend`'s extensions, so a request
//! reads it without a lock or a map lookup.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Why a request counted against a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made (refused, timed out, TLS failed).
    Connect,
    /// The member answered with a 5xx (origins only: a shield's 5xx is
    /// the origin's answer passed on).
    Status,
}

impl Failure {
    /// Every kind, in `index` order.
    pub const ALL: [Failure; 2] = [Failure::Connect, Failure::Status];

    /// The `kind` label of `stavka_pool_member_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Status => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The passive health of one member (one resolved address).
#[derive(Debug)]
pub struct MemberState {
    /// The address as configured (`origin.example:80`), which may name
    /// several resolved members.
    pub configured: String,
    /// Failed requests in a row.
    failures: AtomicU32,
    /// Until when (milliseconds after [`epoch`]) requests leave it out;
    /// 0 when they do not.
    down_until: AtomicU64,
    /// Failures in a row that take it out.
    threshold: u32,
    /// How long it then stays out.
    down_for: Duration,
    /// `stavka_pool_member_failures_total` by kind.
    counted: [IntCounter; Failure::ALL.len()],
}

/// The instant passive deadlines count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl MemberState {
    /// A member that has not failed, taken out after `threshold`
    /// failures in a row for `down_for`; failures counted in `counted`.
    pub fn new(
        configured: String,
        threshold: u32,
        down_for: Duration,
        counted: [IntCounter; Failure::ALL.len()],
    ) -> Arc<MemberState> {
        Arc::new(MemberState {
            configured,
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            threshold,
            down_for,
            counted,
        })
    }

    /// Count a failed request; the one that reaches the threshold takes
    /// the member out. Returns whether this one did.
    pub fn failed(&self, why: Failure) -> bool {
        self.counted[why.index()].inc();
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.threshold {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = now_ms() + self.down_for.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
        true
    }

    /// Count a request that went well: the failures in a row start over.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// How much longer requests leave the member out; `None` when they
    /// do not.
    pub fn down_for(&self) -> Option<Duration> {
        let until = self.down_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> [IntCounter; 2] {
        Failure::ALL.map(|f| IntCounter::new(format!("t_{}", f.index()), "t").unwrap())
    }

    #[test]
    fn the_threshold_failure_in_a_row_takes_a_member_out_for_a_while() {
        let m = MemberState::new("o:80".into(), 2, Duration::from_secs(60), counters());
        assert!(!m.failed(Failure::Connect));
        m.succeeded();
        assert!(!m.failed(Failure::Status), "the count started over");
        assert!(m.down_for().is_none());
        assert!(m.failed(Failure::Connect));
        assert!(m.down_for().is_some_and(|d| d <= Duration::from_secs(60)));
        assert_eq!(m.counted[Failure::Connect.index()].get(), 2);
        let brief = MemberState::new("o:80".into(), 1, Duration::ZERO, counters());
        brief.failed(Failure::Connect);
        assert!(brief.down_for().is_none(), "down for no time is up");
    }
}
