//! `[policy]`: where policy modules live and the limits they run with when
//! their sidecar file does not say.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::policy_settings::{Failure, PolicyLimits};

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
    /// Idle instances a long-lived module keeps. Default 8.
    pub instances: usize,
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
