//! What `[policy]` and a module's sidecar file have in common: the limits a
//! module runs under, what a failed call means, and how a module may be
//! named.
//!
//! A leaf: both `config` and `policy` import it, and it imports neither,
//! so the two check the same limits with the same messages.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The engine-wide ceiling on one instance's memory (256 MiB): the pooling
/// allocator reserves address space for it per slot.
pub const MAX_MEMORY: usize = 256 << 20;

/// The smallest memory cap: one Wasm page (64 KiB).
pub const MIN_MEMORY: usize = 64 << 10;

/// Whether `name` can name a module file: letters, digits, `-`, `_`.
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What a request gets when its policy traps, overruns its deadline or
/// exceeds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Carry on as if the module had no opinion.
    Open,
    /// Answer 503.
    Closed,
}

/// The limits one module runs under, from `[policy]` or its sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// CPU time one hook call may use (its wall time is capped at ten times
    /// this).
    pub deadline: Duration,
    /// Largest linear memory an instance may use.
    pub memory: ByteSize,
    /// What a failed call means for the request.
    pub failure: Failure,
    /// The most calls of the module that run at once; a long-lived module
    /// never has more instances than this.
    pub instances: usize,
    /// When the module's circuit breaker opens, and for how long.
    pub breaker: BreakerLimits,
}

/// A module's circuit breaker: after `failures` failed calls (trap,
/// deadline, memory) within `window`, the module is not entered for
/// `cooldown` and its failure mode answers at once; then one probe call
/// decides whether it closes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerLimits {
    /// Failed calls within `window` that open the breaker.
    pub failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long the breaker stays open before a probe.
    pub cooldown: Duration,
}

/// A limit out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitProblem {
    /// A deadline of zero would stop every call.
    #[error("must be greater than 0s")]
    ZeroDeadline,
    /// Memory below one page or above [`MAX_MEMORY`].
    #[error("must be between 64KiB (one Wasm page) and 256MiB")]
    MemoryOutOfRange,
    /// A pool of no instances.
    #[error("must be at least 1")]
    NoInstances,
    /// A breaker that opens before any failure.
    #[error("must be at least 1")]
    NoBreakerFailures,
    /// A window in which no failure could count.
    #[error("must be greater than 0s")]
    ZeroBreakerWindow,
    /// A cool-down that would probe on every call.
    #[error("must be greater than 0s")]
    ZeroBreakerCooldown,
}

impl LimitProblem {
    /// The field the problem is in, as both files spell it.
    pub fn field(self) -> &'static str {
        match self {
            LimitProblem::ZeroDeadline => "deadline",
            LimitProblem::MemoryOutOfRange => "memory",
            LimitProblem::NoInstances => "instances",
            LimitProblem::NoBreakerFailures => "breaker_failures",
            LimitProblem::ZeroBreakerWindow => "breaker_window",
            LimitProblem::ZeroBreakerCooldown => "breaker_cooldown",
        }
    }
}

impl PolicyLimits {
    /// Every limit out of range, in field order.
    pub fn validate(&self) -> Vec<LimitProblem> {
        let memory = self.memory.as_u64();
        [
            (self.deadline.is_zero(), LimitProblem::ZeroDeadline),
            (
                memory < MIN_MEMORY as u64 || memory > MAX_MEMORY as u64,
                LimitProblem::MemoryOutOfRange,
            ),
            (self.instances == 0, LimitProblem::NoInstances),
            (self.breaker.failures == 0, LimitProblem::NoBreakerFailures),
            (
                self.breaker.window.is_zero(),
                LimitProblem::ZeroBreakerWindow,
            ),
            (
                self.breaker.cooldown.is_zero(),
                LimitProblem::ZeroBreakerCooldown,
            ),
        ]
        .into_iter()
        .filter_map(|(bad, problem)| bad.then_some(problem))
        .collect()
    }

    /// The memory cap in bytes, as the store's limiter takes it.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory.as_u64()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PolicyLimits {
        PolicyLimits {
            deadline: Duration::from_millis(5),
            memory: ByteSize::mib(32),
            failure: Failure::Open,
            instances: 8,
            breaker: BreakerLimits {
                failures: 5,
                window: Duration::from_secs(10),
                cooldown: Duration::from_secs(5),
            },
        }
    }

    #[test]
    fn every_problem_names_its_field() {
        assert!(limits().validate().is_empty());
        let bad = PolicyLimits {
            deadline: Duration::ZERO,
            memory: ByteSize::kib(1),
            instances: 0,
            breaker: BreakerLimits {
                failures: 0,
                window: Duration::ZERO,
                cooldown: Duration::ZERO,
            },
            ..limits()
        };
        let fields: Vec<_> = bad
            .validate()
            .into_iter()
            .map(LimitProblem::field)
            .collect();
        assert_eq!(
            fields,
            [
                "deadline",
                "memory",
                "instances",
                "breaker_failures",
                "breaker_window",
                "breaker_cooldown"
            ]
        );
        let big = PolicyLimits {
            memory: ByteSize::mib(257),
            ..limits()
        };
        assert_eq!(big.validate(), [LimitProblem::MemoryOutOfRange]);
    }

    #[test]
    fn module_names() {
        assert!(is_module_name("ttl-rules_2"));
        assert!(!is_module_name(""));
        assert!(!is_module_name("../x"));
    }
}
