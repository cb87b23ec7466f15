//! `[policy]`: where policy modules live and the limits they run with when
//! their sidecar file does not say.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::policy_settings::{BreakerLimits, Failure, PolicyLimits};

/// Cache policy modules: where they live and what they run with when their
/// sidecar file does not say.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The directory watched for `<name>.wasm` policy modules and their
    /// `<name>.toml` sidecars. Default `policies`.
    pub dir: PathBuf,
    /// How long a change must be quiet before the module is reloaded, so a
    /// file being written is read once, whole. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// CPU time one hook call may use (its wall time is capped at ten
    /// times this). Default `5ms`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Largest linear memory an instance may use. Default `32MiB`, at most
    /// [`MAX_MEMORY`](crate::policy_settings::MAX_MEMORY).
    pub memory: ByteSize,
    /// `open` (act as if there were no policy) or `closed` (503) when a
    /// call traps, overruns or runs out of memory. Default `open`.
    pub failure: Failure,
    /// The most calls of one module that run at once; a long-lived module
    /// keeps at most this many instances. A call that finds none free waits
    /// up to ten times `deadline`, then fails. Default 8.
    pub instances: usize,
    /// Failed calls (trap, deadline, memory) within `breaker_window` that
    /// open a module's circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How far back failed calls count towards the breaker. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// How long an open breaker answers with the failure mode before one
    /// probe call enters the module again. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dir: PathBuf::from("policies"),
            debounce: Duration::from_millis(200),
            deadline: Duration::from_millis(5),
            memory: ByteSize::mib(32),
            failure: Failure::Open,
            instances: 8,
            breaker_failures: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// The limits a module without a sidecar runs with.
    pub fn limits(&self) -> PolicyLimits {
        PolicyLimits {
            deadline: self.deadline,
            memory: self.memory,
            failure: self.failure,
            instances: self.instances,
            breaker: BreakerLimits {
                failures: self.breaker_failures,
                window: self.breaker_window,
                cooldown: self.breaker_cooldown,
            },
        }
    }

    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.limits()
            .validate()
            .into_iter()
            .map(|p| (p.field(), p.to_string()))
            .collect()
    }
}
