//! A module's optional sidecar file, `<name>.toml`: how it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::policy_settings::{BreakerLimits, Failure, LimitProblem, PolicyLimits};
use crate::prefetch::ModuleBudget;

/// How long an instance lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A fresh instance for every request; nothing carries over.
    PerRequest,
    /// Instances kept in a pool across requests, each initialised once.
    LongLived,
}

impl Mode {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::PerRequest => "per-request",
            Mode::LongLived => "long-lived",
        }
    }
}

/// Why a sidecar file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidecarError {
    /// Not TOML, an unknown field, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// Limits out of range, each with its field.
    #[error("{}", limits(.0))]
    Limits(Vec<LimitProblem>),
}

/// `deadline: must be …; memory: must be …`.
fn limits(problems: &[LimitProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", p.field()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The sidecar file as written; absent fields take the `[policy]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarFile {
    mode: Option<Mode>,
    #[serde(default, with = "humantime_serde")]
    deadline: Option<Duration>,
    memory: Option<ByteSize>,
    failure: Option<Failure>,
    instances: Option<usize>,
    breaker_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    breaker_cooldown: Option<Duration>,
    memo: Option<bool>,
    prefetch_rate: Option<u32>,
    prefetch_bytes_per_second: Option<ByteSize>,
    #[serde(default)]
    init: BTreeMap<String, toml::Value>,
}

/// The settings a module runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Instance lifetime.
    pub mode: Mode,
    /// CPU time one hook call may use (wall time capped at ten times it).
    pub deadline: Duration,
    /// Largest linear memory an instance may grow to.
    pub memory: usize,
    /// What a failed call means for the request.
    pub failure: Failure,
    /// The most calls that run at once; long-lived: the most instances.
    pub instances: usize,
    /// When the circuit breaker opens, and for how long.
    pub breaker: BreakerLimits,
    /// Long-lived: the `init` argument.
    pub init: Vec<(String, String)>,
    /// Reuse a decision for a request that agrees on every field the call
    /// read, when the call used nothing else (see `memo`). Default: on for
    /// per-request modules (a fresh instance's call is a function of what
    /// it read); off for long-lived ones, whose instances' own state could
    /// decide too: turn it on when it does not.
    pub memo: bool,
    /// What the module may prefetch on all its sites together, beside each
    /// site's own `[site.prefetch]` budget. Default: no budget of its own.
    pub prefetch: ModuleBudget,
}

impl Settings {
    /// The defaults, for a module without a sidecar: per-request, under
    /// the `[policy]` limits.
    pub fn defaults(limits: &PolicyLimits) -> Settings {
        Settings::new(Mode::PerRequest, limits, Vec::new())
    }

    fn new(mode: Mode, limits: &PolicyLimits, init: Vec<(String, String)>) -> Settings {
        Settings {
            memo: mode == Mode::PerRequest,
            mode,
            deadline: limits.deadline,
            memory: limits.memory_bytes(),
            failure: limits.failure,
            instances: limits.instances,
            breaker: limits.breaker,
            init,
            prefetch: ModuleBudget::default(),
        }
    }

    /// Parse a sidecar file over the `[policy]` limits.
    pub fn parse(text: &str, defaults: &PolicyLimits) -> Result<Settings, SidecarError> {
        let file: SidecarFile =
            toml::from_str(text).map_err(|e| SidecarError::Syntax(e.message().to_owned()))?;
        let limits = PolicyLimits {
            deadline: file.deadline.unwrap_or(defaults.deadline),
            memory: file.memory.unwrap_or(defaults.memory),
            failure: file.failure.unwrap_or(defaults.failure),
            instances: file.instances.unwrap_or(defaults.instances),
            breaker: BreakerLimits {
                failures: file.breaker_failures.unwrap_or(defaults.breaker.failures),
                window: file.breaker_window.unwrap_or(defaults.breaker.window),
                cooldown: file.breaker_cooldown.unwrap_or(defaults.breaker.cooldown),
            },
        };
        let problems = limits.validate();
        if !problems.is_empty() {
            return Err(SidecarError::Limits(problems));
        }
        let init = file
            .init
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        let mut settings = Settings::new(file.mode.unwrap_or(Mode::PerRequest), &limits, init);
        if let Some(memo) = file.memo {
            settings.memo = memo;
        }
        let zero = |field: &str| {
            SidecarError::Syntax(format!(
                "{field}: must be more than 0 (leave it out for no budget of the module's own)"
            ))
        };
        if file.prefetch_rate == Some(0) {
            return Err(zero("prefetch_rate"));
        }
        if file
            .prefetch_bytes_per_second
            .is_some_and(|b| b.as_u64() == 0)
        {
            return Err(zero("prefetch_bytes_per_second"));
        }
        settings.prefetch = ModuleBudget {
            rate: file.prefetch_rate,
            bytes_per_second: file.prefetch_bytes_per_second.map(|b| b.as_u64()),
        };
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_over_defaults() {
        let d = crate::config::Policy::default().limits();
        let s = Settings::parse(
            "mode = \"long-lived\"\ndeadline = \"2ms\"\nfailure = \"closed\"\n[init]\nrequests = 5\nname = \"x\"\n",
            &d,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::LongLived);
        assert_eq!(s.deadline, Duration::from_millis(2));
        assert_eq!(s.failure, Failure::Closed);
        assert_eq!(s.memory, 32 << 20, "the [policy] default");
        assert_eq!(
            s.init,
            vec![("name".into(), "x".into()), ("requests".into(), "5".into())]
        );
        assert!(matches!(
            Settings::parse("mode = \"forever\"", &d),
            Err(SidecarError::Syntax(_))
        ));
        assert!(Settings::parse("bogus = 1", &d).is_err());
        let e = Settings::parse("memory = \"1KiB\"\ninstances = 0", &d).unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory: must be between 64KiB (one Wasm page) and 256MiB; instances: must be at least 1"
        );
    }

    #[test]
    fn a_modules_prefetch_budget_is_optional_and_never_zero() {
        let d = crate::config::Policy::default().limits();
        let s = Settings::parse(
            "prefetch_rate = 20\nprefetch_bytes_per_second = \"4MiB\"\n",
            &d,
        )
        .unwrap();
        assert_eq!(
            s.prefetch,
            ModuleBudget {
                rate: Some(20),
                bytes_per_second: Some(4 * 1024 * 1024)
            }
        );
        assert_eq!(Settings::defaults(&d).prefetch, ModuleBudget::default());
        let e = Settings::parse("prefetch_rate = 0", &d).unwrap_err();
        assert!(e.to_string().starts_with("prefetch_rate:"), "{e}");
    }

    #[test]
    fn mode_serializes_as_its_name() {
        for mode in [Mode::PerRequest, Mode::LongLived] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
    }
}
